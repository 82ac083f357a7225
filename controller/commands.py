"""Where a rate is sent: every command that changes what the pump delivers (PRX-07, HAL-03, HAL-04).

:class:`CommandIssuer` is the only object that sends delivery commands, and the single
owner of *uncertain* and *verified*. One change goes:

1. **journal**: the command gets an ID and a durable ``pending`` record, in one
   transaction with the controller's resume point (and, for a bolus, its bolus
   record) -- before any byte is sent;
2. **stage**: send the new absolute rate;
3. **verify**: compare the rate the pump reads back with the one asked for;
4. **commit**: only a verified rate becomes :attr:`CommandIssuer.committed_rate_nl_per_h`;
   the pump is (re)started if it is not infusing.

If the stage is refused or the read-back differs, the previous committed rate is put
back and verified, so the pump runs the complete old programme or the complete new
one. On the New Era family a rate change while infusing takes effect at once, so "the
old programme keeps running" is achieved by restoring it before the next poll, within
one command round trip. The outcome is journalled (staged: if a crash loses it, the
command is still pending, and a restart reconciles it).

**Uncertain is not failed.** When a reply is lost the issuer never blind-retries: it
first reads status and the dispensed counter (idempotent reads, retried), and only
then re-sends the *absolute* rate once (sending an absolute rate twice has the effect
of sending it once). A command whose outcome stays unknown is *uncertain*: the
committed rate becomes unknown (None) and the command is settled only by a later
verified rate (a rate command) or status read (a stop), also after a restart.

**Programs.** On a pump that holds programs (:attr:`hal.pump.PumpCapabilities.holds_programs`)
a bolus is a program the pump ends by itself (:meth:`CommandIssuer.send_program`): pause,
stage every phase, read every phase back, commit (``RUN 1``), verify it runs. The NE-1000
takes phase edits only while paused or stopped, so each program costs a *programming
stop* of a few exchanges (about a second on the wire), journalled with the command; the
counter shows it as the volume it did not deliver. A program is never re-sent after a lost
reply: status and phase are read instead. Starting a stopped pump on such a pump is a
one-phase continuous program too, so that ``RUN`` can never start an old bolus phase again.
Without programs, boluses are absolute rates and a controller-side end time, so a repeated
rate command can never repeat a bolus.
"""

from __future__ import annotations

import enum
import sqlite3
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from controller.faults import FaultCode, fault_for_exception
from controller.journal import JournalError
from controller.store import Store
from cython_ext.errors import CapabilityError, CommunicationError, ConfigError, ConnectError, DeviceError, HalError, UncertainDeliveryError
from hal.pump import (CommandResult, DispensedVolume, Outcome, ProgramPhase, PumpAlarm, PumpDriver, PumpProgram,
                      PumpState, PumpStatus)

#: How many times an idempotent read is attempted before the state counts as unknown.
READ_ATTEMPTS = 3

#: Prefix of the detail of a requested change withheld for want of a durable journal record.
NOT_JOURNALLED = "withheld"

#: Journal kinds of the commands that set what the pump delivers (their params hold ``rate_nl_per_h``,
#: for a program its highest phase rate).
RATE_COMMAND_KINDS = ("set_rate", "program")

#: What a durable-write failure looks like (the loop raises JOURNAL_WRITE_FAILURE for it).
STORAGE_ERRORS = (sqlite3.Error, OSError, JournalError)


class ProgramResult(enum.Enum):
    """What a programming attempt achieved."""

    COMMITTED = "committed"  # the new rate is verified and running
    KEPT_OLD = "kept_old"  # refused or mismatched; the old rate is verified and running
    REJECTED_BY_PUMP = "rejected_by_pump"  # the pump latched an alarm; nothing changed
    UNKNOWN = "unknown"  # the state could not be established; caller must alarm and keep polling


#: Journal outcome of each programming result (the reconcile detail goes with it).
COMMAND_OUTCOME = {
    ProgramResult.COMMITTED: "applied",
    ProgramResult.KEPT_OLD: "not_applied",
    ProgramResult.REJECTED_BY_PUMP: "not_applied",
    ProgramResult.UNKNOWN: "uncertain",
}


