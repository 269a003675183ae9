"""Convolution maths with a leading replica dimension: average pooling, the replica convolution, their VJPs.

A map is ``(..., C, H, W)``; ``R`` replicas run as one convolution with
``R·O`` filters (shared inputs) or one grouped convolution over ``R·C``
channels (per-replica inputs); for the one sample of an online step, as one
matrix product per replica on the input's :func:`patches` (:func:`patch_conv2d`).
The LayerNorm of a map is :func:`~ibhebb.functional.layers.layernorm` over
:data:`MAP_DIMS`, its scale :func:`map_scale`.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .layers import LAYERNORM_EPS, activate, activation_vjp

MAP_DIMS = (-3, -2, -1)
"""The dimensions ``(C, H, W)`` a feature map's LayerNorm runs over."""


def pool(x: Tensor, size: int) -> Tensor:
    """Average pooling of ``(..., C, H, W)`` over ``size × size`` blocks (floor at the borders); ``size = 1``: identity.

    The blocks' rows, then their columns, are added as strided slices
    (torch's ``avg_pool2d`` was 3× slower on small maps).

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(2, 3, 7, 6)
    >>> torch.allclose(pool(x, 2), torch.nn.functional.avg_pool2d(x, 2))
    True
    """
    if size == 1:
        return x
    H, W = x.shape[-2] // size, x.shape[-1] // size
    if x.shape[-2:] != (H * size, W * size):
        x = x[..., : H * size, : W * size]
    rows = x.reshape(*x.shape[:-2], H, size, W * size).unbind(-2)
    s = rows[0] + rows[1]
    for row in rows[2:]:
        s.add_(row)
    cols = s.reshape(*s.shape[:-1], W, size).unbind(-1)
    out = cols[0] + cols[1]
    for col in cols[2:]:
        out.add_(col)
    return out.mul_(1.0 / (size * size))  # in place on fresh sums: each op over a map costs ~10 µs of dispatch alone


def pool_vjp(cot: Tensor, size: int, height: int, width: int) -> Tensor:
    """Pull a cotangent of ``pool(x, size)`` back to ``x`` of spatial size ``(height, width)``.

    Each input pixel of a block receives ``1/size²`` of its block's cotangent;
    pixels dropped by the floor at the border receive 0. The first row of each
    block is written from the small map, a column of the block at a time, then copied to the block's other rows.
    """
    if size == 1:
        return cot
    *lead, H, W = cot.shape
    small = cot * (1.0 / (size * size))
    exact = (height, width) == (H * size, W * size)
    out = cot.new_empty(*lead, height, width) if exact else cot.new_zeros(*lead, height, width)
    blocks = out[..., : H * size, : W * size].unflatten(-1, (W, size)).unflatten(-3, (H, size))  # (..., H, size, W, size)
    first = blocks[..., 0, :, :]
    for j in range(size):
        first[..., j].copy_(small)
    for i in range(1, size):
        blocks[..., i, :, :].copy_(first)
    return out


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


def patches(x: Tensor, k: int, padding: int) -> Tensor:
    """The ``k × k``-patches of maps ``x`` ``(..., B, C, H, W)`` zero-padded by ``padding``: ``(..., C k², B H' W')`` (im2col).

    Column ``(b, i, j)`` holds what a convolution's output pixel ``(i, j)`` of
    map ``b`` sees, channel-major then row-major in the patch, so
    ``W ⋆ x = W.reshape(O, C k²) @ patches(x)`` for all ``B`` maps at once.

    Examples
    --------
    >>> import torch
    >>> x, w = torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3)
    >>> out = (w.reshape(4, -1) @ patches(x, 3, 1)).reshape(4, 2, 5, 5).transpose(0, 1)
    >>> torch.allclose(out, torch.nn.functional.conv2d(x, w, padding=1), atol=1e-5)
    True
    """
    *lead, B, C, H, W = x.shape
    xp = F.pad(x, (padding,) * 4) if padding else x
    Ho, Wo = H + 2 * padding - k + 1, W + 2 * padding - k + 1
    *ls, sb, sc, sh, sw = xp.stride()
    view = xp.as_strided((*lead, C, k, k, B, Ho, Wo), (*ls, sc, sh, sw, sb, sh, sw))
    return view.reshape(*lead, C * k * k, B * Ho * Wo)


