"""The restart rule and an emergency discontinue are alarmed, not only journalled (issue #9, review 11).

B2. After an interruption of the restart threshold or longer the resume and the journal named the restart
rule, but no alarm did (#9: "the alarm and the journal say why"). RESTARTED_AT_STARTING_DOSE (medium,
latched until acknowledged) names the rule, the interruption's length and the dose resumed against the
dose before. The rule (itb-clinical §1.6 [JP-LBL], §3.3 [OD91]) is computed here by hand: a transferred
patient documented at 300 µg/day restarts at the lower of that and 2 x the 50 µg first test dose, 100
µg/day, after 24 h or more; the dose resumed is read from the fake pump's own rate.

B3. An emergency discontinue left the patient 2 days at zero with no withdrawal alarm: it is the abrupt
stop of the boxed warning (§1.6 "never stop abruptly", §3.2). WITHDRAWAL_RISK (high) is raised at once,
naming oral baclofen and benzodiazepine cover; a discontinue that ends a completed taper raises none.
The dose at the tip is the fake pump's pushed volume through :class:`sim.catheter.PhysicalCatheter`.

ALM-01 (priority and rationale in the table), ALM-03 (latched until acknowledged), ALM-06 (journalled),
TIT-03 (zero only through a discontinue or taper), SAFE-03, PER-02 (held across a restart).
"""

from __future__ import annotations

from typing import Any

import pytest

from controller.alarms import ALARM_TABLE, AlarmCode, Priority
from controller.loop import Mode
from tests.controller.conftest import MS_PER_DAY, MS_PER_H, MS_PER_MIN, Rig
from tests.controller.test_transit import TipOracle

RESTART = AlarmCode.RESTARTED_AT_STARTING_DOSE
RATE_NL_PER_H = {300: 25_000, 100: 8_333}  # µg/day at 500 µg/mL, as the pump's 4-digit rate holds them
THRESHOLD_H = 24  # the documented default (restart_titration_after_h)


def _documented_300(make_rig: Any, **rx: Any) -> Rig:
    rig = make_rig(concentration=500, dose_ug_per_day=300, dead_volume_ml="0.25", **rx)
    assert rig.therapy.implant(500, rx.get("reservoir_ml", 20) * 1_000_000, dose_ng_per_day=300_000,
                               catheter="drug").allowed
    return rig


def _journalled(rig: Rig, code: AlarmCode) -> list[Any]:
    return [e for e in rig.store.entries() if e.new and e.new.get("code") == code.value]


def _raised(rig: Rig, code: AlarmCode) -> list[dict[str, Any]]:
    return [e for e in rig.log.events if e["event"] == "raise" and e["code"] == code.value]


@pytest.mark.parametrize("hours", [23, 24, 25])
def test_a_restart_past_the_threshold_is_alarmed_naming_the_rule_the_length_and_both_doses(
        make_rig: Any, hours: int) -> None:
    """B2, ALM-01, ALM-03, ALM-06: a stall of ``hours``, then the clinician acknowledges and therapy resumes. By
    hand: >= 24 h resumes at 100 µg/day (the pump's rate says so) and RESTARTED_AT_STARTING_DOSE is raised,
    medium, latched until the next acknowledgement, its detail (and the journal's) naming the restart rule,
    the length and 100 against 300 µg/day; 23 h resumes at 300 with no such alarm."""
    rig = _documented_300(make_rig)
    rig.advance(2 * MS_PER_DAY)
    rig.advance(rig.loop.schedule.next_poll_ms - rig.loop.now_ms())
    rig.pump.inject_stall()
    began = rig.loop.now_ms()
    rig.advance(hours * MS_PER_H)
    rig.therapy.acknowledge_alarms()
    assert rig.loop.mode is Mode.RUNNING
    long = hours >= THRESHOLD_H
    assert rig.pump.rate_nl_per_h == RATE_NL_PER_H[100 if long else 300]
    if not long:
        assert not _raised(rig, RESTART)
        return
    spec = ALARM_TABLE[RESTART]
    assert spec.priority is Priority.MEDIUM and spec.latching and "restart rule" in spec.message
    raised = _raised(rig, RESTART)
    assert len(raised) == 1, raised
    detail = raised[0]["detail"]
    length_h = (rig.loop.now_ms() - began) / MS_PER_H
    assert "restart rule" in detail and f"{length_h:.1f} h interruption" in detail, detail
    assert "resumed at 100 µg/day" in detail and "300 µg/day before" in detail, detail
    assert any(e.reason == detail for e in _journalled(rig, RESTART))
    rig.advance(MS_PER_H)
    assert rig.alarms.is_active(RESTART)  # latched: its event is over, a clinician has not seen it
    rig = rig.restart()  # PER-02: a controller restart does not drop it
    rig.advance(MS_PER_MIN)
    assert rig.alarms.is_active(RESTART)
    rig.therapy.acknowledge_alarms()
    assert not rig.alarms.is_active(RESTART)
    rig = rig.restart()
    rig.advance(MS_PER_MIN)
    assert not rig.alarms.is_active(RESTART)


