"""The ``features`` working memory: traces of random features against the closed form they compute."""
import pytest
import torch

import ibhebb
from ibhebb.config import load_config
from ibhebb.errors import ConfigError
from ibhebb.functional.kernels import centred_diagonal, kernel_matrix, kernel_row
from ibhebb.functional.signals import signal_from_kernels
from ibhebb.functional.traces import (
    cascade_response,
    fourier_features,
    fourier_frequencies,
    label_features,
    surprise,
    trace_signal,
    trace_weights,
    window_surprises,
)
from ibhebb.memory.features import FeatureMemory

D64 = torch.float64


def simulated_cascade(tau, stages, lags):
    lam = 1 - 1 / tau
    t, out, f = torch.zeros(stages, dtype=D64), torch.zeros(stages, lags, dtype=D64), 1.0
    for k in range(lags):
        prev = t.clone()
        t[0] = lam * prev[0] + (1 - lam) * f
        t[1:] = lam * prev[1:] + (1 - lam) * prev[:-1]
        out[:, k], f = t, 0.0
    return out


@pytest.mark.parametrize("tau", [1.5, 4.0, 30.0])
def test_cascade_response_is_the_cascade_of_leaky_integrators(tau):
    torch.testing.assert_close(cascade_response(tau, 3, 60), simulated_cascade(tau, 3, 60), rtol=1e-12, atol=1e-14)


def test_fitted_window_approaches_the_box():
    box = torch.zeros(400, dtype=D64)
    box[:7] = 1 / 8
    corr = [float(w @ box / (w.norm() * box.norm())) for w in (trace_weights(8, 400, stages=s) for s in (1, 2, 3))]
    assert 0.89 < corr[0] < corr[1] < corr[2]


def test_label_features_are_exact():
    y = torch.eye(5, dtype=D64)[torch.tensor([0, 3, 3, 1])]
    phi = label_features(y, 0.25)
    torch.testing.assert_close(phi @ phi.T, kernel_matrix(y, 0.25), rtol=1e-12, atol=1e-14)


def test_fourier_features_approximate_the_gaussian_kernel():
    g = torch.Generator().manual_seed(1)
    v = torch.rand(6, 10, generator=g, dtype=D64)
    errs = []
    for D in (16, 256, 16384):
        phi = fourier_features(v, fourier_frequencies(10, D, 0.5, g))
        errs.append(float((phi @ phi.T - kernel_matrix(v, 0.5)).abs().max()))
    assert errs[2] < 0.03 and errs[2] < errs[1] < errs[0]


def test_closed_form_with_the_box_and_exact_kernels_is_the_buffer_signal():
    g = torch.Generator().manual_seed(2)
    N, sig, gamma = 6, (0.5, 0.3, 1.0), 2.0
    x, z = torch.rand(N, 7, generator=g, dtype=D64), torch.rand(3, N, 4, generator=g, dtype=D64)
    y = torch.eye(3, dtype=D64)[torch.tensor([0, 1, 1, 2, 0, 1])]
    Kx, Ky = kernel_matrix(x, sig[0]), kernel_matrix(y, sig[1])
    s = centred_diagonal(Kx) - gamma * centred_diagonal(Ky)
    w = torch.full((N - 1,), 1 / N, dtype=D64)
    past = lambda v: v[..., :-1, :].flip(-2)  # noqa: E731  most recent first
    kz0 = kernel_row(past(z), z[:, -1:], sig[2])
    for variant in ("first-term", "paper"):
        mine = trace_signal(kz0, z[:, -1], past(z), s[-1], s[:-1].flip(0), w, window=N, sigma_z=sig[2], variant=variant)
        ref = signal_from_kernels(Kx, Ky, z, gamma=gamma, sigma_z=sig[2], variant=variant)
        torch.testing.assert_close(mine, ref, rtol=1e-12, atol=1e-15)
    # the surprise on arrival, with the box, is that of each sample's own window
    ws = window_surprises(Kx, Ky, w, window=N, gamma=gamma)
    assert float((ws[-1] - s[-1]).abs()) < 1e-14


