"""Reservoir and refill arithmetic: worked examples of itb-clinical section 5 and properties (RES-01..06, BOL-06)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.alarms import AlarmCode
from controller.reservoir import (
    MAX_REFILL_INTERVAL_DAYS,
    RefillRecord,
    ReservoirSettings,
    ReservoirState,
    alarm_levels,
    check_refill,
    days_until,
    forecast,
    plan_transit,
    plan_priming_bolus,
    transit_delay_ms,
)
from cython_ext import units
from cython_ext.errors import ConfigError

ML = units.NL_PER_ML
T0 = datetime(2026, 1, 5, tzinfo=timezone.utc)


def ml(text: str) -> int:
    return units.decimal_to_units(text, ML)


def test_worked_example_190_days() -> None:
    """40 mL pump, 0.2 mL/day, 2 mL alarm: (40 - 2) / 0.2 = 190 days."""
    settings = ReservoirSettings(ml("40"), ml("2"), 1, ml("0.5"))
    fc = forecast(ReservoirState(ml("40"), 0, T0), ml("0.2"), settings, T0)
    assert fc.days_to_low_alarm == 190
    assert fc.low_alarm_utc == T0 + timedelta(days=190)
    assert fc.days_to_empty == 200
    # refill: min(alarm - 5 days, fill + 180 days) = fill + 180 days
    assert fc.refill_due_utc == T0 + timedelta(days=MAX_REFILL_INTERVAL_DAYS)


def test_worked_example_22_5_days() -> None:
    """20 mL pump, 0.8 mL/day, 2 mL alarm: (20 - 2) / 0.8 = 22.5 days."""
    settings = ReservoirSettings(ml("20"), ml("2"), 1, ml("0.5"))
    fc = forecast(ReservoirState(ml("20"), 0, T0), ml("0.8"), settings, T0, refill_margin_days=3)
    assert fc.days_to_low_alarm == Fraction(45, 2)
    assert fc.low_alarm_utc == T0 + timedelta(days=22, hours=12)
    assert fc.refill_due_utc == T0 + timedelta(days=19, hours=12)


def test_days_trigger_can_come_first() -> None:
    """With a 7-day trigger, 20 mL at 0.8 mL/day alarms at 25 - 7 = 18 days, before the 2 mL volume trigger."""
    settings = ReservoirSettings(ml("20"), ml("2"), 7, ml("0.5"))
    fc = forecast(ReservoirState(ml("20"), 0, T0), ml("0.8"), settings, T0)
    assert fc.days_to_low_alarm == 18
    assert fc.refill_due_utc == T0 + timedelta(days=13)


@pytest.mark.parametrize(
    ("delivered", "triggers"),
    [
        (ml("17.9"), ()),
        (ml("18"), ("volume",)),  # exactly 2 mL left: at the threshold
        (ml("19.3"), ("volume", "days")),  # 0.7 mL left is 0.875 days
    ],
)
def test_low_alarm_volume_trigger_boundary(delivered: int, triggers: tuple[str, ...]) -> None:
    settings = ReservoirSettings(ml("20"), ml("2"), 1, ml("0.5"))
    fc = forecast(ReservoirState(ml("20"), delivered, T0), ml("0.8"), settings, T0)
    assert fc.low_triggers == triggers


def test_low_alarm_days_trigger_alone() -> None:
    """4 mL left at 0.8 mL/day is 5 days: the 7-day trigger fires, the 2 mL volume trigger does not."""
    settings = ReservoirSettings(ml("20"), ml("2"), 7, ml("0.5"))
    fc = forecast(ReservoirState(ml("20"), ml("16"), T0), ml("0.8"), settings, T0)
    assert fc.low_triggers == ("days",)
    assert fc.low and not fc.empty
    assert fc.days_to_low_alarm == 0


def test_empty_threshold() -> None:
    settings = ReservoirSettings(ml("20"), ml("2"), 7, ml("0.5"))
    assert forecast(ReservoirState(ml("20"), ml("19.5"), T0), ml("0.8"), settings, T0).empty
    assert not forecast(ReservoirState(ml("20"), ml("19.4"), T0), ml("0.8"), settings, T0).empty


@pytest.mark.parametrize("margin", [2, 6, True, "4"])
def test_refill_margin_must_be_3_to_5_days(margin: object) -> None:
    settings = ReservoirSettings(ml("20"), ml("2"), 7, ml("0.5"))
    with pytest.raises(ConfigError) as excinfo:
        forecast(ReservoirState(ml("20"), 0, T0), ml("0.8"), settings, T0, refill_margin_days=margin)  # type: ignore[arg-type]
    assert excinfo.value.field == "refill_margin_days"


@pytest.mark.parametrize(
    ("capacity", "low", "empty"), [(ml("20"), ml("20"), 0), (ml("20"), ml("2"), ml("2")), (ml("20"), -1, 0)]
)
def test_settings_must_be_ordered(capacity: int, low: int, empty: int) -> None:
    with pytest.raises(ConfigError):
        ReservoirSettings(capacity, low, 7, empty)


@pytest.mark.parametrize("moment", [datetime(2026, 1, 5), "2026-01-05T00:00:00+00:00"])
def test_fill_and_forecast_times_must_be_timezone_aware(moment: object) -> None:
    """Records store UTC plus an offset: a naive datetime (or no datetime) is rejected, naming the field."""
    settings = ReservoirSettings(ml("20"), ml("2"), 7, ml("0.5"))
    with pytest.raises(ConfigError) as excinfo:
        ReservoirState(ml("20"), 0, moment)  # type: ignore[arg-type]
    assert excinfo.value.field == "fill_utc"
    with pytest.raises(ConfigError) as excinfo:
        forecast(ReservoirState(ml("20"), 0, T0), ml("0.8"), settings, moment)  # type: ignore[arg-type]
    assert excinfo.value.field == "now_utc"


def test_zero_daily_volume_is_rejected() -> None:
    with pytest.raises(ConfigError) as excinfo:
        days_until(ml("10"), 0)
    assert excinfo.value.field == "daily_volume_nl"


@given(
    filled=st.integers(0, ml("40")),
    deliveries=st.lists(st.integers(0, ml("5")), max_size=30),
)
def test_estimate_is_filled_minus_delivered_never_negative(filled: int, deliveries: list[int]) -> None:
    state = ReservoirState(filled, 0, T0)
    for volume in deliveries:
        previous = state.remaining_nl
        state = state.after_delivery(volume)
        assert state.remaining_nl <= previous
    assert state.delivered_nl == sum(deliveries)
    assert state.remaining_nl >= 0
    assert state.remaining_nl - state.overdrawn_nl == filled - sum(deliveries)


@given(
    filled=st.integers(ml("1"), ml("40")),
    delivered=st.integers(0, ml("40")),
    daily=st.integers(2_000 * 24, ml("24")),
    low_days=st.integers(0, 30),
    margin=st.integers(3, 5),
)
def test_forecast_properties(filled: int, delivered: int, daily: int, low_days: int, margin: int) -> None:
    settings = ReservoirSettings(ml("40"), ml("2"), low_days, ml("0.5"))
    state = ReservoirState(filled, delivered, T0)
    fc = forecast(state, daily, settings, T0, refill_margin_days=margin)
    assert fc.days_to_low_alarm >= 0
    assert fc.days_to_low_alarm <= fc.days_to_empty_threshold or fc.days_to_low_alarm == 0
    assert fc.days_to_empty_threshold <= fc.days_to_empty
    assert fc.refill_due_utc <= T0 + timedelta(days=MAX_REFILL_INTERVAL_DAYS)
    assert fc.refill_due_utc <= fc.low_alarm_utc - timedelta(days=margin)
    assert fc.low == (state.remaining_nl <= settings.low_alarm_nl or fc.days_to_empty <= low_days)
    later = forecast(state.after_delivery(ml("0.1")), daily, settings, T0)
    assert later.days_to_low_alarm <= fc.days_to_low_alarm


def test_transit_delay_worked_examples() -> None:
    """0.25 mL dead volume: 1.25 days at 0.2 mL/day, about 7.5 h at 0.8 mL/day."""
    assert transit_delay_ms(ml("0.25"), units.rate_nl_per_h_for_ml_per_day("0.2")) == pytest.approx(
        1.25 * units.MS_PER_DAY, rel=1e-4
    )
    assert transit_delay_ms(ml("0.25"), units.rate_nl_per_h_for_ml_per_day("0.8")) == pytest.approx(
        7.5 * units.MS_PER_H, rel=1e-4
    )


def test_transit_500_to_2000() -> None:
    """Without the transit the patient gets 25 % of the dose while the old drug crosses; with it, the old rate."""
    plan = plan_transit(ml("0.25"), 500, 2000, 400_000)
    assert plan.untransited_dose_ratio == Fraction(1, 4)
    assert plan.volume_nl == ml("0.25")
    assert plan.new_rate_nl_per_h == 8_333  # 0.2 mL/day, rounded down
    assert plan.rate_nl_per_h == 33_332  # the programme's 8 333 nL/h x 4: 0.8 mL/day less a rounding nL/h
    assert plan.mass_ng == 125_000  # 0.25 mL of 500 µg/mL
    assert plan.duration_ms == pytest.approx(7.5 * units.MS_PER_H, rel=1e-4)


def test_transit_2000_to_500_avoids_fourfold_overdose() -> None:
    plan = plan_transit(ml("0.25"), 2000, 500, 400_000)
    assert plan.untransited_dose_ratio == 4
    assert plan.mass_ng == 500_000
    assert plan.duration_ms == pytest.approx(1.25 * units.MS_PER_DAY, rel=1e-4)


def test_transit_needs_a_concentration_change() -> None:
    with pytest.raises(ConfigError) as excinfo:
        plan_transit(ml("0.25"), 500, 500, 400_000)
    assert excinfo.value.field == "new_concentration_ug_per_ml"


@given(
    dead=st.integers(1, ml("1")),
    old=st.sampled_from([500, 1000, 2000]),
    new=st.sampled_from([500, 1000, 2000]),
    dose=st.integers(12_000, 2_003_000),
)
def test_transit_delivers_the_dead_volume_at_the_new_programmes_dose(dead: int, old: int, new: int, dose: int) -> None:
    """The old drug crosses at the dose the new programme gives, never above it, and within rounding of it."""
    if old == new:
        return
    plan = plan_transit(dead, old, new, dose)
    assert plan.mass_ng == units.mass_ng_for_volume(dead, old)
    delivered = units.volume_nl_for_rate(plan.rate_nl_per_h, plan.duration_ms, rounding="up")
    assert delivered >= dead
    assert units.volume_nl_for_rate(plan.rate_nl_per_h, plan.duration_ms - 1) < dead + plan.rate_nl_per_h
    programme_ng_per_day = plan.new_rate_nl_per_h * new * 24 // 1000
    transit_ng_per_day = plan.rate_nl_per_h * old * 24 // 1000
    assert transit_ng_per_day <= programme_ng_per_day <= dose
    # Within one nL/h of the new rate (rounded down, then scaled) of the programme's dose.
    assert programme_ng_per_day - transit_ng_per_day <= old * 24 // 1000 + 1


def test_priming_bolus_counts_its_drug_and_respects_the_pump() -> None:
    plan = plan_priming_bolus(ml("0.25"), 500, 500_000, max_rate_nl_per_h=1_000_000)
    assert plan.worst_case_mass_ng == 125_000
    assert plan.duration_ms == 30 * units.MS_PER_MIN
    with pytest.raises(ConfigError) as excinfo:
        plan_priming_bolus(ml("0.25"), 500, 1_000_001, max_rate_nl_per_h=1_000_000)
    assert excinfo.value.field == "rate_nl_per_h"


def _refill(removed: str, added: str = "20", concentration: int = 500) -> RefillRecord:
    return RefillRecord(ml(removed), ml(added), concentration, "LOT-42", T0 + timedelta(days=20))


def test_refill_within_tolerance() -> None:
    predicted = ReservoirState(ml("20"), ml("16"), T0)  # 4 mL expected
    check = check_refill(predicted, _refill("3.5"), capacity_nl=ml("20"), prescribed_concentration_ug_per_ml=500)
    assert check.within_tolerance and not check.requires_acknowledgement and check.alarm is None
    assert check.new_state == ReservoirState(ml("20"), 0, T0 + timedelta(days=20))
    assert not check.concentration_changed


def test_refill_much_less_than_expected_suggests_pocket_fill() -> None:
    predicted = ReservoirState(ml("20"), ml("8"), T0)  # 12 mL expected, almost nothing came out
    check = check_refill(predicted, _refill("0.5"), capacity_nl=ml("20"), prescribed_concentration_ug_per_ml=500)
    assert check.requires_acknowledgement
    assert check.alarm is AlarmCode.REFILL_DISCREPANCY
    assert check.difference_nl == ml("-11.5")
    assert "pocket fill" in check.finding


def test_refill_more_than_expected_suggests_under_delivery() -> None:
    predicted = ReservoirState(ml("20"), ml("16"), T0)  # 4 mL expected
    check = check_refill(predicted, _refill("10"), capacity_nl=ml("20"), prescribed_concentration_ug_per_ml=500)
    assert check.requires_acknowledgement
    assert "withdrawal" in check.finding


@pytest.mark.parametrize(("removed", "within"), [("4.8", True), ("4.81", False), ("3.2", True), ("3.19", False)])
def test_refill_tolerance_boundary_is_20_percent(removed: str, within: bool) -> None:
    predicted = ReservoirState(ml("20"), ml("16"), T0)  # 4 mL expected, tolerance 0.8 mL
    check = check_refill(predicted, _refill(removed), capacity_nl=ml("20"), prescribed_concentration_ug_per_ml=500)
    assert check.within_tolerance is within


def test_refill_cannot_exceed_capacity_and_flags_concentration_change() -> None:
    """RES-06: a refill may not put more than the device capacity into the reservoir."""
    predicted = ReservoirState(ml("20"), ml("16"), T0)
    with pytest.raises(ConfigError) as excinfo:
        check_refill(predicted, _refill("4", added="20.001"), capacity_nl=ml("20"),
                     prescribed_concentration_ug_per_ml=500)
    assert excinfo.value.field == "volume_added_nl"
    check = check_refill(predicted, _refill("4", concentration=2000), capacity_nl=ml("20"),
                         prescribed_concentration_ug_per_ml=500)
    assert check.concentration_changed


@pytest.mark.parametrize(
    "kwargs",
    [
        {"volume_removed_nl": -1},
        {"volume_added_nl": 0},
        {"lot": " "},
        {"refill_utc": datetime(2026, 1, 1)},
        {"concentration_ug_per_ml": 0},
    ],
)
def test_refill_record_rejects_bad_values(kwargs: dict[str, object]) -> None:
    base: dict[str, object] = {
        "volume_removed_nl": 1,
        "volume_added_nl": 1,
        "concentration_ug_per_ml": 500,
        "lot": "L1",
        "refill_utc": T0,
    }
    with pytest.raises(ConfigError) as excinfo:
        RefillRecord(**{**base, **kwargs})  # type: ignore[arg-type]
    assert excinfo.value.field == next(iter(kwargs))


def test_reservoir_alarm_escalates_toward_empty() -> None:
    """RES-02/RES-05: refill due (low) -> reservoir low (medium) -> empty (high)."""
    settings = ReservoirSettings(ml("20"), ml("2"), 7, ml("0.5"))
    fill = ReservoirState(ml("20"), 0, T0)
    daily = ml("0.8")
    assert forecast(fill, daily, settings, T0).alarm is None
    day = timedelta(days=1)
    levels = []
    for days in (12, 14, 19, 25):
        state = fill.after_delivery(daily * days)
        levels.append(forecast(state, daily, settings, T0 + days * day).alarm)
    assert levels == [None, AlarmCode.REFILL_DUE, AlarmCode.RESERVOIR_LOW, AlarmCode.RESERVOIR_EMPTY]


@pytest.mark.parametrize(("dose_ng", "conc", "volume"), [(400_000, 2000, "0.2"), (400_000, 500, "0.8")])
def test_daily_volume_worked_examples(dose_ng: int, conc: int, volume: str) -> None:
    """Q = D / C: 400 µg/day is 0.2 mL/day at 2000 µg/mL and 0.8 mL/day at 500 µg/mL."""
    from controller.reservoir import daily_volume_nl

    assert daily_volume_nl(dose_ng, conc) == ml(volume)


@pytest.mark.parametrize(("conc", "dose_ng"), [(2000, 96_000), (1000, 48_000), (500, 24_000), (50, 2_400)])
def test_minimum_rate_floor_depends_on_concentration(conc: int, dose_ng: int) -> None:
    """D_min = 0.048 mL/day x C: 96, 48, 24 and 2.4 µg/day."""
    from controller.reservoir import minimum_dose_ng_per_day

    assert minimum_dose_ng_per_day(units.rate_nl_per_h_for_ml_per_day("0.048"), conc) == dose_ng


def test_forecast_refuses_a_daily_volume_too_small_to_be_a_programme() -> None:
    settings = ReservoirSettings(ml("40"), ml("2"), 7, ml("0.5"))
    with pytest.raises(ConfigError) as excinfo:
        forecast(ReservoirState(ml("40"), 0, T0), 1, settings, T0)
    assert excinfo.value.field == "daily_volume_nl"


@given(
    daily_nl=st.integers(1, 5_000_000),
    low_nl=st.integers(1, 5_000_000),
    empty_nl=st.integers(0, 999_999),
    low_days=st.integers(0, 60),
    fill_extra_nl=st.integers(0, 40_000_000),
    delivered_nl=st.integers(0, 60_000_000),
    age_ms=st.integers(0, 200 * units.MS_PER_DAY),
    margin=st.integers(3, 5),
)
def test_alarm_levels_agree_with_the_exact_forecast(daily_nl: int, low_nl: int, empty_nl: int, low_days: int,
                                                    fill_extra_nl: int, delivered_nl: int, age_ms: int,
                                                    margin: int) -> None:
    """The per-poll volume comparison gives the forecast's verdicts exactly (RES-01, RES-02)."""
    empty = min(empty_nl, low_nl - 1)
    fill = low_nl + 1 + fill_extra_nl
    settings = ReservoirSettings(fill + 1, low_nl, low_days, empty)
    filled = datetime(2026, 1, 1, tzinfo=timezone.utc)
    now = filled + timedelta(milliseconds=age_ms)
    state = ReservoirState(fill, min(delivered_nl, fill), filled)
    levels = alarm_levels(daily_nl, settings, refill_margin_days=margin)
    remaining = state.remaining_nl
    if remaining > levels.forecast_limit_nl:
        with pytest.raises(ConfigError):
            forecast(state, daily_nl, settings, now, refill_margin_days=margin)
        return
    fc = forecast(state, daily_nl, settings, now, refill_margin_days=margin)
    assert fc.low == (remaining <= levels.low_nl)
    by_interval = filled + timedelta(days=MAX_REFILL_INTERVAL_DAYS) <= now
    assert fc.refill_due == (remaining <= levels.refill_nl or by_interval)