def test_a_missed_refill_refilled_at_a_new_concentration_after_the_threshold_is_alarmed(make_rig: Any) -> None:
    """B2 on the other resume path: the reservoir runs empty (minimum rate), and 25 h later a refill at 1000 µg/mL
    resumes by the restart rule (by hand: 100 µg/day, the pump holding 100 µg/day's volume rate of the old drug
    while it crosses) with the alarm naming the rule and 100 against 300 µg/day."""
    rig = _documented_300(make_rig, reservoir_ml=4)
    for _ in range(240):
        rig.advance(MS_PER_H)
        if rig.loop.mode is Mode.MINIMUM_RATE:
            break
    assert rig.loop.mode is Mode.MINIMUM_RATE
    rig.advance(25 * MS_PER_H)
    refill = rig.therapy.refill(removed_nl=rig.loop.reservoir_nl(), added_nl=20_000_000,
                                concentration_ug_per_ml=1000, lot="R2")
    assert refill.allowed, refill
    # The old drug crosses at the volume rate of 100 µg/day at 500 µg/mL, rounded down (never above).
    assert rig.loop.mode is Mode.RUNNING and RATE_NL_PER_H[100] - 1 <= rig.pump.rate_nl_per_h <= RATE_NL_PER_H[100]
    raised = _raised(rig, RESTART)
    assert len(raised) == 1 and "resumed at 100 µg/day" in raised[0]["detail"], raised
    assert "300 µg/day before" in raised[0]["detail"] and "restart rule" in raised[0]["detail"]
    assert rig.alarms.is_active(RESTART)


def test_an_automatic_resume_after_a_stop_found_late_is_alarmed_too(make_rig: Any) -> None:
    """B2 on the loop's own resume (a CONTINUE reaction): the pump stops while the link is down for 25 h; when the
    link is back the controller finds it stopped and resumes by itself, by hand at 100 µg/day (the pump's rate),
    and RESTARTED_AT_STARTING_DOSE names the rule, the length and 100 against 300 µg/day."""
    rig = _documented_300(make_rig)
    rig.advance(2 * MS_PER_DAY)
    rig.pump.faults.comms_down = True
    rig.advance(5 * MS_PER_MIN)
    rig.pump.faults.comms_down = False
    rig.pump.stop()  # unseen: the link is down again at once
    rig.pump.faults.comms_down = True
    rig.advance(25 * MS_PER_H)
    rig.pump.faults.comms_down = False
    rig.advance(MS_PER_H)
    assert rig.loop.mode is Mode.RUNNING and rig.pump.rate_nl_per_h == RATE_NL_PER_H[100]
    raised = _raised(rig, RESTART)
    assert len(raised) == 1, raised
    detail = raised[0]["detail"]
    assert "restart rule" in detail and "resumed at 100 µg/day" in detail and "300 µg/day before" in detail, detail
    assert " h interruption" in detail and "threshold 24 h" in detail, detail
    assert rig.alarms.is_active(RESTART)


