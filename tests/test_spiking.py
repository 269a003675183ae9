"""Spiking networks under the three-factor rule (issue 18, MATH §10).

β of every form against autograd of an independent simulation of the layer
(float64, previous state detached), the escape noise against its closed
forms, the dynamics against hand-computed traces, reproducibility of the
spikes, and learning XOR.
"""
import copy
import math

import pytest
import torch

from ibhebb.config import load_config
from ibhebb.errors import ConfigError
from ibhebb.functional import spiking as F
from ibhebb.models.spiking import SpikeTrace, SpikingMLP

# -- integrate-and-fire dynamics against hand-computed traces ------------------------------------

def run_neuron(currents, p):
    state, out = F.lif_rest((1,), like=torch.zeros(1, dtype=torch.float64)), []
    for i in currents:
        s, state = F.lif_spike_step(torch.tensor([float(i)], dtype=torch.float64), state, p)
        out.append((int(s), state.v.item(), int(state.refractory_count)))
    return [o[0] for o in out], [o[1] for o in out], [o[2] for o in out]


@pytest.mark.parametrize(
    "currents, reset, refractory, spikes, v, counts",
    [
        # dt/τ = 1/2, ϑ = 1: v' = v + (I - v)/2
        ([3, 3, 0, 1.5, 1.5, 1.5], "zero", 0, [1, 1, 0, 0, 1, 0], [0, 0, 0, 0.75, 0, 0.75], [0] * 6),
        ([3, 3, 0, 1.5, 1.5, 1.5], "subtract", 0, [1, 1, 0, 0, 1, 0],
         [0.5, 0.75, 0.375, 0.9375, 0.21875, 0.859375], [0] * 6),
        ([3] * 7, "zero", 2, [1, 0, 0, 1, 0, 0, 1], [0] * 7, [2, 1, 0, 2, 1, 0, 2]),
        ([3] * 7, "subtract", 2, [1, 0, 0, 1, 0, 0, 1], [0.5, 0.5, 0.5, 0.75, 0.75, 0.75, 0.875], [2, 1, 0, 2, 1, 0, 2]),
        ([2, 2, 2], "zero", 0, [0, 1, 0], [1.0, 0, 1.0], [0] * 3),  # v' = ϑ exactly is no spike
    ],
)
def test_lif_against_hand_computed_trace(currents, reset, refractory, spikes, v, counts):
    p = F.LIFSpikeParams(tau_mem=2.0, threshold=1.0, reset=reset, refractory=refractory, dt=1.0)
    got_s, got_v, got_c = run_neuron(currents, p)
    assert got_s == spikes
    assert got_v == pytest.approx(v, abs=1e-12)
    assert got_c == counts


def test_readouts_against_hand_computed_values():
    s = [1.0, 0.0, 1.0, 1.0]
    for mode, want, kappas in (("count", [1, 0.5, 2 / 3, 0.75], [1, 1 / 2, 1 / 3, 1 / 4]),
                               ("trace", [0.5, 0.25, 0.625, 0.8125], [0.5] * 4)):
        r, got, ks = torch.zeros(1, dtype=torch.float64), [], []
        for t, st in enumerate(s, 1):
            r, k = F.readout_step(r, torch.tensor([st], dtype=torch.float64), t, mode, tau_syn=2.0, dt=1.0)
            got.append(r.item())
            ks.append(k)
        assert got == pytest.approx(want, abs=1e-12)
        assert ks == pytest.approx(kappas)


# -- surrogates and escape noise: closed forms --------------------------------------------------

def test_surrogate_closed_forms_and_autograd_function():
    x = torch.linspace(-2, 2, 41, dtype=torch.float64, requires_grad=True)
    for kind, k, want in (("fast-sigmoid", 3.0, 1 / (1 + 3.0 * x.detach().abs()) ** 2),
                          ("arctan", 2.0, 1.0 / (1 + (math.pi * x.detach()) ** 2))):
        assert torch.allclose(F.surrogate_grad(x.detach(), kind, k), want, atol=1e-14)
        s = F.SurrogateSpike.apply(x, kind, k)
        assert torch.equal(s.detach(), (x.detach() > 0).double())
        (g,) = torch.autograd.grad(s.sum(), x)
        assert torch.allclose(g, want, atol=1e-14)


