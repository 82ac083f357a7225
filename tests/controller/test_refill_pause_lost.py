"""A program refused after its pause was applied with the reply lost leaves nothing changed (PER-01, SAFE-01, HAL-05).

Found by the clinical adversary (issue #9): a concentration-change refill's transit program lost the reply to
its pause, which had been applied; the change was refused (PUMP_NOT_VERIFIED) but the pump was left paused while
the loop believed it ran, and a titration after a restart brought it back above the dose before a stop the kernel
never saw. A program that is not read back and re-sent (a transit, a bolus) must, after a lost pause reply,
read the pump back and put the old programme back -- as a fresh one-phase program, never ``RUN`` of the held
program (it would start a bolus phase again). Judged on the pump mechanism's physical rate log.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.commands import CommandIssuer, ProgramResult
from controller.store import Store
from hal.pump import ProgramPhase, PumpProgram, PumpState
from sim.clock import VirtualClock
from tests.controller.adversary_world import WitnessedPump

OLD_NL_PER_H = 6_250
#: A transit-like program of two phases the pump must never start here.
NEW_PROGRAM = PumpProgram((ProgramPhase(20_000, 5_000), ProgramPhase(4_000)))
#: A bolus program: 50 µL/h for 10 µL, then the basal.
BOLUS_PROGRAM = PumpProgram((ProgramPhase(50_000, 10_000), ProgramPhase(OLD_NL_PER_H)))


@pytest.mark.parametrize("raises", [False, True], ids=["uncertain", "raised"])
@pytest.mark.parametrize("held", [PumpProgram((ProgramPhase(OLD_NL_PER_H),)), BOLUS_PROGRAM], ids=["basal", "bolus"])
def test_a_program_refused_after_an_applied_lost_pause_puts_the_old_basal_back(
        tmp_path: Path, held: PumpProgram, raises: bool) -> None:
    clock = VirtualClock()
    pump = WitnessedPump(clock)
    issuer = CommandIssuer(pump, Store(tmp_path / "s.sqlite", clock), on_storage_failure=pytest.fail)
    assert issuer.send_program(held, cause="programme_change", essential=False).committed
    assert pump.state is PumpState.INFUSING
    before = len(pump.rate_log)
    pump.faults.uncertain_next, pump.faults.apply_uncertain, pump.faults.raise_uncertain = True, True, raises
    outcome = issuer.send_program(NEW_PROGRAM, cause="concentration_change", essential=False)
    assert not pump.faults.uncertain_next  # the loss fell on the program's pause
    assert outcome.result is ProgramResult.KEPT_OLD and outcome.uncertain, outcome
    pump.witness()
    after = [rate for _, rate in pump.rate_log[before:]]
    # Stopped for the pause only, then the old basal: no phase of the refused program, no bolus phase again.
    assert after and after[-1] == OLD_NL_PER_H and set(after) <= {0, OLD_NL_PER_H}, pump.rate_log
    assert pump.state is PumpState.INFUSING and issuer.committed_rate_nl_per_h == OLD_NL_PER_H
    assert issuer.held_program is not None and issuer.held_program.phases == (ProgramPhase(OLD_NL_PER_H),)


@pytest.mark.parametrize("raises", [False, True], ids=["uncertain", "raised"])
def test_after_a_bolus_ended_and_a_titration_the_titrated_basal_is_put_back(tmp_path: Path, raises: bool) -> None:
    """TIT-01, the restart rule: the bolus program's last phase was raised by a plain rate change (a titration);
    a later refused program must put that rate back, not the last phase as first staged (found by the clinical
    adversary across restarts: the implant's basal came back and the next titration went up from the raised one)."""
    clock = VirtualClock()
    pump = WitnessedPump(clock)
    issuer = CommandIssuer(pump, Store(tmp_path / "s.sqlite", clock), on_storage_failure=pytest.fail)
    assert issuer.send_program(BOLUS_PROGRAM, cause="bolus", essential=False).committed
    clock.advance(3_600)  # 10 µL at 50 µL/h ends in 12 min: the pump runs the basal phase
    pump.witness()
    assert pump.rate_log[-1][1] == OLD_NL_PER_H and pump.read_phase() == 2
    raised = 7_500
    assert issuer.send_rate(raised, previous_nl_per_h=OLD_NL_PER_H, cause="titration", essential=False).committed
    assert pump.rate_log[-1][1] == raised
    before = len(pump.rate_log)
    pump.faults.uncertain_next, pump.faults.apply_uncertain, pump.faults.raise_uncertain = True, True, raises
    outcome = issuer.send_program(NEW_PROGRAM, cause="concentration_change", essential=False)
    assert outcome.result is ProgramResult.KEPT_OLD, outcome
    pump.witness()
    after = [rate for _, rate in pump.rate_log[before:]]
    assert after and after[-1] == raised and set(after) <= {0, raised}, pump.rate_log
    assert issuer.committed_rate_nl_per_h == raised
