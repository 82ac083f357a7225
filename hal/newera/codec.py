"""New Era command and reply codec: typed requests and replies, no I/O.

Written from the NE-500/1000/1600 manuals (see ``reference/pump-protocols.md``
§1). Framing (Basic CR / STX-ETX, Safe length+CRC) lives in
:mod:`hal.newera.framing`; this module turns intent into packet *data* and
packet data back into typed replies.

Request data::

    <address 0..99> <COMMAND> [<argument>]        e.g. b"0RAT5.000MH", b"0DIS", b"0"
    *<COMMAND> [<argument>]                       system command, e.g. b"*RESET"

The pump strips spaces and upper-cases what it receives, so requests are sent
compact and upper-case.

Reply data::

    <address, 2 digits> <prompt> [<data> | <error>]          b"00S", b"00P0.21MM", b"00S?OOR"
    <address, 2 digits> A ? <alarm letter> [<data>]           b"00A?R"

Numbers (``<float>``) carry at most 4 digits and at most 3 of them after the
point: ``0.001``, ``9.999``, ``12.34``, ``9999``. The encoders here pick the
representation that keeps the most resolution and refuse, with
:class:`~cython_ext.errors.CapabilityError`, any value that cannot be represented
within the stated tolerance. Nothing is ever truncated silently; callers get
the represented value back and can read it back from the pump.

Device-reported alarms and errors are data in :class:`Reply`; deciding to
raise is the driver's job.
"""

from __future__ import annotations

import enum
import functools
import math
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from cython_ext.errors import CapabilityError, CommunicationError, ConfigError
from hal.newera.framing import encode_request

#: Highest pump bus address.
MAX_ADDRESS = 99
#: Most digits a wire number may carry (the decimal point is not a digit).
MAX_DIGITS = 4
#: Most digits after the decimal point.
MAX_DECIMALS = 3
#: Default largest relative representation error accepted, parts per million.
DEFAULT_TOLERANCE_PPM = 1000
#: Syringe diameters up to this (inclusive) count volumes in µL; above it, in mL.
UL_DIAMETER_LIMIT_MM = Decimal("14.00")
#: NE-1000 plunger speed limits (manual §12.5, as read by labmcp; bench-verify).
MAX_PLUNGER_SPEED_CM_PER_MIN = Decimal("5.1005")
MIN_PLUNGER_SPEED_CM_PER_H = Decimal("0.004205")

NL_PER_UL = 1000
NL_PER_ML = 1_000_000
MIN_PER_H = 60


class ReplyFormatError(CommunicationError):
    """Reply bytes that do not follow the New Era reply grammar.

    :param raw: the offending packet data.
    """

    def __init__(self, message: str, raw: bytes) -> None:
        super().__init__(f"{message}: {raw!r}", error_code="NE_BAD_REPLY")
        self.raw = raw


class Prompt(enum.Enum):
    """Status character that starts every normal reply."""

    INFUSING = "I"
    WITHDRAWING = "W"
    STOPPED = "S"
    PAUSED = "P"
    TIMED_PAUSE = "T"
    USER_WAIT = "U"
    PURGING = "X"


class AlarmType(enum.Enum):
    """Letter after ``A?`` in an alarm reply."""

    RESET = "R"
    STALL = "S"
    COMMS_TIMEOUT = "T"
    PROGRAM_ERROR = "E"
    OUT_OF_RANGE = "O"


class ErrorCode(enum.Enum):
    """Command error reported in the data field after the prompt."""

    UNRECOGNISED = "?"
    NOT_APPLICABLE = "?NA"
    OUT_OF_RANGE = "?OOR"
    BAD_PACKET = "?COM"
    IGNORED = "?IGN"


class RateUnits(enum.Enum):
    """Rate units and how many nL/h one unit is."""

    UL_PER_MIN = "UM"
    ML_PER_MIN = "MM"
    UL_PER_H = "UH"
    ML_PER_H = "MH"

    @property
    def nl_per_h(self) -> int:
        """nL/h in one of this unit."""
        return _RATE_UNIT_NL_PER_H[self]


