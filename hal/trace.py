"""Reading the serial trace that :class:`hal.transport.ByteTrace` writes (``serial-trace.txt``).

The format, one line per chunk of bytes, UTF-8::

    # itb-fil serial trace  url=/dev/pts/3  opened=2026-01-05T08:00:00+00:00
         0.000512 TX  30 56 45 52 0D                                      |0VER.|
         0.004230 RX  02 30 30 53 4E 45 31 30 30 30 56 33 2E 39 33 30 03  |.00SNE1000V3.930.|
         0.104870 --  timeout reading 1 byte(s)

- the header: ``# itb-fil serial trace``, then ``key=value`` fields separated by two
  spaces (``url``: the port; ``opened``: the wall time the link opened, ISO 8601);
- a data line: seconds since the link opened *on the link's clock* (virtual seconds in a
  simulated run, real ones on the bench), right-aligned in 13 characters with 6 decimals;
  the direction, ``TX`` (host to device) or ``RX`` (device to host); the bytes as
  upper-case hex pairs; and ``|...|`` the same bytes as ASCII, ``.`` for anything not
  printable;
- a note line: the time, ``--`` and free text (timeouts, resyncs, mode changes).

:func:`read_trace` parses a file into a :class:`Trace` and checks each line against the
format (the ASCII column must be the hex bytes'), raising
:class:`~cython_ext.errors.ConfigError` naming the line otherwise.

What the format does not say, so a reader cannot know it from the file alone: its own
version (there is no version field: a change of the writer is invisible), which clock
the times are on (virtual or real), and the port's settings (baud rate, Safe or Basic
mode). The simulator's own endpoint trace (:class:`sim.endpoints.ByteTrace`) is a
different format, with the opposite meaning of RX and TX; this module does not read it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cython_ext.errors import ConfigError

#: The first words of every trace's header line.
HEADER_PREFIX = "# itb-fil serial trace"
#: Directions of data lines.
DIRECTIONS = ("TX", "RX")
#: Tag of a note line.
NOTE = "--"


@dataclass(frozen=True)
class TraceEvent:
    """One line of a trace.

    :ivar line: its line number in the file, from 1.
    :ivar elapsed_s: seconds since the link opened, on the link's clock.
    :ivar direction: ``TX`` (host to device), ``RX`` (device to host) or ``--`` (a note).
    :ivar data: the bytes moved (empty for a note).
    :ivar note: the note's text (empty for data).
    """

    line: int
    elapsed_s: float
    direction: str
    data: bytes = b""
    note: str = ""


@dataclass(frozen=True)
class Trace:
    """A parsed trace.

    :ivar header: the header's fields (``url``, ``opened``).
    :ivar events: every data and note line, in order.
    """

    header: dict[str, str]
    events: tuple[TraceEvent, ...] = field(default_factory=tuple)

    def stream(self, direction: str) -> bytes:
        """Every byte sent in ``direction`` (``TX`` or ``RX``), concatenated in order."""
        return b"".join(e.data for e in self.events if e.direction == direction)

    def data(self) -> Iterator[TraceEvent]:
        """The data lines only."""
        return (e for e in self.events if e.direction in DIRECTIONS)


def _ascii(data: bytes) -> str:
    return "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in data)


def parse_line(text: str, number: int) -> TraceEvent:
    """Parse one data or note line.

    :raises ConfigError: the line does not follow the format.
    """
    where = f"trace line {number}"
    parts = text.split(maxsplit=2)
    if len(parts) < 2:
        raise ConfigError(where, text, "'<seconds> TX|RX <hex bytes> |<ascii>|' or '<seconds> -- <note>'")
    try:
        elapsed_s = float(parts[0])
    except ValueError:
        raise ConfigError(where, parts[0], "a time in seconds") from None
    tag, rest = parts[1], parts[2] if len(parts) == 3 else ""
    if tag == NOTE:
        return TraceEvent(number, elapsed_s, NOTE, note=rest)
    if tag not in DIRECTIONS:
        raise ConfigError(where, tag, f"one of {', '.join((*DIRECTIONS, NOTE))}")
    hex_part, bar, ascii_part = rest.partition("|")
    if not bar or not ascii_part.endswith("|"):
        raise ConfigError(where, rest, "hex bytes then |ascii|")
    try:
        data = bytes.fromhex(hex_part)
    except ValueError:
        raise ConfigError(where, hex_part.strip(), "hex byte pairs separated by spaces") from None
    if not data or _ascii(data) != ascii_part[:-1]:
        raise ConfigError(where, ascii_part[:-1], f"the ASCII of its bytes ({_ascii(data)!r})")
    return TraceEvent(number, elapsed_s, tag, data)


def parse_trace(lines: Iterable[str]) -> Trace:
    """Parse the lines of a trace (the header first).

    :raises ConfigError: a missing header or a malformed line.
    """
    header: dict[str, str] | None = None
    events: list[TraceEvent] = []
    for number, raw in enumerate(lines, start=1):
        text = raw.rstrip("\n")
        if header is None:
            if not text.startswith(HEADER_PREFIX):
                raise ConfigError("trace line 1", text[:60], f"the header '{HEADER_PREFIX} ...'")
            fields = [f for f in text[len(HEADER_PREFIX):].split("  ") if "=" in f]
            header = dict(f.strip().split("=", 1) for f in fields)
            continue
        if text.strip():
            events.append(parse_line(text, number))
    if header is None:
        raise ConfigError("trace", "(empty)", f"a file starting with '{HEADER_PREFIX}'")
    return Trace(header, tuple(events))


def read_trace(path: str | Path) -> Trace:
    """Read and parse the trace file at ``path``.

    :raises ConfigError: the file cannot be read or does not follow the format.
    """
    try:
        with Path(path).open(encoding="utf-8") as handle:
            return parse_trace(handle)
    except OSError as exc:
        raise ConfigError("trace", str(path), "a readable trace file", detail=str(exc)) from None
