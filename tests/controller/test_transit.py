"""A concentration change keeps the dose at the catheter tip (BOL-06, itb-clinical §5.3; issue #9).

The oracle is physical and independent of the controller: the fake pump's own pushed volume
(``actual_delivered_nl``, not its counter and not the controller's accounting) goes through
:class:`sim.catheter.PhysicalCatheter`, which changes solution when the clinician really puts the
new drug in the reservoir. What leaves its tip is compared with the dose the test prescribed.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from controller.loop import Mode
from hal.pump import PumpState
from sim.catheter import PhysicalCatheter
from tests.controller.conftest import MS_PER_DAY, MS_PER_H, MS_PER_MIN, Rig

#: Library concentrations a patient is refilled with, µg/mL.
CONCENTRATIONS = (500, 1000, 2000)
#: Relative tolerance of the tip dose over one observation step, % (itb-clinical §5.3: no dip, no spike).
TIP_TOLERANCE_PCT = 10
#: Observation step, ms.
STEP_MS = 30 * MS_PER_MIN

HIGH_CAP = """
[[soft_limit_overrides]]
field = "titration.max_dose_ug_per_day"
reason = "a high cap for a concentration-change test"
prescriber = "dr.test"
"""


class TipOracle:
    """What really leaves the catheter tip of ``rig``, step by step (pg), from the pump's physical volume."""

    def __init__(self, rig: Rig, dead_volume_nl: int) -> None:
        self.rig = rig
        self.catheter = PhysicalCatheter(dead_volume_nl)  # saline until the pump fills it
        self._pushed_nl = rig.pump.actual_delivered_nl
        #: (end of step ms, drug that left the tip in it pg), every step so far.
        self.steps: list[tuple[int, int]] = []

    def fill(self, concentration_ug_per_ml: int) -> None:
        """The reservoir now physically holds this drug."""
        self._flush()
        self.catheter.change_solution(concentration_ug_per_ml)

    def _flush(self) -> int:
        pushed = self.rig.pump.actual_delivered_nl
        drug_pg = self.catheter.push(pushed - self._pushed_nl)
        self._pushed_nl = pushed
        return drug_pg

    def step(self, ms: int) -> int:
        """Run the controller ``ms`` further; the drug that left the tip meanwhile, pg."""
        self.rig.advance(ms)
        drug_pg = self._flush()
        self.steps.append((self.rig.loop.now_ms(), drug_pg))
        return drug_pg

    def last_24h_pg(self) -> int:
        """Drug that left the tip over the last 24 h of steps, pg."""
        end = self.steps[-1][0]
        return sum(pg for t, pg in self.steps if t > end - MS_PER_DAY)


