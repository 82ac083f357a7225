"""The injected clock.

Every component that needs time takes a :class:`Clock`. Lockouts and rolling
windows use :meth:`Clock.monotonic_ns`; records store :meth:`Clock.utc_now`.
On the bench the clock is :class:`SystemClock`; in tests and CI the simulated
implementations in :mod:`sim.clock` drive the same code in virtual time.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from datetime import datetime, timezone

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000


class Clock(ABC):
    """Source of monotonic and wall time."""

    @abstractmethod
    def monotonic_ns(self) -> int:
        """Monotonic time in nanoseconds; never goes backwards. The origin is arbitrary."""

    @abstractmethod
    def utc_now(self) -> datetime:
        """Current wall time as a timezone-aware UTC datetime."""

    @abstractmethod
    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time (virtual clocks advance instead of waiting)."""

    def monotonic_ms(self) -> int:
        """Monotonic time in whole milliseconds."""
        return self.monotonic_ns() // NS_PER_MS

    def monotonic_s(self) -> float:
        """Monotonic time in seconds (float, for display and pacing only)."""
        return self.monotonic_ns() / NS_PER_S


class SystemClock(Clock):
    """Real time: ``time.monotonic_ns`` and the system's UTC wall clock."""

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()

    def utc_now(self) -> datetime:
        return datetime.now(timezone.utc)

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)
