"""ξ from leaky traces of random features: the maths of the ``features`` working memory.

Every sum over the window in ξ (MATH §3) is a sum of kernel values times
simple functions of the past samples. With a feature map ``φ`` such that
``k(a, b) ≈ φ(a)·φ(b)`` those sums become readouts of traces of the past:

- inputs: ``φ_x(x) = [cos(Ω_x x), sin(Ω_x x)] / √M`` (random Fourier features,
  Rahimi & Recht 2007; ``Ω_x`` has ``M = D/2`` rows ``~ N(0, I/(σ_x² d_x))``,
  so ``E[φ(a)·φ(b)] = k_x(a, b)`` and its variance falls as ``1/D``);
- labels: one-hot ``y`` has the exact map ``φ_y(y) = [√e, √(1-e) y]``,
  ``e = exp(-1/(σ_y² C))``, since ``k_y`` takes only two values;
- outputs: random Fourier features ``φ_z`` of ``z^ℓ`` as for ``x``.

The hard window (the past ``N - 1`` samples, each weighted ``1/N``) becomes a
fixed weighting ``w_k`` of the sample ``k`` steps back, ``k = 1, 2, …``: the
impulse response of ``S`` leaky integrators in a cascade (:func:`trace_weights`),
their coefficients fitted once, from ``N`` alone, to the box ``1/N`` on
``k < N``. With ``w`` the *exponential-window* signal is

``m_v(a) = 1/N + Σ_k w_k k_v(a, v_{-k})``,   ``s_t = (1 - m_x(x_t)) - γ (1 - m_y(y_t))``

(the surprise of sample ``t`` on arrival, against its own past), and, with
``c = 2 / (σ_z² d_z)``,

``ξ = (1/(N-1)²) c Σ_k w_k k_z(z_0, z_{-k}) (z_0 - z_{-k}) (s_0 + s_{-k})``    (``paper``)

``ξ = (1/(N-1)²) c s_0 Σ_k w_k k_z(z_0, z_{-k}) (z_0 - z_{-k})``              (``first-term``)

With the box weights ``w_k = 1/N`` (``k < N``) and exact kernels, the
``first-term`` signal is exactly that of a buffer; the ``paper`` one differs
only in that each past ``s_{-k}`` is its surprise on arrival, not against
today's window (a trace holds what the sample was, not what it would be now).

In traces (what a :class:`~ibhebb.memory.features.FeatureMemory` holds, ``S`` of each): ``t_x = Σ_k w_k φ_x(x_{-k})``,
``t_y`` likewise, and per layer the fast-weight matrix ``F = Σ_k w_k φ_z(z_{-k}) u_{-k}ᵀ`` with
``u = [1, z, s, s z]`` (a Hebbian outer product of feature neurons and the sample). Then
``φ_z(z_0)ᵀ F = [m', Σ w k z, m'_s, Σ w k s z]`` and ξ is a few products of it with ``z_0`` and ``s_0``
(:func:`trace_readout`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .signals import check_window

TRACE_VARIANTS = ("paper", "first-term")
"""The ξ variants a trace memory computes (``exact`` needs every pair of past samples: no trace holds it)."""


def cascade_response(tau, stages: int, lags: int, *, dtype=torch.float64) -> Tensor:
    """Impulse responses ``(..., stages, lags)`` of a cascade of leaky integrators at lags ``k = 1 … lags``.

    Stage 1 is ``t ← λ t + (1-λ) f`` (``λ = 1 - 1/τ``), stage ``j`` integrates stage ``j-1`` the same way,
    each from the values before the step, so a sample reaches stage ``j`` after ``j`` steps:
    ``g_j(k) = C(k-1, j-1) (1-λ)^j λ^(k-j)`` for ``k >= j``. ``tau`` is a number or a tensor of them.
    """
    tau = torch.as_tensor(tau, dtype=dtype).reshape(*torch.as_tensor(tau).shape, 1, 1)
    lam = 1.0 - 1.0 / tau
    k = torch.arange(1, lags + 1, dtype=dtype)
    j = torch.arange(1, stages + 1, dtype=dtype).unsqueeze(-1)
    n = (k - j).clamp_min(0)
    log_binom = torch.lgamma(k) - torch.lgamma(j) - torch.lgamma(n + 1)
    g = torch.exp(log_binom + j * torch.log1p(-lam) + n * torch.log(lam))
    return torch.where(k >= j, g, torch.zeros((), dtype=dtype))


def _box_fit(window: int, taus: Tensor, stages: int) -> tuple[Tensor, Tensor]:
    """Least-squares coefficients ``(T, S)`` of the cascades of ``taus`` ``(T,)`` to the box, and their correlation with it."""
    lags = int(30 * max(window, float(taus.max())))
    box = torch.zeros(lags, dtype=torch.float64)
    box[: window - 1] = 1.0 / window
    g = cascade_response(taus, stages, lags)  # (T, S, L)
    gram = g @ g.transpose(-1, -2) + 1e-12 * torch.eye(stages, dtype=torch.float64)
    c = torch.linalg.solve(gram, g @ box)
    c = c * ((window - 1) / window) / c.sum(-1, keepdim=True)  # the box's mass exactly: each stage's response sums to 1
    w = (c.unsqueeze(-1) * g).sum(-2)
    return c, (w @ box) / (w.norm(dim=-1) * box.norm()).clamp_min(1e-300)


def fit_trace_window(window: int, stages: int) -> tuple[float, Tensor]:
    """``(τ, c)``: the cascade whose weighting ``Σ_j c_j g_j(k)`` best matches the box ``1/N`` on ``k < N``.

    ``τ`` is searched on a grid (largest correlation with the box), ``c`` by least squares, then scaled so that
    ``Σ_k w_k = (N-1)/N`` as for the box (the surprise is a small difference of kernel means: a window of
    another mass shifts it); both depend on ``N`` and ``S`` only, never on data.
    """
    check_window(window)
    taus = torch.linspace(1.05, 3.0 * window, 200, dtype=torch.float64)
    c, r = _box_fit(window, taus, stages)
    i = int(r.argmax())
    return float(taus[i]), c[i]


def trace_coefficients(window: int, *, tau: float = 0.0, stages: int = 1) -> tuple[float, Tensor]:
    """``(τ, c)`` of the cascade a trace memory uses: ``tau = 0`` fits both (:func:`fit_trace_window`), a given ``τ``
    gets its least-squares ``c``."""
    if tau <= 0:
        return fit_trace_window(window, stages)
    return float(tau), _box_fit(window, torch.tensor([float(tau)], dtype=torch.float64), stages)[0][0]


def trace_weights(window: int, lags: int, *, tau: float = 0.0, stages: int = 1) -> Tensor:
    """``w_k`` ``(lags,)`` for ``k = 1 … lags``: the weight of the sample ``k`` steps back.

    Examples
    --------
    >>> from ibhebb.functional.traces import trace_weights
    >>> w = trace_weights(8, 400)
    >>> round(float(w.sum()), 3)       # the (N - 1)/N of the box
    0.875
    """
    tau, c = trace_coefficients(window, tau=tau, stages=stages)
    return (c.unsqueeze(-1) * cascade_response(tau, stages, lags)).sum(-2)


FEATURE_DRAWS = ("orthogonal", "independent")
"""How :func:`fourier_frequencies` draws ``Ω``."""


def fourier_frequencies(d: int, features: int, sigma: float, generator: torch.Generator, *,
                        draw: str = "orthogonal", dtype=torch.float64) -> Tensor:
    """``Ω`` ``(d, D/2)``, each column ``ω ~ N(0, I/(σ² d))``: random Fourier features of ``k(a,b) = exp(-‖a-b‖²/(2σ²d))``.

    ``draw = "independent"``: every entry independent (Rahimi & Recht). ``draw = "orthogonal"``: the columns
    come in blocks of ``d`` that are orthogonal to each other, ``ω_m = ‖g_m‖ q_m / (σ√d)`` with ``q_m`` the
    columns of a Haar-random orthogonal matrix and ``‖g_m‖ ~ χ_d`` independent lengths (Yu et al. 2016,
    orthogonal random features). Each column has the same Gaussian law either way, so ``φ(a)·φ(b)`` is an
    unbiased estimate of ``k`` either way; orthogonal columns give it a smaller variance at the same ``D``.

    Examples
    --------
    >>> import torch
    >>> from ibhebb.functional.traces import fourier_frequencies
    >>> om = fourier_frequencies(3, 6, 1.0, torch.Generator().manual_seed(0))   # one block of 3 columns
    >>> gram = om.T @ om
    >>> bool((gram - torch.diag(gram.diagonal())).abs().max() < 1e-12)
    True
    """
    if features < 2 or features % 2:
        raise ValueError(f"the number of random features must be even and >= 2, got {features}")
    if draw not in FEATURE_DRAWS:
        raise ValueError(f"draw must be one of {FEATURE_DRAWS}, got {draw!r}")
    m = features // 2
    if draw == "independent":
        return torch.randn(d, m, generator=generator, dtype=dtype) / (sigma * math.sqrt(d))
    blocks = []
    while m > 0:
        q, r = torch.linalg.qr(torch.randn(d, d, generator=generator, dtype=dtype))
        q = q * torch.sign(r.diagonal())  # Haar: without the signs QR's convention biases the directions
        k = min(d, m)
        lengths = torch.randn(d, k, generator=generator, dtype=dtype).norm(dim=0)
        blocks.append(q[:, :k] * lengths)
        m -= k
    return torch.cat(blocks, 1) / (sigma * math.sqrt(d))


def fourier_features(v: Tensor, omega: Tensor) -> Tensor:
    """``φ(v) = [cos(v Ω), sin(v Ω)] / √M`` ``(..., 2M)``, so ``φ(a)·φ(b) = (1/M) Σ_m cos(ω_m·(a - b))``.

    Examples
    --------
    >>> import math, torch
    >>> from ibhebb.functional.traces import fourier_features, fourier_frequencies
    >>> om = fourier_frequencies(4, 20000, 1.0, torch.Generator().manual_seed(0))
    >>> a, b = torch.zeros(1, 4, dtype=torch.float64), torch.ones(1, 4, dtype=torch.float64)
    >>> k = float(fourier_features(a, om) @ fourier_features(b, om).T)
    >>> abs(k - math.exp(-4 / 8)) < 0.02          # the Gaussian kernel, to O(1/sqrt(D))
    True
    """
    p = v @ omega
    return torch.cat([p.cos(), p.sin()], -1) / math.sqrt(omega.shape[-1])


def label_features(y: Tensor, sigma_y: float) -> Tensor:
    """The exact feature map of the label kernel of one-hot ``y`` ``(..., C)``: ``[√e, √(1-e) y]``, ``e = exp(-1/(σ_y² C))``."""
    e = math.exp(-1.0 / (sigma_y**2 * y.shape[-1]))
    return torch.cat([torch.full_like(y[..., :1], math.sqrt(e)), math.sqrt(1.0 - e) * y], -1)


def surprise(kx_mean: Tensor, ky_mean: Tensor, *, window: int, gamma: float) -> Tensor:
    """``s = (1 - m_x) - γ (1 - m_y)`` with ``m = 1/N + Σ_k w_k k(·, v_{-k})``; ``k*_mean`` are the sums over the past."""
    return (1.0 - 1.0 / window - kx_mean) - gamma * (1.0 - 1.0 / window - ky_mean)


def trace_readout(r: Tensor, z0: Tensor, s0: Tensor, *, window: int, sigma_z: float, variant: str) -> Tensor:
    """ξ ``(..., d)`` from the fast-weight readout ``r = φ_z(z_0)ᵀ F`` ``(..., 2d + 2)``, ``z_0`` ``(..., d)``, ``s_0``.

    ``r = [Σ w k, Σ w k z, Σ w k s, Σ w k s z]`` (module docstring).
    """
    if variant not in TRACE_VARIANTS:
        raise ValueError(f"a trace memory computes the ξ variants {', '.join(TRACE_VARIANTS)}, not {variant!r}")
    d = z0.shape[-1]
    c = 2.0 / (sigma_z**2 * d) / (window - 1) ** 2
    m, kz, ms, skz = r[..., :1], r[..., 1 : d + 1], r[..., d + 1 : d + 2], r[..., d + 2 :]
    xi = s0 * (z0 * m - kz)
    if variant == "paper":
        xi = xi + (z0 * ms - skz)
    return c * xi


def cascade_push_(t: Tensor, f: Tensor, lam: float) -> None:
    """One step of ``S`` leaky integrators in a cascade, in place: ``t_1 ← λ t_1 + (1-λ) f``, ``t_j ← λ t_j + (1-λ) t_{j-1}``.

    ``t`` ``(S, ...)`` holds the stages, ``f`` ``(...)`` the new input; every stage reads the values before the step,
    so a sample reaches stage ``j`` after ``j`` steps (:func:`cascade_response`).

    Examples
    --------
    >>> import torch
    >>> from ibhebb.functional.traces import cascade_push_
    >>> t = torch.zeros(2, 1, dtype=torch.float64)
    >>> cascade_push_(t, torch.ones(1, dtype=torch.float64), 0.5); cascade_push_(t, torch.zeros(1, dtype=torch.float64), 0.5)
    >>> t.flatten().tolist()            # g_1(2) = (1-λ) λ, g_2(2) = (1-λ)²
    [0.25, 0.25]
    """
    prev = t[:-1].clone()
    t.mul_(lam)
    t[1:].add_(prev, alpha=1 - lam)
    t[0].add_(f, alpha=1 - lam)


def trace_inputs(z: Tensor, s: Tensor) -> Tensor:
    """``u = [1, z, s, s z]`` ``(..., 2d + 2)``: what a fast-weight matrix stores of a sample with surprise ``s`` ``(..., 1)``."""
    one = torch.ones_like(z[..., :1])
    s = s.expand_as(one)
    return torch.cat([one, z, s, s * z], -1)



def fast_weight_increment(z: Tensor, omega: Tensor, s: Tensor) -> Tensor:
    """``φ_z(z) uᵀ`` ``(..., D, 2d + 2)``: the Hebbian outer product a sample with outputs ``z`` ``(..., 1, d)`` and
    surprise ``s`` (a scalar tensor) adds to a fast-weight matrix (:func:`trace_inputs` gives ``u``)."""
    return fourier_features(z, omega).transpose(-1, -2) @ trace_inputs(z, s.view(1, 1, 1))


def readout_scale(mass: Tensor, window: int) -> Tensor:
    """``((N-1)/N) / mass``, 0 while the trace of the constant is empty (``mass = 0``): what every readout of the
    traces is multiplied by, so that the window has the box's mass also while the memory fills."""
    positive = mass > 0
    return torch.where(positive, ((window - 1) / window) / torch.where(positive, mass, torch.ones_like(mass)),
                       torch.zeros_like(mass))


