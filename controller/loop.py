"""The control loop: event-driven delivery, reconciliation, fault reactions and resume after restart.

The loop owns the pump. It wakes only when something is due:

* a **status poll** every ``poll_interval_ms`` (heartbeat, status, dispensed
  counter, reconciliation, reservoir, alarms);
* the **end of a bolus** (back to the basal rate);
* a **programme boundary** (a flex step, a scheduled taper step).

Between events it sleeps on the injected :class:`~hal.clock.Clock`: on the bench
that is real time; in CI a :class:`~sim.clock.VirtualClock` advances straight
to the next event, so months of therapy run in seconds.

One tick of data flow::

    poll:  heartbeat -> status -> dispensed counter
           -> counter delta split by delivery kind (basal / bolus / bridge...)
              in proportion to what was commanded since the last poll
           -> mass through the catheter dead-volume queue (old drug first)
           -> kernel ledger.record(kind, mass)          (24 h accounting)
           -> drift check, reservoir prediction, alarms, fault reactions

Every delivery change is authorised by the kernel (:mod:`controller.gate`),
programmed atomically (:mod:`controller.delivery`), then applied to the kernel.
Flow is never set to zero except by an authorised discontinue or a STOP row of
the fault-reaction table (:data:`controller.faults.FAULT_REACTIONS`).

Durability: the resume point (:mod:`controller.checkpoint`) is written at every
therapy change, every counter clear and every ``checkpoint_interval_ms``; bolus
records are written before any command is sent. With a journal attached, every
therapy-changing pump command (rate programming, start, stop: routine, minimum
rate, discontinue, fault reactions) gets an ID and a durable pending record
before its bytes are sent, and its outcome (applied / not_applied / uncertain,
with the reconcile detail) after; an uncertain one is resolved by the next
verified rate or status read, also after a restart. :meth:`ControlLoop.recover` reads the pump first,
attributes whatever the counter shows since the checkpoint, closes unfinished
boluses from the counter (never re-sending them), and only then commands.
"""

from __future__ import annotations

import enum
import itertools
import sqlite3
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from controller import reservoir as reservoir_math
from controller.alarms import AlarmCode, AlarmManager
from controller.checkpoint import BolusRecord, CheckpointStore
from controller.delivery import ProgramOutcome, ProgramResult, RateProgrammer, fault_for_hal_error, is_link_error
from controller.faults import FaultCode, Reaction, fault_for_pump_alarm, reaction_for
from controller.gate import Gate, GateDecision
from controller.journal import JournalError
from cython_ext import units
from hal.clock import Clock
from cython_ext.errors import ConfigError, HalError, StateError
from hal.pump import PumpAlarm, PumpDriver, PumpState

MS_PER_MIN = units.MS_PER_MIN
MS_PER_H = units.MS_PER_H
MS_PER_DAY = units.MS_PER_DAY

#: Delivery kinds as the loop names them (the gate maps them to kernel ledger kinds).
BASAL = "basal"
FLEX = "flex"
BOLUS_KINDS = ("clinician", "patient", "priming", "bridge")
MINIMUM_RATE = "minimum_rate"
PERIODIC = "periodic"  # the extra rate of a prescribed periodic bolus (ledger kind BOLUS_PERIODIC)


def _keeps_programme(programme: Any) -> bool:
    """Whether the loop must follow ``programme``'s boundaries (flex steps or periodic boluses)."""
    return programme is not None and (len(programme.steps) > 1 or bool(programme.periodic_boluses))


def periodic_extra_nl_per_h(programme: Any, t_ms: int) -> int:
    """Extra rate of the periodic boluses of ``programme`` running at controller time ``t_ms``, nL/h.

    :param programme: a kernel programme, or None (no periodic boluses: 0).
    :param t_ms: controller time, ms.
    """
    if programme is None:
        return 0
    offset_ms = (t_ms - programme.anchor_ms) % MS_PER_DAY
    return sum(rate for start_ms, duration_ms, rate in programme.periodic_boluses
               if (offset_ms - start_ms) % MS_PER_DAY < duration_ms)

#: Poll interval while a bolus runs, ms: the 24 h cap is re-checked this often (BOL-04).
BOLUS_POLL_MS = 5 * MS_PER_MIN

#: Prefix of the detail of a requested change withheld for want of a durable journal record.
NOT_JOURNALLED = "withheld"

#: Journal outcome of each programming result (the reconcile detail goes with it).
_COMMAND_OUTCOME = {
    ProgramResult.COMMITTED: "applied",
    ProgramResult.KEPT_OLD: "not_applied",
    ProgramResult.REJECTED_BY_PUMP: "not_applied",
    ProgramResult.UNKNOWN: "uncertain",
}

#: Alarm conditions that end when the pump is confirmed delivering again.
INTERRUPTION_ALARMS = (AlarmCode.THERAPY_INTERRUPTED, AlarmCode.MOTOR_STALL, AlarmCode.OCCLUSION, AlarmCode.PUMP_RESET)


class Mode(enum.Enum):
    """What the loop is doing with the pump."""

    IDLE = "idle"  # no therapy programmed yet (before implant)
    RUNNING = "running"  # the committed programme is delivering
    MINIMUM_RATE = "minimum_rate"  # fault reaction: the clinician-set minimum rate
    STOPPED_FAULT = "stopped_fault"  # STOP reaction: waiting for a clinician
    DISCONTINUED = "discontinued"  # authorised discontinue completed


