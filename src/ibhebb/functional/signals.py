"""The global third factor ξ of the three-factor rule (MATH §3).

A window is a tensor ``(..., N, d)`` holding the last ``N`` samples with the
**current sample last**. Leading dimensions broadcast, so a window of inputs
``(N, d_x)`` shared by all replicas pairs with layer outputs ``(R, N, d_z)``.

With ``α(z_p) = (2 / (σ_z² d_z)) k_z(z_0, z_p) (z_0 - z_p)``,
``ᾱ = (1/N) Σ_{p≠0} α(z_p)`` and ``s_p = k̄_x(x_p, x_p) - γ k̄_y(y_p, y_p)``:

``paper``
    ``ξ = (1/(N-1)²) [s_0 ᾱ + (1/N) Σ_{p≠0} s_p α(z_p)]`` — twice the gradient
    with respect to ``z_0`` of the diagonal surrogate
    ``S = (1/(N-1)²) Σ_p s_p k̄_z(z_p, z_p)``.
``first-term``
    ``ξ = (1/(N-1)²) s_0 ᾱ`` — what produced the published figures.
``exact``
    ``ξ = ∂L/∂z_0`` of the windowed loss ``L = HSIC(X,Z) - γ HSIC(Y,Z)`` with
    the past outputs held fixed:
    ``ξ = (2/(N-1)²) Σ_{q≠0} M_{0q} ∂k_z(z_0, z_q)/∂z_0``, ``M = H (K_X - γ K_Y) H``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .kernels import centred_diagonal, double_centre, gaussian, kernel_matrix

VARIANTS = ("paper", "first-term", "exact")


def check_window(n: int) -> None:
    """``ValueError`` unless a window of ``n`` samples can give ξ (``N >= 2``: the current sample and one before it)."""
    if n < 2:
        raise ValueError(f"a window needs N >= 2 samples, got {n}")


def alpha_factors(z: Tensor, sigma_z: float) -> tuple[Tensor, Tensor]:
    """``α(z_p) = w_p (z_0 - z_p)`` with ``w_p = (2 / (σ_z² d_z)) k_z(z_0, z_p)``, for the past entries of the window.

    ``(w, z_0 - z_p)``, shapes ``(..., N-1)`` and ``(..., N-1, d_z)``: kept apart so that sums over the window
    weighted by ``w`` are one matrix product with the differences.
    """
    d = z.shape[-1]
    diff = z[..., -1:, :] - z[..., :-1, :]
    k = gaussian(torch.linalg.vecdot(diff, diff), sigma_z, d)  # a (1 × d)(d × 1) product per entry was 5× slower
    return (2.0 / (sigma_z**2 * d)) * k, diff


def global_signal(
    x: Tensor,
    y: Tensor,
    z: Tensor,
    *,
    gamma: float,
    sigmas: tuple[float, float, float],
    variant: str = "paper",
) -> Tensor:
    """Global signal ξ for the current (last) sample of a window.

    Parameters
    ----------
    x : Tensor ``(..., N, d_x)``
        Inputs of the window, flattened.
    y : Tensor ``(..., N, d_y)``
        One-hot labels of the window.
    z : Tensor ``(..., N, d_z)``
        The layer's outputs; ``z[..., -1, :]`` is the current sample's.
    gamma : float
        Weight of the label term.
    sigmas : (σ_x, σ_y, σ_z)
        Kernel widths.
    variant : {"paper", "first-term", "exact"}

    Returns
    -------
    Tensor ``(..., d_z)``: one value per neuron, to be used as the cotangent of
    the current output (``Δθ = -η (∂z_0/∂θ)ᵀ ξ``).

    Examples
    --------
    >>> import torch
    >>> from ibhebb.functional.signals import global_signal
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y, z = torch.rand(8, 784, generator=g), torch.eye(10)[torch.arange(8)], torch.rand(3, 8, 64, generator=g)
    >>> global_signal(x, y, z, gamma=2.0, sigmas=(0.5, 0.1, 1.0)).shape
    torch.Size([3, 64])
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown ξ variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    check_window(z.shape[-2])
    sx, sy, sz = sigmas
    return signal_from_kernels(kernel_matrix(x, sx), kernel_matrix(y, sy), z, gamma=gamma, sigma_z=sz, variant=variant)


def signal_from_kernels(Kx: Tensor, Ky: Tensor, z: Tensor, *, gamma: float, sigma_z: float, variant: str) -> Tensor:
    """ξ from the window's input and label kernel matrices ``(..., N, N)`` and outputs ``z`` ``(..., N, d_z)``.

    The same ξ as :func:`global_signal`, for callers that keep ``K_X`` and
    ``K_Y`` of the window up to date themselves (one new row per sample).
    """
    n = z.shape[-2]
    norm = 1.0 / (n - 1) ** 2
    if variant not in VARIANTS:
        raise ValueError(f"unknown ξ variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    k, diff = alpha_factors(z, sigma_z)
    if variant == "exact":
        m0 = double_centre(Kx - gamma * Ky)[..., -1, :-1]
        return -norm * ((m0 * k).unsqueeze(-2) @ diff).squeeze(-2)
    # paper: ξ = norm Σ_p (s_0 + s_p)/N α(z_p); first-term: norm Σ_p s_0/N α(z_p): one product over the past samples
    s = centred_diagonal(Kx) - gamma * centred_diagonal(Ky)
    c = (norm / n) * (s[..., -1:] if variant == "first-term" else s[..., -1:] + s[..., :-1])
    return ((c * k).unsqueeze(-2) @ diff).squeeze(-2)


def diagonal_surrogate(
    x: Tensor, y: Tensor, z: Tensor, *, gamma: float, sigmas: tuple[float, float, float]
) -> Tensor:
    """``S = (1/(N-1)²) Σ_p s_p k̄_z(z_p, z_p)``, whose gradient in ``z_0`` is half the ``paper`` ξ."""
    n = z.shape[-2]
    sx, sy, sz = sigmas
    s = centred_diagonal(kernel_matrix(x, sx)) - gamma * centred_diagonal(kernel_matrix(y, sy))
    return (s * centred_diagonal(kernel_matrix(z, sz))).sum(-1) / (n - 1) ** 2
