"""A missed refill that ran to confirmed empty is ended by a refill at any concentration (issue #9).

RES-05's second step: the minimum rate stretched the residual volume until the predicted volume was used up, and
the pump was stopped (``reservoir_confirmed_empty``, RESERVOIR_EMPTY held). A refill at the old concentration
could resume it; one at a new concentration was refused (NOT_RUNNING), so the patient stayed with no drug until
someone found the old drug. Now both refills end the stop, under the restart rule (itb-clinical §1.6 [JP-LBL],
§3.3): after an interruption longer than the threshold, the patient's titration-phase starting dose; after a
shorter one, the old dose. Both resume at the refill (the clinician is there), neither at a later acknowledgement.

What the catheter holds after the stop (a clinical safety review's decision): the old drug, to the tip. The pump
was stopped on the *predicted* volume reaching zero, before the reservoir could run dry, and a stopped pump pushes
nothing: the catheter's fluid column is the last drug pushed. Assuming saline or air instead would push the
dead volume of old drug at the new drug's volume rate: 4x the dose for 2000 -> 500 µg/mL (itb-clinical §5.3).
So the transit of the old drug applies exactly as after the minimum rate.

The oracle is physical: the fake pump's pushed volume through :class:`sim.catheter.PhysicalCatheter`
(:class:`~tests.controller.test_transit.TipOracle`), against doses computed by hand from the label rules: the
transferred patient's restart dose is the lower of the documented dose and 2 x the 50 µg first test dose
(100 µg/day); a short interruption resumes the old 300 µg/day. Every 30 min step within 10 %, the 24 h tip dose
never above the 1000 µg/day cap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from controller.alarms import AlarmCode
from controller.loop import Mode
from controller.store import Store
from sim.clock import VirtualClock
from sim.fake_pump import FakePump
from tests.controller.conftest import MS_PER_DAY, MS_PER_H, build_rig
from tests.controller.test_refill_crash import die_inside_refill, reboot
from tests.controller.test_transit import CONCENTRATIONS, HIGH_CAP, STEP_MS, TipOracle, assert_tip_dose_holds

OLD_DOSE_UG_PER_DAY = 300
RESTART_DOSE_UG_PER_DAY = 100  # min(documented dose, 2 x 50 µg): the restart rule for a transferred patient
CAP_UG_PER_DAY = 1000


def _confirmed_empty(make_rig: Any, concentration: int, empty_threshold_ml: str = "0.5") -> tuple[Any, TipOracle]:
    """300 µg/day from 4 mL, the refill missed until the pump is stopped at confirmed empty."""
    rig = make_rig(concentration=concentration, dose_ug_per_day=OLD_DOSE_UG_PER_DAY, reservoir_ml=4,
                   dead_volume_ml="0.25", empty_threshold_ml=empty_threshold_ml)
    oracle = TipOracle(rig, rig.prescription.pump.dead_volume_nl)
    oracle.fill(concentration)
    oracle.catheter.fill(concentration)
    assert rig.therapy.implant(concentration, 4_000_000, dose_ng_per_day=OLD_DOSE_UG_PER_DAY * 1000,
                               catheter="drug").allowed
    modes = []
    for _ in range(60 * 24):
        oracle.step(MS_PER_H)
        if not modes or modes[-1] is not rig.loop.mode:
            modes.append(rig.loop.mode)
        if rig.loop.mode is Mode.STOPPED_FAULT:
            break
    # RES-05's sequence: minimum rate at the empty threshold, a stop only at confirmed empty.
    assert modes == [Mode.RUNNING, Mode.MINIMUM_RATE, Mode.STOPPED_FAULT], modes
    assert rig.loop.reservoir_nl() == 0 and rig.alarms.is_active(AlarmCode.RESERVOIR_EMPTY)
    return rig, oracle


def _refill(rig: Any, oracle: TipOracle, concentration: int) -> Any:
    oracle.fill(concentration)
    return rig.therapy.refill(removed_nl=0, added_nl=20_000_000, concentration_ug_per_ml=concentration, lot="E1")


def _holds(rig: Any, oracle: TipOracle, dose_ug_per_day: int) -> None:
    """The tip dose holds through the whole transit of the old drug and a day after it."""
    assert_tip_dose_holds(rig, oracle, dose_ug_per_day, CAP_UG_PER_DAY, rig.loop.now_ms() + MS_PER_DAY)
    for _ in range(10):
        if rig.loop.transit is None:
            break
        assert_tip_dose_holds(rig, oracle, dose_ug_per_day, CAP_UG_PER_DAY, rig.loop.now_ms() + MS_PER_DAY)
    assert rig.loop.transit is None
    assert_tip_dose_holds(rig, oracle, dose_ug_per_day, CAP_UG_PER_DAY, rig.loop.now_ms() + MS_PER_DAY)


@pytest.mark.parametrize("old,new", [(500, 1000), (500, 2000), (2000, 500), (1000, 500)])
def test_a_new_concentration_after_confirmed_empty_resumes_at_the_restart_dose(make_rig: Any, old: int,
                                                                               new: int) -> None:
    """RES-05, PRX-06, BOL-06, the restart rule (SAFE-02: leaving the stop is journalled): days after the stop, a
    refill at a new concentration resumes at the refill, at the titration-phase starting dose, the old drug in the
    catheter crossing first at its own volume rate; the tip holds 100 µg/day within 10 %, never the old dose."""
    rig, oracle = _confirmed_empty(make_rig, old)
    result = _refill(rig, oracle, new)
    assert result.allowed, result
    assert rig.loop.mode is Mode.RUNNING and rig.loop.transit is not None
    assert rig.loop.concentration_ug_per_ml == new == rig.gate.concentration_ug_per_ml
    assert rig.therapy.prescribed_dose_ng_per_day == RESTART_DOSE_UG_PER_DAY * 1000
    assert "restart rule" in result.values["restart"]
    _holds(rig, oracle, RESTART_DOSE_UG_PER_DAY)


@pytest.mark.parametrize("new", [500, 1000])
def test_after_a_short_interruption_confirmed_empty_resumes_the_old_dose(make_rig: Any, new: int) -> None:
    """The restart rule's other side: an empty threshold of 0.04 mL lasts 20 h at the minimum rate (48 µL/day), so
    the stop at confirmed empty comes less than 24 h after delivery fell; a refill an hour later (same drug or new)
    resumes the old 300 µg/day at the tip (within 10 %), not the starting dose."""
    rig, oracle = _confirmed_empty(make_rig, 500, empty_threshold_ml="0.04")
    oracle.step(MS_PER_H)
    assert rig.loop.interruption_ms() < rig.therapy.restart_titration_after_ms
    result = _refill(rig, oracle, new)
    assert result.allowed, result
    assert rig.loop.mode is Mode.RUNNING
    assert rig.therapy.prescribed_dose_ng_per_day == OLD_DOSE_UG_PER_DAY * 1000
    _holds(rig, oracle, OLD_DOSE_UG_PER_DAY)


@pytest.mark.parametrize("mode", [Mode.MINIMUM_RATE, Mode.STOPPED_FAULT])
def test_a_same_drug_refill_after_a_missed_refill_resumes_at_the_refill(make_rig: Any, mode: Mode) -> None:
    """RES-05, the restart rule: a refill at the old concentration resumes at the refill, as a new concentration
    does, with no acknowledgement first (the clinician is at the refill; every hour more at the minimum rate or
    stopped deepens the withdrawal). The latched alarms stay until acknowledged; the tip gets 100 µg/day."""
    rig, oracle = _confirmed_empty(make_rig, 500) if mode is Mode.STOPPED_FAULT else _on_minimum_rate(make_rig)
    result = _refill(rig, oracle, 500)
    assert result.allowed, result
    assert rig.loop.mode is Mode.RUNNING, result
    assert rig.therapy.prescribed_dose_ng_per_day == RESTART_DOSE_UG_PER_DAY * 1000
    assert "restart rule" in result.values["restart"]
    assert rig.alarms.is_active(AlarmCode.RESERVOIR_EMPTY)  # latched: a clinician acknowledges it
    _holds(rig, oracle, RESTART_DOSE_UG_PER_DAY)


def _on_minimum_rate(make_rig: Any) -> tuple[Any, TipOracle]:
    rig = make_rig(concentration=500, dose_ug_per_day=OLD_DOSE_UG_PER_DAY, reservoir_ml=4, dead_volume_ml="0.25")
    oracle = TipOracle(rig, rig.prescription.pump.dead_volume_nl)
    oracle.fill(500)
    oracle.catheter.fill(500)
    assert rig.therapy.implant(500, 4_000_000, dose_ng_per_day=OLD_DOSE_UG_PER_DAY * 1000, catheter="drug").allowed
    while rig.loop.mode is not Mode.MINIMUM_RATE:
        oracle.step(MS_PER_H)
    for _ in range(30):  # past the 24 h restart threshold
        oracle.step(MS_PER_H)
    return rig, oracle


def test_a_stop_for_a_stall_is_not_ended_by_a_new_concentration(make_rig: Any) -> None:
    """RES-05, SAFE-01: only the confirmed-empty stop is the missed refill's. A stall held with it has its own
    reaction and wants a clinician: the change is refused (NOT_RUNNING) and the old drug stays recorded."""
    rig, oracle = _confirmed_empty(make_rig, 500)
    rig.alarms.raise_alarm(AlarmCode.MOTOR_STALL, detail="test: a stall as well")
    oracle.fill(1000)
    result = rig.therapy.refill(removed_nl=0, added_nl=20_000_000, concentration_ug_per_ml=1000, lot="E2")
    assert not result.allowed and "NOT_RUNNING" in result.reasons, result
    assert rig.loop.mode is Mode.STOPPED_FAULT and rig.loop.concentration_ug_per_ml == 500


def _confirmed_empty_on_file(path: Path) -> tuple[VirtualClock, FakePump, Path, Any, Any]:
    """A patient at 500 µg/mL run to confirmed empty on a store file at ``path``, the 1000 µg/mL refill's drug in
    the tip oracle's reservoir: (clock, pump, path, rig, oracle)."""
    clock = VirtualClock()
    pump = FakePump(clock)

    def on_file(settings: Any = None, **rx: Any) -> Any:
        return build_rig(clock, pump, Store(path, clock), settings=settings, **rx)

    rig, oracle = _confirmed_empty(on_file, 500)
    oracle.fill(1000)
    return clock, pump, path, rig, oracle