_RATE_UNIT_NL_PER_H = {
    RateUnits.UL_PER_MIN: NL_PER_UL * MIN_PER_H,
    RateUnits.ML_PER_MIN: NL_PER_ML * MIN_PER_H,
    RateUnits.UL_PER_H: NL_PER_UL,
    RateUnits.ML_PER_H: NL_PER_ML,
}


class VolumeUnits(enum.Enum):
    """Volume units and how many nL one unit is."""

    UL = "UL"
    ML = "ML"

    @property
    def nl(self) -> int:
        """nL in one of this unit."""
        return NL_PER_UL if self is VolumeUnits.UL else NL_PER_ML


class WireDirection(enum.Enum):
    """Arguments of ``DIR``."""

    INFUSE = "INF"
    WITHDRAW = "WDR"
    REVERSE = "REV"
    STICKY = "STK"


class Command(enum.Enum):
    """Command mnemonics. ``STATUS`` is the empty packet."""

    STATUS = ""
    DIA = "DIA"
    RAT = "RAT"
    VOL = "VOL"
    DIR = "DIR"
    RUN = "RUN"
    PUR = "PUR"
    STP = "STP"
    DIS = "DIS"
    CLD = "CLD"
    PHN = "PHN"
    FUN = "FUN"
    SAF = "SAF"
    VER = "VER"
    AL = "AL"
    PF = "PF"
    LOC = "LOC"
    ADR = "*ADR"
    RESET = "*RESET"

    @property
    def is_system(self) -> bool:
        """True for ``*`` commands, which carry no address."""
        return self.value.startswith("*")


#: Commands that change delivery (with an argument, or always for actions).
DELIVERY_COMMANDS: frozenset[Command] = frozenset(
    {Command.RAT, Command.VOL, Command.DIR, Command.RUN, Command.STP, Command.PUR, Command.DIA,
     Command.CLD, Command.PHN, Command.FUN, Command.RESET}
)
#: Commands that act even without an argument.
ACTION_COMMANDS: frozenset[Command] = frozenset({Command.RUN, Command.STP, Command.PUR, Command.RESET})


def check_address(address: int) -> int:
    """Return ``address`` if it is a valid bus address.

    :raises ConfigError: not an int in [0, 99].
    """
    if isinstance(address, bool) or not isinstance(address, int) or not 0 <= address <= MAX_ADDRESS:
        raise ConfigError("address", address, f"an integer in [0, {MAX_ADDRESS}]")
    return address


@dataclass(frozen=True)
class Request:
    """One host-to-pump packet.

    :ivar address: bus address 0-99 (ignored for system commands).
    :ivar command: the mnemonic.
    :ivar argument: argument text, already in wire form (upper case, no spaces).
    """

    address: int
    command: Command
    argument: str = ""

    def __post_init__(self) -> None:
        check_address(self.address)
        if self.argument and not re.fullmatch(r"[0-9A-Z.]+", self.argument):
            raise ConfigError("argument", self.argument, "upper-case letters, digits and '.' only")
        if self.command is Command.STATUS and self.argument:
            raise ConfigError("argument", self.argument, "empty for a status query")

    @property
    def is_query(self) -> bool:
        """True when the request only reads (no argument and not an action)."""
        return not self.argument and self.command not in ACTION_COMMANDS

    @functools.cached_property
    def changes_delivery(self) -> bool:
        """True when the request may change what the pump delivers; never retry it blindly."""
        return self.command in DELIVERY_COMMANDS and not self.is_query

    def data(self) -> bytes:
        """The packet data (no framing)."""
        prefix = "" if self.command.is_system else str(self.address)
        return f"{prefix}{self.command.value}{self.argument}".encode("ascii")

    def encode(self, *, safe: bool) -> bytes:
        """The framed packet, ready for the wire (kept on the request: the poll's queries are the same objects)."""
        key = "_safe_packet" if safe else "_basic_packet"
        packet = self.__dict__.get(key)
        if packet is None:
            packet = self.__dict__[key] = _encoded(self, safe)
        return packet