@pytest.mark.parametrize("variant,stages", [("paper", 2), ("first-term", 1), ("paper", 3)])
def test_memory_computes_its_closed_form(variant, stages):
    """float64: the traces updated online equal the closed form over the whole stream with the same feature kernels."""
    g = torch.Generator().manual_seed(3)
    N, sig, gamma, T, R = 5, (0.5, 0.2, 1.5), 2.0, 25, 2
    mem = FeatureMemory(N, sigmas=sig, gamma=gamma, features=12, stages=stages, seed=4)
    x = torch.rand(T, 6, generator=g, dtype=D64)
    y = torch.eye(3, dtype=D64)[torch.randint(0, 3, (T,), generator=g)]
    zs = [torch.rand(R, T, 4, generator=g, dtype=D64), torch.rand(R, T, 2, generator=g, dtype=D64)]
    checked = 0
    for t in range(T):
        cur = [z[:, t : t + 1] for z in zs]
        if mem.ready:
            xis = mem.signals(None, x[t : t + 1], y[t : t + 1], cur, gamma=gamma, sigmas=sig, variant=variant)[0]
            px = fourier_features(x[: t + 1], mem.omega[0])
            py = label_features(y[: t + 1], sig[1])
            w = trace_weights(N, T, stages=stages)
            s = window_surprises(px @ px.T, py @ py.T, w, window=N, gamma=gamma)
            for l, z in enumerate(zs):
                pz = fourier_features(z[:, : t + 1], mem.omega[1 + l])
                kz0 = (pz[:, :-1] @ pz[:, -1:].transpose(-1, -2))[..., 0].flip(-1)
                ref = trace_signal(kz0, z[:, t], z[:, :t].flip(-2), s[t], s[:t].flip(0), w[:t], window=N,
                                   sigma_z=sig[2], variant=variant)
                torch.testing.assert_close(xis[l], ref, rtol=1e-10, atol=1e-14)
            checked += 1
        mem.push(x[t : t + 1], y[t : t + 1], cur)
    assert checked == T - (N - 1)


def _exp_window_corr(features):
    """Correlation of the memory's ξ with the closed form on exact kernels (the D → ∞ limit), on fresh samples."""
    g = torch.Generator().manual_seed(5)
    N, sig, gamma, T = 8, (0.5, 0.5, 0.5), 2.0, 60
    x = torch.rand(T, 30, generator=g, dtype=D64)
    y = torch.eye(10, dtype=D64)[torch.randint(0, 10, (T,), generator=g)]
    z = torch.rand(1, T, 10, generator=g, dtype=D64)
    mem = FeatureMemory(N, sigmas=sig, gamma=gamma, features=features, stages=2, seed=features)
    w = trace_weights(N, T, stages=2)
    s = window_surprises(kernel_matrix(x, sig[0]), kernel_matrix(y, sig[1]), w, window=N, gamma=gamma)
    a, b = [], []
    for t in range(T):
        if t >= 20:
            a.append(mem.signals(None, x[t : t + 1], y[t : t + 1], [z[:, t : t + 1]], gamma=gamma, sigmas=sig,
                                 variant="paper")[0][0].flatten())
            kz0 = kernel_row(z[:, :t], z[:, t : t + 1], sig[2]).flip(-1)
            b.append(trace_signal(kz0, z[:, t], z[:, :t].flip(-2), s[t], s[:t].flip(0), w[:t], window=N,
                                  sigma_z=sig[2], variant="paper").flatten())
        mem.push(x[t : t + 1], y[t : t + 1], [z[:, t : t + 1]])
    return float(torch.corrcoef(torch.stack([torch.cat(a), torch.cat(b)]))[0, 1])


def test_more_features_track_the_exact_kernels_closer():
    small, large = _exp_window_corr(8), _exp_window_corr(4096)
    assert large > 0.97 and large > small


def test_surprise_is_one_minus_the_kernel_means():
    s = surprise(torch.tensor([0.5]), torch.tensor([0.25]), window=4, gamma=2.0)
    assert float(s) == pytest.approx((1 - 0.25 - 0.5) - 2 * (1 - 0.25 - 0.25))


