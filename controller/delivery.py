"""Atomic rate programming over a :class:`~hal.pump.PumpDriver` (PRX-07, HAL-03, HAL-04).

The only way the controller changes what a pump delivers. One change goes:

1. **stage**: send the new rate;
2. **verify**: compare the rate the pump reads back with the one asked for;
3. **commit**: only a verified rate becomes the committed rate; the pump is
   (re)started if it is not infusing.

If the stage is refused or the read-back differs, the previous committed rate
is put back and verified, so the pump runs the complete old programme or the
complete new one. On the New Era family a rate change while infusing takes
effect at once, so "the old programme keeps running" is achieved by restoring
it before the next poll, within one command round trip.

**Uncertain is not failed.** When a reply is lost, the programmer never
blind-retries: it first reads status and the dispensed counter (idempotent
reads, retried), reports both to the caller through :class:`ProgramOutcome`,
and only then re-sends the *absolute* rate once (an absolute rate is
idempotent: sending it twice has the effect of sending it once). Boluses are
built from absolute rates and a controller-side end time, so a repeated rate
command can never repeat a bolus.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from controller.faults import FaultCode, fault_for_exception
from cython_ext.errors import CapabilityError, CommunicationError, ConnectError, DeviceError, HalError, UncertainDeliveryError
from hal.pump import CommandResult, DispensedVolume, Outcome, PumpAlarm, PumpDriver, PumpState, PumpStatus

#: How many times an idempotent read is attempted before the state counts as unknown.
READ_ATTEMPTS = 3


class ProgramResult(enum.Enum):
    """What a programming attempt achieved."""

    COMMITTED = "committed"  # the new rate is verified and running
    KEPT_OLD = "kept_old"  # refused or mismatched; the old rate is verified and running
    REJECTED_BY_PUMP = "rejected_by_pump"  # the pump latched an alarm; nothing changed
    UNKNOWN = "unknown"  # the state could not be established; caller must alarm and keep polling


@dataclass(frozen=True)
class ProgramOutcome:
    """The result of :meth:`RateProgrammer.program`.

    :ivar result: what was achieved.
    :ivar rate_nl_per_h: the rate verified as held by the pump, nL/h, or None if unknown.
    :ivar status: the last status read, if any.
    :ivar dispensed: the dispensed counter read while reconciling, if any.
    :ivar uncertain: True if a reply was lost on the way (the journal must say so).
    :ivar detail: what happened, for the journal.
    """

    result: ProgramResult
    rate_nl_per_h: int | None
    status: PumpStatus | None = None
    dispensed: DispensedVolume | None = None
    uncertain: bool = False
    detail: str = ""

    @property
    def committed(self) -> bool:
        """True when the requested rate is verified and running."""
        return self.result is ProgramResult.COMMITTED


def fault_for_hal_error(error: HalError, *, delivery_command: bool = False) -> FaultCode:
    """The fault a HAL error stands for: :func:`controller.faults.fault_for_exception` first, then the rest.

    Lost replies, timeouts and a port that will not open are what
    :func:`~controller.faults.fault_for_exception` maps. The other HAL errors
    (the pump answered with an error, a value it cannot take, a driver that is
    unavailable) are mapped here, never left without a reaction:

    * on a delivery command (rate, start, stop), :class:`~cython_ext.errors.DeviceError` or
      :class:`~cython_ext.errors.CapabilityError` is a rejected programme
      (``PUMP_PROGRAM_REJECTED``: the old programme keeps running, verified by a read);
    * anywhere else the pump's state could not be established: ``COMMS_TIMEOUT``
      (the pump keeps its last committed programme; the status counts as unknown).

    Every one of these reactions is CONTINUE: a HAL error never stops delivery.

    :param error: the error caught from a driver call.
    :param delivery_command: whether the call was a delivery-changing command.
    """
    fault = fault_for_exception(error)
    if fault is not None:
        return fault
    if delivery_command and isinstance(error, (DeviceError, CapabilityError)):
        return FaultCode.PUMP_PROGRAM_REJECTED
    return FaultCode.COMMS_TIMEOUT


def is_link_error(error: HalError) -> bool:
    """True for a transient link failure (garbled or missing reply, port not open).

    These are handled by retrying reads and by the loop's comms-degraded / comms-timeout
    logic rather than by an immediate fault; an uncertain delivery is reported through
    :attr:`ProgramOutcome.uncertain`.
    """
    return isinstance(error, (CommunicationError, ConnectError, UncertainDeliveryError))


_T = TypeVar("_T")


def _read_retrying(read: Callable[[], _T], errors: list[HalError] | None) -> _T | None:
    """Call an idempotent read up to READ_ATTEMPTS times; None if every attempt failed."""
    for _ in range(READ_ATTEMPTS):
        try:
            return read()
        except HalError as exc:
            if errors is not None:
                errors.append(exc)
    return None


def read_status(pump: PumpDriver, *, errors: list[HalError] | None = None) -> PumpStatus | None:
    """Read status, retrying an idempotent read; None if the pump cannot be read.

    :param errors: if given, every HAL error caught is appended (the loop maps them to faults).
    """
    return _read_retrying(pump.read_status, errors)


def read_dispensed(pump: PumpDriver, *, errors: list[HalError] | None = None) -> DispensedVolume | None:
    """Read the dispensed counters, retrying an idempotent read; None if they cannot be read.

    :param errors: if given, every HAL error caught is appended (the loop maps them to faults).
    """
    return _read_retrying(pump.read_dispensed, errors)


class RateProgrammer:
    """Stages, verifies and commits pump rates.

    :param pump: the pump driver (this object must be the only one sending delivery commands).
    """

    def __init__(self, pump: PumpDriver) -> None:
        self.pump = pump
        #: Alarms the driver saw (and, by the pump's rules, acknowledged) while programming; the loop drains it.
        self.seen_alarms: list[PumpAlarm] = []
        #: HAL errors caught while programming or reading, with whether the call was a delivery command;
        #: the loop drains it and maps each to its fault (:func:`fault_for_hal_error`).
        self.hal_errors: list[tuple[HalError, bool]] = []

    def read_status(self) -> PumpStatus | None:
        """:func:`read_status` on this pump, keeping the errors caught in :attr:`hal_errors`."""
        errors: list[HalError] = []
        status = read_status(self.pump, errors=errors)
        self.hal_errors.extend((e, False) for e in errors)
        return status

    def read_dispensed(self) -> DispensedVolume | None:
        """:func:`read_dispensed` on this pump, keeping the errors caught in :attr:`hal_errors`."""
        errors: list[HalError] = []
        dispensed = read_dispensed(self.pump, errors=errors)
        self.hal_errors.extend((e, False) for e in errors)
        return dispensed

    def drain_driver_alarms(self) -> list[PumpAlarm]:
        """Collect alarms the driver saw since last asked (drivers that report them: ``pending_alarms()``).

        On the New Era family any reply can carry, and so acknowledge, a latched
        alarm; the controller must still react to it.
        """
        self._collect_pending()
        seen, self.seen_alarms = self.seen_alarms, []
        return seen

    def _collect_pending(self) -> None:
        pending = getattr(self.pump, "pending_alarms", None)
        if callable(pending):
            try:
                self.seen_alarms.extend(event.alarm for event in pending())
            except HalError as exc:
                self.hal_errors.append((exc, False))

    def _send_rate(self, rate_nl_per_h: int) -> tuple[CommandResult | None, bool]:
        """Send one absolute rate; returns the result (None if it raised) and whether it was uncertain."""
        try:
            result = self.pump.set_rate(rate_nl_per_h)
        except CapabilityError:
            raise  # nothing was sent: the caller keeps the old rate
        except HalError as exc:
            # Lost reply or an error answer: never assume it applied; reconcile by reading.
            self.hal_errors.append((exc, True))
            return None, True
        return result, result.outcome is Outcome.UNCERTAIN

    def _verified(self, result: CommandResult | None, rate_nl_per_h: int) -> bool:
        """The read-back rate equals the request within the pump's declared representation tolerance."""
        if result is None or not result.applied or result.value is None:
            return False
        try:
            tolerance_ppm = self.pump.capabilities().rate_tolerance_ppm
        except HalError as exc:
            self.hal_errors.append((exc, False))
            tolerance_ppm = 0  # the declared tolerance is unknown: only an exact read-back verifies
        return abs(result.value - rate_nl_per_h) * 1_000_000 <= rate_nl_per_h * tolerance_ppm

    def _ensure_running(self) -> tuple[bool, PumpStatus | None, bool]:
        """Start the pump if it is not infusing. Returns (running, status, uncertain)."""
        status = self.read_status()
        if status is None:
            return False, None, True
        if status.alarm is not None:
            return False, status, False
        if status.state is PumpState.INFUSING:
            return True, status, False
        try:
            result = self.pump.start()
        except HalError as exc:
            self.hal_errors.append((exc, True))
            result = None
        uncertain = result is None or result.outcome is Outcome.UNCERTAIN
        status = self.read_status()
        running = status is not None and status.state is PumpState.INFUSING
        return running, status, uncertain

    def program(self, rate_nl_per_h: int, *, previous_nl_per_h: int | None, start: bool = True) -> ProgramOutcome:
        """Stage, verify and commit ``rate_nl_per_h``; on failure restore ``previous_nl_per_h``.

        :param rate_nl_per_h: the new rate, nL/h (already authorised by the kernel).
        :param previous_nl_per_h: the committed rate to restore on failure, or None at first start.
        :param start: start the pump if it is not infusing once the rate is verified.
        A value the pump cannot represent (:class:`~cython_ext.errors.CapabilityError`, raised by the
        driver before anything is sent) leaves the old rate running: ``KEPT_OLD``.
        """
        try:
            result, uncertain = self._send_rate(rate_nl_per_h)
        except CapabilityError as exc:
            return ProgramOutcome(ProgramResult.KEPT_OLD, previous_nl_per_h, None, None, False,
                                  f"not sent: the pump cannot take {rate_nl_per_h} nL/h ({exc})")
        dispensed = None
        if uncertain:
            # Reconcile first: what state is the pump in, and what has it delivered?
            status = self.read_status()
            dispensed = self.read_dispensed()
            if status is None or dispensed is None:
                return ProgramOutcome(ProgramResult.UNKNOWN, None, status, dispensed, True,
                                      "reply lost and the pump cannot be read")
            if status.alarm is not None:
                return ProgramOutcome(ProgramResult.REJECTED_BY_PUMP, None, status, dispensed, True,
                                      f"reply lost; pump alarm {status.alarm.value}")
            # An absolute rate is idempotent: sending it once more after reconciling cannot double anything.
            result, again = self._send_rate(rate_nl_per_h)
            if again:
                return ProgramOutcome(ProgramResult.UNKNOWN, None, self.read_status(), dispensed, True,
                                      "reply lost twice; rate unknown")
        assert result is not None
        if result.outcome is Outcome.NOT_APPLIED and result.status is not None and result.status.alarm is not None:
            return ProgramOutcome(ProgramResult.REJECTED_BY_PUMP, previous_nl_per_h, result.status, dispensed,
                                  uncertain, result.detail or f"pump alarm {result.status.alarm.value}")
        self._collect_pending()
        if self.seen_alarms:
            # An alarm was latched (and acknowledged by our exchange): never start the pump over it.
            return ProgramOutcome(ProgramResult.REJECTED_BY_PUMP, result.value if result.applied else previous_nl_per_h,
                                  PumpStatus(PumpState.STOPPED, self.seen_alarms[-1]), dispensed, uncertain,
                                  f"pump alarm {self.seen_alarms[-1].value} during programming")
        if not self._verified(result, rate_nl_per_h):
            detail = (f"read-back {result.value} nL/h differs from {rate_nl_per_h} nL/h"
                      if result.applied else f"refused: {result.detail or result.outcome.value}")
            return self._restore(previous_nl_per_h, detail, uncertain, dispensed)
        if start:
            running, status, start_uncertain = self._ensure_running()
            if not running:
                return ProgramOutcome(ProgramResult.UNKNOWN if status is None else ProgramResult.REJECTED_BY_PUMP,
                                      result.value, status, dispensed, uncertain or start_uncertain,
                                      "rate verified but the pump is not infusing")
            return ProgramOutcome(ProgramResult.COMMITTED, result.value, status, dispensed,
                                  uncertain or start_uncertain, "verified")
        return ProgramOutcome(ProgramResult.COMMITTED, result.value, result.status, dispensed, uncertain, "verified")

    def _restore(self, previous_nl_per_h: int | None, detail: str, uncertain: bool,
                 dispensed: DispensedVolume | None) -> ProgramOutcome:
        if previous_nl_per_h is None:
            return ProgramOutcome(ProgramResult.KEPT_OLD, None, self.read_status(), dispensed, uncertain, detail)
        try:
            result, lost = self._send_rate(previous_nl_per_h)
        except CapabilityError:
            result, lost = None, False
        if lost or not self._verified(result, previous_nl_per_h):
            return ProgramOutcome(ProgramResult.UNKNOWN, None, self.read_status(), dispensed, True,
                                  f"{detail}; restoring {previous_nl_per_h} nL/h could not be verified")
        return ProgramOutcome(ProgramResult.KEPT_OLD, result.value, result.status, dispensed, uncertain,
                              f"{detail}; previous rate restored and verified")

    def stop(self) -> tuple[bool, PumpStatus | None]:
        """Stop delivery (only for an authorised discontinue or a STOP fault reaction).

        :return: (stopped, status). A lost reply is followed by a status read.
        """
        try:
            self.pump.stop()
        except HalError as exc:
            self.hal_errors.append((exc, True))
        status = self.read_status()
        stopped = status is not None and not status.state.delivering
        return stopped, status

