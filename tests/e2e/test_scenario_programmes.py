"""Scenarios whose prescription is a flex programme: the implant starts the whole prescribed day.

The kernel authorises the day as a whole at implant, the loop changes the rate at each
boundary, and the delivered dose matches the programme's daily total. Periodic-bolus
prescriptions are covered by test_scenario_periodic.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.loop import Mode
from controller.prescription import load_prescription
from cython_ext.errors import ConfigError
from hil.scenario import PRESCRIPTION_DIR, load_scenario, parse_scenario
from programme_rig import MS_PER_DAY, MS_PER_H, MS_PER_MIN, ProgrammeController
from programme_rig import assert_delivers_programme_daily_total, run_shipped


FLEX_RX = "cerebral_flex_1000.toml"


@pytest.fixture
def controller() -> Any:
    c = ProgrammeController()
    yield c
    c.close()


def _rx_steps(rx: Any) -> list[tuple[int, int]]:
    return [(s.start_min * MS_PER_MIN, s.dose_ng_per_day) for s in rx.programme.steps]


# -- parsing ------------------------------------------------------------------------------------------


def test_flex_prescription_is_taken_by_a_scenario() -> None:
    sc = load_scenario("flex")
    rx = load_prescription(PRESCRIPTION_DIR / FLEX_RX)
    assert sc.prescription == rx
    assert rx.programme.mode.value == "flex" and len(rx.programme.steps) == 3
    assert sc.patient.origin == "cerebral"
    assert sc.therapy.minimum_rate_nl_per_h == 2000  # 48 µg/day at 1000 µg/mL, exactly


def test_a_periodic_prescription_is_taken_by_a_scenario() -> None:
    """Periodic boluses are delivered (tests/e2e/test_scenario_periodic.py): the prescription parses."""
    text = '[scenario]\nname = "p"\nduration_days = 3\nprescription = "paediatric_periodic_500.toml"\n'
    assert parse_scenario(text).prescription.programme.mode.value == "periodic"


# -- the shipped flex scenario ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flex_run() -> Any:
    return run_shipped("flex")


def test_flex_scenario_delivers_the_programme_daily_total(flex_run: Any) -> None:
    assert_delivers_programme_daily_total(*flex_run, kinds={"flex"})


def test_flex_scenario_runs_each_step_at_its_rate(flex_run: Any) -> None:
    sc, record = flex_run
    rx = sc.prescription
    starts = {step.start_min * MS_PER_MIN for step in rx.programme.steps}
    seen: dict[int, set[int]] = {}
    for sample in record.samples:
        offset = sample.t_ms % MS_PER_DAY
        if offset not in starts:  # strictly inside a step: away from any boundary
            seen.setdefault(offset, set()).add(sample.rate_nl_per_h)
    assert len(seen) >= 20, sorted(seen)
    for offset, rates in seen.items():
        step = next(s for s in rx.programme.steps if s.start_min * MS_PER_MIN <= offset < s.end_min * MS_PER_MIN)
        assert rates == {rx.rate_nl_per_h(step.dose_ng_per_day)}, (offset, rates)
    assert {12_500, 8333} <= {r for rates in seen.values() for r in rates}


# -- the therapy workflow -----------------------------------------------------------------------------


def test_implant_with_a_flex_programme_changes_rate_at_its_boundaries(controller: Any) -> None:
    steps = [(0, 300_000), (6 * MS_PER_H, 200_000), (22 * MS_PER_H, 300_000)]
    result = controller.therapy.implant(1000, 40_000_000, flex_steps=steps, catheter="drug")
    assert result.allowed, result
    assert controller.loop.mode is Mode.RUNNING and controller.loop.programme is not None
    assert controller.therapy.prescribed_dose_ng_per_day == 233_328  # the day's total at the rates sent (rounded down)
    rates = []
    controller.loop.observers.append(lambda p: rates.append((p.now_ms % MS_PER_DAY, p.rate_nl_per_h)))
    controller.loop.run_until(MS_PER_DAY + MS_PER_H)
    by_offset = dict(rates)
    assert by_offset[3 * MS_PER_H] == 12_500 and by_offset[12 * MS_PER_H] == 8333
    assert by_offset[23 * MS_PER_H] == 12_500 and by_offset[MS_PER_H] == 12_500


def test_a_flex_programme_started_at_implant_survives_a_restart(controller: Any) -> None:
    steps = [(0, 300_000), (6 * MS_PER_H, 200_000), (22 * MS_PER_H, 300_000)]
    assert controller.therapy.implant(1000, 40_000_000, flex_steps=steps, catheter="drug").allowed
    controller.loop.run_until(2 * MS_PER_H)
    again = ProgrammeController(after=controller)
    assert again.loop.programme is not None
    again.loop.run_until(7 * MS_PER_H)
    assert controller.pump.rate_nl_per_h == 8333
    again.loop.run_until(23 * MS_PER_H)
    assert controller.pump.rate_nl_per_h == 12_500


def test_flex_implant_is_refused_whole_when_the_day_breaks_the_cap(controller: Any) -> None:
    steps = [(0, 300_000), (12 * MS_PER_H, 600_000)]  # 450 µg in the day > 400 µg/day cap
    result = controller.therapy.implant(1000, 40_000_000, flex_steps=steps, catheter="drug")
    assert not result.allowed
    assert controller.loop.mode is Mode.IDLE and controller.loop.programme is None
    assert controller.pump.rate_nl_per_h == 0
    assert controller.gate.total_24h_ng(controller.loop.now_ms()) == 0


@pytest.mark.parametrize("kwargs", [
    {"flex_steps": [(MS_PER_H, 200_000)]},  # must start at midnight
    {"flex_steps": [(0, 200_000), (0, 300_000)]},  # starts must increase
    {"flex_steps": [(0, 200_000), (MS_PER_DAY, 300_000)]},  # inside the day
    {"flex_steps": [(0, 200_000)], "dose_ng_per_day": 200_000},  # one or the other
])
def test_bad_flex_implant_is_rejected_and_nothing_changes(controller: Any, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        controller.therapy.implant(1000, 40_000_000, catheter="drug", **kwargs)
    assert controller.loop.mode is Mode.IDLE and controller.loop.programme is None
    assert controller.pump.rate_nl_per_h == 0


@settings(max_examples=15)
@given(st.lists(st.tuples(st.integers(1, 23), st.integers(100, 300)), min_size=0, max_size=6, unique_by=lambda t: t[0]))
def test_any_allowed_flex_implant_delivers_its_daily_total(extra: list[tuple[int, int]]) -> None:
    """Whatever the steps, a day of the loop commands the programme's volume (rates rounded down)."""
    steps = [(0, 200_000)] + sorted((hour * MS_PER_H, dose * 1000) for hour, dose in extra)
    c = ProgrammeController()
    try:
        result = c.therapy.implant(1000, 40_000_000, flex_steps=steps, catheter="drug")
        assert result.allowed, result
        start_counter = c.pump.read_dispensed().infused_nl
        c.loop.run_until(MS_PER_DAY)
        delivered_nl = c.pump.read_dispensed().infused_nl - start_counter
        bounds = [s for s, _ in steps] + [MS_PER_DAY]
        expected_nl = sum((bounds[i + 1] - s) * (dose // 24) // MS_PER_H  # 1000 µg/mL: nL/h = ng/day / 24
                          for i, (s, dose) in enumerate(steps))
        assert abs(delivered_nl - expected_nl) <= len(steps) + 1
        assert c.loop.mode is Mode.RUNNING
    finally:
        c.close()

