"""``Ledger.record_spread``: one call for what polls every ``slot_ms`` would record of an even delivery.

The oracle is the definition, computed part by part from each part's end ``b``: its start is the
last poll time before ``b`` (or the span's start), its mass ``mass * (b - start) // span`` less the
same at its start, and it is recorded with :meth:`Ledger.record` at ``b`` unless it is 0 pg or at
or before ``end - 24 h``. The bulk call on either kernel must leave the ledger the repeated single
records leave, and every authorisation judged over it must be the same; where a single record
would be refused, the bulk call is refused whole and changes nothing.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_DAY, MS_PER_H

from .conftest import COMPILED, TWIN, decision_key

MIN = 60_000
HALF_H = 30 * MIN
NOW = 9 * MS_PER_DAY + 7 * MIN + 12_345  # not minute-aligned


def parts(mass: int, start: int, end: int, slot: int) -> list[tuple[int, int]]:
    """(time ms, pg) of every part the definition records, in time order."""
    if end == start:
        return [(end, mass)] if mass else []
    span, edge = end - start, end - MS_PER_DAY
    first_poll = (max(start, edge) // slot + 1) * slot
    out = []
    for b in [*range(first_poll, end, slot), end]:
        a = max(start, (b - 1) // slot * slot)  # the poll before b, or the span's start
        part = mass * (b - start) // span - mass * (a - start) // span
        if b > edge and part:
            out.append((b, part))
    return out


def record_singly(ledger, kind: int, mass: int, start: int, end: int, slot: int) -> None:
    for at, pg in parts(mass, start, end, slot):
        ledger.record(kind, pg, at)


def kernel_over(k, ledger):
    caps = k.make_caps(max_dose_ng_per_day=600_000, max_bolus_ng=100_000, max_boluses_per_day=4)
    programme = k.Programme.continuous(16_000, 500)
    return k.SafetyKernel(k.DEFAULT_LIBRARY[500], caps, k.make_envelope(2_000, 1_000_000), ledger,
                          programme=programme, programme_since_ms=0)


def decisions(k, ledger, now: int) -> list[tuple]:
    """The kernel's answers over ``ledger``: rates around the cap, boluses, a programme, minimum rate."""
    kernel = kernel_over(k, ledger)
    requests = [k.request_rate_change(rate) for rate in (8_000, 40_000, 50_000, 52_000)]
    requests += [k.request_bolus(2, volume, 10 * MIN) for volume in (20_000, 100_000, 200_000)]
    requests += [k.request_programme_change(k.Programme.continuous(45_000, 500)), k.request_minimum_rate()]
    return [decision_key(kernel.authorize(r, now)) for r in requests] + [kernel.headroom_pg(now)]


spreads = st.lists(
    st.tuples(
        st.integers(0, 7),  # kind
        st.integers(0, 10**10) | st.sampled_from([0, 1, 47, 48, 49]),  # pg
        st.integers(0, 3 * MS_PER_DAY) | st.sampled_from([0, HALF_H, MS_PER_DAY, 180 * MS_PER_DAY]),  # span
        st.integers(-MIN, MIN),  # the next span starts this much after this one ends (< 0: before)
        st.sampled_from([MIN, 7 * MIN + 13, HALF_H, MS_PER_H, MS_PER_DAY]) | st.integers(MIN, MS_PER_DAY),
    ),
    min_size=1, max_size=5,
)


@settings(max_examples=120, deadline=None)
@given(
    prior=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 10**9), st.integers(0, 2_000)), max_size=6),
    back_ms=st.integers(0, 3 * MS_PER_DAY) | st.just(0),
    spreads=spreads,
    later_ms=st.integers(0, 2 * MS_PER_DAY),
)
def test_bulk_equals_single_records_on_both_kernels(prior, back_ms, spreads, later_ms):
    """Compiled bulk, twin bulk, compiled singles and twin singles: the same ledger, the same decisions."""
    ledgers = {(k, bulk): k.Ledger() for k in (COMPILED, TWIN) for bulk in (True, False)}
    for ledger in ledgers.values():
        for kind, pg, age in sorted(prior, key=lambda p: -p[2]):
            ledger.record(kind, pg, NOW - age * MIN)
    start, latest = NOW - back_ms, NOW  # a first span ending long before the prior records is refused
    for kind, mass, span, gap, slot in spreads:
        end = start + span
        latest = max(latest, end)
        outcomes = {}
        for (k, bulk), ledger in ledgers.items():
            before = ledger.snapshot()
            try:
                if bulk:
                    ledger.record_spread(kind, mass, start, end, slot)
                else:
                    record_singly(ledger, kind, mass, start, end, slot)
                outcomes[(k, bulk)] = None
            except ConfigError as exc:
                outcomes[(k, bulk)] = exc.field if bulk else "refused"
                if bulk:
                    assert ledger.snapshot() == before  # all or nothing
                else:  # a single record was refused part way: put the ledger back as the bulk call leaves it
                    ledgers[(k, bulk)] = type(ledger).restore(before)
        assert len({outcomes[(k, True)] for k in (COMPILED, TWIN)}) == 1
        assert (outcomes[(COMPILED, True)] is None) == (outcomes[(COMPILED, False)] is None)
        snapshots = [ledger.snapshot() for ledger in ledgers.values()]
        assert all(s == snapshots[0] for s in snapshots)
        start = max(0, end + gap)
    now = latest + later_ms
    answers = [decisions(k, ledger, now) for (k, _bulk), ledger in ledgers.items()]
    assert all(a == answers[0] for a in answers)


