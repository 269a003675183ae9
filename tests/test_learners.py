"""The learners on a user's own nn.Sequential train it exactly as the rules train ibhebb's own models."""
import pytest
import torch
from torch import nn

import ibhebb
from ibhebb import BioHSICLearner, ConfigError, PHSICLearner, RuleConfig, make_rule
from ibhebb.functional.conv import max_pool, max_pool_vjp
from ibhebb.functional.layers import LAYERNORM_EPS

SIGMAS = (0.5, 0.1, 1.0)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py
LR = 1e-2


def stream(n, shape, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, *shape, generator=g, dtype=torch.float64), torch.randint(0, classes, (n,), generator=g)


def copy_weights(pairs):
    """Copy ibhebb's replica-0 weights into the user's layers."""
    with torch.no_grad():
        for user, own in pairs:
            user.weight.copy_(own.weight[0])
            user.bias.copy_(own.bias[0])


def train_rule(model, cfg, xs, ys, batch=1):
    rule = make_rule(cfg.name, model, cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    for k in range(0, len(xs), batch):
        for _ in rule.updates(xs[k:k + batch], ys[k:k + batch]):
            opt.step()
            opt.zero_grad()


def train_learner(learner, net, xs, ys, batch=1):
    opt = torch.optim.AdamW(net.parameters(), lr=LR)
    steps = 0
    for k in range(0, len(xs), batch):
        if learner.step(xs[k:k + batch], ys[k:k + batch]):
            opt.step()
            opt.zero_grad()
            steps += 1
    return steps


def assert_same_weights(pairs, before):
    for (user, own), w0 in zip(pairs, before):
        assert (user.weight - w0).abs().max() > 1e-3  # it learnt
        torch.testing.assert_close(user.weight, own.weight[0], rtol=0, atol=1e-10)
        torch.testing.assert_close(user.bias, own.bias[0], rtol=0, atol=1e-10)


def mlp_pair(activation=nn.ReLU):
    model = ibhebb.MLP(20, [12, 8], 3, replicas=1, seed=0, activation={nn.ReLU: "relu", nn.Tanh: "tanh"}[activation]).double()
    ln = lambda d: nn.LayerNorm(d, elementwise_affine=False, eps=LAYERNORM_EPS)  # noqa: E731
    net = nn.Sequential(
        nn.Linear(20, 12), activation(), ln(12),
        nn.Sequential(nn.Linear(12, 8), activation(), ln(8)),  # a nested container
        nn.Linear(8, 3),
    ).double()
    pairs = list(zip([net[0], net[3][0], net[4]], model.layers()))
    copy_weights(pairs)
    return model, net, pairs


@pytest.mark.parametrize("memory", ["buffer", "recompute"])
@pytest.mark.parametrize("variant", ["paper", "first-term", "exact"])
def test_biohsic_learner_trains_a_sequential_as_the_rule_trains_mlp(variant, memory):
    model, net, pairs = mlp_pair()
    xs, ys = stream(50, (20,))
    torch.testing.assert_close(net(xs), model(xs)[0], rtol=0, atol=1e-12)
    before = [u.weight.detach().clone() for u, _ in pairs]
    state = {k: v.clone() for k, v in net.state_dict().items()}
    learner = BioHSICLearner(net, window=8, gamma=2.0, sigmas=SIGMAS, variant=variant, memory=memory)
    assert train_learner(learner, net, xs, ys) == 50 - 7  # the first N - 1 samples only fill the window
    train_rule(model, RuleConfig(window=8, gamma=2.0, sigmas=list(SIGMAS), variant=variant, memory=memory), xs, ys)
    assert_same_weights(pairs, before)
    assert net.state_dict().keys() == state.keys()  # still the user's module, nothing registered on it


def cnn_pair(layernorm, z_after_pool):
    model = ibhebb.CNN((1, 8, 8), [3, 4], 3, replicas=1, seed=0, layernorm=layernorm, z_after_pool=z_after_pool).double()
    ln = lambda shape: [nn.LayerNorm(shape, elementwise_affine=False)] if layernorm else []  # noqa: E731
    net = nn.Sequential(
        nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), *ln([3, 8, 8]), nn.AvgPool2d(2)),
        nn.Sequential(nn.Conv2d(3, 4, 3, padding="same"), nn.ReLU(), *ln([4, 4, 4]), nn.AvgPool2d(2)),
        nn.Flatten(),
        nn.Linear(16, 3),
    ).double()
    pairs = list(zip([net[0][0], net[1][0], net[3]], model.layers()))
    copy_weights(pairs)
    return model, net, pairs


