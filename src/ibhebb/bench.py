"""Throughput of one training step of the paper's MNIST network, against what the hardware allows.

:func:`run_bench` times, on random MNIST-shaped data (784-128-64-10,
ReLU + LayerNorm, N = 8, AdamW as in ``configs/fig5-mnist.toml``), for
``R = 1`` and ``R = 30`` replicas:

- ``biohsic`` with the ``buffer`` and ``recompute`` memories, through the
  rule's eager loop and through the fast engine (:mod:`ibhebb.engine`);
- ``biohsic`` on the leaky (LIF) version of the same network, ``T`` Euler
  steps (one update each) per sample;
- minibatch backprop (batch 6).

The physical limit of an update is ``max(F / G, B / W)``: ``F`` its
floating-point operations (the matrix products: forward, weight gradient,
recomputed window, readout over the window), ``B`` the bytes of weights and
AdamW moments read and written (``6 × 4`` bytes per parameter and replica:
``θ, m, v`` in and out), ``G`` the matrix-product rate and ``W`` the memory
bandwidth, both measured in the same run. ``limit_ratio`` is that time over
the measured one (1 = at the limit).
"""
from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass

import torch

from .config import RuleConfig
from .engine import make_engine
from .models import MLP, LeakyMLP
from .rules import make_rule
from .rules.baselines import replica_cross_entropy

D_IN, HIDDEN, C, WINDOW = 784, [128, 64], 10, 8


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
    """Samples per compiled call of the fast engine (0: not the fast engine)."""

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


def machine_rates(device: torch.device) -> dict:
    """Measured matrix-product rate (FLOP/s, float32) and memory bandwidth (bytes/s, read + write of a copy)."""
    n = 4096 if device.type == "cuda" else 1024
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    t = _timed(lambda: torch.mm(a, b), device, 5)
    numel = (256 if device.type == "cuda" else 32) * 2**20
    src, dst = torch.empty(numel, device=device), torch.empty(numel, device=device)
    src.fill_(1.0)
    tc = _timed(lambda: dst.copy_(src), device, 5)
    return {"gemm_flops": 2 * n**3 / t, "bandwidth_bytes": 2 * 4 * numel / tc}


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
    return replicas * flops, replicas * 6 * 4 * _n_params()


def _limit(rates: dict, rule: str, memory: str, replicas: int, steps: int = 1) -> float:
    flops, nbytes = update_cost(rule, memory, replicas, steps)
    return max(flops / rates["gemm_flops"], nbytes / rates["bandwidth_bytes"])


def _data(n: int, device: torch.device):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, D_IN, generator=g).to(device)
    y = torch.randint(0, C, (n,), generator=g).to(device)
    return x, y, torch.nn.functional.one_hot(y, C).float()


def _online(kind: str, memory: str, replicas: int, device: torch.device, steps: int):
    if kind == "lif":
        model = LeakyMLP(D_IN, HIDDEN, C, replicas=replicas, tau_m=5.0, dt=1.0, steps=steps)
    else:
        model = MLP(D_IN, HIDDEN, C, replicas=replicas)
    model = model.to(device)
    rule = make_rule("biohsic", model, RuleConfig(memory=memory, window=WINDOW)).to(device)
    opt = torch.optim.AdamW(rule.trainable(), lr=1e-4, betas=(0.9, 0.99), weight_decay=1e-4)
    return model, rule, opt


