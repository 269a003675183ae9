"""pHSIC (seed 001): kernels, grouping, and the rules' updates against autograd of their objectives (float64)."""
import pytest
import torch

from ibhebb.config import RuleConfig
from ibhebb.functional.phsic import divisive_normalise, group_code, label_kernel_matrix, phsic_objective
from ibhebb.models.phsic_mlp import PHSICMLP, Grouping
from ibhebb.rules import make_rule
from streaming import stream_on_blobs

GAMMA, SIGMA, N_CLASSES = 2.0, 1.5, 3


def make(kernel="gaussian", grouped=False, form="batch", slope=0.1, seed=0, hidden=(8, 8), groups=4, p=0.2):
    torch.manual_seed(seed)
    model = PHSICMLP(
        5, list(hidden), N_CLASSES, replicas=2, seed=seed, negative_slope=slope, dropout=0.0,
        grouping=Grouping(groups, 0.7, p), divisive_norm=grouped,
    ).double()
    cfg = RuleConfig(name="phsic", kernel=kernel, grouped=grouped, form=form, gamma=GAMMA, sigmas=[1.0, 1.0, SIGMA])
    return model, make_rule("phsic", model, cfg)


# -- independent, written-out versions of the equations --------------------------------------


def hand_code(z, groups, delta, p):
    """Eqs 13–14 with explicit loops over groups."""
    size = z.shape[-1] // groups
    us = []
    for a in range(groups):
        g = z[..., a * size : (a + 1) * size]
        c = g - g.mean(-1, keepdim=True)
        us.append((delta + (c**2).sum(-1)) / size)
    u = torch.stack(us, -1) ** (1 - p)
    return u - u.mean(-1, keepdim=True)


def hand_kernel(a, kernel):
    if kernel == "gaussian":
        diff = a.unsqueeze(-2) - a.unsqueeze(-3)
        return torch.exp(-(diff**2).sum(-1) / (2 * SIGMA**2))
    n = a / a.norm(dim=-1, keepdim=True)
    return n @ n.transpose(-1, -2)


def hand_objective(Kz, Ky):
    """Eq 8 and eq 7: pHSIC(Z,Z) = E k² - (E k)², pHSIC(Y,Z) = E[k_y k_z] - E k_y E k_z."""
    zz = (Kz**2).mean((-1, -2)) - Kz.mean((-1, -2)) ** 2
    yz = (Ky * Kz).mean((-1, -2)) - Ky.mean() * Kz.mean((-1, -2))
    return zz - GAMMA * yz


