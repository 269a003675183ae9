"""Online grouped pHSIC rules (seed 001 eqs 21, 22) against autograd (float64), learning, exact resume;
channel grouping for convolutional activity."""
import json

import pytest
import torch

from ibhebb.config import RuleConfig, load_config
from ibhebb.errors import ConfigError
from ibhebb.functional.phsic import (
    channel_divisive_normalise,
    channel_group_code,
    divisive_normalise,
    group_code,
    group_code_derivative,
    label_kernel_matrix,
)
from ibhebb.models.phsic_mlp import PHSICMLP, Grouping
from ibhebb.rules import make_rule
from ibhebb.train import Trainer
from streaming import stream_on_blobs

GAMMA, SIGMA, N_CLASSES, GROUPS, DELTA, P, RATE = 2.0, 1.5, 3, 4, 0.7, 0.2, 0.3


def make(form, slope=0.1, seed=0):
    model = PHSICMLP(
        5, [8, 8], N_CLASSES, replicas=2, seed=seed, negative_slope=slope, dropout=0.0,
        grouping=Grouping(GROUPS, DELTA, P), divisive_norm=True,
    ).double()
    cfg = RuleConfig(name="phsic", kernel="gaussian", grouped=True, form=form, gamma=GAMMA,
                     sigmas=[1.0, 1.0, SIGMA], mean_rate=RATE)
    return model, make_rule("phsic", model, cfg)


def samples(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g, dtype=torch.float64)


# -- written-out equations, independent of the library's grouping code ----------------------------


def hand_code_groups(z, groups, delta, p):
    """Eqs 13–14 with a loop over groups."""
    size = z.shape[-1] // groups
    us = []
    for a in range(groups):
        g = z[..., a * size : (a + 1) * size]
        us.append((delta + ((g - g.mean(-1, keepdim=True)) ** 2).sum(-1)) / size)
    w = torch.stack(us, -1) ** (1 - p)
    return w - w.mean(-1, keepdim=True)


def hand_code(z):
    return hand_code_groups(z, GROUPS, DELTA, P)


def hand_k(zi, zj):
    """Gaussian kernel of the group codes (eq 15)."""
    return torch.exp(-((hand_code(zi) - hand_code(zj)) ** 2).sum(-1) / (2 * SIGMA**2))


def hand_pair(zi, zj, ky, mean_kz=0.0, mean_ky=0.0):
    """ℓ(i, j) = (k_z - μ_z)² - γ (k_y - μ_y) k_z, one value per replica."""
    kz = hand_k(zi, zj)
    return (kz - mean_kz) ** 2 - GAMMA * (ky - mean_ky) * kz


def assert_same(got, expected):
    """Equal to float64 round-off, relative to the update's size (deeper layers' updates are small), and not zero."""
    scale = expected.abs().max()
    assert scale > 1e-12
    assert (got - expected).abs().max() <= 1e-9 * scale, ((got - expected).abs().max(), scale)


def forward(layer, h, w, slope):
    return torch.nn.functional.leaky_relu(torch.matmul(h, w.transpose(-1, -2)), slope)


def next_input(layer, h, slope):
    with torch.no_grad():
        return divisive_normalise(forward(layer, h, layer.weight, slope), GROUPS, DELTA, P)


# -- eq 21 ------------------------------------------------------------------------------------------


def test_eq21_with_the_previous_point_as_mean_is_the_gradient_of_the_two_point_objective():
    """With μ = the previous point (linear layers, so f' agrees), eq 21 is eq 18 = ∂ℓ(t, t-Δt)/∂W."""
    model, rule = make("running-mean", slope=1.0)
    x, y = samples(2), torch.tensor([0, 1])
    assert list(rule.updates(x[:1], y[:1])) == []
    g = model.grouping
    rule.mean_h = list(rule.prev_h)
    rule.mean_z = [group_code_derivative(z, g.groups, g.delta, g.p) for z in rule.prev_z]
    assert list(rule.updates(x[1:], y[1:])) == [None]
    ky = -1 / (N_CLASSES - 1)
    h = x
    for layer in model.hidden:
        w = layer.weight.detach().clone().requires_grad_(True)
        z = forward(layer, h, w, 1.0)
        (expected,) = torch.autograd.grad(hand_pair(z[..., 1, :], z[..., 0, :], ky).sum(), w)
        assert_same(layer.weight.grad, expected)
        h = next_input(layer, h, 1.0)


