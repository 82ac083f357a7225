"""The clinical adversary machines' shares add up to what issue #9 asks of one CI run."""

from __future__ import annotations

import pytest

from tests import step_tally


def test_the_shares_add_up_to_the_figure_of_one_run() -> None:
    assert sum(step_tally.SHARES.values()) >= step_tally.REQUIRED_PER_RUN


def test_every_adversary_machine_has_a_share_and_checks_it() -> None:
    from tests.controller import test_clinical_adversary as adversary

    machines = {cls.__name__ for cls in vars(adversary).values()
                if isinstance(cls, type) and issubclass(cls, adversary.ClinicalAdversary)}
    assert machines == set(step_tally.SHARES)


def test_a_machine_below_its_share_fails_and_an_unknown_machine_is_refused() -> None:
    machine = next(iter(step_tally.SHARES))
    saved = step_tally.TAKEN[machine]
    try:
        step_tally.TAKEN[machine] = step_tally.SHARES[machine] - 1
        with pytest.raises(AssertionError, match="its share is"):
            step_tally.check_share(machine)
        step_tally.took(machine, 1)
        step_tally.check_share(machine)
    finally:
        step_tally.TAKEN[machine] = saved
    with pytest.raises(KeyError, match="unknown adversary machine"):
        step_tally.took("no such machine", 1)
