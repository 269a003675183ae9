"""Working memory ``features``: ξ read out of leaky traces of random-feature neurons, no sample stored.

The maths is :mod:`ibhebb.functional.traces`. What is there, per network:

- *feature neurons* of the input, ``φ_x(x)`` (``D`` random Fourier features, fixed random weights
  ``Ω_x``), of the label, ``φ_y(y)`` (``C + 1`` units, exact), and of each hidden layer's output,
  ``φ_z(z^ℓ)`` (``D`` per layer, weights ``Ω_z^ℓ``). Never learned.
- *traces*: every feature neuron has ``S`` leaky integrators in a cascade (time constant ``τ``);
  per layer a fast-weight matrix ``F^ℓ`` ``(D, 2 d_ℓ + 2)`` per stage, updated by a Hebbian outer
  product of the feature neurons with ``u = [1, z, s, s z]`` when a sample ends (``s`` its surprise,
  itself a readout of the ``x`` and ``y`` traces).
- a fixed readout: ξ^ℓ is ``φ_z(z_0)ᵀ Σ_j c_j F_j`` combined with ``z_0`` and ``s_0``; ``c`` and ``τ``
  are fitted once from ``N`` (no data). Every readout is divided by the same readout of a trace of
  the constant 1, so the window has the box's mass ``(N-1)/N`` also while the memory fills.

State per replica: ``S (1 + D + C + 1 + Σ_ℓ D (2 d_ℓ + 2))`` numbers, whatever the length of the stream.
The readout layer learns by its delta rule on the current sample only (the buffer's replays the
window; no sample is kept here to replay).

With ``check = True`` the memory also keeps a buffer, used for nothing but comparing ξ with the
true ξ of the window (:meth:`diagnostics`, like the reservoir memory's).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..functional.signals import check_window
from ..functional.traces import (
    cascade_push_,
    fast_weight_increment,
    fourier_features,
    fourier_frequencies,
    label_features,
    readout_scale,
    surprise,
    trace_coefficients,
    trace_readout,
)
from .stats import SignalStats
from .window import WindowMemory


class FeatureMemory(nn.Module):
    """ξ^ℓ from leaky traces of random features (module docstring).

    Parameters
    ----------
    window : int
        ``N`` of the rule: the box the trace window is fitted to.
    sigmas : (σ_x, σ_y, σ_z)
    gamma : float
        ``γ`` of the surprise stored with each sample.
    features : int
        ``D``, random Fourier features per kernel (even).
    tau : float
        Time constant of the traces in samples (0: fitted to ``N``).
    stages : int
        Leaky integrators in each trace's cascade.
    seed : int
        Seed of the fixed random feature weights.
    draw : {"orthogonal", "independent"}
        How the feature weights are drawn (:func:`~ibhebb.functional.traces.fourier_frequencies`).
    check : bool
        Also keep a buffer, to measure ξ against the true ξ.

    Examples
    --------
    >>> import torch
    >>> from ibhebb.memory.features import FeatureMemory
    >>> mem = FeatureMemory(4, sigmas=(0.5, 0.1, 1.0), gamma=2.0, features=64)
    >>> for p in range(3):
    ...     mem.push(torch.rand(1, 5), torch.eye(3)[:1], [torch.rand(2, 1, 6)])
    >>> mem.ready, [xi.shape for xi in mem.signals(None, torch.rand(1, 5), torch.eye(3)[1:2], [torch.rand(2, 1, 6)],
    ...                                          gamma=2.0, sigmas=(0.5, 0.1, 1.0), variant="paper")[0]]
    (True, [torch.Size([2, 6])])
    """

    mode = "features"

    def __init__(self, window: int, *, sigmas=(0.5, 0.1, 1.0), gamma: float = 2.0, features: int = 256,
                 tau: float = 0.0, stages: int = 1, seed: int = 0, draw: str = "orthogonal", check: bool = False):
        super().__init__()
        check_window(window)
        if features < 2 or features % 2:
            raise ValueError(f"the number of random features must be even and >= 2, got {features}")
        self.window, self.sigmas, self.gamma = window, tuple(float(s) for s in sigmas), float(gamma)
        self.features, self.stages, self.seed, self.draw = int(features), int(stages), int(seed), draw
        self.tau, coef = trace_coefficients(window, tau=tau, stages=stages)
        self.lam = 1.0 - 1.0 / self.tau
        self.register_buffer("coef", coef)
        self.register_buffer("count", torch.zeros((), dtype=torch.long))
        self.buffer = WindowMemory(window, "buffer", sigmas) if check else None
        self._stats = SignalStats()
        self.omega: list[Tensor] | None = None  # Ω_x, then Ω_z per layer
        self.traces: list[Tensor] | None = None  # t_1 (S,), t_x (S, D), t_y (S, C+1), F^ℓ (S, R, D, 2d+2)
        self.read: list[Tensor] | None = None  # the traces weighted by c: what the readouts see
        self._cur = None  # (x, y, (φ_x, φ_y, s)) of the sample being presented

    @property
    def ready(self) -> bool:
        return int(self.count) >= self.window - 1

    def reset(self) -> None:
        """Forget everything (traces to zero); the next ``N - 1`` samples only fill the memory again."""
        self.traces = self.read = self._cur = None
        self.count.zero_()
        if self.buffer is not None:
            self.buffer.reset()

    def _build(self, x: Tensor, y: Tensor, zs: list[Tensor]) -> None:
        g = torch.Generator().manual_seed(self.seed)
        D, dt = self.features, x.dtype
        if self.omega is None:
            dims = [x.shape[-1]] + [z.shape[-1] for z in zs]
            sig = [self.sigmas[0]] + [self.sigmas[2]] * len(zs)
            self.omega = [fourier_frequencies(d, D, s, g, draw=self.draw).to(dt) for d, s in zip(dims, sig)]
        S, R = self.stages, zs[0].shape[0]
        self.traces = [x.new_zeros(S), x.new_zeros(S, D), x.new_zeros(S, y.shape[-1] + 1)]
        self.traces += [x.new_zeros(S, R, D, 2 * z.shape[-1] + 2) for z in zs]
        self._weigh()

    def _weigh(self) -> None:
        """What the readouts see: ``Σ_j c_j t_j``, divided by the trace of a constant (scaled to ``(N-1)/N``) so that
        the window has the box's mass while the memory fills."""
        c = self.coef.to(self.traces[0].dtype)
        scale = readout_scale(c @ self.traces[0], self.window)
        self.read = [scale * torch.tensordot(c, t, 1) for t in self.traces[1:]]

    def _current(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``φ_x(x)``, ``φ_y(y)`` and the surprise ``s`` ``(1,)`` of the current sample against the traces of the past.

        Computed once per sample (a leaky network asks ``T`` times, and the push once more).
        """
        if self._cur is not None and self._cur[0] is x and self._cur[1] is y:
            return self._cur[2]
        px, py = fourier_features(x, self.omega[0]), label_features(y, self.sigmas[1])
        s = surprise((px * self.read[0]).sum(-1), (py * self.read[1]).sum(-1), window=self.window, gamma=self.gamma)
        self._cur = (x, y, (px, py, s))
        return self._cur[2]

    @torch.no_grad()
    def push(self, x: Tensor, y: Tensor, zs: list[Tensor]) -> None:
        """The sample just presented joins the traces: ``x`` ``(1, d_x)``, ``y`` ``(1, C)``, ``zs[ℓ]`` ``(R, 1, d_ℓ)``."""
        if self.traces is None:
            self._build(x, y, zs)
        px, py, s = self._current(x, y)
        self._cur = None
        new = [torch.ones_like(self.traces[0][0]), px[0], py[0]]
        for z, om in zip(zs, self.omega[1:]):
            new.append(fast_weight_increment(z, om, s))  # (R, D, 2d+2)
        for t, f in zip(self.traces, new):
            cascade_push_(t, f, self.lam)
        self._weigh()
        self.count += 1
        if self.buffer is not None:
            self.buffer.push(x, y, zs)

    @torch.no_grad()
    def signals(self, model: nn.Module, x: Tensor, y: Tensor, zs: list[Tensor], *, gamma: float, sigmas,
                variant: str) -> tuple[list[Tensor], Tensor, Tensor]:
        """As :meth:`WindowMemory.signals`: ξ^ℓ ``(R, d_ℓ)`` from the traces; the readout sees the current sample only."""
        if self.traces is None:
            self._build(x, y, zs)
        s0 = self._current(x, y)[2].view(1, 1, 1)
        xis = []
        for z, om, F in zip(zs, self.omega[1:], self.read[2:]):
            r = fourier_features(z, om) @ F  # (R, 1, 2d+2)
            xis.append(trace_readout(r, z, s0, window=self.window, sigma_z=self.sigmas[2], variant=variant)[:, 0])
        if self.buffer is not None and self.buffer.ready:
            self._stats.add(xis, self.buffer.signals(model, x, y, zs, gamma=gamma, sigmas=sigmas, variant=variant)[0])
        return xis, zs[-1].detach(), y

    def diagnostics(self) -> dict:
        """Per layer since the last call (``check = True`` only): correlation of ξ with the buffer's true ξ, NMSE."""
        return self._stats.summary()

    def get_extra_state(self) -> dict:
        return {"omega": self.omega, "traces": self.traces, "stats": self._stats.sums,
                "buffer": None if self.buffer is None else self.buffer.get_extra_state()}

    def set_extra_state(self, extra: dict) -> None:
        self.omega, self.traces, self._stats.sums = extra["omega"], extra["traces"], extra["stats"]
        if self.traces is not None:
            self._weigh()
        if self.buffer is not None and extra.get("buffer") is not None:
            self.buffer.set_extra_state(extra["buffer"])