@pytest.mark.parametrize("kill_after", [1, 2, 3])
def test_a_death_inside_the_change_after_confirmed_empty_completes_it(tmp_path: Path, kill_after: int) -> None:
    """PER-02, RES-04, PRX-06, the restart rule: killed after each delivery command of the 1000 µg/mL refill that
    ends the confirmed-empty stop, the rebooted controller completes the change from its durable intent; the tip
    holds the restart rule's 100 µg/day (within 10 %) through the transit."""
    clock, pump, path, rig, oracle = _confirmed_empty_on_file(tmp_path / f"empty-{kill_after}.sqlite")
    assert die_inside_refill(rig, pump, kill_after, 1000, "E3") == kill_after
    again = reboot(rig, clock, pump, path)
    oracle.rig = again
    assert again.loop.concentration_ug_per_ml == 1000 == again.gate.concentration_ug_per_ml
    assert again.loop.mode is Mode.RUNNING, again.loop.mode
    assert again.therapy.prescribed_dose_ng_per_day == RESTART_DOSE_UG_PER_DAY * 1000
    assert again.alarms.is_active(AlarmCode.UNFINISHED_SESSION)
    oracle.step(STEP_MS)  # the restart's own poll settles the pump
    _holds(again, oracle, RESTART_DOSE_UG_PER_DAY)
    again.store.close()


