"""``itb bench run``: how fast the default scenario runs in virtual time.

Runs the built-in scenario, extended to 180 days (one patient: implant,
titration, boluses, refill, stall, then months of maintenance until the
reservoir runs low and empty), on the simulated NE-1000 in virtual time,
once in-process and once over a real pty, and reports wall time and the
virtual-to-wall ratio of each. ``--quick`` runs 30 days instead.

Targets (issue #4): 180 days under 5 s wall in-process and under 30 s over a pty.
The run writes its journal, checkpoint and serial trace to a temporary
directory (durable writes included), but no report.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

MS_PER_DAY = 86_400_000
FULL_DAYS = 180
QUICK_DAYS = 30
TARGET_WALL_S = {"inprocess": 5.0, "pty": 30.0}


def measure(link: str, days: int) -> dict[str, Any]:
    """Run the default scenario for ``days`` over ``link``; return its figures."""
    from hil.scenario import DEFAULT_SCENARIO, RunOptions, ScenarioRunner, load_scenario

    scenario = load_scenario(DEFAULT_SCENARIO).with_duration(days * MS_PER_DAY)
    with tempfile.TemporaryDirectory(prefix="itb-bench-run-") as work:
        record = ScenarioRunner(scenario, RunOptions(link=link, report_dir=Path(work))).run()
    virtual_s = scenario.settings.duration_ms / 1000
    projected_s = record.wall_s * FULL_DAYS / days
    return {
        "days": days,
        "wall_s": round(record.wall_s, 3),
        "virtual_to_wall_ratio": round(virtual_s / record.wall_s) if record.wall_s > 0 else None,
        "polls": len(record.samples),
        "wall_ms_per_poll": round(1000 * record.wall_s / max(1, len(record.samples)), 3),
        "target_wall_s_for_180_days": TARGET_WALL_S[link],
        "projected_wall_s_for_180_days": round(projected_s, 2),
        "within_target": projected_s <= TARGET_WALL_S[link],
        "invariants_checked": len(record.invariants),
        "invariants_held": bool(record.invariants) and all(i.passed for i in record.invariants),
        "invariants_failed": [i.name for i in record.invariants if not i.passed],
        "error": record.error,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Benchmark entry point (``itb bench run [--quick] [--json]``): the figures of each link under its name."""
    from controller.gate import kernel_implementation

    days = QUICK_DAYS if getattr(args, "quick", False) else FULL_DAYS
    figures: dict[str, Any] = {"kernel": kernel_implementation(), "poll_interval": "from the scenario"}
    for link in ("inprocess", "pty"):
        figures[link] = measure(link, days)
    return figures
