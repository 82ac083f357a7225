"""The count of fuzzed replies one test run feeds to the codecs and drivers (issue #11: at least 100 000).

Each fuzz suite adds every reply it feeds (a generated or mutated reply handed to a
parser, or a reply of a simulated device that the fault layer or a garbler may have
corrupted, cut or dropped, handed to a driver) with :func:`fed`, and checks at its end
that it fed at least its share in :data:`SHARES`. The shares add up to the issue's
figure (checked by ``tests/test_reply_tally.py``), and the run's terminal summary
prints what was really fed, suite by suite, so a reviewer sees the figure::

    fuzzed replies fed: 141 212 (NE-1000 codec (mutated replies) 60 000, ...)

Always import it as ``tests.reply_tally``: one module, one count.
"""

from __future__ import annotations

from collections import Counter

import pytest

#: Replies each suite must feed in one run (its test fails below its share).
SHARES: dict[str, int] = {
    "NE-1000 codec (mutated replies)": 60_000,
    "NE-1000 driver on a garbled simulator": 10_000,
    "MT-SICS driver": 15_000,
    "SBI driver": 15_000,
    "controller loop over the NE-1000 driver and the simulator's fault layer": 20_000,
}
#: What issue #11 asks of one CI run.
REQUIRED_PER_RUN = 100_000

#: Replies fed so far in this process, per suite.
FED: Counter[str] = Counter()


def fed(suite: str, count: int = 1) -> None:
    """Count ``count`` replies fed by ``suite`` (a key of :data:`SHARES`)."""
    if suite not in SHARES:
        raise KeyError(f"unknown fuzz suite {suite!r}: one of {sorted(SHARES)}")
    FED[suite] += count


def check_share(suite: str) -> None:
    """Fail unless ``suite`` has fed at least its share in this run."""
    assert FED[suite] >= SHARES[suite], f"{suite}: fed {FED[suite]} replies, its share is {SHARES[suite]}"


def summary_line() -> str:
    """The figure for the terminal summary: the total, then each suite that ran."""
    parts = ", ".join(f"{suite} {_spaced(FED[suite])}" for suite in SHARES if FED[suite])
    return f"fuzzed replies fed: {_spaced(sum(FED.values()))} ({parts})"


def _spaced(number: int) -> str:
    return f"{number:_}".replace("_", " ")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figure when any fuzz suite ran (registered by ``tests/conftest.py``)."""
    if sum(FED.values()):
        terminalreporter.write_line(summary_line())
