"""Every therapy-changing command the loop sends is journalled: pending before, outcome after (issue #4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.journal import JournalError
from controller.loop import Mode
from controller.store import Store
from hal.pump import PumpState
from sim.clock import VirtualClock
from sim.fake_pump import FakePump
from tests.controller.conftest import MS_PER_DAY, MS_PER_H, MS_PER_MIN, build_rig
from tests.e2e.test_command_journal import _pending_kinds


@pytest.fixture
def journalled(tmp_path: Path) -> Any:
    """A controller on a store file, one day after implant; :func:`_commands` sees what it sends from now on."""
    clock = VirtualClock()
    store = Store(tmp_path / "journal.sqlite", clock)
    rig = build_rig(clock, FakePump(clock), store)
    assert rig.therapy.implant(500, 20_000_000, dose_ng_per_day=100_000).allowed
    rig.advance(MS_PER_DAY)
    rig.journal = store
    rig.before = {r.command_id for r in store.unresolved_commands()} | {
        e.command_id for e in store.entries() if e.kind == "command"}
    yield rig
    store.close()


def _commands(rig: Any) -> list[Any]:
    """The commands journalled since the fixture's day of therapy, in order (durable pending records)."""
    ids = [e.command_id for e in rig.journal.entries() if e.kind == "command" and e.action == "pending"
           and e.command_id not in rig.before]
    return [rig.journal.command(i) for i in ids]


class _PendingCheck:
    """Wraps pump methods: when a delivery command is called, its pending record must already be durable.

    The journal file is read through a connection of its own, so only committed entries count.
    """

    def __init__(self, rig: Any, method: str, kind: str) -> None:
        self.rig, self.kind, self.misses = rig, kind, 0
        self.calls = 0
        self._original = getattr(rig.pump, method)
        setattr(rig.pump, method, self)

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        if self.kind not in _pending_kinds(self.rig.journal.path):
            self.misses += 1
        return self._original(*args)


def test_routine_rate_change_is_pending_before_it_is_sent_and_applied_after(journalled) -> None:
    check = _PendingCheck(journalled, "set_rate", "set_rate")
    result = journalled.therapy.titrate(110_000)
    assert result.allowed
    assert check.calls >= 1 and check.misses == 0
    (record,) = _commands(journalled)
    assert record.kind == "set_rate" and record.status == "applied"
    assert record.params == {"rate_nl_per_h": 9166, "previous_nl_per_h": 8333, "cause": "basal_change"}
    assert record.detail["result"] == "committed" and record.detail["rate_nl_per_h"] == 9166


def test_fault_stop_and_resume_are_journalled(journalled) -> None:
    check = _PendingCheck(journalled, "stop", "stop")
    journalled.pump.inject_stall()
    journalled.advance(MS_PER_H)
    assert journalled.loop.mode is Mode.STOPPED_FAULT and check.calls == 1 and check.misses == 0
    assert journalled.therapy.acknowledge_alarms().allowed
    kinds = [(r.kind, r.params.get("cause"), r.status) for r in _commands(journalled)]
    assert kinds == [("stop", "fault_motor_stall", "applied"), ("set_rate", "resume_after_fault", "applied")]


def test_minimum_rate_entry_is_journalled(journalled) -> None:
    journalled.pump.power_cycle()
    journalled.advance(MS_PER_H)
    assert journalled.loop.mode is Mode.MINIMUM_RATE
    causes = [(r.params.get("cause"), r.status) for r in _commands(journalled)]
    assert ("minimum_rate", "applied") in causes
    assert not journalled.journal.unresolved_commands()


def test_discontinue_stop_is_journalled(journalled) -> None:
    result = journalled.therapy.discontinue(authorised_by="Dr Test", emergency=True)
    assert result.allowed
    stops = [r for r in _commands(journalled) if r.kind == "stop"]
    assert [(r.params["cause"], r.status) for r in stops] == [("discontinue", "applied")]


def test_unknown_outcome_is_uncertain_then_resolved_by_the_next_verified_rate(journalled) -> None:
    pump = journalled.pump
    original = pump.set_rate

    def lose_reply_and_link(rate: int) -> Any:
        pump.set_rate = original
        pump.faults.uncertain_next = True
        try:
            return original(rate)
        finally:
            pump.faults.comms_down = True  # nothing more can be read: the outcome stays unknown

    pump.set_rate = lose_reply_and_link
    journalled.therapy.titrate(110_000)
    (record,) = _commands(journalled)
    assert record.status == "uncertain" and record.detail["result"] == "unknown"
    pump.faults.comms_down = False
    journalled.advance(MS_PER_H)  # the poll reads the pump again and re-establishes a verified rate
    records = _commands(journalled)
    first = journalled.journal.command(record.command_id)
    assert first.status in ("applied", "not_applied") and "superseded" in first.detail["detail"]
    assert records[1].params["cause"].startswith("restore"), [(r.params, r.status, r.detail) for r in records]
    assert records[1].status == "applied"
    assert not journalled.journal.unresolved_commands()


def test_requested_change_is_withheld_without_a_durable_record_but_fault_reactions_are_sent(journalled) -> None:
    def disk_gone(*_args: Any, **_kwargs: Any) -> Any:
        raise JournalError("disk full")

    journalled.journal.begin_command = disk_gone
    sent = len(journalled.pump.command_log)
    result = journalled.therapy.titrate(110_000)
    assert not result.allowed and "no durable journal record" in result.detail
    assert len(journalled.pump.command_log) == sent and journalled.pump.rate_nl_per_h == 8333
    assert "journal_write_failure" in journalled.log.raised()
    journalled.pump.power_cycle()  # a fault reaction is not withheld: withdrawal is the worse harm
    journalled.advance(MS_PER_H)
    assert journalled.loop.mode is Mode.MINIMUM_RATE and journalled.pump.rate_nl_per_h == 2000
    assert journalled.pump.state is PumpState.INFUSING


def test_restart_resolves_a_rate_command_the_crashed_instance_left_pending(journalled) -> None:
    journal = journalled.journal
    journal.begin_command("crashed-1", "set_rate", {"rate_nl_per_h": 9166, "previous_nl_per_h": 8333,
                                                    "cause": "basal_change"})
    journalled.advance(10 * MS_PER_MIN)
    journalled.controller.detach()
    again = build_rig(journalled.clock, journalled.pump, journalled.store)
    again.controller.recover()
    record = journal.command("crashed-1")
    assert record.status == "not_applied" and "superseded" in record.detail["detail"]
    assert journalled.pump.rate_nl_per_h == 8333 and not journal.unresolved_commands()
