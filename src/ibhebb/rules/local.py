"""What every layer-local rule needs from a static feedforward model.

A model with ``local_forward(index, h) -> (z, output)`` (``phsic-mlp``)
separates what the layer's objective sees (``z``) from what the next layer
receives (after divisive normalisation and dropout); for the plain ``mlp`` both
are the layer's output. Inputs are detached by the rules, so no gradient ever
crosses a layer.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import ConfigError
from .baselines import replica_cross_entropy


STATIC_MODELS = ("mlp", "phsic-mlp", "vgg")
"""The networks the layer-local and feedback rules run on."""


def local_forward(model, index: int, h: Tensor) -> tuple[Tensor, Tensor]:
    """``(z, output)`` of hidden layer ``index`` on input ``h``."""
    if hasattr(model, "local_forward"):
        return model.local_forward(index, h)
    z = model.hidden[index](h)
    return z, z


def readout_step(model, h: Tensor, y: Tensor) -> None:
    """Cross-entropy gradient of the readout alone, on detached features ``h``."""
    with torch.enable_grad():
        replica_cross_entropy(model.readout(h.detach()), y).backward()


def require_static_model(cfg, rule: str) -> None:
    """Layer-local rules run on static networks (``mlp``, ``phsic-mlp``, ``vgg``) with hidden layers."""
    if cfg.model.kind not in STATIC_MODELS:
        raise ConfigError(f"rule {rule} needs model.kind = 'mlp', 'phsic-mlp' or 'vgg', got {cfg.model.kind!r}")
    if cfg.model.kind != "vgg" and not cfg.model.hidden:
        raise ConfigError(f"rule {rule} needs at least one hidden layer (model.hidden is empty)")
