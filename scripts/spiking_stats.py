"""How a trained spiking run's hidden layers code: the spike counts behind the trainer's firing record.

    python scripts/spiking_stats.py RUN_DIR [N_TEST]     # first N_TEST test samples (default 1000), evaluation stream

Per hidden layer (means over the replicas): the per-neuron firing rate (quantiles 10/50/90 over the neurons),
silent neurons (never fire), always-on neurons (fire at every step of every sample), the histogram of a neuron's
spike count over the ``T`` steps of a sample (``T + 1`` values: 0 … T), the share of (sample, neuron) pairs at 0 or
``T`` (a binary code), the potential above threshold ``v' - ϑ`` (quantiles over steps, samples and neurons) and the
mean spike derivative ``∂s/∂v'`` (the surrogate or ``f'``, the part of β a saturated neuron loses).
"""
import json
import sys

import torch

from ibhebb.app.runs import read_checkpoint
from ibhebb.config import Config, fill_from
from ibhebb.data import load_dataset
from ibhebb.models import build_model


def main(run: str, n: int) -> None:
    cfg = Config()
    fill_from(cfg, None, json.load(open(f"{run}/config.json")))
    data = load_dataset(cfg.data.name, seed=cfg.seed, n_train=100, n_test=n)
    model = build_model(cfg, data)
    model.load_state_dict(read_checkpoint(run)["model"])
    model.eval()
    x, steps, theta = model.flatten(data.x_test.float()), model.steps, model.neuron.threshold
    counts, above, grads = [0] * len(model.hidden), [[] for _ in model.hidden], [[] for _ in model.hidden]
    with torch.no_grad():
        for traces in model.present(x):
            for i, tr in enumerate(traces[:-1]):
                counts[i] = counts[i] + tr.spikes
                above[i].append((tr.v - theta).flatten()[::7])
                grads[i].append(tr.a.flatten())
    acc = (traces[-1].z.argmax(-1) == data.y_test).double().mean(-1)
    print(f"{run}: test accuracy (first {n}) {' '.join('%.3f' % a for a in acc.tolist())}; T = {steps}, threshold {theta}")
    for i, c in enumerate(counts):
        rate = c.mean(1) / steps  # (R, neurons)
        q = torch.quantile(rate.flatten(), torch.tensor([0.1, 0.5, 0.9])).tolist()
        hist = torch.bincount(c.long().flatten(), minlength=steps + 1).double()
        hist /= hist.sum()
        v = torch.cat(above[i])
        vq = torch.quantile(v[torch.randperm(len(v), generator=torch.Generator().manual_seed(0))[:200_000]],
                            torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95])).tolist()
        print(f"  layer {i + 1}: rate {rate.mean():.3f} (per neuron q10/50/90 {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f}); "
              f"silent {(rate == 0).double().mean():.3f}; always on {(rate == 1).double().mean():.3f}; "
              f"binary (count 0 or T) {hist[0] + hist[-1]:.3f}")
        print(f"    count histogram 0..T: {' '.join('%.3f' % h for h in hist.tolist())}")
        print(f"    v' - threshold, quantiles 5/25/50/75/95: {' '.join('%.2f' % a for a in vq)}; "
              f"mean ds/dv' {torch.cat(grads[i]).mean():.3f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 1000)