def test_eq21_hebbian_term_of_the_current_point_is_the_gradient_through_that_point():
    """With zero means only eq 21's first term is left: ∂ℓ(t, t-Δt)/∂W through z_t alone (leaky layers)."""
    model, rule = make("running-mean", slope=0.1)
    x, y = samples(2, seed=4), torch.tensor([2, 2])
    list(rule.updates(x[:1], y[:1]))
    rule.mean_h = [torch.zeros_like(m) for m in rule.mean_h]
    rule.mean_z = [torch.zeros_like(m) for m in rule.mean_z]
    assert list(rule.updates(x[1:], y[1:])) == [None]
    h = x
    for layer in model.hidden:
        w = layer.weight.detach().clone().requires_grad_(True)
        z_now = forward(layer, h[..., 1:, :], w, 0.1)
        z_prev = forward(layer, h[..., :1, :], layer.weight.detach(), 0.1)
        (expected,) = torch.autograd.grad(hand_pair(z_now, z_prev, 1.0).sum(), w)
        assert_same(layer.weight.grad, expected)
        h = next_input(layer, h, 0.1)


# -- eq 22 ------------------------------------------------------------------------------------------


def test_eq22_is_the_gradient_of_both_pairs_through_the_middle_sample_one_step_late():
    """After samples 1, 2, 3 the update is for sample 2: ∂[ℓ(2,1) + ℓ(3,2)]/∂W through z_2 alone,
    with the kernels' running means as the rule held them at each pair."""
    model, rule = make("split", slope=0.1)
    x, y = samples(3, seed=2), torch.tensor([0, 1, 1])
    assert list(rule.updates(x[:1], y[:1])) == []
    assert list(rule.updates(x[1:2], y[1:2])) == [None]  # the readout learns; eq 22 waits for sample 3
    assert all(layer.weight.grad is None for layer in model.hidden)
    assert list(rule.updates(x[2:], y[2:])) == [None]
    ky21, ky32 = -1 / (N_CLASSES - 1), 1.0
    h = x
    for layer in model.hidden:
        w = layer.weight.detach().clone().requires_grad_(True)
        fixed = forward(layer, h, layer.weight.detach(), 0.1)
        z2 = forward(layer, h[..., 1:2, :], w, 0.1)
        mean_kz = RATE * hand_k(fixed[..., 1:2, :], fixed[..., 0:1, :]).detach()
        loss = hand_pair(z2, fixed[..., 0:1, :], ky21) + hand_pair(fixed[..., 2:3, :], z2, ky32, mean_kz, RATE * ky21)
        (expected,) = torch.autograd.grad(loss.sum(), w)
        assert_same(layer.weight.grad, expected)
        h = next_input(layer, h, 0.1)


def test_eq22_summed_over_a_stream_is_eq18_summed_up_to_the_end_terms():
    """Σ_t (M_{t,t-1} - M_{t+1,t}) e_t h_t = Σ_t M_{t,t-1} (e_t h_t - e_{t-1} h_{t-1}) minus the two end terms;
    with fixed weights and frozen means, the split rule's sum over samples 2..n-1 equals the pair rule's
    sum over pairs (1,2)..(n-1,n) less the gradient of ℓ(n, n-1) through z_n and of ℓ(2, 1) through z_1."""
    x, y = samples(6, seed=5), torch.tensor([0, 1, 1, 2, 0, 2])
    totals = {}
    for form in ("split", "pair"):
        model, rule = make(form, slope=0.1)
        rule.rate = 0.0  # frozen (zero) kernel means, so both forms see the same objective
        for i in range(len(x)):
            list(rule.updates(x[i : i + 1], y[i : i + 1]))
        totals[form] = model.hidden[0].weight.grad.clone()
    w = model.hidden[0].weight.detach().clone().requires_grad_(True)
    fixed = forward(None, x, model.hidden[0].weight.detach(), 0.1)
    ky = label_kernel_matrix(y, N_CLASSES, torch.float64)
    z_last, z_first = forward(None, x[-1:], w, 0.1), forward(None, x[:1], w, 0.1)
    ends = hand_pair(z_last, fixed[..., -2:-1, :], ky[-1, -2]) + hand_pair(fixed[..., 1:2, :], z_first, ky[1, 0])
    (end_grad,) = torch.autograd.grad(ends.sum(), w)
    assert_same(totals["split"], totals["pair"] - end_grad)
    assert end_grad.abs().max() > 1e-3 * totals["pair"].abs().max()


