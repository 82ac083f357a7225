"""The last send paths that gave up after one lost reply (HAL-05, SAFE-01, BOL-06; issue #9).

A stopped pump started by a rate set (a one-phase program after the rate), a flex programme set during a
concentration transit (its transit program) and the step program sent when a transit ends inside a high
flex step read the pump back after a lost reply and send once more only
when none of the program can be running. Given up as unknown instead, the pump was left standing still, or
on the old programme. A second loss stays unknown and alarmed. Judged on the fake pump's own state and
command log, and for the transit on the drug that physically left the catheter tip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

from controller.alarms import AlarmCode
from controller.commands import CommandIssuer, ProgramResult
from controller.store import Store
from hal.pump import PumpState
from sim.clock import VirtualClock
from sim.fake_pump import FakePump
from tests.controller.conftest import MS_PER_DAY, MS_PER_H, MS_PER_MIN, programs_sent
from tests.controller.test_transit import STEP_MS, assert_tip_dose_holds, implanted, refill
from tests.controller.test_transit_steps import CAP_UG, HIGH_FIRST, assert_tip_follows


def _lose_pause_replies(pump: Any, count: int, *, applied: bool, raises: bool,
                        when: Callable[[], bool] = lambda: True) -> None:
    """The next ``count`` pauses sent while ``when()`` holds lose their reply (applied or not)."""
    pause = pump.pause
    left = [count]

    def pause_losing_its_reply():  # type: ignore[no-untyped-def]
        if left[0] > 0 and when():
            left[0] -= 1
            pump.faults.uncertain_next, pump.faults.apply_uncertain, pump.faults.raise_uncertain = (
                True, applied, raises)
        return pause()

    pump.pause = pause_losing_its_reply  # type: ignore[method-assign]


def _stopped(tmp_path: Path) -> tuple[FakePump, CommandIssuer]:
    clock = VirtualClock()
    pump = FakePump(clock)
    issuer = CommandIssuer(pump, Store(tmp_path / "s.sqlite", clock), on_storage_failure=pytest.fail)
    assert pump.state is PumpState.STOPPED and issuer.holds_programs()
    return pump, issuer


@pytest.mark.parametrize("raises", [False, True], ids=["uncertain", "raised"])
@pytest.mark.parametrize("applied", [False, True], ids=["not_applied", "applied"])
def test_a_lost_pause_reply_while_starting_a_stopped_pump_is_read_back_and_sent_once_more(
        tmp_path: Path, applied: bool, raises: bool) -> None:
    pump, issuer = _stopped(tmp_path)
    _lose_pause_replies(pump, 1, applied=applied, raises=raises)
    outcome = issuer.send_rate(20_000, previous_nl_per_h=None, cause="resume", essential=True)
    assert outcome.committed and outcome.uncertain, outcome
    assert pump.state is PumpState.INFUSING and pump.rate_nl_per_h == 20_000
    assert programs_sent(pump) == 1


def test_a_second_lost_reply_while_starting_a_stopped_pump_stays_unknown(tmp_path: Path) -> None:
    pump, issuer = _stopped(tmp_path)
    _lose_pause_replies(pump, 2, applied=False, raises=False)
    outcome = issuer.send_rate(20_000, previous_nl_per_h=None, cause="resume", essential=True)
    assert not outcome.committed and outcome.uncertain, outcome
    assert pump.state is PumpState.STOPPED and programs_sent(pump) == 0


@pytest.mark.parametrize("raises", [False, True], ids=["uncertain", "raised"])
@pytest.mark.parametrize("applied", [False, True], ids=["not_applied", "applied"])
def test_a_flex_programme_set_mid_transit_whose_pause_reply_is_lost_is_read_back_and_sent_once_more(
        make_rig: Any, applied: bool, raises: bool) -> None:
    """500 -> 2000 µg/mL at 200 µg/day, 0.25 mL of old drug (15 h at 16.7 µL/h); 11 h in, a flex programme at the
    same dose with the pause's reply lost; then the link is lost for good until a day after the front."""
    rig, oracle = implanted(make_rig, 500, 200, "0.25")
    assert refill(rig, oracle, 2000).allowed
    rig.advance(40_000 * 1000)
    assert rig.loop.transit is not None
    oracle.step(0)
    runs = programs_sent(rig.pump)
    _lose_pause_replies(rig.pump, 1, applied=applied, raises=raises)
    result = rig.therapy.set_flex([(0, 200_000), (12 * MS_PER_H, 200_000)], anchor_ms=0)
    assert result.allowed, result
    assert rig.pump.state is PumpState.INFUSING and programs_sent(rig.pump) == runs + 1
    assert not rig.alarms.is_active(AlarmCode.THERAPY_STATUS_UNKNOWN)
    rig.pump.faults.comms_down = True
    assert_tip_dose_holds(rig, oracle, 200, 2000, rig.loop.now_ms() + 5 * MS_PER_H + 24 * MS_PER_H)