def test_config_keys_are_checked():
    base = {"rule": {"memory": "features"}, "data": {"name": "xor"}, "model": {"hidden": [4]}}
    load_config(None, base)
    for bad, msg in ((("variant", "exact"), "rule.variant"), (("features", 7), "rule.features"),
                     (("trace_stages", 5), "rule.trace_stages"), (("trace_tau", 0.5), "rule.trace_tau")):
        with pytest.raises(ConfigError, match=msg):
            load_config(None, {**base, "rule": {"memory": "features", bad[0]: bad[1]}})


def test_rule_learns_and_reports_its_correlation_with_the_buffer():
    torch.manual_seed(0)
    model = ibhebb.MLP(6, [8, 5], 3, seed=0)
    rc = ibhebb.RuleConfig(window=6, memory="features", features=512, memory_check=True, sigmas=[0.5, 0.2, 1.0])
    rule = ibhebb.make_rule("biohsic", model, rc)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    g = torch.Generator().manual_seed(1)
    n = 0
    for t in range(200):
        for _ in rule.updates(torch.rand(1, 6, generator=g), torch.randint(0, 3, (1,), generator=g)):
            n += 1
            assert all(p.grad is not None for p in model.parameters())
            opt.zero_grad()
    assert n == 200 - 5
    corr = rule.memory.diagnostics()["xi_correlation"]
    assert len(corr) == 2 and min(corr) > 0.6


def test_memory_state_round_trips_through_a_state_dict():
    g = torch.Generator().manual_seed(6)
    kw = dict(sigmas=(0.5, 0.2, 1.0), gamma=2.0, features=16, stages=2)
    a, b = FeatureMemory(3, **kw), FeatureMemory(3, **kw)
    for _ in range(4):
        a.push(torch.rand(1, 5, generator=g), torch.eye(3)[:1], [torch.rand(2, 1, 4, generator=g)])
    b.load_state_dict(a.state_dict())
    x, y, z = torch.rand(1, 5, generator=g), torch.eye(3)[1:2], [torch.rand(2, 1, 4, generator=g)]
    args = dict(gamma=2.0, sigmas=kw["sigmas"], variant="paper")
    assert b.ready and torch.equal(a.signals(None, x, y, z, **args)[0][0], b.signals(None, x, y, z, **args)[0][0])


def test_orthogonal_frequencies_estimate_the_kernel_as_independent_ones_with_less_variance(one_thread):
    """Both draws give φ(a)·φ(b) ≈ k(a, b) without bias (every column has the law N(0, I/(σ²d))); the orthogonal
    one, blocks of d mutually orthogonal columns, with a smaller spread over draws at the same D."""
    import math

    from ibhebb.functional.traces import fourier_features, fourier_frequencies

    d, D, sigma = 16, 48, 0.8  # D/2 = 24 columns: one full block of 16 and a block of 8
    om = fourier_frequencies(d, D, sigma, torch.Generator().manual_seed(0))
    for block in (om[:, :16], om[:, 16:]):
        gram = block.T @ block
        assert (gram - torch.diag(gram.diagonal())).abs().max() < 1e-12
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(1, d, generator=g, dtype=torch.float64), torch.randn(1, d, generator=g, dtype=torch.float64)
    b = a + 0.6 * (b - a)
    k = math.exp(-float((a - b).square().sum()) / (2 * sigma**2 * d))
    est = {}
    for draw in ("orthogonal", "independent"):
        gen = torch.Generator().manual_seed(2)
        est[draw] = torch.tensor([float(fourier_features(a, om) @ fourier_features(b, om).T)
                                  for om in (fourier_frequencies(d, D, sigma, gen, draw=draw) for _ in range(400))])
        assert abs(float(est[draw].mean()) - k) < 4 * float(est[draw].std()) / math.sqrt(400)
    assert float(est["orthogonal"].var()) < 0.8 * float(est["independent"].var())
    lengths = torch.cat([fourier_frequencies(d, D, sigma, torch.Generator().manual_seed(s)) for s in range(50)], 1)
    assert abs(float(lengths.square().sum(0).mean()) * sigma**2 - 1.0) < 0.05  # E‖ω‖² = 1/σ², as for N(0, I/(σ²d))
