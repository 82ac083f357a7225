"""The one field kit of every file loader and command-line argument: bounded TOML, exact numbers, all errors.

Every loader (prescription, scenario, bench profile, and the population and
policy files to come) reads its file through :func:`load_toml` and its fields
through a :class:`Table`; every ``itb`` argument that takes a number goes
through :func:`int_arg`, :func:`float_arg` or :func:`checked_arg`. So a value
that fails prints the same one-line message everywhere::

    hil/scenarios/x.toml:12: pump.bias_pct (=80) must be a number in [-50, 50] %

and a file reports *all* its problems at once (:class:`FileErrors`), each a
:class:`FieldError` with the field, the value, the allowed range and the line.

**Bounded whatever the bytes.** :func:`load_toml` reads at most
:attr:`Limits.file_bytes`, decodes strict UTF-8, and scans the text once
(linear time, no recursion beyond :attr:`Limits.depth`) before the standard
library's parser sees it. The scan bounds nesting depth, dotted-key length,
array length, the number of values, string and key length and the length of
every number literal, and it records the line of every key, so errors can
name it. What TOML itself gives (a syntax error) keeps TOML's own line.

**One number policy** (README, "Input limits"):

- A TOML float is the exact decimal it is written as (``0.048`` is 48/1000);
  from Python, a float is the decimal of its shortest ``repr``. No field rounds.
- Numbers are plain decimal: hexadecimal, octal and binary literals
  (``0x10``), ``_`` digit separators (``1_6``, which reads as 16 where 1.6 was
  meant) and negative zero are rejected anywhere in a file.
- An integer field takes only an integer: ``16.0`` is rejected, not read as 16.
- Every number field has both bounds. The range is checked on the exact
  decimal *before* any scaling, so ``1e999999`` is an out-of-range value, not
  an arithmetic overflow, and a scaled value must be exact (no underflow to 0).
- NaN and infinity are never numbers.

**Text a clinician reads as an identity** is restricted to a documented
character set, so homoglyphs, CJK, emoji and invisible characters cannot make
two identities look alike: :func:`identifier` (prescription and patient IDs:
``A-Z a-z 0-9 . _ -``) and :func:`person` (a prescriber or an authoriser: those,
space, ``'`` and ``@``). Free text (:func:`text`) is printable Unicode without
control or format characters (no bidirectional overrides), of bounded length.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import re
import reprlib
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import (
    Clamped,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
    Rounded,
    Subnormal,
    Underflow,
)
from pathlib import Path
from typing import Any

from cython_ext.errors import ConfigError, ItbError

__all__ = [
    "Limits",
    "DEFAULT_LIMITS",
    "MAX_TEXT_CHARS",
    "MAX_IDENTIFIER_CHARS",
    "MAX_SHOWN_CHARS",
    "SEED_RANGE",
    "REQUIRED",
    "INVALID",
    "any_invalid",
    "shown",
    "plain",
    "FieldError",
    "FileErrors",
    "Document",
    "Table",
    "load_toml",
    "read_file",
    "integer",
    "decimal",
    "scaled",
    "boolean",
    "choice",
    "text",
    "identifier",
    "person",
    "decimal_text",
    "key_name",
    "int_arg",
    "float_arg",
    "decimal_arg",
    "checked_arg",
]


@dataclass(frozen=True)
class Limits:
    """Bounds on one file, checked before it is parsed (README, "Input limits").

    :param file_bytes: largest file, bytes of UTF-8.
    :param depth: deepest nesting of tables, arrays and dotted keys.
    :param array_items: most items in one array (or tables in one array of tables).
    :param entries: most keys, tables and array items in the whole file.
    :param string_chars: longest string, characters (fields have tighter limits).
    :param key_chars: longest key, characters.
    :param number_chars: longest number (or other bare value) literal, characters.
    :param errors: most problems reported per file (the rest are counted).
    """

    file_bytes: int = 1_048_576
    depth: int = 16
    array_items: int = 1_000
    entries: int = 10_000
    string_chars: int = 10_000
    key_chars: int = 64
    number_chars: int = 40
    errors: int = 100


#: The limits every loader uses unless it documents others.
DEFAULT_LIMITS = Limits()
#: Longest free-text field (a reason, a label, a description line), characters.
MAX_TEXT_CHARS = 200
#: Longest identifier or person name, characters.
MAX_IDENTIFIER_CHARS = 64
#: Longest rendering of a value in an error message, characters.
MAX_SHOWN_CHARS = 80
#: The seeds every file and argument takes (32-bit unsigned: what every generator accepts).
SEED_RANGE = (0, 2**32 - 1)


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


#: Default of :meth:`Table.get`: the key must be present.
REQUIRED: Any = _Sentinel("REQUIRED")
#: What a reader returns for a value that failed (its error is recorded in the document).
INVALID: Any = _Sentinel("INVALID")


def any_invalid(*values: Any) -> bool:
    """True if any of ``values`` is :data:`INVALID` (a check that depends on it must not run)."""
    for value in values:
        if value is INVALID:
            return True
    return False


def is_int(value: object) -> bool:
    """True for an ``int`` that is not a ``bool``: what an integer setting given from Python must be."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_finite_number(value: object) -> bool:
    """True for a finite ``float``, or an ``int`` (not a ``bool``) within the float range: a number setting
    given from Python. NaN and infinity are never numbers, nor is an integer too large for the float
    arithmetic such a setting feeds."""
    if is_int(value):
        return -sys.float_info.max <= value <= sys.float_info.max  # type: ignore[operator]
    return isinstance(value, float) and math.isfinite(value)


# ---------------------------------------------------------------------------------------------------
# showing values and reporting errors


class _Shown(str):
    """A value rendered for a message: shows as written (``=400.5``), never as ``Decimal('400.5')``."""

    def __repr__(self) -> str:
        return str(self)


