"""The ``itb`` command.

Each subcommand lives in its own module, which exposes
``register(subparsers) -> None``; the module adds its parser and sets
``func(args) -> int`` as the handler. Only subcommands that work are listed.
Modules keep heavy imports inside their handlers so ``itb --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from cython_ext.errors import ItbError

#: Subcommand modules, in the order ``itb --help`` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "hil.cmd_run",
    "hil.cmd_sim",
    "hil.cmd_hil",
    "hil.cmd_prescription",
    "hil.cmd_journal",
    "hil.cmd_bench",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser."""
    parser = argparse.ArgumentParser(
        prog="itb",
        description="Firmware-in-the-loop dosing controller for intrathecal baclofen pumps.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``itb`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ItbError as exc:
        print(f"itb: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
