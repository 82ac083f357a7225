"""Sartorius SBI codec: I/O-free encoding and decoding of escape commands and output lines.

Commands (host -> balance), trailing CR LF optional::

    format 1:  ESC <letter>                 ESC P  = print (send the weight)
    format 2:  ESC <letter>[<digits>] _     ESC x1_ = model, ESC p_ = print key

Output line (balance -> host), 16 bytes, or 22 with a 6-character ID code first::

    pos  1    2    3 ........ 10   11   12-14   15 16
        sign  SP   weight (8)      SP   unit    CR LF      "+   1255.7 g  \\r\\n"

Special codes and errors take the same two widths; with ID codes the ID is
``Stat`` (positions 1-4)::

    16:  "      High    \\r\\n"          22:  "Stat        High    \\r\\n"
    16:  "   ERR 101    \\r\\n"          22:  "Stat     ERR 101    \\r\\n"

The line is parsed by fields (whitespace-separated tokens), not by column:
an optional ID token, an optional sign token, the number (a sign may be
attached), and an optional unit. Which lines mean what:

- a unit present: a stable weight; the unit left blank: an unstable weight
  (no unit symbol is output while the weighing system has not stabilised);
- ``High``/``Low`` (``H``/``HH``, ``L``/``LL`` on older models): overload or underload;
- ``ERR ###`` (``Err ##``): a numbered device error; ``APP.ERR``, ``DIS.ERR``, ``PRT.ERR``
  and ``Cal.Ext.``/``Cal.Int.`` are other status codes.

Sources: Sartorius Entris II interface description p.3 (22-character format,
``Stat`` special codes ``High``/``Low``/``Cal.Ext.``, ``Stat ERR ###``);
Sartorius FB manual p.66 and Master series p.79 (the 16-character line, status
codes at positions 13-14 of the 22-character line, ``H``/``HH``/``L``/``LL``);
Sartorius Combics 1 p.98 (ID codes ``N``, ``G#``, ``T``, ``Ser.no`` left in
positions 1-6). :func:`decode_weight_line` never raises; everything decodes to a line object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hal.balance import CRLF, MASS_UNIT_UG, MalformedLine, format_mass, line_body, parse_mass_ug
from cython_ext.errors import ConfigError

ESC = 0x1B
#: Longest output line accepted, bytes (without CR LF).
MAX_LINE_BYTES = 64
#: Width of the weight field, characters.
WEIGHT_FIELD_WIDTH = 8
#: Width of the optional ID code, characters.
ID_CODE_WIDTH = 6
#: Position (1-based, in the 16-character body) where a special code starts.
SPECIAL_CODE_POSITION = 7
#: ID code of special codes and errors in the 22-character format.
STATUS_ID = "Stat"
#: ID code of a net weight.
NET_ID = "N"
#: ID code the balance puts before its serial number.
SERIAL_ID = "Ser.no"
#: Special codes: overload and underload, as newer balances print them.
OVERLOAD_CODE = "High"
UNDERLOAD_CODE = "Low"

PRINT = "P"
PRINT_KEY = "p_"
TARE_ZERO = "T"
TARE = "U"
ZERO = "V"
RESTART = "S"
BLOCK_KEYS = "O"
UNBLOCK_KEYS = "R"
MODEL = "x1_"
SERIAL_NUMBER = "x2_"
SOFTWARE_VERSION = "x3_"

_FORMAT_1 = re.compile(r"^[A-Z]$")
_FORMAT_2 = re.compile(r"^[a-z][0-9]{0,3}_$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)$")
_ERROR = re.compile(r"^(?:Stat\s+)?ERR\s*(\d{1,3})$", re.IGNORECASE)
_STATUS_CODE = re.compile(r"^Stat\s+(\S+)$")
_OVERLOAD_TOKENS = frozenset({"H", "HH", "HIGH"})
_UNDERLOAD_TOKENS = frozenset({"L", "LL", "LOW"})
_OTHER_SPECIAL_CODES = frozenset({"C", "CAL.EXT.", "CAL.INT.", "APP.ERR", "DIS.ERR", "PRT.ERR"})


@dataclass(frozen=True)
class WeightLine:
    """A weight output line.

    :ivar mass_ug: the value, µg.
    :ivar stable: True when the unit was printed.
    :ivar resolution_ug: value of the last digit, µg.
    :ivar unit: the unit printed, or for an unstable line the unit it was read in.
    :ivar id_code: the ID code in front of the value, or the empty string.
    """

    mass_ug: int
    stable: bool
    resolution_ug: int
    unit: str
    id_code: str = ""


@dataclass(frozen=True)
class RangeLine:
    """The balance is out of range: ``overload`` True for H, False for L."""

    overload: bool


@dataclass(frozen=True)
class ErrorLine:
    """``ERR nnn``: a numbered device error."""

    code: int


@dataclass(frozen=True)
class StatusLine:
    """Another special code in place of a weight: ``Cal.Ext.`` (adjusting), ``APP.ERR``..."""

    code: str


Line = WeightLine | RangeLine | ErrorLine | StatusLine | MalformedLine


def encode_command(code: str, *, crlf: bool = True) -> bytes:
    """Encode one escape command.

    :param code: ``"P"`` (format 1: one upper-case letter) or ``"x1_"`` (format 2).
    :param crlf: append CR LF (optional on the wire).
    :raises ConfigError: a code that is neither format.
    """
    if not isinstance(code, str) or not (_FORMAT_1.match(code) or _FORMAT_2.match(code)):
        raise ConfigError("code", code, "one upper-case letter, or a lower-case letter, 0-3 digits and '_'")
    return bytes([ESC]) + code.encode("ascii") + (CRLF if crlf else b"")


class CommandDeframer:
    """Balance side: turn received bytes into escape-command codes.

    Bytes outside a command (CR, LF, noise) are skipped. A command cut short
    by a byte that cannot continue it is dropped, and that byte is examined
    afresh (so a new ESC starts a new command).
    """

    def __init__(self) -> None:
        self._pending: bytearray | None = None

    def feed(self, data: bytes) -> list[str]:
        """Add received bytes; return the complete command codes, oldest first."""
        codes: list[str] = []
        for byte in data:
            if byte == ESC:
                self._pending = bytearray()
                continue
            pending = self._pending
            if pending is None:
                continue
            char = chr(byte)
            if not pending:
                if "A" <= char <= "Z":
                    codes.append(char)
                    self._pending = None
                elif "a" <= char <= "z":
                    pending.append(byte)
                else:
                    self._pending = None
            elif char.isdigit() and byte < 0x80 and len(pending) <= 3:
                pending.append(byte)
            elif char == "_":
                codes.append(pending.decode("ascii") + "_")
                self._pending = None
            else:
                self._pending = None
        return codes


def decode_weight_line(line: bytes, *, unstable_unit: str = "g") -> Line:
    """Decode one output line (with or without CR LF). Never raises.

    :param line: the bytes of one line.
    :param unstable_unit: the unit to read an unstable (unit-less) value in;
        the driver passes the unit of the last stable line.
    """
    body = line_body(line)
    if len(body) > MAX_LINE_BYTES:
        return MalformedLine(bytes(line), f"longer than {MAX_LINE_BYTES} bytes")
    text = body.decode("latin-1")
    stripped = text.strip()
    error = _ERROR.match(stripped)
    if error:
        return ErrorLine(int(error.group(1)))
    status = _STATUS_CODE.match(stripped)
    if status and status.group(1).upper() not in _OVERLOAD_TOKENS | _UNDERLOAD_TOKENS:
        return StatusLine(status.group(1))
    tokens = []
    for token in stripped.split():
        # A 6-character ID code runs straight into the sign: "ID1234+".
        if len(token) > 1 and token[-1] in "+-" and not _NUMBER.match(token):
            tokens.extend((token[:-1], token[-1]))
        else:
            tokens.append(token)
    if not tokens:
        return MalformedLine(bytes(line), "empty line")
    number_at = next((i for i, token in enumerate(tokens) if _NUMBER.match(token)), None)
    if number_at is None:
        return _range_or_malformed(bytes(line), tokens)
    before, value, after = tokens[:number_at], tokens[number_at], tokens[number_at + 1 :]
    sign = ""
    if before and before[-1] in ("+", "-"):
        sign = before.pop()
    if len(before) > 1 or len(after) > 1:
        return MalformedLine(bytes(line), "more fields than ID, sign, value and unit")
    if sign and value[0] in "+-":
        return MalformedLine(bytes(line), "two signs")
    id_code = before[0] if before else ""
    if id_code in MASS_UNIT_UG or id_code in ("+", "-") or len(id_code) > ID_CODE_WIDTH:
        return MalformedLine(bytes(line), f"field {id_code!r} before the value is not an ID code")
    printed_unit = after[0] if after else ""
    unit = printed_unit or unstable_unit
    parsed = parse_mass_ug(sign + value if sign == "-" else value, unit)
    if isinstance(parsed, str):
        return MalformedLine(bytes(line), parsed)
    mass_ug, resolution_ug = parsed
    return WeightLine(mass_ug, bool(printed_unit), resolution_ug, unit, id_code)


def _range_or_malformed(raw: bytes, tokens: list[str]) -> Line:
    core = [token for token in tokens if token not in ("+", "-")]
    if len(core) == 2 and core[0] == STATUS_ID:
        core = core[1:]  # the status ID code in front
    if len(core) == 1:
        word = core[0].upper()
        if word in _OVERLOAD_TOKENS:
            return RangeLine(overload=True)
        if word in _UNDERLOAD_TOKENS:
            return RangeLine(overload=False)
        if word in _OTHER_SPECIAL_CODES:
            return StatusLine(core[0])
    return MalformedLine(raw, "no numeric weight field")


def decode_text_line(line: bytes) -> str:
    """Decode a text reply (model, serial number, version): the line without padding or ``Ser.no`` label. Never raises."""
    body = line_body(line)
    text = body[:MAX_LINE_BYTES].decode("latin-1").strip()
    if text.startswith(SERIAL_ID):
        return text[len(SERIAL_ID) :].strip()
    return text


def encode_weight_line(
    mass_ug: int, *, unit: str, decimals: int, stable: bool, id_code: str | None = None
) -> bytes:
    """Balance side: one output line (16 bytes, 22 with an ID code).

    :param mass_ug: the value, a whole multiple of the last digit, µg.
    :param unit: the unit (1-3 characters) printed when ``stable``.
    :param decimals: digits after the point.
    :param stable: print the unit (stable) or leave it blank (unstable).
    :param id_code: up to 6 characters placed in front, or None.
    :raises ConfigError: the value does not fit the 8-character field, or a bad unit or ID.
    """
    digits = format_mass(abs(mass_ug), unit, decimals)
    if len(digits) > WEIGHT_FIELD_WIDTH:
        raise ConfigError("mass_ug", mass_ug, f"at most {WEIGHT_FIELD_WIDTH} characters in {unit}")
    if len(unit) > 3:
        raise ConfigError("unit", unit, "1-3 characters")
    sign = "-" if mass_ug < 0 else "+"
    body = f"{sign} {digits.rjust(WEIGHT_FIELD_WIDTH)} {(unit if stable else '').ljust(3)}"
    return _with_id(body, id_code) + CRLF


def encode_special_line(code: str, *, id_codes: bool = False) -> bytes:
    """Balance side: a special code (``High``, ``Low``, ``Cal.Ext.``) from position 7 of the 16-character body.

    :param code: the code, at most 8 characters.
    :param id_codes: the 22-character format, with the ID ``Stat`` in front.
    """
    if not code or len(code) > 2 + WEIGHT_FIELD_WIDTH - 2 or not code.isprintable() or " " in code:
        raise ConfigError("code", code, "1-8 printable characters without spaces")
    body = (" " * (SPECIAL_CODE_POSITION - 1) + code).ljust(14)
    return _with_id(body, STATUS_ID if id_codes else None) + CRLF


def encode_range_line(*, overload: bool, id_codes: bool = False) -> bytes:
    """Balance side: an overload (``High``) or underload (``Low``) line."""
    return encode_special_line(OVERLOAD_CODE if overload else UNDERLOAD_CODE, id_codes=id_codes)


def encode_error_line(code: int, *, id_codes: bool = False) -> bytes:
    """Balance side: ``ERR ###`` at positions 4-10 of the 16-character body (``Stat`` in front with ID codes)."""
    if isinstance(code, bool) or not isinstance(code, int) or not 0 <= code <= 999:
        raise ConfigError("code", code, "an integer in [0, 999]")
    body = f"   ERR {code:03d}".ljust(14)
    return _with_id(body, STATUS_ID if id_codes else None) + CRLF


