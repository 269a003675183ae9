"""One trainer for every rule.

Online rules see the training set as one shuffled stream, one sample per step
(and ``T`` updates per sample for leaky networks); batch rules see minibatches
drawn from the same shuffle. After each epoch the trainer evaluates every
replica, appends a line to ``metrics.jsonl`` and writes ``checkpoint.pt``;
``summary.json`` is written at the end. A run directory is never overwritten:
``resume=True`` continues it from its last checkpoint to the same result as an
uninterrupted run.

Every file is written atomically (:mod:`ibhebb.fileio`), a lock file keeps a
second process out of a run directory in use, the checkpoint is verified
before it is loaded (:mod:`.checkpoint`), and the weights are checked for
NaN and infinities every few hundred samples (:mod:`.guard`). Every random
draw of training comes from generators saved in the checkpoint: the
per-replica generators of the model (dropout), and torch's global generator,
seeded from ``cfg.seed`` for the run and restored on resume.
"""
from __future__ import annotations

import math
import sys
import zlib
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..config import Config, load_config
from ..data import Dataset, load_dataset
from ..data.dataset import split_validation
from ..errors import ConfigError, UserError
from ..fileio import RunLock, atomic_write_json, prepare_dir, read_jsonl, temp_path, warn, write_jsonl
from ..functional.kernels import hsic_bottleneck
from ..models import build_model
from ..rules import Rule, make_rule
from ..engine.threads import loop_threads, set_adaptive
from .checkpoint import CheckpointError, read_checkpoint, write_checkpoint
from .guard import DivergenceGuard
from .loggers import Loggers
from .schedule import build_scheduler, param_groups

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.json"


def build_optimizer(cfg: Config, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)


def build(cfg: Config, data: Dataset) -> tuple[torch.nn.Module, Rule, torch.optim.Optimizer]:
    """Model, rule and optimiser for a config, on its device and dtype."""
    model = build_model(cfg, data).to(device=cfg.device, dtype=getattr(torch, cfg.dtype))
    rule = make_rule(cfg.rule.name, model, cfg.rule).to(device=cfg.device)
    return model, rule, build_optimizer(cfg, param_groups(cfg, model, rule.trainable()))


CPU_EVAL_ELEMENTS = 2**21
"""On the CPU, evaluation batches keep the widest activation of all replicas near this many elements (8 MB of
float32, cache-sized): a CNN's elementwise work on a 2,000-sample batch of 28×28×128 maps is memory-bound and
ran 1.8× slower than in batches of 8."""


def widest_activation(model: torch.nn.Module) -> int:
    """Elements per sample and replica of the model's largest activation (a convolution's map before pooling, or a layer's output)."""
    sizes = [1]
    for layer in model.layers():
        shape = getattr(layer, "conv_shape", None)
        sizes.append(math.prod(shape) if shape else int(getattr(layer, "out_features", 1)))
    return max(sizes)


def eval_batch_size(model: torch.nn.Module, batch_size: int, device: torch.device) -> int:
    """``batch_size``, lowered on the CPU so that one batch's widest activation stays about cache-sized."""
    if device.type != "cpu":
        return batch_size
    return max(1, min(batch_size, CPU_EVAL_ELEMENTS // (model.replicas * widest_activation(model))))


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: Tensor, y: Tensor, batch_size: int) -> list[float]:
    """Accuracy of every replica on ``(x, y)``."""
    correct = torch.zeros(model.replicas, dtype=torch.long, device=y.device)
    batch_size = eval_batch_size(model, batch_size, x.device)
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size])
        correct += (logits.argmax(-1) == y[i : i + batch_size]).sum(-1)
    return (correct.double() / max(len(x), 1)).tolist()


@torch.no_grad()
def layer_bottlenecks(model, x: Tensor, y: Tensor, cfg: Config) -> list[dict[str, list[float]]]:
    """Each hidden layer's ``L^ℓ``, ``HSIC(X, Z^ℓ)`` and ``HSIC(Y, Z^ℓ)`` per replica on a fixed batch."""
    xf = model.flatten(x)
    y1 = torch.nn.functional.one_hot(y, model.n_classes).to(xf.dtype)
    out = []
    for z in model.represent(x):
        loss, hxz, hyz = hsic_bottleneck(xf, y1, z, gamma=cfg.rule.gamma, sigmas=tuple(cfg.rule.sigmas))
        out.append({"loss": loss.tolist(), "hsic_xz": hxz.tolist(), "hsic_yz": hyz.tolist()})
    return out


