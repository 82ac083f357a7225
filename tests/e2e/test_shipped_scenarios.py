"""Every shipped scenario passes its own expectations and the safety invariants (in-process link, virtual time)."""

from __future__ import annotations

import pytest

from hil.scenario import RunOptions, ScenarioRunner, load_scenario, shipped_scenarios


@pytest.mark.parametrize("name", [n for n in shipped_scenarios() if n != "default"])
def test_shipped_scenario_passes(name: str) -> None:
    record = ScenarioRunner(load_scenario(name), RunOptions(link="inprocess")).run()
    failed = [f"{c.name}: {c.detail}" for c in (*record.invariants, *record.expectations) if not c.passed]
    assert not record.error, record.error
    assert not failed, failed
    assert record.samples, "the loop never polled"


def test_runs_are_deterministic() -> None:
    scenario = load_scenario("faults").with_duration(9 * 86_400_000)
    first = ScenarioRunner(scenario, RunOptions(link="inprocess")).run()
    second = ScenarioRunner(scenario, RunOptions(link="inprocess")).run()
    assert [(s.t_ms, s.rate_nl_per_h, s.dose_24h_ug) for s in first.samples] == \
        [(s.t_ms, s.rate_nl_per_h, s.dose_24h_ug) for s in second.samples]
    assert [(a.t_ms, a.event, a.code) for a in first.alarms] == [(a.t_ms, a.event, a.code) for a in second.alarms]


@pytest.mark.parametrize("seed", [2, 5, 6])
def test_default_scenario_is_safe_for_varied_patients(seed: int) -> None:
    """The same therapy on patients drawn with 30 % PK/PD variability: still safe, still within the rules."""
    import dataclasses
    from decimal import Decimal

    base = load_scenario("default")
    scenario = dataclasses.replace(base, settings=dataclasses.replace(base.settings, seed=seed),
                                   patient=dataclasses.replace(base.patient, variability_cv=Decimal("0.3")))
    record = ScenarioRunner(scenario, RunOptions(link="inprocess")).run()
    assert record.passed, [c.name for c in (*record.invariants, *record.expectations) if not c.passed]
    assert record.patient["peak_overdose"] == "NONE"
    assert record.patient["peak_withdrawal"] in ("NONE", "EARLY")  # a 5 h stall may show early signs only