def test_a_flex_programme_set_mid_transit_whose_replies_are_lost_twice_stays_unknown_and_alarmed(
        make_rig: Any) -> None:
    rig, oracle = implanted(make_rig, 500, 200, "0.25")
    assert refill(rig, oracle, 2000).allowed
    rig.advance(40_000 * 1000)
    runs = programs_sent(rig.pump)
    _lose_pause_replies(rig.pump, 2, applied=False, raises=False)
    rig.therapy.set_flex([(0, 200_000), (12 * MS_PER_H, 200_000)], anchor_ms=0)
    assert programs_sent(rig.pump) == runs
    assert rig.alarms.is_active(AlarmCode.THERAPY_STATUS_UNKNOWN)


@pytest.mark.parametrize("applied", [False, True], ids=["not_applied", "applied"])
def test_the_step_program_sent_at_a_transit_s_end_is_read_back_and_sent_once_more_after_a_lost_pause_reply(
        make_rig: Any, applied: bool) -> None:
    """500 -> 2000 µg/mL at 200 µg/day, 0.25 mL of old drug; 11 h in, a flex day whose first 3 h run 900 µg/day
    (a step program). The poll after the front ends the transit and sends the step program again, its pause
    reply lost; the controller dies half an hour later and the pump is left alone for a day."""
    rig, oracle = implanted(make_rig, 500, 200, "0.25", max_dose_ug_per_day=CAP_UG)
    assert refill(rig, oracle, 2000).allowed
    rig.advance(11 * MS_PER_H)
    oracle.step(0)
    anchor = rig.loop.now_ms()
    assert rig.therapy.set_flex(HIGH_FIRST, anchor_ms=anchor).allowed
    runs = programs_sent(rig.pump)
    _lose_pause_replies(rig.pump, 1, applied=applied, raises=False, when=lambda: rig.loop.transit is None)
    assert_tip_follows(rig, oracle, HIGH_FIRST, anchor, anchor + 90 * MS_PER_MIN)
    assert rig.loop.transit is None and programs_sent(rig.pump) == runs + 1
    assert rig.pump.state is PumpState.INFUSING
    assert not rig.alarms.is_active(AlarmCode.THERAPY_STATUS_UNKNOWN)
    rig.controller.detach()
    for _ in range(MS_PER_DAY // STEP_MS):
        rig.clock.advance(STEP_MS / 1000)
        oracle.steps.append((oracle.steps[-1][0] + STEP_MS, oracle._flush()))
        assert oracle.last_24h_pg() <= CAP_UG * 1_000_000, f"{oracle.last_24h_pg() / 1e6:.1f} µg in 24 h"
    assert rig.pump.rate_nl_per_h == 100_000 * 1000 // 2000 // 24


def test_a_transit_that_ends_in_minimum_rate_mode_leaves_the_minimum_rate_the_pump_holds(make_rig: Any) -> None:
    """500 -> 2000 µg/mL, minimum-rate mode entered 4 h into the transit: the end of the transit sends nothing. The
    pump must still hold the one-phase minimum volume rate the controller records, and the tip get that volume
    rate of the new drug after the front (0.048 mL/day: 96 µg/day of 2000 µg/mL), not a transit rate."""
    rig, oracle = implanted(make_rig, 500, 200, "0.25")
    assert refill(rig, oracle, 2000).allowed
    for _ in range(4 * MS_PER_H // STEP_MS):
        oracle.step(STEP_MS)
    assert rig.loop.transit is not None and rig.loop.enter_minimum_rate("a test")
    minimum = rig.loop.config.minimum_rate_nl_per_h
    while rig.loop.transit is not None:
        oracle.step(STEP_MS)
    for _ in range(MS_PER_DAY // STEP_MS):
        assert oracle.step(STEP_MS) == minimum * STEP_MS // MS_PER_H * 2000  # pg: nL x µg/mL
    held = rig.pump.read_program(1, 16)
    assert rig.pump.state is PumpState.INFUSING and rig.pump.rate_nl_per_h == minimum
    assert len(held.phases) == 1 and rig.loop.commands.held_program == held