@pytest.mark.parametrize("kind", F.ESCAPES)
def test_escape_probability_and_derivative_closed_forms(kind):
    width = 0.4
    x = torch.tensor([-1.5, -0.3, -0.01, 0.2, 1.0], dtype=torch.float64, requires_grad=True)
    p = F.escape_prob(x, kind, width)
    xd = x.detach()
    if kind == "sigmoid":
        want = 1 / (1 + torch.exp(-xd / width))
        want_grad = want * (1 - want) / width
    else:
        want = torch.where(xd < 0, torch.exp(xd / width), torch.ones_like(xd))
        want_grad = torch.where(xd < 0, want / width, torch.zeros_like(xd))
    assert torch.allclose(p.detach(), want, atol=1e-14)
    assert torch.allclose(F.escape_prob_grad(xd, kind, width), want_grad, atol=1e-14)
    (g,) = torch.autograd.grad(p.sum(), x)
    assert torch.allclose(g, want_grad, atol=1e-14)
    if kind == "exp":  # the poster's f' = f at δ = 1
        assert torch.allclose(F.escape_prob_grad(xd[xd < 0], "exp", 1.0), F.escape_prob(xd[xd < 0], "exp", 1.0))


@pytest.mark.parametrize("kind", F.ESCAPES)
def test_escape_neuron_fires_with_its_probability(kind):
    n = 200_000
    p = F.LIFSpikeParams(tau_mem=2.0, threshold=1.0, dt=1.0)
    state = F.lif_rest((n,), like=torch.zeros(1, dtype=torch.float64))
    current = torch.full((n,), 1.8, dtype=torch.float64)  # v' = 0.9, x = -0.1
    noise = torch.rand(n, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    s, _ = F.lif_spike_step(current, state, p, noise=noise, escape=kind, width=0.25)
    want = F.escape_prob(torch.tensor(-0.1, dtype=torch.float64), kind, 0.25).item()
    assert abs(s.mean().item() - want) < 5 * math.sqrt(want * (1 - want) / n)


@pytest.mark.parametrize("encoding", ["bernoulli", "poisson"])
def test_spike_encodings_rates_and_signs(encoding):
    x = torch.tensor([[0.0, 0.3, -0.6, 2.0]], dtype=torch.float64).expand(50_000, 4)
    gens = [torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)]
    s = F.encode(x, encoding, generators=gens, scale=1.0, dt=0.5)
    assert s.shape == (2, 50_000, 4)
    mag = x[0].abs()
    want = mag.clamp_max(1) if encoding == "bernoulli" else 1 - torch.exp(-mag * 0.5)
    freq = s.abs().mean((0, 1))
    assert torch.allclose(freq, want, atol=0.01)
    assert (s[..., 2] <= 0).all() and (s[..., 1] >= 0).all()
    assert not torch.equal(s[0], s[1])  # each replica its own draws


def test_spike_encoding_offset_maps_normalised_images_to_pixel_intensities():
    """``offset = 1, scale = 0.5`` on inputs in [-1, 1]: the spike probability is the pixel intensity ``(x + 1)/2``;
    a black pixel (-1) never spikes, every spike is excitatory; the signed probability is what the spikes follow."""
    x = torch.tensor([[-1.0, -0.5, 0.0, 1.0]], dtype=torch.float64).expand(40_000, 4)
    s = F.encode(x, "bernoulli", generators=[torch.Generator().manual_seed(0)], scale=0.5, offset=1.0)
    assert torch.allclose(s.mean((0, 1)), torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64), atol=0.01)
    assert (s[..., 0] == 0).all() and (s >= 0).all()
    q = F.signed_input_prob(torch.tensor([-3.0, -1.0, 0.2]), "poisson", scale=2.0, dt=0.5, offset=1.0)
    assert torch.allclose(q, torch.tensor([-(1 - math.exp(-2.0)), 0.0, 1 - math.exp(-1.2)]))
    u = torch.rand(1000, 3, generator=torch.Generator().manual_seed(2))
    xs = torch.tensor([-3.0, -1.0, 0.2]).unsqueeze(0)
    want = (u < q.abs()).float() * q.sign()
    assert torch.equal(F.encode_uniform(xs, u, "poisson", scale=2.0, dt=0.5, offset=1.0), want)


# -- β of the model against autograd of an independent simulation -------------------------------

