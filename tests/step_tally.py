"""The count of state-machine steps the clinical adversary takes in one test run (issue #9: at least 10 000).

Each adversary machine (``tests/controller/test_clinical_adversary.py``) adds the rule steps it
took with :func:`took` and checks at the end of its test that it took at least its share in
:data:`SHARES`. The shares add up to the issue's figure (checked by ``tests/test_step_tally.py``),
and the run's terminal summary prints what was really taken, machine by machine::

    clinical adversary steps: 12 793 (ClinicalAdversary 6 434, ClinicalAdversaryAcrossRestarts 6 359)

A step is one rule the machine ran (an invariant check after it), not counting the initial implant.
Always import it as ``tests.step_tally``: one module, one count.
"""

from __future__ import annotations

from collections import Counter

import pytest

#: Steps each machine must take in one run (its test fails below its share).
SHARES: dict[str, int] = {
    "ClinicalAdversary": 5_000,
    "ClinicalAdversaryAcrossRestarts": 5_000,
}
#: What issue #9 asks of one CI run.
REQUIRED_PER_RUN = 10_000

#: Steps taken so far in this process, per machine.
TAKEN: Counter[str] = Counter()


def took(machine: str, count: int) -> None:
    """Count ``count`` steps taken by ``machine`` (a key of :data:`SHARES`)."""
    if machine not in SHARES:
        raise KeyError(f"unknown adversary machine {machine!r}: one of {sorted(SHARES)}")
    TAKEN[machine] += count


def check_share(machine: str) -> None:
    """Fail unless ``machine`` has taken at least its share of steps in this run."""
    assert TAKEN[machine] >= SHARES[machine], f"{machine}: took {TAKEN[machine]} steps, its share is {SHARES[machine]}"


def summary_line() -> str:
    """The figure for the terminal summary: the total, then each machine that ran."""
    parts = ", ".join(f"{machine} {_spaced(TAKEN[machine])}" for machine in SHARES if TAKEN[machine])
    return f"clinical adversary steps: {_spaced(sum(TAKEN.values()))} ({parts})"


def _spaced(number: int) -> str:
    return f"{number:_}".replace("_", " ")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the figure when any adversary machine ran (registered by ``tests/conftest.py``)."""
    if sum(TAKEN.values()):
        terminalreporter.write_line(summary_line())
