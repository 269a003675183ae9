"""Seed 001's deep conv net (Table 2): the VGG-like model, and every rule on it against an independent
computation (float64): pHSIC (grouped over channels, three kernels, two estimators), feedback alignment and
sign symmetry (the backward path through the fixed feedback, never Wᵀ), the layer-wise classifier (+ FA);
the held-out validation split; the Table 2 configs."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ibhebb.config import RuleConfig, load_config
from ibhebb.data.dataset import Dataset, split_validation
from ibhebb.models.vgg import VGG, vgg_widths
from ibhebb.rules import make_rule
from ibhebb.train import Trainer

R, N_CLASSES, GAMMA, DELTA = 2, 4, 2.0, 0.7
TABLE2 = Path(__file__).resolve().parent.parent / "configs" / "table2"


def tiny(seed=0, replicas=R, shape=(1, 16, 16), **kw):
    """A net of the VGG layout at scale 1/64 (2–8 channels, fc 16) on 16×16 maps: 6 convs (4 max pools), fc."""
    kw = {"scale": 1 / 64, "divisive_norm": True, "groups": 2, "delta": DELTA, **kw}
    torch.manual_seed(seed)
    return VGG(shape, N_CLASSES, replicas=replicas, seed=seed, **kw).double()


def batch(n=6, shape=(1, 16, 16), seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=torch.float64), torch.randint(0, N_CLASSES, (n,), generator=g)


# -- written-out forward (per replica, torch.nn.functional) ---------------------------------------


def hand_divnorm(z, groups, delta, p):
    """The authors' ``DivisiveNorm``: view ``(B, groups, -1)``, centre, ``var = (‖z̃‖² + δ) / n``, ``z̃ / var^p``."""
    g = z.reshape(z.shape[0], groups, -1)
    c = g - g.mean(-1, keepdim=True)
    var = ((c**2).sum(-1, keepdim=True) + delta) / g.shape[-1]
    return (c / var**p).reshape(z.shape)


def hand_code(z, groups, delta, p):
    """Eq 14 per group of channels (variance over the group's channels and all positions), by a loop."""
    g = z.reshape(z.shape[0], groups, -1)
    us = []
    for a in range(groups):
        c = g[:, a] - g[:, a].mean(-1, keepdim=True)
        us.append((delta + (c**2).sum(-1)) / g.shape[-1])
    w = torch.stack(us, -1) ** (1 - p)
    return w - w.mean(-1, keepdim=True)


def hand_layer(layer, h, r, weight=None):
    """Replica ``r`` of hidden layer ``layer`` on ``h`` ``(B, …)``: ``z`` (unflattened) and what the next layer gets."""
    w = layer.weight[r] if weight is None else weight
    if layer.conv:
        a = F.conv2d(h.reshape(h.shape[0], *layer.in_shape), w, padding=1)
    else:
        a = h.reshape(h.shape[0], -1) @ w.T
    z = F.selu(a)
    if layer.pool:
        z = F.max_pool2d(z, 2)
    groups = min(layer.groups, layer.out_shape[0])
    return z, hand_divnorm(z, groups, layer.delta, layer.p) if layer.divisive_norm else z


def hand_forward(net, x, r):
    h = x
    for layer in net.hidden:
        h = hand_layer(layer, h, r)[1]
    return h.reshape(h.shape[0], -1) @ net.readout.weight[r].T


def test_widths_follow_the_published_layout():
    assert vgg_widths(1) == ([(128, False), (256, True), (256, False), (512, True), (512, True), (512, True)], 1024)
    assert vgg_widths(2) == ([(256, False), (512, True), (512, False), (1024, True), (1024, True), (1024, True)], 1024)
    for shape, last in (((1, 28, 28), (512, 1, 1)), ((3, 32, 32), (512, 2, 2))):
        net = VGG(shape, 10, scale=1 / 32)
        assert [l.out_shape[1:] for l in net.hidden[:6]][-1] == last[1:]
        assert len(net.hidden) == 7 and net.hidden[-1].out_features == 32


def test_forward_is_the_written_out_network_per_replica_and_replicas_do_not_depend_on_R():
    net = tiny(replicas=3)
    x, _ = batch()
    out = net(x)
    for r in range(3):
        assert torch.allclose(out[r], hand_forward(net, x, r), atol=1e-12)
    assert torch.allclose(tiny(replicas=1)(x)[0], out[0], atol=1e-12)