def make_net(firing, *, layernorm, spike_z, reset, refractory, encoding="current", replicas=2, seed=0, steps=6):
    net = SpikingMLP(
        3, [5, 4], 2, replicas=replicas, seed=seed, steps=steps, firing=firing, layernorm=layernorm, spike_z=spike_z,
        neuron=F.LIFSpikeParams(tau_mem=2.0, threshold=0.3, reset=reset, refractory=refractory, dt=1.0),
        surrogate="arctan" if reset == "subtract" else "fast-sigmoid", surrogate_slope=2.0,
        escape="exp" if reset == "subtract" else "sigmoid", escape_width=0.5, encoding=encoding, input_scale=0.8,
        tau_syn=3.0,
    ).double()
    with torch.no_grad():
        for layer in net.hidden:
            layer.weight.mul_(3.0)
    return net


def dense_current(layer, h, w, b):
    R = w.shape[0]
    return torch.einsum("rbi,roi->rbo", h.expand(R, *h.shape[-2:]), w) + b[:, None, :]


def conv_current(layer, h, w, b):
    """Each replica's own ``conv2d`` of its input maps, average-pooled first (independent of the grouped convolution)."""
    R, (c, hh, ww) = w.shape[0], layer.in_shape
    h = h.expand(R, *h.shape[-2:])
    out = []
    for r in range(R):
        maps = h[r].reshape(-1, c, hh, ww)
        if layer.pool_in > 1:
            maps = torch.nn.functional.avg_pool2d(maps, layer.pool_in)
        out.append(torch.nn.functional.conv2d(maps, w[r], b[r], padding=1).flatten(1))
    return torch.stack(out)


def reference_steps(net, x, model_traces, current_of=dense_current):
    """An autograd simulation of the network, the previous state detached at each step.

    The spike is ``SurrogateSpike`` (surrogate form) or ``s + f(x) - f(x).detach()`` (escape form, the
    model's own random spike with the derivative of its expectation); the inputs and escape spikes are
    taken from the model's traces, everything else is recomputed. Yields, per step and hidden layer,
    ``(spikes, z, (gW, gb), cot, refractory neurons)`` for a fixed cotangent ``cot`` of ``z``.
    """
    p, leak = net.neuron, net.neuron.dt / net.neuron.tau_mem
    R, B = net.replicas, x.shape[0]
    v = [torch.zeros(R, B, l.out_features, dtype=x.dtype) for l in net.hidden]
    count = [torch.zeros(R, B, l.out_features, dtype=torch.long) for l in net.hidden]
    r = [torch.zeros(R, B, l.out_features, dtype=x.dtype) for l in net.hidden]
    for t, traces in enumerate(model_traces, 1):
        h, out = traces[0].h, []
        for i, layer in enumerate(net.hidden):
            w = layer.weight.detach().clone().requires_grad_(True)
            b = layer.bias.detach().clone().requires_grad_(True)
            current = current_of(layer, h, w, b)
            active = count[i] == 0
            vp = torch.where(active, v[i] + leak * (current - v[i]), v[i])
            xth = vp - p.threshold
            if net.firing == "surrogate":
                s = F.SurrogateSpike.apply(xth, net.surrogate, net.surrogate_slope)
            else:
                f = F.escape_prob(xth, net.escape, net.escape_width)
                s = traces[i].spikes + f - f.detach()
            s = s * active
            k = 1.0 / t if net.spike_z == "count" else p.dt / net.tau_syn
            rt = r[i] + k * (s - r[i])
            z = torch.nn.functional.layer_norm(rt, (rt.shape[-1],), eps=1e-5) if net.hidden[i].layernorm else rt
            cot = torch.linspace(-1, 1, z.shape[-1], dtype=z.dtype) * (i + 1)
            grads = torch.autograd.grad((z * cot).sum(), (w, b))
            sd = s.detach().round()  # the escape form's s + f - f is s up to rounding
            out.append((sd, z.detach(), grads, cot, int((~active).sum())))
            v[i] = (vp * (1 - sd) if p.reset == "zero" else vp - p.threshold * sd).detach()
            count[i] = torch.where(sd > 0, torch.full_like(count[i], p.refractory), (count[i] - 1).clamp_min(0))
            r[i] = rt.detach()
            h = sd
        yield out


