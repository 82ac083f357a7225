"""The New Era transaction layer: one request, the one reply that answers it.

The layers of the New Era HAL, each testable alone::

    link (hal.transport)   bytes in and out, timeouts, the byte trace
    framing                Basic CR / STX..ETX and Safe LEN..CRC..ETX packets
    codec                  typed Request and Reply, numbers, units
    transaction (here)     matching, draining, stray alarms, frame and message traces
    driver                 command semantics: what a command means, retries, outcomes

:class:`Transactions` owns the only read loop. For each request it:

1. discards what is already buffered (stray bytes, a late reply, an unsolicited
   Safe-mode alarm packet, which is logged as *not* acknowledged);
2. sends the framed request (Basic or Safe, whichever mode the link is in);
3. reads until a reply arrives whose address is ours and whose shape matches
   what the request expects; a late reply to an earlier query is discarded,
   never taken as this request's answer; alarms and errors answer any request;
4. on a timeout, drains the line until it has been quiet, so a reply still in
   flight cannot answer the next request, and raises
   :class:`~cython_ext.errors.LinkTimeoutError`.

Every alarm it sees goes into one log (:attr:`Transactions.alarms`): alarms in
replies as acknowledged (the manual's rule), unsolicited ones as not.

Trace hooks, besides the link's byte trace: ``trace_frame(sending, frame)`` is
called with every framed packet (a :class:`~hal.newera.framing.Frame` sent or
received, or a :class:`~hal.newera.framing.FrameError` for discarded bytes), and
``trace_message(sending, message)`` with every :class:`~hal.newera.codec.Request`
sent and every :class:`~hal.newera.codec.Reply` decoded. Retrying is not done
here: whether a request may be sent again is a question of command semantics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from cython_ext.errors import CommunicationError, LinkTimeoutError, StateError
from hal.clock import Clock
from hal.newera import codec
from hal.newera.codec import AlarmType, Prompt, Reply, ReplyFormatError, Request
from hal.newera.framing import Frame, FrameError, FrameKind, ReplyDeframer
from hal.pump import AlarmEvent, PumpAlarm, PumpState

T = TypeVar("T")

#: Bytes read while waiting for one reply before giving up on a babbling line.
MAX_REPLY_BYTES = 1024
#: Quiet time that ends a drain after a timeout, seconds.
DEFAULT_QUIET_S = 0.05

PROMPT_STATE = {
    Prompt.INFUSING: PumpState.INFUSING,
    Prompt.WITHDRAWING: PumpState.WITHDRAWING,
    Prompt.STOPPED: PumpState.STOPPED,
    Prompt.PAUSED: PumpState.PAUSED,
    Prompt.TIMED_PAUSE: PumpState.TIMED_PAUSE,
    Prompt.USER_WAIT: PumpState.USER_WAIT,
    Prompt.PURGING: PumpState.PURGING,
}
ALARM = {
    AlarmType.RESET: PumpAlarm.RESET,
    AlarmType.STALL: PumpAlarm.STALL,
    AlarmType.COMMS_TIMEOUT: PumpAlarm.COMMS_TIMEOUT,
    AlarmType.PROGRAM_ERROR: PumpAlarm.PROGRAM_ERROR,
    AlarmType.OUT_OF_RANGE: PumpAlarm.OUT_OF_RANGE,
}

#: ``trace_frame(sending, frame)``: a packet sent or received, or bytes discarded.
FrameHook = Callable[[bool, "Frame | FrameError"], None]
#: ``trace_message(sending, message)``: a request sent or a reply decoded.
MessageHook = Callable[[bool, "Request | Reply"], None]
#: What a request expects back: False a status-only reply, True any data, or a
#: parser that must accept the data (its result is kept, not computed twice).
Expectation = bool | Callable[[str], object]


class ByteLink(Protocol):
    """What the transaction layer needs from a link (:class:`hal.transport.SerialLink` or a test fake)."""

    url: str
    timeout_s: float

    def write(self, data: bytes) -> None:
        """Send all of ``data`` (raise :class:`~cython_ext.errors.CommunicationError` on failure)."""

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes within ``timeout_s``; ``b""`` means nothing arrived."""

    def reset_input(self) -> None:
        """Drop what the OS already holds."""

    @property
    def in_waiting(self) -> int:
        """Bytes ready to read now."""

    def note(self, text: str) -> None:
        """Add a note to the byte trace, if any."""

    def close(self) -> None:
        """Release the port (idempotent)."""