def seen_weights(w: Tensor, window: int) -> Tensor:
    """The weights ``w`` ``(..., L)`` of the past actually seen, rescaled to the box's mass ``(N-1)/N`` (0 if none).

    What a trace memory reads while it fills: each trace divided by the trace of a constant.
    """
    mass = w.sum(-1, keepdim=True)
    return torch.where(mass > 0, w * ((window - 1) / window) / torch.where(mass > 0, mass, torch.ones_like(mass)),
                       torch.zeros_like(w))


def window_surprises(Kx: Tensor, Ky: Tensor, w: Tensor, *, window: int, gamma: float) -> Tensor:
    """The surprise on arrival ``s_t`` ``(T,)`` of every sample of a stream, from its kernel matrices ``(T, T)``.

    Closed form of what the traces compute: ``Σ_k w_k k(v_t, v_{t-k})`` over the stream's own past, with the
    weights of the lags seen rescaled to the mass ``(N-1)/N`` (:func:`seen_weights`).
    """
    T = Kx.shape[-1]
    lag = torch.arange(T).unsqueeze(1) - torch.arange(T).unsqueeze(0)  # t - t'
    W = torch.where(lag >= 1, w[(lag - 1).clamp(0, len(w) - 1)], torch.zeros((), dtype=w.dtype))
    W = seen_weights(torch.where(lag > len(w), torch.zeros((), dtype=w.dtype), W), window)
    return surprise((W * Kx).sum(-1), (W * Ky).sum(-1), window=window, gamma=gamma)


def trace_signal(kz0: Tensor, z0: Tensor, z_past: Tensor, s0: Tensor, s_past: Tensor, w: Tensor, *, window: int,
                 sigma_z: float, variant: str) -> Tensor:
    """The exponential-window ξ ``(..., d)`` in closed form (module docstring), for a reference.

    ``kz0`` ``(..., L)``: ``k_z(z_0, z_{-k})``; ``z_past`` ``(..., L, d)`` and ``s_past`` ``(L,)`` the samples
    ``k = 1 … L`` steps back (most recent first); ``s0`` the current surprise; ``w`` ``(L,)`` the weights
    (rescaled to the mass ``(N-1)/N``, :func:`seen_weights`, as the memory reads them while it fills).
    """
    if variant not in TRACE_VARIANTS:
        raise ValueError(f"a trace memory computes the ξ variants {', '.join(TRACE_VARIANTS)}, not {variant!r}")
    d = z0.shape[-1]
    c = 2.0 / (sigma_z**2 * d) / (window - 1) ** 2
    coef = seen_weights(w, window) * kz0 * (s0 + (s_past if variant == "paper" else 0.0))
    return c * (coef.unsqueeze(-1) * (z0.unsqueeze(-2) - z_past)).sum(-2)