@functools.lru_cache(maxsize=256)
def _encoded(request: Request, safe: bool) -> bytes:
    return encode_request(request.data(), safe=safe)


@dataclass(frozen=True)
class Reply:
    """One decoded pump-to-host packet.

    Exactly one of ``prompt`` and ``alarm`` is set.

    :ivar address: the replying pump's address.
    :ivar prompt: status character, or None when an alarm replaced it.
    :ivar alarm: the alarm reported (and, by this reply, acknowledged), or None.
    :ivar error: the command error, or None.
    :ivar data: payload text after the status (empty for status-only replies).
    """

    address: int
    prompt: Prompt | None
    alarm: AlarmType | None = None
    error: ErrorCode | None = None
    data: str = ""

    @property
    def ok(self) -> bool:
        """True when the reply carries neither an alarm nor an error."""
        return self.alarm is None and self.error is None

    def encode_data(self) -> bytes:
        """Packet data for this reply (the inverse of :func:`parse_reply`)."""
        status = f"A?{self.alarm.value}" if self.alarm is not None else self.prompt.value  # type: ignore[union-attr]
        tail = self.error.value if self.error is not None else self.data
        return f"{self.address:02d}{status}{tail}".encode("ascii")


_ERRORS_BY_TEXT = {e.value: e for e in ErrorCode}
_PROMPTS = {p.value: p for p in Prompt}
_ALARMS = {a.value: a for a in AlarmType}


@functools.lru_cache(maxsize=1024)
def parse_reply(data: bytes) -> Reply:
    """Decode reply packet data (framing already removed). Replies are immutable, so repeats are cached.

    :param data: e.g. ``b"00S"``, ``b"00P0.21MM"``, ``b"00A?S"``, ``b"00S?OOR"``.
    :raises ReplyFormatError: the bytes are not a New Era reply.
    """
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise ReplyFormatError("non-ASCII reply", data) from None
    if not text.isprintable():
        raise ReplyFormatError("control character in reply", data)
    match = re.fullmatch(r"(\d{1,2})(A\?(.)|([A-Z]))(.*)", text, flags=re.DOTALL)
    if match is None:
        raise ReplyFormatError("reply does not start with an address and a status", data)
    address = int(match.group(1))
    prompt: Prompt | None = None
    alarm: AlarmType | None = None
    if match.group(3) is not None:
        alarm = _ALARMS.get(match.group(3))
        if alarm is None:
            raise ReplyFormatError(f"unknown alarm type {match.group(3)!r}", data)
    else:
        prompt = _PROMPTS.get(match.group(4))
        if prompt is None:
            raise ReplyFormatError(f"unknown prompt {match.group(4)!r}", data)
    tail = match.group(5)
    if tail.startswith("?"):
        error = _ERRORS_BY_TEXT.get(tail)
        if error is None:
            raise ReplyFormatError(f"unknown error {tail!r}", data)
        return Reply(address, prompt, alarm, error, "")
    return Reply(address, prompt, alarm, None, tail)


# -- numbers -----------------------------------------------------------------

def format_number(value: Fraction | Decimal | int) -> str:
    """Write ``value`` exactly in the wire number format, with as few decimals as it needs.

    :raises CapabilityError: ``value`` is negative or needs more than 4 digits or 3 decimals.
    """
    exact = Fraction(value)
    for decimals in range(MAX_DECIMALS + 1):
        scaled = exact * 10**decimals
        if scaled.denominator == 1:
            text = _render(int(scaled), decimals)
            if text is not None:
                return text
            break
    raise CapabilityError(
        f"value (={float(exact):g}) must be >= 0 with at most {MAX_DIGITS} digits and "
        f"{MAX_DECIMALS} decimals"
    )


def _render(scaled: int, decimals: int) -> str | None:
    if scaled < 0:
        return None
    if decimals == 0:
        text = str(scaled)
    else:
        digits = str(scaled).rjust(decimals + 1, "0")
        text = f"{digits[:-decimals]}.{digits[-decimals:]}"
    if sum(c.isdigit() for c in text) > MAX_DIGITS:
        return None
    return text


