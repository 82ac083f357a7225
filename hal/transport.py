"""Byte transport over any pyserial URL, with an optional byte trace.

Every port in itb-fil is opened here, and only through
:func:`serial.serial_for_url`, so the same driver code serves a real adapter
(``/dev/ttyUSB0``), the simulator over TCP (``socket://127.0.0.1:PORT``) or a
pty (``/dev/pts/N``), an in-process simulator (``itbsim://<id>``) and pyserial's
own ``loop://`` and ``spy://`` handlers. A port is never opened without a read
timeout: a silent device must not hang the controller.

The link is deliberately thin. It moves bytes and reports failures as the
HAL's typed errors; framing, matching and retries belong to the codec and the
driver above it. pyserial's short-read behaviour is kept visible: :meth:`read`
and :meth:`read_until` return what arrived before the timeout, and the caller
checks for completeness.

Trace file format (one line per chunk, UTF-8)::

    # itb-fil serial trace  url=socket://127.0.0.1:4001  opened=2026-01-05T08:00:00+00:00
         0.000512 TX  30 56 45 52 0D                                      |0VER.|
         0.004230 RX  02 30 30 53 4E 45 31 30 30 30 56 33 2E 39 33 30 03  |.00SNE1000V3.930.|
         0.104870 -- timeout reading 1 byte(s)

The first column is seconds since the link opened, on the injected clock.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from pathlib import Path
from typing import IO

import serial

try:
    import termios
except ImportError:  # not POSIX
    _TERMIOS_ERRORS: tuple[type[BaseException], ...] = ()
else:
    _TERMIOS_ERRORS = (termios.error,)

from hal.clock import NS_PER_S, Clock, SystemClock
from hal.lifecycle import ClosesOnExit
from cython_ext.errors import CommunicationError, ConfigError, ConnectError, LinkTimeoutError, StateError

#: Exceptions a failing port raises (termios.error is not an OSError).
PORT_ERRORS: tuple[type[BaseException], ...] = (serial.SerialException, OSError, *_TERMIOS_ERRORS)
#: Baud rates a serial URL may be opened at.
STANDARD_BAUDRATES: tuple[int, ...] = (300, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
#: Parity letters pyserial understands.
PARITIES: tuple[str, ...] = ("N", "E", "O", "M", "S")
#: Default read timeout, seconds.
DEFAULT_TIMEOUT_S = 0.5
#: Longest read timeout accepted, seconds.
MAX_TIMEOUT_S = 60.0
#: A trace is flushed to disk at least this often while bytes move (notes flush at once), real seconds.
TRACE_FLUSH_INTERVAL_S = 0.5
#: Bytes shown as themselves in the ASCII column of a trace line; all others show as ".".
_TRACE_ASCII = bytes(b if 0x20 <= b < 0x7F else 0x2E for b in range(256))


def _check_timeout_s(timeout_s: object, field: str = "timeout_s") -> float:
    allowed = f"a number of seconds in (0, {MAX_TIMEOUT_S}]"
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)):
        raise ConfigError(field, timeout_s, allowed)
    if not (math.isfinite(timeout_s) and 0 < timeout_s <= MAX_TIMEOUT_S):
        raise ConfigError(field, timeout_s, allowed)
    return float(timeout_s)


def format_trace_line(elapsed_s: float, tag: str, data: bytes) -> str:
    """Render one trace line: elapsed seconds, a tag, hex bytes and printable ASCII.

    :param elapsed_s: seconds since the trace started.
    :param tag: ``"TX"``, ``"RX"`` or ``"--"`` (a note).
    :param data: the bytes moved (empty for a note).
    :return: the line, without a newline.
    """
    return f"{elapsed_s:13.6f} {_trace_body(tag, data)}"


@functools.lru_cache(maxsize=4096)
def _trace_body(tag: str, data: bytes) -> str:
    """The part of a trace line after the time (the same packets recur all day long)."""
    hex_part = data.hex(" ").upper()
    ascii_part = data.translate(_TRACE_ASCII).decode("ascii")
    return f"{tag}  {hex_part:<48} |{ascii_part}|"


class ByteTrace:
    """Append-only, timestamped record of every byte sent and received.

    Meant for bug reports: attach the file and anyone can replay the exchange.
    Byte lines reach the disk at least every :data:`TRACE_FLUSH_INTERVAL_S`
    (real time), notes and :meth:`close` at once. Thread-safe; :meth:`close` is
    idempotent.

    :param path: file to create (truncated if it exists).
    :param url: the port's URL, written in the header.
    :param clock: time source for the timestamps; the system clock by default.
    """

    def __init__(self, path: str | Path, *, url: str = "", clock: Clock | None = None) -> None:
        self.path = Path(path)
        self._clock = clock or SystemClock()
        self._t0_ns = self._clock.monotonic_ns()
        self._lock = threading.Lock()
        try:
            self._file: IO[str] | None = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise ConfigError("trace_path", str(path), "a writable file path", detail=str(exc)) from exc
        self._file.write(
            f"# itb-fil serial trace  url={url}  opened={self._clock.utc_now().isoformat()}\n"
        )
        self._file.flush()
        self._flushed_at = time.monotonic()

    def _elapsed_s(self) -> float:
        return (self._clock.monotonic_ns() - self._t0_ns) / NS_PER_S

    def record(self, tag: str, data: bytes) -> None:
        """Write one line for ``data`` moved in direction ``tag`` (``"TX"``/``"RX"``)."""
        with self._lock:
            if self._file is None:
                return
            elapsed_s = (self._clock.monotonic_ns() - self._t0_ns) / NS_PER_S
            self._file.write(f"{elapsed_s:13.6f} {_trace_body(tag, data)}\n")
            now = time.monotonic()
            if now - self._flushed_at >= TRACE_FLUSH_INTERVAL_S:
                self._file.flush()
                self._flushed_at = now

    def note(self, text: str) -> None:
        """Write a free-text note line (timeouts, resyncs, mode changes)."""
        with self._lock:
            if self._file is None:
                return
            self._file.write(f"{self._elapsed_s():13.6f} --  {text}\n")
            self._file.flush()
            self._flushed_at = time.monotonic()

    def close(self) -> None:
        """Flush and close the file. Safe to call twice."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


