"""``ibhebb export RUN_DIR --out FILE.safetensors [--seed I]``: a run's trained weights as safetensors."""
from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export",
        help="write a run's trained weights to a .safetensors file",
        description="Write the weights of RUN_DIR's networks, named as in the plain torch module that "
        "ibhebb.load_run returns, to a safetensors file (metadata: the run's config). Without --seed every "
        "tensor holds all seeds stacked on a leading dimension.",
    )
    p.add_argument("run", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="FILE", help="the .safetensors file to write")
    p.add_argument("--seed", type=int, help="only this seed, loadable with net.load_state_dict(...)")
    return p


def run(args) -> int:
    from ..app.runs import export_run

    path, keys = export_run(args.run, args.out, seed=args.seed)
    which = f"seed {args.seed}" if args.seed is not None else "all seeds, stacked"
    print(f"{path}: {len(keys)} tensors ({which}): {', '.join(keys)}")
    return 0
