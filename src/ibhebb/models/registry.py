"""Models by name: ``model.kind`` in a config picks a builder ``(cfg, data) -> nn.Module``.

A builder may raise :class:`~ibhebb.errors.ConfigError` when the config does
not fit the data (an image model on vectors, say); that happens before any
training starts.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..config import register_check, require, require_choice
from ..functional.conv import NET_ACTIVATIONS
from ..functional.layers import ACTIVATIONS
from .layers import INITS

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
    return dict(replicas=cfg.seeds, seed=cfg.seed, activation=m.activation, layernorm=m.layernorm, bias=m.bias,
                layernorm_eps=m.layernorm_eps, init=m.init)


@register_model("mlp")
def _mlp(cfg, data):
    from .networks import MLP

    return MLP(data.input_dim, list(cfg.model.hidden), data.n_classes, **_common(cfg))


@register_model("cnn")
def _cnn(cfg, data):
    from ..errors import ConfigError
    from .cnn import CNN

    if len(data.input_shape) != 3:
        raise ConfigError(f"model.kind = 'cnn' needs images (C, H, W); {data.name} gives vectors of shape {data.input_shape}")
    m = cfg.model
    return CNN(data.input_shape, list(m.channels), data.n_classes, z_after_pool=m.z_after_pool, **_common(cfg))


@register_model("lif-mlp")
def _lif_mlp(cfg, data):
    from .networks import LeakyMLP

    m = cfg.model
    return LeakyMLP(data.input_dim, list(m.hidden), data.n_classes, tau_m=m.tau_m, dt=m.dt, steps=m.steps, **_common(cfg))


@register_model("spiking-mlp")
def _spiking_mlp(cfg, data):
    from .spiking import SpikingMLP, spiking_kwargs

    return SpikingMLP(data.input_dim, list(cfg.model.hidden), data.n_classes, replicas=cfg.seeds, seed=cfg.seed,
                      **spiking_kwargs(cfg.model))


@register_model("spiking-cnn")
def _spiking_cnn(cfg, data):
    from ..errors import ConfigError
    from .spiking import SpikingCNN, spiking_kwargs

    if len(data.input_shape) != 3:
        raise ConfigError(f"model.kind = 'spiking-cnn' needs images (C, H, W); {data.name} gives vectors of shape {data.input_shape}")
    return SpikingCNN(data.input_shape, list(cfg.model.channels), data.n_classes, replicas=cfg.seeds, seed=cfg.seed,
                      **spiking_kwargs(cfg.model))


@register_model("phsic-mlp")
def _phsic_mlp(cfg, data):
    from ..errors import ConfigError
    from .phsic_mlp import Grouping, PHSICMLP

    m = cfg.model
    for size in m.hidden if (m.divisive_norm or cfg.rule.grouped) else []:
        if size % m.groups:
            raise ConfigError(f"model.hidden size {size} cannot be split into model.groups = {m.groups} equal groups")
    return PHSICMLP(
        data.input_dim, list(m.hidden), data.n_classes, replicas=cfg.seeds, seed=cfg.seed,
        negative_slope=m.negative_slope, dropout=m.dropout, divisive_norm=m.divisive_norm,
        grouping=Grouping(m.groups, m.group_delta, m.group_p),
    )


@register_model("vgg")
def _vgg(cfg, data):
    from ..errors import ConfigError
    from .vgg import VGG

    if len(data.input_shape) != 3:
        raise ConfigError(f"model.kind = 'vgg' needs images (C, H, W); {data.name} gives vectors of shape {data.input_shape}")
    m = cfg.model
    try:
        return VGG(data.input_shape, data.n_classes, width=m.width, scale=m.scale, replicas=cfg.seeds, seed=cfg.seed,
                   activation=m.activation, negative_slope=m.negative_slope, batchnorm=m.batchnorm,
                   divisive_norm=m.divisive_norm, groups=m.groups, delta=m.group_delta, p=m.group_p,
                   dropout=m.dropout, bias=m.bias, init=m.init)
    except ValueError as e:
        raise ConfigError(f"model.kind = 'vgg': {e} (model.scale = {m.scale}, model.groups = {m.groups})") from None


@register_check
def check_model_config(cfg) -> None:
    """``model.kind`` and ``model.activation`` exist; a CNN has channels and images."""
    m = cfg.model
    require_choice(m.kind, sorted(MODELS), "model.kind")
    require_choice(m.activation, NET_ACTIVATIONS if m.kind == "vgg" else ACTIVATIONS, "model.activation")
    require_choice(m.init, INITS, "model.init")
    require(m.layernorm_eps > 0, f"model.layernorm_eps must be > 0, got {m.layernorm_eps}")
    if m.kind == "cnn":
        require(len(m.channels) >= 1 and all(c >= 1 for c in m.channels), f"model.channels must be positive, got {m.channels}")
        require(cfg.data.name not in ("linear", "xor"), f"model.kind = 'cnn' needs images; data.name = {cfg.data.name!r} is vectors")
    if m.kind == "vgg":
        require(m.width in (1, 2), f"model.width must be 1 or 2 (seed 001's 1x and 2x nets), got {m.width}")
        require(0 < m.scale <= 4, f"model.scale must be in (0, 4], got {m.scale}")
        require(cfg.data.name not in ("linear", "xor"), f"model.kind = 'vgg' needs images; data.name = {cfg.data.name!r} is vectors")
