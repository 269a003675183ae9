"""The C step (:mod:`ibhebb.engine.cstep`): float32 agreement, reproducibility, and the fallbacks when it cannot run.

Its float64 agreement with the rule's own loop, for every ξ variant, memory,
network and optimiser, is in ``test_engine.py`` (``mode = "native"``).
"""
import contextlib
import json
import sys

import pytest
import torch

from ibhebb.engine import cstep, make_engine
from test_engine import C, assert_same, build, eager_epoch, stream
from test_reservoir import tiny_reservoir


def epoch_both(ref, engine, x, y, order) -> None:
    """One epoch over ``order`` through the rule's own loop (``ref``) and through ``engine``: the same number of updates."""
    y1 = torch.nn.functional.one_hot(y, C).to(x.dtype)
    assert eager_epoch(ref[1], ref[2], x, y, order) == engine.train_epoch(x, y1, order)


@contextlib.contextmanager
def num_threads(n):
    """torch's thread count (which the C step follows) set to ``n`` for a block, then restored."""
    old = torch.get_num_threads()
    torch.set_num_threads(n or old)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def train(mode, kind="mlp", n=40, dtype=torch.float32, threads=None, chunk=None, variant="paper", replicas=3, lr=1e-3):
    built = build(kind, "buffer", variant, replicas, dtype=dtype, lr=lr)
    engine = make_engine(*built, mode=mode, chunk=chunk)
    x, y = stream(n)  # float64 draws, so float32 and float64 runs see the same numbers
    x, y1 = x.to(dtype), torch.nn.functional.one_hot(y, C).to(dtype)
    with num_threads(threads):
        for e in range(2):
            engine.train_epoch(x, y1, torch.randperm(n, generator=torch.Generator().manual_seed(e)))
    return built, engine


def float32_error(ref, run) -> float:
    """Largest error of a float32 run against the float64 one: weights absolute, moments relative to their largest."""
    errs = []
    for pa, pb in zip(ref[0].parameters(), run[0].parameters()):
        errs.append((pa - pb.double()).abs().max().item())
        for k in ("exp_avg", "exp_avg_sq"):
            ma, mb = ref[2].state[pa][k], run[2].state[pb][k].double()
            errs.append(((ma - mb).abs() / ma.abs().max()).max().item())
    return max(errs)


@pytest.mark.parametrize("kind,variant", [("mlp", "paper"), ("mlp", "exact"), ("lif", "first-term")])
def test_native_float32_is_as_accurate_as_torch_float32(kind, variant):
    """Against the float64 result, the C step in float32 errs no more than torch's own float32 step (same data)."""
    exact, _ = train("torch", kind, variant=variant, dtype=torch.float64)
    (torch32, e1), (c32, e2) = train("torch", kind, variant=variant), train("native", kind, variant=variant)
    assert (e1.backend, e2.backend) == ("torch", "native")
    err_torch, err_c = float32_error(exact, torch32), float32_error(exact, c32)
    assert err_torch < 1e-4  # float32 rounding, not a different computation
    assert err_c <= 1.5 * err_torch + 1e-6, (err_c, err_torch)


@pytest.mark.parametrize("kind", ["mlp", "lif"])
def test_native_is_reproducible_across_threads_and_chunks(kind):
    """Bit for bit the same weights whatever the thread count and the samples per call (a resumed run relies on it).

    Inside a chunk the first layer's drive of the next update comes from the optimiser's pass over each row;
    at a chunk's first update from a forward pass: both must give the same bits."""
    runs = [train("native", kind, threads=t, chunk=k)[0] for t, k in ((1, None), (2, None), (2, 5), (3, 7), (1, 1))]
    for other in runs[1:]:
        assert_same(runs[0], other, rtol=0, atol=0)


