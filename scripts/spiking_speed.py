"""Per-time-step CPU time of the C step on MNIST: lif-mlp (rate) vs spiking-mlp (both β forms, currents or Bernoulli
input spikes: of |x| for images in [-1, 1], dense, or of the pixel intensity (x + 1)/2, sparse), same T, shape, memory
and optimiser, interleaved, medians of 3.

    python scripts/spiking_speed.py T SAMPLES
"""
import json
import os
import statistics
import sys
import time

import torch

from ibhebb.config import load_config
from ibhebb.data import load_dataset
from ibhebb.engine import make_engine
from ibhebb.functional import spiking as F
from ibhebb.train.trainer import build

torch.set_num_threads(1)

T, n = int(sys.argv[1]), int(sys.argv[2])
common = ["seeds=1", "threads=1", f"model.steps={T}", f"data.n_train={n + 16}", "data.n_test=100"]
intensity = ["model.encoding=bernoulli", "model.input_offset=1.0", "model.input_scale=0.5"]
runs = {
    "lif-mlp": load_config("configs/fig5-mnist.toml", [*common, "model.kind=lif-mlp", "model.tau_m=2.0"]),
    "spiking surrogate current": load_config("configs/fig5-mnist-spiking-surrogate.toml", common),
    "spiking escape current": load_config("configs/fig5-mnist-spiking-escape.toml", common),
    "spiking surrogate bernoulli": load_config("configs/fig5-mnist-spiking-surrogate.toml",
                                               [*common, "model.encoding=bernoulli"]),
    "spiking escape bernoulli": load_config("configs/fig5-mnist-spiking-escape.toml", [*common, "model.encoding=bernoulli"]),
    "spiking surrogate bernoulli intensity": load_config("configs/fig5-mnist-spiking-surrogate.toml", [*common, *intensity]),
    "spiking escape bernoulli intensity": load_config("configs/fig5-mnist-spiking-escape.toml", [*common, *intensity]),
}
res = {k: [] for k in runs}
for rnd in range(3):
    for name, cfg in runs.items():
        data = load_dataset("mnist", n_train=n + 16, n_test=100)
        model, rule, opt = build(cfg, data)
        model.train()
        eng = make_engine(model, rule, opt, mode="native")
        x = data.x_train.reshape(len(data.x_train), -1).contiguous()
        y1 = torch.nn.functional.one_hot(data.y_train, 10).to(x.dtype)
        eng.train_epoch(x, y1, torch.arange(16))  # fill the window
        order = torch.arange(16, 16 + n)
        if rnd == 0 and cfg.model.kind == "spiking-mlp" and cfg.model.encoding != "current":
            d = cfg.model
            q = F.signed_input_prob(x[order], d.encoding, scale=d.input_scale, dt=d.dt, offset=d.input_offset)
            print(name, "input spike probability per pixel and step: %.3f" % q.abs().mean().item(), flush=True)
        c0, w0 = time.process_time(), time.perf_counter()
        eng.train_epoch(x, y1, order)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
        assert eng.backend == "native", eng.backend
        res[name].append((1e6 * cpu / (n * T), 1e6 * wall / (n * T)))
        print(rnd, name, "cpu %.1f us/step, wall %.1f us/step, load %.1f" % (*res[name][-1], os.getloadavg()[0]), flush=True)
print(json.dumps({k: {"cpu_us_per_step": [round(a, 1) for a, _ in v], "median_cpu": round(statistics.median(a for a, _ in v), 1),
                      "median_wall": round(statistics.median(b for _, b in v), 1)} for k, v in res.items()}))
