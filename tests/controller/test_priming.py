"""A priming cut short by a fault is alarmed, leaves the implant incomplete, and can be primed again (BOL-06, issue #9).

The oracle is physical: the fake pump's pushed volume (``actual_delivered_nl``) through
:class:`sim.catheter.PhysicalCatheter`, which starts full of saline, as an implanted catheter does.
Drug at the tip is what that catheter lets out, never the controller's own catheter model.
"""

from __future__ import annotations

from typing import Any

import pytest

from controller.alarms import ALARM_TABLE, AlarmCode, Priority
from controller.loop import Mode
from controller.therapy import CLINICIAN
from tests.controller.conftest import MS_PER_DAY, MS_PER_H, MS_PER_MIN, Rig
from tests.controller.test_transit import TipOracle

DOSE_UG_PER_DAY = 100  # at 500 µg/mL: 8.3 µL/h, 30 h to push the 0.25 mL catheter's saline out alone
STEP_MS = 30 * MS_PER_MIN
#: Drug the prescription puts at the tip in one step, pg.
STEP_PG = DOSE_UG_PER_DAY * 1_000_000 * STEP_MS // MS_PER_DAY


def _implanted(make_rig: Any) -> tuple[Rig, TipOracle]:
    rig = make_rig(concentration=500, dose_ug_per_day=DOSE_UG_PER_DAY, dead_volume_ml="0.25")
    oracle = TipOracle(rig, rig.prescription.pump.dead_volume_nl)  # saline in the line
    oracle.fill(500)
    result = rig.therapy.implant(500, 20_000_000, dose_ng_per_day=DOSE_UG_PER_DAY * 1000)  # 30 min priming bolus
    assert result.allowed and "priming started" in result.detail, result
    return rig, oracle


def _stall(rig: Rig) -> None:
    rig.pump.inject_stall()
    rig.advance(STEP_MS)
    assert rig.loop.mode is Mode.STOPPED_FAULT
    rig.therapy.acknowledge_alarms()  # and resume


def _power_cycle(rig: Rig) -> None:
    rig.pump.power_cycle()
    rig.advance(STEP_MS)
    assert rig.loop.mode is Mode.MINIMUM_RATE
    rig.therapy.acknowledge_alarms()  # and resume


def _stop_behind_a_link_loss(rig: Rig) -> None:
    rig.pump.faults.comms_down = True
    rig.advance(5 * MS_PER_MIN)
    rig.pump.faults.comms_down = False
    rig.pump.stop()  # the pump stops while no one can see it (the link is down again at once)
    rig.pump.faults.comms_down = True
    rig.advance(5 * MS_PER_MIN)
    rig.pump.faults.comms_down = False
    rig.advance(STEP_MS)  # found stopped: resumed by itself (UNEXPLAINED_STOP)
    rig.therapy.acknowledge_alarms()


def _power_cycle_and_restart(rig: Rig) -> Rig:
    rig.pump.power_cycle()
    rig2 = rig.restart()  # the controller crashed too: the restart closes the priming from the counter
    rig2.advance(STEP_MS)
    rig2.therapy.acknowledge_alarms()
    return rig2


FAULTS = [_stall, _power_cycle, _stop_behind_a_link_loss, _power_cycle_and_restart]