@pytest.mark.parametrize("readable", [True, False])
def test_a_change_after_confirmed_empty_refused_at_restart_ends_at_minimum_rate(tmp_path: Path, readable: bool,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """RES-04, RES-05, PRX-06, SAFE-01: killed after the RUN of the 1000 µg/mL refill that ends the stop, rebooted with
    the kernel refusing the change: the reservoir is full of the new drug, so the minimum rate (alarmed by
    UNFINISHED_SESSION), at once when the pump can be read, else at the first poll that reads it; never the
    transit program left running unwatched until the drift check calls it an over-delivery."""
    from controller.gate import GateDecision, KernelGate

    clock, pump, path, rig, oracle = _confirmed_empty_on_file(tmp_path / f"refused-{readable}.sqlite")
    die_inside_refill(rig, pump, 3, 1000, "E4")
    monkeypatch.setattr(KernelGate, "authorize_concentration_change",
                        lambda self, *args, **kwargs: GateDecision.denied("TEST_REFUSAL"))
    pump.faults.comms_down = not readable
    again = reboot(rig, clock, pump, path)
    oracle.rig = again
    assert again.alarms.is_active(AlarmCode.UNFINISHED_SESSION)
    if readable:  # at once, by the restart: not an hour later as an over-delivery the drift check finds
        assert again.loop.mode is Mode.MINIMUM_RATE and pump.rate_nl_per_h == again.loop.config.minimum_rate_nl_per_h
    else:
        assert again.alarms.is_active(AlarmCode.THERAPY_STATUS_UNKNOWN)
        oracle.step(STEP_MS)
        pump.faults.comms_down = False
    oracle.step(STEP_MS)
    assert again.loop.mode is Mode.MINIMUM_RATE and pump.rate_nl_per_h == again.loop.config.minimum_rate_nl_per_h
    for _ in range(MS_PER_DAY // STEP_MS):
        oracle.step(STEP_MS)
        assert oracle.last_24h_pg() <= CAP_UG_PER_DAY * 1_000_000
    entered = [p["reason"] for e, p in again.events if e == "minimum_rate"]
    assert entered and "could not be completed at restart" in entered[0], entered
    if readable:
        assert "over_delivery_suspected" not in again.log.raised()
    again.store.close()


@pytest.mark.parametrize("new", [500, 1000])
def test_confirmed_empty_found_at_a_restart_is_an_interruption_of_unknown_length(tmp_path: Path, new: int) -> None:
    """RES-05, ALM-07, PER-02, the restart rule: 1 mL at 300 µg/day, the controller down for three days. The
    reboot finds the predicted volume used up with no minimum-rate spell before it: the stop is alarmed as an
    interruption (THERAPY_INTERRUPTED, the withdrawal risk) whose length is unknown, so the refill (same drug or
    new) resumes at the titration-phase starting dose, 100 µg/day at the tip within 10 %, not the old 300. Before,
    the same-drug refill could not resume at all (RESUME_WITHOUT_INTERRUPTION) and a new drug got the old dose."""
    path = tmp_path / f"unwatched-{new}.sqlite"
    clock = VirtualClock()
    pump = FakePump(clock)
    rig = build_rig(clock, pump, Store(path, clock), concentration=500, dose_ug_per_day=OLD_DOSE_UG_PER_DAY,
                    reservoir_ml=4)
    oracle = TipOracle(rig, rig.prescription.pump.dead_volume_nl)
    oracle.fill(500)
    oracle.catheter.fill(500)
    assert rig.therapy.implant(500, 1_000_000, dose_ng_per_day=OLD_DOSE_UG_PER_DAY * 1000, catheter="drug").allowed
    oracle.step(2 * MS_PER_H)
    rig.store.abandon()
    rig.controller.detach()
    clock.advance(3 * MS_PER_DAY / 1000)
    again = reboot(rig, clock, pump, path)
    oracle.rig = again
    oracle.step(MS_PER_H)
    assert again.loop.mode is Mode.STOPPED_FAULT and again.alarms.is_active(AlarmCode.RESERVOIR_EMPTY)
    assert again.alarms.is_active(AlarmCode.THERAPY_INTERRUPTED)
    result = _refill(again, oracle, new)
    assert result.allowed and again.loop.mode is Mode.RUNNING, result
    assert again.therapy.prescribed_dose_ng_per_day == RESTART_DOSE_UG_PER_DAY * 1000, result
    _holds(again, oracle, RESTART_DOSE_UG_PER_DAY)
    again.store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(old=st.sampled_from(CONCENTRATIONS), new=st.sampled_from(CONCENTRATIONS),
       dose_ug_per_day=st.integers(150, 600), dead_volume_ul=st.integers(100, 500))
def test_any_change_after_confirmed_empty_holds_the_restart_dose_at_the_tip(make_rig: Any, old: int, new: int,
                                                                           dose_ug_per_day: int,
                                                                           dead_volume_ul: int) -> None:
    """RES-05, BOL-06, PRX-03, the restart rule, as a property: any library concentration to any other (or the same),
    any dose the minimum rate is below, any dead volume of 0.1-0.5 mL: after confirmed empty the refill resumes at
    100 µg/day and every 30 min step at the tip is within 10 % of it, never above the cap."""
    rig = make_rig(concentration=old, dose_ug_per_day=dose_ug_per_day, reservoir_ml=4,
                   dead_volume_ml=f"{dead_volume_ul / 1000:g}", extra=HIGH_CAP if dose_ug_per_day > 1000 else "")
    oracle = TipOracle(rig, rig.prescription.pump.dead_volume_nl)
    oracle.fill(old)
    oracle.catheter.fill(old)
    assert rig.therapy.implant(old, 2_000_000, dose_ng_per_day=dose_ug_per_day * 1000, catheter="drug").allowed
    while rig.loop.mode is not Mode.STOPPED_FAULT:
        oracle.step(6 * MS_PER_H)
        assert rig.loop.now_ms() < 90 * MS_PER_DAY
    oracle.step(6 * MS_PER_H)
    result = _refill(rig, oracle, new)
    assert result.allowed and rig.loop.mode is Mode.RUNNING, result
    event("transit" if new != old else "same drug")
    _holds(rig, oracle, RESTART_DOSE_UG_PER_DAY)
