"""Learning rules behind one interface (:class:`Rule`) and one registry (:data:`RULES`)."""
from . import baselines, biohsic, spiking_bptt  # noqa: F401  (registration)
from . import feedback, layerwise, phsic  # noqa: F401  (registration)
from .base import RULES, Rule, make_rule, register_rule

__all__ = ["RULES", "Rule", "make_rule", "register_rule"]
