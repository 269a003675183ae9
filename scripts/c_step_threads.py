"""Samples/s of the single-seed C step (the bench row mlp / buffer / native, R = 1) with THREADS torch threads (0: the default).

Usage: PYTHONPATH=TREE/src python scripts/c_step_threads.py THREADS [SAMPLES]; one JSON line. Run it for two trees side by side
(old and new) to compare them; docs/results.md, "A busy machine", has the figures."""
import json
import sys

import torch

from ibhebb.app import bench

threads = int(sys.argv[1])
samples = int(sys.argv[2]) if len(sys.argv) > 2 else 8192
if threads:
    torch.set_num_threads(threads)
dev = torch.device("cpu")
rates = bench.machine_rates(dev)
row = bench.bench_online("mlp", "buffer", "native", 1, dev, samples, rates)
d = row.to_dict()
print(json.dumps({"threads": threads or torch.get_num_threads(), "samples_per_s": d["samples_per_s_total"]}))
