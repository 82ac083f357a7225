"""Rules that hold over what happened, not one instant (issue #9): withdrawal at the tip, refill holds, priming.

The oracle for the tip-dose watch is a recomputation from the raw intervals and
the rule as written (an alarm after a 6 h window below half the prescribed dose,
once a window has reached it); the controller tests drive the fake pump into a
stop, minimum-rate mode or a discontinue and check the alarm that follows.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from controller.accounting import TipDoseWatch
from controller.alarms import AlarmCode
from controller.loop import Mode
from cython_ext.units import MS_PER_DAY, MS_PER_H, MS_PER_MIN, PG_PER_NG
from sim.clock import VirtualClock
from sim.fake_pump import FakePump
from tests.controller.conftest import build_rig

WINDOW_MS = 6 * MS_PER_H


# -- the tip-dose watch on its own ---------------------------------------------------------------------


@given(
    dose_ng_per_day=st.integers(10_000, 2_000_000),
    pcts=st.lists(st.integers(0, 150), min_size=1, max_size=40),
    interval_min=st.sampled_from([5, 15, 30, 60]),
)
def test_tip_watch_flags_a_window_below_half_the_dose_once_armed(dose_ng_per_day: int, pcts: list[int],
                                                                  interval_min: int) -> None:
    """SAFE-02 / withdrawal: the watch's verdict equals a recomputation from the raw intervals."""
    watch = TipDoseWatch(WINDOW_MS, 50)
    step = interval_min * MS_PER_MIN
    per_interval_pg = dose_ng_per_day * PG_PER_NG * step // MS_PER_DAY
    history: list[tuple[int, int]] = []
    armed = False
    for i, pct in enumerate(pcts, start=1):
        t, pg = i * step, per_interval_pg * pct // 100
        watch.record(t, pg)
        history.append((t, pg))
        got = watch.deficit_pct(t, dose_ng_per_day)
        start = t - WINDOW_MS
        if history[0][0] > start:
            assert got is None  # less than a window of history
            continue
        delivered = sum(p for end, p in history if end > start)
        share = 100 * delivered // max(1, dose_ng_per_day * PG_PER_NG * WINDOW_MS // MS_PER_DAY)
        if share >= 50:
            armed = True
            assert got is None
        else:
            assert got == (share if armed else None)


def test_tip_watch_stays_quiet_for_a_drug_naive_patient() -> None:
    """No prior exposure, no withdrawal: saline in the catheter after implant is not flagged."""
    watch = TipDoseWatch(WINDOW_MS, 50)
    for hour in range(1, 30):
        watch.record(hour * MS_PER_H, 0)
        assert watch.deficit_pct(hour * MS_PER_H, 100_000) is None


# -- in the controller ---------------------------------------------------------------------------------


def test_a_long_stall_raises_withdrawal_risk_and_a_short_one_does_not(running: Any) -> None:
    """A stop longer than 6 h is a withdrawal risk whatever its cause (itb-clinical §3.2)."""
    running.pump.inject_stall()
    running.advance(2 * MS_PER_H)
    assert running.loop.mode is Mode.STOPPED_FAULT
    assert "withdrawal_risk" not in running.log.raised()  # 2 of the last 6 h without drug: two thirds delivered
    running.advance(5 * MS_PER_H)
    assert "withdrawal_risk" in running.log.raised()
    detail = next(e["detail"] for e in running.log.events if e["code"] == "withdrawal_risk")
    assert "catheter tip" in detail and "100 µg/day" in detail


def test_minimum_rate_mode_names_the_withdrawal_risk(running: Any) -> None:
    running.pump.power_cycle()  # PUMP_RESET: minimum-rate mode
    running.advance(MS_PER_H)
    assert running.loop.mode is Mode.MINIMUM_RATE
    minimum = next(a for a in running.alarms.active() if a.code is AlarmCode.MINIMUM_RATE_MODE)
    assert "WITHDRAWAL" in minimum.spec.message
    # 2000 nL/h at 500 µg/mL is 24 µg/day against 100 prescribed: a deficit at the tip.
    running.advance(7 * MS_PER_H)
    assert "withdrawal_risk" in running.log.raised()


