"""Put a simulated byte device on a port any serial client can open.

* :class:`PtyEndpoint`: a pseudo-terminal; clients open ``.url`` (``/dev/pts/N``)
  exactly like ``/dev/ttyUSB0``. Closing the master is an unplugged adapter.
  When the last client closes the port, the line settings it left (7O1, say)
  are put back to the endpoint's raw 8N1, as a re-plugged adapter comes up.
* :class:`TcpEndpoint`: a TCP listener; ``.url`` is ``socket://127.0.0.1:PORT``.
* :class:`InProcessEndpoint`: no thread, no file descriptor; ``.url`` is
  ``itbsim://<id>``, served by the pyserial handler :mod:`sim.protocol_itbsim`
  (registered when this module is imported). The device answers inside
  ``write()``, so unit tests run synchronously in virtual time.

The pty and TCP endpoints run one service thread each that moves bytes between
the port and the device and polls the device for unsolicited output.

Pacing (``pace_baud``): a pty delivers bytes instantly, whatever baud the
client sets. With pacing the endpoint reproduces the wire timing of 8N1 (10
bits per byte): a request is handed to the device only when its last byte
would have arrived, and reply bytes are released on a deadline schedule
(byte *i* of a burst at ``start + (i+1) * 10 / baud``). Bytes due together are
written in one chunk, so scheduling jitter never accumulates. When the device
changes its own baud (a pump's ``*ADR n B baud``), pacing follows from the
reply to that command on, as the manual says the pump answers at the new baud.

Every endpoint is a context manager; :meth:`close` is idempotent and joins
the service thread and closes every descriptor it opened.
"""

from __future__ import annotations

import itertools
import os
import select
import socket
import termios
import threading
import time
import tty
import weakref
from collections.abc import Callable
from typing import IO

import serial

from hal.clock import Clock
from hal.lifecycle import ClosesOnExit
from cython_ext.errors import ConfigError, ConnectError, StateError
from sim.device import ByteDevice, ByteDeviceProtocol, device_wants_disconnect

#: Bits on the wire per byte in 8N1 (start + 8 data + stop).
BITS_PER_BYTE = 10
DEFAULT_POLL_INTERVAL_S = 0.005

if "sim" not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append("sim")


class ByteTrace:
    """Timestamped byte trace for bug reports: one line per chunk, hex and ASCII.

    Line format: ``<real s since open> <device clock s> <RX|TX> <hex bytes>  |<ascii>|``
    where RX is host-to-device and TX device-to-host. The device-clock column
    is the virtual time in CI runs (``-`` when the device has no clock).

    :param path: file to write (truncated).
    :param clock: the device clock, for the second column.
    """

    def __init__(self, path: str | os.PathLike[str], clock: Clock | None = None) -> None:
        self._file: IO[str] = open(path, "w", encoding="ascii")  # noqa: SIM115 - closed in close()
        self._t0 = time.monotonic()
        self._clock = clock
        self._lock = threading.Lock()

    def record(self, direction: str, data: bytes) -> None:
        """Write one chunk travelling in ``direction`` (``"RX"`` or ``"TX"``)."""
        if not data:
            return
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in data)
        device_s = f"{self._clock.monotonic_ns() / 1e9:14.6f}" if self._clock is not None else f"{'-':>14}"
        line = f"{time.monotonic() - self._t0:12.6f} {device_s} {direction} {data.hex(' ')}  |{text}|\n"
        with self._lock:
            if not self._file.closed:
                self._file.write(line)
                self._file.flush()

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            self._file.close()


class _Pacer:
    """Deadline schedule for one direction of an 8N1 line (real time, ``time.monotonic``)."""

    def __init__(self, baud: int | None) -> None:
        self.byte_time_s = None if baud is None else BITS_PER_BYTE / baud
        self.free_at = 0.0

    def schedule(self, count: int, now: float) -> list[float]:
        """Due times of ``count`` bytes queued at ``now``; each byte is due when its stop bit ends."""
        if self.byte_time_s is None:
            return [now] * count
        start = max(now, self.free_at)
        due = [start + (i + 1) * self.byte_time_s for i in range(count)]
        if due:
            self.free_at = due[-1]
        return due


