"""Gaussian kernels and the HSIC estimator (MATH §1–§2).

Every function takes tensors with any number of leading (replica, batch)
dimensions; a set of ``N`` samples of a variable of dimension ``d`` is a
tensor ``(..., N, d)``.
"""
from __future__ import annotations

import torch
from torch import Tensor


def squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise squared Euclidean distances ``‖a_p - b_q‖²``.

    Parameters
    ----------
    a : Tensor ``(..., n, d)``
    b : Tensor ``(..., m, d)``

    Returns
    -------
    Tensor ``(..., n, m)``, clamped at 0 (the expanded form can round below it).
    """
    a2 = (a * a).sum(-1, keepdim=True)
    b2 = (b * b).sum(-1, keepdim=True).transpose(-1, -2)
    return (a2 + b2 - 2.0 * a @ b.transpose(-1, -2)).clamp_min(0.0)


def gaussian(sq_dist: Tensor, sigma: float, d: int) -> Tensor:
    """The Gaussian kernel of a squared distance, with a width that grows with the dimension ``d``.

    ``k(a, b) = exp(-‖a - b‖² / (2 σ² d))``: the one definition every kernel of
    ibhebb is computed from (matrices, rows, the ``α`` of ξ, the C step's).

    Examples
    --------
    >>> import torch
    >>> from ibhebb.functional.kernels import gaussian
    >>> [round(v, 4) for v in gaussian(torch.tensor([0.0, 2.0]), 0.5, 4).tolist()]
    [1.0, 0.3679]
    """
    return torch.exp(-sq_dist / (2.0 * sigma**2 * d))


def kernel_row(past: Tensor, new: Tensor, sigma: float) -> Tensor:
    """``k(new, past_p)`` for every stored sample: ``past`` ``(..., M, d)``, ``new`` ``(..., 1, d)`` → ``(..., M)``.

    Differences first (not the expanded form), so a sample equal to a stored one gets exactly 1.
    """
    diff = past - new
    return gaussian((diff * diff).sum(-1), sigma, past.shape[-1])


def row_kernel_matrix(v: Tensor, sigma: float) -> Tensor:
    """``[K]_pq = k(v_p, v_q)`` of ``v`` ``(..., M, d)`` with the arithmetic of :func:`kernel_row` (differences first).

    What a window's kernel matrices are rebuilt from, so they equal the ones kept up to date row by row.
    """
    diff = v.unsqueeze(-2) - v.unsqueeze(-3)
    return gaussian((diff * diff).sum(-1), sigma, v.shape[-1])


def window_kernel(k_past: Tensor, row: Tensor) -> Tensor:
    """The kernel matrix ``(N, N)`` of a window: that of its past ``(N-1, N-1)`` bordered by the new row (unit diagonal)."""
    top = torch.cat([k_past, row.unsqueeze(-1)], -1)
    bottom = torch.cat([row, torch.ones_like(row[..., :1])], -1).unsqueeze(-2)
    return torch.cat([top, bottom], -2)


def kernel_matrix(v: Tensor, sigma: float) -> Tensor:
    """Gaussian kernel matrix ``[K]_pq = k(v_p, v_q)`` of a set ``v`` ``(..., N, d)``.

    The diagonal is exactly 1.
    """
    dist = squared_distances(v, v)
    eye = torch.eye(v.shape[-2], dtype=torch.bool, device=v.device)
    return gaussian(dist.masked_fill(eye, 0.0), sigma, v.shape[-1])


def centred_diagonal(K: Tensor) -> Tensor:
    """Centred diagonal ("surprise") ``k̄(v_p, v_p) = 1 - (1/N) Σ_q k(v_p, v_q)``.

    Takes a kernel matrix ``(..., N, N)`` with unit diagonal and returns ``(..., N)``.
    """
    return 1.0 - K.mean(-1)


def double_centre(K: Tensor) -> Tensor:
    """``H K H`` with ``H = I - 11ᵀ/N``, without forming ``H``."""
    return K - K.mean(-1, keepdim=True) - K.mean(-2, keepdim=True) + K.mean((-1, -2), keepdim=True)


def hsic(KA: Tensor, KB: Tensor) -> Tensor:
    """Biased HSIC estimator ``tr(K_A H K_B H) / (N - 1)²`` over the last two dimensions."""
    n = KA.shape[-1]
    return (double_centre(KA) * KB).sum((-1, -2)) / (n - 1) ** 2


def hsic_bottleneck(
    x: Tensor, y: Tensor, z: Tensor, *, gamma: float, sigmas: tuple[float, float, float]
) -> tuple[Tensor, Tensor, Tensor]:
    """The layer loss ``L = HSIC(X, Z) - γ HSIC(Y, Z)`` and its two terms.

    Parameters
    ----------
    x, y, z : Tensor ``(..., N, d_x)``, ``(..., N, d_y)``, ``(..., N, d_z)``
        Inputs, one-hot labels and layer outputs of ``N`` samples; leading
        dimensions broadcast (``x`` may lack the replica dimension of ``z``).
    gamma : float
    sigmas : (σ_x, σ_y, σ_z)

    Returns
    -------
    (loss, hsic_xz, hsic_yz), each ``(...)``.
    """
    sx, sy, sz = sigmas
    Kz = kernel_matrix(z, sz)
    hxz = hsic(kernel_matrix(x, sx), Kz)
    hyz = hsic(kernel_matrix(y, sy), Kz)
    return hxz - gamma * hyz, hxz, hyz