def check_steps_against_reference(net, x, current_of=dense_current) -> tuple[list, int, int]:
    """Every step's spikes, ``z`` and β-weighted gradients of every hidden layer equal :func:`reference_steps`'s;
    ``(traces, spikes, refractory steps)`` for the behaviour checks."""
    traces = list(net.present(x))
    n_spikes = n_refractory = 0
    for step, ref in zip(traces, reference_steps(net, x, traces, current_of)):
        for layer, tr, (s, z, (gw, gb), cot, n_ref) in zip(net.hidden, step[:-1], ref):
            assert isinstance(tr, SpikeTrace)
            assert torch.equal(tr.spikes, s)
            assert torch.allclose(tr.z, z, atol=1e-12)
            layer.weight.grad = layer.bias.grad = None
            layer.accumulate_grad(tr.h, layer.output_vjp(tr.a, tr.r, tr.z, cot), tr.scale)
            assert torch.allclose(layer.weight.grad, gw, atol=1e-12, rtol=1e-10)
            assert torch.allclose(layer.bias.grad, gb, atol=1e-12, rtol=1e-10)
            n_spikes += int(s.sum())
            n_refractory += n_ref
    return traces, n_spikes, n_refractory


@pytest.mark.parametrize("firing", F.FIRINGS)
@pytest.mark.parametrize(
    "layernorm, spike_z, reset, refractory, encoding",
    [(False, "count", "zero", 0, "current"), (True, "trace", "subtract", 1, "bernoulli"),
     (True, "count", "zero", 2, "poisson"), (False, "trace", "subtract", 0, "current")],
)
def test_beta_equals_autograd_of_the_layer_output(firing, layernorm, spike_z, reset, refractory, encoding):
    torch.manual_seed(0)
    net = make_net(firing, layernorm=layernorm, spike_z=spike_z, reset=reset, refractory=refractory, encoding=encoding)
    x = torch.rand(3, 3, dtype=torch.float64) * 2 - 0.5
    traces, n_spikes, n_refractory = check_steps_against_reference(net, x)
    assert n_spikes > 0 and any(float(t.spikes.detach().sum()) < t.spikes.numel() for step in traces for t in step[:-1])
    if refractory:
        assert n_refractory > 0
    assert sum(float(g.abs().sum()) for g in (layer.weight.grad for layer in net.hidden)) > 0


@pytest.mark.parametrize("firing", F.FIRINGS)
@pytest.mark.parametrize(
    "layernorm, spike_z, reset, refractory, encoding",
    [(True, "count", "zero", 1, "current"), (False, "trace", "subtract", 0, "bernoulli")],
)
def test_conv_beta_equals_autograd_of_the_layer_output(firing, layernorm, spike_z, reset, refractory, encoding):
    """SpikingCNN (two 3×3 conv LIF layers, the second on the first's 2×2-pooled spike maps): β of every step equals
    autograd of the layer's readout through each replica's own conv2d, previous state fixed (float64)."""
    from ibhebb.models.spiking import SpikingCNN

    torch.manual_seed(0)
    net = SpikingCNN(
        (2, 6, 6), [3, 2], 3, replicas=2, seed=1, steps=5, firing=firing, layernorm=layernorm, spike_z=spike_z,
        neuron=F.LIFSpikeParams(tau_mem=2.0, threshold=0.3, reset=reset, refractory=refractory, dt=1.0),
        surrogate_slope=2.0, escape_width=0.5, encoding=encoding, input_scale=0.8, tau_syn=3.0,
    ).double()
    with torch.no_grad():
        for layer in net.hidden:
            layer.weight.mul_(2.0)
    x = torch.rand(3, 72, dtype=torch.float64) * 2 - 0.5
    traces, n_spikes, n_refractory = check_steps_against_reference(net, x, conv_current)
    assert n_spikes > 0 and all(float(t.spikes.detach().sum()) < t.spikes.numel() for step in traces for t in step[:-1])
    assert (n_refractory > 0) == (refractory > 0)
    assert all(float(layer.weight.grad.abs().sum()) > 0 for layer in net.hidden)


