"""Clinical workflows: screening, implant, titration, boluses, refill, taper and discontinue."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.alarms import AlarmCode
from controller.loop import Mode
from cython_ext.errors import ConfigError
from hal.pump import PumpState

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000


# -- screening and implant ----------------------------------------------------------------------------


HIGH_CAP_OVERRIDE = """
[[soft_limit_overrides]]
field = "titration.max_dose_ug_per_day"
reason = "a high cap for a concentration-change test"
prescriber = "dr.test"
"""


def test_screening_sequence_and_interval(screened) -> None:
    rig = screened
    th = rig.therapy
    assert th.screening_dose(75, adequate=True).reasons == ("SCREENING_ORDER",)
    assert th.screening_dose(50, adequate=False).allowed
    rig.advance(23 * MS_PER_H)
    assert th.screening_dose(75, adequate=True).reasons == ("SCREENING_INTERVAL",)
    rig.advance(MS_PER_H)
    assert th.screening_dose(75, adequate=True).allowed
    assert th.screening_dose(100, adequate=True).reasons == ("SCREENING_COMPLETE",)
    assert th.starting_dose_ng_per_day() == 150_000  # twice the effective dose


def test_long_effect_starts_at_the_test_dose(screened) -> None:
    rig = screened
    rig.therapy.screening_dose(50, adequate=True, effect_ms=9 * MS_PER_H)
    assert rig.therapy.starting_dose_ng_per_day() == 50_000


def test_no_response_to_100_ug_is_not_a_candidate(screened) -> None:
    rig = screened
    th = rig.therapy
    for dose in (50, 75, 100):
        assert th.screening_dose(dose, adequate=False).allowed
        rig.advance(MS_PER_DAY)
    assert th.implant(500, 20_000_000).reasons == ("NOT_A_CANDIDATE",)
    assert rig.pump.command_log == []  # nothing reached the pump


def test_implant_starts_at_twice_the_screening_dose_and_primes(screened) -> None:
    rig = screened
    rig.therapy.screening_dose(50, adequate=True, effect_ms=5 * MS_PER_H)
    result = rig.therapy.implant(500, 20_000_000)
    assert result.allowed
    assert rig.gate.daily_dose_ng() == 99_996  # 100 µg/day, rate rounded down
    priming = [b for b in rig.store.boluses() if b.kind == "priming"]
    assert len(priming) == 1 and priming[0].volume_nl == 250_000
    rig.advance(MS_PER_H)
    assert rig.pump.rate_nl_per_h == 8333  # back to basal after the priming bolus


def test_implant_rejects_overfill(rig) -> None:
    rig.therapy.screening_dose(50, adequate=True)
    with pytest.raises(ConfigError, match="fill_nl"):
        rig.therapy.implant(500, 40_000_000)


# -- titration ---------------------------------------------------------------------------------------


def test_titration_interval_and_cap(running) -> None:
    th = running.therapy
    running.advance(MS_PER_DAY)
    assert th.titrate(120_000).allowed
    assert th.titrate(125_000).reasons == ("TITRATION_INTERVAL",)
    running.advance(MS_PER_DAY)
    assert "TITRATION_CAP_EXCEEDED" in th.titrate(170_000).reasons  # +41 % > 30 % spinal cap
    assert th.titrate(150_000).allowed  # +25 %
    assert running.pump.rate_nl_per_h == 12_500


def test_zero_dose_only_by_discontinue(running) -> None:
    assert running.therapy.titrate(0).reasons == ("ZERO_ONLY_BY_DISCONTINUE",)
    assert running.pump.state is PumpState.INFUSING


def test_large_decrease_needs_confirmation(running) -> None:
    assert running.therapy.titrate(50_000).reasons == ("DECREASE_NEEDS_CONFIRMATION",)
    assert running.therapy.titrate(50_000, override_reason="sedation").allowed


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.integers(1, 36), st.integers(-25, 40)), min_size=1, max_size=8))
def test_net_increase_over_any_24h_stays_within_cap(make_rig, steps) -> None:
    rig = make_rig()
    rig.therapy.implant(500, 20_000_000, dose_ng_per_day=100_000, catheter="drug")
    history = [(rig.loop.now_ms(), rig.gate.daily_dose_ng())]
    for hours, pct in steps:
        rig.advance(hours * MS_PER_H)
        target = max(30_000, rig.therapy.prescribed_dose_ng_per_day * (100 + pct) // 100)
        if rig.therapy.titrate(target).allowed:
            history.append((rig.loop.now_ms(), rig.gate.daily_dose_ng()))
    for t, dose in history:
        earlier = [d for t0, d in history if t0 <= t - MS_PER_DAY] or [history[0][1]]
        assert dose * 100 <= earlier[-1] * 130 or dose <= history[0][1]


# -- boluses -----------------------------------------------------------------------------------------


def test_patient_bolus_lockout_and_count(running) -> None:
    th = running.therapy
    assert th.patient_bolus_request().reasons == ("PATIENT_BOLUS_NOT_CONFIGURED",)
    th.configure_patient_bolus(25_000, 10 * MS_PER_MIN)
    results = []
    for _ in range(6):
        results.append(th.patient_bolus_request())
        running.advance(2 * MS_PER_H)
    allowed = [r.allowed for r in results]
    assert allowed == [True, False, True, False, True, False]  # 4 h lockout
    assert all(r.reasons == ("BOLUS_LOCKOUT",) for r in results if not r.allowed)


def test_bolus_refused_during_high_alarm_and_session(running) -> None:
    th = running.therapy
    th.configure_patient_bolus(25_000, 10 * MS_PER_MIN)
    running.alarms.raise_alarm(AlarmCode.OVER_DELIVERY_SUSPECTED, detail="test")
    assert "HIGH_PRIORITY_ALARM" in th.patient_bolus_request().reasons
    running.alarms.clear(AlarmCode.OVER_DELIVERY_SUSPECTED)
    th.acknowledge_alarms()
    running.loop.session_open = "programming"
    assert "SESSION_OPEN" in th.patient_bolus_request().reasons
    running.loop.session_open = None
    assert th.patient_bolus_request().allowed


def test_bolus_near_the_cap_is_denied(make_rig) -> None:
    rig = make_rig(max_dose_ug_per_day=130)
    rig.therapy.implant(500, 20_000_000, dose_ng_per_day=100_000, catheter="drug")
    rig.advance(2 * MS_PER_DAY)
    result = rig.therapy.clinician_bolus(40_000, 10 * MS_PER_MIN)
    assert "DOSE_CAP_24H" in result.reasons
    assert "dose_cap_breach_attempt" in rig.log.raised()
    assert "HIGH_PRIORITY_ALARM" in rig.therapy.clinician_bolus(20_000, 10 * MS_PER_MIN).reasons
    rig.therapy.acknowledge_alarms()
    assert rig.therapy.clinician_bolus(20_000, 10 * MS_PER_MIN).allowed


def test_bolus_delivers_its_volume_once(running) -> None:
    before = running.pump.infused_nl
    assert running.therapy.clinician_bolus(50_000, 10 * MS_PER_MIN).allowed
    running.advance(MS_PER_H)
    record = [b for b in running.store.boluses() if b.kind == "clinician"][0]
    assert record.status == "finished"
    assert abs(record.delivered_nl - 100_000) <= 20  # 50 µg at 500 µg/mL
    basal = 8333 * (running.pump.infused_nl - before - record.delivered_nl) // 8333
    assert running.pump.infused_nl - before == record.delivered_nl + basal


# -- refill ----------------------------------------------------------------------------------------------


def test_refill_mismatch_needs_acknowledgement(running) -> None:
    expected = running.loop.reservoir_nl()
    result = running.therapy.refill(removed_nl=expected // 2, added_nl=20_000_000, concentration_ug_per_ml=500,
                                    lot="A1")
    assert result.allowed and "REFILL_MISMATCH" in result.reasons
    held = {a.code for a in running.alarms.active()}
    assert AlarmCode.REFILL_DISCREPANCY in held  # latched until a clinician acknowledges
    running.therapy.acknowledge_alarms()
    assert AlarmCode.REFILL_DISCREPANCY not in {a.code for a in running.alarms.active()}


def test_unfinished_refill_keeps_programme_and_alarms(running) -> None:
    rate = running.pump.rate_nl_per_h
    result = running.therapy.refill(removed_nl=running.loop.reservoir_nl(), added_nl=20_000_000,
                                    concentration_ug_per_ml=2000, lot="A1", complete=False)
    assert not result.allowed and "SESSION_UNFINISHED" in result.reasons
    assert "unfinished_session" in running.log.raised()
    assert running.pump.rate_nl_per_h == rate and running.pump.state is PumpState.INFUSING
    assert running.loop.concentration_ug_per_ml == 500
    assert running.loop.session_open is None


def test_concentration_not_in_library_is_refused_before_the_fill(running) -> None:
    result = running.therapy.refill(removed_nl=running.loop.reservoir_nl(), added_nl=10_000_000,
                                    concentration_ug_per_ml=1500, lot="X")
    assert not result.allowed and "CONCENTRATION_NOT_IN_LIBRARY" in result.reasons
    assert running.loop.concentration_ug_per_ml == 500


# -- taper and discontinue ---------------------------------------------------------------------------------


def test_discontinue_needs_authorisation_and_a_taper(running) -> None:
    th = running.therapy
    assert "DISCONTINUE_NOT_AUTHORISED" in th.discontinue(authorised_by=None).reasons
    assert "TAPER_INCOMPLETE" in th.discontinue(authorised_by="dr-who").reasons
    assert running.pump.state is PumpState.INFUSING


def test_taper_steps_down_at_most_20_pct_every_2_days_then_stops(running) -> None:
    th = running.therapy
    result = th.taper(0, authorised_by="dr-who")
    assert result.allowed
    doses = [running.gate.daily_dose_ng()]
    for _ in range(40):
        running.advance(MS_PER_DAY)
        if running.gate.daily_dose_ng() != doses[-1]:
            doses.append(running.gate.daily_dose_ng())
        if running.loop.mode is Mode.DISCONTINUED:
            break
    assert running.loop.mode is Mode.DISCONTINUED
    assert running.pump.state is not PumpState.INFUSING
    steps = [d for d in doses if d]
    # Each step cuts at most 20 %, give or take one pump rate step (1 nL/h = 12 ng/day at 500 µg/mL).
    assert all(b * 100 >= a * 80 - 12 * 100 for a, b in zip(steps, steps[1:]))
    assert steps[-1] == 24_000  # the minimum-rate dose, then the authorised stop


def test_emergency_discontinue_stops_now(running) -> None:
    result = running.therapy.discontinue(authorised_by="dr-who", emergency=True)
    assert result.allowed
    assert running.loop.mode is Mode.DISCONTINUED
    assert running.pump.state is not PumpState.INFUSING


def test_lower_concentration_holds_the_old_rate_through_the_transit(make_rig) -> None:
    rig = make_rig(max_dose_ug_per_day=2000, concentration=2000, extra=HIGH_CAP_OVERRIDE)
    rig.therapy.implant(2000, 20_000_000, dose_ng_per_day=400_000)  # 0.2 mL/day
    rig.advance(3 * MS_PER_DAY)
    result = rig.therapy.refill(removed_nl=rig.loop.reservoir_nl(), added_nl=20_000_000,
                                concentration_ug_per_ml=1000, lot="C3")
    assert result.allowed, result
    assert rig.pump.rate_nl_per_h == 8333  # still the 2000 µg/mL rate: the catheter holds 2000 µg/mL drug
    rig.advance(29 * MS_PER_H)
    assert rig.pump.rate_nl_per_h == 8333  # 0.25 mL at 0.2 mL/day takes 30 h, not cut at 24 h
    rig.advance(2 * MS_PER_H)
    assert rig.pump.rate_nl_per_h == 16_666  # then 400 µg/day at 1000 µg/mL
    peak = 0
    for _ in range(96):
        rig.advance(MS_PER_H)
        peak = max(peak, rig.gate.total_24h_ng(rig.loop.now_ms()))
    assert peak <= 460_000  # no overdose spike at the tip (about 400 µg/day throughout)


def _missed_refill(make_rig):
    rig = make_rig()
    rig.therapy.implant(500, 3_000_000, dose_ng_per_day=400_000, catheter="drug")
    rig.advance(3 * MS_PER_DAY + 6 * MS_PER_H)
    assert rig.loop.mode is Mode.MINIMUM_RATE  # the empty threshold was reached, 2.5 h ago
    return rig


def test_refill_in_minimum_rate_mode_at_the_same_concentration(make_rig) -> None:
    rig = _missed_refill(make_rig)
    assert rig.therapy.refill(removed_nl=rig.loop.reservoir_nl(), added_nl=20_000_000,
                              concentration_ug_per_ml=500, lot="Z").allowed
    rig.therapy.acknowledge_alarms()
    assert rig.loop.mode is Mode.RUNNING
    assert rig.pump.rate_nl_per_h == 33_333  # back on the prescribed 400 µg/day


def test_refill_in_minimum_rate_mode_at_a_new_concentration_resumes_through_the_transit(make_rig) -> None:
    """RES-05, PRX-06, the restart rule: a refill ends a missed refill's minimum rate, even with a new drug. The
    interruption (2.5 h) is under the 24 h threshold, so the prescribed 400 µg/day comes back; the catheter still
    holds 500 µg/mL, which crosses at its own rate (33 332 nL/h) before the 2000 µg/mL rate (8 333 nL/h)."""
    rig = _missed_refill(make_rig)
    result = rig.therapy.refill(removed_nl=rig.loop.reservoir_nl(), added_nl=20_000_000,
                                concentration_ug_per_ml=2000, lot="Z")
    assert result.allowed, result
    assert rig.loop.mode is Mode.RUNNING and rig.pump.rate_nl_per_h == 33_332
    rig.advance(10 * MS_PER_H)  # 0.25 mL at 33.3 µL/h: 7.5 h
    assert rig.loop.transit is None and rig.pump.rate_nl_per_h == 8_333


@pytest.mark.parametrize("dose_ng_per_day", [0, 120_000])
def test_a_titration_before_the_implant_is_refused_as_not_started(rig, dose_ng_per_day) -> None:
    """TIT-01, TIT-03: before the implant there is no dose to titrate. A relative step (+20 % of nothing is 0) or an
    absolute one is refused NOT_RUNNING, saying therapy has not started, not ZERO_ONLY_BY_DISCONTINUE; nothing is
    sent to the pump."""
    result = rig.therapy.titrate(dose_ng_per_day)
    assert not result.allowed and result.reasons == ("NOT_RUNNING",), result
    assert "therapy has not started" in result.detail
    assert rig.pump.command_log == [] and rig.loop.mode is Mode.IDLE


def test_zero_after_the_implant_is_still_only_by_discontinue(rig) -> None:
    """TIT-03: once therapy runs, a titration to zero is refused ZERO_ONLY_BY_DISCONTINUE."""
    assert rig.therapy.implant(500, 10_000_000, dose_ng_per_day=100_000, catheter="drug").allowed
    result = rig.therapy.titrate(0)
    assert not result.allowed and result.reasons == ("ZERO_ONLY_BY_DISCONTINUE",), result
