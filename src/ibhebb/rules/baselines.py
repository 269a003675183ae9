"""Baselines trained on minibatches: backprop and last layer only."""
from __future__ import annotations

from typing import Iterator

import torch
from torch import Tensor

from .base import Rule, register_rule


def replica_cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy, mean over the batch, summed over replicas (so each replica gets its own gradient)."""
    r, b, c = logits.shape
    return torch.nn.functional.cross_entropy(logits.reshape(r * b, c), y.repeat(r), reduction="sum") / b


@register_rule("backprop")
class Backprop(Rule):
    """End-to-end gradient of the output cross-entropy (through time for leaky networks)."""

    def updates(self, x: Tensor, y: Tensor) -> Iterator[None]:
        with torch.enable_grad():
            replica_cross_entropy(self.model(x), y).backward()
        yield


@register_rule("last-layer")
class LastLayer(Rule):
    """Only the readout learns, by cross-entropy on frozen random hidden features."""

    def updates(self, x: Tensor, y: Tensor) -> Iterator[None]:
        with torch.no_grad():
            zs = self.model.represent(x)
            h = zs[-1] if zs else self.model.flatten(x)
        with torch.enable_grad():
            replica_cross_entropy(self.model.readout(h), y).backward()
        yield

    def trainable(self):
        return list(self.model.readout.parameters())