def _settle(rig: Rig, oracle: TipOracle) -> None:
    """Run until delivery is confirmed and the fault's own alarms have cleared."""
    for _ in range(2):
        oracle.step(STEP_MS)
    assert rig.loop.mode is Mode.RUNNING
    held = {a.code for a in rig.alarms.active() if a.priority is Priority.HIGH}
    assert held <= {AlarmCode.CATHETER_NOT_PRIMED, AlarmCode.WITHDRAWAL_RISK}, held


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__.strip("_"))
def test_a_priming_cut_short_raises_a_high_priority_alarm_and_the_implant_is_not_complete(
        make_rig: Any, fault: Any) -> None:
    """BOL-06 and issue #9 (a priming that did not fill the catheter is no complete implant), ALM-01 (priority).

    Ten minutes into the 30 min priming bolus a fault cuts it short: the line still holds saline, so the tip
    gets no drug for most of a day. The alarm says so (high priority, naming the saline and the incomplete
    priming); the implant is not complete; a concentration change is refused (CATHETER_NOT_PRIMED).
    """
    rig, oracle = _implanted(make_rig)
    rig.advance(10 * MS_PER_MIN)
    rig = fault(rig) or rig
    oracle.rig = rig
    _settle(rig, oracle)
    assert ALARM_TABLE[AlarmCode.CATHETER_NOT_PRIMED].priority is Priority.HIGH
    raised = [e for e in rig.log.events if e["event"] == "raise" and e["code"] == "catheter_not_primed"]
    assert raised, rig.log.raised()
    assert "priming incomplete" in raised[0]["detail"] and "saline" in raised[0]["detail"], raised[0]
    assert rig.alarms.is_active(AlarmCode.CATHETER_NOT_PRIMED)
    assert not rig.therapy.implant_complete
    # Physics: the saline is still leaving the tip.
    assert oracle.step(STEP_MS) < STEP_PG // 10
    assert oracle.catheter.concentration_at_tip() == 0
    refill = rig.therapy.refill(removed_nl=0, added_nl=0, concentration_ug_per_ml=1000, lot="P1")
    assert not refill.allowed and "CATHETER_NOT_PRIMED" in refill.reasons, refill
    assert rig.loop.concentration_ug_per_ml == 500 and rig.loop.transit is None


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.__name__.strip("_"))
def test_a_re_prime_fills_the_rest_of_the_catheter_and_completes_the_implant(make_rig: Any, fault: Any) -> None:
    """BOL-06, issue #9: the clinician re-primes the remaining dead volume (authorised by the kernel like the
    first priming); then drug reaches the tip at the prescribed dose, the alarm's condition ends, the
    implant is complete and a concentration change is allowed again. Judged on the drug at the tip."""
    rig, oracle = _implanted(make_rig)
    rig.advance(10 * MS_PER_MIN)
    rig = fault(rig) or rig
    oracle.rig = rig
    _settle(rig, oracle)
    saline_nl = rig.loop.saline_in_catheter_nl
    assert saline_nl > 100_000, saline_nl  # most of the 0.25 mL: 10 min of a 30 min priming
    primed = rig.controller.act("prime", CLINICIAN)
    assert primed.allowed and primed.action == "prime", primed
    priming = [b for b in rig.store.boluses() if b.kind == "priming"][-1]
    assert priming.volume_nl == saline_nl
    for _ in range(2):  # the re-prime runs 30 min x the share of the dead volume left, then one more step
        oracle.step(STEP_MS)
    assert rig.loop.bolus is None
    assert oracle.catheter.concentration_at_tip() == 500  # drug at the tip
    for _ in range(12):  # six hours at the prescription, within 10 % every 30 min
        got = oracle.step(STEP_MS)
        assert abs(got - STEP_PG) * 10 <= STEP_PG, f"{got / 1e6:.3f} µg at the tip, {STEP_PG / 1e6:.3f} prescribed"
    assert rig.therapy.implant_complete
    assert not any(a.code is AlarmCode.CATHETER_NOT_PRIMED and a.condition_active for a in rig.alarms.active())
    rig.therapy.acknowledge_alarms()
    refill = rig.therapy.refill(removed_nl=rig.loop.reservoir_nl(), added_nl=20_000_000, concentration_ug_per_ml=1000,
                                lot="P2")
    assert refill.allowed and rig.loop.transit is not None, refill