def test_the_shortest_slot_over_a_day_and_a_half(compiled, twin):
    """A poll every second: 86 400 parts in the window, the same ledger as as many single records."""
    ledgers = [k.Ledger() for k in (compiled, twin, compiled)]
    start, end = NOW - 36 * MS_PER_H, NOW
    for ledger in ledgers[:2]:
        ledger.record_spread(3, 10**9 + 7, start, end, compiled.MIN_SPREAD_SLOT_MS)
    record_singly(ledgers[2], 3, 10**9 + 7, start, end, compiled.MIN_SPREAD_SLOT_MS)
    assert ledgers[0].snapshot() == ledgers[1].snapshot() == ledgers[2].snapshot()
    # The window ending in now's minute holds every part ending from its first minute on: from the
    # poll one second before it.
    first = (NOW // MIN - 1439) * MIN - compiled.MIN_SPREAD_SLOT_MS
    assert ledgers[0].delivered_24h_pg(NOW) == 10**9 + 7 - (10**9 + 7) * (first - start) // (end - start)


# -- by hand -------------------------------------------------------------------------------------


def buckets(ledger, kind=0) -> list[tuple[int, int]]:
    return [(m, b[kind]) for m, b in ledger.snapshot()["buckets"] if b[kind]]


def test_a_day_in_half_hours(impl):
    ledger = impl.Ledger()
    ledger.record_spread(0, 48, 0, MS_PER_DAY, HALF_H)
    assert buckets(ledger) == [(30 * (i + 1), 1) for i in range(48)]


def test_parts_are_rounded_down_at_each_poll_and_the_last_takes_the_rest(impl):
    ledger = impl.Ledger()
    ledger.record_spread(0, 10, 0, 90 * MIN, HALF_H)  # 10 * 30 / 90 = 3.33, 10 * 60 / 90 = 6.67
    assert buckets(ledger) == [(30, 3), (60, 3), (90, 4)]
    ledger = impl.Ledger()
    ledger.record_spread(0, 6, 10 * MIN, 70 * MIN, HALF_H)  # polls at 30 and 60 min: 6 * 20 / 60, 6 * 50 / 60
    assert buckets(ledger) == [(30, 2), (60, 3), (70, 1)]


def test_parts_before_the_last_day_are_in_no_window_and_not_recorded(impl):
    ledger = impl.Ledger()
    ledger.record_spread(1, 3 * 48, 0, 3 * MS_PER_DAY, HALF_H)
    assert buckets(ledger, 1) == [(2 * 1440 + 30 * (i + 1), 1) for i in range(48)]
    assert ledger.delivered_24h_pg(3 * MS_PER_DAY) == 48
    long = impl.Ledger()  # 180 days at 10^13 pg: the products need more than 64 bits
    mass, end = impl.MAX_RECORD_PG, 180 * MS_PER_DAY + 12_345
    long.record_spread(1, mass, 0, end, HALF_H)
    # Kept: the 48 polls after 179 days + 12 345 ms, and the end (in the last poll's minute); the
    # first part from the poll at 179 days.
    assert sum(pg for _, pg in buckets(long, 1)) == mass - mass * 179 * MS_PER_DAY // end
    kept = parts(mass, 0, end, HALF_H)
    assert len(kept) == 49
    by_minute = {}
    for at, pg in kept:
        by_minute[at // MIN] = by_minute.get(at // MIN, 0) + pg
    assert buckets(long, 1) == sorted(by_minute.items())


def test_a_span_of_nothing_records_at_its_end_and_zero_records_nothing(impl):
    ledger = impl.Ledger()
    ledger.record_spread(0, 0, NOW - MS_PER_DAY, NOW, HALF_H)
    assert ledger.latest_minute is None
    ledger.record_spread(0, 7, NOW, NOW, HALF_H)
    assert buckets(ledger) == [(NOW // MIN, 7)]


@pytest.mark.parametrize(("field", "args"), [
    ("kind", (8, 10, 0, MIN, MIN)),
    ("mass_pg", (0, -1, 0, MIN, MIN)),
    ("mass_pg", (0, 10**13 + 1, 0, MIN, MIN)),
    ("start_ms", (0, 10, -1, MIN, MIN)),
    ("end_ms", (0, 10, MIN, MIN - 1, MIN)),
    ("slot_ms", (0, 10, 0, MIN, 999)),
    ("slot_ms", (0, 10, 0, MIN, MS_PER_DAY + 1)),
])
def test_bad_values_are_named_and_nothing_is_recorded(impl, field, args):
    ledger = impl.Ledger()
    ledger.record(0, 5, 0)
    before = ledger.snapshot()
    with pytest.raises(ConfigError) as info:
        ledger.record_spread(*args)
    assert info.value.field == field
    assert ledger.snapshot() == before


def test_a_span_before_the_window_or_into_a_full_bucket_is_refused_whole(impl):
    ledger = impl.Ledger()
    ledger.record(0, 5, NOW)
    before = ledger.snapshot()
    with pytest.raises(ConfigError) as info:  # its first part lies before the window of the newest record
        ledger.record_spread(0, 10**6, NOW - 2 * MS_PER_DAY, NOW - MS_PER_DAY, HALF_H)
    assert info.value.field == "end_ms"
    assert ledger.snapshot() == before
    for _ in range(9):
        ledger.record(1, impl.MAX_RECORD_PG, NOW)
    ledger.record(1, impl.MAX_BUCKET_PG - 9 * impl.MAX_RECORD_PG - 10, NOW)
    before = ledger.snapshot()
    with pytest.raises(ConfigError) as info:  # room for the early parts, not for the one in now's minute
        ledger.record_spread(1, 10**6, NOW - 2 * MS_PER_H, NOW, HALF_H)
    assert info.value.field == "mass_pg"
    assert ledger.snapshot() == before
