"""Scenario files with an accuracy step: measured before therapy, judged as a check of the run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cython_ext.errors import ConfigError
from hil.scenario import RunOptions, ScenarioRunner, load_scenario, parse_scenario

SHIPPED = Path(__file__).resolve().parents[2] / "hil" / "scenarios" / "accuracy.toml"


def _with_bias(text: str, bias_pct: float) -> str:
    return re.sub(r"^bias_pct = .*$", f"bias_pct = {bias_pct}", text, flags=re.MULTILINE)


def _accuracy_check(record) -> object:
    return next(c for c in record.expectations if c.name.startswith("accuracy step"))


def test_the_shipped_accuracy_scenario_measures_its_bias_and_passes(tmp_path: Path) -> None:
    record = ScenarioRunner(load_scenario("accuracy"), RunOptions(link="inprocess", report_dir=tmp_path)).run()
    assert record.passed, record.summary()
    check = _accuracy_check(record)
    assert check.passed
    measured = float(re.search(r"mean error ([+-][0-9.]+) %", check.detail).group(1))
    assert measured == pytest.approx(1.5, abs=0.2)
    summary = json.loads((tmp_path / "accuracy" / "summary.json").read_text())
    assert summary
    assert (tmp_path / "accuracy" / "samples.csv").exists()


def test_a_pump_outside_the_limit_fails_the_run(tmp_path: Path) -> None:
    scenario = parse_scenario(_with_bias(SHIPPED.read_text(), 7.0), base_dir=SHIPPED.parent)
    record = ScenarioRunner(scenario, RunOptions(link="inprocess", report_dir=tmp_path)).run()
    assert not _accuracy_check(record).passed
    assert not record.passed


def test_an_unknown_key_in_the_accuracy_table_is_rejected() -> None:
    text = SHIPPED.read_text().replace("[accuracy]\n", "[accuracy]\nrate_ml_per_h = 1.2\n")
    with pytest.raises(ConfigError) as info:
        parse_scenario(text, base_dir=SHIPPED.parent)
    assert info.value.field == "accuracy.rate_ml_per_h"


def test_a_balance_url_needs_a_real_pump_and_an_accuracy_step(tmp_path: Path) -> None:
    options = RunOptions(link="inprocess", report_dir=tmp_path, balance_url="socket://127.0.0.1:9")
    with pytest.raises(ConfigError, match="balance_url"):
        ScenarioRunner(load_scenario("accuracy"), options).run()