def test_spiking_cnn_config_trains_with_the_rule_and_bptt(tmp_path):
    """``model.kind = "spiking-cnn"`` from a config: the engine refuses it (the rule's loop trains it), the rule and
    BPTT both move the conv weights, and the network reports its firing statistics."""
    from ibhebb.data.dataset import Dataset
    from ibhebb.engine import unsupported
    from ibhebb.train.trainer import build

    over = {"seeds": 2, "epochs": 1, "threads": 1, "data": {"name": "mnist", "n_train": 40, "n_test": 20},
            "model": {"kind": "spiking-cnn", "channels": [2], "steps": 3, "threshold": 0.05},
            "rule": {"name": "biohsic", "window": 4}, "eval": {"train_samples": 0, "hsic_samples": 0, "firing_samples": 10}}
    cfg = load_config(None, over)
    assert "spiking-cnn" in unsupported(cfg)
    g = torch.Generator().manual_seed(0)
    data = Dataset("mnist", torch.rand(40, 1, 8, 8, generator=g), torch.randint(0, 10, (40,), generator=g),
                   torch.rand(20, 1, 8, 8, generator=g), torch.randint(0, 10, (20,), generator=g), 10)
    for rule in ("biohsic", "spiking-bptt"):
        c = load_config(None, {**over, "rule": {**over["rule"], "name": rule}, "optim": {"batch_size": 4}})
        model, learner, opt = build(c, data)
        w0 = model.hidden[0].weight.detach().clone()
        model.train()
        if rule == "biohsic":
            for i in range(12):
                for _ in learner.updates(data.x_train[i : i + 1], data.y_train[i : i + 1]):
                    opt.step()
                    opt.zero_grad()
        else:
            for _ in learner.updates(data.x_train[:8], data.y_train[:8]):
                opt.step()
                opt.zero_grad()
        assert (model.hidden[0].weight - w0).abs().max() > 0, rule
    stats = model.firing_statistics(model.flatten(data.x_test))
    assert len(stats) == 1 and 0 < stats[0]["rate"][0] < 1
    with pytest.raises(ConfigError, match="model.channels"):
        load_config(None, {**over, "model": {**over["model"], "channels": [0]}})


def test_escape_beta_uses_the_escape_derivative_not_the_surrogate():
    """The two forms differ: same weights and potentials, β's spike factor is f'(v' - ϑ) vs the surrogate."""
    net = make_net("escape", layernorm=False, spike_z="count", reset="zero", refractory=0)
    tr = next(iter(net.present(torch.rand(2, 3, dtype=torch.float64))))[0]
    x = tr.v - net.neuron.threshold
    assert torch.allclose(tr.a, F.escape_prob_grad(x, "sigmoid", 0.5), atol=1e-15)
    assert not torch.allclose(tr.a, F.surrogate_grad(x, "fast-sigmoid", 2.0))


# -- reproducibility ------------------------------------------------------------------------------

def spikes_of(net, x):
    return [torch.stack([t.spikes for t in step[:-1][:1]]) for step in net.present(x)]


def test_same_seed_same_spikes_across_replicas_runs_and_resume():
    kw = dict(layernorm=False, spike_z="count", reset="zero", refractory=0, encoding="bernoulli")
    x1, x2 = torch.rand(4, 3, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64)
    a, b = make_net("escape", replicas=3, seed=5, **kw), make_net("escape", replicas=3, seed=5, **kw)
    one = make_net("escape", replicas=1, seed=5, **kw)
    sa, sb, s1 = spikes_of(a, x1), spikes_of(b, x1), spikes_of(one, x1)
    assert all(torch.equal(p, q) for p, q in zip(sa, sb))
    assert all(torch.equal(p[:, :1], q) for p, q in zip(sa, s1))  # replica 0 whatever R is
    assert any(not torch.equal(p[:, 0], p[:, 1]) for p in sa)
    other = spikes_of(make_net("escape", replicas=3, seed=6, **kw), x1)
    assert any(not torch.equal(p, q) for p, q in zip(sa, other))
    # resume: the generators travel in the state_dict
    resumed = make_net("escape", replicas=3, seed=99, **kw)
    resumed.load_state_dict(copy.deepcopy(a.state_dict()))
    sa2 = spikes_of(a, x2)
    assert all(torch.equal(p, q) for p, q in zip(sa2, spikes_of(resumed, x2)))
    # evaluation draws from its own stream: it does not change what training sees next
    b.eval()
    b(x1)
    b.train()
    assert all(torch.equal(p, q) for p, q in zip(spikes_of(b, x2), sa2))
    # every evaluation pass starts the evaluation stream afresh: what was evaluated before does not matter
    b.eval()
    first = b(x1)
    b(x2)
    b.eval()
    assert torch.equal(b(x1), first)


