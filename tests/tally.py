"""A run's count of work that several named parts of the suite must each do a share of.

:mod:`tests.reply_tally` (fuzzed replies, issue #11) and :mod:`tests.step_tally` (clinical
adversary steps, issue #9) are each one :class:`Tally`: a part adds what it did, checks at its
end that it did at least its share, and the run's terminal summary prints what was really
done, part by part.
"""

from __future__ import annotations

from collections import Counter

import pytest


class Tally:
    """Counts per part against fixed shares, for one test process.

    :param shares: what each part must do in one run, by part name.
    :param part: what a part is, for the refusal of an unknown name ("fuzz suite").
    :param done: what a part did, ``{}`` standing for the count, for the share check ("fed {} replies").
    :param title: the summary line's lead ("fuzzed replies fed").
    """

    def __init__(self, shares: dict[str, int], *, part: str, done: str, title: str) -> None:
        self.shares = shares
        self.counts: Counter[str] = Counter()
        self._part = part
        self._done = done
        self._title = title

    def add(self, name: str, count: int) -> None:
        """Count ``count`` done by ``name`` (a key of :attr:`shares`)."""
        if name not in self.shares:
            raise KeyError(f"unknown {self._part} {name!r}: one of {sorted(self.shares)}")
        self.counts[name] += count

    def check_share(self, name: str) -> None:
        """Fail unless ``name`` has done at least its share in this run."""
        done, share = self.counts[name], self.shares[name]
        assert done >= share, f"{name}: {self._done.format(done)}, its share is {share}"

    def summary_line(self) -> str:
        """The figure for the terminal summary: the total, then each part that ran."""
        parts = ", ".join(f"{name} {_spaced(self.counts[name])}" for name in self.shares if self.counts[name])
        return f"{self._title}: {_spaced(sum(self.counts.values()))} ({parts})"

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        """Print the figure when any part ran (registered by ``tests/conftest.py``)."""
        if sum(self.counts.values()):
            terminalreporter.write_line(self.summary_line())


def _spaced(number: int) -> str:
    return f"{number:_}".replace("_", " ")
