"""Issue #10: a flex step goes in a form whose orphan schedule passes, or it is not sent and an alarm says so.

A flex step the pump may not be left holding (its rate alone for 24 h would pass the cap) goes as a
program the pump leaves by itself. Before, that was always "the step, then the next step, continuous",
sent without its own orphan check: with two high steps in a row the pump, left alone, held the second
high step for good. Now the form is the first whose orphan schedule passes: the plain rate, or the steps
up to the first one that can be left running; with none (a pump without programs), a step that would
raise the rate is not sent and PROGRAMME_STEP_REFUSED is raised.

The oracle is the simulator and the label: the controller dies just after the boundary, the simulated
NE-1000 runs what it holds alone for 24 h (its own program semantics), and the drug that left the tip in
every 24 h window (through :class:`sim.catheter.PhysicalCatheter`) is held against the cap, the rate the
mechanism runs against the minimum rate.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from controller.alarms import AlarmCode
from controller.store import Store
from hal.pump import PumpCapabilities
from sim.clock import VirtualClock
from sim.fake_pump import FakePump
from tests.controller.conftest import build_rig
from tests.e2e.test_death import CAP_UG, CONCENTRATION, PRESCRIPTION, Truth, death_rig, orphan_day
from tests.prescriptions import MINIMUM_RATE_NL_PER_H

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000
#: Two high steps in a row (600 then 500 µg/day, an hour each) in a 101 µg day under the 300 µg cap: the
#: second high step alone for 24 h would pass the cap too, so "the first step, then the second, continuous"
#: may not be left running.
ALONE_STEP_MS = 10 * MS_PER_MIN
DOUBLE_SPIKE = [(0, 60_000), (10 * MS_PER_H, 600_000), (11 * MS_PER_H, 500_000), (12 * MS_PER_H, 60_000)]


def _after_death(tmp_path: Path, die_at_ms: int) -> tuple[float, list[str], int, int]:
    """Implant the double spike, let the controller die at ``die_at_ms`` (controller time), the pump alone 24 h.

    :return: the worst 24 h at the tip from the death on (µg), the moments the pump stood still alone, and the
        lowest and the last rate the mechanism ran alone (nL/h).
    """
    truth = Truth()
    with death_rig(tmp_path, f"spike-{die_at_ms}") as (sim, driver, path, clock):
        store = Store(path, clock)
        rig = build_rig(clock, driver, store, prescription=PRESCRIPTION)
        rig.controller.subscribe(on_poll=lambda _poll: truth.sample(clock.monotonic_ms(),
                                                                    sim.device.mechanics.actual_delivered_nl()))
        rig.advance(MS_PER_H - rig.controller.now_ms())
        truth.catheter.change_solution(CONCENTRATION)
        assert rig.therapy.implant(CONCENTRATION, 20_000_000, flex_steps=DOUBLE_SPIKE, anchor_ms=0).allowed
        rig.advance(die_at_ms - rig.controller.now_ms())
        died = clock.monotonic_ms()
        rig.controller.detach()
        store.abandon()
        stops, rates = [], []
        for _ in range(MS_PER_DAY // ALONE_STEP_MS):
            clock.advance(ALONE_STEP_MS / 1000)
            sim.device.poll()
            truth.sample(clock.monotonic_ms(), sim.device.mechanics.actual_delivered_nl())
            moving = sim.device.state == "I" and sim.device.mechanics.rate_nl_per_h > 0
            rates.append(sim.device.mechanics.rate_nl_per_h if moving else 0)
            if not moving:
                stops.append(f"{clock.monotonic_ms()} ms: state {sim.device.state}")
        worst_pg, _worst_nl = truth.worst_window(died)
        return worst_pg / 1_000_000, stops, min(rates), rates[-1]


@pytest.mark.parametrize("die_at_ms", [10 * MS_PER_H + MS_PER_MIN, 10 * MS_PER_H + 59 * MS_PER_MIN,
                                       11 * MS_PER_H + MS_PER_MIN, MS_PER_DAY + 10 * MS_PER_H + 30 * MS_PER_MIN],
                         ids=["first high step", "end of the first", "second high step", "day 2"])
def test_two_high_steps_in_a_row_go_as_one_program_that_returns_to_the_low_step_by_itself(
        tmp_path: Path, die_at_ms: int) -> None:
    tip_ug, stops, lowest, last = _after_death(tmp_path, die_at_ms)
    assert tip_ug <= CAP_UG, f"death at {die_at_ms} ms: {tip_ug} µg left the tip in a 24 h window, cap {CAP_UG} µg"
    assert stops == [], stops
    assert lowest >= MINIMUM_RATE_NL_PER_H
    assert last == _label_rate_nl_per_h(60_000)  # alone, the pump ends on the low step


def _label_rate_nl_per_h(dose_ng_per_day: int) -> int:
    """The label's rate for a dose: dose over concentration, per hour (nL/h)."""
    return dose_ng_per_day * 1_000 // CONCENTRATION // 24


class PumpWithoutPrograms(FakePump):
    """A pump that only takes rates: it can never leave a step by itself."""

    def capabilities(self) -> PumpCapabilities:
        return replace(super().capabilities(), holds_programs=False)


def test_on_a_pump_without_programs_a_step_no_form_can_leave_running_is_refused_with_an_alarm(
        tmp_path: Path) -> None:
    clock = VirtualClock()
    pump = PumpWithoutPrograms(clock)
    rig = build_rig(clock, pump, Store(tmp_path / "s.sqlite", clock), prescription=PRESCRIPTION)
    rig.advance(MS_PER_H)
    # Without programs a priming bolus is a rate, which the orphan check refuses too: not primed here.
    assert rig.therapy.implant(CONCENTRATION, 20_000_000, flex_steps=DOUBLE_SPIKE, anchor_ms=0, catheter="drug").allowed
    low = _label_rate_nl_per_h(60_000)
    sent = len(pump.command_log)
    rig.advance(10 * MS_PER_H + MS_PER_MIN - rig.controller.now_ms())
    # Left alone the pump would hold 600 µg/day for good, twice the cap: it is not sent, and an alarm says so.
    denied = [p for e, p in rig.events if e == "denied" and p.get("action") == "flex_step"]
    assert denied and denied[0]["reasons"] == ["ORPHAN_OVER_CAP"], denied
    assert rig.controller.alarms.is_active(AlarmCode.PROGRAMME_STEP_REFUSED)
    assert pump.rate_nl_per_h == low  # the pump keeps the low step, judged when it was sent
    assert low * 24 * CONCENTRATION // 1_000_000 <= CAP_UG  # and that, alone for 24 h, is within the cap
    rig.advance(12 * MS_PER_H + MS_PER_MIN - rig.controller.now_ms())
    assert pump.rate_nl_per_h == low
    assert all(value in (None, low) for command, value in pump.command_log[sent:] if command == "set_rate")
    # Back at the step the pump holds, the alarm clears; therapy never stopped.
    assert not rig.controller.alarms.is_active(AlarmCode.PROGRAMME_STEP_REFUSED)
    assert pump.state.delivering
