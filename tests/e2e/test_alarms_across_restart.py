"""A controller restart in the middle of a pump stall keeps the stall's alarms held (ALM-03; review 11, case r3).

The oracle is the scenario's own timeline: the stall is injected at :data:`STALL_MS`, the controller
restarts at :data:`RESTART_MS` while the pump is still stalled, the stall is cleared at
:data:`CLEAR_MS` and an operator acknowledges the alarms (which resumes therapy) at :data:`ACK_MS`.
So MOTOR_STALL and THERAPY_INTERRUPTED (HIGH, latching) must stay held across the restart, be
acknowledged at :data:`ACK_MS` and clear once delivery is confirmed after it. Before the fix the
restarted controller's alarm manager started empty (``AlarmManager.restore`` was never called): both
alarms vanished with the old process while the pump stood still, were never acknowledged (the
operator's acknowledgement did not list them) and never cleared, though delivery resumed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.scenario import RunOptions, load_scenario
from hil.scenario.runner import run_scenario
from tests.scenarios import implant_scenario

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
STALL_MS = 2 * MS_PER_H
RESTART_MS = 4 * MS_PER_H
CLEAR_MS = 5 * MS_PER_H
ACK_MS = 5 * MS_PER_H + 30 * MS_PER_MIN
STALL_ALARMS = ("motor_stall", "therapy_interrupted")

SCENARIO = implant_scenario("restart-in-stall", "0.5", "0d 00:30", poll_interval_min=15, extra="""
[[action]]
at = "0d 02:00"
do = "fault"
kind = "stall"

[[action]]
at = "0d 04:00"
do = "restart_controller"

[[action]]
at = "0d 05:00"
do = "clear_fault"
kind = "stall"

[[action]]
at = "0d 05:30"
do = "acknowledge_alarms"
label = "ack"
""")


def _events(record: object, code: str) -> list[tuple[str, int]]:
    return [(a.event, a.t_ms) for a in record.alarms if a.code == code]  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> object:
    path = tmp_path_factory.mktemp("restart") / "s.toml"
    path.write_text(SCENARIO)
    return run_scenario(load_scenario(path), RunOptions(link="inprocess"))


@pytest.mark.parametrize("code", STALL_ALARMS)
def test_a_stall_alarm_held_across_the_restart_is_acknowledged_then_cleared_once_delivery_resumes(
        record: object, code: str) -> None:
    events = _events(record, code)
    assert [e for e, _ in events] == ["raise", "acknowledge", "clear"], events
    (_, raised), (_, acked), (_, cleared) = events
    assert STALL_MS <= raised < RESTART_MS
    assert acked == ACK_MS
    assert ACK_MS <= cleared <= ACK_MS + 30 * MS_PER_MIN  # the first poll that confirms delivery


def test_the_restarted_controller_holds_the_stall_until_the_operator_acts(record: object) -> None:
    ack = next(d for d in record.decisions if d.action == "acknowledge_alarms")  # type: ignore[attr-defined]
    assert ack.allowed, ack
    for code in STALL_ALARMS:
        assert code in ack.detail, ack.detail  # the operator acknowledged what the pump's stall raised
    periods = {p.code: p for p in record.alarm_periods()}  # type: ignore[attr-defined]
    assert all(periods[c].cleared_t_ms is not None for c in STALL_ALARMS), periods


REPEATED = implant_scenario("repeated-deaths", "0.25", "0d 00:30", poll_interval_min=15, extra="""
[[action]]
at = "0d 02:00"
do = "restart_controller"

[[action]]
at = "0d 03:00"
do = "restart_controller"

[[action]]
at = "0d 04:00"
do = "acknowledge_alarms"

[[action]]
at = "0d 05:00"
do = "restart_controller"
""")


def test_every_unclean_restart_raises_its_own_controller_death_though_earlier_ones_are_held(tmp_path: Path) -> None:
    """With the held alarms restored, the first death's alarm must not swallow the later ones (held
    unacknowledged at 03:00, acknowledged at 05:00): each restart is annunciated afresh."""
    path = tmp_path / "s.toml"
    path.write_text(REPEATED)
    record = run_scenario(load_scenario(path), RunOptions(link="inprocess"))
    raises = [t for e, t in _events(record, "controller_death") if e == "raise"]
    assert raises == [2 * MS_PER_H, 3 * MS_PER_H, 5 * MS_PER_H], _events(record, "controller_death")
    last = record.alarm_periods()[-1]  # type: ignore[attr-defined]
    assert (last.code, last.raised_t_ms, last.cleared_t_ms, last.acknowledged_t_ms) == \
        ("controller_death", 5 * MS_PER_H, None, None)  # the latest death waits for an operator
