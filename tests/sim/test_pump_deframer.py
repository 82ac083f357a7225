"""The pump's receiver: Basic packets end at CR, a packet starting with STX is a Safe packet.

These pin the pump-side packet splitter to the manual's framing rules (the
0.5 s inter-byte discard, CRC checks, a Safe-framed packet in Basic mode).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from hal.newera.framing import Frame, FrameError, FrameKind, encode_safe
from sim.newera.deframer import PumpDeframer

safe_data = st.binary(min_size=0, max_size=60)


def test_request_deframer_accepts_safe_frame_in_basic_stream() -> None:
    stream = b"0RAT5MH\r" + encode_safe(b"SAF0") + b"0VER\r"
    assert PumpDeframer().feed(stream, 0.0, safe_mode=False) == [
        Frame(FrameKind.BASIC, b"0RAT5MH"),
        Frame(FrameKind.SAFE, b"SAF0"),
        Frame(FrameKind.BASIC, b"0VER"),
    ]


def test_request_deframer_discards_safe_packet_after_inter_byte_gap() -> None:
    packet = encode_safe(b"0VER")
    deframer = PumpDeframer()
    assert deframer.feed(packet[:3], 10.0, safe_mode=False) == []
    out = deframer.feed(packet[3:], 10.6, safe_mode=False)
    assert isinstance(out[0], FrameError) and out[0].reason == "inter_byte_timeout"


def test_request_deframer_keeps_safe_packet_with_gap_under_limit() -> None:
    packet = encode_safe(b"0VER")
    deframer = PumpDeframer()
    deframer.feed(packet[:3], 10.0, safe_mode=False)
    assert deframer.feed(packet[3:], 10.4, safe_mode=False) == [Frame(FrameKind.SAFE, b"0VER")]


def test_request_deframer_reports_bad_crc() -> None:
    packet = bytearray(encode_safe(b"0VER"))
    packet[-2] ^= 0xFF
    (err,) = PumpDeframer().feed(bytes(packet), 0.0, safe_mode=False)
    assert isinstance(err, FrameError) and err.reason == "crc"


@given(safe_data)
def test_safe_round_trip_through_request_deframer(data: bytes) -> None:
    assert PumpDeframer().feed(encode_safe(data), 0.0, safe_mode=False) == [Frame(FrameKind.SAFE, data)]


@given(st.binary(max_size=300))
def test_request_deframer_never_crashes(noise: bytes) -> None:
    for item in PumpDeframer().feed(noise, 0.0, safe_mode=False):
        assert isinstance(item, Frame | FrameError)


@given(st.lists(st.binary(max_size=12) | safe_data.map(encode_safe) | st.just(b"\r"), max_size=8),
       st.lists(st.booleans(), min_size=1, max_size=8))
def test_feeding_packet_by_packet_is_feeding_byte_by_byte_with_the_mode_switched_after_each_packet(
        chunks: list[bytes], modes: list[bool]) -> None:
    """The firmware reads on after each packet in the mode that packet left (a SAF switches it)."""
    stream = b"".join(chunks)
    by_byte, by_packet = PumpDeframer(), PumpDeframer()
    expected: list[Frame | FrameError] = []
    frames = 0
    for index in range(len(stream)):
        items = by_byte.feed(stream[index:index + 1], 1.0, safe_mode=modes[frames % len(modes)])
        expected += items
        frames += sum(type(item) is Frame for item in items)
    got: list[Frame | FrameError] = []
    done = frames = 0
    while done < len(stream):
        items, used = by_packet.feed_to_frame(stream[done:], 1.0, safe_mode=modes[frames % len(modes)])
        assert used > 0 and sum(type(item) is Frame for item in items) <= 1
        done += used
        got += items
        frames += sum(type(item) is Frame for item in items)
    assert got == expected
