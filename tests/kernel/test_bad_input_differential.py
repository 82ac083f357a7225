"""Bad input to either kernel is refused the same way: the same error type, message, field, value and range.

The compiled kernel reads an exact ``int`` inside its range in C and sends everything else to the
floor's ``require_range``; it builds a continuous programme without the general shape check only
from values that check passes unchanged. Those short cuts must refuse exactly what the twin
refuses, with exactly its error. Oracle: the twin (which always calls the Python validators).
Each entry point is called on both implementations from the same state with values drawn from
in range, at each bound and one past it, beyond 64 bits, and of the wrong type (``bool``, float,
an ``int`` subclass, a string, ``None``); the outcome (the error and its attributes, or the
result and the ledger afterwards) must be equal.
"""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from cython_ext.units import MS_PER_DAY

from .conftest import COMPILED, TWIN, decision_key


class Sub(int):
    """An ``int`` subclass: accepted as its int value."""


def around(*bounds: int):
    """Values at, just inside and just outside each bound, beyond 64 bits, and of other types."""
    near = [b + d for b in bounds for d in (-1, 0, 1)]
    wild = [2**63, -(2**63) - 1, 2**70, -(2**70)]
    return st.one_of(
        st.sampled_from(near + wild),
        st.integers(min(bounds) - 5, max(bounds) + 5),
        st.sampled_from(near).map(Sub),
        st.sampled_from([True, False, 1.0, 0.5, "1", None, Decimal(1), float("nan")]),
    )


def outcome(call):
    try:
        result = call()
    except Exception as exc:  # noqa: BLE001 - the error itself is what is compared
        return ("raised", type(exc).__name__, str(exc), getattr(exc, "field", None),
                repr(getattr(exc, "value", None)), getattr(exc, "allowed", None))
    return ("returned", repr(result))


def both(make, act):
    """``act(k, obj)`` on a fresh ``make(k)`` of each implementation: outcomes and final snapshots."""
    results = []
    for k in (COMPILED, TWIN):
        obj = make(k)
        got = outcome(lambda: act(k, obj))
        snap = obj.snapshot() if hasattr(obj, "snapshot") else None
        results.append((got, snap))
    assert results[0] == results[1]
    return results[0]


def started_ledger(k):
    ledger = k.Ledger()
    ledger.record(1, 5_000, 3 * MS_PER_DAY)
    ledger.commit(1, 7_000)
    return ledger


TIME = around(0, 3 * MS_PER_DAY, 2**62)
MASS = around(0, 10**13)
KIND = around(0, 7)


@settings(max_examples=300, deadline=None)
@given(kind=KIND, mass=MASS, at=TIME)
def test_record_refusals_agree(kind, mass, at) -> None:
    both(started_ledger, lambda k, led: led.record(kind, mass, at))


@settings(max_examples=300, deadline=None)
@given(kind=KIND, mass=MASS, start=TIME, span=around(0, MS_PER_DAY), slot=around(1_000, 30 * 60_000, MS_PER_DAY))
def test_record_spread_refusals_agree(kind, mass, start, span, slot) -> None:
    end = start + span if isinstance(start, int) and isinstance(span, int) else span
    both(started_ledger, lambda k, led: led.record_spread(kind, mass, start, end, slot))


@settings(max_examples=200, deadline=None)
@given(kind=KIND, mass=around(0, 7_000, 10**13), at=TIME, now=TIME)
def test_commit_release_start_and_queries_agree(kind, mass, at, now) -> None:
    both(started_ledger, lambda k, led: led.commit(kind, mass))
    both(started_ledger, lambda k, led: led.release(kind, mass))
    both(started_ledger, lambda k, led: led.record_bolus_start(kind, at))
    both(started_ledger, lambda k, led: led.bolus_count_24h(now))
    both(started_ledger, lambda k, led: led.delivered_24h_pg(now, kind))
    both(started_ledger, lambda k, led: led.record_volume(kind, mass, 500, at))


