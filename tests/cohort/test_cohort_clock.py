"""The chunk clock reads as the virtual clock it stands in for."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cython_ext.errors import StateError
from hil.cohort.engine import ChunkClock
from sim.clock import VirtualClock


@given(st.lists(st.integers(0, 10**11), max_size=20))
def test_reads_as_a_virtual_clock(times_ms):
    chunk, virtual = ChunkClock(), VirtualClock()
    for t_ms in sorted(times_ms):
        chunk.advance_to_ms(t_ms)
        virtual.advance_to_ns(t_ms * 1_000_000)
        assert chunk.monotonic_ns() == virtual.monotonic_ns()
        assert chunk.monotonic_ms() == virtual.monotonic_ms()
        assert chunk.utc_now() == virtual.utc_now()


def test_never_goes_back_and_never_sleeps():
    clock = ChunkClock()
    clock.advance_to_ms(10)
    with pytest.raises(StateError, match="time went back"):
        clock.advance_to_ms(9)
    with pytest.raises(StateError, match="sleep"):
        clock.sleep(1.0)
    assert clock.monotonic_ms() == 10
