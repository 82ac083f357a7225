"""Programmes: shape validation, rate at t, next boundary, exact integrals and daily totals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_DAY, MS_PER_H

from .conftest import COMPILED, TWIN, periodic_strategy, steps_strategy

H = MS_PER_H


@pytest.mark.parametrize(
    ("steps", "field"),
    [
        ([], "steps"),
        ([(0, 12 * H, 1000)], "steps"),  # covers only 12 h
        ([(0, 12 * H, 1000), (12 * H + 1, 12 * H - 1, 1000)], "steps[1].start_offset_ms"),  # gap
        ([(0, 12 * H, 1000), (12 * H - 1, 12 * H + 1, 1000)], "steps[1].start_offset_ms"),  # overlap
        ([(0, MS_PER_DAY, -1)], "steps[0].rate_nl_per_h"),
        ([(i * H, H, 1000) for i in range(24)], "steps"),  # 24 steps > 13
    ],
)
def test_bad_shapes_rejected(impl, steps, field):
    with pytest.raises(ConfigError) as info:
        impl.Programme(steps, 500)
    assert info.value.field == field


def test_overlapping_periodic_boluses_rejected(impl):
    with pytest.raises(ConfigError):
        impl.Programme([(0, MS_PER_DAY, 1000)], 500, periodic_boluses=[(0, 2 * H, 10), (H, H, 10)])
    with pytest.raises(TypeError):
        impl.Programme([(0, MS_PER_DAY, 1000.0)], 500)


def test_flex_example(impl):
    steps = [(0, 8 * H, 16_000), (8 * H, 16 * H, 12_000)]
    p = impl.Programme(steps, 500, periodic_boluses=[(20 * H, H, 6_000)], anchor_ms=5 * H)
    assert p.rate_at(5 * H) == 16_000
    assert p.rate_at(13 * H - 1) == 16_000
    assert p.rate_at(13 * H) == 12_000
    assert p.rate_at(25 * H) == 18_000  # periodic bolus on top
    assert p.next_boundary(5 * H) == 13 * H
    assert p.next_boundary(13 * H) == 25 * H
    assert p.next_boundary(26 * H) == 29 * H  # next day's first step
    assert p.daily_total_nl() == 16_000 * 8 + 12_000 * 16 + 6_000
    assert p.daily_total_pg() == p.daily_total_nl() * 500
    assert p.daily_total_ng() == 163_000
    assert impl.Programme.continuous(1000, 500).next_boundary(123) is None


@given(steps_strategy(), periodic_strategy(), st.integers(0, 10**10), st.integers(0, 3 * MS_PER_DAY), st.integers(0, 3 * MS_PER_DAY))
def test_integrals_agree_and_add_up(steps, periodic, anchor, a, b):
    a, b = sorted((a, b))
    mid = (a + b) // 2
    for k in (COMPILED, TWIN):
        p = k.Programme(steps, 500, periodic_boluses=periodic, anchor_ms=anchor)
        whole = p.volume_numerator(anchor + a, anchor + b)
        assert whole == p.volume_numerator(anchor + a, anchor + mid) + p.volume_numerator(anchor + mid, anchor + b)
        assert p.volume_numerator(anchor + a, anchor + a + MS_PER_DAY) == p.daily_total_nl() * MS_PER_H or p.daily_total_nl() * MS_PER_H - p.volume_numerator(anchor + a, anchor + a + MS_PER_DAY) < MS_PER_H
        assert p.delivered_pg(anchor + a, anchor + b) == -(-whole * 500 // MS_PER_H)
    c = COMPILED.Programme(steps, 500, periodic_boluses=periodic, anchor_ms=anchor)
    t = TWIN.Programme(steps, 500, periodic_boluses=periodic, anchor_ms=anchor)
    assert c == t and c.key() == t.key() and c.segments == t.segments
    assert c.daily_total_pg() == t.daily_total_pg()
    assert (c.max_rate_nl_per_h, c.min_rate_nl_per_h) == (t.max_rate_nl_per_h, t.min_rate_nl_per_h)
    for x in (a, b, mid, a + 1, b + 59_999):
        assert c.rate_at(x) == t.rate_at(x)
        assert c.next_boundary(x) == t.next_boundary(x)


@given(steps_strategy(), st.integers(0, MS_PER_DAY))
def test_daily_total_is_sum_of_steps(steps, t):
    p = COMPILED.Programme(steps, 2000)
    volume_numerator = sum(d * r for _s, d, r in steps)
    assert p.daily_total_nl() == -(-volume_numerator // MS_PER_H)
    assert p.volume_numerator(t, t + MS_PER_DAY) == volume_numerator
    boundary = p.next_boundary(t)
    if boundary is not None:
        assert t < boundary <= t + MS_PER_DAY
        assert p.rate_at(boundary) != p.rate_at(boundary - 1)
        assert all(p.rate_at(x) == p.rate_at(t) for x in (t, (t + boundary) // 2, boundary - 1))


@given(steps_strategy(), st.integers(0, 10**10))
def test_segments_without_overlays_are_the_steps_merged(steps, anchor):
    """Without periodic boluses the rate function is the steps, equal neighbours merged (oracle: rate_at)."""
    from cython_ext._common import check_programme_shape

    _, _, segments = check_programme_shape(steps, (), 500, anchor)
    assert segments[0][0] == 0
    assert all(a[1] != b[1] and a[0] < b[0] for a, b in zip(segments, segments[1:]))
    for start, duration, rate in steps:
        for offset in (start, start + duration - 1):
            assert next(r for s, r in reversed(segments) if s <= offset) == rate


@pytest.mark.parametrize(
    ("steps", "error", "field"),
    [
        ([(0, MS_PER_DAY, True)], TypeError, "steps[0].rate_nl_per_h"),
        ([(0.0, MS_PER_DAY, 1000)], TypeError, "steps[0].start_offset_ms"),
        ([(0, float(MS_PER_DAY), 1000)], TypeError, "steps[0].duration_ms"),
        ([(0, 0, 1000), (0, MS_PER_DAY, 1000)], ConfigError, "steps[0].duration_ms"),
        ([(0, MS_PER_DAY, 10_000_001)], ConfigError, "steps[0].rate_nl_per_h"),
    ],
)
def test_bad_step_values_name_their_field(impl, steps, error, field):
    with pytest.raises(error) as info:
        impl.Programme(steps, 500)
    assert field in (info.value.field if isinstance(info.value, ConfigError) else str(info.value))
