"""``itb run``: run a therapy scenario against a simulated or real pump and write a report.

With no arguments it runs the built-in scenario on a simulated NE-1000 served
over a real pseudo-terminal, in virtual time, and writes ``./itb-report/``.
``--pump URL`` runs the same scenario against a real pump in real time.
The exit status is 0 only if every expectation and safety invariant held.
"""

from __future__ import annotations

import argparse
from pathlib import Path

#: Default report directory.
DEFAULT_REPORT_DIR = "itb-report"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``itb run`` to the CLI."""
    parser = subparsers.add_parser(
        "run",
        help="run a therapy scenario (default: the built-in one, simulated pump over a pty, virtual time)",
        description=(
            "Run a therapy scenario: timed clinical actions and faults against a pump, checking "
            "expectations and safety invariants, then write a report (report.html, PNG plots, "
            "summary.json, serial trace). Exit status 1 if any check fails."
        ),
    )
    parser.add_argument("scenario", nargs="?", default=None,
                        help="scenario file (TOML) or the name of a shipped one (default: 'default')")
    parser.add_argument("--pump", metavar="URL", default=None,
                        help="serial URL of a real pump (runs in real time; --speed must be 1)")
    parser.add_argument("--balance", metavar="URL", default=None,
                        help="serial URL of a real balance, for a scenario's [accuracy] step on a real rig (with --pump)")
    parser.add_argument("--speed", type=float, default=None,
                        help="virtual seconds per wall second for the simulated pump (default: as fast as possible)")
    parser.add_argument("--link", choices=("pty", "inprocess", "tcp"), default="pty",
                        help="how the simulated pump is served (default: pty)")
    parser.add_argument("--report", metavar="DIR", default=DEFAULT_REPORT_DIR,
                        help=f"report directory (default: ./{DEFAULT_REPORT_DIR}/)")
    parser.add_argument("--safe-mode", metavar="SECONDS", type=int, default=None,
                        help="run the pump in Safe mode (CRC-framed, comms watchdog of SECONDS, 1-255)")
    parser.add_argument("--days", type=float, default=None,
                        help="override the scenario's duration, days")
    parser.add_argument("--list", action="store_true", help="list the shipped scenarios and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (CI logs)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Handler of ``itb run``; returns the exit status."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from cython_ext.errors import ConfigError
    from hil.report import write_report
    from hil.scenario import DEFAULT_SCENARIO, RunOptions, ScenarioRunner, load_scenario, shipped_scenarios

    console = Console()
    if args.list:
        for name in shipped_scenarios():
            console.print(name)
        return 0
    scenario = load_scenario(args.scenario or DEFAULT_SCENARIO)
    if args.days is not None:
        if not args.days > 0:
            raise ConfigError("--days", args.days, "> 0")
        scenario = scenario.with_duration(int(args.days * 86_400_000))
    report_dir = Path(args.report)
    where = f"real pump at {args.pump}" if args.pump else f"simulated NE-1000 over {args.link}"
    console.print(f"[bold]itb run[/bold] {scenario.settings.name} ({scenario.source}) on {where}")
    days_total = scenario.settings.duration_ms / 86_400_000

    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  TextColumn("{task.completed:.1f}/{task.total:.1f} days"), TimeElapsedColumn(),
                  console=console, disable=args.no_progress, transient=False) as progress:
        task = progress.add_task("therapy", total=days_total)

        def on_progress(elapsed_ms: int, duration_ms: int) -> None:
            progress.update(task, completed=min(elapsed_ms, duration_ms) / 86_400_000)

        options = RunOptions(link=args.link, pump_url=args.pump, speed=args.speed, report_dir=report_dir,
                             progress=on_progress, safe_mode_timeout_s=args.safe_mode,
                             balance_url=args.balance)
        record = ScenarioRunner(scenario, options).run()
        progress.update(task, completed=days_total)

    page = write_report(record, report_dir)
    summary = record.summary()
    table = Table(title=f"itb run: {scenario.settings.name}", show_lines=False)
    table.add_column("item")
    table.add_column("value")
    table.add_row("virtual time", f"{days_total:.1f} days in {record.wall_s:.1f} s wall")
    table.add_row("dose delivered / prescribed",
                  f"{record.delivered_ug:.1f} / {record.prescribed_ug:.1f} µg"
                  + ("" if summary["dose_error_pct"] is None else f" ({summary['dose_error_pct']:+.2f} %)"))
    for kind, ug in sorted(record.delivered_by_kind_ug.items()):
        table.add_row(f"  at the catheter tip: {kind}", f"{ug:.1f} µg")
    table.add_row("alarms raised", ", ".join(summary["alarms_raised"]) or "none")
    res = record.reservoir
    if res.get("refill_due_utc"):
        table.add_row("reservoir at end", f"{res['remaining_ml']} mL at {res['concentration_ug_per_ml']} µg/mL; "
                      f"low alarm in {res['days_to_low_alarm']} days; refill due {res['refill_due_utc'][:10]}")
    for d in record.decisions:
        if not d.allowed:
            table.add_row(f"denied: {d.action} {d.label}".rstrip(), ", ".join(d.reasons))
    failed = [c for c in (*record.invariants, *record.expectations) if not c.passed]
    passed = len(record.invariants) + len(record.expectations) - len(failed)
    table.add_row("checks", f"{passed} passed, {len(failed)} failed")
    for c in failed:
        table.add_row("[red]FAILED[/red]", f"{c.name}: {c.detail}")
    if record.error:
        table.add_row("[red]ABORTED[/red]", record.error)
    console.print(table)
    console.print(f"report: {page}")
    console.print("[green]PASSED[/green]" if record.passed else "[red]FAILED[/red]")
    return 0 if record.passed else 1
