"""Plausible HSIC (pHSIC) of Pogodin & Latham (seed 001, eqs 7–18; MATH §6).

Pure functions of tensors. A set of ``m`` samples of a ``d``-dimensional
variable is a tensor ``(..., m, d)``; kernel matrices are ``(..., m, m)``;
leading (replica) dimensions broadcast.

The layer objective (eq 9) is ``pHSIC(Z, Z) - γ pHSIC(Y, Z)`` with

    pHSIC(A, B) = mean((K_A - mean K_A) ∘ K_B)                       (eqs 7–8)

over the ``m × m`` pairs of a batch. The label kernel is the cosine
similarity of centred one-hot labels, a binary same / different signal
(1 for the same class, ``-1/(n-1)`` otherwise). On the layer, the kernel is
Gaussian, ``exp(-‖a_i - a_j‖² / 2σ²)`` (eq 15, no scaling by ``d``), the
cosine similarity, or linear, ``a_iᵀ a_j`` (§3: "performs poorly"); with
grouping it acts on the group code ``v`` (eq 14). The ``biased`` estimator
replaces both pHSIC terms by HSIC itself (eq 5, §5.1: "didn't improve").
"""
from __future__ import annotations

import torch
from torch import Tensor

from .kernels import gaussian, hsic, squared_distances

KERNELS = ("gaussian", "cossim", "linear")
ESTIMATORS = ("phsic", "biased")
"""``rule.estimator``: the layer objective in pHSIC (eq 9) or in the biased HSIC estimator (eq 5)."""
COSINE_EPS = 1e-6


def centred_one_hot(y: Tensor, n_classes: int, dtype=torch.float32) -> Tensor:
    """Centred one-hot labels: ``1 - 1/n`` for the label, ``-1/n`` elsewhere.

    Examples
    --------
    >>> import torch
    >>> centred_one_hot(torch.tensor([1]), 4).tolist()
    [[-0.25, 0.75, -0.25, -0.25]]
    """
    return torch.nn.functional.one_hot(y, n_classes).to(dtype) - 1.0 / n_classes


def cosine_kernel_matrix(a: Tensor) -> Tensor:
    """``[K]_ij = a_iᵀ a_j / (‖a_i‖ ‖a_j‖)``; a zero vector is compared as zero."""
    norm = a.norm(dim=-1, keepdim=True)
    unit = a / (norm + COSINE_EPS * (norm <= 0).to(a.dtype))
    return unit @ unit.transpose(-1, -2)


def gaussian_kernel_matrix(a: Tensor, sigma: float) -> Tensor:
    """``[K]_ij = exp(-‖a_i - a_j‖² / (2σ²))`` (eq 15); the diagonal is exactly 1."""
    dist = squared_distances(a, a)
    eye = torch.eye(a.shape[-2], dtype=torch.bool, device=a.device)
    return gaussian(dist.masked_fill(eye, 0.0), sigma, 1)


def layer_kernel_matrix(a: Tensor, kernel: str, sigma: float) -> Tensor:
    """The layer's kernel matrix, ``kernel`` one of :data:`KERNELS`."""
    if kernel == "gaussian":
        return gaussian_kernel_matrix(a, sigma)
    if kernel == "cossim":
        return cosine_kernel_matrix(a)
    if kernel == "linear":
        return a @ a.transpose(-1, -2)
    raise ValueError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")


def label_kernel_matrix(y: Tensor, n_classes: int, dtype=torch.float32) -> Tensor:
    """Cosine kernel of centred one-hot labels: 1 if ``y_i = y_j``, else ``-1/(n-1)``.

    Examples
    --------
    >>> import torch
    >>> label_kernel_matrix(torch.tensor([0, 0, 1]), 3)[0].tolist()
    [1.0, 1.0, -0.5]
    """
    return cosine_kernel_matrix(centred_one_hot(y, n_classes, dtype))


def phsic(KA: Tensor, KB: Tensor) -> Tensor:
    """``pHSIC(A, B) = mean((K_A - mean K_A) ∘ K_B)`` over the last two dimensions (eqs 7–8)."""
    return ((KA - KA.mean((-1, -2), keepdim=True)) * KB).mean((-1, -2))


def phsic_objective(Kz: Tensor, Ky: Tensor, gamma: float) -> Tensor:
    """The layer objective ``pHSIC(Z, Z) - γ pHSIC(Y, Z)`` (eq 9), one value per leading index.

    Its gradient in ``[K_Z]_ij`` is ``(2 k̊_z - γ k̊_y)_ij / m²`` with ``k̊`` the
    kernel minus its batch mean (eq 11), so descending it is eq 10.
    """
    return phsic(Kz, Kz) - gamma * phsic(Ky, Kz)


