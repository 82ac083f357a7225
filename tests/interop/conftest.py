"""Interoperability tests: published clients, unchanged, against ``itb sim serve`` in a subprocess.

:func:`served` starts the simulator on a pty with the test-only control plane
(``--control``), so a test can ask the simulated pump for the truth (state,
counters) independently of the client under test. The clients come from the
``interop`` extra of ``pyproject.toml``; a missing client skips its tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

@dataclass
class Served:
    """A running ``itb sim serve``: the device path of its pty and its control plane."""

    process: subprocess.Popen[str]
    url: str

    def control(self, command: str) -> dict[str, Any]:
        """Send one control-plane command (``state``, ``stall``...) and return its JSON answer."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())


@contextmanager
def served(*extra: str) -> Iterator[Served]:
    """Run ``itb sim serve --link pty --control *extra`` until the block ends."""
    process = subprocess.Popen([sys.executable, "-m", "hil.cli", "sim", "serve", "--control", *extra],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield Served(process, process.stdout.readline().split()[-1])
    finally:
        process.terminate()
        process.communicate(timeout=30)


@pytest.fixture
def sim_serve() -> Callable[..., AbstractContextManager[Served]]:
    """:func:`served`, for tests: ``with sim_serve("--diameter-mm", "26.59") as sim: ...``."""
    return served
