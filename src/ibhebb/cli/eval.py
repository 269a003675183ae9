"""``ibhebb eval RUN_DIR [--data NAME]``: the test accuracy of every seed of a trained run."""
from __future__ import annotations

import argparse
import json


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "eval",
        help="test accuracy of every seed of a trained run",
        description="Rebuild each seed's network from RUN_DIR (config.json, checkpoint.pt) as plain torch "
        "layers and print its test accuracy: on the run's own test set, the numbers of summary.json.",
    )
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--data", metavar="NAME", help="test on this data set's whole test set instead of the run's own")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    return p


def run(args) -> int:
    from ..app.runs import evaluate_run

    result = evaluate_run(args.run, data=args.data)
    if args.json:
        print(json.dumps(result))
        return 0
    accs = result["test_accuracy"]
    for i, a in enumerate(accs):
        print(f"seed {i}: test accuracy {a:.4f}")
    mean = sum(accs) / len(accs)
    std = (sum((a - mean) ** 2 for a in accs) / max(len(accs) - 1, 1)) ** 0.5
    spread = f" ± {std:.4f}" if len(accs) > 1 else ""
    print(f"mean: {mean:.4f}{spread} ({result['data']} test set, {result['samples']} samples)")
    return 0
