"""``ibhebb compare RUN_DIR [RUN_DIR ...] [--sort KEY] [--group KEY]``: Markdown table(s) and a plot of several runs.

Each run is labelled by the config keys in which the runs differ (a column
each in the table, ``key=value`` in the plot's legend).
"""
from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "compare",
        help="tabulate (Markdown) and plot the test accuracy of several runs, labelled by what differs",
        description="One Markdown table of the final test accuracy of each run and one plot of the curves. "
        "Runs are labelled by the config keys in which they differ. KEY is a config key (rule.window, or "
        "window when unambiguous) or, for --sort, a result column: accuracy, std, seeds, epochs, wall.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="comparison.png", help="PNG path of the curves (default: comparison.png)")
    p.add_argument("--sort", metavar="KEY", help="order the rows by this config key or result column (ascending)")
    p.add_argument("--reverse", action="store_true", help="with --sort: descending")
    p.add_argument("--group", metavar="KEY", help="one table and one panel per value of this config key")
    return p


def run(args) -> int:
    from ..app.compare import compare, markdown_tables, plot_comparison

    result = compare(args.runs, sort=args.sort, group=args.group, reverse=args.reverse)
    print(markdown_tables(result))
    print(f"\ncurves: {plot_comparison(result, args.out)}")
    return 0
