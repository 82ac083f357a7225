"""The balance role interface, independent of any balance family.

Units: every mass is an integer number of micrograms (``*_ug``). One
microgram is finer than the readability of the analytical and semi-micro
balances used for gravimetric flow tests (10 µg to 1 µg), so the integer keeps
the balance's full resolution; a reading with digits finer than 1 µg (an
ultra-microbalance) is refused by the codec rather than rounded.

Device-reported conditions (overload, underload, "not executable", command
errors) are decoded by the codecs into reply objects. This base class turns
them into :class:`~cython_ext.errors.DeviceError` with a machine-readable
``error_code`` from :class:`BalanceFault`; backends only implement the private
hooks (``_read_stable_once``, ``_read_immediate``, ``_zero``, ``_tare``,
``_identify``, ``_stream_start``, ``_stream_next``, ``_stream_stop``,
``_close``).

Gravimetry also needs the density of water; :func:`water_density_g_per_ml`
lives here because both the simulated balance (``sim``) and the accuracy
analysis (``hil``) need it, and ``hal`` is the lowest layer they share.
"""

from __future__ import annotations

import enum
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from hal.clock import NS_PER_S, Clock, SystemClock
from hal.lifecycle import ClosesOnExit
from cython_ext.errors import ConfigError, DeviceError, LinkTimeoutError, StateError

#: Tanaka et al. (2001) coefficients for air-free SMOW water at 101.325 kPa.
_TANAKA_A1_C = -3.983035
_TANAKA_A2_C = 301.797
_TANAKA_A3_C2 = 522528.9
_TANAKA_A4_C = 69.34881
_TANAKA_A5_KG_PER_M3 = 999.974950

#: Temperatures over which the density formula is used, °C.
WATER_TEMPERATURE_RANGE_C = (0.0, 40.0)


def water_density_g_per_ml(temperature_c: float) -> float:
    """Density of pure water at ``temperature_c`` (Tanaka 2001), g/mL.

    Numerically g/mL equals µg/nL, so ``mass_ug = volume_nl * density``.

    :param temperature_c: water temperature, °C, within :data:`WATER_TEMPERATURE_RANGE_C`.
    :raises ConfigError: temperature not finite or outside the range.
    :return: density in g/mL (about 0.99820 at 20 °C).
    """
    low, high = WATER_TEMPERATURE_RANGE_C
    if isinstance(temperature_c, bool) or not isinstance(temperature_c, (int, float)):
        raise ConfigError("temperature_c", temperature_c, f"a number in [{low}, {high}] °C")
    if not math.isfinite(temperature_c) or not low <= temperature_c <= high:
        raise ConfigError("temperature_c", temperature_c, f"in [{low}, {high}] °C")
    t = float(temperature_c)
    factor = (t + _TANAKA_A1_C) ** 2 * (t + _TANAKA_A2_C) / (_TANAKA_A3_C2 * (t + _TANAKA_A4_C))
    return _TANAKA_A5_KG_PER_M3 * (1.0 - factor) / 1000.0


#: The end of every line a balance sends or receives (MT-SICS and SBI alike).
CRLF = b"\r\n"


def line_body(line: bytes) -> bytes:
    """One line without its end: a final CR LF taken off once, else any trailing CR and LF bytes."""
    return line[:-2] if line.endswith(CRLF) else line.rstrip(b"\r\n")


@dataclass(frozen=True)
class MalformedLine:
    """A line from a balance (or to a simulated one) that its protocol cannot read; ``reason`` says why.

    :ivar raw: the line as received.
    :ivar reason: what is wrong with it.
    """

    raw: bytes
    reason: str


#: Micrograms per displayed mass unit. ``"ug"`` and ``"µg"`` both mean micrograms.
MASS_UNIT_UG: dict[str, int] = {"kg": 1_000_000_000, "g": 1_000_000, "mg": 1_000, "ug": 1, "µg": 1}
#: Longest number (digits, without sign and point) a codec accepts.
MAX_MASS_DIGITS = 15
_MASS_TEXT = re.compile(r"^([+-]?)(\d*)(?:\.(\d*))?$")


