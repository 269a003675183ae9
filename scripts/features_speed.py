"""Samples/s per seed of the C step with the features memory against D (features per kernel) and S (trace stages),
beside the buffer memory's row, measured in one session, interleaved (buffer, then each D, REPEATS rounds); the ratio is
to the buffer of the same round (median over rounds).

Usage: PYTHONPATH=src python scripts/features_speed.py R SAMPLES D1,D2,... S1,S2,... [REPEATS]; one JSON line per row.
docs/results.md ("The features memory in the engine") has the figures."""
import json
import statistics
import sys

import torch

from ibhebb.app import bench

replicas, samples = int(sys.argv[1]), int(sys.argv[2])
sizes = [int(v) for v in sys.argv[3].split(",")]
stages = [int(v) for v in sys.argv[4].split(",")]
repeats = int(sys.argv[5]) if len(sys.argv) > 5 else 3
torch.set_num_threads(1)
dev = torch.device("cpu")
rates = bench.machine_rates(dev)
plan = [("buffer", 0, 0)] + [("features", d, s) for d in sizes for s in stages]
seen = {key: [] for key in plan}
for _ in range(repeats):
    for memory, d, s in plan:
        if memory == "features":
            bench.FEATURES, bench.STAGES = d, s
        seen[(memory, d, s)].append(bench.bench_online("mlp", memory, "native", replicas, dev, samples, rates).to_dict()["samples_per_s_per_seed"])
buffer = seen[plan[0]]
for (memory, d, s), v in seen.items():  # the ratio to the buffer row of the same round, then the median over rounds
    ratio = statistics.median(a / b for a, b in zip(v, buffer))
    print(json.dumps({"memory": memory, "features": d, "stages": s, "replicas": replicas, "samples_per_s_per_seed": round(statistics.median(v)),
                      "runs": [round(a) for a in v], "ratio_to_buffer": round(ratio, 3)}))
