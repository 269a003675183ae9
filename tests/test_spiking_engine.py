"""The engine's spiking step (the C step and the torch step) against the rule's own loop over SpikingMLP.present (float64).

The random numbers (input spike trains, escape noise) are drawn by the engine from the model's per-replica
generators in the order the model draws them, so the weights, optimiser state, window and generator states
must come out equal, not just statistically alike.
"""
import pytest
import torch

from ibhebb.config import RuleConfig, load_config
from ibhebb.engine import cstep, make_engine, unsupported
from ibhebb.engine.capability import NATIVE, TORCH, config_facts
from ibhebb.functional import spiking as F
from ibhebb.models.spiking import SpikingMLP
from ibhebb.rules import make_rule
from test_engine import assert_same, eager_epoch

D_IN, HIDDEN, C = 6, [5, 4], 3
needs_c = pytest.mark.skipif(cstep.unavailable(torch.float64) is not None, reason="no C compiler for the C step here")


def build(firing, encoding, spike_z, memory="buffer", reset="zero", refractory=0, layernorm=True, replicas=2,
          surrogate="fast-sigmoid", escape="sigmoid", input_offset=0.0, input_scale=0.8):
    neuron = F.LIFSpikeParams(tau_mem=2.0, threshold=0.3, reset=reset, refractory=refractory, dt=1.0)
    model = SpikingMLP(D_IN, HIDDEN, C, replicas=replicas, seed=3, neuron=neuron, steps=4, firing=firing, surrogate=surrogate,
                       escape=escape, escape_width=0.3, encoding=encoding, input_scale=input_scale, spike_z=spike_z, tau_syn=3.0,
                       layernorm=layernorm, input_offset=input_offset).double()
    rule = make_rule("biohsic", model, RuleConfig(variant="paper", memory=memory, window=4, gamma=2.0, sigmas=[0.6, 0.4, 0.9]))
    opt = torch.optim.AdamW(rule.trainable(), lr=3e-2, betas=(0.9, 0.99), weight_decay=1e-2)
    return model, rule, opt


def run_both(mode, epochs=(7, 5), **kw):
    ref, fast = build(**kw), build(**kw)
    engine = make_engine(*fast, mode=mode, chunk=3)  # chunks of 3: several C calls per epoch
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(max(epochs), D_IN, generator=g, dtype=torch.float64), torch.randint(0, C, (max(epochs),), generator=g)
    y1 = torch.nn.functional.one_hot(y, C).double()
    for e, n in enumerate(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(e))
        assert engine.train_epoch(x, y1, order) == eager_epoch(ref[1], ref[2], x, y, order)
    assert engine.backend == mode
    return ref, fast


CASES = [
    dict(firing="surrogate", encoding="current", spike_z="count"),
    dict(firing="surrogate", encoding="bernoulli", spike_z="trace", reset="subtract", refractory=1, surrogate="arctan"),
    dict(firing="escape", encoding="current", spike_z="count", reset="subtract", escape="exp"),
    # sparse input spikes (mostly 0 or 1 of the 6 active: the C step's sum over the active inputs), mostly excitatory
    dict(firing="surrogate", encoding="bernoulli", spike_z="count", input_offset=0.6, input_scale=0.2),
    dict(firing="escape", encoding="poisson", spike_z="trace", refractory=2, layernorm=False),
    dict(firing="surrogate", encoding="current", spike_z="trace", memory="recompute", refractory=1),
    dict(firing="surrogate", encoding="poisson", spike_z="count", replicas=1, layernorm=False),
    # the MNIST presets' neurons (reset by subtraction, no refractory period: the C step's branch-free loop), arctan
    dict(firing="surrogate", encoding="current", spike_z="count", reset="subtract", surrogate="arctan"),
]


@pytest.mark.parametrize("mode", ["torch", pytest.param("native", marks=needs_c)])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_engine_spiking_step_equals_the_rules_loop(mode, case):
    ref, fast = run_both(mode, **case)
    assert_same(ref, fast)
    for a, b in zip(ref[0].streams[0], fast[0].streams[0]):  # the engine drew exactly what the loop drew
        assert torch.equal(a.get_state(), b.get_state())
    w0 = build(**case)[0].hidden[0].weight
    assert (ref[0].hidden[0].weight - w0).abs().max() > 1e-4  # it did learn
    stats = ref[0].firing_statistics(torch.randn(8, D_IN, dtype=torch.float64))
    assert all(0 < r < 1 for layer in stats for r in layer["rate"])  # spiking, neither silent nor saturated