def evaluate(model, data: Dataset, cfg: Config) -> dict[str, Any]:
    """The epoch's measurements. Each starts with ``model.eval()``, which restarts a noisy model's evaluation
    stream, so none depends on which of the others ``cfg.eval`` asks for."""
    e = cfg.eval
    n_tr = len(data.x_train) if e.train_samples == 0 else min(e.train_samples, len(data.x_train))
    model.eval()
    result = {"test_accuracy": accuracy(model, data.x_test, data.y_test, e.batch_size)}
    model.eval()
    result["train_accuracy"] = accuracy(model, data.x_train[:n_tr], data.y_train[:n_tr], e.batch_size)
    if data.x_val is not None:
        model.eval()
        result["validation_accuracy"] = accuracy(model, data.x_val, data.y_val, e.batch_size)
    if e.hsic_samples:
        k = min(e.hsic_samples, len(data.x_test))
        model.eval()
        result["layers"] = layer_bottlenecks(model, data.x_test[:k], data.y_test[:k], cfg)
    if e.firing_samples and hasattr(model, "firing_statistics"):
        k = min(e.firing_samples, len(data.x_test))
        model.eval()
        result["firing"] = model.firing_statistics(model.flatten(data.x_test[:k]), eval_batch_size(model, e.batch_size, data.x_test.device))
    return result


def firing_summary(firing: list[dict[str, list[float]]]) -> list[dict[str, Any]]:
    """Per hidden layer: each statistic of :meth:`~ibhebb.models.spiking.SpikingMLP.firing_statistics` per replica
    and its mean over the replicas (``rate_mean``, ``spikes_per_sample_mean``, ``silent_mean``)."""
    return [{**layer, **{f"{k}_mean": sum(v) / len(v) for k, v in layer.items()}} for layer in firing]


def firing_line(firing: list[dict[str, list[float]]]) -> str:
    """``firing rate 0.081, 0.043 per step; 1,234 spikes per sample`` (means over the replicas)."""
    layers = firing_summary(firing)
    rates = ", ".join(f"{layer['rate_mean']:.3f}" for layer in layers)
    spikes = sum(layer["spikes_per_sample_mean"] for layer in layers)
    return f"firing rate {rates} per neuron and step; {spikes:,.0f} spikes per sample"


def epoch_order(seed: int, epoch: int, n: int, device) -> Tensor:
    """The shuffle of epoch ``epoch`` depends only on ``(seed, epoch)``, so a resumed run sees the same stream."""
    g = torch.Generator().manual_seed(7_919 * seed + epoch)
    return torch.randperm(n, generator=g).to(device)


def stream_seed(seed: int, name: str, replica: int = 0) -> int:
    """A seed for the random stream ``name`` of replica ``replica`` of a run with ``seed``."""
    return ((1_000_003 * seed + replica) * 65_537 + zlib.crc32(name.encode())) % 2**63


def _mean_std(values: list[float | None]) -> tuple[float, float]:
    values = [v for v in values if v is not None]
    if not values:
        return float("nan"), float("nan")
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / max(len(values) - 1, 1))


