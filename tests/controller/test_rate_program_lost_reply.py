"""A plain rate change sent as a fresh one-phase program, its pause's reply lost (HAL-05, SAFE-01).

When the pump may be in an earlier phase of a program the controller does not know (after a restart, after a
lost stage), a rate change goes as a fresh one-phase continuous program: pause, stage, RUN. Its pause may lose
its reply, and a pause applied with its reply lost leaves the pump standing still. A rate set with ``set_rate``
is read back and sent once more after a lost reply; the one-phase program was given up as unknown instead, the
pump left paused (found by the clinical adversary across restarts, seed 7: a clinician's acknowledgement after
a power cycle resumed nothing, mode STOPPED_FAULT with the pump paused). A continuous rate is idempotent: read
back, it is sent once more when none of it can be running. Judged on the fake pump's own state and command log.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.commands import CommandIssuer
from controller.store import Store
from hal.pump import ProgramPhase, PumpProgram, PumpState
from sim.clock import VirtualClock
from sim.fake_pump import FakePump
from tests.controller.conftest import programs_sent

#: What the pump runs, unknown to the issuer: 8.3 µL/h for 0.1 mL, then 2 µL/h.
UNKNOWN_PROGRAM = PumpProgram((ProgramPhase(8_333, 100_000), ProgramPhase(2_000)))


@pytest.mark.parametrize("raises", [False, True], ids=["uncertain", "raised"])
@pytest.mark.parametrize("applied", [False, True], ids=["not_applied", "applied"])
def test_a_rate_sent_as_a_one_phase_program_is_read_back_and_sent_once_more_after_a_lost_pause_reply(
        tmp_path: Path, applied: bool, raises: bool) -> None:
    clock = VirtualClock()
    pump = FakePump(clock)
    assert pump.stage_program(UNKNOWN_PROGRAM).applied and pump.commit_program().applied
    issuer = CommandIssuer(pump, Store(tmp_path / "s.sqlite", clock), on_storage_failure=pytest.fail)
    assert issuer.held_program is None and pump.state is PumpState.INFUSING
    runs = programs_sent(pump)
    pump.faults.uncertain_next, pump.faults.apply_uncertain, pump.faults.raise_uncertain = True, applied, raises
    outcome = issuer.send_rate(16_666, previous_nl_per_h=None, cause="resume_after_fault", essential=True)
    assert not pump.faults.uncertain_next  # the loss fell on the program's pause
    assert outcome.committed and outcome.uncertain, outcome
    assert pump.state is PumpState.INFUSING and pump.rate_nl_per_h == 16_666
    assert pump.read_program(1, 8).phases == (ProgramPhase(16_666),)
    assert programs_sent(pump) == runs + 1 and issuer.committed_rate_nl_per_h == 16_666