def bench_online(kind, memory, engine, replicas, device, samples, rates, lif_steps=20, chunk=0) -> Row:
    T = lif_steps if kind == "lif" else 1
    model, rule, opt = _online(kind, memory, replicas, device, T)
    x, y, y1 = _data(max(samples, 64), device)
    if engine == "eager":
        def run(lo=0, hi=samples):
            for i in range(lo, hi):
                for _ in rule.updates(x[i : i + 1], y[i : i + 1]):
                    opt.step()
                    opt.zero_grad(set_to_none=False)

        run(0, WINDOW + 2)
        t = _timed(run, device, 1)
    else:
        eng = make_engine(model, rule, opt, mode="compile", chunk=chunk or None)
        order = torch.arange(len(x), device=device)
        warm = max(eng.graph_samples if device.type == "cuda" else eng.chunk, WINDOW - 1 + eng.chunk)
        eng.train_epoch(x, y1, order[:warm])  # fills the window, compiles (and captures)
        body = order[:samples]
        t = _timed(lambda: eng.train_epoch(x, y1, body), device, 2)
    per_sample = t / samples
    used_chunk = 0 if engine == "eager" else (1 if T > 1 else eng.chunk)
    name = "biohsic (LIF, T=%d)" % T if kind == "lif" else "biohsic"
    limit = _limit(rates, "biohsic", memory, replicas, T)
    return Row(name, memory, engine, replicas, 1e6 * per_sample / T,
               1 / per_sample, replicas / per_sample, 1e6 * limit, limit * T / per_sample, T, used_chunk)


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
    return Row("backprop (batch 6)", "-", "eager", replicas, 1e6 * t, batch / t, replicas * batch / t, 1e6 * limit, limit / t)


ROW_GROUPS = ("buffer", "recompute", "lif", "backprop")


def run_bench(device: str = "cpu", steps: int = 0, replicas=(1, 30), lif_steps: int = 20, progress: bool = True,
              groups=ROW_GROUPS, chunk: int = 0) -> dict:
    """Time the rows of ``groups``; ``steps`` samples per timed run (0: defaults that keep the CPU bench short)."""
    dev = torch.device(device)
    cuda = dev.type == "cuda"
    rates = machine_rates(dev)
    rows = []
    for r in replicas:
        base = steps or (2048 if cuda else (1024 if r == 1 else 96))
        eager_n = max(16, base // (8 if cuda else 4))
        plan = [
            ("mlp", "buffer", "eager", eager_n),
            ("mlp", "buffer", "fast", base),
            ("mlp", "recompute", "eager", eager_n),
            ("mlp", "recompute", "fast", base),
            ("lif", "buffer", "eager", max(8, base // (4 * lif_steps))),
            ("lif", "buffer", "fast", max(16, base // lif_steps)),
        ]
        plan = [p for p in plan if (p[0] if p[0] == "lif" else p[1]) in groups]
        for kind, memory, engine, n in plan:
            if cuda and engine == "fast":
                n = max(n, 256) // 256 * 256
            row = bench_online(kind, memory, engine, r, dev, n, rates, lif_steps, chunk)
            rows.append(row)
            if progress:
                print(f"  {row.rule} {row.memory} {row.engine} R={r}: {row.samples_per_s_per_seed:,.0f} samples/s per seed", flush=True)
        if "backprop" in groups:
            rows.append(bench_backprop(r, dev, max(60, base // 2), rates))
    return {
        "device": torch.cuda.get_device_name(dev) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "gemm_gflops": rates["gemm_flops"] / 1e9,
        "bandwidth_gb_s": rates["bandwidth_bytes"] / 1e9,
        "rows": [row.to_dict() for row in rows],
    }


def markdown(result: dict) -> str:
    """The bench result as a Markdown table, with the machine's figures above it."""
    lines = [
        f"device: {result['device']}, torch {result['torch']}, {result['threads']} threads; "
        f"measured: {result['gemm_gflops']:.0f} GFLOP/s float32 GEMM, {result['bandwidth_gb_s']:.1f} GB/s memory bandwidth",
        "",
        "| rule | memory | engine | R | samples/s per seed | samples/s total | µs per step | limit µs per step | ratio to limit |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['rule']} | {r['memory']} | {r['engine']} | {r['replicas']} | {r['samples_per_s_per_seed']:,.0f} | "
            f"{r['samples_per_s_total']:,.0f} | {r['us_per_step']:.1f} | {r['limit_us_per_step']:.1f} | {r['limit_ratio']:.2f} |"
        )
    lines.append("")
    lines.append("A step is one update (T per sample for LIF; one minibatch of 6 for backprop). "
                 "Limit: max(FLOPs / GEMM rate, bytes of weights + AdamW state / bandwidth).")
    return "\n".join(lines)


def write_json(result: dict, path) -> None:
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