def layer_objective(Kz: Tensor, Ky: Tensor, gamma: float, estimator: str = "phsic") -> Tensor:
    """``pHSIC(Z, Z) - γ pHSIC(Y, Z)`` (eq 9) or, ``estimator = "biased"``, ``HSIC(Z, Z) - γ HSIC(Y, Z)``.

    HSIC is the biased estimator ``tr(K_A H K_B H) / (m - 1)²`` (eq 5 up to the factor ``m² / (m - 1)²``,
    :func:`~ibhebb.functional.kernels.hsic`).

    Examples
    --------
    >>> import torch
    >>> K = torch.eye(4)
    >>> float(layer_objective(K, K, 2.0, "biased")), float(layer_objective(K, K, 2.0))
    (-0.3333333432674408, -0.1875)
    """
    if estimator == "phsic":
        return phsic_objective(Kz, Ky, gamma)
    if estimator == "biased":
        return hsic(Kz, Kz) - gamma * hsic(Ky, Kz)
    raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")


def pair_objective(kz: Tensor, ky: Tensor, mean_kz: Tensor | float, mean_ky: Tensor | float, gamma: float) -> Tensor:
    """Two-point (online) estimate of eq 9 for the pair ``(t, t - Δt)``.

    ``ℓ = (k_z - μ_z)² - γ (k_y - μ_y) k_z`` with ``μ`` running means of the
    kernels (eq 11's average, accumulated over time) held fixed. Its
    derivative in ``k_z`` is ``2 k̊_z - γ k̊_y``, the pair's term of eq 10; for a
    Gaussian kernel and a linear layer descending it gives eq 12 / eq 19
    (and eq 18 with grouping and divisive normalisation).
    """
    return (kz - mean_kz) ** 2 - gamma * (ky - mean_ky) * kz


# -- grouping and divisive normalisation (eqs 13–18) -------------------------------------------


