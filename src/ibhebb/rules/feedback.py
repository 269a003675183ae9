"""Feedback alignment and sign symmetry: backprop with other matrices in the backward path.

Each layer's product ``a = h Wᵀ`` is a :class:`FeedbackMatmul`, whose
backward pass sends the error down through a feedback matrix ``B`` of the
weight's shape, ``δh = δa B``, instead of ``δa W``; the weight's own
gradient is unchanged, ``∂L/∂W = δaᵀ h``. Everything is replica-batched
(``W``, ``B``: ``(R, out, in)``).

- ``feedback-alignment`` (Lillicrap et al.): ``B`` random, drawn once like
  the weights and fixed (a buffer of the rule).
- ``sign-symmetry`` (Liao et al.): ``B = sign(W) · mean|W|`` of the current
  weights, detached: only the signs (and one scale per layer and replica)
  travel back.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
from torch import Tensor

from ..models.layers import replica_generators, uniform_init
from .base import Rule, register_rule
from .baselines import replica_cross_entropy
from .local import require_static_model

FEEDBACK_SEED_OFFSET = 104_729


class FeedbackMatmul(torch.autograd.Function):
    """``h Wᵀ`` forward; ``δh = δa B`` and ``δW = δaᵀ h`` backward.

    ``h`` is ``(R, B, in)`` or ``(B, in)`` (shared by the replicas), ``W`` and
    ``B`` are ``(R, out, in)``; the result is ``(R, B, out)``.
    """

    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, feedback: Tensor) -> Tensor:
        ctx.save_for_backward(h, feedback)
        return torch.matmul(h, weight.transpose(-1, -2))

    @staticmethod
    def backward(ctx, grad_a: Tensor):
        h, feedback = ctx.saved_tensors
        grad_h = torch.matmul(grad_a, feedback) if ctx.needs_input_grad[0] else None
        if grad_h is not None and h.dim() == 2:
            grad_h = grad_h.sum(0)
        grad_w = torch.matmul(grad_a.transpose(-1, -2), h) if ctx.needs_input_grad[1] else None
        return grad_h, grad_w, None


def forward_with(model, x: Tensor, matmul: Callable[[int, Tensor, Tensor], Tensor]) -> Tensor:
    """Logits of ``model`` on ``x`` with every layer's product ``h Wᵀ`` computed by ``matmul(i, layer, h)``."""
    h = model.flatten(x)
    layers = model.layers()
    for i, layer in enumerate(layers):
        a = matmul(i, layer, h)
        if layer.bias is not None:
            a = a + layer.bias.unsqueeze(-2)
        if i == len(layers) - 1:
            return a
        h = model.transmit(model.activate(a)) if hasattr(model, "transmit") else layer.output(a)[1]
    raise AssertionError("a model has at least its readout")


class _FeedbackRule(Rule):
    @classmethod
    def check_config(cls, cfg) -> None:
        require_static_model(cfg, cls.name)

    def feedback(self, i: int, layer) -> Tensor:
        raise NotImplementedError

    def logits(self, x: Tensor) -> Tensor:
        return forward_with(self.model, x, lambda i, layer, h: FeedbackMatmul.apply(h, layer.weight, self.feedback(i, layer)))

    def updates(self, x: Tensor, y: Tensor) -> Iterator[None]:
        with torch.enable_grad():
            replica_cross_entropy(self.logits(x), y).backward()
        yield


@register_rule("feedback-alignment")
class FeedbackAlignment(_FeedbackRule):
    """Errors travel down through fixed random matrices ``B^ℓ``, drawn like the forward weights."""

    def __init__(self, model, config):
        super().__init__(model, config)
        w0 = model.layers()[0].weight
        gens = replica_generators(FEEDBACK_SEED_OFFSET + model.seed, w0.shape[0])
        for i, layer in enumerate(model.layers()):
            out_f, in_f = layer.weight.shape[1:]
            b = uniform_init((out_f, in_f), 1.0 / math.sqrt(in_f), gens)
            self.register_buffer(f"feedback_{i}", b.to(w0.device, w0.dtype))

    def feedback(self, i: int, layer) -> Tensor:
        return getattr(self, f"feedback_{i}")


@register_rule("sign-symmetry")
class SignSymmetry(_FeedbackRule):
    """Errors travel down through ``sign(W) · mean|W|``: the weights' signs, not their values."""

    def feedback(self, i: int, layer) -> Tensor:
        w = layer.weight.detach()
        return torch.sign(w) * w.abs().mean((-1, -2), keepdim=True)
