"""``ibhebb train CONFIG|PRESET [key=value ...] --out DIR [--tensorboard] [--wandb]``"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..config import load_config
from ..errors import Interrupted, UserError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="train a network from a config file or a packaged preset",
        description="Train from a TOML config or a preset name (`ibhebb configs` lists them). Overrides address any key: seeds=3 epochs=1 rule.variant=exact.",
    )
    p.add_argument("config", nargs="?", help="TOML config or preset name, e.g. fig5-mnist (optional with --resume: the run's own config is used)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. seeds=3 rule.window=16")
    p.add_argument("--out", required=True, help="run directory (config, metrics.jsonl, summary.json, checkpoint)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--plot", action="store_true", help="write plot.png into the run directory at the end")
    p.add_argument("--tensorboard", action="store_true",
                   help="also log every metric to RUN_DIR/tensorboard (config: log = [\"tensorboard\"]; needs ibhebb[tensorboard])")
    p.add_argument("--wandb", action="store_true", help="also log to a Weights & Biases run in offline mode (needs ibhebb[wandb])")
    p.set_defaults(_extras="overrides")
    return p


def run(args) -> int:
    from ..train import Trainer

    out = Path(args.out)
    overrides = list(args.overrides)
    config = args.config
    if config is not None and "=" in config and not Path(config).exists():
        overrides.insert(0, config)
        config = None
    if args.resume:
        saved = out / "config.json"
        if not saved.exists():
            raise UserError(f"nothing to resume in {out}: it has no config.json")
        cfg = load_config(saved, overrides)
        if config is not None:
            given = load_config(config).to_dict()
            mine = json.loads(saved.read_text())
            for key in ("epochs", "log"):  # neither changes what is trained
                given.pop(key, None), mine.pop(key, None)
            if given != mine:
                raise UserError(f"{config} differs from the config of the run in {out}; resume without CONFIG")
    else:
        if config is None:
            raise UserError("a config file is required (or --resume to continue a run)")
        cfg = load_config(config, overrides)
    for name, on in (("tensorboard", args.tensorboard), ("wandb", args.wandb)):
        if on and name not in cfg.log:
            cfg.log.append(name)
    trainer = Trainer(cfg, out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    try:
        summary = trainer.run()
    except KeyboardInterrupt:
        raise Interrupted(
            f"interrupted; finished epochs are kept in {out}: continue with `ibhebb train --resume --out {out}`"
        ) from None
    acc = summary["test_accuracy"]
    spread = f" ± {summary['test_accuracy_std']:.4f}" if len(acc) > 1 else ""
    print(
        f"test accuracy: {summary['test_accuracy_mean']:.4f}{spread} "
        f"({summary['rule']}, {summary['data']}, {summary['seeds']} seed(s), {summary['epochs']} epoch(s), "
        f"{summary['wall_seconds']:.0f} s) -> {out}"
    )
    if args.plot:
        from ..app.plot import plot_run

        print(f"plot: {plot_run(out)}")
    return 0
