"""The run tallies: the fuzz suites' shares add up to what issue #11 asks of one CI run, and the
clinical adversary machines' shares to what issue #9 asks."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

import pytest

from tests import reply_tally, step_tally


@pytest.mark.parametrize("tally", [reply_tally, step_tally], ids=["replies", "steps"])
def test_the_shares_add_up_to_the_figure_of_one_run(tally: ModuleType) -> None:
    assert sum(tally.SHARES.values()) >= tally.REQUIRED_PER_RUN


def test_every_adversary_machine_has_a_share_and_checks_it() -> None:
    from tests.controller import test_clinical_adversary as adversary

    machines = {cls.__name__ for cls in vars(adversary).values()
                if isinstance(cls, type) and issubclass(cls, adversary.ClinicalAdversary)}
    assert machines == set(step_tally.SHARES)


@pytest.mark.parametrize(
    ("tally", "counts", "add", "unknown"),
    [
        (reply_tally, reply_tally.TALLY.counts, lambda suite: reply_tally.fed(suite), "unknown fuzz suite"),
        (step_tally, step_tally.TALLY.counts, lambda machine: step_tally.took(machine, 1), "unknown adversary machine"),
    ],
    ids=["replies", "steps"],
)
def test_a_part_below_its_share_fails_and_an_unknown_part_is_refused(
    tally: ModuleType, counts: dict[str, int], add: Callable[[str], None], unknown: str
) -> None:
    part = next(iter(tally.SHARES))
    saved = counts[part]
    try:
        counts[part] = tally.SHARES[part] - 1
        with pytest.raises(AssertionError, match="its share is"):
            tally.TALLY.check_share(part)
        add(part)
        tally.TALLY.check_share(part)
    finally:
        counts[part] = saved
    with pytest.raises(KeyError, match=unknown):
        add("no such part")
