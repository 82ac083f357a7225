"""MT-SICS balance driver over a serial link (``hal.transport.SerialLink`` or anything with its methods).

Each command is one request line and one reply line. A reply whose
identifier does not belong to the command (a late line from an earlier
command, a streamed ``SIR`` reading) is skipped, up to
:attr:`MtSicsDriver.MAX_SKIPPED_LINES`; a line without CR LF within the link
timeout is a :class:`~cython_ext.errors.LinkTimeoutError`.

Stability is waited for on the host, on the injected clock: a stable weight
is ``SI`` repeated until the balance flags it stable, and ``Z``/``T`` are sent
only once ``SI`` says the pan is stable. The balance would wait itself
(``S``, ``Z`` and ``T`` hold their answer until stable), but a wait on the
host runs in virtual time too; the link still allows
:attr:`MtSicsDriver.STABLE_REPLY_TIMEOUT_S` for ``Z``/``T`` in case the pan
moves again in between.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from hal.balance import BalanceFault, BalanceIdentity, BalanceReading, LineBalanceDriver
from hal.clock import Clock
from cython_ext.errors import CommunicationError
from hal.mtsics import codec
from hal.mtsics.codec import (
    ErrorReply,
    GeneralError,
    InfoReply,
    MalformedLine,
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


class MtSicsDriver(LineBalanceDriver):
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
        super().__init__(link, clock=clock)
        self._stream_tare: WeightReply | None = None

    def _read_line(self) -> tuple[Reply, int]:
        data, stamp_ns = self._read_raw_line()
        return codec.decode_reply(data), stamp_ns

    def _transact(self, command: str, reply_ids: tuple[str, ...], *params: str) -> tuple[Reply, int]:
        self._link.reset_input()
        self._link.write(codec.encode_command(command, *params))
        return self._await(reply_ids)

    def _await(self, reply_ids: tuple[str, ...], max_skipped: int | None = None) -> tuple[Reply, int]:
        limit = self.MAX_SKIPPED_LINES if max_skipped is None else max_skipped
        for _ in range(limit + 1):
            reply, stamp_ns = self._read_line()
            if isinstance(reply, ErrorReply):
                return reply, stamp_ns
            if isinstance(reply, MalformedLine):
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
        return self._weight(codec.IMMEDIATE_WEIGHT)

    def _read_immediate(self) -> BalanceReading | BalanceFault:
        return self._weight(codec.IMMEDIATE_WEIGHT)

    def _settled_command(self, command: str) -> Reply | BalanceFault:
        """Send ``Z`` or ``T`` once the pan is stable and return its reply; a fault instead when the
        pan never settled or the balance refused the command."""
        settled = self._poll_until_stable(self.STABLE_REPLY_TIMEOUT_S)
        if isinstance(settled, BalanceFault):
            return settled
        with self._patient_link():
            reply, _ = self._transact(command, (command,))
        fault = self._fault_of(reply)
        return reply if fault is None else fault

    def _zero(self) -> BalanceFault | None:
        reply = self._settled_command(codec.ZERO)
        if isinstance(reply, BalanceFault):
            return reply
        if not (isinstance(reply, StatusReply) and reply.status is ReplyStatus.EXECUTED):
            raise CommunicationError(f"unexpected reply to Z: {reply!r}")
        return None

    def _tare(self) -> int | BalanceFault:
        reply = self._settled_command(codec.TARE)
        if isinstance(reply, BalanceFault):
            return reply
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
        # I2 is one field: the type first, the capacity and its unit last ("XS204 Excellence 220.0090 g").
        parts = model_fields[0].split() if model_fields else []
        model = parts[0] if parts else ""
        capacity = " ".join(parts[-2:]) if len(parts) >= 3 else ""
        serial = self._info(codec.INFO_SERIAL)
        # I3 is the software version, then the type definition number.
        software = self._info(codec.INFO_SOFTWARE)
        software_parts = software[0].split() if software else []
        return BalanceIdentity(
            model=model,
            serial_number=serial[0] if serial else "",
            firmware=software_parts[0] if software_parts else "",
            capacity=capacity,
        )

    def _stream_start(self) -> None:
        # "@" ends SIR but also clears the tare memory: remember the tare to put it back.
        reply, _ = self._transact(codec.TARE_PRESET, (codec.TARE_PRESET,))
        self._stream_tare = reply if isinstance(reply, WeightReply) and reply.mass_ug else None
        self._link.write(codec.encode_command(codec.REPEAT_IMMEDIATE))

    def _stream_next(self) -> BalanceReading | BalanceFault:
        reply, stamp_ns = self._await((codec.WEIGHT_REPLY_ID,))
        return self._to_reading(reply, stamp_ns)

    def _stream_stop(self) -> None:
        # "@" cancels SIR; the balance answers with its serial number (I4 A "...").
        self._link.write(codec.encode_command(codec.RESET))
        self._await((codec.INFO_SERIAL,), max_skipped=self.MAX_STREAM_BACKLOG_LINES)
        tare, self._stream_tare = self._stream_tare, None
        if tare is not None:
            value = codec.format_mass(tare.mass_ug, tare.unit, _decimals(tare.resolution_ug, tare.unit))
            reply, _ = self._transact(codec.TARE_PRESET, (codec.TARE_PRESET,), value, tare.unit)
            if not (isinstance(reply, WeightReply) and reply.mass_ug == tare.mass_ug):
                raise CommunicationError(f"the balance did not take back its tare after the stream: {reply!r}")


def _decimals(resolution_ug: int, unit: str) -> int:
    """Digits after the point of a value shown in ``unit`` with a last digit of ``resolution_ug``."""
    digits = 0
    while codec.MASS_UNIT_UG[unit] // 10**digits > resolution_ug:
        digits += 1
    return digits