class _BoundedRepr(reprlib.Repr):
    def repr_int(self, x: int, level: int) -> str:
        return str(shown(x))


_REPR = _BoundedRepr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple = 2, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = MAX_SHOWN_CHARS, MAX_SHOWN_CHARS, 40


def plain(text: str) -> Any:
    """Text that an error message shows as written, without quotes (``=1200 ug/day``), bounded."""
    return _Shown(text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "...")


def shown(value: Any) -> Any:
    """``value`` as an error message shows it: one line of at most :data:`MAX_SHOWN_CHARS` characters.

    Exact decimals show as written (``400.5``, ``1E+999999``); strings, tables and arrays are
    abbreviated; None stays None.

    :param value: any value, however large or deep.
    :return: None, or a string whose ``repr`` is itself.
    """
    if value is None or isinstance(value, _Shown):
        return value
    if isinstance(value, bool):
        return _Shown(repr(value))
    if isinstance(value, int):
        return _Shown(str(value) if value.bit_length() <= 128 else f"<an integer of {value.bit_length()} bits>")
    if isinstance(value, Decimal):
        return _Shown(f"{value:f}" if value.is_finite() and abs(value.adjusted()) <= 30 else str(value))
    if isinstance(value, str) and len(value) > MAX_SHOWN_CHARS:
        return _Shown(repr(value[: MAX_SHOWN_CHARS - 20]) + f"... ({len(value)} characters)")
    if isinstance(value, Mapping) and not isinstance(value, dict):
        value = dict(value)
    text = _REPR.repr(value).replace("\n", "\\n")
    return _Shown(text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "...")


class FieldError(ConfigError):
    """One problem of one file: a :class:`ConfigError` that also knows where it is.

    :param field: dotted name of the field, with its unit in the name.
    :param value: the value given (shown bounded, see :func:`shown`).
    :param allowed: the allowed range or set, as text.
    :param detail: optional extra explanation.
    :param error_code: machine-readable code (default ``CONFIG``).
    :param source: the file (or ``<string>``) the value came from.
    :param line: its line, 1-based, or None where the file gives none.
    """

    def __init__(
        self,
        field: str,
        value: Any,
        allowed: str,
        *,
        detail: str = "",
        error_code: str | None = None,
        source: str = "",
        line: int | None = None,
    ) -> None:
        super().__init__(_printable(field), shown(value), allowed, detail=_bounded(detail), error_code=error_code)
        self.source = _printable(source)
        self.line = line
        self.args = (self.one_line(),)

    @classmethod
    def of(cls, error: ConfigError, *, source: str = "", line: int | None = None) -> FieldError:
        """``error`` placed in a file (a :class:`FieldError` keeps the place it already has)."""
        if isinstance(error, FieldError) and error.source:
            return error
        return cls(error.field, error.value, error.allowed, detail=error.detail, error_code=error.error_code,
                   source=source, line=line)

    def one_line(self) -> str:
        """The one-line format of every loader: ``SOURCE:LINE: FIELD (=VALUE) must be ALLOWED[: DETAIL]``."""
        place = ":".join(part for part in (self.source, "" if self.line is None else str(self.line)) if part)
        return f"{place}: {self.message()}" if place else self.message()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: ``file``, ``line``, ``field``, ``value`` (as shown, or null), ``allowed``, ``detail``,
        ``code``."""
        return {
            "file": self.source,
            "line": self.line,
            "field": self.field,
            "value": None if self.value is None else str(self.value),
            "allowed": self.allowed,
            "detail": self.detail,
            "code": self.error_code,
        }


def _printable(name: str) -> str:
    """``name`` with every character a terminal would not print escaped (a key may hold any)."""
    if name.isprintable():
        return name
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in name)


def _bounded(detail: str, limit: int = 4 * MAX_SHOWN_CHARS) -> str:
    detail = _printable(" ".join(str(detail).split()))
    return detail if len(detail) <= limit else detail[: limit - 3] + "..."


class FileErrors(ConfigError):
    """Every problem found in a file (and in the files it names), in line order.

    ``field``, ``value``, ``allowed`` and ``detail`` are those of the first problem; the
    message has one line per problem (the first line alone when there is one).

    :param errors: the problems, at least one.
    :param omitted: how many more were found than :attr:`Limits.errors` lets through.
    """

    def __init__(self, errors: Sequence[FieldError], *, omitted: int = 0) -> None:
        first = errors[0]
        self.field, self.value, self.allowed, self.detail = first.field, first.value, first.allowed, first.detail
        self.errors: tuple[FieldError, ...] = tuple(errors)
        self.omitted = omitted
        lines = [e.one_line() for e in self.errors]
        if omitted:
            lines.append(f"... and {omitted} more problem(s)")
        ItbError.__init__(self, "\n".join(lines), error_code=first.error_code)

    def to_dicts(self) -> list[dict[str, Any]]:
        """Every problem as :meth:`FieldError.to_dict`."""
        return [e.to_dict() for e in self.errors]


# ---------------------------------------------------------------------------------------------------
# bounded input


def read_file(path: str | Path, *, document: str, limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The bytes of a file, refusing one larger than ``limits.file_bytes`` without reading it all.

    :param path: the file.
    :param document: what the file is (``"prescription"``): the field of the error.
    :raises FileErrors: the file cannot be read, or is too large.
    """
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(limits.file_bytes + 1)
    except OSError as exc:
        raise _file_error(document, str(path), "a readable file", str(path), detail=exc.strerror or str(exc)) from None
    if len(data) > limits.file_bytes:
        raise _file_error(document, f"more than {limits.file_bytes} bytes", f"at most {limits.file_bytes} bytes",
                          str(path))
    return data


