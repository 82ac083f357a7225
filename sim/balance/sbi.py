"""A Sartorius balance speaking SBI, byte for byte, over the byte-device protocol.

Commands answered (reference §3.2):

=========== ==============================================================
``ESC P``   one 16-byte output line (22 with an ID code); the unit is
            printed only when the pan is settled; ``H``/``L`` out of range
``ESC T``   tare/zero key: zero when nothing is tared, else tare (no reply)
``ESC U``   tare (no reply); ``ESC V`` zero (no reply)
``ESC S``   restart: clears the tare, stops nothing else (no reply)
``ESC x1_`` model; ``x2_`` serial number; ``x3_`` software version
=========== ==============================================================

Other commands are ignored (no reply), which is how the emulator treats the
many SBI commands this project does not use. With ``autoprint_interval_s``
the balance prints a line on its own at that interval (the auto-print menu
setting); a value that does not fit the 8-character weight field prints as
overload.
"""

from __future__ import annotations

import math
import threading

from hal.clock import NS_PER_S
from cython_ext.errors import ConfigError
from hal.sartorius import codec
from sim.balance.pan import Pan, PeriodicSchedule
from sim.device import ByteDevice

#: Most auto-print lines emitted by one poll after virtual time jumped ahead.
MAX_CATCH_UP_LINES = 50


class SbiBalance(ByteDevice):
    """Simulated Sartorius SBI balance.

    :param pan: the weighing pan.
    :param model: answer to ``ESC x1_``.
    :param serial_number: answer to ``ESC x2_``.
    :param firmware: answer to ``ESC x3_``.
    :param unit: display unit (``"g"`` or ``"mg"``).
    :param id_code: ID code printed before each value (22-byte lines), or None.
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
        id_code: str | None = None,
        autoprint_interval_s: float | None = None,
    ) -> None:
        scale_ug = codec.MASS_UNIT_UG.get(unit)
        if scale_ug is None or unit in ("ug", "µg"):
            raise ConfigError("unit", unit, "one of 'g', 'mg', 'kg'")
        if scale_ug % pan.settings.resolution_ug:
            raise ConfigError("resolution_ug", pan.settings.resolution_ug, f"at most 1 {unit}")
        if autoprint_interval_s is not None and not (
            isinstance(autoprint_interval_s, (int, float)) and math.isfinite(autoprint_interval_s) and autoprint_interval_s > 0
        ):
            raise ConfigError("autoprint_interval_s", autoprint_interval_s, "a finite number > 0 s, or None")
        if id_code is not None:
            codec.encode_range_line(overload=True, id_code=id_code)  # validates the ID code
        for name, text in (("model", model), ("serial_number", serial_number), ("firmware", firmware)):
            if not isinstance(text, str) or not text.isprintable() or not 0 < len(text) <= 14:
                raise ConfigError(name, text, "printable text of 1-14 characters")
        self.pan = pan
        self.model = model
        self.serial_number = serial_number
        self.firmware = firmware
        self.unit = unit
        self.id_code = id_code
        self.decimals = len(str(scale_ug // pan.settings.resolution_ug)) - 1
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
            return codec.encode_range_line(overload=reading.overload, id_code=self.id_code)
        try:
            return codec.encode_weight_line(
                reading.net_ug, unit=self.unit, decimals=self.decimals, stable=reading.stable, id_code=self.id_code
            )
        except ConfigError:
            return codec.encode_range_line(overload=reading.net_ug > 0, id_code=self.id_code)

    def _answer(self, code: str) -> bytes:
        if code == codec.PRINT:
            return self._print()
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
            self.pan.clear_tare()
        elif code == codec.MODEL:
            return codec.encode_text_line(self.model)
        elif code == codec.SERIAL_NUMBER:
            return codec.encode_text_line(self.serial_number)
        elif code == codec.SOFTWARE_VERSION:
            return codec.encode_text_line(self.firmware)
        return b""