def nearest_number(value: Fraction) -> tuple[str, Fraction] | None:
    """The wire number nearest to ``value`` with the most resolution available.

    Ties round half to even. Returns None when ``value`` is negative or too large
    for 4 digits.

    :return: ``(text, represented_value)``.
    """
    if value < 0:
        return None
    for decimals in range(MAX_DECIMALS, -1, -1):
        scaled = round(value * 10**decimals)
        text = _render(scaled, decimals)
        if text is not None:
            return text, Fraction(scaled, 10**decimals)
    return None


def relative_error_ppm(requested: int | Fraction, represented: int | Fraction) -> Fraction:
    """``|represented - requested| / requested`` in parts per million (requested > 0)."""
    return abs(Fraction(represented) - Fraction(requested)) * 1_000_000 / Fraction(requested)


# -- settings: intent in integer units -> wire text --------------------------


@dataclass(frozen=True)
class RateSetting:
    """A rate as it will go on the wire.

    :ivar text: the number, e.g. ``"23.35"``.
    :ivar units: the units, e.g. ``RateUnits.UL_PER_H``.
    :ivar rate_nl_per_h: the rate that text represents exactly, nL/h.
    """

    text: str
    units: RateUnits
    rate_nl_per_h: int

    @property
    def argument(self) -> str:
        """The ``RAT`` argument, e.g. ``"23.35UH"``."""
        return f"{self.text}{self.units.value}"


#: Order used to break ties between equally precise rate units.
RATE_UNIT_PREFERENCE: tuple[RateUnits, ...] = (
    RateUnits.UL_PER_H, RateUnits.ML_PER_H, RateUnits.UL_PER_MIN, RateUnits.ML_PER_MIN,
)


def encode_rate(
    rate_nl_per_h: int,
    *,
    tolerance_ppm: int = DEFAULT_TOLERANCE_PPM,
    units: RateUnits | None = None,
) -> RateSetting:
    """Choose the rate units and number that represent ``rate_nl_per_h`` most closely.

    :param rate_nl_per_h: requested rate, nL/h, > 0.
    :param tolerance_ppm: largest accepted relative representation error, ppm.
    :param units: force these units (the pump refuses a units change while running).
    :return: the setting; its ``rate_nl_per_h`` is what the pump will hold.
    :raises ConfigError: ``rate_nl_per_h`` is not a positive int.
    :raises CapabilityError: no candidate units represent it within tolerance.
    """
    if isinstance(rate_nl_per_h, bool) or not isinstance(rate_nl_per_h, int) or rate_nl_per_h <= 0:
        raise ConfigError("rate_nl_per_h", rate_nl_per_h, "an integer > 0 nL/h")
    return _encode_rate(int(rate_nl_per_h), tolerance_ppm, units)


@functools.lru_cache(maxsize=256)
def _encode_rate(rate_nl_per_h: int, tolerance_ppm: int, units: RateUnits | None) -> RateSetting:
    """:func:`encode_rate` of a checked rate (pure, and the programme's few rates recur all run long)."""
    candidates = (units,) if units is not None else RATE_UNIT_PREFERENCE
    best: tuple[Fraction, RateSetting] | None = None
    for unit in candidates:
        found = nearest_number(Fraction(rate_nl_per_h, unit.nl_per_h))
        if found is None or found[1] == 0:
            continue
        text, value = found
        represented = value * unit.nl_per_h
        error = relative_error_ppm(rate_nl_per_h, represented)
        if best is None or error < best[0]:
            best = (error, RateSetting(text, unit, int(represented)))
    if best is None or best[0] > tolerance_ppm:
        shown = "none" if best is None else f"{float(best[0]):.0f} ppm"
        where = f"in {units.value}" if units is not None else "in any units"
        raise CapabilityError(
            f"rate_nl_per_h (={rate_nl_per_h}) cannot be represented {where} within "
            f"{tolerance_ppm} ppm (best: {shown}); nothing was sent",
            error_code="NE_RATE_UNREPRESENTABLE",
        )
    return best[1]


