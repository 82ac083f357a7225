"""``itb bench``: performance figures, printed as a table or as JSON.

``--json`` prints one ``itb.bench/1`` document (the envelope of
:mod:`hil.output`, then ``quick`` and ``benchmarks``: each benchmark's name and
its figures, units in every key). A figure named in :data:`VERDICTS` or ending
in ``within_target`` is a verdict: ``passed`` (and the exit status, 0 or 1) says
whether every verdict held.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator
from typing import Any

#: Benchmark name -> module exposing ``run(args) -> dict`` and ``add_arguments(parser)`` (optional).
BENCHMARKS: dict[str, str] = {
    "serial": "hil.bench.serial",
    "run": "hil.bench.run",
    "kernel": "hil.bench.kernel",
    "cohort": "hil.bench.cohort",
}
#: Names of the figures that are verdicts (a name may also end in ``within_target``). The polls of the
#: runs of ``itb bench run`` must be identical, else its floor (b) is not the floor of its runs (a).
VERDICTS = ("meets_targets", "invariants_held", "polls_identical_in_every_run")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``itb bench`` to the CLI."""
    parser = subparsers.add_parser(
        "bench",
        help="measure performance (kernel decisions, serial round trips, scenario speed)",
        description="Run a benchmark and print its figures. 'all' runs every benchmark. "
        "Exit status 1 if a target or an invariant failed.",
    )
    parser.add_argument("name", choices=[*BENCHMARKS, "all"], help="which benchmark to run")
    parser.add_argument("--json", action="store_true", help="print one JSON document (itb.bench/1)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (for smoke tests)")
    parser.set_defaults(func=_main)


def run_benchmark(name: str, args: argparse.Namespace) -> dict:
    """Run one named benchmark and return its figures."""
    return importlib.import_module(BENCHMARKS[name]).run(args)


def _flat(figures: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in figures.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def verdicts(results: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """Every verdict figure of ``results`` (benchmark name -> figures), by its dotted name."""
    return {
        f"{name}.{key}": bool(value)
        for name, figures in results.items()
        for key, value in _flat(figures)
        if key.rsplit(".", 1)[-1] in VERDICTS or key.endswith("within_target")
    }


def _main(args: argparse.Namespace) -> int:
    from hil.output import document, dump

    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    results = {name: run_benchmark(name, args) for name in names}
    held = verdicts(results)
    passed = all(held.values())
    if args.json:
        dump(document("itb.bench/1", passed=passed, quick=bool(args.quick), benchmarks=results), sys.stdout)
    else:
        for name, figures in results.items():
            print(f"[{name}]")
            for key, value in _flat(figures):
                print(f"  {key:<40} {value}")
        failed = [key for key, ok in held.items() if not ok]
        print("all targets held" if passed else f"FAILED: {', '.join(failed)}")
    return 0 if passed else 1
