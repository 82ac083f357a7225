"""Minimal reproductions of what the clinical adversary found (``test_clinical_adversary.py``).

Each is a strict ``xfail`` while the controller files that would fix it are being edited by
others: the day a fix lands, the test passes, xfail_strict fails the run, and the marker goes.
Every test judges by physics or by the prescription as written, never by the controller's ledger.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.patient import History, PatientRecord
from controller.store import Store
from cython_ext.vocabulary import Origin
from sim.clock import VirtualClock
from sim.fake_pump import FakePump
from tests.controller.conftest import build_rig
from tests.prescriptions import make_prescription

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000
BASAL_NL_PER_H = 8333  # 100 µg/day at 500 µg/mL
PRIMING_NL = 250_000  # the prescription's dead volume, 0.25 mL


def _implanted(tmp_path: Path, *, origin: str = "spinal") -> tuple[VirtualClock, FakePump, Path, object]:
    clock = VirtualClock()
    pump = FakePump(clock)
    path = tmp_path / "store.sqlite"
    rig = build_rig(clock, pump, Store(path, clock), origin=origin)
    assert rig.therapy.implant(500, 20_000_000, dose_ng_per_day=100_000).allowed  # with a 30 min priming bolus
    return clock, pump, path, rig


@pytest.mark.xfail(strict=True, reason="controller/loop.py: a bolus is an extra rate that only the controller ends; "
                                       "a crash leaves the pump at the bolus rate until a controller recovers")
def test_a_controller_crash_during_a_bolus_does_not_leave_the_pump_at_the_bolus_rate(tmp_path: Path) -> None:
    """BOL-04, PRX-03, DESIGN 'fail operational': a crash 1 min into the priming bolus, the host down for 10 h.

    The pump may push the authorised bolus and basal, nothing more: a bolus needs an end the pump
    keeps by itself (a pumping-program phase with its volume), not one the controller must send.
    """
    clock, pump, path, rig = _implanted(tmp_path)
    rig.advance(MS_PER_MIN)
    rig.controller.detach()
    rig.store.abandon()
    clock.advance(10 * 3600)  # no controller: the host is down
    authorised_nl = PRIMING_NL + BASAL_NL_PER_H * (10 * MS_PER_H + MS_PER_MIN) // MS_PER_H
    assert pump.actual_delivered_nl <= authorised_nl + 1000, (
        f"{pump.actual_delivered_nl} nL pushed, {authorised_nl} nL authorised "
        f"({(pump.actual_delivered_nl - authorised_nl) * 500 / 1e6:.0f} µg more)")


@pytest.mark.xfail(strict=True, reason="controller/loop.py: a link down during a bolus leaves the pump at the "
                                       "bolus rate for as long as the link is down (the end is a command to send)")
def test_a_link_down_during_a_bolus_does_not_leave_the_pump_at_the_bolus_rate(tmp_path: Path) -> None:
    """BOL-04, PRX-03, HAL-05 (fail-operational on comms loss): the link goes down 10 min into the 30 min priming bolus for 5 h.

    The pump may push the authorised priming and basal, nothing more.
    """
    clock, pump, path, rig = _implanted(tmp_path)
    rig.advance(10 * MS_PER_MIN)
    pump.faults.comms_down = True
    rig.advance(5 * MS_PER_H)
    authorised_nl = PRIMING_NL + BASAL_NL_PER_H * rig.loop.now_ms() // MS_PER_H
    assert pump.actual_delivered_nl <= authorised_nl + 2000, (
        f"{pump.actual_delivered_nl} nL pushed, {authorised_nl} nL authorised "
        f"({(pump.actual_delivered_nl - authorised_nl) * 500 / 1e6:.0f} µg more)")


@pytest.mark.xfail(strict=True, reason="controller/loop.py recover() restores the kernel with the snapshot's caps: a "
                                       "new prescription put in effect at a restart is journalled but not enforced")
def test_a_new_prescription_with_a_stricter_origin_is_enforced_after_a_restart(tmp_path: Path) -> None:
    """TIT-01, issue #9 (origin change): spinal (30 %) to cerebral (15 %) at a restart, two days later a +25 % step.

    The journal holds the cerebral prescription as the one in effect; the titration cap it names
    must be the one enforced (an origin change keeps the *stricter* cap: here the new one).
    """
    clock, pump, path, rig = _implanted(tmp_path)
    rig.advance(2 * MS_PER_DAY)
    rig.controller.detach()
    rig.store.abandon()
    rx = make_prescription(origin="cerebral")
    patient = PatientRecord(rx.patient.patient_id, Origin.CEREBRAL, History.TRANSFERRED,
                            prior_dose_ng_per_day=rx.titration.max_dose_ng_per_day)
    again = build_rig(clock, pump, Store(path, clock), recover=True, prescription=rx, patient=patient)
    assert again.store.last_prescription_record()["toml"] == rx.to_toml()  # journalled as in effect
    again.advance(2 * MS_PER_DAY)
    result = again.therapy.titrate(125_000)
    assert not result.allowed and "TITRATION_CAP_EXCEEDED" in result.reasons, result


@pytest.mark.xfail(strict=True, reason="the refill-discrepancy hold is an unacknowledged alarm of the alarm manager, "
                                       "which a restarted controller does not hold: the hold is lost at a restart")
def test_a_refill_discrepancy_still_holds_boluses_and_increases_after_a_restart(tmp_path: Path) -> None:
    """RES-03, PER-02: a possible pocket fill (half the expected volume drawn out), then a controller restart.

    Until a clinician acknowledges the discrepancy, no bolus and no increase, whatever restarts in between.
    """
    clock, pump, path, rig = _implanted(tmp_path)
    rig.advance(2 * MS_PER_DAY)
    refill = rig.therapy.refill(removed_nl=rig.loop.reservoir_nl() // 2, added_nl=20_000_000,
                                concentration_ug_per_ml=500, lot="A1")
    assert refill.allowed and "REFILL_MISMATCH" in refill.reasons
    assert "REFILL_DISCREPANCY_UNACKNOWLEDGED" in rig.therapy.clinician_bolus(25_000, 10 * MS_PER_MIN).reasons
    rig.controller.detach()
    rig.store.abandon()
    again = build_rig(clock, pump, Store(path, clock), recover=True, prescription=rig.prescription,
                      settings=rig.settings, patient=rig.controller.patient)
    bolus = again.therapy.clinician_bolus(25_000, 10 * MS_PER_MIN)
    increase = again.therapy.titrate(110_000)
    assert not bolus.allowed and not increase.allowed, (bolus, increase)


@pytest.mark.xfail(strict=True, reason="controller/loop.py: a resume does not close the loop's interruption until a "
                                       "poll confirms delivery; a stall before that poll is not told to the kernel, "
                                       "whose interruption the resume closed, and every later resume is refused "
                                       "with RESUME_WITHOUT_INTERRUPTION")
def test_a_second_stall_soon_after_a_resume_can_still_be_resumed(tmp_path: Path) -> None:
    """SAFE-01, §3.2 (stopping is not a safe state), TIT-01 (a stop is a zero dose in the history).

    A persistent occlusion: the motor stalls, the clinician acknowledges and therapy resumes, and
    the motor stalls again before the next poll. Acknowledging the second stop must resume too.
    """
    clock, pump, path, rig = _implanted(tmp_path)
    rig.advance(2 * MS_PER_DAY)
    pump.inject_stall()
    rig.advance(MS_PER_H)
    assert rig.loop.mode.value == "stopped_fault"
    rig.therapy.acknowledge_alarms()
    assert pump.state.value == "infusing"
    pump.inject_stall()  # again, before the loop's next poll has seen the resumed delivery
    rig.advance(MS_PER_H)
    assert rig.loop.mode.value == "stopped_fault"
    rig.therapy.acknowledge_alarms()
    assert pump.state.value == "infusing", rig.therapy.resume()


@pytest.mark.xfail(strict=True, reason="controller/loop.py recover(): the delivery found since the last durable "
                                       "checkpoint is reconciled but not given to the tip-dose watch, which restarts "
                                       "disarmed (as for a drug-naive patient) and never raises WITHDRAWAL_RISK")
def test_a_restart_does_not_disarm_the_withdrawal_alarm(tmp_path: Path) -> None:
    """Issue #9 (withdrawal alarmed for any reason), §3.2, PER-02: 12 h of therapy, a controller restart, then a
    pump power cycle (minimum-rate mode: 24 of 100 µg/day). Twelve hours at a quarter of the dose is withdrawal."""
    clock, pump, path, rig = _implanted(tmp_path)
    rig.advance(12 * MS_PER_H)
    rig.controller.detach()
    rig.store.abandon()
    again = build_rig(clock, pump, Store(path, clock), recover=True, prescription=rig.prescription,
                      settings=rig.settings, patient=rig.controller.patient)
    pump.power_cycle()
    again.advance(12 * MS_PER_H)
    assert again.loop.mode.value == "minimum_rate"
    assert "withdrawal_risk" in again.log.raised()