def data(seed=1, n=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randint(0, N_CLASSES, (n,), generator=g)


# -- kernels and grouping ---------------------------------------------------------------------


def test_label_kernel_is_the_binary_same_or_different_signal():
    y = torch.tensor([0, 1, 1, 2])
    K = label_kernel_matrix(y, 4, torch.float64)
    same = y.unsqueeze(0) == y.unsqueeze(1)
    assert torch.allclose(K[same], torch.ones_like(K[same]))
    assert torch.allclose(K[~same], torch.full_like(K[~same], -1 / 3))


def test_group_code_matches_the_written_out_equations():
    z = torch.randn(2, 4, 12, dtype=torch.float64)
    assert torch.allclose(group_code(z, 3, 0.7, 0.2), hand_code(z, 3, 0.7, 0.2), atol=1e-12)


def test_divisive_normalisation_with_p_half_is_group_norm():
    """Seed 001: p = 1/2 is group normalisation (with ε = δ / c_α)."""
    z = torch.randn(6, 32, dtype=torch.float64)
    ours = divisive_normalise(z, groups=4, delta=0.8, p=0.5)
    ref = torch.nn.functional.group_norm(z.unsqueeze(-1), 4, eps=0.8 / 8).squeeze(-1)
    assert torch.allclose(ours, ref, atol=1e-10)


def test_divisive_normalisation_with_p_zero_only_centres_each_group():
    z = torch.randn(6, 32, dtype=torch.float64)
    g = z.reshape(6, 4, 8)
    assert torch.allclose(divisive_normalise(z, 4, 1.0, 0.0), (g - g.mean(-1, keepdim=True)).reshape(6, 32))


def test_grouping_one_neuron_per_group_leaves_nothing_to_compare():
    """c = number of neurons: eq 13 centres each group of one to zero, so u = δ and the code v vanishes
    (the grouped kernel is then constant; grouping does NOT reduce to the plain kernel)."""
    z = torch.randn(5, 8, dtype=torch.float64)
    assert torch.allclose(group_code(z, 8, 1.0, 0.0), torch.zeros(5, 8, dtype=torch.float64))


# -- the batch rule (eq 10) -------------------------------------------------------------------


@pytest.mark.parametrize("kernel", ["gaussian", "cossim"])
@pytest.mark.parametrize("grouped", [False, True])
def test_batch_rule_is_autograd_of_each_layer_objective(kernel, grouped):
    model, rule = make(kernel, grouped)
    x, y = data()
    assert list(rule.updates(x, y)) == [None]
    Ky = label_kernel_matrix(y, N_CLASSES, torch.float64)
    h = x
    for layer in model.hidden:
        w = layer.weight.detach().clone().requires_grad_(True)
        z = torch.nn.functional.leaky_relu(torch.matmul(h, w.transpose(-1, -2)), 0.1)
        code = hand_code(z, 4, 0.7, 0.2) if grouped else z
        loss = hand_objective(hand_kernel(code, kernel), Ky).sum()
        (expected,) = torch.autograd.grad(loss, w)
        assert torch.allclose(layer.weight.grad, expected, rtol=1e-9, atol=1e-12)
        assert expected.abs().max() > 1e-6
        with torch.no_grad():
            zz = torch.nn.functional.leaky_relu(torch.matmul(h, layer.weight.transpose(-1, -2)), 0.1)
            h = divisive_normalise(zz, 4, 0.7, 0.2) if grouped else zz
    w = model.readout.weight.detach().clone().requires_grad_(True)
    logits = torch.bmm(h, w.transpose(-1, -2))
    ce = sum(torch.nn.functional.cross_entropy(logits[r], y) for r in range(2))
    assert torch.allclose(model.readout.weight.grad, torch.autograd.grad(ce, w)[0], atol=1e-12)


def test_library_objective_matches_written_out_phsic():
    Kz = torch.rand(3, 6, 6, dtype=torch.float64)
    Kz = (Kz + Kz.transpose(-1, -2)) / 2
    Ky = label_kernel_matrix(torch.tensor([0, 1, 2, 0, 1, 1]), 3, torch.float64)
    assert torch.allclose(phsic_objective(Kz, Ky, GAMMA), hand_objective(Kz, Ky), atol=1e-13)


# -- the online rules (eqs 18–20) -------------------------------------------------------------


@pytest.mark.parametrize("kernel,grouped", [("gaussian", False), ("cossim", False), ("gaussian", True)])
def test_pair_rule_is_autograd_of_the_two_point_objective(kernel, grouped):
    model, rule = make(kernel, grouped, form="pair")
    x, y = data(n=2)
    y = torch.tensor([0, 1])
    assert list(rule.updates(x[:1], y[:1])) == []  # the first sample only primes the memory
    assert all(p.grad is None for p in model.parameters())
    assert list(rule.updates(x[1:], y[1:])) == [None]
    ky = -1 / (N_CLASSES - 1)  # different labels; the running means are still 0
    h = x  # both samples, layer by layer, through the network as it is
    for layer in model.hidden:
        w = layer.weight.detach().clone().requires_grad_(True)
        z = torch.nn.functional.leaky_relu(torch.matmul(h, w.transpose(-1, -2)), 0.1)
        code = hand_code(z, 4, 0.7, 0.2) if grouped else z
        kz = hand_kernel(code, kernel)[..., 1, 0]  # k(z_t, z_{t-1})
        (expected,) = torch.autograd.grad((kz**2 - GAMMA * ky * kz).sum(), w)
        assert torch.allclose(layer.weight.grad, expected, rtol=1e-9, atol=1e-12)
        assert expected.abs().max() > 1e-8
        with torch.no_grad():
            zz = torch.nn.functional.leaky_relu(torch.matmul(h, layer.weight.transpose(-1, -2)), 0.1)
            h = divisive_normalise(zz, 4, 0.7, 0.2) if grouped else zz


MEAN_KZ, MEAN_KY = torch.tensor([0.35, -0.2], dtype=torch.float64), 0.15  # per replica; one for the labels


@pytest.mark.parametrize("kernel,grouped", [("gaussian", False), ("cossim", False), ("gaussian", True)])
def test_pair_rule_with_nonzero_running_means_is_autograd_of_the_centred_objective(kernel, grouped):
    """ℓ = (k_z - μ_z)² - γ (k_y - μ_y) k_z with the running means μ held fixed, written out here."""
    model, rule = make(kernel, grouped, form="pair")
    x, _ = data(n=2)
    y = torch.tensor([2, 2])  # equal labels: k_y = 1
    list(rule.updates(x[:1], y[:1]))
    rule.mean_kz = [MEAN_KZ.clone() for _ in model.hidden]
    rule.mean_ky = MEAN_KY
    assert list(rule.updates(x[1:], y[1:])) == [None]
    h = x
    for i, layer in enumerate(model.hidden):
        w = layer.weight.detach().clone().requires_grad_(True)
        z = torch.nn.functional.leaky_relu(torch.matmul(h, w.transpose(-1, -2)), 0.1)
        code = hand_code(z, 4, 0.7, 0.2) if grouped else z
        kz = hand_kernel(code, kernel)[..., 1, 0]
        (expected,) = torch.autograd.grad(((kz - MEAN_KZ) ** 2 - GAMMA * (1.0 - MEAN_KY) * kz).sum(), w)
        torch.testing.assert_close(layer.weight.grad, expected, rtol=1e-9, atol=1e-12)
        with torch.no_grad():  # the rule then moves its running mean towards this pair's kernel
            torch.testing.assert_close(rule.mean_kz[i], MEAN_KZ + rule.rate * (kz - MEAN_KZ))
            zz = torch.nn.functional.leaky_relu(torch.matmul(h, layer.weight.transpose(-1, -2)), 0.1)
            h = divisive_normalise(zz, 4, 0.7, 0.2) if grouped else zz
    torch.testing.assert_close(torch.as_tensor(rule.mean_ky, dtype=torch.float64),
                               torch.tensor(MEAN_KY + rule.rate * (1.0 - MEAN_KY), dtype=torch.float64))


def test_running_mean_rule_with_nonzero_kernel_means_and_activity_means_is_eq_20():
    """Eq 20 with running means of the kernels and of activity all nonzero: on linear layers with the activity means
    at the previous point it is the gradient of the centred two-point objective (written out here)."""
    x, _ = data(n=2)
    y = torch.tensor([0, 1])
    model, rule = make("gaussian", form="running-mean", slope=1.0)
    list(rule.updates(x[:1], y[:1]))
    rule.mean_h, rule.mean_z = list(rule.prev_h), list(rule.prev_z)
    rule.mean_kz = [MEAN_KZ.clone() for _ in model.hidden]
    rule.mean_ky = MEAN_KY
    assert list(rule.updates(x[1:], y[1:])) == [None]
    ky = -1 / (N_CLASSES - 1)
    h = x
    for layer in model.hidden:
        w = layer.weight.detach().clone().requires_grad_(True)
        kz = hand_kernel(torch.matmul(h, w.transpose(-1, -2)), "gaussian")[..., 1, 0]
        (expected,) = torch.autograd.grad(((kz - MEAN_KZ) ** 2 - GAMMA * (ky - MEAN_KY) * kz).sum(), w)
        torch.testing.assert_close(layer.weight.grad, expected, rtol=1e-9, atol=1e-12)
        assert expected.abs().max() > 1e-8
        h = torch.matmul(h, layer.weight.detach().transpose(-1, -2))


def test_running_mean_rule_with_the_previous_point_as_mean_is_the_pair_rule_on_linear_layers():
    """Eq 20 replaces the previous point of eq 19 by the mean activity: with μ = that point they agree."""
    x, y = data(n=2)
    grads = {}
    for form in ("pair", "running-mean"):
        model, rule = make("gaussian", form=form, slope=1.0)
        list(rule.updates(x[:1], y[:1]))
        rule.mean_h = list(rule.prev_h)
        rule.mean_z = list(rule.prev_z)
        assert list(rule.updates(x[1:], y[1:])) == [None]
        grads[form] = [layer.weight.grad.clone() for layer in model.hidden]
    for a, b in zip(grads["pair"], grads["running-mean"]):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)
        assert a.abs().max() > 1e-8


@pytest.mark.parametrize("form,rate,lr", [("pair", 0.05, 0.2), ("running-mean", 0.5, 0.05)])
def test_online_rules_learn_a_tiny_problem(form, rate, lr):
    """Streaming one sample at a time lowers the layer objective on held-out data.

    Eq 20 stands in the short-term mean for the previous point: it needs a fast
    running mean (rate 0.5); with a slow one (0.05) it does not descend the objective.
    """
    torch.manual_seed(0)
    model = PHSICMLP(5, [16], 2, replicas=2, seed=3, negative_slope=0.1)
    cfg = RuleConfig(name="phsic", kernel="gaussian", form=form, gamma=GAMMA, sigmas=[1.0, 1.0, 1.0], mean_rate=rate)
    before, after, acc = stream_on_blobs(model, cfg, lr, GAMMA)
    assert (after < before - 0.01).all(), (before, after)
    assert (acc > 0.9).all()
