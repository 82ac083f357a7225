"""``itb cohort``: an in-silico trial of titration policies on a virtual population.

N patients drawn from a seeded population file run for D days under each policy
of a policy file; every dose decision goes through the controller's workflows and
the compiled safety kernel (:mod:`hil.cohort`). Writes ``summary.json``,
``patients.csv`` and ``report.html`` with its plots. ``--workers N`` runs the
chunks on N local processes, ``--scheduler tcp://HOST:PORT`` on a Dask cluster;
the figures are the same either way for the same seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cython_ext import fields

#: Default report directory.
DEFAULT_REPORT_DIR = "itb-cohort"
_COHORTS = Path(__file__).resolve().parent / "cohorts"
#: Bounds of the arguments (those of :mod:`hil.cohort.policy`, :mod:`hil.cohort.run` and
#: :mod:`sim.population`, repeated here so that ``itb --help`` imports none of them; a test holds them equal).
MAX_DAYS = 3650
MAX_PATIENTS = 1_000_000
MAX_WORKERS = 64
#: The shipped population and policy files.
DEFAULT_POPULATION = _COHORTS / "mixed_origins.toml"
DEFAULT_POLICIES = _COHORTS / "policies" / "standard.toml"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``itb cohort`` to the CLI."""
    parser = subparsers.add_parser(
        "cohort",
        help="run titration policies on a virtual population (real kernel decisions, vectorised plant)",
        description="Run every patient of a seeded population file under every policy of a policy file, "
                    "with the firmware's own decisions, and write a report (report.html, patients.csv, "
                    "summary.json).",
    )
    parser.add_argument("population", nargs="?", default=str(DEFAULT_POPULATION),
                        help="population file (TOML; default: the shipped mixed_origins.toml)")
    parser.add_argument("policies", nargs="?", default=str(DEFAULT_POLICIES),
                        help="policy file (TOML; default: the shipped policies/standard.toml)")
    parser.add_argument("--days", type=fields.int_arg("--days", 1, MAX_DAYS, "days"), default=None,
                        help="days per patient (default: the policy file's)")
    parser.add_argument("--patients", type=fields.int_arg("--patients", 1, MAX_PATIENTS), default=None,
                        help="draw this many patients instead of the population file's size")
    parser.add_argument("--workers", type=fields.int_arg("--workers", 1, MAX_WORKERS), default=1,
                        help="local worker processes (default 1)")
    parser.add_argument("--scheduler", metavar="tcp://HOST:PORT", default=None,
                        help="run the chunks on this Dask distributed scheduler")
    parser.add_argument("--report", metavar="DIR", default=DEFAULT_REPORT_DIR,
                        help=f"report directory (default: ./{DEFAULT_REPORT_DIR}/)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (CI logs)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Handler of ``itb cohort``; returns the exit status (0: the cohort ran and its report is written)."""
    import dataclasses
    import time

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from hil.cohort.policy import load_protocol
    from hil.cohort.report import write_report
    from hil.cohort.run import run_cohort
    from sim.population import load_population

    population = load_population(args.population)
    if args.patients is not None:
        population = dataclasses.replace(population, size=args.patients)
    protocol = load_protocol(args.policies)
    console = Console(stderr=True)
    console.print(f"[bold]itb cohort[/bold] {population.size} patients ({args.population}) x "
                  f"{len(protocol.policies)} policies ({args.policies})")
    start = time.perf_counter()
    with Progress(TextColumn("patients"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=args.no_progress) as progress:
        task = progress.add_task("patients", total=population.size * len(protocol.policies))
        result = run_cohort(population, protocol, days=args.days, workers=args.workers, scheduler=args.scheduler,
                            progress=lambda done, total: progress.update(task, completed=done))
    wall = time.perf_counter() - start
    page = write_report(result, args.report, wall_s=wall, population_source=args.population)
    console.print(f"{len(result.outcomes)} patient runs in {wall:.1f} s; report: {page}")
    return 0
