"""The pump role interface, independent of any pump family.

Units: volumes are integer nanolitres (``*_nl``), rates integer nanolitres per
hour (``*_nl_per_h``), diameters millimetres. Drivers convert to their wire
units in their codec and never truncate silently: a value that cannot be
represented within the stated tolerance raises :class:`~cython_ext.errors.CapabilityError`
before anything is sent.

Commands that change delivery return a :class:`CommandResult` whose
:class:`Outcome` is ``APPLIED``, ``NOT_APPLIED`` or ``UNCERTAIN``. A driver never
blind-retries such a command: after a timeout it reads status and the
dispensed counter and reports what it could establish.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

from cython_ext.errors import CapabilityError, ConfigError
from hal.lifecycle import ClosesOnExit


class PumpState(enum.Enum):
    """What the mechanism is doing."""

    STOPPED = "stopped"
    PAUSED = "paused"
    INFUSING = "infusing"
    WITHDRAWING = "withdrawing"
    PURGING = "purging"
    TIMED_PAUSE = "timed_pause"
    USER_WAIT = "user_wait"

    @property
    def delivering(self) -> bool:
        """True when drug is moving towards the patient."""
        return self in (PumpState.INFUSING, PumpState.PURGING)


class PumpAlarm(enum.Enum):
    """Alarms a pump can latch. An alarm must be acknowledged before the pump runs again."""

    RESET = "reset"  # power interrupted or reset
    STALL = "stall"  # motor stalled: end of travel or occlusion
    COMMS_TIMEOUT = "comms_timeout"  # safe-mode watchdog expired; the pump stopped
    PROGRAM_ERROR = "program_error"
    OUT_OF_RANGE = "out_of_range"  # a program phase is out of range


class Direction(enum.Enum):
    """Direction of plunger travel."""

    INFUSE = "infuse"
    WITHDRAW = "withdraw"


class Sensor(enum.Enum):
    """Sensors a pump may or may not have. The controller never infers safety from an absent one."""

    MOTOR_STALL = "motor_stall"
    OCCLUSION = "occlusion"
    AIR_IN_LINE = "air_in_line"
    RESERVOIR_LEVEL = "reservoir_level"
    DISPENSED_COUNTER = "dispensed_counter"


class Outcome(enum.Enum):
    """What a delivery-changing command is known to have done."""

    APPLIED = "applied"
    NOT_APPLIED = "not_applied"
    UNCERTAIN = "uncertain"


@dataclass(frozen=True)
class PumpIdentity:
    """Who answered: model and firmware as the pump reports them, and its bus address."""

    model: str
    firmware: str
    address: int


@dataclass(frozen=True)
class PumpCapabilities:
    """What the configured pump can deliver and sense.

    :ivar min_rate_nl_per_h: lowest settable rate, nL/h.
    :ivar max_rate_nl_per_h: highest settable rate, nL/h.
    :ivar rate_tolerance_ppm: largest relative difference, in parts per million,
        between a requested rate and the nearest representable one that the
        driver accepts; beyond it the value is refused.
    :ivar volume_resolution_nl: smallest step of the dispensed counter, nL.
    :ivar sensors: the sensors this pump really has.
    :ivar holds_programs: the pump runs phase programs by itself (:meth:`PumpDriver.stage_program`).
    """

    min_rate_nl_per_h: int
    max_rate_nl_per_h: int
    rate_tolerance_ppm: int
    volume_resolution_nl: int
    sensors: frozenset[Sensor] = field(default_factory=frozenset)
    holds_programs: bool = False


@dataclass(frozen=True)
class PumpStatus:
    """One status reading. ``alarm`` is set while an alarm is latched."""

    state: PumpState
    alarm: PumpAlarm | None = None


@dataclass(frozen=True)
class DispensedVolume:
    """The pump's own dispensed counters since they were last cleared, nL."""

    infused_nl: int
    withdrawn_nl: int


@dataclass(frozen=True)
class AlarmEvent:
    """An alarm a driver saw on the wire.

    Some pumps acknowledge an alarm implicitly (New Era: the alarm status sent
    in reply to any command acknowledges it), so a driver keeps every alarm it
    sees until the caller collects it with :meth:`PumpDriver.pending_alarms`.

    :ivar alarm: which alarm.
    :ivar monotonic_ns: when it was seen, on the driver's clock, ns.
    :ivar acknowledged: True when the pump reported it in reply to a command
        (which acknowledged it); False for an unsolicited report.
    :ivar command: the request it answered, as sent (empty when unsolicited).
    """

    alarm: PumpAlarm
    monotonic_ns: int
    acknowledged: bool
    command: str = ""