def test_an_epochs_measurements_do_not_depend_on_which_others_are_made():
    """With escape noise, the test accuracy is the same whether or not the HSIC and firing diagnostics ran first
    (they draw from the evaluation stream too)."""
    from ibhebb.data.dataset import Dataset
    from ibhebb.train.trainer import build, evaluate

    g = torch.Generator().manual_seed(1)
    data = Dataset("xor", torch.rand(30, 2, generator=g) * 2 - 1, torch.randint(0, 2, (30,), generator=g),
                   torch.rand(200, 2, generator=g) * 2 - 1, torch.randint(0, 2, (200,), generator=g), 2)
    over = {"seeds": 3, "epochs": 1, "threads": 1, "data": {"name": "xor"},
            "model": {"kind": "spiking-mlp", "hidden": [6], "firing": "escape", "steps": 4, "threshold": 0.2},
            "rule": {"name": "biohsic", "window": 4}}
    results = []
    for hsic, firing in ((0, 0), (50, 50)):
        cfg = load_config(None, {**over, "eval": {"train_samples": 0, "hsic_samples": hsic, "firing_samples": firing}})
        model, _, _ = build(cfg, data)
        evaluate(model, data, cfg)  # a first epoch's measurements, then the second epoch's
        results.append(evaluate(model, data, cfg))
    assert results[0]["test_accuracy"] == results[1]["test_accuracy"]
    assert results[0]["train_accuracy"] == results[1]["train_accuracy"]
    assert "layers" in results[1] and "firing" in results[1]


# -- the rule with the memories, and configs -----------------------------------------------------

def test_buffer_and_recompute_agree_before_any_update():
    """The first update sees the window as stored (buffer) or recomputed (recompute): equal when no weight has moved."""
    from ibhebb.rules import make_rule

    grads = []
    x = torch.rand(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 1, 0])
    for memory in ("buffer", "recompute"):
        cfg = load_config(None, {"data": {"name": "xor"}, "model": {"kind": "spiking-mlp", "hidden": [5, 4]},
                                 "rule": {"memory": memory, "window": 4}})
        net = make_net("surrogate", layernorm=True, spike_z="trace", reset="subtract", refractory=1)
        rule = make_rule("biohsic", net, cfg.rule)
        for i in range(3):
            assert list(rule.updates(x[i : i + 1], y[i : i + 1])) == []
        it = rule.updates(x[3:], y[3:])
        next(it)
        grads.append([p.grad.clone() for p in net.parameters()])
    assert all(torch.allclose(g, h, atol=1e-12) for g, h in zip(*grads))
    assert any(g.abs().sum() > 0 for g in grads[0][:2])


def test_config_keys_are_checked():
    base = {"data": {"name": "xor"}, "model": {"kind": "spiking-mlp", "hidden": [4]}}
    cfg = load_config(None, base)
    assert cfg.model.reset == "zero" and cfg.model.firing == "surrogate"
    for bad in ({"reset": "hard"}, {"firing": "random"}, {"surrogate": "relu"}, {"encoding": "rate"},
                {"spike_z": "rate"}, {"threshold": 0.0}, {"dt": 6.0}, {"refractory": -1}, {"tau_syn": 0.5}):
        with pytest.raises(ConfigError):
            load_config(None, {**base, "model": {**base["model"], **bad}})


@pytest.mark.parametrize("name", ["fig4-linear-spiking-surrogate", "fig4-linear-spiking-escape", "fig4-xor-spiking-surrogate",
                                  "fig4-xor-spiking-escape", "fig5-mnist-spiking-surrogate", "fig5-mnist-spiking-escape"])
def test_shipped_configs_load(name):
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / f"{name}.toml")
    assert cfg.model.kind == "spiking-mlp" and cfg.model.firing == name.rsplit("-", 1)[1]


# -- the surrogate-gradient BPTT baseline --------------------------------------------------------

@pytest.mark.parametrize("firing", F.FIRINGS)
def test_bptt_gradient_of_one_step_is_the_local_factor_with_the_true_cotangent(firing):
    """At ``T = 1`` nothing is earlier in time, so BPTT's hidden gradient is β applied to ``∂L/∂z``."""
    from ibhebb.rules.baselines import replica_cross_entropy

    net = make_net(firing, layernorm=True, spike_z="count", reset="zero", refractory=0, steps=1)
    net.hidden = net.hidden[:1]
    net.readout = torch.nn.Module()
    from ibhebb.models.layers import Dense, replica_generators

    net.readout = Dense(5, 2, generators=replica_generators(1, 2), activation="identity", layernorm=False).double()
    x, y = torch.rand(4, 3, dtype=torch.float64), torch.tensor([0, 1, 1, 0])
    state = copy.deepcopy(net.state_dict())
    replica_cross_entropy(net(x), y).backward()
    bptt = net.hidden[0].weight.grad.clone()
    net.load_state_dict(state)
    with torch.no_grad():
        (tr, out), = list(net.present(x))
    z = tr.z.clone().requires_grad_(True)
    (cot,) = torch.autograd.grad(replica_cross_entropy(net.readout(z), y), z)
    net.hidden[0].weight.grad = None
    net.hidden[0].accumulate_grad(tr.h, net.hidden[0].output_vjp(tr.a, tr.r, tr.z, cot), tr.scale)
    assert bptt.abs().sum() > 0
    assert torch.allclose(net.hidden[0].weight.grad, bptt, atol=1e-12, rtol=1e-9)


