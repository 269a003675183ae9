"""Throughput of one training step of the paper's MNIST network, against what the hardware allows.

:func:`run_bench` times, on random MNIST-shaped data (784-128-64-10,
ReLU + LayerNorm, N = 8, AdamW as in ``configs/fig5-mnist.toml``), for
``R = 1`` and ``R = 30`` replicas:

- ``biohsic`` with the ``buffer`` and ``recompute`` memories, through the
  rule's own loop and through the fast engine (:mod:`ibhebb.engine`) with
  its C step (``native``, CPU) and its ``torch.compile`` step (``compile``;
  chunks replayed from CUDA graphs on a GPU);
- ``biohsic`` on the leaky (LIF) version of the same network, ``T`` Euler
  steps (one update each) per sample;
- ``biohsic`` on the spiking (LIF, ``model.kind = "spiking-mlp"``) version of the same
  network, ``T`` steps per sample, β through the fast-sigmoid surrogate with the input as currents,
  through escape noise with the input as Bernoulli spike trains of ``|x|`` (dense: about 0.6 of
  the inputs spike in a step), and through the surrogate with Bernoulli spike trains of pixel
  intensities of MNIST-like sparsity (:data:`SPARSE_PIXELS`; the C step sums only the active
  inputs); the random numbers drawn per chunk from the replicas' generators;
- ``biohsic`` with the ``features`` memory (ξ from traces of :data:`FEATURES` random-feature neurons, two
  stages, as ``configs/fig5-mnist-neural-memory.toml``), through the rule's loop and the engine's C and torch steps;
- minibatch backprop (batch 6);
- ``biohsic`` with the buffer memory from an evolved optimiser state
  (``subnormal``): as in MNIST, half the input pixels are always 0, so the
  first layer's weights from them get no gradient, and their AdamW moments
  sit in the subnormal float range (planted before every
  :data:`PLANTED_RUN` samples), where unflushed x86 arithmetic is slow
  (2x on this project's AMD CPU, up to 100x on others). Its limit is the
  buffer row's; the two should be close.

Every other training path has rows too (``cnn``, ``reservoir``, ``phsic``,
``feedback``, ``layerwise``): the paper's CNN for ``R = 1`` and ``3``
(:data:`CNN_REPLICAS`) through the rule's loop and the engine's torch step,
the reservoir memory, pHSIC's batch and online forms on Table 1's network,
and the baselines on the MNIST network. The CNN's FLOPs are counted from its
shapes (:func:`cnn_update_flops`); the others' are the matrix products torch
runs in the rule's own loop (:func:`counted_flops`).

The physical limit of an update is ``max(F / G, B / W)``: ``F`` its
floating-point operations (the matrix products: forward, weight gradient,
recomputed window, readout over the window), ``B`` the bytes of weights and
AdamW moments read and written (``6 × 4`` bytes per parameter and replica:
``θ, m, v`` in and out), ``G`` the matrix-product rate and ``W`` the memory
bandwidth, both measured in the same run. ``limit_ratio`` is that time over
the measured one (1 = at the limit).

That limit assumes the weights and moments stream from memory at every
update, as they must when an update touches every replica before the next
sample. The C step instead trains one replica over a whole chunk of samples
while its 1.3 MB of state sits in cache, so it can pass 1;
``cache_limit_ratio`` puts the same bytes against the bandwidth of a copy
that fits in cache (``W_c``), a bound that no ordering escapes.
"""
from __future__ import annotations

import math
import platform
import tempfile
import time
from pathlib import Path
from dataclasses import dataclass

import torch

from ..config import RuleConfig
from ..engine import make_engine
from ..engine.threads import loop_threads
from ..functional.spiking import LIFSpikeParams
from ..models import MLP, LeakyMLP
from ..models.spiking import SpikingMLP
from ..models.cnn import CNN
from ..rules import make_rule
from ..rules.baselines import replica_cross_entropy

D_IN, HIDDEN, C, WINDOW = 784, [128, 64], 10, 8
FEATURES, STAGES = 512, 2
"""The ``features`` memory's random features per kernel and trace stages in its bench row."""


