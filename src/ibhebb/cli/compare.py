"""``ibhebb compare RUN_DIR [RUN_DIR ...]``: one Markdown table of final test accuracies, one plot of the curves."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

from ..errors import UserError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="tabulate (Markdown) and plot the test accuracy of several runs")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="comparison.png", help="PNG path of the curves (default: comparison.png)")
    return p


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
    """The last finished epoch of a run: label, data set, seeds, mean ± std test accuracy, epochs, wall time."""
    from ..app.plot import read_metrics

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
        "rule": rule_label(cfg),
        "data": cfg["data"]["name"],
        "seeds": len(acc),
        "mean": mean,
        "std": std,
        "epochs": last["epoch"],
        "of_epochs": cfg.get("epochs", last["epoch"]),
        "wall": last.get("wall_seconds", float("nan")),
    }


def markdown_table(rows: list[dict]) -> str:
    lines = [
        "| rule | data set | seeds | test accuracy (%) | epochs | wall time (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        epochs = f"{r['epochs']}" + (f"/{r['of_epochs']}" if r["epochs"] != r["of_epochs"] else "")
        lines.append(
            f"| {r['rule']} | {r['data']} | {r['seeds']} | {r['mean']:.2f} ± {r['std']:.2f} | {epochs} | {r['wall']:.0f} |"
        )
    return "\n".join(lines)


def run(args) -> int:
    from ..app.plot import plot_runs

    rows = [summarise(d) for d in args.runs]
    print(markdown_table(rows))
    print(f"\ncurves: {plot_runs(args.runs, args.out)}")
    return 0
