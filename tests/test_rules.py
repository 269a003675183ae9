"""The rules' weight updates against autograd of the objectives they descend (float64)."""
import pytest
import torch

from ibhebb.config import RuleConfig
from ibhebb.functional.kernels import hsic_bottleneck
from ibhebb.functional.signals import diagonal_surrogate
from ibhebb.models import MLP, LeakyMLP
from ibhebb.rules import make_rule

SIGMAS = [0.6, 0.4, 0.9]
GAMMA = 2.0


def setup(kind="mlp", window=5, memory="buffer", variant="exact", replicas=2, seed=0):
    torch.manual_seed(seed)
    cls = LeakyMLP if kind == "lif" else MLP
    extra = dict(tau_m=4.0, dt=1.0, steps=3) if kind == "lif" else {}
    model = cls(6, [5, 4], 3, replicas=replicas, seed=seed, **extra).double()
    cfg = RuleConfig(variant=variant, memory=memory, window=window, gamma=GAMMA, sigmas=SIGMAS)
    rule = make_rule("biohsic", model, cfg)
    g = torch.Generator().manual_seed(seed + 1)
    xs = torch.randn(window, 6, generator=g, dtype=torch.float64)
    ys = torch.randint(0, 3, (window,), generator=g)
    return model, rule, xs, ys


def fill_memory(rule, xs, ys):
    """Present all but the last sample; the memory must not be ready before N-1 samples."""
    for i in range(len(xs) - 1):
        assert not rule.memory.ready
        assert list(rule.updates(xs[i : i + 1], ys[i : i + 1])) == []
    assert rule.memory.ready


def layer_objective(model, rule, layer_index, params, x0, y0, variant):
    """L^ℓ (or the surrogate) as a function of layer ℓ's parameters, past outputs held fixed."""
    layer = model.hidden[layer_index]
    xw = torch.cat([rule.memory.x, x0], 0)
    yw = torch.cat([rule.memory.y, torch.nn.functional.one_hot(y0, 3).double()], 0)
    with torch.no_grad():
        h = x0
        for l in model.hidden[:layer_index]:
            h = l(h)
        past = rule.memory.z[layer_index] if rule.memory.mode == "buffer" else model.represent(rule.memory.x)[layer_index]
    w, b = params
    a = torch.baddbmm(b.unsqueeze(-2), h.expand(w.shape[0], -1, -1), w.transpose(-1, -2))
    z0 = layer.output(a)[1]
    z = torch.cat([past, z0], -2)
    if variant == "exact":
        return hsic_bottleneck(xw, yw, z, gamma=GAMMA, sigmas=tuple(SIGMAS))[0].sum()
    return 2 * diagonal_surrogate(xw, yw, z, gamma=GAMMA, sigmas=tuple(SIGMAS)).sum()