@pytest.mark.parametrize("layernorm, z_after_pool, variant, memory", [
    (False, True, "paper", "buffer"),
    (True, True, "exact", "recompute"),
    (True, False, "first-term", "buffer"),
    (False, False, "paper", "recompute"),
])
def test_biohsic_learner_trains_a_conv_net_as_the_rule_trains_cnn(layernorm, z_after_pool, variant, memory):
    model, net, pairs = cnn_pair(layernorm, z_after_pool)
    xs, ys = stream(50, (1, 8, 8))
    torch.testing.assert_close(net(xs), model(xs)[0], rtol=0, atol=1e-12)
    before = [u.weight.detach().clone() for u, _ in pairs]
    learner = BioHSICLearner(net, window=4, sigmas=SIGMAS, variant=variant, memory=memory, z_after_pool=z_after_pool)
    assert train_learner(learner, net, xs, ys) == 50 - 3
    train_rule(model, RuleConfig(window=4, sigmas=list(SIGMAS), variant=variant, memory=memory), xs, ys)
    assert_same_weights(pairs, before)


@pytest.mark.parametrize("kernel", ["gaussian", "cossim"])
def test_phsic_learner_batch_form_trains_a_sequential_as_the_rule_trains_mlp(kernel):
    model, net, pairs = mlp_pair(nn.Tanh)
    xs, ys = stream(50, (20,))
    before = [u.weight.detach().clone() for u, _ in pairs]
    learner = PHSICLearner(net, gamma=2.0, sigma=1.0, kernel=kernel, form="batch")
    assert train_learner(learner, net, xs, ys, batch=10) == 5
    train_rule(model, RuleConfig(name="phsic", gamma=2.0, sigmas=[0.5, 0.1, 1.0], kernel=kernel, form="batch"), xs, ys, 10)
    assert_same_weights(pairs, before)


def test_phsic_learner_pair_form_trains_a_sequential_as_the_rule_trains_mlp():
    model, net, pairs = mlp_pair()
    xs, ys = stream(50, (20,))
    before = [u.weight.detach().clone() for u, _ in pairs]
    learner = PHSICLearner(net, gamma=2.0, sigma=1.0, form="pair", mean_rate=0.1)
    assert train_learner(learner, net, xs, ys) == 49
    train_rule(model, RuleConfig(name="phsic", gamma=2.0, form="pair", mean_rate=0.1), xs, ys)
    assert_same_weights(pairs, before)


