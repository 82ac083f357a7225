"""The count of fuzzed replies one test run feeds to the codecs and drivers (issue #11: at least 100 000).

Each fuzz suite adds every reply it feeds (a generated or mutated reply handed to a
parser, or a reply of a simulated device that the fault layer or a garbler may have
corrupted, cut or dropped, handed to a driver) with :func:`fed`, and checks at its end
that it fed at least its share in :data:`SHARES`. The shares add up to the issue's
figure (checked by ``tests/test_tallies.py``), and the run's terminal summary
prints what was really fed, suite by suite, so a reviewer sees the figure::

    fuzzed replies fed: 141 212 (NE-1000 codec (mutated replies) 60 000, ...)

Always import it as ``tests.reply_tally``: one module, one count.
"""

from __future__ import annotations

from tests.tally import Tally

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

#: Replies fed so far in this process, per suite (``TALLY.counts``), and each suite's share check.
TALLY = Tally(SHARES, part="fuzz suite", done="fed {} replies", title="fuzzed replies fed")


def fed(suite: str, count: int = 1) -> None:
    """Count ``count`` replies fed by ``suite`` (a key of :data:`SHARES`)."""
    TALLY.add(suite, count)
