"""Neuron layers and networks, each with a leading replica (seed) dimension."""
from .layers import Dense, replica_generators
from .networks import MLP, LayerTrace, LeakyMLP
from .registry import MODELS, build_model, register_model

__all__ = ["Dense", "MLP", "LeakyMLP", "LayerTrace", "MODELS", "build_model", "register_model", "replica_generators"]
