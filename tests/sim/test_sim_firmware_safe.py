"""NE-1000 Safe mode: length-framed packets, CRC, watchdog, auto-alarm (pump-protocols §1.4)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sim_helpers import ask

from hal.newera.framing import encode_safe
from sim.newera.wire_numbers import format_milli, parse_milli
from sim.clock import VirtualClock
from sim.newera import Ne1000


def safe(pump: Ne1000, data: str) -> bytes:
    return pump.receive(encode_safe(data.encode("ascii")))


def safe_reply(data: str) -> bytes:
    return encode_safe(data.encode("ascii"))


@pytest.fixture
def safe_pump(make_pump: Callable[..., Ne1000]) -> Ne1000:
    """A pump in Safe mode with a 10 s watchdog, armed by a first valid packet."""
    pump = make_pump(safe_timeout_s=10)
    assert safe(pump, "0") == safe_reply("00S")
    return pump


def test_worked_frames_from_the_reference(safe_pump: Ne1000) -> None:
    assert safe_pump.receive(bytes.fromhex("02 08 30 56 45 52 48 09 03")) == safe_reply("00SNE1000V3.928")
    assert safe_pump.receive(bytes.fromhex("02 05 30 36 53 03")) == bytes.fromhex("02 07 30 30 53 AA A6 03")


def test_manual_saf0_packet_returns_to_basic_mode(safe_pump: Ne1000) -> None:
    # The reply comes in the mode in effect after the command (NE-4000 manual §9.2, SP1000 §10.2).
    assert safe_pump.receive(bytes.fromhex("02 08 53 41 46 30 55 43 03")) == bytes.fromhex("02 30 30 53 03")
    assert not safe_pump.safe_mode
    assert ask(safe_pump, "0") == b"\x0200S\x03"


def test_saf_set_by_safe_packet_with_address(safe_pump: Ne1000) -> None:
    assert safe_pump.receive(bytes.fromhex("02 0A 30 53 41 46 31 30 63 BE 03")) == safe_reply("00S")
    assert safe_pump.safe_timeout_s == 10
    assert safe_pump.receive(bytes.fromhex("02 09 30 53 41 46 30 59 AD 03")) == b"\x0200S\x03"
    assert not safe_pump.safe_mode


def test_safe_packet_accepted_in_basic_mode_and_answered_in_the_current_mode(pump: Ne1000) -> None:
    # "While in the Basic Mode, the pump will accept either communications protocol ... although the
    # response packet will be in the current communications mode" (NE-4000 manual §9.2).
    assert safe(pump, "0VER") == b"\x0200SNE1000V3.928\x03"
    assert safe(pump, "0SAF5") == safe_reply("00S"), "SAF's own reply is in the Safe mode it selects"
    assert pump.safe_timeout_s == 5


def test_basic_packets_are_ignored_in_safe_mode(safe_pump: Ne1000) -> None:
    assert ask(safe_pump, "0RAT50UH") == b""
    assert safe(safe_pump, "0RAT") == safe_reply("00S10.00UH")


def test_bad_crc_gets_com_error(safe_pump: Ne1000) -> None:
    frame = bytearray(encode_safe(b"0RAT50UH"))
    frame[-2] ^= 0xFF
    assert safe_pump.receive(bytes(frame)) == safe_reply("00S?COM")
    assert safe(safe_pump, "0RAT") == safe_reply("00S10.00UH")


def test_bad_crc_can_be_silent(make_pump: Callable[..., Ne1000]) -> None:
    pump = make_pump(safe_timeout_s=10, bad_packet_reply="silent")
    frame = bytearray(encode_safe(b"0RUN"))
    frame[3] ^= 0x01
    assert pump.receive(bytes(frame)) == b""
    assert pump.state == "S"


def test_frames_are_split_by_length_not_by_etx(safe_pump: Ne1000) -> None:
    # Find rate commands whose frames carry ETX, STX or CR inside the CRC bytes.
    tricky = []
    for tenth in range(100, 2000):
        data = f"0RAT{tenth / 10:g}UH".encode()
        frame = encode_safe(data)
        if set(frame[-3:-1]) & {0x02, 0x03, 0x0D}:
            tricky.append((data, frame))
    assert len(tricky) >= 5
    for data, frame in tricky[:5]:
        assert safe_pump.receive(frame) == safe_reply("00S"), frame.hex(" ")
        rate = format_milli(parse_milli(data.decode()[4:-2]) or 0)
        assert safe(safe_pump, "0RAT") == safe_reply(f"00S{rate}UH")


def test_packet_split_across_reads_is_reassembled(safe_pump: Ne1000, clock: VirtualClock) -> None:
    frame = encode_safe(b"0VER")
    assert safe_pump.receive(frame[:3]) == b""
    clock.advance(0.4)
    assert safe_pump.receive(frame[3:]) == safe_reply("00SNE1000V3.928")


def test_inter_byte_gap_over_half_a_second_discards_the_packet(safe_pump: Ne1000, clock: VirtualClock) -> None:
    frame = encode_safe(b"0RUN")
    assert safe_pump.receive(frame[:4]) == b""
    clock.advance(0.6)
    assert safe_pump.receive(frame[4:]) == b""
    assert safe_pump.state == "S", "the late packet must not run"
    assert safe(safe_pump, "0RUN") == safe_reply("00I")


def test_watchdog_stops_the_pump_and_sends_alarm_unprompted(safe_pump: Ne1000, clock: VirtualClock) -> None:
    assert safe(safe_pump, "0RUN") == safe_reply("00I")
    clock.advance(9.9)
    assert safe_pump.poll() == b""
    assert safe(safe_pump, "0") == safe_reply("00I"), "a valid packet restarts the timer"
    clock.advance(9.9)
    assert safe_pump.poll() == b""
    clock.advance(0.2)
    assert safe_pump.poll() == bytes.fromhex("02 09 30 30 41 3F 54 05 40 03")
    assert safe_pump.state == "S"
    delivered = safe_pump.dispensed_nl()
    clock.advance(100)
    assert safe_pump.dispensed_nl() == delivered, "the motor stopped at the timeout"
    assert safe_pump.poll() == b"", "the timer stays disarmed until the next valid packet"
    assert safe(safe_pump, "0RUN") == safe_reply("00A?T"), "the unprompted packet does not acknowledge"
    assert safe(safe_pump, "0") == safe_reply("00S")


def test_watchdog_fires_at_exact_time_when_polled_late(safe_pump: Ne1000, clock: VirtualClock) -> None:
    safe(safe_pump, "0RAT360UH")
    safe(safe_pump, "0RUN")  # armed at t=0 by this packet: 10 s deadline
    clock.advance(3600)
    assert safe_pump.poll() == safe_reply("00A?T")
    assert safe_pump.dispensed_nl() == (1000, 0), "10 s at 360 uL/h, not an hour"


def test_power_up_in_safe_mode_sends_reset_alarm_and_timer_waits(
    make_pump: Callable[..., Ne1000], clock: VirtualClock
) -> None:
    pump = make_pump(safe_timeout_s=2, power_on_alarm=True)
    assert pump.poll() == safe_reply("00A?R")
    clock.advance(600)
    assert pump.poll() == b"", "auto-alarm only: no timeout before the first valid packet"
    assert safe(pump, "0") == safe_reply("00A?R")
    clock.advance(2.5)
    assert pump.poll() == safe_reply("00A?T")


def test_unsolicited_stall_alarm_precedes_next_reply(safe_pump: Ne1000) -> None:
    safe(safe_pump, "0RUN")
    safe_pump.inject_stall()
    assert safe(safe_pump, "0") == safe_reply("00A?S") + safe_reply("00A?S")


def test_baud_change_disarms_the_watchdog(safe_pump: Ne1000, clock: VirtualClock) -> None:
    assert safe(safe_pump, "*ADR0B9600") == safe_reply("00S")
    clock.advance(60)
    assert safe_pump.poll() == b""
    safe(safe_pump, "0")
    clock.advance(10.5)
    assert safe_pump.poll() == safe_reply("00A?T")


def test_power_cycle_in_safe_mode(safe_pump: Ne1000, clock: VirtualClock) -> None:
    safe(safe_pump, "0RUN")
    safe_pump.power_loss()
    assert safe(safe_pump, "0") == b""
    clock.advance(30)
    safe_pump.power_restore()
    assert safe_pump.poll() == safe_reply("00A?R")
    clock.advance(30)
    assert safe_pump.poll() == b"", "the timer is disarmed after power-up"
    assert safe_pump.safe_mode, "Safe mode survives power cycles"


def test_saf0_to_a_freshly_powered_basic_pump_gets_the_reset_alarm_in_basic_framing(
    make_pump: Callable[..., Ne1000],
) -> None:
    pump = make_pump(power_on_alarm=True)
    assert pump.receive(bytes.fromhex("02 08 53 41 46 30 55 43 03")) == b"\x0200A?R\x03"
    assert pump.receive(bytes.fromhex("02 08 53 41 46 30 55 43 03")) == bytes.fromhex("02 30 30 53 03")