def test_an_emergency_discontinue_raises_the_withdrawal_alarm_once_and_the_tip_watch_stays_quiet(running: Any) -> None:
    """Review 11 (B3) reversed the earlier decision: an emergency discontinue is the abrupt stop of the boxed
    warning, so it raises withdrawal_risk at once, naming oral cover; the tip watch, reset by the discontinue,
    adds no second raise over the two days at zero. (A discontinue ending a completed taper raises none:
    tests/controller/test_review11_restart_and_discontinue_alarms.py.)"""
    assert running.therapy.discontinue(authorised_by="dr.test", emergency=True).allowed
    running.advance(2 * MS_PER_DAY)
    raised = [e for e in running.log.events if e["event"] == "raise" and e["code"] == "withdrawal_risk"]
    assert len(raised) == 1 and "emergency discontinue" in raised[0]["detail"], raised
    assert "oral baclofen" in raised[0]["detail"]


def test_an_unprimed_implant_is_not_complete_and_says_the_catheter_holds_no_drug() -> None:
    """A refused priming leaves saline in the catheter: the implant is reported incomplete (issue #9)."""
    clock = VirtualClock()
    pump = FakePump(clock, max_rate_nl_per_h=400_000)  # the priming bolus needs 500 000 nL/h
    rig = build_rig(clock, pump, _store(clock))
    result = rig.therapy.implant(500, 20_000_000, dose_ng_per_day=100_000)
    assert not result.allowed
    assert result.reasons[0] == "PRIMING_REFUSED" and "BOLUS_RATE_ABOVE_PUMP_MAX" in result.reasons
    assert "catheter holds no drug" in result.detail
    assert "catheter_not_primed" in rig.log.raised() and "unfinished_session" not in rig.log.raised()
    assert rig.loop.mode is Mode.RUNNING  # the basal rate still runs: stopping is not safe either
    assert not rig.therapy.implant_complete


def test_a_refused_priming_can_be_primed_again_and_the_implant_then_completes() -> None:
    """The alarm of a refused priming is the one a re-prime cures: a slower re-prime is allowed (BOL-06).

    Judged by the fake pump's own pushed volume: drug is at the tip once the mechanism has pushed more than
    the catheter's 0.25 mL dead volume since the implant.
    """
    clock = VirtualClock()
    pump = FakePump(clock, max_rate_nl_per_h=400_000)
    rig = build_rig(clock, pump, _store(clock))
    assert not rig.therapy.implant(500, 20_000_000, dose_ng_per_day=100_000).allowed
    rig.advance(MS_PER_H)
    assert pump.actual_delivered_nl < 250_000  # the basal alone: saline still at the tip
    reprime = rig.therapy.prime(duration_ms=MS_PER_H)  # the saline left in 1 h: under the pump's 400 000 nL/h
    assert reprime.allowed, reprime.reasons
    rig.advance(2 * MS_PER_H)
    assert pump.actual_delivered_nl > 250_000
    assert rig.therapy.implant_complete
    rig.therapy.acknowledge_alarms()  # the condition has ended; the latched alarm goes once acknowledged
    assert not rig.alarms.is_active(AlarmCode.CATHETER_NOT_PRIMED)


def test_unacknowledged_refill_discrepancy_holds_boluses_and_increases(running: Any) -> None:
    """RES-03: a possible pocket fill holds boluses and dose increases until a clinician acknowledges it."""
    running.therapy.configure_patient_bolus(25_000, 10 * MS_PER_MIN)
    expected = running.loop.reservoir_nl()
    refill = running.therapy.refill(removed_nl=expected // 2, added_nl=20_000_000, concentration_ug_per_ml=500,
                                    lot="A1")
    assert refill.allowed and "REFILL_MISMATCH" in refill.reasons
    assert "REFILL_DISCREPANCY_UNACKNOWLEDGED" in running.therapy.patient_bolus_request().reasons
    assert "REFILL_DISCREPANCY_UNACKNOWLEDGED" in running.therapy.clinician_bolus(25_000, 10 * MS_PER_MIN).reasons
    assert running.therapy.titrate(110_000).reasons == ("REFILL_DISCREPANCY_UNACKNOWLEDGED",)
    down = running.therapy.titrate(90_000)  # a decrease is never held
    assert "REFILL_DISCREPANCY_UNACKNOWLEDGED" not in down.reasons
    running.therapy.acknowledge_alarms()
    assert running.therapy.patient_bolus_request().allowed


