"""In-memory links for driver tests: a scripted link and a null modem to a simulated device.

Both implement what :class:`hal.newera.driver.Ne1000Driver` needs from a link
(``write``, ``read``, ``in_waiting``, ``reset_input``, ``timeout_s``, ``note``,
``close``) without threads or real time: a read that finds nothing returns
``b""`` at once, which the driver treats as a timeout.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class _InMemoryLink:
    """What both links share: a receive buffer the host reads from, a timeout and a close counter.

    :param url: the name the link reports (``scripted://``, ``nullmodem://``).
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.timeout_s = 0.5
        self.rx = bytearray()
        self.closed = 0

    def _receive(self) -> None:
        """Move whatever the other end has sent since into :attr:`rx` (nothing, for a script)."""

    def read(self, size: int = 1) -> bytes:
        self._receive()
        data = bytes(self.rx[:size])
        del self.rx[:size]
        return data

    @property
    def in_waiting(self) -> int:
        self._receive()
        return len(self.rx)

    def reset_input(self) -> None:
        self.rx.clear()

    def note(self, text: str) -> None:
        pass

    def close(self) -> None:
        self.closed += 1


class ScriptedLink(_InMemoryLink):
    """Expects exact request bytes in order and answers each with scripted bytes.

    :param script: ``(sent, reply)`` pairs; ``reply=None`` means the reply is lost.
    Any mismatch or leftover fails the test (:meth:`assert_done`).
    """

    def __init__(self, script: list[tuple[bytes, bytes | None]] | None = None) -> None:
        super().__init__("scripted://")
        self.script: deque[tuple[bytes, bytes | None]] = deque(script or [])
        self.sent: list[bytes] = []

    def add(self, sent: bytes, reply: bytes | None, *, times: int = 1) -> None:
        """Append one exchange to the script, ``times`` times over (a query asked again after each lost reply)."""
        self.script.extend([(sent, reply)] * times)

    def inject(self, data: bytes) -> None:
        """Make ``data`` readable now, unasked (stray bytes, late replies)."""
        self.rx += data

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))
        assert self.script, f"unexpected write {data!r}: the script is empty"
        expected, reply = self.script.popleft()
        assert data == expected, f"sent {data!r}, script expected {expected!r}"
        if reply is not None:
            self.rx += reply

    def assert_done(self) -> None:
        """Fail if any scripted exchange was not used."""
        assert not self.script, f"unused script entries: {list(self.script)!r}"


class DeviceLink(_InMemoryLink):
    """A null modem to a simulated byte device (``receive``/``poll``), with a fault manipulator.

    :param device: the simulated device.
    :param manipulator: optional ``fn(sent, reply) -> reply`` applied to every
        reply before the host sees it (drop it with ``b""``, corrupt it, split it).
    """

    def __init__(self, device: object, manipulator: Callable[[bytes, bytes], bytes] | None = None) -> None:
        super().__init__("nullmodem://")
        self.device = device
        self.manipulator = manipulator
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        reply = self.device.receive(bytes(data))  # type: ignore[attr-defined]
        if self.manipulator is not None:
            reply = self.manipulator(bytes(data), reply)
        self.rx += reply

    def _receive(self) -> None:
        self.rx += self.device.poll()  # type: ignore[attr-defined]
