"""``itb run``: run a therapy scenario against a simulated or real pump and write a report.

With no arguments it runs the built-in scenario on a simulated NE-1000 served
over a real pseudo-terminal, in virtual time, and writes ``./itb-report/``.
``--pump URL`` runs the same scenario against a real pump in real time (its
port settings from ``--profile``, ``--baud`` and ``--address``); with
``--sim-pump`` the URL is ``itb sim serve`` running at ``--speed``.

A report directory that already holds a run's journal is refused unless the
command says what to do with it: ``--resume DIR`` continues that run from its
journal, ``--new-run`` moves its files into a dated ``previous-*`` subfolder
(see :mod:`hil.rundir`). Arguments, the report directory and the pump's port
are checked before the banner and the progress bar; a port that fails to open
leaves no report folder behind.

Exit status (:class:`hil.cli.ExitStatus`): 0 every check held, 1 a check failed
or the run aborted, 2 usage, 4 the pump could not be opened or reconciled,
130 interrupted (the report says so and how far the run got).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cython_ext import fields
from hil.gravimetric.profile import ADDRESS_RANGE, BAUD_RANGE

#: Default report directory.
DEFAULT_REPORT_DIR = "itb-report"
#: Runs built in code rather than from a scenario file: name -> module with ``main(args) -> int``.
BUILT_IN_RUNS = {"oral-vs-intrathecal": "hil.oral_vs_intrathecal"}
#: Longest run against a real pump that starts without ``--yes`` or a confirmation, ms.
CONFIRM_ABOVE_MS = 3_600_000


def _speed(text: str) -> float:
    """``--speed``: a plain number in (0, MAX_SPEED] (the runner's bound)."""
    from hil.scenario.runner import MAX_SPEED  # deferred: the runner is heavy, and ``itb --help`` stays fast

    return fields.float_arg("--speed", 0, MAX_SPEED, low_open=True)(text)


def _days(text: str) -> float:
    """``--days``: a plain number in (0, MAX_DURATION_DAYS] (the scenario schema's bound)."""
    from hil.scenario.schema import MAX_DURATION_DAYS  # deferred: the schema is heavy, and ``itb --help`` stays fast

    return fields.float_arg("--days", 0, MAX_DURATION_DAYS, "days", low_open=True)(text)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``itb run`` to the CLI."""
    parser = subparsers.add_parser(
        "run",
        help="run a therapy scenario (default: the built-in one, simulated pump over a pty, virtual time)",
        description=(
            "Run a therapy scenario: timed clinical actions and faults against a pump, checking "
            "expectations, safety invariants and the implicit checks, then write a report (report.html, "
            "PNG plots, summary.json, serial trace, journal). Exit status 1 if any check fails, "
            "130 if interrupted."
        ),
    )
    parser.add_argument("scenario", nargs="?", default=None,
                        help="scenario file (TOML) or the name of a shipped one (default: 'default')")
    parser.add_argument("--pump", metavar="URL", default=None,
                        help="serial URL of a pump (runs in real time; --speed must be 1 unless --sim-pump)")
    parser.add_argument("--sim-pump", action="store_true",
                        help="the pump at --pump is 'itb sim serve' running at --speed (the report says so)")
    parser.add_argument("--profile", metavar="FILE", default=None,
                        help="bench profile (TOML): the pump's url, baudrate and address from its [pump] table")
    parser.add_argument("--baud", type=fields.int_arg("--baud", *BAUD_RANGE, "baud"), default=None,
                        help="the pump's baud rate (default: profile, or 19200)")
    parser.add_argument("--address", type=fields.int_arg("--address", *ADDRESS_RANGE), default=None,
                        help="the pump's address 0-99 (default: profile, or 0)")
    parser.add_argument("--balance", metavar="URL", default=None,
                        help="serial URL of a real balance, for a scenario's [accuracy] step on a real rig (with --pump)")
    parser.add_argument("--speed", type=_speed, default=None,
                        help="virtual seconds per wall second for a simulated pump (default: as fast as possible)")
    parser.add_argument("--link", choices=("pty", "inprocess", "tcp"), default="pty",
                        help="how the simulated pump is served (default: pty)")
    parser.add_argument("--report", metavar="DIR", default=None,
                        help=f"report directory (default: ./{DEFAULT_REPORT_DIR}/)")
    parser.add_argument("--resume", metavar="DIR", default=None,
                        help="continue the run in report directory DIR from its journal (the pump is reconciled "
                             "before any command); needs a pump that outlived the controller (--pump)")
    parser.add_argument("--new-run", action="store_true",
                        help="the report directory holds an earlier run: move its files to a dated previous-* "
                             "subfolder and start a new run")
    parser.add_argument("--safe-mode", metavar="SECONDS", type=fields.int_arg("--safe-mode", 1, 255, "s"),
                        default=None, help="run the pump in Safe mode (CRC-framed, comms watchdog of SECONDS, 1-255)")
    parser.add_argument("--days", type=_days, default=None,
                        help="run for this many days instead (actions after the end are skipped with a note)")
    parser.add_argument("--yes", action="store_true", help="start a run longer than an hour on a real pump unasked")
    parser.add_argument("--json", action="store_true", help="print summary.json (itb.run/1) on stdout, no table")
    parser.add_argument("--list", action="store_true", help="list the shipped scenarios and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (CI logs)")
    parser.set_defaults(func=main)


def _options(args: argparse.Namespace) -> tuple[Any, Any]:
    """The scenario and :class:`~hil.scenario.RunOptions` the arguments ask for (nothing opened yet)."""
    from cython_ext.errors import ConfigError
    from hil.gravimetric.profile import BenchProfile, load_profile
    from hil.rundir import Existing
    from hil.scenario import DEFAULT_SCENARIO, RunOptions, load_scenario
    from hil.scenario.runner import resume_options

    profile = load_profile(args.profile) if args.profile else BenchProfile()
    if profile.pump.driver not in ("", "ne1000"):
        raise ConfigError("pump.driver", profile.pump.driver, "ne1000 (the driver itb run drives)")
    pump_url = args.pump or profile.pump.url or None
    baudrate = args.baud if args.baud is not None else profile.pump.baudrate
    address = args.address if args.address is not None else profile.pump.address
    if address is not None and not 0 <= address <= 99:
        raise ConfigError("--address", address, "an integer in [0, 99]")
    if args.days is not None and not args.days > 0:
        raise ConfigError("--days", args.days, "> 0")
    duration_ms = None if args.days is None else round(args.days * 86_400_000)
    if args.resume is not None:
        given = {"scenario": args.scenario, "--report": args.report, "--new-run": args.new_run or None,
                 "--days": args.days, "--safe-mode": args.safe_mode, "--speed": args.speed}
        for option, value in given.items():
            if value is not None:
                raise ConfigError(option, value, "not given with --resume (the run's own set-up is in its run.json)")
        return resume_options(Path(args.resume), pump_url=pump_url, baudrate=baudrate, address=address)
    scenario = load_scenario(args.scenario or DEFAULT_SCENARIO)
    options = RunOptions(link=args.link, pump_url=pump_url, speed=args.speed, safe_mode_timeout_s=args.safe_mode,
                         report_dir=Path(args.report or DEFAULT_REPORT_DIR), balance_url=args.balance,
                         pump_simulated=args.sim_pump, baudrate=baudrate or 19200, address=address or 0,
                         duration_ms=duration_ms, existing=Existing.NEW_RUN if args.new_run else Existing.REFUSE)
    return scenario, options


def _confirm_long_real_run(options: Any, duration_ms: int, yes: bool) -> None:
    """A run of more than an hour against a real pump needs ``--yes`` or a "y" at a terminal."""
    from cython_ext.errors import ConfigError

    if options.pump_url is None or options.pump_simulated or duration_ms <= CONFIRM_ABOVE_MS or yes:
        return
    hours = duration_ms / 3_600_000
    if not sys.stdin.isatty():
        raise ConfigError("--yes", False, f"given to start a {hours:.1f} h run on the real pump at {options.pump_url} "
                                          "without a terminal to confirm it")
    answer = input(f"This run drives the real pump at {options.pump_url} for {hours:.1f} h of real time. "
                   "Start it? [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise ConfigError("confirmation", answer.strip(), "y to start the run")


def main(args: argparse.Namespace) -> int:
    """Handler of ``itb run``; returns the exit status."""
    from contextlib import ExitStack

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from hil.cli import ExitStatus
    from hil.output import dump
    from hil.report import write_report
    from hil.scenario import ScenarioRunner, shipped_scenarios

    console = Console(stderr=args.json)
    if args.list:
        for name in sorted([*shipped_scenarios(), *BUILT_IN_RUNS]):
            console.print(name)
        return int(ExitStatus.OK)
    if args.scenario in BUILT_IN_RUNS:
        return int(importlib.import_module(BUILT_IN_RUNS[args.scenario]).main(args))
    scenario, options = _options(args)
    runner = ScenarioRunner(scenario, options)
    _confirm_long_real_run(options, runner.duration_ms, args.yes)
    days_total = runner.duration_ms / 86_400_000
    real_time = options.pump_url is not None
    speed = options.speed or 1.0

    with ExitStack() as stack:
        columns: list[Any] = [TextColumn("[progress.description]{task.description}"), BarColumn(),
                              TextColumn("{task.completed:.2f}/{task.total:.2f} days"), TimeElapsedColumn()]
        columns.append(TextColumn("ends {task.fields[ends]}") if real_time else TimeRemainingColumn())
        progress = Progress(*columns, console=console, disable=args.no_progress or args.json, transient=False)
        task: list[Any] = []

        def on_ready(record: Any) -> None:
            resumed = f", resumed at {record.gaps[-1]['to_t_ms'] / 86_400_000:.2f} days" if record.gaps else ""
            where = record.link + (f" at {record.pump_url}" if options.pump_url else "")
            console.print(f"[bold]itb run[/bold] {scenario.settings.name} ({scenario.source}) on {where}{resumed}")
            stack.enter_context(progress)
            task.append(progress.add_task("therapy", total=days_total, ends="?"))

        def on_progress(elapsed_ms: int, duration_ms: int) -> None:
            if not task:
                return
            ends = datetime.now() + timedelta(seconds=max(0, duration_ms - elapsed_ms) / 1000 / speed)
            progress.update(task[0], completed=min(elapsed_ms, duration_ms) / 86_400_000,
                            ends=ends.strftime("%Y-%m-%d %H:%M"))

        options.on_ready = on_ready
        options.progress = on_progress
        record = runner.run()
        if task and not record.interrupted:
            progress.update(task[0], completed=days_total)

    page = write_report(record, options.report_dir)
    status = ExitStatus.INTERRUPTED if record.interrupted else ExitStatus.OK if record.passed else ExitStatus.CHECK_FAILED
    if args.json:
        dump(record.summary(), sys.stdout)
    else:
        _print_table(console, record, scenario.settings.name)
        console.print(f"report: {page}")
        verdict = "[yellow]INTERRUPTED[/yellow]" if record.interrupted else \
            "[green]PASSED[/green]" if record.passed else "[red]FAILED[/red]"
        console.print(verdict)
    return int(status)


def _print_table(console: Any, record: Any, name: str) -> None:
    """The closing table: time reached, doses, alarms, denials, checks."""
    from rich.table import Table

    from hil.report import gap_count_span

    summary = record.summary()
    table = Table(title=f"itb run: {name}", show_lines=False)
    table.add_column("item")
    table.add_column("value")
    reached = summary["reached_days"]
    planned = summary["duration_days"]
    span = f"{reached:.2f} days" if reached == planned else f"{reached:.2f} of {planned:.2f} days"
    table.add_row("scenario time", f"{span} in {record.wall_s:.1f} s wall")
    if record.simulation:
        table.add_row("simulated", "the pump (see the report for the simulator's settings)")
    for gap in record.gaps:
        table.add_row("controller down", f"{gap['from_t_ms'] / 86_400_000:.3f} to {gap['to_t_ms'] / 86_400_000:.3f} "
                      f"days; the pump counted {gap['delivered_nl'] / 1000:.1f} µL "
                      + gap_count_span(gap, lambda t_ms: f"{t_ms / 86_400_000:.3f} days"))
    tip_error = summary["dose_at_tip_error_pct"]
    table.add_row("dose at the catheter tip / prescribed" if record.delivered_at_tip_ug is not None
                  else "dose at the tip (controller's count) / prescribed",
                  f"{record.reached_tip_ug:.1f} / {record.prescribed_at_tip_ug or 0:.1f} µg"
                  + ("" if tip_error is None else f" ({tip_error:+.2f} %)"))
    for kind, ug in sorted(record.delivered_by_kind_ug.items()):
        table.add_row(f"  controller's count at the tip: {kind}", f"{ug:.1f} µg")
    table.add_row("reservoir drug moved / commanded",
                  f"{record.delivered_ug:.1f} / {record.prescribed_ug:.1f} µg"
                  + ("" if summary["dose_error_pct"] is None else f" ({summary['dose_error_pct']:+.2f} %)"))
    table.add_row("alarms raised", ", ".join(summary["alarms_raised"]) or "none")
    res = record.reservoir
    if res.get("refill_due_utc"):
        table.add_row("reservoir at end", f"{res['remaining_ml']} mL at {res['concentration_ug_per_ml']} µg/mL; "
                      f"low alarm in {res['days_to_low_alarm']} days; refill due {res['refill_due_utc'][:10]}")
    for d in record.decisions:
        if not d.allowed:
            table.add_row(f"denied: {d.action} {d.label}".rstrip(), ", ".join(d.reasons))
    checks = record.checks()
    failed = [c for c in checks if not c.passed]
    table.add_row("checks", f"{len(checks) - len(failed)} passed, {len(failed)} failed "
                  f"(implicit: {', '.join(c.name for c in record.implicit_checks)})")
    for c in failed:
        table.add_row("[red]FAILED[/red]", f"{c.name}: {c.detail}")
    for note in record.notes:
        table.add_row("note", note)
    if record.error:
        table.add_row("[red]ABORTED[/red]", record.error)
    console.print(table)
