"""``ibhebb configs [NAME]``: the packaged presets, or one preset's TOML."""
from __future__ import annotations

import argparse

from ..errors import UserError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "configs",
        help="list the packaged configs (presets), or print one",
        description="List the presets that ship with ibhebb (usable by name: `ibhebb train fig5-mnist ...`), "
        "or print the TOML of one to start a config of your own.",
    )
    p.add_argument("name", nargs="?", help="print this preset's TOML")
    return p


def run(args) -> int:
    from ..presets import description, preset_path, presets

    if args.name is not None:
        path = preset_path(args.name)
        if path is None:
            raise UserError(f"no preset named {args.name!r} (`ibhebb configs` lists them)")
        print(path.read_text(encoding="utf-8"), end="")
        return 0
    found = presets()
    width = max(len(n) for n in found)
    for name, path in found.items():
        print(f"{name:<{width}}  {description(path)}")
    return 0