def _grouped(z: Tensor, groups: int) -> Tensor:
    d = z.shape[-1]
    if d % groups:
        raise ValueError(f"{d} neurons cannot be split into {groups} equal groups")
    return z.reshape(*z.shape[:-1], groups, d // groups)


def group_variance(z: Tensor, groups: int, delta: float) -> tuple[Tensor, Tensor]:
    """Smoothed group variance (eq 13) and the group-centred activity.

    ``u_α = (δ + Σ_n z̃_αn²) / c_α`` with ``z̃_αn = z_αn - mean_n z_αn``, for
    ``groups`` equal groups of consecutive neurons of size ``c_α``.

    Returns
    -------
    (u, z̃) : ``(..., groups)`` and ``(..., groups, c_α)``.
    """
    zg = _grouped(z, groups)
    centred = zg - zg.mean(-1, keepdim=True)
    return (delta + (centred * centred).sum(-1)) / zg.shape[-1], centred


def group_code(z: Tensor, groups: int, delta: float, p: float) -> Tensor:
    """``v_α = u_α^{1-p} - (1/c) Σ_α' u_α'^{1-p}`` (eq 14): what the grouped kernel compares (eq 15).

    Examples
    --------
    >>> import torch
    >>> group_code(torch.randn(5, 64), groups=8, delta=1.0, p=0.2).shape
    torch.Size([5, 8])
    """
    w = group_variance(z, groups, delta)[0] ** (1.0 - p)
    return w - w.mean(-1, keepdim=True)


def divisive_normalise(z: Tensor, groups: int, delta: float, p: float) -> Tensor:
    """``r_αn = z̃_αn / u_α^p`` (eq 17): what the next layer receives.

    With ``p = 1/2`` this is group normalisation with ``ε = δ / c_α``.
    """
    u, centred = group_variance(z, groups, delta)
    return (centred / (u**p).unsqueeze(-1)).reshape(z.shape)


# -- online grouped rules (eqs 18, 21, 22) -------------------------------------------------------


def group_code_derivative(z: Tensor, groups: int, delta: float, p: float) -> Tensor:
    """``∂w_α/∂z_αn = (2(1-p)/c_α) r_αn`` with ``w_α = u_α^{1-p}`` and ``r`` of eq 17.

    The postsynaptic factor of the grouped Hebbian rules (eqs 16–18, 21, 22):
    differentiating eq 13, ``∂u_α/∂z_αn = 2 z̃_αn / c_α`` (the centring term
    drops out because ``Σ_n z̃_αn = 0``), so ``∂w_α/∂z_αn = (1-p) u_α^{-p} 2 z̃_αn / c_α``.
    Only the own group's ``w_α`` depends on ``z_αn``; the centring over groups
    in eq 14 drops out of the kernel's gradient (``Σ_α (v_i - v_j)_α = 0``).

    Examples
    --------
    >>> import torch
    >>> group_code_derivative(torch.randn(3, 16), groups=4, delta=1.0, p=0.2).shape
    torch.Size([3, 16])
    """
    size = z.shape[-1] // groups
    return (2.0 * (1.0 - p) / size) * divisive_normalise(z, groups, delta, p)


def pair_third_factor(kz: Tensor, ky: Tensor | float, mean_kz: Tensor | float, mean_ky: Tensor | float,
                      gamma: float, sigma: float) -> Tensor:
    """``M_ij = -(γ k̊_y - 2 k̊_z) k_z / σ²`` (eq 12b): the third factor of the pair ``(i, j)`` for a Gaussian kernel.

    ``k̊ = k - μ`` with running means ``μ``. With it the gradient of
    :func:`pair_objective` through ``z_i`` of a Gaussian kernel is ``-M (z_i - z_j)``,
    which eq 20 writes with a running mean of activity in place of ``z_j``.
    """
    return (2.0 * (kz - mean_kz) - gamma * (ky - mean_ky)) * kz / sigma**2


def grouped_third_factor(
    kz: Tensor, ky: Tensor | float, mean_kz: Tensor | float, mean_ky: Tensor | float,
    v_i: Tensor, v_j: Tensor, gamma: float, sigma: float,
) -> Tensor:
    """``M_α,ij = -(γ k̊_y - 2 k̊_z) k_z (v_α,i - v_α,j) / σ²`` (eq 18), one per group.

    ``kz`` ``(...)`` is the Gaussian kernel of the group codes ``v_i``, ``v_j``
    ``(..., groups)``; ``k̊ = k - μ`` with running means ``μ``. With it the
    gradient of the two-point objective :func:`pair_objective` in ``W_αnm`` is
    ``-M_α,ij (e_αn,i h_m,i - e_αn,j h_m,j)``, with ``e = f'(a) ∘ ∂w/∂z``
    (:func:`group_code_derivative`) and ``h`` the layer's input.
    """
    return pair_third_factor(kz, ky, mean_kz, mean_ky, gamma, sigma).unsqueeze(-1) * (v_i - v_j)


def per_neuron(m: Tensor, size: int) -> Tensor:
    """Repeat a per-group quantity ``(..., groups)`` over the ``size`` neurons of each group: ``(..., groups·size)``."""
    return m.repeat_interleave(size, dim=-1)


# -- grouping over channels (convolutional activity) ----------------------------------------------


def channel_group_variance(z: Tensor, groups: int, delta: float, pooled: bool = False) -> tuple[Tensor, Tensor]:
    """Eq 13 for convolutional activity ``(..., C, H, W)``, groups of consecutive channels.

    ``pooled = False``: one variance per group and position, over the group's
    ``c_α`` channels, ``u_α(h, w) = (δ + Σ_n z̃_αn(h, w)²) / c_α`` — the MLP
    grouping (:func:`group_variance`) applied at every position.
    ``pooled = True``: one per group, over its channels and all positions,
    ``u_α = (δ + Σ_{n,h,w} z̃_αn(h, w)²) / (c_α H W)`` (``z̃`` centred over the
    same set); with ``p = 1/2`` the normalisation is then group normalisation.

    Returns
    -------
    (u, z̃) : ``(..., groups, H, W)`` (``(..., groups, 1, 1)`` pooled) and ``(..., groups, c_α, H, W)``.
    """
    c = z.shape[-3]
    if c % groups:
        raise ValueError(f"{c} channels cannot be split into {groups} equal groups")
    zg = z.reshape(*z.shape[:-3], groups, c // groups, *z.shape[-2:])
    dims = (-3, -2, -1) if pooled else (-3,)
    centred = zg - zg.mean(dims, keepdim=True)
    size = zg.shape[-3] * zg.shape[-2] * zg.shape[-1] if pooled else zg.shape[-3]
    u = (delta + (centred * centred).sum(dims, keepdim=True)) / size
    return u.squeeze(-3), centred


def channel_divisive_normalise(z: Tensor, groups: int, delta: float, p: float, pooled: bool = False) -> Tensor:
    """``r = z̃ / u^p`` (eq 17) over channel groups of ``(..., C, H, W)`` activity; same shape as ``z``.

    Examples
    --------
    >>> import torch
    >>> channel_divisive_normalise(torch.randn(2, 3, 8, 5, 5), groups=4, delta=1.0, p=0.2).shape
    torch.Size([2, 3, 8, 5, 5])
    """
    u, centred = channel_group_variance(z, groups, delta, pooled)
    return (centred / (u**p).unsqueeze(-3)).reshape(z.shape)


def channel_group_code(z: Tensor, groups: int, delta: float, p: float, pooled: bool = False) -> Tensor:
    """Eq 14 over channel groups, flattened to one vector per sample for the kernel (eq 15).

    ``v_α = u_α^{1-p}`` centred over groups (at each position unless
    ``pooled``): ``(..., groups · H · W)``, or ``(..., groups)`` pooled.
    """
    w = channel_group_variance(z, groups, delta, pooled)[0] ** (1.0 - p)
    return (w - w.mean(-3, keepdim=True)).flatten(-3)
