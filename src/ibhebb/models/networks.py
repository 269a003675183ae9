"""Feedforward networks with a replica dimension: ReLU MLP and rate leaky-integrate MLP.

Both expose the same interface to the learning rules:

- ``forward(x)`` → logits ``(R, B, C)``;
- ``represent(x)`` → the hidden outputs ``[z¹, …, z^L]`` for a batch;
- ``present(x)`` → an iterator over the time steps of presenting one batch,
  each step a list of :class:`LayerTrace` (hidden layers, then the readout),
  with which a local rule computes its update.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

from torch import Tensor, nn

from ..functional.layers import LAYERNORM_EPS, leaky_step
from .layers import Dense, replica_generators


@dataclass
class LayerTrace:
    """What one layer saw and produced at one time step.

    ``h`` input, ``a`` preactivation, ``r`` activation, ``z`` output, and
    ``scale = ∂a/∂(W h + b)`` (1 for a static layer, ``Δt/τ_m`` for a leaky one
    whose previous potential is held fixed).
    """

    h: Tensor
    a: Tensor
    r: Tensor
    z: Tensor
    scale: float = 1.0


class FeedForward(nn.Module):
    """Rule-trained hidden layers then a linear readout, ``R`` replicas: what every network here shares.

    Subclasses build the layers and pass them in; ``forward``, ``represent``
    and ``present`` run them in order (a subclass overrides what differs).
    """

    def __init__(
        self, hidden: list[nn.Module], readout: nn.Module, *, in_features: int, n_classes: int, replicas: int, seed: int = 0
    ):
        super().__init__()
        self.hidden = nn.ModuleList(hidden)
        self.readout = readout
        self.in_features, self.n_classes, self.replicas = in_features, n_classes, replicas
        self.seed = seed  # what rules with random state of their own (feedback matrices) derive their generators from

    def flatten(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], -1) if x.dim() != 2 else x

    def layers(self) -> list[nn.Module]:
        return [*self.hidden, self.readout]

    def present(self, x: Tensor) -> Iterator[list[LayerTrace]]:
        h = self.flatten(x)
        traces = []
        for layer in self.layers():
            a = layer.preactivation(h)
            r, z = layer.output(a)
            traces.append(LayerTrace(h, a, r, z))
            h = z
        yield traces

    def represent(self, x: Tensor) -> list[Tensor]:
        h, zs = self.flatten(x), []
        for layer in self.hidden:
            h = layer(h)
            zs.append(h)
        return zs

    def forward(self, x: Tensor) -> Tensor:
        zs = self.represent(x)
        return self.readout(zs[-1] if zs else self.flatten(x))


class Stepped:
    """For a network that presents a sample over several time steps: its outputs are those of the last step."""

    def _final(self, x: Tensor) -> list[LayerTrace]:
        for traces in self.present(x):
            pass
        return traces

    def represent(self, x: Tensor) -> list[Tensor]:
        return [t.z for t in self._final(x)[:-1]]

    def forward(self, x: Tensor) -> Tensor:
        return self._final(x)[-1].z


class MLP(FeedForward):
    """``Dense(hidden[0]) → … → Dense(n_classes)`` with ``R`` replicas.

    Hidden layers are ``LN(act(W h + b))``; the readout is linear (logits).

    Examples
    --------
    >>> import torch
    >>> from ibhebb.models import MLP
    >>> net = MLP(784, [128, 64], 10, replicas=2, seed=0)
    >>> net(torch.randn(5, 1, 28, 28)).shape
    torch.Size([2, 5, 10])
    """

    kind = "mlp"

    def __init__(
        self,
        in_features: int,
        hidden: list[int],
        n_classes: int,
        *,
        replicas: int = 1,
        seed: int = 0,
        activation: str = "relu",
        layernorm: bool = True,
        bias: bool = True,
        layernorm_eps: float = LAYERNORM_EPS,
        init: str = "uniform",
    ):
        gens = replica_generators(seed, replicas)
        common = dict(generators=gens, bias=bias, init=init)
        sizes = [in_features, *hidden]
        layers = [
            Dense(i, o, activation=activation, layernorm=layernorm, layernorm_eps=layernorm_eps, **common)
            for i, o in zip(sizes[:-1], sizes[1:])
        ]
        readout = Dense(sizes[-1], n_classes, activation="identity", layernorm=False, **common)
        super().__init__(layers, readout, in_features=in_features, n_classes=n_classes, replicas=replicas, seed=seed)


class LeakyMLP(Stepped, MLP):
    """Rate leaky-integrate network (MATH §5).

    Each layer's potential follows ``τ_m du/dt = -u + W z^{ℓ-1} + b``, Euler
    steps of ``Δt``; its rate is ``LN(act(u))``; the readout's potential is the
    logit. A sample is presented for ``steps`` (``T``) steps starting from rest
    (``u = 0``), every layer receiving the previous layer's rate of the same
    step. The local factor of a step holds the previous potential fixed, so
    ``∂u/∂W = (Δt/τ_m) z^{ℓ-1}``.
    """

    kind = "lif-mlp"

    def __init__(self, *args, tau_m: float = 5.0, dt: float = 1.0, steps: int = 20, **kwargs):
        super().__init__(*args, **kwargs)
        self.leak = dt / tau_m
        self.steps = steps

    def present(self, x: Tensor) -> Iterator[list[LayerTrace]]:
        x = self.flatten(x)
        us: list[Tensor | None] = [None] * len(self.layers())
        for _ in range(self.steps):
            h, traces = x, []
            for i, layer in enumerate(self.layers()):
                u = us[i] = leaky_step(us[i], layer.preactivation(h), self.leak)
                r, z = layer.output(u)
                traces.append(LayerTrace(h, u, r, z, self.leak))
                h = z
            yield traces
