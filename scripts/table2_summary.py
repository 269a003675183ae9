"""Print a Markdown table of Table 2 runs: ``python3 scripts/table2_summary.py RUNS_DIR [DATA] [WIDTH]``.

One row per optimiser row found (``sgd-div``, ``adamw-bn``), one column per rule: the final test accuracy
(mean ± std over seeds) and, in brackets, the mean validation accuracy of the last epoch.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

RULES = ("backprop", "feedback-alignment", "sign-symmetry", "layer-classifier", "layer-classifier-fa",
         "phsic-cossim", "phsic-gaussian")


def cell(run: Path) -> str:
    summary = run / "summary.json"
    if not summary.exists():
        return "—"
    s = json.loads(summary.read_text())
    acc = [100 * a for a in s["test_accuracy"] if a is not None]
    spread = f" ± {statistics.stdev(acc):.1f}" if len(acc) > 1 else ""
    val = s.get("validation_accuracy_mean")
    return f"{statistics.mean(acc):.1f}{spread}" + (f" ({100 * val:.1f})" if val is not None else "")


def main(root: str, data: str = "fashion-mnist", width: str = "1x") -> None:
    print("| row | " + " | ".join(RULES) + " |")
    print("|---|" + "---:|" * len(RULES))
    for row in ("sgd-div", "adamw-bn"):
        runs = [Path(root) / f"{data}-{rule}-{width}-{row}" for rule in RULES]
        if any(r.exists() for r in runs):
            print(f"| {width} {row} | " + " | ".join(cell(r) for r in runs) + " |")


if __name__ == "__main__":
    main(*sys.argv[1:])
