"""Task-free pre-training of one reservoir per hidden layer, saved frozen for the trainer.

The stream never sees the task: ``x`` is random (uniform in a range matched to
the normalised data, or normal) or comes from ANOTHER data set, ``y`` is a
random one-hot label, each layer's ``z^ℓ`` is random (``N(0,1)``, like a
LayerNorm output, or ``U(0,1)``). The target of layer ℓ's readout is ξ^ℓ of
the window of the last ``N`` samples with the rule's ``γ``, ``σ`` and variant.
The bank holds one reservoir per layer; inputs ``[x; y; z^ℓ]`` and outputs are
zero-padded to the largest layer. The readout learns ``ξ · s_ℓ`` with
``s_ℓ = 1/std(ξ^ℓ)`` on the training stream (or ``readout.target_scale``);
the memory divides by ``s_ℓ``. After training, a fresh stream of
``test_samples`` with learning off measures the fit.
"""
from __future__ import annotations

import io
import time
from pathlib import Path

import torch

from ..errors import ConfigError
from ..fileio import atomic_write_bytes, atomic_write_json, prepare_dir
from ..reservoir.config import PretrainConfig
from ..reservoir.dynamics import Reservoir
from ..reservoir.file import FORMAT
from ..reservoir.readout import make_readout
from ..reservoir.stream import block_scaling, fit_scores, run_stream, window_targets



def task_free_stream(cfg: PretrainConfig) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """``x`` ``(S, d_x)``, one-hot ``y`` ``(S, C)``, ``z^ℓ`` ``(S, d_ℓ)`` per layer (float64), S = samples + test_samples."""
    t, s = cfg.target, cfg.stream
    n = s.samples + s.test_samples
    g = torch.Generator().manual_seed(s.seed)
    if s.x == "uniform":
        lo, hi = s.x_range
        x = torch.rand(n, t.x_dim, generator=g, dtype=torch.float64) * (hi - lo) + lo
    elif s.x == "normal":
        x = torch.randn(n, t.x_dim, generator=g, dtype=torch.float64)
    else:
        from ..data import DATASETS, load_dataset

        if s.x not in DATASETS:
            raise ConfigError(f"stream.x = {s.x!r} is not uniform, normal or a data set ({', '.join(DATASETS)})")
        data = load_dataset(s.x, n_train=n, seed=s.seed)
        x = data.x_train.reshape(len(data.x_train), -1).double()
        if x.shape[1] != t.x_dim or len(x) < n:
            raise ConfigError(f"stream.x = {s.x!r} gives {len(x)} inputs of dimension {x.shape[1]}; need {n} of {t.x_dim}")
        x = x[torch.randperm(len(x), generator=g)[:n]]
    y = torch.nn.functional.one_hot(torch.randint(0, t.classes, (n,), generator=g), t.classes).double()
    draw = torch.randn if s.z == "normal" else torch.rand
    zs = [draw(n, d, generator=g, dtype=torch.float64) for d in t.hidden]
    return x, y, zs


def pretrain(cfg: PretrainConfig, out_file: str | Path, *, progress: bool = True) -> dict:
    """Train the bank on a task-free stream, test it on a fresh one, save ``out_file`` (+ ``.json`` scores)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t, s, r, o = cfg.target, cfg.stream, cfg.reservoir, cfg.readout
    dtype = getattr(torch, cfg.dtype)
    x, y, zs = task_free_stream(cfg)
    L, m, n_all = len(t.hidden), max(t.hidden), len(x)
    in_dims = [t.x_dim + t.classes + d for d in t.hidden]
    d_in = max(in_dims)
    inputs = torch.zeros(n_all, L, d_in, dtype=torch.float64)
    targets = torch.zeros(n_all, L, m, dtype=torch.float64)
    scaling = torch.zeros(L, 1, d_in)
    for l, (z, d) in enumerate(zip(zs, t.hidden)):
        inputs[:, l, : in_dims[l]] = torch.cat([x, y, z], 1)
        targets[t.window - 1 :, l, :d] = window_targets(x, y, z, window=t.window, gamma=t.gamma, sigmas=t.sigmas, variant=t.variant)
        scaling[l, 0, : in_dims[l]] = block_scaling([t.x_dim, t.classes, d], r.input_scaling)
    train = slice(t.window - 1, s.samples)
    if o.target_scale:
        scale = torch.full((L,), o.target_scale, dtype=torch.float64)
    else:
        scale = torch.stack([1.0 / targets[train, l, :d].std() for l, d in enumerate(t.hidden)])
    res = Reservoir(
        r.units, d_in, m, groups=L, lr=r.lr, sr=r.sr, connectivity=r.connectivity, input_scaling=scaling,
        feedback_scaling=r.feedback_scaling, noise_hidden=r.noise_hidden, seed=r.seed,
    ).to(cfg.device, dtype)
    readout = make_readout(o.learner, L, r.units, m, dtype=dtype, device=cfg.device, **o.options(o.learner))
    learn = torch.zeros(n_all, dtype=torch.bool)
    learn[train] = True
    record = torch.zeros(n_all, dtype=torch.bool)
    record[s.samples :] = True
    t0 = time.perf_counter()
    out = run_stream(
        res, readout, inputs.to(dtype), (targets * scale[None, :, None]).to(dtype), steps=r.steps, learn=learn,
        record=record, noise_out=r.noise_out, feedback=r.feedback, progress=progress, desc=f"pretrain {o.learner}",
    )
    seconds = time.perf_counter() - t0
    pred = out.double().cpu() / scale[None, None, :, None]
    scores = []
    for l, d in enumerate(t.hidden):
        sc = fit_scores(pred[:, :, l : l + 1, :d], targets[s.samples :, None, l : l + 1, :d])
        scores.append({"layer": l + 1, "units": d, "nmse": sc["nmse"][0], "correlation": sc["correlation"][0]})
    meta = {
        "format": FORMAT,
        "hyper": res.hyperparameters(),
        "reservoir": {k: v.cpu() for k, v in res.state_dict().items()},
        "readout": readout.weight.detach().cpu(),
        "target_scale": scale.tolist(),
        "steps": r.steps,
        "noise_out": r.noise_out,
        "feedback": r.feedback,
        "x_dim": t.x_dim,
        "classes": t.classes,
        "hidden": list(t.hidden),
        "window": t.window,
        "gamma": t.gamma,
        "sigmas": list(t.sigmas),
        "variant": t.variant,
        "config": cfg.to_dict(),
        "test_scores": scores,
        "seconds": seconds,
    }
    out_file = Path(out_file)
    prepare_dir(out_file.parent)
    buf = io.BytesIO()
    torch.save(meta, buf)
    atomic_write_bytes(out_file, buf.getvalue())
    summary = {k: meta[k] for k in ("config", "test_scores", "seconds", "target_scale")}
    atomic_write_json(out_file.with_suffix(".json"), summary)
    return summary
