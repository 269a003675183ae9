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

from ..functional.signals import check_window

from ..functional.biohsic import BioHSICParams, WindowState, window_kernels, window_push, window_signals, window_state, window_state_of

WINDOW_MODES = ("buffer", "recompute")
MEMORIES = (*WINDOW_MODES, "reservoir", "features")
"""Every working memory; ``reservoir`` lives in :mod:`ibhebb.memory.reservoir`, ``features`` in :mod:`ibhebb.memory.features`."""


class WindowMemory(nn.Module):
    """The past ``N - 1`` samples (a :class:`~ibhebb.functional.biohsic.WindowState`), with the current one appended on request.

    Parameters
    ----------
    window : int
        ``N``, the number of samples in a window, current included.
    mode : {"buffer", "recompute"}
    sigmas : (σ_x, σ_y, ...)
        Widths of the input and label kernels the window keeps up to date.

    Examples
    --------
    >>> import torch
    >>> from ibhebb.memory import WindowMemory
    >>> mem = WindowMemory(3, "buffer")
    >>> for p in range(2):
    ...     mem.push(torch.full((1, 4), float(p)), torch.eye(2)[:1], [torch.zeros(1, 1, 5)])
    >>> mem.ready, mem.x.shape
    (True, torch.Size([2, 4]))
    """

    def __init__(self, window: int, mode: str = "buffer", sigmas=(0.5, 0.1, 1.0)):
        super().__init__()
        check_window(window)
        if mode not in WINDOW_MODES:
            raise ValueError(f"unknown window memory {mode!r}; choose one of {', '.join(WINDOW_MODES)}")
        self.window, self.mode, self.sigmas = window, mode, tuple(float(s) for s in sigmas)
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.state: WindowState | None = None

    @property
    def ready(self) -> bool:
        return int(self.count) >= self.window - 1

    @property
    def x(self) -> Tensor | None:
        return None if self.state is None else self.state.x

    @property
    def y(self) -> Tensor | None:
        return None if self.state is None else self.state.y

    @property
    def z(self) -> list[Tensor]:
        return [] if self.state is None else list(self.state.z)

    def _state(self, x: Tensor, y: Tensor, zs: list[Tensor]) -> WindowState:
        if self.state is None:
            dims = [z.shape[-1] for z in zs] if self.mode == "buffer" else []
            replicas = zs[0].shape[0] if zs else 1
            self.state = window_state(self.window, x.shape[-1], y.shape[-1], z_dims=dims, replicas=replicas, like=x)
        return self.state

    def kernels(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The window's input and label kernel matrices with the current sample last."""
        return window_kernels(self._state(x, y, []), x, y, self.sigmas)

    def reset(self) -> None:
        """Forget every sample: the next ``N - 1`` only fill the window again."""
        self.state = None
        self.count.zero_()

    def push(self, x: Tensor, y: Tensor, zs: list[Tensor]) -> None:
        """Remember the sample just presented: ``x`` ``(1, d_x)``, ``y`` ``(1, C)``, ``zs[ℓ]`` ``(R, 1, d_ℓ)``."""
        st = self._state(x, y, zs)
        kx, ky = window_kernels(st, x, y, self.sigmas)
        self.state = window_push(st, x.detach(), y.detach(), [z.detach() for z in zs] if self.mode == "buffer" else [], kx, ky)
        self.count += 1

    def window_outputs(self, model: nn.Module, zs: list[Tensor]) -> list[Tensor]:
        """Every hidden layer's outputs over the window ``(R, N, d_ℓ)``.

        Stored (buffer) or recomputed with the current weights, then the current ones.
        """
        if self.mode == "buffer":
            past_z = self.state.z
        else:
            with torch.no_grad():
                past_z = model.represent(self.state.x)
        return [torch.cat([p, z.detach()], -2) for p, z in zip(past_z, zs)]

    def signals(
        self, model: nn.Module, x: Tensor, y: Tensor, zs: list[Tensor], *, gamma: float, sigmas, variant: str
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """What the three-factor rule needs from a working memory for the current sample.

        Returns ``(xis, h, y)``: ξ^ℓ ``(R, d_ℓ)`` for every hidden layer, and the
        readout's window of inputs ``h`` ``(R, N, d)`` (or ``(N, d_x)``) with its
        one-hot labels ``y`` ``(N, C)`` for the readout's delta rule. Other
        memories (a reservoir) override this.
        """
        kx, ky = self.kernels(x, y)
        zw = self.window_outputs(model, zs)
        xis = window_signals(BioHSICParams(self.window, gamma, tuple(sigmas), variant), kx, ky, zw)
        yw = torch.cat([self.state.y, y], 0)
        return xis, (zw[-1] if zw else torch.cat([self.state.x, x], 0)), yw

    def get_extra_state(self) -> dict:
        return {} if self.state is None else self.state._asdict()

    def set_extra_state(self, state: dict) -> None:
        if not state or state.get("x") is None:
            self.state = None
        elif "kx" in state:
            self.state = WindowState(state["x"], state["y"], tuple(state["z"]), state["kx"], state["ky"])
        else:  # a checkpoint from before the window kept its kernels
            self.state = window_state_of(state["x"], state["y"], state["z"], self.sigmas)
