"""The leak check that the HAL and simulator test folders switch on in their conftest.

Importing :func:`no_leaks` into a ``conftest.py`` makes it autouse for that folder:
every test there fails if it leaves a thread running or more file descriptors open
than it found.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator

import pytest


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail any test that leaves a thread running or more descriptors open than it found."""
    threads_before = set(threading.enumerate())
    fds_before = _open_fds()
    yield
    leaked = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
    assert not leaked, f"threads left running: {leaked}"
    fds_after = _open_fds()
    # A descriptor number may be reused for a different file; only growth is a leak.
    assert len(fds_after) <= len(fds_before), f"descriptors left open: {sorted(fds_after - fds_before)}"
