"""New Era framing: golden vectors from the manual, and properties of the host-side deframer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hal.newera.framing import (
    CR,
    ETX,
    Frame,
    FrameError,
    FrameKind,
    ReplyDeframer,
    crc16_xmodem,
    encode_basic_reply,
    encode_basic_request,
    encode_safe,
)
from sim.newera.deframer import PumpDeframer

GOLDEN_SAFE = [
    (b"SAF0", "02 08 53 41 46 30 55 43 03"),
    (b"0SAF0", "02 09 30 53 41 46 30 59 AD 03"),
    (b"0SAF10", "02 0A 30 53 41 46 31 30 63 BE 03"),
    (b"0VER", "02 08 30 56 45 52 48 09 03"),
    (b"00S", "02 07 30 30 53 AA A6 03"),
    (b"00A?T", "02 09 30 30 41 3F 54 05 40 03"),
]


@pytest.mark.parametrize(("data", "frame_hex"), GOLDEN_SAFE)
def test_safe_frames_match_the_manual(data: bytes, frame_hex: str) -> None:
    assert encode_safe(data) == bytes.fromhex(frame_hex)


def test_crc_init_is_zero_not_ffff() -> None:
    assert crc16_xmodem(b"SAF0") == 0x5543


def test_basic_request_golden_bytes() -> None:
    assert encode_basic_request(b"0RAT5.000MH") == bytes.fromhex("30 52 41 54 35 2E 30 30 30 4D 48 0D")


def test_basic_reply_golden_bytes() -> None:
    assert encode_basic_reply(b"00A?S") == bytes.fromhex("02 30 30 41 3F 53 03")


def test_safe_packet_whose_crc_holds_etx_or_cr_is_framed_by_length() -> None:
    data = next(
        d for d in (f"0RAT{n}UH".encode() for n in range(1000))
        if {ETX, CR} & set(encode_safe(d)[-3:-1])
    )
    assert PumpDeframer().feed(encode_safe(data), 0.0, safe_mode=False) == [Frame(FrameKind.SAFE, data)]
    assert ReplyDeframer(safe=True).feed(encode_safe(data)) == [Frame(FrameKind.SAFE, data)]


def test_reply_deframer_basic_resyncs_on_last_stx() -> None:
    out = ReplyDeframer().feed(b"junk\x0200S\x02" + b"00I\x03")
    assert out[-1] == Frame(FrameKind.BASIC, b"00I")
    assert all(isinstance(x, FrameError) and x.reason == "stray" for x in out[:-1])


def test_reply_deframer_safe_skips_corrupt_packet_and_finds_next() -> None:
    bad = bytearray(encode_safe(b"00S"))
    bad[3] ^= 0x01
    out = ReplyDeframer(safe=True).feed(bytes(bad) + encode_safe(b"00I"))
    assert out[-1] == Frame(FrameKind.SAFE, b"00I")
    assert any(isinstance(x, FrameError) and x.reason == "crc" for x in out)


safe_data = st.binary(min_size=0, max_size=60)


@given(safe_data)
def test_safe_round_trip_through_reply_deframer(data: bytes) -> None:
    assert ReplyDeframer(safe=True).feed(encode_safe(data)) == [Frame(FrameKind.SAFE, data)]


@given(st.lists(safe_data, max_size=5), st.data())
def test_safe_stream_split_anywhere_gives_same_frames(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_safe(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    deframer = ReplyDeframer(safe=True)
    out: list[Frame | FrameError] = []
    for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out.extend(deframer.feed(stream[a:b]))
    assert out == [Frame(FrameKind.SAFE, p) for p in payloads]


@given(st.binary(max_size=300))
def test_reply_deframers_never_crash_and_only_emit_valid_frames(noise: bytes) -> None:
    for safe in (False, True):
        for item in ReplyDeframer(safe=safe).feed(noise):
            if isinstance(item, Frame) and item.kind is FrameKind.SAFE:
                assert noise.find(encode_safe(item.data)) >= 0


