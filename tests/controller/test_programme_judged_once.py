"""A flex programme's orphan schedule is judged once per form tried, not again by the command (issue #9).

``set_programme`` finds the form a step goes in (:meth:`controller.loop.ControlLoop._programme_form`), judging
each candidate's orphan schedule, and then sends it: the command takes that verdict instead of judging the same
schedule a second time. Judged on the calls the gate's orphan check receives, and on what the fake pump holds.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.controller.conftest import MS_PER_H, Rig
from tests.controller.test_transit import implanted, refill
from tests.controller.test_transit_steps import CAP_UG, HIGH_FIRST

SAME_DOSE = [(0, 200_000), (12 * MS_PER_H, 200_000)]


def _judged(rig: Rig) -> list[Any]:
    """The schedules the gate's orphan check is asked about from now on (in order)."""
    seen: list[Any] = []
    check = rig.gate.orphan_refusals

    def counting(schedule: Any, now_ms: int, **kwargs: Any) -> tuple[str, ...]:
        seen.append(schedule)
        return check(schedule, now_ms, **kwargs)

    rig.gate.orphan_refusals = counting  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("steps", [SAME_DOSE, HIGH_FIRST], ids=["same dose", "high step first"])
@pytest.mark.parametrize("mid_transit", [False, True], ids=["no transit", "mid-transit"])
def test_set_programme_judges_each_schedule_once(make_rig: Any, steps: list[tuple[int, int]],
                                                 mid_transit: bool) -> None:
    rig, oracle = implanted(make_rig, 500, 200, "0.25", max_dose_ug_per_day=CAP_UG)
    if mid_transit:
        assert refill(rig, oracle, 2000).allowed
        rig.advance(11 * MS_PER_H)
        assert rig.loop.transit is not None
    seen = _judged(rig)
    result = rig.therapy.set_flex(steps, anchor_ms=rig.loop.now_ms())
    assert result.allowed, result
    assert seen and len(seen) == len(set(seen)), seen
    assert rig.pump.rate_nl_per_h == rig.loop.committed_rate_nl_per_h


@pytest.mark.parametrize("steps", [None, HIGH_FIRST], ids=["simple", "high step first"])
def test_the_start_of_therapy_judges_each_schedule_once(make_rig: Any, steps: list[tuple[int, int]] | None) -> None:
    rig = make_rig(concentration=500, dose_ug_per_day=200, max_dose_ug_per_day=CAP_UG)
    seen = _judged(rig)
    kwargs: dict[str, Any] = {"dose_ng_per_day": 200_000} if steps is None else {"flex_steps": steps}
    result = rig.therapy.implant(500, 20_000_000, catheter="drug", **kwargs)
    assert result.allowed, result
    assert seen and len(seen) == len(set(seen)), seen
    assert rig.pump.rate_nl_per_h == rig.loop.committed_rate_nl_per_h
