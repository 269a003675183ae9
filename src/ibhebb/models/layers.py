"""Dense layers with a leading replica dimension and their local Jacobians.

A layer holds ``R`` independent copies of its parameters (``weight`` is
``(R, out, in)``), one per seed, so many seeds train at once in the same
matrix products. Inputs are ``(R, B, in)`` or ``(B, in)`` (shared by all
replicas); outputs are ``(R, B, out)``.

The output map is ``z = g(a)`` with ``a = W h + b`` and ``g`` an activation
followed, optionally, by a parameter-free LayerNorm. ``output_vjp`` pulls a
cotangent of ``z`` back to ``a``; ``accumulate_grad`` turns a cotangent of
``a`` into ``.grad`` of ``W`` and ``b`` — the local factor ``β = ∂z/∂θ`` of
the three-factor rule applied to the global factor.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from ..functional.layers import ACTIVATIONS, LAYERNORM_EPS, affine, dense_output, dense_param_grads, dense_vjp


def replica_generators(seed: int, replicas: int) -> list[torch.Generator]:
    """One generator per replica; replica ``r`` of seed ``s`` is the same whatever ``R`` is."""
    return [torch.Generator().manual_seed(1_000_003 * seed + r) for r in range(replicas)]


def uniform_init(shape: Sequence[int], bound: float, generators: list[torch.Generator]) -> Tensor:
    """``U(-bound, bound)`` per replica, stacked on a new leading dimension."""
    return torch.stack([(torch.rand(*shape, generator=g) * 2 - 1) * bound for g in generators])


INITS = ("uniform", "lecun-normal")
"""``uniform``: weights and biases ``U(±1/√fan_in)`` (torch's default); ``lecun-normal``: weights from a normal of
variance ``1/fan_in`` truncated at two standard deviations (flax's default, the authors' code), biases 0."""
_TRUNCATED_STD = 0.87962566103423978
"""Standard deviation of a unit normal truncated to ``[-2, 2]``, which ``lecun-normal`` divides by (as flax does)."""


def init_parameters(shape: Sequence[int], fan_in: int, generators: list[torch.Generator], init: str = "uniform",
                    bias: bool = True) -> tuple[Tensor, Tensor | None]:
    """Initial ``(weight, bias)`` per replica for a layer of ``shape[0]`` outputs and ``fan_in`` inputs (see :data:`INITS`)."""
    bound = 1.0 / math.sqrt(fan_in)
    if init == "uniform":
        w = uniform_init(shape, bound, generators)
        return w, (uniform_init(shape[:1], bound, generators) if bias else None)
    if init == "lecun-normal":
        std = bound / _TRUNCATED_STD
        w = torch.stack([torch.nn.init.trunc_normal_(torch.empty(*shape), 0.0, 1.0, -2.0, 2.0, generator=g) * std
                         for g in generators])
        return w, (w.new_zeros(len(generators), shape[0]) if bias else None)
    raise ValueError(f"unknown init {init!r}; choose one of {', '.join(INITS)}")


class Dense(nn.Module):
    """``z = LN(act(W h + b))`` for ``R`` replicas at once.

    Parameters
    ----------
    in_features, out_features : int
    generators : list of torch.Generator
        One per replica (see :func:`replica_generators`); their number is ``R``.
    activation : {"relu", "tanh", "sigmoid", "identity"}
    layernorm : bool
        Apply a parameter-free LayerNorm after the activation.
    bias : bool
    layernorm_eps : float
        The LayerNorm's ``ε``.
    init : {"uniform", "lecun-normal"}
        See :data:`INITS`.

    Examples
    --------
    >>> import torch
    >>> from ibhebb.models.layers import Dense, replica_generators
    >>> layer = Dense(784, 128, generators=replica_generators(0, 3))
    >>> layer(torch.randn(5, 784)).shape
    torch.Size([3, 5, 128])
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        generators: list[torch.Generator],
        activation: str = "relu",
        layernorm: bool = True,
        bias: bool = True,
        layernorm_eps: float = LAYERNORM_EPS,
        init: str = "uniform",
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        self.in_features, self.out_features = in_features, out_features
        self.activation, self.layernorm, self.layernorm_eps = activation, layernorm, layernorm_eps
        w, b = init_parameters((out_features, in_features), in_features, generators, init, bias)
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(b) if b is not None else None

    @property
    def replicas(self) -> int:
        return self.weight.shape[0]

    def preactivation(self, h: Tensor) -> Tensor:
        """``a = W h + b``: ``(R, B, in)`` or ``(B, in)`` → ``(R, B, out)``."""
        return affine(h, self.weight, self.bias)

    def product(self, h: Tensor, weight: Tensor) -> Tensor:
        """``W h`` with the given ``weight`` (no bias): what feedback alignment replaces in the backward pass."""
        return affine(h, weight, None)

    def output(self, a: Tensor) -> tuple[Tensor, Tensor]:
        """``(r, z)``: the activation ``r = act(a)`` and the layer output ``z``."""
        return dense_output(a, self.activation, self.layernorm, self.layernorm_eps)

    def forward(self, h: Tensor) -> Tensor:
        return self.output(self.preactivation(h))[1]

    def output_vjp(self, a: Tensor, r: Tensor, z: Tensor, cot: Tensor) -> Tensor:
        """Cotangent of ``z`` → cotangent of ``a``."""
        return dense_vjp(a, r, z, cot, self.activation, self.layernorm, self.layernorm_eps)

    @torch.no_grad()
    def accumulate_grad(self, h: Tensor, a_cot: Tensor, scale: float = 1.0) -> None:
        """Add ``scale · Σ_batch a_cot hᵀ`` to ``weight.grad`` (and ``a_cot`` to ``bias.grad``)."""
        gw, gb = dense_param_grads(h, a_cot)
        _add_grad(self.weight, gw, scale)
        if self.bias is not None:
            _add_grad(self.bias, gb, scale)


def _add_grad(p: Tensor, g: Tensor, scale: float) -> None:
    if scale != 1.0:
        g = g * scale
    if p.grad is None:
        p.grad = g.clone()
    else:
        p.grad.add_(g)
