"""Mettler Toledo MT-SICS codec: I/O-free encoding and decoding of command and reply lines.

Wire format (ASCII, both directions)::

    host -> balance   <COMMAND>[ <param>]* CR LF          e.g. "SI\\r\\n"
    balance -> host   <ID> <status>[ <field>]* CR LF       e.g. "S S     100.00 g\\r\\n"

Replies are parsed by fields (split on whitespace), never by columns: the
weight field is right-aligned and its width varies by model. The reply
identifier is the command name, except that the weight commands ``S``, ``SI``
and ``SIR`` all answer with ``S``. Status field meanings:

====== ===========================================================
``S``  stable weight follows             ``D``  dynamic (unstable) weight follows
``A``  command executed (info follows)   ``I``  not executable (busy, stability timeout)
``+``  overload / above range            ``-``  underload / below range
``L``  logical error (parameter not allowed)
====== ===========================================================

A reply of just ``ES``, ``ET`` or ``EL`` is a general syntax, transmission or
logic error. Everything the balance says, including its errors, decodes to a
reply object; :func:`decode_reply` never raises. The exact ``Z``/``T`` reply
strings are not confirmed by a Mettler manual (reference §3.1, marked [U]).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from hal.balance import MASS_UNIT_UG, format_mass, parse_mass_ug
from cython_ext.errors import ConfigError

CRLF = b"\r\n"
#: Longest reply line accepted, bytes (without CR LF). Longer lines decode as malformed.
MAX_LINE_BYTES = 128
#: Commands this project uses.
STABLE_WEIGHT = "S"
IMMEDIATE_WEIGHT = "SI"
REPEAT_IMMEDIATE = "SIR"
ZERO = "Z"
ZERO_IMMEDIATE = "ZI"
TARE = "T"
TARE_IMMEDIATE = "TI"
TARE_QUERY = "TA"
TARE_CLEAR = "TAC"
RESET = "@"
INFO_LEVELS = "I1"
INFO_MODEL = "I2"
INFO_SOFTWARE = "I3"
INFO_SERIAL = "I4"
#: Reply identifier of each weight command.
WEIGHT_REPLY_ID = "S"

_COMMAND = re.compile(r"^(@|[A-Z][A-Z0-9]{0,7})$")
_PARAM = re.compile(r"^[\x21-\x7e]{1,32}$")


class ReplyStatus(enum.Enum):
    """The second field of a reply."""

    STABLE = "S"
    DYNAMIC = "D"
    EXECUTED = "A"
    NOT_EXECUTABLE = "I"
    OVERLOAD = "+"
    UNDERLOAD = "-"
    LOGIC = "L"


class GeneralError(enum.Enum):
    """One-token general error replies."""

    SYNTAX = "ES"
    TRANSMISSION = "ET"
    LOGIC = "EL"


@dataclass(frozen=True)
class WeightReply:
    """A weight: ``S S``/``S D`` (weighing), ``T S`` (tare), ``TA A`` (stored tare).

    :ivar command: reply identifier (``"S"``, ``"T"``, ``"TA"``...).
    :ivar stable: True for status ``S`` or ``A``, False for ``D``.
    :ivar mass_ug: the value, µg.
    :ivar resolution_ug: value of the last digit sent, µg.
    :ivar unit: the unit as sent.
    """

    command: str
    stable: bool
    mass_ug: int
    resolution_ug: int
    unit: str


@dataclass(frozen=True)
class StatusReply:
    """A reply that is only a status, e.g. ``Z A``, ``S I``, ``S +``."""

    command: str
    status: ReplyStatus


@dataclass(frozen=True)
class InfoReply:
    """An executed command with quoted text fields, e.g. ``I4 A "B123456789"``."""

    command: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class ErrorReply:
    """A general error (``ES``, ``ET``, ``EL``)."""

    error: GeneralError


@dataclass(frozen=True)
class MalformedReply:
    """Bytes that are not a valid reply; ``reason`` says why."""

    raw: bytes
    reason: str


Reply = WeightReply | StatusReply | InfoReply | ErrorReply | MalformedReply

_QUOTED = re.compile(r'"([^"]*)"')


def encode_command(command: str, *params: str) -> bytes:
    """Encode one command line.

    :param command: upper-case command name (``"SI"``, ``"@"``...).
    :param params: parameters, each printable ASCII without spaces.
    :raises ConfigError: a lower-case or malformed name or parameter (nothing is encoded).
    :return: the bytes to send, ending in CR LF.
    """
    if not isinstance(command, str) or not _COMMAND.match(command):
        raise ConfigError("command", command, "an upper-case MT-SICS command name")
    for index, param in enumerate(params):
        if not isinstance(param, str) or not _PARAM.match(param):
            raise ConfigError(f"params[{index}]", param, "printable ASCII without spaces, 1-32 characters")
    return " ".join((command, *params)).encode("ascii") + CRLF


def decode_command(line: bytes) -> tuple[str, tuple[str, ...]] | MalformedReply:
    """Balance side: split a received command line (without CR LF) into name and parameters.

    Commands are case-sensitive; a lower-case name is returned as-is and the
    balance answers it with ``ES``.
    """
    text = line.decode("latin-1").strip()
    tokens = text.split()
    if not tokens:
        return MalformedReply(line, "empty command line")
    return tokens[0], tuple(tokens[1:])


class LineDeframer:
    """Split a byte stream into lines ending in LF (a CR before the LF is removed).

    A line longer than :data:`MAX_LINE_BYTES` is cut and still returned, so
    the decoder reports it as malformed instead of buffering without bound.
    """

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self._buffer = bytearray()
        self._max = max_line_bytes
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the complete lines now available, oldest first."""
        lines: list[bytes] = []
        for byte in data:
            if byte == 0x0A:
                if not self._discarding:
                    lines.append(bytes(self._buffer.rstrip(b"\r")))
                self._buffer.clear()
                self._discarding = False
            elif not self._discarding:
                self._buffer.append(byte)
                if len(self._buffer) > self._max:
                    lines.append(bytes(self._buffer))
                    self._buffer.clear()
                    self._discarding = True
        return lines

    def clear(self) -> None:
        """Forget any partial line."""
        self._buffer.clear()
        self._discarding = False