@pytest.mark.parametrize("memory", ["buffer", "recompute"])
@pytest.mark.parametrize("variant", ["exact", "paper"])
def test_hidden_update_is_autograd_of_layer_objective(memory, variant):
    model, rule, xs, ys = setup(memory=memory, variant=variant)
    fill_memory(rule, xs, ys)
    x0, y0 = xs[-1:], ys[-1:]
    wants = []
    for li, layer in enumerate(model.hidden):
        params = [layer.weight.detach().clone().requires_grad_(), layer.bias.detach().clone().requires_grad_()]
        wants.append(torch.autograd.grad(layer_objective(model, rule, li, params, x0, y0, variant), params))
    updates = rule.updates(x0, y0)
    next(updates)
    for layer, (gw, gb) in zip(model.hidden, wants):
        torch.testing.assert_close(layer.weight.grad, gw, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(layer.bias.grad, gb, rtol=1e-9, atol=1e-12)
    assert gw.abs().max() > 0


def test_readout_update_is_autograd_of_window_cross_entropy():
    model, rule, xs, ys = setup()
    fill_memory(rule, xs, ys)
    with torch.no_grad():
        h = torch.cat([rule.memory.z[-1], model.represent(xs[-1:])[-1]], -2)
    w = model.readout.weight.detach().clone().requires_grad_()
    b = model.readout.bias.detach().clone().requires_grad_()
    logits = torch.baddbmm(b.unsqueeze(-2), h, w.transpose(-1, -2))
    loss = sum(torch.nn.functional.cross_entropy(lr, ys) for lr in logits)
    gw, gb = torch.autograd.grad(loss, [w, b])
    next(rule.updates(xs[-1:], ys[-1:]))
    torch.testing.assert_close(model.readout.weight.grad, gw, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(model.readout.bias.grad, gb, rtol=1e-9, atol=1e-12)


def test_leaky_network_step_update_is_autograd_with_previous_potential_fixed():
    """For a leaky layer the local factor holds the previous potential fixed."""
    model, rule, xs, ys = setup(kind="lif", variant="exact")
    fill_memory(rule, xs, ys)
    x0, y0 = xs[-1:], ys[-1:]
    layer = model.hidden[0]
    steps = rule.updates(x0, y0)
    # replay the presentation to know u_{t-1} at the first step (rest: 0)
    next(steps)
    got_w = layer.weight.grad.clone()
    xw = torch.cat([rule.memory.x, x0], 0)
    yw = torch.cat([rule.memory.y, torch.nn.functional.one_hot(y0, 3).double()], 0)
    w = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_()
    u = model.leak * torch.baddbmm(b.unsqueeze(-2), x0.expand(2, -1, -1), w.transpose(-1, -2))
    z = torch.cat([rule.memory.z[0], layer.output(u)[1]], -2)
    loss = hsic_bottleneck(xw, yw, z, gamma=GAMMA, sigmas=tuple(SIGMAS))[0].sum()
    (gw,) = torch.autograd.grad(loss, [w])
    torch.testing.assert_close(got_w, gw, rtol=1e-9, atol=1e-12)
    # one update per time step
    assert 1 + len(list(steps)) == model.steps


def test_leaky_network_every_step_and_readout_are_autograd_with_previous_potential_fixed():
    """At every time step t of a presentation each hidden layer's update is autograd of its objective through
    ``u_t = u_{t-1} + (Δt/τ_m)(W h_t + b - u_{t-1})`` with ``u_{t-1}`` and ``h_t`` held fixed (the potentials are
    replayed independently here), and the readout's is autograd of the window's cross-entropy."""
    model, rule, xs, ys = setup(kind="lif", variant="exact")
    fill_memory(rule, xs, ys)
    x0, y0 = xs[-1:], ys[-1:]
    xw = torch.cat([rule.memory.x, x0], 0)
    yw = torch.cat([rule.memory.y, torch.nn.functional.one_hot(y0, 3).double()], 0)
    leak = 1.0 / 4.0  # dt / tau_m of setup()
    prev = [torch.zeros(2, 1, layer.weight.shape[1]) for layer in model.layers()]
    steps = rule.updates(x0, y0)
    for t in range(model.steps):
        model.zero_grad()
        next(steps)  # no optimiser step: the weights stay put, so the replay below sees the same network
        h = x0.expand(2, -1, -1)
        for li, layer in enumerate(model.layers()):
            w = layer.weight.detach().clone().requires_grad_()
            b = layer.bias.detach().clone().requires_grad_()
            u = prev[li] + leak * (torch.baddbmm(b.unsqueeze(-2), h, w.transpose(-1, -2)) - prev[li])
            if li < len(model.hidden):
                z = torch.nn.functional.layer_norm(torch.relu(u), u.shape[-1:], eps=1e-5)
                loss = hsic_bottleneck(xw, yw, torch.cat([rule.memory.z[li], z], -2), gamma=GAMMA, sigmas=tuple(SIGMAS))[0]
            else:  # the readout: softmax cross-entropy of W h + b over the window of last-layer outputs
                hw = torch.cat([rule.memory.z[-1], h], -2)
                logits = torch.baddbmm(b.unsqueeze(-2), hw, w.transpose(-1, -2))
                loss = torch.stack([torch.nn.functional.cross_entropy(lg, yw.argmax(-1)) for lg in logits])
            gw, gb = torch.autograd.grad(loss.sum(), [w, b])
            torch.testing.assert_close(layer.weight.grad, gw, rtol=1e-9, atol=1e-12, msg=f"step {t + 1}, layer {li}")
            torch.testing.assert_close(layer.bias.grad, gb, rtol=1e-9, atol=1e-12, msg=f"step {t + 1}, layer {li}")
            prev[li] = u.detach()
            h = z.detach() if li < len(model.hidden) else None
    assert model.steps == 3 and next(steps, None) is None
    assert prev[0].abs().min() > 0  # from step 2 on the previous potential was not rest


def test_no_update_crosses_layers():
    """Changing a later layer's weights does not change an earlier layer's update."""
    model, rule, xs, ys = setup(variant="paper")
    fill_memory(rule, xs, ys)
    state = {k: v.clone() for k, v in rule.memory.get_extra_state().items() if k != "z"}
    zs = [z.clone() for z in rule.memory.z]
    next(rule.updates(xs[-1:], ys[-1:]))
    g0 = model.hidden[0].weight.grad.clone()
    model.zero_grad()
    with torch.no_grad():
        model.hidden[1].weight.mul_(-3.0)
        model.readout.weight.mul_(5.0)
    rule.memory.set_extra_state({**state, "z": zs})
    rule.memory.count.fill_(len(xs) - 1)
    next(rule.updates(xs[-1:], ys[-1:]))
    torch.testing.assert_close(model.hidden[0].weight.grad, g0)


def test_backprop_and_last_layer_replicas_independent():
    from ibhebb.rules.baselines import replica_cross_entropy

    model = MLP(6, [5], 3, replicas=3, seed=1).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    next(make_rule("backprop", model, RuleConfig()).updates(x, y))
    single = MLP(6, [5], 3, replicas=3, seed=1).double()
    logits = single(x)[1:2]
    replica_cross_entropy(logits, y).backward()
    torch.testing.assert_close(model.hidden[0].weight.grad[1], single.hidden[0].weight.grad[1])
    model.zero_grad()
    rule = make_rule("last-layer", model, RuleConfig())
    next(rule.updates(x, y))
    assert model.hidden[0].weight.grad is None or model.hidden[0].weight.grad.abs().sum() == 0
    assert model.readout.weight.grad.abs().sum() > 0
    assert rule.trainable() == list(model.readout.parameters())


def test_last_layer_update_is_the_cross_entropy_gradient_of_the_readout():
    """Written out: ``∂/∂W_r mean_b CE = (softmax(h W_rᵀ + b_r) - onehot)ᵀ h / B`` per replica, on frozen features."""
    model = MLP(6, [5], 3, replicas=3, seed=2).double()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 2, 2, 1])
    next(make_rule("last-layer", model, RuleConfig()).updates(x, y))
    with torch.no_grad():
        h = model.represent(x)[-1]  # (R, B, 5)
        W, b = model.readout.weight, model.readout.bias
        p = torch.softmax(h @ W.transpose(-1, -2) + b.unsqueeze(-2), -1)
        delta = (p - torch.nn.functional.one_hot(y, 3).double()) / len(y)
    torch.testing.assert_close(model.readout.weight.grad, delta.transpose(-1, -2) @ h, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(model.readout.bias.grad, delta.sum(-2), rtol=1e-12, atol=1e-14)
    assert model.readout.weight.grad.abs().max() > 1e-3
