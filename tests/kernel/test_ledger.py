"""The rolling ledger: totals, expiry at one-minute resolution, commitments, exact snapshots."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_DAY

from .conftest import COMPILED, TWIN

MIN = 60_000
T0 = 5 * MS_PER_DAY


def test_amount_counts_for_exactly_1440_minutes(impl):
    led = impl.Ledger()
    led.record(impl.DeliveryKind.BOLUS_PATIENT, 7_000, T0 + 30_000)
    assert led.total_24h_pg(T0) == 7_000
    assert led.total_24h_pg(T0 + 1439 * MIN + 59_999) == 7_000
    assert led.total_24h_pg(T0 + 1440 * MIN) == 0
    assert led.total_24h_pg(T0 + 1440 * MIN, impl.DeliveryKind.BOLUS_PATIENT) == 0


def test_kinds_commitments_and_release(impl):
    led = impl.Ledger()
    K = impl.DeliveryKind
    for kind in K:
        led.record(kind, 1_000 * (int(kind) + 1), T0)
    assert led.delivered_24h_pg(T0) == sum(1_000 * (i + 1) for i in range(len(K)))
    assert led.delivered_24h_pg(T0, K.PRIMING) == 6_000
    led.commit(K.BOLUS_CLINICIAN, 50_000)
    assert led.total_24h_pg(T0) == led.delivered_24h_pg(T0) + 50_000
    assert led.total_24h_pg(T0 + 10 * MS_PER_DAY) == 50_000  # commitments never expire
    with pytest.raises(ConfigError):
        led.release(K.BOLUS_CLINICIAN, 50_001)
    led.release(K.BOLUS_CLINICIAN, 50_000)
    assert led.committed_pg() == 0
    assert led.total_24h_ng(T0) == -(-led.delivered_24h_pg(T0) // 1000)


def test_rejects_bad_records(impl):
    led = impl.Ledger()
    led.record(0, 1, T0 + MS_PER_DAY)
    with pytest.raises(ConfigError) as info:
        led.record(0, 1, T0)  # older than the window
    assert info.value.field == "at_ms"
    led.record(0, 1, T0 + 60_000)  # oldest minute still inside
    with pytest.raises(ConfigError):
        led.record(0, -1, T0 + MS_PER_DAY)
    with pytest.raises(ConfigError):
        led.record(8, 1, T0 + MS_PER_DAY)
    with pytest.raises(TypeError):
        led.record(0, 1.0, T0 + MS_PER_DAY)
    with pytest.raises(ConfigError):
        led.total_24h_pg(T0)  # now before the newest record
    with pytest.raises(ConfigError):
        led.record(0, impl.MAX_BUCKET_PG, T0 + MS_PER_DAY)  # bucket would overflow


def test_bolus_starts(impl):
    led = impl.Ledger()
    K = impl.DeliveryKind
    led.record_bolus_start(K.BOLUS_PATIENT, T0)
    led.record_bolus_start(K.PRIMING, T0 + 1)
    led.record_bolus_start(K.BOLUS_CLINICIAN, T0 + 2)
    assert led.bolus_count_24h(T0 + 2) == 2
    assert led.bolus_count_24h(T0 + 2, [K.PRIMING]) == 1
    assert led.last_bolus_ms() == T0 + 2
    assert led.last_bolus_ms([K.BRIDGE]) is None
    assert led.bolus_count_24h(T0 + MS_PER_DAY - 1) == 2
    assert led.bolus_count_24h(T0 + MS_PER_DAY) == 1  # the window is (now - 24 h, now]
    assert led.bolus_count_24h(T0 + MS_PER_DAY + 2) == 0
    with pytest.raises(ConfigError):
        led.record_bolus_start(K.BOLUS_PATIENT, T0 + 1)  # back in time


records = st.lists(
    st.tuples(st.integers(0, 7), st.integers(0, 10**9), st.integers(0, 3 * 1440)),
    max_size=40,
)


def build(k, ops, commits, starts):
    led = k.Ledger()
    for kind, mass, minute in sorted(ops, key=lambda r: r[2]):
        led.record(kind, mass, T0 + minute * MIN + 17)
    for kind, mass in commits:
        led.commit(kind, mass)
    at = T0
    for kind, gap in starts:
        at += gap
        led.record_bolus_start(kind, at)
    return led


ledger_inputs = (
    records,
    st.lists(st.tuples(st.integers(0, 7), st.integers(0, 10**9)), max_size=4),
    st.lists(st.tuples(st.sampled_from([2, 3, 5, 6]), st.integers(0, 10 * 3600_000)), max_size=12),
)


@given(*ledger_inputs)
def test_snapshot_restore_round_trip_and_equal_across_implementations(ops, commits, starts):
    compiled, twin = build(COMPILED, ops, commits, starts), build(TWIN, ops, commits, starts)
    snap = compiled.snapshot()
    assert snap == twin.snapshot()
    assert json.loads(json.dumps(snap)) == snap
    for k, original in ((COMPILED, compiled), (TWIN, twin)):
        restored = k.Ledger.restore(json.loads(json.dumps(snap)))
        assert restored.snapshot() == snap
        latest = snap["latest_minute"]
        for now in ([] if latest is None else [latest * MIN, (latest + 700) * MIN, (latest + 1500) * MIN]):
            assert restored.total_24h_pg(now) == original.total_24h_pg(now) == twin.total_24h_pg(now)
            assert restored.bolus_count_24h(now) == original.bolus_count_24h(now)
        # The restored ledger keeps working like the original.
        if latest is not None:
            restored.record(1, 5, (latest + 2000) * MIN)
            original.record(1, 5, (latest + 2000) * MIN)
            assert restored.snapshot() == original.snapshot()
    cross = TWIN.Ledger.restore(snap)
    assert cross.snapshot() == snap


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(version=99),
        lambda s: s.update(resolution_ms=1000),
        lambda s: s.update(committed_pg=[0] * 7),
        lambda s: s.update(committed_pg=[-1] + [0] * 7),
        lambda s: s.update(buckets=[[s["latest_minute"] + 1, [1] * 8]]),
        lambda s: s.update(buckets=[[s["latest_minute"], [1.0] + [0] * 7]]),
        lambda s: s.update(bolus_starts=[[10, 3], [5, 3]]),
        lambda s: s.update(extra=1),
    ],
)
def test_restore_rejects_corrupt_snapshots(impl, mutate):
    led = impl.Ledger()
    led.record(0, 5, T0)
    snap = led.snapshot()
    mutate(snap)
    with pytest.raises((ConfigError, TypeError)):
        impl.Ledger.restore(snap)


def test_pickle_round_trip(impl):
    import pickle

    led = impl.Ledger()
    led.record(0, 5, T0)
    led.commit(3, 9)
    assert pickle.loads(pickle.dumps(led)).snapshot() == led.snapshot()
    p = impl.Programme.continuous(2_000, 500)
    assert pickle.loads(pickle.dumps(p)) == p
