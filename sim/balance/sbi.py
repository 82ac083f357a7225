"""A Sartorius Cubis MSE225S speaking SBI, byte for byte, over the byte-device protocol.

Commands (Cubis MSE operating instructions, "Data Interfaces: SBI commands";
the same table is quoted in reference §3.2, S35/S36), CR LF optional:

============= =================================================================
``ESC P``     one output line: 16 characters, or 22 with ID codes (``N`` before
              a weight); the unit is printed only when the pan is stable;
              ``High``/``Low`` special codes out of range (``Stat`` ID with ID codes)
``ESC p_``    print as with the PRINT key: the same line
``ESC T``     TARE key: zero when nothing is tared, else tare (no reply)
``ESC U``     tare; ``ESC V`` zero (no reply)
``ESC S``     restart: clears the tare and zeroes as at power-on (no reply)
``ESC K/L/M/N`` ambient filter very stable ... very unstable (no reply)
``ESC O/R``   block / unblock the keys (no reply); ``ESC Q`` beep (no reply)
``ESC Z/W``   internal / external adjustment: the pan settles again (no reply)
``ESC x1_``   model; ``ESC x3_`` software version (text lines)
``ESC x2_``   serial number, labelled with the ID code ``Ser.no``
============= =================================================================

Other codes (the key codes ``ESC f0_``... and options this model does not
have) are ignored, with no reply, as the balance ignores them. With
``autoprint_interval_s`` the balance prints a line on its own at that interval
(the auto-print menu setting); a value that does not fit the 8-character
weight field prints as ``High``/``Low``. Line formats: :mod:`hal.sartorius.codec`.
"""

from __future__ import annotations

import math
import threading

from cython_ext.errors import ConfigError
from hal.clock import NS_PER_S
from hal.sartorius import codec
from sim.balance.pan import Pan, PeriodicSchedule, display_decimals
from sim.device import ByteDevice

#: Most auto-print lines emitted by one poll after virtual time jumped ahead.
MAX_CATCH_UP_LINES = 50
#: Ambient filter codes.
FILTERS = ("K", "L", "M", "N")
#: Codes that start an adjustment (internal, external).
ADJUSTMENTS = ("Z", "W")
#: Every code the simulated balance acts on, in the order of the manual's table.
IMPLEMENTED_CODES = (
    codec.PRINT, codec.TARE_ZERO, *FILTERS, codec.BLOCK_KEYS, "Q", codec.UNBLOCK_KEYS, codec.RESTART,
    *ADJUSTMENTS, codec.TARE, codec.ZERO, codec.PRINT_KEY, codec.MODEL, codec.SERIAL_NUMBER, codec.SOFTWARE_VERSION,
)  # fmt: skip


class SbiBalance(ByteDevice):
    """Simulated Sartorius SBI balance.

    :param pan: the weighing pan.
    :param model: answer to ``ESC x1_``.
    :param serial_number: answer to ``ESC x2_`` (after ``Ser.no``).
    :param firmware: answer to ``ESC x3_``.
    :param unit: display unit (``"g"`` or ``"mg"``).
    :param id_codes: print 22-character lines with ID codes (the "output with ID code" menu setting).
    :param autoprint_interval_s: print unasked every so many seconds, or None.
    """

    def __init__(
        self,
        pan: Pan,
        *,
        model: str = "MSE225S",
        serial_number: str = "0031204567",
        firmware: str = "00-51-03",
        unit: str = "g",
        id_codes: bool = False,
        autoprint_interval_s: float | None = None,
    ) -> None:
        decimals = display_decimals(unit, pan.settings.resolution_ug)
        if autoprint_interval_s is not None and not (
            isinstance(autoprint_interval_s, (int, float)) and math.isfinite(autoprint_interval_s) and autoprint_interval_s > 0
        ):
            raise ConfigError("autoprint_interval_s", autoprint_interval_s, "a finite number > 0 s, or None")
        if not isinstance(id_codes, bool):
            raise ConfigError("id_codes", id_codes, "true or false")
        for name, text in (("model", model), ("serial_number", serial_number), ("firmware", firmware)):
            if not isinstance(text, str) or not text.isprintable() or " " in text or not 0 < len(text) <= 14:
                raise ConfigError(name, text, "1-14 printable characters without spaces")
        self.pan = pan
        self.model = model
        self.serial_number = serial_number
        self.firmware = firmware
        self.unit = unit
        self.id_codes = id_codes
        self.decimals = decimals
        #: Ambient filter set by ``ESC K``..``ESC N``.
        self.filter = "L"
        #: True after ``ESC O`` (keys blocked) until ``ESC R``.
        self.keys_blocked = False
        self._deframer = codec.CommandDeframer()
        self._lock = threading.Lock()
        self._autoprint: PeriodicSchedule | None = None
        if autoprint_interval_s is not None:
            self._autoprint = PeriodicSchedule(pan.clock, round(autoprint_interval_s * NS_PER_S), MAX_CATCH_UP_LINES)
            self._autoprint.start()

    def receive(self, data: bytes) -> bytes:
        """Answer every complete command in ``data`` (partial commands wait for more bytes)."""
        with self._lock:
            out = bytearray()
            for code in self._deframer.feed(data):
                out += self._answer(code)
            return bytes(out)

    def poll(self) -> bytes:
        """Lines of auto-print that are due now (bounded catch-up after a jump of virtual time)."""
        with self._lock:
            if self._autoprint is None:
                return b""
            return b"".join(self._print() for _ in range(self._autoprint.take_due()))

    def next_poll_ns(self) -> int | None:
        """When the next line of auto-print falls due, ns, or None."""
        return None if self._autoprint is None else self._autoprint.next_ns

    def _print(self) -> bytes:
        reading = self.pan.read()
        if reading.overload or reading.underload:
            return codec.encode_range_line(overload=reading.overload, id_codes=self.id_codes)
        try:
            return codec.encode_weight_line(
                reading.net_ug,
                unit=self.unit,
                decimals=self.decimals,
                stable=reading.stable,
                id_code=codec.NET_ID if self.id_codes else None,
            )
        except ConfigError:
            return codec.encode_range_line(overload=reading.net_ug > 0, id_codes=self.id_codes)

    def _answer(self, code: str) -> bytes:
        if code in (codec.PRINT, codec.PRINT_KEY):
            return self._print()
        if code == codec.MODEL:
            return codec.encode_text_line(self.model)
        if code == codec.SERIAL_NUMBER:
            return codec.encode_serial_line(self.serial_number)
        if code == codec.SOFTWARE_VERSION:
            return codec.encode_text_line(self.firmware)
        if code == codec.TARE_ZERO:
            if self.pan.tare_ug:
                self.pan.tare()
            else:
                self.pan.zero()
        elif code == codec.TARE:
            self.pan.tare()
        elif code == codec.ZERO:
            self.pan.zero()
        elif code == codec.RESTART:
            self.pan.zero()  # the initial zero-setting at power-on; the tare is gone with it
        elif code in FILTERS:
            self.filter = code
        elif code in (codec.BLOCK_KEYS, codec.UNBLOCK_KEYS):
            self.keys_blocked = code == codec.BLOCK_KEYS
        elif code in ADJUSTMENTS:
            self.pan.disturb(self.pan.settings.settling_s)
        return b""