# -- learning ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("form,rate", [("running-mean", 0.5), ("split", 0.05)])
def test_online_grouped_rules_learn_a_tiny_problem(form, rate):
    """Streaming one sample at a time lowers the grouped layer objective on held-out data."""
    torch.manual_seed(0)
    model = PHSICMLP(5, [16], 2, replicas=2, seed=3, grouping=Grouping(4, 1.0, 0.2), divisive_norm=True)
    cfg = RuleConfig(name="phsic", kernel="gaussian", grouped=True, form=form, gamma=GAMMA,
                     sigmas=[1.0, 1.0, 1.0], mean_rate=rate)
    before, after, acc = stream_on_blobs(model, cfg, 0.2, GAMMA)
    assert (after < before - 0.1).all(), (before, after)
    assert (acc > 0.9).all()


# -- configuration and checkpoints ------------------------------------------------------------------

TINY = [
    "data.name=xor", "data.n_train=60", "seeds=2", "model.kind=phsic-mlp", "model.hidden=[8]", "model.groups=4",
    "model.divisive_norm=true", "model.dropout=0.0", "rule.name=phsic", "rule.kernel=gaussian", "rule.mean_rate=0.1",
    "rule.sigmas=[1.0, 1.0, 1.0]", "optim.name=sgd", "optim.lr=0.05",
]


@pytest.mark.parametrize("overrides", [["rule.form=split", "rule.grouped=false"], ["rule.form=split", "rule.kernel=cossim"]])
def test_split_form_needs_the_grouped_gaussian_kernel(overrides):
    with pytest.raises(ConfigError, match="split"):
        load_config("configs/fig4-xor.toml", TINY + ["rule.grouped=true"] + overrides)


@pytest.mark.parametrize("form,grouped", [("pair", "false"), ("running-mean", "true"), ("split", "true")])
def test_resumed_online_phsic_run_equals_an_uninterrupted_one(tmp_path, form, grouped):
    """The previous sample and running means are in the checkpoint, so epoch 2 continues the stream exactly."""
    overrides = TINY + [f"rule.form={form}", f"rule.grouped={grouped}"]
    full = Trainer(load_config("configs/fig4-xor.toml", overrides + ["epochs=2"]), tmp_path / "full", progress=False)
    full.run()
    part = Trainer(load_config("configs/fig4-xor.toml", overrides + ["epochs=1"]), tmp_path / "part", progress=False)
    part.run()
    resumed = Trainer(load_config(tmp_path / "part" / "config.json", ["epochs=2"]), tmp_path / "part",
                      resume=True, progress=False)
    assert resumed.rule.prev_y is not None and resumed.rule.mean_h[0] is not None
    resumed.run()
    for (name, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    for a, b in zip(full.rule.mean_z, resumed.rule.mean_z):
        assert torch.equal(a, b)
    def read(run):
        return [json.loads(s)["test_accuracy"] for s in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
    assert read("full") == read("part")


# -- grouping over channels (convolutions) ----------------------------------------------------------


def test_channel_grouping_per_position_is_the_mlp_grouping_at_every_position():
    z = torch.randn(2, 3, 12, 4, 5, dtype=torch.float64)  # (R, B, C, H, W)
    per_position = z.permute(0, 1, 3, 4, 2)  # channels last: (R, B, H, W, C)
    r = channel_divisive_normalise(z, 3, 0.7, 0.2)
    assert torch.allclose(r.permute(0, 1, 3, 4, 2), divisive_normalise(per_position, 3, 0.7, 0.2), atol=1e-12)
    v = channel_group_code(z, 3, 0.7, 0.2).reshape(2, 3, 3, 4, 5)
    assert torch.allclose(v.permute(0, 1, 3, 4, 2), group_code(per_position, 3, 0.7, 0.2), atol=1e-12)
    assert torch.allclose(v.permute(0, 1, 3, 4, 2), hand_code_groups(per_position, 3, 0.7, 0.2), atol=1e-12)


def test_channel_grouping_pooled_over_positions_with_p_half_is_group_norm():
    z = torch.randn(2, 3, 8, 4, 5, dtype=torch.float64)
    ours = channel_divisive_normalise(z, 4, 0.8, 0.5, pooled=True)
    ref = torch.nn.functional.group_norm(z.reshape(6, 8, 4, 5), 4, eps=0.8 / (2 * 4 * 5)).reshape(z.shape)
    assert torch.allclose(ours, ref, atol=1e-10)
    assert channel_group_code(z, 4, 0.8, 0.5, pooled=True).shape == (2, 3, 4)
    with pytest.raises(ValueError, match="channels"):
        channel_divisive_normalise(z, 3, 0.8, 0.5)