def _file_error(field: str, value: Any, allowed: str, source: str, *, line: int | None = None,
                detail: str = "") -> FileErrors:
    return FileErrors([FieldError(field, value, allowed, detail=detail, source=source, line=line)])


def _decode(data: str | bytes, document: str, source: str, limits: Limits) -> str:
    if isinstance(data, str):
        if len(data) > limits.file_bytes:  # more characters than bytes allowed: too large, whatever they are
            raise _file_error(document, f"{len(data)} characters", f"at most {limits.file_bytes} bytes", source)
        try:
            size = len(data.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise _file_error(document, shown(data[exc.start:exc.end]), "valid UTF-8 text", source,
                              line=data.count("\n", 0, exc.start) + 1, detail="a lone surrogate") from None
        if size > limits.file_bytes:
            raise _file_error(document, f"{size} bytes", f"at most {limits.file_bytes} bytes", source)
        return data
    if not isinstance(data, (bytes, bytearray)):
        raise _file_error(document, type(data).__name__, "TOML text (str or bytes)", source)
    if len(data) > limits.file_bytes:
        raise _file_error(document, f"{len(data)} bytes", f"at most {limits.file_bytes} bytes", source)
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = bytes(data[exc.start:exc.end]).hex(" ")
        raise _file_error(document, _Shown(f"bytes {bad}"), "valid UTF-8 text", source,
                          line=data.count(b"\n", 0, exc.start) + 1, detail=exc.reason) from None


# ---------------------------------------------------------------------------------------------------
# the scan: limits and the line of every key, before the parser runs

_BLANK = re.compile(r"(?:[ \t\r\n]|#[^\n]*)*+")
_SPACE = re.compile(r"[ \t]*+")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]++")
_BASIC = re.compile(r'"(?:[^"\\\n]|\\.)*+"')
_LITERAL = re.compile(r"'[^'\n]*+'")
_ML_BASIC = re.compile(r'"""(?:[^"\\]|\\.|"(?!""))*+"""(?:"{1,2}(?!"))?', re.S)
_ML_LITERAL = re.compile(r"'''(?:[^']|'(?!''))*+'''(?:'{1,2}(?!'))?", re.S)
_BARE_VALUE = re.compile(r"[^\s,\[\]{}#\"'=]++(?: [0-9][^\s,\[\]{}#\"'=]*+)?")
_LINE_END = re.compile(r"[ \t]*+(?:#[^\n]*+)?(?:\r?\n|\Z)")
#: The common statement, whole: ``key = "text"``, ``key = 'text'`` or ``key = 12.5`` and its line end.
_SIMPLE_STATEMENT = re.compile(
    r"([A-Za-z0-9_-]{1,64})[ \t]*=[ \t]*"
    r"(?:(\"(?:[^\"\\\n]|\\.)*+\")|('[^'\n]*+')|([^\s,\[\]{}#\"'=]++(?: [0-9][^\s,\[\]{}#\"'=]*+)?))"
    r"[ \t]*+(?:#[^\n]*+)?(?:\r?\n|\Z)")