def patch_conv2d(cols: Tensor, weight: Tensor, bias: Tensor | None, size: tuple[int, int]) -> Tensor:
    """:func:`replica_conv2d` on the :func:`patches` ``cols`` of its input, as one matrix product per replica.

    ``cols`` ``(C k², B H' W')`` shared or ``(R, C k², B H' W')``; ``size`` ``(H', W')``. For the few samples
    of an online step: the weights need no reordering (torch's convolution reorders them at every call), and
    the weight gradient reuses the patches.
    """
    R, O = weight.shape[:2]
    w = weight.reshape(R, O, -1)
    if cols.dim() == 2 or R == 1:  # inputs shared by the replicas (or one replica): one product with R·O rows
        w, b = w.reshape(R * O, -1), None if bias is None else bias.reshape(R * O, 1)
        c = cols.reshape(cols.shape[-2:])
        a = torch.mm(w, c) if b is None else torch.addmm(b, w, c)
    else:
        a = torch.bmm(w, cols) if bias is None else torch.baddbmm(bias.unsqueeze(-1), w, cols)
    return a.reshape(R, O, -1, *size).transpose(1, 2)


def patch_conv2d_weight_grad(cols: Tensor, a_cot: Tensor, weight_shape) -> Tensor:
    """The weight gradient of :func:`patch_conv2d`: ``Σ_batch a_cot @ colsᵀ`` per replica, shaped ``weight_shape``."""
    R, O = weight_shape[:2]
    g = a_cot.transpose(1, 2).reshape(R, O, -1)
    if cols.dim() == 2 or R == 1:  # a batched product of one was 5-10 % slower than the plain one
        return torch.mm(g.reshape(R * O, -1), cols.reshape(cols.shape[-2:]).transpose(0, 1)).reshape(weight_shape)
    return torch.bmm(g, cols.transpose(1, 2)).reshape(weight_shape)


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


class MapGeometry(NamedTuple):
    """The shapes of a convolution layer ``z = P_out(LN(act(W ⋆ P_in(h) + b)))`` on flattened maps.

    ``in_shape`` ``(C, H, W)`` of its input before ``P_in``; ``conv_shape``
    ``(O, H', W')`` of the convolution's output; ``out_shape`` of ``z`` after
    ``P_out``; the pooling factors; the zero padding ``k // 2`` of a "same"
    ``k × k`` convolution.
    """

    in_shape: tuple[int, int, int]
    conv_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]
    pool_in: int
    pool_out: int
    padding: int


def input_maps(h: Tensor, g: MapGeometry) -> Tensor:
    """Flattened input ``(B, d)`` / ``(R, B, d)`` → the pooled maps ``P_in(h)`` ``(B, C, H, W)`` / ``(R, B, C, H, W)``."""
    return pool(h.reshape(*h.shape[:-1], *g.in_shape), g.pool_in)


def conv_patches(h: Tensor, g: MapGeometry) -> Tensor:
    """The :func:`patches` of ``P_in(h)`` for a flattened input ``h``: what the layer's weights multiply."""
    return patches(input_maps(h, g), 2 * g.padding + 1, g.padding)


def conv_preactivation(cols: Tensor, weight: Tensor, bias: Tensor | None, g: MapGeometry) -> Tensor:
    """``a = W ⋆ P_in(h) + b`` ``(R, B, O, H', W')`` from the patches ``cols = conv_patches(h, g)``."""
    return patch_conv2d(cols, weight, bias, g.conv_shape[1:])


def map_scale(r: Tensor, eps: float = LAYERNORM_EPS) -> tuple[Tensor, Tensor]:
    """``(μ, s)`` of the LayerNorm of maps ``r`` ``(..., C, H, W)``: the mean and ``s = 1/√(σ² + ε)``, each ``(..., 1, 1, 1)``.

    ``σ² = mean(r²) - μ²`` from two reading passes (a sum and a dot product),
    without the centred map; the same variance as
    :func:`~ibhebb.functional.layers.centred_variance` up to rounding
    (``μ² / σ²`` times its relative rounding).
    """
    flat = r.flatten(-3)
    n = flat.shape[-1]
    mu = flat.sum(-1) / n
    var = (torch.linalg.vecdot(flat, flat) / n - mu * mu).clamp_min_(0.0)
    shape = (*r.shape[:-3], 1, 1, 1)
    return mu.reshape(shape), torch.rsqrt(var + eps).reshape(shape)


