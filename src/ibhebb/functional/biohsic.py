"""The three-factor HSIC-bottleneck step as pure functions (MATH §3–§5): the window, ξ, the gradients.

A window of ``N`` samples is the current one and the ``N - 1`` before it. Its
past lives in a :class:`WindowState`: inputs ``x`` ``(N-1, d_x)`` and one-hot
labels ``y`` ``(N-1, C)`` shared by the ``R`` replicas, the hidden outputs
``z[ℓ]`` ``(R, N-1, d_ℓ)`` as they were when each sample was presented (the
``buffer`` memory; empty for ``recompute``, which recomputes them), and the
Gaussian kernel matrices ``kx``, ``ky`` of the past inputs and labels. Each
new sample adds one kernel row (:func:`window_kernels`, ``O(N d)``) instead
of a fresh ``O(N² d)`` matrix.

One update, for hidden outputs ``z_0^ℓ`` of the current sample:

- ``ξ^ℓ`` from the window (:func:`window_signals`, one of the variants of
  :func:`~ibhebb.functional.signals.signal_from_kernels`);
- hidden layer ``ℓ``: ``g_θ = (∂z_0^ℓ/∂θ^ℓ)ᵀ ξ^ℓ`` (:func:`~ibhebb.functional.layers.dense_vjp`,
  :func:`~ibhebb.functional.layers.dense_param_grads`);
- readout: ``g_W = (1/N) Σ_p (softmax(W h_p + b) - y_p) h_pᵀ`` over the window.

:func:`biohsic_grads` puts these together for a dense network; the rule's
loop (:class:`~ibhebb.rules.biohsic.BioHSIC`), the torch engine step and
the C step (``engine/native/step.c``) compute the same update.

Examples
--------
>>> import torch
>>> from ibhebb.functional.biohsic import BioHSICParams, window_kernels, window_push, window_signals, window_state
>>> p = BioHSICParams(window=4, gamma=2.0, sigmas=(0.5, 0.1, 1.0), variant="paper")
>>> st = window_state(p.window, 5, 3, z_dims=[6], replicas=2, like=torch.zeros(()))
>>> x, y, z = torch.rand(1, 5), torch.eye(3)[:1], torch.rand(2, 1, 6)
>>> kx, ky = window_kernels(st, x, y, p.sigmas)
>>> [xi.shape for xi in window_signals(p, kx, ky, [torch.cat([st.z[0], z], -2)])]
[torch.Size([2, 6])]
>>> st = window_push(st, x, y, [z], kx, ky)
>>> st.x[-1].equal(x[0]), st.kx.shape
(True, torch.Size([3, 3]))
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import Tensor

from .conv import MapGeometry, conv_param_grads, conv_vjp
from .kernels import kernel_row, row_kernel_matrix, window_kernel
from .layers import LAYERNORM_EPS, affine, dense_param_grads, dense_vjp, softmax_delta
from .signals import check_window, signal_from_kernels


class BioHSICParams(NamedTuple):
    """The rule's constants: ``N`` (``window``, current sample included), ``γ``, ``(σ_x, σ_y, σ_z)``, the ξ variant."""

    window: int
    gamma: float
    sigmas: tuple[float, float, float]
    variant: str = "paper"


class WindowState(NamedTuple):
    """The past ``N - 1`` samples of a window (oldest first) and their kernel matrices."""

    x: Tensor
    y: Tensor
    z: tuple[Tensor, ...]
    kx: Tensor
    ky: Tensor


class DenseTrace(NamedTuple):
    """What a dense layer saw and produced for the current sample.

    Input ``h``, preactivation ``a``, activation ``r``, output ``z``; a convolution layer may keep ``scale``, the
    LayerNorm's ``(μ, s)`` of ``r`` (:func:`~ibhebb.functional.conv.conv_output`), so that its VJP need not recompute it.
    """

    h: Tensor
    a: Tensor
    r: Tensor
    z: Tensor
    scale: tuple[Tensor, Tensor] | None = None


def window_state(window: int, d_x: int, classes: int, *, z_dims: Sequence[int] = (), replicas: int = 1,
                 like: Tensor) -> WindowState:
    """An empty window (zeros; the first ``N - 1`` samples of a stream only fill it).

    ``z_dims`` are the hidden widths whose past outputs are stored (empty for ``recompute``);
    ``like`` gives the dtype and device.
    """
    check_window(window)
    m = window - 1
    zeros = lambda *shape: like.new_zeros(shape)  # noqa: E731
    z = tuple(zeros(replicas, m, d) for d in z_dims)
    return WindowState(zeros(m, d_x), zeros(m, classes), z, zeros(m, m), zeros(m, m))


def window_state_of(x: Tensor, y: Tensor, z: Sequence[Tensor], sigmas: Sequence[float]) -> WindowState:
    """The state of a window whose past samples are ``x``, ``y``, ``z`` (kernel matrices rebuilt from them as rows)."""
    return WindowState(x, y, tuple(z), row_kernel_matrix(x, sigmas[0]), row_kernel_matrix(y, sigmas[1]))


