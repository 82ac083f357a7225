"""A Mettler Toledo balance speaking MT-SICS, byte for byte, over the byte-device protocol.

Commands answered (reference §3.1; replies marked [U] there are as documented in
:mod:`hal.mtsics.codec`):

======== ==================================================================
``S``    ``S S <w> <u>`` when settled, else ``S I`` (the stability timeout
         of the real balance is not waited out); ``S +``/``S -`` out of range
``SI``   ``S S``/``S D`` at once; ``S +``/``S -`` out of range
``SIR``  ``SI`` replies every ``stream_interval_s`` until ``@`` or another command
``Z``    ``Z A`` when settled, else ``Z I``; ``ZI`` zeroes at once (``ZI A``)
``T``    ``T S <tare> <u>`` when settled, else ``T I``; ``TI`` at once (``TI S|D``)
``TA``   ``TA A <tare> <u>``; ``TAC`` clears the tare (``TAC A``)
``@``    reset: stops streaming, answers ``I4 A "<serial>"``
``I1``.. ``I4`` identification
======== ==================================================================

Anything else, including lower-case commands, answers ``ES``; a line too long
to be a command answers ``ET``. Catching up after a jump of virtual time, a
stream sends at most :data:`MAX_CATCH_UP_READINGS` readings (the oldest are
the ones a real serial line would have carried long ago).
"""

from __future__ import annotations

import math
import threading

from cython_ext.errors import ConfigError
from hal.clock import NS_PER_S
from hal.mtsics import codec
from hal.mtsics.codec import GeneralError, ReplyStatus
from sim.balance.pan import Pan, PanReading, PeriodicSchedule
from sim.device import ByteDevice

#: Most stream readings emitted by one poll after virtual time jumped ahead.
MAX_CATCH_UP_READINGS = 50


