"""Fig 6 of seed 000 from a sweep directory: final accuracy against the swept value, and curves per value."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..fileio import read_json
from .plot import read_metrics, save_figure
from .sweep import SWEEP_FILE

#: Seed 000 Fig 6 (CIFAR-10, 30 seeds): final accuracy (%) by memory capacity N.
PUBLISHED_FIG6 = {
    "window": [2, 4, 8, 16, 32],
    "test": [59.7, 60.0, 59.4, 58.5, 57.2],
    "train": [68.2, 69.3, 71.0, 72.8, 75.7],
}


def is_sweep(path: str | Path) -> bool:
    return (Path(path) / SWEEP_FILE).is_file()


def sweep_results(sweep_dir: str | Path) -> tuple[str, list[str], list[dict]]:
    """``(x_key, group_keys, cells)``: each finished cell with its values, per-epoch metrics and config."""
    sweep_dir = Path(sweep_dir)
    record = read_json(sweep_dir / SWEEP_FILE, "sweep state")
    keys = [k for k, _ in record["axes"]]
    if not keys:
        raise UserError(f"{sweep_dir} is a sweep without axes: plot its run directory instead")
    x_key = "rule.window" if "rule.window" in keys else keys[0]
    cells = []
    for cell in record["cells"]:
        run = sweep_dir / cell["name"]
        if not (run / "metrics.jsonl").exists():
            continue
        cells.append({**cell, "metrics": read_metrics(run), "config": read_json(run / "config.json", "run config")})
    if not cells:
        raise UserError(f"no cell of the sweep in {sweep_dir} has finished an epoch yet")
    return x_key, [k for k in keys if k != x_key], cells


def plot_sweep(sweep_dir: str | Path, out: str | Path | None = None) -> Path:
    """Left: final train (dashed) and test (solid) accuracy against the swept value (N by default), mean ± std
    over seeds, one colour per combination of the other axes; right: test accuracy per epoch, one line per value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    sweep_dir = Path(sweep_dir)
    x_key, group_keys, cells = sweep_results(sweep_dir)
    groups: dict[str, list[dict]] = {}
    for c in cells:
        label = ", ".join(f"{k.split('.')[-1]}={c['values'][k]}" for k in group_keys) or "all"
        groups.setdefault(label, []).append(c)
    fig, axes = plt.subplots(1, 1 + len(groups), figsize=(5.5 * (1 + len(groups)), 4.2), squeeze=False)
    ax = axes[0, 0]
    numeric = all(isinstance(c["values"][x_key], (int, float)) for c in cells)
    for gi, (label, members) in enumerate(groups.items()):
        members = sorted(members, key=lambda c: c["values"][x_key] if numeric else str(c["values"][x_key]))
        xs = [c["values"][x_key] for c in members] if numeric else list(range(len(members)))
        color = f"C{gi}"
        for split, style in (("test", "-"), ("train", "--")):
            acc = [np.asarray(c["metrics"][-1][f"{split}_accuracy"]) * 100 for c in members]
            ax.errorbar(xs, [a.mean() for a in acc], yerr=[a.std(ddof=1) if a.size > 1 else 0 for a in acc],
                        ls=style, marker="o", ms=4, capsize=3, color=color, label=f"{split}, {label}")
        if not numeric:
            ax.set_xticks(xs, [str(c["values"][x_key]) for c in members])
        curves = axes[0, 1 + gi]
        cmap = plt.get_cmap("viridis")
        for i, c in enumerate(members):
            m = c["metrics"]
            acc = np.asarray([r["test_accuracy"] for r in m]) * 100
            curves.plot([r["epoch"] for r in m], acc.mean(1), marker="o", ms=3,
                        color=cmap(i / max(len(members) - 1, 1)), label=f"{x_key.split('.')[-1]}={c['values'][x_key]}")
        curves.set(xlabel="epoch", ylabel="test accuracy (%)", title=label)
        curves.xaxis.get_major_locator().set_params(integer=True)
        curves.grid(alpha=0.3)
        curves.legend(fontsize=8)
    data = cells[0]["config"]["data"]["name"]
    if x_key == "rule.window" and data == "cifar10":
        for split, style in (("test", "-"), ("train", "--")):
            ax.plot(PUBLISHED_FIG6["window"], PUBLISHED_FIG6[split], ls=style, color="k", alpha=0.5, label=f"{split}, seed 000 (30 seeds)")
    if numeric and x_key == "rule.window":
        ax.set_xscale("log", base=2)
        values = sorted({c["values"][x_key] for c in cells})
        ax.set_xticks(values, [str(v) for v in values])
        ax.minorticks_off()
    epochs = sorted({c["metrics"][-1]["epoch"] for c in cells})
    seeds = cells[0]["config"]["seeds"]
    ax.set(xlabel=x_key, ylabel="final accuracy (%)",
           title=f"{data}: after {'/'.join(map(str, epochs))} epoch(s), {seeds} seed(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, out or sweep_dir / "fig6.png")
