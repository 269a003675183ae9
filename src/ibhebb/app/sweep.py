"""Grids of runs: one normal run directory per cell, resumable, optionally on Ray.

A sweep is a config plus axes ``key=v1,v2,…`` (and fixed overrides
``key=value``); its cells are the Cartesian product of the axes. Each cell
trains into ``OUT/<name>``, a normal run directory named from its values
(``rule.window-4_rule.variant-exact``). ``OUT/sweep.json`` records the grid.

Rerunning a sweep skips the cells whose ``summary.json`` already covers the
requested epochs and resumes, from its checkpoint, any cell that was
interrupted, so an interrupted sweep picks up where it stopped. Cells run one
after another, or as Ray tasks (:func:`run_sweep` with ``ray_address``) on a
local Ray instance started on the fly or on an existing cluster (whose nodes
need this package installed and ``OUT`` on a shared file system).

Examples
--------
>>> from ibhebb.app.sweep import parse_grid
>>> parse_grid(["rule.window=2,4", "rule.variant=paper,exact", "epochs=3", "model.channels=[8,16]"])
([('rule.window', [2, 4]), ('rule.variant', ['paper', 'exact'])], {'epochs': 3, 'model.channels': [8, 16]})
"""
from __future__ import annotations

import itertools
import json
import re
from pathlib import Path
from typing import Any

from ..config import Config, load_config, parse_value
from ..errors import ConfigError, UserError
from ..fileio import atomic_write_json, prepare_dir, read_json

SWEEP_FILE = "sweep.json"


def split_values(text: str) -> list[str]:
    """Split ``"1,2,[3,4]"`` at the commas outside brackets and quotes → ``["1", "2", "[3,4]"]``."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def parse_grid(items: list[str]) -> tuple[list[tuple[str, list[Any]]], dict[str, Any]]:
    """``key=v1,v2,…`` items become axes, ``key=value`` items fixed overrides (values parsed as TOML)."""
    axes: list[tuple[str, list[Any]]] = []
    fixed: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"sweep argument {item!r} is not of the form key=value or key=v1,v2,...")
        key, text = (s.strip() for s in item.split("=", 1))
        if not key or key in fixed or key in dict(axes):
            raise ConfigError(f"sweep argument {item!r}: the key is empty or given twice")
        values = split_values(text)
        if any(v == "" for v in values):
            raise ConfigError(f"sweep argument {item!r} has an empty value")
        if len(values) == 1:
            fixed[key] = parse_value(values[0])
        else:
            axes.append((key, [parse_value(v) for v in values]))
    return axes, fixed


def _slug(value: Any) -> str:
    text = "x".join(map(str, value)) if isinstance(value, list) else str(value)
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "none"


def cell_name(values: dict[str, Any]) -> str:
    """Directory name of a cell: ``key-value`` pairs joined by ``_`` (``run`` for a grid without axes)."""
    return "_".join(f"{k}-{_slug(v)}" for k, v in values.items()) or "run"


def _as_override(key: str, value: Any) -> str:
    return f"{key}={json.dumps(value) if not isinstance(value, str) else value}"


def grid_cells(axes: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, the first axis varying slowest."""
    keys = [k for k, _ in axes]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in axes))]


def cell_config(config: str | Path, fixed: dict[str, Any], values: dict[str, Any]) -> Config:
    items = [_as_override(k, v) for k, v in {**fixed, **values}.items()]
    return load_config(config, items)


def cell_state(cfg: Config, run_dir: Path) -> str:
    """``done`` (its summary covers ``cfg.epochs``), ``resume`` (a checkpoint to continue) or ``new``."""
    summary = run_dir / "summary.json"
    if summary.exists():
        try:
            if json.loads(summary.read_text()).get("epochs", 0) >= cfg.epochs:
                return "done"
        except json.JSONDecodeError:
            pass
    return "resume" if (run_dir / "checkpoint.pt").exists() else "new"


def _check_same_run(cfg: Config, run_dir: Path) -> None:
    """Refuse a cell directory holding a run of another config (keys a resumed run may change aside; keys added to
    ibhebb since that run was written take their defaults, so an older sweep directory still compares equal)."""
    from ..train.checkpoint import comparable_config, config_differences

    saved = run_dir / "config.json"
    if saved.exists():
        read_json(saved, "run config")  # a damaged file is one line that names it
        theirs = comparable_config(load_config(saved).to_dict())
        diff = config_differences(comparable_config(cfg.to_dict()), theirs)
        if diff:
            keys = ", ".join(diff[:6]) + (", …" if len(diff) > 6 else "")
            raise UserError(f"{run_dir} holds a run of another config (differs in {keys}); choose another --out for this sweep")


def run_cell(config: dict[str, Any], run_dir: str, progress: bool = False) -> dict[str, Any]:
    """Train (or resume, or skip) one cell from its config as a dict; returns its summary.

    A top-level function of plain arguments, so that it also runs as a Ray task.
    """
    from ..train import Trainer

    cfg = load_config(None, config)
    out = Path(run_dir)
    state = cell_state(cfg, out)
    if state == "done":
        return read_json(out / "summary.json", "run summary")
    return Trainer(cfg, out, resume=state == "resume", overwrite=state == "new", progress=progress).run()


