"""The simulated rig is physically consistent: the analysis recovers the injected bias under any water.

The oracle is the physics, not our ledger: the pump delivers ``(1 + bias)``
times the set volume; the simulated beaker holds that water at the run's
temperature (Tanaka density), loses the run's evaporation, and, when the run
corrects for air buoyancy, sits in air. The analysis, configured with the same
water, must then report ``A = bias`` to within the display rounding of the two
readings that bound the analysis period (no balance noise here).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cython_ext.errors import ConfigError
from hal.balance import water_density_g_per_ml
from hil.gravimetric.procedure import AccuracyConfig
from hil.gravimetric.simrig import RigSettings, run_simulated_accuracy, simulated_balance, water_options

RATE_NL_PER_H = 1_200_000
DURATION_S = 1800
RESOLUTION_UG = 10


def rounding_bound_pct(bias_pct: float, temperature_c: float) -> float:
    """Six standard deviations of A from rounding the two period-end readings (uniform over one digit)."""
    mass_ug = RATE_NL_PER_H * DURATION_S / 2 / 3600 * (1 + bias_pct / 100) * water_density_g_per_ml(temperature_c)
    return 6 * 100 * math.sqrt(2) * (RESOLUTION_UG / math.sqrt(12)) / mass_ug


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    temperature_c=st.floats(min_value=4.0, max_value=40.0),
    evaporation_ug_per_h=st.floats(min_value=0.0, max_value=20_000.0),
    bias_pct=st.floats(min_value=-5.0, max_value=5.0),
    air_buoyancy_correction=st.booleans(),
    balance_kind=st.sampled_from(["mtsics", "sbi"]),
)
def test_the_analysis_recovers_the_injected_bias_under_any_water(
    temperature_c: float, evaporation_ug_per_h: float, bias_pct: float, air_buoyancy_correction: bool, balance_kind: str
) -> None:
    result = run_simulated_accuracy(
        RigSettings(balance_kind, bias_pct=bias_pct, balance_options={"noise_ug": 0.0, "resolution_ug": RESOLUTION_UG}),
        RATE_NL_PER_H,
        syringe_diameter_mm=14.5,
        duration_s=DURATION_S,
        water_temperature_c=temperature_c,
        evaporation_ug_per_h=evaporation_ug_per_h,
        air_buoyancy_correction=air_buoyancy_correction,
    )
    assert abs(result.mean_error_pct - bias_pct) <= rounding_bound_pct(bias_pct, temperature_c)


def test_the_beaker_weighs_what_the_water_of_the_run_weighs() -> None:
    # 1 mL of 30 °C water in air, on a balance adjusted with steel weights: the indication is
    # m (1 - rho_air/d) / (1 - rho_air/rho_steel), with d from Tanaka (0.995650 g/mL at 30 °C).
    config = AccuracyConfig(
        rate_nl_per_h=RATE_NL_PER_H, syringe_diameter_mm=14.5, water_temperature_c=30.0,
        evaporation_ug_per_h=3600.0, air_buoyancy_correction=True,
    )
    volume = [0]
    options = {"resolution_ug": 1, **water_options(config)}
    with simulated_balance("mtsics", delivered_nl=lambda: volume[0], balance_options=options) as (_url, device, clock):
        start = device.pan.gross_ug()
        volume[0] = 1_000_000  # the test pours 1 mL itself
        clock.advance(1.0)  # and 1 s of evaporation at 1 µg/s
        expected = 1_000_000 * 0.995650 * (1 - 0.0012 / 0.995650) / (1 - 0.0012 / 8.0) - 1.0
        assert device.pan.gross_ug() - start == pytest.approx(expected, abs=2.0)


def test_balance_options_cannot_contradict_the_water_of_the_run() -> None:
    with pytest.raises(ConfigError) as caught:
        run_simulated_accuracy(
            RigSettings("mtsics", balance_options={"temperature_c": 25.0}), RATE_NL_PER_H, syringe_diameter_mm=14.5
        )
    assert caught.value.field == "balance_options.temperature_c"


def test_cli_simulated_rig_takes_the_water_of_the_command_line_and_profile(tmp_path, capsys) -> None:
    # Before the rig had its own water, this run reported -1.748 % for an injected -2 %.
    import json

    from hil.cli import main

    profile = tmp_path / "bench.toml"
    profile.write_text("[water]\nevaporation_ug_per_h = 500.0\nair_buoyancy_correction = true\n")
    status = main(
        [
            "hil", "accuracy", "--pump", "sim", "--balance", "sim:mtsics", "--rate", "1.2mL/h", "--syringe", "14.5mm",
            "--water-temp", "30", "--bias-pct", "-2", "--balance-noise-ug", "0", "--profile", str(profile), "--json",
        ]
    )
    assert status == 0
    analysis = json.loads(capsys.readouterr().out)["analysis"]
    mass_ug = RATE_NL_PER_H * 0.98 * water_density_g_per_ml(30.0)
    assert abs(analysis["mean_error_pct"] + 2.0) <= 6 * 100 * math.sqrt(2) * (RESOLUTION_UG / math.sqrt(12)) / mass_ug


@pytest.mark.parametrize(("change", "field"), [({"balance_kind": "kern"}, "balance_kind"), ({"link": "tcp"}, "link")])
def test_rig_settings_refuse_an_unknown_balance_or_link(change: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RigSettings(**change)
    assert caught.value.field == field and caught.value.value == change[field] and "one of" in str(caught.value)
