"""The compiled ledger's window moving by any step: the same totals and the same decisions as the twin.

The compiled :class:`Ledger` keeps a ring of minute buckets and, for the kernel's fast projection
bound, sums over 90-minute blocks (17 places for 16 blocks a day); moving the window expires
buckets and empties blocks. Steps within a block, across one, of exactly a day, of more than a
day and of 17 days (a block's place in the ring of 17 comes round again) must leave every total
and every decision as the twin's brute force over its own buckets gives them. The sharpest
decision is the lowest basal rate the 24 h cap refuses (``DOSE_CAP_24H``): the twin's bisection finds
it, and the compiled kernel must refuse exactly that rate on that ground and not one nL/h less.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from cython_ext.units import MS_PER_DAY

from .conftest import COMPILED, TWIN

MIN = 60_000
NOW = 9 * MS_PER_DAY + 7 * MIN + 12_345
MAX_RATE = 1_000_000
GAPS_MIN = [0, 1, 29, 89, 90, 91, 1_439, 1_440, 1_441, 1_530, 17 * 1_440, 17 * 1_440 + 45, 34 * 1_440 - 90]


def kernel_over(k, ledger, cap_ng: int):
    caps = k.make_caps(max_dose_ng_per_day=cap_ng, max_bolus_ng=100_000, max_boluses_per_day=4)
    return k.SafetyKernel(k.DEFAULT_LIBRARY[500], caps, k.make_envelope(1, 1_000_000), ledger,
                          programme=k.Programme.continuous(2_000, 500), programme_since_ms=0)


def capped(kernel, k, rate: int, now: int) -> bool:
    """Whether the 24 h cap refuses ``rate`` (whatever else does)."""
    return "DOSE_CAP_24H" in kernel.authorize(k.request_rate_change(rate), now).reasons


@settings(max_examples=80, deadline=None)
@given(
    records=st.lists(st.tuples(st.sampled_from(GAPS_MIN) | st.integers(0, 3_000), st.integers(0, 7),
                               st.integers(0, 5 * 10**7)), min_size=1, max_size=30),
    seconds=st.integers(0, 59),
    cap_ug=st.sampled_from([50, 200, 600, 1_500]),
)
def test_totals_and_the_lowest_capped_rate_equal_the_twins(records, seconds, cap_ug):
    ledgers = [COMPILED.Ledger(), TWIN.Ledger()]
    at = NOW
    for gap_min, kind, pg in records:
        at += gap_min * MIN + seconds * 1_000
        for ledger in ledgers:
            ledger.record(kind, pg, at)
    assert ledgers[0].snapshot() == ledgers[1].snapshot()
    for later in (0, 37 * MIN, 90 * MIN, MS_PER_DAY - MIN, MS_PER_DAY):
        assert ledgers[0].delivered_24h_pg(at + later) == ledgers[1].delivered_24h_pg(at + later)
    now = at + seconds * 1_000
    kernels = [kernel_over(k, ledger, cap_ug * 1_000) for k, ledger in zip((COMPILED, TWIN), ledgers)]
    assert kernels[0].headroom_pg(now) == kernels[1].headroom_pg(now)
    low, high = 0, MAX_RATE  # the twin's lowest capped rate lies in (low, high]
    if not capped(kernels[1], TWIN, high, now):
        assert not capped(kernels[0], COMPILED, high, now)
        return
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if capped(kernels[1], TWIN, mid, now) else (mid, high)
    for rate in (low, high):
        if rate >= 1:
            assert capped(kernels[0], COMPILED, rate, now) == capped(kernels[1], TWIN, rate, now), rate