@needs_c
@pytest.mark.parametrize("case", [
    dict(firing="escape", encoding="bernoulli", spike_z="count", replicas=3),
    dict(firing="surrogate", encoding="current", spike_z="count", replicas=3),  # the drive from the optimiser's pass
], ids=["escape-bernoulli", "surrogate-current"])
def test_native_spiking_runs_in_chunks_of_any_size_and_threads_alike(case):
    """The noise of a chunk is cut per replica and sample; chunk sizes and threads must not change a weight."""
    runs = []
    for chunk, threads in ((1, 1), (5, 2), (256, 3)):
        model, rule, opt = build(**case)
        engine = make_engine(model, rule, opt, mode="native", chunk=chunk)
        g = torch.Generator().manual_seed(2)
        x, y = torch.randn(20, D_IN, generator=g, dtype=torch.float64), torch.randint(0, C, (20,), generator=g)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            engine.train_epoch(x, torch.nn.functional.one_hot(y, C).double(), torch.arange(20))
        finally:
            torch.set_num_threads(before)
        runs.append([p.detach().clone() for p in model.parameters()])
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other))


@needs_c
@pytest.mark.parametrize("case", [
    dict(firing="surrogate", encoding="current", spike_z="count"),
    dict(firing="escape", encoding="bernoulli", spike_z="trace", reset="subtract", refractory=1, escape="exp"),
    dict(firing="surrogate", encoding="bernoulli", spike_z="count", input_offset=0.6, input_scale=0.2),  # sparse sum
], ids=["surrogate-current", "escape-bernoulli", "sparse-input"])
def test_one_spiking_replica_split_over_threads_is_bit_for_bit_one_thread(case):
    """Two or three threads sharing one replica (each its rows of the first layer's drive) give one thread's weights."""
    runs = []
    for threads in (1, 2, 3):
        model, rule, opt = build(**case, replicas=1)
        engine = make_engine(model, rule, opt, mode="native", chunk=4)
        g = torch.Generator().manual_seed(2)
        x, y = torch.randn(20, D_IN, generator=g, dtype=torch.float64), torch.randint(0, C, (20,), generator=g)
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for e in range(2):
                order = torch.randperm(20, generator=torch.Generator().manual_seed(e))
                engine.train_epoch(x, torch.nn.functional.one_hot(y, C).double(), order)
        finally:
            torch.set_num_threads(before)
        assert engine._native.parts == threads
        runs.append([p.detach().clone() for p in model.parameters()])
    assert (runs[0][0] - build(**case, replicas=1)[0].hidden[0].weight).abs().max() > 1e-4  # it did learn
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other))


@pytest.mark.parametrize("case", [CASES[1], CASES[2]], ids=["surrogate-bernoulli-trace", "escape-current-count"])
def test_compiled_spiking_step_equals_the_rules_loop(case):
    """The torch step under torch.compile (what a GPU runs): one graph per update, every time step through it."""
    pytest.importorskip("torch._inductor")
    ref, fast = build(**case), build(**case)
    engine = make_engine(*fast, mode="compile")
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(7, D_IN, generator=g, dtype=torch.float64), torch.randint(0, C, (7,), generator=g)
    order = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    assert engine.train_epoch(x, torch.nn.functional.one_hot(y, C).double(), order) == eager_epoch(ref[1], ref[2], x, y, order)
    assert engine.backend == "compile" and not engine.compile_failed
    assert_same(ref, fast)
    for a, b in zip(ref[0].streams[0], fast[0].streams[0]):
        assert torch.equal(a.get_state(), b.get_state())


def test_tables_and_engine_refuse_what_the_spiking_step_cannot_run():
    base = ["model.kind=spiking-mlp", "model.hidden=[6]", "data.name=xor", "dtype=float64"]
    cfg = load_config(None, [*base, "rule.memory=buffer", "model.firing=escape"])
    assert TORCH.why_not(config_facts(cfg)) is None and NATIVE.why_not(config_facts(cfg)) is None
    assert unsupported(cfg) is None and unsupported(cfg, "native") is None
    assert unsupported(cfg, "compile") is None
    assert "recompute" in unsupported(load_config(None, [*base, "rule.memory=recompute", "model.encoding=poisson"]))
    assert unsupported(load_config(None, [*base, "rule.memory=recompute"])) is None  # deterministic: it can
    model, rule, opt = build("escape", "current", "count", memory="recompute")
    with pytest.raises(ValueError, match="random spikes"):
        make_engine(model, rule, opt)
    assert set(cstep.implements()["model"]) == {"mlp", "lif-mlp", "spiking-mlp"}
