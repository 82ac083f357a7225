"""The fuzz suites' shares add up to what issue #11 asks of one CI run."""

from __future__ import annotations

import pytest

from tests import reply_tally


def test_the_shares_add_up_to_the_figure_of_one_run() -> None:
    assert sum(reply_tally.SHARES.values()) >= reply_tally.REQUIRED_PER_RUN


def test_a_suite_below_its_share_fails_and_an_unknown_suite_is_refused() -> None:
    suite = next(iter(reply_tally.SHARES))
    saved = reply_tally.FED[suite]
    try:
        reply_tally.FED[suite] = reply_tally.SHARES[suite] - 1
        with pytest.raises(AssertionError, match="its share is"):
            reply_tally.check_share(suite)
        reply_tally.fed(suite)
        reply_tally.check_share(suite)
    finally:
        reply_tally.FED[suite] = saved
    with pytest.raises(KeyError, match="unknown fuzz suite"):
        reply_tally.fed("no such suite")