def encode_text_line(text: str) -> bytes:
    """Balance side: a text reply padded to 14 characters."""
    if not text.isprintable() or len(text) > MAX_LINE_BYTES:
        raise ConfigError("text", text, f"printable, at most {MAX_LINE_BYTES} characters")
    return text.ljust(14).encode("latin-1") + CRLF


def encode_serial_line(serial_number: str) -> bytes:
    """Balance side: the answer to ``ESC x2_``, the serial number labelled with its ID code ``Ser.no``.

    22 characters: the label in positions 1-6, the number right-aligned in 7-20.
    """
    if not serial_number.isprintable() or " " in serial_number or not 0 < len(serial_number) <= 14:
        raise ConfigError("serial_number", serial_number, "1-14 printable characters without spaces")
    return (SERIAL_ID + serial_number.rjust(14)).encode("latin-1") + CRLF


def _with_id(body: str, id_code: str | None) -> bytes:
    if id_code is None:
        return body.encode("latin-1")
    if not (id_code and len(id_code) <= ID_CODE_WIDTH and id_code.isprintable() and " " not in id_code):
        raise ConfigError("id_code", id_code, f"1-{ID_CODE_WIDTH} printable characters without spaces")
    return (id_code.ljust(ID_CODE_WIDTH) + body).encode("latin-1")