def test_native_threads_split_replicas_or_one_replica():
    _, engine = train("native", threads=2)
    assert (engine._native.threads, engine._native.parts) == (2, 1)
    _, engine = train("native", threads=4)  # one worker per replica at most
    assert (engine._native.threads, engine._native.parts) == (3, 1)
    built = build("mlp", "recompute", "paper", 1)
    engine = make_engine(*built, mode="native")
    x, y = stream(12)
    with num_threads(2):
        engine.train_epoch(x, torch.nn.functional.one_hot(y, C).double(), torch.arange(12))
    assert (engine._native.threads, engine._native.parts) == (1, 1)  # recompute: splitting was slower


@pytest.mark.parametrize("kind,memory", [("mlp", "buffer"), ("lif", "buffer")])
def test_one_replica_split_over_threads_is_bit_for_bit_one_thread(kind, memory):
    """Two or three threads sharing one replica (each its rows of the first layer) give one thread's weights exactly."""
    runs = []
    for threads in (1, 2, 3):
        built = build(kind, memory, "paper", 1, dtype=torch.float32, lr=1e-3)
        engine = make_engine(*built, mode="native")
        x, y = stream(30)
        x, y1 = x.float(), torch.nn.functional.one_hot(y, C).float()
        with num_threads(threads):
            for e in range(2):
                engine.train_epoch(x, y1, torch.randperm(30, generator=torch.Generator().manual_seed(e)))
        assert engine._native.parts == threads
        runs.append(built)
    for other in runs[1:]:
        assert_same(runs[0], other, rtol=0, atol=0)


def test_one_native_call_equals_the_eager_rule_over_many_samples():
    """A long chunk: one call of the C step over a whole epoch against the rule's loop (float64)."""
    ref, fast = build("mlp", "buffer", "exact", 2), build("mlp", "buffer", "exact", 2)
    engine = make_engine(*fast, mode="native", chunk=1000)
    x, y = stream(300)
    epoch_both(ref, engine, x, y, torch.randperm(300, generator=torch.Generator().manual_seed(3)))
    assert_same(ref, fast)


@pytest.fixture
def no_compiler(monkeypatch, tmp_path):
    """A machine without a C compiler: an empty build cache and a CC that does not exist."""
    monkeypatch.setenv("IBHEBB_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-cc")
    monkeypatch.setattr(cstep, "_LIBS", {})
    monkeypatch.setattr(cstep, "_ERRORS", {})


def test_without_a_compiler_auto_falls_back_and_native_refuses(no_compiler):
    assert "no C compiler" in cstep.unavailable(torch.float64)
    ref, fast = build("mlp", "buffer", "paper", 2), build("mlp", "buffer", "paper", 2)
    engine = make_engine(*fast, mode="auto", torch_compile=False)
    x, y = stream(12)
    epoch_both(ref, engine, x, y, torch.arange(12))
    assert engine.backend == "torch"
    assert_same(ref, fast)
    with pytest.raises(ValueError, match="no C compiler"):
        make_engine(*build("mlp", "buffer", "paper", 2), mode="native")


