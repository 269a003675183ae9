"""The fast engine against the rule's eager loop: same weights, optimiser state and window."""
import pytest
import torch

from ibhebb.config import RuleConfig
from ibhebb.engine import make_engine
from ibhebb.models import MLP, LeakyMLP
from ibhebb.rules import make_rule

SIGMAS = [0.6, 0.4, 0.9]
D_IN, HIDDEN, C = 6, [5, 4], 3


def build(kind, memory, variant, replicas, optim="adamw", dtype=torch.float64, window=4, seed=0, lr=3e-2):
    cls = LeakyMLP if kind == "lif" else MLP
    extra = dict(tau_m=4.0, dt=1.0, steps=3) if kind == "lif" else {}
    model = cls(D_IN, HIDDEN, C, replicas=replicas, seed=seed, **extra).to(dtype)
    rule = make_rule("biohsic", model, RuleConfig(variant=variant, memory=memory, window=window, gamma=2.0, sigmas=SIGMAS))
    params = rule.trainable()
    if optim == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.99), weight_decay=1e-2)
    elif optim == "adam":
        opt = torch.optim.Adam(params, lr=3e-2, betas=(0.8, 0.95), weight_decay=1e-2)
    else:
        opt = torch.optim.SGD(params, lr=1e-1, momentum=0.5, weight_decay=1e-2)
    return model, rule, opt


def stream(n, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, D_IN, generator=g, dtype=dtype), torch.randint(0, C, (n,), generator=g)


def eager_epoch(rule, opt, x, y, order):
    n = 0
    for i in order.tolist():
        for _ in rule.updates(x[i : i + 1], y[i : i + 1]):
            opt.step()
            opt.zero_grad(set_to_none=False)
            n += 1
    return n


def assert_same(a, b, rtol=1e-10, atol=1e-12):
    (ma, ra, oa), (mb, rb, ob) = a, b
    for pa, pb in zip(ma.parameters(), mb.parameters()):
        torch.testing.assert_close(pa, pb, rtol=rtol, atol=atol)
        for k in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
            if k in oa.state[pa]:
                torch.testing.assert_close(oa.state[pa][k], ob.state[pb][k], rtol=rtol, atol=atol)
        if "step" in oa.state[pa]:
            assert float(oa.state[pa]["step"]) == float(ob.state[pb]["step"])
    assert int(ra.memory.count) == int(rb.memory.count)
    torch.testing.assert_close(ra.memory.x, rb.memory.x, rtol=0, atol=0)
    for za, zb in zip(ra.memory.z, rb.memory.z):
        torch.testing.assert_close(za, zb, rtol=rtol, atol=atol)


def run_both(kind, memory, variant, replicas, optim="adamw", epochs=(7, 5), mode="torch", **engine_kwargs):
    """Two epochs (the first shorter than the window-filling plus a few updates), the rule's loop vs the engine's step."""
    ref, fast = build(kind, memory, variant, replicas, optim), build(kind, memory, variant, replicas, optim)
    engine = make_engine(*fast, mode=mode, **engine_kwargs)
    x, y = stream(max(epochs))
    y1 = torch.nn.functional.one_hot(y, C).double()
    for e, n in enumerate(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(e))
        n_ref = eager_epoch(ref[1], ref[2], x, y, order)
        assert engine.train_epoch(x, y1, order) == n_ref
    if mode == "native":
        assert engine.backend == "native"
    return ref, fast


CASES = [
    (kind, variant, memory, replicas)
    for kind in ("mlp", "lif")
    for variant in ("paper", "first-term", "exact")
    for memory in ("buffer", "recompute")
    for replicas in ((1, 3) if kind == "mlp" else (3,))  # LIF at R=1 adds nothing the MLP's R=1 does not cover
]


STEPS = ["torch", "native"]
"""The engine's step written with torch ops (run eagerly here; compiled below) and its C twin (:mod:`ibhebb.engine.cstep`)."""


@pytest.mark.parametrize("mode", STEPS)
@pytest.mark.parametrize("kind,variant,memory,replicas", CASES)
def test_engine_equals_eager_rule(kind, variant, memory, replicas, mode):
    ref, fast = run_both(kind, memory, variant, replicas, mode=mode)
    assert_same(ref, fast)
    w0 = build(kind, memory, variant, replicas)[0].hidden[0].weight
    assert (ref[0].hidden[0].weight - w0).abs().max() > 1e-4  # it did learn something


