"""Feedback alignment and sign symmetry: backprop with other matrices in the backward path.

Each layer's linear map (``a = h Wᵀ``, or a convolution ``W ⋆ h``) is a
:func:`feedback_product`, whose backward pass sends the error down through a
feedback matrix ``B`` of the weight's shape (``δh = δa B``, or the transposed
convolution with ``B``) instead of ``W``; the weight's own gradient is
unchanged, ``∂L/∂W = δaᵀ h``. Everything is replica-batched (``W``, ``B``:
``(R, out, …)``).

- ``feedback-alignment`` (Lillicrap et al.): ``B`` random, drawn once like
  the weights and fixed (a buffer of the rule).
- ``sign-symmetry`` (Liao et al.): ``B = sign(W) · mean|W|`` of the current
  weights, detached: only the signs (and one scale per layer and replica)
  travel back; ``rule.feedback_scale = "none"``: ``B = sign(W)`` (the authors'
  code of seed 001).
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
from torch import Tensor

from ..config import require_choice
from ..models.layers import replica_generators, uniform_init
from .base import Rule, register_rule
from .baselines import replica_cross_entropy
from .local import require_static_model

FEEDBACK_SEED_OFFSET = 104_729
FEEDBACK_SCALES = ("mean-abs", "none")
"""``rule.feedback_scale`` of sign symmetry: ``sign(W) · mean|W|`` per layer and replica, or plain ``sign(W)``."""


def feedback_product(product: Callable[[Tensor, Tensor], Tensor], h: Tensor, weight: Tensor, feedback: Tensor) -> Tensor:
    """``product(h, W)`` forward; backward, ``δW`` as ``product``'s and ``δh`` as if the weight were ``B``.

    ``product(h, ·)`` is linear in each argument (a matrix product ``h Wᵀ``, a convolution ``W ⋆ h``), so
    ``product(h.detach(), W) + p - p.detach()`` with ``p = product(h, B)`` has the value ``product(h, W)``
    (``p - p.detach()`` is exactly zero), its gradient in ``W`` through the first term only and its gradient
    in ``h`` through ``p`` only: ``δh = ∂⟨δa, product(h, B)⟩/∂h`` (``δa B`` for a matrix product, the
    transposed convolution with ``B`` for a convolution). ``B`` gets no gradient.
    """
    p = product(h, feedback.detach())
    return product(h.detach(), weight) + (p - p.detach())


def forward_with(model, x: Tensor, product: Callable[[int, object, Tensor, Tensor], Tensor]) -> Tensor:
    """Logits of ``model`` on ``x`` with every layer's linear map ``W h`` computed by ``product(i, layer, h, W)``."""
    if hasattr(model, "forward_with"):
        return model.forward_with(x, product)[0]
    h = model.flatten(x)
    layers = model.layers()
    for i, layer in enumerate(layers):
        a = product(i, layer, h, layer.weight)
        if layer.bias is not None:
            a = a + layer.bias.unsqueeze(-2)
        if i == len(layers) - 1:
            return a
        h = model.transmit(model.activate(a)) if hasattr(model, "transmit") else layer.output(a)[1]
    raise AssertionError("a model has at least its readout")


def random_feedback(weights: list[Tensor], seed: int, offset: int = FEEDBACK_SEED_OFFSET) -> list[Tensor]:
    """One fixed random ``B`` per weight, of its shape ``(R, out, …)``, ``U(±1/√fan_in)`` like the weights, drawn from
    the generators of ``(offset + seed, replica)``: replica ``r`` of a seed gets the same ``B`` whatever ``R`` is."""
    w0 = weights[0]
    gens = replica_generators(offset + seed, w0.shape[0])
    out = []
    for w in weights:
        shape = w.shape[1:]
        out.append(uniform_init(shape, 1.0 / math.sqrt(math.prod(shape[1:])), gens).to(w0.device, w0.dtype))
    return out


class _FeedbackRule(Rule):
    @classmethod
    def check_config(cls, cfg) -> None:
        require_static_model(cfg, cls.name)

    def feedback(self, i: int, layer) -> Tensor:
        raise NotImplementedError

    def logits(self, x: Tensor) -> Tensor:
        return forward_with(self.model, x, lambda i, layer, h, w: feedback_product(layer.product, h, w, self.feedback(i, layer)))

    def updates(self, x: Tensor, y: Tensor) -> Iterator[None]:
        with torch.enable_grad():
            replica_cross_entropy(self.logits(x), y).backward()
        yield


@register_rule("feedback-alignment")
class FeedbackAlignment(_FeedbackRule):
    """Errors travel down through fixed random matrices ``B^ℓ``, drawn like the forward weights."""

    def __init__(self, model, config):
        super().__init__(model, config)
        for i, b in enumerate(random_feedback([layer.weight for layer in model.layers()], model.seed)):
            self.register_buffer(f"feedback_{i}", b)

    def feedback(self, i: int, layer) -> Tensor:
        return getattr(self, f"feedback_{i}")


@register_rule("sign-symmetry")
class SignSymmetry(_FeedbackRule):
    """Errors travel down through ``sign(W) · mean|W|`` (or ``sign(W)``): the weights' signs, not their values."""

    @classmethod
    def check_config(cls, cfg) -> None:
        super().check_config(cfg)
        require_choice(cfg.rule.feedback_scale, FEEDBACK_SCALES, "rule.feedback_scale")

    def feedback(self, i: int, layer) -> Tensor:
        w = layer.weight.detach()
        if self.config.feedback_scale == "none":
            return torch.sign(w)
        return torch.sign(w) * w.abs().mean(tuple(range(1, w.dim())), keepdim=True)
