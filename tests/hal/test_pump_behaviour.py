"""One behaviour suite for the NE-1000 driver, run on every backend.

The same tests run on an in-memory null modem, on ``itbsim://`` (in-process),
over a real pty and over TCP against the simulated firmware, and on a real
pump when ``ITB_HIL_PUMP=<url>`` is set (those are marked ``hil``). Tests that
need virtual time or the simulator's inside view are skipped on hardware.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from hal.pump import Direction, Outcome, PumpAlarm, PumpState, Sensor
from hal.newera.codec import syringe_rate_envelope_nl_per_h
from pump_backends import ALL_BACKENDS, SIM_BACKENDS, Backend, open_backend

_PARAMS = [pytest.param(name, marks=pytest.mark.hil) if name == "hardware" else name for name in ALL_BACKENDS]


@pytest.fixture(params=_PARAMS)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    with open_backend(request.param, hil_env=request.config.getoption("--hil-env")) as opened:
        yield opened


def _sim_only(backend: Backend) -> None:
    if not backend.simulated:
        pytest.skip("needs the simulator's inside view or virtual time")


def test_connect_identifies_an_ne1000_and_acknowledges_the_power_up_reset(backend: Backend) -> None:
    identity = backend.driver.identify()
    assert identity.model.startswith("NE") and identity.address == 0
    if backend.simulated:
        assert [e.alarm for e in backend.driver.pending_alarms()] == [PumpAlarm.RESET]
        assert backend.driver.read_status().alarm is None


def test_configure_reports_the_envelope_and_honest_sensors(backend: Backend) -> None:
    diameter = backend.diameter_mm
    caps = backend.driver.configure(syringe_diameter_mm=diameter)
    assert caps.sensors == frozenset({Sensor.MOTOR_STALL, Sensor.DISPENSED_COUNTER})
    assert Sensor.OCCLUSION not in caps.sensors
    assert (caps.min_rate_nl_per_h, caps.max_rate_nl_per_h) == syringe_rate_envelope_nl_per_h(Decimal(diameter))
    assert backend.driver.read_diameter_mm() == Decimal(diameter)
    if diameter == "14.43":
        assert 6_000 < caps.min_rate_nl_per_h < 7_000 < 500_000_000 < caps.max_rate_nl_per_h


def test_settings_are_read_back(backend: Backend) -> None:
    driver = backend.driver
    assert driver.set_rate(41_667).value == 41_670
    assert driver.read_rate_nl_per_h() == 41_670
    assert driver.set_target_volume(0).applied
    assert driver.set_direction(Direction.INFUSE).applied
    assert driver.read_direction() is Direction.INFUSE


def test_start_deliver_stop(backend: Backend) -> None:
    driver = backend.driver
    driver.set_rate(1_000_000)  # 1 mL/h
    driver.set_target_volume(0)
    driver.set_direction(Direction.INFUSE)
    assert driver.clear_dispensed().applied
    started = driver.start()
    assert started.applied and started.status is not None and started.status.state is PumpState.INFUSING
    backend.wait(36 if backend.simulated else 3.6)
    stopped = driver.stop()
    assert stopped.applied and driver.read_status().state is PumpState.STOPPED
    infused_nl = driver.read_dispensed().infused_nl
    if backend.simulated:
        assert infused_nl == 10_000  # 36 s at 1 mL/h, shown as 0.010 mL
        assert backend.device.dispensed_nl()[0] == 10_000  # type: ignore[union-attr]
    else:
        assert infused_nl > 0


def test_rate_change_while_running_keeps_units_and_takes_effect(backend: Backend) -> None:
    _sim_only(backend)
    driver = backend.driver
    driver.set_rate(500_000)
    driver.start()
    assert driver.set_rate(250_000).value == 250_000
    backend.wait(3600)
    driver.stop()
    assert backend.device.dispensed_nl()[0] == 250_000  # type: ignore[union-attr]


def test_target_volume_ends_delivery(backend: Backend) -> None:
    _sim_only(backend)
    driver = backend.driver
    driver.set_rate(1_000_000)
    assert driver.set_target_volume(10_000).value == 10_000
    driver.clear_dispensed()
    driver.start()
    backend.wait(3600)
    assert driver.read_status().state is PumpState.STOPPED
    assert driver.read_dispensed().infused_nl == 10_000


def test_safe_mode_heartbeat_keeps_the_pump_running_and_silence_trips_the_watchdog(backend: Backend) -> None:
    _sim_only(backend)
    driver = backend.driver
    driver.set_rate(1_000_000)
    driver.enter_safe_mode(6)
    assert driver.safe_mode and not driver.heartbeat_due()
    driver.start()
    for _ in range(5):
        backend.wait(2.5)
        assert driver.heartbeat_due()
        assert driver.heartbeat().state is PumpState.INFUSING
    backend.wait(7)
    status = driver.read_status()
    assert status.alarm is PumpAlarm.COMMS_TIMEOUT and status.state is PumpState.STOPPED
    alarms = [(e.alarm, e.acknowledged) for e in driver.pending_alarms()]
    assert (PumpAlarm.COMMS_TIMEOUT, True) in alarms
    driver.exit_safe_mode()
    assert not driver.safe_mode and driver.read_status().alarm is None


def test_stall_is_reported_once_and_acknowledged(backend: Backend) -> None:
    _sim_only(backend)
    driver = backend.driver
    driver.set_rate(1_000_000)
    driver.start()
    backend.device.inject_stall()  # type: ignore[union-attr]
    status = driver.acknowledge_alarm()
    assert status.alarm is PumpAlarm.STALL and status.state is PumpState.STOPPED
    assert driver.read_status().alarm is None


def test_occlusion_ends_in_a_stall(backend: Backend) -> None:
    _sim_only(backend)
    driver = backend.driver
    driver.set_rate(1_000_000)
    driver.start()
    backend.device.set_occluded(True)  # type: ignore[union-attr]
    backend.wait(1)
    assert driver.read_status().alarm is PumpAlarm.STALL


def test_power_cycle_reset_is_acknowledged_by_a_read_and_the_setting_sent_once(backend: Backend) -> None:
    _sim_only(backend)
    driver, device = backend.driver, backend.device
    assert device is not None
    driver.pending_alarms()
    device.power_cycle()
    result = driver.set_rate(2_000_000)
    assert result.applied and "acknowledged RESET" in result.detail
    assert [e.alarm for e in driver.pending_alarms()] == [PumpAlarm.RESET]
    assert sum(command.startswith("RAT2") for _, command in device.executed) == 1


def test_start_after_power_cycle_reports_the_reset_then_starts_once(backend: Backend) -> None:
    _sim_only(backend)
    driver, device = backend.driver, backend.device
    assert device is not None
    driver.set_rate(1_000_000)
    device.power_cycle()
    first = driver.start()
    assert first.outcome is Outcome.NOT_APPLIED and first.status.alarm is PumpAlarm.RESET  # type: ignore[union-attr]
    assert driver.start().applied
    assert sum(command == "RUN" for _, command in device.executed) == 1


def test_trace_file_records_the_exchange(tmp_path: Path) -> None:
    trace = tmp_path / "pump.trace"
    with open_backend("inprocess", trace_path=trace) as backend:
        backend.driver.identify()
    text = trace.read_text(encoding="utf-8")
    assert "TX  30 56 45 52 0D" in text and "|.00SNE1000V3.928.|" in text


@pytest.mark.parametrize("name", SIM_BACKENDS[1:])
def test_open_pump_in_safe_mode_over_every_link(name: str) -> None:
    with open_backend(name, safe_mode_timeout_s=10) as backend:
        assert backend.driver.safe_mode and backend.device.safe_mode  # type: ignore[union-attr]
        assert backend.driver.read_status().state is PumpState.STOPPED
        backend.driver.exit_safe_mode()


def test_probe_baudrate_finds_the_simulated_pump() -> None:
    from hal.newera.driver import probe_baudrate
    from sim.clock import VirtualClock
    from sim.rig import simulated_pump

    clock = VirtualClock()
    with simulated_pump("inprocess", clock=clock) as rig:
        baudrate, identity = probe_baudrate(rig.url, clock=clock)
    assert baudrate == 19200 and identity.model == "NE1000"


def test_probe_baudrate_on_a_silent_line_tries_every_rate_then_fails() -> None:
    from cython_ext.errors import CommunicationError, ConfigError
    from hal.newera.driver import probe_baudrate

    with pytest.raises(CommunicationError, match="19200, 9600"):
        probe_baudrate("loop://", baudrates=(19200, 9600), timeout_s=0.01)
    with pytest.raises(ConfigError):
        probe_baudrate("loop://", baudrates=(115200,))


def test_purge_runs_at_maximum_rate_until_stopped(backend: Backend) -> None:
    _sim_only(backend)
    driver = backend.driver
    result = driver.purge()
    assert result.applied and result.status.state is PumpState.PURGING  # type: ignore[union-attr]
    assert driver.purge().outcome is Outcome.NOT_APPLIED  # only from stopped
    backend.wait(1)
    assert driver.stop().applied
    assert driver.read_dispensed().infused_nl > 0


def test_pump_on_another_address_answers_only_its_own() -> None:
    import hal
    from cython_ext.errors import CommunicationError
    from sim.clock import VirtualClock
    from sim.rig import simulated_pump

    clock = VirtualClock()
    with simulated_pump("inprocess", clock=clock, address=7) as rig:
        with hal.open_pump("ne1000", rig.url, address=7, clock=clock) as driver:
            assert driver.identify().address == 7
            assert driver.set_rate(50_000).applied
        with pytest.raises(CommunicationError):
            hal.open_pump("ne1000", rig.url, address=3, clock=clock, timeout_s=0.01)