def test_bptt_config_needs_the_spiking_model():
    with pytest.raises(ConfigError):
        load_config(None, {"data": {"name": "xor"}, "rule": {"name": "spiking-bptt"}})
    load_config(None, {"data": {"name": "xor"}, "model": {"kind": "spiking-mlp"}, "rule": {"name": "spiking-bptt"}})


# -- learning -----------------------------------------------------------------------------------

XOR_FAST = {
    "seeds": 3, "epochs": 3, "threads": 1, "engine": "auto",
    "data": {"name": "xor", "n_train": 300},
    "model": {"kind": "spiking-mlp", "hidden": [16], "tau_m": 2.0, "steps": 3, "threshold": 0.1, "layernorm": True,
              "firing": "surrogate", "surrogate": "fast-sigmoid", "surrogate_slope": 5.0, "spike_z": "count"},
    "rule": {"name": "biohsic", "memory": "buffer", "window": 16, "gamma": 10.0, "sigmas": [0.3, 0.25, 1.0]},
    "optim": {"name": "adamw", "lr": 1e-2, "readout_lr": 5e-2},
    "eval": {"train_samples": 0, "hsic_samples": 0},
}


def test_spiking_network_learns_xor_with_the_rule(tmp_path):
    """2-16-2 LIF network, surrogate β, 3 × 300 samples of 3 steps: every replica ≥ 0.95 on the test set."""
    from ibhebb.train import Trainer

    cfg = load_config(None, XOR_FAST)
    summary = Trainer(cfg, tmp_path, progress=False).run()
    assert min(summary["test_accuracy"]) >= 0.95, summary["test_accuracy"]
    last = [__import__("json").loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
    from ibhebb.engine import cstep

    assert last["engine"] == ("native" if cstep.unavailable(getattr(torch, cfg.dtype)) is None else "torch")


@pytest.mark.parametrize("firing", ["surrogate", "escape"])
def test_shipped_xor_configs_learn_xor(tmp_path, firing):
    """The shipped 2-10-4-2 XOR configs over 15 seeds (replicas 0-14 of seed 0, 10 epochs): mean test accuracy
    ≥ 0.95, at most 2 seeds below 0.9, none stuck at the 0.75 of a network that separates only three corners (the
    configs reached 0.88 and 0.66 before issue 18).

    One seed's outcome depends on the last bits of its sums, which differ between CPUs (AVX-512 or AVX2
    vectors): with the config's 5 seeds, escape noise gave 0.996 on one machine and 0.93 on another. Fifteen
    seeds under three arithmetics (C step float32, float64, the rule's loop in float32) gave means of 0.969-0.987
    (surrogate) and 0.965-0.983 (escape), at most 2 seeds below 0.9, minimum 0.84."""
    from ibhebb.train import Trainer

    cfg = load_config(f"fig4-xor-spiking-{firing}", ["seeds=15", "eval.hsic_samples=0", "eval.firing_samples=0"])
    acc = Trainer(cfg, tmp_path, progress=False).run()["test_accuracy"]
    assert sum(acc) / len(acc) >= 0.95 and sum(a < 0.9 for a in acc) <= 2 and min(acc) > 0.76, acc


def test_trainer_logs_prints_and_plots_firing_statistics(tmp_path, capsys):
    """Rate per layer and spikes per sample in metrics.jsonl and summary.json, against a count of the spikes of the
    trained network on the same test samples (deterministic firing, so the count can be redone)."""
    import json

    from ibhebb.app.plot import plot_run
    from ibhebb.data import load_dataset
    from ibhebb.train import Trainer
    from ibhebb.train.trainer import build

    over = {**XOR_FAST, "seeds": 2, "epochs": 2, "data": {"name": "xor", "n_train": 60, "n_test": 50},
            "eval": {"train_samples": 0, "hsic_samples": 0, "firing_samples": 40}}
    cfg = load_config(None, over)
    summary = Trainer(cfg, tmp_path, progress=True).run()
    assert "spikes per sample" in capsys.readouterr().out
    last = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()][-1]
    data = load_dataset("xor", seed=cfg.seed, n_train=60, n_test=50)
    model = build(cfg, data)[0]
    from ibhebb.train.checkpoint import read_checkpoint

    model.load_state_dict(read_checkpoint(tmp_path / "checkpoint.pt")[1]["model"])
    x = data.x_test[:40].to(getattr(torch, cfg.dtype))
    count = sum(tr[0].spikes.sum((1, 2)).double() for tr in model.present(x))  # (R,) spikes of the one hidden layer
    (layer,) = last["firing"]
    torch.testing.assert_close(torch.tensor(layer["spikes_per_sample"], dtype=torch.float64), count / 40)
    torch.testing.assert_close(torch.tensor(layer["rate"], dtype=torch.float64), count / (40 * 16 * cfg.model.steps))
    assert 0 < summary["firing"][0]["rate_mean"] < 1
    assert summary["firing"][0]["spikes_per_sample_mean"] == pytest.approx(sum(layer["spikes_per_sample"]) / 2)
    assert plot_run(tmp_path).exists()
    with pytest.raises(ConfigError, match="eval.firing_samples"):
        load_config(None, {**over, "eval": {"firing_samples": -1}})


