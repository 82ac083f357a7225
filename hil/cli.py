"""The ``itb`` command.

Each subcommand lives in its own module, which exposes
``register(subparsers) -> None``; the module adds its parser and sets
``func(args) -> int`` as the handler. Only subcommands that work are listed.
Modules keep heavy imports inside their handlers so ``itb --help`` stays fast.

Errors are handled here, once, for every subcommand: a handler returns 0 or 1
and raises anything worse; :func:`main` turns what it raises into one line on
standard error (or, with ``--json``, an ``itb.error/1`` document on standard
output, see :mod:`hil.output`) and an exit status from this table:

======  ====================  ======================================================================
status  meaning               raised as
======  ====================  ======================================================================
0       ok
1       a check failed        the handler's verdict: an expectation, an invariant, a journal
                              verification, a benchmark target; also any other ``ItbError``
2       usage                 bad arguments (argparse), or input refused by its validator
                              (``ConfigError``: a scenario, prescription or profile file, an option)
3       refused data          the measurements cannot support a result (``InsufficientDataError``)
4       device or port error  ``HalError`` and its subclasses: a port that will not open, a device
                              that does not answer or answers an error, an uncertain delivery
130     interrupted           SIGINT (Ctrl-C), 128 + 2 as the shell reports it
141     closed pipe           the reader of standard output went away (``itb ... | head``), 128 + 13
======  ====================  ======================================================================

Logging goes through the standard library to standard error: ``-v`` adds
debug messages, ``-q`` keeps warnings and errors only, ``-qq`` errors only.
"""

from __future__ import annotations

import argparse
import enum
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from cython_ext.errors import ConfigError, HalError, ItbError

#: Subcommand modules, in the order ``itb --help`` lists them.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "hil.cmd_run",
    "hil.cmd_sim",
    "hil.cmd_hil",
    "hil.cmd_prescription",
    "hil.cmd_journal",
    "hil.cmd_keys",
    "hil.cmd_bench",
    "hil.cmd_trace",
    "hil.cmd_cohort",
)

#: Our packages: their loggers follow ``-v``/``-q``; everyone else's stay at WARNING unless ``-vv``.
OWN_LOGGERS: tuple[str, ...] = ("hil", "controller", "hal", "sim", "cython_ext")

log = logging.getLogger(__name__)


class ExitStatus(enum.IntEnum):
    """The exit statuses of ``itb`` (the table in the module docstring and the README)."""

    OK = 0
    CHECK_FAILED = 1
    USAGE = 2
    REFUSED_DATA = 3
    DEVICE_ERROR = 4
    INTERRUPTED = 130
    CLOSED_PIPE = 141


def exit_status_for(exc: BaseException) -> ExitStatus:
    """The exit status an error escaping a handler gives (see the table above)."""
    from hil.gravimetric.analysis import InsufficientDataError

    if isinstance(exc, KeyboardInterrupt):
        return ExitStatus.INTERRUPTED
    if isinstance(exc, BrokenPipeError):
        return ExitStatus.CLOSED_PIPE
    if isinstance(exc, InsufficientDataError):
        return ExitStatus.REFUSED_DATA
    if isinstance(exc, HalError):
        return ExitStatus.DEVICE_ERROR
    if isinstance(exc, ConfigError):
        return ExitStatus.USAGE
    return ExitStatus.CHECK_FAILED


class _Formatter(logging.Formatter):
    """``itb: message`` for information, ``itb: warning: message`` above; logger names at debug."""

    def __init__(self, debug: bool) -> None:
        super().__init__()
        self.debug = debug

    def format(self, record: logging.LogRecord) -> str:
        prefix = "itb: "
        if self.debug:
            prefix += f"{record.name}: "
        if record.levelno >= logging.WARNING:
            prefix += f"{record.levelname.lower()}: "
        return prefix + record.getMessage()


def configure_logging(verbosity: int) -> None:
    """Send log records to standard error at the level ``verbosity`` asks for.

    :param verbosity: number of ``-v`` minus number of ``-q``: 0 information, 1 debug,
        2 debug from every library too, -1 warnings, -2 errors only.
    """
    ours = {-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG if verbosity > 0 else logging.ERROR)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "itb_cli", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.itb_cli = True  # type: ignore[attr-defined]
    handler.setFormatter(_Formatter(debug=verbosity > 0))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbosity >= 2 else logging.WARNING)
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(ours)


class _VersionAction(argparse.Action):
    """``--version``: print :func:`hil.output.software_line` (asked for only when given) and exit 0."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS,
                         help="print the version and git revision, and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        from hil.output import software_line

        print(software_line())
        parser.exit()


def _add_verbosity(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-v", "--verbose", action="count", default=default,
                        help="more log messages (-vv: every library's too)")
    parser.add_argument("-q", "--quiet", action="count", default=default, help="fewer log messages (-qq: errors only)")


def _subparsers_of(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += [sub, *_subparsers_of(sub)]
    return found


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser; ``-v``/``-q`` are taken before or after the subcommand."""
    parser = argparse.ArgumentParser(
        prog="itb",
        description="Firmware-in-the-loop dosing controller for intrathecal baclofen pumps.",
        epilog="exit status: 0 ok, 1 a check failed, 2 usage, 3 refused data, 4 device or port error, "
        "130 interrupted, 141 output pipe closed",
    )
    parser.add_argument("--version", action=_VersionAction)
    _add_verbosity(parser, 0)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    for sub in _subparsers_of(parser):
        _add_verbosity(sub, argparse.SUPPRESS)
    return parser


def _silence_stdout() -> None:
    """Point standard output at the null device, so the interpreter's last flush cannot fail."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass  # not a real file (captured in a test): nothing will flush to a closed pipe


def _report_error(args: argparse.Namespace, exc: BaseException, status: ExitStatus) -> None:
    if isinstance(exc, ItbError):
        log.error("%s", exc)
    elif status is ExitStatus.INTERRUPTED:
        log.error("interrupted")
    if getattr(args, "json", False) and status is not ExitStatus.CLOSED_PIPE:
        from hil.output import document, dump, error_dict

        dump(document("itb.error/1", passed=False, error=error_dict(exc, int(status)), command=args.command),
             sys.stdout)
        sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``itb`` console script; returns the exit status (see :class:`ExitStatus`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose - args.quiet)
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()
        return status
    except (ItbError, KeyboardInterrupt, BrokenPipeError) as exc:
        status = exit_status_for(exc)
        if status is ExitStatus.CLOSED_PIPE:
            _silence_stdout()
            return int(status)
        try:
            _report_error(args, exc, status)
        except BrokenPipeError:
            _silence_stdout()
            return int(ExitStatus.CLOSED_PIPE)
        return int(status)


if __name__ == "__main__":
    sys.exit(main())