@dataclass(frozen=True)
class VolumeSetting:
    """A target volume as it will go on the wire.

    :ivar text: the number in ``units``.
    :ivar units: the pump's volume units (fixed by the syringe diameter).
    :ivar volume_nl: the volume that text represents exactly, nL.
    """

    text: str
    units: VolumeUnits
    volume_nl: int


def encode_volume(
    volume_nl: int, units: VolumeUnits, *, tolerance_ppm: int = DEFAULT_TOLERANCE_PPM
) -> VolumeSetting:
    """Represent a target volume in the pump's volume units; 0 means "pump continuously".

    :param volume_nl: target volume, nL, >= 0.
    :param units: the units the pump is using.
    :param tolerance_ppm: largest accepted relative representation error, ppm.
    :raises ConfigError: ``volume_nl`` is not a non-negative int.
    :raises CapabilityError: not representable within tolerance.
    """
    if isinstance(volume_nl, bool) or not isinstance(volume_nl, int) or volume_nl < 0:
        raise ConfigError("volume_nl", volume_nl, "an integer >= 0 nL")
    found = nearest_number(Fraction(volume_nl, units.nl))
    if found is not None and volume_nl == 0:
        return VolumeSetting(found[0], units, 0)
    if found is not None and found[1] > 0:
        represented = found[1] * units.nl
        if relative_error_ppm(volume_nl, represented) <= tolerance_ppm:
            return VolumeSetting(found[0], units, int(represented))
    raise CapabilityError(
        f"volume_nl (={volume_nl}) cannot be represented in {units.value} within "
        f"{tolerance_ppm} ppm; nothing was sent",
        error_code="NE_VOLUME_UNREPRESENTABLE",
    )


def to_decimal(value: object, field: str) -> Decimal:
    """Turn an int, Decimal, decimal string or finite float into an exact Decimal.

    Floats are taken by their shortest repr (``14.43`` -> ``Decimal("14.43")``).

    :raises ConfigError: anything else, or a non-finite value.
    """
    if isinstance(value, bool):
        raise ConfigError(field, value, "a decimal number")
    try:
        if isinstance(value, float):
            result = Decimal(repr(value))
        elif isinstance(value, (int, Decimal, str)):
            result = Decimal(value)
        else:
            raise ConfigError(field, value, "a decimal number")
    except InvalidOperation:
        raise ConfigError(field, value, "a decimal number") from None
    if not result.is_finite():
        raise ConfigError(field, value, "a finite decimal number")
    return result


def encode_diameter(diameter_mm: Decimal) -> str:
    """Write a syringe diameter exactly; the pump's 4-digit format must hold it.

    :raises CapabilityError: needs more than 4 digits or 3 decimals (never rounded).
    """
    try:
        return format_number(diameter_mm)
    except CapabilityError:
        raise CapabilityError(
            f"syringe_diameter_mm (={diameter_mm}) must have at most {MAX_DIGITS} digits and "
            f"{MAX_DECIMALS} decimals; nothing was sent",
            error_code="NE_DIAMETER_UNREPRESENTABLE",
        ) from None


def volume_units_for_diameter(diameter_mm: Decimal) -> VolumeUnits:
    """The volume units the pump selects for a diameter: <= 14.00 mm µL, above mL."""
    return VolumeUnits.UL if diameter_mm <= UL_DIAMETER_LIMIT_MM else VolumeUnits.ML


def syringe_rate_envelope_nl_per_h(diameter_mm: Decimal) -> tuple[int, int]:
    """Lowest and highest rate the mechanism can drive for a syringe, nL/h.

    ``Qmin = pi (d/20)^2 * 0.004205 cm/h`` and ``Qmax = pi (d/20)^2 * 5.1005 cm/min``
    with ``d`` in mm (area in cm², so cm³ = mL). The minimum is rounded up and
    the maximum down, so the envelope never claims more than the pump can do.

    :return: ``(min_rate_nl_per_h, max_rate_nl_per_h)``.
    """
    area_cm2 = math.pi * (float(diameter_mm) / 20.0) ** 2
    min_nl_per_h = area_cm2 * float(MIN_PLUNGER_SPEED_CM_PER_H) * NL_PER_ML
    max_nl_per_h = area_cm2 * float(MAX_PLUNGER_SPEED_CM_PER_MIN) * MIN_PER_H * NL_PER_ML
    return math.ceil(min_nl_per_h), math.floor(max_nl_per_h)


