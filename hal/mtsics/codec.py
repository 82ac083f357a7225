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

``B``  executed, more lines follow (``I0``, ``M28``, ``C3``)
``R``  executed, but the text was too long for the display and is shown cut (``D``)
====== ===========================================================

Fields after the status are separated by spaces; a field in double quotes
(``"XPE205 Excellence Plus 220.00000 g"``) is one field and may hold spaces.
A reply of just ``ES``, ``ET`` or ``EL`` is a general syntax, transmission or
logic error. Everything the balance says, including its errors, decodes to a
reply object; :func:`decode_reply` never raises.

Source of the reply formats: *MT-SICS Reference Manual, Excellence balances*
(Mettler Toledo 11780711), "Commands and responses" of levels 0 and 1 and of
``I10``, ``I11``, ``M28`` and ``WS``; ``tests/balance/test_mtsics_golden.py`` pins
each reply to bytes written out from those formats.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from hal.balance import CRLF, MASS_UNIT_UG, MalformedLine, format_mass, line_body, parse_mass_ug
from cython_ext.errors import ConfigError

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
TARE_PRESET = "TA"
INFO_COMMANDS = "I0"
INFO_LEVELS = "I1"
INFO_MODEL = "I2"
INFO_SOFTWARE = "I3"
INFO_SERIAL = "I4"
INFO_SOFTWARE_ID = "I5"
INFO_BALANCE_ID = "I10"
INFO_TYPE = "I11"
DISPLAY_TEXT = "D"
DISPLAY_WEIGHT = "DW"
KEYS = "K"
SEND_ON_CHANGE = "SR"
TEMPERATURE = "M28"
DOORS = "WS"
#: Reply identifier of each weight command.
WEIGHT_REPLY_ID = "S"
#: Longest quoted text a command parameter may carry, characters.
MAX_TEXT_PARAM = 64

_COMMAND = re.compile(r"^(@|[A-Z][A-Z0-9]{0,7})$")
_PARAM = re.compile(r'^([\x21\x23-\x7e][\x21-\x7e]{0,31}|"[\x20\x21\x23-\x7e]{0,%d}")$' % MAX_TEXT_PARAM)
_FIELD = re.compile(r'\s*(?:"([^"]*)"|([^\s"]+))(?=\s|$)')


class ReplyStatus(enum.Enum):
    """The second field of a reply."""

    STABLE = "S"
    DYNAMIC = "D"
    EXECUTED = "A"
    NOT_EXECUTABLE = "I"
    OVERLOAD = "+"
    UNDERLOAD = "-"
    LOGIC = "L"
    MORE = "B"
    TRUNCATED = "R"


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
    """An executed command with fields, e.g. ``I4 A "B123456789"``, ``M28 A 1 22.5``, ``I0 B 0 "I0"``.

    :ivar command: reply identifier.
    :ivar fields: the fields after the status, quoted ones without their quotes.
    :ivar more: status ``B``: more lines of the same answer follow.
    """

    command: str
    fields: tuple[str, ...]
    more: bool = False


@dataclass(frozen=True)
class ErrorReply:
    """A general error (``ES``, ``ET``, ``EL``)."""

    error: GeneralError


Reply = WeightReply | StatusReply | InfoReply | ErrorReply | MalformedLine

def split_fields(text: str) -> list[tuple[str, bool]] | None:
    """Split reply or command text into ``(field, quoted)`` pairs; None when a quote is unbalanced or glued.

    Never raises. ``'I2 A "XPE205 220.0 g"'`` gives ``[("I2", False), ("A", False), ("XPE205 220.0 g", True)]``.
    """
    fields: list[tuple[str, bool]] = []
    position = 0
    while position < len(text):
        if text[position:].strip() == "":
            break
        match = _FIELD.match(text, position)
        if match is None:
            return None
        quoted = match.group(1) is not None
        fields.append((match.group(1) if quoted else match.group(2), quoted))
        position = match.end()
    return fields


def quote(text: str) -> str:
    """A text parameter in double quotes, e.g. for ``D "HELLO"``.

    :raises ConfigError: text with a double quote, a line break or a non-printable character.
    """
    if not isinstance(text, str) or '"' in text or not text.isprintable() or len(text) > MAX_TEXT_PARAM:
        raise ConfigError("text", text, f"printable ASCII without double quotes, at most {MAX_TEXT_PARAM} characters")
    return f'"{text}"'


