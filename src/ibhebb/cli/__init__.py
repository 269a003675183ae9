"""The ``ibhebb`` command line.

Each subcommand lives in its own module of this package with two functions,
``add_parser(subparsers)`` and ``run(args)``; :data:`COMMANDS` lists them.
A :class:`~ibhebb.errors.UserError` becomes one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import UserError

COMMANDS = ("train", "eval", "export", "configs", "data", "plot", "reservoir", "compare", "sweep", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ibhebb",
        description="Train networks with layer-local learning rules derived from the information bottleneck.",
    )
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"ibhebb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        module = importlib.import_module(f".{name}", __name__)
        module.add_parser(sub).set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"ibhebb: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ibhebb: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