def wait_until(deadline: float, stop: threading.Event | None = None) -> None:
    """Wait until ``time.monotonic()`` reaches ``deadline``.

    Sleeps most of the wait, then spins the last 0.3 ms with zero-length
    sleeps, which hand the GIL to other threads (a client in the same process).
    """
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or (stop is not None and stop.is_set()):
            return
        time.sleep(left - 0.0003 if left > 0.0003 else 0)


class Endpoint(ClosesOnExit):
    """Base of every endpoint: lifecycle, tracing, statistics and the device-serialising lock."""

    _ids = itertools.count(1)

    def __init__(
        self,
        device: ByteDeviceProtocol,
        *,
        pace_baud: int | None = None,
        trace_path: str | os.PathLike[str] | None = None,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        on_traffic: Callable[[str, bytes], None] | None = None,
    ) -> None:
        if pace_baud is not None and (not isinstance(pace_baud, int) or pace_baud <= 0):
            raise ConfigError("pace_baud", pace_baud, "None or an int > 0 baud")
        if not 0 < poll_interval_s <= 1:
            raise ConfigError("poll_interval_s", poll_interval_s, "in (0, 1] s")
        self.device = device
        self.pace_baud = pace_baud
        self.poll_interval_s = poll_interval_s
        self.id = next(self._ids)
        device_clock = getattr(device, "clock", None)
        trace_clock = device_clock if isinstance(device_clock, Clock) else None
        self._trace = ByteTrace(trace_path, trace_clock) if trace_path is not None else None
        self._on_traffic = on_traffic
        self._device_lock = threading.Lock()
        self._closed = False
        #: Set when the link vanished (scripted unplug or client gone for good).
        self.disconnected = threading.Event()
        self.bytes_received = 0
        self.bytes_sent = 0
        #: Bytes the device sent that the port could not take (nobody reading).
        self.bytes_dropped = 0
        #: Set once any output had to be dropped.
        self.output_dropped = threading.Event()

    @property
    def url(self) -> str:
        """The serial URL a client passes to ``serial.serial_for_url``."""
        raise NotImplementedError

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran."""
        return self._closed

    def _note(self, direction: str, data: bytes) -> None:
        if not data:
            return
        if direction == "RX":
            self.bytes_received += len(data)
        else:
            self.bytes_sent += len(data)
        if self._trace is not None:
            self._trace.record(direction, data)
        if self._on_traffic is not None:
            self._on_traffic(direction, data)

    def _count_dropped(self, count: int) -> None:
        if count > 0:
            self.bytes_dropped += count
            self.output_dropped.set()

    def exchange(self, data: bytes) -> bytes:
        """Hand host bytes to the device (serialised) and return its answer."""
        self._note("RX", data)
        with self._device_lock:
            reply = self.device.receive(data)
        return reply

    def poll_device(self) -> bytes:
        """Poll the device for unsolicited bytes (serialised)."""
        with self._device_lock:
            return self.device.poll()

    def close(self) -> None:
        """Release every resource (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._close_impl()
        if self._trace is not None:
            self._trace.close()

    def _close_impl(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


class _ThreadedEndpoint(Endpoint):
    """A service thread moving bytes between one file descriptor and the device, with pacing."""

    def __init__(self, device: ByteDeviceProtocol, **kwargs: object) -> None:
        super().__init__(device, **kwargs)  # type: ignore[arg-type]
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        self._rx = _Pacer(self.pace_baud)
        self._tx = _Pacer(self.pace_baud)
        self._seen_device_baud = self._device_baud()
        self._pending: list[tuple[float, int]] = []  # device -> host: (due time, byte)
        self._rx_pending: list[tuple[float, bytes]] = []  # host -> device: (due time, chunk)
        self._thread = threading.Thread(target=self._serve, name=f"itbsim-{type(self).__name__}-{self.id}", daemon=True)
        #: Set when the service thread has finished its set-up and is serving.
        self.ready = threading.Event()

    def _start(self) -> None:
        self._thread.start()
        self.ready.wait()

    # Subclass hooks --------------------------------------------------------------------
    def _fd(self) -> int | None:
        """Descriptor to read host bytes from, or None while no client is connected."""
        raise NotImplementedError

    def _extra_fds(self) -> list[int]:
        return []

    def _on_extra_readable(self, fd: int) -> None:
        pass

    def _check_peer(self) -> None:
        """Called once per service-loop turn (the pty notices here that its client left)."""

    def _read(self) -> bytes | None:
        """Read available host bytes; b"" when nothing, None when the client went away."""
        raise NotImplementedError

    def _write(self, data: bytes) -> bool:
        """Write bytes to the host; False when they could not be delivered."""
        raise NotImplementedError

    def _drop_link(self) -> None:
        """Make the port vanish (scripted unplug)."""
        raise NotImplementedError

    # Service loop ----------------------------------------------------------------------
    def _next_deadline(self) -> float | None:
        """Earliest due time of a paced byte in either direction (``time.monotonic``), or None."""
        times = [items[0][0] for items in (self._pending, self._rx_pending) if items]
        return min(times) if times else None

    def _serve(self) -> None:
        self.ready.set()
        try:
            while not self._stop.is_set():
                self._check_peer()
                timeout = self.poll_interval_s
                deadline = self._next_deadline()
                if deadline is not None:
                    # Wake a little early; the last stretch is spun in _service_due.
                    timeout = max(0.0, min(timeout, deadline - time.monotonic() - 0.0002))
                fds = [self._wake_r, *self._extra_fds()]
                fd = self._fd()
                if fd is not None:
                    fds.append(fd)
                readable, _, _ = select.select(fds, [], [], timeout)
                if self._wake_r in readable:
                    os.read(self._wake_r, 512)
                for extra in self._extra_fds():
                    if extra in readable:
                        self._on_extra_readable(extra)
                if fd is not None and fd in readable:
                    self._handle_input()
                self._queue(self.poll_device())
                self._service_due()
                if device_wants_disconnect(self.device) and not self.disconnected.is_set():
                    self._pending.clear()
                    self._rx_pending.clear()
                    self._drop_link()
                    self.disconnected.set()
        finally:
            self._stop.set()

    def _handle_input(self) -> None:
        data = self._read()
        if not data:
            return
        if self.pace_baud is None:
            self._queue(self.exchange(data))
            return
        # The device sees the bytes when the last of them would have crossed the wire.
        due = self._rx.schedule(len(data), time.monotonic())
        self._rx_pending.append((due[-1], data))
        self._service_due()

    def _device_baud(self) -> int | None:
        device: object = self.device
        for _ in range(4):  # through wrappers such as the fault layer (``.device``)
            baud = getattr(device, "baud", None)
            if isinstance(baud, int) and not isinstance(baud, bool) and baud > 0:
                return baud
            device = getattr(device, "device", None)
            if device is None:
                return None
        return None

    def _follow_device_baud(self) -> None:
        """Re-pace when the device *changes* its baud (``*ADR n B baud``): from this reply on."""
        if self.pace_baud is None:
            return
        baud = self._device_baud()
        if baud is not None and baud != self._seen_device_baud:
            self._seen_device_baud = baud
            self.pace_baud = baud
            self._rx.byte_time_s = self._tx.byte_time_s = BITS_PER_BYTE / baud

    def _queue(self, data: bytes) -> None:
        if not data:
            return
        due = self._tx.schedule(len(data), time.monotonic())
        self._pending.extend(zip(due, data))
        self._service_due()

    def _service_due(self) -> None:
        """Deliver every paced byte that is due, in both directions; spin through gaps under 0.5 ms."""
        while not self._stop.is_set():
            now = time.monotonic()
            while self._rx_pending and self._rx_pending[0][0] <= now:
                _, data = self._rx_pending.pop(0)
                reply = self.exchange(data)
                self._follow_device_baud()
                if reply:
                    due = self._tx.schedule(len(reply), time.monotonic())
                    self._pending.extend(zip(due, reply))
            count = 0
            while count < len(self._pending) and self._pending[count][0] <= now:
                count += 1
            if count:
                chunk = bytes(b for _, b in self._pending[:count])
                del self._pending[:count]
                if self._write(chunk):
                    self._note("TX", chunk)
                continue
            deadline = self._next_deadline()
            if deadline is None or deadline - now >= 0.0005:
                return
            wait_until(deadline, self._stop)

    def close(self) -> None:
        """Stop the service thread, join it, and close every descriptor (idempotent)."""
        if self._closed:
            return
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)
        os.close(self._wake_r)
        os.close(self._wake_w)
        super().close()


class PtyEndpoint(_ThreadedEndpoint):
    """Serve ``device`` on a pseudo-terminal; clients open :attr:`url` (``/dev/pts/N``).

    :param device: the simulated device.
    :param pace_baud: emulate 8N1 wire timing at this baud (None: as fast as the pty goes).
    :param trace_path: write a timestamped byte trace here.
    :param poll_interval_s: longest gap between device polls, s.
    :param on_traffic: called with (``"RX"``/``"TX"``, bytes) for every chunk (logging).
    The options are :class:`Endpoint`'s, checked there.
    """

    def __init__(self, device: ByteDeviceProtocol, **options: object) -> None:
        super().__init__(device, **options)
        self._master, slave = os.openpty()
        tty.setraw(slave)
        self._raw_attrs = termios.tcgetattr(slave)
        self._path = os.ttyname(slave)
        # Not held open: with no slave descriptor left, the master reports POLLHUP, which is
        # how the endpoint sees a client leave (a held slave would hide it).
        os.close(slave)
        os.set_blocking(self._master, False)
        self._hangup = select.poll()
        self._hangup.register(self._master, select.POLLIN)
        self._master_open = True
        self._peer_seen = False
        #: Times a client closed the port and the raw line settings were put back.
        self.client_disconnects = 0
        #: Set when a client has left and the line settings are back to raw 8N1; cleared
        #: while a client holds the port.
        self.client_gone = threading.Event()
        self.client_gone.set()
        self._start()

    @property
    def url(self) -> str:
        """The slave device path, e.g. ``/dev/pts/3``."""
        return self._path

    def _client_present(self) -> bool:
        return not any(events & select.POLLHUP for _, events in self._hangup.poll(0))

    def _fd(self) -> int | None:
        # A master without a client is always "readable" (POLLHUP): leave it out of the wait.
        # Presence is what this turn's _check_peer saw, so a client is served only once
        # client_gone has been cleared for it (its leaving is then always counted).
        return self._master if self._master_open and self._peer_seen else None

    def _check_peer(self) -> None:
        """Put the raw line settings back once the port has no client; clear an orphan PARODD while it has one.

        Linux ptys drop PARENB from what a client sets but keep PARODD, and then refuse
        (EINVAL) the client's next odd-parity setting: pyserial cannot reopen 7O1 over 7O1,
        nor change its timeout on an odd-parity port. The orphan bit means nothing on a pty.
        """
        self._peer_seen = False
        if not self._master_open:
            return
        attrs = termios.tcgetattr(self._master)
        if self._client_present():
            self._peer_seen = True
            self.client_gone.clear()
            if attrs[2] & termios.PARODD and not attrs[2] & termios.PARENB:
                attrs[2] &= ~termios.PARODD
                termios.tcsetattr(self._master, termios.TCSANOW, attrs)
            return
        if attrs != self._raw_attrs:
            # The master shares the slave's termios. Nothing is flushed: a client opening the
            # port at this very moment must not lose its first request (new settings are harmless).
            termios.tcsetattr(self._master, termios.TCSANOW, self._raw_attrs)
            self.client_disconnects += 1
        self.client_gone.set()

    def _read(self) -> bytes | None:
        try:
            return os.read(self._master, 4096)
        except BlockingIOError:
            return b""
        except OSError:
            return None

    def _write(self, data: bytes) -> bool:
        if not self._master_open:
            return False
        try:
            written = os.write(self._master, data)
        except BlockingIOError:
            written = 0
        except OSError:
            return False
        # Nobody is draining the port: like a UART with no listener, the rest is lost.
        self._count_dropped(len(data) - written)
        return True

    def _drop_link(self) -> None:
        if self._master_open:
            self._master_open = False
            self._hangup.unregister(self._master)
            os.close(self._master)

    def _close_impl(self) -> None:
        self._drop_link()


class TcpEndpoint(_ThreadedEndpoint):
    """Serve ``device`` on a TCP port; clients open ``socket://127.0.0.1:PORT``.

    One client at a time: a new connection replaces the previous one. A
    scripted disconnect closes the client's connection (the listener stays, as
    a re-plugged adapter would).

    :param device: the simulated device.
    :param host: interface to listen on.
    :param port: TCP port (0 picks a free one).
    :param pace_baud: emulate 8N1 wire timing at this baud.
    :param trace_path: write a timestamped byte trace here.
    :param poll_interval_s: longest gap between device polls, s.
    :param on_traffic: called with (``"RX"``/``"TX"``, bytes) for every chunk.
    :raises ConnectError: when the port cannot be listened on (in use, no permission).
    """

    def __init__(
        self,
        device: ByteDeviceProtocol,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        pace_baud: int | None = None,
        trace_path: str | os.PathLike[str] | None = None,
        poll_interval_s: float = DEFAULT_POLL_INTERVAL_S,
        on_traffic: Callable[[str, bytes], None] | None = None,
    ) -> None:
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError("port", port, "an int in [0, 65535]")
        super().__init__(
            device, pace_baud=pace_baud, trace_path=trace_path, poll_interval_s=poll_interval_s, on_traffic=on_traffic
        )
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._listener.bind((host, port))
        except OSError as exc:
            self._listener.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise ConnectError(f"cannot listen on {host}:{port}: {exc}") from exc
        self._listener.listen(1)
        self._listener.setblocking(False)
        self.host, self.port = self._listener.getsockname()[:2]
        self._conn: socket.socket | None = None
        #: Set whenever a client is connected.
        self.client_connected = threading.Event()
        self._start()

    @property
    def url(self) -> str:
        """``socket://HOST:PORT``."""
        return f"socket://{self.host}:{self.port}"

    def _fd(self) -> int | None:
        return self._conn.fileno() if self._conn is not None else None

    def _extra_fds(self) -> list[int]:
        return [self._listener.fileno()]

    def _on_extra_readable(self, fd: int) -> None:
        try:
            conn, _ = self._listener.accept()
        except BlockingIOError:
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.setblocking(False)
        self._close_conn()
        self._conn = conn
        self.disconnected.clear()
        self.client_connected.set()

    def _read(self) -> bytes | None:
        if self._conn is None:
            return None
        try:
            data = self._conn.recv(4096)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if not data:
            self._close_conn()
            return None
        return data

    def _write(self, data: bytes) -> bool:
        if self._conn is None:
            return False
        try:
            written = self._conn.send(data)
        except BlockingIOError:
            written = 0
        except OSError:
            self._close_conn()
            return False
        # A client that stopped reading: like a UART with no listener, the rest is lost.
        self._count_dropped(len(data) - written)
        return True

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            self.client_connected.clear()

    def _drop_link(self) -> None:
        self._close_conn()

    def _close_impl(self) -> None:
        self._close_conn()
        self._listener.close()


_IN_PROCESS: weakref.WeakValueDictionary[str, InProcessEndpoint] = weakref.WeakValueDictionary()


class InProcessEndpoint(Endpoint):
    """Serve ``device`` to ``serial.serial_for_url("itbsim://<id>")`` in the same process.

    No thread: the device answers inside the client's ``write()``; ``read()``
    polls the device and returns what is buffered without waiting, so tests are
    synchronous in virtual time.

    :param device: the simulated device.
    :param trace_path: write a timestamped byte trace here.
    :param on_traffic: called with (``"RX"``/``"TX"``, bytes) for every chunk.
    """

    def __init__(
        self,
        device: ByteDeviceProtocol,
        *,
        trace_path: str | os.PathLike[str] | None = None,
        on_traffic: Callable[[str, bytes], None] | None = None,
    ) -> None:
        super().__init__(device, trace_path=trace_path, on_traffic=on_traffic)
        self._name = f"sim{self.id}"
        self._buffer = bytearray()
        self._buffer_lock = threading.Lock()
        hook = getattr(device, "wants_disconnect", None)
        if getattr(hook, "__func__", None) is ByteDevice.wants_disconnect:
            hook = None  # the default hook, which never asks for an unplug
        #: The device's scripted-unplug hook, looked up once (asked at every read and write).
        self._wants_disconnect: Callable[[], bool] | None = hook if callable(hook) else None
        #: ``disconnected.is_set``, bound once (asked at every read and write).
        self._gone = self.disconnected.is_set
        _IN_PROCESS[self._name] = self

    @property
    def url(self) -> str:
        """``itbsim://<id>``."""
        return f"itbsim://{self._name}"

    @classmethod
    def lookup(cls, name: str) -> InProcessEndpoint:
        """The open endpoint called ``name``.

        :raises StateError: when no such endpoint is open.
        """
        endpoint = _IN_PROCESS.get(name)
        if endpoint is None or endpoint.closed:
            raise StateError(f"no simulated device is served at itbsim://{name}")
        return endpoint

    def _check_link(self) -> None:
        if self._closed:
            raise serial.SerialException(f"{self.url}: endpoint closed")
        wants = self._wants_disconnect
        if self._gone() or (wants is not None and wants()):
            self.disconnected.set()
            raise serial.SerialException(f"{self.url}: device disconnected")

    def host_write(self, data: bytes) -> None:
        """Bytes from the client: the device answers at once into the read buffer."""
        self._check_link()
        reply = self.exchange(data)
        self._check_link()
        if reply:
            with self._buffer_lock:
                self._buffer += reply
            self._note("TX", reply)

    def host_read(self, size: int) -> bytes:
        """Up to ``size`` buffered bytes (polling the device if fewer are buffered); never waits."""
        self._check_link()
        with self._buffer_lock:
            if len(self._buffer) >= size:
                data = bytes(self._buffer[:size])
                del self._buffer[:size]
                return data
        # Only when the buffer cannot satisfy the read: pyserial's read_until reads byte by byte.
        unsolicited = self.poll_device()
        self._note("TX", unsolicited)
        with self._buffer_lock:
            self._buffer += unsolicited
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
        return data

    def host_in_waiting(self) -> int:
        """Bytes ready for the client (after a device poll)."""
        self._check_link()
        with self._device_lock:
            unsolicited = self.device.poll()
        if unsolicited:
            self._note("TX", unsolicited)
            with self._buffer_lock:
                self._buffer += unsolicited
        return len(self._buffer)

    def host_reset_input(self) -> None:
        """Drop bytes not yet read by the client."""
        with self._buffer_lock:
            self._buffer.clear()

    def _close_impl(self) -> None:
        _IN_PROCESS.pop(self._name, None)



#: Old private name of :class:`Endpoint`, kept for callers that used it.
_Endpoint = Endpoint
