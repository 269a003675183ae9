"""The training loop: one trainer for every rule, online or minibatch."""
from .trainer import Trainer, build, evaluate, train

__all__ = ["Trainer", "build", "evaluate", "train"]
