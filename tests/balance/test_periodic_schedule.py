"""The balance emulators' output schedule: fixed interval, bounded catch-up, never early."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sim.balance.pan import PeriodicSchedule
from sim.clock import VirtualClock


def test_nothing_is_due_while_stopped_or_before_the_first_interval() -> None:
    clock = VirtualClock()
    schedule = PeriodicSchedule(clock, interval_ns=100, max_catch_up=5)
    clock.advance_ns(1000)
    assert schedule.take_due() == 0
    schedule.start()
    clock.advance_ns(99)
    assert schedule.take_due() == 0
    clock.advance_ns(1)
    assert schedule.take_due() == 1


def test_a_jump_of_virtual_time_is_caught_up_only_to_the_bound() -> None:
    clock = VirtualClock()
    schedule = PeriodicSchedule(clock, interval_ns=100, max_catch_up=5)
    schedule.start()
    clock.advance_ns(10_000)
    assert schedule.take_due() == 5
    assert schedule.take_due() == 0
    assert schedule.next_ns == 10_100


@given(st.lists(st.integers(0, 500), max_size=40), st.integers(1, 200))
def test_outputs_never_exceed_elapsed_intervals(steps: list[int], interval_ns: int) -> None:
    clock = VirtualClock()
    schedule = PeriodicSchedule(clock, interval_ns=interval_ns, max_catch_up=10**9)
    schedule.start()
    taken = 0
    for step in steps:
        clock.advance_ns(step)
        taken += schedule.take_due()
        assert taken == clock.monotonic_ns() // interval_ns