def encode_command(command: str, *params: str) -> bytes:
    """Encode one command line.

    :param command: upper-case command name (``"SI"``, ``"@"``...).
    :param params: parameters, each printable ASCII without spaces, or a text in
        double quotes (see :func:`quote`), which may hold spaces.
    :raises ConfigError: a lower-case or malformed name or parameter (nothing is encoded).
    :return: the bytes to send, ending in CR LF.
    """
    if not isinstance(command, str) or not _COMMAND.match(command):
        raise ConfigError("command", command, "an upper-case MT-SICS command name")
    for index, param in enumerate(params):
        if not isinstance(param, str) or not _PARAM.match(param):
            raise ConfigError(
                f"params[{index}]", param, "printable ASCII without spaces (1-32 characters), or a quoted text"
            )
    return " ".join((command, *params)).encode("ascii") + CRLF


def decode_command(line: bytes) -> tuple[str, tuple[str, ...]] | MalformedLine:
    """Balance side: split a received command line (without CR LF) into name and parameters.

    Commands are case-sensitive; a lower-case name is returned as-is and the
    balance answers it with ``ES``. A quoted parameter keeps its quotes
    (``D "HELLO"`` gives ``("D", ('"HELLO"',))``), so the balance can tell text from a number.
    """
    text = line.decode("latin-1").strip()
    fields = split_fields(text)
    if fields is None:
        return MalformedLine(line, "unbalanced double quote")
    if not fields:
        return MalformedLine(line, "empty command line")
    tokens = [f'"{field}"' if quoted else field for field, quoted in fields]
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
    :return: a typed reply; :class:`MalformedLine` for anything not understood.
    """
    body = line_body(line)
    if len(body) > MAX_LINE_BYTES:
        return MalformedLine(bytes(line), f"longer than {MAX_LINE_BYTES} bytes")
    text = body.decode("latin-1")
    fields = split_fields(text)
    if fields is None:
        return MalformedLine(bytes(line), "unbalanced or misplaced double quote")
    if not fields:
        return MalformedLine(bytes(line), "empty line")
    if len(fields) == 1:
        for error in GeneralError:
            if fields[0] == (error.value, False):
                return ErrorReply(error)
        return MalformedLine(bytes(line), "a single field that is not ES, ET or EL")
    (command, command_quoted), (status_text, status_quoted) = fields[0], fields[1]
    if command_quoted or not _COMMAND.match(command):
        return MalformedLine(bytes(line), f"identifier {command!r} is not a command name")
    try:
        status = ReplyStatus(status_text)
    except ValueError:
        status = None
    if status is None or status_quoted:
        return MalformedLine(bytes(line), f"status {status_text!r} is unknown")
    rest = fields[2:]
    unquoted_pair = len(rest) == 2 and not (rest[0][1] or rest[1][1])
    if status in (ReplyStatus.STABLE, ReplyStatus.DYNAMIC) or (
        status in (ReplyStatus.EXECUTED, ReplyStatus.MORE) and unquoted_pair and rest[1][0] in MASS_UNIT_UG
    ):
        if not unquoted_pair:
            return MalformedLine(bytes(line), "a weight needs exactly a value and a unit")
        parsed = parse_mass_ug(rest[0][0], rest[1][0])
        if isinstance(parsed, str):
            return MalformedLine(bytes(line), parsed)
        mass_ug, resolution_ug = parsed
        return WeightReply(command, status is not ReplyStatus.DYNAMIC, mass_ug, resolution_ug, rest[1][0])
    if status in (ReplyStatus.EXECUTED, ReplyStatus.MORE) and rest:
        return InfoReply(command, tuple(field for field, _ in rest), more=status is ReplyStatus.MORE)
    if rest:
        return MalformedLine(bytes(line), f"unexpected fields after status {status.value!r}")
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


def encode_info_reply(command: str, *fields: str, more: bool = False) -> bytes:
    """Balance side: ``<command> A "field" ...`` (``B`` with ``more``); fields must not contain double quotes."""
    for index, text in enumerate(fields):
        if '"' in text or "\r" in text or "\n" in text:
            raise ConfigError(f"fields[{index}]", text, "text without double quotes or line breaks")
    return encode_fields_reply(command, *(f'"{text}"' for text in fields), more=more)


def encode_fields_reply(command: str, *fields: str, more: bool = False) -> bytes:
    """Balance side: ``<command> A|B <field> ...`` with the fields exactly as given (quote text yourself).

    ``encode_fields_reply("M28", "1", "22.5")`` gives ``b"M28 A 1 22.5\\r\\n"``.
    """
    status = ReplyStatus.MORE if more else ReplyStatus.EXECUTED
    return " ".join((command, status.value, *fields)).encode("latin-1") + CRLF


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
    "MalformedLine",
    "Reply",
    "ReplyStatus",
    "StatusReply",
    "WeightReply",
    "decode_command",
    "decode_reply",
    "encode_command",
    "encode_error_reply",
    "encode_fields_reply",
    "encode_info_reply",
    "encode_status_reply",
    "encode_weight_reply",
    "quote",
    "split_fields",
]