def test_batchnorm_normalises_each_replica_and_channel_and_keeps_running_statistics():
    net = tiny(batchnorm=True, divisive_norm=False, activation="relu").train()
    layer = net.hidden[0]
    x, _ = batch(n=8)
    a = layer.product(net.flatten(x), layer.weight)
    ref = torch.nn.BatchNorm2d(layer.out_shape[0]).double().train()
    for r in range(R):
        expected = F.relu(ref(a[r].detach()))
        got = net.local_forward(0, net.flatten(x))[0][r].reshape(expected.shape[0], -1, *a.shape[-2:])
        assert torch.allclose(got, expected.reshape(got.shape), atol=1e-10)
    assert torch.allclose(layer.running_mean[0], a[0].mean((0, 2, 3)).detach() * 0.1 * (1 + 0.9), atol=1e-10)


# -- pHSIC on the conv net: autograd of the written-out objective --------------------------------


def hand_kernel(v, kernel, sigma):
    if kernel == "gaussian":
        d = ((v[:, None, :] - v[None, :, :]) ** 2).sum(-1)
        return torch.exp(-d / (2 * sigma**2))
    if kernel == "cossim":
        u = v / v.norm(dim=-1, keepdim=True)
        return u @ u.T
    return v @ v.T


def hand_objective(Kz, Ky, estimator):
    m = Kz.shape[0]
    if estimator == "phsic":  # eqs 7–9 as sums
        def ph(A, B):
            return (A * B).sum() / m**2 - A.sum() * B.sum() / m**4
    else:  # tr(K_A H K_B H) / (m - 1)², H formed
        H = torch.eye(m, dtype=Kz.dtype) - 1.0 / m

        def ph(A, B):
            return torch.trace(A @ H @ B @ H) / (m - 1) ** 2
    return ph(Kz, Kz) - GAMMA * ph(Ky, Kz)


@pytest.mark.parametrize("kernel,estimator,grouped,divnorm", [
    ("cossim", "phsic", True, True), ("gaussian", "phsic", True, True), ("gaussian", "biased", False, True),
    ("linear", "phsic", False, True), ("cossim", "biased", True, True),
    ("gaussian", "phsic", True, False),  # "grp": grouped kernel, no divisive normalisation
])
def test_phsic_on_conv_layers_descends_its_written_out_objective(kernel, estimator, grouped, divnorm):
    sigma = 1.3
    net = tiny(scale=1 / 32, groups=4, divisive_norm=divnorm)
    x, y = batch()
    cfg = RuleConfig(name="phsic", kernel=kernel, grouped=grouped, estimator=estimator, gamma=GAMMA, sigmas=[1, 1, sigma])
    rule = make_rule("phsic", net, cfg)
    assert list(rule.updates(x, y)) == [None]
    yc = F.one_hot(y, N_CLASSES).double() - 1 / N_CLASSES
    yc = yc / yc.norm(dim=-1, keepdim=True)
    Ky = yc @ yc.T
    for r in range(R):
        h = x
        for layer in net.hidden:
            w = layer.weight[r].detach().clone().requires_grad_(True)
            z, out = hand_layer(layer, h.detach(), r, w)
            groups = min(layer.groups, layer.out_shape[0])
            v = hand_code(z, groups, layer.delta, layer.p) if grouped else z.reshape(z.shape[0], -1)
            expected = torch.autograd.grad(hand_objective(hand_kernel(v, kernel, sigma), Ky, estimator), w)[0]
            assert torch.allclose(layer.weight.grad[r], expected, rtol=1e-8, atol=1e-14), (kernel, estimator)
            h = out
        assert net.hidden[0].weight.grad[r].abs().max() > 0
    assert net.readout.weight.grad.abs().max() > 0


# -- feedback alignment and sign symmetry on conv layers -------------------------------------------


def hand_feedback_grads(net, x, y, feedbacks):
    """Weight gradients of every layer with the error sent down by hand: ``conv_transpose2d(δa, B)`` through a
    convolution, ``δa B`` through a dense layer — never through the forward weights."""
    grads = [torch.zeros_like(l.weight) for l in net.layers()]
    for r in range(R):
        hs, zs, As, h = [], [], [], x
        for layer in net.hidden:  # forward with leaves at each preactivation
            hs.append(h.detach())
            w = layer.weight[r].detach()
            a = (F.conv2d(h.reshape(h.shape[0], *layer.in_shape), w, padding=1) if layer.conv
                 else h.reshape(h.shape[0], -1) @ w.T).requires_grad_(True)
            As.append(a)
            z = F.selu(a)
            z = F.max_pool2d(z, 2) if layer.pool else z
            groups = min(layer.groups, layer.out_shape[0])
            h = hand_divnorm(z, groups, layer.delta, layer.p)
            zs.append(h)
        hL = h.reshape(h.shape[0], -1).detach()
        logits = hL @ net.readout.weight[r].detach().T
        delta = (torch.softmax(logits, -1) - F.one_hot(y, N_CLASSES).double()) / len(y)
        grads[-1][r] = delta.T @ hL
        d_in = delta @ feedbacks[-1][r]
        for i in reversed(range(len(net.hidden))):
            layer = net.hidden[i]
            da = torch.autograd.grad(zs[i], As[i], d_in.reshape(zs[i].shape))[0]
            hin = hs[i].reshape(hs[i].shape[0], *layer.in_shape) if layer.conv else hs[i].reshape(hs[i].shape[0], -1)
            if layer.conv:
                grads[i][r] = torch.nn.grad.conv2d_weight(hin, layer.weight.shape[1:], da, padding=1)
                d_in = F.conv_transpose2d(da, feedbacks[i][r], padding=1)
            else:
                grads[i][r] = da.T @ hin
                d_in = da @ feedbacks[i][r]
    return grads


