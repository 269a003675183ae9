"""The spiking comparison table of docs/results.md: the rule (surrogate, escape noise) against the rate LIF network
and surrogate-gradient BPTT on the same spiking network, on linear, XOR and MNIST.

    python scripts/spiking_table.py run RUNS_DIR [TASK ...]   # train every row (nice -n 19, threads=1), skip done ones
    python scripts/spiking_table.py table RUNS_DIR            # the Markdown table from the runs' summary.json

Each row is one ``ibhebb train`` command (printed in the table); seeds are the configs' (seed 0, ``seeds`` replicas).
"""
import json
import math
import subprocess
import sys
from pathlib import Path

MNIST = "data.n_train=10000 data.n_test=2000 epochs=1 seeds=3 eval.train_samples=1000 eval.hsic_samples=0"
ROWS = {
    "linear": [
        ("rule, surrogate", "fig4-linear-spiking-surrogate"),
        ("rule, escape noise", "fig4-linear-spiking-escape"),
        ("rate LIF network, rule", "fig4-linear"),
        ("BPTT, surrogate", "fig4-linear-spiking-surrogate rule.name=spiking-bptt optim.lr=1e-2 optim.batch_size=6"),
    ],
    "xor": [
        ("rule, surrogate", "fig4-xor-spiking-surrogate"),
        ("rule, escape noise", "fig4-xor-spiking-escape"),
        ("rate LIF network, rule", "fig4-xor"),
        ("BPTT, surrogate", "fig4-xor-spiking-surrogate rule.name=spiking-bptt optim.lr=1e-2 optim.batch_size=6"),
    ],
    "mnist": [
        ("rule, surrogate", f"fig5-mnist-spiking-surrogate {MNIST}"),
        ("rule, escape noise", f"fig5-mnist-spiking-escape {MNIST}"),
        ("rate LIF network, rule", f"fig5-mnist model.kind=lif-mlp model.tau_m=2.0 model.steps=10 {MNIST}"),
        ("BPTT, surrogate", f"fig5-mnist-spiking-surrogate rule.name=spiking-bptt optim.lr=1e-3 optim.readout_lr=1e-3 "
                            f"optim.batch_size=6 {MNIST}"),
        ("rule, surrogate, input as spikes of pixel intensities",
         f"fig5-mnist-spiking-surrogate model.encoding=bernoulli model.input_offset=1.0 model.input_scale=0.5 "
         f"model.threshold=0.2 model.reset=zero model.steps=5 {MNIST}"),
    ],
}


def slug(task: str, i: int) -> str:
    return f"{task}-{i}"


def run(root: Path, tasks) -> None:
    for task in tasks:
        for i, (_, args) in enumerate(ROWS[task]):
            out = root / slug(task, i)
            if (out / "summary.json").exists():
                continue
            cmd = ["nice", "-n", "19", sys.executable, "-m", "ibhebb", "train", *args.split(), "threads=1", "--out", str(out)]
            print(" ".join(cmd[3:]), flush=True)
            subprocess.run(cmd, check=False)


def fmt(xs, digits=3):
    return " / ".join(f"{x:.{digits}f}" for x in xs)


def table(root: Path) -> str:
    lines = ["| task | network, training | command: `ibhebb train <args> threads=1` | epochs | test accuracy (mean ± std) | "
             "per seed | firing rate per step, layer 1 / 2 | spikes per sample, layer 1 / 2 | silent, layer 1 / 2 |",
             "|---|---|---|---:|---|---|---|---|---|"]
    for task, rows in ROWS.items():
        for i, (name, args) in enumerate(rows):
            f = root / slug(task, i) / "summary.json"
            if not f.exists():
                lines.append(f"| {task} | {name} | `{args}` | | not run | | | | |")
                continue
            s = json.loads(f.read_text())
            acc = s["test_accuracy"]
            firing = s.get("firing") or []
            mean = lambda v: sum(v) / len(v)  # noqa: E731
            rate = fmt([mean(layer["rate"]) for layer in firing]) or "no spikes"
            sps = fmt([mean(layer["spikes_per_sample"]) for layer in firing], 1) or "—"
            silent = fmt([mean(layer["silent"]) for layer in firing], 2) or "—"
            std = math.sqrt(sum((a - mean(acc)) ** 2 for a in acc) / len(acc))
            lines.append(f"| {task} | {name} | `{args}` | {s['epochs']} | {mean(acc):.3f} ± {std:.3f} | "
                         f"{' '.join('%.2f' % a for a in acc)} | {rate} | {sps} | {silent} |")
    return "\n".join(lines)


if __name__ == "__main__":
    what, root = sys.argv[1], Path(sys.argv[2])
    if what == "run":
        run(root, sys.argv[3:] or list(ROWS))
    else:
        print(table(root))
