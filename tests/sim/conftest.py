"""Fixtures for the simulator tests: virtual clock, pump factory, and a leak check."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator

import pytest

from sim.clock import VirtualClock
from sim.newera import Ne1000


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail any test that leaves a service thread running or a descriptor open."""
    threads_before = set(threading.enumerate())
    fds_before = _open_fds()
    yield
    leaked = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"
    new_fds = _open_fds() - fds_before
    # A descriptor number may be reused for a different file; only growth is a leak.
    assert len(_open_fds()) <= len(fds_before), f"descriptors left open: {sorted(new_fds)}"


@pytest.fixture
def clock() -> VirtualClock:
    """A virtual clock at monotonic zero."""
    return VirtualClock()


@pytest.fixture
def make_pump(clock: VirtualClock) -> Callable[..., Ne1000]:
    """Build an NE-1000 on the test clock; ``power_on_alarm`` defaults to False here."""

    def build(**kwargs: object) -> Ne1000:
        kwargs.setdefault("power_on_alarm", False)
        return Ne1000(clock, **kwargs)  # type: ignore[arg-type]

    return build


@pytest.fixture
def pump(make_pump: Callable[..., Ne1000]) -> Ne1000:
    """An NE-1000 with the reset alarm already acknowledged."""
    return make_pump()

