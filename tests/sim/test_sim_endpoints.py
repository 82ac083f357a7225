"""One behaviour suite for every endpoint (pty, TCP, in-process), plus pacing and traces."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import serial

from cython_ext.errors import ConfigError, ConnectError
from hal.newera.framing import encode_safe
from sim.clock import VirtualClock
from sim.endpoints import InProcessEndpoint, PtyEndpoint, TcpEndpoint, _Pacer
from sim.faults import FaultyDevice
from sim.newera import Ne1000
from sim.rig import simulated_pump

LINKS = ["pty", "tcp", "inprocess"]


def exchange(port: serial.SerialBase, request: bytes, terminator: bytes = b"\x03") -> bytes:
    port.write(request)
    return port.read_until(terminator)


@pytest.fixture(params=LINKS)
def link(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def port_and_pump(link: str, clock: VirtualClock) -> Iterator[tuple[serial.SerialBase, Ne1000]]:
    with simulated_pump(link, clock=clock, power_on_alarm=False) as rig:
        port = serial.serial_for_url(rig.url, timeout=5)
        try:
            yield port, rig.device
        finally:
            port.close()


def test_status_round_trip(port_and_pump: tuple[serial.SerialBase, Ne1000]) -> None:
    port, _ = port_and_pump
    assert exchange(port, b"0\r") == b"\x0200S\x03"
    assert exchange(port, b"0VER\r") == b"\x0200SNE1000V3.928\x03"


def test_commands_in_one_write_get_all_replies(port_and_pump: tuple[serial.SerialBase, Ne1000]) -> None:
    port, _ = port_and_pump
    port.write(b"0RAT50UH\r0RAT\r0RUN\r")
    replies = port.read_until(b"\x0200I\x03")
    assert replies == b"\x0200S\x03\x0200S50.00UH\x03\x0200I\x03"


def test_request_split_over_writes(port_and_pump: tuple[serial.SerialBase, Ne1000]) -> None:
    port, _ = port_and_pump
    port.write(b"0V")
    port.write(b"ER")
    assert exchange(port, b"\r") == b"\x0200SNE1000V3.928\x03"


def test_virtual_time_drives_delivery(port_and_pump: tuple[serial.SerialBase, Ne1000], clock: VirtualClock) -> None:
    port, pump = port_and_pump
    exchange(port, b"0RAT60UH\r")
    assert exchange(port, b"0RUN\r") == b"\x0200I\x03"
    clock.advance(120)
    assert exchange(port, b"0DIS\r") == b"\x0200II2.000W0.000UL\x03"
    assert pump.mechanics.actual_delivered_nl() == 2000


def test_unsolicited_safe_alarm_reaches_the_client(
    port_and_pump: tuple[serial.SerialBase, Ne1000], clock: VirtualClock
) -> None:
    port, _ = port_and_pump
    assert exchange(port, b"0SAF2\r") == encode_safe(b"00S")  # answered in the mode the command selects
    clock.advance(3)
    expected = encode_safe(b"00A?T")
    # The endpoint polls the device: the alarm arrives without any request.
    assert port.read(len(expected)) == expected


@pytest.mark.parametrize("link_name", LINKS)
def test_scripted_disconnect_makes_the_port_vanish(link_name: str, clock: VirtualClock) -> None:
    with simulated_pump(link_name, clock=clock, power_on_alarm=False, faults=["disconnect:after=2"]) as rig:
        port = serial.serial_for_url(rig.url, timeout=5)
        try:
            assert exchange(port, b"0\r") == b"\x0200S\x03"
            with pytest.raises(serial.SerialException):
                port.write(b"0\r")  # the second command unplugs the port; its reply never comes
                port.read(1)
                port.read(1)
            assert rig.endpoint.disconnected.wait(5)
        finally:
            port.close()


def test_tcp_accepts_a_new_client_after_the_first_leaves(clock: VirtualClock) -> None:
    with TcpEndpoint(Ne1000(clock, power_on_alarm=False)) as endpoint:
        for _ in range(2):
            port = serial.serial_for_url(endpoint.url, timeout=5)
            try:
                assert exchange(port, b"0\r") == b"\x0200S\x03"
            finally:
                port.close()


def test_trace_records_both_directions(tmp_path: Path, link: str, clock: VirtualClock) -> None:
    trace = tmp_path / "trace.txt"
    with simulated_pump(link, clock=clock, trace_path=trace, power_on_alarm=False) as rig:
        port = serial.serial_for_url(rig.url, timeout=5)
        try:
            assert exchange(port, b"0VER\r") == b"\x0200SNE1000V3.928\x03"
        finally:
            port.close()
    lines = trace.read_text(encoding="ascii").splitlines()
    assert all(line.split()[1] == "0.000000" for line in lines), "the second column is the device (virtual) clock"
    assert any(" RX 30 56 45 52 0d  |0VER.|" in line for line in lines), lines
    assert any(" TX 02 30 30 53" in line and "|.00SNE1000V3.928.|" in line for line in lines), lines


def test_close_is_idempotent_and_context_managed(clock: VirtualClock) -> None:
    for endpoint in (PtyEndpoint(Ne1000(clock)), TcpEndpoint(Ne1000(clock)), InProcessEndpoint(Ne1000(clock))):
        with endpoint:
            assert endpoint.url
        endpoint.close()
        assert endpoint.closed


def test_in_process_url_must_name_an_open_endpoint(clock: VirtualClock) -> None:
    endpoint = InProcessEndpoint(Ne1000(clock))
    url = endpoint.url
    endpoint.close()
    with pytest.raises(serial.SerialException):
        serial.serial_for_url(url)
    with pytest.raises(serial.SerialException):
        serial.serial_for_url("itbsim://")


def test_in_process_read_never_waits_and_buffers(clock: VirtualClock) -> None:
    with InProcessEndpoint(Ne1000(clock, power_on_alarm=False)) as endpoint:
        port = serial.serial_for_url(endpoint.url, timeout=30)
        try:
            assert port.read(10) == b""
            port.write(b"0\r0\r")
            assert port.in_waiting == 10
            assert port.read(3) == b"\x0200"
            port.reset_input_buffer()
            assert port.in_waiting == 0
        finally:
            port.close()


def test_pacing_schedule_is_deadline_based() -> None:
    pacer = _Pacer(19200)
    byte_s = 10 / 19200
    due = pacer.schedule(5, now=100.0)
    assert due == pytest.approx([100.0 + (i + 1) * byte_s for i in range(5)])
    # A burst queued before the line is free starts when it is free, not "now".
    later = pacer.schedule(2, now=100.0 + byte_s)
    assert later[0] == pytest.approx(100.0 + 6 * byte_s)
    assert _Pacer(None).schedule(3, now=1.0) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize(("link_name", "baud"), [("pty", 19200), ("tcp", 9600)])
def test_paced_links_deliver_the_same_bytes(clock: VirtualClock, link_name: str, baud: int) -> None:
    with simulated_pump(link_name, clock=clock, pace_baud=baud, power_on_alarm=False) as rig:
        port = serial.serial_for_url(rig.url, timeout=5)
        try:
            assert exchange(port, b"0VER\r") == b"\x0200SNE1000V3.928\x03"
            port.write(b"0RAT50UH\r0RAT\r")
            assert port.read_until(b"UH\x03") == b"\x0200S\x03\x0200S50.00UH\x03"
        finally:
            port.close()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"pace_baud": 0}, "pace_baud"),
        ({"pace_baud": 9600.0}, "pace_baud"),
        ({"poll_interval_s": 0}, "poll_interval_s"),
    ],
)
def test_endpoint_settings_are_validated(clock: VirtualClock, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        PtyEndpoint(Ne1000(clock), **kwargs)  # type: ignore[arg-type]
    assert excinfo.value.field == field


def test_rig_rejects_unknown_link_and_pacing_in_process(clock: VirtualClock) -> None:
    with pytest.raises(ConfigError):
        with simulated_pump("usb", clock=clock):
            pass
    with pytest.raises(ConfigError):
        with simulated_pump("inprocess", clock=clock, pace_baud=19200):
            pass


def test_rig_exposes_fault_layer(clock: VirtualClock) -> None:
    with simulated_pump("inprocess", clock=clock, faults=["stall:at=5"]) as rig:
        assert isinstance(rig.faults, FaultyDevice)
        assert rig.endpoint.device is rig.faults


def test_pty_with_no_reader_drops_output_instead_of_blocking(clock: VirtualClock) -> None:
    class Chatty:
        """A device that streams 1 kB on every poll (a balance in continuous mode)."""

        def receive(self, data: bytes) -> bytes:
            return b""

        def poll(self) -> bytes:
            return b"x" * 1024

    endpoint = PtyEndpoint(Chatty(), poll_interval_s=0.001)
    try:
        assert endpoint.output_dropped.wait(60)
    finally:
        endpoint.close()  # must not hang on a full pty
    assert endpoint.closed and endpoint.bytes_dropped > 0


def test_rig_fault_layer_switch(clock: VirtualClock) -> None:
    with simulated_pump("inprocess", clock=clock, fault_layer=True) as rig:
        assert rig.faults is not None and rig.faults.specs == []
    with simulated_pump("inprocess", clock=clock) as rig:
        assert rig.faults is None
    with pytest.raises(ConfigError):
        with simulated_pump("inprocess", clock=clock, faults=["stall"], fault_layer=False):
            pass


def test_tcp_port_in_use_is_a_connect_error(clock: VirtualClock) -> None:
    with TcpEndpoint(Ne1000(clock)) as first:
        with pytest.raises(ConnectError):
            TcpEndpoint(Ne1000(clock), port=first.port)


def test_pacing_follows_the_pump_baud_change(clock: VirtualClock) -> None:
    with simulated_pump("pty", clock=clock, pace_baud=19200, power_on_alarm=False, faults=["stall:at=9999"]) as rig:
        port = serial.serial_for_url(rig.url, timeout=5)
        try:
            assert exchange(port, b"*ADR0B9600\r") == b"\x0200S\x03"
            assert rig.endpoint.pace_baud == 9600, "through the fault layer to the pump's baud"
            assert exchange(port, b"0\r") == b"\x0200S\x03"
        finally:
            port.close()


def test_pacing_keeps_its_baud_until_the_pump_changes_its_own(clock: VirtualClock) -> None:
    with simulated_pump("pty", clock=clock, pace_baud=9600, power_on_alarm=False) as rig:
        port = serial.serial_for_url(rig.url, timeout=5)
        try:
            assert exchange(port, b"0\r") == b"\x0200S\x03"
            assert rig.endpoint.pace_baud == 9600, "the pump still says 19200: nothing changed"
        finally:
            port.close()


@pytest.mark.parametrize(
    "sequence",
    [(("7", "O"), ("8", "N"), ("7", "O")), (("7", "O"), ("7", "O"), ("8", "N"), ("8", "N"))],
    ids=["7O1-8N1-7O1", "7O1-7O1-8N1-8N1"],
)
def test_pty_can_be_reopened_with_other_line_settings(clock: VirtualClock, sequence: tuple[tuple[str, str], ...]) -> None:
    # pyserial cannot reconfigure a pty left at 7O1 to 7O1 again (EINVAL); the endpoint puts
    # its raw settings back when the client leaves, as a re-plugged adapter comes up.
    from sim.balance import create_balance

    with PtyEndpoint(create_balance("sbi", clock, lambda: 0)) as endpoint:
        for bytesize, parity in sequence:
            port = serial.serial_for_url(endpoint.url, 9600, bytesize=int(bytesize), parity=parity, timeout=5)
            try:
                port.write(b"\x1bP\r\n")
                assert port.read_until(b"\n").endswith(b" g  \r\n")
            finally:
                port.close()
            assert endpoint.client_gone.wait(5)
        assert endpoint.client_disconnects == len(sequence)


def test_pty_odd_parity_port_can_be_reconfigured_while_open(clock: VirtualClock) -> None:
    # A Linux pty keeps PARODD without PARENB and then refuses the next odd-parity setting;
    # the endpoint clears the orphan bit, so a client may change its timeout later on.
    import termios
    import time

    from sim.balance import create_balance

    with PtyEndpoint(create_balance("sbi", clock, lambda: 0)) as endpoint:
        port = serial.serial_for_url(endpoint.url, 9600, bytesize=8, parity="O", timeout=0)
        try:
            deadline = time.monotonic() + 5
            while termios.tcgetattr(port.fd)[2] & termios.PARODD and time.monotonic() < deadline:
                time.sleep(0.001)
            port.timeout = 5
            port.write(b"\x1bP")
            assert port.read_until(b"\n") == b"+  0.00000 g  \r\n"
        finally:
            port.close()


def test_an_in_process_port_reads_an_idle_connected_line(clock: VirtualClock) -> None:
    with simulated_pump("inprocess", clock=clock) as rig:
        port = serial.serial_for_url(rig.url, timeout=5)
        assert (port.cts, port.dsr, port.ri, port.cd) == (True, True, False, True)
        port.close()
