"""One behaviour suite for both balance drivers, run against the emulators over in-process and pty links.

Each test builds a simulated balance on a :class:`~sim.clock.VirtualClock`
whose pan is fed by a volume the test sets, opens it through
:func:`hal.balance.open_balance` (so through ``hal.transport``), and checks the
driver's public API. Time moves only when the test or the driver's retry
loop advances it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hal.balance import BalanceDriver, BalanceFault, open_balance
from cython_ext.errors import ConfigError, DeviceError, HalUnavailableError, StateError
from sim.balance import MtSicsBalance, SbiBalance, create_balance
from sim.clock import VirtualClock
from sim.endpoints import InProcessEndpoint, PtyEndpoint


@dataclass
class Bench:
    kind: str
    clock: VirtualClock
    volume_nl: list[int]
    device: MtSicsBalance | SbiBalance
    driver: BalanceDriver


@pytest.fixture(params=["mtsics", "sbi"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=["inprocess", "pty"])
def bench(request: pytest.FixtureRequest, kind: str) -> Iterator[Bench]:
    clock = VirtualClock()
    volume = [0]
    device = create_balance(kind, clock, lambda: volume[0], seed=1, resolution_ug=10, settling_s=2.0)
    endpoint_cls = InProcessEndpoint if request.param == "inprocess" else PtyEndpoint
    with endpoint_cls(device) as endpoint:
        driver = open_balance(kind, endpoint.url, clock=clock, timeout_s=2.0)
        with driver:
            yield Bench(kind, clock, volume, device, driver)


def test_identify(bench: Bench) -> None:
    identity = bench.driver.identify()
    assert identity.model == bench.device.model
    assert identity.serial_number == bench.device.serial_number
    assert identity.firmware == bench.device.firmware


def test_readings_follow_delivered_volume_through_water_density(bench: Bench) -> None:
    bench.clock.advance(10)
    assert bench.driver.read_stable().mass_ug == 0
    bench.volume_nl[0] = 1_000_000  # 1 mL
    bench.clock.advance(3600)
    reading = bench.driver.read_immediate()
    # 1 mL of water at 20 °C is 0.998207 g; the display shows it to 10 µg.
    assert reading.mass_ug == 998_210
    assert reading.resolution_ug == 10
    assert reading.unit == "g"
    assert reading.monotonic_ns == bench.clock.monotonic_ns()


def test_a_moving_load_reads_unstable_and_read_stable_waits_for_it(bench: Bench) -> None:
    bench.clock.advance(10)
    bench.driver.read_immediate()
    bench.volume_nl[0] = 500_000
    bench.clock.advance(1)
    moving = bench.driver.read_immediate()
    assert not moving.stable
    settled = bench.driver.read_stable(timeout_s=10)
    assert settled.stable
    assert settled.mass_ug == 499_100


def test_read_stable_gives_up_with_not_executable(bench: Bench) -> None:
    bench.device.pan.disturb(60.0)
    with pytest.raises(DeviceError) as caught:
        bench.driver.read_stable(timeout_s=5)
    assert caught.value.error_code == BalanceFault.NOT_EXECUTABLE.value
    assert bench.clock.monotonic_ns() >= 5_000_000_000


def test_overload_and_underload_are_device_errors(bench: Bench) -> None:
    bench.device.pan.add_load(bench.device.pan.settings.capacity_ug + 1_000_000)
    with pytest.raises(DeviceError) as caught:
        bench.driver.read_immediate()
    assert caught.value.error_code == BalanceFault.OVERLOAD.value
    bench.device.pan.add_load(-2 * bench.device.pan.settings.capacity_ug)
    with pytest.raises(DeviceError) as caught:
        bench.driver.read_immediate()
    assert caught.value.error_code == BalanceFault.UNDERLOAD.value


def test_tare_and_zero(bench: Bench) -> None:
    bench.device.pan.add_load(20_000_000)  # a 20 g beaker
    bench.clock.advance(10)
    assert bench.driver.read_stable().mass_ug == 20_000_000
    bench.driver.tare()
    bench.clock.advance(10)
    assert bench.driver.read_stable().mass_ug == 0
    bench.device.pan.add_load(-20_000_000)
    bench.clock.advance(10)
    assert bench.driver.read_stable().mass_ug == -20_000_000
    bench.driver.zero()
    bench.clock.advance(10)
    assert bench.driver.read_stable().mass_ug == 0


def test_stream_yields_readings_and_blocks_other_commands(bench: Bench) -> None:
    bench.clock.advance(10)
    readings = []
    stream = bench.driver.stream(max_readings=3)
    readings.append(next(stream))
    with pytest.raises(StateError):
        bench.driver.read_immediate()
    bench.clock.advance(0.35)
    readings.extend(stream)
    assert len(readings) == 3
    assert all(r.mass_ug == 0 for r in readings)
    # After the stream the balance answers commands again.
    assert bench.driver.read_immediate().mass_ug == 0


def test_closed_driver_refuses_and_close_is_idempotent(bench: Bench) -> None:
    bench.driver.close()
    bench.driver.close()
    with pytest.raises(StateError):
        bench.driver.read_immediate()


def test_bad_arguments_are_refused_before_anything_is_sent(bench: Bench) -> None:
    with pytest.raises(ConfigError):
        bench.driver.read_stable(timeout_s=0)
    with pytest.raises(ConfigError):
        bench.driver.stream(max_readings=0)


def test_unknown_driver_is_unavailable() -> None:
    with pytest.raises(HalUnavailableError):
        open_balance("nonesuch", "loop://")


def test_mtsics_syntax_error_is_a_device_error() -> None:
    clock = VirtualClock()
    device = create_balance("mtsics", clock, lambda: 0)
    with InProcessEndpoint(device) as endpoint, open_balance("mtsics", endpoint.url, clock=clock) as driver:
        driver.link.write(b"si\r\n")  # lower case: the balance answers ES
        assert driver.link.read_until(b"\n") == b"ES\r\n"
        assert driver.read_immediate().mass_ug == 0


def test_sbi_autoprint_stream_only_listens() -> None:
    clock = VirtualClock()
    device = create_balance("sbi", clock, lambda: 0, autoprint_interval_s=1.0)
    with InProcessEndpoint(device) as endpoint:
        from hal import transport
        from hal.sartorius.driver import SbiDriver

        link = transport.open_serial(endpoint.url, timeout_s=2.0)
        with SbiDriver(link, clock=clock, autoprint=True) as driver:
            stream = driver.stream(max_readings=2)
            clock.advance(2.0)
            readings = list(stream)
            assert [r.mass_ug for r in readings] == [0, 0]


def test_mtsics_stream_stops_cleanly_with_a_backlog_queued() -> None:
    clock = VirtualClock()
    device = create_balance("mtsics", clock, lambda: 0, stream_interval_s=0.1)
    with InProcessEndpoint(device) as endpoint, open_balance("mtsics", endpoint.url, clock=clock) as driver:
        stream = driver.stream()
        next(stream)
        clock.advance(10.0)  # 100 readings due; the emulator sends its bounded catch-up
        next(stream)
        stream.close()
        assert not device.streaming
        assert driver.read_immediate().mass_ug == 0


def test_mtsics_waits_longer_for_zero_and_tare_and_restores_the_timeout() -> None:
    clock = VirtualClock()
    device = create_balance("mtsics", clock, lambda: 0)
    with InProcessEndpoint(device) as endpoint, open_balance("mtsics", endpoint.url, clock=clock, timeout_s=0.5) as driver:
        seen: list[tuple[str, float]] = []
        real_transact = driver._transact

        def spy(command: str, reply_ids: tuple[str, ...]) -> object:
            seen.append((command, driver.link.timeout_s))
            return real_transact(command, reply_ids)

        driver._transact = spy  # type: ignore[method-assign]
        driver.zero()
        driver.tare()
        driver.read_stable()
        patient = driver.STABLE_REPLY_TIMEOUT_S
        assert [command for command, _ in seen if command != "SI"] == ["Z", "T"]
        assert all(timeout == (0.5 if command == "SI" else patient) for command, timeout in seen)
        assert driver.link.timeout_s == 0.5