@dataclass(frozen=True)
class LoopConfig:
    """Clinician- and rig-configured loop parameters (units in names).

    :ivar poll_interval_ms: time between status polls, ms.
    :ivar checkpoint_interval_ms: longest time between two checkpoints while nothing changes, ms.
    :ivar minimum_rate_nl_per_h: the minimum-rate mode rate, nL/h (> 0).
    :ivar drift_tolerance_ppm: allowed relative mismatch between commanded and counted volume, ppm.
    :ivar drift_floor_nl: mismatches below this are counter resolution, not drift, nL.
    :ivar unconfirmed_alarm_ms: delivery unconfirmed this long raises THERAPY_STATUS_UNKNOWN, ms.
    :ivar low_reservoir_nl: low-reservoir alarm volume, nL.
    :ivar low_reservoir_days: low-reservoir alarm on predicted days to ``low_reservoir_nl``.
    :ivar empty_reservoir_nl: the empty threshold: minimum-rate mode below it, nL.
    :ivar dead_volume_nl: catheter and pump dead volume, nL.
    :ivar restart_titration_after_ms: interruptions longer than this restart at the titration dose, ms.
    :ivar reservoir_capacity_nl: reservoir capacity, nL.
    """

    poll_interval_ms: int = 30 * MS_PER_MIN
    checkpoint_interval_ms: int = 72 * MS_PER_H
    minimum_rate_nl_per_h: int = 2000
    drift_tolerance_ppm: int = 50_000
    drift_floor_nl: int = 2000
    unconfirmed_alarm_ms: int = 2 * MS_PER_H
    low_reservoir_nl: int = 2_000_000
    low_reservoir_days: int = 7
    empty_reservoir_nl: int = 500_000
    dead_volume_nl: int = 250_000
    restart_titration_after_ms: int = 24 * MS_PER_H
    reservoir_capacity_nl: int = 20_000_000

    def __post_init__(self) -> None:
        for name in ("poll_interval_ms", "checkpoint_interval_ms", "minimum_rate_nl_per_h", "unconfirmed_alarm_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(name, value, "an integer > 0")
        for name in ("drift_tolerance_ppm", "drift_floor_nl", "low_reservoir_nl", "low_reservoir_days",
                     "empty_reservoir_nl", "dead_volume_nl", "restart_titration_after_ms", "reservoir_capacity_nl"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(name, value, "an integer >= 0")
        if self.empty_reservoir_nl >= self.low_reservoir_nl and self.low_reservoir_nl:
            raise ConfigError("empty_reservoir_nl", self.empty_reservoir_nl, f"< low_reservoir_nl ({self.low_reservoir_nl})")


@dataclass
class BolusRun:
    """A bolus in progress: an extra rate on top of basal until ``end_ms``."""

    bolus_id: str
    kind: str
    dose_ng: int
    volume_nl: int
    extra_rate_nl_per_h: int
    start_ms: int
    end_ms: int
    attributed_nl: int = 0
    committed_pg: int = 0
    basal_after_nl_per_h: int | None = None


@dataclass(frozen=True)
class PollRecord:
    """What one poll established (passed to observers: the scenario runner, the report).

    :ivar now_ms: controller time of the poll, ms.
    :ivar interval_ms: time since the previous poll, ms.
    :ivar rate_nl_per_h: rate the pump holds (committed), nL/h; 0 when stopped.
    :ivar delivered_nl: counter delta since the previous poll, nL.
    :ivar delivered_pg: drug that reached the catheter tip over the interval, pg.
    :ivar dose_24h_ng: rolling 24 h total from the kernel ledger, ng.
    :ivar cap_ng_per_day: daily cap in force, ng/day.
    :ivar reservoir_nl: predicted reservoir volume, nL.
    :ivar status_known: whether the pump answered.
    :ivar expected_nl: volume the committed programme commanded over the interval, nL.
    :ivar mode: the loop's mode after the poll.
    """

    now_ms: int
    interval_ms: int
    rate_nl_per_h: int
    delivered_nl: int
    delivered_pg: int
    dose_24h_ng: int
    cap_ng_per_day: int
    reservoir_nl: int
    status_known: bool
    expected_nl: int = 0
    mode: str = ""


@dataclass
class CatheterQueue:
    """The dead volume (pump tubing and catheter) as a first-in, first-out queue of solutions.

    What the pump pushes now reaches the catheter tip only after ``capacity_nl`` more has moved,
    so after a refill the old drug is delivered first, and right after implant an unprimed
    catheter delivers saline (concentration 0).

    Segments are (volume nL, concentration µg/mL), oldest (nearest the tip) first.
    """

    segments: list[list[int]] = field(default_factory=list)

    def fill(self, capacity_nl: int, concentration_ug_per_ml: int) -> None:
        """Fill the whole catheter with one solution (drug, or saline as concentration 0)."""
        self.segments = [[capacity_nl, concentration_ug_per_ml]] if capacity_nl else []

    def push(self, volume_nl: int, concentration_ug_per_ml: int) -> int:
        """Push ``volume_nl`` in at the pump end; return the drug (pg) that leaves at the tip."""
        capacity = sum(s[0] for s in self.segments)
        if capacity == 0:
            return units.mass_pg_for_volume(volume_nl, concentration_ug_per_ml)
        out_pg = 0
        remaining = volume_nl
        while remaining and self.segments:
            head = self.segments[0]
            take = min(head[0], remaining)
            out_pg += take * head[1]
            head[0] -= take
            remaining -= take
            if head[0] == 0:
                self.segments.pop(0)
        out_pg += remaining * concentration_ug_per_ml  # pushed more than the whole catheter
        pushed = min(volume_nl, capacity)
        if self.segments and self.segments[-1][1] == concentration_ug_per_ml:
            self.segments[-1][0] += pushed
        else:
            self.segments.append([pushed, concentration_ug_per_ml])
        return out_pg


class ControlLoop:
    """The dosing firmware's main loop over one pump.

    :param pump: the pump driver (the loop must be its only user).
    :param clock: the injected clock.
    :param gate: the kernel gate (authorise / apply / ledger).
    :param alarms: the alarm manager.
    :param store: the resume-point store.
    :param config: loop parameters.
    """

    def __init__(
        self,
        pump: PumpDriver,
        clock: Clock,
        gate: Gate,
        alarms: AlarmManager,
        store: CheckpointStore,
        config: LoopConfig | None = None,
    ) -> None:
        self.pump = pump
        self.clock = clock
        self.gate = gate
        self.alarms = alarms
        self.store = store
        self.config = config or LoopConfig()
        self.programmer = RateProgrammer(pump)
        self.mode = Mode.IDLE
        self.concentration_ug_per_ml = 0
        self.basal_rate_nl_per_h = 0  # the committed programme's basal rate now
        self.programme: Any = None  # a flex programme in effect (rate changes at its boundaries), or None
        self.committed_rate_nl_per_h: int | None = 0  # what the pump holds, verified (None: unknown)
        self.bolus: BolusRun | None = None
        self.fill_nl = 0  # reservoir volume at the last fill
        self.fill_utc: datetime | None = None  # when it was filled
        self.dispensed_since_fill_nl = 0
        self.session_open: str | None = None  # "refill" or "programming" while one is open
        self._time_offset_ms = 0
        self._last_counter_nl: int | None = None
        self._interval_expected_nl = 0
        self._interval_delta_nl = 0
        self._interval_tip_pg = 0
        self._accrual_ms = 0
        self._expected_num: dict[str, int] = {}  # kind -> nL*ms/h commanded since the last poll
        self._drift_expected_nl = 0
        self._drift_counted_nl = 0
        self._last_confirmed_ms = 0
        self._last_poll_ms = 0
        self._next_poll_ms = 0
        self._last_checkpoint_ms = 0
        self._interrupted_since_ms: int | None = None
        self._catheter = CatheterQueue()
        self._scheduled: list[tuple[int, int, Callable[[], None], str]] = []
        self._boundary_from_ms = 0
        self._seq = itertools.count()
        #: Called with each :class:`PollRecord` (runner, report).
        self.observers: list[Callable[[PollRecord], None]] = []
        #: Called with (event, payload) for every therapy event (runner, report, journal).
        self.event_sinks: list[Callable[[str, dict[str, Any]], None]] = []
        #: Total drug that reached the catheter tip, by kind, pg.
        self.delivered_pg_by_kind: dict[str, int] = {}
        #: Invariant breaches observed by the loop itself (zero flow without authorisation...).
        self.breaches: list[str] = []
        self.discontinue_authorised = False
        #: Workflow state saved with every checkpoint (owned by :class:`controller.therapy.Therapy`).
        self.therapy_state: dict[str, Any] = {}
        #: Total counter volume reconciled since start, nL (compared with the pump's own counter).
        self.total_counted_nl = 0
        #: Clear the pump counter when it passes this, nL, to keep its display resolution fine.
        self.counter_clear_above_nl = 1_000_000
        #: The audit journal (:class:`controller.journal.Journal`), if any: every therapy-changing command
        #: (and each bolus) is recorded there as pending before it is sent and resolved after; ledger
        #: snapshots at checkpoints.
        self.journal: Any = None
        self._last_journal_snapshot_ms = -MS_PER_DAY
        self._uncertain_rate_commands: list[tuple[str, int]] = []  # (command ID, rate nL/h) awaiting a verified rate
        self._uncertain_stop_commands: list[str] = []  # stop command IDs awaiting a status read

    # -- time -------------------------------------------------------------------------------------

    @property
    def last_poll_ms(self) -> int:
        """Controller time of the last poll (the ledger is reconciled up to here), ms."""
        return self._last_poll_ms

    def now_ms(self) -> int:
        """Controller time, ms: monotonic time plus the offset that carries it across restarts."""
        return self.clock.monotonic_ms() + self._time_offset_ms

    def _sleep_until(self, t_ms: int) -> None:
        delta = t_ms - self.now_ms()
        if delta > 0:
            self.clock.sleep(delta / 1000)
            # A virtual clock lands exactly; a real one may wake a little early.
            while self.now_ms() < t_ms:
                self.clock.sleep((t_ms - self.now_ms()) / 1000)

    def _emit(self, event: str, **payload: Any) -> None:
        payload.setdefault("now_ms", self.now_ms())
        for sink in self.event_sinks:
            sink(event, payload)

    # -- scheduling -------------------------------------------------------------------------------

    def schedule(self, at_ms: int, action: Callable[[], None], name: str) -> None:
        """Run ``action`` at controller time ``at_ms`` (a programme boundary, a taper step)."""
        self._scheduled.append((at_ms, next(self._seq), action, name))
        self._scheduled.sort(key=lambda item: (item[0], item[1]))

    def cancel_scheduled(self, name: str) -> int:
        """Cancel scheduled actions called ``name``; returns how many were cancelled."""
        before = len(self._scheduled)
        self._scheduled = [s for s in self._scheduled if s[3] != name]
        return before - len(self._scheduled)

    def scheduled_names(self) -> list[str]:
        """Names of the pending scheduled actions, in order."""
        return [s[3] for s in self._scheduled]

    def next_wake_ms(self) -> int:
        """The next time the loop has something to do."""
        wake = self._next_poll_ms
        if self.bolus is not None:
            wake = min(wake, self.bolus.end_ms)
        if self._scheduled:
            wake = min(wake, self._scheduled[0][0])
        boundary = self._next_boundary()
        if boundary is not None:
            wake = min(wake, boundary)
        return wake

    def _next_boundary(self) -> int | None:
        if self.programme is None or self.mode is not Mode.RUNNING:
            return None
        return self.programme.next_boundary(self._boundary_from_ms)

    def run_until(self, t_ms: int) -> None:
        """Handle every event due up to controller time ``t_ms``, sleeping in between; end at ``t_ms``."""
        while True:
            wake = self.next_wake_ms()
            if wake > t_ms:
                break
            self._sleep_until(wake)
            try:
                self._handle_due()
            except HalError as exc:
                # The last line of defence: no HAL error stops the loop; it becomes its fault.
                self.programmer.hal_errors.append((exc, False))
                self._drain_hal_errors()
        self._sleep_until(t_ms)

    def _handle_due(self) -> None:
        now = self.now_ms()
        if self.bolus is not None and self.bolus.end_ms <= now:
            self._end_bolus("complete")
        boundary = self._next_boundary()
        if boundary is not None and boundary <= now:
            self._flex_step(now)
        while self._scheduled and self._scheduled[0][0] <= now:
            _, _, action, _ = self._scheduled.pop(0)
            action()
        if self._next_poll_ms <= now:
            self.poll()

    # -- accrual and reconciliation -------------------------------------------------------------------

    def _flex_step(self, now: int) -> None:
        """A programme boundary (flex step, periodic bolus start or end): move to the programme's rate there
        (the whole programme was authorised)."""
        self._boundary_from_ms = now
        rate = self.programme.rate_at(now)
        if self.programme.periodic_boluses:
            self._accrue()  # what ran before the boundary keeps its kind split
        if rate == self.basal_rate_nl_per_h:
            return
        self._accrue()
        self.basal_rate_nl_per_h = rate
        extra = self.bolus.extra_rate_nl_per_h if self.bolus is not None else 0
        outcome = self._send_rate(rate + extra, None, cause="flex_step", essential=True)
        self._after_program(outcome, "flex step")

    def set_programme(self, decision: GateDecision) -> ProgramOutcome:
        """Put an authorised flex programme in effect: its current step now, the others at their boundaries."""
        if self.mode is not Mode.RUNNING:
            raise StateError(f"no programme change in mode {self.mode.value}")
        now = self.now_ms()
        rate = decision.programme.rate_at(now)
        extra = self.bolus.extra_rate_nl_per_h if self.bolus is not None else 0
        outcome = self._program(rate + extra, decision, cause="programme")
        if outcome.committed:
            self.basal_rate_nl_per_h = rate
            self.programme = decision.programme if _keeps_programme(decision.programme) else None
            self._boundary_from_ms = now
        self.checkpoint()
        return outcome

    def _delivering(self) -> bool:
        return self.mode in (Mode.RUNNING, Mode.MINIMUM_RATE) and bool(self.committed_rate_nl_per_h)

    def _accrue(self) -> None:
        """Add what was commanded since the last accrual to the expected volume by kind."""
        now = self.now_ms()
        dt = now - self._accrual_ms
        self._accrual_ms = now
        if dt <= 0 or not self._delivering():
            return
        rate = self.committed_rate_nl_per_h or 0
        if self.bolus is not None:
            extra = min(self.bolus.extra_rate_nl_per_h, rate)
            self._expected_num[self.bolus.kind] = self._expected_num.get(self.bolus.kind, 0) + extra * dt
            rate -= extra
        if self.mode is Mode.RUNNING and self.programme is not None:
            # Boundaries always accrue, so the whole interval lies in the segment that began it.
            periodic = min(periodic_extra_nl_per_h(self.programme, now - dt), rate)
            if periodic > 0:
                self._expected_num[PERIODIC] = self._expected_num.get(PERIODIC, 0) + periodic * dt
                rate -= periodic
        flex = self.programme is not None and len(self.programme.steps) > 1
        kind = MINIMUM_RATE if self.mode is Mode.MINIMUM_RATE else (FLEX if flex else BASAL)
        self._expected_num[kind] = self._expected_num.get(kind, 0) + rate * dt

    def _attribute(self, delta_nl: int) -> dict[str, int]:
        """Split a counter delta across kinds in proportion to what was commanded."""
        total = sum(self._expected_num.values())
        if delta_nl <= 0:
            return {}
        if total == 0:
            return {BASAL: delta_nl}
        shares = {k: delta_nl * v // total for k, v in self._expected_num.items() if v}
        remainder = delta_nl - sum(shares.values())
        if remainder:
            biggest = max(shares, key=lambda k: (self._expected_num[k], k))
            shares[biggest] += remainder
        return shares

    def _record_spread(self, kind: str, mass_pg: int, from_ms: int, to_ms: int) -> None:
        """Record continuous delivery over ``[from_ms, to_ms]`` hour by hour (only the part inside 24 h)."""
        span = max(1, to_ms - from_ms)
        start = max(from_ms, to_ms - MS_PER_DAY + MS_PER_MIN)
        t = start
        while t < to_ms:
            end = min(to_ms, t + MS_PER_H)
            part = mass_pg * (end - from_ms) // span - mass_pg * (t - from_ms) // span
            if part:
                self.gate.record_delivery(kind, part, t, end)
            t = end

    def _reconcile(self, counter_nl: int, *, spread_from_ms: int | None = None) -> tuple[int, int]:
        """Record the counter delta since the last reading into the ledger. Returns (delta nL, tip pg).

        :param spread_from_ms: after a restart, continuous (non-bolus) delivery since the checkpoint is
            recorded hour by hour from this time instead of all at once now, so the 24 h window neither
            double counts it nor misses it.
        """
        self._accrue()
        self._interval_expected_nl += sum(self._expected_num.values()) // MS_PER_H
        if self._last_counter_nl is None or counter_nl < self._last_counter_nl:
            if self._last_counter_nl is not None:
                self._emit("counter_reset", previous_nl=self._last_counter_nl, now_nl=counter_nl)
            base = 0 if self._last_counter_nl is not None else counter_nl
        else:
            base = self._last_counter_nl
        delta = counter_nl - base
        self._last_counter_nl = counter_nl
        expected_nl = sum(self._expected_num.values()) // MS_PER_H
        shares = self._attribute(delta)
        now = self.now_ms()
        tip_pg_total = 0
        for kind, volume_nl in sorted(shares.items()):
            if volume_nl <= 0 or not self.concentration_ug_per_ml:
                continue
            tip_pg = self._catheter.push(volume_nl, self.concentration_ug_per_ml)
            reservoir_pg = units.mass_pg_for_volume(volume_nl, self.concentration_ug_per_ml)
            # What reaches the tip is what the patient gets (old drug first after a refill). A priming
            # bolus mixes and may reach the CSF before it ends, so it counts its full reservoir-side mass.
            counted_pg = max(tip_pg, reservoir_pg) if kind == "priming" else tip_pg
            if spread_from_ms is not None and kind not in BOLUS_KINDS:
                self._record_spread(kind, counted_pg, spread_from_ms, now)
            else:
                self.gate.record_delivery(kind, counted_pg, self._last_poll_ms, now)
            if kind in BOLUS_KINDS:
                released = self.gate.release_bolus(kind, counted_pg)
                if self.bolus is not None and kind == self.bolus.kind:
                    self.bolus.committed_pg = max(0, self.bolus.committed_pg - released)
            self.delivered_pg_by_kind[kind] = self.delivered_pg_by_kind.get(kind, 0) + tip_pg
            tip_pg_total += tip_pg
            if self.bolus is not None and kind == self.bolus.kind:
                self.bolus.attributed_nl += volume_nl
        self.dispensed_since_fill_nl += delta
        self.total_counted_nl += delta
        self._drift_expected_nl += expected_nl
        self._drift_counted_nl += delta
        self._expected_num = {}
        self._interval_delta_nl += delta
        self._interval_tip_pg += tip_pg_total
        return delta, tip_pg_total

    # -- the poll ---------------------------------------------------------------------------------------

    def poll(self) -> PollRecord:
        """One status poll: heartbeat, status, counter, reconciliation, reservoir and alarms."""
        now = self.now_ms()
        interval = now - self._last_poll_ms
        self._next_poll_ms = now + self._poll_step_ms()
        status = None
        try:
            status = self.pump.heartbeat()
        except HalError as exc:
            self.programmer.hal_errors.append((exc, False))
            status = self.programmer.read_status()
        dispensed = self.programmer.read_dispensed() if status is not None else None
        delta_nl, tip_pg = 0, 0
        if status is None or dispensed is None:
            self._comms_lost(now)
        else:
            self._comms_ok(now)
            if self._uncertain_stop_commands:
                self._resolve_uncertain_stops(status)
            delta_nl, tip_pg = self._reconcile(dispensed.infused_nl)
            if self.mode in (Mode.RUNNING, Mode.MINIMUM_RATE, Mode.STOPPED_FAULT):
                # Idle (no verified therapy state) and discontinued: read only, command nothing (SAFE-04).
                if dispensed.infused_nl > self.counter_clear_above_nl:
                    self._clear_counter()
                self._check_status(status)
                if status.alarm is None and status.state is PumpState.INFUSING:
                    self._check_drift()
                else:
                    self._reset_drift()  # a stop or an alarm explains the shortfall; its own alarm is raised
                self._check_bolus_cap()
                self._check_reservoir()
        self._last_poll_ms = now
        record = PollRecord(
            now_ms=now,
            interval_ms=interval,
            rate_nl_per_h=(self.committed_rate_nl_per_h or 0) if self._delivering() else 0,
            delivered_nl=self._interval_delta_nl,
            delivered_pg=self._interval_tip_pg,
            dose_24h_ng=self.gate.total_24h_ng(now),
            cap_ng_per_day=self.gate.cap_ng_per_day(),
            reservoir_nl=self.reservoir_nl(),
            status_known=status is not None,
            expected_nl=self._interval_expected_nl,
            mode=self.mode.value,
        )
        self._interval_expected_nl = 0
        self._interval_delta_nl = 0
        self._interval_tip_pg = 0
        self._drain_hal_errors()
        if now - self._last_checkpoint_ms >= self.config.checkpoint_interval_ms:
            self.checkpoint()
        for observer in self.observers:
            observer(record)
        return record

    def _poll_step_ms(self) -> int:
        """Time to the next poll: the configured interval, shorter while a bolus runs (BOL-04 cap check)."""
        if self.bolus is not None:
            return min(self.config.poll_interval_ms, BOLUS_POLL_MS)
        return self.config.poll_interval_ms

    def _clear_counter(self) -> None:
        """Zero the pump's counter (its display resolution coarsens as it grows) and re-read the baseline."""
        try:
            self.pump.clear_dispensed()
        except HalError as exc:
            self.programmer.hal_errors.append((exc, False))
            self._drain_hal_errors()
            return
        dispensed = self.programmer.read_dispensed()
        # Just cleared: the counter starts from zero even if the confirming read failed.
        self._last_counter_nl = dispensed.infused_nl if dispensed is not None else 0
        self._emit("counter_cleared", baseline_nl=self._last_counter_nl)
        self.checkpoint()  # the new baseline must survive a restart, or delivery since would be lost

    def _comms_lost(self, now: int) -> None:
        if not self.alarms.is_active(AlarmCode.COMMS_DEGRADED):
            self.alarms.raise_alarm(AlarmCode.COMMS_DEGRADED, detail="pump did not answer a status poll")
        if self.mode is not Mode.IDLE and now - self._last_confirmed_ms >= self.config.unconfirmed_alarm_ms:
            self._fault(FaultCode.COMMS_TIMEOUT, f"delivery unconfirmed for {(now - self._last_confirmed_ms) // MS_PER_MIN} min")

    def _comms_ok(self, now: int) -> None:
        self._last_confirmed_ms = now
        if self.alarms.is_active(AlarmCode.COMMS_DEGRADED):
            self.alarms.clear(AlarmCode.COMMS_DEGRADED, detail="pump answers again")
        if self.alarms.is_active(AlarmCode.THERAPY_STATUS_UNKNOWN):
            self.alarms.clear(AlarmCode.THERAPY_STATUS_UNKNOWN, detail="pump answers again")
        if self.committed_rate_nl_per_h is None and self.mode in (Mode.RUNNING, Mode.MINIMUM_RATE):
            # The last command's outcome was unknown: re-establish the verified rate now that we can read.
            self._reprogram_current("rate unknown after a lost reply")

    def _check_status(self, status: Any) -> None:
        alarms = self.programmer.drain_driver_alarms()
        if status.alarm is not None and status.alarm not in alarms:
            alarms.append(status.alarm)
        if alarms:
            for alarm in dict.fromkeys(alarms):
                self._pump_alarm(alarm)
            return
        if self.mode in (Mode.RUNNING, Mode.MINIMUM_RATE) and status.state is not PumpState.INFUSING:
            self._fault(FaultCode.UNEXPLAINED_STOP, f"pump reports {status.state.value} while therapy runs")
        elif self.mode in (Mode.RUNNING, Mode.MINIMUM_RATE):
            if self.mode is Mode.RUNNING:
                # Minimum rate keeps the interruption running: tolerance fades at a sub-therapeutic rate.
                self._interrupted_since_ms = None
            for code in INTERRUPTION_ALARMS:
                if self.alarms.is_active(code):
                    self.alarms.clear(code, detail="delivery confirmed")

    def _check_drift(self) -> None:
        expected, counted = self._drift_expected_nl, self._drift_counted_nl
        diff = counted - expected
        limit = max(self.config.drift_floor_nl, expected * self.config.drift_tolerance_ppm // 1_000_000)
        if diff > limit:
            self._fault(FaultCode.DISPENSED_DRIFT_OVER, f"counted {counted} nL, commanded {expected} nL")
            self._reset_drift()
        elif -diff > limit:
            self._fault(FaultCode.DISPENSED_DRIFT_UNDER, f"counted {counted} nL, commanded {expected} nL")
            self._reset_drift()
        elif expected > 50 * self.config.drift_floor_nl:
            # Forget old history so the check stays sensitive to recent drift.
            self._drift_expected_nl //= 2
            self._drift_counted_nl //= 2

    def _reset_drift(self) -> None:
        self._drift_expected_nl = 0
        self._drift_counted_nl = 0

    def _check_bolus_cap(self) -> None:
        """BOL-04: stop a running bolus before the rolling 24 h total would cross the cap."""
        run = self.bolus
        if run is None:
            return
        now = self.now_ms()
        # The ledger total holds what was delivered plus the bolus's not-yet-delivered commitment.
        if self.gate.total_24h_ng(now) > self.gate.cap_ng_per_day():
            self._end_bolus("stopped at the 24 h cap")

    # -- reservoir ----------------------------------------------------------------------------------------

    def reservoir_nl(self) -> int:
        """Predicted reservoir volume: last fill minus everything dispensed since, nL (never below 0)."""
        return max(0, self.fill_nl - self.dispensed_since_fill_nl)

    def daily_volume_nl(self) -> int:
        """Volume per day at the committed basal rate, nL/day."""
        return self.basal_rate_nl_per_h * 24

    def forecast(self) -> reservoir_math.ReservoirForecast | None:
        """Low-alarm, empty and refill dates from the predicted reservoir (RES-01, RES-02), or None.

        Uses the programmed daily volume (the minimum rate in minimum-rate mode; a flex or
        periodic-bolus programme's whole-day total, never the rate of the moment) plus, as the
        worst case, every patient bolus the prescription allows each day; None
        before implant, after a discontinue, or while nothing is programmed.
        """
        if self.mode is Mode.MINIMUM_RATE:
            programmed_nl_per_day = self.config.minimum_rate_nl_per_h * 24
        elif self.programme is not None:
            programmed_nl_per_day = self.programme.daily_total_nl()
        else:
            programmed_nl_per_day = self.basal_rate_nl_per_h * 24
        if not self.fill_nl or programmed_nl_per_day <= 0 or self.fill_utc is None:
            return None
        c = self.config
        settings = reservoir_math.ReservoirSettings(max(c.reservoir_capacity_nl, self.fill_nl, c.low_reservoir_nl + 1),
                                                    c.low_reservoir_nl, c.low_reservoir_days, c.empty_reservoir_nl)
        state = reservoir_math.ReservoirState(self.fill_nl, self.dispensed_since_fill_nl, self.fill_utc)
        worst_case_nl_per_day = programmed_nl_per_day + int(self.therapy_state.get("patient_bolus_nl_per_day", 0))
        try:
            return reservoir_math.forecast(state, worst_case_nl_per_day, settings, self.clock.utc_now())
        except ConfigError:
            return None  # a rate so low the forecast runs past its horizon: nothing is due

    def _check_reservoir(self) -> None:
        if self.mode in (Mode.IDLE, Mode.DISCONTINUED) or not self.fill_nl:
            return
        volume = self.reservoir_nl()
        fc = self.forecast()
        low = volume <= self.config.low_reservoir_nl or (fc is not None and fc.low)
        if low and not self.alarms.is_active(AlarmCode.RESERVOIR_LOW):
            when = "" if fc is None else (f"; {float(fc.days_to_empty):.1f} days to empty, refill due "
                                          f"{fc.refill_due_utc:%Y-%m-%d}")
            self._fault(FaultCode.RESERVOIR_LOW, f"{volume} nL left ({', '.join(fc.low_triggers) if fc else 'volume'}){when}")
        elif fc is not None and fc.refill_due and not low and not self.alarms.is_active(AlarmCode.REFILL_DUE):
            self.alarms.raise_alarm(AlarmCode.REFILL_DUE, detail=f"refill due {fc.refill_due_utc:%Y-%m-%d}")
        if volume <= 0 and self.mode is not Mode.STOPPED_FAULT:
            self._fault(FaultCode.RESERVOIR_CONFIRMED_EMPTY, "predicted volume exhausted")
        elif volume <= self.config.empty_reservoir_nl and self.mode is Mode.RUNNING:
            self._fault(FaultCode.RESERVOIR_EMPTY_THRESHOLD, f"{volume} nL left")

    # -- faults ---------------------------------------------------------------------------------------------

    def _pump_alarm(self, alarm: PumpAlarm) -> None:
        fault = fault_for_pump_alarm(alarm)
        self._fault(fault, f"pump latched {alarm.value}")

    def _fault(self, fault: FaultCode, detail: str) -> None:
        """Apply the single documented reaction to ``fault`` and raise its alarm."""
        row = reaction_for(fault)
        held = next((a for a in self.alarms.active() if a.code is row.alarm), None)
        already = held is not None
        if held is None or not held.condition_active:
            self.alarms.raise_alarm(row.alarm, detail=detail)
        if not already:
            self._emit("fault", fault=fault.value, reaction=row.reaction.value, alarm=row.alarm.value, detail=detail)
        if fault in (FaultCode.MOTOR_STALL, FaultCode.OCCLUSION, FaultCode.UNEXPLAINED_STOP, FaultCode.PUMP_RESET,
                     FaultCode.SAFE_MODE_WATCHDOG) and self._interrupted_since_ms is None:
            self._interrupted_since_ms = self._last_confirmed_ms or self.now_ms()
            if not self.alarms.is_active(AlarmCode.THERAPY_INTERRUPTED) and row.alarm is not AlarmCode.THERAPY_INTERRUPTED:
                self.alarms.raise_alarm(AlarmCode.THERAPY_INTERRUPTED, detail=detail)
        if row.reaction is Reaction.STOP:
            if self.mode is not Mode.STOPPED_FAULT:
                self._stop_for_fault(fault, detail)
        elif row.reaction is Reaction.MIN_RATE:
            if fault is FaultCode.PUMP_RESET:
                self._acknowledge_pump()
            self.enter_minimum_rate(detail)
        elif fault in (FaultCode.UNEXPLAINED_STOP, FaultCode.SAFE_MODE_WATCHDOG):
            # CONTINUE: reconcile (already done by the poll), then resume the last verified programme.
            if fault is FaultCode.SAFE_MODE_WATCHDOG:
                self._acknowledge_pump()
            self._reprogram_current(detail)

    def _acknowledge_pump(self) -> None:
        try:
            self.pump.acknowledge_alarm()
        except HalError as exc:
            self.programmer.hal_errors.append((exc, False))
            self._drain_hal_errors()

    def _drain_hal_errors(self) -> None:
        """Map the HAL errors caught since last asked to their faults (fail operational, never crash).

        Link errors (lost or garbled replies, a port that will not open) are already handled:
        an unreadable pump by the comms-degraded / comms-timeout logic of the poll, an uncertain
        command through its :class:`~controller.delivery.ProgramOutcome`. Every other HAL error
        takes the reaction of :func:`controller.delivery.fault_for_hal_error` with its alarm.
        """
        errors, self.programmer.hal_errors = self.programmer.hal_errors, []
        seen: set[FaultCode] = set()
        for error, delivery_command in errors:
            if is_link_error(error):
                continue
            fault = fault_for_hal_error(error, delivery_command=delivery_command)
            if fault not in seen:
                seen.add(fault)
                self._fault(fault, f"{type(error).__name__}: {error}")

    def _stop_for_fault(self, fault: FaultCode, detail: str) -> None:
        if self.bolus is not None:
            self._end_bolus(f"ended by {fault.value}")
        self._accrue()
        stopped = self._send_stop(f"fault_{fault.value}")
        self.mode = Mode.STOPPED_FAULT
        self.committed_rate_nl_per_h = 0
        self._emit("stopped", fault=fault.value, detail=detail, confirmed=stopped)
        self.checkpoint()

    def enter_minimum_rate(self, reason: str) -> bool:
        """Switch to the clinician-set minimum rate (SAFE-02), through the kernel. Returns success."""
        if self.mode is Mode.MINIMUM_RATE:
            return True
        decision = self.gate.authorize_minimum_rate(self.config.minimum_rate_nl_per_h, self.now_ms())
        if not decision.allowed:
            self._emit("denied", action="minimum_rate", reasons=list(decision.reasons))
            return False
        if self.bolus is not None:
            self._end_bolus("ended by minimum-rate mode")
        outcome = self._program(decision.rate_nl_per_h, decision, cause="minimum_rate", essential=True)
        if outcome.committed:
            self.mode = Mode.MINIMUM_RATE
            self.programme = None
            if self._interrupted_since_ms is None:
                self._interrupted_since_ms = self.now_ms()
            self.alarms.raise_alarm(AlarmCode.MINIMUM_RATE_MODE, detail=reason)
            self._emit("minimum_rate", reason=reason, rate_nl_per_h=decision.rate_nl_per_h)
            self.checkpoint()
            return True
        return False

    def _reprogram_current(self, reason: str) -> None:
        """Put back the rate the therapy should be running (basal, plus a running bolus)."""
        if self.mode is Mode.MINIMUM_RATE:
            target = self.config.minimum_rate_nl_per_h
        elif self.mode is Mode.RUNNING:
            target = self.basal_rate_nl_per_h + (self.bolus.extra_rate_nl_per_h if self.bolus else 0)
        else:
            return
        self._accrue()
        outcome = self._send_rate(target, None, cause=f"restore: {reason}", essential=True)
        self._after_program(outcome, reason)

    # -- programming --------------------------------------------------------------------------------------------

    def _program(self, rate_nl_per_h: int, decision: GateDecision | None, *, cause: str = "programme_change",
                 essential: bool = False) -> ProgramOutcome:
        """Accrue, program atomically, then apply the kernel decision only if committed.

        :param cause: why (journalled with the command).
        :param essential: a fault reaction that must be sent even without a durable journal record
            (see :meth:`_send_rate`); requested changes are not.
        """
        self._accrue()
        previous = self.committed_rate_nl_per_h if self.committed_rate_nl_per_h else None
        outcome = self._send_rate(rate_nl_per_h, previous, cause=cause, essential=essential)
        if outcome.result is ProgramResult.KEPT_OLD and outcome.detail.startswith(NOT_JOURNALLED):
            self._emit("program", result=outcome.result.value, rate_nl_per_h=outcome.rate_nl_per_h,
                       uncertain=False, detail=f"{cause}: {outcome.detail}")
            return outcome  # nothing was sent; JOURNAL_WRITE_FAILURE is already alarmed
        self._after_program(outcome, "programme change")
        if outcome.committed and decision is not None:
            self.gate.apply(decision, self.now_ms())
        return outcome

    def _after_program(self, outcome: ProgramOutcome, reason: str) -> None:
        self._drain_hal_errors()
        self._emit("program", result=outcome.result.value, rate_nl_per_h=outcome.rate_nl_per_h,
                   uncertain=outcome.uncertain, detail=f"{reason}: {outcome.detail}")
        if outcome.uncertain:
            self.alarms.raise_alarm(AlarmCode.THERAPY_STATUS_UNKNOWN, detail=outcome.detail)
            self._emit("fault", fault=FaultCode.UNCERTAIN_DELIVERY.value, reaction=Reaction.CONTINUE.value,
                       alarm=AlarmCode.THERAPY_STATUS_UNKNOWN.value, detail=outcome.detail)
        if outcome.result is ProgramResult.UNKNOWN:
            self.committed_rate_nl_per_h = None
        elif outcome.rate_nl_per_h is not None:
            self.committed_rate_nl_per_h = outcome.rate_nl_per_h
            if outcome.result is ProgramResult.COMMITTED and self.alarms.is_active(AlarmCode.THERAPY_STATUS_UNKNOWN) \
                    and not outcome.uncertain:
                self.alarms.clear(AlarmCode.THERAPY_STATUS_UNKNOWN, detail="rate verified")
        if outcome.result is ProgramResult.KEPT_OLD:
            self.alarms.raise_alarm(AlarmCode.PUMP_PROGRAM_REJECTED, detail=outcome.detail)
        if outcome.result is ProgramResult.REJECTED_BY_PUMP and outcome.status is not None \
                and outcome.status.alarm is not None:
            for alarm in dict.fromkeys([*self.programmer.drain_driver_alarms(), outcome.status.alarm]):
                self._pump_alarm(alarm)

    def start_therapy(self, concentration_ug_per_ml: int, fill_nl: int, decision: GateDecision,
                      *, catheter_primed: bool) -> ProgramOutcome:
        """First start after implant: reservoir filled, basal rate (or flex programme) authorised by ``decision``.

        :param concentration_ug_per_ml: drug in the reservoir.
        :param fill_nl: volume filled, nL.
        :param decision: the kernel's authorisation of the starting programme.
        :param catheter_primed: whether the catheter already holds drug (otherwise it holds saline).
        """
        if self.mode is not Mode.IDLE and self.mode is not Mode.DISCONTINUED:
            raise StateError(f"therapy already started (mode {self.mode.value})")
        stale = self.programmer.drain_driver_alarms()
        if stale:
            # Alarms from before therapy (the power-up reset at connect): already acknowledged; noted only.
            self._emit("alarms_before_therapy", alarms=[a.value for a in stale])
        self.concentration_ug_per_ml = concentration_ug_per_ml
        self.fill_nl = fill_nl
        self.fill_utc = self.clock.utc_now()
        self.dispensed_since_fill_nl = 0
        self._catheter.fill(self.config.dead_volume_nl, concentration_ug_per_ml if catheter_primed else 0)
        dispensed = self.programmer.read_dispensed()
        self._last_counter_nl = dispensed.infused_nl if dispensed is not None else None
        now = self.now_ms()
        self._accrual_ms = now
        self._last_poll_ms = now
        self._last_confirmed_ms = now
        self._next_poll_ms = now + self.config.poll_interval_ms
        outcome = self._program(decision.rate_nl_per_h, decision, cause="start_therapy")
        if outcome.committed:
            self.mode = Mode.RUNNING
            self.basal_rate_nl_per_h = decision.rate_nl_per_h
            self.discontinue_authorised = False
            # A starting flex programme (authorised as a whole) changes rate at its boundaries from now.
            programme = decision.programme
            self.programme = programme if _keeps_programme(programme) else None
            self._boundary_from_ms = now
        self.checkpoint()
        return outcome

    def change_basal(self, decision: GateDecision) -> ProgramOutcome:
        """Program a new authorised basal rate (titration, taper, programme step, resume)."""
        if self.mode is Mode.DISCONTINUED or self.mode is Mode.IDLE:
            raise StateError(f"no therapy running (mode {self.mode.value})")
        extra = self.bolus.extra_rate_nl_per_h if self.bolus is not None else 0
        outcome = self._program(decision.rate_nl_per_h + extra, decision, cause="basal_change")
        if outcome.committed:
            self.basal_rate_nl_per_h = decision.rate_nl_per_h
            self.programme = None
            if self.mode is Mode.MINIMUM_RATE:
                self.alarms.clear(AlarmCode.MINIMUM_RATE_MODE, detail="clinician programme resumed")
            self.mode = Mode.RUNNING
        self.checkpoint()
        return outcome

    def start_bolus(self, kind: str, decision: GateDecision, duration_ms: int) -> BolusRecord | None:
        """Deliver an authorised bolus as an extra rate for ``duration_ms``.

        The bolus record is written *before* the command is sent; the bolus is
        never re-sent: after a lost reply the state is reconciled and the record
        closed from the counter.

        :return: the stored record, or None if the pump could not take the bolus rate.
        """
        if kind not in BOLUS_KINDS:
            raise ConfigError("kind", kind, f"one of {BOLUS_KINDS}")
        if self.bolus is not None:
            raise StateError(f"bolus {self.bolus.bolus_id} is still running")
        if self.mode is not Mode.RUNNING:
            raise StateError(f"no bolus in mode {self.mode.value}")
        if duration_ms <= 0:
            raise ConfigError("duration_ms", duration_ms, "> 0")
        volume_nl = decision.volume_nl
        extra = -(-volume_nl * MS_PER_H // duration_ms)  # ceiling: the bolus ends by time, not early
        now = self.now_ms()
        record = BolusRecord(bolus_id=uuid.uuid4().hex, kind=kind, dose_ng=decision.dose_ng,
                             volume_nl=volume_nl, status="pending", requested_ms=now)
        if not self._durably("bolus record", lambda: self.store.add_bolus(record)):
            return None  # no durable record, no bolus (it could not be protected from repetition)
        self._journal_command(record.bolus_id, f"bolus_{kind}", {"volume_nl": volume_nl, "dose_ng": decision.dose_ng,
                                                                 "duration_ms": duration_ms})
        self._accrue()
        end_ms = now + -(-volume_nl * MS_PER_H // extra)
        run = BolusRun(record.bolus_id, kind, decision.dose_ng, volume_nl, extra, now, end_ms,
                       committed_pg=units.mass_pg_for_volume(volume_nl, self.concentration_ug_per_ml))
        self.bolus = run
        outcome = self._program(self.basal_rate_nl_per_h + extra, decision, cause=f"bolus_{kind}")
        self._journal_outcome(record.bolus_id, "applied" if outcome.result is ProgramResult.COMMITTED else
                              "uncertain" if outcome.result is ProgramResult.UNKNOWN else "not_applied",
                              outcome.detail)
        if outcome.result is ProgramResult.COMMITTED:
            self._durably("bolus record", lambda: self.store.mark_running(record.bolus_id, now))
            self._next_poll_ms = min(self._next_poll_ms, now + BOLUS_POLL_MS)
            self._emit("bolus_start", kind=kind, bolus_id=record.bolus_id, dose_ng=decision.dose_ng,
                       volume_nl=volume_nl, end_ms=end_ms)
            return record
        if outcome.result is ProgramResult.UNKNOWN:
            # Uncertain: it may be running. Count it (lockout, commitment) and let the next poll
            # attribute whatever the counter shows; it is never re-sent.
            self.gate.apply(decision, self.now_ms())
            self._emit("bolus_uncertain", kind=kind, bolus_id=record.bolus_id)
            return record
        self.bolus = None
        self._durably("bolus record", lambda: self.store.finish_bolus(record.bolus_id, now, 0,
                                                                      f"not started: {outcome.detail}"))
        self._emit("bolus_failed", kind=kind, bolus_id=record.bolus_id, detail=outcome.detail)
        return None

    def change_concentration(self, decision: GateDecision, concentration_ug_per_ml: int, new_rate_nl_per_h: int,
                             bridge_rate_nl_per_h: int, bridge_duration_ms: int) -> ProgramOutcome:
        """Switch to a new concentration through a bridge: run ``bridge_rate`` for the bridge, then ``new_rate``.

        The reservoir must already hold the new drug (:meth:`set_reservoir`); the catheter still holds
        the old one, and the bridge pushes it at the old-concentration rate for the dose, so the tip
        sees the old dose rate (no 25 % dip going up in concentration, no 400 % spike going down).
        Going up, the bridge is an extra rate above the new basal (a ``bridge`` bolus); going down,
        the basal itself stays at the lower old rate until the bridge ends.
        """
        if self.mode is not Mode.RUNNING:
            raise StateError(f"no concentration change in mode {self.mode.value}")
        if self.bolus is not None:
            self._end_bolus("ended by a concentration change")
        now = self.now_ms()
        self._accrue()
        run = None
        extra = max(0, bridge_rate_nl_per_h - new_rate_nl_per_h)
        basal_during = min(bridge_rate_nl_per_h, new_rate_nl_per_h)
        if bridge_duration_ms > 0:
            volume = units.volume_nl_for_rate(extra, bridge_duration_ms)
            record = BolusRecord(bolus_id=uuid.uuid4().hex, kind="bridge", dose_ng=decision.dose_ng,
                                 volume_nl=volume, status="pending", requested_ms=now)
            if not self._durably("bridge record", lambda: self.store.add_bolus(record)):
                raise StateError("the bridge bolus could not be recorded durably; nothing was changed")
            run = BolusRun(record.bolus_id, "bridge", decision.dose_ng, volume, extra, now,
                           now + bridge_duration_ms, committed_pg=decision.raw.mass_pg if decision.raw else 0,
                           basal_after_nl_per_h=new_rate_nl_per_h)
            self.bolus = run
        outcome = self._program(basal_during + extra, decision, cause="concentration_bridge")
        if outcome.committed:
            self.basal_rate_nl_per_h = basal_during
            self.programme = None
            if run is not None:
                self._durably("bridge record", lambda: self.store.mark_running(run.bolus_id, now))
                self._emit("bolus_start", kind="bridge", bolus_id=run.bolus_id, dose_ng=decision.dose_ng,
                           volume_nl=run.volume_nl, end_ms=run.end_ms)
        elif run is not None and outcome.result is not ProgramResult.UNKNOWN:
            self.bolus = None
            self._durably("bridge record", lambda: self.store.finish_bolus(run.bolus_id, now, 0,
                                                                           f"not started: {outcome.detail}"))
        self.checkpoint()
        return outcome

    def _end_bolus(self, why: str) -> None:
        run = self.bolus
        if run is None:
            return
        now = self.now_ms()
        dispensed = self.programmer.read_dispensed()
        if dispensed is not None:
            self._reconcile(dispensed.infused_nl)
        self.bolus = None
        if run.committed_pg:
            self.gate.release_bolus(run.kind, run.committed_pg)
        if run.basal_after_nl_per_h is not None and self.mode is Mode.RUNNING:
            self.basal_rate_nl_per_h = run.basal_after_nl_per_h  # the bridge is over: the new programme's rate
        if self.mode is Mode.RUNNING:
            outcome = self._send_rate(self.basal_rate_nl_per_h, None, cause=f"bolus_end: {why}", essential=True)
            self._after_program(outcome, f"bolus end ({why})")
        detail = why if why == "complete" else f"{why}; partial: {run.attributed_nl} of {run.volume_nl} nL delivered"
        if self._durably("bolus record", lambda: self.store.finish_bolus(run.bolus_id, now, run.attributed_nl, detail,
                                                                        checkpoint=self._checkpoint_body())):
            self._last_checkpoint_ms = now
        # Nothing counted by a readable counter: the bolus did not run (e.g. ended by a fault at once).
        self._journal_resolve(run.bolus_id, f"delivery reconciled from the pump counter: {detail}",
                              "not_applied" if dispensed is not None and run.attributed_nl == 0 else "applied")
        self._emit("bolus_end", kind=run.kind, bolus_id=run.bolus_id, delivered_nl=run.attributed_nl,
                   volume_nl=run.volume_nl, detail=detail)

    def stop_bolus(self, why: str) -> None:
        """Stop a running bolus now (the partial amount is logged)."""
        self._end_bolus(why)

    def set_reservoir(self, fill_nl: int, concentration_ug_per_ml: int) -> None:
        """Record a refill: the reservoir now holds ``fill_nl`` at ``concentration_ug_per_ml``.

        The catheter still holds the old drug; the dead-volume queue delivers it first.
        """
        if self.mode is not Mode.IDLE:
            self.poll()  # everything delivered so far counts against the old fill
        self.fill_nl = fill_nl
        self.fill_utc = self.clock.utc_now()
        self.dispensed_since_fill_nl = 0
        self.concentration_ug_per_ml = concentration_ug_per_ml
        for code in (AlarmCode.RESERVOIR_LOW, AlarmCode.RESERVOIR_EMPTY, AlarmCode.REFILL_DUE):
            if self.alarms.is_active(code):
                self.alarms.clear(code, detail="reservoir refilled")
        self.checkpoint()

    def discontinue_now(self, decision: GateDecision) -> bool:
        """Stop delivery after an authorised discontinue (the end of a taper, or an emergency)."""
        if not decision.allowed:
            raise StateError("discontinue was not authorised")
        if self.bolus is not None:
            self._end_bolus("ended by discontinue")
        self._accrue()
        self.discontinue_authorised = True
        stopped = self._send_stop("discontinue")
        self.gate.apply(decision, self.now_ms())
        self.mode = Mode.DISCONTINUED
        self.committed_rate_nl_per_h = 0
        self.basal_rate_nl_per_h = 0
        self._emit("discontinued", confirmed=stopped)
        self.checkpoint()
        return stopped

    def resume_after_fault(self, decision: GateDecision) -> ProgramOutcome | None:
        """After a STOP reaction and a clinician's acknowledgement: clear the pump alarm and restart.

        :param decision: the kernel's authorisation of the restart rate (the caller chooses the
            titration dose after a long interruption).
        """
        if self.mode not in (Mode.STOPPED_FAULT, Mode.MINIMUM_RATE):
            return None
        self._acknowledge_pump()
        self.mode = Mode.RUNNING
        outcome = self._program(decision.rate_nl_per_h, decision, cause="resume_after_fault")
        if outcome.committed:
            self.basal_rate_nl_per_h = decision.rate_nl_per_h
            self.programme = None
            for code in (AlarmCode.MINIMUM_RATE_MODE,):
                if self.alarms.is_active(code):
                    self.alarms.clear(code, detail="therapy resumed")
        else:
            self.mode = Mode.STOPPED_FAULT
        self.checkpoint()
        return outcome

    def interruption_ms(self) -> int:
        """How long delivery has been interrupted, ms (0 if it is not)."""
        if self._interrupted_since_ms is None:
            return 0
        return self.now_ms() - self._interrupted_since_ms

    # -- durability -----------------------------------------------------------------------------------------

    def _checkpoint_body(self) -> dict[str, Any]:
        return {
            "version": 1,
            "now_ms": self.now_ms(),
            "utc": self.clock.utc_now().isoformat(),
            "mode": self.mode.value,
            "concentration_ug_per_ml": self.concentration_ug_per_ml,
            "basal_rate_nl_per_h": self.basal_rate_nl_per_h,
            "flex": None if self.programme is None else [[list(x) for x in self.programme.steps],
                                                         self.programme.anchor_ms,
                                                         [list(b) for b in self.programme.periodic_boluses]],
            "fill_nl": self.fill_nl,
            "fill_utc": None if self.fill_utc is None else self.fill_utc.isoformat(),
            "dispensed_since_fill_nl": self.dispensed_since_fill_nl,
            "last_counter_nl": self._last_counter_nl,
            "last_poll_ms": self._last_poll_ms,
            "catheter": [list(s) for s in self._catheter.segments],
            "delivered_pg_by_kind": dict(self.delivered_pg_by_kind),
            "discontinue_authorised": self.discontinue_authorised,
            "interrupted_since_ms": self._interrupted_since_ms,
            "total_counted_nl": self.total_counted_nl,
            "therapy": dict(self.therapy_state),
            "gate": self.gate.snapshot(),
        }

    def _journal_begin(self, kind: str, params: dict[str, Any]) -> tuple[str | None, bool]:
        """Durably record a pump command as pending before it is sent.

        :return: (command ID or None without a journal, whether the pending record is durable).
        """
        if self.journal is None:
            return None, True
        command_id = uuid.uuid4().hex
        durable = self._durably("journal command", lambda: self.journal.begin_command(command_id, kind, params))
        return (command_id if durable else None), durable

    def _send_rate(self, rate_nl_per_h: int, previous_nl_per_h: int | None, *, cause: str,
                   essential: bool) -> ProgramOutcome:
        """Program one rate through the journal: pending record, atomic programming, outcome record.

        Every therapy-changing command the loop sends goes through here or :meth:`_send_stop`, so
        the journal holds each one with its ID and outcome. A requested change is not sent without
        a durable pending record (JOURNAL_WRITE_FAILURE: "no new delivery change without a durable
        record"); an ``essential`` one (a fault reaction, restoring the committed programme, the end
        of a bolus, a step of an authorised flex programme) is sent anyway, because withholding it
        would harm the patient, and its alarm is already raised.
        """
        params = {"rate_nl_per_h": rate_nl_per_h, "previous_nl_per_h": previous_nl_per_h, "cause": cause}
        command_id, durable = self._journal_begin("set_rate", params)
        if not durable and not essential:
            return ProgramOutcome(ProgramResult.KEPT_OLD, self.committed_rate_nl_per_h, None, None, False,
                                  f"{NOT_JOURNALLED}: no durable journal record, nothing sent")
        outcome = self.programmer.program(rate_nl_per_h, previous_nl_per_h=previous_nl_per_h)
        if command_id is not None:
            self._resolve_superseded(outcome)
            detail = {"result": outcome.result.value, "rate_nl_per_h": outcome.rate_nl_per_h,
                      "uncertain": outcome.uncertain, "detail": outcome.detail}
            if outcome.status is not None:
                detail["pump_state"] = outcome.status.state.value
                detail["pump_alarm"] = None if outcome.status.alarm is None else outcome.status.alarm.value
            if outcome.dispensed is not None:
                detail["dispensed_nl"] = outcome.dispensed.infused_nl
            self._journal_outcome_detail(command_id, _COMMAND_OUTCOME[outcome.result], detail)
            if outcome.result is ProgramResult.UNKNOWN:
                self._uncertain_rate_commands.append((command_id, rate_nl_per_h))
        return outcome

    def _resolve_superseded(self, outcome: ProgramOutcome) -> None:
        """Resolve earlier uncertain rate commands once a later programming verified the pump's rate.

        An absolute rate is idempotent and the pump now holds a verified rate, so an earlier
        uncertain command is either the rate running now (applied) or no longer in force (not
        applied); what the pump delivered meanwhile is reconciled from its counter, not from
        the command.
        """
        if not self._uncertain_rate_commands or outcome.result is not ProgramResult.COMMITTED \
                or outcome.rate_nl_per_h is None:
            return  # only a rate read back and verified settles what the pump holds
        pending, self._uncertain_rate_commands = self._uncertain_rate_commands, []
        for command_id, rate in pending:
            self._journal_outcome_detail(
                command_id, "applied" if rate == outcome.rate_nl_per_h else "not_applied",
                {"detail": f"superseded: pump verified at {outcome.rate_nl_per_h} nL/h by a later command; "
                           "delivery reconciled from the pump counter"})

    def _send_stop(self, cause: str) -> bool:
        """Stop the pump through the journal (authorised discontinue or a STOP reaction); always sent.

        :return: whether the stop was confirmed by a status read.
        """
        command_id, _ = self._journal_begin("stop", {"cause": cause})
        stopped, status = self.programmer.stop()
        self._drain_hal_errors()
        if command_id is not None:
            self._journal_outcome_detail(
                command_id, "applied" if stopped else ("uncertain" if status is None else "not_applied"),
                {"confirmed": stopped, "pump_state": None if status is None else status.state.value,
                 "detail": "stop confirmed by a status read" if stopped else
                 "pump unreadable after the stop" if status is None else "pump still delivering"})
            if status is None:
                self._uncertain_stop_commands.append(command_id)
        return stopped

    def _resolve_uncertain_stops(self, status: Any) -> None:
        """A status read after an uncertain stop establishes whether the pump stopped."""
        pending, self._uncertain_stop_commands = self._uncertain_stop_commands, []
        for command_id in pending:
            stopped = not status.state.delivering
            self._journal_outcome_detail(command_id, "applied" if stopped else "not_applied",
                                         {"detail": f"reconciled: pump {status.state.value}"})

    def _journal_outcome_detail(self, command_id: str, outcome: str, detail: dict[str, Any]) -> None:
        if self.journal is not None:
            self._durably("journal command",
                          lambda: self.journal.complete_command(command_id, outcome, detail=detail))

    def _unresolved_pump_commands(self) -> bool:
        """After a restart: take over the rate and stop commands the journal holds unresolved.

        They are resolved like this instance's own: a rate command by the next verified rate, a
        stop by the next status read. Bolus commands are closed from the counter instead.
        """
        if self.journal is None:
            return False
        try:
            records = self.journal.unresolved_commands()
        except (sqlite3.Error, OSError, JournalError) as exc:
            self._fault(FaultCode.JOURNAL_WRITE_FAILURE, f"journal read at restart: {exc}")
            return False
        for record in records:
            if record.kind == "set_rate":
                self._uncertain_rate_commands.append((record.command_id, record.params["rate_nl_per_h"]))
            elif record.kind == "stop":
                self._uncertain_stop_commands.append(record.command_id)
        return bool(self._uncertain_rate_commands)

    def _journal_command(self, command_id: str, kind: str, params: dict[str, Any]) -> None:
        if self.journal is not None:
            self._durably("journal command", lambda: self.journal.begin_command(command_id, kind, params))

    def _journal_resolve(self, command_id: str, detail: str, outcome: str = "applied") -> None:
        """Resolve a bolus command the journal still holds as pending or uncertain (after a restart)."""
        self._journal_outcome(command_id, outcome, detail)

    def _journal_outcome(self, command_id: str, outcome: str, detail: str) -> None:
        """Record a bolus command's outcome unless it is already resolved.

        A fault reaction inside the bolus's own programming (a stall latched on the way) ends
        the bolus and resolves its record first; that resolution stands.
        """
        if self.journal is None:
            return

        def write() -> None:
            record = self.journal.command(command_id)
            if record is not None and record.unresolved:
                self.journal.complete_command(command_id, outcome, detail={"detail": detail})

        self._durably("journal command", write)

    def _durably(self, what: str, write: Callable[[], None]) -> bool:
        """Run one store write; a storage failure is a fault (alarm, therapy continues), not a crash."""
        try:
            write()
        except (sqlite3.Error, OSError, JournalError) as exc:
            self._fault(FaultCode.JOURNAL_WRITE_FAILURE, f"{what}: {exc}")
            return False
        return True

    def checkpoint(self) -> None:
        """Durably save the resume point now (also called at every therapy change)."""
        body = self._checkpoint_body()
        if self._durably("checkpoint", lambda: self.store.save(body)):
            self._last_checkpoint_ms = self.now_ms()
        if self.journal is not None and body["now_ms"] - self._last_journal_snapshot_ms >= MS_PER_DAY:
            # The audit copy of the 24 h accounting: daily is enough (resume uses the checkpoint store).
            if self._durably("journal ledger snapshot", lambda: self.journal.record_ledger_snapshot(
                    body["gate"]["ledger"], now_ms=body["now_ms"])):
                self._last_journal_snapshot_ms = body["now_ms"]

    def recover(self) -> dict[str, Any]:
        """Resume after a crash or restart, before any therapy-changing command (PER-02, HAL-06).

        Restores the ledger (24 h accounting and lockouts) from the checkpoint,
        reads the pump, attributes the counter delta since the checkpoint,
        closes unfinished boluses from the counter without re-sending them,
        and puts the pump back on the committed basal rate if it was left at
        a bolus rate. With no checkpoint, the loop stays idle and sends nothing.

        :return: a summary of what was found (for the journal and tests).
        """
        body = self.store.load()
        if body is None:
            return {"resumed": False}
        saved_now = body["now_ms"]
        if self.clock.monotonic_ms() + self._time_offset_ms < saved_now:
            # A new monotonic origin (reboot): continue controller time from the saved point.
            elapsed_ms = max(0, int((self.clock.utc_now() - datetime.fromisoformat(body["utc"])).total_seconds() * 1000))
            self._time_offset_ms = saved_now + elapsed_ms - self.clock.monotonic_ms()
        self.gate.restore(body["gate"])
        self.mode = Mode(body["mode"])
        self.concentration_ug_per_ml = body["concentration_ug_per_ml"]
        self.basal_rate_nl_per_h = body["basal_rate_nl_per_h"]
        flex = body.get("flex")
        self.programme = None if not flex else self.gate.make_programme(
            [tuple(x) for x in flex[0]], flex[1], periodic_boluses=[tuple(b) for b in (flex[2] if len(flex) > 2 else ())])
        self.fill_nl = body["fill_nl"]
        self.fill_utc = None if body.get("fill_utc") is None else datetime.fromisoformat(body["fill_utc"])
        self.dispensed_since_fill_nl = body["dispensed_since_fill_nl"]
        self._last_counter_nl = body["last_counter_nl"]
        self._catheter.segments = [list(s) for s in body["catheter"]]
        self.delivered_pg_by_kind = dict(body["delivered_pg_by_kind"])
        self.discontinue_authorised = body["discontinue_authorised"]
        self._interrupted_since_ms = body["interrupted_since_ms"]
        self.total_counted_nl = body["total_counted_nl"]
        self.therapy_state = dict(body["therapy"])
        self._last_poll_ms = body["last_poll_ms"]
        now = self.now_ms()
        self._accrual_ms = now
        self._next_poll_ms = now
        self._last_confirmed_ms = now
        self._boundary_from_ms = now
        if self.programme is not None:
            self.basal_rate_nl_per_h = self.programme.rate_at(now)
        self.committed_rate_nl_per_h = self.basal_rate_nl_per_h if self.mode is Mode.RUNNING else (
            self.config.minimum_rate_nl_per_h if self.mode is Mode.MINIMUM_RATE else 0)
        found: dict[str, Any] = {"resumed": True, "mode": self.mode.value, "closed_boluses": []}
        status = self.programmer.read_status()
        dispensed = self.programmer.read_dispensed() if status is not None else None
        open_boluses = [b for b in self.store.boluses() if b.status != "finished"]
        for record in open_boluses:
            # It may have started: count it for lockouts and the daily count, conservatively.
            self.gate.note_bolus_start(record.kind, record.requested_ms)
        if dispensed is not None:
            # Everything since the checkpoint: attribute to the open bolus first (up to its volume), then basal.
            base = self._last_counter_nl if self._last_counter_nl is not None else dispensed.infused_nl
            delta = max(0, dispensed.infused_nl - base) if dispensed.infused_nl >= base else dispensed.infused_nl
            for record in open_boluses:
                share = min(delta, record.volume_nl)
                self._expected_num[record.kind] = self._expected_num.get(record.kind, 0) + share * MS_PER_H
                delta -= share
            if delta > 0:
                kind = MINIMUM_RATE if self.mode is Mode.MINIMUM_RATE else BASAL
                self._expected_num[kind] = self._expected_num.get(kind, 0) + delta * MS_PER_H
            shares_before = dict(self._expected_num)
            self._accrual_ms = now  # no further accrual: the shares above are the whole story
            self._reconcile(dispensed.infused_nl, spread_from_ms=min(self._last_poll_ms, now))
            # That history was already reported by the previous instance's polls (if anyone was listening).
            self._interval_expected_nl = self._interval_delta_nl = self._interval_tip_pg = 0
            for record in open_boluses:
                self._journal_resolve(record.bolus_id, "closed after restart from the pump counter")
                got = shares_before.get(record.kind, 0) // MS_PER_H
                self.store.finish_bolus(record.bolus_id, now, min(got, record.volume_nl), "closed after restart")
                found["closed_boluses"].append(record.bolus_id)
            self._last_confirmed_ms = now
        else:
            found["pump_unreachable"] = True
            self.alarms.raise_alarm(AlarmCode.THERAPY_STATUS_UNKNOWN, detail="pump unreachable at restart")
        unresolved = self._unresolved_pump_commands()
        if status is not None and self._uncertain_stop_commands:
            self._resolve_uncertain_stops(status)
        if status is not None and self.mode in (Mode.RUNNING, Mode.MINIMUM_RATE):
            if status.alarm is not None:
                self._pump_alarm(status.alarm)
            elif open_boluses or unresolved or status.state is not PumpState.INFUSING:
                # A rate command of the previous instance left unresolved means the rate is unknown too.
                # The pump may still hold a bolus rate, or stopped: reprogram the committed programme.
                self._reprogram_current("resume after restart")
        self._drain_hal_errors()
        self._emit("recovered", **{k: v for k, v in found.items() if k != "closed_boluses"},
                   closed_boluses=len(found["closed_boluses"]))
        self.checkpoint()
        return found
