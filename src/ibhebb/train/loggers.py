"""Metrics where users look: TensorBoard and Weights & Biases (offline), besides ``metrics.jsonl``.

The config's top-level ``log`` lists the outputs (``log = ["tensorboard"]``,
or ``ibhebb train … --tensorboard``); both are off by default and need their
optional extra (``pip install 'ibhebb[tensorboard]'``, ``'ibhebb[wandb]'``).

Every number of an epoch's ``metrics.jsonl`` line is logged at step =
epoch, under its path in the line (``test_accuracy``,
``layers/0/hsic_xz``, ``samples_per_second``). A list with one value per
seed goes to one TensorBoard run per seed (``<out>/tensorboard/seed_<i>``,
overlaid in one chart) and its mean to ``<out>/tensorboard/mean``, which also
receives the run-level numbers. W&B receives the same numbers in one run,
per-seed values as ``<path>/seed_<i>`` and ``<path>/mean``.
"""
from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any, Iterator

from ..config import register_check
from ..errors import ConfigError

LOGGERS = ("tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
MEAN = "mean"


def seed_name(i: int) -> str:
    return f"seed_{i}"


def scalars(record: dict[str, Any], seeds: int) -> Iterator[tuple[str, int | str | None, float]]:
    """``(tag, who, value)`` for every number of a metrics line: ``who`` is a seed's index, ``"mean"`` (the
    mean over seeds of a per-seed value) or ``None`` (a number of the whole run).

    Examples
    --------
    >>> list(scalars({"epoch": 1, "test_accuracy": [0.5, 1.0], "engine": "native", "wall_seconds": 2.0}, seeds=2))
    [('test_accuracy', 0, 0.5), ('test_accuracy', 1, 1.0), ('test_accuracy', 'mean', 0.75), ('wall_seconds', None, 2.0)]
    """
    def walk(value, tag):
        if isinstance(value, bool) or value is None or isinstance(value, str):
            return
        if isinstance(value, (int, float)):
            yield tag, None, float(value)
        elif isinstance(value, dict):
            for k, v in value.items():
                yield from walk(v, f"{tag}/{k}" if tag else str(k))
        elif isinstance(value, list):
            numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            if numbers and len(value) == seeds:
                for i, v in enumerate(value):
                    yield tag, i, float(v)
                finite = [float(v) for v in value if math.isfinite(v)]
                if finite:
                    yield tag, MEAN, sum(finite) / len(finite)
            else:
                for i, v in enumerate(value):
                    yield from walk(v, f"{tag}/{i}")

    for key, value in record.items():
        if key != "epoch":
            yield from walk(value, key)


def check_log_config(log: list[str]) -> None:
    """Refuse an unknown output, or one whose package is not installed, with one line."""
    for name in log:
        if name not in LOGGERS:
            raise ConfigError(f"log = {log!r}: {name!r} is not one of: {', '.join(LOGGERS)}")
    if "tensorboard" in log:
        try:
            import tensorboard  # noqa: F401
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            raise ConfigError("log = ['tensorboard'] needs the tensorboard package: pip install 'ibhebb[tensorboard]'") from None
    if "wandb" in log:
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ConfigError("log = ['wandb'] needs the wandb package: pip install 'ibhebb[wandb]'") from None


@register_check
def _check_config(cfg) -> None:
    check_log_config(list(cfg.log))


class TensorBoardLogger:
    """One ``SummaryWriter`` per seed and one for the means, under ``<out>/tensorboard/``.

    A fresh run (first logged epoch 1) clears the folder; a resumed one asks
    TensorBoard to drop what an interrupted run logged from its first epoch on.
    """

    def __init__(self, out: Path, seeds: int):
        self.root, self.seeds = Path(out) / TENSORBOARD_DIR, seeds
        self.writers: dict[str, Any] = {}

    def _writer(self, name: str, first_epoch: int):
        if name not in self.writers:
            from torch.utils.tensorboard import SummaryWriter

            self.writers[name] = SummaryWriter(str(self.root / name), purge_step=first_epoch if first_epoch > 1 else None)
        return self.writers[name]

    def log(self, record: dict[str, Any]) -> None:
        epoch = int(record["epoch"])
        if not self.writers and epoch == 1 and self.root.exists():
            shutil.rmtree(self.root)
        for tag, who, value in scalars(record, self.seeds):
            self._writer(seed_name(who) if isinstance(who, int) else MEAN, epoch).add_scalar(tag, value, epoch)
        for w in self.writers.values():
            w.flush()

    def close(self) -> None:
        for w in self.writers.values():
            w.close()
        self.writers = {}


class WandbLogger:
    """A W&B run in offline mode under ``<out>/wandb/`` (``wandb sync`` uploads it later)."""

    def __init__(self, out: Path, cfg_dict: dict[str, Any], seeds: int):
        self.out, self.cfg, self.seeds, self.run = Path(out), cfg_dict, seeds, None

    def log(self, record: dict[str, Any]) -> None:
        import wandb

        if self.run is None:
            (self.out / WANDB_DIR).mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(mode="offline", dir=str(self.out), project="ibhebb", name=self.out.name, config=self.cfg)
        flat = {}
        for tag, who, value in scalars(record, self.seeds):
            flat[tag if who is None else f"{tag}/{seed_name(who) if isinstance(who, int) else who}"] = value
        self.run.log(flat, step=int(record["epoch"]))

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


class Loggers:
    """The outputs a config's ``log`` asks for, fed each epoch's metrics line by the trainer.

    Parameters
    ----------
    cfg : Config
        Its ``log`` (list of :data:`LOGGERS`) and ``seeds`` are read.
    out : path-like
        The run directory.
    """

    def __init__(self, cfg, out: str | Path):
        log = list(getattr(cfg, "log", []) or [])
        check_log_config(log)
        self.outputs: list[Any] = []
        if "tensorboard" in log:
            self.outputs.append(TensorBoardLogger(Path(out), cfg.seeds))
        if "wandb" in log:
            self.outputs.append(WandbLogger(Path(out), cfg.to_dict(), cfg.seeds))

    def log(self, record: dict[str, Any]) -> None:
        for o in self.outputs:
            o.log(record)

    def close(self) -> None:
        for o in self.outputs:
            o.close()