def implanted(make_rig: Any, concentration: int, dose_ug_per_day: int, dead_volume_ml: str,
              max_dose_ug_per_day: int = 2000) -> tuple[Rig, TipOracle]:
    rig = make_rig(concentration=concentration, dose_ug_per_day=dose_ug_per_day, dead_volume_ml=dead_volume_ml,
                   max_dose_ug_per_day=max_dose_ug_per_day, extra=HIGH_CAP if max_dose_ug_per_day > 1000 else "")
    oracle = TipOracle(rig, rig.prescription.pump.dead_volume_nl)
    oracle.fill(concentration)
    result = rig.therapy.implant(concentration, 20_000_000, dose_ng_per_day=dose_ug_per_day * 1000)
    assert result.allowed, result
    # Until the primed catheter's first drug and the priming bolus have left the 24 h window.
    for _ in range(2 * MS_PER_DAY // STEP_MS):
        oracle.step(STEP_MS)
    return rig, oracle


def refill(rig: Rig, oracle: TipOracle, concentration: int) -> Any:
    oracle.fill(concentration)
    return rig.therapy.refill(removed_nl=rig.loop.reservoir_nl(), added_nl=20_000_000,
                              concentration_ug_per_ml=concentration, lot="T1")


def assert_tip_dose_holds(rig: Rig, oracle: TipOracle, dose_ug_per_day: int, cap_ug_per_day: int,
                          until_ms: int) -> None:
    """Every step until ``until_ms`` leaves the prescribed dose at the tip, within tolerance, never above the cap."""
    expected_pg = dose_ug_per_day * 1_000_000 * STEP_MS // MS_PER_DAY
    while rig.loop.now_ms() < until_ms:
        at = rig.loop.now_ms()
        got = oracle.step(STEP_MS)
        assert abs(got - expected_pg) * 100 <= expected_pg * TIP_TOLERANCE_PCT, (
            f"at {at / MS_PER_H:.1f} h: {got / 1e6:.3f} µg left the tip in {STEP_MS // MS_PER_MIN} min, "
            f"prescribed {expected_pg / 1e6:.3f} µg (transit {rig.loop.transit})")
        assert oracle.last_24h_pg() <= cap_ug_per_day * 1_000_000


def test_500_to_2000_holds_the_tip_dose_and_then_runs_the_new_rate(make_rig: Any) -> None:
    rig, oracle = implanted(make_rig, 500, 400, "0.25")
    result = refill(rig, oracle, 2000)
    assert result.allowed, result
    assert rig.loop.transit is not None
    assert rig.pump.rate_nl_per_h == 33_332  # 8 333 nL/h at 2000 µg/mL, x 4 while the 500 µg/mL drug crosses
    assert not any(b.kind == "bridge" for b in rig.store.boluses())  # nothing on top of the programme
    assert_tip_dose_holds(rig, oracle, 400, 2000, rig.loop.now_ms() + 2 * MS_PER_DAY)
    assert rig.loop.transit is None and rig.pump.rate_nl_per_h == 8_333
    ends = [p for e, p in rig.events if e == "transit_end"]
    assert len(ends) == 1 and 7.4 <= ends[0]["hours"] <= 7.6  # 0.25 mL at 0.8 mL/day


def test_2000_to_500_never_gives_the_fourfold_spike(make_rig: Any) -> None:
    rig, oracle = implanted(make_rig, 2000, 400, "0.25")
    assert refill(rig, oracle, 500).allowed
    assert rig.pump.rate_nl_per_h == 8_333  # the 2000 µg/mL rate while that drug is still in the line
    assert_tip_dose_holds(rig, oracle, 400, 2000, rig.loop.now_ms() + 3 * MS_PER_DAY)
    assert rig.loop.transit is None and rig.pump.rate_nl_per_h == 33_333


def test_a_transit_longer_than_a_day_is_never_cut_short(make_rig: Any) -> None:
    """0.5 mL of 500 µg/mL at 100 µg/day: 2.5 days of old drug in the line, all of it at the old rate."""
    rig, oracle = implanted(make_rig, 500, 100, "0.5", max_dose_ug_per_day=1000)
    assert refill(rig, oracle, 1000).allowed
    assert_tip_dose_holds(rig, oracle, 100, 1000, rig.loop.now_ms() + 4 * MS_PER_DAY)
    ends = [p for e, p in rig.events if e == "transit_end"]
    assert len(ends) == 1 and 59 <= ends[0]["hours"] <= 61  # 0.5 mL at 0.2 mL/day, not the 24 h it once was cut to


def test_the_transit_survives_a_controller_restart(make_rig: Any) -> None:
    rig, oracle = implanted(make_rig, 500, 400, "0.25")
    assert refill(rig, oracle, 2000).allowed
    oracle.step(3 * MS_PER_H)
    rig2 = rig.restart()
    assert rig2.loop.transit == rig.loop.transit
    oracle.rig = rig2
    assert rig2.pump.rate_nl_per_h == 33_332
    assert_tip_dose_holds(rig2, oracle, 400, 2000, rig2.loop.now_ms() + 2 * MS_PER_DAY)
    assert rig2.loop.transit is None and rig2.pump.rate_nl_per_h == 8_333


def test_no_bolus_and_no_second_change_while_the_old_drug_crosses(make_rig: Any) -> None:
    rig, oracle = implanted(make_rig, 2000, 400, "0.25")
    assert refill(rig, oracle, 500).allowed
    bolus = rig.therapy.clinician_bolus(50_000, 10 * MS_PER_MIN)
    assert not bolus.allowed and "CONCENTRATION_TRANSIT" in bolus.reasons
    again = rig.therapy.refill(removed_nl=rig.loop.reservoir_nl(), added_nl=20_000_000,
                               concentration_ug_per_ml=1000, lot="T2")
    assert not again.allowed and "CONCENTRATION_TRANSIT" in again.reasons
    assert rig.loop.concentration_ug_per_ml == 500 and rig.pump.rate_nl_per_h == 8_333
    # A refill at the concentration in use is still allowed.
    assert rig.therapy.refill(removed_nl=rig.loop.reservoir_nl(), added_nl=20_000_000,
                              concentration_ug_per_ml=500, lot="T3").allowed
    assert rig.loop.transit is not None


def test_a_power_cycle_found_by_the_refill_poll_leaves_nothing_half_applied(make_rig: Any) -> None:
    rig, oracle = implanted(make_rig, 500, 400, "0.25")
    before = (rig.loop.concentration_ug_per_ml, rig.loop.basal_rate_nl_per_h, rig.loop.fill_nl)
    rig.pump.power_cycle()
    result = refill(rig, oracle, 2000)
    assert not result.allowed and "NOT_RUNNING" in result.reasons
    assert (rig.loop.concentration_ug_per_ml, rig.loop.basal_rate_nl_per_h, rig.loop.fill_nl) == before
    assert rig.loop.transit is None and rig.loop.session_open is None
    assert rig.loop.mode is not Mode.RUNNING


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(change=st.sampled_from([(a, b) for a in CONCENTRATIONS for b in CONCENTRATIONS if a != b]),
       dose_ug_per_day=st.integers(20, 1500), dead_ml=st.sampled_from(["0.1", "0.25", "0.5"]))
def test_any_library_change_holds_the_tip_dose_or_is_refused_cleanly(make_rig: Any, change: tuple[int, int],
                                                                     dose_ug_per_day: int, dead_ml: str) -> None:
    old, new = change
    # The file's own dose is any valid one; the implant asks for the drawn dose (refused below the pump's range).
    rig = make_rig(concentration=old, dose_ug_per_day=400, dead_volume_ml=dead_ml, max_dose_ug_per_day=2000,
                   extra=HIGH_CAP)
    oracle = TipOracle(rig, rig.prescription.pump.dead_volume_nl)
    oracle.fill(old)
    if not rig.therapy.implant(old, 20_000_000, dose_ng_per_day=dose_ug_per_day * 1000).allowed:
        event("implant refused")
        return  # below the pump's minimum rate at the old concentration: nothing to change from
    for _ in range(2 * MS_PER_DAY // STEP_MS):
        oracle.step(STEP_MS)
    before = (rig.loop.concentration_ug_per_ml, rig.pump.rate_nl_per_h, rig.loop.basal_rate_nl_per_h)
    result = rig.therapy.refill(removed_nl=rig.loop.reservoir_nl(), added_nl=20_000_000,
                                concentration_ug_per_ml=new, lot="P")
    if not result.allowed:
        assert result.reasons, result
        assert (rig.loop.concentration_ug_per_ml, rig.pump.rate_nl_per_h, rig.loop.basal_rate_nl_per_h) == before
        assert rig.loop.transit is None
        event(f"change refused: {','.join(result.reasons)}")
        return
    event("transit")
    oracle.fill(new)  # the new drug is in the reservoir only once the change was accepted
    dead_nl = rig.prescription.pump.dead_volume_nl
    transit_ms = dead_nl * MS_PER_H // max(1, rig.pump.rate_nl_per_h)
    assert_tip_dose_holds(rig, oracle, dose_ug_per_day, 2000, rig.loop.now_ms() + transit_ms + MS_PER_DAY)
    assert rig.loop.transit is None


def _stall(rig: Rig) -> None:
    rig.pump.inject_stall()  # STOP reaction; the clinician's acknowledgement resumes (resume_after_fault)
    rig.advance(STEP_MS)
    assert rig.loop.mode is Mode.STOPPED_FAULT
    assert rig.therapy.acknowledge_alarms().allowed


def _power_cycle(rig: Rig) -> None:
    rig.pump.power_cycle()  # minimum rate; the clinician's acknowledgement resumes (resume_after_fault)
    rig.advance(STEP_MS)
    assert rig.loop.mode is Mode.MINIMUM_RATE
    assert rig.therapy.acknowledge_alarms().allowed


def _unexplained_stop(rig: Rig) -> None:
    rig.pump.stop()  # the poll finds it and resumes by itself (_resume_programme, by the restart rule)
    rig.advance(STEP_MS)


@pytest.mark.parametrize("fault", [_stall, _power_cycle, _unexplained_stop], ids=lambda f: f.__name__.strip("_"))
def test_a_resume_during_a_transit_leaves_the_pump_able_to_end_it_alone(make_rig: Any, fault: Any) -> None:
    """BOL-06 (tip dose through a concentration change), HAL-05 (comms loss), SAFE-01 (fault reactions), issue #9.

    2000 -> 500 µg/mL at 400 µg/day, 0.25 mL of the old drug in the line (30 h at 8.3 µL/h). Ten hours in, a
    fault stops delivery and its reaction resumes it; then the link is lost for good. A resume sent as a plain
    rate left the pump at the old drug's volume rate once the new drug reached the tip: a quarter of the dose,
    for as long as the link stays down. Judged on the drug that physically left the tip (the fake pump's pushed
    volume through an independent catheter), every 30 min from the resume until a day after the front.
    """
    rig, oracle = implanted(make_rig, 2000, 400, "0.25")
    assert refill(rig, oracle, 500).allowed
    for _ in range(10 * MS_PER_H // STEP_MS):
        oracle.step(STEP_MS)
    fault(rig)
    oracle.step(0)  # the tip dose up to the resume is the fault's, not the resume's
    assert rig.loop.mode is Mode.RUNNING and rig.loop.transit is not None
    rig.pump.faults.comms_down = True
    front_ms = rig.loop.now_ms() + 21 * MS_PER_H  # at most 20 h of old drug left, plus the stop
    assert_tip_dose_holds(rig, oracle, 400, 2000, front_ms + MS_PER_DAY)
    assert rig.pump.rate_nl_per_h == 33_333  # the new drug's rate, switched by the pump alone


@pytest.mark.parametrize("raises", [False, True], ids=["uncertain", "raised"])
@pytest.mark.parametrize("applied", [False, True], ids=["not_applied", "applied"])
def test_a_lost_reply_to_a_resume_during_a_transit_is_read_back_not_left_stopped(make_rig: Any, applied: bool,
                                                                                 raises: bool) -> None:
    """SAFE-01 (a stop is not a safe state), HAL-05 (a lost reply is read back, not assumed), BOL-06, issue #9.

    Found by the clinical adversary once the resume mid-transit sent the transit program: a lost reply armed
    before a motor stall (the stop meets the latched alarm and leaves it armed) falls on the pause that starts
    the resume's program. The program was given up as unknown with the pump still stopped, while a plain rate
    after the same loss is read back and sent once more: the clinician's first resume was refused and the pump
    left stopped (cerebral, 100 µg/day, 500 -> 1000 µg/mL, resume 2 h after the stall, at 54 h). Judged on the
    pump's state and on the drug that physically left the tip from the resume until a day after the front.
    """
    rig, oracle = implanted(make_rig, 2000, 400, "0.25")
    assert refill(rig, oracle, 500).allowed
    for _ in range(10 * MS_PER_H // STEP_MS):
        oracle.step(STEP_MS)
    faults = rig.pump.faults
    faults.uncertain_next, faults.apply_uncertain, faults.raise_uncertain = True, applied, raises
    rig.pump.inject_stall()
    rig.advance(STEP_MS)
    assert rig.loop.mode is Mode.STOPPED_FAULT and faults.uncertain_next  # the stop met the latched alarm
    result = rig.therapy.resume()
    assert result.allowed, result
    assert not faults.uncertain_next  # the loss fell on the resume's program
    assert rig.loop.mode is Mode.RUNNING and rig.pump.state is PumpState.INFUSING
    assert rig.pump.rate_nl_per_h == 8_333 and rig.loop.transit is not None  # the old drug's rate, read back
    oracle.step(0)
    front_ms = rig.loop.now_ms() + 21 * MS_PER_H
    assert_tip_dose_holds(rig, oracle, 400, 2000, front_ms + MS_PER_DAY)
    assert rig.pump.rate_nl_per_h == 33_333


def test_the_clinical_adversary_s_resume_after_a_lost_reply_mid_transit_restarts_delivery() -> None:
    """SAFE-01, HAL-05, BOL-06, issue #9: the clinical adversary's finding above, shrunk by hand from its 33 moves.

    Cerebral, 100 µg/day at 500 µg/mL; 500 -> 1000 µg/mL; 4 h into the transit a lost reply is armed, the motor
    stalls, and 2 h later the clinician resumes. The resume reported "resumed at 100 µg/day" only at the second
    try: the first left the pump stopped (PUMP_NOT_VERIFIED, 'not paused: reply lost'). Judged by the label oracle
    on the pump's physical record.
    """
    from tests.controller.test_clinical_adversary import ClinicalAdversary

    machine = ClinicalAdversary()
    try:
        machine.implant(origin="cerebral", effective=0, effect_h=4, cap_ug=400, child_starts_low=False)
        machine.time_passes(minutes=1440)
        machine.change_concentration(concentration=1000, pocket_fill=False)
        machine.time_passes(minutes=240)
        assert machine.rig.loop.transit is not None
        machine.lose_next_reply(applied=False, raises=False)
        machine.pump_fault(kind="stall")
        machine.time_passes(minutes=120)
        machine.resume()
        assert machine.rig.loop.mode is Mode.RUNNING and machine.pump.state is PumpState.INFUSING
        machine.time_passes(minutes=1440)
        machine.the_label_holds()
    finally:
        machine.teardown()


@pytest.mark.parametrize("new_concentration", [1000, 2000])
def test_a_flex_programme_set_after_the_pump_s_own_switch_is_scaled_for_the_new_drug(make_rig: Any,
                                                                                   new_concentration: int) -> None:
    """BOL-06, issue #9: 500 -> 1000 or 2000 µg/mL at 200 µg/day, 0.25 mL of old drug (15 h at 16.7 µL/h). The link
    is down across the poll that would end the transit, and the pump switches to the new drug's rate by itself
    meanwhile. A flex programme set right after the link is back was sent at the old drug's volume rate (16.7 µL/h
    of the new drug: 400 or 800 µg/day at the tip) until the next poll, 28 min later. Judged on the drug that
    physically left the tip (the fake pump's pushed volume through an independent catheter), every 30 min for 4 h.
    """
    rig, oracle = implanted(make_rig, 500, 200, "0.25")
    assert refill(rig, oracle, new_concentration).allowed
    rig.advance(53_989 * 1000)  # 11 s before the poll that would find the old drug gone
    assert rig.loop.transit is not None and rig.pump.read_phase() == 1
    rig.pump.faults.comms_down = True
    rig.advance(110 * 1000)  # the poll fails; the pump's phase 1 ends 35 s after it
    rig.pump.faults.comms_down = False
    assert rig.pump.read_phase() == 2 and rig.loop.schedule.next_poll_ms - rig.loop.now_ms() > 20 * MS_PER_MIN
    oracle.step(0)  # the tip dose up to the command is the transit's
    result = rig.therapy.set_flex([(0, 200_000), (12 * MS_PER_H, 200_000)], anchor_ms=0)
    assert result.allowed, result
    assert_tip_dose_holds(rig, oracle, 200, 2000, rig.loop.now_ms() + 4 * MS_PER_H)


def test_a_flex_programme_set_mid_transit_leaves_the_pump_able_to_end_the_transit_alone(make_rig: Any) -> None:
    """BOL-06, HAL-05, issue #9: 500 -> 2000 µg/mL at 200 µg/day, 0.25 mL of old drug (15 h at 16.7 µL/h). 11 h in,
    a flex programme at the same dose is set; then the link is lost for good. Sent as a plain rate (the old drug's
    volume rate), it replaced the transit program the pump ends by itself: after the front the tip got 16.7 µL/h
    of 2000 µg/mL, 800 µg/day for 200 prescribed, for as long as the link stays down. Judged on the drug that
    physically left the tip, every 30 min until a day after the front.
    """
    rig, oracle = implanted(make_rig, 500, 200, "0.25")
    assert refill(rig, oracle, 2000).allowed
    rig.advance(40_000 * 1000)
    assert rig.loop.transit is not None
    oracle.step(0)
    result = rig.therapy.set_flex([(0, 200_000), (12 * MS_PER_H, 200_000)], anchor_ms=0)
    assert result.allowed, result
    rig.pump.faults.comms_down = True
    assert_tip_dose_holds(rig, oracle, 200, 2000, rig.loop.now_ms() + 5 * MS_PER_H + MS_PER_DAY)
