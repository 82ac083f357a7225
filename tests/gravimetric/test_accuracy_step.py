"""The scenario accuracy step: a strict table, and a verdict that follows the measured mean error."""

from __future__ import annotations

import json
import math

import pytest

from cython_ext.errors import ConfigError
from hil.gravimetric.step import AccuracyStep, parse_accuracy_step, run_accuracy_step

GOOD = {"rate": "1.2mL/h", "syringe": "14.5mm", "duration": "20min", "interval": "30s", "max_abs_mean_error_pct": 5.0}


def test_a_good_table_parses_in_exact_units() -> None:
    step = parse_accuracy_step(GOOD)
    assert step == AccuracyStep(
        rate_nl_per_h=1_200_000, syringe_diameter_mm=14.5, duration_s=1200, interval_s=30, max_abs_mean_error_pct=5.0
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"rate_ml_per_h": 1.2}, "accuracy.rate_ml_per_h"),
        ({"rate": "1.2"}, "accuracy.rate"),
        ({"syringe": "huge"}, "accuracy.syringe"),
        ({"balance": "kern"}, "accuracy.balance"),
        ({"max_abs_mean_error_pct": 0}, "accuracy.max_abs_mean_error_pct"),
        ({"max_abs_mean_error_pct": -1.0}, "accuracy.max_abs_mean_error_pct"),
        ({"max_abs_mean_error_pct": math.nan}, "accuracy.max_abs_mean_error_pct"),
        ({"max_abs_mean_error_pct": True}, "accuracy.max_abs_mean_error_pct"),
        ({"bias_pct": math.inf}, "accuracy.bias_pct"),
        ({"seed": -1}, "accuracy.seed"),
        ({"duration": "20"}, "accuracy.duration"),
    ],
)
def test_bad_tables_are_rejected_naming_the_field(change: dict, field: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse_accuracy_step({**GOOD, **change})
    assert excinfo.value.field == field


@pytest.mark.parametrize("missing", ["rate", "syringe"])
def test_rate_and_syringe_are_required(missing: str) -> None:
    table = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(ConfigError, match=f"accuracy.{missing}"):
        parse_accuracy_step(table)


def test_a_simulated_pump_within_the_limit_passes_with_its_bias_measured(tmp_path) -> None:
    step = parse_accuracy_step({**GOOD, "duration": "120min", "bias_pct": 3.0})
    outcome = run_accuracy_step(step, report_dir=tmp_path)
    assert outcome.passed
    assert outcome.mean_error_pct == pytest.approx(3.0, abs=0.2)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary
    assert (tmp_path / "report.html").exists()


def test_a_simulated_pump_outside_the_limit_fails(tmp_path) -> None:
    step = parse_accuracy_step({**GOOD, "bias_pct": 8.0, "balance": "sbi"})
    outcome = run_accuracy_step(step, report_dir=tmp_path)
    assert not outcome.passed
    assert outcome.mean_error_pct == pytest.approx(8.0, abs=0.3)
    assert "limit ±5 %" in outcome.detail


def test_urls_come_together_and_a_bias_is_refused_on_real_devices(tmp_path) -> None:
    step = parse_accuracy_step(GOOD)
    with pytest.raises(ConfigError, match="balance_url"):
        run_accuracy_step(step, report_dir=tmp_path, pump_url="/dev/null")
    biased = parse_accuracy_step({**GOOD, "bias_pct": 1.0})
    with pytest.raises(ConfigError, match="bias_pct"):
        run_accuracy_step(biased, report_dir=tmp_path, pump_url="socket://127.0.0.1:9", balance_url="socket://127.0.0.1:9")


def test_a_refused_run_fails_the_step_with_the_reason_and_no_number(tmp_path, monkeypatch) -> None:
    from hil.gravimetric import procedure
    from hil.gravimetric.analysis import InsufficientDataError, RefusalReason

    def refuse(*args, **kwargs):
        raise InsufficientDataError(RefusalReason.PUMP_NOT_DELIVERING, "the weight did not rise")

    monkeypatch.setattr(procedure, "run_accuracy", refuse)
    outcome = run_accuracy_step(parse_accuracy_step(GOOD), report_dir=tmp_path)
    assert not outcome.passed
    assert outcome.mean_error_pct is None
    assert "pump_not_delivering" in outcome.detail
