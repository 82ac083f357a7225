"""Pump-side packet splitter that follows the pump's mode.

In Safe mode every STX starts a Safe packet, so the tail of a packet discarded
by the 0.5 s inter-byte rule cannot swallow the next one; bytes outside Safe
packets still collect into CR-terminated Basic packets, which the firmware
ignores in Safe mode unless they hold a ``*`` command (those bypass Safe mode).
In Basic mode a packet that starts with STX is taken as a Safe packet (that is
how a Safe-framed ``SAF0`` reaches a pump in Basic mode).

::

    Basic:  <data> CR
    Safe:   STX LEN <data> CRChi CRClo ETX      LEN = len(data) + 4
"""

from __future__ import annotations

from hal.newera.framing import (
    CR,
    ETX,
    MAX_BASIC_PACKET,
    SAFE_INTER_BYTE_TIMEOUT_S,
    SAFE_OVERHEAD,
    STX,
    Frame,
    FrameError,
    FrameKind,
    crc16_xmodem,
)


class PumpDeframer:
    """Splits the host's byte stream into packets, the way the pump's receiver does."""

    def __init__(self) -> None:
        self._basic = bytearray()
        self._safe: bytearray | None = None
        self._last_byte_s: float | None = None

    def reset(self) -> None:
        """Drop any partial packet (power loss)."""
        self._basic.clear()
        self._safe = None
        self._last_byte_s = None

    @property
    def pending(self) -> bool:
        """True while a partial packet is held."""
        return bool(self._basic) or self._safe is not None

    def feed(self, data: bytes, now_s: float, *, safe_mode: bool) -> list[Frame | FrameError]:
        """Consume ``data`` that arrived at ``now_s`` (seconds).

        :param safe_mode: True when the pump is in Safe mode (hunt for STX between packets).
        :return: complete packets and discarded fragments, in order.
        """
        return self._consume(data, now_s, safe_mode, until_frame=False)[0]

    def feed_to_frame(self, data: bytes, now_s: float, *, safe_mode: bool) -> tuple[list[Frame | FrameError], int]:
        """:meth:`feed`, stopping after the byte that completes a packet: the pump acts on it (a ``SAF``
        changes the mode the next byte is framed in) before it reads on.

        :return: the packets and discarded fragments so far, and how many bytes of ``data`` were consumed.
        """
        return self._consume(data, now_s, safe_mode, until_frame=True)

    def _consume(self, data: bytes, now_s: float, safe_mode: bool, *,
                 until_frame: bool) -> tuple[list[Frame | FrameError], int]:
        out: list[Frame | FrameError] = []
        if not data:
            return out, 0
        if (
            self._safe is not None
            and self._last_byte_s is not None
            and now_s - self._last_byte_s > SAFE_INTER_BYTE_TIMEOUT_S
        ):
            out.append(FrameError("inter_byte_timeout", bytes(self._safe)))
            self._safe = None
        self._last_byte_s = now_s
        for count, byte in enumerate(data, 1):
            if self._safe is not None:
                result = self._push_safe(byte)
                if result is not None:
                    out.append(result)
            elif byte == STX and (safe_mode or not self._basic):
                self._basic.clear()
                self._safe = bytearray((STX,))
            elif byte == CR:
                out.append(Frame(FrameKind.BASIC, bytes(self._basic)))
                self._basic.clear()
            else:
                self._basic.append(byte)
                if len(self._basic) > MAX_BASIC_PACKET:
                    out.append(FrameError("overflow", bytes(self._basic)))
                    self._basic.clear()
            if until_frame and out and type(out[-1]) is Frame:
                return out, count
        return out, len(data)

    def _push_safe(self, byte: int) -> Frame | FrameError | None:
        buf = self._safe
        assert buf is not None
        buf.append(byte)
        if len(buf) == 2:
            if byte < SAFE_OVERHEAD:
                self._safe = None
                return FrameError("length", bytes(buf))
            return None
        if len(buf) < buf[1] + 1:
            return None
        raw = bytes(buf)
        self._safe = None
        if raw[-1] != ETX:
            return FrameError("no_etx", raw)
        payload = raw[2:-3]
        if crc16_xmodem(payload) != (raw[-3] << 8 | raw[-2]):
            return FrameError("crc", raw)
        return Frame(FrameKind.SAFE, payload)
