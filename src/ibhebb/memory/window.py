"""Delay-line memories holding the last ``N - 1`` samples of the stream.

``buffer``
    Stores ``x_p``, ``y_p`` and every hidden output ``z_p^ℓ`` as they were when
    sample ``p`` was presented; nothing is recomputed (the paper's delay line).
``recompute``
    Stores ``x_p``, ``y_p`` and recomputes every ``z_p^ℓ`` with the current
    weights at each step (what the authors' code does).

Until ``N - 1`` samples have been seen the memory is not ``ready`` and the
rule makes no update: the first ``N - 1`` samples of a run only fill the
window. The memory is one continuous stream: it is not emptied between epochs.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..functional.signals import global_signal

WINDOW_MODES = ("buffer", "recompute")
MEMORIES = (*WINDOW_MODES, "reservoir")
"""Every working memory; ``reservoir`` lives in :mod:`ibhebb.memory.reservoir`."""


def _shift_in(past: Tensor, new: Tensor, dim: int) -> Tensor:
    """Drop the oldest entry along ``dim`` and append ``new`` (size 1 along ``dim``)."""
    return torch.cat([past.narrow(dim, 1, past.shape[dim] - 1), new], dim)


class WindowMemory(nn.Module):
    """The past ``N - 1`` samples, with the current one appended on request.

    Parameters
    ----------
    window : int
        ``N``, the number of samples in a window, current included.
    mode : {"buffer", "recompute"}

    Examples
    --------
    >>> import torch
    >>> from ibhebb.memory import WindowMemory
    >>> mem = WindowMemory(3, "buffer")
    >>> for p in range(2):
    ...     mem.push(torch.full((1, 4), float(p)), torch.eye(2)[:1], [torch.zeros(1, 1, 5)])
    >>> mem.ready
    True
    """

    def __init__(self, window: int, mode: str = "buffer"):
        super().__init__()
        if window < 2:
            raise ValueError(f"a window needs N >= 2 samples, got {window}")
        if mode not in WINDOW_MODES:
            raise ValueError(f"unknown window memory {mode!r}; choose one of {', '.join(WINDOW_MODES)}")
        self.window_size, self.mode = window, mode
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.x: Tensor | None = None
        self.y: Tensor | None = None
        self.z: list[Tensor] = []

    @property
    def ready(self) -> bool:
        return int(self.count) >= self.window_size - 1

    def push(self, x: Tensor, y: Tensor, zs: list[Tensor]) -> None:
        """Remember the sample just presented: ``x`` ``(1, d_x)``, ``y`` ``(1, C)``, ``zs[ℓ]`` ``(R, 1, d_ℓ)``."""
        m = self.window_size - 1
        if self.x is None:
            self.x = x.new_zeros(m, x.shape[-1])
            self.y = y.new_zeros(m, y.shape[-1])
            if self.mode == "buffer":
                self.z = [z.new_zeros(z.shape[0], m, z.shape[-1]) for z in zs]
        self.x = _shift_in(self.x, x.detach(), 0)
        self.y = _shift_in(self.y, y.detach(), 0)
        if self.mode == "buffer":
            self.z = [_shift_in(past, z.detach(), 1) for past, z in zip(self.z, zs)]
        self.count += 1

    def window(self, model: nn.Module, x: Tensor, y: Tensor, zs: list[Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """The full window (past, then the current sample last) of inputs, labels and hidden outputs."""
        if self.mode == "buffer":
            past_z = self.z
        else:
            with torch.no_grad():
                past_z = model.represent(self.x)
        xw = torch.cat([self.x, x], 0)
        yw = torch.cat([self.y, y], 0)
        zw = [torch.cat([p, z.detach()], -2) for p, z in zip(past_z, zs)]
        return xw, yw, zw

    def signals(
        self, model: nn.Module, x: Tensor, y: Tensor, zs: list[Tensor], *, gamma: float, sigmas, variant: str
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """What the three-factor rule needs from a working memory for the current sample.

        Returns ``(xis, h, y)``: ξ^ℓ ``(R, d_ℓ)`` for every hidden layer, and the
        readout's window of inputs ``h`` ``(R, N, d)`` (or ``(N, d_x)``) with its
        one-hot labels ``y`` ``(N, C)`` for the readout's delta rule. Other
        memories (a reservoir) override this.
        """
        xw, yw, zw = self.window(model, x, y, zs)
        xis = [global_signal(xw, yw, z, gamma=gamma, sigmas=sigmas, variant=variant) for z in zw]
        return xis, (zw[-1] if zw else xw), yw

    def get_extra_state(self) -> dict:
        return {"x": self.x, "y": self.y, "z": self.z}

    def set_extra_state(self, state: dict) -> None:
        self.x, self.y, self.z = state["x"], state["y"], list(state["z"])


def make_memory(mode: str, window: int, *, reservoir: str = "") -> nn.Module:
    """A working memory by name; ``reservoir`` is the pre-trained file of mode ``reservoir``."""
    if mode == "reservoir":
        from .reservoir import ReservoirMemory

        return ReservoirMemory(reservoir, window)
    return WindowMemory(window, mode)