def _write_sweep_file(out: Path, config: str | Path, axes, fixed, cells) -> None:
    record = {
        "config": str(config),
        "axes": [[k, v] for k, v in axes],
        "fixed": fixed,
        "cells": [{"name": cell_name(c), "values": c} for c in cells],
    }
    path = out / SWEEP_FILE
    if path.exists():
        old = read_json(path, "sweep state")
        same = {k: v for k, v in old.get("fixed", {}).items() if k != "epochs"} == {k: v for k, v in fixed.items() if k != "epochs"}
        if not same or Path(old.get("config", "")).stem != Path(config).stem:  # more epochs is the same sweep
            raise UserError(f"{out} holds a sweep of another config or fixed overrides; choose another --out")
        known = {c["name"] for c in record["cells"]}
        record["cells"] = [c for c in old.get("cells", []) if c["name"] not in known] + record["cells"]
        old_axes = dict((k, v) for k, v in old.get("axes", []))
        for k, v in axes:
            old_axes[k] = sorted(set(map(json.dumps, old_axes.get(k, []) + v)), key=lambda s: (len(s), s))
            old_axes[k] = [json.loads(s) for s in old_axes[k]]
        record["axes"] = [[k, v] for k, v in old_axes.items()]
    prepare_dir(out, "sweep directory")
    atomic_write_json(path, record)


def run_sweep(
    config: str | Path,
    items: list[str],
    out: str | Path,
    *,
    ray_address: str | None = None,
    use_ray: bool = False,
    cpus_per_cell: float = 1.0,
    gpus_per_cell: float = 0.0,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run (or finish) the grid of ``items`` over ``config`` into ``out``; returns the cells' summaries in grid order."""
    axes, fixed = parse_grid(items)
    if use_ray:  # before any file is written: Ray is there, and so is the cluster
        _import_ray()
        if ray_address is not None:
            _check_reachable(ray_address)
    cells = grid_cells(axes)
    out = Path(out)
    configs = [cell_config(config, fixed, c) for c in cells]  # every cell validated before any runs
    dirs = [out / cell_name(c) for c in cells]
    for cfg, d in zip(configs, dirs):
        _check_same_run(cfg, d)
    _write_sweep_file(out, config, axes, fixed, cells)
    todo = [i for i, (cfg, d) in enumerate(zip(configs, dirs)) if cell_state(cfg, d) != "done"]
    if progress:
        print(f"sweep: {len(cells)} cell(s), {len(cells) - len(todo)} already done, {len(todo)} to run -> {out}", flush=True)
    if use_ray:
        _run_on_ray([(configs[i].to_dict(), str(dirs[i])) for i in todo], ray_address, cpus_per_cell, gpus_per_cell, progress)
    else:
        from tqdm.auto import tqdm

        for i in tqdm(todo, desc="sweep", unit="cell", disable=not progress or len(todo) < 2):
            run_cell(configs[i].to_dict(), str(dirs[i]), progress=progress)
    return [read_json(d / "summary.json", "run summary") for d in dirs]


RAY_HINT = ("check that `ray start --head` runs there and that ADDRESS is its HOST:PORT (as `ray status` shows it), "
            "'auto' on a node of the cluster, or ray://HOST:10001 for Ray Client, and that a cluster with token "
            "authentication has its token here (~/.ray/auth_token or RAY_AUTH_TOKEN)")


def _check_reachable(address: str) -> None:
    """Refuse at once a ``HOST:PORT`` (or ``ray://HOST:PORT``) where nothing listens (Ray itself retries for minutes)."""
    import socket

    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        if address != "auto":
            raise UserError(f"--ray {address!r} is not HOST:PORT, ray://HOST:PORT or 'auto'")
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(f"cannot connect to the Ray cluster at {address!r}: nothing answers at {host}:{port} "
                        f"({e.strerror or type(e).__name__}); {RAY_HINT}") from None


def connect_ray(ray, address: str | None) -> None:
    """``ray.init`` on a fresh local instance (``address`` None) or the cluster at ``address``; one line if it fails."""
    if address is not None:
        _check_reachable(address)
    kwargs = dict(log_to_driver=False, configure_logging=False)
    if address is None:
        kwargs["include_dashboard"] = False  # only a new local instance takes dashboard options
    try:
        ray.init(address=address, **kwargs)
    except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, ValueError, TimeoutError ...: all mean "not there"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        if address is None:
            raise UserError(f"cannot start a local Ray instance ({type(e).__name__}: {first})") from None
        raise UserError(f"cannot connect to the Ray cluster at {address!r} ({type(e).__name__}: {first}); {RAY_HINT}") from None


def _cell_error(ray, e: Exception, run_dir: str) -> UserError:
    """A cell's failure on Ray as one line: its own UserError, or what happened to its worker."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, UserError):
        return UserError(f"cell {Path(run_dir).name}: {cause}")
    if isinstance(e, (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.TaskCancelledError)):
        return UserError(f"the worker of cell {Path(run_dir).name} died ({type(e).__name__}); "
                         "run the sweep again to resume that cell from its last checkpoint")
    first = (str(cause or e).strip().splitlines() or [type(e).__name__])[-1][:300]
    return UserError(f"cell {Path(run_dir).name} failed on Ray: {first}; run the sweep again to resume it")


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs Ray, which is not installed: pip install 'ibhebb[ray]'") from None
    return ray


def _run_on_ray(jobs, address: str | None, cpus: float, gpus: float, progress: bool) -> None:
    ray = _import_ray()
    from tqdm.auto import tqdm

    started = not ray.is_initialized()
    if started:
        connect_ray(ray, address)
    try:
        task = ray.remote(num_cpus=cpus, num_gpus=gpus, max_retries=0)(run_cell)
        pending = {task.remote(cfg, run_dir): run_dir for cfg, run_dir in jobs}
        failure = None
        with tqdm(total=len(pending), desc="sweep (ray)", unit="cell", disable=not progress) as bar:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                run_dir = pending.pop(done[0])
                try:
                    ray.get(done[0])
                except (ray.exceptions.RayError, UserError) as e:
                    failure = failure or _cell_error(ray, e, run_dir)  # the other cells still finish
                bar.update(1)
        if failure is not None:
            raise failure
    finally:
        if started:
            ray.shutdown()