def _store(clock: VirtualClock) -> Any:
    from controller.store import Store

    return Store(":memory:", clock)


# -- no increase while the catheter holds saline (issue #9) -------------------------------------------------
#
# No requirement ID names the rule; it sits with TIT-01/TIT-04 (an increase is judged against the dose in
# effect) and BOL-06 (the priming that fills the dead volume). The oracle is the fake pump's mechanism: the
# volume it really pushed (``actual_delivered_nl``) against the catheter's dead volume, never the ledger.

DEAD_NL = 250_000  # the prescriptions' 0.25 mL


def test_no_increase_while_the_catheter_holds_saline_after_a_refused_priming() -> None:
    """A refused priming: the dose in effect has not reached the tip, so no raise (hard, no override).

    At 100 µg/day and 500 µg/mL the basal pushes 8.3 µL/h: the 0.25 mL of saline takes 30 h, so 25 h after the
    implant (past the 24 h no-raise rule) the tip has still had no drug. After a re-prime the first 24 h of
    delivery count from the drug at the tip (§1.3, review 11): refused for a day, then allowed.
    """
    clock = VirtualClock()
    pump = FakePump(clock, max_rate_nl_per_h=400_000)
    rig = build_rig(clock, pump, _store(clock))
    assert not rig.therapy.implant(500, 20_000_000, dose_ng_per_day=100_000).allowed
    rig.advance(25 * MS_PER_H)
    assert pump.actual_delivered_nl < DEAD_NL  # the oracle: the mechanism has not yet pushed the dead volume
    raised = rig.therapy.titrate(110_000, override_reason="prescriber insists")
    assert not raised.allowed and raised.reasons == ("CATHETER_NOT_PRIMED",), raised
    assert "saline" in raised.detail
    assert rig.loop.pump_basal_nl_per_h == 8_333  # nothing changed
    rig.therapy.acknowledge_alarms()
    assert rig.therapy.prime(duration_ms=MS_PER_H).allowed
    rig.advance(2 * MS_PER_H)
    assert pump.actual_delivered_nl > DEAD_NL
    early = rig.therapy.titrate(110_000)
    assert not early.allowed and early.reasons == ("INCREASE_WITHIN_24H_OF_START",), early
    rig.advance(MS_PER_DAY)
    assert rig.therapy.titrate(110_000).allowed


def test_a_raise_is_allowed_once_the_basal_has_pushed_the_saline_out_and_decreases_never_wait() -> None:
    """``prime = false`` on a saline catheter: at 25 h (past the 24 h rule, 208 µL pushed of 250) a raise is
    refused and a decrease allowed; at 32 h, the mechanism having pushed the dead volume and the controller
    having polled, the saline no longer holds it, but the first 24 h of delivery at the tip do (§1.3, review
    11); a day later it is judged by the usual rules and allowed."""
    clock = VirtualClock()
    pump = FakePump(clock)
    rig = build_rig(clock, pump, _store(clock))
    assert rig.therapy.implant(500, 20_000_000, dose_ng_per_day=100_000, prime=False).reasons == \
        ("CATHETER_NOT_PRIMED",)
    rig.advance(25 * MS_PER_H)
    assert pump.actual_delivered_nl < DEAD_NL
    refused = rig.therapy.titrate(110_000)
    assert not refused.allowed and refused.reasons == ("CATHETER_NOT_PRIMED",), refused
    assert rig.therapy.titrate(95_000).allowed  # a decrease is never held back by the saline
    rig.advance(7 * MS_PER_H)
    assert pump.actual_delivered_nl > DEAD_NL and rig.loop.saline_in_catheter_nl == 0
    early = rig.therapy.titrate(110_000)
    assert not early.allowed and early.reasons == ("INCREASE_WITHIN_24H_OF_START",), early
    rig.advance(MS_PER_DAY)
    raised = rig.therapy.titrate(110_000)
    assert raised.allowed, raised