@pytest.mark.parametrize("mode", STEPS)
@pytest.mark.parametrize("optim", ["adam", "sgd"])
def test_engine_equals_eager_rule_other_optimisers(optim, mode):
    assert_same(*run_both("mlp", "buffer", "paper", 2, optim, mode=mode))


@pytest.mark.parametrize("mode", STEPS)
def test_engine_resumes_from_a_half_filled_window(mode):
    """Epochs shorter than the window: the engine hands a partly filled memory back and picks it up."""
    assert_same(*run_both("mlp", "buffer", "exact", 2, epochs=(2, 1, 6), mode=mode))


def test_compiled_chunk_equals_eager_chunk_float32():
    pytest.importorskip("torch._inductor")
    """float32, a small learning rate: Adam's normalised step would amplify rounding differences."""
    a, b = (build("mlp", "buffer", "paper", 2, dtype=torch.float32, lr=1e-3) for _ in range(2))
    ea, eb = make_engine(*a, mode="torch", chunk=4), make_engine(*b, mode="compile", chunk=4)
    x, y = stream(20, torch.float32)
    y1 = torch.nn.functional.one_hot(y, C).float()
    order = torch.randperm(20, generator=torch.Generator().manual_seed(0))
    assert ea.train_epoch(x, y1, order) == eb.train_epoch(x, y1, order) == 17
    assert_same(a, b, rtol=1e-5, atol=1e-6)
    assert not eb.compile_failed


def test_compiled_leaky_update_equals_eager_float32():
    """A leaky network compiles one update and calls it T times per sample: same weights as the eager loop."""
    pytest.importorskip("torch._inductor")
    a, b = (build("lif", "buffer", "paper", 2, dtype=torch.float32, lr=1e-3) for _ in range(2))
    ea, eb = make_engine(*a, mode="torch"), make_engine(*b, mode="compile")
    x, y = stream(12, torch.float32)
    y1 = torch.nn.functional.one_hot(y, C).float()
    order = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    assert ea.train_epoch(x, y1, order) == eb.train_epoch(x, y1, order) == 9 * 3
    assert_same(a, b, rtol=1e-5, atol=1e-6)
    assert not eb.compile_failed


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("variant,memory", [("paper", "buffer"), ("exact", "recompute")])
def test_cuda_graph_engine_equals_eager_rule(variant, memory):
    """On the GPU: the compiled step replayed from a CUDA graph against the eager loop on the CPU (float64)."""
    ref = build("mlp", memory, variant, 3)
    fast = build("mlp", memory, variant, 3)
    fast[0].cuda()
    fast = (fast[0], fast[1].cuda(), build_optimizer_like(fast))
    engine = make_engine(*fast, mode="compile", chunk=2, graph_samples=8)
    x, y = stream(40)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(0))
    eager_epoch(ref[1], ref[2], x, y, order)
    engine.train_epoch(x.cuda(), torch.nn.functional.one_hot(y, C).double().cuda(), order.cuda())
    for pa, pb in zip(ref[0].parameters(), fast[0].parameters()):
        torch.testing.assert_close(pa, pb.cpu(), rtol=1e-9, atol=1e-11)


def build_optimizer_like(built):
    model = built[0]
    return torch.optim.AdamW(list(model.parameters()), lr=3e-2, betas=(0.9, 0.99), weight_decay=1e-2)


def test_trainer_fast_engine_equals_eager_loop(tmp_path):
    """Through the trainer (two epochs, resume in between): ``engine=fast`` ends on the eager loop's weights."""
    from ibhebb.config import load_config
    from ibhebb.train import Trainer

    base = ["seeds=2", "dtype=float64", "data.n_train=60", "model.steps=3", "rule.window=8", "optim.lr=3e-3", "eval.hsic_samples=0"]
    models = []
    for engine in ("rule", "fast"):
        t = Trainer(load_config("configs/fig4-xor.toml", base + ["epochs=1", f"engine={engine}"]), tmp_path / engine, progress=False)
        t.run()
        if engine == "fast":
            assert t._fast_engine() is not None
        t = Trainer(load_config("configs/fig4-xor.toml", base + ["epochs=2", f"engine={engine}"]), tmp_path / engine, resume=True, progress=False)
        t.run()
        models.append(t.model)
    for pa, pb in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12)


