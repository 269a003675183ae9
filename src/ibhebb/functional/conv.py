"""Convolution maths with a leading replica dimension: average pooling, the replica convolution, their VJPs.

A map is ``(..., C, H, W)``; ``R`` replicas run as one convolution with
``R·O`` filters (shared inputs) or one grouped convolution over ``R·C``
channels (per-replica inputs). The LayerNorm of a map is
:func:`~ibhebb.functional.layers.layernorm` over :data:`MAP_DIMS`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

MAP_DIMS = (-3, -2, -1)
"""The dimensions ``(C, H, W)`` a feature map's LayerNorm runs over."""


def pool(x: Tensor, size: int) -> Tensor:
    """Average pooling of ``(..., C, H, W)`` over ``size × size`` blocks (floor at the borders); ``size = 1``: identity."""
    if size == 1:
        return x
    lead = x.shape[:-3]
    y = F.avg_pool2d(x.reshape(-1, *x.shape[-3:]), size)
    return y.reshape(*lead, *y.shape[-3:])


def pool_vjp(cot: Tensor, size: int, height: int, width: int) -> Tensor:
    """Pull a cotangent of ``pool(x, size)`` back to ``x`` of spatial size ``(height, width)``.

    Each input pixel of a block receives ``1/size²`` of its block's cotangent;
    pixels dropped by the floor at the border receive 0.
    """
    if size == 1:
        return cot
    up = cot.repeat_interleave(size, -2).repeat_interleave(size, -1) / (size * size)
    return F.pad(up, (0, width - up.shape[-1], 0, height - up.shape[-2]))


def replica_conv2d(h: Tensor, weight: Tensor, bias: Tensor | None, padding: int) -> Tensor:
    """``R`` convolutions at once: ``h`` ``(B, C, H, W)`` shared or ``(R, B, C, H, W)``, ``weight`` ``(R, O, C, k, k)``.

    Returns ``(R, B, O, H', W')``. Shared inputs use one ordinary convolution
    with ``R·O`` filters; per-replica inputs one grouped convolution over
    ``R·C`` channels.
    """
    R, O = weight.shape[:2]
    w = weight.reshape(R * O, *weight.shape[2:])
    b = bias.reshape(R * O) if bias is not None else None
    if h.dim() == 4:
        a = F.conv2d(h, w, b, padding=padding)
    else:
        B = h.shape[1]
        a = F.conv2d(h.transpose(0, 1).reshape(B, -1, *h.shape[-2:]), w, b, padding=padding, groups=R)
    return a.reshape(a.shape[0], R, O, *a.shape[-2:]).transpose(0, 1)


def replica_conv2d_weight_grad(h: Tensor, a_cot: Tensor, weight_shape, padding: int) -> Tensor:
    """``Σ_batch`` gradient of ``replica_conv2d`` w.r.t. its weight for a cotangent ``a_cot`` ``(R, B, O, H', W')``."""
    R, O = weight_shape[:2]
    B = a_cot.shape[1]
    if h.dim() == 4:
        h = h.expand(R, *h.shape)
    x = h.transpose(0, 1).reshape(B, -1, *h.shape[-2:])
    g = a_cot.transpose(0, 1).reshape(B, R * O, *a_cot.shape[-2:])
    gw = torch.nn.grad.conv2d_weight(x, (R * O, *weight_shape[2:]), g, padding=padding, groups=R)
    return gw.reshape(weight_shape)


def max_pool(x: Tensor, size: int) -> Tensor:
    """Max pooling of ``(..., C, H, W)`` over ``size × size`` blocks (floor at the borders); ``size = 1``: identity."""
    if size == 1:
        return x
    y = F.max_pool2d(x.reshape(-1, *x.shape[-3:]), size)
    return y.reshape(*x.shape[:-3], *y.shape[-3:])


def max_pool_vjp(x: Tensor, cot: Tensor, size: int) -> Tensor:
    """Pull a cotangent of ``max_pool(x, size)`` back to ``x``: each block's cotangent goes to its maximum.

    The maximum is the one ``F.max_pool2d`` picks (the first of ties); pixels
    dropped by the floor at the border receive 0.
    """
    if size == 1:
        return cot
    flat = x.reshape(-1, *x.shape[-3:])
    _, idx = F.max_pool2d(flat, size, return_indices=True)
    up = F.max_unpool2d(cot.reshape(idx.shape), idx, size, output_size=flat.shape[-2:])
    return up.reshape(x.shape)


NET_ACTIVATIONS = ("selu", "relu", "leaky-relu")
"""Nonlinearities of the deep conv net of seed 001 §5.3: SELU (conv nets under SGD), ReLU, LeakyReLU."""


def net_activate(a: Tensor, name: str, negative_slope: float = 0.1) -> Tensor:
    """``act(a)`` for ``name`` in :data:`NET_ACTIVATIONS` (``leaky-relu`` of slope ``negative_slope``).

    Examples
    --------
    >>> import torch
    >>> net_activate(torch.tensor([-1.0, 2.0]), "leaky-relu").tolist()
    [-0.10000000149011612, 2.0]
    """
    if name == "selu":
        return F.selu(a)
    if name == "relu":
        return torch.relu(a)
    if name == "leaky-relu":
        return F.leaky_relu(a, negative_slope)
    raise ValueError(f"unknown activation {name!r}; choose one of {', '.join(NET_ACTIVATIONS)}")


def replica_batch_norm(a: Tensor, running_mean: Tensor, running_var: Tensor, weight: Tensor, bias: Tensor,
                       training: bool, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """Batch normalisation of ``R`` replicas at once: ``a`` ``(R, B, C, …)``, statistics per replica and channel.

    ``â = (a - μ) / √(σ² + ε) · weight + bias`` with ``μ, σ²`` over the batch (and positions) in training,
    the running estimates ``(R, C)`` (updated in place, as ``torch.nn.BatchNorm`` does) otherwise.

    Examples
    --------
    >>> import torch
    >>> a = torch.randn(2, 8, 3, 4, 4)
    >>> out = replica_batch_norm(a, torch.zeros(2, 3), torch.ones(2, 3), torch.ones(2, 3), torch.zeros(2, 3), True)
    >>> bool(out.mean((1, 3, 4)).abs().max() < 1e-5)
    True
    """
    R, B = a.shape[:2]
    flat = a.transpose(0, 1).reshape(B, R * a.shape[2], *a.shape[3:])
    out = F.batch_norm(flat, running_mean.view(-1), running_var.view(-1), weight.reshape(-1), bias.reshape(-1),
                       training, momentum, eps)
    return out.reshape(B, R, *a.shape[2:]).transpose(0, 1)
