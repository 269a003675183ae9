"""The C step (:mod:`ibhebb.engine.native`): float32 agreement, reproducibility, and the fallbacks when it cannot run.

Its float64 agreement with the rule's own loop, for every ξ variant, memory,
network and optimiser, is in ``test_engine.py`` (``mode = "native"``).
"""
import pytest
import torch

from ibhebb.engine import make_engine, native
from test_engine import C, assert_same, build, eager_epoch, stream


def train(mode, kind="mlp", n=40, dtype=torch.float32, threads=None, chunk=None, variant="paper", replicas=3, lr=1e-3):
    built = build(kind, "buffer", variant, replicas, dtype=dtype, lr=lr)
    engine = make_engine(*built, mode=mode, chunk=chunk)
    x, y = stream(n)  # float64 draws, so float32 and float64 runs see the same numbers
    x, y1 = x.to(dtype), torch.nn.functional.one_hot(y, C).to(dtype)
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for e in range(2):
            engine.train_epoch(x, y1, torch.randperm(n, generator=torch.Generator().manual_seed(e)))
    finally:
        torch.set_num_threads(old)
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
    exact, _ = train("eager", kind, variant=variant, dtype=torch.float64)
    (torch32, e1), (c32, e2) = train("eager", kind, variant=variant), train("native", kind, variant=variant)
    assert (e1.backend, e2.backend) == ("eager", "native")
    err_torch, err_c = float32_error(exact, torch32), float32_error(exact, c32)
    assert err_torch < 1e-4  # float32 rounding, not a different computation
    assert err_c <= 1.5 * err_torch + 1e-6, (err_c, err_torch)


def test_native_is_reproducible_across_threads_and_chunks():
    """Bit for bit the same weights whatever the thread count and the samples per call (a resumed run relies on it)."""
    runs = [train("native", threads=t, chunk=k)[0] for t, k in ((1, None), (2, None), (2, 5), (3, 7))]
    for other in runs[1:]:
        assert_same(runs[0], other, rtol=0, atol=0)


def test_native_threads_split_replicas():
    _, engine = train("native", threads=2)
    assert engine._native.threads == 2
    _, engine = train("native", threads=2, replicas=1)
    assert engine._native.threads == 1  # one worker per replica at most


def test_one_native_call_equals_the_eager_rule_over_many_samples():
    """A long chunk: one call of the C step over a whole epoch against the rule's loop (float64)."""
    ref, fast = build("mlp", "buffer", "exact", 2), build("mlp", "buffer", "exact", 2)
    engine = make_engine(*fast, mode="native", chunk=1000)
    x, y = stream(300)
    order = torch.randperm(300, generator=torch.Generator().manual_seed(3))
    eager_epoch(ref[1], ref[2], x, y, order)
    engine.train_epoch(x, torch.nn.functional.one_hot(y, C).double(), order)
    assert_same(ref, fast)


@pytest.fixture
def no_compiler(monkeypatch, tmp_path):
    """A machine without a C compiler: an empty build cache and a CC that does not exist."""
    monkeypatch.setenv("IBHEBB_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-cc")
    monkeypatch.setattr(native, "_LIBS", {})
    monkeypatch.setattr(native, "_ERRORS", {})


def test_without_a_compiler_auto_falls_back_and_native_refuses(no_compiler):
    assert "no C compiler" in native.unavailable(torch.float64)
    ref, fast = build("mlp", "buffer", "paper", 2), build("mlp", "buffer", "paper", 2)
    engine = make_engine(*fast, mode="auto", torch_compile=False)
    x, y = stream(12)
    order = torch.arange(12)
    eager_epoch(ref[1], ref[2], x, y, order)
    engine.train_epoch(x, torch.nn.functional.one_hot(y, C).double(), order)
    assert engine.backend == "eager"
    assert_same(ref, fast)
    with pytest.raises(ValueError, match="no C compiler"):
        make_engine(*build("mlp", "buffer", "paper", 2), mode="native")


def test_a_broken_compiler_is_reported_not_raised(monkeypatch, tmp_path):
    monkeypatch.setenv("IBHEBB_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "false")  # exists, always fails
    monkeypatch.setattr(native, "_LIBS", {})
    monkeypatch.setattr(native, "_ERRORS", {})
    assert native.library(torch.float32) is None
    assert "failed" in native.unavailable(torch.float32)
    assert not list(tmp_path.rglob("*.so"))  # no half-written library left behind


def test_native_refuses_what_it_cannot_run():
    model, rule, opt = build("mlp", "buffer", "paper", 2, dtype=torch.float64)
    engine = make_engine(model, rule, opt, mode="native")
    from ibhebb.engine.state import bind

    st, _ = bind(engine.spec, model, rule.memory, opt)
    bad = st._replace(past_x=st.past_x.t())  # a non-contiguous tensor
    assert native.unsupported(engine.spec, bad) == "non-contiguous tensors"
    assert native.unavailable(torch.float16) == "no C step for torch.float16"


def test_trainer_uses_the_native_step_and_config_names_it(tmp_path):
    from ibhebb.config import load_config
    from ibhebb.errors import ConfigError
    from ibhebb.train import Trainer

    base = ["data.n_train=40", "rule.window=8", "epochs=1", "eval.hsic_samples=0", "model.kind=mlp"]
    for engine in ("auto", "fast", "native"):
        t = Trainer(load_config("configs/fig4-xor.toml", base + [f"engine={engine}"]), tmp_path / engine, progress=False)
        t.run()
        assert t._fast_engine().backend == "native"
    with pytest.raises(ConfigError, match="engine = 'native' cannot run"):
        load_config("configs/fig5-mnist-backprop.toml", ["engine=native"])
