"""Neuron layers and networks, each with a leading replica (seed) dimension."""
from .layers import Dense, replica_generators
from .networks import MLP, LayerTrace, LeakyMLP

__all__ = ["Dense", "MLP", "LeakyMLP", "LayerTrace", "replica_generators"]