class SerialLink(ClosesOnExit):
    """An open port: bytes in, bytes out, typed errors, optional trace.

    Build one with :func:`open_serial`. It is a context manager and
    :meth:`close` is idempotent; any other call on a closed link raises
    :class:`~cython_ext.errors.StateError`.

    :param port: an open pyserial port (anything :func:`serial.serial_for_url` returns).
    :param url: the URL it was opened with.
    :param trace: where to record bytes, or None.
    """

    def __init__(self, port: serial.SerialBase, *, url: str, trace: ByteTrace | None = None) -> None:
        self._port: serial.SerialBase | None = port
        self.url = url
        self.trace = trace
        self._lock = threading.RLock()

    # -- lifecycle -------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """True until :meth:`close` is called (or the port dies)."""
        return self._port is not None

    def _require_port(self) -> serial.SerialBase:
        port = self._port
        if port is None:
            raise StateError(f"serial link {self.url} is closed")
        return port

    def close(self) -> None:
        """Close the port and the trace. Safe to call more than once."""
        with self._lock:
            port, self._port = self._port, None
            try:
                if port is not None:
                    port.close()
            except PORT_ERRORS:
                pass  # closing a port whose device vanished: nothing left to release
            finally:
                if self.trace is not None:
                    self.trace.close()

    # -- settings ----------------------------------------------------------

    @property
    def timeout_s(self) -> float:
        """The read timeout, seconds. Setting it validates the value."""
        return float(self._require_port().timeout)

    @timeout_s.setter
    def timeout_s(self, value: float) -> None:
        checked = _check_timeout_s(value)
        with self._lock:
            self._require_port().timeout = checked

    @property
    def baudrate(self) -> int:
        """The port's baud rate (ignored by socket and pty transports)."""
        return int(self._require_port().baudrate)

    # -- I/O ---------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send all of ``data``.

        :raises LinkTimeoutError: the write timed out.
        :raises CommunicationError: the port failed (device unplugged, socket closed).
        """
        if type(data) is not bytes:
            data = bytes(data)
        with self._lock:
            port = self._port
            if port is None:
                raise StateError(f"serial link {self.url} is closed")
            if self.trace is not None:
                self.trace.record("TX", data)
            try:
                written = port.write(data)
                port.flush()
            except serial.SerialTimeoutException as exc:
                raise LinkTimeoutError(f"write to {self.url} timed out") from exc
            except PORT_ERRORS as exc:
                raise CommunicationError(f"write to {self.url} failed: {exc}") from exc
            if written is not None and written != len(data):
                raise CommunicationError(f"write to {self.url} sent {written} of {len(data)} bytes")

    def read(self, size: int = 1) -> bytes:
        """Read up to ``size`` bytes, waiting at most the read timeout.

        A short (or empty) result means the timeout ran out; it is not an error here.

        :raises CommunicationError: the port failed.
        """
        if size < 0:
            raise ConfigError("size", size, ">= 0 bytes")
        with self._lock:
            port = self._port
            if port is None:
                raise StateError(f"serial link {self.url} is closed")
            try:
                data = bytes(port.read(size))
            except PORT_ERRORS as exc:
                raise CommunicationError(f"read from {self.url} failed: {exc}") from exc
            self._trace_rx(data, f"timeout reading {size} byte(s)" if len(data) < size else None)
            return data

    def read_until(self, terminator: bytes, size: int | None = None) -> bytes:
        """Read until ``terminator``, ``size`` bytes, or the timeout, whichever comes first.

        The caller must check that the result ends with ``terminator``; on a
        timeout the partial bytes are returned.

        :raises CommunicationError: the port failed.
        """
        if not terminator:
            raise ConfigError("terminator", terminator, "at least one byte")
        with self._lock:
            port = self._require_port()
            try:
                data = bytes(port.read_until(terminator, size))
            except PORT_ERRORS as exc:
                raise CommunicationError(f"read from {self.url} failed: {exc}") from exc
            complete = data.endswith(terminator) or (size is not None and len(data) >= size)
            self._trace_rx(data, None if complete else f"timeout waiting for {terminator.hex(' ')}")
            return data

    def read_available(self) -> bytes:
        """Return whatever is already buffered, without waiting."""
        with self._lock:
            waiting = self.in_waiting
            return self.read(waiting) if waiting else b""

    def reset_input(self) -> None:
        """Discard bytes the OS already holds (late bytes still in flight are not affected).

        :raises CommunicationError: the port failed.
        """
        with self._lock:
            port = self._require_port()
            try:
                port.reset_input_buffer()
            except PORT_ERRORS as exc:
                raise CommunicationError(f"flush of {self.url} failed: {exc}") from exc

    @property
    def in_waiting(self) -> int:
        """Bytes received and not yet read.

        :raises CommunicationError: the port failed.
        """
        port = self._port
        if port is None:
            raise StateError(f"serial link {self.url} is closed")
        try:
            return int(port.in_waiting)
        except PORT_ERRORS as exc:
            raise CommunicationError(f"status of {self.url} failed: {exc}") from exc

    def note(self, text: str) -> None:
        """Add a note to the trace, if there is one."""
        if self.trace is not None:
            self.trace.note(text)

    def _trace_rx(self, data: bytes, timeout_note: str | None) -> None:
        if self.trace is None:
            return
        if data:
            self.trace.record("RX", data)
        if timeout_note is not None:
            self.trace.note(timeout_note)


def open_serial(
    url: str,
    *,
    baudrate: int = 19200,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    bytesize: int = 8,
    parity: str = "N",
    stopbits: float = 1,
    write_timeout_s: float | None = None,
    trace_path: str | Path | None = None,
    clock: Clock | None = None,
) -> SerialLink:
    """Open ``url`` through :func:`serial.serial_for_url`, always with a read timeout.

    All settings are checked before the port is touched.

    :param url: a device path or pyserial URL (``/dev/ttyUSB0``, ``socket://h:p``, ``loop://``...).
    :param baudrate: bits per second, one of :data:`STANDARD_BAUDRATES`.
    :param timeout_s: read timeout in seconds, in (0, 60].
    :param bytesize: data bits, 5 to 8.
    :param parity: ``"N"``, ``"E"``, ``"O"``, ``"M"`` or ``"S"``.
    :param stopbits: 1, 1.5 or 2.
    :param write_timeout_s: write timeout in seconds; defaults to ``timeout_s``.
    :param trace_path: if given, every byte sent and received is logged to this file.
    :param clock: time source for trace timestamps (system clock by default).
    :return: the open link.
    :raises ConfigError: a setting is out of range; nothing was opened.
    :raises ConnectError: the port could not be opened.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError("url", url, "a non-empty device path or pyserial URL")
    if baudrate not in STANDARD_BAUDRATES:
        raise ConfigError("baudrate", baudrate, f"one of {STANDARD_BAUDRATES} bit/s")
    timeout_s = _check_timeout_s(timeout_s)
    write_timeout_s = timeout_s if write_timeout_s is None else _check_timeout_s(write_timeout_s, "write_timeout_s")
    if bytesize not in (5, 6, 7, 8):
        raise ConfigError("bytesize", bytesize, "one of 5, 6, 7, 8 bits")
    if parity not in PARITIES:
        raise ConfigError("parity", parity, f"one of {PARITIES}")
    if stopbits not in (1, 1.5, 2):
        raise ConfigError("stopbits", stopbits, "one of 1, 1.5, 2")
    try:
        port = serial.serial_for_url(
            url,
            baudrate=baudrate,
            bytesize=bytesize,
            parity=parity,
            stopbits=stopbits,
            timeout=timeout_s,
            write_timeout=write_timeout_s,
        )
    except (*PORT_ERRORS, ValueError) as exc:
        raise ConnectError(f"cannot open {url}: {exc}") from exc
    trace = None
    if trace_path is not None:
        try:
            trace = ByteTrace(trace_path, url=url, clock=clock)
        except ConfigError:
            port.close()
            raise
    return SerialLink(port, url=url, trace=trace)