@dataclass(frozen=True)
class ProgramOutcome:
    """The result of one rate command.

    :ivar result: what was achieved.
    :ivar rate_nl_per_h: the rate verified as held by the pump, nL/h, or None if unknown.
    :ivar status: the last status read, if any.
    :ivar dispensed: the dispensed counter read while reconciling, if any.
    :ivar uncertain: True if a reply was lost on the way (the journal must say so).
    :ivar detail: what happened, for the journal.
    :ivar reasons: reason codes of a refusal before anything was sent (the orphan check's
        ``ORPHAN_*``, :mod:`controller.program`); empty otherwise.
    """

    result: ProgramResult
    rate_nl_per_h: int | None
    status: PumpStatus | None = None
    dispensed: DispensedVolume | None = None
    uncertain: bool = False
    detail: str = ""
    reasons: tuple[str, ...] = ()

    @property
    def committed(self) -> bool:
        """True when the requested rate is verified and running."""
        return self.result is ProgramResult.COMMITTED

    @property
    def withheld(self) -> bool:
        """True when nothing was sent for want of a durable journal record."""
        return self.result is ProgramResult.KEPT_OLD and self.detail.startswith(NOT_JOURNALLED)


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


class CommandIssuer:
    """Sends, verifies and journals every delivery command to one pump.

    :param pump: the pump driver (this object must be the only one sending delivery commands).
    :param store: the durable store (journal, resume point, bolus records).
    :param on_storage_failure: called with a description when a durable write fails (the
        loop raises JOURNAL_WRITE_FAILURE); therapy continues.
    """

    def __init__(self, pump: PumpDriver, store: Store, *, on_storage_failure: Callable[[str], None]) -> None:
        self.pump = pump
        self.store = store
        self._on_storage_failure = on_storage_failure
        #: The rate the pump holds, verified, nL/h; 0 when stopped; None when uncertain (unknown).
        self.committed_rate_nl_per_h: int | None = 0
        #: Alarms the driver saw (and, by the pump's rules, acknowledged) while commanding; drained by the loop.
        self.seen_alarms: list[PumpAlarm] = []
        #: HAL errors caught, with whether the call was a delivery command; drained by the loop, which
        #: maps each to its fault (:func:`fault_for_hal_error`).
        self.hal_errors: list[tuple[HalError, bool]] = []
        #: Stages what must commit with each command's pending record (the loop's resume point).
        self.stage_resume_point: Callable[[], None] = lambda: None
        self._uncertain_rates: list[tuple[str, int]] = []  # (command ID, rate nL/h) awaiting a verified rate
        self._uncertain_stops: list[str] = []  # stop command IDs awaiting a status read
        #: The program the pump holds, as verified running, or None when unknown (a fresh controller, a lost
        #: reply on the way): then the pump may still be in an earlier phase of a program whose later phases
        #: a rate change would not touch.
        self.held_program: PumpProgram | None = None
        self._in_last_phase = False  # the pump was read (or programmed) in the held program's last phase

    # -- durable writes ---------------------------------------------------------------------------

    def durably(self, what: str, write: Callable[[], Any]) -> bool:
        """Run one store write; a storage failure is a fault (alarm, therapy continues), not a crash."""
        try:
            write()
        except STORAGE_ERRORS as exc:
            self._on_storage_failure(f"{what}: {exc}")
            return False
        return True

    def _begin(self, kind: str, params: dict[str, Any], also: Callable[[], None] | None) -> tuple[str, bool]:
        """Durably record a command as pending (with the resume point, and ``also``) before it is sent.

        :return: (command ID, whether the pending record is durable).
        """
        command_id = uuid.uuid4().hex

        def write() -> None:
            with self.store.transaction():
                self.stage_resume_point()
                if also is not None:
                    also()
                self.store.begin_command(command_id, kind, params)

        return command_id, self.durably("journal command", write)

    def complete(self, command_id: str, outcome: str, detail: dict[str, Any]) -> None:
        """Record a command's outcome unless it is already resolved (staged for the next commit).

        A fault reaction inside a bolus's own programming (a stall latched on the way) ends the
        bolus and resolves its record first; that resolution stands.
        """
        def write() -> None:
            record = self.store.command(command_id)
            if record is not None and record.unresolved:
                self.store.complete_command(command_id, outcome, detail=detail, durable=False)

        self.durably("journal command", write)

    # -- idempotent reads ---------------------------------------------------------------------------

    def _read_retrying(self, read: Callable[[], _T]) -> _T | None:
        """Call an idempotent read up to READ_ATTEMPTS times; None if every attempt failed."""
        for _ in range(READ_ATTEMPTS):
            try:
                return read()
            except HalError as exc:
                self.hal_errors.append((exc, False))
        return None

    def read_status(self) -> PumpStatus | None:
        """The pump's status (retried), or None if it cannot be read."""
        return self._read_retrying(self.pump.read_status)

    def read_dispensed(self) -> DispensedVolume | None:
        """The pump's dispensed counters (retried), or None if they cannot be read."""
        return self._read_retrying(self.pump.read_dispensed)

    def heartbeat(self) -> PumpStatus | None:
        """One status exchange that also feeds a Safe-mode watchdog; falls back to a retried status read."""
        try:
            return self.pump.heartbeat()
        except HalError as exc:
            self.hal_errors.append((exc, False))
            return self.read_status()

    def call(self, command: Callable[[], _T]) -> _T | None:
        """Run a non-delivery pump call (acknowledge, clear the counter); a HAL error is kept, None returned."""
        try:
            return command()
        except HalError as exc:
            self.hal_errors.append((exc, False))
            return None

    def drain_driver_alarms(self) -> list[PumpAlarm]:
        """Alarms the driver saw since last asked (drivers that report them: ``pending_alarms()``).

        On the New Era family any reply can carry, and so acknowledge, a latched
        alarm; the controller must still react to it.
        """
        self._collect_pending()
        seen, self.seen_alarms = self.seen_alarms, []
        return seen

    def drain_hal_errors(self) -> list[tuple[HalError, bool]]:
        """The HAL errors caught since last asked, with whether each was on a delivery command."""
        errors, self.hal_errors = self.hal_errors, []
        return errors

    def _collect_pending(self) -> None:
        pending = getattr(self.pump, "pending_alarms", None)
        if callable(pending):
            try:
                self.seen_alarms.extend(event.alarm for event in pending())
            except HalError as exc:
                self.hal_errors.append((exc, False))

    # -- rate commands ---------------------------------------------------------------------------

    def send_rate(self, rate_nl_per_h: int, *, previous_nl_per_h: int | None, cause: str, essential: bool,
                  also: Callable[[], None] | None = None) -> ProgramOutcome:
        """Program one absolute rate: durable pending record, atomic programming, outcome record.

        A requested change is not sent without a durable pending record (JOURNAL_WRITE_FAILURE:
        "no new delivery change without a durable record"); an ``essential`` one (a fault
        reaction, restoring the committed programme, the end of a bolus, a step of an authorised
        programme) is sent anyway, because withholding it would harm the patient, and its alarm
        is already raised.

        :param rate_nl_per_h: the new rate, nL/h (already authorised by the kernel).
        :param previous_nl_per_h: the rate to put back if the new one is refused, or None (nothing
            to restore: the refusal leaves whatever the pump holds).
        :param cause: why (journalled with the command).
        :param essential: send even without a durable pending record.
        :param also: further writes that must be durable in the same transaction (a bolus record).
        """
        previous = previous_nl_per_h
        params = {"rate_nl_per_h": rate_nl_per_h, "previous_nl_per_h": previous, "cause": cause}
        command_id, durable = self._begin("set_rate", params, also)
        if not durable and not essential:
            return ProgramOutcome(ProgramResult.KEPT_OLD, self.committed_rate_nl_per_h, None, None, False,
                                  f"{NOT_JOURNALLED}: no durable journal record, nothing sent")
        whole = self._rate_change_is_whole(rate_nl_per_h)
        outcome = self._program(rate_nl_per_h, previous) if whole else self._program_one_phase(rate_nl_per_h, previous)
        held = self.held_program
        if whole and outcome.committed and outcome.rate_nl_per_h and self._in_last_phase and held is not None \
                and len(held.phases) > 1:
            # The last phase now runs this rate: a refused change later puts it back (_restorable_nl_per_h),
            # not the phase as first staged (TIT-01: the stale basal came back, the next titration went up
            # from the raised one).
            self.held_program = PumpProgram((*held.phases[:-1], ProgramPhase(outcome.rate_nl_per_h)), held.repeat_from)
        self._settle_superseded(outcome)
        detail: dict[str, Any] = {"result": outcome.result.value, "rate_nl_per_h": outcome.rate_nl_per_h,
                                  "uncertain": outcome.uncertain, "detail": outcome.detail}
        if outcome.status is not None:
            detail["pump_state"] = outcome.status.state.value
            detail["pump_alarm"] = None if outcome.status.alarm is None else outcome.status.alarm.value
        if outcome.dispensed is not None:
            detail["dispensed_nl"] = outcome.dispensed.infused_nl
        if durable:
            self.complete(command_id, COMMAND_OUTCOME[outcome.result], detail)
            if outcome.result is ProgramResult.UNKNOWN:
                self._uncertain_rates.append((command_id, rate_nl_per_h))
        if outcome.result is ProgramResult.UNKNOWN:
            self.committed_rate_nl_per_h = None
        elif outcome.rate_nl_per_h is not None:
            self.committed_rate_nl_per_h = outcome.rate_nl_per_h
        return outcome

    def _settle_superseded(self, outcome: ProgramOutcome) -> None:
        """Resolve earlier uncertain rate commands once a later command verified the pump's rate.

        An absolute rate is idempotent and the pump now holds a verified rate, so an earlier
        uncertain command is either the rate running now (applied) or no longer in force (not
        applied); what the pump delivered meanwhile is reconciled from its counter, not from
        the command. Only a committed, read-back rate settles them.
        """
        if not self._uncertain_rates or outcome.result is not ProgramResult.COMMITTED or outcome.rate_nl_per_h is None:
            return
        pending, self._uncertain_rates = self._uncertain_rates, []
        for command_id, rate in pending:
            self.complete(command_id, "applied" if rate == outcome.rate_nl_per_h else "not_applied",
                          {"detail": f"superseded: pump verified at {outcome.rate_nl_per_h} nL/h by a later command; "
                                     "delivery reconciled from the pump counter"})

    def _send_rate_once(self, rate_nl_per_h: int) -> tuple[CommandResult | None, bool]:
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

    def holds_programs(self) -> bool:
        """Whether the pump runs phase programs by itself (a capability read; False when it cannot be read)."""
        try:
            return self.pump.capabilities().holds_programs
        except HalError as exc:
            self.hal_errors.append((exc, False))
            return False

    def _ensure_running(self, rate_nl_per_h: int) -> tuple[bool, PumpStatus | None, bool]:
        """Start the pump at ``rate_nl_per_h`` if it is not infusing. Returns (running, status, uncertain).

        A pump that holds programs starts on a one-phase continuous program at the rate (never
        on whatever phase 1 held before), read back and sent once more after a lost reply when none of it
        can be running (:meth:`_run_program_again`): given up, a lost pause reply left the pump stopped
        (SAFE-01, issue #9). Any other pump is started with the rate just set.
        """
        status = self.read_status()
        if status is None:
            return False, None, True
        if status.alarm is not None:
            return False, status, False
        if status.state is PumpState.INFUSING:
            return True, status, False
        if self.holds_programs():
            outcome = self._run_program(PumpProgram((ProgramPhase(rate_nl_per_h),)), resend_after_read=True)
            return outcome.committed, outcome.status, outcome.uncertain
        try:
            result = self.pump.start()
        except HalError as exc:
            self.hal_errors.append((exc, True))
            result = None
        uncertain = result is None or result.outcome is Outcome.UNCERTAIN
        status = self.read_status()
        running = status is not None and status.state is PumpState.INFUSING
        return running, status, uncertain

    # -- programs the pump runs by itself ----------------------------------------------------------

    def send_program(self, program: PumpProgram, *, cause: str, essential: bool,
                     also: Callable[[], None] | None = None, resend_after_read: bool = False) -> ProgramOutcome:
        """Hand ``program`` to the pump: durable pending record, pause, stage and read back, commit, verify.

        Same journal and durability rules as :meth:`send_rate`. If staging or the commit fails,
        the first phase's continuous rate is *not* assumed: the previous committed rate is put
        back as a one-phase program, verified. ``rate_nl_per_h`` of the outcome is the first
        phase's rate as the pump holds it.

        :param program: the program, as the pump holds it (:meth:`~hal.pump.PumpDriver.program_as_held`).
        :param cause: why (journalled with the command).
        :param essential: send even without a durable pending record.
        :param also: further writes that must be durable in the same transaction (a bolus record).
        :param resend_after_read: after a lost reply, read the pump back and send the program once more if
            none of it can be running (:meth:`_run_program_again`). Only for a program that puts the
            programme's basal in (a resume, a titration): a bolus is never sent again after a lost reply.
        """
        params = {"rate_nl_per_h": program.max_rate_nl_per_h, "cause": cause,
                  "phases": [[p.rate_nl_per_h, p.volume_nl] for p in program.phases]}
        command_id, durable = self._begin("program", params, also)
        if not durable and not essential:
            return ProgramOutcome(ProgramResult.KEPT_OLD, self.committed_rate_nl_per_h, None, None, False,
                                  f"{NOT_JOURNALLED}: no durable journal record, nothing sent")
        outcome = self._run_restoring(program, self.committed_rate_nl_per_h, resend_after_read=resend_after_read)
        self._settle_superseded(outcome)
        if durable:
            self.complete(command_id, COMMAND_OUTCOME[outcome.result],
                          {"result": outcome.result.value, "rate_nl_per_h": outcome.rate_nl_per_h,
                           "uncertain": outcome.uncertain, "detail": outcome.detail})
            if outcome.result is ProgramResult.UNKNOWN:
                self._uncertain_rates.append((command_id, program.phases[0].rate_nl_per_h))
        self.committed_rate_nl_per_h = None if outcome.result is ProgramResult.UNKNOWN else outcome.rate_nl_per_h
        return outcome

    def _restorable_nl_per_h(self, previous_nl_per_h: int | None) -> int | None:
        """The rate to put back when a change fails, nL/h: the old programme as the pump may be left with it.

        On a pump holding a program of several phases the committed rate is the first phase's (a bolus,
        a short flex step). That phase is bounded by its volume: put back as a one-phase continuous
        program (or set as the rate of the last phase) it would run for good -- a bolus rate with no end.
        The old program cannot be put back whole either (``RUN 1`` would start its first phase again, a
        second bolus). What is put back is the program's continuous last phase, the rate its orphan
        schedule ends on: the first phase ends early (the counter attributes what it delivered).
        """
        held = self.held_program
        if previous_nl_per_h and held is not None and len(held.phases) > 1 and held.ends_continuous:
            return held.phases[-1].rate_nl_per_h
        return previous_nl_per_h

    def _run_restoring(self, program: PumpProgram, previous_nl_per_h: int | None, *,
                       resend_after_read: bool = False) -> ProgramOutcome:
        """Run ``program``; if it was refused (not unknown), put the old programme back as a one-phase program
        (``previous_nl_per_h``, or a multi-phase program's last phase: :meth:`_restorable_nl_per_h`)."""
        previous_nl_per_h = self._restorable_nl_per_h(previous_nl_per_h)
        outcome = self._run_program(program, resend_after_read=resend_after_read)
        if previous_nl_per_h and not resend_after_read and outcome.result is ProgramResult.UNKNOWN \
                and outcome.uncertain and outcome.detail.startswith("not paused"):
            outcome = self._read_back_lost_pause(outcome)
        if outcome.committed or outcome.result is ProgramResult.UNKNOWN or not previous_nl_per_h:
            return outcome
        restored = self._run_program(PumpProgram((ProgramPhase(previous_nl_per_h),)))
        return ProgramOutcome(ProgramResult.KEPT_OLD if restored.committed else ProgramResult.UNKNOWN,
                              restored.rate_nl_per_h, restored.status, None, True,
                              f"{outcome.detail}; previous rate {previous_nl_per_h} nL/h "
                              f"{'restored and verified' if restored.committed else 'could not be restored'}")

    def _rate_change_is_whole(self, rate_nl_per_h: int) -> bool:
        """Whether a plain rate change to ``rate_nl_per_h`` leaves the pump at that rate with no further command.

        True without programs, on a one-phase program, in the held program's last (continuous) phase,
        when every later phase is that same rate, continuous (a transit whose next phase is already the
        new rate), or while the pump is not delivering (starting it is a fresh one-phase program,
        :meth:`_ensure_running`). Otherwise -- an earlier phase is running, or what the pump holds is
        unknown -- the rate would hold only until the phase ends by its volume, and the program's
        later phases would follow it: the change must be a fresh one-phase program instead.
        """
        held = self.held_program
        if (held is not None and len(held.phases) == 1) or self._in_last_phase:
            return True
        if not self.holds_programs():
            return True
        status = self.read_status()
        if status is not None and status.alarm is None and not status.state.delivering:
            return True
        phase = self.call(self.pump.read_phase)
        if phase is None or held is None:
            return False
        self.note_phase(phase)
        if self._in_last_phase:
            return True
        try:  # the rate as the pump's number format holds it (no I/O)
            as_held = self.pump.program_as_held(PumpProgram((ProgramPhase(rate_nl_per_h),))).phases[0].rate_nl_per_h
        except (HalError, ConfigError):
            return False
        later = held.phases[phase:]
        return held.ends_continuous and bool(later) and all(p.rate_nl_per_h == as_held for p in later)

    def resumed_in_last_phase(self) -> None:
        """At a restart: every command is resolved and no program was left before its last phase.

        The pump then runs the last (continuous) phase of whatever it holds, so a rate change is
        whole (its length need not be known).
        """
        self._in_last_phase = True

    def note_phase(self, phase: int) -> None:
        """The pump was read running ``phase`` (1-based) of the program it holds (``PHN``)."""
        self._in_last_phase = self.held_program is not None and phase >= len(self.held_program.phases)

    def _program_one_phase(self, rate_nl_per_h: int, previous_nl_per_h: int | None) -> ProgramOutcome:
        """A rate change as a fresh one-phase continuous program (staged, read back, committed, verified).

        After a lost reply it is read back and sent once more when none of it can be running, as a rate set
        with ``set_rate`` is (:meth:`_program`): a continuous rate is idempotent. Given up instead, a pause
        applied with its reply lost left the pump standing still (SAFE-01).
        """
        return self._run_restoring(PumpProgram((ProgramPhase(rate_nl_per_h),)), previous_nl_per_h,
                                   resend_after_read=True)

    def _run_program(self, program: PumpProgram, *, resend_after_read: bool = False) -> ProgramOutcome:
        """Pause (if delivering), stage, commit and verify ``program``; no journal, no restore.

        Keeps :attr:`held_program`: the program once it is verified running; unknown after anything
        that may have written phases without that (a refused or lost stage, a lost reply to ``RUN``).
        """
        try:
            program = self.pump.program_as_held(program)  # what is compared later is what the pump holds
        except (HalError, ConfigError):
            pass  # _run_program_once reports it, sending nothing
        outcome = self._run_program_once(program)
        if resend_after_read and outcome.result is ProgramResult.UNKNOWN and outcome.uncertain:
            outcome = self._run_program_again(program, outcome)
        if outcome.committed:
            # Infusing after a pause, a stage and RUN (even with RUN's reply lost): only RUN can have restarted it.
            self.held_program, self._in_last_phase = program, len(program.phases) == 1
        elif not (outcome.detail.startswith(("not paused", "not sent")) or outcome.detail.endswith("before programming")):
            # Phases may have been written (a refused or lost stage, a lost RUN): what the pump holds is unknown.
            # A pause alone writes none.
            self.held_program, self._in_last_phase = None, False
        return outcome

    def _run_program_again(self, program: PumpProgram, lost: ProgramOutcome) -> ProgramOutcome:
        """After a reply lost while running ``program`` (HAL-05): read the pump back, then decide.

        Sent once more when the read shows that none of it can be running: the pump is not
        delivering and holds no alarm (a lost reply to the pause or to ``RUN``), or the lost reply
        was the pause's (nothing was staged or run; the pump runs what it ran before). A plain rate
        after a lost reply is read back and sent once more the same way (:meth:`_program`): given up
        on instead, a resume of a stopped pump left it stopped (SAFE-01, issue #9). A pump read back
        delivering after ``RUN`` is never sent ``RUN`` again (it would start phase 1 once more).
        A second lost reply leaves the outcome unknown.
        """
        status = self.read_status()
        if status is None or status.alarm is not None:
            return lost
        if status.state.delivering and not lost.detail.startswith("not paused"):
            return lost
        again = self._run_program_once(program)
        return ProgramOutcome(again.result, again.rate_nl_per_h, again.status, again.dispensed, True,
                              f"{lost.detail}; read back {status.state.value}, sent once more: {again.detail}",
                              again.reasons)

    def _read_back_lost_pause(self, lost: ProgramOutcome) -> ProgramOutcome:
        """After the pause's reply was lost (nothing staged or run): read the pump back (HAL-05).

        Read back standing still with no alarm, the pause took effect: the change is refused (``KEPT_OLD``,
        the pump holds what it held), so that :meth:`_run_restoring` puts the old programme back as a
        fresh one-phase program (:meth:`_restorable_nl_per_h`) -- never ``RUN`` of the held program, which
        could start a bolus phase again. Left unknown instead, the pump stood paused while the loop believed it ran (PER-01,
        SAFE-01, issue #9). Unread, in alarm or delivering, the outcome stays as it was.
        """
        status = self.read_status()
        if status is None or status.alarm is not None or status.state.delivering:
            return lost
        return ProgramOutcome(ProgramResult.KEPT_OLD, None, status, None, True,
                              f"{lost.detail}; read back {status.state.value}: the pause applied, nothing staged")

    def _run_program_once(self, program: PumpProgram) -> ProgramOutcome:
        try:
            program = self.pump.program_as_held(program)
            try:
                paused = self.pump.pause()
            except CapabilityError:
                raise
            except HalError as exc:
                # Nothing was staged or run: an infusing pump still runs what it ran before.
                self.hal_errors.append((exc, True))
                return ProgramOutcome(ProgramResult.UNKNOWN, None, self.read_status(), None, True,
                                      "not paused: reply lost")
            if not paused.applied:
                return ProgramOutcome(ProgramResult.KEPT_OLD if paused.outcome is Outcome.NOT_APPLIED
                                      else ProgramResult.UNKNOWN, self.committed_rate_nl_per_h, paused.status,
                                      None, paused.outcome is Outcome.UNCERTAIN, f"not paused: {paused.detail}")
            if paused.status is not None and paused.status.alarm is not None:
                return ProgramOutcome(ProgramResult.REJECTED_BY_PUMP, None, paused.status, None, False,
                                      f"pump alarm {paused.status.alarm.value} before programming")
            staged = self.pump.stage_program(program)
            if not staged.applied:
                return ProgramOutcome(ProgramResult.KEPT_OLD, None, staged.status, None,
                                      staged.outcome is Outcome.UNCERTAIN, f"not staged: {staged.detail}")
            started = self.pump.commit_program()
        except CapabilityError as exc:
            self.hal_errors.append((exc, True))
            return ProgramOutcome(ProgramResult.KEPT_OLD, None, None, None, False, f"not sent: {exc}")
        except HalError as exc:
            self.hal_errors.append((exc, True))
            started = None
        status = self.read_status()
        if status is None:
            return ProgramOutcome(ProgramResult.UNKNOWN, None, None, None, True, "pump unreadable after RUN")
        if status.alarm is not None:
            return ProgramOutcome(ProgramResult.REJECTED_BY_PUMP, None, status, None, started is None,
                                  f"pump alarm {status.alarm.value} after RUN")
        uncertain = started is None or started.outcome is Outcome.UNCERTAIN
        if started is not None and started.outcome is Outcome.NOT_APPLIED and status.state is PumpState.INFUSING:
            # Infusing, but not the program just staged (RUN not sent, or the pump runs another phase).
            return ProgramOutcome(ProgramResult.KEPT_OLD, None, status, None, False,
                                  f"program staged, but not started: {started.detail}")
        if status.state is not PumpState.INFUSING:
            return ProgramOutcome(ProgramResult.KEPT_OLD if not uncertain else ProgramResult.UNKNOWN, None, status,
                                  None, uncertain, f"program staged, but the pump reports {status.state.value}")
        return ProgramOutcome(ProgramResult.COMMITTED, program.phases[0].rate_nl_per_h, status, None, uncertain,
                              f"program of {len(program.phases)} phases verified and running")

    def _program(self, rate_nl_per_h: int, previous_nl_per_h: int | None) -> ProgramOutcome:
        """Stage, verify and commit ``rate_nl_per_h``; on failure restore ``previous_nl_per_h``.

        A value the pump cannot represent (:class:`~cython_ext.errors.CapabilityError`, raised by the
        driver before anything is sent) leaves the old rate running: ``KEPT_OLD``.
        """
        try:
            result, uncertain = self._send_rate_once(rate_nl_per_h)
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
            result, again = self._send_rate_once(rate_nl_per_h)
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
        running, status, start_uncertain = self._ensure_running(rate_nl_per_h)
        if not running:
            return ProgramOutcome(ProgramResult.UNKNOWN if status is None else ProgramResult.REJECTED_BY_PUMP,
                                  result.value, status, dispensed, uncertain or start_uncertain,
                                  "rate verified but the pump is not infusing")
        return ProgramOutcome(ProgramResult.COMMITTED, result.value, status, dispensed,
                              uncertain or start_uncertain, "verified")

    def _restore(self, previous_nl_per_h: int | None, detail: str, uncertain: bool,
                 dispensed: DispensedVolume | None) -> ProgramOutcome:
        previous_nl_per_h = self._restorable_nl_per_h(previous_nl_per_h)
        if previous_nl_per_h is None:
            return ProgramOutcome(ProgramResult.KEPT_OLD, None, self.read_status(), dispensed, uncertain, detail)
        try:
            result, lost = self._send_rate_once(previous_nl_per_h)
        except CapabilityError:
            result, lost = None, False
        if lost or not self._verified(result, previous_nl_per_h):
            return ProgramOutcome(ProgramResult.UNKNOWN, None, self.read_status(), dispensed, True,
                                  f"{detail}; restoring {previous_nl_per_h} nL/h could not be verified")
        return ProgramOutcome(ProgramResult.KEPT_OLD, result.value, result.status, dispensed, uncertain,
                              f"{detail}; previous rate restored and verified")

    # -- stop ---------------------------------------------------------------------------------------

    def send_stop(self, cause: str) -> bool:
        """Stop delivery (an authorised discontinue or a STOP fault reaction); always sent.

        :return: whether the stop was confirmed by a status read.
        """
        command_id, durable = self._begin("stop", {"cause": cause}, None)
        try:
            self.pump.stop()
        except HalError as exc:
            self.hal_errors.append((exc, True))
        status = self.read_status()
        stopped = status is not None and not status.state.delivering
        if durable:
            self.complete(command_id, "applied" if stopped else ("uncertain" if status is None else "not_applied"),
                          {"confirmed": stopped, "pump_state": None if status is None else status.state.value,
                           "detail": "stop confirmed by a status read" if stopped else
                           "pump unreadable after the stop" if status is None else "pump still delivering"})
            if status is None:
                self._uncertain_stops.append(command_id)
        self.committed_rate_nl_per_h = 0
        # A stop returns a program to its first phase.
        self._in_last_phase = self.held_program is not None and len(self.held_program.phases) == 1
        return stopped

    def settle_stops(self, status: PumpStatus) -> None:
        """A status read after an uncertain stop establishes whether the pump stopped."""
        pending, self._uncertain_stops = self._uncertain_stops, []
        for command_id in pending:
            stopped = not status.state.delivering
            self.complete(command_id, "applied" if stopped else "not_applied",
                          {"detail": f"reconciled: pump {status.state.value}"})

    @property
    def stops_unsettled(self) -> bool:
        """Whether a stop command awaits a status read."""
        return bool(self._uncertain_stops)

    def adopt_unresolved(self) -> bool:
        """After a restart: take over the rate and stop commands the journal holds unresolved.

        They are resolved like this instance's own: a rate command by the next verified rate, a
        stop by the next status read. Bolus commands are closed from the counter instead.

        :return: whether a rate command is unresolved (the pump's rate is then unknown too).
        """
        records: tuple[Any, ...] = ()

        def read() -> None:
            nonlocal records
            records = self.store.unresolved_commands()

        if not self.durably("journal read at restart", read):
            return False
        for record in records:
            if record.kind in RATE_COMMAND_KINDS:
                self._uncertain_rates.append((record.command_id, record.params["rate_nl_per_h"]))
            elif record.kind == "stop":
                self._uncertain_stops.append(record.command_id)
        return bool(self._uncertain_rates)

    # -- bolus commands ------------------------------------------------------------------------------

    def begin_bolus_record(self, bolus_id: str, kind: str, params: dict[str, Any]) -> None:
        """Stage a bolus command's pending record (inside the rate command's transaction)."""
        self.store.begin_command(bolus_id, kind, params)
