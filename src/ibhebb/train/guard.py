"""Non-finite detection: a cheap check of the weights every few hundred samples, per replica.

The check reduces each parameter to one sum per replica (a NaN or an infinity
anywhere makes its sum non-finite) and synchronises with the device once; it
runs every :data:`CHECK_EVERY` samples and at the end of each epoch, whatever
path trains the epoch (the rule's loop, a minibatch rule, or the fast
engine's C or compiled step between two of its chunks).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import DivergenceError
from ..fileio import warn

CHECK_EVERY = 256
"""Samples between two checks (the C step's chunk: the check then costs one reduction per chunk)."""


def _layer_name(name: str) -> str:
    parts = name.split(".")
    if parts[0] == "hidden" and len(parts) > 1 and parts[1].isdigit():
        return f"hidden layer {int(parts[1]) + 1} ({name})"
    if parts[0] == "readout":
        return f"the readout ({name})"
    return name


def _ranges(indices: list[int]) -> str:
    return ", ".join(map(str, indices))


class DivergenceGuard:
    """Watch ``named`` parameters of ``replicas`` replicas for NaN or infinite values.

    Parameters
    ----------
    named : list of (name, parameter)
        In layer order; a parameter whose first dimension is not ``replicas``
        counts for every replica.
    replicas : int
    mode : {"stop", "drop-seeds"}
        ``stop``: raise :class:`DivergenceError` at the first non-finite value;
        ``drop-seeds``: mark the replicas dead and go on (raise once all are).
    every : int
        Samples between two checks.
    hint : callable, optional
        Returns text appended to the message (what was kept, what to do).
    """

    def __init__(self, named: list[tuple[str, nn.Parameter]], replicas: int, mode: str = "stop", every: int = CHECK_EVERY,
                 hint: Callable[[], str] | None = None):
        self.named, self.replicas, self.mode, self.every, self.hint = named, replicas, mode, every, hint
        self.alive = torch.ones(replicas, dtype=torch.bool)
        self.epoch, self.pos, self.checked = 0, 0, 0

    @property
    def dead(self) -> list[int]:
        return [int(i) for i in torch.nonzero(~self.alive).flatten()]

    def set_dead(self, dead: list[int]) -> None:
        self.alive = torch.ones(self.replicas, dtype=torch.bool)
        self.alive[list(dead)] = False

    def _all_finite(self) -> bool:
        """Whether every parameter is finite: one sum each, one synchronisation (the common case, cheapest)."""
        with torch.no_grad():
            return not self.named or bool(torch.isfinite(torch.stack([p.sum() for _, p in self.named])).all())

    def _finite(self) -> torch.Tensor:
        """``(P, R)``: whether each parameter of each replica is finite (one sum each)."""
        R = self.replicas
        sums = []
        with torch.no_grad():
            for _, p in self.named:
                if p.dim() > 0 and p.shape[0] == R:
                    sums.append(p.reshape(R, -1).sum(1))
                else:
                    sums.append(p.sum().reshape(1).expand(R))
        return torch.isfinite(torch.stack(sums)).cpu() if sums else torch.ones(0, R, dtype=torch.bool)

    def begin_epoch(self, epoch: int) -> None:
        self.epoch, self.pos, self.checked = epoch, 0, 0

    def advance(self, samples: int) -> None:
        """Count ``samples`` more of this epoch; check once :attr:`every` have passed since the last check."""
        self.pos += samples
        if self.pos - self.checked >= self.every:
            self.check()

    def check(self) -> None:
        """Check now, over the samples since the last check."""
        start, stop = self.checked, self.pos
        self.checked = self.pos
        if bool(self.alive.all()) and self._all_finite():
            return
        finite = self._finite()
        bad = self.alive & ~finite.all(0)
        if not bool(bad.any()):
            return
        replicas = [int(r) for r in torch.nonzero(bad).flatten()]
        layers = []
        for r in replicas:
            first = int(torch.nonzero(~finite[:, r]).flatten()[0])
            layers.append(_layer_name(self.named[first][0]))
        where = f"epoch {self.epoch + 1}, samples {start}–{max(stop - 1, start)} of its order"
        layer_text = layers[0] if len(set(layers)) == 1 else "; ".join(f"seed {r}: {l}" for r, l in zip(replicas, layers))
        what = f"non-finite weights in seed(s) {_ranges(replicas)} of {self.replicas}, first in {layer_text}"
        self.alive &= ~bad
        if self.mode == "stop" or not bool(self.alive.any()):
            extra = " (every seed has diverged)" if self.mode != "stop" else ""
            raise DivergenceError(f"training diverged in {where}: {what}{extra}{self.hint() if self.hint else ''}")
        warn(f"{what} ({where}); dropped, {int(self.alive.sum())} of {self.replicas} seeds go on")