#: A number written the plain decimal way (the only way the number policy accepts).
_PLAIN_NUMBER = re.compile(r"[+-]?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_NUMBER_LIKE = re.compile(r"[+-]?(?:[0-9]|inf|nan)")
_DATE_LIKE = re.compile(r"[0-9]{4}-[0-9]{2}-|[0-9]{2}:[0-9]{2}")


class _GiveUp(Exception):
    """The text stops being TOML at ``pos``; the parser will say why."""

    def __init__(self, pos: int) -> None:
        super().__init__(pos)
        self.pos = pos


class _OverLimit(Exception):
    def __init__(self, field: str, value: Any, allowed: str, pos: int) -> None:
        super().__init__(field)
        self.field, self.value, self.allowed, self.pos = field, value, allowed, pos


def key_name(key: str) -> str:
    """How a key appears in a dotted field name: bare if TOML allows it bare, else quoted (``"a b"``)."""
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _join(path: str, key: str) -> str:
    name = key_name(key)
    return f"{path}.{name}" if path else name


def _unquoted(key: str) -> str:
    """The key a quoted TOML key names (its escapes decoded where JSON's are TOML's)."""
    if key.startswith("'"):
        return key[1:-1]
    try:
        return json.loads(key)
    except ValueError:  # a TOML-only escape such as \\U0001F600; the line lookup falls back to the table
        return key[1:-1]


class _Scan:
    """One pass over TOML text: the line of every key and array item, and the literal of every bare value.

    Linear in the text; recursion only follows brackets, at most ``limits.depth`` deep. On
    valid TOML it reads everything; where the text stops being TOML it stops (``give_up``).
    """

    def __init__(self, text: str, limits: Limits) -> None:
        self.text = text
        self.limits = limits
        self.pos = 0
        self.lines: dict[str, int] = {}
        self.literals: dict[str, str] = {}
        self._newlines = [m.start() for m in re.finditer("\n", text)]
        self._tables: dict[str, int] = {}
        self.give_up: int | None = None
        try:
            self._document()
        except _GiveUp as stop:
            self.give_up = stop.pos

    def line_at(self, pos: int) -> int:
        """1-based line of a position."""
        return bisect.bisect_left(self._newlines, pos) + 1

    def _record(self, path: str, pos: int, depth: int) -> None:
        if depth > self.limits.depth:
            raise _OverLimit(path, _Shown(f"{depth} levels"), f"nested at most {self.limits.depth} levels deep", pos)
        if path not in self.lines:
            if len(self.lines) >= self.limits.entries:
                raise _OverLimit(path, _Shown(f"more than {self.limits.entries} entries"),
                                 f"a file of at most {self.limits.entries} keys, tables and items", pos)
            self.lines[path] = self.line_at(pos)

    def _skip(self, pattern: re.Pattern[str]) -> None:
        self.pos = pattern.match(self.text, self.pos).end()  # type: ignore[union-attr]

    def _peek(self, count: int = 1) -> str:
        return self.text[self.pos:self.pos + count]

    def _document(self) -> None:
        table, table_depth = "", 0
        while True:
            self._skip(_BLANK)
            if self.pos >= len(self.text):
                return
            simple = _SIMPLE_STATEMENT.match(self.text, self.pos)
            if simple is not None:
                self._simple(simple, table, table_depth)
                continue
            if self._peek() == "[":
                table, table_depth = self._header()
            else:
                self._keyval(table, table_depth)
            match = _LINE_END.match(self.text, self.pos)
            if match is None:
                raise _GiveUp(self.pos)
            self.pos = match.end()

    def _simple(self, match: re.Match[str], table: str, depth: int) -> None:
        """A :data:`_SIMPLE_STATEMENT`: what :meth:`_keyval` would record, in one step."""
        start = self.pos
        path = _join(table, match.group(1))
        self._record(path, start, depth + 1)
        string = match.group(2) or match.group(3)
        if string is not None:
            if len(string) - 2 > self.limits.string_chars:
                raise _OverLimit(path, _Shown(f"a string of {len(string) - 2} characters"),
                                 f"a string of at most {self.limits.string_chars} characters", start)
        else:
            literal = match.group(4)
            if len(literal) > self.limits.number_chars:
                raise _OverLimit(path, shown(literal), f"a value of at most {self.limits.number_chars} characters",
                                 start)
            self.literals[path] = literal
        self.pos = match.end()

    def _header(self) -> tuple[str, int]:
        start = self.pos
        array = self._peek(2) == "[["
        self.pos += 2 if array else 1
        parts = self._key()
        self._skip(_SPACE)
        close = "]]" if array else "]"
        if self._peek(len(close)) != close:
            raise _GiveUp(self.pos)
        self.pos += len(close)
        path, depth = "", 0
        for index, part in enumerate(parts):
            plain = _join(path, part)
            depth += 1
            if array and index == len(parts) - 1:
                count = self._tables.get(plain, 0)
                if count >= self.limits.array_items:
                    raise _OverLimit(plain, _Shown(f"more than {count} tables"),
                                     f"an array of at most {self.limits.array_items} tables", start)
                self._tables[plain] = count + 1
                self._record(plain, start, depth)
                path, depth = f"{plain}[{count}]", depth + 1
            elif plain in self._tables:
                path, depth = f"{plain}[{self._tables[plain] - 1}]", depth + 1
            else:
                path = plain
        self._record(path, start, depth)
        return path, depth

    def _key(self) -> list[str]:
        parts = []
        while True:
            self._skip(_SPACE)
            start = self.pos
            match = _BARE_KEY.match(self.text, start) or _BASIC.match(self.text, start) or _LITERAL.match(
                self.text, start)
            if match is None:
                raise _GiveUp(start)
            part = match.group()
            if len(part) > self.limits.key_chars:
                raise _OverLimit("key", shown(part), f"a key of at most {self.limits.key_chars} characters", start)
            parts.append(part if match.re is _BARE_KEY else _unquoted(part))
            if len(parts) > self.limits.depth:
                raise _OverLimit(".".join(key_name(p) for p in parts), _Shown(f"{len(parts)} parts"),
                                 f"a dotted key of at most {self.limits.depth} parts", start)
            self.pos = match.end()
            self._skip(_SPACE)
            if self._peek() != ".":
                return parts
            self.pos += 1

    def _keyval(self, table: str, depth: int) -> None:
        start = self.pos
        parts = self._key()
        if self._peek() != "=":
            raise _GiveUp(self.pos)
        self.pos += 1
        self._skip(_SPACE)
        path = table
        for part in parts:
            path, depth = _join(path, part), depth + 1
            self._record(path, start, depth)
        self._value(path, depth)

    def _value(self, path: str, depth: int) -> None:
        start, text = self.pos, self.text
        head = text[start:start + 1]
        if head in ("\"", "'"):
            triple = text.startswith(head * 3, start)
            pattern = (_ML_BASIC if triple else _BASIC) if head == "\"" else (_ML_LITERAL if triple else _LITERAL)
            match = pattern.match(text, start)
            if match is None:
                raise _GiveUp(start)
            length = match.end() - start - (6 if triple else 2)
            if length > self.limits.string_chars:
                raise _OverLimit(path, _Shown(f"a string of {length} characters"),
                                 f"a string of at most {self.limits.string_chars} characters", start)
            self.pos = match.end()
        elif head == "[":
            self._array(path, depth)
        elif head == "{":
            self._inline_table(path, depth)
        else:
            match = _BARE_VALUE.match(text, start)
            if match is None:
                raise _GiveUp(start)
            literal = match.group()
            if len(literal) > self.limits.number_chars:
                raise _OverLimit(path, shown(literal), f"a value of at most {self.limits.number_chars} characters",
                                 start)
            self.literals[path] = literal
            self.pos = match.end()

    def _array(self, path: str, depth: int) -> None:
        self.pos += 1
        index = 0
        while True:
            self._skip(_BLANK)
            if self._peek() == "]":
                self.pos += 1
                return
            if index >= self.limits.array_items:
                raise _OverLimit(path, _Shown(f"more than {index} items"),
                                 f"an array of at most {self.limits.array_items} items", self.pos)
            item = f"{path}[{index}]"
            self._record(item, self.pos, depth + 1)
            self._value(item, depth + 1)
            index += 1
            self._skip(_BLANK)
            head = self._peek()
            if head == ",":
                self.pos += 1
            elif head != "]":
                raise _GiveUp(self.pos)

    def _inline_table(self, path: str, depth: int) -> None:
        self.pos += 1
        self._skip(_SPACE)
        if self._peek() == "}":
            self.pos += 1
            return
        while True:
            self._keyval(path, depth)
            self._skip(_SPACE)
            head = self._peek()
            self.pos += 1
            if head == "}":
                return
            if head != ",":
                raise _GiveUp(self.pos - 1)


_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)$|\(at end of document\)$")


