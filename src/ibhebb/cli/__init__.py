"""The ``ibhebb`` command line.

Each subcommand lives in its own module of this package with two functions,
``add_parser(subparsers)`` and ``run(args)``; :data:`COMMANDS` lists them.
A :class:`~ibhebb.errors.UserError`, or a command line argparse refuses,
becomes one line on stderr and exit status 2. ``key=value`` overrides may
stand anywhere on the command line, before or after the flags.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import UserError

COMMANDS = ("train", "eval", "export", "configs", "data", "plot", "reservoir", "compare", "sweep", "bench")
EXTRAS = "_extras"
"""A subcommand's default: the attribute that collects the ``key=value`` items found after its flags."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, ``ibhebb: error: …``, and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"ibhebb: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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


def is_override(item: str) -> bool:
    """Whether a command-line item is a ``key=value`` override (not a flag)."""
    return not item.startswith("-") and "=" in item and item.split("=", 1)[0].strip() != ""


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse ``argv``, moving ``key=value`` items that follow the flags into the subcommand's list of overrides."""
    args, extra = parser.parse_known_args(argv)
    target = getattr(args, EXTRAS, None)
    stray = [e for e in extra if target is None or not is_override(e)]
    if stray:
        command = " ".join(str(getattr(args, k)) for k in ("command", "verb") if getattr(args, k, None))
        parser.exit(2, f"ibhebb: error: unrecognized arguments: {' '.join(stray)} (see ibhebb {command} --help)\n")
    if extra:
        setattr(args, target, list(getattr(args, target) or []) + extra)
    return args


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parse(parser, argv)
    except SystemExit as e:  # --help, --version, or a refused command line (one line already printed)
        return e.code if isinstance(e.code, int) else 2
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"ibhebb: error: {e}", file=sys.stderr)
        return getattr(e, "exit_status", 2)
    except KeyboardInterrupt:
        print("ibhebb: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
