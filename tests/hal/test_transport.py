"""Serial transport over pyserial URLs: settings are checked, errors are typed, bytes are traced."""

from __future__ import annotations

from pathlib import Path

import pytest

from cython_ext.errors import CommunicationError, ConfigError, ConnectError, StateError
from hal.transport import ByteTrace, format_trace_line, open_serial
from sim.clock import VirtualClock


def test_loopback_round_trip_and_short_read() -> None:
    with open_serial("loop://", timeout_s=0.01) as link:
        link.write(b"0VER\r")
        assert link.in_waiting == 5
        assert link.read_until(b"\r") == b"0VER\r"
        assert link.read(4) == b""  # a short read is data, not an error


def test_read_until_returns_partial_bytes_on_timeout() -> None:
    with open_serial("loop://", timeout_s=0.01) as link:
        link.write(b"\x0200S")
        assert link.read_until(b"\x03") == b"\x0200S"


def test_reset_input_and_read_available() -> None:
    with open_serial("loop://", timeout_s=0.01) as link:
        link.write(b"junk")
        assert link.read_available() == b"junk"
        assert link.read_available() == b""
        link.write(b"more")
        link.reset_input()
        assert link.in_waiting == 0


def test_close_is_idempotent_and_later_calls_raise_state_error() -> None:
    link = open_serial("loop://", timeout_s=0.01)
    link.close()
    link.close()
    assert not link.is_open
    with pytest.raises(StateError):
        link.write(b"x")
    with pytest.raises(StateError):
        link.read(1)


def test_trace_records_every_byte_with_direction(tmp_path: Path) -> None:
    trace_path = tmp_path / "trace.txt"
    clock = VirtualClock()
    with open_serial("loop://", timeout_s=0.01, trace_path=trace_path, clock=clock) as link:
        link.write(b"0RAT\r")
        clock.advance(0.25)
        link.read(5)
        link.read(1)
    lines = trace_path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# itb-fil serial trace  url=loop://")
    assert lines[1] == format_trace_line(0.0, "TX", b"0RAT\r")
    assert lines[2] == format_trace_line(0.25, "RX", b"0RAT\r")
    assert "timeout reading 1 byte(s)" in lines[3]


def test_trace_line_shows_hex_and_printable_ascii() -> None:
    line = format_trace_line(1.5, "RX", b"\x0200S\x03")
    assert line.split("|")[1] == ".00S."
    assert "02 30 30 53 03" in line


def test_trace_close_is_idempotent(tmp_path: Path) -> None:
    trace = ByteTrace(tmp_path / "t.txt", url="x")
    trace.close()
    trace.close()
    trace.record("TX", b"ignored after close")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"baudrate": 19201}, "baudrate"),
        ({"timeout_s": None}, "timeout_s"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": float("inf")}, "timeout_s"),
        ({"timeout_s": True}, "timeout_s"),
        ({"bytesize": 9}, "bytesize"),
        ({"parity": "X"}, "parity"),
        ({"stopbits": 3}, "stopbits"),
        ({"write_timeout_s": -1.0}, "write_timeout_s"),
    ],
)
def test_bad_settings_are_rejected_before_opening(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        open_serial("loop://", **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field


def test_empty_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        open_serial("  ")


def test_missing_device_is_a_connect_error(tmp_path: Path) -> None:
    with pytest.raises(ConnectError):
        open_serial(str(tmp_path / "no-such-tty"))


def test_unknown_scheme_is_a_connect_error() -> None:
    with pytest.raises(ConnectError):
        open_serial("nosuchscheme://x")


def test_unwritable_trace_path_is_a_config_error_and_closes_port(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        open_serial("loop://", trace_path=tmp_path / "missing-dir" / "t.txt")
    assert info.value.field == "trace_path"


def test_vanished_pty_reads_raise_communication_error() -> None:
    import os

    master, slave = os.openpty()
    path = os.ttyname(slave)
    link = open_serial(path, timeout_s=0.05)
    try:
        os.close(master)
        with pytest.raises(CommunicationError):
            link.read(1)
    finally:
        link.close()
        os.close(slave)


def test_timeout_setter_validates() -> None:
    with open_serial("loop://", timeout_s=0.01) as link:
        link.timeout_s = 0.2
        assert link.timeout_s == pytest.approx(0.2)
        with pytest.raises(ConfigError):
            link.timeout_s = -1
