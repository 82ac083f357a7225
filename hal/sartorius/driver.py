"""Sartorius SBI balance driver over a serial link.

SBI has no "send when stable" command in format 1: :meth:`read_stable` polls
``ESC P`` until a line carries its unit (the base class retries). Tare and
zero are not acknowledged on the wire, so they return nothing to check; the
next reading shows the effect. Streaming polls ``ESC P`` every
``poll_interval_s``, or, with ``autoprint=True`` (the balance's auto-print
menu setting), reads the lines the balance sends on its own.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from hal.balance import BalanceFault, BalanceIdentity, BalanceReading, LineBalanceDriver
from hal.clock import Clock
from cython_ext.errors import CommunicationError, ConfigError
from hal.sartorius import codec
from hal.sartorius.codec import ErrorLine, MalformedLine, RangeLine, StatusLine, WeightLine

#: Special codes meaning "busy": the balance is adjusting and prints no weight.
_BUSY_CODES = frozenset({"C", "CAL.EXT.", "CAL.INT."})


class SbiDriver(LineBalanceDriver):
    """Sartorius balance speaking SBI.

    :param link: an open serial link (``write``, ``read_until``, ``reset_input``, ``close``).
    :param clock: clock that stamps readings and paces polling.
    :param autoprint: the balance sends readings unasked; streaming only listens.
    :param poll_interval_s: pause between two ``ESC P`` while streaming without autoprint, s.
    :param unit: the unit the balance displays, used for unstable (unit-less) lines
        until a stable line shows the real one.
    """

    name: ClassVar[str] = "sbi"

    def __init__(
        self,
        link: Any,
        *,
        clock: Clock | None = None,
        autoprint: bool = False,
        poll_interval_s: float = 0.1,
        unit: str = "g",
    ) -> None:
        if not (isinstance(poll_interval_s, (int, float)) and math.isfinite(poll_interval_s) and poll_interval_s >= 0):
            raise ConfigError("poll_interval_s", poll_interval_s, "a finite number >= 0 s")
        if unit not in codec.MASS_UNIT_UG:
            raise ConfigError("unit", unit, f"one of {sorted(codec.MASS_UNIT_UG)}")
        super().__init__(link, clock=clock)
        self._autoprint = autoprint
        self._poll_interval_s = float(poll_interval_s)
        self._unit = unit

    def _send(self, code: str) -> None:
        self._link.write(codec.encode_command(code))

    def _decode(self, data: bytes, stamp_ns: int) -> BalanceReading | BalanceFault:
        line = codec.decode_weight_line(data, unstable_unit=self._unit)
        if isinstance(line, WeightLine):
            if line.stable:
                self._unit = line.unit
            return BalanceReading(line.mass_ug, line.stable, line.resolution_ug, line.unit, stamp_ns)
        if isinstance(line, RangeLine):
            return BalanceFault.OVERLOAD if line.overload else BalanceFault.UNDERLOAD
        if isinstance(line, ErrorLine):
            return BalanceFault.DEVICE
        if isinstance(line, StatusLine):
            return BalanceFault.NOT_EXECUTABLE if line.code.upper() in _BUSY_CODES else BalanceFault.DEVICE
        assert isinstance(line, MalformedLine)
        raise CommunicationError(f"balance sent a malformed line {line.raw!r}: {line.reason}")

    def _print(self) -> BalanceReading | BalanceFault:
        self._link.reset_input()
        self._send(codec.PRINT)
        return self._decode(*self._read_raw_line())

    def _read_stable_once(self) -> BalanceReading | BalanceFault:
        return self._print()

    def _read_immediate(self) -> BalanceReading | BalanceFault:
        return self._print()

    def _zero(self) -> BalanceFault | None:
        self._send(codec.ZERO)
        return None

    def _tare(self) -> int | BalanceFault:
        self._send(codec.TARE)
        return 0

    def _text(self, code: str) -> str:
        self._link.reset_input()
        self._send(code)
        data, _ = self._read_raw_line()
        return codec.decode_text_line(data)

    def _identify(self) -> BalanceIdentity:
        return BalanceIdentity(
            model=self._text(codec.MODEL),
            serial_number=self._text(codec.SERIAL_NUMBER),
            firmware=self._text(codec.SOFTWARE_VERSION),
        )

    def _stream_start(self) -> None:
        self._link.reset_input()

    def _stream_next(self) -> BalanceReading | BalanceFault:
        if self._autoprint:
            return self._decode(*self._read_raw_line())
        self._clock.sleep(self._poll_interval_s)
        return self._print()

    def _stream_stop(self) -> None:
        self._link.reset_input()
