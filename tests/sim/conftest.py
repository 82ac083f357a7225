"""Fixtures for the simulator tests: virtual clock, pump factory, and a leak check."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sim.clock import VirtualClock
from sim.newera import Ne1000
from tests.leaks import no_leaks  # noqa: F401  (autouse: importing it switches it on here)


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