# -- reply payloads ----------------------------------------------------------


@dataclass(frozen=True)
class WireRate:
    """A rate as the pump reports it.

    :ivar rate_nl_per_h: the rate, nL/h (exact: every valid reply is a whole number of nL/h).
    :ivar units: the units the pump holds it in.
    """

    rate_nl_per_h: int
    units: RateUnits


_REPLY_NUMBER_RE = re.compile(r"(\d*)(?:\.(\d*))?")


@functools.lru_cache(maxsize=1024)
def parse_scaled(text: str, unit_nl: int, *, counter: bool = False) -> int:
    """Read a number from a reply and return it times ``unit_nl``, exactly, as an integer.

    A pure function of its arguments, kept for the last 1024 (a poll reads the same withdrawn
    counter, and often the same infused one, every time); a refused text is never kept.

    A pump writes at most 4 digits, at most 3 of them after the point. Query
    replies carry exactly 4 significant digits, fixed by magnitude (``0.000``,
    ``16.09``, ``100.0``, ``1000.``); replies quoted from older firmware drop
    trailing zeros (``0.21``), and are read too. A dispensed counter
    (``counter=True``) must be in the fixed format, since that is what the
    pump sends and a digit lost or added on a Basic line then shows; one that
    has outgrown 4 digits is a whole number. Anything else (more digits, a
    second point, a value finer than 1 nL) is not a reply the pump can send.

    :param text: the number as received.
    :param unit_nl: nL (or nL/h) in one unit of the number.
    :param counter: a dispensed counter: the fixed format, or a whole number beyond 4 digits.
    :raises ReplyFormatError: not a number in the pump's format.
    """
    match = _REPLY_NUMBER_RE.fullmatch(text)
    if match is None:
        raise ReplyFormatError("not a number", text.encode("ascii", "replace"))
    whole, frac = match.group(1), match.group(2) or ""
    digits = len(whole) + len(frac)
    if not digits or len(frac) > MAX_DECIMALS:
        raise ReplyFormatError("not a number in the pump's format", text.encode("ascii", "replace"))
    if digits > MAX_DIGITS and not (counter and match.group(2) is None and whole[0] != "0"):
        raise ReplyFormatError(f"more than {MAX_DIGITS} digits", text.encode("ascii", "replace"))
    if counter and digits <= MAX_DIGITS and (digits != MAX_DIGITS or (len(whole) > 1 and whole[0] == "0")
                                             or match.group(2) is None):
        raise ReplyFormatError("counter not in the fixed 4-digit format", text.encode("ascii", "replace"))
    scale = 10 ** len(frac)
    value, rest = divmod(int(whole + frac) * unit_nl, scale)
    if rest:
        raise ReplyFormatError("value is finer than 1 nL", text.encode("ascii", "replace"))
    return value


_RATE_UNITS_BY_TEXT = {u.value: u for u in RateUnits}
_VOLUME_UNIT_NL = {u.value: u.nl for u in VolumeUnits}
_RATE_RE = re.compile(r"(?P<num>[0-9.]+)(?P<units>UM|MM|UH|MH)")
_DIS_RE = re.compile(r"I(?P<inf>[0-9.]+)W(?P<wdr>[0-9.]+)(?P<units>UL|ML)")
_VOL_RE = re.compile(r"(?P<num>[0-9.]+)(?P<units>UL|ML)?")
_VER_RE = re.compile(r"(?P<model>NE\d+)(?P<firmware>(?:X\d+)?V[0-9.]+)")


