"""The fault-reaction table: one documented reaction and one alarm per fault (SAFE-01).

For intrathecal baclofen, stopping is not a safe state: abrupt withdrawal can
kill. Reactions are ranked (safety-requirements.md section 4):

1. :attr:`Reaction.CONTINUE`: keep the last verified, committed programme and alarm.
   No therapy-changing command is sent until the state is reconciled.
2. :attr:`Reaction.MIN_RATE`: switch to the clinician-set minimum rate and alarm,
   where dose accounting is uncertain or over-delivery is suspected but unproven.
3. :attr:`Reaction.STOP`: stop and alarm, only where delivery is physically
   impossible (stall, occlusion, confirmed empty) or more dangerous than withdrawal.

There is no default: :func:`reaction_for` raises for a code not in the table,
and the table is checked when imported to hold one row for every :class:`FaultCode`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from controller.alarms import AlarmCode
from controller.journal import JournalError
from controller.tables import one_row_each
from cython_ext.errors import (
    CommunicationError,
    ConfigError,
    ConnectError,
    LinkTimeoutError,
    UncertainDeliveryError,
)
from hal.pump import PumpAlarm


class Reaction(enum.Enum):
    """What the controller does about a fault. Stop is never a default."""

    CONTINUE = "continue"
    MIN_RATE = "min_rate"
    STOP = "stop"


class FaultCode(enum.Enum):
    """Every fault the controller recognises (values are stable journal codes)."""

    COMMS_TIMEOUT = "comms_timeout"
    UNCERTAIN_DELIVERY = "uncertain_delivery"
    PUMP_RESET = "pump_reset"
    MOTOR_STALL = "motor_stall"
    OCCLUSION = "occlusion"
    SAFE_MODE_WATCHDOG = "safe_mode_watchdog"
    DISPENSED_DRIFT_OVER = "dispensed_drift_over"
    DISPENSED_DRIFT_UNDER = "dispensed_drift_under"
    RESERVOIR_LOW = "reservoir_low"
    RESERVOIR_EMPTY_THRESHOLD = "reservoir_empty_threshold"
    RESERVOIR_CONFIRMED_EMPTY = "reservoir_confirmed_empty"
    JOURNAL_WRITE_FAILURE = "journal_write_failure"
    STORAGE_LOW = "storage_low"
    CORRUPT_STATE_AT_STARTUP = "corrupt_state_at_startup"
    CLOCK_ANOMALY = "clock_anomaly"
    UNFINISHED_SESSION = "unfinished_session"
    PUMP_IDENTITY_MISMATCH = "pump_identity_mismatch"
    PUMP_PROGRAM_REJECTED = "pump_program_rejected"
    BATTERY_ERI = "battery_eri"
    UNEXPLAINED_STOP = "unexplained_stop"
    DOSE_CAP_BREACH_ATTEMPT = "dose_cap_breach_attempt"
    ALARM_SYSTEM_FAILURE = "alarm_system_failure"
    TIP_DOSE_DEFICIT = "tip_dose_deficit"
    PRIMING_INCOMPLETE = "priming_incomplete"
    CONTROLLER_DEATH = "controller_death"


@dataclass(frozen=True)
class FaultReaction:
    """One row of the fault-reaction table.

    :param fault: the fault.
    :param reaction: the single documented reaction.
    :param alarm: the alarm raised with it (a key of :data:`controller.alarms.ALARM_TABLE`).
    :param rationale: why this reaction (and not a safer-looking stop).
    :param interrupts_delivery: the fault means the pump stopped delivering: the interruption
        clock starts (and THERAPY_INTERRUPTED is raised) until delivery is confirmed again.
    :param acknowledges_pump: the pump's latched alarm is acknowledged before the reaction
        (the pump cannot run again otherwise, and the reaction needs it to run).
    :param restores_programme: a CONTINUE reaction that puts the last verified programme back on
        the pump (after reconciling), because the pump is not running it now.
    """

    fault: FaultCode
    reaction: Reaction
    alarm: AlarmCode
    rationale: str
    interrupts_delivery: bool = False
    acknowledges_pump: bool = False
    restores_programme: bool = False


_C, _MR, _S = Reaction.CONTINUE, Reaction.MIN_RATE, Reaction.STOP
_F, _A = FaultCode, AlarmCode

#: The fault-reaction table (SAFE-01): every :class:`FaultCode` has exactly one row.
FAULT_REACTIONS: Mapping[FaultCode, FaultReaction] = one_row_each(
    FaultCode,
    lambda row: row.fault,
    (
        FaultReaction(
            _F.COMMS_TIMEOUT,
            _C,
            _A.THERAPY_STATUS_UNKNOWN,
            "The pump keeps its last committed programme (HAL-05); mark status unknown, never assume a "
            "command applied.",
        ),
        FaultReaction(
            _F.UNCERTAIN_DELIVERY,
            _C,
            _A.THERAPY_STATUS_UNKNOWN,
            "Read status and the dispensed counter and reconcile before any new delivery command; never "
            "blind-retry (HAL-03).",
        ),
        FaultReaction(
            _F.PUMP_RESET,
            _MR,
            _A.PUMP_RESET,
            "Power loss interrupted delivery for an unknown time; restarting at the full dose after an "
            "interruption is an overdose risk, leaving it stopped a withdrawal risk.",
            interrupts_delivery=True,
            acknowledges_pump=True,
        ),
        FaultReaction(
            _F.MOTOR_STALL,
            _S,
            _A.MOTOR_STALL,
            "Delivery is physically impossible; commands cannot help and the alarm must reach a human.",
            interrupts_delivery=True,
        ),
        FaultReaction(
            _F.OCCLUSION,
            _S,
            _A.OCCLUSION,
            "Pushing against a blockage builds an unintended bolus released later (IEC 60601-2-24).",
            interrupts_delivery=True,
        ),
        FaultReaction(
            _F.SAFE_MODE_WATCHDOG,
            _C,
            _A.THERAPY_INTERRUPTED,
            "The pump's comms watchdog stopped it; the interruption is bounded and the dispensed counter "
            "intact, so after reconciliation the last verified programme resumes.",
            interrupts_delivery=True,
            acknowledges_pump=True,
            restores_programme=True,
        ),
        FaultReaction(
            _F.DISPENSED_DRIFT_OVER,
            _MR,
            _A.OVER_DELIVERY_SUSPECTED,
            "Over-delivery suspected but unproven: the minimum rate limits harm without withdrawal.",
        ),
        FaultReaction(
            _F.DISPENSED_DRIFT_UNDER,
            _C,
            _A.UNDER_DELIVERY_SUSPECTED,
            "Lowering delivery further would deepen the deficit; raising it blind risks overdose.",
        ),
        FaultReaction(
            _F.RESERVOIR_LOW,
            _C,
            _A.RESERVOIR_LOW,
            "Drug remains; the fix is a refill, not a therapy change (RES-02).",
        ),
        FaultReaction(
            _F.RESERVOIR_EMPTY_THRESHOLD,
            _MR,
            _A.RESERVOIR_EMPTY,
            "Stretch the residual volume at the minimum rate until refill (RES-05).",
        ),
        FaultReaction(
            _F.RESERVOIR_CONFIRMED_EMPTY,
            _S,
            _A.RESERVOIR_EMPTY,
            "Nothing left to deliver; pumping air or dry is impossible delivery (RES-05). The stop is an "
            "interruption: a refill resumes it by the restart rule.",
            interrupts_delivery=True,
        ),
        FaultReaction(
            _F.JOURNAL_WRITE_FAILURE,
            _C,
            _A.JOURNAL_WRITE_FAILURE,
            "Therapy must not depend on the disk; no new delivery change is made without a durable record.",
        ),
        FaultReaction(
            _F.STORAGE_LOW,
            _C,
            _A.STORAGE_LOW,
            "Safety records are still being written; therapy continues (PER-05).",
        ),
        FaultReaction(
            _F.CORRUPT_STATE_AT_STARTUP,
            _C,
            _A.CORRUPT_STATE_AT_STARTUP,
            "Issue no therapy-changing command: leave the pump on its last committed programme and wait for "
            "a clinician (SAFE-04, PER-06).",
        ),
        FaultReaction(
            _F.CLOCK_ANOMALY,
            _C,
            _A.CLOCK_ANOMALY,
            "Lockouts and windows use monotonic time (BOL-02); wall-clock schedules need a human check.",
        ),
        FaultReaction(
            _F.UNFINISHED_SESSION,
            _C,
            _A.UNFINISHED_SESSION,
            "The last committed programme keeps running; the pump never stays stopped (RES-04).",
        ),
        FaultReaction(
            _F.PUMP_IDENTITY_MISMATCH,
            _C,
            _A.PUMP_IDENTITY_MISMATCH,
            "Send nothing to a pump we cannot identify; whatever it runs is not changed blindly.",
        ),
        FaultReaction(
            _F.PUMP_PROGRAM_REJECTED,
            _C,
            _A.PUMP_PROGRAM_REJECTED,
            "Atomic programming: a rejected stage leaves the old programme running (PRX-07).",
        ),
        FaultReaction(
            _F.BATTERY_ERI,
            _C,
            _A.BATTERY_ERI,
            "About 90 days of service remain; replacement is planned, therapy unchanged.",
        ),
        FaultReaction(
            _F.CONTROLLER_DEATH,
            _C,
            _A.CONTROLLER_DEATH,
            "Seen at the restart after it. While the controller was gone the pump ran the last command's "
            "orphan schedule, which the kernel judged before it was sent (within the 24 h cap, at or above the "
            "minimum rate, never stopping; boluses end by the pump's own program). The restart reconciles "
            "the counter, the phase and the programme before any command (PER-02) and re-sends nothing (a bolus "
            "still in its program's bolus phase carries on, ended by the pump); a death inside a programming "
            "stop leaves the pump paused, found as UNEXPLAINED_STOP and resumed within the recovery.",
        ),
        FaultReaction(
            _F.UNEXPLAINED_STOP,
            _C,
            _A.THERAPY_INTERRUPTED,
            "Reconcile, then resume the last verified programme; a stopped pump is the withdrawal hazard.",
            interrupts_delivery=True,
            restores_programme=True,
        ),
        FaultReaction(
            _F.DOSE_CAP_BREACH_ATTEMPT,
            _C,
            _A.DOSE_CAP_BREACH_ATTEMPT,
            "The kernel refused the command, so nothing changed; the running programme is within the cap.",
        ),
        FaultReaction(
            _F.TIP_DOSE_DEFICIT,
            _C,
            _A.WITHDRAWAL_RISK,
            "The deficit has a cause with its own reaction (a stop, minimum rate, a refill); raising delivery "
            "blind risks overdose, so the patient is flagged to a human at once.",
        ),
        FaultReaction(
            _F.PRIMING_INCOMPLETE,
            _C,
            _A.CATHETER_NOT_PRIMED,
            "The fault that cut the priming short has its own reaction; the basal keeps running and pushes the "
            "saline out in time, while priming again without a clinician would put a bolus into a patient no "
            "one has looked at. A clinician re-primes the remaining dead volume (the kernel authorises it).",
        ),
        FaultReaction(
            _F.ALARM_SYSTEM_FAILURE,
            _C,
            _A.ALARM_SYSTEM_FAILURE,
            "Delivery is unaffected; the failure is shown by every other channel available.",
        ),
    ),
)


def reaction_for(fault: FaultCode) -> FaultReaction:
    """The one documented reaction to ``fault``.

    :param fault: the fault.
    :return: its table row.
    :raises ConfigError: if ``fault`` is not a :class:`FaultCode` (there is no default reaction).
    """
    if not isinstance(fault, FaultCode) or fault not in FAULT_REACTIONS:
        raise ConfigError("fault", fault, f"one of {[f.value for f in FaultCode]}")
    return FAULT_REACTIONS[fault]


#: Which fault a latched pump alarm (as the HAL reports it) stands for.
PUMP_ALARM_FAULTS: Mapping[PumpAlarm, FaultCode] = MappingProxyType(
    {
        PumpAlarm.RESET: FaultCode.PUMP_RESET,
        PumpAlarm.STALL: FaultCode.MOTOR_STALL,
        PumpAlarm.COMMS_TIMEOUT: FaultCode.SAFE_MODE_WATCHDOG,
        PumpAlarm.PROGRAM_ERROR: FaultCode.PUMP_PROGRAM_REJECTED,
        PumpAlarm.OUT_OF_RANGE: FaultCode.PUMP_PROGRAM_REJECTED,
    }
)


def fault_for_pump_alarm(alarm: PumpAlarm) -> FaultCode:
    """The :class:`FaultCode` for an alarm the pump latched.

    :param alarm: the pump's alarm as decoded by the HAL.
    :raises ConfigError: for an alarm with no mapping.
    """
    if alarm not in PUMP_ALARM_FAULTS:
        raise ConfigError("alarm", alarm, f"one of {[a.value for a in PUMP_ALARM_FAULTS]}")
    return PUMP_ALARM_FAULTS[alarm]


def fault_for_exception(error: BaseException) -> FaultCode | None:
    """The :class:`FaultCode` a caught error stands for, or None if it is not a fault of this table.

    :class:`~cython_ext.errors.UncertainDeliveryError` is an uncertain delivery (reconcile, never
    retry); timeouts, garbled replies and a port that will not open are a comms timeout
    (the pump keeps its programme); a :class:`~controller.journal.JournalError` is a
    journal write failure. Rejected input (:class:`~cython_ext.errors.ConfigError`) is not a fault.

    :param error: the exception.
    """
    if isinstance(error, UncertainDeliveryError):
        return FaultCode.UNCERTAIN_DELIVERY
    if isinstance(error, (LinkTimeoutError, CommunicationError, ConnectError)):
        return FaultCode.COMMS_TIMEOUT
    if isinstance(error, JournalError):
        return FaultCode.JOURNAL_WRITE_FAILURE
    return None
