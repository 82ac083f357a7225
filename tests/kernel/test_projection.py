"""The 24 h projection against an independent brute-force oracle.

The oracle sums the raw records kept by the test and integrates the programme
minute by minute through ``rate_at`` only, so it shares no arithmetic with the
kernel's prefix integrals, running totals or block bounds. A request is allowed
by the projection exactly when no window ending in the next 1440 minutes would
exceed the cap (PRX-03/PRX-04, BOL-01).
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cython_ext.units import MS_PER_DAY, MS_PER_H

from .conftest import COMPILED, TWIN, periodic_strategy, steps_strategy

MIN = 60_000
CONC = 1000
NOW = 7 * MS_PER_DAY + 13 * MIN  # minute-aligned


def oracle_worst_window_pg(records, committed, extra_pg, programme, now, cap_pg):
    """``(early, late)``: max over k < 1440 of (past still inside + committed + extra + basal to the end
    of minute m0+k) - cap, and the first window holding nothing from before now."""
    m0 = now // MIN
    per_minute: dict[int, int] = {}
    for mass, minute in records:
        per_minute[minute] = per_minute.get(minute, 0) + mass
    inside = sum(mass for minute, mass in per_minute.items() if m0 - 1440 < minute <= m0)
    worst = None
    basal_numerator = 0
    for k in range(1440):
        if programme is not None:
            basal_numerator += programme.rate_at(now + k * MIN) * MIN
        if k:
            inside -= per_minute.get(m0 + k - 1440, 0)  # that minute has left the window ending at m0 + k
        basal = -(-basal_numerator * CONC // MS_PER_H)
        excess = inside + committed + extra_pg + basal - cap_pg
        worst = excess if worst is None else max(worst, excess)
    # The window ending in minute m0 + 1440 holds nothing from before now (not even the
    # request, placed in minute m0): committed plus the basal of minutes m0+1 .. m0+1440.
    day_numerator = 0
    if programme is not None:
        day_numerator = sum(programme.rate_at((m0 + j) * MIN) * MIN for j in range(1, 1441))
    late = committed + -(-day_numerator * CONC // MS_PER_H) - cap_pg
    return worst, late


history = st.lists(st.tuples(st.integers(0, 3_000_000_000), st.integers(0, 1439)), max_size=30)


@settings(max_examples=40)
@given(
    history,
    st.integers(0, 50_000_000),
    steps_strategy(max_steps=6, rates=st.integers(2_000, 20_000)),
    periodic_strategy(),
    st.integers(0, 1440),
    st.integers(150_000, 1_000_000),
    st.integers(1, 200_000),
)
def test_bolus_projection_matches_oracle(records, committed, steps, periodic, anchor_min, max_dose, volume):
    records = [(mass, NOW // MIN - age) for mass, age in records]
    cap_pg = max_dose * 1000
    decisions = []
    for k in (COMPILED, TWIN):
        programme = k.Programme(steps, CONC, periodic_boluses=periodic, anchor_ms=anchor_min * MIN)
        limits = k.DEFAULT_LIBRARY[CONC]
        caps = k.make_caps(max_dose_ng_per_day=max_dose, max_bolus_ng=100_000, bolus_lockout_ms=MS_PER_H)
        gate = k.SafetyKernel(limits, caps, k.make_envelope(2_000, 1_000_000), k.Ledger(), programme=programme)
        for mass, minute in sorted(records, key=lambda r: r[1]):
            gate.ledger.record(k.DeliveryKind.BASAL, mass, minute * MIN + 1)
        gate.ledger.commit(k.DeliveryKind.BOLUS_CLINICIAN, committed)
        worst, late = oracle_worst_window_pg(records, committed, volume * CONC, programme, NOW, cap_pg)
        decision = gate.authorize(k.request_bolus(k.DeliveryKind.BOLUS_CLINICIAN, volume, 2 * MS_PER_H), NOW)
        assert ("DOSE_CAP_24H" in decision.reasons) == (max(worst, late) > 0), (k.IMPLEMENTATION, worst, late)
        base, late = oracle_worst_window_pg(records, committed, 0, programme, NOW, cap_pg)
        assert gate.headroom_pg(NOW) == (0 if late > 0 else max(0, -base))
        rate_decision = gate.authorize(k.request_rate_change(programme.max_rate_nl_per_h), NOW)
        flat = k.Programme.continuous(programme.max_rate_nl_per_h, CONC)
        flat_worst = max(oracle_worst_window_pg(records, committed, 0, flat, NOW, cap_pg))
        assert ("DOSE_CAP_24H" in rate_decision.reasons) == (flat_worst > 0)
        decisions.append((decision.reasons, rate_decision.reasons))
    assert decisions[0] == decisions[1]


@settings(max_examples=15)
@given(st.integers(2_000, 30_000), st.integers(0, 10**6))
def test_near_cap_steady_state_uses_exact_scan(rate, jitter_pg):
    """A patient delivering steadily just under the cap: only the exact scan can decide."""
    for k in (COMPILED, TWIN):
        daily_pg = rate * 24 * CONC
        caps = k.make_caps(max_dose_ng_per_day=-(-(daily_pg + jitter_pg) // 1000), bolus_lockout_ms=MS_PER_H)
        gate = k.SafetyKernel(k.DEFAULT_LIBRARY[CONC], caps, k.make_envelope(2_000, 1_000_000), k.Ledger(), programme=k.Programme.continuous(rate, CONC))
        per_minute = rate * CONC // 60  # the test feeds whole pg per minute; the programme's carry is ignored
        for m in range(1440):
            gate.ledger.record(k.DeliveryKind.BASAL, per_minute, NOW - MS_PER_DAY + m * MIN)
        headroom = gate.headroom_pg(NOW)
        records = [(per_minute, (NOW - MS_PER_DAY) // MIN + m) for m in range(1440)]
        worst, late = oracle_worst_window_pg(records, 0, 0, gate.programme, NOW, caps.max_dose_ng_per_day * 1000)
        assert late <= 0
        assert headroom == max(0, -worst)
        volume = headroom // CONC
        ok = gate.authorize(k.request_bolus(k.DeliveryKind.BOLUS_CLINICIAN, max(volume, 1), MS_PER_H), NOW)
        assert ("DOSE_CAP_24H" in ok.reasons) == (volume == 0)
        over = gate.authorize(k.request_bolus(k.DeliveryKind.BOLUS_CLINICIAN, volume + 1, MS_PER_H), NOW)
        assert "DOSE_CAP_24H" in over.reasons