def decode_reply(line: bytes) -> Reply:
    """Decode one reply line (with or without its CR LF). Never raises.

    :param line: the bytes of one line.
    :return: a typed reply; :class:`MalformedReply` for anything not understood.
    """
    body = line[:-2] if line.endswith(CRLF) else line.rstrip(b"\r\n")
    if len(body) > MAX_LINE_BYTES:
        return MalformedReply(bytes(line), f"longer than {MAX_LINE_BYTES} bytes")
    text = body.decode("latin-1")
    tokens = text.split()
    if not tokens:
        return MalformedReply(bytes(line), "empty line")
    if len(tokens) == 1:
        for error in GeneralError:
            if tokens[0] == error.value:
                return ErrorReply(error)
        return MalformedReply(bytes(line), "a single field that is not ES, ET or EL")
    command, status_text = tokens[0], tokens[1]
    if not _COMMAND.match(command):
        return MalformedReply(bytes(line), f"identifier {command!r} is not a command name")
    try:
        status = ReplyStatus(status_text)
    except ValueError:
        return MalformedReply(bytes(line), f"status {status_text!r} is unknown")
    rest = tokens[2:]
    if status in (ReplyStatus.STABLE, ReplyStatus.DYNAMIC) or (
        status is ReplyStatus.EXECUTED and len(rest) == 2 and '"' not in text
    ):
        if len(rest) != 2:
            return MalformedReply(bytes(line), "a weight needs exactly a value and a unit")
        parsed = parse_mass_ug(rest[0], rest[1])
        if isinstance(parsed, str):
            return MalformedReply(bytes(line), parsed)
        mass_ug, resolution_ug = parsed
        return WeightReply(command, status is not ReplyStatus.DYNAMIC, mass_ug, resolution_ug, rest[1])
    if status is ReplyStatus.EXECUTED and rest:
        after_status = text.split(None, 2)[2]
        fields = tuple(_QUOTED.findall(after_status))
        if not fields or _QUOTED.sub("", after_status).strip():
            return MalformedReply(bytes(line), "info fields must be double-quoted strings")
        return InfoReply(command, fields)
    if rest:
        return MalformedReply(bytes(line), f"unexpected fields after status {status.value!r}")
    return StatusReply(command, status)


def encode_weight_reply(
    command: str, *, stable: bool, mass_ug: int, unit: str, decimals: int, width: int = 10
) -> bytes:
    """Balance side: a weight reply, the value right-aligned in a ``width``-character field.

    :param command: reply identifier (``"S"`` for S/SI/SIR, ``"T"`` for tare).
    :param stable: status ``S`` when True, ``D`` when False.
    :param mass_ug: the value, a whole multiple of the last digit, µg.
    :param unit: the displayed unit.
    :param decimals: digits after the point.
    :param width: minimum width of the value field, characters.
    :raises ConfigError: the mass cannot be shown exactly with ``decimals`` digits.
    """
    value = format_mass(mass_ug, unit, decimals).rjust(width)
    status = ReplyStatus.STABLE if stable else ReplyStatus.DYNAMIC
    return f"{command} {status.value} {value} {unit}".encode("latin-1") + CRLF


def encode_status_reply(command: str, status: ReplyStatus) -> bytes:
    """Balance side: a status-only reply such as ``Z A`` or ``S I``."""
    return f"{command} {status.value}".encode("ascii") + CRLF


def encode_info_reply(command: str, *fields: str) -> bytes:
    """Balance side: ``<command> A "field" ...``; fields must not contain double quotes."""
    for index, text in enumerate(fields):
        if '"' in text or "\r" in text or "\n" in text:
            raise ConfigError(f"fields[{index}]", text, "text without double quotes or line breaks")
    quoted = " ".join(f'"{text}"' for text in fields)
    return f"{command} {ReplyStatus.EXECUTED.value} {quoted}".encode("latin-1") + CRLF


def encode_error_reply(error: GeneralError) -> bytes:
    """Balance side: ``ES``, ``ET`` or ``EL``."""
    return error.value.encode("ascii") + CRLF


__all__ = [
    "CRLF",
    "MASS_UNIT_UG",
    "ErrorReply",
    "GeneralError",
    "InfoReply",
    "LineDeframer",
    "MalformedReply",
    "Reply",
    "ReplyStatus",
    "StatusReply",
    "WeightReply",
    "decode_command",
    "decode_reply",
    "encode_command",
    "encode_error_reply",
    "encode_info_reply",
    "encode_status_reply",
    "encode_weight_reply",
]
