"""Simulated clocks: virtual time for tests and CI, scaled real time for ``itb sim serve``."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

from hal.clock import NS_PER_S, Clock

#: Default wall-clock origin of virtual runs: fixed, so reports are reproducible.
DEFAULT_EPOCH_UTC = datetime(2026, 1, 5, 8, 0, tzinfo=timezone.utc)


class VirtualClock(Clock):
    """Time that moves only when told to. Thread-safe.

    :param start_utc: the wall time at virtual monotonic zero.
    :param start_ns: the monotonic reading at creation, ns.
    """

    def __init__(self, start_utc: datetime = DEFAULT_EPOCH_UTC, start_ns: int = 0) -> None:
        if start_utc.tzinfo is None:
            raise ValueError("start_utc must be timezone-aware")
        self._origin_utc = start_utc
        self._origin_ns = start_ns
        self._now_ns = start_ns
        self._lock = threading.Lock()

    def monotonic_ns(self) -> int:
        """The virtual monotonic time, ns."""
        return self._now_ns  # one attribute read is atomic; the lock guards the read-modify-writes

    def utc_now(self) -> datetime:
        """The start wall time plus the virtual time elapsed."""
        return self._origin_utc + timedelta(microseconds=(self._now_ns - self._origin_ns) // 1000)

    def advance_ns(self, delta_ns: int) -> None:
        """Move time forward by ``delta_ns`` nanoseconds (never backwards)."""
        if delta_ns < 0:
            raise ValueError(f"delta_ns (={delta_ns}) must be >= 0")
        with self._lock:
            self._now_ns += delta_ns

    def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``."""
        self.advance_ns(round(seconds * NS_PER_S))

    def advance_to_ns(self, target_ns: int) -> None:
        """Move time forward to ``target_ns``; a target in the past is a no-op."""
        with self._lock:
            if target_ns > self._now_ns:
                self._now_ns = target_ns

    def sleep(self, seconds: float) -> None:
        """Advance virtual time instead of waiting."""
        if seconds > 0:
            self.advance(seconds)


class ScaledClock(Clock):
    """Real time multiplied by ``speed`` (``speed=60`` runs one virtual minute per second).

    :param speed: virtual seconds per real second, > 0.
    :param start_utc: the wall time at creation (default: now).
    :param start_monotonic_ns: the monotonic time at creation, ns (default 0). A later process of
        the same run passes the scaled time elapsed since the run's clock began, so its monotonic
        time continues, as the OS monotonic clock does across a process restart (not a reboot).
    """

    def __init__(self, speed: float = 1.0, start_utc: datetime | None = None, start_monotonic_ns: int = 0) -> None:
        if not speed > 0:
            raise ValueError(f"speed (={speed!r}) must be > 0")
        self.speed = speed
        self._real0 = time.monotonic_ns()
        self._mono0 = start_monotonic_ns
        self._utc0 = start_utc or datetime.now(timezone.utc)

    def monotonic_ns(self) -> int:
        """The start monotonic time plus the real time elapsed since creation times ``speed``, ns."""
        return self._mono0 + round((time.monotonic_ns() - self._real0) * self.speed)

    def utc_now(self) -> datetime:
        """The start wall time plus the scaled time elapsed."""
        return self._utc0 + timedelta(microseconds=(self.monotonic_ns() - self._mono0) // 1000)

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of scaled time (``seconds / speed`` of real time)."""
        if seconds > 0:
            time.sleep(seconds / self.speed)


class DriftClock(Clock):
    """A clock that runs fast or slow against ``base`` by ``ppm`` parts per million.

    Used to give a simulated device a crystal that drifts from the host's
    clock: ``ppm=+100`` gains 0.36 s per hour.

    :param base: the reference clock.
    :param ppm: drift, parts per million (-100000 to 100000).
    """

    def __init__(self, base: Clock, ppm: float) -> None:
        if not -100_000.0 <= ppm <= 100_000.0:
            raise ValueError(f"ppm (={ppm!r}) must be in [-100000, 100000]")
        self.base = base
        self.ppm = ppm
        self._factor = 1.0 + ppm / 1e6
        self._origin_ns = base.monotonic_ns()

    def monotonic_ns(self) -> int:
        """The base clock's time since creation, stretched by the drift, ns."""
        elapsed = self.base.monotonic_ns() - self._origin_ns
        return self._origin_ns + round(elapsed * self._factor)

    def utc_now(self) -> datetime:
        """The base wall time plus the drift accumulated since creation."""
        elapsed = self.base.monotonic_ns() - self._origin_ns
        extra_ns = round(elapsed * (self._factor - 1.0))
        return self.base.utc_now() + timedelta(microseconds=extra_ns // 1000)

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""
        if seconds > 0:
            self.base.sleep(seconds / self._factor)
