"""Layer maths with a leading replica dimension: activations, LayerNorm, the dense map, and their VJPs.

A dense layer maps ``h`` to ``z = LN(act(a))``, ``a = W h + b`` (``W``
``(R, out, in)``; ``h`` ``(B, in)`` shared by the replicas or ``(R, B, in)``).
Its local factor ``β = ∂z/∂θ`` applied to a cotangent ``ξ`` of ``z`` is
:func:`dense_vjp` (to ``a``) then :func:`dense_param_grads` (to ``W, b``).
A leaky-integrate layer replaces ``a`` by a potential ``u`` that follows
:func:`leaky_step`.
"""
from __future__ import annotations

import torch
from torch import Tensor

ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity")
LAYERNORM_EPS = 1e-5
"""ε of the parameter-free LayerNorm (torch's default; the authors' flax code uses 1e-6)."""


def activate(a: Tensor, name: str) -> Tensor:
    """``act(a)`` for ``name`` in :data:`ACTIVATIONS`."""
    if name == "relu":
        return torch.relu(a)
    if name == "tanh":
        return torch.tanh(a)
    if name == "sigmoid":
        return torch.sigmoid(a)
    if name == "identity":
        return a
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


def activation_vjp(a: Tensor, r: Tensor, cot: Tensor, name: str, inplace: bool = False) -> Tensor:
    """Pull ``cot`` back through ``r = act(a)`` (``inplace``: into ``cot``'s own storage)."""
    if name == "relu":  # cot where a > 0, else 0 (a comparison's mask was 25x slower)
        if inplace:
            return torch.ops.aten.threshold_backward.grad_input(cot, a, 0.0, grad_input=cot)
        return torch.ops.aten.threshold_backward(cot, a, 0.0)
    if name == "tanh":
        return cot.mul_(1 - r * r) if inplace else cot * (1 - r * r)
    if name == "sigmoid":
        return cot.mul_(r * (1 - r)) if inplace else cot * r * (1 - r)
    if name == "identity":
        return cot
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(ACTIVATIONS)}")


def centred_variance(r: Tensor, dims=(-1,)) -> tuple[Tensor, Tensor]:
    """``(r - mean, biased variance)`` over ``dims``, in two vectorised passes.

    The same numbers as ``r.var(dims, unbiased=False)`` up to rounding; on the
    CPU ``torch.var`` over a CNN's 100k-element maps was 11× slower.
    """
    d = r - r.mean(dims, keepdim=True)
    return d, (d * d).mean(dims, keepdim=True)


def layernorm(r: Tensor, dims=(-1,), eps: float = LAYERNORM_EPS) -> Tensor:
    """Parameter-free LayerNorm over ``dims`` (biased variance): ``(r - μ) / √(σ² + ε)``.

    Examples
    --------
    >>> import torch
    >>> from ibhebb.functional.layers import layernorm
    >>> z = layernorm(torch.tensor([[1.0, 2.0, 3.0]]))
    >>> round(z.mean().item(), 6), round(z.pow(2).mean().item(), 4)
    (0.0, 1.0)
    """
    d, var = centred_variance(r, dims)
    return d * torch.rsqrt(var + eps)


def layernorm_vjp(r: Tensor, z: Tensor | None, cot: Tensor, dims=(-1,), eps: float = LAYERNORM_EPS) -> Tensor:
    """Pull ``cot`` back through ``z = layernorm(r, dims)``: ``(ξ - mean ξ - z mean(ξ z)) / √(σ² + ε)``.

    ``z = None``: ``z`` is formed here, from the same pass over ``r`` as ``σ²``.
    """
    d, var = centred_variance(r, dims)
    inv = torch.rsqrt(var + eps)
    if z is None:  # mean(ξ z) = inv mean(ξ d): z itself is never formed
        zxi = inv * (cot * d).mean(dims, keepdim=True)
        return (cot - cot.mean(dims, keepdim=True)).mul_(inv).addcmul_(d, inv * inv * zxi, value=-1)
    return inv * (cot - cot.mean(dims, keepdim=True) - z * (cot * z).mean(dims, keepdim=True))


def affine(h: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """``a = W h + b`` for ``R`` replicas: ``h`` ``(B, in)`` (shared) or ``(R, B, in)`` → ``(R, B, out)``."""
    a = torch.matmul(h, w.transpose(-1, -2))
    return a if b is None else a + b.unsqueeze(-2)


def leaky_step(u: Tensor | None, drive: Tensor, leak: float) -> Tensor:
    """One Euler step of ``τ_m du/dt = -u + drive``: ``u + (Δt/τ_m)(drive - u)``; ``u = None`` is rest (0)."""
    return leak * drive if u is None else u + leak * (drive - u)


def dense_output(a: Tensor, activation: str, layernorm_: bool, eps: float = LAYERNORM_EPS) -> tuple[Tensor, Tensor]:
    """``(r, z)``: the activation ``r = act(a)`` and the layer output ``z`` (``LN(r)`` with ``ε = eps``, or ``r``)."""
    r = activate(a, activation)
    return r, (layernorm(r, eps=eps) if layernorm_ else r)


def dense_vjp(a: Tensor, r: Tensor, z: Tensor, cot: Tensor, activation: str, layernorm_: bool,
              eps: float = LAYERNORM_EPS) -> Tensor:
    """Pull a cotangent of ``z`` back to the preactivation ``a`` of :func:`dense_output`."""
    if layernorm_:
        cot = layernorm_vjp(r, z, cot, eps=eps)
    return activation_vjp(a, r, cot, activation)


def dense_param_grads(h: Tensor, a_cot: Tensor, scale: float | Tensor = 1.0) -> tuple[Tensor, Tensor]:
    """``(g_W, g_b) = (scale Σ_batch a_cot hᵀ, scale Σ_batch a_cot)`` for ``a = W h + b``.

    ``h`` ``(B, in)`` or ``(R, B, in)``, ``a_cot`` ``(R, B, out)``; returns ``(R, out, in)`` and ``(R, out)``.
    ``scale = ∂a/∂(W h + b)``: 1, or ``Δt/τ_m`` for a leaky layer whose previous potential is held fixed.
    """
    hr = h if h.dim() == 3 else h.expand(a_cot.shape[0], *h.shape)
    gw, gb = torch.bmm(a_cot.transpose(-1, -2), hr), a_cot.sum(-2)
    if isinstance(scale, Tensor) or scale != 1.0:
        gw, gb = gw * scale, gb * scale
    return gw, gb


def softmax_delta(logits: Tensor, y1: Tensor) -> Tensor:
    """The readout's delta rule cotangent over a window: ``(softmax(logits) - y) / N``, ``N = logits.shape[-2]``."""
    return (torch.softmax(logits, -1) - y1) / logits.shape[-2]
