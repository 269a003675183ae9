"""``ibhebb plot RUN_DIR [RUN_DIR ...]``"""
from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("plot", help="plot a run's accuracy and per-layer HSIC curves")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories, or one sweep directory (Fig 6)")
    p.add_argument("--out", help="PNG path (default: RUN_DIR/plot.png for one run)")
    return p


def run(args) -> int:
    from ..app.compare import compare, plot_comparison
    from ..app.plot import plot_run
    from ..app.sweep_plot import is_sweep, plot_sweep

    if len(args.runs) == 1 and is_sweep(args.runs[0]):  # a sweep directory: Fig 6
        print(plot_sweep(args.runs[0], args.out))
    elif len(args.runs) == 1:
        print(plot_run(args.runs[0], args.out))
    else:
        print(plot_comparison(compare(args.runs), args.out or "comparison.png"))  # labelled by what differs
    return 0
