"""Models by name: ``model.kind`` in a config picks a builder ``(cfg, data) -> nn.Module``.

A builder may raise :class:`~ibhebb.errors.ConfigError` when the config does
not fit the data (an image model on vectors, say); that happens before any
training starts.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

MODELS: dict[str, Callable] = {}


def register_model(kind: str):
    def add(builder: Callable) -> Callable:
        MODELS[kind] = builder
        return builder

    return add


def build_model(cfg, data) -> nn.Module:
    return MODELS[cfg.model.kind](cfg, data)


def _common(cfg) -> dict:
    m = cfg.model
    return dict(replicas=cfg.seeds, seed=cfg.seed, activation=m.activation, layernorm=m.layernorm, bias=m.bias)


@register_model("mlp")
def _mlp(cfg, data):
    from .networks import MLP

    return MLP(data.input_dim, list(cfg.model.hidden), data.n_classes, **_common(cfg))


@register_model("lif-mlp")
def _lif_mlp(cfg, data):
    from .networks import LeakyMLP

    m = cfg.model
    return LeakyMLP(data.input_dim, list(m.hidden), data.n_classes, tau_m=m.tau_m, dt=m.dt, steps=m.steps, **_common(cfg))