def parse_mass_ug(value_text: str, unit: str) -> tuple[int, int] | str:
    """Convert a displayed decimal weight and unit to exact integer micrograms.

    Parsing is exact (no floats): ``"100.00"`` in ``"g"`` is 100 000 000 µg
    with a resolution of 10 000 µg.

    :param value_text: the weight field, e.g. ``"-12.345"`` (sign optional).
    :param unit: one of :data:`MASS_UNIT_UG`.
    :return: ``(mass_ug, resolution_ug)``, or a reason string when the text is
        not a weight this project can represent (never raises).
    """
    scale_ug = MASS_UNIT_UG.get(unit)
    if scale_ug is None:
        return f"unit {unit!r} is not a mass unit ({', '.join(MASS_UNIT_UG)})"
    match = _MASS_TEXT.match(value_text)
    if match is None:
        return f"weight {value_text!r} is not a decimal number"
    sign, whole, frac = match.group(1), match.group(2), match.group(3) or ""
    if not whole and not frac:
        return f"weight {value_text!r} has no digits"
    if len(whole) + len(frac) > MAX_MASS_DIGITS:
        return f"weight {value_text!r} has more than {MAX_MASS_DIGITS} digits"
    divisor = 10 ** len(frac)
    if scale_ug % divisor:
        return f"weight {value_text} {unit} resolves finer than 1 µg"
    resolution_ug = scale_ug // divisor
    magnitude_ug = int(whole + frac or "0") * resolution_ug
    return (-magnitude_ug if sign == "-" else magnitude_ug), resolution_ug


