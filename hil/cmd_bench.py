"""``itb bench``: performance figures, printed as a table or as JSON."""

from __future__ import annotations

import argparse
import importlib
import json

#: Benchmark name -> module exposing ``run(args) -> dict`` and ``add_arguments(parser)`` (optional).
BENCHMARKS: dict[str, str] = {
    "serial": "hil.bench.serial",
    "run": "hil.bench.run",
    "kernel": "hil.bench.kernel",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="measure performance (kernel decisions, serial round trips, scenario speed)",
        description="Run a benchmark and print its figures. 'all' runs every benchmark.",
    )
    parser.add_argument("name", choices=[*BENCHMARKS, "all"], help="which benchmark to run")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (for smoke tests)")
    parser.set_defaults(func=_main)


def run_benchmark(name: str, args: argparse.Namespace) -> dict:
    """Run one named benchmark and return its figures."""
    return importlib.import_module(BENCHMARKS[name]).run(args)


def _main(args: argparse.Namespace) -> int:
    names = list(BENCHMARKS) if args.name == "all" else [args.name]
    results = {name: run_benchmark(name, args) for name in names}
    payload = results[names[0]] if len(names) == 1 else results
    if args.json:
        print(json.dumps(payload, indent=2, sort_keys=True))
    else:
        for name, figures in results.items():
            print(f"[{name}]")
            for key, value in figures.items():
                print(f"  {key:<40} {value}")
    return 0
