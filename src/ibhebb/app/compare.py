"""Comparing run directories: each run labelled by the config keys in which the runs differ.

Examples
--------
>>> cfgs = [{"rule": {"window": 8, "sigmas": [0.5, 0.1, 1.0]}, "seeds": 2},
...         {"rule": {"window": 32, "sigmas": [0.5, 0.1, 1.0]}, "seeds": 2}]
>>> differing_keys([flatten(c) for c in cfgs])
['rule.window']
>>> run_labels([flatten(c) for c in cfgs], ["rule.window"])
['window=8', 'window=32']
"""
from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import Any

from ..errors import UserError

#: Config keys that never label a run: they do not change what is trained or measured.
IGNORED_KEYS = ("log", "data.root")

#: Result columns that ``--sort`` accepts besides config keys.
RESULT_KEYS = {"accuracy": "mean", "std": "std", "seeds": "seeds", "epochs": "epochs", "wall": "wall"}


def flatten(cfg: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"rule": {"window": 8}}`` → ``{"rule.window": 8}``."""
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _defaults() -> dict[str, Any]:
    from ..config import Config

    return flatten(Config().to_dict())


def differing_keys(configs: list[dict[str, Any]]) -> list[str]:
    """The flattened keys whose values are not the same in every config, in the configs' key order.

    A key missing from a config (a run from an older version) counts as its default value.
    """
    defaults = _defaults()
    keys: list[str] = []
    for c in configs:
        keys += [k for k in c if k not in keys]
    return [
        k for k in keys
        if k not in IGNORED_KEYS and len({json.dumps(c.get(k, defaults.get(k)), sort_keys=True) for c in configs}) > 1
    ]


def short_names(keys: list[str]) -> dict[str, str]:
    """Each key by its last part (``window``) unless another key ends the same way (``optim.batch_size``)."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def format_value(value: Any) -> str:
    """A config value, compactly: ``0.0001``, ``[0.5,0.1,2.0]``, ``paper``, ``true``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def run_labels(configs: list[dict[str, Any]], keys: list[str]) -> list[str]:
    """One label per run: ``window=8, lr=0.0001`` from ``keys``; ``""`` for each when ``keys`` is empty."""
    names, defaults = short_names(keys), _defaults()
    return [", ".join(f"{names[k]}={format_value(c.get(k, defaults.get(k)))}" for k in keys) for c in configs]


def resolve_key(key: str, configs: list[dict[str, Any]], preferred: list[str]) -> str:
    """A ``--sort``/``--group`` key as a flattened config key (``window`` → ``rule.window``) or a result column.

    Raises
    ------
    UserError
        If no config has the key, or a short name is ambiguous.
    """
    if key in RESULT_KEYS:
        return key
    known: list[str] = []
    for c in [_defaults(), *configs]:
        known += [k for k in c if k not in known]
    if key in known:
        return key
    matches = [k for k in preferred if k.rsplit(".", 1)[-1] == key] or [k for k in known if k.rsplit(".", 1)[-1] == key]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise UserError(f"{key!r} is ambiguous: say which of {', '.join(matches)}")
    close = difflib.get_close_matches(key, known + list(RESULT_KEYS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"no config key or result column {key!r}{hint}; result columns: {', '.join(RESULT_KEYS)}")


def sort_value(value: Any) -> tuple:
    """A key for sorting values of mixed types: numbers, then lists, then the rest as text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value if not math.isnan(value) else math.inf)
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        return (1, value)
    return (2, json.dumps(value, sort_keys=True))


def rule_label(cfg: dict) -> str:
    """A run's rule in words: ``phsic (gaussian, grp+div)``, ``backprop (div)``…"""
    rule, model = cfg["rule"], cfg["model"]
    extras = []
    if rule["name"] == "phsic":
        extras.append(rule.get("kernel", "gaussian"))
        if rule.get("form", "batch") != "batch":
            extras.append(rule["form"])
    if rule["name"] == "biohsic":
        extras.append(f"{rule['variant']}, N={rule['window']}")
    grouped = rule["name"] == "phsic" and rule.get("grouped", False)
    div = model.get("kind") == "phsic-mlp" and model.get("divisive_norm", False)
    if grouped or div:
        extras.append("+".join(n for n, on in (("grp", grouped), ("div", div)) if on))
    return rule["name"] + (f" ({', '.join(extras)})" if extras else "")


