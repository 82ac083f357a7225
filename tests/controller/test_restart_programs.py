"""A restart while the pump runs a bolus program (issue #10, PER-02, HAL-06, BOL-05).

The pump ends a bolus by itself: phase 1 is basal plus bolus for the program's volume, phase 2 the
basal, continuous. A controller that dies inside phase 1 and comes back must find the program by its
phase, attribute what the counter shows to bolus and basal by the program's own split, send nothing
(the pump already does the right thing), and lose nothing: the bolus ends when the pump ends it.

The oracle is the fake pump's mechanism: the program it holds (phase 1 rate and volume, phase 2
rate) gives the bolus part of phase 1 as ``volume x (rate1 - basal) / rate1``, and its counter the
total. Each case is checked against a twin run of the same script with no death.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.store import Store
from hal.pump import PumpState
from sim.clock import VirtualClock
from sim.fake_pump import FakePump
from tests.controller.conftest import Rig, build_rig

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000
DELIVERY_COMMANDS = {"set_rate", "start", "stop", "pause", "program"}


def _therapy(tmp_path: Path, name: str) -> tuple[VirtualClock, FakePump, Path, Rig]:
    clock = VirtualClock()
    pump = FakePump(clock)
    path = tmp_path / f"{name}.sqlite"
    rig = build_rig(clock, pump, Store(path, clock))
    assert rig.therapy.implant(500, 20_000_000, dose_ng_per_day=100_000).allowed
    rig.advance(2 * MS_PER_DAY)
    return clock, pump, path, rig


def _bolus_part_nl(pump: FakePump) -> int:
    """The bolus part of the program the mechanism holds: phase-1 volume above the basal over its length, nL."""
    first, basal = pump._phases[0], pump._phases[1]
    return first.volume_nl * (first.rate_nl_per_h - basal.rate_nl_per_h) // first.rate_nl_per_h


def _clinician(rig: Rig) -> str:
    assert rig.therapy.clinician_bolus(50_000, 30 * MS_PER_MIN).allowed
    assert rig.loop.bolus_program is not None, "the bolus is a pump program"
    return rig.loop.bolus.bolus_id


def _without_death(tmp_path: Path) -> int:
    _clock, _pump, _path, rig = _therapy(tmp_path, "twin")
    bolus_id = _clinician(rig)
    rig.advance(2 * MS_PER_H)
    return next(b for b in rig.store.boluses() if b.bolus_id == bolus_id).delivered_nl


@pytest.mark.parametrize("into_ms, down_ms", [(1000, 0), (10 * MS_PER_MIN, 5 * MS_PER_MIN),
                                              (20 * MS_PER_MIN, 9 * MS_PER_MIN), (29 * MS_PER_MIN, 0)])
def test_a_restart_inside_the_bolus_phase_sends_nothing_and_attributes_by_the_program(
        tmp_path: Path, into_ms: int, down_ms: int) -> None:
    """Died ``into_ms`` into the bolus phase, down for ``down_ms``, back while the pump is still in phase 1."""
    twin_nl = _without_death(tmp_path)
    clock, pump, path, rig = _therapy(tmp_path, "death")
    bolus_id = _clinician(rig)
    bolus_part = _bolus_part_nl(pump)
    rig.advance(into_ms)
    rig.controller.detach()
    rig.store.abandon()
    clock.advance(down_ms / 1000)
    assert pump.read_phase() == 1, "the case is a restart inside the bolus phase"
    sent_before = [c for c in pump.command_log if c[0] in DELIVERY_COMMANDS]
    again = build_rig(clock, pump, Store(path, clock), recover=True, prescription=rig.prescription,
                      settings=rig.settings, patient=rig.controller.patient)
    assert [c for c in pump.command_log if c[0] in DELIVERY_COMMANDS] == sent_before, "the restart sent a command"
    assert again.loop.bolus is not None and again.loop.bolus.bolus_id == bolus_id, "the bolus goes on"
    record = next(b for b in again.store.boluses() if b.bolus_id == bolus_id)
    assert record.status != "finished"
    # Until the pump leaves phase 1, nothing is commanded; then the loop closes the bolus from the counter.
    again.advance(2 * MS_PER_H)
    assert [c for c in pump.command_log if c[0] in DELIVERY_COMMANDS] == sent_before
    assert pump.read_phase() == 2 and pump.state is PumpState.INFUSING and pump.rate_nl_per_h == 8333
    record = next(b for b in again.store.boluses() if b.bolus_id == bolus_id)
    assert record.status == "finished" and record.detail == "complete", record
    # The bolus got its part of phase 1, by the mechanism's program, to within the integer splits (a few nL).
    assert abs(record.delivered_nl - bolus_part) <= 3, (record.delivered_nl, bolus_part)
    assert abs(record.delivered_nl - twin_nl) <= 3, (record.delivered_nl, twin_nl)
    assert bolus_part <= record.volume_nl, "the program holds no more than authorised"
    # Nothing lost or counted twice: what was reconciled since implant is the counter's reading.
    again.loop.poll()
    assert again.loop.total_counted_nl == pump.infused_nl


def test_a_restart_after_the_pump_ended_the_bolus_counts_it_whole_and_sends_nothing(tmp_path: Path) -> None:
    """Died 10 min into the bolus phase, back 2 h later: the pump ended it by itself; the restart gives the bolus
    its program part and the basal the rest, and sends nothing (the pump already runs the basal phase)."""
    clock, pump, path, rig = _therapy(tmp_path, "past")
    bolus_id = _clinician(rig)
    bolus_part = _bolus_part_nl(pump)
    rig.advance(10 * MS_PER_MIN)
    rig.controller.detach()
    rig.store.abandon()
    clock.advance(2 * 3600)
    sent_before = [c for c in pump.command_log if c[0] in DELIVERY_COMMANDS]
    again = build_rig(clock, pump, Store(path, clock), recover=True, prescription=rig.prescription,
                      settings=rig.settings, patient=rig.controller.patient)
    again.advance(MS_PER_H)
    assert [c for c in pump.command_log if c[0] in DELIVERY_COMMANDS] == sent_before
    record = next(b for b in again.store.boluses() if b.bolus_id == bolus_id)
    assert record.status == "finished" and abs(record.delivered_nl - bolus_part) <= 3, (record, bolus_part)
    again.loop.poll()
    assert again.loop.total_counted_nl == pump.infused_nl
