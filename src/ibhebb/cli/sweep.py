"""``ibhebb sweep CONFIG key=v1,v2,... [key=value ...] --out DIR [--ray [ADDRESS]]``"""
from __future__ import annotations

import argparse

LOCAL = "local"


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "sweep",
        help="train a grid of configs, one run directory per cell (resumable)",
        description=(
            "Train every combination of the values given as key=v1,v2,... (key=value fixes a key for all cells). "
            "Each cell is a normal run directory under --out; rerunning skips finished cells and resumes "
            "interrupted ones. Example: ibhebb sweep fig5-cifar10 rule.window=2,4,8,16,32 seeds=3 --out runs/fig6"
        ),
    )
    p.add_argument("config", help="TOML config or preset name shared by every cell")
    p.add_argument("grid", nargs="+", metavar="KEY=V1,V2,...", help="axes of the grid, and fixed overrides")
    p.add_argument("--out", required=True, help="sweep directory (one sub-directory per cell, and sweep.json)")
    p.add_argument(
        "--ray", nargs="?", const=LOCAL, default=None, metavar="ADDRESS",
        help="run cells as Ray tasks: on a local instance started on the fly, or on the cluster at ADDRESS ('auto', 'ray://host:10001')",
    )
    p.add_argument("--cpus-per-cell", type=float, default=1.0, help="Ray: CPUs reserved by each cell (default 1)")
    p.add_argument("--gpus-per-cell", type=float, default=0.0, help="Ray: GPUs (or a fraction) reserved by each cell (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars or per-epoch lines")
    p.add_argument("--plot", action="store_true", help="write fig6.png into the sweep directory at the end")
    p.set_defaults(_extras="grid")
    return p


def run(args) -> int:
    from ..errors import UserError
    from ..app.sweep import run_sweep

    if args.cpus_per_cell <= 0 or args.gpus_per_cell < 0:
        raise UserError("--cpus-per-cell must be > 0 and --gpus-per-cell >= 0")
    summaries = run_sweep(
        args.config, args.grid, args.out,
        use_ray=args.ray is not None, ray_address=None if args.ray in (None, LOCAL) else args.ray,
        cpus_per_cell=args.cpus_per_cell, gpus_per_cell=args.gpus_per_cell, progress=not args.no_progress,
    )
    from ..app.sweep import cell_name, grid_cells, parse_grid

    names = [cell_name(c) for c in grid_cells(parse_grid(args.grid)[0])]
    width = max(len(n) for n in names)
    for name, s in zip(names, summaries):
        print(f"{name:{width}s}  test {s['test_accuracy_mean']:.4f} ± {s['test_accuracy_std']:.4f}  "
              f"train {s['train_accuracy_mean']:.4f}  ({s['epochs']} epoch(s), {s['seeds']} seed(s))")
    if args.plot:
        from ..app.sweep_plot import plot_sweep

        print(f"plot: {plot_sweep(args.out)}")
    return 0
