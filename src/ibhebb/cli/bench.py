"""``ibhebb bench [--device cuda] [--steps N] [--json FILE]``"""
from __future__ import annotations

import argparse

from ..errors import UserError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench",
        help="time every training path (biohsic rule loop/engine on the MLP, LIF and CNN, pHSIC, the baselines) against the hardware's limit",
        description="Time one training step of the paper's MNIST network for R = 1 and R = 30 seeds and print a Markdown table.",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    p.add_argument("--steps", type=int, default=0, help="samples per timed run for R = 1 (default: short, about a minute on 2 CPU cores)")
    p.add_argument("--replicas", default="1,30", help="comma-separated replica counts R (default 1,30)")
    p.add_argument("--lif-steps", type=int, default=20, help="T, Euler steps per sample of the LIF and spiking rows (default 20)")
    p.add_argument("--rows", default="all",
                   help="which rows (default all): buffer,recompute,features (the random-feature trace memory, D = 512, "
                        "S = 2),lif,spiking (the LIF spiking network, surrogate and escape noise),backprop,subnormal (buffer "
                        "from an evolved AdamW state with subnormal moments),cnn (the paper's CNN, R = 1 and 3),reservoir,"
                        "phsic (the batch and online forms),feedback (feedback alignment, sign symmetry),layerwise (layer "
                        "classifier, last layer)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default 0: torch's default)")
    p.add_argument("--chunk", type=int, default=0, help="samples per call of the engine's C or compiled step (default 0: the engine's choice)")
    p.add_argument("--engines", default="", help="which engines: rule,native,compile (default: rule,native on the CPU, rule,compile on CUDA; eager is an old name of rule)")
    p.add_argument("--json", metavar="FILE", help="also write the result as JSON")
    p.add_argument("settings", nargs="*", metavar="KEY=VALUE", help="the options above as key=value too, e.g. steps=2000 threads=1")
    p.set_defaults(_extras="settings")
    return p


SETTINGS = {"device": str, "steps": int, "replicas": str, "lif_steps": int, "rows": str, "threads": int, "chunk": int,
            "engines": str, "json": str}
"""The options ``key=value`` may set (``lif-steps`` or ``lif_steps``), with their types."""


def apply_settings(args) -> None:
    """Set ``args``' options from its ``key=value`` items."""
    for item in args.settings:
        key, _, value = item.partition("=")
        name = key.strip().lstrip("-").replace("-", "_")
        if name not in SETTINGS:
            raise UserError(f"bench has no setting {key!r}; it takes {', '.join(k.replace('_', '-') for k in SETTINGS)}")
        try:
            setattr(args, name, SETTINGS[name](value.strip()))
        except ValueError:
            raise UserError(f"bench setting {key} must be an integer, got {value!r}") from None


def run(args) -> int:
    import torch

    from ..app.bench import ROW_GROUPS, markdown, run_bench, write_json

    apply_settings(args)

    if args.device != "cpu" and not args.device.startswith("cuda"):
        raise UserError(f"--device must be cpu or cuda[:i], got {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {args.device} asked for, but CUDA is not available here")
    try:
        replicas = tuple(int(r) for r in args.replicas.split(","))
    except ValueError:
        raise UserError(f"--replicas must be comma-separated integers, got {args.replicas!r}") from None
    if args.steps < 0 or args.lif_steps < 1 or any(r < 1 for r in replicas):
        raise UserError("--steps must be >= 0, --lif-steps >= 1 and every replica count >= 1")
    if args.threads < 0 or args.chunk < 0:
        raise UserError(f"--threads and --chunk must be >= 0, got {args.threads} and {args.chunk}")
    if args.threads:
        torch.set_num_threads(args.threads)
    from ..engine.threads import set_adaptive

    set_adaptive(args.threads == 0)  # as a run with the default threads: torch's threads adapt to a busy machine
    groups = ROW_GROUPS if args.rows.strip() == "all" else tuple(g.strip() for g in args.rows.split(",") if g.strip())
    unknown = [g for g in groups if g not in ROW_GROUPS]
    if unknown or not groups:
        raise UserError(f"--rows takes all or some of {','.join(ROW_GROUPS)}, got {args.rows!r}")
    from ..app.bench import BENCH_ENGINES
    from ..engine import cstep

    engines = tuple({"eager": "rule"}.get(e.strip(), e.strip()) for e in args.engines.split(",") if e.strip()) or None
    if engines is not None and (not set(engines) <= set(BENCH_ENGINES)):
        raise UserError(f"--engines takes some of {','.join(BENCH_ENGINES)}, got {args.engines!r}")
    if engines and "native" in engines and args.device != "cpu":
        raise UserError("--engines native: the C step runs on the CPU only")
    if (engines is None and args.device == "cpu") or (engines and "native" in engines):
        reason = cstep.unavailable(torch.float32)
        if reason is not None:
            if engines:
                raise UserError(f"--engines native: the C step cannot run here ({reason})")
            print(f"note: no native rows, the C step cannot run here ({reason}); timing the compiled step instead", flush=True)
            engines = ("rule", "compile")
    result = run_bench(args.device, args.steps, replicas, args.lif_steps, groups=groups, chunk=args.chunk, engines=engines)
    print(markdown(result))
    if args.json:
        write_json(result, args.json)
    return 0
