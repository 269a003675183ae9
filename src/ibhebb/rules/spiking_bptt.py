"""Surrogate-gradient backprop through time on a spiking network: the baseline the three-factor rule is compared with.

The end-to-end gradient of the readout's cross-entropy at the last step, through every step and layer of
:class:`~ibhebb.models.spiking.SpikingMLP`, each spike's derivative its surrogate (or, with escape noise,
the escape function's derivative), the reset's spike detached; minibatches of ``optim.batch_size``.
"""
from __future__ import annotations

from ..errors import ConfigError
from .base import register_rule
from .baselines import Backprop


@register_rule("spiking-bptt")
class SpikingBPTT(Backprop):
    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.model.kind not in ("spiking-mlp", "spiking-cnn"):
            raise ConfigError(f"rule spiking-bptt needs model.kind = 'spiking-mlp' or 'spiking-cnn', got {cfg.model.kind!r}")
