"""The convolutional network of seed 000's CIFAR-10 experiments, with a replica dimension.

``Conv3×3·c₁ → AvgPool2 → Conv3×3·c₂ → AvgPool2 → … → FC(n_classes)`` (MATH §7:
``c = [128, 256]``). Every convolution is a rule-trained layer
(:class:`~ibhebb.models.conv.Conv2dLayer`); the readout is linear.
"""
from __future__ import annotations

import math

from ..functional.layers import LAYERNORM_EPS
from .conv import Conv2dLayer, PooledDense
from .layers import replica_generators
from .networks import FeedForward


class CNN(FeedForward):
    """Stack of 3×3 convolutions, each followed by 2×2 average pooling, then a linear readout.

    It presents itself to the rules exactly as :class:`~ibhebb.models.MLP`
    does (``present``, ``represent``, ``forward``, ``flatten``, ``hidden``,
    ``readout``): both inherit them from :class:`~ibhebb.models.networks.FeedForward`,
    which only walks ``hidden`` then ``readout``, each layer taking and giving
    flattened activity.

    Parameters
    ----------
    in_shape : (C, H, W)
    channels : list of int
        Output channels of each convolution.
    n_classes : int
    replicas, seed : int
        ``R`` independent seeds trained at once; replica ``r`` of seed ``s`` is
        the same network whatever ``R`` is.
    activation, layernorm, bias
        As for :class:`~ibhebb.models.conv.Conv2dLayer` (``layernorm`` over
        each whole feature map, before pooling).
    z_after_pool : bool
        Take each layer's output ``z`` — what the kernel of its bottleneck and
        the working memory see — after its pooling (``True``: the pooling ends
        the layer) or before it (``False``: the pooling starts the next layer,
        or the readout). The function the network computes is the same.
        The default is after: the layer is "convolution then pooling" as MATH §7
        lists it, and the kernels and the window's stored outputs are 4× smaller.
    kernel_size, pool_size : int

    Examples
    --------
    >>> import torch
    >>> from ibhebb.models.cnn import CNN
    >>> net = CNN((1, 28, 28), [8, 16], 10, replicas=2, seed=0)
    >>> net(torch.randn(5, 1, 28, 28)).shape, [z.shape[-1] for z in net.represent(torch.randn(5, 784))]
    (torch.Size([2, 5, 10]), [1568, 784])
    """

    kind = "cnn"

    def __init__(
        self,
        in_shape: tuple[int, int, int],
        channels: list[int],
        n_classes: int,
        *,
        replicas: int = 1,
        seed: int = 0,
        activation: str = "relu",
        layernorm: bool = False,
        bias: bool = True,
        z_after_pool: bool = True,
        kernel_size: int = 3,
        pool_size: int = 2,
        layernorm_eps: float = LAYERNORM_EPS,
        init: str = "uniform",
    ):
        gens = replica_generators(seed, replicas)
        shape, pending = tuple(in_shape), 1
        layers = []
        for c in channels:
            layer = Conv2dLayer(
                shape, c, generators=gens, kernel_size=kernel_size, activation=activation, layernorm=layernorm,
                bias=bias, pool_in=pending, pool_out=pool_size if z_after_pool else 1, layernorm_eps=layernorm_eps, init=init,
            )
            layers.append(layer)
            shape = layer.out_shape
            pending = 1 if z_after_pool else pool_size
        readout = PooledDense(
            shape, n_classes, pool_in=pending, generators=gens, activation="identity", layernorm=False, bias=bias, init=init
        )
        super().__init__(layers, readout, in_features=math.prod(in_shape), n_classes=n_classes, replicas=replicas, seed=seed)
        self.in_shape, self.z_after_pool = tuple(in_shape), z_after_pool