def conv_output(a: Tensor, g: MapGeometry, activation: str, layernorm_: bool,
                eps: float = LAYERNORM_EPS, keep_scale: bool = False):
    """``(r, z)``: the activation map ``r = act(a)`` and the flattened output ``z = P_out(LN(r))`` ``(R, B, d_out)``.

    ``P_out(LN(r)) = s (P_out(r) - μ)`` (:func:`map_scale`): the pooling is
    linear, so the map is normalised after it, on the ``pool_out²``-times smaller map.
    ``keep_scale``: ``(r, z, (μ, s))`` (``None`` for the scale without the LayerNorm), for :func:`conv_vjp`.

    Examples
    --------
    >>> import torch
    >>> g = MapGeometry((1, 4, 4), (2, 4, 4), (2, 2, 2), 1, 2, 1)
    >>> r, z = conv_output(torch.randn(3, 5, 2, 4, 4), g, "relu", True)
    >>> r.shape, z.shape
    (torch.Size([3, 5, 2, 4, 4]), torch.Size([3, 5, 8]))
    """
    r = activate(a, activation)
    z, scale = pool(r, g.pool_out), None
    if layernorm_:
        scale = mu, inv = map_scale(r, eps)
        z = (z - mu) * inv
    z = z.reshape(*z.shape[:-3], -1)
    return (r, z, scale) if keep_scale else (r, z)


def conv_vjp(a: Tensor, r: Tensor, z: Tensor, cot: Tensor, g: MapGeometry, activation: str, layernorm_: bool,
             eps: float = LAYERNORM_EPS, scale: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Pull a cotangent ``ξ`` of the flattened ``z`` of :func:`conv_output` ``(R, B, d_out)`` back to ``a`` ``(R, B, O, H', W')``.

    With the LayerNorm, ``∂/∂r = s (U ξ - m₁) - m₂ s² (r - μ)``, ``(μ, s)`` of
    :func:`map_scale` (``scale``, when the forward kept it), ``U = P_outᵀ`` (:func:`pool_vjp`), and the two means
    over the map taken on the small map (``n = O H' W'``): ``m₁ = mean(U ξ) = Σ ξ / n``
    and ``m₂ = mean(U ξ · LN(r)) = Σ ξ z / n`` (``P_out`` is ``Uᵀ``). Then ``∂/∂a = act'(a) ∂/∂r``.

    Examples
    --------
    >>> import torch
    >>> g = MapGeometry((1, 4, 4), (2, 4, 4), (2, 2, 2), 1, 2, 1)
    >>> a = torch.randn(1, 1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    >>> r, z = conv_output(a, g, "tanh", True)
    >>> xi = torch.randn(1, 1, 8, dtype=torch.float64)
    >>> want, = torch.autograd.grad((z * xi).sum(), a)
    >>> torch.allclose(conv_vjp(a, r, z, xi, g, "tanh", True), want)
    True
    """
    maps = cot.reshape(*cot.shape[:-1], *g.out_shape)
    size, (H, W) = g.pool_out, g.conv_shape[1:]
    if not layernorm_:
        return activation_vjp(a, r, pool_vjp(maps, size, H, W), activation, inplace=size > 1)
    mu, inv = map_scale(r, eps) if scale is None else scale
    n = math.prod(g.conv_shape)
    m1 = (cot.sum(-1) / n).reshape(inv.shape)
    m2 = (torch.linalg.vecdot(cot, z) / n).reshape(inv.shape)
    k = m2 * inv * inv
    shift = k * mu - m1 * inv  # the constant part, added on the small map where the pooling covers the whole map
    covered = H % size == 0 and W % size == 0
    up = pool_vjp(torch.addcmul(shift * (size * size), maps, inv) if covered else maps * inv, size, H, W)
    if not covered:
        up.add_(shift)
    return activation_vjp(a, r, up.addcmul_(r, k, value=-1), activation, inplace=True)


def conv_param_grads(cols: Tensor, a_cot: Tensor, g: MapGeometry, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """``(g_W, g_b)``: ``scale ·`` the batch-summed gradient of ``⟨a_cot, W ⋆ P_in(h) + b⟩``.

    ``cols = conv_patches(h, g)`` for the flattened input ``h``, ``a_cot`` ``(R, B, O, H', W')``;
    ``g_W`` ``(R, O, C, k, k)``, ``g_b`` ``(R, O)``.

    Examples
    --------
    >>> import torch
    >>> g = MapGeometry((1, 4, 4), (2, 4, 4), (2, 4, 4), 1, 1, 1)
    >>> w, h = torch.randn(3, 2, 1, 3, 3, requires_grad=True), torch.randn(5, 16)
    >>> cot = torch.randn(3, 5, 2, 4, 4)
    >>> cols = conv_patches(h, g)
    >>> (conv_preactivation(cols, w, None, g) * cot).sum().backward()
    >>> torch.allclose(conv_param_grads(cols, cot, g)[0], w.grad, atol=1e-5)
    True
    """
    R, O = a_cot.shape[0], g.conv_shape[0]
    k = 2 * g.padding + 1
    gw = patch_conv2d_weight_grad(cols, a_cot, (R, O, g.in_shape[0], k, k))
    gb = a_cot.sum((1, 3, 4))
    if scale != 1.0:
        gw, gb = gw * scale, gb * scale
    return gw, gb


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
