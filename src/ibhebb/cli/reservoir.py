"""``ibhebb reservoir fig3 CONFIG --out DIR`` and ``ibhebb reservoir pretrain CONFIG --out FILE.pt``"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import UserError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "reservoir",
        help="reservoir working memory: the Fig 3 experiment, task-free pre-training",
        description="Reservoirs whose trained readout computes the global signal ξ (MATH §4).",
    )
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    f = verbs.add_parser("fig3", help="seed 000 Fig 3: learn ξ online, test on new samples (LMS vs RLS, by size)")
    f.add_argument("config", help="TOML or preset name, e.g. fig3-reservoir")
    f.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. sizes=[500,1000] readout.learners=[\"rls\"]")
    f.add_argument("--out", required=True, help="run directory: results.json and one PNG per run")
    f.add_argument("--no-progress", action="store_true")
    f.set_defaults(_extras="overrides")
    t = verbs.add_parser("pretrain", help="train one reservoir per hidden layer on a task-free stream; save it frozen")
    t.add_argument("config", help="TOML or preset name, e.g. reservoir-pretrain-mnist")
    t.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    t.add_argument("--out", required=True, help="the reservoir file (.pt) for rule.reservoir; scores go next to it (.json)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing file")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(_extras="overrides")
    return p


def run(args) -> int:
    from ..reservoir.config import Fig3Config, PretrainConfig, load

    if args.verb == "fig3":
        from ..app.fig3 import run_fig3

        cfg = load(Fig3Config, args.config, args.overrides)
        results = run_fig3(cfg, args.out, progress=not args.no_progress)
        print(f"{'learner':8} {'units':>6} {'NMSE':>8} {'corr':>7}  (held-out, all steps; mean over seeds)")
        for r in results["runs"]:
            s = r["test_all_steps"]
            print(f"{r['learner']:8} {r['units']:6d} {sum(s['nmse']) / len(s['nmse']):8.3f} "
                  f"{sum(s['correlation']) / len(s['correlation']):7.3f}")
        for r in results.get("feature_memory", []):
            print(f"features D={r['features']} seed {r['seed']}: NMSE {r['test']['nmse'][0]:.3f}, corr "
                  f"{r['test']['correlation'][0]:.3f} held-out; corr {r['train']['correlation'][0]:.3f} on the training stream")
        print(f"-> {Path(args.out) / 'results.json'}")
        return 0
    from ..app.pretrain import pretrain

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists: pass --overwrite to replace it")
    cfg = load(PretrainConfig, args.config, args.overrides)
    summary = pretrain(cfg, out, progress=not args.no_progress)
    for s in summary["test_scores"]:
        print(f"layer {s['layer']} ({s['units']} units): held-out NMSE {s['nmse']:.3f}, correlation {s['correlation']:.3f}")
    print(f"-> {out}")
    return 0
