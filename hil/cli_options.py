"""Argument helpers shared by the ``itb`` subcommands (``hil/cmd_*.py``).

Each helper adds one kind of option the same way everywhere: a command that
only groups actions (``itb journal verify``, ``itb keys add``), an action and
the function that runs it, the positional file a command works on, and the ``--json`` switch that prints one JSON document
instead of text.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any


def add_command_group(
    subparsers: argparse._SubParsersAction,
    name: str,
    help: str,
    description: str,
    metavar: str = "ACTION",
) -> argparse._SubParsersAction:
    """Add the command ``name`` whose only job is to hold actions, and return their subparsers.

    The chosen action lands in ``args.<name>_command``; one is required.
    """
    parser = subparsers.add_parser(name, help=help, description=description)
    return parser.add_subparsers(dest=f"{name}_command", metavar=metavar, required=True)


def add_action(
    actions: argparse._SubParsersAction,
    name: str,
    run: Callable[[argparse.Namespace], int],
    help: str,
    description: str,
    **options: Any,
) -> argparse.ArgumentParser:
    """Add the action ``name`` to a command group; ``run(args)`` carries it out and returns the exit status.

    :param options: further keywords for :meth:`argparse._SubParsersAction.add_parser` (``epilog``, say).
    :return: the action's parser, for its own arguments.
    """
    parser = actions.add_parser(name, help=help, description=description, **options)
    parser.set_defaults(func=run)
    return parser


def add_file_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """Add the positional ``file`` (a :class:`~pathlib.Path`) that the command reads."""
    parser.add_argument("file", type=Path, help=help)


def add_json_flag(parser: argparse.ArgumentParser, help: str) -> None:
    """Add ``--json``: print one JSON document on standard output instead of text."""
    parser.add_argument("--json", action="store_true", help=help)
