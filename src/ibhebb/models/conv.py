"""Convolution layers with a leading replica dimension and their local Jacobians.

The rule-trained layers here speak the same flattened interface as
:class:`~ibhebb.models.layers.Dense`: inputs ``(B, d_in)`` (shared by all
replicas) or ``(R, B, d_in)``, outputs ``(R, B, d_out)``, so the window
memories, the kernels (taken over a layer's flattened activity) and the
``biohsic`` rule need not know a layer is convolutional.

A :class:`Conv2dLayer` computes, on images ``(C, H, W)``,

    z = P_out( LN( act( W ⋆ P_in(h) + b ) ) )

with ``⋆`` a 3×3 "same" convolution, ``P_in``/``P_out`` optional average
pooling (a fixed linear map) and ``LN`` an optional parameter-free LayerNorm
over the whole feature map. Where a pooling step sits decides which activity
the kernel of the HSIC bottleneck sees: pooling at the end of a layer
(``P_out``) makes ``z`` the pooled map; pooling at the start of the next layer
(``P_in``, and in :class:`PooledDense` for the readout) makes ``z`` the map
before pooling. The network is the same either way.

The ``R`` replicas run as one grouped convolution over ``R·C`` channels. The
local factor ``β = ∂z/∂θ`` applied to a cotangent ``ξ`` of ``z`` is computed by
hand: ``output_vjp`` pulls ``ξ`` back through ``P_out``, ``LN`` and ``act`` to
the preactivation, and ``accumulate_grad`` turns that into the weight
gradient (the correlation of the layer's input with the cotangent, one
``convolution_backward`` call with ``groups = R``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..functional.conv import MapGeometry, conv_output, conv_param_grads, conv_patches, conv_vjp, input_maps, pool, replica_conv2d
from ..functional.layers import ACTIVATIONS, LAYERNORM_EPS
from .layers import Dense, _add_grad, init_parameters


class Conv2dLayer(nn.Module):
    """``z = P_out(LN(act(W ⋆ P_in(h) + b)))`` for ``R`` replicas, on flattened feature maps.

    Parameters
    ----------
    in_shape : (C, H, W)
        Shape of one input map (before ``P_in``).
    out_channels : int
    generators : list of torch.Generator
        One per replica; their number is ``R``.
    kernel_size : int
        Odd; the convolution is "same" (zero padding ``k // 2``).
    activation : {"relu", "tanh", "sigmoid", "identity"}
    layernorm : bool
        Parameter-free LayerNorm over the whole map after the activation.
    bias : bool
    pool_in, pool_out : int
        Average-pooling factor before the convolution and at the end (1: none).

    Examples
    --------
    >>> import torch
    >>> from ibhebb.models.conv import Conv2dLayer
    >>> from ibhebb.models.layers import replica_generators
    >>> layer = Conv2dLayer((1, 28, 28), 8, generators=replica_generators(0, 3), pool_out=2)
    >>> layer.out_shape, layer(torch.randn(5, 784)).shape
    ((8, 14, 14), torch.Size([3, 5, 1568]))
    """

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        out_channels: int,
        *,
        generators: list[torch.Generator],
        kernel_size: int = 3,
        activation: str = "relu",
        layernorm: bool = False,
        bias: bool = True,
        pool_in: int = 1,
        pool_out: int = 1,
        layernorm_eps: float = LAYERNORM_EPS,
        init: str = "uniform",
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd for a 'same' convolution, got {kernel_size}")
        c, h, w = in_shape
        self.in_shape, self.pool_in, self.pool_out = tuple(in_shape), pool_in, pool_out
        self.conv_shape = (out_channels, h // pool_in, w // pool_in)
        self.out_shape = (out_channels, self.conv_shape[1] // pool_out, self.conv_shape[2] // pool_out)
        if min(self.out_shape[1:]) < 1:
            raise ValueError(f"input maps {in_shape} are too small for pooling by {pool_in} and {pool_out}")
        self.in_features, self.out_features = math.prod(in_shape), math.prod(self.out_shape)
        self.activation, self.layernorm, self.padding = activation, layernorm, kernel_size // 2
        self.layernorm_eps = layernorm_eps
        w, b = init_parameters((out_channels, c, kernel_size, kernel_size), c * kernel_size * kernel_size, generators, init, bias)
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(b) if b is not None else None

    @property
    def replicas(self) -> int:
        return self.weight.shape[0]

    @property
    def geometry(self) -> MapGeometry:
        """The layer's shapes, pooling and padding (what the functional core's convolution layer needs)."""
        return MapGeometry(self.in_shape, self.conv_shape, self.out_shape, self.pool_in, self.pool_out, self.padding)

    def preactivation(self, h: Tensor) -> Tensor:
        """``a = W ⋆ P_in(h) + b``: ``(R, B, O, H, W)`` (torch's convolution: batches of any size, no patches kept)."""
        return replica_conv2d(input_maps(h, self.geometry), self.weight, self.bias, self.padding)

    def output(self, a: Tensor) -> tuple[Tensor, Tensor]:
        """``(r, z)``: the activation map ``r = act(a)`` and the flattened layer output ``z`` ``(R, B, d_out)``."""
        return conv_output(a, self.geometry, self.activation, self.layernorm, self.layernorm_eps)

    def forward(self, h: Tensor) -> Tensor:
        return self.output(self.preactivation(h))[1]

    def output_vjp(self, a: Tensor, r: Tensor, z: Tensor, cot: Tensor) -> Tensor:
        """Cotangent of the flattened ``z`` ``(R, B, d_out)`` → cotangent of ``a`` ``(R, B, O, H, W)``."""
        return conv_vjp(a, r, z, cot, self.geometry, self.activation, self.layernorm, self.layernorm_eps)

    @torch.no_grad()
    def accumulate_grad(self, h: Tensor, a_cot: Tensor, scale: float = 1.0) -> None:
        """Add ``scale ·`` the batch-summed gradient of ``⟨a_cot, W ⋆ P_in(h) + b⟩`` to ``weight.grad`` and ``bias.grad``."""
        gw, gb = conv_param_grads(conv_patches(h, self.geometry), a_cot, self.geometry)
        _add_grad(self.weight, gw, scale)
        if self.bias is not None:
            _add_grad(self.bias, gb, scale)


class PooledDense(Dense):
    """A :class:`Dense` readout that first average-pools its flattened input maps ``in_shape`` by ``pool_in``.

    With ``pool_in = 1`` it is exactly a :class:`Dense` on ``prod(in_shape)`` inputs.
    """

    def __init__(self, in_shape: tuple[int, int, int], out_features: int, *, pool_in: int = 1, **kwargs):
        c, h, w = in_shape
        super().__init__(c * (h // pool_in) * (w // pool_in), out_features, **kwargs)
        self.in_shape, self.pool_in = tuple(in_shape), pool_in

    def _pooled(self, h: Tensor) -> Tensor:
        if self.pool_in == 1:
            return h
        p = pool(h.reshape(*h.shape[:-1], *self.in_shape), self.pool_in)
        return p.reshape(*h.shape[:-1], -1)

    def preactivation(self, h: Tensor) -> Tensor:
        return super().preactivation(self._pooled(h))

    @torch.no_grad()
    def accumulate_grad(self, h: Tensor, a_cot: Tensor, scale: float = 1.0) -> None:
        super().accumulate_grad(self._pooled(h), a_cot, scale)