@settings(max_examples=300, deadline=None)
@given(rate=around(0, 10**7, 2 * 10**7), conc=around(1, 500, 10**6), anchor=around(-(2**61), 0, 2**61))
def test_continuous_programmes_agree(rate, conc, anchor) -> None:
    results = []
    for k in (COMPILED, TWIN):
        results.append(outcome(lambda: k.Programme.continuous(rate, conc, anchor_ms=anchor).key()))
    assert results[0] == results[1]
    if results[0][0] == "returned":
        built = [k.Programme.continuous(rate, conc, anchor_ms=anchor) for k in (COMPILED, TWIN)]
        general = COMPILED.Programme([(0, MS_PER_DAY, rate)], conc, anchor_ms=anchor)
        for p in (built[0], general):
            assert p.key() == built[1].key()
            assert p.segments == built[1].segments
            assert p.daily_total_pg() == built[1].daily_total_pg()
            assert (p.max_rate_nl_per_h, p.min_rate_nl_per_h) == (built[1].max_rate_nl_per_h, built[1].min_rate_nl_per_h)
            assert p.delivered_pg(7, MS_PER_DAY + 12_345) == built[1].delivered_pg(7, MS_PER_DAY + 12_345)


def kernel(k):
    caps = k.make_caps(max_dose_ng_per_day=400_000)
    return k.SafetyKernel(k.DEFAULT_LIBRARY[500], caps, k.make_envelope(2_000, 1_000_000), k.Ledger(),
                          programme=k.Programme.continuous(16_000, 500), programme_since_ms=0)


@settings(max_examples=200, deadline=None)
@given(now=around(0, 3 * MS_PER_DAY, 2**62), rate=around(0, 16_000, 10**7), t=around(-(2**61), 0, 2**61))
def test_kernel_entry_points_agree(now, rate, t) -> None:
    def state(gate):
        return (gate.ledger.snapshot(), gate.programme.key() if gate.programme else None, gate.state_version,
                list(gate.dose_history))

    for act in (
        lambda k, g: g.titration_baseline_ng(now),
        lambda k, g: g.note_stopped(now),
        lambda k, g: g.projected_excess_pg(3 * MS_PER_DAY, None, rate),
        lambda k, g: g.tighten_running_bolus(rate, 3 * MS_PER_DAY),
        lambda k, g: g.programme.rate_at(t),
        lambda k, g: g.programme.next_boundary(t),
        # authorize within 2**62 - 2 days: near 2**62 the twin's brute force projects past MAX_TIME_MS and
        # raises where the compiled kernel decides (on main too; reported, not changed here).
        lambda k, g: decision_key(g.authorize(k.request_rate_change(16_000), now if not isinstance(now, int)
                                              or now < 2**62 - 2 * MS_PER_DAY else 2**62 + 1)),
    ):
        got = []
        for k in (COMPILED, TWIN):
            g = kernel(k)
            got.append((outcome(lambda: act(k, g)), state(g)))
        assert got[0] == got[1]


@settings(max_examples=200, deadline=None)
@given(now=around(2 * MS_PER_DAY, 3 * MS_PER_DAY, 2**62), forged_rate=st.one_of(st.none(), around(0, 10**7)))
def test_apply_refusals_agree_even_for_forged_decisions(now, forged_rate) -> None:
    """``apply`` checks its time, and a rate decision whose rate was altered after ``authorize`` is
    refused by the programme check as the twin refuses it (or applied as the twin applies it)."""
    got = []
    for k in (COMPILED, TWIN):
        g = kernel(k)
        decision = g.authorize(k.request_rate_change(18_000), 2 * MS_PER_DAY)
        assert decision.allowed
        if forged_rate is not None:
            decision = decision._replace(rate_nl_per_h=forged_rate)
        result = outcome(lambda: g.apply(decision, now))
        got.append((result, g.programme.key(), g.daily_dose_ng, g.state_version, list(g.dose_history)))
    assert got[0] == got[1]
