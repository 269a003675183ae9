"""Firing statistics of a trained spiking run (the trainer does not log them).

    python scripts/spiking_stats.py RUN_DIR [RUN_DIR ...]

For each run directory written by ``ibhebb train`` with ``model.kind = "spiking-mlp"``: test accuracy
(mean ± std over the replicas) and, per hidden layer on the test set, the firing rate (spikes per neuron
per step), the spikes per sample (all neurons of the layer, all ``T`` steps) and the fraction of silent
neurons, each as the mean over the replicas, with the evaluation stream of the model's generators.
"""
import json
import statistics
import sys
from pathlib import Path

import torch

from ibhebb.config import load_config
from ibhebb.data import load_dataset
from ibhebb.train.trainer import accuracy, build


def stats(run: Path) -> dict:
    cfg = load_config(run / "config.json")
    d = cfg.data
    data = load_dataset(d.name, root=d.root or None, seed=cfg.seed, n_train=d.n_train or None, n_test=d.n_test or None)
    model, _, _ = build(cfg, data)
    model.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=False)["model"])
    model.eval()
    x = data.x_test.to(getattr(torch, cfg.dtype))
    acc = accuracy(model, x, data.y_test, 1000)
    layers = model.firing_statistics(model.flatten(x))
    mean = statistics.mean
    return {
        "run": str(run), "firing": cfg.model.firing, "seeds": cfg.seeds, "epochs": cfg.epochs,
        "test_accuracy_mean": mean(acc), "test_accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
        "layers": [{k: mean(v) for k, v in layer.items()} for layer in layers],
    }


if __name__ == "__main__":
    torch.set_num_threads(1)
    for arg in sys.argv[1:]:
        print(json.dumps(stats(Path(arg))))
