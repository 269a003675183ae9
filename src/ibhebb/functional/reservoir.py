"""The reservoir's maths (MATH §4, eqs 8–9).

One Euler step of a bank of rate reservoirs, its inputs, and the online readout updates.

A bank holds ``G`` reservoirs of ``n`` units, each driven by ``B`` streams:
states are ``(G, B, n)``, weights ``(G, n, ·)``.

LMS: ``W ← W - η (W r - ξ) rᵀ``. RLS (FORCE) with forgetting ``ρ``:
``k = P r / (ρ + rᵀ P r)``, ``P ← (P - k rᵀ P) / ρ``, ``W ← W - (W r - ξ) kᵀ``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor


class ReservoirState(NamedTuple):
    """``u`` potentials and ``r`` rates, both ``(G, B, n)``."""

    u: Tensor
    r: Tensor


def reservoir_step(
    state: ReservoirState,
    input_drive: Tensor,
    r_out: Tensor | None,
    w_rec: Tensor,
    w_fb: Tensor | None,
    *,
    leak: float,
    gain: float,
    noise: float = 0.0,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    out: ReservoirState | None = None,
    work: Tensor | None = None,
) -> ReservoirState:
    """One Euler step of eq 8.

    ``u ← u + leak · (-u + gain · W_r r + W_in r_i + W_fb r_o)``, ``r ← tanh(u) + ζ_h``.

    Parameters
    ----------
    state : ReservoirState, ``(G, B, n)``
    input_drive : Tensor ``(G, B, n)``
        ``W_in r_i``, constant while a sample is held (see :meth:`Reservoir.input_drive`).
    r_out : Tensor ``(G, B, m)`` or None
        The readout fed back; None: no feedback.
    w_rec : Tensor ``(G, n, n)``; w_fb : Tensor ``(G, n, m)`` or None
    leak, gain : ``Δt/τ_r`` and ``λ``.
    noise : ``ε_h`` of the hidden noise (0: none).
    generator : torch.Generator, or one per column ``b`` of ``B``, optional
        Where ``ζ_h`` is drawn from; with one generator per column (per replica)
        column ``b``'s noise does not depend on how many columns there are.
    out : ReservoirState, optional
        Where to write the new state; may be ``state`` itself (in place). Without
        it new tensors are returned and ``state`` is left alone.
    work : Tensor ``(G, B, n)``, optional
        Scratch space; with ``out`` and ``work`` the step allocates nothing.

    Cost: ``O(G B n²)`` for ``W_r r`` plus ``O(G B n m)`` for the feedback.

    Examples
    --------
    >>> import torch
    >>> from ibhebb.functional.reservoir import ReservoirState, reservoir_step
    >>> s = ReservoirState(torch.zeros(1, 2, 5), torch.zeros(1, 2, 5))
    >>> w = torch.zeros(1, 5, 5)
    >>> reservoir_step(s, torch.ones(1, 2, 5), None, w, None, leak=0.5, gain=1.0).u[0, 0, 0].item()
    0.5
    """
    u, r = state
    if out is None:
        out = ReservoirState(torch.empty_like(u), torch.empty_like(r))
    drive = torch.empty_like(u) if work is None else work
    torch.bmm(r, w_rec.transpose(1, 2), out=drive)
    if gain != 1.0:
        drive.mul_(gain)
    drive.add_(input_drive)
    if r_out is not None and w_fb is not None:
        drive.baddbmm_(r_out, w_fb.transpose(1, 2))
    torch.lerp(u, drive, leak, out=out.u)
    torch.tanh(out.u, out=out.r)
    if noise > 0:
        out.r.add_(uniform_noise_(drive, noise, generator))
    return out


def uniform_noise_(out: Tensor, eps: float, generator: torch.Generator | Sequence[torch.Generator] | None) -> Tensor:
    """Fill ``out`` ``(G, B, ·)`` with ``U(-ε, ε)`` in place: column ``b`` from ``generator[b]`` when given one per column."""
    if isinstance(generator, Sequence):
        for b, g in enumerate(generator):
            out[:, b].uniform_(-eps, eps, generator=g)
        return out
    return out.uniform_(-eps, eps, generator=generator)


def lms_update_(weight: Tensor, r: Tensor, target: Tensor, lr: float, err: Tensor) -> Tensor:
    """In place: ``W ← W - lr (W r - ξ) rᵀ``; ``weight`` ``(G, m, n)``, ``r`` ``(G, n)``,
    ``target`` ``(G, m)``, ``err`` a ``(G, m, 1)`` buffer that receives the error. Returns ``err``."""
    torch.bmm(weight, r.unsqueeze(-1), out=err)
    err.sub_(target.unsqueeze(-1))
    weight.baddbmm_(err, r.unsqueeze(-2), alpha=-lr)
    return err


def rls_update_(
    weight: Tensor, P: Tensor, r: Tensor, target: Tensor, *, forgetting: float = 1.0, work: tuple[Tensor, Tensor, Tensor, Tensor]
) -> Tensor:
    """In place, one FORCE/RLS step (see the module docstring).

    Parameters
    ----------
    weight : ``(G, m, n)``; P : ``(G, n, n)``; r : ``(G, n)``; target : ``(G, m)``
    forgetting : ``ρ`` in (0, 1].
    work : buffers ``(Pr (G, n, 1), k (G, n, 1), den (G, 1, 1), err (G, m, 1))``.

    Returns the a-priori error ``W r - ξ`` ``(G, m, 1)`` (a view of ``err``).

    Examples
    --------
    >>> import torch
    >>> from ibhebb.reservoir import RLS
    >>> rls = RLS(1, 3, 1, alpha=1e-6, dtype=torch.float64)
    >>> r = torch.eye(3, dtype=torch.float64)
    >>> for t in range(3):
    ...     rls.partial_fit(r[t][None], torch.tensor([[float(t)]], dtype=torch.float64))
    >>> [round(v, 4) for v in rls.weight[0, 0].tolist()]
    [0.0, 1.0, 2.0]
    """
    pr, k, den, err = work
    rc = r.unsqueeze(-1)
    torch.bmm(P, rc, out=pr)
    torch.bmm(r.unsqueeze(-2), pr, out=den)
    den.add_(forgetting)
    torch.div(pr, den, out=k)
    torch.bmm(weight, rc, out=err)
    err.sub_(target.unsqueeze(-1))
    P.baddbmm_(k, pr.transpose(1, 2), alpha=-1.0)
    if forgetting != 1.0:
        P.div_(forgetting)
    weight.baddbmm_(err, k.transpose(1, 2), alpha=-1.0)
    return err


def reservoir_inputs(x: Tensor, y: Tensor, zs: list[Tensor], width: int, dtype: torch.dtype) -> Tensor:
    """``r_i = [x; y; z^ℓ]`` for every layer's reservoir and replica, zero-padded to ``width``: ``(L, R, width)``.

    ``x`` ``(1, d_x)`` and ``y`` ``(1, C)`` are the current sample, shared by the ``R`` replicas; ``zs[ℓ]`` is
    ``(R, 1, d_ℓ)`` or ``(R, d_ℓ)``.
    """
    R = zs[0].shape[0]
    rows = []
    for z in zs:
        parts = [x.reshape(1, -1).expand(R, -1), y.reshape(1, -1).expand(R, -1), z.reshape(R, -1)]
        pad = width - sum(p.shape[-1] for p in parts)
        rows.append(torch.cat([p.to(dtype) for p in parts] + [x.new_zeros(R, pad, dtype=dtype)], -1))
    return torch.stack(rows)