@dataclass
class Row:
    rule: str
    memory: str
    engine: str
    replicas: int
    us_per_step: float
    samples_per_s_per_seed: float
    samples_per_s_total: float
    limit_us_per_step: float
    limit_ratio: float
    steps_per_sample: int = 1
    chunk: int = 0
    """Samples per call of the engine's step (0: the rule's own loop)."""
    cache_limit_ratio: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device, repeats: int = 3) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _copy_rate(numel: int, device: torch.device, repeats: int) -> float:
    src, dst = torch.empty(numel, device=device), torch.empty(numel, device=device)
    src.fill_(1.0)

    def copies():
        for _ in range(repeats):
            dst.copy_(src)

    return 2 * 4 * numel * repeats / _timed(copies, device, 5)


def machine_rates(device: torch.device) -> dict:
    """Measured matrix-product rate (FLOP/s, float32) and bandwidths (bytes/s, read + write of a copy) from memory and in cache."""
    n = 4096 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    t = _timed(lambda: torch.mm(a, b), device, 5)
    numel = (256 if device.type == "cuda" else 32) * 2**20
    cached = 2**16  # 2 x 256 KB: in a core's L2 on the CPUs this runs on
    return {"gemm_flops": 2 * n**3 / t, "bandwidth_bytes": _copy_rate(numel, device, 1),
            "cache_bandwidth_bytes": _copy_rate(cached, device, 200)}


def _sizes() -> list[tuple[int, int]]:
    dims = [D_IN, *HIDDEN, C]
    return list(zip(dims[:-1], dims[1:]))


def _n_params() -> int:
    return sum(i * o + o for i, o in _sizes())


def update_cost(rule: str, memory: str, replicas: int, steps: int = 1, batch: int = 6) -> tuple[float, float]:
    """``(F, B)``: matrix-product FLOPs and weight + AdamW-state bytes of one update, for all replicas."""
    macs = sum(i * o for i, o in _sizes())
    hidden_macs = sum(i * o for i, o in _sizes()[:-1])
    if rule == "backprop":
        flops = 6 * batch * macs
    else:
        flops = 2 * hidden_macs + 2 * hidden_macs  # current sample: forward, weight gradient of the hidden layers
        flops += 4 * WINDOW * HIDDEN[-1] * C  # readout over the window: logits, gradient
        if memory == "recompute":
            flops += 2 * (WINDOW - 1) * hidden_macs * steps  # past outputs, T steps from rest for LIF
        if memory == "features":  # feature maps of x and z; per layer: fast-weight readout, and its Hebbian update (S stages)
            flops += (D_IN + sum(HIDDEN)) * FEATURES + sum(2 * FEATURES * (2 * d + 2) * (1 + 2 * STAGES) for d in HIDDEN)
    nbytes = 6 * 4 * _n_params()
    if memory == "features":  # the fast weights, read and written once per sample
        nbytes += 2 * 4 * STAGES * sum(FEATURES * (2 * d + 2) for d in HIDDEN)
    return replicas * flops, replicas * nbytes


def _limit(rates: dict, rule: str, memory: str, replicas: int, steps: int = 1, bandwidth: str = "bandwidth_bytes") -> float:
    flops, nbytes = update_cost(rule, memory, replicas, steps)
    return max(flops / rates["gemm_flops"], nbytes / rates[bandwidth])


def _data(n: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, D_IN, generator=g).to(device)
    y = torch.randint(0, C, (n,), generator=g).to(device)
    return x, y, torch.nn.functional.one_hot(y, C).float()