def test_each_layer_update_is_the_vjp_of_its_own_output():
    """Every hand-written VJP (conv, tanh, affine LayerNorm, max pooling, flatten, linear) against autograd."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.LayerNorm([3, 6, 6]), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(27, 5), nn.Sigmoid(), nn.LayerNorm(5), nn.Linear(5, 2),
    ).double()
    with torch.no_grad():
        for m in (net[2], net[7]):
            m.weight.uniform_(0.5, 1.5)
            m.bias.uniform_(-0.5, 0.5)
    learner = BioHSICLearner(net)
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    h = x.unsqueeze(0)
    for layer, params in zip(learner.network.layers, [[net[0], net[2]], [net[5], net[7]]]):
        z, ins = layer.forward(h)
        cot = torch.randn_like(z)
        ours = {id(p): g.reshape(p.shape) for p, g in layer.grads(ins, z, cot)}
        ps = [p for m in params for p in (m.weight, m.bias)]
        ref = torch.autograd.grad((z * cot).sum(), ps)
        assert set(ours) == {id(p) for p in ps}
        for p, r in zip(ps, ref):
            torch.testing.assert_close(ours[id(p)], r, rtol=0, atol=1e-12)
        h = z.detach()
    torch.testing.assert_close(learner.network.readout_input(h)[0], net[:-1](x), rtol=0, atol=1e-12)


def test_max_pool_vjp_is_autograds():
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64, requires_grad=True)
    y = max_pool(x, 2)
    cot = torch.randn_like(y)
    (ref,) = torch.autograd.grad((y * cot).sum(), x)
    torch.testing.assert_close(max_pool_vjp(x.detach(), cot, 2), ref, rtol=0, atol=0)
    torch.testing.assert_close(y, nn.functional.max_pool2d(x, 2))


@pytest.mark.parametrize("layers, message", [
    ([nn.Linear(4, 6), nn.LSTM(6, 6), nn.Linear(6, 2)], r"net\[1\] \(LSTM\)"),
    ([nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)], r"net\[1\] \(BatchNorm2d\)"),
    ([nn.Linear(4, 6), nn.Sequential(nn.ReLU(), nn.Dropout(0.1)), nn.Linear(6, 2)], r"net\[1\]\[1\] \(Dropout\)"),
    ([nn.Linear(4, 6), nn.LeakyReLU(), nn.Linear(6, 2)], r"net\[1\] \(LeakyReLU\).*PHSICLearner accepts it"),
    ([nn.Conv2d(1, 2, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2)], r"net\[0\] \(Conv2d\).*stride 1"),
    ([nn.Linear(4, 6), nn.ReLU(), nn.AvgPool2d(3, stride=2), nn.Linear(6, 2)], r"net\[2\] \(AvgPool2d\)"),
    ([nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2), nn.ReLU()], r"net\[3\] \(ReLU\) after it"),
    ([nn.Linear(4, 2)], r"at least one hidden layer"),
    ([nn.Linear(4, 2), nn.ReLU(), nn.Conv2d(1, 1, 1)], r"readout, an nn.Linear; found net\[2\] \(Conv2d\)"),
    ([nn.ReLU()], r"found none"),
])
def test_a_layer_without_a_local_jacobian_is_refused_in_one_line(layers, message):
    with pytest.raises(ConfigError, match=message) as err:
        BioHSICLearner(nn.Sequential(*layers))
    assert "\n" not in str(err.value)


def test_phsic_learner_accepts_what_autograd_differentiates_and_refuses_the_rest():
    net = nn.Sequential(nn.Linear(4, 6), nn.LeakyReLU(0.1), nn.Linear(6, 3))
    assert PHSICLearner(net, form="pair").step(torch.randn(1, 4), torch.tensor([1])) is False
    with pytest.raises(ConfigError, match=r"net\[1\] \(BatchNorm1d\)"):
        PHSICLearner(nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 3)))
    with pytest.raises(ConfigError, match="split"):
        PHSICLearner(net, form="split")
    with pytest.raises(ConfigError, match="nn.Sequential"):
        BioHSICLearner(nn.Linear(4, 2))


def test_step_takes_one_sample():
    learner = BioHSICLearner(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)))
    with pytest.raises(ValueError, match="one sample"):
        learner.step(torch.randn(2, 4), torch.tensor([0, 1]))


def blobs(n, seed):
    """Three Gaussian classes in 20 dimensions."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(3, 20, generator=torch.Generator().manual_seed(123))
    y = torch.randint(0, 3, (n,), generator=g)
    return centres[y] + 0.7 * torch.randn(n, 20, generator=g), y


def test_a_users_network_learns_with_the_biohsic_learner():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.LayerNorm(32, elementwise_affine=False), nn.Linear(32, 3))
    learner = BioHSICLearner(net, window=8, gamma=2.0, sigmas=(0.5, 0.1, 1.0))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2)
    xs, ys = blobs(300, 0)
    xt, yt = blobs(300, 1)
    accuracy = lambda: (net(xt).argmax(-1) == yt).double().mean().item()  # noqa: E731
    before = accuracy()
    for x, y in zip(xs, ys):
        if learner.step(x[None], y[None]):
            opt.step()
            opt.zero_grad()
    after = accuracy()
    assert after > max(0.8, before + 0.3), (before, after)