@settings(max_examples=60)
@given(dead_ul=st.integers(100, 500), dose_ug_per_day=st.integers(50, 200), every_h=st.integers(1, 8),
       refused_priming=st.booleans())
def test_no_raise_is_accepted_before_the_mechanism_has_pushed_the_dead_volume(
        dead_ul: int, dose_ug_per_day: int, every_h: int, refused_priming: bool) -> None:
    """For any dead volume (0.1-0.5 mL) and basal, a raise asked for every few hours, with a prescriber's
    override of the soft rules, is accepted only once the mechanism has pushed the whole dead volume; and it
    is no longer held back by the saline once it has pushed it plus a poll interval's flow.

    At 50-200 µg/day of 500 µg/mL (4.2-16.7 µL/h) the dead volume takes 6-120 h, so in most cases the saline,
    not the hard 24 h after the start (INCREASE_WITHIN_24H_OF_START), is what holds the raise back.
    """
    clock = VirtualClock()
    pump = FakePump(clock, max_rate_nl_per_h=150_000) if refused_priming else FakePump(clock)
    rig = build_rig(clock, pump, _store(clock), dead_volume_ml=f"{dead_ul / 1000:g}",
                    dose_ug_per_day=dose_ug_per_day)
    dead_nl = dead_ul * 1000
    implant = rig.therapy.implant(500, 20_000_000, dose_ng_per_day=dose_ug_per_day * 1000,
                                  prime=None if refused_priming else False)
    assert not implant.allowed and rig.loop.mode is Mode.RUNNING, implant
    rate_nl_per_h = rig.loop.pump_basal_nl_per_h
    margin_nl = rate_nl_per_h * rig.settings.poll_interval_ms // MS_PER_H + 1_000
    for _ in range(8 * 24 // every_h):
        rig.advance(every_h * MS_PER_H)
        pushed_nl = pump.actual_delivered_nl
        raised = rig.therapy.titrate(dose_ug_per_day * 1100, override_reason="prescriber insists")
        if raised.allowed:
            assert pushed_nl >= dead_nl, (pushed_nl, dead_nl)
            return
        if pushed_nl >= dead_nl + margin_nl:
            assert "CATHETER_NOT_PRIMED" not in raised.reasons, (pushed_nl, dead_nl, raised)
    raise AssertionError(f"no raise accepted in 8 days ({pump.actual_delivered_nl} nL pushed, {dead_nl} dead)")


def test_a_flex_programme_that_raises_the_daily_dose_waits_for_the_saline_too() -> None:
    """The same rule on the other increase path: a flex programme whose day totals more than the dose in effect
    (115 of 100 µg/day, with a prescriber's override) is refused while the mechanism has pushed less than the
    dead volume; one that totals less is allowed (a decrease never waits)."""
    clock = VirtualClock()
    pump = FakePump(clock)
    rig = build_rig(clock, pump, _store(clock))
    rig.therapy.implant(500, 20_000_000, dose_ng_per_day=100_000, prime=False)
    rig.advance(25 * MS_PER_H)
    assert pump.actual_delivered_nl < DEAD_NL
    raised = rig.therapy.set_flex([(0, 100_000), (12 * MS_PER_H, 130_000)], override_reason="prescriber insists")
    assert not raised.allowed and raised.reasons == ("CATHETER_NOT_PRIMED",), raised
    assert rig.loop.programme is None and rig.loop.pump_basal_nl_per_h == 8_333
    lowered = rig.therapy.set_flex([(0, 100_000), (12 * MS_PER_H, 90_000)])
    assert lowered.allowed, lowered
