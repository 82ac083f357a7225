"""Orphan schedules (what the pump does with no further command) and the kernel's judgement of them.

The oracle for the refusals is arithmetic by hand on a kernel with an empty ledger: at 500 µg/mL a
continuous rate r nL/h delivers r x 24 x 0.5 ng in a day, and a bolus phase's volume above the
basal is extra mass inside every window from now on.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.program import (ORPHAN_BELOW_MINIMUM, ORPHAN_OVER_CAP, ORPHAN_STOPS, OrphanSchedule,
                                orphan_of_phases, orphan_of_program, orphan_of_rate, orphan_refusals, tip_extra_pg)
from hal.pump import ProgramPhase, PumpProgram
from sim.catheter import PhysicalCatheter
from tests.kernel.conftest import COMPILED, TWIN, make_gate

MS_PER_H = 3_600_000
NOW = 5 * 86_400_000


@pytest.mark.parametrize("k", [COMPILED, TWIN], ids=["compiled", "python"])
def test_a_rate_is_judged_by_its_24_h_dose_against_the_cap(k) -> None:
    gate = make_gate(k, max_dose_ng_per_day=200_000, programme_rate=None, minimum_rate_nl_per_h=2_000)
    # 16 666 nL/h x 24 h x 0.5 ng/nL = 199 992 ng <= 200 000 ng; 16 667 nL/h gives 200 004 ng.
    assert orphan_refusals(k, gate, orphan_of_rate(16_666), NOW) == ()
    assert orphan_refusals(k, gate, orphan_of_rate(16_667), NOW) == (ORPHAN_OVER_CAP,)
    assert orphan_refusals(k, gate, orphan_of_rate(1_999), NOW) == (ORPHAN_BELOW_MINIMUM,)


@pytest.mark.parametrize("k", [COMPILED, TWIN], ids=["compiled", "python"])
def test_a_bolus_program_is_judged_whole_and_a_stuck_bolus_rate_is_refused(k) -> None:
    gate = make_gate(k, max_dose_ng_per_day=200_000, programme_rate=None)
    basal = 8_333  # 99 996 ng/day
    # 100 µg more (200 000 nL) at 408 333 nL/h for 30 min, then basal: 99 996 + 100 000 ng at most in any window.
    bolus = PumpProgram((ProgramPhase(basal + 400_000, 200_000 + basal // 2), ProgramPhase(basal)))
    assert orphan_refusals(k, gate, orphan_of_program(bolus), NOW) == ()
    # 34 nL more in the bolus phase: 200 013 ng in the window that ends 24 h from now.
    bigger = PumpProgram((ProgramPhase(basal + 400_000, 200_034 + basal // 2), ProgramPhase(basal)))
    assert orphan_refusals(k, gate, orphan_of_program(bigger), NOW) == (ORPHAN_OVER_CAP,)
    # A 50 µg bolus as a rate the controller must end itself: its orphan is the bolus rate for ever.
    assert orphan_refusals(k, gate, orphan_of_rate(basal + 200_000), NOW) == (ORPHAN_OVER_CAP,)
    stops = PumpProgram((ProgramPhase(basal, 1_000),))
    assert ORPHAN_STOPS in orphan_refusals(k, gate, orphan_of_program(stops), NOW)


@pytest.mark.parametrize("k", [COMPILED, TWIN], ids=["compiled", "python"])
def test_what_the_ledger_holds_counts_in_the_windows_it_is_inside(k) -> None:
    gate = make_gate(k, max_dose_ng_per_day=200_000, programme_rate=None)
    gate.ledger.record(int(k.DeliveryKind.BASAL), 150_000_000, NOW - 60_000)  # 150 µg a minute ago
    # Basal 8 333 nL/h: the window ending 23 h from now holds the 150 µg and 23 h of basal (~95.8 µg).
    assert orphan_refusals(k, gate, orphan_of_rate(8_333), NOW) == (ORPHAN_OVER_CAP,)
    assert orphan_refusals(k, gate, orphan_of_rate(4_166), NOW) == ()  # 150 + 48 µg at most


def test_journalled_phases_and_programs_give_the_same_schedule() -> None:
    program = PumpProgram((ProgramPhase(308_340, 51_380), ProgramPhase(8_333)))
    assert orphan_of_program(program) == orphan_of_phases([[308_340, 51_380], [8_333, 0]])
    with pytest.raises(ValueError):
        orphan_of_program(PumpProgram((ProgramPhase(8_333, 1_000),), repeat_from=0))


@given(st.lists(st.tuples(st.integers(1, 10**6), st.integers(1, 10**6)), max_size=4), st.integers(0, 10**6),
       st.integers(0, 10**7))
def test_least_time_is_the_first_moment_the_schedule_has_delivered_the_volume(phases, continuous, volume_nl) -> None:
    schedule = OrphanSchedule(tuple(phases), continuous)
    total_timed = sum(v for _, v in phases)
    t = schedule.least_time_ms(volume_nl)
    if continuous == 0 and volume_nl > total_timed:
        assert t == schedule.duration_ms()  # it stops short: all of it, as soon as it can
        return
    assert schedule.volume_nl(t) >= volume_nl or t >= schedule.duration_ms()
    if t > 0:
        assert schedule.volume_nl(t - 1) <= volume_nl


def physical_excess_pg(schedule: OrphanSchedule, catheter: list[tuple[int, int]], reservoir: int,
                       instants_ms: list[int]) -> int:
    """Oracle: the largest (tip dose so far - continuous rate at the reservoir's drug for as long) over the
    instants, pg, with :class:`sim.catheter.PhysicalCatheter` (the simulator's catheter, not our queue)."""
    tube = PhysicalCatheter(sum(v for v, _ in catheter))
    for volume, concentration in catheter:  # fill it tip first: what goes in first leaves first
        tube.change_solution(concentration)
        tube.push(volume)
    tube.change_solution(reservoir)
    worst = tip = pushed = 0
    for t in sorted(instants_ms):
        volume = schedule.volume_nl(t)
        tip += tube.push(volume - pushed)
        pushed = volume
        worst = max(worst, tip - schedule.continuous_nl_per_h * t * reservoir // MS_PER_H)
    return worst


def test_a_transit_program_holds_the_tip_dose_so_it_brings_no_extra_at_the_tip() -> None:
    # 100 µg/day at 500 µg/mL (8 333 nL/h) refilled with 2000 µg/mL: 250 µL of the old drug at the old
    # volume rate, then 2 083 nL/h. At the pump end the first phase is 4x the new dose: 187.5 µL above
    # the continuous rate, 375 µg at the stronger drug. At the tip it is the old drug: nothing extra.
    transit = OrphanSchedule(((8_333, 250_000),), 2_083)
    assert tip_extra_pg(transit, [[250_000, 500]], 2000) <= 2000 * 31  # rounding of 30 h at 2 083 nL/h
    # The same program over a catheter that holds the new drug already would be 375 µg extra.
    assert tip_extra_pg(transit, [[250_000, 2000]], 2000) >= 375_000_000 - 2000 * 31
    # A decrease (1000 -> 500 µg/mL) left at the old drug's rate: the strong drug still ahead counts in full.
    assert tip_extra_pg(OrphanSchedule((), 8_333), [[250_000, 1000]], 500) == 250_000 * 500


@pytest.mark.parametrize("k", [COMPILED, TWIN], ids=["compiled", "python"])
def test_a_concentration_change_is_judged_at_the_tip_when_the_catheter_is_known(k) -> None:
    gate = make_gate(k, max_dose_ng_per_day=300_000, programme_rate=None)
    transit = OrphanSchedule(((8_333, 250_000),), 2_083)
    assert orphan_refusals(k, gate, transit, NOW, concentration_ug_per_ml=2000) == (ORPHAN_OVER_CAP,)
    assert orphan_refusals(k, gate, transit, NOW, concentration_ug_per_ml=2000, catheter=[[250_000, 500]]) == ()
    # A stale transit rate, never ended: the new drug at 4x the volume rate once the old has left.
    assert orphan_refusals(k, gate, orphan_of_rate(8_333), NOW, concentration_ug_per_ml=2000,
                           catheter=[[250_000, 500]]) == (ORPHAN_OVER_CAP,)


@given(st.lists(st.tuples(st.integers(1, 200_000), st.sampled_from([0, 500, 1000, 2000])), min_size=1, max_size=4),
       st.lists(st.tuples(st.integers(1_000, 500_000), st.integers(1, 400_000)), max_size=3),
       st.integers(0, 50_000), st.sampled_from([500, 1000, 2000]), st.lists(st.integers(0, 40 * MS_PER_H), max_size=30))
def test_the_tip_extra_bounds_the_physical_excess_at_every_instant(catheter, phases, continuous, reservoir,
                                                                    instants) -> None:
    """Whatever the catheter holds and whatever the schedule, the extra placed at now is at least what
    really leaves the tip above the continuous projection at any instant (phase ends and random ones)."""
    schedule = OrphanSchedule(tuple(phases), continuous)
    ends, t = [], 0
    for rate, volume in phases:
        t += -(-volume * MS_PER_H // rate)
        ends.append(t)
    # And the instants each catheter segment has just left the tip (where the tip's solution changes).
    boundaries, volume = [], 0
    for segment_nl, _concentration in catheter:
        volume += segment_nl
        boundaries += [schedule.least_time_ms(volume), schedule.least_time_ms(volume) - 1]
    extra = tip_extra_pg(schedule, [list(c) for c in catheter], reservoir)
    assert extra >= physical_excess_pg(schedule, catheter, reservoir,
                                       [*instants, *ends, *(b for b in boundaries if b >= 0), t + 48 * MS_PER_H])