class MtSicsBalance(ByteDevice):
    """Simulated MT-SICS balance.

    :param pan: the weighing pan (physics, noise, stability).
    :param model: type reported by ``I2``.
    :param capacity_text: capacity reported by ``I2``.
    :param serial_number: reported by ``I4`` and ``@``.
    :param firmware: reported by ``I3``.
    :param unit: display unit (``"g"`` or ``"mg"``).
    :param stream_interval_s: interval of ``SIR`` readings, s (> 0).
    :param field_width: width of the right-aligned weight field, characters.
    """

    def __init__(
        self,
        pan: Pan,
        *,
        model: str = "XPE205",
        capacity_text: str = "220.00000 g",
        serial_number: str = "B123456789",
        firmware: str = "2.20",
        unit: str = "g",
        stream_interval_s: float = 0.1,
        field_width: int = 10,
    ) -> None:
        scale_ug = codec.MASS_UNIT_UG.get(unit)
        if scale_ug is None or unit in ("ug", "µg"):
            raise ConfigError("unit", unit, "one of 'g', 'mg', 'kg'")
        if scale_ug % pan.settings.resolution_ug:
            raise ConfigError("resolution_ug", pan.settings.resolution_ug, f"at most 1 {unit}")
        if not (isinstance(stream_interval_s, (int, float)) and math.isfinite(stream_interval_s) and stream_interval_s > 0):
            raise ConfigError("stream_interval_s", stream_interval_s, "a finite number > 0 s")
        for name, text in (("model", model), ("capacity_text", capacity_text), ("serial_number", serial_number), ("firmware", firmware)):
            if not isinstance(text, str) or not text.isprintable() or '"' in text or len(text) > 40:
                raise ConfigError(name, text, "printable text without double quotes, at most 40 characters")
        if isinstance(field_width, bool) or not isinstance(field_width, int) or not 0 <= field_width <= 20:
            raise ConfigError("field_width", field_width, "an integer in [0, 20] characters")
        self.pan = pan
        self.model = model
        self.capacity_text = capacity_text
        self.serial_number = serial_number
        self.firmware = firmware
        self.unit = unit
        self.decimals = len(str(scale_ug // pan.settings.resolution_ug)) - 1
        self.field_width = field_width
        self._stream = PeriodicSchedule(pan.clock, round(stream_interval_s * NS_PER_S), MAX_CATCH_UP_READINGS)
        self._deframer = codec.LineDeframer()
        self._lock = threading.Lock()

    @property
    def streaming(self) -> bool:
        """True while ``SIR`` is active."""
        return self._stream.active

    def receive(self, data: bytes) -> bytes:
        """Answer every complete command in ``data`` (partial commands wait for more bytes)."""
        with self._lock:
            out = bytearray()
            for line in self._deframer.feed(data):
                out += self._answer(line)
            return bytes(out)

    def poll(self) -> bytes:
        """Lines of a ``SIR`` stream that are due now (bounded catch-up after a jump of virtual time)."""
        with self._lock:
            return b"".join(self._weight_reply(self.pan.read(), immediate=True) for _ in range(self._stream.take_due()))

    def next_poll_ns(self) -> int | None:
        """When the next line of a ``SIR`` stream falls due, ns, or None."""
        return self._stream.next_ns

    def _weight_reply(self, reading: PanReading, *, immediate: bool) -> bytes:
        if reading.overload:
            return codec.encode_status_reply(codec.WEIGHT_REPLY_ID, ReplyStatus.OVERLOAD)
        if reading.underload:
            return codec.encode_status_reply(codec.WEIGHT_REPLY_ID, ReplyStatus.UNDERLOAD)
        if not immediate and not reading.stable:
            return codec.encode_status_reply(codec.WEIGHT_REPLY_ID, ReplyStatus.NOT_EXECUTABLE)
        return self._encode_weight(codec.WEIGHT_REPLY_ID, reading.net_ug, reading.stable)

    def _encode_weight(self, command: str, mass_ug: int, stable: bool) -> bytes:
        return codec.encode_weight_reply(
            command, stable=stable, mass_ug=mass_ug, unit=self.unit, decimals=self.decimals, width=self.field_width
        )

    def _answer(self, line: bytes) -> bytes:
        if len(line) > codec.MAX_LINE_BYTES:
            return codec.encode_error_reply(GeneralError.TRANSMISSION)
        decoded = codec.decode_command(line)
        if isinstance(decoded, codec.MalformedReply):
            return b""  # an empty line is ignored
        command, params = decoded
        if command != codec.REPEAT_IMMEDIATE:
            self._stream.stop()  # any other command ends SIR
        handler = self._HANDLERS.get(command)
        if handler is None or params:
            return codec.encode_error_reply(GeneralError.SYNTAX)
        return handler(self)

    def _cmd_stable(self) -> bytes:
        return self._weight_reply(self.pan.read(), immediate=False)

    def _cmd_immediate(self) -> bytes:
        return self._weight_reply(self.pan.read(), immediate=True)

    def _cmd_repeat(self) -> bytes:
        self._stream.start()
        return self._weight_reply(self.pan.read(), immediate=True)

    def _cmd_zero(self) -> bytes:
        reading = self.pan.read()
        if reading.overload or reading.underload:
            status = ReplyStatus.OVERLOAD if reading.overload else ReplyStatus.UNDERLOAD
            return codec.encode_status_reply(codec.ZERO, status)
        if not reading.stable:
            return codec.encode_status_reply(codec.ZERO, ReplyStatus.NOT_EXECUTABLE)
        self.pan.zero()
        return codec.encode_status_reply(codec.ZERO, ReplyStatus.EXECUTED)

    def _cmd_zero_immediate(self) -> bytes:
        self.pan.zero()
        return codec.encode_status_reply(codec.ZERO_IMMEDIATE, ReplyStatus.EXECUTED)

    def _tare(self, command: str, immediate: bool) -> bytes:
        reading = self.pan.read()
        if reading.overload or reading.underload:
            status = ReplyStatus.OVERLOAD if reading.overload else ReplyStatus.UNDERLOAD
            return codec.encode_status_reply(command, status)
        if not immediate and not reading.stable:
            return codec.encode_status_reply(command, ReplyStatus.NOT_EXECUTABLE)
        tare_ug = self.pan.tare()
        return self._encode_weight(command, tare_ug, reading.stable)

    def _cmd_tare(self) -> bytes:
        return self._tare(codec.TARE, immediate=False)

    def _cmd_tare_immediate(self) -> bytes:
        return self._tare(codec.TARE_IMMEDIATE, immediate=True)

    def _cmd_tare_query(self) -> bytes:
        value = codec.format_mass(self.pan.tare_ug, self.unit, self.decimals).rjust(self.field_width)
        return f"{codec.TARE_QUERY} A {value} {self.unit}".encode("latin-1") + codec.CRLF

    def _cmd_tare_clear(self) -> bytes:
        self.pan.clear_tare()
        return codec.encode_status_reply(codec.TARE_CLEAR, ReplyStatus.EXECUTED)

    def _cmd_reset(self) -> bytes:
        self._stream.stop()
        return codec.encode_info_reply(codec.INFO_SERIAL, self.serial_number)

    def _cmd_levels(self) -> bytes:
        return codec.encode_info_reply(codec.INFO_LEVELS, "01", "2.20", "2.20", "", "")

    def _cmd_model(self) -> bytes:
        return codec.encode_info_reply(codec.INFO_MODEL, f"{self.model} {self.capacity_text}")

    def _cmd_software(self) -> bytes:
        return codec.encode_info_reply(codec.INFO_SOFTWARE, self.firmware)

    def _cmd_serial(self) -> bytes:
        return codec.encode_info_reply(codec.INFO_SERIAL, self.serial_number)

    _HANDLERS = {
        codec.STABLE_WEIGHT: _cmd_stable,
        codec.IMMEDIATE_WEIGHT: _cmd_immediate,
        codec.REPEAT_IMMEDIATE: _cmd_repeat,
        codec.ZERO: _cmd_zero,
        codec.ZERO_IMMEDIATE: _cmd_zero_immediate,
        codec.TARE: _cmd_tare,
        codec.TARE_IMMEDIATE: _cmd_tare_immediate,
        codec.TARE_QUERY: _cmd_tare_query,
        codec.TARE_CLEAR: _cmd_tare_clear,
        codec.RESET: _cmd_reset,
        codec.INFO_LEVELS: _cmd_levels,
        codec.INFO_MODEL: _cmd_model,
        codec.INFO_SOFTWARE: _cmd_software,
        codec.INFO_SERIAL: _cmd_serial,
    }
