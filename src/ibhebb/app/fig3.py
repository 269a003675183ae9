"""Seed 000 Fig 3: can a reservoir's readout track ξ of a window of N samples?

The stream: the first ``samples`` MNIST test images with one-hot labels and
random ``z ~ U(0,1)^{z_dim}``, repeated for ``epochs`` with the readout
learning, then ``samples`` NEW images (the next test images, new ``z``) with
learning off. Every sample is held for ``T`` reservoir steps; the target of a
sample is ξ (:func:`ibhebb.functional.signals.global_signal`) of the window of the last
``N`` samples of the stream, current last. The first ``N - 1`` samples only
fill the window (no target, no learning). Scores: normalised MSE and Pearson
correlation of readout against target over every step of the held-out samples.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from ..data import load_dataset
from ..fileio import atomic_write_json, prepare_dir, save_figure_atomic
from ..memory.features import FeatureMemory
from ..reservoir.config import Fig3Config
from ..reservoir.dynamics import Reservoir
from ..reservoir.readout import make_readout
from ..reservoir.stream import block_scaling, fit_scores, run_stream, window_targets

#: Samples shown in each time window of the heatmaps.
PANEL = 10


def fig3_stream(cfg: Fig3Config) -> dict:
    """Inputs ``r_i = [x; y; z]`` ``(S, d)``, targets ξ ``(S, z_dim)`` and the index ranges of the stream."""
    t = cfg.task
    data = load_dataset(t.data, n_train=1, n_test=2 * t.samples)
    x = data.x_test.reshape(len(data.x_test), -1).double()
    if len(x) < 2 * t.samples:
        from ..errors import ConfigError

        raise ConfigError(f"task.samples = {t.samples}: the test set has only {len(x)} images, not {2 * t.samples}")
    y = torch.nn.functional.one_hot(data.y_test, data.n_classes).double()
    g = torch.Generator().manual_seed(cfg.reservoir.seed)
    z_train = torch.rand(t.samples, t.z_dim, generator=g, dtype=torch.float64)
    z_test = torch.rand(t.samples, t.z_dim, generator=g, dtype=torch.float64)
    n = t.samples
    xs = torch.cat([x[:n]] * t.epochs + [x[n : 2 * n]])
    ys = torch.cat([y[:n]] * t.epochs + [y[n : 2 * n]])
    zs = torch.cat([z_train] * t.epochs + [z_test])
    targets = torch.zeros(len(xs), t.z_dim, dtype=torch.float64)
    targets[t.window - 1 :] = window_targets(xs, ys, zs, window=t.window, gamma=t.gamma, sigmas=t.sigmas, variant=t.variant)
    train_end = n * t.epochs
    return {
        "inputs": torch.cat([xs, ys, zs], 1),
        "dims": [x.shape[1], y.shape[1], t.z_dim],
        "targets": targets,
        "train": (t.window - 1, train_end),
        "test": (train_end, len(xs)),
    }


def _windows(stream: dict) -> dict[str, tuple[int, int]]:
    (a, b), (c, d) = stream["train"], stream["test"]
    return {
        "start of training": (a, a + PANEL),
        "end of training": (b - PANEL, b),
        "start of test": (c, c + PANEL),
        "end of test": (d - PANEL, d),
    }


def plot_fig3(path: Path, stream: dict, outputs: torch.Tensor, recorded: list[int], title: str) -> None:
    """Target vs readout heatmaps (rows: elements of ξ, columns: time steps) per time window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = {s: i for i, s in enumerate(recorded)}
    wins = _windows(stream)
    T = outputs.shape[1]
    fig, axes = plt.subplots(2, len(wins), figsize=(4 * len(wins), 4.5), squeeze=False)
    tgt_all = stream["targets"]
    vmax = float(tgt_all[stream["train"][0] :].abs().max())
    for j, (name, (a, b)) in enumerate(wins.items()):
        pred = torch.cat([outputs[pos[s], :, 0] for s in range(a, b)]).T  # (m, PANEL*T)
        tgt = tgt_all[a:b].repeat_interleave(T, 0).T
        for i, (img, label) in enumerate(((tgt, "target ξ"), (pred, "readout"))):
            ax = axes[i, j]
            im = ax.imshow(img.cpu().numpy(), aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest")
            ax.set_title(f"{name}: {label}", fontsize=9)
            ax.set_xlabel(f"step (samples {a}–{b - 1}, T = {T})", fontsize=8)
            ax.set_ylabel("element of ξ", fontsize=8)
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.suptitle(title)
    try:
        save_figure_atomic(fig, path, dpi=110)
    finally:
        plt.close(fig)


@torch.no_grad()
def feature_memory_stream(stream: dict, cfg: Fig3Config, features: int, seed: int) -> torch.Tensor:
    """ξ ``(S, z_dim)`` of the ``features`` working memory along the Fig 3 stream (nothing is fitted: every sample is new to it).

    Rows before the first full window stay 0, as in ``stream["targets"]``.
    """
    t = cfg.task
    dx, dy, _ = stream["dims"]
    inputs = stream["inputs"]
    mem = FeatureMemory(t.window, sigmas=t.sigmas, gamma=t.gamma, features=features, stages=cfg.trace_stages, seed=seed,
                        draw=cfg.feature_draw)
    out = torch.zeros(len(inputs), inputs.shape[1] - dx - dy, dtype=torch.float64)
    for i, row in enumerate(inputs):
        x, y, z = row[None, :dx], row[None, dx : dx + dy], row[None, None, dx + dy :]
        if mem.ready:
            out[i] = mem.signals(None, x, y, [z], gamma=t.gamma, sigmas=t.sigmas, variant=t.variant)[0][0][0]
        mem.push(x, y, [z])
    return out


def score_feature_memories(cfg: Fig3Config, stream: dict) -> list[dict]:
    """Correlation and NMSE of the ``features`` memory's ξ with the window's true ξ, per ``D`` and seed.

    On the training part of the stream (the repeated images) and on the held-out part (new images and ``z``).
    """
    (tr0, tr1), (te0, te1) = stream["train"], stream["test"]
    tgt = stream["targets"]
    runs = []
    for D in cfg.features:
        for seed in range(cfg.seeds):
            t0 = time.perf_counter()
            xi = feature_memory_stream(stream, cfg, D, seed)
            runs.append({"features": D, "seed": seed, "seconds": time.perf_counter() - t0,
                         "train": fit_scores(xi[tr0:tr1, None], tgt[tr0:tr1, None]),
                         "test": fit_scores(xi[te0:te1, None], tgt[te0:te1, None])})
    return runs


def plot_fit(path: Path, panels: dict[str, tuple[torch.Tensor, torch.Tensor]], title: str) -> None:
    """Readout against true ξ, one scatter panel per part of the stream (training stream beside held-out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), squeeze=False)
    for ax, (name, (pred, tgt)) in zip(axes[0], panels.items()):
        p, t = pred.flatten().double(), tgt.expand_as(pred).flatten().double()
        r = float(torch.corrcoef(torch.stack([p, t]))[0, 1]) if p.numel() > 1 else float("nan")
        ax.scatter(t.numpy(), p.numpy(), s=3, alpha=0.4)
        lim = float(max(t.abs().max(), 1e-12))
        ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
        ax.set_title(f"{name}: r = {r:.3f}", fontsize=9)
        ax.set_xlabel("true ξ (window of N)", fontsize=8)
        ax.set_ylabel("readout", fontsize=8)
    fig.suptitle(title)
    try:
        save_figure_atomic(fig, path, dpi=110)
    finally:
        plt.close(fig)


def run_fig3(cfg: Fig3Config, out_dir: str | Path, *, progress: bool = True) -> dict:
    """Train and test every (size, learner); write ``results.json`` and one PNG per run into ``out_dir``."""
    out = prepare_dir(out_dir)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dtype = getattr(torch, cfg.dtype)
    stream = fig3_stream(cfg)
    S = len(stream["inputs"])
    (tr0, tr1), (te0, te1) = stream["train"], stream["test"]
    learn = torch.zeros(S, dtype=torch.bool)
    learn[tr0:tr1] = True
    record = torch.zeros(S, dtype=torch.bool)
    for a, b in _windows(stream).values():
        record[a:b] = True
    record[te0:te1] = True
    recorded = record.nonzero().flatten().tolist()
    targets = stream["targets"]
    scale = cfg.readout.target_scale or float(1.0 / targets[tr0:tr1].std())
    r, o = cfg.reservoir, cfg.readout
    inputs = stream["inputs"].to(dtype).unsqueeze(1)
    results = {"config": cfg.to_dict(), "target_scale": scale, "runs": []}
    for size in cfg.sizes:
        for learner in o.learners:
            torch.manual_seed(r.seed)
            res = Reservoir(
                size, inputs.shape[-1], targets.shape[1], groups=cfg.seeds, lr=r.lr, sr=r.sr,
                connectivity=r.connectivity, input_scaling=block_scaling(stream["dims"], r.input_scaling),
                feedback_scaling=r.feedback_scaling, noise_hidden=r.noise_hidden, seed=r.seed,
            ).to(cfg.device, dtype)
            readout = make_readout(learner, cfg.seeds, size, targets.shape[1], dtype=dtype, device=cfg.device, **o.options(learner))
            t0 = time.perf_counter()
            outputs = run_stream(
                res, readout, inputs, (targets * scale).to(dtype).unsqueeze(1), steps=r.steps, learn=learn,
                record=record, noise_out=r.noise_out, feedback=r.feedback, progress=progress, desc=f"{learner} n={size}",
            )
            seconds = time.perf_counter() - t0
            outputs = outputs.double().cpu() / scale
            test = outputs[[recorded.index(s) for s in range(te0, te1)]]
            tgt = targets[te0:te1].unsqueeze(1).unsqueeze(2)
            run = {
                "units": size,
                "learner": learner,
                "test_all_steps": fit_scores(test, tgt),
                "test_last_step": fit_scores(test[:, -1:], tgt),
                "train_end_all_steps": fit_scores(
                    outputs[[recorded.index(s) for s in range(tr1 - PANEL, tr1)]], targets[tr1 - PANEL : tr1, None, None]
                ),
                "seconds": seconds,
                "seconds_per_step": seconds / (S * r.steps),
                "plot": f"fig3-{learner}-{size}.png",
            }
            plot_fig3(out / run["plot"], stream, outputs, recorded,
                      f"{learner.upper()}, {size} units: held-out NMSE {run['test_all_steps']['nmse'][0]:.3f}, "
                      f"r = {run['test_all_steps']['correlation'][0]:.3f}")
            run["fit_plot"] = f"fig3-{learner}-{size}-fit.png"
            last = outputs[[recorded.index(s) for s in range(tr1 - PANEL, tr1)]]
            plot_fit(out / run["fit_plot"], {"training stream (end)": (last[:, -1], targets[tr1 - PANEL : tr1, None]),
                                             "held-out": (test[:, -1], targets[te0:te1, None])},
                     f"{learner.upper()}, {size} units, last step of each sample")
            results["runs"].append(run)
            atomic_write_json(out / "results.json", results)
    if cfg.features:
        results["feature_memory"] = score_feature_memories(cfg, stream)
        atomic_write_json(out / "results.json", results)
    return results