def _sparse_images(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """MNIST-like inputs in [-1, 1] in place of ``x``: a pixel is lit (intensity ``U(0, 1)``) with probability
    :data:`SPARSE_PIXELS`, else black (-1); the mean intensity is half that (MNIST's: 0.13)."""
    lit = torch.rand(x.shape, generator=generator) < SPARSE_PIXELS
    return torch.where(lit, 2 * torch.rand(x.shape, generator=generator) - 1, -torch.ones_like(x)).to(x.device)


def _online(kind: str, memory: str, replicas: int, device: torch.device, steps: int):
    if kind == "lif":
        model = LeakyMLP(D_IN, HIDDEN, C, replicas=replicas, tau_m=5.0, dt=1.0, steps=steps)
    elif kind in SPIKING:
        firing, encoding, sparse = SPIKING[kind]
        model = SpikingMLP(D_IN, HIDDEN, C, replicas=replicas, neuron=LIFSpikeParams(tau_mem=2.0, threshold=0.1), steps=steps,
                           firing=firing, encoding=encoding, layernorm=True,
                           **(dict(input_offset=1.0, input_scale=0.5) if sparse else {}))
    else:
        model = MLP(D_IN, HIDDEN, C, replicas=replicas)
    model = model.to(device)
    rule = make_rule("biohsic", model, RuleConfig(memory=memory, window=WINDOW, features=FEATURES, trace_stages=STAGES)).to(device)
    opt = torch.optim.AdamW(rule.trainable(), lr=1e-4, betas=(0.9, 0.99), weight_decay=1e-4)
    return model, rule, opt


SPIKING = {"spike-surrogate": ("surrogate", "current", False), "spike-escape": ("escape", "bernoulli", False),
           "spike-sparse": ("surrogate", "bernoulli", True)}
"""The spiking rows: ``(firing, encoding, sparse)`` of each; ``sparse``: MNIST-like images (:func:`_sparse_images`)
encoded as pixel intensities (``input_offset = 1``, ``input_scale = 0.5``)."""
SPARSE_PIXELS = 0.25
"""The fraction of lit pixels of the sparse spiking row's images (mean intensity 0.125, MNIST's 0.13)."""


def bench_online(kind, memory, engine, replicas, device, samples, rates, lif_steps=20, chunk=0) -> Row:
    T = lif_steps if kind == "lif" or kind in SPIKING else 1
    model, rule, opt = _online(kind, memory, replicas, device, T)
    x, y, y1 = _data(max(samples, 64), device)
    if kind in SPIKING and SPIKING[kind][2]:
        x = _sparse_images(x, torch.Generator().manual_seed(1))
    if engine == "rule":
        run = _online_loop(rule, opt, x, y)
        run(0, WINDOW + 2)
        t = _timed(lambda: run(0, samples), device, 1)
    else:
        eng = make_engine(model, rule, opt, mode=engine, chunk=chunk or None)
        order = torch.arange(len(x), device=device)
        step_chunk = eng.native_chunk if engine == "native" else eng.chunk
        warm = max(eng.graph_samples if device.type == "cuda" else min(step_chunk, 64), WINDOW - 1 + min(step_chunk, 64))
        eng.train_epoch(x, y1, order[:warm])  # fills the window, compiles (and captures)
        body = order[:samples]
        t = _timed(lambda: eng.train_epoch(x, y1, body), device, 2)
        if eng.backend not in (engine, "cuda-graph"):
            raise RuntimeError(f"the {engine} row ran {eng.backend}")
    per_sample = t / samples
    used_chunk = 0 if engine == "rule" else (1 if T > 1 and engine == "compile" else eng.chunk_used or step_chunk)
    name = "biohsic (LIF, T=%d)" % T if kind == "lif" else "biohsic"
    if kind in SPIKING:
        firing, encoding, sparse = SPIKING[kind]
        name = "biohsic (spiking, %s, %s, T=%d)" % (firing, encoding + (" of sparse pixel intensities" if sparse else ""), T)
    limit = _limit(rates, "biohsic", memory, replicas, T)
    cache_limit = _limit(rates, "biohsic", memory, replicas, T, "cache_bandwidth_bytes")
    return Row(name, memory, engine, replicas, 1e6 * per_sample / T,
               1 / per_sample, replicas / per_sample, 1e6 * limit, limit * T / per_sample, T, used_chunk, cache_limit * T / per_sample)


SUBNORMAL_M, SUBNORMAL_V = 1e-38, 1e-39
"""The planted first and second moments: subnormal in float32 (below 1.18e-38). Without a gradient they decay by
beta1 = 0.9 and beta2 = 0.99 per update, so they stay subnormal for about 150 and 1,300 updates."""
PLANTED_RUN = 128
"""Samples trained between plantings (the first moments must stay subnormal)."""


def plant_subnormal(opt: torch.optim.Optimizer, weight: torch.Tensor, columns: slice) -> int:
    """Set the AdamW moments of ``weight[..., columns]`` to subnormal values, as a long-zero gradient leaves them
    (:data:`SUBNORMAL_M`, :data:`SUBNORMAL_V`). Returns the entries planted."""
    state = opt.state[weight]
    state["exp_avg"][..., columns] = SUBNORMAL_M
    v = state["exp_avg_sq"][..., columns]
    v.fill_(SUBNORMAL_V)
    return v.numel()


def bench_subnormal(engine, replicas, device, samples, rates, chunk=0) -> Row:
    model, rule, opt = _online("mlp", "buffer", replicas, device, 1)
    x, y, y1 = _data(max(samples, 64), device)
    dead = slice(0, D_IN // 2)
    x[:, dead] = 0
    w1 = model.layers()[0].weight
    order = torch.arange(len(x), device=device)
    if engine == "rule":
        run = _online_loop(rule, opt, x, y)
        run(0, WINDOW + 2)
    else:
        eng = make_engine(model, rule, opt, mode=engine, chunk=chunk or None)
        eng.train_epoch(x, y1, order[: max(eng.graph_samples if device.type == "cuda" else 64, WINDOW - 1 + 64)])

        def run(lo, hi):
            eng.train_epoch(x, y1, order[lo:hi])
            if eng.backend not in (engine, "cuda-graph"):
                raise RuntimeError(f"the {engine} row ran {eng.backend}")
    times = []
    for _ in range(3):
        total = 0.0
        for lo in range(0, samples, PLANTED_RUN):
            plant_subnormal(opt, w1, dead)
            _sync(device)
            t0 = time.perf_counter()
            run(lo, min(lo + PLANTED_RUN, samples))
            _sync(device)
            total += time.perf_counter() - t0
        times.append(total)
    per_sample = sorted(times)[1] / samples
    limit = _limit(rates, "biohsic", "buffer", replicas)
    cache_limit = _limit(rates, "biohsic", "buffer", replicas, 1, "cache_bandwidth_bytes")
    used_chunk = 0 if engine == "rule" else min(PLANTED_RUN, eng.native_chunk if engine == "native" else eng.chunk)
    return Row("biohsic (subnormal moments)", "buffer", engine, replicas, 1e6 * per_sample, 1 / per_sample, replicas / per_sample,
               1e6 * limit, limit / per_sample, 1, used_chunk, cache_limit / per_sample)


def bench_backprop(replicas, device, samples, rates, batch=6) -> Row:
    model = MLP(D_IN, HIDDEN, C, replicas=replicas).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=1e-4)
    x, y, _ = _data(max(samples, 64), device)
    batches = max(1, samples // batch)

    def run():
        for i in range(batches):
            j = (i * batch) % (len(x) - batch)
            replica_cross_entropy(model(x[j : j + batch]), y[j : j + batch]).backward()
            opt.step()
            opt.zero_grad(set_to_none=False)

    t = _timed(run, device, 1) / batches
    limit = _limit(rates, "backprop", "-", replicas)
    cache_limit = _limit(rates, "backprop", "-", replicas, bandwidth="cache_bandwidth_bytes")
    return Row("backprop (batch 6)", "-", "rule", replicas, 1e6 * t, batch / t, replicas * batch / t, 1e6 * limit, limit / t,
               cache_limit_ratio=cache_limit / t)


# -- every other training path: the CNN, the reservoir memory, pHSIC, the baselines -------------------------------

CNN_IN, CNN_CHANNELS, CNN_WINDOW, CNN_REPLICAS = (1, 28, 28), [128, 256], 4, (1, 3)
"""The paper's CNN as ``configs/fig6-fashion-mnist.toml`` trains it (N = 4), timed for R = 1 and 3 seeds."""


def counted_flops(fn) -> float:
    """The matrix-product FLOPs (matmuls, convolutions and their gradients) torch runs in ``fn()``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of parameters and optimiser moments one step reads and writes (each once in, once out)."""
    total = 0
    for group in optimizer.param_groups:
        for p in group["params"]:
            moments = sum(1 for v in optimizer.state.get(p, {}).values() if isinstance(v, torch.Tensor) and v.shape == p.shape)
            total += 2 * (1 + moments) * p.numel() * p.element_size()
    return total


def _row(name, memory, engine, replicas, seconds_per_step, samples_per_step, flops, nbytes, rates, steps_per_sample=1,
         chunk=0) -> Row:
    """A :class:`Row` from a measured time per step and the step's FLOPs and bytes (all replicas)."""
    limit = max(flops / rates["gemm_flops"], nbytes / rates["bandwidth_bytes"])
    cache = max(flops / rates["gemm_flops"], nbytes / rates["cache_bandwidth_bytes"])
    per_sample = seconds_per_step * steps_per_sample / samples_per_step
    return Row(name, memory, engine, replicas, 1e6 * seconds_per_step, 1 / per_sample, replicas / per_sample, 1e6 * limit,
               limit / seconds_per_step, steps_per_sample, chunk, cache / seconds_per_step)


def _online_loop(rule, opt, x, y, batch=1):
    """``run(lo, hi)``: the trainer's loop of the rule over minibatches ``lo … hi - 1`` of ``batch`` samples of ``x``,
    with torch's threads adapting as the trainer's do (:func:`~ibhebb.engine.threads.loop_threads`)."""
    kept = [None]

    def run(lo, hi):
        kept[0] = threads = loop_threads(x.device, kept[0])
        with threads:
            for i in range(lo, hi):
                for _ in rule.updates(x[i * batch : (i + 1) * batch], y[i * batch : (i + 1) * batch]):
                    opt.step()
                    opt.zero_grad(set_to_none=False)
                threads.advance(batch)

    return run


def _time_online(model, rule, opt, engine, device, samples, flops_samples=2):
    """Seconds per sample of the rule's loop or the engine, and the FLOPs per sample the rule's loop counts."""
    n = max(samples, 16) + rule.params.window + flops_samples
    x = torch.randn(n, model.in_features, generator=torch.Generator().manual_seed(0)).to(device)
    y = torch.randint(0, model.n_classes, (n,), generator=torch.Generator().manual_seed(1)).to(device)
    y1 = torch.nn.functional.one_hot(y, model.n_classes).to(x.dtype)
    loop = _online_loop(rule, opt, x, y)
    w = rule.params.window
    loop(0, w)  # fill the window (and make the optimiser's moments)
    flops = counted_flops(lambda: loop(w, w + flops_samples)) / flops_samples
    lo = w + flops_samples
    if engine == "rule":
        t = _timed(lambda: loop(lo, lo + samples), device, 1)
    else:  # "auto": whatever the engine runs this model with
        eng = make_engine(model, rule, opt, mode=engine)
        order = torch.arange(n, device=device)
        eng.train_epoch(x, y1, order[lo : lo + 2])
        t = _timed(lambda: eng.train_epoch(x, y1, order[lo : lo + samples]), device, 2)
        if eng.backend not in (engine, "torch", "cuda-graph"):
            raise RuntimeError(f"the {engine} row ran {eng.backend}")
        engine = eng.backend
    return t / samples, flops, engine


def cnn_update_flops(model, memory: str, window: int) -> float:
    """FLOPs of one ``biohsic`` update of a CNN, all replicas: the current sample's convolutions forward and their weight
    gradients, the readout over the window, and (``recompute``) the window's past samples forward again."""
    R = model.replicas
    conv = sum(math.prod(l.conv_shape) * l.in_shape[0] * l.weight.shape[-1] ** 2 for l in model.hidden)
    readout = model.readout.in_features * model.readout.out_features
    flops = 2 * conv + 2 * conv + 4 * window * readout
    if memory == "recompute":
        flops += 2 * (window - 1) * conv
    return R * flops


def bench_cnn(memory, engine, replicas, device, samples, rates) -> Row:
    """``biohsic`` on the paper's CNN (``configs/fig6-fashion-mnist.toml``) through the rule's loop or the engine's torch step."""
    model = CNN(CNN_IN, CNN_CHANNELS, C, replicas=replicas, layernorm=True).to(device)
    rule = make_rule("biohsic", model, RuleConfig(memory=memory, window=CNN_WINDOW, gamma=50.0, sigmas=[1.0, 0.1, 0.5])).to(device)
    opt = torch.optim.AdamW(rule.trainable(), lr=5e-5, betas=(0.9, 0.99), weight_decay=1e-4)
    per_sample, _, ran = _time_online(model, rule, opt, engine, device, samples)
    return _row("biohsic (CNN)", memory, ran, replicas, per_sample, 1, cnn_update_flops(model, memory, CNN_WINDOW),
                replicas * 6 * 4 * sum(p[0].numel() for p in model.parameters()), rates)


RESERVOIR_UNITS = 500
"""Units per reservoir of the reservoir rows, as ``configs/reservoir-pretrain-mnist.toml``."""


def tiny_reservoir_file(path, window: int = WINDOW) -> None:
    """A reservoir bank for the bench's MNIST network, pre-trained on a short task-free stream (its speed is that of a
    fully trained one: the same units and steps as ``configs/reservoir-pretrain-mnist.toml``)."""
    from ..reservoir.config import PretrainConfig
    from .pretrain import pretrain

    cfg = PretrainConfig()
    cfg.reservoir.units, cfg.reservoir.steps = RESERVOIR_UNITS, 20
    cfg.target.x_dim, cfg.target.classes, cfg.target.hidden = D_IN, C, list(HIDDEN)
    cfg.target.window, cfg.target.gamma, cfg.target.sigmas = window, 2.0, [0.5, 0.1, 1.0]
    cfg.stream.x, cfg.stream.samples, cfg.stream.test_samples = "uniform", window + 24, window + 8
    pretrain(cfg, path, progress=False)


def bench_reservoir(engine, replicas, device, samples, rates, path) -> Row:
    """``biohsic`` with the ``reservoir`` memory on the MNIST network (``configs/fig5-mnist-reservoir.toml``)."""
    model = MLP(D_IN, HIDDEN, C, replicas=replicas).to(device)
    cfg = RuleConfig(memory="reservoir", window=WINDOW, gamma=2.0, sigmas=[0.5, 0.1, 1.0], reservoir=str(path))
    rule = make_rule("biohsic", model, cfg).to(device)
    opt = torch.optim.AdamW(rule.trainable(), lr=1e-4, betas=(0.9, 0.99), weight_decay=1e-4)
    per_sample, flops, ran = _time_online(model, rule, opt, engine, device, samples)
    return _row("biohsic", "reservoir", ran, replicas, per_sample, 1, flops, replicas * 6 * 4 * _n_params(), rates)


PATHS = {
    "phsic": [
        ("pHSIC batch (eq 10, grouped)", ["rule.form=batch"]),
        ("pHSIC pair (eq 18, grouped)", ["rule.form=pair"]),
        ("pHSIC running-mean (eq 21, grouped)", ["rule.form=running-mean"]),
        ("pHSIC split (eq 22, grouped)", ["rule.form=split"]),
    ],
    "feedback": [("feedback alignment", ["rule.name=feedback-alignment"]), ("sign symmetry", ["rule.name=sign-symmetry"])],
    "layerwise": [("layer classifier", ["rule.name=layer-classifier"]), ("last layer", ["rule.name=last-layer"])],
}
"""The rows of every other rule, each a config of :data:`PATH_BASES` with these settings."""
PATH_BASES = {
    "phsic": ["model.kind=phsic-mlp", "model.hidden=[1024,1024,1024]", "model.negative_slope=0.1", "model.divisive_norm=true",
              "model.groups=32", "rule.name=phsic", "rule.kernel=gaussian", "rule.grouped=true", "rule.gamma=2.0",
              "rule.sigmas=[0.5,0.1,5.0]", "optim.name=sgd", "optim.momentum=0.95", "optim.batch_size=256", "optim.lr=1.0"],
    "feedback": ["model.kind=mlp", "model.hidden=[128,64]", "model.layernorm=true", "optim.name=adamw", "optim.lr=1e-3",
                 "optim.betas=[0.9,0.99]", "optim.weight_decay=1e-4", "optim.batch_size=6"],
}
"""Table 1's pHSIC network and optimiser (``configs/table1/mnist-phsic-gaussian-grp-div.toml``); Fig 5's MNIST network and
its backprop optimiser (``configs/fig5-mnist-backprop.toml``) for the baselines."""
PATH_BASES["layerwise"] = PATH_BASES["feedback"]


def bench_path(group: str, name: str, settings: list[str], replicas: int, device, samples: int, rates) -> Row:
    """The rule's own loop of one config of :data:`PATHS`, on random MNIST-shaped data, as the trainer runs it.

    ``samples`` per timed run (at least two steps: minibatches, or samples of an online form).
    """
    from ..config import load_config
    from ..data.dataset import Dataset
    from ..train.trainer import build

    cfg = load_config(None, [*PATH_BASES[group], *settings, f"seeds={replicas}", f"device={device}", "eval.hsic_samples=0"])
    batch = 1 if cfg.rule.name == "phsic" and cfg.rule.form != "batch" else cfg.optim.batch_size
    steps = max(2, samples // batch)
    n = batch * (steps + 4)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, C, (n,), generator=g)
    data = Dataset("mnist", x.to(device), y.to(device), x[:1].to(device), y[:1].to(device), C)
    model, rule, opt = build(cfg, data)

    run = _online_loop(rule, opt, data.x_train, data.y_train, batch)
    run(0, 2)
    flops = counted_flops(lambda: run(2, 4)) / 2
    t = _timed(lambda: run(4, 4 + steps), device, 1) / steps
    return _row(name, "-", "rule", replicas, t, batch, flops, state_bytes(opt), rates)


def _say(row: Row, progress: bool) -> Row:
    if progress:
        print(f"  {row.rule} {row.memory} {row.engine} R={row.replicas}: {row.samples_per_s_per_seed:,.0f} samples/s per seed",
              flush=True)
    return row


def _cnn_rows(engines, device, steps, rates, progress) -> list[Row]:
    """The CNN for :data:`CNN_REPLICAS`: the rule's loop and the engine (its torch step, whatever engine is asked for)."""
    rows = []
    fast = [e for e in engines if e != "rule"][:1]
    for r in CNN_REPLICAS:
        for memory in ("buffer", "recompute") if r == 1 else ("buffer",):
            for engine in [*(["rule"] if "rule" in engines else []), *(["auto"] if fast else [])]:
                n = steps or (16 if engine == "rule" else 32)
                rows.append(_say(bench_cnn(memory, engine, r, device, n, rates), progress))
    return rows


def _reservoir_rows(engines, replicas, device, counts, rates, progress) -> list[Row]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "reservoir.pt"
        tiny_reservoir_file(path)
        for engine in engines:
            n = max(16, counts[engine] // 4)
            rows.append(_say(bench_reservoir(engine, replicas, device, n, rates, path), progress))
    return rows


def _path_rows(groups, replicas, device, samples, rates, progress) -> list[Row]:
    rows = []
    for group, entries in PATHS.items():
        if group not in groups:
            continue
        for name, settings in entries:
            rows.append(_say(bench_path(group, name, settings, replicas, device, samples, rates), progress))
    return rows


ROW_GROUPS = ("buffer", "recompute", "features", "lif", "spiking", "backprop", "subnormal", "cnn", "reservoir", "phsic", "feedback",
              "layerwise")
BENCH_ENGINES = ("rule", "native", "compile")


def default_engines(device: str) -> tuple[str, ...]:
    """What the bench times by default: the engine's own choice on the device (the C step on a CPU, the compiled
    step on a GPU) against the rule's own loop. On a CPU the compiled rows (``--engines rule,native,compile``) are
    left out by default: compiling them takes a machine's first run past two minutes."""
    return ("rule", "native") if torch.device(device).type == "cpu" else ("rule", "compile")


def run_bench(device: str = "cpu", steps: int = 0, replicas=(1, 30), lif_steps: int = 20, progress: bool = True,
              groups=ROW_GROUPS, chunk: int = 0, engines=None) -> dict:
    """Time the rows of ``groups`` through ``engines``; ``steps`` samples per timed run (0: defaults that keep the CPU bench short)."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    engines = tuple(engines or default_engines(device))
    rates = machine_rates(dev)
    rows = []
    for r in replicas:
        base = steps or (2048 if cuda else (1024 if r == 1 else 96))
        counts = {"rule": max(16, base // (8 if cuda else 4)), "compile": base, "native": base if steps else 4 * base}
        plan = []
        plan_rows = (("mlp", "buffer"), ("mlp", "recompute"), ("mlp", "features"), ("lif", "buffer"), *((k, "buffer") for k in SPIKING))
        for kind, memory in plan_rows:
            group = "spiking" if kind in SPIKING else kind if kind == "lif" else memory
            if group not in groups:
                continue
            for engine in engines:
                n = counts[engine]
                if kind == "lif" or kind in SPIKING:
                    n = max(8 if engine == "rule" else 16, n // lif_steps)
                if cuda and engine == "compile":
                    n = max(n, 256) // 256 * 256
                plan.append((kind, memory, engine, n))
        for kind, memory, engine, n in plan:
            row = bench_online(kind, memory, engine, r, dev, n, rates, lif_steps, chunk)
            rows.append(row)
            if progress:
                print(f"  {row.rule} {row.memory} {row.engine} R={r}: {row.samples_per_s_per_seed:,.0f} samples/s per seed", flush=True)
        if "subnormal" in groups:
            for engine in engines:
                n = counts[engine]
                row = bench_subnormal(engine, r, dev, n, rates, chunk)
                rows.append(row)
                if progress:
                    print(f"  {row.rule} {row.engine} R={r}: {row.samples_per_s_per_seed:,.0f} samples/s per seed", flush=True)
        if "backprop" in groups:
            rows.append(bench_backprop(r, dev, max(60, base // 2), rates))
        if "reservoir" in groups:
            rows += _reservoir_rows(engines, r, dev, counts, rates, progress)
        rows += _path_rows(groups, r, dev, steps or (64 if r == 1 else 16), rates, progress)
    cnn_rates = rates
    if "cnn" in groups:  # measured again: the CNN's rows run last, and a shared machine's load drifts
        cnn_rates = machine_rates(dev)
        rows += _cnn_rows(engines, dev, steps, cnn_rates, progress)
    return {
        "device": torch.cuda.get_device_name(dev) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "gemm_gflops": rates["gemm_flops"] / 1e9,
        "bandwidth_gb_s": rates["bandwidth_bytes"] / 1e9,
        "cache_bandwidth_gb_s": rates["cache_bandwidth_bytes"] / 1e9,
        "cnn_gemm_gflops": cnn_rates["gemm_flops"] / 1e9,
        "rows": [row.to_dict() for row in rows],
    }


def markdown(result: dict) -> str:
    """The bench result as a Markdown table, with the machine's figures above it."""
    lines = [
        f"device: {result['device']}, torch {result['torch']}, {result['threads']} threads; "
        f"measured: {result['gemm_gflops']:.0f} GFLOP/s float32 GEMM, {result['bandwidth_gb_s']:.1f} GB/s memory bandwidth, "
        f"{result.get('cache_bandwidth_gb_s', 0):.0f} GB/s in cache"
        + (f"; {result['cnn_gemm_gflops']:.0f} GFLOP/s measured again for the CNN rows"
           if any(r["rule"] == "biohsic (CNN)" for r in result["rows"]) else ""),
        "",
        "| rule | memory | engine | R | samples/s per seed | samples/s total | µs per step | limit µs per step | ratio to limit "
        "| ratio to cache limit |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['rule']} | {r['memory']} | {r['engine']} | {r['replicas']} | {r['samples_per_s_per_seed']:,.0f} | "
            f"{r['samples_per_s_total']:,.0f} | {r['us_per_step']:.1f} | {r['limit_us_per_step']:.1f} | {r['limit_ratio']:.2f} "
            f"| {r.get('cache_limit_ratio', 0):.2f} |"
        )
    lines.append("")
    lines.append("A step is one update (T per sample for LIF; one minibatch of 6 for backprop). "
                 "Limit: max(FLOPs / GEMM rate, bytes of weights + AdamW state (+ the fast weights of the features memory, read and written) / memory bandwidth); "
                 "cache limit: the same bytes at the in-cache bandwidth. The native (C) step keeps a replica's state "
                 "in cache over a chunk of samples, so its ratio to the memory limit can exceed 1. "
                 "FLOPs of the CNN and MLP rows are counted from the networks' shapes; those of the reservoir, pHSIC and "
                 "baseline rows are the matrix products torch runs in the rule's own loop (torch's FlopCounterMode), and their "
                 "bytes are the parameters and optimiser moments of one step.")
    return "\n".join(lines)


def write_json(result: dict, path) -> None:
    from ..fileio import atomic_write_json

    atomic_write_json(path, result)
