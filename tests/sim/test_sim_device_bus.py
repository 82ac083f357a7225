"""Several simulated pumps on one line (daisy chain)."""

from __future__ import annotations

import pytest
import serial

from cython_ext.errors import ConfigError
from sim.clock import VirtualClock
from sim.device import ByteDevice, ByteDeviceProtocol, DeviceBus
from sim.endpoints import InProcessEndpoint
from sim.faults import FaultyDevice
from sim.newera import Ne1000


def test_addressed_pumps_share_a_port(clock: VirtualClock) -> None:
    pumps = [Ne1000(clock, address=a, power_on_alarm=False) for a in (0, 1, 2)]
    with InProcessEndpoint(DeviceBus(pumps)) as endpoint:
        port = serial.serial_for_url(endpoint.url)
        try:
            port.write(b"1RAT50UH\r")
            assert port.read(100) == b"\x0201S\x03"
            port.write(b"2RUN\r")
            assert port.read(100) == b"\x0202I\x03"
            port.write(b"0 rat 20 uh * 1 rat 30 uh *")
            port.write(b"\r")
            assert port.read(100) == b"\x0200S\x03\x0201S\x03", "a burst: every pump answers at once"
        finally:
            port.close()
    assert [p.state for p in pumps] == ["S", "S", "I"]
    assert pumps[1].phases[0].rate_milli == 30_000


def test_bus_hooks(clock: VirtualClock) -> None:
    first = Ne1000(clock, address=0, power_on_alarm=False, safe_timeout_s=5)
    second = FaultyDevice(Ne1000(clock, address=1, power_on_alarm=False), ["disconnect:at=10"], clock=clock)
    bus = DeviceBus([first, second])
    assert isinstance(bus, ByteDevice) and isinstance(bus, ByteDeviceProtocol)
    first.receive(b"\x02\x05\x30\x36\x53\x03")  # a valid Safe status packet arms the watchdog
    assert bus.next_poll_ns() == 5 * 10**9
    clock.advance(10)
    assert bus.poll().startswith(b"\x02\x0900A?T")
    assert bus.wants_disconnect()
    with pytest.raises(ConfigError):
        DeviceBus([])
