"""Online readout learners of a reservoir (MATH §4, eq 9): LMS and FORCE/RLS.

Both learn ``r_o = W_o r`` towards a target ``ξ`` one time step at a time
(``partial_fit``), for a bank of ``G`` readouts at once: ``W_o`` is
``(G, m, n)``, a rate vector ``r`` is ``(G, n)`` and a target ``(G, m)``.
``W_o`` starts at 0.

LMS (what the authors' code does)::

    e = W_o r - ξ,      W_o ← W_o - η e rᵀ                       O(m n) per step

FORCE / recursive least squares (Sussillo & Abbott 2009), with forgetting
factor ``ρ`` (1: none) and ``P_0 = I/α``::

    k = P r / (ρ + rᵀ P r)                    (= the updated P times r)
    P ← (P - k (P r)ᵀ) / ρ
    W_o ← W_o - e kᵀ,   e = W_o r - ξ  (the error before the update)

With ``ρ = 1`` after ``t`` updates ``W_o`` is exactly the ridge solution
``argmin Σ_s ‖W r_s - ξ_s‖² + α ‖W‖²``; with ``ρ < 1`` the past is weighted by
``ρ^{t-s}`` and the ridge term by ``ρ^t``. The cost is ``O(n² + m n)`` per
update (one ``P r`` product and one rank-1 update of ``P``); the updates
write into preallocated buffers and allocate nothing.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..functional.reservoir import lms_update_, rls_update_


class Readout(nn.Module):
    """``r_o = W_o r`` for a bank of ``G`` readouts; subclasses add ``partial_fit``.

    ``every``: learn only on every ``every``-th call of ``partial_fit`` (FORCE's
    "update every k steps").
    """

    def __init__(self, groups: int, units: int, outputs: int, *, every: int = 1, dtype=torch.float32, device=None):
        super().__init__()
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.register_buffer("weight", torch.zeros(groups, outputs, units, dtype=dtype, device=device))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("err", torch.zeros(groups, outputs, 1, dtype=dtype, device=device), persistent=False)
        self.every = every

    def forward(self, r: Tensor) -> Tensor:
        """Readout of rates ``(G, B, n)`` → ``(G, B, m)``."""
        return torch.bmm(r, self.weight.transpose(1, 2))

    def _due(self) -> bool:
        self.calls += 1
        return int(self.calls) % self.every == 0

    def partial_fit(self, r: Tensor, target: Tensor) -> None:
        raise NotImplementedError


class LMS(Readout):
    """Least-mean-squares readout: ``W_o ← W_o - lr (W_o r - ξ) rᵀ``; ``O(m n)`` per step."""

    def __init__(self, groups: int, units: int, outputs: int, *, lr: float = 5e-4, **kwargs):
        super().__init__(groups, units, outputs, **kwargs)
        self.lr = float(lr)

    @torch.no_grad()
    def partial_fit(self, r: Tensor, target: Tensor) -> None:
        """One step on rates ``(G, n)`` and targets ``(G, m)``."""
        if self._due():
            lms_update_(self.weight, r, target, self.lr, self.err)


class RLS(Readout):
    """FORCE / recursive-least-squares readout, ``P_0 = I/alpha``, forgetting factor ``forgetting``.

    Cost per update ``O(n² + m n)`` time, ``O(G n²)`` memory for ``P``; no allocation per step.
    """

    def __init__(self, groups: int, units: int, outputs: int, *, alpha: float = 1.0, forgetting: float = 1.0, **kwargs):
        super().__init__(groups, units, outputs, **kwargs)
        if alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if not 0 < forgetting <= 1:
            raise ValueError(f"forgetting must be in (0, 1], got {forgetting}")
        w = self.weight
        eye = torch.eye(units, dtype=w.dtype, device=w.device) / alpha
        self.register_buffer("P", eye.expand(groups, units, units).clone())
        for name, shape in (("pr", (groups, units, 1)), ("k", (groups, units, 1)), ("den", (groups, 1, 1))):
            self.register_buffer(name, w.new_zeros(shape), persistent=False)
        self.alpha, self.forgetting = float(alpha), float(forgetting)

    @torch.no_grad()
    def partial_fit(self, r: Tensor, target: Tensor) -> None:
        """One step on rates ``(G, n)`` and targets ``(G, m)``."""
        if self._due():
            rls_update_(self.weight, self.P, r, target, forgetting=self.forgetting, work=(self.pr, self.k, self.den, self.err))


def make_readout(learner: str, groups: int, units: int, outputs: int, **options) -> Readout:
    """``learner`` ``"lms"`` (options ``lr``, ``every``) or ``"rls"`` (``alpha``, ``forgetting``, ``every``)."""
    if learner == "lms":
        return LMS(groups, units, outputs, **options)
    if learner == "rls":
        return RLS(groups, units, outputs, **options)
    raise ValueError(f"unknown readout learner {learner!r}; choose lms or rls")
