"""Stateful: random command sequences leave what the driver sees equal to what the simulator holds.

Each step is one driver call on ``itbsim://`` (through ``hal.open_pump`` and the
real transport). After every step the invariants compare the driver's reads
with the simulated firmware's own state, and check that no call made the pump
execute a delivery command more than once.
"""

from __future__ import annotations

from contextlib import ExitStack

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cython_ext.errors import CapabilityError, CommunicationError, DeviceError
from hal.pump import CommandResult, Direction, Outcome, PumpState
from pump_backends import Backend, open_backend, open_noisy_inprocess

_STATE = {"S": PumpState.STOPPED, "P": PumpState.PAUSED, "I": PumpState.INFUSING, "W": PumpState.WITHDRAWING,
          "X": PumpState.PURGING}


class DriverMatchesSimulator(RuleBasedStateMachine):
    """Random driver calls against the simulated NE-1000."""

    def __init__(self) -> None:
        super().__init__()
        self._stack = ExitStack()
        self.backend: Backend = self._stack.enter_context(
            open_backend("inprocess", syringe_volume_ml="10", fill_ml="5"))
        self.driver = self.backend.driver
        self.device = self.backend.device
        assert self.device is not None

    def teardown(self) -> None:
        self._stack.close()

    # -- helpers --------------------------------------------------------------------------

    def _executions(self) -> int:
        return len(self.device.executed)  # type: ignore[union-attr]

    def _call(self, fn, *args: object, sends: int = 1) -> CommandResult | None:  # type: ignore[no-untyped-def]
        delivery_before = self._delivery_commands()
        try:
            result = fn(*args)
        except CapabilityError:
            # Only the read before a setting may have gone out; no setting or action did.
            assert self._delivery_commands() == delivery_before, "a refused value reached the pump"
            return None
        assert self._delivery_commands() - delivery_before <= sends, "a delivery command ran twice"
        return result

    def _delivery_commands(self) -> int:
        kinds = ("RAT", "VOL", "DIR", "RUN", "STP", "PUR", "DIA", "CLD")
        executed = self.device.executed  # type: ignore[union-attr]
        return sum(1 for _, c in executed if c.startswith(kinds) and c not in kinds[:3] + ("DIA",))

    # -- rules ----------------------------------------------------------------------------

    @rule(rate_nl_per_h=st.integers(6_877, 60_000_000))
    def set_rate(self, rate_nl_per_h: int) -> None:
        result = self._call(self.driver.set_rate, rate_nl_per_h)
        if result is not None and result.applied:
            assert self.device.phases[0].rate_nl_per_h == result.value  # type: ignore[union-attr]

    @rule(volume_nl=st.integers(0, 3_000_000))
    def set_target_volume(self, volume_nl: int) -> None:
        result = self._call(self.driver.set_target_volume, volume_nl)
        if result is not None:
            assert result.outcome is not Outcome.UNCERTAIN
            if self.device.state in ("I", "W", "X"):  # type: ignore[union-attr]
                assert not result.applied or self.driver.read_target_volume_nl() == result.value

    @rule(direction=st.sampled_from(list(Direction)))
    def set_direction(self, direction: Direction) -> None:
        result = self._call(self.driver.set_direction, direction)
        assert result is not None and result.outcome is not Outcome.UNCERTAIN

    @rule()
    def start(self) -> None:
        result = self._call(self.driver.start)
        assert result is not None
        if result.applied:  # running, or already stalled at the end of travel
            assert self.device.state in ("I", "W") or self.device.alarm is not None  # type: ignore[union-attr]

    @rule()
    def stop(self) -> None:
        result = self._call(self.driver.stop, sends=2)
        assert result is not None and result.applied
        assert self.device.state == "S"  # type: ignore[union-attr]

    @rule()
    def clear_dispensed(self) -> None:
        result = self._call(self.driver.clear_dispensed, sends=2)
        assert result is not None
        if self.device.state == "S":  # type: ignore[union-attr]
            assert result.applied

    @rule(seconds=st.integers(0, 3600))
    def wait(self, seconds: int) -> None:
        self.backend.wait(seconds)

    @precondition(lambda self: self.device.alarm is None)
    @rule()
    def power_cycle(self) -> None:
        self.device.power_cycle()  # type: ignore[union-attr]

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def state_matches(self) -> None:
        status = self.driver.read_status()
        assert status.state is _STATE[self.device.state]  # type: ignore[union-attr]
        assert self.device.alarm is None  # type: ignore[union-attr]  # reading acknowledged it

    @invariant()
    def rate_matches(self) -> None:
        device = self.device
        phase = device.phases[device.running_phase if device.state in ("I", "W") else 0]  # type: ignore[union-attr]
        assert self.driver.read_rate_nl_per_h() == phase.rate_nl_per_h

    @invariant()
    def dispensed_matches_within_display_resolution(self) -> None:
        shown = self.driver.read_dispensed()
        infused_nl, withdrawn_nl = self.device.dispensed_nl()  # type: ignore[union-attr]
        for read, actual in ((shown.infused_nl, infused_nl), (shown.withdrawn_nl, withdrawn_nl)):
            assert 0 <= actual - read <= actual // 1000 + 1000


