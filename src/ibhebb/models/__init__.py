"""Neuron layers and networks, each with a leading replica (seed) dimension."""
from .cnn import CNN
from .layers import Dense, replica_generators
from .networks import MLP, LayerTrace, LeakyMLP
from .phsic_mlp import PHSICMLP
from .registry import MODELS, build_model, register_model
from .spiking import SpikingMLP

__all__ = ["CNN", "Dense", "LayerTrace", "LeakyMLP", "MLP", "MODELS", "PHSICMLP", "SpikingMLP", "build_model", "register_model", "replica_generators"]
