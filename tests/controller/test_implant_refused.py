"""A refused implant is alarmed: the patient receives no intrathecal therapy (issue #9).

A non-responder (no adequate response to 50, 75 or 100 µg, itb-clinical §1.2) or a dose above what the patient
record allows (2 x the effective test dose, §1.3; the documented dose of a replaced pump) is refused, and used to
be refused silently: the run went on with no drug and no alarm. Now IMPLANT_NOT_DONE (high priority, latching,
naming the withdrawal risk of a patient who was on intrathecal therapy) is raised and journalled with the refusal
(ALM-01, ALM-03, ALM-06), and an implant that then starts therapy clears its condition (its priming is not held
back by it). The oracle for "no therapy" is physical: the fake pump never pushed a nanolitre.
"""

from __future__ import annotations

from typing import Any

from controller.alarms import ALARM_TABLE, AlarmCode, Priority
from controller.loop import Mode
from controller.patient import History, PatientRecord
from controller.store import Store
from sim.clock import VirtualClock
from sim.fake_pump import FakePump
from tests.controller.conftest import MS_PER_DAY, MS_PER_H, build_rig
from tests.prescriptions import make_prescription


def _screened(dose_ug_per_day: int = 150) -> Any:
    clock = VirtualClock()
    rx = make_prescription(dose_ug_per_day=dose_ug_per_day)
    return build_rig(clock, FakePump(clock), Store(":memory:", clock), prescription=rx,
                     patient=PatientRecord(rx.patient.patient_id, rx.patient.origin, History.SCREENED))


def _journalled(rig: Any, code: AlarmCode) -> list[str]:
    """The journal's events of alarm ``code`` (raise, clear, acknowledge), oldest first."""
    return [event for event, value in rig.store.alarm_events() if value == code.value]


def test_a_non_responder_s_refused_implant_raises_implant_not_done() -> None:
    """§1.2, ALM-01, ALM-06: three inadequate test doses, then the implant: refused NOT_A_CANDIDATE, and a
    high-priority alarm says no intrathecal therapy is given, with the withdrawal risk; journalled; nothing moved."""
    rig = _screened()
    for dose in (50, 75, 100):
        assert rig.therapy.screening_dose(dose, adequate=False).allowed
        rig.advance(MS_PER_DAY)
    result = rig.therapy.implant(500, 10_000_000)
    assert not result.allowed and "NOT_A_CANDIDATE" in result.reasons, result
    held = [a for a in rig.alarms.active() if a.code is AlarmCode.IMPLANT_NOT_DONE]
    assert held and held[0].priority is Priority.HIGH and held[0].condition_active
    assert "no intrathecal therapy" in held[0].detail and "NOT_A_CANDIDATE" in held[0].detail
    assert "WITHDRAWAL" in ALARM_TABLE[AlarmCode.IMPLANT_NOT_DONE].message
    assert "implant_not_done" in rig.log.raised() and "raise" in _journalled(rig, AlarmCode.IMPLANT_NOT_DONE)
    rig.advance(MS_PER_H)
    assert rig.loop.mode is Mode.IDLE and rig.pump.actual_delivered_nl == 0


def test_a_dose_above_the_record_is_alarmed_and_the_right_implant_clears_it() -> None:
    """§1.3, ALM-03, BOL-06: 50 µg effective gives 100 µg/day; the prescription's 150 is refused
    (IMPLANT_DOSE_ABOVE_RECORD) with IMPLANT_NOT_DONE. The implant at the record's dose starts therapy, its priming
    is not held back by the alarm, and the alarm's condition ends (latched until acknowledged)."""
    rig = _screened()
    assert rig.therapy.screening_dose(50, adequate=True, effect_ms=6 * MS_PER_H).allowed
    refused = rig.therapy.implant(500, 10_000_000, dose_ng_per_day=150_000)
    assert not refused.allowed and "IMPLANT_DOSE_ABOVE_RECORD" in refused.reasons, refused
    assert rig.alarms.is_active(AlarmCode.IMPLANT_NOT_DONE)
    done = rig.therapy.implant(500, 10_000_000)
    assert done.allowed, done
    assert rig.loop.mode is Mode.RUNNING and rig.loop.bolus is not None  # the priming runs
    held = [a for a in rig.alarms.active() if a.code is AlarmCode.IMPLANT_NOT_DONE]
    assert not held or not held[0].condition_active
    rig.advance(MS_PER_H)
    assert rig.pump.actual_delivered_nl > 0
    rig.therapy.acknowledge_alarms()
    assert not rig.alarms.is_active(AlarmCode.IMPLANT_NOT_DONE)


def test_a_second_implant_of_a_running_pump_is_not_an_implant_not_done(make_rig: Any) -> None:
    """ALREADY_IMPLANTED is no loss of therapy: no IMPLANT_NOT_DONE."""
    rig = make_rig()
    assert rig.therapy.implant(500, 10_000_000, dose_ng_per_day=100_000, catheter="drug").allowed
    again = rig.therapy.implant(500, 10_000_000, dose_ng_per_day=100_000, catheter="drug")
    assert not again.allowed and "ALREADY_IMPLANTED" in again.reasons
    assert "implant_not_done" not in rig.log.raised()