def test_phsic_learner_on_a_conv_net_descends_each_layers_own_objective():
    from ibhebb.functional.phsic import label_kernel_matrix, layer_kernel_matrix, phsic_objective

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, padding=1), nn.GELU(), nn.LayerNorm([4, 4, 4]), nn.AvgPool2d(2), nn.Flatten(),
        nn.Linear(16, 3),
    ).double()
    x, y = torch.rand(6, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    PHSICLearner(net, gamma=2.0, sigma=1.5).step(x, y)
    ky = label_kernel_matrix(y, 3, torch.float64)
    h = x
    for start, stop in [(0, 3), (3, 8)]:
        z = net[start:stop](h.detach())
        params = list(net[start:stop].parameters())
        obj = phsic_objective(layer_kernel_matrix(z.flatten(1), "gaussian", 1.5), ky, 2.0)
        for p, g in zip(params, torch.autograd.grad(obj, params)):
            torch.testing.assert_close(p.grad, g, rtol=0, atol=1e-12)
        h = z
    (g_w,) = torch.autograd.grad(nn.functional.cross_entropy(net[-1](h.detach()), y), net[-1].weight)
    torch.testing.assert_close(net[-1].weight.grad, g_w, rtol=0, atol=1e-12)


@pytest.mark.parametrize("memory", ["buffer", "recompute"])
def test_a_learner_resumed_from_its_state_dict_continues_exactly(memory):
    def fresh():
        net = mlp_pair()[1]
        return net, BioHSICLearner(net, window=5, memory=memory), torch.optim.AdamW(net.parameters(), lr=LR)

    xs, ys = stream(30, (20,))

    def run(learner, net, opt, k0, k1):
        for x, y in zip(xs[k0:k1], ys[k0:k1]):
            if learner.step(x[None], y[None]):
                opt.step()
                opt.zero_grad()

    net, learner, opt = fresh()
    run(learner, net, opt, 0, 30)
    net2, learner2, opt2 = fresh()
    run(learner2, net2, opt2, 0, 12)
    saved = [m.state_dict() for m in (net2, learner2, opt2)]
    net3, learner3, opt3 = fresh()
    for m, s in zip((net3, learner3, opt3), saved):
        m.load_state_dict(s)
    run(learner3, net3, opt3, 12, 30)
    for a, b in zip(net.parameters(), net3.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("form", ["batch", "pair", "running-mean"])
def test_phsic_learner_trains_a_sequential_as_the_rule_trains_phsic_mlp(form):
    model = ibhebb.PHSICMLP(20, [12, 8], 3, replicas=1, seed=0, negative_slope=0.1).double()
    net = nn.Sequential(
        nn.Linear(20, 12, bias=False), nn.LeakyReLU(0.1), nn.Linear(12, 8, bias=False), nn.LeakyReLU(0.1),
        nn.Linear(8, 3, bias=False),
    ).double()
    layers = list(zip([net[0], net[2], net[4]], model.layers()))
    with torch.no_grad():
        for user, own in layers:
            user.weight.copy_(own.weight[0])
    before = [u.weight.detach().clone() for u, _ in layers]
    xs, ys = stream(50, (20,))
    batch = 10 if form == "batch" else 1
    learner = PHSICLearner(net, gamma=2.0, sigma=1.0, form=form, mean_rate=0.1)
    train_learner(learner, net, xs, ys, batch)
    train_rule(model, RuleConfig(name="phsic", gamma=2.0, form=form, mean_rate=0.1), xs, ys, batch)
    for (user, own), w0 in zip(layers, before):
        assert (user.weight - w0).abs().max() > 1e-3
        torch.testing.assert_close(user.weight, own.weight[0], rtol=0, atol=1e-10)


def test_phsic_running_mean_form_needs_bias_free_linear_layers():
    with pytest.raises(ConfigError, match=r"bias-free nn.Linear.*net\[0\]"):
        PHSICLearner(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)), form="running-mean")
    with pytest.raises(ConfigError, match="Gaussian"):
        PHSICLearner(nn.Sequential(nn.Linear(4, 6, bias=False), nn.ReLU(), nn.Linear(6, 2)), form="running-mean",
                     kernel="cossim")
