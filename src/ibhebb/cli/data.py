"""``ibhebb data fetch NAME`` and ``ibhebb data list``"""
from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    from ..data import DATASETS

    p = sub.add_parser("data", help="fetch or list data sets", description="Fetch data sets into the cache.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    f = verbs.add_parser("fetch", help="fetch a data set into the data folder")
    f.add_argument("name", choices=DATASETS)
    f.add_argument("--root", help="data folder (default: $IBHEBB_DATA or ~/.cache/ibhebb)")
    verbs.add_parser("list", help="list the data sets and whether they are available")
    return p


def run(args) -> int:
    from ..data import DATASETS, data_root, fetch_dataset, load_dataset
    from ..errors import DataError

    if args.verb == "fetch":
        path = fetch_dataset(args.name, root=args.root)
        print(f"{args.name}: ready in {path}")
        return 0
    for name in DATASETS:
        try:
            d = load_dataset(name, n_train=1, n_test=1)
            state = f"available ({d.input_shape}, {d.n_classes} classes)"
        except DataError as e:
            state = f"missing: {e}"
        print(f"{name:14s} {state}")
    print(f"data folder: {data_root()}")
    return 0