@dataclass(frozen=True)
class CommandResult:
    """What a command did.

    :ivar command: short name of the command (``"set_rate"``, ``"start"``...).
    :ivar outcome: applied, not applied, or uncertain.
    :ivar status: a status reading taken with or after the command, if any.
    :ivar dispensed: a dispensed reading taken after the command, if any.
    :ivar value: the value read back from the pump (for example the rate in nL/h).
    :ivar detail: human-readable explanation, for the journal.
    """

    command: str
    outcome: Outcome
    status: PumpStatus | None = None
    dispensed: DispensedVolume | None = None
    value: int | None = None
    detail: str = ""

    @property
    def applied(self) -> bool:
        """True only when the command is known to have taken effect."""
        return self.outcome is Outcome.APPLIED


@dataclass(frozen=True)
class ProgramPhase:
    """One phase of a program the pump runs by itself: a rate held for a volume.

    :ivar rate_nl_per_h: the phase's rate, nL/h (> 0).
    :ivar volume_nl: the volume the phase delivers before the next phase starts, nL;
        0 means the phase runs until stopped (only the last phase may be continuous).
    :ivar direction: infuse or withdraw.
    """

    rate_nl_per_h: int
    volume_nl: int = 0
    direction: Direction = Direction.INFUSE

    def __post_init__(self) -> None:
        if isinstance(self.rate_nl_per_h, bool) or not isinstance(self.rate_nl_per_h, int) or self.rate_nl_per_h <= 0:
            raise ConfigError("rate_nl_per_h", self.rate_nl_per_h, "an integer > 0 nL/h")
        if isinstance(self.volume_nl, bool) or not isinstance(self.volume_nl, int) or self.volume_nl < 0:
            raise ConfigError("volume_nl", self.volume_nl, "an integer >= 0 nL (0: continuous)")
        if not isinstance(self.direction, Direction):
            raise ConfigError("direction", self.direction, "Direction.INFUSE or Direction.WITHDRAW")


@dataclass(frozen=True)
class PumpProgram:
    """A rate schedule the pump runs without further commands, phase after phase.

    Made for "the bolus rate for exactly the bolus volume, then the basal rate,
    continuous": every phase but the last has a volume; the last is continuous
    (``volume_nl == 0``) or, with a volume, the pump stops after it. With
    ``repeat_from`` the program never ends: after the last phase (which then has
    a volume too) it goes on at phase ``repeat_from``, so a day of phases loops.

    :ivar phases: the phases in the order they run (at least one).
    :ivar repeat_from: index into ``phases`` (0-based) where the program goes on after its last
        phase, or None (it ends with its last phase).
    """

    phases: tuple[ProgramPhase, ...]
    repeat_from: int | None = None

    def __post_init__(self) -> None:
        if not self.phases or not all(isinstance(p, ProgramPhase) for p in self.phases):
            raise ConfigError("phases", self.phases, "a non-empty tuple of ProgramPhase")
        if any(p.volume_nl == 0 for p in self.phases[:-1]):
            raise ConfigError("phases", self.phases, "a volume > 0 nL in every phase but the last")
        if self.repeat_from is not None:
            if isinstance(self.repeat_from, bool) or not isinstance(self.repeat_from, int) \
                    or not 0 <= self.repeat_from < len(self.phases):
                raise ConfigError("repeat_from", self.repeat_from, f"None or an index in [0, {len(self.phases) - 1}]")
            if self.phases[-1].volume_nl == 0:
                raise ConfigError("phases", self.phases, "a volume > 0 nL in every phase of a repeating program")

    @property
    def ends_continuous(self) -> bool:
        """True when the last phase runs until stopped (the pump never stops by itself)."""
        return self.repeat_from is None and self.phases[-1].volume_nl == 0

    @property
    def repeats(self) -> bool:
        """True when the program goes on at ``repeat_from`` after its last phase (it never ends)."""
        return self.repeat_from is not None

    @property
    def max_rate_nl_per_h(self) -> int:
        """The highest rate of any phase, nL/h."""
        return max(p.rate_nl_per_h for p in self.phases)