def test_fast_engine_refuses_what_it_cannot_run():
    from ibhebb.config import load_config
    from ibhebb.errors import ConfigError

    with pytest.raises(ConfigError, match="engine = 'fast'"):
        load_config("configs/fig5-mnist-backprop.toml", ["engine=fast"])
    assert load_config("configs/fig5-mnist-backprop.toml", ["engine=auto"]).engine == "auto"


def test_trainer_passes_engine_chunk(tmp_path):
    from ibhebb.config import load_config
    from ibhebb.train import Trainer

    base = ["data.n_train=20", "epochs=1", "eval.hsic_samples=0", "engine=fast"]
    own = Trainer(load_config("configs/fig4-xor.toml", base), tmp_path / "own", progress=False)._fast_engine()
    set_ = Trainer(load_config("configs/fig4-xor.toml", base + ["engine_chunk=3"]), tmp_path / "set", progress=False)._fast_engine()
    assert own.chunk != 3 and set_.chunk == 3


def build_cnn(memory, variant, replicas, optim="adamw", z_after_pool=True):
    from ibhebb.models.cnn import CNN

    model = CNN((2, 6, 6), [3, 4], C, replicas=replicas, seed=0, layernorm=True, z_after_pool=z_after_pool).double()
    rule = make_rule("biohsic", model, RuleConfig(variant=variant, memory=memory, window=4, gamma=2.0, sigmas=SIGMAS))
    if optim == "adamw":
        return model, rule, torch.optim.AdamW(rule.trainable(), lr=3e-2, betas=(0.9, 0.99), weight_decay=1e-2)
    return model, rule, torch.optim.SGD(rule.trainable(), lr=1e-1, momentum=0.5, weight_decay=1e-2)


@pytest.mark.parametrize("memory,variant,replicas,optim,z_after_pool", [
    ("buffer", "paper", 1, "adamw", True), ("buffer", "exact", 3, "adamw", False), ("recompute", "paper", 3, "adamw", True),
    ("recompute", "first-term", 1, "sgd", False), ("buffer", "paper", 3, "sgd", True)])
def test_engine_equals_eager_rule_on_the_cnn(memory, variant, replicas, optim, z_after_pool):
    """The paper's CNN (convolutions, LayerNorm over maps, pooling before or after the kernels) through the torch step."""
    ref, fast = (build_cnn(memory, variant, replicas, optim, z_after_pool) for _ in range(2))
    engine = make_engine(*fast, mode="auto")
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(9, 72, generator=g, dtype=torch.float64), torch.randint(0, C, (9,), generator=g)
    for e, n in enumerate((5, 9)):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(e))
        assert engine.train_epoch(x, torch.nn.functional.one_hot(y, C).double(), order) == eager_epoch(ref[1], ref[2], x, y, order)
        assert engine.backend == "torch" and engine.fallback.startswith("the C step implements no model 'cnn'")
    assert_same(ref, fast)
    w0 = build_cnn(memory, variant, replicas, optim, z_after_pool)[0].hidden[1].weight
    assert (ref[0].hidden[1].weight - w0).abs().max() > 1e-4


def test_the_eager_torch_step_leaves_no_inference_tensor_behind():
    """The torch step runs in inference mode: the weights, the optimiser's state, the memory and what the progress
    callback keeps stay ordinary tensors, so the rule's own loop (in-place updates outside inference mode) goes on
    from where the engine stopped, and ends on the weights of a rule loop that ran all along."""
    ref, fast = build_cnn("buffer", "paper", 1), build_cnn("buffer", "paper", 1)
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(8, 72, generator=g, dtype=torch.float64), torch.randint(0, C, (8,), generator=g)
    kept = []
    engine = make_engine(*fast, mode="torch")
    engine.train_epoch(x, torch.nn.functional.one_hot(y, C).double(), torch.arange(6), progress=lambda k: kept.append(torch.ones(1)))
    assert engine.backend == "torch" and len(kept) >= 2  # the window fills, then the torch step's samples
    model, rule, opt = fast
    state = [t for st in opt.state.values() for t in st.values() if isinstance(t, torch.Tensor)]
    tensors = [*model.parameters(), *state, *rule.memory.z, rule.memory.x, *kept]
    assert state and not any(t.is_inference() for t in tensors)
    kept[-1].add_(1)
    eager_epoch(ref[1], ref[2], x, y, torch.arange(6))
    for built in (ref, fast):
        eager_epoch(built[1], built[2], x, y, torch.arange(6, 8))
    assert_same(ref, fast)