def parse_rate(data: str) -> WireRate:
    """Decode a ``RAT`` query reply payload, e.g. ``"0.21MM"``.

    :raises ReplyFormatError: not a rate.
    """
    match = _RATE_RE.fullmatch(data)
    if match is None:
        raise ReplyFormatError("not a rate", data.encode("ascii", "replace"))
    units = _RATE_UNITS_BY_TEXT[match["units"]]
    return WireRate(parse_scaled(match["num"], units.nl_per_h), units)


def parse_dispensed(data: str) -> tuple[int, int]:
    """Decode a ``DIS`` reply payload ``I<float>W<float><UL|ML>`` into nL.

    :return: ``(infused_nl, withdrawn_nl)``.
    :raises ReplyFormatError: not a dispensed reading.
    """
    match = _DIS_RE.fullmatch(data)
    if match is None:
        raise ReplyFormatError("not a dispensed reading", data.encode("ascii", "replace"))
    unit_nl = _VOLUME_UNIT_NL[match["units"]]
    return parse_scaled(match["inf"], unit_nl, counter=True), parse_scaled(match["wdr"], unit_nl, counter=True)


def parse_volume(data: str, default_units: VolumeUnits) -> int:
    """Decode a ``VOL`` query payload (``"5.000"`` or ``"5.000ML"``) into nL.

    :param default_units: units to assume when the reply names none.
    :raises ReplyFormatError: not a volume.
    """
    match = _VOL_RE.fullmatch(data)
    if match is None:
        raise ReplyFormatError("not a volume", data.encode("ascii", "replace"))
    units = VolumeUnits(match["units"]) if match["units"] else default_units
    return parse_scaled(match["num"], units.nl)


def parse_diameter(data: str) -> Decimal:
    """Decode a ``DIA`` query payload into millimetres.

    :raises ReplyFormatError: not a number.
    """
    return Decimal(parse_scaled(data, 1000)) / 1000


def parse_direction(data: str) -> WireDirection:
    """Decode a ``DIR`` query payload (``"INF"`` or ``"WDR"``).

    :raises ReplyFormatError: anything else.
    """
    if data not in ("INF", "WDR"):
        raise ReplyFormatError("not a direction", data.encode("ascii", "replace"))
    return WireDirection(data)


def parse_version(data: str) -> tuple[str, str]:
    """Decode a ``VER`` payload such as ``"NE1000V3.928"`` into ``(model, firmware)``.

    :raises ReplyFormatError: not a version string.
    """
    match = _VER_RE.fullmatch(data)
    if match is None:
        raise ReplyFormatError("not a version", data.encode("ascii", "replace"))
    return match["model"], match["firmware"]


# -- request builders --------------------------------------------------------


@functools.lru_cache(maxsize=128)
def status_request(address: int) -> Request:
    """The empty packet: a status query that changes nothing."""
    return Request(address, Command.STATUS)


@functools.lru_cache(maxsize=512)
def query(address: int, command: Command) -> Request:
    """A parameter query (``DIA``, ``RAT``, ``VOL``, ``DIR``, ``DIS``, ``VER``...)."""
    request = Request(address, command)
    if not request.is_query:
        raise ConfigError("command", command.value, "a parameter command, not an action")
    return request


def set_rate_request(address: int, setting: RateSetting) -> Request:
    """``RAT <float><units>``."""
    return Request(address, Command.RAT, setting.argument)


def set_volume_request(address: int, setting: VolumeSetting) -> Request:
    """``VOL <float>`` (the units follow the diameter)."""
    return Request(address, Command.VOL, setting.text)


def set_volume_units_request(address: int, units: VolumeUnits) -> Request:
    """``VOL UL`` or ``VOL ML``."""
    return Request(address, Command.VOL, units.value)


def set_diameter_request(address: int, diameter_mm: Decimal) -> Request:
    """``DIA <float>``; the diameter must be exactly representable."""
    return Request(address, Command.DIA, encode_diameter(diameter_mm))


def set_direction_request(address: int, direction: WireDirection) -> Request:
    """``DIR INF|WDR|REV|STK``."""
    return Request(address, Command.DIR, direction.value)


