"""The fully connected network of seed 001's Table 1 (MATH §6), with a replica dimension.

Each hidden layer is ``z = LeakyReLU(W h)`` (bias-free :class:`Dense`), then,
optionally, divisive normalisation over groups (eq 17), then dropout; the
readout is a bias-free linear layer on the last hidden layer's output. Local
rules read ``z`` (before normalisation and dropout) for their objective and
pass the layer's output on to the next layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..functional.phsic import divisive_normalise, group_code
from .layers import Dense, replica_generators
from .networks import FeedForward


@dataclass(frozen=True)
class Grouping:
    """``c`` groups of neurons per layer, offset ``δ`` and exponent ``p`` (eqs 13–17)."""

    groups: int = 32
    delta: float = 1.0
    p: float = 0.2

    def code(self, z: Tensor) -> Tensor:
        return group_code(z, self.groups, self.delta, self.p)

    def normalise(self, z: Tensor) -> Tensor:
        return divisive_normalise(z, self.groups, self.delta, self.p)


class ReplicaDropout:
    """Dropout with one generator per replica, seeded from ``(seed, replica)``; the trainer checkpoints their states.

    The class using it sets ``seed``, ``replicas``, ``dropout`` and ``_dropout_generators = None``, and has
    ``hidden[0].weight`` (whose device the generators live on).
    """

    def dropout_generators(self, device: torch.device | str = "cpu") -> list[torch.Generator]:
        """One dropout generator per replica on ``device``, seeded from ``(seed, replica)``, made on first use."""
        if self._dropout_generators is None or self._dropout_generators[0].device != torch.device(device):
            self._dropout_generators = [
                torch.Generator(device=device).manual_seed(1_000_003 * self.seed + r + 0x5EED_D209) for r in range(self.replicas)
            ]
        return self._dropout_generators

    def random_state(self) -> dict:
        """The dropout generators' states (the trainer saves them in the checkpoint)."""
        device = self.hidden[0].weight.device
        return {"dropout": [g.get_state() for g in self.dropout_generators(device)]}

    def set_random_state(self, state: dict) -> None:
        device = self.hidden[0].weight.device
        for g, s in zip(self.dropout_generators(device), state["dropout"]):
            g.set_state(s.cpu())

    def drop(self, z: Tensor) -> Tensor:
        """Dropout of ``z`` (replicas first), each replica's mask from its own generator (identity when not training)."""
        if not self.training or self.dropout == 0:
            return z
        keep = 1.0 - self.dropout
        gens = self.dropout_generators(z.device)
        if z.dim() == 0 or z.shape[0] != len(gens):
            raise ValueError(f"dropout expects the replica dimension first, got shape {tuple(z.shape)}")
        mask = torch.stack([torch.rand(z.shape[1:], generator=g, device=z.device, dtype=z.dtype) < keep for g in gens])
        return z * mask / keep


class PHSICMLP(ReplicaDropout, FeedForward):
    """``[Dense → LeakyReLU → (divisive norm) → dropout] × L → Dense`` for ``R`` replicas.

    Parameters
    ----------
    in_features, hidden, n_classes : the layer sizes.
    replicas, seed : ``R`` and the seed of the replicas' generators.
    negative_slope : float
        Of the LeakyReLU (0.1 in seed 001).
    dropout : float
        Dropout probability after each hidden layer (training only).
    grouping : Grouping
        How neurons are grouped (used by the divisive normalisation and by rules
        that put their kernel on the group code).
    divisive_norm : bool
        Whether the next layer receives ``z̃ / u^p`` (eq 17) instead of ``z``.

    Examples
    --------
    >>> import torch
    >>> net = PHSICMLP(784, [64, 64], 10, replicas=2, divisive_norm=True, grouping=Grouping(8))
    >>> net(torch.randn(5, 1, 28, 28)).shape
    torch.Size([2, 5, 10])
    """

    kind = "phsic-mlp"

    def __init__(
        self,
        in_features: int,
        hidden: list[int],
        n_classes: int,
        *,
        replicas: int = 1,
        seed: int = 0,
        negative_slope: float = 0.1,
        dropout: float = 0.0,
        grouping: Grouping = Grouping(),
        divisive_norm: bool = False,
    ):
        gens = replica_generators(seed, replicas)
        sizes = [in_features, *hidden]
        dense = dict(generators=gens, activation="identity", layernorm=False, bias=False)
        layers = [Dense(i, o, **dense) for i, o in zip(sizes[:-1], sizes[1:])]
        readout = Dense(sizes[-1], n_classes, **dense)
        super().__init__(layers, readout, in_features=in_features, n_classes=n_classes, replicas=replicas, seed=seed)
        self.negative_slope, self.dropout = negative_slope, dropout
        self.grouping, self.divisive_norm = grouping, divisive_norm
        self._dropout_generators: list[torch.Generator] | None = None

    def group_code(self, index: int, z: Tensor) -> Tensor:
        """What a grouped kernel compares for hidden layer ``index``'s output ``z``: ``v`` of eq 14."""
        return self.grouping.code(z)

    def activate(self, a: Tensor) -> Tensor:
        """``z = LeakyReLU(a)``: what a local objective sees."""
        return torch.nn.functional.leaky_relu(a, self.negative_slope)

    def transmit(self, z: Tensor) -> Tensor:
        """What the next layer receives from ``z``: divisive normalisation (if on), then dropout."""
        if self.divisive_norm:
            z = self.grouping.normalise(z)
        return self.drop(z)

    def local_forward(self, index: int, h: Tensor) -> tuple[Tensor, Tensor]:
        """Hidden layer ``index`` on input ``h``: ``(z, output)``."""
        z = self.activate(self.hidden[index].preactivation(h))
        return z, self.transmit(z)

    def represent(self, x: Tensor) -> list[Tensor]:
        h, outs = self.flatten(x), []
        for i in range(len(self.hidden)):
            h = self.local_forward(i, h)[1]
            outs.append(h)
        return outs