def test_a_broken_compiler_is_reported_not_raised(monkeypatch, tmp_path):
    monkeypatch.setenv("IBHEBB_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # exists, always fails
    monkeypatch.setattr(cstep, "_LIBS", {})
    monkeypatch.setattr(cstep, "_ERRORS", {})
    assert cstep.library(torch.float32) is None
    assert "failed" in cstep.unavailable(torch.float32)
    assert not list(tmp_path.rglob("*.so"))  # no half-written library left behind


def test_native_refuses_what_it_cannot_run():
    model, rule, opt = build("mlp", "buffer", "paper", 2, dtype=torch.float64)
    engine = make_engine(model, rule, opt, mode="native")
    from ibhebb.engine.state import bind

    st, _ = bind(engine.spec, model, rule.memory, opt)
    bad = st._replace(past_x=st.past_x.t())  # a non-contiguous tensor
    assert cstep.unsupported(engine.spec, bad) == "non-contiguous tensors"
    assert cstep.unavailable(torch.float16) == "no C step for torch.float16"


def test_trainer_uses_the_native_step_and_config_names_it(tmp_path):
    from ibhebb.config import load_config
    from ibhebb.errors import ConfigError
    from ibhebb.train import Trainer

    base = ["data.n_train=40", "rule.window=8", "epochs=1", "eval.hsic_samples=0", "model.kind=mlp"]
    for engine in ("auto", "fast", "native"):
        t = Trainer(load_config("configs/fig4-xor.toml", base + [f"engine={engine}"]), tmp_path / engine, progress=False)
        t.run()
        assert t._fast_engine().backend == "native"
        assert json.loads((tmp_path / engine / "metrics.jsonl").read_text())["engine"] == "native"
    t = Trainer(load_config("configs/fig4-xor.toml", base + ["engine=rule"]), tmp_path / "eager", progress=False)
    t.run()
    assert json.loads((tmp_path / "eager" / "metrics.jsonl").read_text())["engine"] == "rule"
    with pytest.raises(ConfigError, match="engine = 'native' cannot run"):
        load_config("configs/fig5-mnist-backprop.toml", ["engine=native"])


def reservoir_file(path, dtype="float64", hidden=(5, 4), x_dim=6, classes=3):
    """A small pre-trained reservoir bank, by default for the test network of ``test_engine`` (6 inputs, 3 classes)."""
    tiny_reservoir(path, x_dim=x_dim, classes=classes, hidden=hidden, window=4, gamma=2.0, sigmas=(0.6, 0.4, 0.9), units=30,
                   dtype=dtype)
    return path


def build_reservoir(kind, path, replicas=3, dtype=torch.float64, reservoir_dtype=None):
    from ibhebb.config import RuleConfig
    from ibhebb.models import MLP, LeakyMLP
    from ibhebb.rules import make_rule

    cls = LeakyMLP if kind == "lif" else MLP
    extra = dict(tau_m=4.0, dt=1.0, steps=3) if kind == "lif" else {}
    model = cls(6, [5, 4], 3, replicas=replicas, seed=0, **extra).to(dtype)
    cfg = RuleConfig(variant="paper", memory="reservoir", window=4, gamma=2.0, sigmas=[0.6, 0.4, 0.9], reservoir=str(path))
    rule = make_rule("biohsic", model, cfg)
    rule.memory.to(reservoir_dtype or dtype)  # the memory loads a file into float32; the test runs in float64
    opt = torch.optim.AdamW(rule.trainable(), lr=3e-2, betas=(0.9, 0.99), weight_decay=1e-2)
    return model, rule, opt


@pytest.mark.parametrize("mode", ["torch", "native"])
@pytest.mark.parametrize("kind", ["mlp", "lif"])
def test_engine_reservoir_memory_equals_its_own_loop(tmp_path, kind, mode):
    """ξ from the frozen reservoirs, through the engine's torch step and its C step: same weights, reservoir state
    and diagnostics as the memory's own loop (float64)."""
    path = reservoir_file(tmp_path / "res.pt")
    ref, fast = build_reservoir(kind, path), build_reservoir(kind, path)
    engine = make_engine(*fast, mode=mode)
    x, y = stream(30)
    for e, n in enumerate((9, 30)):
        epoch_both(ref, engine, x, y, torch.randperm(n, generator=torch.Generator().manual_seed(e)))
        assert engine.backend == mode
        da, db = ref[1].memory.diagnostics(), fast[1].memory.diagnostics()
        assert da["xi_samples"] == db["xi_samples"]
        for k in ("xi_correlation", "xi_nmse"):
            assert db[k] == pytest.approx(da[k], rel=1e-9)
    for pa, pb in zip(ref[0].parameters(), fast[0].parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12)
    for sa, sb in zip(ref[1].memory.state, fast[1].memory.state):
        torch.testing.assert_close(sa, sb, rtol=1e-10, atol=1e-12)
    moved = (ref[0].hidden[0].weight - build_reservoir(kind, path)[0].hidden[0].weight).abs().max()
    assert moved > 1e-3


def test_compiled_reservoir_step_equals_eager_float32(tmp_path):
    """The reservoir memory under torch.compile (what a GPU runs, there in CUDA graphs) against the eager torch step."""
    pytest.importorskip("torch._inductor")
    path = reservoir_file(tmp_path / "res.pt", dtype="float32")
    a, b = (build_reservoir("mlp", path, dtype=torch.float32, reservoir_dtype=torch.float32) for _ in range(2))
    for built in (a, b):
        for group in built[2].param_groups:
            group["lr"] = 1e-3
    ea, eb = make_engine(*a, mode="torch"), make_engine(*b, mode="compile", chunk=2)
    x, y = stream(12)
    x, y1 = x.float(), torch.nn.functional.one_hot(y, C).float()
    order = torch.arange(12)
    assert ea.train_epoch(x, y1, order) == eb.train_epoch(x, y1, order) == 9
    assert eb.backend == "compile" and not eb.compile_failed
    for pa, pb in zip(a[0].parameters(), b[0].parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    for sa, sb in zip(a[1].memory.state, b[1].memory.state):
        torch.testing.assert_close(sa, sb, rtol=1e-4, atol=1e-5)


def test_reservoir_memory_the_c_step_cannot_run_falls_back_to_the_torch_step(tmp_path):
    path = reservoir_file(tmp_path / "res.pt")
    noisy = build_reservoir("mlp", path)
    noisy[1].memory.noise_out = 0.1
    with pytest.raises(ValueError, match="noisy reservoir"):
        make_engine(*noisy)
    # a float32 reservoir for a float64 network: the memory's own loop casts ξ; the C step does not run it
    ref, fast = (build_reservoir("mlp", path, reservoir_dtype=torch.float32) for _ in range(2))
    engine = make_engine(*fast, mode="auto", torch_compile=False)
    x, y = stream(12)
    order = torch.arange(12)
    epoch_both(ref, engine, x, y, order)
    assert engine.backend == "torch"
    for pa, pb in zip(ref[0].parameters(), fast[0].parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="float32 reservoir"):
        make_engine(*build_reservoir("mlp", path, reservoir_dtype=torch.float32), mode="native").train_epoch(
            x, torch.nn.functional.one_hot(y, C).double(), order)


def test_trainer_runs_the_reservoir_memory_in_c_and_falls_back_when_it_cannot(tmp_path):
    from ibhebb.config import load_config
    from ibhebb.train import Trainer

    path = reservoir_file(tmp_path / "res.pt", dtype="float32", hidden=(4,), x_dim=2, classes=2)
    base = ["data.name=xor", "data.n_train=40", "data.n_test=20", "model.hidden=[4]", "model.steps=4", "rule.window=4",
            "seeds=2", "eval.hsic_samples=0", "eval.train_samples=0", "rule.memory=reservoir", f"rule.reservoir='{path}'",
            "rule.sigmas=[0.6,0.4,0.9]", "rule.gamma=2.0", "epochs=1"]
    t = Trainer(load_config("configs/fig4-xor.toml", base), tmp_path / "a", progress=False)
    t.run()
    assert t._fast_engine() is not None and t._fast_engine().backend == "native"
    t = Trainer(load_config("configs/fig4-xor.toml", base + ["engine=rule"]), tmp_path / "b", progress=False)
    t.run()
    assert t._fast_engine() is None


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid", "identity"])
@pytest.mark.parametrize("layernorm,bias", [(True, False), (False, True)])
def test_native_activations_layernorm_and_no_bias(activation, layernorm, bias):
    """The network options the rule's loop supports, through the C step (float64, against that loop)."""
    from ibhebb.config import RuleConfig
    from ibhebb.models import MLP
    from ibhebb.rules import make_rule
    from test_engine import SIGMAS

    def built():
        m = MLP(6, [5, 4], 3, replicas=2, seed=0, bias=bias, activation=activation, layernorm=layernorm).double()
        r = make_rule("biohsic", m, RuleConfig(variant="exact", memory="buffer", window=4, gamma=2.0, sigmas=SIGMAS))
        return m, r, torch.optim.AdamW(r.trainable(), lr=3e-2, weight_decay=1e-2)

    ref, fast = built(), built()
    engine = make_engine(*fast, mode="native")
    x, y = stream(20)
    epoch_both(ref, engine, x, y, torch.randperm(20, generator=torch.Generator().manual_seed(0)))
    assert_same(ref, fast)


def test_cli_says_in_one_line_when_engine_native_cannot_run(tmp_path):
    import os
    import subprocess
    import sys

    env = dict(os.environ, CC="no-such-cc", IBHEBB_CACHE=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-m", "ibhebb", "train", "configs/fig4-xor.toml", "engine=native", "epochs=1",
                          "data.n_train=20", "--out", str(tmp_path / "run")], capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == ["ibhebb: error: engine = 'native' cannot run this config: no C step: "
                                               "no C compiler ('no-such-cc' not found; set CC)"]
    assert not list((tmp_path / "run").iterdir())  # nothing written


@pytest.mark.parametrize("window,chunk", [(2, 1), (2, None), (64, 1), (64, None)])
def test_native_window_sizes_chunks_and_short_epochs(window, chunk):
    """The smallest and the Fig 4 window, one sample per call or many, epochs shorter than the window (float64)."""
    ref, fast = build("lif", "buffer", "exact", 2, window=window), build("lif", "buffer", "exact", 2, window=window)
    engine = make_engine(*fast, mode="native", chunk=chunk)
    x, y = stream(80)
    for e, n in enumerate((1, 5, 80, 3)):
        epoch_both(ref, engine, x, y, torch.randperm(n, generator=torch.Generator().manual_seed(e)))
    assert_same(ref, fast)


def test_reservoir_memory_keeps_the_files_precision(tmp_path):
    """A float64 file gives a float64 bank (which the C step runs beside a float64 network); a float32 file a float32 one."""
    from ibhebb.memory.reservoir import ReservoirMemory

    for dtype in (torch.float64, torch.float32):
        mem = ReservoirMemory(reservoir_file(tmp_path / f"{dtype}.pt", dtype=str(dtype).split(".")[1]), 4)
        assert mem.reservoir.w_rec.dtype == mem.reservoir.w_in.dtype == mem.readout.dtype == dtype


# -- subnormal moments and the floating-point mode -------------------------------------------------

SUBNORMAL = 1e-40  # below float32's smallest normal (1.18e-38)


def trained_with_a_dead_input(mode, replicas, threads):
    """A float32 network whose first input is always 0 (no gradient reaches the weights from it), its AdamW moments
    from that input planted subnormal after a first epoch, then one more update; returns the first layer's moments."""
    built = build("mlp", "buffer", "paper", replicas, dtype=torch.float32, lr=1e-3)
    engine = make_engine(*built, mode=mode, torch_compile=False)
    x, y = stream(12)
    x[:, 0] = 0
    x, y1 = x.float(), torch.nn.functional.one_hot(y, C).float()
    w1 = built[0].layers()[0].weight
    with num_threads(threads):
        engine.train_epoch(x, y1, torch.arange(10))
        state = built[2].state[w1]
        state["exp_avg"][..., 0] = SUBNORMAL
        state["exp_avg_sq"][..., 0] = SUBNORMAL
        engine.train_epoch(x, y1, torch.arange(10, 11))
    assert engine.backend == mode
    return state["exp_avg"], state["exp_avg_sq"]


def flushing() -> bool:
    """Whether this thread flushes subnormal results (CPython's float arithmetic runs in its mode)."""
    return sys.float_info.min * sys.float_info.epsilon == 0.0


@pytest.mark.parametrize("mode,replicas,threads", [("native", 3, 1), ("native", 3, 2), ("native", 1, 2), ("torch", 3, 1)])
def test_engine_flushes_subnormal_moments_and_restores_the_callers_mode(mode, replicas, threads):
    """One update zeroes a planted subnormal moment that gets no gradient (IEEE arithmetic would decay it by beta,
    keeping it subnormal and ~100x slower); afterwards this thread computes subnormals again."""
    if mode == "native" and not cstep.library(torch.float32).ibhebb_flushes():
        pytest.skip("no flush-to-zero mode on this CPU")
    before = cstep.library(torch.float32).ibhebb_fp_mode()
    m, v = trained_with_a_dead_input(mode, replicas, threads)
    assert torch.all(m[..., 0] == 0) and torch.all(v[..., 0] == 0)
    assert torch.all(v[..., 1:] > torch.finfo(torch.float32).tiny)  # the rest learns as before
    assert not flushing() and 5e-324 * float(replicas) != 0
    control = ~0x3F  # MXCSR's low bits are sticky exception flags, not the mode
    assert cstep.library(torch.float32).ibhebb_fp_mode() & control == before & control


def test_engine_keeps_a_caller_that_flushes_flushing():
    torch.set_flush_denormal(True)
    try:
        if not flushing():
            pytest.skip("torch cannot flush subnormals here")
        trained_with_a_dead_input("native", 1, 2)
        trained_with_a_dead_input("torch", 1, 1)
        assert flushing()
    finally:
        torch.set_flush_denormal(False)
    assert not flushing()


def test_float_arithmetic_is_ieee_outside_the_engine():
    """The rule's own loop (the reference) and the rest of the process keep IEEE subnormals."""
    v = torch.full((3,), SUBNORMAL)
    assert torch.all(v * 0.99 > 0) and not flushing()


# -- one replica split over threads, or not -----------------------------------------------------------

def test_split_or_solo_takes_the_faster_and_keeps_trying_the_other():
    choice = cstep.SplitOrSolo(2)
    seen = []
    for slow_split in [False] * 20 + [True] * 40 + [False] * 200:
        parts = choice.next()
        seen.append(parts)
        choice.record(parts, (10.0 if slow_split else 0.8) if parts == 2 else 1.0)
    assert seen[: cstep.SplitOrSolo.SHORTEST] == [2] * cstep.SplitOrSolo.SHORTEST
    assert 1 in seen[:20] and seen[19] == 2  # tried one thread, kept the split while it was faster
    assert seen[30:60].count(1) >= 25  # switched to one thread while the split was slow ...
    assert seen[-1] == 2 and seen[-100:].count(1) <= 3  # ... and back, trying the other rarely once settled
    assert choice.interval == cstep.SplitOrSolo.LONGEST


def test_split_or_solo_needs_a_clear_gain_to_switch():
    choice = cstep.SplitOrSolo(3)
    for _ in range(100):
        parts = choice.next()
        choice.record(parts, 1.0 if parts == 3 else 0.97)
    assert choice.current == 3


def test_one_replica_switching_between_split_and_one_thread_is_bit_for_bit(monkeypatch):
    """The chunks of one replica may run split over threads or on one thread, in any mix: the same weights exactly."""
    ran = []

    def alternate(self):
        ran.append(2 if len(ran) % 3 else 1)
        return ran[-1]

    runs = []
    for threads in (1, 2):
        built = build("mlp", "buffer", "paper", 1, dtype=torch.float32, lr=1e-3)
        engine = make_engine(*built, mode="native", chunk=5)
        x, y = stream(40)
        x, y1 = x.float(), torch.nn.functional.one_hot(y, C).float()
        with num_threads(threads):
            if threads == 2:
                monkeypatch.setattr(cstep.SplitOrSolo, "next", alternate)
            for e in range(2):
                engine.train_epoch(x, y1, torch.randperm(40, generator=torch.Generator().manual_seed(e)))
        runs.append(built)
    assert set(ran) == {1, 2} and engine._native.parts == 2
    assert_same(runs[0], runs[1], rtol=0, atol=0)
