"""NE-1000 pump driver: :class:`hal.pump.PumpDriver` over a serial link.

The driver holds the command semantics only: which requests a call sends,
which of them may be retried, and what the replies mean. Sending a request and
finding the one reply that answers it (matching, draining, stray and
unsolicited alarms, frame and message traces) is the transaction layer's job,
:class:`hal.newera.transaction.Transactions`.

Reads (status, ``DIS``, parameter queries) are idempotent and are retried, a
bounded number of times. Commands that change delivery (``RAT VOL DIR RUN STP
PUR DIA CLD``) are sent **once**. A setting (``RAT VOL DIR DIA``) is read
*before* it is sent, so a bad line fails before anything reaches the pump, and
read back afterwards; its outcome follows from the reply and the three values
(requested, previous, observed):

====================================  =============================================
what happened                          outcome
====================================  =============================================
reply OK, read-back = requested        ``APPLIED``
reply OK, read-back differs            ``UNCERTAIN`` (the pump holds something else)
error reply (``?OOR``, ``?NA``...)     ``NOT_APPLIED``
alarm reply (``A?x``)                  the command was swallowed. Power-up reset and
                                       read-back = previous: sent once more (the
                                       read proves the first never ran). Otherwise
                                       judged like a lost reply
reply lost                             read-back = requested: ``APPLIED``;
                                       = previous: ``NOT_APPLIED``; anything else,
                                       or unreadable: ``UNCERTAIN``
reply to ``RUN``/``PUR`` lost          ``UNCERTAIN`` whatever the pump reports, with
                                       status and dispensed readings attached
reply to ``STP`` lost                  status decides: stopped ``APPLIED``, paused
                                       earns the second ``STP``, running
                                       ``NOT_APPLIED``
====================================  =============================================

Alarms are acknowledged, as the manual defines, by the alarm status sent in
reply to any valid command. Every alarm the driver sees is kept in
:meth:`Ne1000Driver.pending_alarms` so that none is lost to an implicit
acknowledgement.

Safe mode (``SAF n``): length-framed, CRC-checked packets and an n-second
communications watchdog. Keep it fed with :meth:`Ne1000Driver.heartbeat` (the
control loop calls it when :meth:`Ne1000Driver.heartbeat_due` says so), or
start the optional real-time heartbeat thread on the bench. The heartbeat is a
``DIS`` query: its reply carries the status like any reply, and the counters it
read start the :meth:`Ne1000Driver.read_dispensed` that follows at the same
instant, so a poll is one exchange.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from hal.clock import NS_PER_MS, NS_PER_S, Clock, SystemClock
from cython_ext.units import MS_PER_H
from cython_ext.errors import (
    CapabilityError,
    CommunicationError,
    ConfigError,
    DeviceError,
    HalError,
    LinkTimeoutError,
    StateError,
    UncertainDeliveryError,
)
from hal.newera import codec
from hal.newera.codec import (
    AlarmType,
    ErrorCode,
    Prompt,
    RateUnits,
    Reply,
    ReplyFormatError,
    Request,
    VolumeUnits,
    WireDirection,
)
from hal.newera.transaction import (
    ALARM,
    DEFAULT_QUIET_S,
    PROMPT_STATE,
    ByteLink,
    FrameHook,
    LinkStatistics,
    MessageHook,
    Transactions,
)
from hal.pump import (
    AlarmEvent,
    CommandResult,
    Direction,
    DispensedVolume,
    Outcome,
    PumpAlarm,
    PumpCapabilities,
    PumpDriver,
    ProgramPhase,
    PumpIdentity,
    PumpProgram,
    PumpState,
    PumpStatus,
    Sensor,
)

__all__ = ["ByteLink", "LinkStatistics", "NE_BAUDRATES", "Ne1000Driver", "probe_baudrate"]
from hal.transport import DEFAULT_TIMEOUT_S, open_serial

T = TypeVar("T")

#: NE-1000 syringe inside diameters, mm.
DIAMETER_MIN_MM = Decimal("0.1")
DIAMETER_MAX_MM = Decimal("50.0")
#: Sensors the NE-1000 really has.
NE1000_SENSORS = frozenset({Sensor.MOTOR_STALL, Sensor.DISPENSED_COUNTER})
_NS_PER_H = MS_PER_H * NS_PER_MS
#: Constructor options :meth:`Ne1000Driver.open` passes through.
_DRIVER_OPTIONS = frozenset({"read_retries", "rate_tolerance_ppm", "quiet_s", "trace_frame", "trace_message"})

_WIRE_DIRECTION = {Direction.INFUSE: WireDirection.INFUSE, Direction.WITHDRAW: WireDirection.WITHDRAW}
_RUNNING = frozenset({PumpState.INFUSING, PumpState.WITHDRAWING, PumpState.PURGING,
                      PumpState.TIMED_PAUSE, PumpState.USER_WAIT})


class _DeliveryLost(Exception):
    """Internal: the reply to a delivery command did not arrive (or was garbled)."""


class Ne1000Driver(PumpDriver):
    """New Era NE-1000 (and family) driver.

    Build it with :meth:`open` (or :func:`hal.open_pump`); the constructor takes
    an already open link and does no I/O until :meth:`connect`.

    :param link: an open byte link.
    :param address: the pump's bus address, 0-99.
    :param clock: time source for alarm stamps and heartbeat scheduling.
    :param read_retries: extra attempts for idempotent reads, 0-5.
    :param rate_tolerance_ppm: largest relative error accepted when a rate or
        volume is represented in the pump's number format, ppm (1-10000).
    :param quiet_s: quiet time that ends a drain after a timeout, seconds.
    :param owns_link: close the link when the driver is closed.
    :param trace_frame: called as ``trace_frame(sending, frame)`` with every packet
        (see :mod:`hal.newera.transaction`).
    :param trace_message: called as ``trace_message(sending, message)`` with every
        request sent and every reply decoded.
    """

    name = "ne1000"

    def __init__(
        self,
        link: ByteLink,
        *,
        address: int = 0,
        clock: Clock | None = None,
        read_retries: int = 2,
        rate_tolerance_ppm: int = codec.DEFAULT_TOLERANCE_PPM,
        quiet_s: float = DEFAULT_QUIET_S,
        owns_link: bool = True,
        trace_frame: FrameHook | None = None,
        trace_message: MessageHook | None = None,
    ) -> None:
        codec.check_address(address)
        if isinstance(read_retries, bool) or not isinstance(read_retries, int) or not 0 <= read_retries <= 5:
            raise ConfigError("read_retries", read_retries, "an integer in [0, 5]")
        if (isinstance(rate_tolerance_ppm, bool) or not isinstance(rate_tolerance_ppm, int)
                or not 1 <= rate_tolerance_ppm <= 10_000):
            raise ConfigError("rate_tolerance_ppm", rate_tolerance_ppm, "an integer in [1, 10000] ppm")
        if not isinstance(quiet_s, (int, float)) or not 0 < quiet_s <= 1:
            raise ConfigError("quiet_s", quiet_s, "a number of seconds in (0, 1]")
        for field, hook in (("trace_frame", trace_frame), ("trace_message", trace_message)):
            if hook is not None and not callable(hook):
                raise ConfigError(field, hook, "None or a callable")
        self.address = address
        self.clock = clock or SystemClock()
        self._tx = Transactions(link, address=address, clock=self.clock, quiet_s=float(quiet_s),
                                trace_frame=trace_frame, trace_message=trace_message)
        #: Counters of discarded bytes, timeouts and retries (shared with the transaction layer).
        self.stats: LinkStatistics = self._tx.stats
        self.read_retries = read_retries
        self.rate_tolerance_ppm = rate_tolerance_ppm
        self._owns_link = owns_link
        self._lock = threading.RLock()
        self._safe_timeout_s: int | None = None
        self._diameter_mm: Decimal | None = None
        self._rate_units: RateUnits | None = None
        #: The last dispensed reading returned and when it was taken, ns (None: after a clear or a syringe change).
        self._counter_baseline: tuple[DispensedVolume, int] | None = None
        #: The highest rate that may have been in effect since that reading, nL/h (None: unknown).
        self._rate_bound_nl_per_h: int | None = None
        self._rate_now_nl_per_h: int | None = None
        self._staged: tuple[int, PumpProgram] | None = None
        self._program_max_rate_nl_per_h: int | None = None
        #: Whether the pump may run a program of several rates (a bolus, then the basal): then no one rate
        #: predicts how its counters grow, and a reading that grew is read twice.
        self._several_rates = False
        #: The program last started by :meth:`commit_program` (None after anything else that may change
        #: what the pump runs): a ``PHN`` read of its last, continuous phase means one rate runs from then on.
        self._running_program: PumpProgram | None = None
        #: The counters the last heartbeat read (its DIS reply carries the status too), when it was taken (ns)
        #: and :attr:`Transactions.requests_sent` after it: the first reading of the next :meth:`read_dispensed`
        #: while nothing crossed the line and the clock did not move since. None once taken or stale.
        self._heartbeat_reading: tuple[DispensedVolume, int, int] | None = None
        self._dis: Request | None = None
        self._heartbeat_stop = threading.Event()
        self._heartbeat_thread: threading.Thread | None = None
        #: Errors the heartbeat thread met (it keeps going), newest last.
        self.heartbeat_errors: list[BaseException] = []

    # -- construction --------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        url: str,
        *,
        address: int = 0,
        baudrate: int = 19200,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        safe_mode_timeout_s: int | None = None,
        trace_path: str | Path | None = None,
        clock: Clock | None = None,
        **options: Any,
    ) -> Ne1000Driver:
        """Open ``url``, connect to the pump and return the driver.

        All settings are checked before the port is opened. If connecting
        fails, the port is closed again.

        :param url: serial device or pyserial URL.
        :param address: bus address, 0-99.
        :param baudrate: as set on the pump.
        :param timeout_s: reply timeout, seconds.
        :param safe_mode_timeout_s: None for Basic mode, or 1-255 s for Safe mode.
        :param trace_path: write every byte to this file.
        :param clock: injected clock.
        :param options: further constructor options (``read_retries``...).
        :raises ConfigError: a setting is out of range; nothing was opened.
        :raises ConnectError: the port could not be opened.
        :raises CommunicationError: the pump did not answer.
        """
        codec.check_address(address)
        _check_safe_timeout(safe_mode_timeout_s)
        unknown = sorted(set(options) - _DRIVER_OPTIONS)
        if unknown:
            raise ConfigError("options", unknown, f"a subset of {sorted(_DRIVER_OPTIONS)}")
        link = open_serial(url, baudrate=baudrate, timeout_s=timeout_s, trace_path=trace_path, clock=clock)
        try:
            driver = cls(link, address=address, clock=clock, **options)
            driver.connect(safe_mode_timeout_s=safe_mode_timeout_s)
        except BaseException:
            link.close()
            raise
        return driver

    def connect(self, *, safe_mode_timeout_s: int | None = None) -> PumpStatus:
        """Find the pump, acknowledge a power-up reset, learn its setup and set the mode.

        The pump may be in Basic or Safe mode (Safe mode survives power
        cycles), so the first status query is tried in both framings.
        Connecting changes nothing that affects delivery.

        :param safe_mode_timeout_s: None to leave the pump in (or return it to)
            Basic mode, or 1-255 s to enter Safe mode with that watchdog.
        :return: the pump's status after connecting.
        :raises CommunicationError: no answer in either framing.
        """
        _check_safe_timeout(safe_mode_timeout_s)
        with self._lock:
            self._running_program = None
            self._probe_mode()
            status = self.read_status()
            self._diameter_mm = self._read_diameter()
            rate = self._read_rate()
            self._rate_units = rate.units
            # Read-backs on a Basic line may be garbled, so only this first reading and the
            # commanded rates bound how fast the counters may grow.
            self._allow_rate(rate.rate_nl_per_h)
            if status.state in _RUNNING or status.state is PumpState.PAUSED:
                # A program we did not write may run: its phases may have any rate up to the envelope.
                self._program_max_rate_nl_per_h = self.capabilities().max_rate_nl_per_h
                self._several_rates = True
            if safe_mode_timeout_s is not None:
                self.enter_safe_mode(safe_mode_timeout_s)
            elif self._tx.safe:
                self.exit_safe_mode()
            return status

    def _probe_mode(self) -> None:
        request = codec.status_request(self.address)
        last: Exception | None = None
        # Basic first: a pump in Safe mode ignores Basic packets, so a Basic answer proves Basic mode,
        # while a Safe packet is answered in either mode.
        for safe in (False, True) * (1 + self.read_retries):
            self._tx.safe = safe
            try:
                self._tx.execute(request, False)
            except CommunicationError as exc:
                last = exc
                continue
            return
        raise CommunicationError(
            f"no answer from pump {self.address} on {self._tx.require_link().url} in Basic or Safe framing",
            error_code="NE_NO_ANSWER",
        ) from last

    # -- lifecycle -------------------------------------------------------------------------

    def __repr__(self) -> str:
        url = self._link.url if self._link is not None else "closed"
        mode = f"safe {self._safe_timeout_s} s" if self._tx.safe else "basic"
        return f"Ne1000Driver({url}, address={self.address}, {mode})"

    @property
    def safe_mode(self) -> bool:
        """True while the driver talks to the pump in Safe mode."""
        return self._tx.safe

    @property
    def _link(self) -> ByteLink | None:
        return self._tx.link

    @_link.setter
    def _link(self, link: ByteLink | None) -> None:
        self._tx.link = link

    @property
    def _safe(self) -> bool:
        return self._tx.safe

    @_safe.setter
    def _safe(self, safe: bool) -> None:
        self._tx.safe = safe

    @property
    def quiet_s(self) -> float:
        """Quiet time that ends a drain after a timeout, seconds."""
        return self._tx.quiet_s

    def close(self) -> None:
        """Return the pump to Basic mode if it is in Safe mode, stop the heartbeat thread, release the link.

        Safe to call twice. Delivery is left exactly as it is (the program the pump runs goes on):
        a closed driver never leaves a Safe-mode watchdog armed, which would stop therapy once
        nobody feeds it. If the pump does not answer the ``SAF 0`` the link is released anyway and
        the watchdog stays armed (nothing else can be done from here); a controller that dies
        without closing leaves Safe mode armed too (see the README's bench section).
        """
        self.stop_heartbeat_thread()
        with self._lock:
            if self._link is not None and self._tx.safe:
                try:
                    self.exit_safe_mode()
                except (CommunicationError, DeviceError) as exc:
                    self._tx.note(f"SAF 0 at close failed ({exc}); the Safe-mode watchdog stays armed")
            link, self._link = self._link, None
            if link is not None and self._owns_link:
                link.close()

    def pending_alarms(self) -> tuple[AlarmEvent, ...]:
        """Every alarm seen since the last call, oldest first; the list is then cleared."""
        with self._lock:
            alarms, self._tx.alarms = tuple(self._tx.alarms), []
            return alarms

    # -- idempotent reads -------------------------------------------------------------------

    def _query(self, request: Request, parse: Callable[[str], T]) -> T:
        """Read a parameter, retrying (bounded) on timeouts, garbling, ``?COM`` and alarm replies.

        :raises DeviceError: the pump answered with a command error.
        :raises CommunicationError: no usable answer after all attempts.
        """
        if request.changes_delivery:
            raise StateError(f"{request.data()!r} changes delivery; it is not a query")
        attempts = 2 + self.read_retries  # one extra: the first may be swallowed by an alarm
        last: Exception | None = None
        with self._lock:
            for attempt in range(attempts):
                if attempt:
                    self.stats.query_retries += 1
                try:
                    answer = self._tx.execute(request, parse)
                except CommunicationError as exc:
                    last = exc
                    continue
                reply = answer.reply
                if reply.error is ErrorCode.BAD_PACKET:
                    # The pump received a garbled packet: a line fault, not a refusal.
                    last = CommunicationError(f"pump {self.address} reported ?COM (garbled request)",
                                              error_code="NE_BAD_PACKET")
                    continue
                if reply.error is not None:
                    refusal = DeviceError(
                        f"pump {self.address} answered {request.data()!r} with {reply.error.value}",
                        reply=reply,
                        error_code=f"NE_{reply.error.name}",
                    )
                    if reply.error is ErrorCode.UNRECOGNISED:
                        # Either this firmware lacks the query or the line garbled it: asking again is harmless.
                        last = refusal
                        continue
                    raise refusal
                if reply.alarm is not None:
                    # The alarm reply acknowledged the alarm and may have swallowed the query.
                    if not reply.data:
                        continue
                    try:
                        return parse(reply.data)
                    except ReplyFormatError:
                        continue
                return answer.value  # type: ignore[return-value]  # parsed by the matching
        if last is None:
            raise DeviceError(f"pump {self.address} kept answering {request.data()!r} with alarms")
        raise last

    def read_status(self) -> PumpStatus:
        """Read state and any latched alarm. Safe to retry.

        Reading an alarm acknowledges it (the manual's rule); the returned
        status still carries it, and :meth:`pending_alarms` keeps it.
        """
        return self._query_with_status(codec.status_request(self.address), _expect_empty)[1]

    def _query_with_status(self, request: Request, parse: Callable[[str], T]) -> tuple[T, PumpStatus]:
        """:meth:`_query`, and the status its reply carried, with the alarm that the exchange acknowledged."""
        with self._lock:
            before = len(self._tx.alarms)
            value = self._query(request, parse)
            new = self._tx.alarms[before:]
            alarm = next((event.alarm for event in new if event.acknowledged), None)
            assert self._tx.last_state is not None
            return value, PumpStatus(self._tx.last_state, alarm)

    def read_dispensed(self) -> DispensedVolume:
        """Read the infused and withdrawn counters, nL, checked for plausibility. Safe to retry.

        A reading is *plausible* when neither counter went backwards since the
        last reading returned (without a clear in between) and neither grew
        more than the highest rate in effect since then allows over the time
        that passed (plus the display's truncation steps and 2 %). On a Basic
        line (no CRC) a plausible reading is returned at once only when the
        physics predicts it: no change, or the growth the current rate makes
        over the elapsed time. Any other reading, and the first after
        connecting, clearing or a syringe change, is read again, and returned
        only when the two agree. Implausible readings are read again too. So a
        digit garbled on the line is neither returned nor taken as the
        baseline of the next check. The first reading may be the one the
        :meth:`heartbeat` just before took (nothing exchanged, no time passed
        since); it is checked like any other.

        Two readings that agree with each other but sit below the last one
        returned: by at most two display steps (that one was off in its last
        place), that counter keeps the last value until it passes it, while
        the other counter moves on as far as the rate allows; by more (the
        pump's counter really went back), or grown more than the rate allows,
        it is reported once as an error and the next call starts from them.

        :raises CommunicationError: no plausible reading after all attempts
            (``error_code="NE_IMPLAUSIBLE_COUNTER"``), or no answer.
        """
        request = self._dis_request()
        with self._lock:
            why = ""
            candidate: tuple[DispensedVolume, int] | None = None
            kept = self._take_heartbeat_reading()
            for _ in range(2 + self.read_retries):
                if kept is not None:
                    (reading, now_ns), kept = kept, None
                else:
                    reading = DispensedVolume(*self._query(request, codec.parse_dispensed))
                    now_ns = self.clock.monotonic_ns()
                baseline = self._counter_baseline
                why = "" if baseline is None else self._implausible(reading, baseline, now_ns)
                agrees = candidate is not None and self._agree(reading, candidate, now_ns)
                if not why and (agrees or (baseline is not None and self._predicted(reading, baseline, now_ns))):
                    self._counter_baseline = (reading, now_ns)
                    self._rate_bound_nl_per_h = self._rate_in_effect_nl_per_h()
                    return reading
                if why and agrees and baseline is not None:
                    if self._within_display_steps(reading, baseline[0]):
                        # A digit of the last reading returned was off by the display's last place: a
                        # counter that has not passed it yet keeps it; the other moves on if it may.
                        held = DispensedVolume(max(reading.infused_nl, baseline[0].infused_nl),
                                               max(reading.withdrawn_nl, baseline[0].withdrawn_nl))
                        if held == baseline[0]:
                            return held
                        growth = self._implausible(held, baseline, now_ns)
                        if not growth:
                            self._counter_baseline = (held, now_ns)
                            self._rate_bound_nl_per_h = self._rate_in_effect_nl_per_h()
                            return held
                        why = growth  # more than the rate allows: a fault, never a delivery
                    else:
                        # Two readings agree against the last one returned: the pump's counter moved back.
                        self._counter_baseline = (reading, now_ns)
                        self._rate_bound_nl_per_h = self._rate_in_effect_nl_per_h()
                        break
                if why:
                    self.stats.implausible_readings += 1
                    self._tx.note(f"implausible DIS reading {reading}: {why}; reading again")
                candidate = (reading, now_ns)
            raise CommunicationError(
                f"pump {self.address}: no plausible dispensed reading ({why or 'no two readings agreed'})",
                error_code="NE_IMPLAUSIBLE_COUNTER",
            )

    def _implausible(self, reading: DispensedVolume, baseline: tuple[DispensedVolume, int], now_ns: int) -> str:
        """Why ``reading`` cannot follow ``baseline``, or "" when it can."""
        before, then_ns = baseline
        bound = self._rate_bound_nl_per_h
        if bound is None and self._diameter_mm is not None:
            bound = self.capabilities().max_rate_nl_per_h
        unit_nl = self._counter_unit_nl()
        for name, old, new in (("infused", before.infused_nl, reading.infused_nl),
                               ("withdrawn", before.withdrawn_nl, reading.withdrawn_nl)):
            if new < old:
                return f"{name} counter went back from {old} to {new} nL without a clear"
            if bound is None:
                continue
            # One extra second of the bound covers the time between the pump's answer and our clock.
            allowed = (bound * (max(0, now_ns - then_ns) + NS_PER_S) // _NS_PER_H * 102 // 100
                       + 2 * (_display_step_nl(old, unit_nl) + _display_step_nl(new, unit_nl)))
            if new - old > allowed:
                return (f"{name} counter grew {new - old} nL in {(now_ns - then_ns) / NS_PER_S:g} s; "
                        f"at most {bound} nL/h allows {allowed} nL")
        return ""

    def _agree(self, reading: DispensedVolume, earlier: tuple[DispensedVolume, int], now_ns: int) -> bool:
        """True when two readings taken back to back show the same counters (within one display step,
        the truncation of a counter that moved, and what the fastest rate the pump can run moves in between).

        One step, not more: a flipped bit in the last digit (``796.0`` read as ``796.4``, four steps) must not
        agree with the true reading. The next reading would then sit below the one returned by more than
        :meth:`_within_display_steps` holds, and the counter would look as if it went back: the loop
        counts such a counter as cleared, all of it new delivery (found by the loop fuzz, seed 3424825176).
        """
        before, then_ns = earlier
        fastest = self.capabilities().max_rate_nl_per_h if self._diameter_mm is not None else 0
        unit_nl = self._counter_unit_nl()
        for old, new in ((before.infused_nl, reading.infused_nl), (before.withdrawn_nl, reading.withdrawn_nl)):
            slack = max(_display_step_nl(old, unit_nl), _display_step_nl(new, unit_nl))
            if not 0 <= new - old <= slack + fastest * max(0, now_ns - then_ns) // _NS_PER_H:
                return False
        return True

    def _predicted(self, reading: DispensedVolume, baseline: tuple[DispensedVolume, int], now_ns: int) -> bool:
        """True when the CRC vouches for ``reading`` (Safe mode), or the physics predicts it.

        Predicted: each counter either did not change at all or, for the
        direction the pump runs in now, grew what the current rate makes over
        the elapsed time (within a display step either side, 2 % and one
        second of the rate).
        """
        if self._tx.safe:
            return True
        before, then_ns = baseline
        if self._several_rates and reading != before:
            return False  # which phase ran, and how long, is not known: a garbled digit could pass as a bolus
        rate = self._rate_now_nl_per_h
        state = self._tx.last_state
        unit_nl = self._counter_unit_nl()
        for name, old, new in (("infused", before.infused_nl, reading.infused_nl),
                               ("withdrawn", before.withdrawn_nl, reading.withdrawn_nl)):
            if new == old:
                continue
            running = PumpState.INFUSING if name == "infused" else PumpState.WITHDRAWING
            if rate is None or state is not running:
                return False
            expected = rate * max(0, now_ns - then_ns) // _NS_PER_H
            slack = _display_step_nl(old, unit_nl) + _display_step_nl(new, unit_nl)
            if abs(new - old - expected) > slack + expected // 50 + rate * NS_PER_S // _NS_PER_H:
                return False
        return True

    def _within_display_steps(self, reading: DispensedVolume, last: DispensedVolume) -> bool:
        """True when ``reading`` is below ``last`` by no more than two display steps on each counter."""
        unit_nl = self._counter_unit_nl()
        return all(old - new <= 2 * _display_step_nl(old, unit_nl)
                   for old, new in ((last.infused_nl, reading.infused_nl), (last.withdrawn_nl, reading.withdrawn_nl)))

    def _counter_unit_nl(self) -> int:
        return self._volume_units().nl if self._diameter_mm is not None else codec.VolumeUnits.ML.nl

    def _rate_in_effect_nl_per_h(self) -> int | None:
        """The highest rate the pump may run at now, nL/h; None when unknown (the envelope bounds it)."""
        if self._rate_now_nl_per_h is None:
            return None
        return max(self._rate_now_nl_per_h, self._program_max_rate_nl_per_h or 0)

    def _allow_rate(self, rate_nl_per_h: int | None) -> None:
        """Note that the pump may run at ``rate_nl_per_h`` from now on (None: at any rate, up to the envelope)."""
        self._rate_now_nl_per_h = rate_nl_per_h
        if self._rate_bound_nl_per_h is not None:
            self._rate_bound_nl_per_h = None if rate_nl_per_h is None else max(self._rate_bound_nl_per_h,
                                                                                  rate_nl_per_h)

    def identify(self) -> PumpIdentity:
        """Read model and firmware (``VER``)."""
        model, firmware = self._query(codec.query(self.address, codec.Command.VER), codec.parse_version)
        return PumpIdentity(model, firmware, self.address)

    def read_rate_nl_per_h(self) -> int:
        """Read the programmed rate back, nL/h."""
        return self._read_rate().rate_nl_per_h

    def _read_rate(self) -> codec.WireRate:
        rate = self._query(codec.query(self.address, codec.Command.RAT), codec.parse_rate)
        self._rate_units = rate.units
        return rate

    def _read_diameter(self) -> Decimal:
        return self._query(codec.query(self.address, codec.Command.DIA), codec.parse_diameter)

    def read_target_volume_nl(self) -> int:
        """Read the target volume back, nL (0: deliver continuously)."""
        units = self._volume_units()
        return self._query(
            codec.query(self.address, codec.Command.VOL), lambda data: codec.parse_volume(data, units)
        )

    def read_direction(self) -> Direction:
        """Read the direction of travel back."""
        wire = self._query(codec.query(self.address, codec.Command.DIR), codec.parse_direction)
        return Direction.INFUSE if wire is WireDirection.INFUSE else Direction.WITHDRAW

    def read_diameter_mm(self) -> Decimal:
        """Read the syringe diameter back, mm."""
        diameter = self._read_diameter()
        self._diameter_mm = diameter
        return diameter

    # -- configuration ----------------------------------------------------------------------

    def _volume_units(self) -> VolumeUnits:
        if self._diameter_mm is None:
            raise StateError("syringe diameter unknown: call configure() first")
        return codec.volume_units_for_diameter(self._diameter_mm)

    def capabilities(self) -> PumpCapabilities:
        """Rate envelope, representation tolerance, counter resolution and sensors.

        The counter resolution is its finest step (3 decimals of the volume
        units); large readings are coarser because the pump shows 4 digits.

        :raises StateError: the diameter is not known yet.
        """
        units = self._volume_units()
        assert self._diameter_mm is not None
        low, high = codec.syringe_rate_envelope_nl_per_h(self._diameter_mm)
        return PumpCapabilities(
            min_rate_nl_per_h=low,
            max_rate_nl_per_h=high,
            rate_tolerance_ppm=self.rate_tolerance_ppm,
            volume_resolution_nl=units.nl // 1000,
            sensors=NE1000_SENSORS,
            holds_programs=True,
        )

    def configure(self, *, syringe_diameter_mm: float | Decimal | str) -> PumpCapabilities:
        """Set the syringe inside diameter (``DIA``), read it back and return the capabilities.

        The pump then counts volumes in µL (<= 14 mm) or mL (> 14 mm).

        :param syringe_diameter_mm: inside diameter, mm, in [0.1, 50.0], at most 3 decimals.
        :raises ConfigError: not a number.
        :raises CapabilityError: outside the pump's range or format; nothing was sent.
        :raises DeviceError: the pump refused it (for example while pumping).
        :raises UncertainDeliveryError: the reply was lost and the read-back failed.
        """
        diameter = codec.to_decimal(syringe_diameter_mm, "syringe_diameter_mm")
        if not DIAMETER_MIN_MM <= diameter <= DIAMETER_MAX_MM:
            raise CapabilityError(
                f"syringe_diameter_mm (={diameter}) must be in [{DIAMETER_MIN_MM}, {DIAMETER_MAX_MM}] mm; "
                "nothing was sent",
                error_code="NE_DIAMETER_RANGE",
            )
        request = codec.set_diameter_request(self.address, diameter)
        with self._lock:
            result = self._apply("configure", request, target=diameter, read_back=self.read_diameter_mm,
                                 value_of=lambda d: int(d * 1000))
            if result.outcome is Outcome.UNCERTAIN:
                raise UncertainDeliveryError(f"DIA {diameter} mm: {result.detail}", error_code="NE_UNCERTAIN")
            if result.outcome is Outcome.NOT_APPLIED:
                raise DeviceError(f"DIA {diameter} mm not applied: {result.detail}", reply=result)
            self._counter_baseline = None  # the counters may now show in other units, truncated otherwise
            return self.capabilities()

    # -- delivery-changing commands ----------------------------------------------------------

    def _send_once(self, request: Request) -> Reply:
        """Send a delivery command exactly once.

        :raises _DeliveryLost: no matching reply (the line has been drained).
        """
        try:
            return self._tx.execute(request, False).reply
        except CommunicationError as exc:
            raise _DeliveryLost(str(exc)) from exc

    def _readings(self) -> tuple[PumpStatus | None, DispensedVolume | None, str]:
        """Status and dispensed counter for a reconciliation; read failures become text."""
        notes: list[str] = []
        status: PumpStatus | None = None
        dispensed: DispensedVolume | None = None
        try:
            status = self.read_status()
        except (CommunicationError, DeviceError) as exc:
            notes.append(f"status unreadable ({exc})")
        try:
            dispensed = self.read_dispensed()
        except (CommunicationError, DeviceError) as exc:
            notes.append(f"dispensed unreadable ({exc})")
        return status, dispensed, "; ".join(notes)

    def _apply(
        self,
        command: str,
        request: Request,
        *,
        target: T,
        read_back: Callable[[], T],
        value_of: Callable[[T], int | None] = lambda value: None,
        previous: tuple[T, int] | None = None,
    ) -> CommandResult:
        """Send a value-setting command once and establish its outcome by reading back.

        The value is read *before* the command too: if the line is bad that
        fails before anything is sent, and afterwards the three-way comparison
        (requested, previous, observed) tells applied from not applied from
        uncertain.

        :param previous: the value already read before this call and the
            alarm-log length before that read, if the caller did the pre-read.
        :raises CommunicationError: the value could not be read before sending; nothing was sent.
        """
        self._staged = None  # a setting edits the selected phase: a staged program is no longer verified
        if previous is None:
            alarms_before = len(self._tx.alarms)
            before = read_back()
        else:
            before, alarms_before = previous
        acknowledged = [e.alarm.name for e in self._tx.alarms[alarms_before:] if e.acknowledged]
        result = self._send_and_resolve(command, request, target, before, read_back, value_of, resend=True)
        if acknowledged:
            result = _with_detail(result, f"acknowledged {', '.join(acknowledged)} before sending")
            if result.status is None or result.status.alarm is None:
                # Surface the alarm the read acknowledged; it is also kept in pending_alarms().
                state = result.status.state if result.status is not None else self._tx.last_state or PumpState.STOPPED
                first = next(e.alarm for e in self._tx.alarms[alarms_before:] if e.acknowledged)
                result = CommandResult(result.command, result.outcome, PumpStatus(state, first), result.dispensed,
                                       result.value, result.detail)
        return result

    def _send_and_resolve(
        self,
        command: str,
        request: Request,
        target: T,
        previous: T,
        read_back: Callable[[], T],
        value_of: Callable[[T], int | None],
        *,
        resend: bool,
    ) -> CommandResult:
        def judged(observed: T, status: PumpStatus | None, why: str) -> CommandResult:
            if observed == target:
                return CommandResult(command, Outcome.APPLIED, status=status, value=value_of(observed),
                                     detail=f"{why}; read-back confirms the value" if why else "")
            if observed == previous:
                return CommandResult(command, Outcome.NOT_APPLIED, status=status, value=value_of(observed),
                                     detail=f"{why}; read-back shows the previous value")
            return CommandResult(command, Outcome.UNCERTAIN, status=status, value=value_of(observed),
                                 detail=f"{why}; read back {observed!r}: neither the requested {target!r} "
                                        f"nor the previous {previous!r}")

        try:
            reply = self._send_once(request)
        except _DeliveryLost as lost:
            why = f"reply lost ({lost})"
            try:
                observed = read_back()
            except (CommunicationError, DeviceError) as exc:
                return CommandResult(command, Outcome.UNCERTAIN, detail=f"{why}; read-back failed ({exc})")
            return judged(observed, self._readings_status_only()[0], why)
        status = _status_of(reply)
        if reply.error is not None:
            return CommandResult(command, Outcome.NOT_APPLIED, status=status,
                                 detail=f"pump answered {reply.error.value} to {request.data().decode()}")
        try:
            observed = read_back()
        except (CommunicationError, DeviceError) as exc:
            why = f"alarm {reply.alarm.name}" if reply.alarm is not None else "accepted"
            return CommandResult(command, Outcome.UNCERTAIN, status=status, detail=f"{why}; read-back failed ({exc})")
        if reply.alarm is None:
            if observed == target:
                return CommandResult(command, Outcome.APPLIED, status=status, value=value_of(observed))
            return CommandResult(command, Outcome.UNCERTAIN, status=status, value=value_of(observed),
                                 detail=f"accepted but read back {observed!r}, expected {target!r}")
        why = f"alarm {reply.alarm.name} acknowledged; the command was swallowed"
        if reply.alarm is AlarmType.RESET and resend and observed == previous and observed != target:
            self.stats.resends_after_reset += 1
            self._tx.note(f"A?R swallowed {request.data()!r}; read-back shows the previous value; sending once more")
            retry = self._send_and_resolve(command, request, target, previous, read_back, value_of, resend=False)
            return _with_detail(retry, "pump had reset and swallowed the first command; sent again "
                                       "after the read-back showed it was not applied")
        return judged(observed, PumpStatus(self._tx.last_state or PumpState.STOPPED, ALARM[reply.alarm]), why)

    def _readings_status_only(self) -> tuple[PumpStatus | None, None, str]:
        try:
            return self.read_status(), None, ""
        except (CommunicationError, DeviceError) as exc:
            return None, None, str(exc)

    def set_rate(self, rate_nl_per_h: int) -> CommandResult:
        """Set the rate (``RAT``), read it back; ``value`` is the read-back rate, nL/h.

        While the pump runs its rate units cannot change, so the value must be
        representable in the current units.

        :raises ConfigError: not a positive int.
        :raises StateError: the syringe diameter is unknown.
        :raises CapabilityError: outside the rate envelope or not representable
            within the tolerance; nothing was sent (at most the rate was read).
        :raises CommunicationError: the rate could not be read first; nothing was sent.
        """
        if isinstance(rate_nl_per_h, bool) or not isinstance(rate_nl_per_h, int) or rate_nl_per_h <= 0:
            raise ConfigError("rate_nl_per_h", rate_nl_per_h, "an integer > 0 nL/h")
        with self._lock:
            caps = self.capabilities()
            self._check_envelope(rate_nl_per_h, caps)
            # The read before sending also refreshes the pump's state and rate units.
            alarms_before = len(self._tx.alarms)
            previous = self.read_rate_nl_per_h()
            running = self._tx.last_state is not None and self._tx.last_state is not PumpState.STOPPED
            units = self._rate_units if running else None
            setting = codec.encode_rate(rate_nl_per_h, tolerance_ppm=self.rate_tolerance_ppm, units=units)
            self._check_envelope(setting.rate_nl_per_h, caps, represented=True)
            request = codec.set_rate_request(self.address, setting)
            self._allow_rate(max(self._rate_now_nl_per_h or 0, setting.rate_nl_per_h))
            result = self._apply("set_rate", request, target=setting.rate_nl_per_h,
                                 read_back=self.read_rate_nl_per_h, value_of=lambda v: v,
                                 previous=(previous, alarms_before))
            if result.outcome is Outcome.APPLIED:
                self._allow_rate(setting.rate_nl_per_h)
            elif result.outcome is Outcome.UNCERTAIN and result.value is not None:
                self._allow_rate(max(setting.rate_nl_per_h, result.value))  # the pump may hold what it showed
            return result

    def _check_envelope(self, rate_nl_per_h: int, caps: PumpCapabilities, *, represented: bool = False) -> None:
        if not caps.min_rate_nl_per_h <= rate_nl_per_h <= caps.max_rate_nl_per_h:
            what = "represented rate" if represented else "rate_nl_per_h"
            raise CapabilityError(
                f"{what} (={rate_nl_per_h}) must be in [{caps.min_rate_nl_per_h}, {caps.max_rate_nl_per_h}] "
                f"nL/h for a {self._diameter_mm} mm syringe; nothing was sent",
                error_code="NE_RATE_RANGE",
            )

    def set_target_volume(self, volume_nl: int) -> CommandResult:
        """Set the volume to deliver before stopping (``VOL``); 0 means continuous.

        ``value`` is the read-back volume, nL.

        :raises ConfigError: not a non-negative int.
        :raises CapabilityError: not representable in the pump's volume units; nothing was sent.
        """
        if isinstance(volume_nl, bool) or not isinstance(volume_nl, int) or volume_nl < 0:
            raise ConfigError("volume_nl", volume_nl, "an integer >= 0 nL")
        with self._lock:
            setting = codec.encode_volume(volume_nl, self._volume_units(), tolerance_ppm=self.rate_tolerance_ppm)
            request = codec.set_volume_request(self.address, setting)
            return self._apply("set_target_volume", request, target=setting.volume_nl,
                               read_back=self.read_target_volume_nl, value_of=lambda v: v)

    def set_direction(self, direction: Direction) -> CommandResult:
        """Set infuse or withdraw (``DIR``) and read it back.

        :raises ConfigError: not a :class:`~hal.pump.Direction`.
        """
        if not isinstance(direction, Direction):
            raise ConfigError("direction", direction, "Direction.INFUSE or Direction.WITHDRAW")
        request = codec.set_direction_request(self.address, _WIRE_DIRECTION[direction])
        with self._lock:
            return self._apply("set_direction", request, target=direction, read_back=self.read_direction)

    def start(self) -> CommandResult:
        """Start delivery (``RUN``) with the programmed rate, volume and direction.

        A latched alarm is acknowledged and reported, and the pump is not
        started (the caller decides). If the reply to ``RUN`` is lost the
        outcome is ``UNCERTAIN`` whatever the pump now reports: delivery may
        have begun at an unknown moment, so the status and dispensed readings
        are attached for the caller to reconcile. ``RUN`` is never re-sent
        unless the pump's own reset alarm proves it was swallowed and a status
        read shows it stopped.
        """
        with self._lock:
            before = self.read_status()
            if before.alarm is not None:
                return CommandResult("start", Outcome.NOT_APPLIED, status=before,
                                     detail=f"alarm {before.alarm.name} was latched; acknowledged, not started")
            if before.state in _RUNNING:
                return CommandResult("start", Outcome.NOT_APPLIED, status=before,
                                     detail=f"pump already {before.state.value}; RUN not sent")
            return self._start_like("start", codec.run_request(self.address), {Prompt.INFUSING, Prompt.WITHDRAWING})

    def purge(self) -> CommandResult:
        """Purge at the maximum rate until :meth:`stop` (``PUR``). Same outcome rules as :meth:`start`."""
        with self._lock:
            before = self.read_status()
            if before.alarm is not None or before.state is not PumpState.STOPPED:
                return CommandResult("purge", Outcome.NOT_APPLIED, status=before,
                                     detail="purge needs a stopped pump with no alarm; PUR not sent")
            self._allow_rate(None)  # the maximum rate, until a rate is read again
            return self._start_like("purge", codec.purge_request(self.address), {Prompt.PURGING})

    def _start_like(self, command: str, request: Request, started: set[Prompt], *, resend: bool = True
                    ) -> CommandResult:
        try:
            reply = self._send_once(request)
        except _DeliveryLost as lost:
            status, dispensed, notes = self._readings()
            shown = "unknown" if status is None else status.state.value
            return CommandResult(command, Outcome.UNCERTAIN, status=status, dispensed=dispensed,
                                 detail=f"reply to {request.command.value} lost ({lost}); pump now reports "
                                        f"{shown}; reconcile before any other delivery command"
                                        + (f"; {notes}" if notes else ""))
        status = _status_of(reply)
        if reply.error is not None:
            return CommandResult(command, Outcome.NOT_APPLIED, status=status,
                                 detail=f"pump answered {reply.error.value}")
        if reply.alarm is not None:
            after = self._readings_status_only()[0]
            if after is None:
                return CommandResult(command, Outcome.UNCERTAIN, status=status,
                                     detail=f"alarm {reply.alarm.name}; status unreadable afterwards")
            if after.state in _RUNNING:
                return CommandResult(command, Outcome.UNCERTAIN, status=after,
                                     detail=f"alarm {reply.alarm.name}, yet the pump reports {after.state.value}")
            if reply.alarm is AlarmType.RESET and resend:
                self.stats.resends_after_reset += 1
                self._tx.note(f"A?R swallowed {request.data()!r}; status shows stopped; sending once more")
                retry = self._start_like(command, request, started, resend=False)
                return _with_detail(retry, "pump had reset and swallowed the first command; status showed it "
                                           "stopped, so it was sent once more")
            return CommandResult(command, Outcome.NOT_APPLIED, status=PumpStatus(after.state, ALARM[reply.alarm]),
                                 detail=f"alarm {reply.alarm.name} acknowledged; not started")
        if reply.prompt in started:
            return CommandResult(command, Outcome.APPLIED, status=status)
        return CommandResult(command, Outcome.NOT_APPLIED, status=status,
                             detail=f"accepted, but the pump reports {status.state.value if status else '?'}")

    def stop(self) -> CommandResult:
        """Stop completely: ``STP`` pauses a running pump; a second ``STP`` ends the pause.

        Each ``STP`` is sent only when the last reply or a status read shows
        it is needed, so no command is repeated blindly. A lost reply is
        resolved by reading status: stopped is ``APPLIED``, paused earns the
        second ``STP``, still running is ``NOT_APPLIED``.
        """
        with self._lock:
            detail: list[str] = []
            status: PumpStatus | None = None
            for _ in range(3):
                lost = False
                try:
                    reply = self._send_once(codec.stop_request(self.address))
                except _DeliveryLost as exc:
                    lost = True
                    detail.append(f"reply to STP lost ({exc})")
                    status = self._readings_status_only()[0]
                    if status is None:
                        return CommandResult("stop", Outcome.UNCERTAIN, detail=_join(detail, "status unreadable"))
                else:
                    status = _status_of(reply)
                    if reply.error is not None:
                        return CommandResult("stop", Outcome.NOT_APPLIED, status=status,
                                             detail=_join(detail, f"pump answered {reply.error.value} to STP"))
                    if reply.alarm is not None:
                        detail.append(f"alarm {reply.alarm.name} acknowledged")
                        after = self._readings_status_only()[0]
                        if after is None:
                            return CommandResult("stop", Outcome.UNCERTAIN, detail=_join(detail, "status unreadable"))
                        status = PumpStatus(after.state, ALARM[reply.alarm])
                assert status is not None
                if status.state is PumpState.STOPPED:
                    self._program_max_rate_nl_per_h = None
                    self._several_rates = False
                    self._running_program = None
                    return CommandResult("stop", Outcome.APPLIED, status=status, detail=_join(detail))
                if lost and status.state is not PumpState.PAUSED:
                    return CommandResult("stop", Outcome.NOT_APPLIED, status=status,
                                         detail=_join(detail, f"pump still {status.state.value}"))
            return CommandResult("stop", Outcome.UNCERTAIN, status=status,
                                 detail=_join(detail, "pump did not reach stopped after 3 STP"))

    def clear_dispensed(self) -> CommandResult:
        """Zero both dispensed counters (``CLD INF``, ``CLD WDR``) and read them back.

        ``APPLIED`` only when both counters read zero afterwards (so not while
        the pump is delivering).
        """
        with self._lock:
            outcomes = []
            for wire in (WireDirection.INFUSE, WireDirection.WITHDRAW):
                request = codec.clear_dispensed_request(self.address, wire)
                try:
                    reply = self._send_once(request)
                except _DeliveryLost:
                    outcomes.append(None)
                    continue
                outcomes.append(reply.ok)
            self._counter_baseline = None
            try:
                dispensed = self.read_dispensed()
            except (CommunicationError, DeviceError) as exc:
                return CommandResult("clear_dispensed", Outcome.UNCERTAIN, detail=f"read-back failed ({exc})")
            zero = dispensed.infused_nl == 0 and dispensed.withdrawn_nl == 0
            if zero:
                return CommandResult("clear_dispensed", Outcome.APPLIED, dispensed=dispensed)
            if all(outcome is False for outcome in outcomes):
                return CommandResult("clear_dispensed", Outcome.NOT_APPLIED, dispensed=dispensed,
                                     detail="pump refused CLD")
            return CommandResult("clear_dispensed", Outcome.UNCERTAIN, dispensed=dispensed,
                                 detail="counters not zero after CLD (pump running, or a command was lost)")

    def acknowledge_alarm(self) -> PumpStatus:
        """Acknowledge a latched alarm: any valid command does, so a status query is sent.

        :return: the status, with ``alarm`` set to the alarm just acknowledged (or None).
        """
        return self.read_status()

    # -- programs the pump runs by itself ----------------------------------------------------------

    @property
    def staged_program(self) -> tuple[int, PumpProgram] | None:
        """``(first_phase, program)`` as staged and read back, in the pump's representation; None when nothing is."""
        return self._staged

    def stage_program(self, program: PumpProgram, *, first_phase: int = 1) -> CommandResult:
        """Write ``program`` into phases ``first_phase``... and read every phase back; nothing starts.

        Each phase is written as ``PHN n``, ``FUN RAT``, ``RAT``, ``VOL``,
        ``DIR``; a program whose last phase has a volume gets a ``FUN STP``
        phase after it, so the pump stops there by itself, and a repeating one
        (``repeat_from``) a ``FUN JMP n`` phase, so it loops. The pump must be
        stopped or paused (it refuses phase edits while it pumps). Every value
        is checked against the pump's envelope and number format before
        anything is sent; the rates and volumes are represented as the pump
        will hold them, and the read-back is compared with that
        representation (see :attr:`staged_program`).

        ``APPLIED``: every phase (and the closing ``STP`` or ``JMP``) read back as
        written, and :meth:`commit_program` may start it. ``NOT_APPLIED``: the
        pump refused or was running; ``UNCERTAIN``: a reply was lost or a
        phase read back otherwise. Either way nothing is committable.

        :param first_phase: the phase the program starts at, 1-41.
        :raises ConfigError: not a :class:`~hal.pump.PumpProgram`, or a bad phase number.
        :raises CapabilityError: a phase is outside the envelope or format, or the
            program does not fit in the 41 phases; nothing was sent.
        """
        last = self._closing_phase(program, first_phase)
        with self._lock:
            self._staged = None
            if self._running_program is not None:
                # Phases may be rewritten under the phase that runs: several rates may follow again.
                self._several_rates, self._running_program = True, None
            writes, expected = self._phase_writes(program, first_phase)
            if program.repeats:
                closing_function = f"{codec.PhaseFunction.JUMP.value}{first_phase + program.repeat_from}"
                writes += [codec.select_phase_request(self.address, last),
                           codec.set_function_request(self.address, codec.PhaseFunction.JUMP,
                                                      first_phase + program.repeat_from)]
            elif not program.ends_continuous:
                closing_function = codec.PhaseFunction.STOP.value
                writes += [codec.select_phase_request(self.address, last),
                           codec.set_function_request(self.address, codec.PhaseFunction.STOP)]
            else:
                closing_function = None
            status = self.read_status()
            if status.alarm is not None or status.state not in (PumpState.STOPPED, PumpState.PAUSED):
                return CommandResult("stage_program", Outcome.NOT_APPLIED, status=status,
                                     detail=f"the pump is {status.state.value}; phases are written only while "
                                            "stopped or paused; nothing sent")
            lost = []
            for request in writes:
                try:
                    reply = self._send_once(request)
                except _DeliveryLost as exc:
                    lost.append(f"reply to {request.data().decode()} lost ({exc})")
                    continue
                if not reply.ok:
                    why = reply.error.value if reply.error is not None else f"A?{reply.alarm.value}"  # type: ignore[union-attr]
                    return CommandResult("stage_program", Outcome.NOT_APPLIED, status=_status_of(reply),
                                         detail=f"pump answered {why} to {request.data().decode()}; not committable")
            try:
                observed = self.read_program(first_phase, len(program.phases))
                closing = None if closing_function is None else self._read_function(last)
            except (CommunicationError, DeviceError) as exc:
                return CommandResult("stage_program", Outcome.UNCERTAIN, detail=_join(lost, f"read-back failed ({exc})"))
            observed = PumpProgram(observed.phases, program.repeat_from)
            if observed != expected or closing != closing_function:
                return CommandResult("stage_program", Outcome.UNCERTAIN,
                                     detail=_join(lost, f"read back {observed} (closing phase {closing}), "
                                                        f"expected {expected}"))
            self._staged = (first_phase, expected)
            return CommandResult("stage_program", Outcome.APPLIED, value=first_phase,
                                 detail=_join(lost, f"{len(expected.phases)} phases from phase {first_phase} "
                                                    "read back as written"))

    def _closing_phase(self, program: PumpProgram, first_phase: int) -> int:
        """The phase after the last rate phase (``STP`` or ``JMP`` there), checked to fit the 41 phases."""
        if not isinstance(program, PumpProgram):
            raise ConfigError("program", program, "a hal.pump.PumpProgram")
        codec.check_phase(first_phase)
        last = first_phase + len(program.phases) - (1 if program.ends_continuous else 0)
        if last > codec.MAX_PHASES:
            raise CapabilityError(
                f"program of {len(program.phases)} phases from phase {first_phase} needs phase {last}; "
                f"the pump has {codec.MAX_PHASES}; nothing was sent", error_code="NE_PROGRAM_TOO_LONG")
        return last

    def _phase_writes(self, program: PumpProgram, first_phase: int) -> tuple[list[Request], PumpProgram]:
        """The requests that write every rate phase, and the program as the pump will hold it."""
        caps = self.capabilities()
        units = self._volume_units()
        writes: list[Request] = []
        held: list[ProgramPhase] = []
        for number, phase in enumerate(program.phases, start=first_phase):
            self._check_envelope(phase.rate_nl_per_h, caps)
            rate = codec.encode_rate(phase.rate_nl_per_h, tolerance_ppm=self.rate_tolerance_ppm)
            self._check_envelope(rate.rate_nl_per_h, caps, represented=True)
            volume = codec.encode_volume(phase.volume_nl, units, tolerance_ppm=self.rate_tolerance_ppm)
            held.append(ProgramPhase(rate.rate_nl_per_h, volume.volume_nl, phase.direction))
            writes += [codec.select_phase_request(self.address, number),
                       codec.set_function_request(self.address, codec.PhaseFunction.RATE),
                       codec.set_rate_request(self.address, rate),
                       codec.set_volume_request(self.address, volume),
                       codec.set_direction_request(self.address, _WIRE_DIRECTION[phase.direction])]
        return writes, PumpProgram(tuple(held), program.repeat_from)

    def program_as_held(self, program: PumpProgram) -> PumpProgram:
        """``program`` with every rate and volume as the pump's number format holds it; no I/O.

        :raises ConfigError: not a :class:`~hal.pump.PumpProgram`.
        :raises CapabilityError: a phase is outside the envelope or format, or it does not fit in 41 phases.
        """
        self._closing_phase(program, 1)
        with self._lock:
            return self._phase_writes(program, 1)[1]

    def pause(self) -> CommandResult:
        """Pause a running program where it is (one ``STP``): the pump must be paused or stopped to be programmed.

        Nothing is sent to a pump already paused or stopped. A lost reply is resolved by a status
        read. ``APPLIED`` when the pump is paused or stopped afterwards; a latched alarm is
        acknowledged by the exchange and reported in the status.
        """
        with self._lock:
            before = self.read_status()
            if before.state in (PumpState.PAUSED, PumpState.STOPPED):
                return CommandResult("pause", Outcome.APPLIED, status=before, detail="already not delivering; nothing sent")
            try:
                reply = self._send_once(codec.stop_request(self.address))
            except _DeliveryLost as exc:
                status = self._readings_status_only()[0]
                if status is None:
                    return CommandResult("pause", Outcome.UNCERTAIN, detail=f"reply to STP lost ({exc}); status unreadable")
            else:
                if reply.error is not None:
                    return CommandResult("pause", Outcome.NOT_APPLIED, status=_status_of(reply),
                                         detail=f"pump answered {reply.error.value} to STP")
                status = self.read_status() if reply.alarm is not None else _status_of(reply)
            assert status is not None
            held = status.state in (PumpState.PAUSED, PumpState.STOPPED)
            return CommandResult("pause", Outcome.APPLIED if held else Outcome.NOT_APPLIED, status=status,
                                 detail="" if held else f"pump still {status.state.value}")

    def read_program(self, first_phase: int, count: int) -> PumpProgram:
        """Read ``count`` rate phases back from phase ``first_phase`` on (``PHN``, ``FUN``, ``RAT``, ``VOL``, ``DIR``).

        Selecting a phase changes no delivery; the selection returns to
        ``first_phase`` afterwards. Only while stopped or paused.

        :raises ConfigError: bad phase numbers.
        :raises DeviceError: a phase is not a rate phase, or the pump refused a query.
        :raises CommunicationError: a reply was lost.
        """
        codec.check_phase(first_phase)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= codec.MAX_PHASES - first_phase + 1:
            raise ConfigError("count", count, f"an integer in [1, {codec.MAX_PHASES - first_phase + 1}]")
        with self._lock:
            phases = []
            for number in range(first_phase, first_phase + count):
                function = self._read_function(number)
                if function != codec.PhaseFunction.RATE.value:
                    raise DeviceError(f"phase {number} holds FUN {function}, not a rate phase",
                                      error_code="NE_NOT_A_RATE_PHASE")
                rate_nl_per_h, volume_nl, direction = (self.read_rate_nl_per_h(), self.read_target_volume_nl(),
                                                       self.read_direction())
                try:
                    phases.append(ProgramPhase(rate_nl_per_h, volume_nl, direction))
                except ConfigError as exc:
                    raise DeviceError(f"phase {number} read back as no valid phase ({exc})",
                                      error_code="NE_BAD_PHASE") from exc
            self._select_phase(first_phase)
            try:
                return PumpProgram(tuple(phases))
            except ConfigError as exc:
                raise DeviceError(f"phases {first_phase}-{first_phase + count - 1} read back as no valid program "
                                  f"({exc})", error_code="NE_BAD_PROGRAM") from exc

    def _select_phase(self, number: int) -> None:
        try:
            reply = self._send_once(codec.select_phase_request(self.address, number))
        except _DeliveryLost as exc:
            raise CommunicationError(f"reply to PHN {number} lost ({exc})", error_code="NE_TIMEOUT") from exc
        if not reply.ok:
            raise DeviceError(f"pump answered {reply.error.value if reply.error else reply.alarm} to PHN {number}",
                              reply=reply)

    def _read_function(self, number: int) -> str:
        self._select_phase(number)
        return self._query(codec.query(self.address, codec.Command.FUN), codec.parse_function)

    def commit_program(self) -> CommandResult:
        """Start the staged, verified program at its first phase (``RUN n``); outcome rules as :meth:`start`.

        The staging is used once: afterwards (and after any other setting
        command) a new :meth:`stage_program` is needed.

        :raises StateError: nothing staged, or its read-back did not verify.
        """
        with self._lock:
            staged, self._staged = self._staged, None
            self._running_program = None
            if staged is None:
                raise StateError("no verified program staged: stage_program() and its read-back come first")
            first_phase, program = staged
            before = self.read_status()
            if before.alarm is not None or before.state in _RUNNING:
                why = f"alarm {before.alarm.name} latched" if before.alarm else f"pump already {before.state.value}"
                return CommandResult("commit_program", Outcome.NOT_APPLIED, status=before,
                                     detail=f"{why}; RUN {first_phase} not sent, stage again")
            self._program_max_rate_nl_per_h = program.max_rate_nl_per_h
            self._several_rates = len({phase.rate_nl_per_h for phase in program.phases}) > 1
            self._allow_rate(max(self._rate_now_nl_per_h or 0, program.max_rate_nl_per_h))
            result = self._start_like("commit_program", codec.run_request(self.address, first_phase),
                                      {Prompt.INFUSING, Prompt.WITHDRAWING})
            if result.outcome is not Outcome.APPLIED:
                return result
            # A garbled RUN (a lost digit: RUN resumes the paused phase) is answered as running too.
            try:
                phase = self.read_phase()
            except HalError as exc:
                return CommandResult("commit_program", Outcome.UNCERTAIN, status=result.status,
                                     detail=f"running, but its phase could not be read ({exc})")
            if phase != first_phase:
                return CommandResult("commit_program", Outcome.NOT_APPLIED, status=result.status,
                                     detail=f"the pump runs phase {phase}, not the program's first phase {first_phase}")
            if first_phase == 1 and self._several_rates and program.ends_continuous:
                self._running_program = program
            return result

    def read_phase(self) -> int:
        """The phase that runs now (``PHN`` query; the selected phase while stopped), 1-41.

        Read in the last (continuous) phase of the program :meth:`commit_program` started, and
        read so again (the CRC vouches in Safe mode), it tells that one rate runs from now on (a
        stop returns a program to its first phase; a new program starts over): a grown counter
        is then predicted by that rate, as after a one-phase program, and read once.
        """
        request = codec.query(self.address, codec.Command.PHN)
        with self._lock:
            phase = self._query(request, codec.parse_phase_number)
            program = self._running_program
            if program is not None and self._several_rates and phase == len(program.phases) \
                    and self._tx.last_state is PumpState.INFUSING:
                if self._tx.safe or self._query(request, codec.parse_phase_number) == phase:
                    self._several_rates = False
                    self._allow_rate(program.phases[-1].rate_nl_per_h)
            return phase

    # -- Safe mode and heartbeat -----------------------------------------------------------------

    def enter_safe_mode(self, timeout_s: int) -> PumpStatus:
        """Switch to Safe mode with a ``timeout_s``-second watchdog (``SAF n``), and check it answers.

        :raises ConfigError: ``timeout_s`` not in [1, 255].
        :raises CommunicationError: the pump did not answer in Safe framing afterwards.
        """
        _check_safe_timeout(timeout_s)
        request = codec.safe_mode_request(self.address, timeout_s)
        with self._lock:
            self._mode_switch(request, safe_after=True)
            self._safe_timeout_s = timeout_s
            status = self.read_status()
            self._verify_safe_timeout(timeout_s)
            return status

    def exit_safe_mode(self) -> PumpStatus:
        """Return the pump to Basic mode (``SAF 0`` sent as a Safe packet, as the manual does)."""
        request = codec.safe_mode_request(self.address, 0)
        with self._lock:
            self._mode_switch(request, safe_after=False)
            self._safe_timeout_s = None
            status = self.read_status()
            self._verify_safe_timeout(0)
            return status

    def read_safe_mode_timeout_s(self) -> int:
        """Read the Safe-mode watchdog back (``SAF``), seconds; 0 means Basic mode."""
        return self._query(codec.query(self.address, codec.Command.SAF), _parse_whole_number)

    def _verify_safe_timeout(self, expected_s: int) -> None:
        try:
            observed = self.read_safe_mode_timeout_s()
        except DeviceError as exc:
            if exc.reply is not None and exc.reply.error is ErrorCode.UNRECOGNISED:
                self._tx.note("SAF query not supported by this firmware; mode checked by framing only")
                return
            raise
        if observed != expected_s:
            raise DeviceError(f"SAF read back {observed} s, expected {expected_s} s", error_code="NE_SAF_READBACK")

    def _mode_switch(self, request: Request, *, safe_after: bool, alarm_retries: int = 2) -> None:
        for _ in range(1 + alarm_retries):
            try:
                reply = self._tx.execute_mode_switch(request)
            except LinkTimeoutError:
                # The switch may have happened; find out which framing the pump now answers.
                self._probe_mode()
                if self._tx.safe == safe_after:
                    return  # the switch happened; only its reply was lost
                raise
            if reply.error is not None:
                raise DeviceError(f"pump answered {reply.error.value} to {request.data()!r}", reply=reply)
            if reply.alarm is None:
                self._tx.safe = safe_after
                self._tx.note(f"now in {'Safe' if safe_after else 'Basic'} mode")
                return
            # Swallowed by the alarm reply: not executed; send it again (SAF is idempotent).
        raise DeviceError(f"pump kept answering {request.data()!r} with alarms", reply=reply)

    def heartbeat(self) -> PumpStatus:
        """Feed the Safe-mode watchdog and read the status, with one ``DIS`` query (harmless in Basic mode).

        Every reply carries the pump's status (its prompt, or the latched alarm, which reading
        acknowledges), so the ``DIS`` reply says all a status query would: the status returned
        is exactly :meth:`read_status`'s. Its counters are kept unchecked: the next
        :meth:`read_dispensed` takes them as its first reading, through all its plausibility
        checks, if nothing crossed the line and the clock did not move in between (the poll
        reads status and counters at one instant); otherwise they are dropped.
        """
        with self._lock:
            counters, status = self._query_with_status(self._dis_request(), codec.parse_dispensed)
            self._heartbeat_reading = (DispensedVolume(*counters), self.clock.monotonic_ns(), self._tx.requests_sent)
            return status

    def _dis_request(self) -> Request:
        """The ``DIS`` query to this pump's address (the poll's one request), built once per address."""
        request = self._dis
        if request is None or request.address != self.address:
            request = self._dis = codec.query(self.address, codec.Command.DIS)
        return request

    def _take_heartbeat_reading(self) -> tuple[DispensedVolume, int] | None:
        """The counters of the heartbeat just before, with their time (ns), if nothing happened since; once."""
        kept, self._heartbeat_reading = self._heartbeat_reading, None
        if kept is None or kept[2] != self._tx.requests_sent or kept[1] != self.clock.monotonic_ns():
            return None
        return kept[0], kept[1]

    def heartbeat_due(self, *, margin: float = 3.0) -> bool:
        """True when a heartbeat should be sent now: in Safe mode, after ``timeout / margin`` without a valid reply.

        :param margin: how many heartbeats fit in one watchdog period (>= 2).
        """
        if margin < 2:
            raise ConfigError("margin", margin, ">= 2")
        if not self._tx.safe or self._safe_timeout_s is None:
            return False
        last_valid_ns = self._tx.last_valid_ns
        if last_valid_ns is None:
            return True
        period_ns = int(self._safe_timeout_s * NS_PER_S / margin)
        return self.clock.monotonic_ns() - last_valid_ns >= period_ns

    def start_heartbeat_thread(self, interval_s: float | None = None) -> None:
        """Start a real-time thread that calls :meth:`heartbeat` every ``interval_s`` (bench use).

        Off by default; the thread stops on :meth:`close`. Errors are kept in
        :attr:`heartbeat_errors` and the thread keeps trying.

        :param interval_s: seconds between heartbeats; default a third of the Safe-mode timeout.
        :raises StateError: already running, or no Safe-mode timeout to derive the interval from.
        """
        if self._heartbeat_thread is not None:
            raise StateError("the heartbeat thread is already running")
        if interval_s is None:
            if self._safe_timeout_s is None:
                raise StateError("not in Safe mode: give interval_s explicitly")
            interval_s = self._safe_timeout_s / 3
        if not isinstance(interval_s, (int, float)) or not 0 < interval_s <= 255:
            raise ConfigError("interval_s", interval_s, "a number of seconds in (0, 255]")
        self._heartbeat_stop.clear()
        thread = threading.Thread(target=self._heartbeat_loop, args=(float(interval_s),),
                                  name=f"ne1000-heartbeat-{self.address}", daemon=True)
        self._heartbeat_thread = thread
        thread.start()

    def stop_heartbeat_thread(self) -> None:
        """Stop the heartbeat thread, if running, and wait for it. Safe to call twice."""
        thread, self._heartbeat_thread = self._heartbeat_thread, None
        if thread is not None:
            self._heartbeat_stop.set()
            thread.join()

    def _heartbeat_loop(self, interval_s: float) -> None:
        while not self._heartbeat_stop.wait(interval_s):
            try:
                self.heartbeat()
            except StateError:
                return
            except Exception as exc:  # keep beating; the errors are reported, not swallowed
                self.heartbeat_errors.append(exc)


def _check_safe_timeout(timeout_s: int | None) -> None:
    if timeout_s is None:
        return
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int) or not 1 <= timeout_s <= codec.MAX_SAFE_TIMEOUT_S:
        raise ConfigError("safe_mode_timeout_s", timeout_s, f"None or an integer in [1, {codec.MAX_SAFE_TIMEOUT_S}] s")


def _parse_whole_number(data: str) -> int:
    if not data.isdigit():
        raise ReplyFormatError("not a whole number", data.encode("ascii", "replace"))
    return int(data)


def _expect_empty(data: str) -> None:
    if data:
        raise ReplyFormatError("status-only reply expected", data.encode("ascii", "replace"))


def _status_of(reply: Reply) -> PumpStatus | None:
    if reply.prompt is not None:
        return PumpStatus(PROMPT_STATE[reply.prompt], None)
    return None


def _display_step_nl(value_nl: int, unit_nl: int) -> int:
    """The step of the pump's 4-digit display at ``value_nl``, nL (its truncation error is below one step)."""
    whole = value_nl // unit_nl
    digits = len(str(whole)) if whole else 1
    return unit_nl * 10 ** max(0, digits - codec.MAX_DIGITS) if digits >= codec.MAX_DIGITS \
        else unit_nl // 10 ** min(codec.MAX_DECIMALS, codec.MAX_DIGITS - digits)


def _join(parts: list[str], *more: str) -> str:
    return "; ".join([*parts, *more])


def _with_detail(result: CommandResult, extra: str) -> CommandResult:
    detail = f"{extra}; {result.detail}" if result.detail else extra
    return CommandResult(result.command, result.outcome, result.status, result.dispensed, result.value, detail)


#: Baud rates an NE pump can be set to, factory default first.
NE_BAUDRATES: tuple[int, ...] = (19200, 9600, 2400, 1200, 300)


def probe_baudrate(
    url: str,
    *,
    address: int = 0,
    baudrates: tuple[int, ...] = NE_BAUDRATES,
    timeout_s: float = 0.2,
    clock: Clock | None = None,
) -> tuple[int, PumpIdentity]:
    """Find the baud rate a pump answers at (community drivers disagree on the default).

    Each rate is tried with a status query in Basic and Safe framing, then
    ``VER``. Nothing that affects delivery is sent, but a latched alarm is
    acknowledged by the first answer (see the driver's connect rules).

    :param url: serial device or pyserial URL.
    :param address: bus address, 0-99.
    :param baudrates: rates to try, in order.
    :param timeout_s: reply timeout per attempt, seconds.
    :return: ``(baudrate, identity)`` of the first rate that answers.
    :raises ConfigError: a bad setting; nothing was opened.
    :raises CommunicationError: no rate answered.
    """
    codec.check_address(address)
    if not baudrates:
        raise ConfigError("baudrates", baudrates, "at least one of " + ", ".join(map(str, NE_BAUDRATES)))
    for baudrate in baudrates:
        if baudrate not in NE_BAUDRATES:
            raise ConfigError("baudrates", baudrate, "each one of " + ", ".join(map(str, NE_BAUDRATES)))
    failures = []
    for baudrate in baudrates:
        link = open_serial(url, baudrate=baudrate, timeout_s=timeout_s, clock=clock)
        try:
            driver = Ne1000Driver(link, address=address, clock=clock, read_retries=0)
            try:
                driver._probe_mode()
                return baudrate, driver.identify()
            except CommunicationError as exc:
                failures.append(f"{baudrate}: {exc}")
        finally:
            link.close()
    raise CommunicationError(
        f"no NE pump answered on {url} at {', '.join(map(str, baudrates))} bit/s ({'; '.join(failures)})",
        error_code="NE_NO_ANSWER",
    )
