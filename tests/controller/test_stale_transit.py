"""A concentration transit the pump ended by itself while no controller watched (TIT-01, BOL-06; issue #9).

Mid-transit the pump holds the two-phase transit program: the old drug's volume rate until the old drug
has left the catheter, then the new drug's. A controller that is down across that switch comes back with
the transit still open in its resume point. A command sent then (a titration, a fault reaction's restore)
must be scaled for the drug that is now in the catheter, not for the old drug: the clinical adversary
(seeds 3 and 6) found the old drug's volume rate sent as a plain rate on the new drug, twice the dose at
the tip after 500 -> 1000 µg/mL, four times after 500 -> 2000, until the next poll ended the transit.

Judged on physics only: the volume the pump's mechanism pushed, through the independent catheter
(:class:`tests.controller.adversary_world.TipRecord`), never the controller's ledger or its own transit.
"""

from __future__ import annotations

import pytest

from tests.controller.adversary_world import world_ms

MS_PER_MIN = 60_000
MS_PER_DAY = 86_400_000
#: How long after the command the tip dose is measured, min (less than the 30 min poll interval).
WINDOW_MIN = 20


def _tip_dose_ng_per_day(machine, start_ms: int, end_ms: int) -> int:
    """The drug that left the catheter tip over ``[start_ms, end_ms]``, as a daily dose, ng/day."""
    pg = machine.tip.tip_pg_within(start_ms, end_ms)
    return pg * MS_PER_DAY // (end_ms - start_ms) // 1000


def _ten_hours_into_a_transit(machine, new_concentration: int) -> None:
    """Spinal, 200 µg/day at 500 µg/mL, then ``new_concentration``: the change's transit takes 15 h (250 µL at
    16.7 µL/h) and is 10 h on, the pump still in its old-drug phase."""
    machine.implant(origin="spinal", effective=2, effect_h=4, cap_ug=800, child_starts_low=False)
    machine.time_passes(minutes=1440)
    machine.change_concentration(concentration=new_concentration, pocket_fill=False)
    machine.time_passes(minutes=600)
    assert machine.rig.loop.transit is not None and machine.pump.read_phase() == 1


def _across_the_pump_s_own_transit_end(machine, new_concentration: int) -> None:
    """Ten hours into the transit (:func:`_ten_hours_into_a_transit`) the controller crashes; it comes back 10 h
    later, with the pump long on the new drug's rate."""
    _ten_hours_into_a_transit(machine, new_concentration)
    machine.restart(downtime_min=600, reboot=True, wall_jump_h=0, new_origin="")
    machine.tip.sample()
    assert machine.tip.concentration_at_tip_ms(world_ms(machine.world)) == new_concentration


@pytest.mark.parametrize("new_concentration", [1000, 2000])
def test_a_titration_just_after_a_restart_past_the_transit_end_is_dosed_for_the_new_drug(new_concentration: int) -> None:
    """+10 % right after the restart: 220 µg/day prescribed; the tip got 440 (1000 µg/mL) or 880 (2000 µg/mL)."""
    from tests.controller.test_clinical_adversary import ClinicalAdversary

    machine = ClinicalAdversary()
    try:
        _across_the_pump_s_own_transit_end(machine, new_concentration)
        start = world_ms(machine.world)
        machine.titrate(pct=10, override=False)
        prescribed = machine.therapy.prescribed_dose_ng_per_day
        assert prescribed == 220_000
        machine.world.advance(WINDOW_MIN * 60)
        machine.tip.sample()
        got = _tip_dose_ng_per_day(machine, start, world_ms(machine.world))
        assert got <= prescribed * 101 // 100, f"{got / 1000:g} µg/day at the tip, {prescribed / 1000:g} prescribed"
        assert got >= prescribed * 99 // 100, f"{got / 1000:g} µg/day at the tip, {prescribed / 1000:g} prescribed"
        machine.time_passes(minutes=60)
        machine.the_label_holds()
    finally:
        machine.teardown()



def test_a_transit_ended_by_volume_just_before_a_long_pause_is_judged_by_flow_not_clock_time() -> None:
    """The oracle's side (seed 6): recovery ends the transit with 10 nL of old drug left (4 s of flow, within the
    controller's minute), then the pump stands still for an hour (a power cycle; a refill whose pause was applied
    with its reply lost did it once, issue #9, and now puts the old basal back). The
    new drug's rate put in before the pause is the dose behind the front (200 µg/day), not 100 µg/day on the
    old drug: by clock time the front was an hour off, by flow 4 s. Replayed move for move, the label's
    invariant between moves as the state machine runs it."""
    from tests.controller.test_clinical_adversary import ClinicalAdversary

    machine = ClinicalAdversary()
    moves = [
        lambda: machine.implant(effective=2, cap_ug=400, origin="spinal", effect_h=6, child_starts_low=True),
        lambda: machine.refill(pocket_fill=True),
        lambda: machine.titration_course(days=4, pct=14, split=True),
        lambda: machine.change_concentration_then_restart(concentration=1000, downtime_min=60, minutes=240,
                                                          reboot=False, wall_jump_h=-24),
        lambda: machine.change_concentration_then_restart(concentration=500, downtime_min=60, minutes=600,
                                                          reboot=False, wall_jump_h=24),
        machine.resume,
        lambda: machine.pump_fault(kind="power_cycle"),
        lambda: machine.link_down(minutes=60),
        machine.resume,
        lambda: machine.refill(pocket_fill=False),
        lambda: machine.raise_to_yesterdays_peak(override=False),
        lambda: machine.link_down(minutes=300),
    ]
    try:
        for move in moves:
            move()
            machine.the_label_holds()
        fronts = [(at, old, new) for at, old, new in machine.tip.boundaries if old]
        assert fronts and fronts[-1][1:] == (500, 1000)
        assert machine.oracle._moving_ms(fronts[-1][0] - MS_PER_DAY // 24, fronts[-1][0]) < MS_PER_MIN
    finally:
        machine.teardown()


def test_a_resume_after_a_stall_while_the_controller_was_down_past_the_transit_end_restarts_delivery() -> None:
    """SAFE-01: the motor stalls while the controller is down, after the pump's own switch to the new drug's rate;
    at the restart the pump is found stopped, and the clinician asks to resume at once. Scaled for the old drug
    (four times the volume rate after 500 -> 2000 µg/mL), the resume's orphan schedule went over the cap and the
    resume was refused (ORPHAN_OVER_CAP), leaving the pump stopped. It restarts at the prescribed dose."""
    from tests.controller.test_clinical_adversary import ClinicalAdversary

    machine = ClinicalAdversary()
    try:
        _ten_hours_into_a_transit(machine, 2000)
        machine.rig.controller.detach()
        machine.world.advance(600 * 60)
        machine.pump.inject_stall()
        machine.restart(downtime_min=5, reboot=True, wall_jump_h=0, new_origin="")
        machine.tip.sample()
        assert machine.pump.pushing_nl_per_h() == 0
        assert machine.tip.concentration_at_tip_ms(world_ms(machine.world)) == 2000
        result = machine.therapy.resume()
        assert result.allowed, result
        start = world_ms(machine.world)
        machine.world.advance(WINDOW_MIN * 60)
        machine.tip.sample()
        prescribed = machine.therapy.prescribed_dose_ng_per_day
        got = _tip_dose_ng_per_day(machine, start, world_ms(machine.world))
        assert prescribed * 99 // 100 <= got <= prescribed * 101 // 100, f"{got / 1000:g} µg/day at the tip"
        machine.time_passes(minutes=60)
        machine.the_label_holds()
    finally:
        machine.teardown()
