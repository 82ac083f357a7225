"""Every therapy-changing command on the wire is in the journal, pending before it is sent, resolved after.

The scenario runs over the in-process link; a traffic tap sees each host
command as the simulated pump receives it and, at that moment, reads the
journal through a separate SQLite connection (so only committed, durable
entries count) to find the pending record that covers it.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import hil.scenario.runner
import sim.rig
from controller.journal import Journal
from hil.scenario import RunOptions, ScenarioRunner, load_scenario
from sim.clock import VirtualClock

#: A Basic-mode NE-1000 command: address, command, argument.
_COMMAND_RE = re.compile(rb"^\s*(\d{0,2})([A-Z]{3})(.*?)\s*$")


def _pending_kinds(db_path: Path) -> list[str]:
    """Kinds of the commands the durable journal holds as pending (no completion yet)."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT command_id, action, new_json FROM entries WHERE kind='command' ORDER BY seq").fetchall()
    finally:
        db.close()
    kinds: dict[str, str] = {}
    for command_id, action, new_json in rows:
        if action == "pending":
            kinds[command_id] = json.loads(new_json)["kind"]
        else:
            kinds.pop(command_id, None)
    return list(kinds.values())


class WireJournalTap:
    """Checks each therapy-changing command against the journal as the pump receives it."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.seen: list[tuple[str, str]] = []
        self.uncovered: list[str] = []

    def __call__(self, direction: str, data: bytes) -> None:
        if direction != "RX":
            return
        match = _COMMAND_RE.match(data.replace(b"\r", b""))
        if match is None:
            return
        command, argument = match.group(2).decode(), match.group(3).decode()
        # A program (pause, phase writes, RUN n) is covered by its own pending record.
        needed = {"RAT": ("set_rate", "program"), "RUN": ("set_rate", "program"), "STP": ("stop", "program")}.get(command)
        if needed is None or (command == "RAT" and not argument):
            return  # a query, or a setting made while the rig is configured (before any therapy)
        if not self.db_path.exists():
            self.uncovered.append(f"{command}{argument} before the journal existed")
            return
        kinds = _pending_kinds(self.db_path)
        self.seen.append((command + argument, next((k for k in needed if k in kinds), needed[0])))
        if not set(needed) & set(kinds):
            self.uncovered.append(f"{command}{argument}: pending {kinds}")


@pytest.mark.parametrize("name, days", [("default", 21), ("faults", 12)])
def test_every_therapy_command_is_journalled_with_its_outcome(name: str, days: int, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    db_path = tmp_path / "journal.sqlite"
    tap = WireJournalTap(db_path)
    original = sim.rig.simulated_pump

    def tapped(*args: Any, **kwargs: Any) -> Any:
        return original(*args, on_traffic=tap, **kwargs)

    monkeypatch.setattr(hil.scenario.runner, "simulated_pump", tapped)
    scenario = load_scenario(name).with_duration(days * 86_400_000)
    record = ScenarioRunner(scenario, RunOptions(link="inprocess", report_dir=tmp_path)).run()
    assert not record.error, record.error
    assert record.passed, [c.name for c in (*record.invariants, *record.expectations) if not c.passed]
    assert not tap.uncovered, tap.uncovered
    assert {kind for _, kind in tap.seen} == {"set_rate", "stop", "program"}  # every kind really crossed the wire

    with contextlib.closing(Journal(db_path, VirtualClock())) as journal:
        unresolved = journal.unresolved_commands()
        rows = [e for e in journal.entries() if e.command_id is not None]
    running = [c for c in unresolved if c.kind.startswith("bolus")]  # a bolus still running at the end
    assert [c.kind for c in unresolved if c not in running] == [], unresolved
    pending = {e.command_id: e.new["kind"] for e in rows if e.action == "pending"}
    completed = [e for e in rows if e.action == "completed"]
    assert all(e.outcome in ("applied", "not_applied", "uncertain") for e in completed)
    for entry in completed:
        if pending.get(entry.command_id) in ("set_rate", "program"):
            assert "result" in entry.new or "superseded" in entry.new["detail"]
