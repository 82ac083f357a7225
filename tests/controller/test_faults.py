"""The fault-reaction table (SAFE-01): complete, one reaction each, stop only where delivery is impossible."""

from __future__ import annotations

import pytest

from controller.alarms import ALARM_TABLE, Priority
from controller.faults import (
    FAULT_REACTIONS,
    PUMP_ALARM_FAULTS,
    FaultCode,
    Reaction,
    fault_for_pump_alarm,
    reaction_for,
)
from cython_ext.errors import ConfigError
from hal.pump import PumpAlarm

#: Faults the role brief requires the table to cover.
REQUIRED = {
    "controller_death",
    "comms_timeout",
    "uncertain_delivery",
    "pump_reset",
    "motor_stall",
    "occlusion",
    "safe_mode_watchdog",
    "dispensed_drift_over",
    "dispensed_drift_under",
    "reservoir_low",
    "reservoir_empty_threshold",
    "reservoir_confirmed_empty",
    "journal_write_failure",
    "storage_low",
    "corrupt_state_at_startup",
    "clock_anomaly",
    "unfinished_session",
    "pump_identity_mismatch",
}

#: The only faults where delivery is physically impossible or more dangerous than withdrawal.
STOP_FAULTS = {FaultCode.MOTOR_STALL, FaultCode.OCCLUSION, FaultCode.RESERVOIR_CONFIRMED_EMPTY}


def test_every_fault_has_exactly_one_row_with_an_existing_alarm() -> None:
    assert set(FAULT_REACTIONS) == set(FaultCode)
    for code, row in FAULT_REACTIONS.items():
        assert row.fault is code
        assert isinstance(row.reaction, Reaction)
        assert row.alarm in ALARM_TABLE
        assert row.rationale.strip()


def test_required_faults_are_covered() -> None:
    assert REQUIRED <= {code.value for code in FaultCode}


def test_stop_only_where_delivery_is_impossible() -> None:
    stops = {code for code, row in FAULT_REACTIONS.items() if row.reaction is Reaction.STOP}
    assert stops == STOP_FAULTS


def test_stop_and_min_rate_raise_an_alarm_that_demands_attention() -> None:
    for row in FAULT_REACTIONS.values():
        if row.reaction is Reaction.STOP:
            assert ALARM_TABLE[row.alarm].priority is Priority.HIGH, row
        if row.reaction is Reaction.MIN_RATE:
            assert ALARM_TABLE[row.alarm].priority >= Priority.MEDIUM, row


def test_continue_is_the_most_common_reaction() -> None:
    reactions = [row.reaction for row in FAULT_REACTIONS.values()]
    assert reactions.count(Reaction.CONTINUE) > reactions.count(Reaction.STOP)


@pytest.mark.parametrize("code", list(FaultCode))
def test_reaction_for_returns_the_row(code: FaultCode) -> None:
    assert reaction_for(code) is FAULT_REACTIONS[code]


@pytest.mark.parametrize("bad", ["motor_stall", None, 3, Reaction.STOP])
def test_there_is_no_default_reaction(bad: object) -> None:
    with pytest.raises(ConfigError) as excinfo:
        reaction_for(bad)  # type: ignore[arg-type]
    assert excinfo.value.field == "fault"


def test_every_pump_alarm_maps_to_a_fault() -> None:
    assert set(PUMP_ALARM_FAULTS) == set(PumpAlarm)
    assert fault_for_pump_alarm(PumpAlarm.STALL) is FaultCode.MOTOR_STALL
    assert fault_for_pump_alarm(PumpAlarm.RESET) is FaultCode.PUMP_RESET
    assert fault_for_pump_alarm(PumpAlarm.COMMS_TIMEOUT) is FaultCode.SAFE_MODE_WATCHDOG


def test_pump_reset_restarts_at_minimum_rate_not_full_dose() -> None:
    assert reaction_for(FaultCode.PUMP_RESET).reaction is Reaction.MIN_RATE
    assert reaction_for(FaultCode.RESERVOIR_EMPTY_THRESHOLD).reaction is Reaction.MIN_RATE
    assert reaction_for(FaultCode.CORRUPT_STATE_AT_STARTUP).reaction is Reaction.CONTINUE


def test_caught_errors_map_to_faults() -> None:
    from controller.faults import fault_for_exception
    from controller.journal import JournalError
    from cython_ext.errors import CommunicationError, ConnectError, LinkTimeoutError, UncertainDeliveryError

    assert fault_for_exception(UncertainDeliveryError("lost reply")) is FaultCode.UNCERTAIN_DELIVERY
    assert fault_for_exception(LinkTimeoutError("no reply")) is FaultCode.COMMS_TIMEOUT
    assert fault_for_exception(CommunicationError("garbled")) is FaultCode.COMMS_TIMEOUT
    assert fault_for_exception(ConnectError("no port")) is FaultCode.COMMS_TIMEOUT
    assert fault_for_exception(JournalError("disk")) is FaultCode.JOURNAL_WRITE_FAILURE
    assert fault_for_exception(ConfigError("rate_nl_per_h", -1, ">= 0")) is None
    assert fault_for_exception(ValueError("x")) is None
