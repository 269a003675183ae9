"""Layer-wise baselines on minibatches: local classifiers, and the HSIC bottleneck of Ma et al.

Both train every hidden layer on its own loss with its input detached (no
error crosses layers) and the readout by cross-entropy on the detached last
hidden output, all from the same minibatch.

- ``layer-classifier``: layer ``ℓ`` feeds a linear classifier ``C^ℓ`` (held
  by the rule) and both descend that classifier's cross-entropy. On a
  convolutional layer the classifier sees the map average-pooled by the
  smallest power of 2 that leaves at most ``rule.head_features`` features
  (the projection head of Nøkland & Eidnes, seed 001's ref. [6]).
- ``layer-classifier-fa``: the same, but the classifier's error reaches the
  layer through a fixed random matrix ``B^ℓ`` instead of ``C^ℓ`` (feedback
  alignment inside the local loss; seed 001 Table 2's "layer class. + FA").
- ``hsic-bottleneck``: layer ``ℓ`` descends ``HSIC(X, Z^ℓ) - β HSIC(Y, Z^ℓ)``
  (unnormalised biased HSIC, Gaussian kernels of widths ``rule.sigmas``
  scaled by dimension, ``β = rule.gamma``). The readout is trained alongside
  on the detached features rather than in a second phase.
"""
from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import Tensor, nn

from ..functional.conv import pool
from ..functional.kernels import hsic_bottleneck
from ..functional.layers import affine
from ..models.layers import replica_generators, uniform_init
from .base import Rule, register_rule
from .baselines import replica_cross_entropy
from .feedback import feedback_product, random_feedback
from .local import local_forward, readout_step, require_static_model

CLASSIFIER_SEED_OFFSET = 15_485_863
CLASSIFIER_FEEDBACK_SEED_OFFSET = 32_452_843


def head_pool(out_shape: tuple[int, ...], features: int) -> int:
    """The average-pooling factor (1, 2, 4, …) of a layer's output maps ``(C, H, W)`` before its local classifier:
    the smallest that leaves at most ``features`` features (or a 1×1 map); 1 for a dense layer.

    Examples
    --------
    >>> head_pool((128, 28, 28), 2048), head_pool((64,), 2048)
    (8, 1)
    """
    if len(out_shape) != 3:
        return 1
    c, h, w = out_shape
    k = 1
    while c * (h // k) * (w // k) > features and min(h, w) // (2 * k) >= 1:
        k *= 2
    return k


class _LayerLocal(Rule):
    @classmethod
    def check_config(cls, cfg) -> None:
        require_static_model(cfg, cls.name)

    def layer_loss(self, i: int, x: Tensor, y: Tensor, z: Tensor) -> Tensor:
        raise NotImplementedError

    def updates(self, x: Tensor, y: Tensor) -> Iterator[None]:
        x = self.model.flatten(x)
        h = x
        for i in range(len(self.model.hidden)):
            with torch.enable_grad():
                z, out = local_forward(self.model, i, h.detach())
                self.layer_loss(i, x, y, z).backward()
            h = out.detach()
        readout_step(self.model, h, y)
        yield


@register_rule("layer-classifier")
class LayerClassifier(_LayerLocal):
    """Each hidden layer learns to be linearly classifiable by its own local readout (after its projection head)."""

    def __init__(self, model, config):
        super().__init__(model, config)
        w0 = model.hidden[0].weight
        gens = replica_generators(CLASSIFIER_SEED_OFFSET + model.seed, w0.shape[0])
        self.pools = [head_pool(getattr(layer, "out_shape", (layer.out_features,)), config.head_features)
                      for layer in model.hidden]
        widths = [self.head(i, torch.zeros(1, 1, layer.out_features)).shape[-1] for i, layer in enumerate(model.hidden)]
        self.classifiers = nn.ParameterList(
            nn.Parameter(uniform_init((model.n_classes, d), 1 / math.sqrt(d), gens).to(w0)) for d in widths
        )

    def head(self, i: int, z: Tensor) -> Tensor:
        """Hidden layer ``i``'s flattened output ``(R, B, d)`` as its classifier sees it (pooled maps, flattened)."""
        k = self.pools[i]
        if k == 1:
            return z
        return pool(z.reshape(*z.shape[:-1], *self.model.hidden[i].out_shape), k).flatten(-3)

    def classify(self, i: int, f: Tensor) -> Tensor:
        return affine(f, self.classifiers[i], None)

    def layer_loss(self, i, x, y, z):
        return replica_cross_entropy(self.classify(i, self.head(i, z)), y)

    def trainable(self):
        return [*self.model.parameters(), *self.classifiers]


@register_rule("layer-classifier-fa")
class LayerClassifierFA(LayerClassifier):
    """:class:`LayerClassifier` with the classifier's error sent into the layer through fixed random ``B^ℓ``."""

    def __init__(self, model, config):
        super().__init__(model, config)
        for i, b in enumerate(random_feedback(list(self.classifiers), model.seed, CLASSIFIER_FEEDBACK_SEED_OFFSET)):
            self.register_buffer(f"feedback_{i}", b)

    def classify(self, i: int, f: Tensor) -> Tensor:
        return feedback_product(lambda h, w: affine(h, w, None), f, self.classifiers[i], getattr(self, f"feedback_{i}"))


@register_rule("hsic-bottleneck")
class HSICBottleneck(_LayerLocal):
    """Ma et al.'s layer objective ``HSIC(X, Z) - β HSIC(Y, Z)``, on minibatches."""

    def layer_loss(self, i, x, y, z):
        y1 = torch.nn.functional.one_hot(y, self.model.n_classes).to(z.dtype)
        sig = tuple(float(s) for s in self.config.sigmas)
        return hsic_bottleneck(x, y1, z, gamma=float(self.config.gamma), sigmas=sig)[0].sum()
