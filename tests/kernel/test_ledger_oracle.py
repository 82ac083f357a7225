"""Both ledgers against a plain list of events: the rolling totals are the sums over the trailing window.

The compiled ledger clears a minute's buckets only when that minute is first written, and keeps
nothing live after a move of a day or more; the twin deletes old minutes from a dict. Neither is
the oracle. The oracle is a list of ``(minute, kind, pg)`` events and the definition: the total
of the window ending in minute ``M`` is the sum of the events with ``M - 1440 < minute <= M``; a
record in a minute at or before ``newest - 1440`` is refused. Records go forward by any step
(inside a 90-minute block, across one, a day, more than a day, many days, a multiple of the
ring so that a slot comes round to a stale minute), back into minutes of the window never
written since a long jump, and through :meth:`Ledger.record_spread`; the ledger is restarted
(snapshot and restore, or pickled) at any point. After every step the totals of every kind, the
per-minute totals and the snapshot equal the oracle's, and the compiled kernel's 24 h cap
decision over the ledger equals the twin's.
"""

from __future__ import annotations

import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_DAY

from .conftest import COMPILED, TWIN

MIN = 60_000
RING = 1_440
STEPS_MIN = [0, 1, 89, 90, 91, 1_439, 1_440, 1_441, 2_000, 2_880, 17 * 1_440, 17 * 1_440 + 45, 40_000]


class Oracle:
    """Events as a list, totals by the definition (pg, minutes of 60 s)."""

    def __init__(self) -> None:
        self.events: list[tuple[int, int, int]] = []
        self.newest: int | None = None

    def refuses(self, minute: int) -> bool:
        return self.newest is not None and minute <= self.newest - RING

    def add(self, minute: int, kind: int, pg: int) -> None:
        self.events.append((minute, kind, pg))
        self.newest = minute if self.newest is None else max(self.newest, minute)

    def total(self, end_minute: int, kind: int | None = None) -> int:
        return sum(pg for m, k, pg in self.events
                   if end_minute - RING < m <= end_minute and (kind is None or k == kind))

    def minute_total(self, minute: int) -> int:
        if self.newest is None or not self.newest - RING < minute <= self.newest:
            return 0
        return sum(pg for m, _, pg in self.events if m == minute)

    def buckets(self) -> list[list]:
        """The snapshot's ``buckets``: every minute of the window with a non-zero kind, in order."""
        if self.newest is None:
            return []
        out = []
        for m in sorted({m for m, _, _ in self.events if self.newest - RING < m <= self.newest}):
            row = [0] * 8
            for em, k, pg in self.events:
                if em == m:
                    row[k] += pg
            if any(row):
                out.append([m, row])
        return out


def spread_parts(mass: int, start: int, end: int, slot: int) -> list[tuple[int, int]]:
    """(minute, pg) of what polls every ``slot`` ms would record of an even delivery over [start, end].

    Every poll time strictly inside the span, then its end; each poll records what an even
    delivery had given by then less what it had given by the poll before, each rounded down;
    nothing of 0 pg, nothing at or before ``end - 24 h``.
    """
    if end == start:
        return [(end // MIN, mass)] if mass else []
    polls = [*range((start // slot + 1) * slot, end, slot), end]
    out, given_before = [], 0
    for t in polls:
        given = mass * (t - start) // (end - start)
        if t > end - MS_PER_DAY and given - given_before:
            out.append((t // MIN, given - given_before))
        given_before = given
    return out


def restart(ledger, k, how: int):
    if how == 1:
        return k.Ledger.restore(ledger.snapshot())
    if how == 2:
        return pickle.loads(pickle.dumps(ledger))
    return ledger


def capped(k, ledger, rate: int, now_ms: int) -> bool:
    caps = k.make_caps(max_dose_ng_per_day=300_000, max_bolus_ng=100_000, max_boluses_per_day=4)
    kernel = k.SafetyKernel(k.DEFAULT_LIBRARY[500], caps, k.make_envelope(1, 1_000_000), ledger,
                            programme=k.Programme.continuous(2_000, 500), programme_since_ms=0)
    return "DOSE_CAP_24H" in kernel.authorize(k.request_rate_change(rate), now_ms).reasons


step = st.one_of(
    st.tuples(st.just("record"), st.sampled_from(STEPS_MIN) | st.integers(-1_500, 3_000), st.integers(0, 59_999),
              st.integers(0, 7), st.integers(0, 10**10)),
    st.tuples(st.just("spread"), st.integers(0, 3 * MS_PER_DAY), st.sampled_from([MIN, 30 * MIN, 97 * MIN, 6 * 60 * MIN]),
              st.integers(0, 7), st.integers(0, 10**10)),
    st.tuples(st.just("restart"), st.integers(1, 2), st.just(0), st.just(0), st.just(0)),
)


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=25))
@pytest.mark.parametrize("k", [COMPILED, TWIN], ids=["compiled", "python"])
def test_rolling_totals_equal_the_event_list(k, steps) -> None:
    ledger, oracle, now = k.Ledger(), Oracle(), 5 * MS_PER_DAY + 17
    for what, a, b, kind, pg in steps:
        if what == "restart":
            ledger = restart(ledger, k, a)
            continue
        if what == "record":
            at = max(0, (now // MIN + a) * MIN + b)
            if oracle.refuses(at // MIN):
                with pytest.raises(ConfigError):
                    ledger.record(kind, pg, at)
            else:
                ledger.record(kind, pg, at)
                oracle.add(at // MIN, kind, pg)
            now = max(now, at)
        else:
            start, end = now, now + a
            parts = spread_parts(pg, start, end, b)
            ledger.record_spread(kind, pg, start, end, b)  # never refused: its parts are all after the newest
            for minute, part in parts:
                oracle.add(minute, kind, part)
            now = end
        minute = now // MIN
        for later in (0, 1, 89, 90, RING - 1, RING, RING + 1, 3 * RING):
            assert ledger.delivered_24h_pg((minute + later) * MIN) == oracle.total(minute + later)
        for kind_ in range(8):
            assert ledger.delivered_24h_pg(now, kind_) == oracle.total(minute, kind_)
        assert ledger.bucket_totals(minute - RING - 5, minute + 2) == [
            oracle.minute_total(m) for m in range(minute - RING - 5, minute + 3)]
        snap = ledger.snapshot()
        assert snap["latest_minute"] == oracle.newest
        assert snap["buckets"] == oracle.buckets()


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(step, min_size=1, max_size=20), rate=st.integers(1, 400_000), later_min=st.sampled_from([0, 45, 600]))
def test_the_cap_decision_over_a_moved_window_equals_the_twins(steps, rate, later_min) -> None:
    ledgers, now = [COMPILED.Ledger(), TWIN.Ledger()], 5 * MS_PER_DAY + 17
    for what, a, b, kind, pg in steps:
        if what == "restart":
            ledgers = [restart(led, k, a) for led, k in zip(ledgers, (COMPILED, TWIN))]
            continue
        if what == "record":
            at = max(0, (now // MIN + a) * MIN + b)
            if ledgers[1].latest_minute is not None and at // MIN <= ledgers[1].latest_minute - RING:
                continue
            for led in ledgers:
                led.record(kind, pg % 10**8, at)
            now = max(now, at)
        else:
            for led in ledgers:
                led.record_spread(kind, pg % 10**8, now, now + a, b)
            now += a
    at = now + later_min * MIN
    assert capped(COMPILED, ledgers[0], rate, at) == capped(TWIN, ledgers[1], rate, at)
