"""Unit conversions: exact identities, explicit rounding, floats rejected."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cython_ext import units as u
from cython_ext.errors import ConfigError

conc = st.sampled_from([50, 500, 1000, 2000]) | st.integers(1, 100_000)
nonneg = st.integers(0, 10**12)


def test_reference_examples():
    # itb-clinical.md §5.1: 400 µg/day at 2000 µg/mL is 0.2 mL/day.
    assert u.rate_nl_per_h_for_dose(400_000, 2000) * 24 == 199_992  # 8333 nL/h, rounded down
    assert u.rate_nl_per_h_for_dose(400_000, 2000, rounding="up") == 8334
    assert u.decimal_to_units("0.048", u.NL_PER_ML) == 48_000
    assert u.rate_nl_per_h_for_ml_per_day("0.048") == 2_000
    assert u.dose_ng_per_day_for_rate(2_000, 500) == 24_000  # minimum flow at 500 µg/mL: 24 µg/day
    assert u.mass_pg_for_volume(1, 1) == 1


@given(nonneg, conc)
def test_mass_volume_round_trip(volume_nl, concentration):
    mass_ng = u.mass_ng_for_volume(volume_nl, concentration, rounding="down")
    assert u.volume_nl_for_mass(mass_ng, concentration) <= volume_nl
    mass_up = u.mass_ng_for_volume(volume_nl, concentration)
    assert u.volume_nl_for_mass(mass_up, concentration, rounding="up") >= volume_nl
    assert mass_ng * 1000 <= u.mass_pg_for_volume(volume_nl, concentration) <= mass_up * 1000


@given(st.integers(0, 10**9), conc)
def test_rate_dose_round_trip_is_conservative(dose_ng_per_day, concentration):
    rate = u.rate_nl_per_h_for_dose(dose_ng_per_day, concentration)
    assert u.dose_ng_per_day_for_rate(rate, concentration, rounding="down") <= dose_ng_per_day
    rate_up = u.rate_nl_per_h_for_dose(dose_ng_per_day, concentration, rounding="up")
    assert u.dose_ng_per_day_for_rate(rate_up, concentration) >= dose_ng_per_day
    assert rate_up - rate in (0, 1)


@given(st.integers(-10**15, 10**15), st.sampled_from([1, 1000, u.NL_PER_ML]))
def test_decimal_round_trip(value, scale):
    text = str(u.units_to_decimal(value, scale))
    assert u.decimal_to_units(text, scale) == value
    assert u.decimal_to_units(Decimal(text), scale) == value


@given(nonneg, st.integers(1, 10**6))
def test_div_round_directions(numerator, denominator):
    down = u.div_round(numerator, denominator, "down")
    up = u.div_round(numerator, denominator, "up")
    assert down * denominator <= numerator <= up * denominator
    assert up - down == (0 if numerator % denominator == 0 else 1)
    if numerator % denominator:
        with pytest.raises(ConfigError):
            u.div_round(numerator, denominator, "exact")
    else:
        assert u.div_round(numerator, denominator, "exact") == down


@pytest.mark.parametrize(
    "call",
    [
        lambda: u.mass_ng_for_volume(1.0, 500),
        lambda: u.mass_pg_for_volume(10, 500.0),
        lambda: u.volume_nl_for_mass(1.5, 500),
        lambda: u.rate_nl_per_h_for_dose(1e3, 500),
        lambda: u.dose_ng_per_day_for_rate(True, 500),
        lambda: u.decimal_to_units(0.048, u.NL_PER_ML),
        lambda: u.volume_nl_for_rate(1000, 1.0),
    ],
)
def test_floats_and_bools_rejected(call):
    """PRX-05: dose arithmetic takes integer base units only; a float or bool at the core API is refused."""
    with pytest.raises(TypeError):
        call()


@pytest.mark.parametrize("text", ["abc", "NaN", "inf", "0.0000001", ""])
def test_bad_decimals_rejected(text):
    with pytest.raises(ConfigError) as info:
        u.decimal_to_units(text, u.NL_PER_ML, field="volume_ml")
    assert info.value.field == "volume_ml"


def test_negative_and_zero_rejected_with_field():
    with pytest.raises(ConfigError) as info:
        u.mass_ng_for_volume(-1, 500)
    assert (info.value.field, info.value.value) == ("volume_nl", -1)
    with pytest.raises(ConfigError) as info:
        u.volume_nl_for_mass(10, 0)
    assert info.value.field == "concentration_ug_per_ml"
    with pytest.raises(ConfigError):
        u.div_round(1, 2, "nearest")


def test_constants():
    assert u.MS_PER_DAY == 24 * u.MS_PER_H == 1440 * u.MS_PER_MIN
    assert u.NL_PER_ML == 1000 * u.NL_PER_UL
