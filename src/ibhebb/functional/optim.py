"""The optimisers of ``torch.optim`` as pure in-place updates of tensors.

Same arithmetic, in the same order, as torch's single-tensor AdamW / Adam /
SGD, but with the learning rate, the weight decay and the step count held in
0-dim tensors, so a compiled or graph-captured step never reads a Python
number that changes (no recompile when a scheduler moves the learning rate,
no host synchronisation).

AdamW (``decoupled = True``), with ``t`` the step count after increment::

    θ ← θ (1 - η λ)
    m ← m + (1 - β₁)(g - m)
    v ← β₂ v + (1 - β₂) g²
    θ ← θ - η / (1 - β₁ᵗ) · m / (√v / √(1 - β₂ᵗ) + ε)

Adam adds ``λ θ`` to ``g`` instead of decaying ``θ``. SGD: ``g ← g + λ θ``,
``b ← μ b + g`` (``b`` starts at 0, so its first value is ``g`` as in torch),
``θ ← θ - η b``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

OPTIMIZERS = ("adamw", "adam", "sgd")


@dataclass(frozen=True)
class OptimSpec:
    """The constant part of an optimiser: its kind and its betas / momentum."""

    name: str
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum: float = 0.0

    @property
    def moments(self) -> int:
        """How many state tensors each parameter carries (AdamW/Adam: 2, SGD: 0 or 1)."""
        if self.name in ("adamw", "adam"):
            return 2
        return 1 if self.momentum else 0

    @classmethod
    def of(cls, optimizer: torch.optim.Optimizer) -> "OptimSpec":
        """Read the spec off a ``torch.optim`` optimiser; ``ValueError`` if it has no functional twin here."""
        group = optimizer.param_groups[0]
        if isinstance(optimizer, torch.optim.AdamW):
            name = "adamw"
        elif isinstance(optimizer, torch.optim.Adam):
            name = "adam"
        elif isinstance(optimizer, torch.optim.SGD):
            name = "sgd"
        else:
            raise ValueError(f"no fast twin of {type(optimizer).__name__}")
        for g in optimizer.param_groups:
            if g.get("amsgrad") or g.get("maximize") or g.get("nesterov") or g.get("dampening", 0):
                raise ValueError("amsgrad, maximize, nesterov and dampening have no fast twin")
            if isinstance(g["lr"], Tensor):
                raise ValueError("a tensor learning rate has no fast twin")
            if name != "sgd" and (tuple(g["betas"]) != tuple(group["betas"]) or g["eps"] != group["eps"]):
                raise ValueError("parameter groups with different betas have no fast twin")
            if name == "sgd" and g["momentum"] != group["momentum"]:
                raise ValueError("parameter groups with different momenta have no fast twin")
        if name == "sgd":
            return cls(name, momentum=float(group["momentum"]))
        return cls(name, betas=tuple(float(b) for b in group["betas"]), eps=float(group["eps"]))


def optimizer_update_(
    spec: OptimSpec, p: Tensor, g: Tensor, moments: tuple[Tensor, ...], lr: Tensor, wd: Tensor, powers: tuple[Tensor, Tensor]
) -> None:
    """Apply one step of ``spec`` to parameter ``p`` with gradient ``g``, in place.

    ``moments`` are ``(exp_avg, exp_avg_sq)`` for Adam(W), ``(momentum_buffer,)``
    for SGD with momentum, else empty; ``powers`` are ``(β₁ᵗ, β₂ᵗ)`` with ``t``
    the step count *after* this step (unused by SGD).

    Examples
    --------
    >>> import torch
    >>> from ibhebb.functional.optim import OptimSpec, optimizer_update_
    >>> p, g = torch.ones(3), torch.ones(3)
    >>> m, v = torch.zeros(3), torch.zeros(3)
    >>> one = torch.tensor(1.0, dtype=torch.float64)
    >>> optimizer_update_(OptimSpec("adamw", (0.9, 0.99)), p, g, (m, v), 0.1 * one, 0 * one, (0.9 * one, 0.99 * one))
    >>> round(p[0].item(), 4)
    0.9
    """
    if spec.name == "sgd":
        if spec.momentum == 0.0:
            p.sub_(lr * (g + wd * p))
            return
        (buf,) = moments
        buf.mul_(spec.momentum).add_(g + wd * p)
        p.sub_(lr * buf)
        return
    beta1, beta2 = spec.betas
    m, v = moments
    if spec.name == "adamw":
        p.mul_(1 - lr * wd)
    else:
        g = g + wd * p
    m.lerp_(g, 1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    step_size = lr / (1 - powers[0])
    bias2_sqrt = torch.sqrt(1 - powers[1])
    p.sub_(m / (v.sqrt() / bias2_sqrt + spec.eps) * step_size)


FUSED = {"adamw": getattr(torch, "_fused_adamw_", None), "adam": getattr(torch, "_fused_adam_", None)}
"""torch's one-pass kernels of AdamW and Adam, where this torch has them."""


def fused_optimizer_update_(
    spec: OptimSpec, params: Sequence[Tensor], grads: Sequence[Tensor], moments: Sequence[tuple[Tensor, ...]],
    lrs: Sequence[Tensor], wds: Sequence[Tensor], powers: tuple[Tensor, Tensor], step: Tensor,
) -> None:
    """:func:`optimizer_update_` of every parameter in one pass over each (torch's fused kernel; ``step`` ``(1,)`` the count
    after this step), one kernel call for all the parameters that share a learning rate and weight decay.

    The same update up to rounding; for eager code only (it reads ``lr`` and
    ``wd`` as Python numbers). SGD, or a torch without the kernel, runs
    :func:`optimizer_update_`.

    Examples
    --------
    >>> import torch
    >>> from ibhebb.functional.optim import OptimSpec, fused_optimizer_update_
    >>> p, g, m, v = torch.ones(3), torch.ones(3), torch.zeros(3), torch.zeros(3)
    >>> one = torch.tensor(1.0, dtype=torch.float64)
    >>> fused_optimizer_update_(OptimSpec("adamw", (0.9, 0.99)), [p], [g], [(m, v)], [0.1 * one], [0 * one],
    ...                         (0.9 * one, 0.99 * one), torch.ones(1, dtype=torch.float64))
    >>> round(p[0].item(), 4)
    0.9
    """
    kernel = FUSED.get(spec.name)
    if kernel is None or any(g.dtype != p.dtype for p, g in zip(params, grads)):
        for p, g, ms, lr, wd in zip(params, grads, moments, lrs, wds):
            optimizer_update_(spec, p, g, ms, lr, wd, powers)
        return
    groups: dict[tuple[float, float], list] = {}
    for p, g, (m, v), lr, wd in zip(params, grads, moments, lrs, wds):
        groups.setdefault((float(lr), float(wd)), []).append((p, g.contiguous(), m, v))
    for (lr, wd), group in groups.items():
        ps, gs, ms, vs = (list(t) for t in zip(*group))
        kernel(ps, gs, ms, vs, [], [step] * len(ps), lr=lr, beta1=spec.betas[0], beta2=spec.betas[1],
               weight_decay=wd, eps=spec.eps, amsgrad=False, maximize=False)
