"""An interruption of exactly the restart threshold resumes at the starting dose, not never (issue #9, second review).

Found by the second outside clinical review: 300 µg/day at 500 µg/mL, the reservoir runs empty (minimum
rate, 24 µg/day), the clinician refills and acknowledges exactly 24 h after the minimum-rate spell began.
The front door's restart rule took 24.0 h as short ("longer than the threshold") and asked for the old
300 µg/day; the kernel's rule takes 24 h as long (``>=``) and refused it. The resume was refused, and the
patient stayed at 8 % of the dose. With a fault stop in place of the minimum rate it stays stopped.
One hour either side resumes: at 300 after 23 h, at the 100 µg/day starting dose after 25 h.

The restart rule (itb-clinical §1.6 [JP-LBL], §3.3 [OD91]), RES-05, SAFE-01 ("stopping is not a safe
state"). Judged on the fake pump's physical rate against the label rule computed by hand: a transferred
patient restarts at the lower of the documented 300 µg/day and 2 x the 50 µg first test dose.
"""

from __future__ import annotations

from typing import Any

import pytest

from controller.loop import Mode
from tests.controller.conftest import MS_PER_H

RATE_NL_PER_H = {300: 25_000, 100: 8_333}  # µg/day at 500 µg/mL


def _spell(make_rig: Any, kind: str, hours: int) -> Any:
    """300 µg/day; a minimum-rate spell (the reservoir empties) or a stall of ``hours``; refilled, acknowledged."""
    rig = make_rig(concentration=500, dose_ug_per_day=300, reservoir_ml=4, dead_volume_ml="0.25")
    assert rig.therapy.implant(500, 4_000_000, dose_ng_per_day=300_000, catheter="drug").allowed
    if kind == "stall":
        rig.advance(2 * 24 * MS_PER_H)
        rig.advance(rig.loop.schedule.next_poll_ms - rig.loop.now_ms())
        rig.pump.inject_stall()
        rig.advance(MS_PER_H)
        assert rig.loop.mode is Mode.STOPPED_FAULT
        began = rig.loop.now_ms() - MS_PER_H
    else:
        for _ in range(240):
            rig.advance(MS_PER_H)
            if rig.loop.mode is Mode.MINIMUM_RATE:
                break
        assert rig.loop.mode is Mode.MINIMUM_RATE
        began = rig.loop.now_ms()
    rig.advance(began + hours * MS_PER_H - rig.loop.now_ms())
    assert rig.therapy.refill(removed_nl=rig.loop.reservoir_nl(), added_nl=20_000_000, concentration_ug_per_ml=500,
                              lot="R1").allowed
    rig.therapy.acknowledge_alarms()
    rig.advance(MS_PER_H)
    return rig


@pytest.mark.parametrize("kind", ["minimum_rate", "stall"])
@pytest.mark.parametrize(("hours", "dose_ug_per_day"), [(23, 300), (24, 100), (25, 100)])
def test_an_interruption_of_the_threshold_or_more_resumes_at_the_starting_dose(make_rig: Any, kind: str, hours: int,
                                                                               dose_ug_per_day: int) -> None:
    """The restart rule, RES-05, SAFE-01: after 23 h the old dose, after 24 h and 25 h the starting dose; never left
    at the minimum rate or stopped."""
    rig = _spell(make_rig, kind, hours)
    assert rig.loop.mode is Mode.RUNNING, rig.events[-3:]
    assert rig.pump.rate_nl_per_h == RATE_NL_PER_H[dose_ug_per_day]
