"""Fixtures for the HAL tests: a leak check on threads and descriptors."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail any test that leaves a thread running or more descriptors open than it found."""
    threads_before = set(threading.enumerate())
    fds_before = _fd_count()
    yield
    leaked = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"
    assert _fd_count() <= fds_before, "descriptors left open"
