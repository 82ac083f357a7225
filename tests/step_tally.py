"""The count of state-machine steps the clinical adversary takes in one test run (issue #9: at least 10 000).

Each adversary machine (``tests/controller/test_clinical_adversary.py``) adds the rule steps it
took with :func:`took` and checks at the end of its test that it took at least its share in
:data:`SHARES`. The shares add up to the issue's figure (checked by ``tests/test_tallies.py``),
and the run's terminal summary prints what was really taken, machine by machine::

    clinical adversary steps: 12 793 (ClinicalAdversary 6 434, ClinicalAdversaryAcrossRestarts 6 359)

A step is one rule the machine ran (an invariant check after it), not counting the initial implant.
Always import it as ``tests.step_tally``: one module, one count.
"""

from __future__ import annotations

from tests.tally import Tally

#: Steps each machine must take in one run (its test fails below its share).
SHARES: dict[str, int] = {
    "ClinicalAdversary": 5_000,
    "ClinicalAdversaryAcrossRestarts": 5_000,
    "ClinicalAdversaryUnprimed": 2_000,
}
#: What issue #9 asks of one CI run.
REQUIRED_PER_RUN = 10_000

#: Steps taken so far in this process, per machine (``TALLY.counts``), and each machine's share check.
TALLY = Tally(SHARES, part="adversary machine", done="took {} steps", title="clinical adversary steps")


def took(machine: str, count: int) -> None:
    """Count ``count`` steps taken by ``machine`` (a key of :data:`SHARES`)."""
    TALLY.add(machine, count)