def summarise(run_dir: str | Path) -> dict:
    """The last finished epoch of a run: config, rule, data set, seeds, mean ± std test accuracy, epochs, wall time."""
    from .plot import read_metrics

    run_dir = Path(run_dir)
    last = read_metrics(run_dir)[-1]
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise UserError(f"{run_dir} has no config.json")
    from ..fileio import read_json

    cfg = read_json(cfg_path, "run config")
    acc = [100 * a for a in last["test_accuracy"] if a is not None]  # None: a seed dropped after diverging
    if not acc:
        raise UserError(f"every seed of {run_dir} diverged")
    mean = sum(acc) / len(acc)
    std = math.sqrt(sum((a - mean) ** 2 for a in acc) / max(len(acc) - 1, 1))
    return {
        "dir": str(run_dir),
        "name": run_dir.name or str(run_dir),
        "config": flatten(cfg),
        "rule": rule_label(cfg),
        "data": cfg["data"]["name"],
        "seeds": len(acc),
        "mean": mean,
        "std": std,
        "epochs": last["epoch"],
        "of_epochs": cfg.get("epochs", last["epoch"]),
        "wall": last.get("wall_seconds", float("nan")),
    }


def expand_sweeps(paths: list[str | Path]) -> list[Path]:
    """Run directories, a sweep directory standing for its cells that have finished an epoch."""
    from .sweep import SWEEP_FILE

    out: list[Path] = []
    for p in map(Path, paths):
        if (p / SWEEP_FILE).is_file():
            cells = [p / c["name"] for c in json.loads((p / SWEEP_FILE).read_text()).get("cells", [])]
            out += [c for c in cells if (c / "metrics.jsonl").is_file()]
        else:
            out.append(p)
    if not out:
        raise UserError(f"no finished run in {', '.join(map(str, paths))}")
    return out


def compare(run_dirs: list[str | Path], sort: str | None = None, group: str | None = None,
            reverse: bool = False) -> dict[str, Any]:
    """Summaries of runs (a sweep directory: its cells), labelled by the keys in which they differ, sorted and grouped.

    Returns
    -------
    dict
        ``keys`` (the differing config keys, the group key left out), ``group`` (the group key or ``None``),
        ``groups``: a list of ``(group value or None, rows)``, each row a :func:`summarise` dict plus ``label``.
    """
    rows = [summarise(d) for d in expand_sweeps(run_dirs)]
    configs = [r["config"] for r in rows]
    keys = differing_keys(configs)
    group_key = resolve_key(group, configs, keys) if group else None
    if group_key in RESULT_KEYS:
        raise UserError(f"--group takes a config key, not the result column {group_key!r}")
    label_keys = [k for k in keys if k != group_key]
    defaults = _defaults()
    for r, label in zip(rows, run_labels(configs, label_keys)):
        r["label"] = label or f"{r['rule']}, {r['data']}"
        r["values"] = {k: r["config"].get(k, defaults.get(k)) for k in label_keys}
    if sort:
        sort_key = resolve_key(sort, configs, keys)
        value = (lambda r: r[RESULT_KEYS[sort_key]]) if sort_key in RESULT_KEYS else (lambda r: r["config"].get(sort_key, defaults.get(sort_key)))
        rows.sort(key=lambda r: sort_value(value(r)), reverse=reverse)
    groups: list[tuple[Any, list[dict]]] = []
    if group_key is None:
        groups.append((None, rows))
    else:
        seen: dict[str, int] = {}
        for r in rows:  # groups in order of first appearance (sorted order when sorting)
            v = r["config"].get(group_key, defaults.get(group_key))
            tag = json.dumps(v, sort_keys=True)
            if tag not in seen:
                seen[tag] = len(groups)
                groups.append((v, []))
            groups[seen[tag]][1].append(r)
    return {"keys": label_keys, "group": group_key, "groups": groups}


def markdown_tables(result: dict[str, Any]) -> str:
    """One Markdown table per group (one in all without ``--group``): a column per differing key."""
    keys, names = result["keys"], short_names(result["keys"])
    out = []
    for value, rows in result["groups"]:
        if result["group"] is not None:
            out.append(f"**{result['group']} = {format_value(value)}**\n")
        head = ["run", *(names[k] for k in keys), "rule", "data set", "seeds", "test accuracy (%)", "epochs", "wall time (s)"]
        lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] * (len(head) - 4) + ["---:"] * 4) + " |"]
        for r in rows:
            epochs = f"{r['epochs']}" + (f"/{r['of_epochs']}" if r["epochs"] != r["of_epochs"] else "")
            cells = [r["name"], *(format_value(r["values"][k]) for k in keys), r["rule"], r["data"], str(r["seeds"]),
                     f"{r['mean']:.2f} ± {r['std']:.2f}", epochs, f"{r['wall']:.0f}"]
            lines.append("| " + " | ".join(cells) + " |")
        out.append("\n".join(lines))
    return "\n\n".join(out)


def plot_comparison(result: dict[str, Any], out: str | Path) -> Path:
    """Test accuracy per epoch of every run, legend = its label; one panel per group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plot import _band, read_metrics, save_figure

    groups = result["groups"]
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 4.2), squeeze=False)
    for ax, (value, rows) in zip(axes[0], groups):
        for r in rows:
            m = read_metrics(r["dir"])
            _band(ax, [e["epoch"] for e in m], [e["test_accuracy"] for e in m], r["label"])
        title = f"{result['group']} = {format_value(value)}" if result["group"] is not None else None
        ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, out)
