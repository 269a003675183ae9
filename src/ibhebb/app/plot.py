"""Plots of run directories: accuracy per epoch with the seed spread, per-layer HSIC terms."""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..fileio import read_json, read_jsonl, save_figure_atomic


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The records of a run's ``metrics.jsonl``, one per finished epoch (a torn last line is left out)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        raise UserError(f"{run_dir} is not a run directory (no metrics.jsonl)")
    lines, _ = read_jsonl(path)
    if not lines:
        raise UserError(f"{path} holds no finished epoch yet")
    return lines


def _label(run_dir: Path) -> str:
    cfg_path = run_dir / "config.json"
    if cfg_path.exists():
        cfg = read_json(cfg_path, "run config")
        rule = cfg["rule"]["name"]
        if rule == "biohsic":
            rule += f" ({cfg['rule']['variant']}, N={cfg['rule']['window']})"
        return f"{rule}, {cfg['data']['name']}"
    return run_dir.name


def save_figure(fig, out: str | Path) -> Path:
    """Lay out, write (110 dpi) and close ``fig``; returns ``out`` as a path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    try:
        return save_figure_atomic(fig, out, dpi=110)
    finally:
        plt.close(fig)


def _band(ax, epochs, per_seed, label, color=None):
    import numpy as np

    a = np.asarray(per_seed, dtype=float) * 100  # a seed dropped after diverging is None, so NaN here
    mean = np.nanmean(a, 1)
    seeds = f"{a.shape[1]} seed{'s' if a.shape[1] > 1 else ''}"
    (line,) = ax.plot(epochs, mean, marker="o", ms=3, label=f"{label} ({seeds})", color=color)
    ax.xaxis.get_major_locator().set_params(integer=True)
    if a.shape[1] > 1:
        ax.fill_between(epochs, np.nanmin(a, 1), np.nanmax(a, 1), alpha=0.2, color=line.get_color())
    return line


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Test (and train) accuracy per epoch with the min–max band over seeds, and each layer's HSIC terms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    m = read_metrics(run_dir)
    epochs = [r["epoch"] for r in m]
    has_layers = bool(m[0].get("layers"))
    has_firing = bool(m[0].get("firing"))
    panels = 1 + 2 * has_layers + has_firing
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels if panels > 1 else 5.5, 4), squeeze=False)
    ax = axes[0, 0]
    line = _band(ax, epochs, [r["test_accuracy"] for r in m], "test")
    _band(ax, epochs, [r["train_accuracy"] for r in m], "train")
    line.set_linewidth(2)
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title=_label(run_dir))
    ax.grid(alpha=0.3)
    ax.legend()
    if has_layers:
        import numpy as np

        for li in range(len(m[0]["layers"])):
            loss = np.array([r["layers"][li]["loss"] for r in m])
            hxz = np.array([r["layers"][li]["hsic_xz"] for r in m])
            hyz = np.array([r["layers"][li]["hsic_yz"] for r in m])
            (l1,) = axes[0, 1].plot(epochs, loss.mean(1), marker="o", ms=3, label=f"layer {li + 1}")
            axes[0, 2].plot(epochs, hxz.mean(1), color=l1.get_color(), label=f"HSIC(X, Z{li + 1})")
            axes[0, 2].plot(epochs, hyz.mean(1), color=l1.get_color(), ls="--", label=f"HSIC(Y, Z{li + 1})")
        axes[0, 1].set(xlabel="epoch", ylabel="L = HSIC(X,Z) - γ HSIC(Y,Z)", title="layer bottleneck loss (held-out batch)")
        axes[0, 2].set(xlabel="epoch", ylabel="HSIC", title="the two terms")
        for a in axes[0, 1:]:
            a.grid(alpha=0.3)
            a.xaxis.get_major_locator().set_params(integer=True)
            a.legend(fontsize=8)
    if has_firing:
        _firing_panel(axes[0, -1], epochs, m)
    return save_figure(fig, out or run_dir / "plot.png")


def _firing_panel(ax, epochs, m) -> None:
    """A spiking network's firing rate per hidden layer (left) and spikes per sample of all of them (right), means over seeds."""
    import numpy as np

    for li in range(len(m[0]["firing"])):
        rate = np.array([r["firing"][li]["rate"] for r in m], dtype=float)
        ax.plot(epochs, rate.mean(1), marker="o", ms=3, label=f"layer {li + 1}")
    spikes = np.array([[sum(v) for v in zip(*(layer["spikes_per_sample"] for layer in r["firing"]))] for r in m], dtype=float)
    twin = ax.twinx()
    twin.plot(epochs, spikes.mean(1), color="black", ls="--", label="spikes per sample")
    twin.set_ylabel("spikes per sample (all layers)")
    ax.set(xlabel="epoch", ylabel="firing rate (spikes per neuron and step)", title="firing (test samples)")
    ax.grid(alpha=0.3)
    ax.xaxis.get_major_locator().set_params(integer=True)
    lines = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
    ax.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], fontsize=8)
