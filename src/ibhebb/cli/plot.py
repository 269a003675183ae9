"""``ibhebb plot RUN_DIR [RUN_DIR ...]``"""
from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("plot", help="plot a run's accuracy and per-layer HSIC curves")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="PNG path (default: RUN_DIR/plot.png for one run)")
    return p


def run(args) -> int:
    from ..plot import plot_run, plot_runs

    if len(args.runs) == 1:
        print(plot_run(args.runs[0], args.out))
    else:
        print(plot_runs(args.runs, args.out or "comparison.png"))
    return 0
