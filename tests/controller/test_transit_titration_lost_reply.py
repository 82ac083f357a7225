"""A titration during a concentration transit whose pause reply is lost (HAL-05, TIT-01, BOL-06; issue #9).

Mid-transit a titration goes as the transit program of the new dose (the old drug's volume rate until the old
drug has left the catheter, then the new drug's). The pause that starts it may lose its reply. Like a resume,
the titration reads the pump back and sends the program once more only when none of it can be running (a lost
reply to the pause: nothing was staged; a pump read back stopped); it is never run twice over a pump read back
delivering. Given up as unknown instead, the clinician's titration was refused and alarmed with the pump on
the old dose.

Judged on the fake pump's own state and command log, and on the drug that physically left the catheter tip
(:class:`tests.controller.test_transit.TipOracle`) until a day after the front, with the link lost for good.
"""

from __future__ import annotations

from typing import Any

import pytest

from controller.alarms import AlarmCode
from hal.pump import PumpState
from tests.controller.conftest import MS_PER_H, programs_sent
from tests.controller.test_transit import STEP_MS, assert_tip_dose_holds, implanted, refill


@pytest.mark.parametrize("raises", [False, True], ids=["uncertain", "raised"])
@pytest.mark.parametrize("applied", [False, True], ids=["not_applied", "applied"])
def test_a_titration_mid_transit_whose_pause_reply_is_lost_is_read_back_and_sent_once_more(
        make_rig: Any, applied: bool, raises: bool) -> None:
    """2000 -> 500 µg/mL at 400 µg/day, 0.25 mL of old drug (30 h at 8.3 µL/h); 10 h in, -10 % to 360 µg/day
    with the pause's reply lost; then the link is lost for good."""
    rig, oracle = implanted(make_rig, 2000, 400, "0.25")
    assert refill(rig, oracle, 500).allowed
    for _ in range(10 * MS_PER_H // STEP_MS):
        oracle.step(STEP_MS)
    assert rig.loop.transit is not None
    runs = programs_sent(rig.pump)
    faults = rig.pump.faults
    faults.uncertain_next, faults.apply_uncertain, faults.raise_uncertain = True, applied, raises
    result = rig.therapy.titrate(360_000)
    assert not faults.uncertain_next  # the loss fell on the titration's pause
    assert result.allowed, result
    assert rig.pump.state is PumpState.INFUSING and programs_sent(rig.pump) == runs + 1
    assert rig.pump.rate_nl_per_h == 7_500 and rig.loop.transit is not None  # 360 µg/day of the old drug
    assert not rig.alarms.is_active(AlarmCode.THERAPY_STATUS_UNKNOWN)
    oracle.step(0)
    rig.pump.faults.comms_down = True
    front_ms = rig.loop.now_ms() + 21 * MS_PER_H  # at most 20 h of old drug left
    assert_tip_dose_holds(rig, oracle, 360, 2000, front_ms + 24 * MS_PER_H)
    assert rig.pump.rate_nl_per_h == 30_000  # the new drug's rate, switched by the pump alone
