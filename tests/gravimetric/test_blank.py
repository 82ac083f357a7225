"""The no-flow blank run: the least-squares fit by hand, and ``itb hil blank`` on a simulated balance."""

from __future__ import annotations

import json

import pytest

from cython_ext.errors import ConfigError
from hil.cli import main
from hil.gravimetric.analysis import InsufficientDataError, WeightSample
from hil.gravimetric.blank import fit_blank, run_blank
from hil.gravimetric.simrig import simulated_balance


def test_fit_by_hand() -> None:
    # Readings 1000, 990, 986, 970 at 0, 1, 2, 3 h: mean t = 1.5 h, mean m = 986.5;
    # Sxy = (-1.5)(13.5) + (-0.5)(3.5) + (0.5)(-0.5) + (1.5)(-16.5) = -47, Sxx = 5,
    # slope = -9.4 µg/h. The line gives 1000.6, 991.2, 981.8, 972.4, so the residuals are
    # -0.6, -1.2, 4.2, -2.4: sum of squares 25.2 over 2 degrees of freedom, SD sqrt(12.6).
    masses = [1000, 990, 986, 970]
    samples = [WeightSample(k * 3_600_000, m) for k, m in enumerate(masses)]
    result = fit_blank(samples)
    assert result.slope_ug_per_h == pytest.approx(-9.4)
    assert result.loss_ug_per_h == pytest.approx(9.4)
    assert result.residual_sd_ug == pytest.approx(12.6**0.5)
    assert result.duration_s == 3 * 3600


def test_missing_readings_are_skipped_and_too_few_refused() -> None:
    samples = [WeightSample(0, 10), WeightSample(30_000, None), WeightSample(60_000, 8), WeightSample(90_000, 7)]
    assert fit_blank(samples).samples == 3
    with pytest.raises(InsufficientDataError):
        fit_blank(samples[:3])
    with pytest.raises(ConfigError):
        fit_blank(samples, min_samples=2)


def test_simulated_evaporation_is_recovered() -> None:
    options = {"evaporation_ug_per_h": 240.0, "noise_ug": 5.0, "resolution_ug": 1}
    with simulated_balance("mtsics", seed=3, balance_options=options) as (url, _device, clock):
        result = run_blank(url, duration_s=3600, interval_s=30, clock=clock)
    # 121 readings, noise SD 5 µg: the slope's SD is 5 / sqrt(Sxx) ~ 1.6 µg/h; allow 6 SD.
    assert result.loss_ug_per_h == pytest.approx(240.0, abs=10.0)
    assert result.residual_sd_ug == pytest.approx(5.0, rel=0.3)


def test_bad_durations_are_rejected_before_opening() -> None:
    with pytest.raises(ConfigError):
        run_blank("/dev/does-not-exist", duration_s=45, interval_s=30)


def test_cli_blank_and_balance_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["hil", "blank", "--balance", "sim:sbi", "--duration", "10min", "--sim-evaporation-ug-per-h", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 21
    assert main(["hil", "balance", "--balance", "sim:mtsics", "--readings", "2"]) == 0
    out = capsys.readouterr().out
    assert "model XPE205" in out
    assert out.count(" µg (") == 2
    with pytest.raises(SystemExit) as usage_error:  # the --readings type= check: argparse's usage error
        main(["hil", "balance", "--balance", "sim:mtsics", "--readings", "0"])
    assert usage_error.value.code == 2
