"""New Era framing and CRC: the only code the driver and the simulator share.

Basic mode (the factory default)::

    host -> pump   <command data> CR
    pump -> host   STX <response data> ETX

Safe mode, both directions::

    +-----+-----+------------------+--------+--------+-----+
    | STX | LEN | data (n bytes)   | CRC hi | CRC lo | ETX |
    +-----+-----+------------------+--------+--------+-----+
    LEN = n + 4, the bytes that remain in the packet counting LEN itself
    CRC = CRC-16/XMODEM (poly 0x1021, init 0) over the data bytes only

LEN and the CRC bytes may themselves be STX, ETX or CR, so Safe packets are
framed by the length byte and never by scanning for ETX.

:class:`ReplyDeframer` (the host side) is I/O-free: feed it bytes and it returns
complete frames and framing errors. A framing error is data; what to do about
it (resync, count, raise) is the caller's decision. The pump side's packet
splitter follows the pump's mode and lives with the pump's firmware emulation
(:mod:`sim.newera.deframer`).
"""

from __future__ import annotations

import binascii
import enum
from dataclasses import dataclass

STX = 0x02
ETX = 0x03
CR = 0x0D

#: A Safe packet whose bytes are more than this far apart is discarded, seconds.
SAFE_INTER_BYTE_TIMEOUT_S = 0.5
#: Longest Basic packet kept before it is discarded as overflow, bytes.
MAX_BASIC_PACKET = 128
SAFE_OVERHEAD = 4  # LEN, CRC hi, CRC lo, ETX
MAX_SAFE_DATA = 255 - SAFE_OVERHEAD


def crc16_xmodem(data: bytes) -> int:
    """CRC-16/XMODEM of ``data`` (poly 0x1021, init 0x0000, not reflected)."""
    return binascii.crc_hqx(data, 0)


class FrameKind(enum.Enum):
    """How a packet was framed on the wire."""

    BASIC = "basic"
    SAFE = "safe"


@dataclass(frozen=True)
class Frame:
    """A complete, well-formed packet. ``data`` excludes all framing bytes."""

    kind: FrameKind
    data: bytes


@dataclass(frozen=True)
class FrameError:
    """Bytes that could not form a valid packet and were discarded.

    :ivar reason: ``"crc"``, ``"length"``, ``"no_etx"``, ``"inter_byte_timeout"``,
        ``"overflow"`` or ``"stray"``.
    :ivar raw: the discarded bytes.
    """

    reason: str
    raw: bytes


def encode_safe(data: bytes) -> bytes:
    """Frame ``data`` as a Safe-mode packet.

    :raises ValueError: if ``data`` is longer than a length byte can describe.
    """
    if len(data) > MAX_SAFE_DATA:
        raise ValueError(f"safe packet data length (={len(data)}) must be in [0, {MAX_SAFE_DATA}] bytes")
    crc = crc16_xmodem(data)
    return bytes((STX, len(data) + SAFE_OVERHEAD)) + data + bytes((crc >> 8, crc & 0xFF, ETX))


def encode_basic_request(data: bytes) -> bytes:
    """Frame host-to-pump ``data`` in Basic mode (terminated by CR)."""
    return data + bytes((CR,))


def encode_basic_reply(data: bytes) -> bytes:
    """Frame pump-to-host ``data`` in Basic mode (STX ... ETX)."""
    return bytes((STX,)) + data + bytes((ETX,))


def encode_request(data: bytes, *, safe: bool) -> bytes:
    """Frame a host-to-pump packet in the given mode."""
    return encode_safe(data) if safe else encode_basic_request(data)


def encode_reply(data: bytes, *, safe: bool) -> bytes:
    """Frame a pump-to-host packet in the given mode."""
    return encode_safe(data) if safe else encode_basic_reply(data)


class ReplyDeframer:
    """Host side: splits the pump's byte stream into reply packets.

    In Basic mode a reply runs from STX to ETX; a second STX before the ETX
    restarts the packet (the earlier bytes were stray). In Safe mode a reply
    is framed by its length byte; a bad packet is reported and the search for
    the next STX resumes one byte after the failed one. Bytes outside any
    packet are reported as ``"stray"`` errors.

    :param safe: True when the link is in Safe mode.
    """

    def __init__(self, *, safe: bool = False) -> None:
        self.safe = safe
        self._buf = bytearray()

    def reset(self) -> None:
        """Drop any partial packet and stray bytes."""
        self._buf.clear()

    def feed(self, data: bytes) -> list[Frame | FrameError]:
        """Consume ``data`` and return every complete packet and discard it finds."""
        buf = self._buf
        buf.extend(data)
        take = _take_safe if self.safe else _take_basic
        out: list[Frame | FrameError] = []
        while buf and _skip_to_stx(buf, out):
            item = take(buf)
            if item is None:
                break
            out.append(item)
        return out


def _take_basic(buf: bytearray) -> Frame | FrameError | None:
    """Take one Basic packet (or the stray bytes before a restarting STX) off ``buf``, which starts
    with STX; None while the packet is incomplete."""
    end = buf.find(ETX, 1)
    restart = buf.find(STX, 1)
    if restart >= 0 and (end < 0 or restart < end):
        stray = FrameError("stray", bytes(buf[:restart]))
        del buf[:restart]
        return stray
    if end < 0:
        return None
    frame = Frame(FrameKind.BASIC, bytes(buf[1:end]))
    del buf[: end + 1]
    return frame


def _take_safe(buf: bytearray) -> Frame | FrameError | None:
    """Take one Safe packet off ``buf``, which starts with STX; a bad one is reported and only its
    STX dropped (the search resumes one byte on). None while the packet is incomplete."""
    if len(buf) < 2:
        return None
    length = buf[1]
    if length < SAFE_OVERHEAD:
        error = FrameError("length", bytes(buf[:2]))
    else:
        if len(buf) < length + 1:
            return None
        raw = bytes(buf[: length + 1])
        data = raw[2:-3]
        if raw[-1] != ETX:
            error = FrameError("no_etx", raw)
        elif crc16_xmodem(data) != (raw[-3] << 8 | raw[-2]):
            error = FrameError("crc", raw)
        else:
            del buf[: length + 1]
            return Frame(FrameKind.SAFE, data)
    del buf[:1]
    return error


def _skip_to_stx(buf: bytearray, out: list[Frame | FrameError]) -> bool:
    """Discard what precedes the first STX of ``buf`` (reported as stray); False if no STX is left."""
    start = buf.find(STX)
    if start < 0:
        out.append(FrameError("stray", bytes(buf)))
        buf.clear()
        return False
    if start > 0:
        out.append(FrameError("stray", bytes(buf[:start])))
        del buf[:start]
    return True