def rule_grads(net, name, x, y, **kw):
    net.zero_grad()
    rule = make_rule(name, net, RuleConfig(name=name, **kw))
    assert list(rule.updates(x, y)) == [None]
    return rule, [l.weight.grad.clone() for l in net.layers()]


@pytest.mark.parametrize("name,scale", [("feedback-alignment", "mean-abs"), ("sign-symmetry", "mean-abs"),
                                        ("sign-symmetry", "none")])
def test_conv_feedback_rules_send_errors_through_their_fixed_feedback_not_the_weights(name, scale):
    net = tiny(scale=1 / 32)
    x, y = batch()
    weights = [l.weight.detach() for l in net.layers()]
    _, backprop = rule_grads(net, "backprop", x, y)
    # the hand computation with B = W is backprop: it can tell the two apart
    for got, want in zip(hand_feedback_grads(net, x, y, weights), backprop):
        assert torch.allclose(got, want, rtol=1e-8, atol=1e-13)
    rule, got = rule_grads(net, name, x, y, feedback_scale=scale)
    if name == "feedback-alignment":
        B = [getattr(rule, f"feedback_{i}") for i in range(len(weights))]
        assert all(b.shape == w.shape and not torch.allclose(b, w) for b, w in zip(B, weights))
    else:
        B = [torch.sign(w) * (w.abs().mean(tuple(range(1, w.dim())), keepdim=True) if scale == "mean-abs" else 1.0)
             for w in weights]
    for g, want in zip(got, hand_feedback_grads(net, x, y, B)):
        assert torch.allclose(g, want, rtol=1e-8, atol=1e-13)
    assert torch.allclose(got[-1], backprop[-1], atol=1e-13)  # the readout's own gradient is backprop's
    assert not torch.allclose(got[0], backprop[0], rtol=1e-3, atol=1e-10)


def test_feedback_alignment_with_B_equal_to_W_is_backprop():
    net = tiny(scale=1 / 32)
    x, y = batch()
    _, backprop = rule_grads(net, "backprop", x, y)
    net.zero_grad()
    rule = make_rule("feedback-alignment", net, RuleConfig(name="feedback-alignment"))
    for i, l in enumerate(net.layers()):
        getattr(rule, f"feedback_{i}").copy_(l.weight.detach())
    list(rule.updates(x, y))
    for l, want in zip(net.layers(), backprop):
        assert torch.allclose(l.weight.grad, want, rtol=1e-10, atol=1e-14)


# -- layer-wise classifier (+ FA) with its conv projection head ---------------------------------


@pytest.mark.parametrize("name", ["layer-classifier", "layer-classifier-fa"])
def test_layer_classifier_on_conv_layers_is_its_written_out_local_loss(name):
    net = tiny(scale=1 / 32, shape=(1, 16, 16))
    x, y = batch(shape=(1, 16, 16))
    rule = make_rule(name, net, RuleConfig(name=name, head_features=8))
    assert rule.pools[0] == 16 and rule.pools[-1] == 1  # 4×16×16 → 4×1×1 (4·2·2 = 16 > 8 features)
    list(rule.updates(x, y))
    for r in range(R):
        h = x
        for i, layer in enumerate(net.hidden):
            w = layer.weight[r].detach().clone().requires_grad_(True)
            z, out = hand_layer(layer, h.detach(), r, w)
            f = F.avg_pool2d(z, rule.pools[i]).flatten(1) if layer.conv and rule.pools[i] > 1 else z.flatten(1)
            C = rule.classifiers[i][r].detach()
            if name == "layer-classifier":
                loss = F.cross_entropy(f @ C.T, y)
            else:  # the error reaches f through B: ⟨δlogits, f Bᵀ⟩ with δlogits of the true loss
                logits = f.detach() @ C.T
                dlogits = (torch.softmax(logits, -1) - F.one_hot(y, N_CLASSES).double()) / len(y)
                loss = (f @ getattr(rule, f"feedback_{i}")[r].T * dlogits).sum()
            assert torch.allclose(layer.weight.grad[r], torch.autograd.grad(loss, w)[0], rtol=1e-8, atol=1e-14)
            want_c = (torch.softmax(f.detach() @ C.T, -1) - F.one_hot(y, N_CLASSES).double()).T @ f.detach() / len(y)
            assert torch.allclose(rule.classifiers[i].grad[r], want_c, atol=1e-12)
            h = out


