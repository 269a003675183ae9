"""Feedback alignment, sign symmetry, layer-wise baselines; the lr schedule across resume; ``ibhebb compare``."""
import json

import pytest
import torch

from ibhebb.cli import main
from ibhebb.config import RuleConfig, load_config
from ibhebb.functional.kernels import hsic_bottleneck
from ibhebb.models import MLP
from ibhebb.models.phsic_mlp import PHSICMLP
from ibhebb.rules import make_rule
from ibhebb.rules.feedback import feedback_product
from ibhebb.train import Trainer

SLOPE = 0.1


def setup(rule_name, seed=0):
    torch.manual_seed(seed)
    model = PHSICMLP(6, [5, 4], 3, replicas=2, seed=seed, negative_slope=SLOPE).double()
    rule = make_rule(rule_name, model, RuleConfig(name=rule_name, gamma=2.0, sigmas=[0.8, 0.5, 1.2]))
    g = torch.Generator().manual_seed(seed + 1)
    return model, rule, torch.randn(7, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (7,), generator=g)


def hand_first_layer_grad(model, x, y, feedbacks):
    """Forward, then the error sent down by hand through the given matrices, not through Wᵀ."""
    W = [l.weight.detach() for l in model.layers()]
    hs, As = [x.expand(2, -1, -1)], []
    for w in W[:-1]:
        a = hs[-1] @ w.transpose(-1, -2)
        As.append(a)
        hs.append(torch.nn.functional.leaky_relu(a, SLOPE))
    logits = hs[-1] @ W[-1].transpose(-1, -2)
    delta = (torch.softmax(logits, -1) - torch.nn.functional.one_hot(y, 3).double()) / len(y)
    for i in (2, 1):  # readout → layer 2 → layer 1
        a = As[i - 1]
        delta = (delta @ feedbacks[i]) * torch.where(a > 0, torch.ones_like(a), torch.full_like(a, SLOPE))
    return delta.transpose(-1, -2) @ hs[0]


def backprop_first_layer_grad(model, x, y):
    model.zero_grad()
    rule = make_rule("backprop", model, RuleConfig(name="backprop"))
    list(rule.updates(x, y))
    g = model.hidden[0].weight.grad.clone()
    model.zero_grad()
    return g


def sign_symmetric(w):
    """Liao et al.'s feedback written out entry by entry: each weight's sign times its matrix's mean magnitude."""
    out = torch.empty_like(w)
    for r in range(w.shape[0]):
        entries = w[r].flatten().tolist()
        scale = sum(abs(v) for v in entries) / len(entries)
        for o in range(w.shape[1]):
            for i in range(w.shape[2]):
                v = float(w[r, o, i])
                out[r, o, i] = scale if v > 0 else -scale if v < 0 else 0.0
    return out


@pytest.mark.parametrize("name", ["feedback-alignment", "sign-symmetry"])
def test_first_layer_update_uses_the_feedback_matrices_not_the_weights(name):
    model, rule, x, y = setup(name)
    if name == "feedback-alignment":
        B = [getattr(rule, f"feedback_{i}") for i in range(3)]
        assert all(not torch.allclose(b, l.weight) for b, l in zip(B, model.layers()))
    else:
        B = [sign_symmetric(l.weight.detach()) for l in model.layers()]
    expected = hand_first_layer_grad(model, x, y, B)
    assert list(rule.updates(x, y)) == [None]
    got = model.hidden[0].weight.grad.clone()
    assert torch.allclose(got, expected, rtol=1e-9, atol=1e-13)
    assert not torch.allclose(got, backprop_first_layer_grad(model, x, y), rtol=1e-3, atol=1e-8)
    # with the weights' transpose in place of B, the same hand computation is backprop: the check can fail
    W = [l.weight.detach() for l in model.layers()]
    assert torch.allclose(hand_first_layer_grad(model, x, y, W), backprop_first_layer_grad(model, x, y), atol=1e-12)


def test_feedback_product_sends_errors_through_B_and_updates_W_with_the_input():
    h = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    B = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    g = torch.randn(2, 4, 5, dtype=torch.float64)
    out = feedback_product(lambda a, b: a @ b.transpose(-1, -2), h, w, B)
    assert torch.equal(out, h.detach() @ w.detach().transpose(-1, -2))
    out.backward(g)
    assert torch.allclose(h.grad, g @ B.detach())
    assert torch.allclose(w.grad, g.transpose(-1, -2) @ h.detach())
    assert B.grad is None


def test_layer_classifier_is_autograd_of_each_local_cross_entropy():
    model, rule, x, y = setup("layer-classifier")
    list(rule.updates(x, y))
    h = x
    for layer, C in zip(model.hidden, rule.classifiers):
        w = layer.weight.detach().clone().requires_grad_(True)
        z = torch.nn.functional.leaky_relu(torch.matmul(h, w.transpose(-1, -2)), SLOPE)
        logits = z @ C.detach().transpose(-1, -2)
        loss = sum(torch.nn.functional.cross_entropy(logits[r], y) for r in range(2))
        assert torch.allclose(layer.weight.grad, torch.autograd.grad(loss, w)[0], atol=1e-12)
        h = z.detach()
    assert all(C.grad is not None and C.grad.abs().max() > 0 for C in rule.classifiers)


