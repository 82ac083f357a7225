"""The pure gravimetric analysis against synthetic series whose trumpet values are worked out by hand.

All series use d = 1.0 g/mL and r = 1.2 mL/h, so one 30 s interval at the set
rate is exactly 10 000 µg and every error is a whole number of percent.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from cython_ext.errors import ConfigError
from hil.gravimetric.analysis import (
    AnalysisSettings,
    InsufficientDataError,
    RefusalReason,
    WeightSample,
    analyse,
)

RATE_NL_PER_H = 1_200_000
STEP_UG = 10_000  # one 30 s interval at 1.2 mL/h and d = 1.0


def settings(**overrides: object) -> AnalysisSettings:
    values: dict[str, object] = {"rate_nl_per_h": RATE_NL_PER_H, "density_g_per_ml": 1.0}
    values.update(overrides)
    return AnalysisSettings(**values)  # type: ignore[arg-type]


def series(increments_ug: list[int], start_ug: int = 5_000_000) -> list[WeightSample]:
    """Samples every 30 s from cumulative increments (one per interval)."""
    masses = [start_ug]
    for delta in increments_ug:
        masses.append(masses[-1] + delta)
    return [WeightSample(k * 30_000, mass) for k, mass in enumerate(masses)]


def test_standard_run_has_the_reference_window_counts() -> None:
    result = analyse(series([STEP_UG] * 240), settings())
    assert result.analysis_start_s == 3600
    assert len(result.analysis_flows) == 120
    assert [(t.window_min, t.p, t.m) for t in result.trumpet] == [
        (2, 4, 117),
        (5, 10, 111),
        (11, 22, 99),
        (19, 38, 83),
        (31, 62, 59),
    ]
    assert all(t.windows_used == t.m for t in result.trumpet)
    assert result.mean_error_pct == pytest.approx(0.0, abs=1e-12)


def test_constant_bias_gives_the_bias_everywhere() -> None:
    # +5 %: every interval weighs 10 500 µg, so every window and the mean are +5 %.
    result = analyse(series([10_500] * 240), settings())
    assert result.mean_flow_ml_per_h == pytest.approx(1.26)
    assert result.mean_error_pct == pytest.approx(5.0)
    for point in result.trumpet:
        assert point.max_error_pct == pytest.approx(5.0)
        assert point.min_error_pct == pytest.approx(5.0)


def test_periodic_pulsation_by_hand() -> None:
    # Errors repeat +30 %, 0 %, -30 % (weights 13 000, 10 000, 7 000 µg). The period
    # mean is 0. A window of p flows sums whole cycles (0) plus p mod 3 leftovers:
    #   p = 4  (1 left):  leftover +30, 0 or -30      -> max  30/4 = 7.5,  min -7.5
    #   p = 10 (1 left):                               -> max  3.0,        min -3.0
    #   p = 22 (1 left):                               -> max 30/22,       min -30/22
    #   p = 38 (2 left):  leftovers +30+0, 0-30, -30+30 -> max 30/38,       min -30/38
    #   p = 62 (2 left):                               -> max 30/62,       min -30/62
    pattern = [13_000, 10_000, 7_000]
    result = analyse(series(pattern * 80), settings())
    expected = {2: 30 / 4, 5: 3.0, 11: 30 / 22, 19: 30 / 38, 31: 30 / 62}
    for point in result.trumpet:
        assert point.max_error_pct == pytest.approx(expected[point.window_min])
        assert point.min_error_pct == pytest.approx(-expected[point.window_min])
    # 120 flows in the second hour = 40 whole cycles: mean error exactly 0.
    assert result.mean_error_pct == pytest.approx(0.0, abs=1e-9)


def test_step_in_the_second_hour_by_hand() -> None:
    # Set rate for the first 150 intervals, then +10 % (11 000 µg) for the last 90.
    # The period holds flows 121..240: 30 at 0 %, then 90 at +10 %.
    # Windows wholly after the step give max +10 %; windows wholly before give min 0 %
    # when p <= 30 (2, 5, 11 min: p = 4, 10, 22). Otherwise the earliest window holds the
    # 30 flows at 0 and p - 30 at +10 %: p = 38 -> 100/38 * 8 * 0.10 = 80/38 %,
    # p = 62 -> 100/62 * 32 * 0.10 = 320/62 %.
    result = analyse(series([STEP_UG] * 150 + [11_000] * 90), settings())
    by_window = {t.window_min: t for t in result.trumpet}
    for window in (2, 5, 11, 19, 31):
        assert by_window[window].max_error_pct == pytest.approx(10.0)
    for window in (2, 5, 11):
        assert by_window[window].min_error_pct == pytest.approx(0.0, abs=1e-12)
    assert by_window[19].min_error_pct == pytest.approx(80 / 38)
    assert by_window[31].min_error_pct == pytest.approx(320 / 62)
    assert result.mean_error_pct == pytest.approx(100 * 90 * 0.10 / 120)


def test_flow_uses_density() -> None:
    # With d = 0.998 g/mL a mass of 9 980 µg per interval is exactly the set volume.
    result = analyse(series([9_980] * 8), settings(density_g_per_ml=0.998, windows_min=(2,)))
    assert result.mean_error_pct == pytest.approx(0.0, abs=1e-9)


def test_evaporation_correction_adds_back_the_measured_loss() -> None:
    # 1 200 µg/h evaporation is 10 µg per interval; the balance sees 9 990 µg.
    result = analyse(series([9_990] * 8), settings(evaporation_ug_per_h=1200.0, windows_min=(2,)))
    assert result.mean_error_pct == pytest.approx(0.0, abs=1e-9)


def test_refuses_a_weight_that_went_backwards() -> None:
    increments = [STEP_UG] * 20
    increments[7] = -500
    with pytest.raises(InsufficientDataError) as caught:
        analyse(series(increments), settings())
    assert caught.value.reason is RefusalReason.MASS_DECREASED
    assert caught.value.error_code == "GRAVIMETRIC_MASS_DECREASED"


def test_a_marked_refill_allows_the_drop_and_skips_that_flow() -> None:
    samples = series([STEP_UG] * 20)
    samples[10] = WeightSample(samples[10].elapsed_ms, 100, refill=True)
    samples[11:] = [WeightSample(s.elapsed_ms, 100 + (k + 1) * STEP_UG) for k, s in enumerate(samples[11:])]
    result = analyse(samples, settings(windows_min=(2,), analysis_start_s=0))
    assert result.flows[9].flow_ml_per_h is None
    assert result.mean_error_pct == pytest.approx(0.0, abs=1e-9)
    assert result.trumpet[0].windows_used == result.trumpet[0].m - 4


def test_refuses_missing_samples_beyond_the_limit() -> None:
    samples = series([STEP_UG] * 20)
    samples[5] = WeightSample(samples[5].elapsed_ms, None)
    with pytest.raises(InsufficientDataError) as caught:
        analyse(samples, settings())
    assert caught.value.reason is RefusalReason.MISSING_SAMPLES
    result = analyse(samples, settings(max_missing_fraction=0.1, windows_min=(2,)))
    assert result.missing_samples == 1


def test_refuses_unstable_readings_beyond_the_limit() -> None:
    samples = [WeightSample(s.elapsed_ms, s.mass_ug, stable=k % 2 == 0) for k, s in enumerate(series([STEP_UG] * 20))]
    with pytest.raises(InsufficientDataError) as caught:
        analyse(samples, settings())
    assert caught.value.reason is RefusalReason.UNSTABLE_READINGS
    assert analyse(samples, settings(max_unstable_fraction=0.5, windows_min=(2,))).unstable_samples == 10


def test_refuses_a_period_shorter_than_the_smallest_window() -> None:
    with pytest.raises(InsufficientDataError) as caught:
        analyse(series([STEP_UG] * 6), settings())
    assert caught.value.reason is RefusalReason.TOO_SHORT


def test_windows_longer_than_the_period_are_omitted_not_invented() -> None:
    result = analyse(series([STEP_UG] * 40), settings())  # 10 min period
    assert [t.window_min for t in result.trumpet] == [2, 5]
    assert result.omitted_windows_min == (11, 19, 31)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rate_nl_per_h", 0),
        ("rate_nl_per_h", 1.5),
        ("interval_s", 0),
        ("density_g_per_ml", float("nan")),
        ("windows_min", (2, 7.5)),
        ("analysis_start_s", 45),
        ("max_unstable_fraction", 1.5),
        ("backwards_tolerance_ug", -1),
    ],
)
def test_bad_settings_are_rejected_with_the_field_named(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        settings(**{field: value})
    assert caught.value.field == field


def test_off_schedule_samples_are_rejected() -> None:
    samples = series([STEP_UG] * 10)
    samples[3] = WeightSample(samples[3].elapsed_ms + 1, samples[3].mass_ug)
    with pytest.raises(ConfigError):
        analyse(samples, settings())


@hypothesis_settings(max_examples=40)
@given(
    bias_permille=st.integers(min_value=-300, max_value=300),
    jitter=st.lists(st.integers(min_value=-50, max_value=50), min_size=240, max_size=240),
)
def test_trumpet_brackets_the_mean_and_lies_within_single_flows(bias_permille: int, jitter: list[int]) -> None:
    step = STEP_UG + STEP_UG * bias_permille // 1000
    result = analyse(series([step + j for j in jitter]), settings())
    single = [100 * ((step + j) / STEP_UG - 1) for j in jitter[120:]]
    for point in result.trumpet:
        # Every window mean lies between the extremes of the single flows. When p
        # divides the 120 flows, disjoint windows tile the period, so the overall
        # mean is their average and lies between the window extremes.
        assert min(single) - 1e-9 <= point.min_error_pct <= point.max_error_pct <= max(single) + 1e-9
        if 120 % point.p == 0:
            assert point.min_error_pct - 1e-9 <= result.mean_error_pct <= point.max_error_pct + 1e-9
    assert result.mean_error_pct == pytest.approx(100 * (sum(step + j for j in jitter[120:]) / 120 / STEP_UG - 1))


def test_air_buoyancy_correction_by_hand() -> None:
    # With d = 1.0: factor = (1 - 0.0012/8) / (1 - 0.0012/1) = 0.99985 / 0.9988.
    plain = analyse(series([STEP_UG] * 8), settings(windows_min=(2,)))
    corrected = analyse(series([STEP_UG] * 8), settings(windows_min=(2,), air_buoyancy_correction=True))
    assert plain.mean_error_pct == pytest.approx(0.0, abs=1e-12)
    assert corrected.mean_error_pct == pytest.approx(100 * (0.99985 / 0.9988 - 1))
