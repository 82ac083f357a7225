"""A rate change is verified only as what the pump will do with no further command (issue #10, #9 finding).

On a pump that holds programs, ``set_rate`` changes the running phase only; when that phase ends by
its volume the program's next phase takes over. The oracle is the fake pump's mechanism: the rate it
runs once every earlier phase of what it holds has ended, with no further command.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.commands import CommandIssuer
from controller.store import Store
from hal.pump import ProgramPhase, PumpProgram
from sim.clock import VirtualClock
from sim.fake_pump import FakePump

BASAL = 8_333
BOLUS_PHASE = PumpProgram((ProgramPhase(208_333, 104_166), ProgramPhase(BASAL)))  # 30 min of bolus, then basal


def _issuer(tmp_path: Path) -> tuple[VirtualClock, FakePump, CommandIssuer]:
    clock = VirtualClock()
    pump = FakePump(clock)
    issuer = CommandIssuer(pump, Store(tmp_path / "s.sqlite", clock), on_storage_failure=lambda _d: None)
    return clock, pump, issuer


def _alone_for_a_day(clock: VirtualClock, pump: FakePump) -> int:
    """The rate the mechanism runs after a day with no command, nL/h."""
    clock.advance(86_400)
    pump.read_status()
    return pump.rate_nl_per_h


@pytest.mark.parametrize("fresh", [False, True], ids=["same issuer", "fresh issuer (restart)"])
def test_in_a_bolus_phase_a_new_rate_is_a_fresh_program(tmp_path: Path, fresh: bool) -> None:
    clock, pump, issuer = _issuer(tmp_path)
    assert issuer.send_program(BOLUS_PHASE, cause="bolus", essential=True).committed
    clock.advance(60)
    if fresh:
        issuer = CommandIssuer(pump, issuer.store, on_storage_failure=lambda _d: None)
    sent = len(pump.command_log)
    assert issuer.send_rate(10_000, previous_nl_per_h=None, cause="titrate", essential=True).committed
    assert [c[0] for c in pump.command_log[sent:]] == ["pause", "program"]
    assert _alone_for_a_day(clock, pump) == 10_000


def test_in_the_last_phase_a_new_rate_is_a_plain_rate(tmp_path: Path) -> None:
    clock, pump, issuer = _issuer(tmp_path)
    assert issuer.send_program(BOLUS_PHASE, cause="bolus", essential=True).committed
    clock.advance(3600)  # the pump has ended the bolus phase by itself
    sent = len(pump.command_log)
    assert issuer.send_rate(10_000, previous_nl_per_h=None, cause="titrate", essential=True).committed
    assert [c[0] for c in pump.command_log[sent:]] == ["set_rate"]
    assert _alone_for_a_day(clock, pump) == 10_000


def test_when_every_later_phase_is_the_new_rate_a_plain_rate_is_whole(tmp_path: Path) -> None:
    """A transit's end read from the counter a little early: phase 2 already holds the new rate."""
    clock, pump, issuer = _issuer(tmp_path)
    transit = PumpProgram((ProgramPhase(4_000, 250_000), ProgramPhase(BASAL)))
    assert issuer.send_program(transit, cause="transit", essential=True).committed
    clock.advance(3600)
    sent = len(pump.command_log)
    assert issuer.send_rate(BASAL, previous_nl_per_h=None, cause="transit over", essential=True).committed
    assert [c[0] for c in pump.command_log[sent:]] == ["set_rate"]
    assert _alone_for_a_day(clock, pump) == BASAL


def test_a_lost_reply_to_the_pause_keeps_what_is_held_known(tmp_path: Path) -> None:
    """The finding: the pause that would end the bolus program is lost (not applied); the next rate must
    still replace the program, not just its running phase."""
    clock, pump, issuer = _issuer(tmp_path)
    assert issuer.send_program(BOLUS_PHASE, cause="bolus", essential=True).committed
    clock.advance(60)
    pump.faults.uncertain_next, pump.faults.apply_uncertain = True, False
    lost = issuer.send_program(PumpProgram((ProgramPhase(BASAL),)), cause="bolus end", essential=True)
    assert not lost.committed
    assert issuer.send_rate(10_000, previous_nl_per_h=None, cause="titrate", essential=True).committed
    assert _alone_for_a_day(clock, pump) == 10_000


def test_a_plain_rate_refused_in_the_last_phase_puts_back_the_basal_not_the_bolus_rate(tmp_path: Path) -> None:
    """The plain-rate sibling of fuzz seed 1666757: in a bolus program's last phase the committed rate is still
    phase 1's (the bolus rate); a read-back that differs must put back the phase the pump runs, the basal."""
    clock, pump, issuer = _issuer(tmp_path)
    assert issuer.send_program(BOLUS_PHASE, cause="bolus", essential=True).committed
    assert issuer.committed_rate_nl_per_h == BOLUS_PHASE.phases[0].rate_nl_per_h
    clock.advance(3600)  # the pump has ended the bolus phase by itself
    pump.faults.mismatch_next_nl_per_h = 7
    outcome = issuer.send_rate(10_000, previous_nl_per_h=issuer.committed_rate_nl_per_h, cause="titrate",
                               essential=True)
    assert not outcome.committed and outcome.rate_nl_per_h == BASAL
    assert _alone_for_a_day(clock, pump) == BASAL
