"""Drug library, prescription caps and envelope: validated when built, errors name the field."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cython_ext import _common as c
from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_DAY, MS_PER_H


def test_default_library_entries():
    assert sorted(c.DEFAULT_LIBRARY) == [50, 500, 1000, 2000]
    assert c.DEFAULT_LIBRARY[50].screening_only
    for conc, entry in c.DEFAULT_LIBRARY.items():
        assert entry.validate() is entry
        assert entry.concentration_ug_per_ml == conc
        assert entry.dose_ng_per_day == (12_000, 24_000, 1_000_000, 2_003_000)
        assert entry.rate_nl_per_h.lower_hard == 2_000  # 0.048 mL/day
        assert entry.rate_nl_per_h.upper_hard == 1_000_000  # 24 mL/day
        assert entry.concentration.lower_hard * 100 >= conc * 95  # rounded inwards
        assert entry.concentration.upper_hard * 100 <= conc * 105
        assert entry.concentration.upper_hard + 1 > conc * 105 // 100
        assert not c.DEFAULT_LIBRARY[conc].screening_only or conc == 50


@pytest.mark.parametrize("order", [p for p in itertools.permutations(range(4)) if list(p) != sorted(p)])
def test_unordered_bounds_rejected_naming_field_and_values(order):
    values = [10, 20, 30, 40]
    bounds = c.Bounds(*[values[i] for i in order])
    with pytest.raises(ConfigError) as info:
        bounds.validate("dose_ng_per_day", "ng/day")
    assert info.value.field == "dose_ng_per_day"
    assert info.value.value == tuple(bounds)
    assert "lower_hard" in str(info.value)


@pytest.mark.parametrize("field", ["dose_ng_per_day", "rate_nl_per_h", "bolus_ng", "bolus_lockout_ms", "boluses_per_day", "concentration"])
def test_library_entry_rejected_when_any_bounds_unordered(field):
    entry = c.DEFAULT_LIBRARY[500]
    good = getattr(entry, field)
    bad = good._replace(lower_soft=good.upper_soft + 1, upper_hard=good.upper_soft + 1) if good.upper_soft > 0 else good._replace(lower_hard=1, lower_soft=0)
    with pytest.raises(ConfigError) as info:
        entry._replace(**{field: bad}).validate()
    assert info.value.field == field


def test_float_bound_rejected():
    with pytest.raises(TypeError):
        c.Bounds(1, 2.0, 3, 4).validate("rate_nl_per_h")


@given(st.lists(st.integers(0, 10**6), min_size=4, max_size=4))
def test_bounds_classify_matches_definition(values):
    b = c.Bounds(*sorted(values))
    for v in {*b, *(x - 1 for x in b), *(x + 1 for x in b)}:
        where = b.classify(v)
        assert (where == -2) == (v < b.lower_hard)
        assert (where == 2) == (v > b.upper_hard)
        assert (where == 0) == (b.lower_soft <= v <= b.upper_soft)


def test_caps_defaults_follow_origin():
    assert c.make_caps(max_dose_ng_per_day=1, origin="spinal").titration_cap_pct == 30
    assert c.make_caps(max_dose_ng_per_day=1, origin="cerebral").titration_cap_pct == 15
    assert c.make_caps(max_dose_ng_per_day=1, origin=c.Origin.PAEDIATRIC).titration_cap_pct == 15
    caps = c.make_caps(max_dose_ng_per_day=1)
    assert caps.min_titration_interval_ms == MS_PER_DAY
    assert caps.taper_pct == 20 and caps.taper_interval_ms == 2 * MS_PER_DAY


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"origin": "lumbar"}, "origin"),
        ({"origin": "cerebral", "titration_cap_pct": 16}, "titration_cap_pct"),
        ({"max_dose_ng_per_day": 0}, "max_dose_ng_per_day"),
        ({"minimum_rate_nl_per_h": 0}, "minimum_rate_nl_per_h"),
        ({"decrease_confirm_pct": 101}, "decrease_confirm_pct"),
        ({"max_boluses_per_day": c.MAX_BOLUSES_PER_DAY + 1}, "max_boluses_per_day"),
        ({"bolus_enabled": 1}, "bolus_enabled"),
        ({"taper_pct": 0}, "taper_pct"),
    ],
)
def test_bad_caps_rejected(kwargs, field):
    kwargs = {"max_dose_ng_per_day": 100_000, **kwargs}
    with pytest.raises(ConfigError) as info:
        c.make_caps(**kwargs)
    assert info.value.field == field


def test_caps_checked_against_library_hard_bounds():
    limits = c.DEFAULT_LIBRARY[500]
    c.check_caps_against_limits(c.make_caps(max_dose_ng_per_day=2_003_000), limits)
    with pytest.raises(ConfigError) as info:
        c.check_caps_against_limits(c.make_caps(max_dose_ng_per_day=2_003_001), limits)
    assert info.value.field == "max_dose_ng_per_day"
    with pytest.raises(ConfigError) as info:
        c.check_caps_against_limits(c.make_caps(max_dose_ng_per_day=1, bolus_lockout_ms=MS_PER_H - 1), limits)
    assert info.value.field == "bolus_lockout_ms"
    c.check_caps_against_limits(c.make_caps(max_dose_ng_per_day=1, bolus_lockout_ms=MS_PER_H), limits)
    with pytest.raises(ConfigError) as info:
        c.check_caps_against_limits(c.make_caps(max_dose_ng_per_day=1, max_bolus_ng=100_001), limits)
    assert info.value.field == "max_bolus_ng"


def test_envelope_and_override_validation():
    assert c.make_envelope(2_000, 1_000_000, 10) == (2_000, 1_000_000, 10)
    with pytest.raises(ConfigError) as info:
        c.make_envelope(5_000, 4_999)
    assert info.value.field == "max_rate_nl_per_h"
    with pytest.raises(TypeError):
        c.make_envelope(2_000.0, 5_000)
    with pytest.raises(ConfigError):
        c.make_override({c.Reason.DOSE_CAP_24H}, reason="x", actor="dr")  # hard limits cannot be overridden
    with pytest.raises(ConfigError):
        c.make_override({c.Reason.DOSE_ABOVE_SOFT}, reason=" ", actor="dr")
    assert c.make_override([c.Reason.DOSE_ABOVE_SOFT], reason="tolerance", actor="dr").codes == {c.Reason.DOSE_ABOVE_SOFT}


def test_request_constructors_reject_bad_input():
    with pytest.raises(TypeError):
        c.request_rate_change(1.5)
    with pytest.raises(ConfigError):
        c.request_rate_change(-1)
    with pytest.raises(ConfigError):
        c.request_bolus(c.DeliveryKind.BASAL, 10, 10)
    with pytest.raises(ConfigError):
        c.request_bolus(c.DeliveryKind.BOLUS_PATIENT, 0, 10)
    with pytest.raises(ConfigError):
        c.request_programme_change("fast")
    with pytest.raises(ConfigError):
        c.request_discontinue(None, emergency="yes")


def test_reason_codes_unique_and_soft_subset():
    assert len(set(c.ALL_REASONS)) == len(c.ALL_REASONS) <= 64
    assert c.SOFT_REASONS <= set(c.ALL_REASONS)
    assert c.Reason.DOSE_CAP_24H not in c.SOFT_REASONS and c.Reason.TITRATION_CAP_EXCEEDED not in c.SOFT_REASONS


def test_plan_titration_examples():
    up = c.plan_titration(100_000, 200_000, start_ms=0, titration_cap_pct=30)
    assert [s.dose_ng_per_day for s in up] == [130_000, 169_000, 200_000]
    assert [s.at_ms for s in up] == [0, MS_PER_DAY, 2 * MS_PER_DAY]
    down = c.plan_titration(200_000, 100_000, start_ms=5, titration_cap_pct=30)
    assert [s.dose_ng_per_day for s in down] == [160_000, 128_000, 102_400, 100_000]
    assert [s.at_ms for s in down] == [5 + i * 2 * MS_PER_DAY for i in range(4)]
    assert c.plan_titration(1000, 1000, start_ms=0, titration_cap_pct=30) == ()
    with pytest.raises(ConfigError):
        c.plan_titration(1, 2, start_ms=0, titration_cap_pct=30)  # 1 ng * 1.3 never reaches 2


@given(st.integers(1_000, 10**7), st.integers(1_000, 10**7), st.integers(1, 30), st.integers(1, 50))
def test_plan_titration_properties(current, target, cap_pct, taper_pct):
    plan = c.plan_titration(current, target, start_ms=0, titration_cap_pct=cap_pct, taper_pct=taper_pct)
    dose = current
    previous_at = None
    for step in plan:
        if step.dose_ng_per_day > dose:
            assert step.dose_ng_per_day * 100 <= dose * (100 + cap_pct)
            assert previous_at is None or step.at_ms - previous_at >= MS_PER_DAY
        else:
            assert (dose - step.dose_ng_per_day) * 100 <= dose * taper_pct
            assert previous_at is None or step.at_ms - previous_at >= 2 * MS_PER_DAY
        dose, previous_at = step.dose_ng_per_day, step.at_ms
    assert dose == target
    assert all((s.dose_ng_per_day > current) == (target > current) for s in plan)