def test_the_cnn_has_no_c_step():
    from ibhebb.config import load_config
    from ibhebb.errors import ConfigError

    with pytest.raises(ConfigError, match="the C step implements no model 'cnn'"):
        load_config("configs/fig6-fashion-mnist.toml", ["engine=native"])
    assert load_config("configs/fig6-fashion-mnist.toml", ["engine=fast"]).engine == "fast"
    with pytest.raises(ValueError, match="no C step: the C step implements no model 'cnn'"):
        make_engine(*build_cnn("buffer", "paper", 1), mode="native").train_epoch(
            torch.zeros(4, 72, dtype=torch.float64), torch.eye(C, dtype=torch.float64)[[0, 1, 2, 0]], torch.arange(4))


def build_features(replicas, stages=2, dtype=torch.float64, seed=0, kind="mlp"):
    cls, extra = (LeakyMLP, dict(tau_m=4.0, dt=1.0, steps=3)) if kind == "lif" else (MLP, {})
    model = cls(D_IN, HIDDEN, C, replicas=replicas, seed=seed, **extra).to(dtype)
    cfg = RuleConfig(variant="paper", memory="features", window=4, gamma=2.0, sigmas=SIGMAS, features=16, trace_stages=stages)
    rule = make_rule("biohsic", model, cfg)
    opt = torch.optim.AdamW(rule.trainable(), lr=3e-2, betas=(0.9, 0.99), weight_decay=1e-2)
    return model, rule, opt


@pytest.mark.parametrize("mode", STEPS)
@pytest.mark.parametrize("kind,replicas,stages", [("mlp", 1, 2), ("mlp", 3, 1), ("mlp", 2, 3), ("lif", 2, 2)])
def test_engine_features_memory_equals_its_own_loop(kind, replicas, stages, mode):
    """ξ from the features memory's traces, through the engine's torch step and its C step: same weights, moments
    and traces as the rule's loop after two epochs (the first shorter than filling the memory plus a few updates);
    a leaky network reads the traces at each of its T updates and pushes the sample after the last."""
    ref, fast = build_features(replicas, stages, kind=kind), build_features(replicas, stages, kind=kind)
    engine = make_engine(*fast, mode=mode)
    x, y = stream(9)
    x = x.clamp_min(0)  # half the inputs 0, as in an image: the C step sums the input's features over the others
    y1 = torch.nn.functional.one_hot(y, C).double()
    for e, n in enumerate((5, 9)):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(e))
        assert engine.train_epoch(x, y1, order) == eager_epoch(ref[1], ref[2], x, y, order)
    assert engine.backend == mode
    for pa, pb in zip(ref[0].parameters(), fast[0].parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ref[2].state[pa]["exp_avg_sq"], fast[2].state[pb]["exp_avg_sq"], rtol=1e-10, atol=1e-12)
    ma, mb = ref[1].memory, fast[1].memory
    assert int(ma.count) == int(mb.count) == 14
    for ta, tb in zip(ma.traces + ma.read, mb.traces + mb.read):
        torch.testing.assert_close(ta, tb, rtol=1e-10, atol=1e-12)
    assert (ref[0].hidden[0].weight - build_features(replicas, stages, kind=kind)[0].hidden[0].weight).abs().max() > 1e-4
    assert ma.traces[3].abs().max() > 1e-3  # the fast weights hold something


def test_features_memory_refuses_the_fast_step_where_it_has_none():
    model = MLP(D_IN, HIDDEN, C).double()
    cfg = RuleConfig(variant="paper", memory="features", window=4, sigmas=SIGMAS, features=16, memory_check=True)
    rule = make_rule("biohsic", model, cfg)
    with pytest.raises(ValueError, match="memory_check"):
        make_engine(model, rule, torch.optim.SGD(rule.trainable(), lr=0.1))
    from ibhebb.config import load_config
    from ibhebb.errors import ConfigError
    with pytest.raises(ConfigError, match="only 'mlp' and 'lif-mlp'"):
        load_config("configs/fig5-mnist-spiking-surrogate.toml", ["rule.memory=features", "engine=native"])