def _syntax_error(exc: Exception, document: str, source: str, text: str) -> FileErrors:
    message = str(exc)
    match = _TOML_POSITION.search(message)
    line = None
    if match is not None:
        line = int(match.group(1)) if match.group(1) else text.count("\n") + 1
        message = message[: match.start()].rstrip()
    return _file_error(document, _Shown("<text>"), "valid TOML", source, line=line, detail=message)


# ---------------------------------------------------------------------------------------------------
# the document and its tables


class Document:
    """A parsed TOML document within its limits, and every problem found in it so far.

    Loaders read it through :attr:`root` (a :class:`Table`), run checks that span fields with
    :meth:`run`, and end with :meth:`finish`, which raises :class:`FileErrors` if anything failed.

    :param data: the parsed document.
    :param document: what the file is (``"scenario"``), the field of whole-file problems.
    :param source: where it came from, for messages.
    :param lines: line of each dotted path (from the scan), if known.
    :param root_path: dotted path of the root table (``""`` for a file).
    :param limits: the limits it was read within.
    """

    def __init__(
        self,
        data: Mapping[str, Any],
        *,
        document: str,
        source: str = "<string>",
        lines: Mapping[str, int] | None = None,
        root_path: str = "",
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        self.document = document
        self.source = source
        self.limits = limits
        self._lines = dict(lines or {})
        self._errors: list[FieldError] = []
        self._omitted = 0
        self._refused: list[str] = []
        self.root = Table(self, root_path, data)

    def line_of(self, field: str) -> int | None:
        """The line of ``field``, or of the nearest enclosing key or table the scan saw; None if none."""
        path = field
        while path:
            line = self._lines.get(path)
            if line is not None:
                return line
            cut = max(path.rfind("."), path.rfind("["))
            path = path[:cut] if cut > 0 else ""
        return None

    @property
    def errors(self) -> tuple[FieldError, ...]:
        """The problems recorded so far."""
        return tuple(self._errors)

    @property
    def failed(self) -> bool:
        """True once any problem was recorded."""
        return bool(self._errors)

    def record(self, error: ConfigError) -> Any:
        """Keep ``error`` (every problem of a :class:`FileErrors`), placed at its field's line.

        :return: :data:`INVALID`, for ``return doc.record(...)`` in readers.
        """
        found = error.errors if isinstance(error, FileErrors) else (error,)
        self._omitted += error.omitted if isinstance(error, FileErrors) else 0
        for item in found:
            if len(self._errors) >= self.limits.errors:
                self._omitted += 1
                continue
            self._errors.append(FieldError.of(item, source=self.source, line=self.line_of(item.field)))
        return INVALID

    def refuse(self, error: ConfigError) -> None:
        """Record ``error`` and refuse its field: reading it, or what holds it, gives :data:`INVALID`."""
        self.record(error)
        self._refused.append(error.field)

    def refused(self, field: str) -> bool:
        """True if ``field`` or a value inside it (an array item) was refused by :meth:`refuse`."""
        return any(path == field or path.startswith((f"{field}.", f"{field}[")) for path in self._refused)

    def run(self, check: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``check(*args, **kwargs)``, keeping a :class:`ConfigError` it raises.

        :return: its result; :data:`INVALID` if it raised or if any argument is :data:`INVALID`
            (a check that depends on a failed value is not run, so it cannot add a false error).
        """
        if any_invalid(*args, *kwargs.values()):
            return INVALID
        try:
            return check(*args, **kwargs)
        except ConfigError as exc:
            return self.record(exc)

    def finish(self) -> None:
        """Raise every problem found, in line order.

        :raises FileErrors: if any problem was recorded.
        """
        if self._errors:
            ordered = sorted(self._errors, key=lambda e: (e.source != self.source, e.line is None, e.line or 0))
            raise FileErrors(ordered, omitted=self._omitted)

    @classmethod
    def of(cls, data: Any, *, path: str, document: str | None = None, source: str = "") -> Document:
        """A document for a table that did not come from a file (a mapping built in Python).

        :param data: the table.
        :param path: its dotted name (``"accuracy"``).
        """
        doc = cls({}, document=document or path, source=source, root_path=path)
        if not isinstance(data, Mapping):
            doc.record(ConfigError(path, shown(data), "a table"))
        else:
            doc.root = Table(doc, path, data)
        return doc


def _number_form(literal: str) -> str | None:
    """Why a bare TOML value breaks the number policy, or None."""
    if not _NUMBER_LIKE.match(literal) or _DATE_LIKE.match(literal) or literal.lstrip("+-") in ("inf", "nan"):
        return None
    if not _PLAIN_NUMBER.fullmatch(literal):
        return "hexadecimal, octal and binary literals and _ separators are not accepted"
    if literal.startswith("-") and not any(c in "123456789" for c in literal.split("e")[0].split("E")[0]):
        return "negative zero is not accepted"
    return None


def load_toml(
    data: str | bytes,
    *,
    document: str,
    source: str = "<string>",
    limits: Limits = DEFAULT_LIMITS,
) -> Document:
    """Parse TOML within ``limits``: bounded time and memory, exact decimals, the line of every key.

    :param data: the text, or the file's bytes (strict UTF-8).
    :param document: what it is (``"prescription"``): the field of whole-file problems.
    :param source: where it came from (a path), for messages.
    :param limits: the bounds (default :data:`DEFAULT_LIMITS`).
    :return: the document; read it, then call :meth:`Document.finish`.
    :raises FileErrors: too large, not UTF-8, not TOML, or over a limit. A number literal that
        breaks the number policy is recorded in the document (its field then reads as
        :data:`INVALID`), to be reported with the rest by :meth:`Document.finish`.
    """
    text = _decode(data, document, source, limits)
    try:
        scan = _Scan(text, limits)
    except _OverLimit as over:
        raise _file_error(over.field, over.value, over.allowed, source, line=text.count("\n", 0, over.pos) + 1,
                          detail="every file is bounded (README, Input limits)") from None
    parsed_text = text if scan.give_up is None else text[: scan.give_up + 1]
    try:
        parsed = tomllib.loads(parsed_text, parse_float=Decimal)
    except (tomllib.TOMLDecodeError, ValueError) as exc:
        raise _syntax_error(exc, document, source, parsed_text) from None
    if scan.give_up is not None:
        raise _file_error(document, _Shown("<text>"), "valid TOML", source, line=scan.line_at(scan.give_up),
                          detail=f"unexpected {text[scan.give_up:scan.give_up + 1]!r}")
    doc = Document(parsed, document=document, source=source, lines=scan.lines, limits=limits)
    for path, literal in scan.literals.items():
        problem = _number_form(literal)
        if problem is not None:
            doc.refuse(ConfigError(path, _Shown(literal), "a plain decimal number such as 16 or 1.6", detail=problem))
    return doc


class Table:
    """One table of a :class:`Document`, read key by key; :meth:`done` rejects what was not read.

    :param doc: the document (where problems are recorded).
    :param path: the table's dotted path (``"action[2]"``; ``""`` for the top level).
    :param raw: the table's content.
    """

    def __init__(self, doc: Document, path: str, raw: Mapping[str, Any]) -> None:
        self.doc = doc
        self.path = path
        self.raw = raw
        self._read: set[str] = set()

    def name(self, key: str) -> str:
        """The dotted field name of ``key`` in this table."""
        return _join(self.path, key)

    def has(self, key: str) -> bool:
        """True if the table holds ``key``."""
        return key in self.raw

    def get(self, key: str, read: Callable[..., Any] | None = None, *args: Any, default: Any = REQUIRED,
            **kwargs: Any) -> Any:
        """Read ``key`` with ``read(value, field, *args, **kwargs)`` (the raw value if ``read`` is None).

        :param default: returned when the key is absent; :data:`REQUIRED` records a missing-key problem.
        :return: the value read, ``default``, or :data:`INVALID` (the problem is recorded).
        """
        self._read.add(key)
        if key not in self.raw:
            if default is REQUIRED:
                return self.doc.record(ConfigError(self.name(key), None, "present (required key is missing)"))
            return default
        value = self.raw[key]
        if self.doc._refused and not _holds_tables(value) and self.doc.refused(self.name(key)):
            return INVALID
        if read is None:
            return value
        return self.doc.run(read, value, self.name(key), *args, **kwargs)

    def table(self, key: str, *, default: Any = REQUIRED) -> Any:
        """The sub-table ``key`` as a :class:`Table`; ``default`` (a mapping, say ``{}``) when absent.

        :return: the table, or :data:`INVALID` when it is missing or not a table.
        """
        if key not in self.raw and default is not REQUIRED:
            self._read.add(key)
            return Table(self.doc, self.name(key), default)
        raw = self.get(key, _table_value)
        return raw if raw is INVALID else Table(self.doc, self.name(key), raw)

    def tables(self, key: str, *, low: int = 0, high: int | None = None, default: Any = REQUIRED) -> Any:
        """The array of tables ``key`` (``[[key]]``), each as a :class:`Table`.

        :param low: fewest tables allowed.
        :param high: most tables allowed (default :attr:`Limits.array_items`).
        :return: a list of tables, ``default`` when absent, or :data:`INVALID`.
        """
        top = self.doc.limits.array_items if high is None else high
        items = self.get(key, _array_of_tables, low, top, default=default)
        if items is INVALID or items is default:
            return items
        return [Table(self.doc, f"{self.name(key)}[{i}]", item) for i, item in enumerate(items)]

    def done(self, *allowed: str) -> None:
        """Record every key that was not read as unknown.

        :param allowed: keys allowed here besides those read (named in the message).
        """
        known = sorted(self._read | set(allowed))
        for key in self.raw:
            if key not in self._read and key not in allowed:
                self.doc.record(ConfigError(self.name(key), shown(self.raw[key]),
                                            f"absent (unknown key; allowed here: {known})"))


def _holds_tables(value: Any) -> bool:
    """True for a table or an array of tables (read key by key, so a refused value inside is caught there)."""
    return isinstance(value, Mapping) or (isinstance(value, list) and any(isinstance(v, Mapping) for v in value))


def _table_value(value: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(field, shown(value), "a table")
    return value


def _array_of_tables(value: Any, field: str, low: int, high: int) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise ConfigError(field, shown(value), "an array of tables")
    if not low <= len(value) <= high:
        raise ConfigError(field, _Shown(f"{len(value)} entries"), f"between {low} and {high} entries")
    return value


# ---------------------------------------------------------------------------------------------------
# value readers: read(value, field, ...) -> value, raising ConfigError naming field, value and range

#: Arithmetic on file numbers: exact or an error, never a rounding, an overflow or an underflow.
_EXACT = Context(prec=120, Emax=10_000, Emin=-10_000,
                 traps=[InvalidOperation, Overflow, Underflow, Inexact, Rounded, Subnormal, Clamped, DivisionByZero])


def _range_text(low: Any, high: Any, unit: str, *, low_open: bool = False, high_open: bool = False) -> str:
    opening, closing = "(" if low_open else "[", ")" if high_open else "]"
    return f"{opening}{shown(low)}, {shown(high)}{closing} {unit}".rstrip()


def integer(value: Any, field: str, low: int, high: int, unit: str = "") -> int:
    """An integer in ``[low, high]``. Not a bool, and not a float even when whole (``16.0``).

    :param value: the value read from the file.
    :param field: its dotted name.
    :param low: smallest allowed value.
    :param high: largest allowed value.
    :param unit: shown after the range (``"min"``).
    :raises ConfigError: naming the field, the value and the range.
    """
    allowed = f"an integer in {_range_text(low, high, unit)}"
    if isinstance(value, bool) or not isinstance(value, int):
        whole = isinstance(value, (Decimal, float)) and _whole(value)
        raise ConfigError(field, shown(value), allowed,
                          detail="write a whole number without a decimal point" if whole else "")
    if not low <= value <= high:
        raise ConfigError(field, shown(value), allowed)
    return value


def _whole(value: Decimal | float) -> bool:
    """True for a finite whole number written as a float (``16.0``), without building a huge int."""
    if isinstance(value, float):
        return value.is_integer()
    return value.is_finite() and value.adjusted() < DEFAULT_LIMITS.number_chars and value == value.to_integral_value()


def _finite(value: Decimal | float) -> bool:
    return value.is_finite() if isinstance(value, Decimal) else value == value and abs(value) != float("inf")


def _to_decimal(value: Any, field: str, allowed: str, strings: bool) -> Decimal:
    if isinstance(value, bool):
        raise ConfigError(field, shown(value), allowed)
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if not _finite(value):
            raise ConfigError(field, shown(value), allowed, detail="not a finite number")
        return Decimal(repr(value))
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ConfigError(field, shown(value), allowed, detail="not a finite number")
        if value.is_signed() and not value:
            raise ConfigError(field, shown(value), allowed, detail="negative zero is not accepted")
        return value
    if isinstance(value, str) and strings:
        return decimal_text(value, field, allowed=allowed)
    raise ConfigError(field, shown(value), allowed)


def decimal(value: Any, field: str, low: Any, high: Any, unit: str = "", *, low_open: bool = False,
            high_open: bool = False, strings: bool = False) -> Decimal:
    """An exact decimal within the range (a TOML integer or float, or a Python float by its repr).

    :param low: smallest allowed value (excluded if ``low_open``).
    :param high: largest allowed value (excluded if ``high_open``).
    :param unit: shown after the range.
    :param strings: also take a decimal string such as ``"0.048"``.
    :raises ConfigError: not a finite number, or outside the range.
    """
    allowed = f"a number in {_range_text(low, high, unit, low_open=low_open, high_open=high_open)}"
    number = _to_decimal(value, field, allowed, strings)
    low_d, high_d = Decimal(low), Decimal(high)
    if number < low_d or number > high_d or (low_open and number == low_d) or (high_open and number == high_d):
        raise ConfigError(field, shown(value), allowed)
    return number


def scaled(value: Any, field: str, scale: int, low: int, high: int, unit: str = "", *, low_open: bool = False,
           strings: bool = False) -> int:
    """An exact decimal in ``unit`` converted to integer units (``value * scale``), with no rounding.

    The range is given in the integer units (``low``, ``high``) and checked on the decimal
    before it is scaled, then shown in the file's unit.

    :param scale: integer units per file unit (``NL_PER_ML``).
    :param low: smallest allowed value, integer units (excluded if ``low_open``).
    :param high: largest allowed value, integer units.
    :raises ConfigError: not a number, outside the range, or not a whole number of integer units.
    """
    low_d = _EXACT.divide(Decimal(low), Decimal(scale)).normalize(_EXACT)
    high_d = _EXACT.divide(Decimal(high), Decimal(scale)).normalize(_EXACT)
    number = decimal(value, field, low_d, high_d, unit, low_open=low_open, strings=strings)
    try:
        units = _EXACT.multiply(number, Decimal(scale))
        if units != units.to_integral_value(context=_EXACT):
            raise Inexact
        return int(units)
    except ArithmeticError:
        step = _EXACT.divide(Decimal(1), Decimal(scale)).normalize(_EXACT)
        raise ConfigError(field, shown(value), f"a multiple of {shown(step)} {unit}".rstrip(),
                          detail="no rounding is done") from None


_DECIMAL_TEXT = re.compile(r"\s*([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)\s*")


def decimal_text(text: Any, field: str, low: Any = None, high: Any = None, unit: str = "", *,
                 low_open: bool = False, allowed: str | None = None) -> Decimal:
    """A plain decimal written as text (an argument, a fault-spec value, a quoted TOML number).

    Digits, one optional point, an optional exponent; no ``_``, no ``0x``, no NaN or infinity,
    at most :attr:`Limits.number_chars` characters.

    :param low: smallest allowed value, or None for no range check.
    :param high: largest allowed value (with ``low``).
    :param allowed: the allowed text to name (default: from the range).
    :raises ConfigError: not such a number, or outside the range.
    """
    if allowed is None:
        allowed = "a decimal number" if low is None else (
            f"a number in {_range_text(low, high, unit, low_open=low_open)}")
    match = _DECIMAL_TEXT.fullmatch(text) if isinstance(text, str) and len(text) <= 2 * 40 else None
    if match is None or len(match.group(1)) > DEFAULT_LIMITS.number_chars:
        raise ConfigError(field, shown(text), allowed)
    number = Decimal(match.group(1))
    if number.is_signed() and not number:
        raise ConfigError(field, shown(text), allowed, detail="negative zero is not accepted")
    if low is not None:
        try:
            return decimal(number, field, low, high, unit, low_open=low_open)
        except ConfigError as exc:
            raise ConfigError(field, shown(text.strip()), exc.allowed) from None
    return number


def boolean(value: Any, field: str) -> bool:
    """``true`` or ``false`` (not 0, 1 or a string).

    :raises ConfigError: anything else.
    """
    if not isinstance(value, bool):
        raise ConfigError(field, shown(value), "true or false")
    return value


def choice(value: Any, field: str, choices: Iterable[str]) -> str:
    """One of ``choices``, exactly.

    :raises ConfigError: anything else.
    """
    options = list(choices)
    if not isinstance(value, str) or value not in options:
        raise ConfigError(field, shown(value), f"one of {options}")
    return value


def text(value: Any, field: str, *, max_chars: int = MAX_TEXT_CHARS) -> str:
    """Free text: non-empty, printable, no leading or trailing space, at most ``max_chars`` characters.

    Printable (:meth:`str.isprintable`) excludes control, format and separator characters other
    than the space: no bidirectional overrides, zero-width or line-breaking characters, so what a
    reader sees is what is stored.

    :raises ConfigError: anything else.
    """
    allowed = f"a non-empty printable string of at most {max_chars} characters"
    if not isinstance(value, str):
        raise ConfigError(field, shown(value), allowed)
    if not value or len(value) > max_chars or value != value.strip() or not value.isprintable():
        raise ConfigError(field, shown(value), allowed)
    return value


_IDENTIFIER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")
_PERSON = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9 ._'@-]*[A-Za-z0-9.])?")


def identifier(value: Any, field: str) -> str:
    """An identity code a clinician matches by eye (prescription ID, patient ID).

    ASCII letters and digits, with ``.``, ``_`` and ``-`` inside, at most
    :data:`MAX_IDENTIFIER_CHARS` characters: no homoglyphs, no CJK, no emoji, no spaces.

    :raises ConfigError: anything else.
    """
    allowed = (f"an identifier of 1 to {MAX_IDENTIFIER_CHARS} ASCII letters and digits, "
               "with . _ - inside (e.g. RX-0001)")
    if not isinstance(value, str) or len(value) > MAX_IDENTIFIER_CHARS or not _IDENTIFIER.fullmatch(value):
        raise ConfigError(field, shown(value), allowed)
    return value


def person(value: Any, field: str) -> str:
    """Who prescribed or authorised (``dr.jones``, ``J. O'Brien``): a documented ASCII set.

    ASCII letters and digits, with space, ``.``, ``_``, ``'``, ``@`` and ``-`` inside, at most
    :data:`MAX_IDENTIFIER_CHARS` characters; names with other letters are written in ASCII
    (``Mueller``), so that no two people look alike.

    :raises ConfigError: anything else.
    """
    allowed = (f"a name of 1 to {MAX_IDENTIFIER_CHARS} ASCII letters and digits, "
               "with space . _ ' @ - inside (e.g. dr.jones)")
    if (not isinstance(value, str) or len(value) > MAX_IDENTIFIER_CHARS or not _PERSON.fullmatch(value)
            or "  " in value):
        raise ConfigError(field, shown(value), allowed)
    return value


# ---------------------------------------------------------------------------------------------------
# command-line arguments: argparse ``type=`` helpers with the same checks and messages


def checked_arg(read: Callable[[str], Any], *, keep_text: bool = False) -> Callable[[str], Any]:
    """An argparse ``type=`` that reads the argument with ``read(text)``.

    A :class:`ConfigError` becomes argparse's usage error (exit status 2) with the kit's
    message, before any work starts.

    :param read: the reader; it names the field in its errors.
    :param keep_text: return the argument as typed once ``read`` accepts it (for handlers that
        read the text again themselves).
    """

    def convert(text: str) -> Any:
        try:
            value = read(text)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text if keep_text else value

    convert.__name__ = getattr(read, "__name__", "value")
    return convert


def int_arg(name: str, low: int, high: int, unit: str = "") -> Callable[[str], int]:
    """An argparse ``type=`` for an integer argument in ``[low, high]`` (plain decimal digits).

    :param name: the option (``"--address"``), named in the message.
    """

    def read(text: str) -> int:
        allowed = f"an integer in {_range_text(low, high, unit)}"
        if not _INTEGER_TEXT.fullmatch(text) or len(text) > DEFAULT_LIMITS.number_chars:
            raise ConfigError(name, shown(text), allowed)
        return integer(int(text), name, low, high, unit)

    return checked_arg(read)


_INTEGER_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*")


def float_arg(name: str, low: float, high: float, unit: str = "", *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse ``type=`` for a finite number argument within the range, returned as a float.

    :param name: the option (``"--speed"``), named in the message.
    :param low_open: exclude ``low`` itself.
    """

    def read(text: str) -> float:
        number = float(decimal_text(text, name, Decimal(repr(low)), Decimal(repr(high)), unit, low_open=low_open))
        if number < low or number > high or (low_open and number == low):  # a float too small to tell from 0
            raise ConfigError(name, shown(text.strip()),
                              f"a number in {_range_text(low, high, unit, low_open=low_open)}",
                              detail="it rounds to a float outside the range")
        return number

    return checked_arg(read)


def decimal_arg(name: str, low: Any, high: Any, unit: str = "", *, low_open: bool = False) -> Callable[[str], str]:
    """An argparse ``type=`` for an exact decimal argument within the range, kept as typed.

    The text is returned unchanged once it is a plain decimal in range, for a handler that
    converts it exactly itself (a syringe diameter the simulator reads to 0.001 mm).

    :param name: the option (``"--diameter-mm"``), named in the message.
    """
    return checked_arg(lambda text: decimal_text(text, name, low, high, unit, low_open=low_open), keep_text=True)
