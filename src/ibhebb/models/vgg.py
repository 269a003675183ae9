"""The deep convolutional network of seed 001 §5.3 (its Table 2; MATH §9), with a replica dimension.

``conv128-conv256-maxpool-conv256-conv512-maxpool-conv512-maxpool-conv512-maxpool-fc1024`` then a linear
readout; 3×3 "same" convolutions; ``width = 2`` doubles every convolution (the fc layer stays 1024) and
``scale`` multiplies every width (tiny nets for tests and CPU runs). Each hidden layer is

    a = W ⋆ h + b  →  [batchnorm]  →  act  →  [max pool 2]  =  z  →  [divisive norm]  →  dropout  →  next layer

A local objective sees ``z``; the next layer receives the normalised, dropped-out ``z``. Divisive
normalisation (eq 17) and the grouped kernel's code (eq 14) run over groups of channels, each group's
variance taken over its channels and all positions (a channel's weights are shared across positions, so a
channel is the unit; with ``p = 1/2`` this is group normalisation). On the fc layer the groups are of neurons.

The ``R`` replicas run as one grouped convolution (:func:`~ibhebb.functional.conv.replica_conv2d`);
batchnorm keeps statistics per replica and channel. Every rule on this network differentiates with
autograd (backprop, feedback alignment, layer-local objectives), so the layers need no hand-written VJP.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from ..functional.conv import max_pool, net_activate, replica_batch_norm, replica_conv2d
from ..functional.layers import affine
from ..functional.phsic import channel_divisive_normalise, channel_group_code, divisive_normalise, group_code
from .layers import Dense, init_parameters, replica_generators
from .networks import FeedForward
from .phsic_mlp import ReplicaDropout

VGG_LAYOUT = (128, 256, "M", 256, 512, "M", 512, "M", 512, "M")
"""Convolution channels and max pools (``"M"``) of the 1× net; then one fc layer of :data:`VGG_FC` units."""
VGG_FC = 1024

Product = Callable[[Tensor, Tensor], Tensor]
"""``(h, weight) -> W ⋆ h`` (or ``W h``): a layer's linear map with a given weight, without bias."""


def vgg_widths(width: int = 1, scale: float = 1.0) -> tuple[list[tuple[int, bool]], int]:
    """``([(channels, max pool after?), …], fc units)`` of the net ``width``× wide, every width times ``scale``.

    Examples
    --------
    >>> vgg_widths(1, 0.125)
    ([(16, False), (32, True), (32, False), (64, True), (64, True), (64, True)], 128)
    """
    convs: list[tuple[int, bool]] = []
    for item in VGG_LAYOUT:
        if item == "M":
            convs[-1] = (convs[-1][0], True)
        else:
            convs.append((max(1, round(item * width * scale)), False))
    return convs, max(1, round(VGG_FC * scale))