def run_request(address: int, phase: int | None = None) -> Request:
    """``RUN`` (start the pumping program, or resume a pause) or ``RUN n`` (start it at phase n).

    :raises ConfigError: ``phase`` not in [1, 41].
    """
    if phase is None:
        return Request(address, Command.RUN)
    return Request(address, Command.RUN, str(check_phase(phase)))


#: Program phases of base NE-1000 firmware (the X2 upgrade has 340).
MAX_PHASES = 41


def check_phase(phase: int) -> int:
    """Return ``phase`` if it is a program phase number.

    :raises ConfigError: not an int in [1, 41].
    """
    if isinstance(phase, bool) or not isinstance(phase, int) or not 1 <= phase <= MAX_PHASES:
        raise ConfigError("phase", phase, f"an integer in [1, {MAX_PHASES}]")
    return phase


def select_phase_request(address: int, phase: int) -> Request:
    """``PHN n``: select program phase n for the phase commands that follow (``FUN RAT VOL DIR``)."""
    return Request(address, Command.PHN, str(check_phase(phase)))


class PhaseFunction(enum.Enum):
    """The phase functions a driver-written program uses."""

    RATE = "RAT"
    STOP = "STP"
    JUMP = "JMP"


def set_function_request(address: int, function: PhaseFunction, target_phase: int | None = None) -> Request:
    """``FUN RAT``, ``FUN STP`` or ``FUN JMP n`` (go on at phase n) for the selected phase.

    :raises ConfigError: ``target_phase`` missing for ``JMP``, given for another function, or not in [1, 41].
    """
    if (function is PhaseFunction.JUMP) != (target_phase is not None):
        raise ConfigError("target_phase", target_phase, "a phase number for JMP only")
    if target_phase is None:
        return Request(address, Command.FUN, function.value)
    return Request(address, Command.FUN, f"{function.value}{check_phase(target_phase)}")


def parse_phase_number(data: str) -> int:
    """Decode a ``PHN`` query payload (``"1"`` to ``"41"``).

    :raises ReplyFormatError: not a phase number.
    """
    if not (data.isdigit() and len(data) <= 3 and 1 <= int(data) <= MAX_PHASES):
        raise ReplyFormatError("not a phase number", data.encode("ascii", "replace"))
    return int(data)


_FUNCTION_RE = re.compile(r"(RAT|INC|DEC|STP|LPS|LPE|EVR|BEP|JMP|LOP|PAS|IF|EVN|OUT)(\d{0,3})")


def parse_function(data: str) -> str:
    """Decode a ``FUN`` query payload (``"RAT"``, ``"STP"``, ``"JMP5"``...) into its text.

    :raises ReplyFormatError: not a phase function.
    """
    if _FUNCTION_RE.fullmatch(data) is None:
        raise ReplyFormatError("not a phase function", data.encode("ascii", "replace"))
    return data


def stop_request(address: int) -> Request:
    """``STP``: the first pauses, a second while paused stops."""
    return Request(address, Command.STP)


def purge_request(address: int) -> Request:
    """``PUR``: purge at maximum rate until stopped."""
    return Request(address, Command.PUR)


def clear_dispensed_request(address: int, direction: WireDirection) -> Request:
    """``CLD INF`` or ``CLD WDR``."""
    if direction not in (WireDirection.INFUSE, WireDirection.WITHDRAW):
        raise ConfigError("direction", direction.value, "INF or WDR")
    return Request(address, Command.CLD, direction.value)


#: Longest Safe-mode watchdog, seconds.
MAX_SAFE_TIMEOUT_S = 255


def safe_mode_request(address: int, timeout_s: int) -> Request:
    """``SAF n``: 0 selects Basic mode, 1-255 Safe mode with an n-second watchdog.

    :raises ConfigError: ``timeout_s`` not an int in [0, 255].
    """
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int) or not 0 <= timeout_s <= MAX_SAFE_TIMEOUT_S:
        raise ConfigError("safe_mode_timeout_s", timeout_s, f"an integer in [0, {MAX_SAFE_TIMEOUT_S}] s")
    return Request(address, Command.SAF, str(timeout_s))
