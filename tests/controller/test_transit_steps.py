"""A flex step sent as a multi-phase step program during a concentration transit (BOL-06, issue #9).

Mid-transit the catheter still holds the old drug, which leaves the tip first: until the front of the new
drug reaches the tip, the volume rate that gives a step's dose is the old drug's; after it, the new drug's.
A step the pump must leave by itself (a high step the orphan check would not leave running alone) goes as a
program of several phases, and each phase must run the volume rate of the drug at the tip while it runs.

Judged on physics only: the fake pump's pushed volume through an independent catheter
(:class:`tests.controller.test_transit.TipOracle`), against the programme's own dose over each observation
step, never the controller's ledger or its transit.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.controller.conftest import MS_PER_DAY, MS_PER_H, MS_PER_MIN, Rig
from tests.controller.test_transit import STEP_MS, TIP_TOLERANCE_PCT, TipOracle, implanted, refill

#: A 200 µg/day flex day: 900 µg/day for 3 h (alone for 24 h it would pass the 600 µg cap), then 100 µg/day.
HIGH_FIRST = [(0, 900_000), (3 * MS_PER_H, 100_000)]
CAP_UG = 600


def _prescribed_pg(steps: list[tuple[int, int]], anchor_ms: int, start_ms: int, end_ms: int) -> int:
    """What the flex day prescribes at the tip over ``[start_ms, end_ms)``, pg (per ms of each step)."""
    total = 0
    for t in range(start_ms, end_ms, MS_PER_MIN):
        of_day = (t - anchor_ms) % MS_PER_DAY
        dose = [d for s, d in steps if s <= of_day][-1]
        total += dose * 1000 * MS_PER_MIN // MS_PER_DAY
    return total


def assert_tip_follows(rig: Rig, oracle: TipOracle, steps: list[tuple[int, int]], anchor_ms: int,
                       until_ms: int) -> None:
    """Every observation step until ``until_ms`` leaves the flex day's dose at the tip, within tolerance."""
    while rig.loop.now_ms() < until_ms:
        at = rig.loop.now_ms()
        got = oracle.step(STEP_MS)
        expected = _prescribed_pg(steps, anchor_ms, at, at + STEP_MS)
        assert abs(got - expected) * 100 <= expected * TIP_TOLERANCE_PCT, (
            f"at {(at - anchor_ms) / MS_PER_H:.1f} h into the flex day: {got / 1e6:.3f} µg left the tip in "
            f"{STEP_MS // MS_PER_MIN} min, prescribed {expected / 1e6:.3f} µg (transit {rig.loop.transit})")
        assert oracle.last_24h_pg() <= CAP_UG * 1_000_000


@pytest.mark.parametrize("new_concentration", [1000, 2000])
def test_a_high_step_set_mid_transit_runs_each_phase_at_the_rate_of_the_drug_at_the_tip(
        make_rig: Any, new_concentration: int) -> None:
    """500 -> 1000 or 2000 µg/mL at 200 µg/day, 0.25 mL of old drug (15 h at 16.7 µL/h). 11 h in, a flex day
    whose first 3 h run 900 µg/day is set (a step program: alone, 900 µg/day would pass the 600 µg cap), then the
    link is lost for good. The front reaches the tip 53 min into the high step."""
    rig, oracle = implanted(make_rig, 500, 200, "0.25", max_dose_ug_per_day=CAP_UG)
    assert refill(rig, oracle, new_concentration).allowed
    rig.advance(11 * MS_PER_H)
    assert rig.loop.transit is not None
    oracle.step(0)
    anchor = rig.loop.now_ms()
    result = rig.therapy.set_flex(HIGH_FIRST, anchor_ms=anchor)
    assert result.allowed, result
    assert len(rig.pump.read_program(1, 16).phases) > 2  # the pump leaves the high step by itself
    rig.pump.faults.comms_down = True
    assert_tip_follows(rig, oracle, HIGH_FIRST, anchor, anchor + 23 * MS_PER_H)


@pytest.mark.parametrize("new_concentration", [1000, 2000])
def test_the_end_of_a_transit_inside_a_high_step_leaves_a_program_the_pump_ends_by_itself(
        make_rig: Any, new_concentration: int) -> None:
    """The same flex day set 11 h into the transit, the link up: the poll after the front ends the transit. The
    controller dies half an hour later; left alone for a day, the pump must still leave the high step by itself
    (a plain rate sent at the transit's end held 900 µg/day for good, past the 600 µg cap)."""
    rig, oracle = implanted(make_rig, 500, 200, "0.25", max_dose_ug_per_day=CAP_UG)
    assert refill(rig, oracle, new_concentration).allowed
    rig.advance(11 * MS_PER_H)
    oracle.step(0)
    anchor = rig.loop.now_ms()
    assert rig.therapy.set_flex(HIGH_FIRST, anchor_ms=anchor).allowed
    assert_tip_follows(rig, oracle, HIGH_FIRST, anchor, anchor + 90 * MS_PER_MIN)
    assert rig.loop.transit is None
    rig.controller.detach()
    for _ in range(MS_PER_DAY // STEP_MS):
        rig.clock.advance(STEP_MS / 1000)
        oracle.steps.append((oracle.steps[-1][0] + STEP_MS, oracle._flush()))
        assert oracle.last_24h_pg() <= CAP_UG * 1_000_000, f"{oracle.last_24h_pg() / 1e6:.1f} µg in 24 h"
    assert rig.pump.rate_nl_per_h == 100_000 * 1000 // new_concentration // 24


@pytest.mark.parametrize("new_concentration", [None, 2000], ids=["no transit", "500 -> 2000 mid-transit"])
def test_a_resume_inside_a_high_step_puts_back_the_program_that_leaves_it(make_rig: Any,
                                                                          new_concentration: int | None) -> None:
    """SAFE-01, BOL-06: the same flex day; 30 min into the high step the pump stops unexplained, and the next poll
    resumes it (the restart rule, a short interruption: the programme in effect); then the link is lost for good.
    The resume went as a plain rate: 900 µg/day held for good (no transit: 900 µg at the tip in the next 24 h
    against the 600 µg cap). Judged on the drug that left the tip from the resume until the next day's high step."""
    rig, oracle = implanted(make_rig, 500, 200, "0.25", max_dose_ug_per_day=CAP_UG)
    if new_concentration is not None:
        assert refill(rig, oracle, new_concentration).allowed
        rig.advance(11 * MS_PER_H)
        assert rig.loop.transit is not None
    oracle.step(0)
    anchor = rig.loop.now_ms()
    assert rig.therapy.set_flex(HIGH_FIRST, anchor_ms=anchor).allowed
    oracle.step(STEP_MS)
    rig.pump.stop()
    oracle.step(STEP_MS)  # the poll finds it stopped and resumes
    assert rig.pump.state.delivering and len(rig.pump.read_program(1, 16).phases) > 1
    rig.pump.faults.comms_down = True
    assert_tip_follows(rig, oracle, HIGH_FIRST, anchor, anchor + 23 * MS_PER_H)
