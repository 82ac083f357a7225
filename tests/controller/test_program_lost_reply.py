"""A lost reply while the pump takes a program (HAL-05, SAFE-01; issue #9).

A plain rate whose reply is lost is read back and sent once more. A program that puts the
programme's basal back (a resume) is read back the same way: sent once more only when none
of it can be running, never ``RUN`` twice over a pump read back delivering, and a bolus never
again. Judged on the fake pump's own state and command log.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.commands import CommandIssuer, ProgramResult
from controller.store import Store
from hal.pump import ProgramPhase, PumpProgram, PumpState
from sim.clock import VirtualClock
from sim.fake_pump import FakePump
from tests.controller.conftest import programs_sent

#: A transit program: the old drug's volume rate for 0.1 mL, then the new drug's rate, nL/h and nL.
TRANSIT = PumpProgram((ProgramPhase(8_333, 100_000), ProgramPhase(33_333)))


def _stopped(tmp_path: Path) -> tuple[FakePump, CommandIssuer]:
    clock = VirtualClock()
    pump = FakePump(clock)
    issuer = CommandIssuer(pump, Store(tmp_path / "s.sqlite", clock), on_storage_failure=pytest.fail)
    assert pump.state is PumpState.STOPPED
    return pump, issuer


@pytest.mark.parametrize("raises", [False, True], ids=["uncertain", "raised"])
@pytest.mark.parametrize("applied", [False, True], ids=["not_applied", "applied"])
def test_a_lost_reply_to_the_pause_of_a_resume_is_read_back_and_sent_once_more(tmp_path: Path, applied: bool,
                                                                               raises: bool) -> None:
    pump, issuer = _stopped(tmp_path)
    pump.faults.uncertain_next, pump.faults.apply_uncertain, pump.faults.raise_uncertain = True, applied, raises
    outcome = issuer.send_program(TRANSIT, cause="resume", essential=True, resend_after_read=True)
    assert outcome.committed and outcome.uncertain, outcome
    assert pump.state is PumpState.INFUSING and pump.rate_nl_per_h == 8_333
    assert programs_sent(pump) == 1


def test_without_the_resend_a_lost_pause_reply_is_left_unknown(tmp_path: Path) -> None:
    """A bolus (or any program not marked as a resume) is never sent again after a lost reply."""
    pump, issuer = _stopped(tmp_path)
    pump.faults.uncertain_next = True
    outcome = issuer.send_program(TRANSIT, cause="bolus", essential=False)
    assert outcome.result is ProgramResult.UNKNOWN
    assert programs_sent(pump) == 0 and pump.state is PumpState.STOPPED


@pytest.mark.parametrize("applied", [False, True], ids=["not_applied", "applied"])
def test_a_lost_reply_to_run_is_sent_again_only_when_the_pump_is_read_back_stopped(tmp_path: Path,
                                                                                   applied: bool) -> None:
    pump, issuer = _stopped(tmp_path)
    pause = pump.pause

    def pause_then_lose_the_next_reply():  # the loss falls on the first RUN, not on the pause
        pump.pause = pause  # type: ignore[method-assign]
        result = pause()
        pump.faults.uncertain_next, pump.faults.apply_uncertain = True, applied
        return result

    pump.pause = pause_then_lose_the_next_reply  # type: ignore[method-assign]
    outcome = issuer.send_program(TRANSIT, cause="resume", essential=True, resend_after_read=True)
    assert outcome.committed and outcome.uncertain, outcome
    assert pump.state is PumpState.INFUSING and pump.rate_nl_per_h == 8_333
    assert programs_sent(pump) == 1  # applied: read back infusing, never run again; not applied: run once more