class PumpDriver(ClosesOnExit, ABC):
    """Role interface every pump driver implements.

    Drivers are context managers; :meth:`close` is safe to call twice.
    """

    #: Registry name of the driver (``"ne1000"``).
    name: ClassVar[str] = ""

    @abstractmethod
    def identify(self) -> PumpIdentity:
        """Ask the pump who it is."""

    @abstractmethod
    def configure(self, *, syringe_diameter_mm: float) -> PumpCapabilities:
        """Set the syringe (or reservoir) geometry and return the resulting capabilities."""

    @abstractmethod
    def capabilities(self) -> PumpCapabilities:
        """The rate envelope, resolution and sensors for the current configuration."""

    @abstractmethod
    def set_rate(self, rate_nl_per_h: int) -> CommandResult:
        """Set the delivery rate, whether stopped or running; the result carries the read-back rate."""

    @abstractmethod
    def set_target_volume(self, volume_nl: int) -> CommandResult:
        """Set the volume to dispense before stopping; 0 means deliver continuously."""

    @abstractmethod
    def set_direction(self, direction: Direction) -> CommandResult:
        """Set the direction of travel (only while stopped)."""

    @abstractmethod
    def start(self) -> CommandResult:
        """Start delivery with the current rate and target volume."""

    @abstractmethod
    def stop(self) -> CommandResult:
        """Stop delivery completely (not merely pause)."""

    @abstractmethod
    def read_status(self) -> PumpStatus:
        """Read the pump's state and any latched alarm. Safe to retry."""

    @abstractmethod
    def read_dispensed(self) -> DispensedVolume:
        """Read the dispensed counters. Safe to retry."""

    @abstractmethod
    def clear_dispensed(self) -> CommandResult | None:
        """Zero the dispensed counters.

        Drivers that can verify the clearing return a :class:`CommandResult`
        (the NE-1000 driver does); others may return None.
        """

    @abstractmethod
    def acknowledge_alarm(self) -> PumpStatus:
        """Acknowledge a latched alarm as the pump's manual defines it; returns the new status."""

    def pending_alarms(self) -> tuple[AlarmEvent, ...]:
        """Every alarm seen since the last call, oldest first; the list is then cleared.

        Drivers whose pumps acknowledge alarms implicitly must override this so
        no alarm is lost; the default (no such alarms) returns an empty tuple.
        """
        return ()

    # -- programs the pump runs by itself (optional: drivers whose pumps hold programs override) --

    def stage_program(self, program: PumpProgram, *, first_phase: int = 1) -> CommandResult:
        """Write ``program`` into the pump's program memory from phase ``first_phase`` on and read every phase back.

        Nothing starts: the atomic rule is stage, read back, then
        :meth:`commit_program`. ``APPLIED`` means every phase read back as
        written; anything else leaves nothing committable.

        :raises CapabilityError: the pump holds no programs, or a phase is outside its envelope or format.
        """
        raise CapabilityError(f"{type(self).__name__} cannot hold a pump program")

    def read_program(self, first_phase: int, count: int) -> PumpProgram:
        """Read ``count`` phases back from phase ``first_phase`` on.

        :raises CapabilityError: the pump holds no programs.
        """
        raise CapabilityError(f"{type(self).__name__} cannot hold a pump program")

    def commit_program(self) -> CommandResult:
        """Start the program staged (and verified) by :meth:`stage_program` at its first phase.

        :raises CapabilityError: the pump holds no programs.
        """
        raise CapabilityError(f"{type(self).__name__} cannot hold a pump program")

    def program_as_held(self, program: PumpProgram) -> PumpProgram:
        """``program`` as the pump would hold it (rates and volumes in its number format); no I/O.

        :raises CapabilityError: the pump holds no programs, or a phase is outside its envelope or format.
        """
        raise CapabilityError(f"{type(self).__name__} cannot hold a pump program")

    def pause(self) -> CommandResult:
        """Pause the running program where it is (a later :meth:`start` resumes it there).

        ``APPLIED`` when the pump is paused or stopped afterwards.

        :raises CapabilityError: the pump holds no programs.
        """
        raise CapabilityError(f"{type(self).__name__} cannot hold a pump program")

    def read_phase(self) -> int:
        """The program phase that runs now (the selected one while stopped), 1-based.

        :raises CapabilityError: the pump holds no programs.
        """
        raise CapabilityError(f"{type(self).__name__} cannot hold a pump program")

    @abstractmethod
    def heartbeat(self) -> PumpStatus:
        """Keep a comms watchdog fed; returns the status it read."""

    @abstractmethod
    def close(self) -> None:
        """Release the port. Safe to call more than once."""