def written_out_bottleneck(x, y1, z, gamma, sigmas):
    """``HSIC(X, Z) - γ HSIC(Y, Z)`` from the definitions (MATH §1–§2): Gaussian kernels of width ``σ² d``, and
    ``tr(K_A H K_B H) / (N - 1)²`` with the centring matrix ``H`` formed; summed over replicas."""
    def K(v, sigma):
        diff = v.unsqueeze(-2) - v.unsqueeze(-3)
        return torch.exp(-(diff**2).sum(-1) / (2 * sigma**2 * v.shape[-1]))

    n = z.shape[-2]
    H = torch.eye(n, dtype=z.dtype) - torch.full((n, n), 1.0 / n, dtype=z.dtype)
    Kz = K(z, sigmas[2])

    def hsic(A, B):
        return torch.diagonal(A @ H @ B @ H, dim1=-2, dim2=-1).sum(-1) / (n - 1) ** 2

    return (hsic(K(x, sigmas[0]), Kz) - gamma * hsic(K(y1, sigmas[1]), Kz)).sum()


def test_written_out_bottleneck_is_the_library_objective():
    _, _, x, y = setup("hsic-bottleneck")
    z = torch.randn(2, 7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    y1 = torch.nn.functional.one_hot(y, 3).double()
    want = hsic_bottleneck(x, y1, z, gamma=2.0, sigmas=(0.8, 0.5, 1.2))[0].sum()
    torch.testing.assert_close(written_out_bottleneck(x, y1, z, 2.0, (0.8, 0.5, 1.2)), want, rtol=1e-12, atol=1e-14)


def test_hsic_bottleneck_is_autograd_of_each_layer_hsic_objective():
    model, rule, x, y = setup("hsic-bottleneck")
    list(rule.updates(x, y))
    y1 = torch.nn.functional.one_hot(y, 3).double()
    h = x
    for layer in model.hidden:
        w = layer.weight.detach().clone().requires_grad_(True)
        z = torch.nn.functional.leaky_relu(torch.matmul(h, w.transpose(-1, -2)), SLOPE)
        loss = written_out_bottleneck(x, y1, z, 2.0, (0.8, 0.5, 1.2))
        expected = torch.autograd.grad(loss, w)[0]
        assert torch.allclose(layer.weight.grad, expected, rtol=1e-9, atol=1e-13)
        assert expected.abs().max() > 1e-8
        h = z.detach()


def test_feedback_rules_also_train_the_plain_mlp():
    model = MLP(6, [5], 3, replicas=2, seed=0).double()
    rule = make_rule("feedback-alignment", model, RuleConfig(name="feedback-alignment"))
    list(rule.updates(torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0])))
    assert all(p.grad is not None for p in model.parameters())


# -- schedule, resume, compare ----------------------------------------------------------------

TINY = {
    "seeds": 2, "epochs": 3, "data": {"name": "xor", "n_train": 64, "n_test": 32},
    "model": {"kind": "phsic-mlp", "hidden": [8, 8], "groups": 4, "divisive_norm": True},
    "rule": {"name": "phsic", "grouped": True, "sigmas": [0.5, 0.1, 2.0]},
    "optim": {"name": "sgd", "lr": 0.5, "momentum": 0.9, "batch_size": 16, "readout_lr": 0.05,
              "milestones": [1, 2], "gamma_lr": 0.5},
    "eval": {"hsic_samples": 0},
}


def test_lr_schedule_and_readout_lr_survive_resume(tmp_path):
    cfg = load_config(None, TINY)
    full = Trainer(cfg, tmp_path / "full", progress=False)
    full.run()
    assert [g["lr"] for g in full.optimizer.param_groups] == [0.5 * 0.25, 0.05 * 0.25]
    short = load_config(None, {**TINY, "epochs": 1})
    Trainer(short, tmp_path / "part", progress=False).run()
    resumed = Trainer(cfg, tmp_path / "part", resume=True, progress=False)
    assert resumed.scheduler.last_epoch == 1
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [0.5 * 0.5, 0.05 * 0.5]
    resumed.run()
    assert [g["lr"] for g in resumed.optimizer.param_groups] == [0.5 * 0.25, 0.05 * 0.25]
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)


def test_compare_prints_one_markdown_table_and_writes_a_plot(tmp_path, capsys):
    runs = []
    for rule in ("phsic", "last-layer"):
        cfg = load_config(None, {**TINY, "epochs": 1, "rule": {**TINY["rule"], "name": rule}})
        Trainer(cfg, tmp_path / rule, progress=False).run()
        runs.append(str(tmp_path / rule))
    png = tmp_path / "curves.png"
    assert main(["compare", *runs, "--out", str(png)]) == 0
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("|")]
    assert len(rows) == 4 and "phsic (gaussian, grp+div)" in rows[2] and "last-layer (div)" in rows[3]
    acc = json.loads((tmp_path / "phsic" / "summary.json").read_text())["test_accuracy_mean"] * 100
    assert f"{acc:.2f}" in rows[2]
    assert png.stat().st_size > 0
    assert main(["compare", str(tmp_path / "nothing-here")]) == 2