def window_kernels(st: WindowState, x: Tensor, y: Tensor, sigmas: Sequence[float]) -> tuple[Tensor, Tensor]:
    """The window's input and label kernel matrices ``(N, N)``.

    The current sample ``x`` ``(1, d_x)``, ``y`` ``(1, C)`` comes last.
    """
    return window_kernel(st.kx, kernel_row(st.x, x, sigmas[0])), window_kernel(st.ky, kernel_row(st.y, y, sigmas[1]))


def _shift_in(past: Tensor, new: Tensor, dim: int) -> Tensor:
    """Drop the oldest entry along ``dim`` and append ``new`` (size 1 along ``dim``)."""
    return torch.cat([past.narrow(dim, 1, past.shape[dim] - 1), new], dim)


def window_push(st: WindowState, x: Tensor, y: Tensor, zs: Sequence[Tensor], kx: Tensor, ky: Tensor) -> WindowState:
    """The window after the current sample joins its past.

    ``kx``/``ky`` are :func:`window_kernels` of it, ``zs[ℓ]`` ``(R, 1, d_ℓ)``.
    """
    z = tuple(_shift_in(past, new, 1) for past, new in zip(st.z, zs))
    return WindowState(_shift_in(st.x, x, 0), _shift_in(st.y, y, 0), z, kx[1:, 1:], ky[1:, 1:])


def window_push_(st: WindowState, x: Tensor, y: Tensor, zs: Sequence[Tensor], kx: Tensor, ky: Tensor) -> None:
    """:func:`window_push` into the tensors of ``st`` (for compiled and graph-captured steps, whose state must stay put)."""
    for old, new in zip(st, window_push(st, x, y, zs, kx, ky)):
        if isinstance(old, Tensor):
            old.copy_(new)
        else:
            for o, n in zip(old, new):
                o.copy_(n)


def window_signals(p: BioHSICParams, kx: Tensor, ky: Tensor, zws: Sequence[Tensor]) -> list[Tensor]:
    """ξ^ℓ ``(R, d_ℓ)`` of every hidden layer.

    From the window's kernels and its outputs ``zws[ℓ]`` ``(R, N, d_ℓ)`` (current last).
    """
    return [signal_from_kernels(kx, ky, zw, gamma=p.gamma, sigma_z=p.sigmas[2], variant=p.variant) for zw in zws]


def readout_grads(hw: Tensor, yw: Tensor, w: Tensor, b: Tensor | None) -> tuple[Tensor, Tensor]:
    """The readout's delta rule over the window.

    ``(g_W, g_b)`` for inputs ``hw`` ``(R, N, d)`` or ``(N, d)`` and labels ``yw`` ``(N, C)``.
    """
    return dense_param_grads(hw, softmax_delta(affine(hw, w, b), yw))


def biohsic_grads(traces: Sequence[DenseTrace], xis: Sequence[Tensor], hw: Tensor, yw: Tensor, readout_w: Tensor,
                  readout_b: Tensor | None, *, activation: str, layernorm: bool, scale: float = 1.0,
                  layernorm_eps: float = LAYERNORM_EPS, maps: Sequence[MapGeometry] = ()) -> list[Tensor]:
    """Every parameter's update of a network, in the order ``W¹, b¹, …, W_out, b_out`` (no ``b`` without bias).

    ``traces`` are the hidden layers' :class:`DenseTrace` of the current sample, ``xis`` their ξ (from the window
    or any other working memory), ``hw`` the readout's window of inputs (the last hidden layer's outputs, current
    last) and ``yw`` its one-hot labels; ``scale`` is ``Δt/τ_m`` for a leaky network (1 otherwise).
    ``maps`` are the hidden layers' :class:`~ibhebb.functional.conv.MapGeometry` when they are convolutions
    (their traces hold the patches ``h`` of the input, :func:`~ibhebb.functional.conv.conv_patches`, the maps ``a``,
    ``r`` and the flattened ``z``; empty for dense layers).
    """
    bias = readout_b is not None
    grads: list[Tensor] = []
    for i, (t, xi) in enumerate(zip(traces, xis)):
        h, a, r, z = t[:4]
        if maps:
            a_cot = conv_vjp(a, r, z, xi.unsqueeze(-2), maps[i], activation, layernorm, layernorm_eps, t.scale)
            gw, gb = conv_param_grads(h, a_cot, maps[i], scale)
        else:
            gw, gb = dense_param_grads(h, dense_vjp(a, r, z, xi.unsqueeze(-2), activation, layernorm, layernorm_eps), scale)
        grads += [gw, gb] if bias else [gw]
    gw, gb = readout_grads(hw, yw, readout_w, readout_b)
    return grads + ([gw, gb] if bias else [gw])
