"""``AccuracyConfig`` hands every analysis option on unchanged, its summary keeps its documented key order, and
the rig's number settings refuse an integer no float can hold."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cython_ext.errors import ConfigError
from hil.gravimetric.analysis import AnalysisSettings
from hil.gravimetric.procedure import AccuracyConfig, config_summary
from sim.balance.pan import PanSettings

# Written out here, not derived from the classes: the ``config`` object of summary.json as bench
# engineers have always seen it.
SUMMARY_KEYS = [
    "rate_nl_per_h", "syringe_diameter_mm", "duration_s", "interval_s", "stabilisation_s", "water_temperature_c",
    "evaporation_ug_per_h", "air_buoyancy_correction", "windows_min", "analysis_start_s", "max_unstable_fraction",
    "max_missing_fraction", "backwards_tolerance_ug", "late_tolerance_s", "tare", "stable_timeout_s",
    "density_g_per_ml",
]

options = st.fixed_dictionaries(
    {},
    optional={
        "windows_min": st.sampled_from([(2, 5, 11, 19, 31), (2,), (5, 11)]),
        "analysis_start_s": st.sampled_from([None, 3600, 3000]),
        "max_unstable_fraction": st.sampled_from([0.0, 0.2, 1.0]),
        "max_missing_fraction": st.sampled_from([0.0, 0.05, 0.5]),
        "backwards_tolerance_ug": st.integers(0, 10_000),
        "evaporation_ug_per_h": st.sampled_from([0.0, 12.5, 300.0]),
        "air_buoyancy_correction": st.booleans(),
    },
)


@given(options)
def test_analysis_settings_carry_every_option_given_and_the_defaults_otherwise(given_options: dict) -> None:
    config = AccuracyConfig(rate_nl_per_h=1_200_000, syringe_diameter_mm=14.5, **given_options)
    settings = config.analysis_settings()
    expected = {
        "windows_min": (2, 5, 11, 19, 31),
        "analysis_start_s": None,
        "max_unstable_fraction": 0.2,
        "max_missing_fraction": 0.0,
        "backwards_tolerance_ug": 100,
        "evaporation_ug_per_h": 0.0,
        "air_buoyancy_correction": False,
        **given_options,
    }
    for name, value in expected.items():
        assert getattr(settings, name) == value, name
        assert getattr(config, name) == value, name
    assert settings.rate_nl_per_h == 1_200_000
    assert settings.interval_s == config.interval_s
    assert settings.density_g_per_ml == config.density_g_per_ml


def test_config_summary_keeps_the_key_order_of_summary_json() -> None:
    config = AccuracyConfig(rate_nl_per_h=1_200_000, syringe_diameter_mm=14.5, windows_min=(2, 5))
    data = config_summary(config)
    assert list(data) == SUMMARY_KEYS
    assert data["windows_min"] == [2, 5]
    assert json.loads(json.dumps(data)) == data


def test_an_integer_beyond_the_float_range_is_refused_not_a_crash() -> None:
    # It used to raise OverflowError in the accuracy settings and pass the simulated balance's checks.
    with pytest.raises(ConfigError) as refused:
        AnalysisSettings(rate_nl_per_h=1_200_000, evaporation_ug_per_h=10**400)
    assert refused.value.field == "evaporation_ug_per_h"
    with pytest.raises(ConfigError) as refused:
        PanSettings(drift_ug_per_h=10**400)
    assert refused.value.field == "drift_ug_per_h"