def format_mass(mass_ug: int, unit: str, decimals: int) -> str:
    """Format ``mass_ug`` as a decimal in ``unit`` with ``decimals`` digits after the point, exactly.

    :param mass_ug: the mass, µg; must be a whole multiple of the digit's value.
    :param unit: one of :data:`MASS_UNIT_UG`.
    :param decimals: digits after the point (0 means no point).
    :raises ConfigError: unknown unit, bad ``decimals``, or a mass that the
        digits cannot show exactly (never rounded).
    :return: e.g. ``"-0.01234"`` (no padding, ``-`` only when negative).
    """
    scale_ug = MASS_UNIT_UG.get(unit)
    if scale_ug is None:
        raise ConfigError("unit", unit, f"one of {sorted(MASS_UNIT_UG)}")
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not 0 <= decimals:
        raise ConfigError("decimals", decimals, "an integer >= 0")
    if scale_ug % 10**decimals:
        raise ConfigError("decimals", decimals, f"at most {len(str(scale_ug)) - 1} for unit {unit}")
    step_ug = scale_ug // 10**decimals
    if isinstance(mass_ug, bool) or not isinstance(mass_ug, int) or mass_ug % step_ug:
        raise ConfigError("mass_ug", mass_ug, f"an integer multiple of {step_ug} µg")
    digits = str(abs(mass_ug) // step_ug).rjust(decimals + 1, "0")
    text = f"{digits[:-decimals]}.{digits[-decimals:]}" if decimals else digits
    return f"-{text}" if mass_ug < 0 else text


class BalanceFault(enum.Enum):
    """Conditions a balance reports instead of a weight (``DeviceError.error_code`` values)."""

    OVERLOAD = "BALANCE_OVERLOAD"
    UNDERLOAD = "BALANCE_UNDERLOAD"
    NOT_EXECUTABLE = "BALANCE_NOT_EXECUTABLE"  # busy, or no stable weight within the balance's timeout
    SYNTAX = "BALANCE_SYNTAX"  # command not understood
    TRANSMISSION = "BALANCE_TRANSMISSION"  # balance received garbled bytes
    LOGIC = "BALANCE_LOGIC"  # command understood but not allowed now
    DEVICE = "BALANCE_DEVICE"  # a numbered device error (Sartorius ``ERR nnn``)


@dataclass(frozen=True)
class BalanceReading:
    """One weight value as the balance sent it.

    :ivar mass_ug: net mass on the pan, µg (negative below zero).
    :ivar stable: True when the balance flagged the value as stable.
    :ivar resolution_ug: value of the last displayed digit, µg.
    :ivar unit: the unit the balance displayed (``"g"``, ``"mg"``...), for the report.
    :ivar monotonic_ns: host clock when the line was received, ns.
    """

    mass_ug: int
    stable: bool
    resolution_ug: int
    unit: str
    monotonic_ns: int


@dataclass(frozen=True)
class BalanceIdentity:
    """Who answered. Empty strings where the balance does not say."""

    model: str
    serial_number: str
    firmware: str
    capacity: str = ""


class BalanceDriver(ClosesOnExit, ABC):
    """Role interface every balance driver implements (template methods over private hooks).

    :param clock: clock used to stamp readings and to pace retries.
    """

    #: Registry name of the driver (``"mtsics"``, ``"sbi"``).
    name: ClassVar[str] = ""
    #: Pause between two attempts of :meth:`read_stable`, s.
    STABLE_RETRY_INTERVAL_S: ClassVar[float] = 0.25

    def __init__(self, *, clock: Clock | None = None) -> None:
        self._clock = clock or SystemClock()
        self._closed = False
        self._streaming = False

    @property
    def clock(self) -> Clock:
        """The clock that stamps readings."""
        return self._clock

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise StateError(f"{type(self).__name__} is closed")
        if self._streaming:
            raise StateError(f"{type(self).__name__} is streaming; close the stream first")

    def read_stable(self, *, timeout_s: float = 10.0) -> BalanceReading:
        """Return the next stable weight, retrying "not executable" until ``timeout_s`` passes.

        :param timeout_s: longest time to wait for stability, s (> 0).
        :raises ConfigError: ``timeout_s`` not positive.
        :raises DeviceError: overload, underload, a command error, or still
            unstable at the deadline (``error_code`` ``BALANCE_NOT_EXECUTABLE``).
        """
        if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
            raise ConfigError("timeout_s", timeout_s, "a finite number > 0 s")
        self._check_open()
        outcome = self._poll_until_stable(timeout_s)
        if isinstance(outcome, BalanceFault):
            detail = f" (none within {timeout_s} s)" if outcome is BalanceFault.NOT_EXECUTABLE else ""
            raise _fault_error(outcome, f"stable weight{detail}")
        return outcome

    def _poll_until_stable(self, timeout_s: float) -> BalanceReading | BalanceFault:
        """Repeat :meth:`_read_stable_once` on the injected clock until a stable reading or ``timeout_s``.

        :return: the stable reading, the fault that ended the wait, or ``NOT_EXECUTABLE`` at the deadline.
        """
        deadline_ns = self._clock.monotonic_ns() + round(timeout_s * NS_PER_S)
        while True:
            outcome = self._read_stable_once()
            if isinstance(outcome, BalanceReading) and outcome.stable:
                return outcome
            if isinstance(outcome, BalanceFault) and outcome is not BalanceFault.NOT_EXECUTABLE:
                return outcome
            if self._clock.monotonic_ns() >= deadline_ns:
                return BalanceFault.NOT_EXECUTABLE
            self._clock.sleep(self.STABLE_RETRY_INTERVAL_S)

    def read_immediate(self) -> BalanceReading:
        """Return the current weight at once, stable or not (see :attr:`BalanceReading.stable`).

        :raises DeviceError: overload, underload or a command error.
        """
        self._check_open()
        outcome = self._read_immediate()
        if isinstance(outcome, BalanceFault):
            raise _fault_error(outcome, "immediate weight")
        return outcome

    def stream(self, *, max_readings: int | None = None) -> Iterator[BalanceReading]:
        """Yield readings as the balance sends them, until ``max_readings`` or the generator is closed.

        While a stream is open the other commands raise :class:`StateError`.
        Closing the generator (or leaving a ``for`` loop) stops the stream on
        the balance.

        :param max_readings: stop after this many readings (> 0), or never.
        :raises ConfigError: ``max_readings`` not a positive integer.
        :raises DeviceError: the balance reported overload, underload or an error.
        """
        if max_readings is not None and (
            isinstance(max_readings, bool) or not isinstance(max_readings, int) or max_readings < 1
        ):
            raise ConfigError("max_readings", max_readings, "an integer >= 1, or None")
        self._check_open()
        return self._stream(max_readings)

    def _stream(self, max_readings: int | None) -> Iterator[BalanceReading]:
        self._stream_start()
        self._streaming = True
        count = 0
        try:
            while max_readings is None or count < max_readings:
                outcome = self._stream_next()
                if isinstance(outcome, BalanceFault):
                    raise _fault_error(outcome, "streamed weight")
                count += 1
                yield outcome
        finally:
            self._streaming = False
            if not self._closed:
                self._stream_stop()

    def zero(self) -> None:
        """Set the zero point (the balance needs a stable reading to do so).

        :raises DeviceError: not executable (unstable), out of the zero range, or a command error.
        """
        self._check_open()
        fault = self._zero()
        if fault is not None:
            raise _fault_error(fault, "zero")

    def tare(self) -> int:
        """Tare the load on the pan (the balance needs a stable reading).

        :raises DeviceError: not executable, overload, underload or a command error.
        :return: the tare weight now stored, µg (0 where the balance does not report it).
        """
        self._check_open()
        outcome = self._tare()
        if isinstance(outcome, BalanceFault):
            raise _fault_error(outcome, "tare")
        return outcome

    def identify(self) -> BalanceIdentity:
        """Ask the balance for its model, serial number and firmware.

        :raises LinkTimeoutError: the balance did not answer.
        """
        self._check_open()
        return self._identify()

    def close(self) -> None:
        """Release the port. Safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        self._close()

    # --- hooks -------------------------------------------------------------
    @abstractmethod
    def _read_stable_once(self) -> BalanceReading | BalanceFault:
        """One attempt at a stable weight; an unstable reading or ``NOT_EXECUTABLE`` means retry."""

    @abstractmethod
    def _read_immediate(self) -> BalanceReading | BalanceFault:
        """The current weight, stable or not."""

    @abstractmethod
    def _zero(self) -> BalanceFault | None:
        """Zero the balance; None on success."""

    @abstractmethod
    def _tare(self) -> int | BalanceFault:
        """Tare the balance; the stored tare in µg on success."""

    @abstractmethod
    def _identify(self) -> BalanceIdentity:
        """Read the identity."""

    @abstractmethod
    def _stream_start(self) -> None:
        """Ask the balance to send readings continuously."""

    @abstractmethod
    def _stream_next(self) -> BalanceReading | BalanceFault:
        """Wait for the next streamed reading."""

    @abstractmethod
    def _stream_stop(self) -> None:
        """Stop continuous sending and drain what is left on the line."""

    @abstractmethod
    def _close(self) -> None:
        """Release the link (called once)."""


class LineBalanceDriver(BalanceDriver):
    """A balance that answers in lines ending in LF over a serial link (MT-SICS, SBI).

    :param link: an open serial link (``write``, ``read_until``, ``reset_input``, ``close``).
    :param clock: clock that stamps readings and paces retries.
    """

    def __init__(self, link: Any, *, clock: Clock | None = None) -> None:
        super().__init__(clock=clock)
        self._link = link

    @property
    def link(self) -> Any:
        """The serial link (for traces and tests)."""
        return self._link

    def _read_raw_line(self) -> tuple[bytes, int]:
        """The next line as sent, and the monotonic time it was read, ns.

        :raises LinkTimeoutError: the link timed out before a whole line arrived.
        """
        data = self._link.read_until(b"\n")
        stamp_ns = self._clock.monotonic_ns()
        if not data.endswith(b"\n"):
            raise LinkTimeoutError(f"balance sent no complete line (got {data!r})")
        return data, stamp_ns

    def _close(self) -> None:
        self._link.close()


def _fault_error(fault: BalanceFault, what: str, reply: Any = None) -> DeviceError:
    return DeviceError(f"balance refused {what}: {fault.name.lower()}", reply=reply, error_code=fault.value)


#: Default serial settings per balance family (read the real values from the balance menu).
DEFAULT_SERIAL_SETTINGS: dict[str, dict[str, Any]] = {
    "mtsics": {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1},
    "sbi": {"baudrate": 9600, "bytesize": 7, "parity": "O", "stopbits": 1},
}


def open_balance(
    name: str,
    url: str,
    *,
    baudrate: int | None = None,
    bytesize: int | None = None,
    parity: str | None = None,
    stopbits: int | None = None,
    timeout_s: float = 2.0,
    trace_path: str | None = None,
    clock: Clock | None = None,
    driver_options: dict[str, Any] | None = None,
) -> BalanceDriver:
    """Open a balance by driver name on a serial URL.

    Ports are opened only through :func:`hal.transport.open_serial`. Serial
    settings not given default to :data:`DEFAULT_SERIAL_SETTINGS` for the family.

    :param name: registry name (``"mtsics"`` or ``"sbi"``).
    :param url: anything ``serial.serial_for_url`` accepts.
    :param timeout_s: read timeout of one reply, s.
    :param trace_path: file receiving a timestamped hex + ASCII trace of every byte.
    :param clock: clock for timestamps and retries (the system clock by default).
    :param driver_options: extra keywords for the driver class (e.g. ``{"autoprint": True}`` for SBI).
    :raises HalUnavailableError: no such driver.
    :raises ConnectError: the port could not be opened.
    """
    from hal import registry, transport

    driver_cls = registry.resolve("balance", name)
    settings = dict(DEFAULT_SERIAL_SETTINGS.get(name, DEFAULT_SERIAL_SETTINGS["mtsics"]))
    for key, value in (("baudrate", baudrate), ("bytesize", bytesize), ("parity", parity), ("stopbits", stopbits)):
        if value is not None:
            settings[key] = value
    link = transport.open_serial(url, timeout_s=timeout_s, trace_path=trace_path, clock=clock, **settings)
    try:
        return driver_cls(link, clock=clock, **(driver_options or {}))
    except BaseException:
        link.close()
        raise
