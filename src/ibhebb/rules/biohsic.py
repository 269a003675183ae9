"""The three-factor HSIC-bottleneck rule of Daruwalla & Lipasti (MATH §3).

For every hidden layer ``ℓ`` the update is the vector-Jacobian product of the
current sample's own output with the global signal ξ^ℓ of the window,
``Δθ^ℓ = -η (∂z_0^ℓ/∂θ^ℓ)ᵀ ξ^ℓ``; the layer's input is taken as given, so no
error crosses layers. The readout learns by the local delta rule of softmax
cross-entropy over the window: ``ΔW = -η (1/N) Σ_p (softmax(W h_p + b) - y_p) h_pᵀ``.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from ..config import require, require_choice
from ..errors import ConfigError
from ..functional.biohsic import BioHSICParams
from ..functional.layers import softmax_delta
from ..functional import signals
from ..functional.traces import FEATURE_DRAWS, TRACE_VARIANTS
from ..memory import MEMORIES, make_memory
from ..memory.reservoir import check_reservoir_config
from .base import Rule, register_rule


@register_rule("biohsic")
class BioHSIC(Rule):
    online = True

    def __init__(self, model, config):
        super().__init__(model, config)
        self.memory = make_memory(config.memory, config.window, sigmas=config.sigmas, reservoir=getattr(config, "reservoir", ""),
                                  **(feature_options(config) if config.memory == "features" else {}))
        self.gamma = float(config.gamma)
        self.sigmas = tuple(float(s) for s in config.sigmas)
        self.variant = config.variant
        self.params = BioHSICParams(int(config.window), self.gamma, self.sigmas, self.variant)

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.model.kind == "vgg":
            raise ConfigError("rule biohsic does not run on model.kind = 'vgg' (its layers have no hand-written local "
                              "factor); use model.kind = 'cnn' or a batch rule")
        if cfg.model.kind != "cnn" and not cfg.model.hidden:  # a cnn's hidden layers are model.channels
            raise ConfigError("rule biohsic needs at least one hidden layer (model.hidden is empty)")
        require_choice(cfg.rule.variant, signals.VARIANTS, "rule.variant")
        require_choice(cfg.rule.memory, MEMORIES, "rule.memory")
        if cfg.rule.memory == "reservoir":
            check_reservoir_config(cfg)
        if cfg.rule.memory == "features":
            r = cfg.rule
            require_choice(r.variant, TRACE_VARIANTS, "rule.variant (memory = 'features')")
            require(r.features >= 2 and r.features % 2 == 0, f"rule.features must be even and >= 2, got {r.features}")
            require(r.trace_tau == 0 or r.trace_tau > 1, f"rule.trace_tau must be 0 (fitted) or > 1 sample, got {r.trace_tau}")
            require(r.trace_stages in (1, 2, 3), f"rule.trace_stages must be 1, 2 or 3, got {r.trace_stages}")
            require_choice(r.feature_draw, FEATURE_DRAWS, "rule.feature_draw")

    def new_epoch(self) -> None:
        if getattr(self.config, "reset_each_epoch", False):
            self.memory.reset()

    def updates(self, x: Tensor, y: Tensor) -> Iterator[None]:
        x = self.model.flatten(x)
        y1 = torch.nn.functional.one_hot(y, self.model.n_classes).to(x.dtype)
        traces = None
        for traces in self.model.present(x):
            if self.memory.ready:
                self.write_grads(traces, x, y1)
                yield
        self.memory.push(x, y1, [t.z for t in traces[:-1]])

    @torch.no_grad()
    def write_grads(self, traces, x: Tensor, y1: Tensor) -> None:
        hidden = traces[:-1]
        xis, h, yw = self.memory.signals(
            self.model, x, y1, [t.z for t in hidden], gamma=self.gamma, sigmas=self.sigmas, variant=self.variant
        )
        for layer, tr, xi in zip(self.model.hidden, hidden, xis):
            layer.accumulate_grad(tr.h, layer.output_vjp(tr.a, tr.r, tr.z, xi.unsqueeze(-2)), tr.scale)
        readout_delta_rule(self.model.readout, h, yw)


def feature_options(config) -> dict:
    """The :class:`~ibhebb.memory.features.FeatureMemory` arguments of a rule config."""
    return {"gamma": float(config.gamma), "features": int(getattr(config, "features", 256)),
            "tau": float(getattr(config, "trace_tau", 0.0)), "stages": int(getattr(config, "trace_stages", 2)),
            "seed": int(getattr(config, "feature_seed", 0)), "draw": str(getattr(config, "feature_draw", "orthogonal")),
            "check": bool(getattr(config, "memory_check", False))}


def readout_delta_rule(readout, h: Tensor, y1: Tensor) -> None:
    """Softmax cross-entropy gradient of the readout over a window ``h`` ``(R, N, d)`` or ``(N, d)``."""
    readout.accumulate_grad(h, softmax_delta(readout.preactivation(h), y1))