DriverMatchesSimulator.TestCase.settings = settings(max_examples=25, stateful_step_count=15, deadline=None)
TestDriverMatchesSimulator = DriverMatchesSimulator.TestCase


class DeliveryCommandsRunAtMostOnceOnANoisyLine(RuleBasedStateMachine):
    """Random calls over a line that drops, duplicates and corrupts bytes both ways.

    Whatever the noise does, a call never makes the pump execute a delivery
    command twice, ``APPLIED`` always means the pump holds the value, and
    ``NOT_APPLIED`` for a setting means it still holds the old one.
    """

    def __init__(self) -> None:
        super().__init__()
        self._stack = ExitStack()
        self.backend: Backend | None = None

    @initialize(safe=st.booleans(), seed=st.integers(0, 2**16))
    def open(self, safe: bool, seed: int) -> None:
        noise = ("drop:p=0.01,dir=rx", "drop:p=0.01", "corrupt:p=0.005,dir=rx", "corrupt:p=0.005", "dup:p=0.005")
        self.backend = self._stack.enter_context(open_noisy_inprocess(
            noise, seed=seed, safe_mode_timeout_s=60 if safe else None, syringe_volume_ml="10", fill_ml="5"))

    def teardown(self) -> None:
        self._stack.close()

    def _delivery_executions(self) -> list[str]:
        assert self.backend is not None and self.backend.device is not None
        queries = ("RAT", "VOL", "DIR", "DIA")
        return [c for _, c in self.backend.device.executed
                if c.startswith(("RAT", "VOL", "DIR", "RUN", "STP", "CLD")) and c not in queries]

    def _call(self, fn, *args: object, allowed: int = 1) -> CommandResult | None:  # type: ignore[no-untyped-def]
        before = len(self._delivery_executions())
        try:
            result = fn(*args)
        except (CapabilityError, CommunicationError, DeviceError):
            result = None  # a garbled request can come back as "?" (unknown command)
        ran = self._delivery_executions()[before:]
        assert len(ran) <= allowed, f"delivery commands executed {ran}"
        return result

    def _set(self, setter, value: object, held: str) -> CommandResult | None:  # type: ignore[no-untyped-def]
        """Call the driver's ``setter`` with ``value``; a NOT_APPLIED result must leave the pump's phase 1
        ``held`` field (the one the setting writes) as it was."""
        device = self.backend.device  # type: ignore[union-attr]
        old = getattr(device.phases[0], held)
        result = self._call(setter, value)
        if result is not None and result.outcome is Outcome.NOT_APPLIED:
            assert getattr(device.phases[0], held) == old
        return result

    @precondition(lambda self: self.backend is not None)
    @rule(rate_nl_per_h=st.integers(6_877, 9_999_000))
    def set_rate(self, rate_nl_per_h: int) -> None:
        result = self._set(self.backend.driver.set_rate, rate_nl_per_h, "rate_nl_per_h")  # type: ignore[union-attr]
        if result is not None and result.outcome is Outcome.APPLIED:
            assert self.backend.device.phases[0].rate_nl_per_h == result.value  # type: ignore[union-attr]

    @precondition(lambda self: self.backend is not None)
    @rule(volume_nl=st.integers(0, 2_000_000))
    def set_target_volume(self, volume_nl: int) -> None:
        result = self._set(self.backend.driver.set_target_volume, volume_nl, "volume_milli")  # type: ignore[union-attr]
        device = self.backend.device  # type: ignore[union-attr]
        if result is not None and result.applied and device.state == "S":
            assert device.phases[0].volume_milli * 1000 == result.value  # 14.43 mm: thousandths of a mL

    @precondition(lambda self: self.backend is not None)
    @rule(direction=st.sampled_from(list(Direction)))
    def set_direction(self, direction: Direction) -> None:
        result = self._set(self.backend.driver.set_direction, direction, "direction")  # type: ignore[union-attr]
        if result is not None and result.applied:
            expected = "INF" if direction is Direction.INFUSE else "WDR"
            assert self.backend.device.phases[0].direction == expected  # type: ignore[union-attr]

    @precondition(lambda self: self.backend is not None)
    @rule()
    def start(self) -> None:
        result = self._call(self.backend.driver.start)  # type: ignore[union-attr]
        if result is not None and result.applied:
            device = self.backend.device  # type: ignore[union-attr]
            assert device.state in ("I", "W") or device.alarm is not None  # running, or stalled since

    @precondition(lambda self: self.backend is not None)
    @rule()
    def stop(self) -> None:
        result = self._call(self.backend.driver.stop, allowed=3)  # type: ignore[union-attr]
        if result is not None and result.applied:
            assert self.backend.device.state == "S"  # type: ignore[union-attr]

    @precondition(lambda self: self.backend is not None)
    @rule(seconds=st.integers(0, 30))
    def wait(self, seconds: int) -> None:
        self.backend.wait(seconds)  # type: ignore[union-attr]
        try:
            self.backend.driver.heartbeat()  # type: ignore[union-attr]
        except (CommunicationError, DeviceError):
            pass


DeliveryCommandsRunAtMostOnceOnANoisyLine.TestCase.settings = settings(
    max_examples=30, stateful_step_count=20, deadline=None)
TestDeliveryCommandsRunAtMostOnceOnANoisyLine = DeliveryCommandsRunAtMostOnceOnANoisyLine.TestCase