class Trainer:
    """Train ``cfg.seeds`` replicas of a model with a rule, writing a run directory.

    Examples
    --------
    >>> from ibhebb.config import load_config
    >>> from ibhebb.train import Trainer
    >>> cfg = load_config(None, {"data": {"name": "xor"}, "model": {"hidden": [10, 4]},
    ...                          "rule": {"gamma": 10.0, "sigmas": [0.3, 0.25, 2.0], "window": 16}})
    >>> summary = Trainer(cfg, "/tmp/ibhebb-doctest", overwrite=True, progress=False).run()  # doctest: +SKIP
    """

    def __init__(
        self,
        cfg: Config,
        out_dir: str | Path,
        *,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        data: Dataset | None = None,
    ):
        self.cfg, self.out, self.progress = cfg, Path(out_dir), progress
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        set_adaptive(cfg.threads == 0)
        self._threads = None  # torch's threads for the rule's loop (ibhebb.engine.threads), kept across epochs
        if self.out.exists() and not self.out.is_dir():
            raise UserError(f"--out {self.out} is an existing file, not a run directory; choose another --out")
        has_run = (self.out / METRICS).exists() or (self.out / CHECKPOINT).exists()
        if has_run and not (resume or overwrite):
            raise UserError(
                f"run directory {self.out} already holds a run: pass --resume to continue it, or choose another --out"
            )
        if resume and not (self.out / CHECKPOINT).exists():
            raise UserError(f"nothing to resume in {self.out}: it has no {CHECKPOINT}")
        self.loggers = Loggers(cfg, self.out)  # TensorBoard / W&B if cfg.log asks (a missing package is refused here)
        prepare_dir(self.out, "run directory")
        self.lock = RunLock(self.out).acquire()
        try:
            self._setup(resume, data)
        except BaseException:
            self.lock.release()
            raise

    def _setup(self, resume: bool, data: Dataset | None) -> None:
        cfg = self.cfg
        for f in (CHECKPOINT, METRICS, SUMMARY, CONFIG):  # left by a write cut short
            temp_path(self.out / f).unlink(missing_ok=True)
        # a damaged checkpoint is refused before the data and the model are built
        state = read_checkpoint(self.out / CHECKPOINT, cfg.to_dict(), map_location=cfg.device)[1] if resume else None
        self.data = self._hold_out(data if data is not None else self._load_data())
        self.model, self.rule, self.optimizer = build(cfg, self.data)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        if self.rule.online:
            self._fast_engine()  # an engine the config insists on but that cannot run here: say so before any file changes
        self.guard = DivergenceGuard(self._named_parameters(), cfg.seeds, cfg.on_divergence, hint=self._divergence_hint)
        self.start_epoch, self.wall, self.records = 0, 0.0, []
        self.rng = self._initial_rng()
        if resume:
            self._restore(state)
        else:
            for f in (METRICS, SUMMARY, CHECKPOINT):
                (self.out / f).unlink(missing_ok=True)
        atomic_write_json(self.out / CONFIG, cfg.to_dict())

    def _named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """What the optimiser trains, named after the model's layers where it can be."""
        names = {id(p): n for n, p in self.model.named_parameters()}
        names.update({id(p): f"rule.{n}" for n, p in self.rule.named_parameters() if id(p) not in names})
        return [(names.get(id(p), "parameter"), p) for g in self.optimizer.param_groups for p in g["params"]]

    def _divergence_hint(self) -> str:
        if (self.out / CHECKPOINT).exists():
            keep = f"; the checkpoint and metrics of the last good epoch ({len(self.records)}) stay in {self.out}"
        else:
            keep = "; no epoch had finished, so there is no checkpoint"
        if self.cfg.on_divergence == "stop":
            return keep + " (lower optim.lr, or set on_divergence = \"drop-seeds\" to go on with the other seeds)"
        return keep

    # -- random streams ----------------------------------------------------------------------
    def _cuda(self) -> bool:
        return torch.device(self.cfg.device).type == "cuda"

    def _initial_rng(self) -> dict[str, Any]:
        """The state of torch's global generator(s) at the start of a run, from ``cfg.seed``."""
        seed = stream_seed(self.cfg.seed, "global")
        rng = {"cpu": torch.Generator().manual_seed(seed).get_state()}
        if self._cuda():
            g = torch.Generator(device=self.cfg.device).manual_seed(seed)
            rng["cuda"] = g.get_state()
        return rng

    def _capture_rng(self) -> None:
        self.rng = {"cpu": torch.get_rng_state()}
        if self._cuda():
            self.rng["cuda"] = torch.cuda.get_rng_state(self.cfg.device)

    def _install_rng(self) -> None:
        torch.set_rng_state(self.rng["cpu"].cpu())
        if self._cuda() and "cuda" in self.rng:
            torch.cuda.set_rng_state(self.rng["cuda"].cpu(), self.cfg.device)

    def _random_modules(self) -> dict[str, torch.nn.Module]:
        """The modules of the model and the rule that draw from generators of their own (``random_state()``)."""
        found, seen = {}, set()
        for prefix, root in (("model", self.model), ("rule", self.rule)):
            for name, m in root.named_modules():
                if hasattr(m, "random_state") and hasattr(m, "set_random_state") and id(m) not in seen:
                    found[f"{prefix}.{name}" if name else prefix] = m
                    seen.add(id(m))
        return found

    def _module_rng(self) -> dict[str, Any]:
        return {"modules": {k: m.random_state() for k, m in self._random_modules().items()}}

    def _load_data(self) -> Dataset:
        d = self.cfg.data
        data = load_dataset(
            d.name, root=d.root or None, seed=self.cfg.seed, n_train=d.n_train or None, n_test=d.n_test or None
        )
        dtype = getattr(torch, self.cfg.dtype)
        return Dataset(
            data.name,
            data.x_train.to(self.cfg.device, dtype),
            data.y_train.to(self.cfg.device),
            data.x_test.to(self.cfg.device, dtype),
            data.y_test.to(self.cfg.device),
            data.n_classes,
        )

    def _hold_out(self, data: Dataset) -> Dataset:
        """``data.validation`` of the training samples set aside (unless the data already hold a validation set)."""
        if data.x_val is not None:
            return data
        try:
            return split_validation(data, self.cfg.data.validation)
        except ValueError as e:
            raise ConfigError(f"data.validation: {e}") from None

    # -- checkpoints -------------------------------------------------------------------------
    def _save(self, epoch: int) -> None:
        state = {
            "epoch": epoch,
            "wall": self.wall,
            "model": self.model.state_dict(),
            "rule": self.rule.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": {**self.rng, **self._module_rng()},
            "diverged": self.guard.dead,
        }
        write_checkpoint(self.out / CHECKPOINT, state, self.cfg.to_dict(), epoch)

    def _restore(self, state: dict[str, Any]) -> None:
        path = self.out / CHECKPOINT
        try:
            self.model.load_state_dict(state["model"])
            self.rule.load_state_dict(state["rule"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            rng = state["rng"]
            self.rng = {k: v for k, v in rng.items() if k in ("cpu", "cuda")}
            for key, module in self._random_modules().items():
                module.set_random_state(rng["modules"][key])
            self.guard.set_dead(state["diverged"])
            self.start_epoch, self.wall = int(state["epoch"]) + 1, float(state["wall"])
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise CheckpointError(f"checkpoint {path} does not fit the model of this config ({first[:200]})") from None
        metrics = self.out / METRICS
        if metrics.exists():
            records, torn = read_jsonl(metrics)
            if torn:
                warn(f"dropped the torn last line of {metrics} (a write cut short); the checkpoint is intact")
            self.records = [r for r in records if r.get("epoch", 0) <= self.start_epoch]
            write_jsonl(metrics, self.records)

    # -- loops -------------------------------------------------------------------------------
    def _apply(self, x: Tensor, y: Tensor) -> int:
        n = 0
        for _ in self.rule.updates(x, y):
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=False)
            n += 1
        return n

    def _epoch(self, epoch: int) -> int:
        """Train one epoch; the divergence guard checks the weights every few hundred samples and at its end."""
        self.guard.begin_epoch(epoch)
        updates = self._train_epoch(epoch)
        self.guard.check()
        return updates

    def _train_epoch(self, epoch: int) -> int:
        from tqdm.auto import tqdm

        self.rule.new_epoch()
        x, y = self.data.x_train, self.data.y_train
        if self.cfg.data.augment:
            from ..data.augment import augment_images

            x = augment_images(x, self.cfg.seed, epoch)
        order = epoch_order(self.cfg.seed, epoch, len(x), x.device)
        step = 1 if self.rule.online else self.cfg.optim.batch_size
        starts = range(0, len(x), step)
        bar = tqdm(
            starts,
            desc=f"epoch {epoch + 1}/{self.cfg.epochs}",
            unit="sample" if step == 1 else "batch",
            disable=not self.progress,
            mininterval=1.0,
            leave=False,
            dynamic_ncols=True,
        )
        engine = self._fast_engine()
        guard = self.guard
        if engine is not None:  # the same updates, from ibhebb.engine

            def progress(k: int) -> None:  # called between the engine's chunks
                bar.update(k)
                guard.advance(k)

            y1 = torch.nn.functional.one_hot(y, self.model.n_classes).to(x.dtype)
            try:
                return engine.train_epoch(x.reshape(len(x), -1), y1, order, progress=progress)
            finally:
                bar.close()
        updates = 0
        try:
            self._threads = threads = loop_threads(x.device, self._threads)
            with threads:
                for i in bar:
                    idx = order[i : i + step]
                    updates += self._apply(x[idx], y[idx])
                    guard.advance(len(idx))
                    threads.advance(len(idx))
        finally:
            bar.close()
        return updates

    def _fast_engine(self):
        """The online engine of :mod:`ibhebb.engine` when ``cfg.engine`` allows it and it can run this run, else ``None``."""
        if not hasattr(self, "_engine"):
            from ..engine import engine_mode, make_engine, unsupported, worth_compiling
            from ..errors import ConfigError

            self._engine = None
            cfg = self.cfg
            self._engine_reason = unsupported(cfg) if cfg.engine != "rule" and self.rule.online else None
            if cfg.engine != "rule" and self._engine_reason is None:
                try:
                    compile_ok = cfg.engine == "compile" or worth_compiling(cfg, len(self.data.x_train))
                    self._engine = make_engine(self.model, self.rule, self.optimizer, mode=engine_mode(cfg.engine),
                                               chunk=cfg.engine_chunk or None, torch_compile=compile_ok)
                except ValueError as e:
                    if cfg.engine != "auto":
                        raise ConfigError(f"engine = {cfg.engine!r} cannot run this config: {e}") from None
                    self._engine_reason = str(e)
                else:
                    if compile_ok and not self._engine_native_ok() and self.progress:
                        print("compiling the fast engine's step (once per run; a minute or more on a CPU) ...", file=sys.stderr, flush=True)
        return self._engine

    def _engine_used(self) -> tuple[str, str | None]:
        """What ran the last epoch's updates: ``native``, ``compile``, ``cuda-graph`` or ``torch`` (the engine's
        torch step), or ``rule`` (the rule's own loop, also every minibatch rule); and why not the C step or the
        engine when ``engine = auto`` had to fall back (``None`` otherwise)."""
        engine = self._fast_engine() if self.rule.online else None
        if engine is None:
            return "rule", getattr(self, "_engine_reason", None)
        return engine.backend or "rule", engine.fallback

    def _engine_native_ok(self) -> bool:
        """Whether the engine will run the C step (nothing to compile with ``torch.compile``)."""
        from ..engine import cstep

        w = self.model.layers()[0].weight
        return self._engine.mode in ("auto", "native") and w.device.type == "cpu" and cstep.unavailable(w.dtype) is None

    def run(self) -> dict[str, Any]:
        """Train the remaining epochs; returns the summary. Releases the run directory's lock at the end."""
        try:
            with torch.random.fork_rng(devices=[self.cfg.device] if self._cuda() else []):
                self._install_rng()
                return self._run()
        finally:
            self.lock.release()

    def _masked(self, values: list[float]) -> list[float | None]:
        """``values`` per replica, ``None`` for the replicas dropped after diverging."""
        alive = self.guard.alive.tolist()
        return [v if a else None for v, a in zip(values, alive)]

    def _run(self) -> dict[str, Any]:
        cfg = self.cfg
        record = None
        for epoch in range(self.start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            self.model.train()
            updates = self._epoch(epoch)
            train_seconds = time.perf_counter() - t0
            self.model.eval()
            record = {"epoch": epoch + 1, **evaluate(self.model, self.data, cfg)}
            if self.guard.dead:
                record["test_accuracy"] = self._masked(record["test_accuracy"])
                record["train_accuracy"] = self._masked(record["train_accuracy"])
                if "validation_accuracy" in record:
                    record["validation_accuracy"] = self._masked(record["validation_accuracy"])
                record["diverged"] = self.guard.dead
            self.wall += time.perf_counter() - t0
            record.update(
                updates=updates,
                train_seconds=train_seconds,
                samples_per_second=len(self.data.x_train) / train_seconds,
                wall_seconds=self.wall,
            )
            record["engine"], reason = self._engine_used()
            if reason is not None:
                record["engine_fallback"] = reason
            diagnostics = getattr(getattr(self.rule, "memory", None), "diagnostics", None)
            if diagnostics is not None:  # e.g. the reservoir memory's ξ correlation with the true ξ
                record["memory"] = diagnostics()
            self.records.append(record)
            write_jsonl(self.out / METRICS, self.records)
            self.loggers.log(record)
            self.scheduler.step()
            self._capture_rng()
            self._save(epoch)
            if self.progress:
                m, s = _mean_std(record["test_accuracy"])
                spread = f" ± {s:.4f}" if cfg.seeds > 1 else ""
                path = {"native": ", C step", "compile": ", compiled step", "cuda-graph": ", CUDA graphs"}.get(record["engine"], "")
                if reason is not None:
                    path += f"; not the fast path: {reason}"
                firing = f"; {firing_line(record['firing'])}" if record.get("firing") else ""
                print(f"epoch {epoch + 1}/{cfg.epochs}: test accuracy {m:.4f}{spread}{firing} ({train_seconds:.1f} s{path})", flush=True)
        self.loggers.close()
        if record is None:
            if not self.records:
                raise UserError(f"{self.out} has a checkpoint but no metrics of a finished epoch; start the run again")
            record = self.records[-1]
        return self._summarise(record)

    def _selection(self, last: dict[str, Any]) -> dict[str, Any]:
        """With a validation set: its last accuracies, and the epoch of best mean validation accuracy (model
        selection, as seed 001 tuned) with the test accuracy there."""
        if "validation_accuracy" not in last:
            return {}
        scored = [r for r in self.records if "validation_accuracy" in r]
        best = max(scored, key=lambda r: _mean_std(r["validation_accuracy"])[0]) if scored else last
        return {
            "validation_accuracy": last["validation_accuracy"],
            "validation_accuracy_mean": _mean_std(last["validation_accuracy"])[0],
            "best_validation_epoch": best["epoch"],
            "best_validation_accuracy_mean": _mean_std(best["validation_accuracy"])[0],
            "test_accuracy_at_best_validation_mean": _mean_std(best["test_accuracy"])[0],
        }

    def _summarise(self, last: dict[str, Any]) -> dict[str, Any]:
        cfg = self.cfg
        test_m, test_s = _mean_std(last["test_accuracy"])
        train_m, _ = _mean_std(last["train_accuracy"])
        summary = {
            "data": cfg.data.name,
            "rule": cfg.rule.name,
            "variant": cfg.rule.variant if cfg.rule.name == "biohsic" else None,
            "memory": cfg.rule.memory if self.rule.online else None,
            "model": cfg.model.kind,
            "epochs": last["epoch"],
            "seeds": cfg.seeds,
            "seeds_surviving": sum(a is not None for a in last["test_accuracy"]),
            "diverged_seeds": last.get("diverged", []),
            "test_accuracy": last["test_accuracy"],
            "test_accuracy_mean": test_m,
            "test_accuracy_std": test_s,
            "train_accuracy": last["train_accuracy"],
            "train_accuracy_mean": train_m,
            **self._selection(last),
            "wall_seconds": self.wall,
            **({"firing": firing_summary(last["firing"])} if last.get("firing") else {}),
            "device": cfg.device,
            "torch": torch.__version__,
        }
        atomic_write_json(self.out / SUMMARY, summary)
        return summary


def train(config: str | Path | Config, out_dir: str | Path, overrides: list[str] | None = None, **kwargs) -> dict:
    """Train from a config file (or :class:`Config`) into ``out_dir``; returns the summary."""
    cfg = config if isinstance(config, Config) else load_config(config, overrides)
    return Trainer(cfg, out_dir, **kwargs).run()