def _tip_rig(make_rig: Any, dose_ug_per_day: int) -> tuple[Rig, TipOracle]:
    rig = make_rig(concentration=500, dose_ug_per_day=dose_ug_per_day, dead_volume_ml="0.25")
    oracle = TipOracle(rig, rig.prescription.pump.dead_volume_nl)
    oracle.catheter.fill(500)
    oracle.fill(500)
    assert rig.therapy.implant(500, 20_000_000, dose_ng_per_day=dose_ug_per_day * 1000, catheter="drug").allowed
    for _ in range(2 * MS_PER_DAY // (30 * MS_PER_MIN)):
        oracle.step(30 * MS_PER_MIN)
    return rig, oracle


def test_an_emergency_discontinue_raises_the_withdrawal_alarm_naming_oral_cover(make_rig: Any) -> None:
    """B3, TIT-03, SAFE-03, ALM-03, PER-02: the abrupt stop of 300 µg/day raises WITHDRAWAL_RISK (high) at once,
    naming the dose stopped, oral baclofen and a benzodiazepine; physics: nothing reaches the tip for the two
    days after. It stays active through an acknowledgement (the patient is still without the drug) and a
    controller restart."""
    rig, oracle = _tip_rig(make_rig, 300)
    result = rig.therapy.discontinue(authorised_by="dr.reviewer", emergency=True)
    assert result.allowed and rig.loop.mode is Mode.DISCONTINUED, result
    raised = _raised(rig, AlarmCode.WITHDRAWAL_RISK)
    assert len(raised) == 1 and raised[0]["priority"] == "HIGH", raised
    detail = raised[0]["detail"]
    assert "emergency discontinue" in detail and "300 µg/day" in detail and "no taper" in detail, detail
    assert "oral baclofen" in detail and "benzodiazepine" in detail, detail
    assert any(e.reason == detail for e in _journalled(rig, AlarmCode.WITHDRAWAL_RISK))
    for _ in range(4):
        oracle.step(12 * MS_PER_H)
    assert oracle.last_24h_pg() == 0  # the label's hazard: two days at zero
    rig.therapy.acknowledge_alarms()
    assert rig.alarms.is_active(AlarmCode.WITHDRAWAL_RISK)
    again = rig.restart()
    again.advance(MS_PER_H)
    assert again.alarms.is_active(AlarmCode.WITHDRAWAL_RISK)


def test_a_discontinue_that_ends_a_completed_taper_raises_no_withdrawal_alarm(make_rig: Any) -> None:
    """B3, TIT-03 (planned removals taper): 40 µg/day tapered by <= 20 % every 2 days to the minimum-rate dose, then
    the authorised stop: no WITHDRAWAL_RISK, and the physical tip dose fell in steps (never more than 20 % below
    the day before, give or take the pump's rate step and the window's edges) before it stopped."""
    rig, oracle = _tip_rig(make_rig, 40)
    assert rig.therapy.taper(0, authorised_by="dr.reviewer").allowed
    daily: list[int] = []
    for _ in range(30):
        for _ in range(48):
            oracle.step(30 * MS_PER_MIN)
        daily.append(oracle.last_24h_pg())
        if rig.loop.mode is Mode.DISCONTINUED:
            break
    assert rig.loop.mode is Mode.DISCONTINUED
    assert not _raised(rig, AlarmCode.WITHDRAWAL_RISK), _raised(rig, AlarmCode.WITHDRAWAL_RISK)
    delivering = daily[:-1]
    assert delivering[-1] * 100 <= 40_000_000 * 70  # it came down before the stop
    assert all(b * 100 >= a * 79 for a, b in zip(delivering, delivering[1:])), daily
