"""PER-05: low storage raises an alarm before the disk is full; safety records are kept; therapy continues.

The free space the journal's file system reports is replaced by a figure the test sets, and the oracle is
what the pump physically pushed (the fake pump's volume), not the controller's own ledger.
"""

from __future__ import annotations

from typing import Any

from controller.alarms import AlarmCode
from controller.journal import STORAGE_LOW_BYTES
from controller.loop import STORAGE_CHECK_MS, Mode
from tests.controller.conftest import MS_PER_DAY, MS_PER_H

DOSE_NG_PER_DAY = 400_000  # 400 µg/day at 500 µg/mL: 33 333 nL/h


def _running(make_rig: Any, free: list[int | Exception]) -> Any:
    rig = make_rig()
    assert rig.therapy.implant(500, 20_000_000, dose_ng_per_day=DOSE_NG_PER_DAY, catheter="drug").allowed

    def free_bytes() -> int:
        if isinstance(free[0], Exception):
            raise free[0]
        return free[0]

    rig.store.storage_free_bytes = free_bytes
    rig.advance(MS_PER_H)
    return rig


def _pushed_in(rig: Any, ms: int) -> int:
    before = rig.pump.actual_delivered_nl
    rig.advance(ms)
    return rig.pump.actual_delivered_nl - before


def test_storage_at_the_threshold_alarms_and_therapy_goes_on(make_rig: Any) -> None:
    free: list[int | Exception] = [STORAGE_LOW_BYTES + 1]
    rig = _running(make_rig, free)
    assert not rig.alarms.is_active(AlarmCode.STORAGE_LOW)
    free[0] = STORAGE_LOW_BYTES  # "at or below" the threshold
    pushed = _pushed_in(rig, STORAGE_CHECK_MS + MS_PER_H)
    assert rig.alarms.is_active(AlarmCode.STORAGE_LOW)
    assert rig.loop.mode is Mode.RUNNING
    assert abs(pushed - 2 * 33_333) <= 2 * 10, pushed  # two hours at 400 µg/day, by hand
    entries = rig.store.count()
    rig.advance(MS_PER_DAY)
    assert rig.therapy.acknowledge_alarms().allowed
    assert rig.store.count() > entries  # records go on being written: the acknowledgement is journalled


def test_storage_that_comes_back_clears_the_alarm(make_rig: Any) -> None:
    free: list[int | Exception] = [1024]
    rig = _running(make_rig, free)
    rig.advance(STORAGE_CHECK_MS)
    assert rig.alarms.is_active(AlarmCode.STORAGE_LOW)
    rig.therapy.acknowledge_alarms()
    free[0] = 10 * STORAGE_LOW_BYTES
    rig.advance(STORAGE_CHECK_MS + MS_PER_H)
    assert not rig.alarms.is_active(AlarmCode.STORAGE_LOW)


def test_a_file_system_that_cannot_be_asked_counts_as_low(make_rig: Any) -> None:
    free: list[int | Exception] = [OSError("stale file handle")]
    rig = _running(make_rig, free)
    rig.advance(STORAGE_CHECK_MS)
    assert rig.alarms.is_active(AlarmCode.STORAGE_LOW)
    assert rig.loop.mode is Mode.RUNNING