def test_firing_statistics_count_silent_always_on_and_binary_codes_as_a_scalar_simulation_does():
    """``always_on`` and ``binary`` (with rate and silent) against a per-neuron, per-sample loop of plain floats:
    one neuron driven far above threshold (always on), one below it (silent), two in between whose counts depend on
    the sample; statistics gathered in batches of 2 over 5 samples."""
    steps, theta, tau = 4, 0.5, 2.0
    net = SpikingMLP(1, [4], 2, replicas=2, steps=steps, neuron=F.LIFSpikeParams(tau, theta, "zero", 0, 1.0)).double()
    x = torch.tensor([[0.2], [0.4], [0.6], [0.8], [1.0]], dtype=torch.float64)
    with torch.no_grad():
        net.hidden[0].weight.copy_(torch.tensor([[[10.0], [-1.0], [1.2], [2.5]], [[10.0], [-1.0], [0.9], [1.5]]]))
        net.hidden[0].bias.zero_()
    counts = []  # counts[r][b][j]
    for w in net.hidden[0].weight[:, :, 0].tolist():
        per_sample = []
        for (xb,) in x.tolist():
            row = []
            for wj in w:
                v, c = 0.0, 0
                for _ in range(steps):
                    v += (wj * xb - v) / tau
                    if v > theta:
                        c, v = c + 1, 0.0
                row.append(c)
            per_sample.append(row)
        counts.append(per_sample)
    (layer,) = net.firing_statistics(x, batch_size=2)
    for r, per_sample in enumerate(counts):
        by_neuron = list(zip(*per_sample))
        assert layer["always_on"][r] == pytest.approx(sum(all(c == steps for c in n) for n in by_neuron) / 4)
        assert layer["silent"][r] == pytest.approx(sum(all(c == 0 for c in n) for n in by_neuron) / 4)
        assert layer["binary"][r] == pytest.approx(sum(c in (0, steps) for row in per_sample for c in row) / 20)
        assert layer["rate"][r] == pytest.approx(sum(map(sum, per_sample)) / (20 * steps))
    assert layer["always_on"][0] == 0.25 and 0 < layer["binary"][0] < 1  # the cases the test means to cover


def test_config_defaults_of_the_spiking_keys_are_the_functional_defaults():
    """``config`` sits below ``functional`` and cannot import its parameter tuples, so it restates their defaults:
    the two must agree."""
    from ibhebb.config import ModelConfig
    from ibhebb.functional.spiking import LIFSpikeParams, SpikeDynamics

    m = ModelConfig()
    config_names = {"slope": "surrogate_slope", "width": "escape_width"}
    for name, default in SpikeDynamics._field_defaults.items():
        assert getattr(m, config_names.get(name, name)) == default, name
    assert len(SpikeDynamics._field_defaults) == len(SpikeDynamics._fields) - 1  # all but the neuron
    n = LIFSpikeParams()
    assert (m.tau_m, m.threshold, m.reset, m.refractory, m.dt) == (n.tau_mem, n.threshold, n.reset, n.refractory, n.dt)
