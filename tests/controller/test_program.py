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
                                orphan_of_phases, orphan_of_program, orphan_of_rate, orphan_refusals)
from hal.pump import ProgramPhase, PumpProgram
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
