"""Delivery recovered after a restart is placed as late as it can have happened (issue #9, PER-02, PRX-03).

``Ledger.record_latest`` fills the minutes backwards from now at the highest rate the delivery
can have run at. The oracle here is the feasibility bound itself: no delivery history that
ends now, runs at or below that rate and starts no earlier than allowed can put more into a
24 h window ending at or after now than ``min(mass, per-minute capacity x allowed minutes in
the window)``; the latest placement must reach that bound in every such window (so every
rolling-window check is at least as strict as the truth). What fits before the window (between
the earliest start and the window's first minute) is in no such window; only what cannot have
been delivered at all at that rate since the earliest start counts in full in every window
holding now.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cython_ext.errors import ConfigError

from .conftest import COMPILED, TWIN

MIN = 60_000
H = 3_600_000
NOW = 9 * 86_400_000 + 37 * MIN + 4_321


def window(ledger, end_minute: int) -> int:
    """Total of the 24 h window ending in ``end_minute``, read from the snapshot."""
    return sum(sum(b) for m, b in ledger.snapshot()["buckets"] if end_minute - 1440 < m <= end_minute)


@settings(max_examples=60, deadline=None)
@given(
    mass=st.integers(0, 5 * 10**9),
    rate=st.integers(1, 2_000_000),
    conc=st.sampled_from([50, 500, 1000, 2000]),
    earliest_back_min=st.none() | st.integers(0, 3_000),
    prior=st.lists(st.tuples(st.integers(0, 1_439), st.integers(0, 10**8)), max_size=5),
)
def test_latest_placement_reaches_the_feasibility_bound_in_every_window(mass, rate, conc, earliest_back_min, prior):
    per_minute = -(-rate * conc * MIN // H)
    m0 = NOW // MIN
    earliest = None if earliest_back_min is None else max(0, NOW - earliest_back_min * MIN)
    first = max(m0 - 1439, 0 if earliest is None else earliest // MIN)
    snapshots = []
    for k in (COMPILED, TWIN):
        ledger = k.Ledger()
        for age, pg in sorted(prior, key=lambda p: -p[0]):
            ledger.record(0, pg, NOW - age * MIN)
        before = {m: window(ledger, m) for m in range(m0, m0 + 1440, 97)}
        placed_from = ledger.record_latest(3, mass, NOW, max_rate_nl_per_h=rate, concentration_ug_per_ml=conc, earliest_ms=earliest)
        # What no history at or below the rate can have delivered since the earliest start.
        feasible = None if earliest is None else per_minute * (m0 - earliest // MIN + 1)
        excess = 0 if feasible is None else max(0, mass - feasible)
        in_region = min(mass, per_minute * (m0 - first + 1))  # the minutes the ledger's window can hold
        assert ledger.delivered_24h_pg(NOW, 3) == in_region + excess
        starts = [m for m, b in ledger.snapshot()["buckets"] if b[3]]
        assert not starts or (min(starts) * MIN == placed_from and first <= min(starts) and max(starts) == m0)
        for end, old in before.items():
            allowed = max(0, m0 - max(first, end - 1439) + 1)
            assert window(ledger, end) - old == min(in_region, per_minute * allowed) + excess
        snapshots.append(ledger.snapshot())
    assert snapshots[0] == snapshots[1]


@pytest.mark.parametrize(("extra_pg", "minutes"), [(-1, 3), (0, 3), (1, 4)])
def test_whole_minutes_at_the_highest_rate(impl, extra_pg, minutes):
    # 60 000 nL/h at 1000 µg/mL: exactly 1 000 000 pg per minute.
    ledger = impl.Ledger()
    at = ledger.record_latest(0, 3_000_000 + extra_pg, NOW, max_rate_nl_per_h=60_000, concentration_ug_per_ml=1000)
    assert at == (NOW // MIN - minutes + 1) * MIN
    buckets = ledger.snapshot()["buckets"]
    assert len(buckets) == minutes and buckets[-1][1][0] == 1_000_000


def test_what_fits_before_the_window_is_in_no_window(impl):
    """Two days of delivery found at once: the day before the window is in no window ending now or later."""
    ledger = impl.Ledger()
    per_day_pg = 1440 * 1_000_000
    ledger.record_latest(0, 2 * per_day_pg, NOW, max_rate_nl_per_h=60_000, concentration_ug_per_ml=1000,
                         earliest_ms=NOW - 3 * 86_400_000)
    assert ledger.delivered_24h_pg(NOW) == per_day_pg
    unbounded = impl.Ledger()
    unbounded.record_latest(0, 2 * per_day_pg, NOW, max_rate_nl_per_h=60_000, concentration_ug_per_ml=1000)
    assert unbounded.delivered_24h_pg(NOW) == per_day_pg


def test_what_cannot_be_placed_counts_in_now(impl):
    ledger = impl.Ledger()
    ledger.record_latest(0, 5_000_000, NOW, max_rate_nl_per_h=60_000, concentration_ug_per_ml=1000, earliest_ms=NOW - 2 * MIN)
    assert [b[1][0] for b in ledger.snapshot()["buckets"]] == [1_000_000, 1_000_000, 3_000_000]


def test_clock_behind_the_ledger_and_bad_values_are_refused(impl):
    ledger = impl.Ledger()
    ledger.record(0, 5, NOW)
    before = ledger.snapshot()
    for kwargs in (dict(now_ms=NOW - MIN), dict(now_ms=NOW, earliest_ms=NOW + 1), dict(now_ms=NOW, max_rate_nl_per_h=0)):
        call = {"now_ms": NOW, "max_rate_nl_per_h": 1_000, "concentration_ug_per_ml": 500, **kwargs}
        with pytest.raises(ConfigError):
            ledger.record_latest(0, 1_000, call.pop("now_ms"), **call)
    for _ in range(9):
        ledger.record(1, impl.MAX_RECORD_PG, NOW)
    ledger.record(1, impl.MAX_BUCKET_PG - 9 * impl.MAX_RECORD_PG - 10, NOW)
    with pytest.raises(ConfigError):  # all or nothing: one full bucket refuses the whole placement
        ledger.record_latest(1, 10**6, NOW, max_rate_nl_per_h=1_000, concentration_ug_per_ml=500)
    assert ledger.snapshot()["buckets"][-1][1][1] == impl.MAX_BUCKET_PG - 10
    assert ledger.snapshot()["buckets"][-1][1][0] == before["buckets"][-1][1][0]