# -- validation split, configs, smoke training ---------------------------------------------------


def test_validation_split_is_fixed_disjoint_and_reported(tmp_path):
    g = torch.Generator().manual_seed(0)
    data = Dataset("fashion-mnist", torch.randn(80, 1, 16, 16, generator=g), torch.arange(80) % N_CLASSES,
                   torch.randn(20, 1, 16, 16, generator=g), torch.arange(20) % N_CLASSES, N_CLASSES)
    a, b = split_validation(data, 0.25), split_validation(data, 0.25)
    assert len(a.x_train) == 60 and len(a.x_val) == 20 and torch.equal(a.y_val, b.y_val)
    assert not (set(a.x_train[:, 0, 0, 0].tolist()) & set(a.x_val[:, 0, 0, 0].tolist()))
    cfg = load_config(TABLE2 / "fashion-mnist-backprop-1x-sgd-div.toml",
                      ["seeds=2", "epochs=2", "model.scale=0.015625", "model.groups=1", "data.validation=0.25",
                       "optim.batch_size=20", "eval.train_samples=20", "threads=1"])
    summary = Trainer(cfg, tmp_path / "run", progress=False, data=data).run()
    assert len(summary["validation_accuracy"]) == 2 and 1 <= summary["best_validation_epoch"] <= 2
    assert summary["test_accuracy_at_best_validation_mean"] >= 0


def test_every_table2_config_loads_and_names_its_cell():
    files = sorted(TABLE2.glob("*.toml"))
    assert len(files) == 2 * 7 * 2 * 2
    for f in files:
        cfg = load_config(f)
        data, rest = ("cifar10", f.stem[8:]) if f.stem.startswith("cifar10-") else ("fashion-mnist", f.stem[14:])
        assert cfg.data.name == data and cfg.model.kind == "vgg" and cfg.data.validation == 0.1
        assert cfg.model.width == int(rest.split("-")[-3][0])
        sgd = rest.endswith("sgd-div")
        expected = ("sgd", True, False) if sgd else ("adamw", False, True)
        assert (cfg.optim.name, cfg.model.divisive_norm, cfg.model.batchnorm) == expected
        assert cfg.rule.name == ("phsic" if "phsic" in rest else rest.rsplit("-", 3)[0])


@pytest.mark.parametrize("cell", ["cifar10-phsic-gaussian-2x-adamw-bn", "fashion-mnist-sign-symmetry-1x-sgd-div",
                                  "fashion-mnist-layer-classifier-fa-2x-sgd-div"])
def test_table2_configs_train_at_tiny_width(cell, tmp_path, one_thread):
    cfg = load_config(TABLE2 / f"{cell}.toml", ["seeds=2", "epochs=1", "model.scale=0.015625", "model.groups=1",
                                                "optim.batch_size=16", "eval.train_samples=16"])
    shape = (3, 32, 32) if cell.startswith("cifar10") else (1, 28, 28)
    g = torch.Generator().manual_seed(0)
    data = Dataset(cfg.data.name, torch.randn(40, *shape, generator=g), torch.arange(40) % 10,
                   torch.randn(16, *shape, generator=g), torch.arange(16) % 10, 10)
    summary = Trainer(cfg, tmp_path / cell, progress=False, data=data).run()
    assert summary["epochs"] == 1 and all(math.isfinite(a) for a in summary["test_accuracy"])
    assert len(summary["validation_accuracy"]) == 2


@pytest.mark.parametrize("overrides,message", [
    (["rule.name=biohsic"], "does not run on model.kind = 'vgg'"),
    (["rule.name=phsic", "rule.form=pair"], "online pHSIC rule"),
    (["rule.name=phsic", "rule.estimator=unbiased"], "rule.estimator"),
    (["rule.name=sign-symmetry", "rule.feedback_scale=max"], "rule.feedback_scale"),
    (["model.width=3"], "model.width must be 1 or 2"),
    (["model.activation=tanh"], "model.activation"),
    (["data.validation=1.0"], "data.validation"),
])
def test_table2_configs_refuse_what_cannot_run_in_one_line(overrides, message):
    from ibhebb.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(TABLE2 / "fashion-mnist-backprop-1x-sgd-div.toml", overrides)