class NetLayer(nn.Module):
    """One hidden layer ``h → (z, out)`` of :class:`VGG`: a 3×3 convolution (``in_shape`` is ``(C, H, W)``) or dense.

    Parameters
    ----------
    in_shape : (C, H, W) or (d,)
    out : int
        Output channels (conv) or units (dense).
    generators : one per replica.
    activation : see :data:`~ibhebb.functional.conv.NET_ACTIVATIONS`.
    pool : bool
        Max pooling by 2 after the activation (conv only).
    batchnorm : bool
        Batch normalisation of the preactivation (learned scale and shift; no bias then).
    bias : bool
        A bias on the preactivation (the authors' code: none).
    divisive_norm : bool
        The next layer receives ``z̃ / u^p`` over ``groups`` groups (eq 17).
    groups, delta, p : the grouping (eqs 13, 14, 17); a layer with fewer than ``groups`` channels (units) has
        one group per channel (unit).
    """

    def __init__(self, in_shape: tuple[int, ...], out: int, *, generators: list[torch.Generator], activation: str = "selu",
                 negative_slope: float = 0.1, pool: bool = False, batchnorm: bool = False, divisive_norm: bool = False,
                 groups: int = 1, delta: float = 1.0, p: float = 0.2, bias: bool = False, init: str = "uniform"):
        super().__init__()
        self.in_shape, self.conv = tuple(in_shape), len(in_shape) == 3
        if self.conv:
            c, h, w = in_shape
            shape, fan_in = (out, c, 3, 3), c * 9
            self.out_shape: tuple[int, ...] = (out, h // 2, w // 2) if pool else (out, h, w)
            if min(self.out_shape[1:]) < 1:
                raise ValueError(f"input maps {in_shape} are too small for max pooling by 2")
        else:
            shape, fan_in = (out, in_shape[0]), in_shape[0]
            self.out_shape = (out,)
        groups = min(groups, out)
        if out % groups:
            raise ValueError(f"{out} {'channels' if self.conv else 'units'} cannot be split into {groups} equal groups")
        self.in_features, self.out_features = math.prod(in_shape), math.prod(self.out_shape)
        self.activation, self.negative_slope, self.pool = activation, negative_slope, pool and self.conv
        self.divisive_norm, self.groups, self.delta, self.p = divisive_norm, groups, delta, p
        weight, bias = init_parameters(shape, fan_in, generators, init, bias and not batchnorm)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.batchnorm = batchnorm
        if batchnorm:
            R = len(generators)
            self.bn_weight, self.bn_bias = nn.Parameter(torch.ones(R, out)), nn.Parameter(torch.zeros(R, out))
            self.register_buffer("running_mean", torch.zeros(R, out))
            self.register_buffer("running_var", torch.ones(R, out))

    def product(self, h: Tensor, weight: Tensor) -> Tensor:
        """``W ⋆ h`` (conv, ``(R, B, O, H, W)``) or ``W h`` (dense) of the flattened input ``h`` with ``weight``."""
        if self.conv:
            return replica_conv2d(h.reshape(*h.shape[:-1], *self.in_shape), weight, None, 1)
        return affine(h, weight, None)

    def maps(self, z: Tensor) -> Tensor:
        """Flattened ``z`` ``(…, d)`` → ``(…, *out_shape)``."""
        return z.reshape(*z.shape[:-1], *self.out_shape)

    def activity(self, h: Tensor, product: Product | None = None) -> Tensor:
        """``z`` ``(R, B, *out_shape)``: the activity the layer's objective sees."""
        a = (product or self.product)(h, self.weight)
        if self.bias is not None:
            a = a + self.bias.reshape(*self.bias.shape[:1], 1, -1, *([1, 1] if self.conv else []))
        if self.batchnorm:
            a = replica_batch_norm(a, self.running_mean, self.running_var, self.bn_weight, self.bn_bias, self.training)
        r = net_activate(a, self.activation, self.negative_slope)
        return max_pool(r, 2) if self.pool else r

    def normalise(self, z: Tensor) -> Tensor:
        """Divisive normalisation (eq 17) of ``z`` ``(…, *out_shape)``, or ``z`` if off."""
        if not self.divisive_norm:
            return z
        if self.conv:
            return channel_divisive_normalise(z, self.groups, self.delta, self.p, pooled=True)
        return divisive_normalise(z, self.groups, self.delta, self.p)

    def group_code(self, z: Tensor) -> Tensor:
        """``v`` of eq 14 of the flattened ``z``: one value per channel group (conv) or neuron group (dense)."""
        if self.conv:
            return channel_group_code(self.maps(z), self.groups, self.delta, self.p, pooled=True)
        return group_code(z, self.groups, self.delta, self.p)


class VGG(ReplicaDropout, FeedForward):
    """Seed 001's 7-layer conv net (6 convolutions, 1 fc layer) and a linear readout, ``R`` replicas.

    Parameters
    ----------
    in_shape : (C, H, W)
        1×28×28 (Fashion-MNIST) or 3×32×32 (CIFAR-10); four max pools floor 28 to 1 and 32 to 2.
    n_classes : int
    width : int
        1 or 2 (2×: every convolution doubled).
    scale : float
        Every width (convolutions and fc) times ``scale`` (rounded, at least 1).
    replicas, seed : ``R`` and the seed of the replicas' generators.
    activation, negative_slope, batchnorm, divisive_norm, groups, delta, p, bias : see :class:`NetLayer`.
        The authors' grouping is 64 groups per layer (``grouping-dim``); a net of ``scale`` ``s`` keeps the
        channels per group with ``64 s`` groups.
    dropout : float
        Dropout after each hidden layer (training only).

    Examples
    --------
    >>> import torch
    >>> net = VGG((1, 28, 28), 10, scale=1 / 32, replicas=2, divisive_norm=True, groups=2)
    >>> [l.out_shape for l in net.hidden][-3:], net(torch.randn(3, 1, 28, 28)).shape
    ([(16, 3, 3), (16, 1, 1), (32,)], torch.Size([2, 3, 10]))
    """

    kind = "vgg"

    def __init__(self, in_shape: tuple[int, int, int], n_classes: int, *, width: int = 1, scale: float = 1.0,
                 replicas: int = 1, seed: int = 0, activation: str = "selu", negative_slope: float = 0.1,
                 batchnorm: bool = False, divisive_norm: bool = False, groups: int = 1, delta: float = 1.0,
                 p: float = 0.2, dropout: float = 0.0, bias: bool = False, init: str = "uniform"):
        gens = replica_generators(seed, replicas)
        common = dict(generators=gens, activation=activation, negative_slope=negative_slope, batchnorm=batchnorm,
                      divisive_norm=divisive_norm, groups=groups, delta=delta, p=p, bias=bias, init=init)
        convs, fc = vgg_widths(width, scale)
        shape: tuple[int, ...] = tuple(in_shape)
        layers = []
        for channels, pooled in convs:
            layers.append(NetLayer(shape, channels, pool=pooled, **common))
            shape = layers[-1].out_shape
        layers.append(NetLayer((math.prod(shape),), fc, **common))
        readout = Dense(fc, n_classes, generators=gens, activation="identity", layernorm=False, bias=bias, init=init)
        super().__init__(layers, readout, in_features=math.prod(in_shape), n_classes=n_classes, replicas=replicas, seed=seed)
        self.in_shape, self.dropout = tuple(in_shape), dropout
        self._dropout_generators: list[torch.Generator] | None = None

    def local_forward(self, index: int, h: Tensor, product: Product | None = None) -> tuple[Tensor, Tensor]:
        """Hidden layer ``index`` on the flattened input ``h``: ``(z, output)``, both flattened ``(R, B, d)``."""
        layer = self.hidden[index]
        z = layer.activity(h, product)
        out = self.drop(layer.normalise(z))
        return z.flatten(2), out.flatten(2)

    def group_code(self, index: int, z: Tensor) -> Tensor:
        return self.hidden[index].group_code(z)

    def represent(self, x: Tensor) -> list[Tensor]:
        return self.forward_with(x)[1]

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with(x)[0]

    def forward_with(self, x: Tensor, product: Callable[[int, nn.Module, Tensor, Tensor], Tensor] | None = None
                     ) -> tuple[Tensor, list[Tensor]]:
        """``(logits, [out¹, …, out^L])``, every layer's linear map computed by ``product(i, layer, h, weight)`` if given."""
        h, outs = self.flatten(x), []
        layers = self.layers()
        for i, layer in enumerate(self.hidden):
            prod = None if product is None else (lambda hh, w, i=i, layer=layer: product(i, layer, hh, w))
            h = self.local_forward(i, h, prod)[1]
            outs.append(h)
        ro = self.readout
        if product is None:
            return ro.preactivation(h), outs
        a = product(len(layers) - 1, ro, h, ro.weight)
        return (a if ro.bias is None else a + ro.bias.unsqueeze(-2)), outs