def test_a_complete_priming_raises_no_alarm_and_leaves_nothing_to_prime(make_rig: Any) -> None:
    """BOL-06: the priming that ran its course leaves drug to the tip; a re-prime is refused (NOTHING_TO_PRIME)."""
    rig, oracle = _implanted(make_rig)
    for _ in range(4):
        oracle.step(STEP_MS)
    assert "catheter_not_primed" not in rig.log.raised()
    assert rig.therapy.implant_complete and rig.loop.saline_in_catheter_nl == 0
    assert oracle.catheter.concentration_at_tip() == 500
    again = rig.controller.act("prime", CLINICIAN)
    assert not again.allowed and again.reasons == ("NOTHING_TO_PRIME",), again
    assert sum(1 for b in rig.store.boluses() if b.kind == "priming") == 1


def test_a_re_prime_is_still_held_back_by_other_high_priority_alarms(make_rig: Any) -> None:
    """BOL-03: only the conditions the priming remedies (saline in the line, the deficit it causes) let it by."""
    rig, _oracle = _implanted(make_rig)
    rig.advance(10 * MS_PER_MIN)
    rig.pump.inject_stall()
    rig.advance(STEP_MS)
    rig.therapy.acknowledge_alarms()  # resumed; no poll has confirmed delivery yet: MOTOR_STALL still held
    assert rig.loop.mode is Mode.RUNNING and rig.alarms.is_active(AlarmCode.MOTOR_STALL)
    result = rig.controller.act("prime", CLINICIAN)
    assert not result.allowed and "HIGH_PRIORITY_ALARM" in result.reasons, result


def test_the_basal_pushing_the_saline_out_ends_the_condition(make_rig: Any) -> None:
    """Issue #9: without a re-prime the basal reaches the tip after the saline (about 20 h here): from then the
    implant is complete and the alarm's condition ends (a clinician still acknowledges it: it latched)."""
    rig, oracle = _implanted(make_rig)
    rig.advance(10 * MS_PER_MIN)
    _stall(rig)
    for _ in range(2 * MS_PER_DAY // STEP_MS):
        oracle.step(STEP_MS)
    assert oracle.catheter.concentration_at_tip() == 500
    assert rig.therapy.implant_complete
    held = [a for a in rig.alarms.active() if a.code is AlarmCode.CATHETER_NOT_PRIMED]
    assert not held or not held[0].condition_active
    clears = [e for e in rig.log.events if e["event"] == "clear" and e["code"] == "catheter_not_primed"]
    assert clears and "pushed the saline out" in clears[0]["detail"], clears


def test_the_paediatric_first_test_dose_of_25_ug_is_allowed_through_the_front_door() -> None:
    """itb-clinical §1.2 [CCN][JP-LBL], issue #9 ("the paediatric 25 µg first test dose is allowed"; the
    safety-requirements table has no screening ID): a child's screening starts at 25 µg, then 50 µg, and the
    implant through :mod:`controller.assembly`'s door starts at 2 x the effective dose."""
    from controller.patient import History, PatientRecord
    from controller.store import Store
    from sim.clock import VirtualClock
    from sim.fake_pump import FakePump
    from tests.controller.conftest import build_rig
    from tests.prescriptions import make_prescription

    clock = VirtualClock()
    rx = make_prescription(origin="paediatric", dose_ug_per_day=100)
    rig = build_rig(clock, FakePump(clock), Store(":memory:", clock), prescription=rx,
                    patient=PatientRecord(rx.patient.patient_id, rx.patient.origin, History.SCREENED))
    first = rig.controller.act("screening_dose", CLINICIAN, dose_ug=25, adequate=False, effect_ms=0)
    assert first.allowed, first
    rig.advance(MS_PER_DAY)
    second = rig.controller.act("screening_dose", CLINICIAN, dose_ug=50, adequate=True, effect_ms=4 * MS_PER_H)
    assert second.allowed, second
    rig.advance(MS_PER_DAY)
    implant = rig.controller.act("implant", CLINICIAN)
    assert implant.allowed and implant.values["dose_ug_per_day"] == 100, implant
