"""An interface-level fake :class:`~hal.pump.PumpDriver`, for fast controller-logic tests only.

It speaks no bytes: it implements the role interface directly over an injected
clock, integrating the programmed rate into its dispensed counter. It has the
same observable behaviour the controller relies on (latched alarms that must be
acknowledged, a rate envelope, uncertain outcomes) and explicit fault switches.
End-to-end runs use the byte-level simulator in :mod:`sim.newera` instead.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from hal.clock import Clock
from cython_ext.errors import CapabilityError, LinkTimeoutError, StateError, UncertainDeliveryError
from hal.pump import CommandResult, Direction, DispensedVolume, Outcome, PumpAlarm, PumpCapabilities, PumpDriver
from hal.pump import ProgramPhase, PumpIdentity, PumpProgram, PumpState, PumpStatus, Sensor

NS_PER_H = 3_600_000_000_000


@dataclass
class FakeFaults:
    """Fault switches of the fake pump.

    :ivar uncertain_next: the next delivery-changing command takes effect (if
        ``apply_uncertain``) but its reply is lost: it returns ``UNCERTAIN``.
    :ivar apply_uncertain: whether the command whose reply is lost was applied.
    :ivar raise_uncertain: report the lost reply by raising
        :class:`~cython_ext.errors.UncertainDeliveryError` instead of returning ``UNCERTAIN``.
    :ivar readback_offset_nl_per_h: add this to the rate read back after ``set_rate``
        (a pump that stores a different rate than asked).
    :ivar bias_ppm: the mechanism delivers this much more than the counter says, ppm.
    :ivar counter_scale_ppm: the counter counts this much more than the rate delivers, ppm
        (a pump whose counter and motor disagree: what the drift check is for).
    :ivar comms_down: every call raises :class:`~cython_ext.errors.LinkTimeoutError` (link lost).
    :ivar mismatch_next_nl_per_h: the next ``set_rate`` only stores this much more than asked (one shot).
    :ivar motor_seized: the motor does not turn: the pump takes every command and reports infusing, but neither
        its counter nor its plunger moves (a pump that failed to restart after an MRI, SAFE-05).
    """

    uncertain_next: bool = False
    apply_uncertain: bool = True
    raise_uncertain: bool = False
    readback_offset_nl_per_h: int = 0
    bias_ppm: int = 0
    counter_scale_ppm: int = 0
    comms_down: bool = False
    mismatch_next_nl_per_h: int = 0
    motor_seized: bool = False


class FakePump(PumpDriver):
    """A pump that exists only as Python state.

    :param clock: the clock whose time drives delivery.
    :param min_rate_nl_per_h: lowest settable rate, nL/h.
    :param max_rate_nl_per_h: highest settable rate, nL/h.
    :param capacity_nl: volume in the reservoir at start, nL (delivery stops with a stall when it runs out).
    """

    name = "fake"

    def __init__(
        self,
        clock: Clock,
        *,
        min_rate_nl_per_h: int = 500,
        max_rate_nl_per_h: int = 5_000_000,
        capacity_nl: int = 1_000_000_000,
    ) -> None:
        self._clock = clock
        self._caps = PumpCapabilities(
            min_rate_nl_per_h=min_rate_nl_per_h,
            max_rate_nl_per_h=max_rate_nl_per_h,
            rate_tolerance_ppm=0,
            volume_resolution_nl=1,
            sensors=frozenset({Sensor.MOTOR_STALL, Sensor.DISPENSED_COUNTER}),
            holds_programs=True,
        )
        self.faults = FakeFaults()
        self._state = PumpState.STOPPED
        self._alarm: PumpAlarm | None = None
        self._rate_nl_per_h = 0
        self._target_nl = 0
        self._direction = Direction.INFUSE
        self._counter_num = 0  # infused volume x NS_PER_H, exact
        self._actual_num = 0  # physically pushed volume x NS_PER_H x 1e6 (bias)
        self._withdrawn_nl = 0
        self._capacity_nl = capacity_nl
        self._last_ns = clock.monotonic_ns()
        self._closed = False
        self._phases: tuple[ProgramPhase, ...] = ()  # the committed program (empty: none), its running phase
        self._phase = 0
        self._phase_moved_num = 0  # volume moved in the running phase x NS_PER_H
        self._staged: PumpProgram | None = None
        #: Every command that reached the mechanism, in order: (name, value).
        self.command_log: list[tuple[str, int | None]] = []
        #: Number of heartbeats received.
        self.heartbeats = 0

    # -- physics -----------------------------------------------------------------------------

    def _integrate(self) -> None:
        now = self._clock.monotonic_ns()
        dt, self._last_ns = now - self._last_ns, now
        while dt > 0 and self._state is PumpState.INFUSING and not self.faults.motor_seized:
            room = self._phase_room_num()
            step = dt if room is None or self._rate_nl_per_h * dt < room else -(-room // self._rate_nl_per_h)
            add = self._rate_nl_per_h * step
            self._move(add if room is None else min(add, room))
            dt -= step
            if room is not None and self._state is PumpState.INFUSING and self._phase_moved_num >= \
                    self._phases[self._phase].volume_nl * NS_PER_H:
                self._enter_phase(self._phase + 1)
                self._phase_entered(now - dt)

    def _phase_entered(self, at_ns: int) -> None:
        """Called when the program moved on by itself at clock time ``at_ns`` (a hook for witnesses)."""

    def _phase_room_num(self) -> int | None:
        """What the running program phase still has to deliver, nL x NS_PER_H (None: continuous)."""
        if not self._phases or not self._phases[self._phase].volume_nl:
            return None
        return self._phases[self._phase].volume_nl * NS_PER_H - self._phase_moved_num

    def _enter_phase(self, index: int) -> None:
        self._phase, self._phase_moved_num = index, 0
        if index >= len(self._phases):
            self._phase, self._state = 0, PumpState.STOPPED  # the program ended with a volume: the pump stops
        else:
            self._rate_nl_per_h = self._phases[index].rate_nl_per_h

    def _move(self, add: int) -> None:
        if self._target_nl and not self._phases:
            room = self._target_nl * NS_PER_H - self._counter_num
            if add >= room:
                add = max(room, 0)
                self._state = PumpState.STOPPED
        room_res = self._capacity_nl * NS_PER_H - self._counter_num
        if add >= room_res:
            add = max(room_res, 0)
            self._state = PumpState.STOPPED
            self._alarm = PumpAlarm.STALL
        self._phase_moved_num += add
        self._counter_num += add * (1_000_000 + self.faults.counter_scale_ppm) // 1_000_000
        self._actual_num += add * (1_000_000 + self.faults.bias_ppm)

    @property
    def infused_nl(self) -> int:
        """Counter reading, nL (rounded down), without talking to the pump."""
        self._integrate()
        return self._counter_num // NS_PER_H

    @property
    def actual_delivered_nl(self) -> int:
        """Volume physically pushed out, nL (includes the bias fault)."""
        self._integrate()
        return self._actual_num // (NS_PER_H * 1_000_000)

    @property
    def rate_nl_per_h(self) -> int:
        """Rate held by the pump, nL/h."""
        return self._rate_nl_per_h

    @property
    def state(self) -> PumpState:
        """Mechanism state, after integrating to now."""
        self._integrate()
        return self._state

    # -- fault hooks ---------------------------------------------------------------------------

    def inject_stall(self) -> None:
        """Stall the motor now: delivery stops and a STALL alarm latches."""
        self._integrate()
        self._state = PumpState.STOPPED
        self._alarm = PumpAlarm.STALL

    def power_cycle(self) -> None:
        """Lose power: delivery stops, the volatile running rate is kept, RESET latches."""
        self._integrate()
        self._state = PumpState.STOPPED
        self._alarm = PumpAlarm.RESET

    # -- role interface ------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StateError("the fake pump is closed")
        if self.faults.comms_down:
            raise LinkTimeoutError("fake pump: no reply (link down)")

    def _status(self) -> PumpStatus:
        return PumpStatus(state=self._state, alarm=self._alarm)

    def _change(self, command: str, value: int | None, action) -> CommandResult:
        """Run one delivery-changing command with the alarm latch and the lost-reply fault."""
        self._check_open()
        self._integrate()
        if self._alarm is not None:
            return CommandResult(command, Outcome.NOT_APPLIED, status=self._status(), detail=f"alarm {self._alarm.value} latched")
        if self.faults.uncertain_next:
            self.faults.uncertain_next = False
            if self.faults.apply_uncertain:
                action()
                self.command_log.append((command, value))
            if self.faults.raise_uncertain:
                raise UncertainDeliveryError(f"{command}: reply lost")
            return CommandResult(command, Outcome.UNCERTAIN, detail="reply lost")
        result_value = action()
        self.command_log.append((command, value))
        return CommandResult(command, Outcome.APPLIED, status=self._status(), value=result_value)

    def identify(self) -> PumpIdentity:
        self._check_open()
        return PumpIdentity(model="FAKE", firmware="1.0", address=0)

    def configure(self, *, syringe_diameter_mm: float) -> PumpCapabilities:
        self._check_open()
        return self._caps

    def capabilities(self) -> PumpCapabilities:
        return self._caps

    def set_rate_envelope(self, min_rate_nl_per_h: int, max_rate_nl_per_h: int) -> None:
        """Change the settable rate range, nL/h (a different syringe or pump model)."""
        self._caps = dataclasses.replace(self._caps, min_rate_nl_per_h=min_rate_nl_per_h,
                                         max_rate_nl_per_h=max_rate_nl_per_h)

    def set_rate_tolerance_ppm(self, tolerance_ppm: int) -> None:
        """Declare a representation tolerance (read-back may differ from the request by this much)."""
        self._caps = dataclasses.replace(self._caps, rate_tolerance_ppm=tolerance_ppm)

    def set_rate(self, rate_nl_per_h: int) -> CommandResult:
        if isinstance(rate_nl_per_h, bool) or not isinstance(rate_nl_per_h, int):
            raise TypeError("rate_nl_per_h must be an int")
        if not self._caps.min_rate_nl_per_h <= rate_nl_per_h <= self._caps.max_rate_nl_per_h:
            raise CapabilityError(
                f"rate_nl_per_h (={rate_nl_per_h}) must be in "
                f"[{self._caps.min_rate_nl_per_h}, {self._caps.max_rate_nl_per_h}] nL/h"
            )

        def action() -> int:
            offset = self.faults.readback_offset_nl_per_h + self.faults.mismatch_next_nl_per_h
            self.faults.mismatch_next_nl_per_h = 0
            self._rate_nl_per_h = rate_nl_per_h + offset
            return self._rate_nl_per_h

        return self._change("set_rate", rate_nl_per_h, action)

    def set_target_volume(self, volume_nl: int) -> CommandResult:
        if volume_nl < 0:
            raise CapabilityError(f"volume_nl (={volume_nl}) must be >= 0")

        def action() -> int:
            self._target_nl = volume_nl
            return volume_nl

        return self._change("set_target_volume", volume_nl, action)

    def set_direction(self, direction: Direction) -> CommandResult:
        def action() -> None:
            self._direction = direction

        return self._change("set_direction", None, action)

    def start(self) -> CommandResult:
        def action() -> None:
            if self._phases and self._state is PumpState.STOPPED:
                self._enter_phase(0)  # RUN from stopped starts the program at its first phase, as on the NE-1000
            self._state = PumpState.INFUSING

        return self._change("start", None, action)

    def stop(self) -> CommandResult:
        def action() -> None:
            self._state = PumpState.STOPPED
            self._phase, self._phase_moved_num = 0, 0

        return self._change("stop", None, action)

    # -- programs ----------------------------------------------------------------------------

    def program_as_held(self, program: PumpProgram) -> PumpProgram:
        """``program`` as held (the fake represents every value exactly); checked against the envelope."""
        for phase in program.phases:
            if not self._caps.min_rate_nl_per_h <= phase.rate_nl_per_h <= self._caps.max_rate_nl_per_h:
                raise CapabilityError(f"rate_nl_per_h (={phase.rate_nl_per_h}) must be in "
                                      f"[{self._caps.min_rate_nl_per_h}, {self._caps.max_rate_nl_per_h}] nL/h")
        return program

    def pause(self) -> CommandResult:
        def action() -> None:
            if self._state is PumpState.INFUSING:
                self._state = PumpState.PAUSED

        return self._change("pause", None, action)

    def stage_program(self, program: PumpProgram, *, first_phase: int = 1) -> CommandResult:
        self._check_open()
        self._integrate()
        self._staged = None
        if program.repeats or first_phase != 1:
            raise CapabilityError("the fake pump holds non-repeating programs from phase 1 only")
        held = self.program_as_held(program)
        if self._alarm is not None or self._state not in (PumpState.STOPPED, PumpState.PAUSED):
            return CommandResult("stage_program", Outcome.NOT_APPLIED, status=self._status(),
                                 detail="phases are written only while stopped or paused")
        self._staged = held
        return CommandResult("stage_program", Outcome.APPLIED, status=self._status(), value=1)

    def read_program(self, first_phase: int, count: int) -> PumpProgram:
        self._check_open()
        return PumpProgram(self._phases[first_phase - 1:first_phase - 1 + count])

    def commit_program(self) -> CommandResult:
        staged, self._staged = self._staged, None
        if staged is None:
            raise StateError("no verified program staged")

        def action() -> int:
            self._phases = staged.phases
            self._enter_phase(0)
            self._state = PumpState.INFUSING
            return staged.phases[0].rate_nl_per_h

        return self._change("program", staged.phases[0].rate_nl_per_h, action)

    def read_phase(self) -> int:
        self._check_open()
        self._integrate()
        return self._phase + 1

    def read_status(self) -> PumpStatus:
        self._check_open()
        self._integrate()
        return self._status()

    def read_dispensed(self) -> DispensedVolume:
        self._check_open()
        self._integrate()
        return DispensedVolume(infused_nl=self._counter_num // NS_PER_H, withdrawn_nl=self._withdrawn_nl)

    def clear_dispensed(self) -> None:
        self._check_open()
        self._integrate()
        self._capacity_nl -= self._counter_num // NS_PER_H
        self._counter_num = 0
        self._withdrawn_nl = 0

    def acknowledge_alarm(self) -> PumpStatus:
        self._check_open()
        self._integrate()
        self._alarm = None
        return self._status()

    def heartbeat(self) -> PumpStatus:
        self._check_open()
        self.heartbeats += 1
        return self.read_status()

    def close(self) -> None:
        self._closed = True

    def refill(self, volume_nl: int) -> None:
        """Put ``volume_nl`` more into the reservoir (the fake has no separate refill port)."""
        self._integrate()
        self._capacity_nl += volume_nl
