"""Rate reservoir dynamics (MATH §4, eq 8), batched over groups and streams.

Euler steps of ``Δt`` of

    τ_r du/dt = -u + λ W_r r + W_in r_i + W_fb r_o
    r = tanh(u) + ζ_h,        ζ_h ~ U(-ε_h, ε_h)

Names follow common reservoir libraries; the mapping to the paper's symbols:

=====================  ===================================================
name here              meaning
=====================  ===================================================
``units``              ``n``, number of rate units
``lr`` (leak rate)     ``Δt / τ_r`` (the paper: 1 ms / 5 ms = 0.2)
``sr``                 ``λ``, gain on ``W_r``. Entries of ``W_r`` are
                       ``N(0, 1/(p_c n))`` on a random ``p_c`` fraction of
                       pairs, so its spectral radius is ≈ 1 (circular law)
                       and ``sr`` is ≈ the spectral radius of ``λ W_r``;
                       ``λ > 1`` is chaotic without feedback.
``connectivity``       ``p_c``
``input_scaling``      ``W_in = input_scaling · U(-1, 1)``; a scalar or one
                       value per input column
``feedback_scaling``   ``W_fb = feedback_scaling · U(-1, 1)``
``noise_hidden``       ``ε_h``
``seed``               seed of every random draw of the weights
=====================  ===================================================

Shapes: a reservoir bank holds ``G`` independent reservoirs (one per hidden
layer of a network, or one per seed), weights ``(G, n, ·)``; a state is
``(G, B, n)`` with ``B`` streams run through the same weights (the replicas
of a network). ``W_r`` is stored dense with its zeros: at ``p_c = 0.1`` and a
few thousand units a dense batched matmul is faster than sparse kernels on
both CPU and GPU.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn

from ..functional.reservoir import ReservoirState, reservoir_step


def stream_generators(have: list[torch.Generator], streams: int, seed: int, device) -> list[torch.Generator]:
    """``have`` grown to ``streams`` generators on ``device``, stream ``b`` seeded from ``(seed, b)``: a stream's draws do
    not depend on how many streams there are (so replica ``r`` of a run is the same whatever ``R`` is)."""
    have = [] if have and have[0].device != torch.device(device) else list(have)
    while len(have) < streams:
        have.append(torch.Generator(device=device).manual_seed(seed + 1_000_003 * len(have)))
    return have


def recurrent_weights(groups: int, units: int, connectivity: float, generator: torch.Generator) -> Tensor:
    """``W_r`` ``(G, n, n)``: a ``p_c`` fraction of entries ``N(0, 1/(p_c n))``, the rest 0."""
    mask = torch.rand(groups, units, units, generator=generator) < connectivity
    w = torch.randn(groups, units, units, generator=generator) / (connectivity * units) ** 0.5
    return w * mask


def uniform_weights(groups: int, units: int, columns: int, scaling, generator: torch.Generator) -> Tensor:
    """``scaling · U(-1, 1)`` of shape ``(G, n, columns)``; ``scaling`` a scalar or ``(columns,)``."""
    w = torch.rand(groups, units, columns, generator=generator) * 2.0 - 1.0
    return w * torch.as_tensor(scaling, dtype=w.dtype)


class Reservoir(nn.Module):
    """A bank of ``groups`` rate reservoirs with fixed random weights (eq 8).

    Parameters
    ----------
    units : int
        ``n``.
    in_features, out_features : int
        Dimensions of ``r_i`` and of the fed-back readout ``r_o``.
    groups : int
        Independent reservoirs in the bank (one per hidden layer, or per seed).
    lr : float
        Leak ``Δt/τ_r``.
    sr : float
        Gain ``λ`` on ``W_r``.
    connectivity : float
        ``p_c``.
    input_scaling : float or sequence of ``in_features`` floats
    feedback_scaling : float
    noise_hidden : float
        ``ε_h``.
    seed : int

    Examples
    --------
    >>> import torch
    >>> from ibhebb.reservoir import Reservoir
    >>> res = Reservoir(100, 3, 2, groups=2, seed=0)
    >>> state = res.initial_state(4)
    >>> drive = res.input_drive(torch.randn(2, 4, 3))
    >>> state = res(drive, torch.zeros(2, 4, 2), state)
    >>> state.r.shape
    torch.Size([2, 4, 100])
    """

    def __init__(
        self,
        units: int,
        in_features: int,
        out_features: int,
        *,
        groups: int = 1,
        lr: float = 0.2,
        sr: float = 1.2,
        connectivity: float = 0.1,
        input_scaling: float | Sequence[float] = 1.0,
        feedback_scaling: float = 1.0,
        noise_hidden: float = 0.0,
        seed: int = 0,
    ):
        super().__init__()
        if not 0 < lr <= 1:
            raise ValueError(f"leak rate lr = Δt/τ_r must be in (0, 1], got {lr}")
        if not 0 < connectivity <= 1:
            raise ValueError(f"connectivity must be in (0, 1], got {connectivity}")
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("w_rec", recurrent_weights(groups, units, connectivity, g))
        self.register_buffer("w_in", uniform_weights(groups, units, in_features, input_scaling, g))
        self.register_buffer("w_fb", uniform_weights(groups, units, out_features, feedback_scaling, g))
        self.units, self.groups, self.in_features, self.out_features = units, groups, in_features, out_features
        self.lr, self.sr, self.noise_hidden, self.seed = float(lr), float(sr), float(noise_hidden), seed
        self._work: Tensor | None = None
        self._noise_gens: list[torch.Generator] = []

    def hyperparameters(self) -> dict:
        return dict(units=self.units, in_features=self.in_features, out_features=self.out_features,
                    groups=self.groups, lr=self.lr, sr=self.sr, noise_hidden=self.noise_hidden, seed=self.seed)

    def initial_state(self, batch: int) -> ReservoirState:
        z = self.w_rec.new_zeros(self.groups, batch, self.units)
        return ReservoirState(z, z.clone())

    def input_drive(self, r_in: Tensor) -> Tensor:
        """``W_in r_i`` ``(G, B, n)`` for inputs ``(G, B, in_features)`` (computed once per held sample)."""
        return torch.bmm(r_in.to(self.w_in.dtype), self.w_in.transpose(1, 2))

    def random_state(self) -> dict:
        """The hidden noise's generator states, one per stream (replica) drawn so far; checkpoints save them."""
        return {"noise": [g.get_state() for g in self._noise_gens]}

    def set_random_state(self, state: dict) -> None:
        self._noise_gens = []
        for b, saved in enumerate(state["noise"]):
            self._generators(b + 1)[b].set_state(saved.cpu())

    def _generators(self, streams: int) -> list[torch.Generator]:
        self._noise_gens = stream_generators(self._noise_gens, streams, self.seed + 1, self.w_rec.device)
        return self._noise_gens[:streams]

    def forward(self, input_drive: Tensor, r_out: Tensor | None, state: ReservoirState, *, inplace: bool = True) -> ReservoirState:
        """Advance ``state`` by one step; in place (no allocation) unless ``inplace=False``."""
        if self._work is None or self._work.shape != state.u.shape or self._work.device != state.u.device:
            self._work = torch.empty_like(state.u)
        return reservoir_step(
            state, input_drive, r_out, self.w_rec, self.w_fb, leak=self.lr, gain=self.sr,
            noise=self.noise_hidden, generator=self._generators(state.u.shape[1]) if self.noise_hidden > 0 else None,
            out=state if inplace else None, work=self._work,
        )
