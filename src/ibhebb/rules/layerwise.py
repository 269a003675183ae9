"""Layer-wise baselines on minibatches: local classifiers, and the HSIC bottleneck of Ma et al.

Both train every hidden layer on its own loss with its input detached (no
error crosses layers) and the readout by cross-entropy on the detached last
hidden output, all from the same minibatch.

- ``layer-classifier``: layer ``ℓ`` feeds a linear classifier ``C^ℓ`` (held
  by the rule) and both descend that classifier's cross-entropy.
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

from ..functional.kernels import hsic_bottleneck
from ..models.layers import replica_generators, uniform_init
from .base import Rule, register_rule
from .baselines import replica_cross_entropy
from .local import local_forward, readout_step, require_static_model

CLASSIFIER_SEED_OFFSET = 15_485_863


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
    """Each hidden layer learns to be linearly classifiable by its own local readout."""

    def __init__(self, model, config):
        super().__init__(model, config)
        w0 = model.hidden[0].weight
        gens = replica_generators(CLASSIFIER_SEED_OFFSET + model.seed, w0.shape[0])
        self.classifiers = nn.ParameterList(
            nn.Parameter(uniform_init((model.n_classes, layer.out_features), 1 / math.sqrt(layer.out_features), gens).to(w0))
            for layer in model.hidden
        )

    def layer_loss(self, i, x, y, z):
        return replica_cross_entropy(z @ self.classifiers[i].transpose(-1, -2), y)

    def trainable(self):
        return [*self.model.parameters(), *self.classifiers]


@register_rule("hsic-bottleneck")
class HSICBottleneck(_LayerLocal):
    """Ma et al.'s layer objective ``HSIC(X, Z) - β HSIC(Y, Z)``, on minibatches."""

    def layer_loss(self, i, x, y, z):
        y1 = torch.nn.functional.one_hot(y, self.model.n_classes).to(z.dtype)
        sig = tuple(float(s) for s in self.config.sigmas)
        return hsic_bottleneck(x, y1, z, gamma=float(self.config.gamma), sigmas=sig)[0].sum()
