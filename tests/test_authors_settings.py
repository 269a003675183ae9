"""The options behind the authors' settings (seed 000's code).

LayerNorm ε, lecun-normal init, a window that restarts each epoch.
"""
import json

import pytest
import torch

from ibhebb.config import RuleConfig, load_config
from ibhebb.engine import cstep, make_engine
from ibhebb.functional.layers import layernorm, layernorm_vjp
from ibhebb.models import CNN, MLP
from ibhebb.rules import make_rule
from ibhebb.train import Trainer
from test_engine import assert_same, eager_epoch, stream

MODES = ["torch"] + (["native"] if cstep.unavailable(torch.float64) is None else [])


def test_layernorm_eps_against_torch_and_autograd():
    r = torch.randn(3, 5, 7, dtype=torch.float64) * 1e-3  # small variance: ε matters
    for eps in (1e-5, 1e-6):
        z = layernorm(r, eps=eps)
        torch.testing.assert_close(z, torch.nn.functional.layer_norm(r, (7,), eps=eps), rtol=1e-12, atol=1e-12)
        cot = torch.randn_like(r)
        rr = r.clone().requires_grad_(True)
        (g,) = torch.autograd.grad((torch.nn.functional.layer_norm(rr, (7,), eps=eps) * cot).sum(), rr)
        torch.testing.assert_close(layernorm_vjp(r, z, cot, eps=eps), g, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(layernorm(r, eps=1e-5), layernorm(r, eps=1e-6))


@pytest.mark.parametrize("mode", MODES)
def test_engine_with_layernorm_eps_equals_the_rule_loop(mode):
    def build():
        model = MLP(6, [5, 4], 3, replicas=2, seed=0, layernorm_eps=1e-6).double()
        rule = make_rule("biohsic", model, RuleConfig(window=4, sigmas=[0.6, 0.4, 0.9]))
        return model, rule, torch.optim.AdamW(rule.trainable(), lr=3e-2, betas=(0.9, 0.99), weight_decay=1e-2)

    a, b = build(), build()
    x, y = stream(15)
    order = torch.arange(15)
    eager_epoch(a[1], a[2], x, y, order)
    engine = make_engine(*b, mode=mode, chunk=4)
    assert engine.spec.layernorm_eps == 1e-6
    engine.train_epoch(x, torch.nn.functional.one_hot(y, 3).double(), order)
    assert_same(a, b)


def test_lecun_normal_init():
    model = MLP(4000, [500], 10, replicas=2, seed=3, init="lecun-normal")
    w, b = model.hidden[0].weight, model.hidden[0].bias
    assert torch.equal(b, torch.zeros_like(b)) and torch.equal(model.readout.bias, torch.zeros(2, 10))
    assert abs(w.std().item() * 4000**0.5 - 1.0) < 0.01  # variance 1/fan_in after the truncation's correction
    assert w.abs().max().item() <= 2.0 / 0.87962566103423978 / 4000**0.5 + 1e-7  # truncated at two standard deviations
    again = MLP(4000, [500], 10, replicas=1, seed=3, init="lecun-normal")
    assert torch.equal(again.hidden[0].weight[0], w[0])  # replica 0 is the same whatever R is
    assert not torch.equal(w[0], w[1])
    conv = CNN((1, 8, 8), [4], 3, init="lecun-normal")
    assert torch.equal(conv.hidden[0].bias, torch.zeros_like(conv.hidden[0].bias))
    with pytest.raises(ValueError, match="unknown init"):
        MLP(4, [3], 2, init="glorot")


@pytest.mark.parametrize("engine", ["rule", "auto"])
def test_window_restarts_each_epoch(tmp_path, engine):
    base = ["data.n_train=30", "data.n_test=10", "epochs=2", "eval.hsic_samples=0", "eval.train_samples=10",
            "rule.window=8", "model.steps=2", "dtype=float64", f"engine={engine}"]
    updates = {}
    for reset in ("false", "true"):
        out = tmp_path / reset
        Trainer(load_config("configs/fig4-xor.toml", [*base, f"rule.reset_each_epoch={reset}"]), out, progress=False).run()
        updates[reset] = [json.loads(line)["updates"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = 2  # updates per sample of the leaky network
    assert updates["false"] == [(30 - 7) * steps, 30 * steps]
    assert updates["true"] == [(30 - 7) * steps, (30 - 7) * steps]


def test_reset_each_epoch_same_weights_in_the_engine_and_the_rule_loop(tmp_path):
    base = ["model.kind=mlp", "data.n_train=30", "data.n_test=10", "epochs=2", "eval.hsic_samples=0",
            "eval.train_samples=10", "rule.window=6", "dtype=float64", "rule.reset_each_epoch=true"]
    runs = {}
    for engine in ("rule", "auto"):
        t = Trainer(load_config("configs/fig4-xor.toml", [*base, f"engine={engine}"]), tmp_path / engine, progress=False)
        t.run()
        runs[engine] = t
    for a, b in zip(runs["rule"].model.parameters(), runs["auto"].model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