@dataclass
class LinkStatistics:
    """Counters of what the transaction layer discarded and the driver retried, for bench reports."""

    stray_bytes: int = 0
    frame_errors: int = 0
    foreign_replies: int = 0
    unmatched_replies: int = 0
    timeouts: int = 0
    query_retries: int = 0
    resends_after_reset: int = 0
    implausible_readings: int = 0


@dataclass(frozen=True)
class Answer(Generic[T]):
    """The reply that answered a request.

    :ivar reply: the decoded reply.
    :ivar value: what the expectation's parser made of an ``ok`` reply's data, else None.
    """

    reply: Reply
    value: T | None = None


class Transactions:
    """Matches replies to requests on one link for one pump address.

    Not thread-safe by itself: the driver serialises calls under its lock.

    :param link: an open byte link.
    :param address: the pump's bus address, 0-99.
    :param clock: time source for alarm stamps and the last valid reply.
    :param quiet_s: quiet time that ends a drain after a timeout, seconds.
    :param trace_frame: optional frame hook (see the module docstring).
    :param trace_message: optional message hook.
    """

    def __init__(
        self,
        link: ByteLink,
        *,
        address: int,
        clock: Clock,
        quiet_s: float = DEFAULT_QUIET_S,
        trace_frame: FrameHook | None = None,
        trace_message: MessageHook | None = None,
    ) -> None:
        self.link: ByteLink | None = link
        self.address = address
        self.clock = clock
        self.quiet_s = quiet_s
        self.trace_frame = trace_frame
        self.trace_message = trace_message
        #: True while requests are framed as Safe packets.
        self.safe = False
        #: State shown by the last reply that carried a prompt, or None.
        self.last_state: PumpState | None = None
        #: Monotonic time of the last reply that answered a request, ns, or None.
        self.last_valid_ns: int | None = None
        #: Every alarm seen, oldest first, until the driver collects them.
        self.alarms: list[AlarmEvent] = []
        self.stats = LinkStatistics()
        #: Requests sent so far (also those that got no answer): tells whether anything crossed the line since.
        self.requests_sent = 0
        self._deframers = {False: ReplyDeframer(safe=False), True: ReplyDeframer(safe=True)}

    def require_link(self) -> ByteLink:
        """The open link.

        :raises StateError: the driver was closed.
        """
        link = self.link
        if link is None:
            raise StateError("the NE-1000 driver is closed")
        return link

    def note(self, text: str) -> None:
        """Add a note to the byte trace, if the link is open and has one."""
        if self.link is not None:
            self.link.note(text)

    # -- one transaction ------------------------------------------------------------------

    def execute(self, request: Request, expect: Expectation) -> Answer[object]:
        """Send ``request`` once, in the current framing, and return the reply that answers it.

        :param expect: what an ``ok`` reply must look like (see :data:`Expectation`).
        :raises LinkTimeoutError: nothing matching arrived in time (the line was drained).
        :raises CommunicationError: the link failed, or the line babbled.
        """
        return self._transact(request, expect, (self.safe,))

    def execute_mode_switch(self, request: Request) -> Reply:
        """Send a mode-changing request (``SAF``) and accept a status-only reply in either framing.

        The pump answers in the mode in effect after the command, so the reply
        may come in Basic or in Safe framing whatever the request's framing.

        :raises LinkTimeoutError: nothing matching arrived in time (the line was drained).
        :raises CommunicationError: the link failed, or the line babbled.
        """
        return self._transact(request, False, (False, True)).reply

    def _transact(self, request: Request, expect: Expectation, framings: tuple[bool, ...]) -> Answer[object]:
        link = self.require_link()
        self.requests_sent += 1
        waiting = link.in_waiting  # discard_pending, inline: this runs at every exchange
        if waiting:
            self._absorb_stray(link.read(waiting))
        if self.trace_message is not None:
            self.trace_message(True, request)
        packet = request.encode(safe=self.safe)
        if self.trace_frame is not None:
            self.trace_frame(True, Frame(FrameKind.SAFE if self.safe else FrameKind.BASIC, request.data()))
        link.write(packet)
        try:
            answer = self._await(link, request, expect, framings)
        except LinkTimeoutError:
            self.stats.timeouts += 1
            link.note(f"no reply to {request.data()!r}; draining")
            self.drain_quiet()
            raise
        self._note_reply(answer.reply, request)
        return answer

    def _await(self, link: ByteLink, request: Request, expect: Expectation,
               framings: tuple[bool, ...]) -> Answer[object]:
        deframers = [self._deframers[framings[0]]] if len(framings) == 1 else \
            [self._deframers[safe] for safe in framings]
        for deframer in deframers:
            deframer.reset()
        count_errors = len(deframers) == 1  # with two framings one of them always sees garbage
        received = 0
        while received <= MAX_REPLY_BYTES:
            chunk = link.read(max(1, link.in_waiting))
            if not chunk:
                raise LinkTimeoutError(
                    f"no reply from pump {self.address} to {request.data()!r}", error_code="NE_TIMEOUT"
                )
            received += len(chunk)
            for deframer in deframers:
                items = deframer.feed(chunk)
                for index, item in enumerate(items):
                    if self.trace_frame is not None and (count_errors or isinstance(item, Frame)):
                        self.trace_frame(False, item)
                    if isinstance(item, FrameError):
                        if count_errors:
                            self.stats.frame_errors += 1
                        continue
                    answer = self._match(item, expect, count_errors)
                    if answer is not None:
                        self.last_valid_ns = self.clock.monotonic_ns()
                        rest = items[index + 1:]
                        if rest and count_errors:
                            self.stats.unmatched_replies += len(rest)
                        return answer
        raise CommunicationError(
            f"pump {self.address}: {received} bytes without a reply to {request.data()!r}",
            error_code="NE_BABBLE",
        )

    def _match(self, frame: Frame, expect: Expectation, count_errors: bool) -> Answer[object] | None:
        try:
            reply = codec.parse_reply(frame.data)
        except ReplyFormatError:
            if count_errors:
                self.stats.frame_errors += 1
            return None
        if self.trace_message is not None:
            self.trace_message(False, reply)
        if reply.address != self.address:
            self.stats.foreign_replies += 1
            return None
        if not reply.ok:
            return Answer(reply)  # alarms and errors answer any request
        if expect is False:
            if reply.data == "":
                return Answer(reply)
        elif expect is True:
            if reply.data != "":
                return Answer(reply)
        else:
            try:
                return Answer(reply, expect(reply.data))
            except ReplyFormatError:
                pass
        self.stats.unmatched_replies += 1  # a late reply to something else
        return None

    def _note_reply(self, reply: Reply, request: Request) -> None:
        if reply.prompt is not None:
            self.last_state = PROMPT_STATE[reply.prompt]
        if reply.alarm is not None:
            self.record_alarm(reply.alarm, acknowledged=True, command=request.data().decode("ascii"))

    def record_alarm(self, alarm: AlarmType, *, acknowledged: bool, command: str) -> None:
        """Append one alarm to the log, stamped now."""
        self.alarms.append(AlarmEvent(ALARM[alarm], self.clock.monotonic_ns(), acknowledged, command))

    # -- between transactions ---------------------------------------------------------------

    def discard_pending(self) -> None:
        """Discard whatever is buffered now, recording unsolicited alarms among it."""
        link = self.require_link()
        waiting = link.in_waiting
        if waiting:
            self._absorb_stray(link.read(waiting))

    def drain_quiet(self) -> None:
        """After a timeout: read until the line has been quiet for ``quiet_s``."""
        link = self.require_link()
        saved = link.timeout_s
        link.timeout_s = self.quiet_s
        drained = 0
        try:
            while drained <= MAX_REPLY_BYTES:  # a line that never goes quiet is left to the next exchange
                data = link.read(256)
                if not data:
                    break
                drained += len(data)
                self._absorb_stray(data)
        finally:
            link.timeout_s = saved

    def _absorb_stray(self, data: bytes) -> None:
        """Account for bytes that arrived outside an exchange; record unsolicited alarms."""
        if not data:
            return
        self.stats.stray_bytes += len(data)
        for item in ReplyDeframer(safe=self.safe).feed(data):
            if self.trace_frame is not None:
                self.trace_frame(False, item)
            if not isinstance(item, Frame):
                continue
            try:
                reply = codec.parse_reply(item.data)
            except ReplyFormatError:
                continue
            if self.trace_message is not None:
                self.trace_message(False, reply)
            if reply.address == self.address and reply.alarm is not None:
                self.record_alarm(reply.alarm, acknowledged=False, command="")
                self.note(f"unsolicited alarm A?{reply.alarm.value} (not acknowledged by it)")
