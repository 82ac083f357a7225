"""MT-SICS balance driver over a serial link (``hal.transport.SerialLink`` or anything with its methods).

Each command is one request line and one reply line. A reply whose
identifier does not belong to the command (a late line from an earlier
command, a streamed ``SIR`` reading) is skipped, up to
:attr:`MtSicsDriver.MAX_SKIPPED_LINES`; a line without CR LF within the link
timeout is a :class:`~cython_ext.errors.LinkTimeoutError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from hal.balance import BalanceDriver, BalanceFault, BalanceIdentity, BalanceReading
from hal.clock import Clock
from cython_ext.errors import CommunicationError, LinkTimeoutError
from hal.mtsics import codec
from hal.mtsics.codec import (
    ErrorReply,
    GeneralError,
    InfoReply,
    MalformedReply,
    Reply,
    ReplyStatus,
    StatusReply,
    WeightReply,
)

_STATUS_FAULTS = {
    ReplyStatus.NOT_EXECUTABLE: BalanceFault.NOT_EXECUTABLE,
    ReplyStatus.OVERLOAD: BalanceFault.OVERLOAD,
    ReplyStatus.UNDERLOAD: BalanceFault.UNDERLOAD,
    ReplyStatus.LOGIC: BalanceFault.LOGIC,
}
_ERROR_FAULTS = {
    GeneralError.SYNTAX: BalanceFault.SYNTAX,
    GeneralError.TRANSMISSION: BalanceFault.TRANSMISSION,
    GeneralError.LOGIC: BalanceFault.LOGIC,
}


class MtSicsDriver(BalanceDriver):
    """Mettler Toledo balance speaking MT-SICS level 0/1.

    :param link: an open serial link (``write``, ``read_until``, ``reset_input``, ``close``).
    :param clock: clock that stamps readings and paces retries.
    """

    name: ClassVar[str] = "mtsics"
    #: Unrelated lines skipped while waiting for a reply before giving up.
    MAX_SKIPPED_LINES: ClassVar[int] = 16
    #: Longest wait for the answer to ``S``, ``Z`` or ``T`` (the balance waits for stability first), s.
    STABLE_REPLY_TIMEOUT_S: ClassVar[float] = 15.0
    #: Streamed lines that may still be queued when a stream is stopped.
    MAX_STREAM_BACKLOG_LINES: ClassVar[int] = 1024

    def __init__(self, link: Any, *, clock: Clock | None = None) -> None:
        super().__init__(clock=clock)
        self._link = link

    @property
    def link(self) -> Any:
        """The serial link (for traces and tests)."""
        return self._link

    def _read_line(self) -> tuple[Reply, int]:
        data = self._link.read_until(b"\n")
        stamp_ns = self._clock.monotonic_ns()
        if not data.endswith(b"\n"):
            raise LinkTimeoutError(f"balance sent no complete line (got {data!r})")
        return codec.decode_reply(data), stamp_ns

    def _transact(self, command: str, reply_ids: tuple[str, ...]) -> tuple[Reply, int]:
        self._link.reset_input()
        self._link.write(codec.encode_command(command))
        return self._await(reply_ids)

    def _await(self, reply_ids: tuple[str, ...], max_skipped: int | None = None) -> tuple[Reply, int]:
        limit = self.MAX_SKIPPED_LINES if max_skipped is None else max_skipped
        for _ in range(limit + 1):
            reply, stamp_ns = self._read_line()
            if isinstance(reply, ErrorReply):
                return reply, stamp_ns
            if isinstance(reply, MalformedReply):
                raise CommunicationError(f"balance sent a malformed line {reply.raw!r}: {reply.reason}")
            if reply.command in reply_ids:
                return reply, stamp_ns
        raise CommunicationError(f"no reply with identifier {'/'.join(reply_ids)} from the balance")

    @staticmethod
    def _fault_of(reply: Reply) -> BalanceFault | None:
        if isinstance(reply, ErrorReply):
            return _ERROR_FAULTS[reply.error]
        if isinstance(reply, StatusReply):
            return _STATUS_FAULTS.get(reply.status)
        return None

    def _weight(self, command: str) -> BalanceReading | BalanceFault:
        reply, stamp_ns = self._transact(command, (codec.WEIGHT_REPLY_ID,))
        return self._to_reading(reply, stamp_ns)

    def _to_reading(self, reply: Reply, stamp_ns: int) -> BalanceReading | BalanceFault:
        fault = self._fault_of(reply)
        if fault is not None:
            return fault
        if not isinstance(reply, WeightReply):
            raise CommunicationError(f"expected a weight from the balance, got {reply!r}")
        return BalanceReading(reply.mass_ug, reply.stable, reply.resolution_ug, reply.unit, stamp_ns)

    @contextmanager
    def _patient_link(self) -> Iterator[None]:
        # A real balance holds its answer to S, Z and T until the weight settles (or its
        # own stability timeout passes), so the link may wait longer than for other replies.
        previous_s = getattr(self._link, "timeout_s", None)
        if previous_s is None or previous_s >= self.STABLE_REPLY_TIMEOUT_S:
            yield
            return
        self._link.timeout_s = self.STABLE_REPLY_TIMEOUT_S
        try:
            yield
        finally:
            self._link.timeout_s = previous_s

    def _read_stable_once(self) -> BalanceReading | BalanceFault:
        with self._patient_link():
            return self._weight(codec.STABLE_WEIGHT)

    def _read_immediate(self) -> BalanceReading | BalanceFault:
        return self._weight(codec.IMMEDIATE_WEIGHT)

    def _zero(self) -> BalanceFault | None:
        with self._patient_link():
            reply, _ = self._transact(codec.ZERO, (codec.ZERO,))
        fault = self._fault_of(reply)
        if fault is None and not (isinstance(reply, StatusReply) and reply.status is ReplyStatus.EXECUTED):
            raise CommunicationError(f"unexpected reply to Z: {reply!r}")
        return fault

    def _tare(self) -> int | BalanceFault:
        with self._patient_link():
            reply, _ = self._transact(codec.TARE, (codec.TARE,))
        fault = self._fault_of(reply)
        if fault is not None:
            return fault
        if not isinstance(reply, WeightReply):
            raise CommunicationError(f"unexpected reply to T: {reply!r}")
        return reply.mass_ug

    def _info(self, command: str) -> tuple[str, ...]:
        reply, _ = self._transact(command, (command,))
        if isinstance(reply, InfoReply):
            return reply.fields
        return ()

    def _identify(self) -> BalanceIdentity:
        model_fields = self._info(codec.INFO_MODEL)
        model_text = model_fields[0] if model_fields else ""
        # I2 carries the type and the capacity in one field: "XPE205 220.00000 g".
        parts = model_text.split()
        model = parts[0] if parts else ""
        capacity = " ".join(parts[1:])
        serial = self._info(codec.INFO_SERIAL)
        software = self._info(codec.INFO_SOFTWARE)
        return BalanceIdentity(
            model=model,
            serial_number=serial[0] if serial else "",
            firmware=software[0] if software else "",
            capacity=capacity,
        )

    def _stream_start(self) -> None:
        self._link.reset_input()
        self._link.write(codec.encode_command(codec.REPEAT_IMMEDIATE))

    def _stream_next(self) -> BalanceReading | BalanceFault:
        reply, stamp_ns = self._await((codec.WEIGHT_REPLY_ID,))
        return self._to_reading(reply, stamp_ns)

    def _stream_stop(self) -> None:
        # "@" cancels SIR; the balance answers with its serial number (I4 A "...").
        self._link.write(codec.encode_command(codec.RESET))
        self._await((codec.INFO_SERIAL,), max_skipped=self.MAX_STREAM_BACKLOG_LINES)

    def _close(self) -> None:
        self._link.close()
