"""Programs the NE-1000 runs by itself: stage, read every phase back, commit; and which phase runs now.

The shape issue #10 needs: phase n = the bolus rate for exactly the bolus
volume, then phase n+1 = the basal rate, continuous. The oracle is the
simulated mechanism (what it moved, phase by phase), not the driver.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cython_ext.errors import CapabilityError, ConfigError, StateError
from hal.newera.driver import Ne1000Driver
from hal.pump import Direction, Outcome, ProgramPhase, PumpProgram, PumpState
from hal_links import DeviceLink, ScriptedLink
from pump_backends import Backend, open_backend

BOLUS_THEN_BASAL = PumpProgram((ProgramPhase(600_000, 5_000), ProgramPhase(30_000)))  # 600 uL/h for 5 uL, then 30 uL/h


@pytest.fixture
def backend() -> Iterator[Backend]:
    with open_backend("nullmodem", syringe_diameter_mm="4.699") as opened:
        yield opened


def test_bolus_then_basal_is_staged_read_back_committed_and_runs_by_itself(backend: Backend) -> None:
    driver, device, clock = backend.driver, backend.device, backend.clock
    assert device is not None
    staged = driver.stage_program(BOLUS_THEN_BASAL, first_phase=3)
    assert staged.outcome is Outcome.APPLIED, staged.detail
    assert driver.staged_program == (3, BOLUS_THEN_BASAL)
    assert driver.read_program(3, 2) == BOLUS_THEN_BASAL
    assert device.state == "S", "staging starts nothing"
    assert driver.commit_program().applied
    assert driver.read_phase() == 3
    clock.advance(30)  # 5 uL at 600 uL/h
    assert driver.read_phase() == 4
    assert device.mechanics.rate_nl_per_h == 30_000
    clock.advance(3600)
    assert device.dispensed_nl() == (5_000 + 30_000, 0)
    assert driver.read_status().state is PumpState.INFUSING, "the basal phase runs until stopped"


def test_a_program_that_ends_with_a_volume_stops_by_itself(backend: Backend) -> None:
    program = PumpProgram((ProgramPhase(360_000, 2_000), ProgramPhase(720_000, 2_000, Direction.INFUSE)))
    assert backend.driver.stage_program(program).applied
    assert backend.device is not None and backend.device.phases[2].function == "STP"
    assert backend.driver.commit_program().applied
    backend.clock.advance(20 + 10)
    assert backend.driver.read_status().state is PumpState.STOPPED
    assert backend.device.dispensed_nl() == (4_000, 0)


def test_staging_is_refused_while_the_pump_runs_and_nothing_is_written(backend: Backend) -> None:
    driver, device = backend.driver, backend.device
    assert device is not None and driver.set_rate(30_000).applied and driver.start().applied
    before = [(p.function, p.rate_milli, p.volume_milli) for p in device.phases]
    result = driver.stage_program(BOLUS_THEN_BASAL)
    assert result.outcome is Outcome.NOT_APPLIED and "infusing" in result.detail
    assert [(p.function, p.rate_milli, p.volume_milli) for p in device.phases] == before
    with pytest.raises(StateError):
        driver.commit_program()


def test_a_lost_reply_while_staging_leaves_nothing_committable() -> None:
    def drop_vol_reply(sent: bytes, reply: bytes) -> bytes:
        return b"" if sent == b"0VOL5.000\r" else reply

    with open_backend("nullmodem", syringe_diameter_mm="4.699") as backend:
        link = backend.driver._link
        assert isinstance(link, DeviceLink)
        link.manipulator = drop_vol_reply
        result = backend.driver.stage_program(BOLUS_THEN_BASAL)
        # The read-back shows the volume was set after all, but the lost reply is reported.
        assert result.applied and "lost" in result.detail
        link.manipulator = lambda sent, reply: reply.replace(b"5.000UL", b"5.001UL")  # a phase reads back otherwise
        result = backend.driver.stage_program(BOLUS_THEN_BASAL)
        assert result.outcome is Outcome.UNCERTAIN
        with pytest.raises(StateError):
            backend.driver.commit_program()


def test_commit_is_refused_when_the_pump_started_meanwhile(backend: Backend) -> None:
    assert backend.driver.stage_program(BOLUS_THEN_BASAL).applied
    assert backend.device is not None and backend.device.receive(b"0RUN\r") == b"\x0200I\x03"  # someone else
    result = backend.driver.commit_program()
    assert result.outcome is Outcome.NOT_APPLIED and "infusing" in result.detail


def test_any_setting_after_staging_invalidates_it(backend: Backend) -> None:
    assert backend.driver.stage_program(BOLUS_THEN_BASAL).applied
    backend.driver.set_target_volume(0)
    with pytest.raises(StateError):
        backend.driver.commit_program()


@pytest.mark.parametrize(
    ("program", "first_phase", "error"),
    [
        (PumpProgram((ProgramPhase(1_000_000_000),)), 1, CapabilityError),  # above the 4.699 mm envelope
        (PumpProgram((ProgramPhase(100),)), 1, CapabilityError),  # below it
        (PumpProgram((ProgramPhase(30_000, 20_000_000),)), 1, CapabilityError),  # 20000 uL: 5 digits
        (PumpProgram((ProgramPhase(30_000, 1_000),)), 41, CapabilityError),  # its closing STP needs phase 42
        (PumpProgram((ProgramPhase(30_000),)), 0, ConfigError),
        ("phase 1 at 30 uL/h", 1, ConfigError),
    ],
)
def test_a_program_the_pump_cannot_hold_never_reaches_the_wire(program: object, first_phase: int,
                                                             error: type[Exception]) -> None:
    link = ScriptedLink([(b"0\r", b"\x0200S\x03"), (b"0\r", b"\x0200S\x03"), (b"0DIA\r", b"\x0200S4.699\x03"),
                         (b"0RAT\r", b"\x0200S10.00UH\x03")])
    driver = Ne1000Driver(link)
    driver.connect()
    with pytest.raises(error):
        driver.stage_program(program, first_phase=first_phase)  # type: ignore[arg-type]
    link.assert_done()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"rate_nl_per_h": 0}, "rate_nl_per_h"), ({"rate_nl_per_h": 1, "volume_nl": -1}, "volume_nl"),
     ({"rate_nl_per_h": 1, "direction": "INF"}, "direction")],
)
def test_program_phases_are_checked_when_built(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        ProgramPhase(**kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_only_the_last_phase_may_be_continuous() -> None:
    with pytest.raises(ConfigError):
        PumpProgram((ProgramPhase(30_000), ProgramPhase(60_000, 1_000)))
    assert not PumpProgram((ProgramPhase(30_000, 1_000),)).ends_continuous
    assert BOLUS_THEN_BASAL.max_rate_nl_per_h == 600_000


def test_a_repeating_program_loops_by_itself_through_fun_jmp(backend: Backend) -> None:
    driver, device, clock = backend.driver, backend.device, backend.clock
    assert device is not None
    day = PumpProgram((ProgramPhase(600_000, 5_000), ProgramPhase(60_000, 1_000), ProgramPhase(120_000, 2_000)),
                      repeat_from=1)
    assert driver.stage_program(day).applied
    assert device.phases[3].function_text == "JMP2", "the closing phase jumps back to the second rate phase"
    assert driver.commit_program().applied
    clock.advance(30 + 60 + 60)  # the first phase once, then phases 2 and 3
    assert device.dispensed_nl() == (5_000 + 1_000 + 2_000, 0)
    clock.advance(60 + 60)  # no STP anywhere: phases 2 and 3 again
    assert device.dispensed_nl() == (5_000 + 2 * (1_000 + 2_000), 0)
    assert driver.read_status().state is PumpState.INFUSING


def test_repeating_programs_are_checked_when_built() -> None:
    with pytest.raises(ConfigError) as info:
        PumpProgram((ProgramPhase(30_000, 1_000),), repeat_from=1)
    assert info.value.field == "repeat_from"
    with pytest.raises(ConfigError):
        PumpProgram((ProgramPhase(30_000, 1_000), ProgramPhase(30_000)), repeat_from=0)  # a continuous phase never ends
    looping = PumpProgram((ProgramPhase(30_000, 1_000),), repeat_from=0)
    assert looping.repeats and not looping.ends_continuous


def test_pause_holds_a_running_program_where_it_is_and_sends_nothing_to_a_stopped_pump() -> None:
    link = ScriptedLink([(b"0\r", b"\x0200I\x03"), (b"0STP\r", b"\x0200P\x03")])
    driver = Ne1000Driver(link)
    result = driver.pause()
    assert result.applied and result.status is not None and result.status.state is PumpState.PAUSED
    link.assert_done()
    link = ScriptedLink([(b"0\r", b"\x0200S\x03")])
    assert Ne1000Driver(link).pause().applied
    link.assert_done()


def test_program_as_held_is_the_pump_number_format_without_io() -> None:
    link = ScriptedLink([(b"0\r", b"\x0200S\x03"), (b"0\r", b"\x0200S\x03"), (b"0DIA\r", b"\x0200S4.699\x03"),
                         (b"0RAT\r", b"\x0200S10.00UH\x03")])
    driver = Ne1000Driver(link)
    driver.connect()
    held = driver.program_as_held(PumpProgram((ProgramPhase(123_456, 7_654_321), ProgramPhase(4_166))))
    # 2.058 uL/min (123.48 uL/h) is nearer than 123.5 uL/h; 7654 uL is the 4-digit volume.
    assert held == PumpProgram((ProgramPhase(123_480, 7_654_000), ProgramPhase(4_166)))
    link.assert_done()


def test_close_leaves_no_safe_mode_watchdog_and_delivery_as_it_is() -> None:
    with open_backend("nullmodem", syringe_diameter_mm="4.699", safe_mode_timeout_s=10) as backend:
        driver, device, clock = backend.driver, backend.device, backend.clock
        assert device is not None and device.safe_mode
        assert driver.stage_program(BOLUS_THEN_BASAL).applied and driver.commit_program().applied
        driver.close()
        assert not device.safe_mode and device.state == "I"
        clock.advance(3600)  # nobody feeds a watchdog now, and none is armed
        device.poll()
        assert device.alarm is None and device.state == "I" and device.dispensed_nl() == (5_000 + 30_000 * 3570 // 3600, 0)  # 30 s of bolus, then basal
