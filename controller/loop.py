"""The control loop: event-driven delivery, the poll, fault reactions and resume after restart.

The loop owns the pump. It wakes only when something is due (:mod:`controller.schedule`):

* a **status poll** every ``poll_interval_ms`` (heartbeat, status, dispensed
  counter, reconciliation, reservoir, alarms);
* the **end of a bolus** (back to the basal rate);
* a **programme boundary** (a flex step, a periodic bolus) or a scheduled action (a taper step).

Between events it sleeps on the injected :class:`~hal.clock.Clock`: on the bench
that is real time; in CI a virtual clock advances straight to the next event, so
months of therapy run in seconds.

The loop is a composition of parts that own their state:

* :class:`~controller.accounting.Accounting` -- what was commanded and what the counter
  shows, by kind, into the kernel ledger (through the catheter dead volume);
* :class:`~controller.commands.CommandIssuer` -- where a rate is sent: the only sender of
  delivery commands, journalled, verified, and the single owner of *uncertain*;
* :class:`~controller.schedule.Schedule` -- when the loop wakes;
* :class:`~controller.concentration.ConcentrationChange` -- a refill at a new concentration: the
  transit of the old drug across the catheter (the scaled rate, the program that ends it, its end
  read from the counter) and the change's intent that a restart completes;
* the fault-reaction table (:data:`controller.faults.FAULT_REACTIONS`), which alone
  decides each fault's reaction (:meth:`ControlLoop._fault`).

Where a rate is decided: the clinical workflows (:mod:`controller.therapy`) ask the
kernel (:mod:`controller.gate`) for a decision, and hand it to one of the loop's
``start_therapy`` / ``change_basal`` / ``set_programme`` / ``start_bolus`` /
``change_concentration`` / ``enter_minimum_rate`` / ``resume_after_fault``, which sends
it through the command issuer and applies it to the kernel only once the pump holds it,
verified. Flow is never set to zero except by an authorised discontinue or a STOP row of
the fault-reaction table.

Durability (:mod:`controller.store`): every command's pending record commits, in one
transaction, with the resume point as it stood before the command; outcomes and
routine updates ride along with the next commit; a workflow that a clinician is told
succeeded is durable before it returns (:meth:`ControlLoop.checkpoint` with
``durable=True``). :meth:`ControlLoop.recover` reads the pump first, attributes
whatever the counter shows since the resume point, closes unfinished boluses from the
counter (never re-sending them), and only then commands.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import chain
from typing import Any

from controller import reservoir as reservoir_math
from controller.accounting import BOLUS_RUN_KINDS, Accounting, AccountingViews, BolusRun, TipDoseWatch, Transit
from controller.alarms import AlarmCode, AlarmManager, raise_restart_rule_alarm
from controller.commands import (RATE_COMMAND_KINDS, CommandIssuer, ProgramOutcome, ProgramResult, fault_for_hal_error,
                                 is_link_error)
from controller.concentration import CONCENTRATION_CHANGE_KEY, ConcentrationChange
from controller.faults import FaultCode, Reaction, fault_for_pump_alarm, reaction_for
from controller.gate import Gate, GateDecision
from controller.journal import STORAGE_LOW_BYTES
from controller.program import orphan_of_phases, orphan_of_program, orphan_of_rate
from controller.schedule import Schedule
from controller.store import BolusRecord, Store
from cython_ext import units
from cython_ext.units import describe_volume_nl
from cython_ext.errors import CapabilityError, ConfigError, HalError, StateError
from cython_ext.vocabulary import DeliveryKind
from hal.clock import Clock
from hal.pump import PumpAlarm, PumpDriver, PumpProgram, PumpState, ProgramPhase

MS_PER_MIN = units.MS_PER_MIN
MS_PER_H = units.MS_PER_H
MS_PER_DAY = units.MS_PER_DAY
#: Most phases of a program that carries flex steps the pump must leave by itself (:meth:`ControlLoop._programme_form`).
MAX_STEP_PHASES = 8

__all__ = ["BOLUS_POLL_MS", "ControlLoop", "LoopConfig", "Mode", "PollRecord"]

#: Poll interval while a bolus runs, ms: the 24 h cap is re-checked this often (BOL-04).
BOLUS_POLL_MS = 5 * MS_PER_MIN
#: How often the poll asks the journal's file system for its free space (PER-05), ms of controller time.
STORAGE_CHECK_MS = MS_PER_H

#: How soon the loop looks again when the pump has not yet left a bolus program's bolus phase, ms.
BOLUS_END_RECHECK_MS = 10_000

#: Alarm conditions that end when the pump is confirmed delivering again.
INTERRUPTION_ALARMS = (AlarmCode.THERAPY_INTERRUPTED, AlarmCode.MOTOR_STALL, AlarmCode.OCCLUSION, AlarmCode.PUMP_RESET)

#: Version of the resume point's layout.
RESUME_POINT_VERSION = 2
#: ``therapy_state`` key of the minimum rate a restart owes but could not command (the pump unreadable when the
#: kernel refused a concentration change it found): the first poll that reads the pump enters it (:meth:`recover`).
MINIMUM_RATE_OWED_KEY = "minimum_rate_owed"
#: Why a requested command is refused while the reservoir's drug is not the kernel's (PRX-06).
CONCENTRATION_MISMATCH = "CONCENTRATION_MISMATCH"


def _keeps_programme(programme: Any) -> bool:
    """Whether the loop must follow ``programme``'s boundaries (flex steps or periodic boluses)."""
    return programme is not None and (len(programme.steps) > 1 or bool(programme.periodic_boluses))


class Mode(enum.Enum):
    """What the loop is doing with the pump."""

    IDLE = "idle"  # no therapy programmed yet (before implant)
    RUNNING = "running"  # the committed programme is delivering
    MINIMUM_RATE = "minimum_rate"  # fault reaction: the clinician-set minimum rate
    STOPPED_FAULT = "stopped_fault"  # STOP reaction: waiting for a clinician
    DISCONTINUED = "discontinued"  # authorised discontinue completed
    PROCEDURE = "procedure"  # a guided procedure's authorised zero-rate hold (SAFE-05): read only, command nothing


@dataclass(frozen=True)
class LoopConfig:
    """Clinician- and rig-configured loop parameters (units in names).

    :ivar poll_interval_ms: time between status polls, ms.
    :ivar checkpoint_interval_ms: longest time between two durable resume points while nothing changes, ms.
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
    :ivar counter_clear_above_nl: clear the pump's counter when it passes this, nL, to keep its
        display resolution fine.
    :ivar withdrawal_alarm_after_ms: the dose at the catheter tip below ``withdrawal_alarm_fraction_pct``
        of the prescription for this long raises WITHDRAWAL_RISK, ms.
    :ivar withdrawal_alarm_fraction_pct: see ``withdrawal_alarm_after_ms``, % of the prescribed dose.
    :ivar storage_low_bytes: STORAGE_LOW is raised while the journal's file system has this much free space or
        less, bytes (PER-05; default :data:`controller.journal.STORAGE_LOW_BYTES`).
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
    counter_clear_above_nl: int = 1_000_000
    withdrawal_alarm_after_ms: int = 6 * MS_PER_H
    withdrawal_alarm_fraction_pct: int = 50
    storage_low_bytes: int = STORAGE_LOW_BYTES

    def __post_init__(self) -> None:
        for name in ("poll_interval_ms", "checkpoint_interval_ms", "minimum_rate_nl_per_h", "unconfirmed_alarm_ms",
                     "counter_clear_above_nl", "withdrawal_alarm_after_ms", "storage_low_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(name, value, "an integer > 0")
        for name in ("drift_tolerance_ppm", "drift_floor_nl", "low_reservoir_nl", "low_reservoir_days",
                     "empty_reservoir_nl", "dead_volume_nl", "restart_titration_after_ms", "reservoir_capacity_nl"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(name, value, "an integer >= 0")
        pct = self.withdrawal_alarm_fraction_pct
        if isinstance(pct, bool) or not isinstance(pct, int) or not 1 <= pct <= 100:
            raise ConfigError("withdrawal_alarm_fraction_pct", pct, "an integer in [1, 100] %")
        if self.empty_reservoir_nl >= self.low_reservoir_nl and self.low_reservoir_nl:
            raise ConfigError("empty_reservoir_nl", self.empty_reservoir_nl, f"< low_reservoir_nl ({self.low_reservoir_nl})")


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


def check_bolus_start(loop: Any, kind: DeliveryKind, duration_ms: int) -> None:
    """Refuse to start a bolus the loop cannot run: a kind it does not run as an extra rate, one while another
    runs, outside RUNNING, during a concentration transit, or a duration (ms) not > 0 (the checks of every
    loop's ``start_bolus``).

    No bolus runs during a transit (a bolus sized at the new drug would push the old one out of the tip), so
    none ends in one: a bolus's end puts a one-phase basal back, which would replace the transit program the
    pump ends by itself.

    :raises ConfigError: for the kind or the duration.
    :raises StateError: for the loop's state.
    """
    if kind not in BOLUS_RUN_KINDS:
        raise ConfigError("kind", kind, f"one of {[k.label for k in BOLUS_RUN_KINDS]}")
    if loop.bolus is not None:
        raise StateError(f"bolus {loop.bolus.bolus_id} is still running")
    if loop.mode is not Mode.RUNNING:
        raise StateError(f"no bolus in mode {loop.mode.value}")
    if loop.transit is not None:
        raise StateError(f"no bolus while a concentration change crosses the catheter (the "
                         f"{loop.transit.old_concentration_ug_per_ml} µg/mL drug is still ahead of the tip)")
    if duration_ms <= 0:
        raise ConfigError("duration_ms", duration_ms, "> 0")


class ControlLoop(AccountingViews):
    """The dosing firmware's main loop over one pump.

    Built by :func:`controller.assembly.build_controller`; nothing else wires it.

    :param pump: the pump driver (the loop must be its only user).
    :param clock: the injected clock.
    :param gate: the kernel gate (authorise / apply / ledger).
    :param alarms: the alarm manager.
    :param store: the durable store (journal, resume point, bolus records).
    :param config: loop parameters.
    """

    def __init__(self, pump: PumpDriver, clock: Clock, gate: Gate, alarms: AlarmManager, store: Store,
                 config: LoopConfig | None = None) -> None:
        self.pump = pump
        self.clock = clock
        self.gate = gate
        self.alarms = alarms
        self.store = store
        self.config = config or LoopConfig()
        self.commands = CommandIssuer(pump, store, on_storage_failure=self._storage_failed)
        self.commands.stage_resume_point = self._stage_resume_point
        self.accounting = Accounting(gate, self._emit)
        self.tip_watch = TipDoseWatch(self.config.withdrawal_alarm_after_ms, self.config.withdrawal_alarm_fraction_pct)
        self.schedule = Schedule(self.config.poll_interval_ms)
        self.mode = Mode.IDLE
        #: The committed programme's basal rate now, at the reservoir's concentration, nL/h (the kernel's
        #: view; the pump runs :attr:`pump_basal_nl_per_h`).
        self.basal_rate_nl_per_h = 0
        #: The transit of the old drug after a refill at a new concentration, and the change's restart intent.
        self.concentration_change = ConcentrationChange(
            pump, self.commands, self.accounting, gate, self.schedule, self._emit, now_ms=self.now_ms,
            reconcile=self._reconcile, pushing_nl_per_h=self._pushing_nl_per_h,
            counter_resolution_nl=lambda: self.counter_resolution_nl, on_end=self._transit_ended)
        self.programme: Any = None  # a flex/periodic programme in effect (rate changes at its boundaries), or None
        self.bolus: BolusRun | None = None
        #: The program that ends the running bolus by itself (pumps that hold programs), or None.
        self.bolus_program: PumpProgram | None = None
        #: Reason codes of the orphan check's refusal of the last programming (``ORPHAN_*``), or empty.
        self.orphan_refused: tuple[str, ...] = ()
        self.session_open: str | None = None  # "refill" or "programming" while one is open
        self.discontinue_authorised = False
        self._time_offset_ms = 0
        self._last_confirmed_ms = 0
        #: The last moment delivery was seen (a poll that found the pump delivering, the start, a restart's
        #: counter), ms: an interruption found later may have begun at any time since (the restart rule).
        self._delivery_seen_ms = 0
        self._last_durable_ms = 0
        #: :attr:`AlarmManager.events_recorded` at the last poll that committed them (see :meth:`poll`).
        self._alarm_events_committed = 0
        self._storage_checked_ms: int | None = None
        #: The reservoir's alarm levels with what they were derived from (daily use, fill, settings), or None.
        self._alarm_levels: tuple[tuple[int, ...], reservoir_math.AlarmLevels] | None = None
        self._last_ledger_snapshot_ms = -MS_PER_DAY
        self._interrupted_since_ms: int | None = None
        self._interrupted_since_utc: str | None = None  # the same moment on the wall clock (ISO 8601)
        self._interruption_length_unknown = False  # a reboot left its length unknown: it counts as long
        #: Called with each :class:`PollRecord` (runner, report).
        self.observers: list[Callable[[PollRecord], None]] = []
        #: Called with (event, payload) for every therapy event (runner, report, journal).
        self.event_sinks: list[Callable[[str, dict[str, Any]], None]] = []
        #: Invariant breaches observed by the loop itself (zero flow without authorisation...).
        self.breaches: list[str] = []
        #: Workflow state saved with every resume point (owned by :class:`controller.therapy.Therapy`).
        self.therapy_state: dict[str, Any] = {}
        #: The pump's status as the last poll read it (None before the first, or when it did not answer).
        self.last_status: Any = None

    # -- views ----------------------------------------------------------------------------------

    @property
    def committed_rate_nl_per_h(self) -> int | None:
        """The rate the pump holds, verified, nL/h; 0 when stopped; None when uncertain."""
        return self.commands.committed_rate_nl_per_h

    @property
    def pump_basal_nl_per_h(self) -> int:
        """The basal volume rate the pump runs: the programme's, scaled during a concentration transit, nL/h."""
        return self._pump_rate(self.basal_rate_nl_per_h)

    @property
    def counter_resolution_nl(self) -> int:
        """The pump counter's finest step, nL (0 when the pump cannot say yet)."""
        try:
            return self.pump.capabilities().volume_resolution_nl
        except StateError:
            return 0

    @property
    def transit(self) -> Transit | None:
        """A concentration change whose old drug is still leaving the catheter tip, or None
        (:class:`~controller.concentration.ConcentrationChange` owns it)."""
        return self.concentration_change.transit

    def _pump_rate(self, programme_rate_nl_per_h: int) -> int:
        """The pump's volume rate for a programme rate (at the reservoir's concentration), nL/h."""
        return self.concentration_change.pump_rate(programme_rate_nl_per_h)

    @property
    def last_poll_ms(self) -> int:
        """Controller time of the last poll (the ledger is reconciled up to here), ms."""
        return self.schedule.last_poll_ms

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

    def schedule_action(self, at_ms: int, action: Callable[[], None], name: str) -> None:
        """Run ``action`` at controller time ``at_ms`` (a taper step)."""
        self.schedule.add(at_ms, action, name)

    def cancel_scheduled(self, name: str) -> int:
        """Cancel scheduled actions called ``name``; returns how many were cancelled."""
        return self.schedule.cancel(name)

    def scheduled_names(self) -> list[str]:
        """Names of the pending scheduled actions, in order."""
        return self.schedule.names()

    def _next_boundary(self) -> int | None:
        return self.schedule.next_boundary(self.programme) if self.mode is Mode.RUNNING else None

    def next_wake_ms(self) -> int:
        """The next time the loop has something to do."""
        return self.schedule.next_wake(bolus_end_ms=None if self.bolus is None else self.bolus.end_ms,
                                       boundary_ms=self._next_boundary())

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
                self.commands.hal_errors.append((exc, False))
                self._drain_hal_errors()
        self._sleep_until(t_ms)

    def _handle_due(self) -> None:
        now = self.now_ms()
        if self.bolus is not None and self.bolus.end_ms <= now:
            self._end_bolus("complete")
        boundary = self._next_boundary()
        if boundary is not None and boundary <= now:
            self._programme_boundary(now)
        action = self.schedule.pop_due(now)
        while action is not None:
            action()
            action = self.schedule.pop_due(now)
        if self.schedule.next_poll_ms <= now:
            self.poll()

    # -- accrual ----------------------------------------------------------------------------------

    def _delivering(self) -> bool:
        return self.mode in (Mode.RUNNING, Mode.MINIMUM_RATE) and bool(self.committed_rate_nl_per_h)

    def _accrue(self) -> None:
        """Count what the pump was commanded since the last accrual, by kind."""
        self.accounting.accrue(self.now_ms(), (self.committed_rate_nl_per_h or 0) if self._delivering() else 0,
                               bolus=self.bolus, running=self.mode is Mode.RUNNING,
                               minimum_rate=self.mode is Mode.MINIMUM_RATE, programme=self.programme)

    def _reconcile(self, counter_nl: int, *, recovered: tuple[int, int] | None = None) -> tuple[int, int]:
        self._accrue()
        return self.accounting.reconcile(counter_nl, self.now_ms(), self.schedule.last_poll_ms, self.bolus,
                                         recovered=recovered)

    def _programme_boundary(self, now: int) -> None:
        """A programme boundary (flex step, periodic bolus start or end): move to the programme's rate there
        (the whole programme was authorised), in a form whose orphan schedule passes (:meth:`_programme_form`).

        When no form passes, a step that would raise what the pump holds is not sent: the pump keeps the last
        command (judged when it was sent) and PROGRAMME_STEP_REFUSED is raised with the orphan check's reasons.
        A step that lowers it is sent all the same: refusing it would leave the higher rate running."""
        self.schedule.boundary_from_ms = now
        rate = self.programme.rate_at(now)
        if self.programme.periodic_boluses:
            self._accrue()  # what ran before the boundary keeps its kind split
        if rate == self.basal_rate_nl_per_h:
            if self.alarms.is_active(AlarmCode.PROGRAMME_STEP_REFUSED):
                self.alarms.clear(AlarmCode.PROGRAMME_STEP_REFUSED, detail="the programme is back at the step held")
            return
        self._accrue()
        self._end_pump_held_bolus("flex step")
        self.concentration_change.settle()  # first: the step is scaled for the drug in the catheter now
        extra = self.bolus.extra_rate_nl_per_h if self.bolus is not None else 0
        program, refused = self._programme_form(self.programme, now) if extra == 0 else (None, ())
        held = self.committed_rate_nl_per_h
        if refused and (held is None or self._pump_rate(rate) > held):
            self.orphan_refused = refused
            detail = (f"the step to {self._pump_rate(rate)} nL/h was not sent: in no form the pump can end by "
                      f"itself does what it would do alone stay within the 24 h cap and the minimum rate "
                      f"({', '.join(refused)}); the pump keeps its last command "
                      f"({'unknown' if held is None else f'{held} nL/h'})")
            self._emit("denied", action="flex_step", reasons=list(refused), detail=detail)
            self.alarms.raise_alarm(AlarmCode.PROGRAMME_STEP_REFUSED, detail=detail)
            return
        self.basal_rate_nl_per_h = rate
        if program is not None:
            outcome = self.commands.send_program(program, cause="flex_step", essential=True)
        else:
            outcome = self.commands.send_rate(self._pump_rate(rate) + extra, previous_nl_per_h=None,
                                              cause="flex_step", essential=True)
        self._after_program(outcome, "flex step")
        if outcome.committed and self.alarms.is_active(AlarmCode.PROGRAMME_STEP_REFUSED):
            self.alarms.clear(AlarmCode.PROGRAMME_STEP_REFUSED, detail="a later step of the programme was sent")

    def _programme_form(self, programme: Any, now: int, *,
                        reservoir_ug_per_ml: int | None = None) -> tuple[PumpProgram | None, tuple[str, ...] | None]:
        """How a programme's step in force at ``now`` is sent: ``(program, ())``, ``(None, ())`` for a plain
        rate, or ``(None, reasons)`` when no form's orphan schedule passes: the plain rate's ``ORPHAN_*`` codes,
        the verdict on what a caller that sends anyway sends; ``(None, None)`` for a plain rate not judged here
        (no programme, or one without boundaries outside a transit: the command's own check judges it). The
        verdict is the orphan check of the form returned, once (:meth:`_program` takes it as ``judged``). Call
        after :meth:`ConcentrationChange.settle`.

        A flex step is moved on by the loop. Left alone (a dead controller), the pump would hold the step's
        rate for good: a short high step (the whole day within the cap) can then pass the 24 h cap. So the
        step is a plain rate only when the orphan check passes that rate. Otherwise, on a pump that holds
        programs, it is a program the pump moves on by itself: the step for its volume up to the next
        boundary, then the next step, continuous; when that next step cannot be left running either (two
        high steps in a row), the steps up to the first one that can, each for its volume, at most
        :data:`MAX_STEP_PHASES` phases and 24 h of them (:meth:`_step_programs`). The first form whose own
        orphan schedule passes is the form. None passes (no programs, no next boundary, a value the pump
        cannot hold, a ledger too full): the reasons, and the caller decides (:meth:`_programme_boundary`).

        Mid-transit the plain rate comes last: it is the old drug's volume rate, which the new drug gets once
        its front reaches the tip, until the controller's next command (with the link lost across the front, a
        quarter or four times the dose after 2000 <-> 500 µg/mL). First comes the transit program for the step
        (:meth:`ConcentrationChange.program_for`: the step's dose at the tip, before and after the front, for
        good), then the step programs, every phase split at the front (:meth:`_program_to_the_tip`). Each is judged on what
        leaves the tip (the catheter's contents: :meth:`_orphan_refusals`), the reservoir's drug behind it at
        ``reservoir_ug_per_ml`` when the kernel does not hold it yet (a concentration change), µg/mL.
        """
        keeps = _keeps_programme(programme)
        if programme is None or (self.transit is None and not keeps):
            return None, None
        plain = orphan_of_rate(self._pump_rate(programme.rate_at(now)))
        refused: tuple[str, ...] | None = None
        if self.transit is None:
            refused = self._orphan_refusals(plain, now, reservoir_ug_per_ml)
            if not refused:
                return None, ()
            forms: Iterable[PumpProgram | None] = self._step_programs(programme, now)
        else:
            forms = chain((self.concentration_change.program_for(self.transit, programme.rate_at(now)),),
                          self._step_programs(programme, now) if keeps else ())
        for program in forms:
            if program is not None and not self._orphan_refusals(orphan_of_program(program), now, reservoir_ug_per_ml):
                return program, ()
        return None, refused if refused is not None else self._orphan_refusals(plain, now, reservoir_ug_per_ml)

    def _step_programs(self, programme: Any, now: int) -> Iterator[PumpProgram]:
        """The programs that move the pump on through the steps from ``now`` by itself, shortest first: the steps
        up to the next boundary, the one after, ..., each followed by the next step's rate, continuous (at most
        :data:`MAX_STEP_PHASES` phases with a volume and 24 h of them; none on a pump without programs)."""
        if not self.commands.holds_programs():
            return
        segments: list[tuple[int, int]] = []
        at = now
        while len(segments) < MAX_STEP_PHASES:
            following = programme.next_boundary(at)
            if following is None or following - now > MS_PER_DAY:
                return
            rate = programme.rate_at(at)
            if self._pump_rate(rate) * (following - at) // MS_PER_H <= 0:
                return
            segments.append((rate, following - at))
            at = following
            program = self._program_to_the_tip(segments, programme.rate_at(following))
            if program is None or len(program.phases) > MAX_STEP_PHASES + 1:
                return
            yield program

    def _program_to_the_tip(self, segments: list[tuple[int, int]], after_nl_per_h: int) -> PumpProgram | None:
        """A program of programme rates held for durations (``(rate nL/h, ms)`` from now), then ``after_nl_per_h``
        continuous (rates at the reservoir's concentration), as the pump holds it; None when it cannot hold it.

        Each phase runs the volume rate for the drug at the tip while it runs: mid-transit the transit's rate
        (:meth:`_pump_rate`) until the old drug ahead in the catheter has left, the programme's rate after it,
        the phase in which the front reaches the tip split there by volume (the pump counts the volume exactly;
        a clock would be off by any stop), and the rest of its step at the new drug's rate for the step's time
        left. So the pump left alone gives every step's dose at the tip, before and after the front.
        """
        old_nl = self.concentration_change.old_drug_nl()
        phases: list[ProgramPhase] = []

        def add(rate_nl_per_h: int, volume_nl: int) -> None:
            if volume_nl > 0:
                phases.append(ProgramPhase(rate_nl_per_h, volume_nl))

        for rate, duration_ms in segments:
            if old_nl > 0:
                old_rate = self._pump_rate(rate)
                volume_nl = old_rate * duration_ms // MS_PER_H
                if volume_nl <= old_nl:
                    add(old_rate, volume_nl)
                    old_nl -= volume_nl
                    continue
                add(old_rate, old_nl)
                duration_ms -= -(-old_nl * MS_PER_H // old_rate)
                old_nl = 0
            add(rate, rate * duration_ms // MS_PER_H)
        if old_nl > 0:
            add(self._pump_rate(after_nl_per_h), old_nl)
        try:
            return self.pump.program_as_held(PumpProgram((*phases, ProgramPhase(after_nl_per_h))))
        except (CapabilityError, ConfigError, HalError):
            return None

    def _orphan_refusals(self, schedule: Any, now: int, reservoir_ug_per_ml: int | None = None) -> tuple[str, ...]:
        """The orphan check of ``schedule`` at ``now``, judged mid-transit on what leaves the tip (the catheter's
        contents), as :meth:`_program` judges a command; ``reservoir_ug_per_ml``: the reservoir's drug when the
        kernel does not hold it yet, µg/mL."""
        catheter = self.accounting.catheter.segments if self.transit is not None else None
        return self.gate.orphan_refusals(schedule, now, concentration_ug_per_ml=reservoir_ug_per_ml, catheter=catheter)

    # -- the poll ---------------------------------------------------------------------------------------

    def poll(self) -> PollRecord:
        """One status poll: heartbeat, status, counter, reconciliation, reservoir and alarms."""
        now = self.now_ms()
        interval = now - self.schedule.last_poll_ms
        self.schedule.next_poll_ms = now + self._poll_step_ms()
        status = self.commands.heartbeat()
        dispensed = self.commands.read_dispensed() if status is not None else None
        self.last_status = status if dispensed is not None else None
        if status is None or dispensed is None:
            self._comms_lost(now)
        else:
            self._comms_ok(now)
            if self.commands.stops_unsettled:
                self.commands.settle_stops(status)
            flushed_ms = self.accounting.drug_at_tip_ms
            _delta_nl, tip_pg = self._reconcile(dispensed.infused_nl)
            if self.accounting.drug_at_tip_ms != flushed_ms:
                # The catheter's saline is out: the first-24 h rule counts from now, and a crash must not lose it.
                self.checkpoint(durable=True)
            self.tip_watch.record(now, tip_pg)
            if self.mode in (Mode.RUNNING, Mode.MINIMUM_RATE, Mode.STOPPED_FAULT):
                # Idle (no verified therapy state) and discontinued: read only, command nothing (SAFE-04).
                if dispensed.infused_nl > self.config.counter_clear_above_nl:
                    self._clear_counter()
                self._check_status(status)
                if status.alarm is None and status.state is PumpState.INFUSING:
                    self._check_drift()
                else:
                    self.accounting.reset_drift()  # a stop or an alarm explains the shortfall; its own alarm is raised
                self._check_bolus_cap()
                self._check_reservoir()
                self._check_tip_dose(now)
                self.concentration_change.check()
                if self.bolus is None and self.alarms.is_active(AlarmCode.CATHETER_NOT_PRIMED) \
                        and not self.saline_in_catheter_nl:
                    self._check_primed("the basal pushed the saline out")
        self.schedule.last_poll_ms = now
        expected_nl, delta_nl, tip_pg = self.accounting.take_interval()
        record = PollRecord(
            now_ms=now,
            interval_ms=interval,
            rate_nl_per_h=(self.committed_rate_nl_per_h or 0) if self._delivering() else 0,
            delivered_nl=delta_nl,
            delivered_pg=tip_pg,
            dose_24h_ng=self.gate.total_24h_ng(self.now_ms()),  # after the reads: the ledger may hold later records
            cap_ng_per_day=self.gate.cap_ng_per_day(),
            reservoir_nl=self.reservoir_nl(),
            status_known=status is not None,
            expected_nl=expected_nl,
            mode=self.mode.value,
        )
        self._drain_hal_errors()
        self._check_storage(now)
        if now - self._last_durable_ms >= self.config.checkpoint_interval_ms:
            self.checkpoint(durable=True)
        if self.alarms.events_recorded != self._alarm_events_committed:
            # ALM-06, PER-05: an alarm's raise, clear or acknowledgement is durable by the end of the poll that made it
            # (staged, it could wait for the 72 h checkpoint and die with the process: a lost clear left a restarted
            # controller holding a stall that had ended). Alarm events are few; the fsync is nothing beside them.
            self._alarm_events_committed = self.alarms.events_recorded
            self.commit_journal("alarm events")
        for observer in self.observers:
            observer(record)
        return record

    def _check_storage(self, now: int) -> None:
        """PER-05: STORAGE_LOW while the journal's file system is nearly full, cleared when space comes back.

        Looked at once per :data:`STORAGE_CHECK_MS` of controller time, in every mode: records are written
        whether or not therapy runs. Therapy continues (the fault's CONTINUE row); safety records go on being
        written until the disk refuses them, which is JOURNAL_WRITE_FAILURE's case. A file system that cannot
        be asked counts as low.
        """
        if self._storage_checked_ms is not None and now - self._storage_checked_ms < STORAGE_CHECK_MS:
            return
        self._storage_checked_ms = now
        try:
            free = self.store.storage_free_bytes()
        except OSError as exc:
            free, why = 0, f"free space on the journal's file system unknown ({exc})"
        else:
            why = f"{free} bytes free on the journal's file system (alarm at {self.config.storage_low_bytes} or less)"
        if free <= self.config.storage_low_bytes:
            self._fault(FaultCode.STORAGE_LOW, why)
        elif self.alarms.is_active(AlarmCode.STORAGE_LOW):
            self.alarms.clear(AlarmCode.STORAGE_LOW, detail=why)

    def _poll_step_ms(self) -> int:
        """Time to the next poll: the configured interval, shorter while a bolus runs (BOL-04 cap check)."""
        if self.bolus is not None:
            return min(self.config.poll_interval_ms, BOLUS_POLL_MS)
        return self.config.poll_interval_ms

    def _clear_counter(self) -> None:
        """Zero the pump's counter (its display resolution coarsens as it grows) and re-read the baseline.

        The reconciled counter is made durable first, so that a crash after the clear can never
        lose the delivery before it.
        """
        if not self.commands.durably("resume point", self._commit_resume_point):
            return
        if self.commands.call(self.pump.clear_dispensed) is None:
            self._drain_hal_errors()
            return
        dispensed = self.commands.read_dispensed()
        # Just cleared: the counter starts from zero even if the confirming read failed.
        self.accounting.last_counter_nl = dispensed.infused_nl if dispensed is not None else 0
        self._emit("counter_cleared", baseline_nl=self.accounting.last_counter_nl)
        self.checkpoint()

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
        if self._owed_minimum_rate():
            return
        if self.committed_rate_nl_per_h is None and self.mode in (Mode.RUNNING, Mode.MINIMUM_RATE):
            # The last command's outcome was unknown: re-establish the verified rate now that we can read.
            self._reprogram_current("rate unknown after a lost reply")

    def _check_status(self, status: Any) -> None:
        alarms = self.commands.drain_driver_alarms()
        if status.alarm is not None and status.alarm not in alarms:
            alarms.append(status.alarm)
        if alarms:
            for alarm in dict.fromkeys(alarms):
                self._pump_alarm(alarm)
            return
        if self.mode in (Mode.RUNNING, Mode.MINIMUM_RATE) and status.state is not PumpState.INFUSING:
            self._fault(FaultCode.UNEXPLAINED_STOP, f"pump reports {status.state.value} while therapy runs")
        elif self.mode in (Mode.RUNNING, Mode.MINIMUM_RATE):
            self._delivery_seen_ms = self.now_ms()
            if self.mode is Mode.RUNNING:
                # Minimum rate keeps the interruption running: tolerance fades at a sub-therapeutic rate.
                self._end_interruption()
            for code in INTERRUPTION_ALARMS:
                if self.alarms.is_active(code):
                    self.alarms.clear(code, detail="delivery confirmed")

    def _check_drift(self) -> None:
        diff, expected, counted = self.accounting.drift(self.config.drift_tolerance_ppm, self.config.drift_floor_nl)
        if diff > 0:
            self._fault(FaultCode.DISPENSED_DRIFT_OVER, f"counted {describe_volume_nl(counted)}, commanded {describe_volume_nl(expected)}")
        elif diff < 0:
            self._fault(FaultCode.DISPENSED_DRIFT_UNDER, f"counted {describe_volume_nl(counted)}, commanded {describe_volume_nl(expected)}")

    def _check_bolus_cap(self) -> None:
        """BOL-04: stop a running bolus before the rolling 24 h total would cross the cap."""
        if self.bolus is None:
            return
        # The ledger total holds what was delivered plus the bolus's not-yet-delivered commitment.
        if self.gate.total_24h_ng(self.now_ms()) > self.gate.cap_ng_per_day():
            self._end_bolus("stopped at the 24 h cap")

    def _check_tip_dose(self, now: int) -> None:
        """WITHDRAWAL_RISK while the dose at the catheter tip stays below its share of the prescription."""
        prescribed = int(self.therapy_state.get("prescribed_dose_ng_per_day", 0))
        was_armed = self.tip_watch.armed
        share = self.tip_watch.deficit_pct(now, prescribed)
        if self.tip_watch.armed and not was_armed:
            # The patient is now drug-dependent: a crash must not restore a watch that was never armed (it would
            # stay silent through a withdrawal until a whole window of delivery had armed it again).
            self.checkpoint(durable=True)
        held = next((a for a in self.alarms.active() if a.code is AlarmCode.WITHDRAWAL_RISK), None) \
            if self.alarms.is_active(AlarmCode.WITHDRAWAL_RISK) else None
        if share is not None:
            if held is None or not held.condition_active:
                self._fault(FaultCode.TIP_DOSE_DEFICIT,
                            f"{share} % of the prescribed {prescribed / 1000:g} µg/day reached the catheter tip over "
                            f"the last {self.tip_watch.window_ms / MS_PER_H:g} h")
        elif held is not None and held.condition_active:
            self.alarms.clear(AlarmCode.WITHDRAWAL_RISK, detail="the dose at the catheter tip is back")

    # -- reservoir ----------------------------------------------------------------------------------------

    def reservoir_nl(self) -> int:
        """Predicted reservoir volume: last fill minus everything dispensed since, nL (never below 0)."""
        return self.accounting.reservoir.volume_nl

    def daily_volume_nl(self) -> int:
        """Volume per day at the committed basal rate, nL/day."""
        return self.pump_basal_nl_per_h * 24

    def _worst_case_nl_per_day(self) -> int:
        """The reservoir's worst-case daily use, nL/day: the programmed day plus every allowed patient bolus.

        The programmed day is the minimum rate in minimum-rate mode, a flex or periodic-bolus
        programme's whole-day total (never the rate of the moment), or the basal rate; 0 when
        nothing is programmed.
        """
        if self.mode is Mode.MINIMUM_RATE:
            programmed_nl_per_day = self.config.minimum_rate_nl_per_h * 24
        elif self.programme is not None:
            programmed_nl_per_day = self.programme.daily_total_nl()
        else:
            programmed_nl_per_day = self.pump_basal_nl_per_h * 24
        if programmed_nl_per_day <= 0:
            return 0
        return programmed_nl_per_day + int(self.therapy_state.get("patient_bolus_nl_per_day", 0))

    def _reservoir_settings(self) -> reservoir_math.ReservoirSettings:
        c = self.config
        return reservoir_math.ReservoirSettings(
            max(c.reservoir_capacity_nl, self.accounting.reservoir.fill_nl, c.low_reservoir_nl + 1),
            c.low_reservoir_nl, c.low_reservoir_days, c.empty_reservoir_nl)

    def forecast(self) -> reservoir_math.ReservoirForecast | None:
        """Low-alarm, empty and refill dates from the predicted reservoir (RES-01, RES-02), or None.

        Uses the worst-case daily use (:meth:`_worst_case_nl_per_day`); None before implant, after a
        discontinue, while nothing is programmed, or when the reservoir lasts beyond the horizon.
        """
        reservoir = self.accounting.reservoir
        daily_nl = self._worst_case_nl_per_day()
        if not reservoir.fill_nl or daily_nl <= 0 or reservoir.fill_utc is None:
            return None
        state = reservoir_math.ReservoirState(reservoir.fill_nl, reservoir.dispensed_since_fill_nl, reservoir.fill_utc)
        try:
            return reservoir_math.forecast(state, daily_nl, self._reservoir_settings(), self.clock.utc_now())
        except ConfigError:
            return None  # a rate so low the forecast runs past its horizon: nothing is due

    def _forecast_verdicts(self, volume_nl: int) -> tuple[bool, bool]:
        """(low by the forecast, refill due) for ``volume_nl`` left, by integer comparison.

        Exactly what :meth:`forecast` would say (:func:`controller.reservoir.alarm_levels` is
        derived from its arithmetic and tested against it), without its exact-fraction dates.
        """
        reservoir = self.accounting.reservoir
        daily_nl = self._worst_case_nl_per_day()
        if daily_nl <= 0 or reservoir.fill_utc is None:
            return False, False
        c = self.config
        key = (daily_nl, reservoir.fill_nl, c.reservoir_capacity_nl, c.low_reservoir_nl, c.low_reservoir_days,
               c.empty_reservoir_nl)
        cached = self._alarm_levels
        if cached is None or cached[0] != key:
            # A pure function of the key, which changes only with the programme, a fill or the settings.
            cached = self._alarm_levels = (key, reservoir_math.alarm_levels(daily_nl, self._reservoir_settings()))
        levels = cached[1]
        if volume_nl > levels.forecast_limit_nl:
            return False, False
        by_interval = reservoir.fill_utc + timedelta(days=reservoir_math.MAX_REFILL_INTERVAL_DAYS) <= self.clock.utc_now()
        return volume_nl <= levels.low_nl, volume_nl <= levels.refill_nl or by_interval

    def _check_reservoir(self) -> None:
        if self.mode in (Mode.IDLE, Mode.DISCONTINUED) or not self.accounting.reservoir.fill_nl:
            return
        volume = self.reservoir_nl()
        forecast_low, refill_due = self._forecast_verdicts(volume)
        low = volume <= self.config.low_reservoir_nl or forecast_low
        if low and not self.alarms.is_active(AlarmCode.RESERVOIR_LOW):
            fc = self.forecast()
            when = "" if fc is None else (f"; {float(fc.days_to_empty):.1f} days to empty, refill due "
                                          f"{fc.refill_due_utc:%Y-%m-%d}")
            self._fault(FaultCode.RESERVOIR_LOW, f"{describe_volume_nl(volume)} left ({', '.join(fc.low_triggers) if fc else 'volume'}){when}")
        elif refill_due and not low and not self.alarms.is_active(AlarmCode.REFILL_DUE):
            fc = self.forecast()
            self.alarms.raise_alarm(AlarmCode.REFILL_DUE, detail=f"refill due {fc.refill_due_utc:%Y-%m-%d}")
        if volume <= 0 and self.mode is not Mode.STOPPED_FAULT:
            # Empty without the minimum-rate spell before it (the residual volume used up unwatched: a restart
            # after downtime, a high rate between two polls): the reservoir may have run dry any time before, so
            # for the restart rule the stop is as long as can be.
            unwatched = self.mode is not Mode.MINIMUM_RATE and self._interrupted_since_ms is None
            self._fault(FaultCode.RESERVOIR_CONFIRMED_EMPTY, "predicted volume exhausted")
            if unwatched:
                self._interruption_length_unknown = True
        elif volume <= self.config.empty_reservoir_nl and self.mode is Mode.RUNNING:
            self._fault(FaultCode.RESERVOIR_EMPTY_THRESHOLD, f"{describe_volume_nl(volume)} left")

    # -- faults ---------------------------------------------------------------------------------------------

    def _pump_alarm(self, alarm: PumpAlarm) -> None:
        self._fault(fault_for_pump_alarm(alarm), f"pump latched {alarm.value}")

    def _storage_failed(self, detail: str) -> None:
        self._fault(FaultCode.JOURNAL_WRITE_FAILURE, detail)

    def _fault(self, fault: FaultCode, detail: str) -> None:
        """Apply the single documented reaction of ``fault`` (its row of the table) and raise its alarm."""
        row = reaction_for(fault)
        held = next((a for a in self.alarms.active() if a.code is row.alarm), None)
        if held is None or not held.current:
            self.alarms.raise_alarm(row.alarm, detail=detail)
        if held is None or held.restored:
            self._emit("fault", fault=fault.value, reaction=row.reaction.value, alarm=row.alarm.value, detail=detail)
        if row.interrupts_delivery and self._interrupted_since_ms is None:
            # Not from the poll that found it: that poll saw no delivery (the restart rule's stricter side).
            self._begin_interruption(self._delivery_seen_ms or self.now_ms())
            # The kernel counts the stop as the zero dose it was, from the earliest time it may have begun.
            self.gate.note_stopped(self._interrupted_since_ms)
            if not self.alarms.is_current(AlarmCode.THERAPY_INTERRUPTED) and row.alarm is not AlarmCode.THERAPY_INTERRUPTED:
                self.alarms.raise_alarm(AlarmCode.THERAPY_INTERRUPTED, detail=detail)
        elif row.interrupts_delivery and not self.gate.interrupted:
            # A stop again after a resume the kernel applied but no poll has confirmed yet: the loop's
            # interruption is still open, the kernel's closed at the resume. Tell the kernel (it clamps
            # the time to the resume), or every later resume is refused as resuming from nothing.
            self.gate.note_stopped(self._interrupted_since_ms)
        if row.reaction is Reaction.STOP:
            if self.mode is not Mode.STOPPED_FAULT:
                self._stop_for_fault(fault, detail)
            return
        if row.acknowledges_pump:
            self._acknowledge_pump()
        if row.reaction is Reaction.MIN_RATE:
            self.enter_minimum_rate(detail)
        elif row.restores_programme:
            # CONTINUE: reconciled by the poll already; put the last verified programme back.
            self._reprogram_current(detail)

    def _acknowledge_pump(self) -> None:
        if self.commands.call(self.pump.acknowledge_alarm) is None:
            self._drain_hal_errors()

    def _drain_hal_errors(self) -> None:
        """Map the HAL errors caught since last asked to their faults (fail operational, never crash).

        Link errors (lost or garbled replies, a port that will not open) are already handled:
        an unreadable pump by the comms-degraded / comms-timeout logic of the poll, an uncertain
        command through its :class:`~controller.commands.ProgramOutcome`. Every other HAL error
        takes the reaction of :func:`controller.commands.fault_for_hal_error` with its alarm.
        """
        seen: set[FaultCode] = set()
        for error, delivery_command in self.commands.drain_hal_errors():
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
        stopped = self.commands.send_stop(f"fault_{fault.value}")
        self._drain_hal_errors()
        self.mode = Mode.STOPPED_FAULT
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
                self._begin_interruption(self.now_ms())
            self.alarms.raise_alarm(AlarmCode.MINIMUM_RATE_MODE, detail=reason)
            self._emit("minimum_rate", reason=reason, rate_nl_per_h=decision.rate_nl_per_h)
            self.checkpoint(durable=True)
            return True
        return False

    def _reprogram_current(self, reason: str) -> None:
        """Put back the rate the therapy should be running (basal, plus a running bolus).

        After an interruption (the kernel holds one open) putting delivery back is a resume, and the
        restart rule decides it: the prior programme after a short interruption; after a long one
        the patient's titration-phase starting dose, or the minimum rate when the kernel has none.
        """
        if self._owed_minimum_rate():
            return  # never the old programme on the new drug
        if self.mode is Mode.MINIMUM_RATE:
            target = self.config.minimum_rate_nl_per_h
        elif self.mode is Mode.RUNNING:
            self._end_pump_held_bolus(reason)
            if self.gate.interrupted:
                self._resume_programme(reason)
                return
            extra = self.bolus.extra_rate_nl_per_h if self.bolus else 0
            program = self._basal_program(self.basal_rate_nl_per_h, extra, self.programme)
            if program is not None:
                self._accrue()
                self._after_program(self.commands.send_program(program, cause=f"restore: {reason}", essential=True,
                                                               resend_after_read=True), reason)
                return
            target = self.pump_basal_nl_per_h + extra
        else:
            return
        self._accrue()
        outcome = self.commands.send_rate(target, previous_nl_per_h=None, cause=f"restore: {reason}", essential=True)
        self._after_program(outcome, reason)

    def _resume_programme(self, reason: str) -> None:
        """Resume delivery after an interruption, by the restart rule (an automatic CONTINUE reaction)."""
        now = self.now_ms()
        # After a restart controller time has moved on by the least time that can have passed, so the
        # kernel may see a long interruption as short; the wall clock and an unknown length say otherwise.
        long_ago = self.interruption_ms() > self.config.restart_titration_after_ms
        decision = self.gate.authorize_resume(self.basal_rate_nl_per_h, now, programme=self.programme)
        note = "the programme in effect before the interruption"
        restarted_at_ng = 0
        if not decision.allowed or long_ago:
            start_ng = self.gate.caps.titration_start_dose_ng_per_day
            start_rate = units.rate_nl_per_h_for_dose(start_ng, self.concentration_ug_per_ml) if start_ng else 0
            if start_rate and (not decision.allowed or start_rate < self.basal_rate_nl_per_h):
                decision = self.gate.authorize_resume(start_rate, now)
                note = (f"the titration-phase starting dose {start_ng / 1000:g} µg/day, the patient's from the kernel "
                        f"caps, after a {self.interruption_ms() / MS_PER_H:.1f} h interruption (restart rule; "
                        f"threshold {self.config.restart_titration_after_ms / MS_PER_H:g} h)")
                restarted_at_ng = start_ng
            elif long_ago and not start_rate:
                self.enter_minimum_rate(f"{reason}; the restart rule allows no more after a "
                                        f"{self.interruption_ms() / MS_PER_H:.1f} h interruption (no starting dose)")
                return
        if not decision.allowed:
            self.enter_minimum_rate(f"{reason}; the restart rule allows no more after this interruption "
                                    f"({','.join(decision.reasons)})")
            return
        extra = self.bolus.extra_rate_nl_per_h if self.bolus else 0
        # First: it may end a flushed transit.
        program = self._basal_program(decision.rate_nl_per_h, extra, decision.programme)
        outcome = self._program(self._pump_rate(decision.rate_nl_per_h) + extra, decision,
                                cause=f"resume: {reason}", essential=True, program=program, resend_after_read=True)
        if outcome.committed:
            self.basal_rate_nl_per_h = decision.rate_nl_per_h
            if decision.programme is None or not _keeps_programme(decision.programme):
                self.programme = None
            if restarted_at_ng and decision.allowed:
                # The dose in effect is now the starting dose; it climbs back only at the titration cap.
                before_ng = int(self.therapy_state.get("prescribed_dose_ng_per_day", 0))
                self.therapy_state["prescribed_dose_ng_per_day"] = restarted_at_ng
                raise_restart_rule_alarm(self.alarms, self.therapy_state, restarted_at_ng, before_ng, note)
            self._emit("resumed", reason=reason, rate_nl_per_h=decision.rate_nl_per_h, detail=note)

    # -- programming --------------------------------------------------------------------------------------------

    def _program(self, rate_nl_per_h: int, decision: GateDecision | None, *, cause: str = "programme_change",
                 essential: bool = False, also: Callable[[], None] | None = None,
                 program: PumpProgram | None = None, concentration_ug_per_ml: int | None = None,
                 resend_after_read: bool = False, judged: tuple[str, ...] | None = None) -> ProgramOutcome:
        """Accrue, check the orphan schedule, program atomically, then apply the kernel decision only if committed.

        :param rate_nl_per_h: the rate to send (without ``program``).
        :param cause: why (journalled with the command).
        :param essential: a fault reaction that must be sent even without a durable journal record
            (see :meth:`~controller.commands.CommandIssuer.send_rate`); requested changes are not.
            Its orphan schedule is not judged: it restores or lowers what the pump holds.
        :param also: writes that must be durable with the command's pending record.
        :param program: a pump program (as the pump holds it) to hand over instead of a rate.
        :param concentration_ug_per_ml: the reservoir's drug when it is not yet the kernel's (a
            concentration change), for the orphan check, µg/mL.
        :param resend_after_read: a ``program`` that puts the programme's basal in (a resume, a titration; never
            a bolus): after a lost reply it is read back and sent once more, as a plain rate is
            (:meth:`~controller.commands.CommandIssuer.send_program`).
        :param judged: the orphan check's verdict on exactly this command, when the caller has just judged it
            (:meth:`_programme_form`): it is not judged again.

        A requested (not ``essential``) command is refused before sending while the reservoir holds another
        concentration than the kernel's (``CONCENTRATION_MISMATCH``, PRX-06): only a concentration change
        the kernel refused at a restart leaves them apart (:meth:`recover`, minimum rate until then).
        """
        self._accrue()
        self.orphan_refused = ()
        held_ug_per_ml, judged_ug_per_ml = self.accounting.concentration_ug_per_ml, self.gate.concentration_ug_per_ml
        if not essential and concentration_ug_per_ml is None and self.mode is not Mode.IDLE \
                and held_ug_per_ml != judged_ug_per_ml:
            # PRX-06: the refill record holds another drug than the kernel judges (a change refused at a restart).
            self.orphan_refused = (CONCENTRATION_MISMATCH,)
            self._emit("denied", action=cause, reasons=[CONCENTRATION_MISMATCH])
            return ProgramOutcome(ProgramResult.KEPT_OLD, self.committed_rate_nl_per_h, None, None, False,
                                  f"refused before sending: the reservoir holds {held_ug_per_ml} µg/mL, the kernel "
                                  f"judges {judged_ug_per_ml} µg/mL (PRX-06)", reasons=self.orphan_refused)
        if not essential:
            schedule = orphan_of_rate(rate_nl_per_h) if program is None else orphan_of_program(program)
            refused = judged
            if refused is None:
                # During a concentration change the catheter's old drug decides what leaves the tip.
                catheter = (self.accounting.catheter.segments
                            if concentration_ug_per_ml is not None or self.transit is not None else None)
                refused = self.gate.orphan_refusals(schedule, self.now_ms(),
                                                    concentration_ug_per_ml=concentration_ug_per_ml, catheter=catheter)
            if refused:
                self.orphan_refused = refused
                self._emit("denied", action=cause, reasons=list(refused))
                return ProgramOutcome(ProgramResult.KEPT_OLD, self.committed_rate_nl_per_h, None, None, False,
                                      f"refused before sending: its orphan schedule {schedule} fails "
                                      f"{', '.join(refused)}", reasons=refused)
        if program is not None:
            outcome = self.commands.send_program(program, cause=cause, essential=essential, also=also,
                                                 resend_after_read=resend_after_read)
        else:
            previous = self.committed_rate_nl_per_h if self.committed_rate_nl_per_h else None
            outcome = self.commands.send_rate(rate_nl_per_h, previous_nl_per_h=previous, cause=cause,
                                              essential=essential, also=also)
        if outcome.withheld:
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
        if outcome.result is ProgramResult.UNKNOWN:
            # Still uncertain after reconciling: the pump's state is unknown until a read settles it. A reply
            # lost on the way that reconciliation settled (a verified commit, a refusal) leaves nothing unknown;
            # the journal keeps it as an uncertain exchange.
            self.alarms.raise_alarm(AlarmCode.THERAPY_STATUS_UNKNOWN, detail=outcome.detail)
            self._emit("fault", fault=FaultCode.UNCERTAIN_DELIVERY.value, reaction=Reaction.CONTINUE.value,
                       alarm=AlarmCode.THERAPY_STATUS_UNKNOWN.value, detail=outcome.detail)
        elif outcome.uncertain and not self.alarms.is_active(AlarmCode.COMMS_DEGRADED):
            self.alarms.raise_alarm(AlarmCode.COMMS_DEGRADED,
                                    detail=f"a reply was lost; the pump's state was read back and settled ({outcome.detail})")
        if outcome.result is ProgramResult.COMMITTED and outcome.rate_nl_per_h is not None \
                and self.alarms.is_active(AlarmCode.THERAPY_STATUS_UNKNOWN):
            self.alarms.clear(AlarmCode.THERAPY_STATUS_UNKNOWN, detail="rate verified")
        if outcome.result is ProgramResult.KEPT_OLD or (outcome.result is ProgramResult.REJECTED_BY_PUMP and (
                outcome.status is None or outcome.status.alarm is None)):
            # Refused, or the pump would not start without saying why: the old programme is all it holds.
            self.alarms.raise_alarm(AlarmCode.PUMP_PROGRAM_REJECTED, detail=outcome.detail)
        if outcome.result is ProgramResult.REJECTED_BY_PUMP and outcome.status is not None \
                and outcome.status.alarm is not None:
            for alarm in dict.fromkeys([*self.commands.drain_driver_alarms(), outcome.status.alarm]):
                self._pump_alarm(alarm)

    # -- therapy changes (each from an authorised decision) ----------------------------------------------------

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
        stale = self.commands.drain_driver_alarms()
        if stale:
            # Alarms from before therapy (the power-up reset at connect): already acknowledged; noted only.
            self._emit("alarms_before_therapy", alarms=[a.value for a in stale])
        # From now on every commit carries this loop's resume point (never before: an idle loop built on a
        # store must not overwrite the resume point a restart has yet to read).
        self.store.resume_point_source = self._resume_point
        acc = self.accounting
        acc.start(fill_nl, concentration_ug_per_ml, self.clock.utc_now(), dead_volume_nl=self.config.dead_volume_nl,
                  catheter_primed=catheter_primed)
        dispensed = self.commands.read_dispensed()
        acc.last_counter_nl = dispensed.infused_nl if dispensed is not None else None
        now = self.now_ms()
        acc.accrual_ms = now
        self.schedule.last_poll_ms = now
        self._last_confirmed_ms = self._delivery_seen_ms = now
        self.schedule.next_poll_ms = now + self.config.poll_interval_ms
        program, judged = self._programme_form(decision.programme, now)
        outcome = self._program(decision.rate_nl_per_h, decision, cause="start_therapy", program=program,
                                judged=judged)
        if outcome.committed:
            self.mode = Mode.RUNNING
            self.basal_rate_nl_per_h = decision.rate_nl_per_h
            self.discontinue_authorised = False
            # A starting flex programme (authorised as a whole) changes rate at its boundaries from now.
            programme = decision.programme
            self.programme = programme if _keeps_programme(programme) else None
            self.schedule.boundary_from_ms = now
        self.checkpoint()
        return outcome

    def set_programme(self, decision: GateDecision) -> ProgramOutcome:
        """Put an authorised flex programme in effect: its current step now, the others at their boundaries."""
        if self.mode is not Mode.RUNNING:
            raise StateError(f"no programme change in mode {self.mode.value}")
        self._end_pump_held_bolus("programme change")
        self.concentration_change.settle()  # first: the programme is scaled for the drug in the catheter now
        now = self.now_ms()
        rate = decision.programme.rate_at(now)
        extra = self.bolus.extra_rate_nl_per_h if self.bolus is not None else 0
        program, judged = self._programme_form(decision.programme, now) if extra == 0 else (None, None)
        # The step's program (a transit program, a step program) puts the programme's basal in, never a bolus.
        outcome = self._program(self._pump_rate(rate) + extra, decision, cause="programme", program=program,
                                judged=judged, resend_after_read=True)
        if outcome.committed:
            self.basal_rate_nl_per_h = rate
            self.programme = decision.programme if _keeps_programme(decision.programme) else None
            self.schedule.boundary_from_ms = now
        self.checkpoint()
        return outcome

    def change_basal(self, decision: GateDecision) -> ProgramOutcome:
        """Program a new authorised basal rate (titration, taper, programme step, resume)."""
        if self.mode is Mode.DISCONTINUED or self.mode is Mode.IDLE:
            raise StateError(f"no therapy running (mode {self.mode.value})")
        self._end_pump_held_bolus("basal change")
        extra = self.bolus.extra_rate_nl_per_h if self.bolus is not None else 0
        program = self._basal_program(decision.rate_nl_per_h, extra)  # first: it may end a flushed transit
        # A basal program after a lost reply is read back and sent once more, as a plain rate is (never a bolus).
        outcome = self._program(self._pump_rate(decision.rate_nl_per_h) + extra, decision, cause="basal_change",
                                program=program, resend_after_read=True)
        if outcome.committed:
            self.basal_rate_nl_per_h = decision.rate_nl_per_h
            self.programme = None
            if self.mode is Mode.MINIMUM_RATE:
                self.alarms.clear(AlarmCode.MINIMUM_RATE_MODE, detail="clinician programme resumed")
            self.mode = Mode.RUNNING
        self.checkpoint()
        return outcome

    def _bolus_program_for(self, volume_nl: int, extra_nl_per_h: int, duration_ms: int) -> PumpProgram | None:
        """The program that gives a bolus and returns to basal by itself, as the pump holds it; None without programs.

        Phase 1 runs basal plus the bolus's extra rate for the bolus volume plus the basal over its
        duration, as the pump's number format holds it at or below that; phase 2 is the basal rate,
        continuous. None also when the pump cannot represent it (then the bolus is an extra rate the
        loop ends, as on a pump without programs).
        """
        if not self.commands.holds_programs():
            return None
        basal = self.pump_basal_nl_per_h
        wanted_nl = asked_nl = volume_nl + basal * duration_ms // MS_PER_H
        below_nl = 0
        try:
            for _ in range(16):
                held = self.pump.program_as_held(PumpProgram((ProgramPhase(basal + extra_nl_per_h, asked_nl),
                                                              ProgramPhase(basal))))
                over = held.phases[0].volume_nl - wanted_nl
                if over <= 0:
                    return held  # never more than authorised: ask lower until the number format rounds down
                below_nl = max(2 * below_nl, over)
                asked_nl = wanted_nl - below_nl
        except (CapabilityError, ConfigError, HalError):
            pass
        return None

    def start_bolus(self, kind: DeliveryKind, decision: GateDecision, duration_ms: int) -> BolusRecord | None:
        """Deliver an authorised bolus: on a pump that holds programs, a program that ends it by itself
        (:meth:`_bolus_program_for`); otherwise an extra rate for ``duration_ms`` that the loop ends.

        The kernel authorised the bolus; the orphan check (:mod:`controller.program`) judges the whole
        program before it is sent. The bolus record and its command's pending record are durable, with the rate command's,
        *before* anything is sent; the bolus is never re-sent: after a lost reply the state is
        reconciled and the record closed from the counter.

        :return: the stored record, or None if the pump could not take the bolus rate.
        """
        check_bolus_start(self, kind, duration_ms)
        self.concentration_change.settle()  # first: the basal under the bolus is scaled for the drug in the catheter now
        volume_nl = decision.volume_nl
        extra = -(-volume_nl * MS_PER_H // duration_ms)  # ceiling: the bolus ends by time, not early
        now = self.now_ms()
        record = BolusRecord(bolus_id=uuid.uuid4().hex, kind=kind.label, dose_ng=decision.dose_ng,
                             volume_nl=volume_nl, status="pending", requested_ms=now)
        self._accrue()
        end_ms = now + -(-volume_nl * MS_PER_H // extra)
        run = BolusRun(record.bolus_id, kind, decision.dose_ng, volume_nl, extra, now, end_ms,
                       committed_pg=units.mass_pg_for_volume(volume_nl, self.concentration_ug_per_ml))

        def records() -> None:
            self.store.add_bolus(record)
            self.commands.begin_bolus_record(record.bolus_id, f"bolus_{kind.label}",
                                             {"volume_nl": volume_nl, "dose_ng": decision.dose_ng,
                                              "duration_ms": duration_ms})

        program = self._bolus_program_for(volume_nl, extra, end_ms - now)
        self.bolus = run
        outcome = self._program(self.pump_basal_nl_per_h + extra, decision, cause=f"bolus_{kind.label}", also=records,
                                program=program)
        if outcome.withheld or outcome.detail.startswith("refused before sending"):
            self.bolus = None
            return None  # no durable record, no bolus (it could not be protected from repetition)
        if program is not None and outcome.result is not ProgramResult.KEPT_OLD:
            # The pump ends it: at the end of its first phase, as the pump holds it, from the commit on.
            self.bolus_program = program
            first = program.phases[0]
            run.start_ms = self.now_ms()  # after the programming stop
            run.end_ms = end_ms = run.start_ms + -(-first.volume_nl * MS_PER_H // first.rate_nl_per_h)
            run.extra_rate_nl_per_h = first.rate_nl_per_h - program.phases[1].rate_nl_per_h  # as the pump holds it
        self.commands.complete(record.bolus_id, "applied" if outcome.result is ProgramResult.COMMITTED else
                               "uncertain" if outcome.result is ProgramResult.UNKNOWN else "not_applied",
                               {"detail": outcome.detail})
        if outcome.result is ProgramResult.COMMITTED:
            self.commands.durably("bolus record", lambda: self.store.mark_running(record.bolus_id, now))
            self.schedule.next_poll_ms = min(self.schedule.next_poll_ms, now + BOLUS_POLL_MS)
            self._emit("bolus_start", kind=kind.label, bolus_id=record.bolus_id, dose_ng=decision.dose_ng,
                       volume_nl=volume_nl, end_ms=end_ms)
            return record
        if outcome.result is ProgramResult.UNKNOWN:
            # Uncertain: it may be running. Count it (lockout, commitment) and let the next poll
            # attribute whatever the counter shows; it is never re-sent.
            self.gate.apply(decision, self.now_ms())
            self._emit("bolus_uncertain", kind=kind.label, bolus_id=record.bolus_id)
            return record
        self.bolus = None
        self.commands.durably("bolus record", lambda: self.store.finish_bolus(
            record.bolus_id, now, 0, f"not started: {outcome.detail}"))
        self._emit("bolus_failed", kind=kind.label, bolus_id=record.bolus_id, detail=outcome.detail)
        return None

    def change_concentration(self, decision: GateDecision, concentration_ug_per_ml: int, fill_nl: int, *,
                             override: tuple[tuple[str, ...], str, str] | None = None,
                             shape: dict[str, Any] | None = None) -> ProgramOutcome:
        """Switch to a new concentration at a refill, with the transit of the old drug (issue #9).

        All or nothing: the pump is programmed first (the transit rate, through the kernel's
        decision); only when that is verified are the decision applied, the reservoir recorded as
        holding ``fill_nl`` of the new drug and the transit begun, in one durable resume point.
        Otherwise nothing has changed and the old programme keeps running.

        The transit: the catheter still holds the old drug, which leaves the tip first. Until it has
        all left, the pump runs the new programme's rate scaled by new / old concentration, the
        volume rate the old drug needs for the same dose (so the tip sees neither the 25 % dip of a
        500 -> 2000 µg/mL change nor the 4x spike of 2000 -> 500); the poll that finds the catheter
        flushed (:meth:`ConcentrationChange.check`) puts the new rate in. However long it takes, it is never
        cut short, and it survives a restart (it is in the resume point).

        A controller death inside it (PRX-06, RES-04): before anything is sent, the change itself (old and new
        concentration, fill, start, rate, transit plan, the pump program) goes into ``therapy_state``
        (:data:`CONCENTRATION_CHANGE_KEY`), durable with the program's pending record; it is dropped as soon
        as the outcome is known, by the commit that applies the change, or after a refusal by a commit of
        its own before the refusal is returned (the clinician told "refused" keeps the old drug in). A
        restart that finds it completes the change (:meth:`recover`): the old programme's volume rate never
        runs on the new drug, and the change is never left half applied.

        :param decision: the kernel's authorisation of the new programme with its transit plan.
        :param concentration_ug_per_ml: the new drug's concentration, µg/mL.
        :param fill_nl: the reservoir volume after the refill, nL.
        :param override: the prescription's signed soft-limit overrides the kernel's decision took (kept in the
            intent: a restart decides the change again with them, and with no other).
        :param shape: a flex or periodic-bolus programme's ``steps`` and ``periodic_boluses`` at the new
            concentration as the gate took them (kept in the intent likewise). Its step goes to the pump in the
            form a flex step takes mid-transit (:meth:`_programme_form`: each phase split at the old drug's
            front by volume), so the pump left alone keeps every step's and bolus's dose at the tip.
        :raises StateError: when therapy is not running or a transit is already under way (nothing changed).
        """
        # A missed refill's interruption (the caller, Therapy, checks it is that one): the minimum rate, or the
        # stop at confirmed empty. The catheter still holds the old drug either way: the stop left it in place.
        resuming = self.mode in (Mode.MINIMUM_RATE, Mode.STOPPED_FAULT)
        if self.mode is not Mode.RUNNING and not resuming:
            raise StateError(f"no concentration change in mode {self.mode.value}")
        if self.transit is not None:
            raise StateError("a concentration change is still crossing the catheter")
        programme = decision.programme
        if programme is None:
            raise StateError("a concentration change needs the new programme")
        if self.bolus is not None:
            self._end_bolus("ended by a concentration change")
        now = self.now_ms()
        transit = Transit(self.concentration_ug_per_ml, concentration_ug_per_ml, now)
        judged: tuple[str, ...] | None = None
        if _keeps_programme(programme):
            rate = programme.rate_at(now)
            # The forms are the transit's, judged on the new drug behind the old.
            with self.concentration_change.assuming(transit):
                program, judged = self._programme_form(programme, now, reservoir_ug_per_ml=concentration_ug_per_ml)
        else:
            rate = decision.rate_nl_per_h
            program = self.concentration_change.program_for(transit, rate)
        # Durable with the program's pending record, before anything is sent: a restart completes the change.
        self.therapy_state[CONCENTRATION_CHANGE_KEY] = self.concentration_change.intent(
            transit, fill_nl=fill_nl, fill_utc=self.clock.utc_now(), rate_nl_per_h=rate, decision=decision,
            override=override, shape=shape, program=program, from_minimum_rate=self.mode is Mode.MINIMUM_RATE,
            from_confirmed_empty=self.mode is Mode.STOPPED_FAULT)
        outcome = self._program(transit.pump_rate_nl_per_h(rate), decision, cause="concentration_change",
                                program=program, concentration_ug_per_ml=concentration_ug_per_ml, judged=judged)
        del self.therapy_state[CONCENTRATION_CHANGE_KEY]
        if not outcome.committed:
            if not self.orphan_refused and not outcome.withheld:
                # The refusal is durable before anyone hears of it: a restart must not complete the change.
                self.checkpoint(durable=True)
            return outcome  # nothing applied: the reservoir and the programme are as they were
        self.basal_rate_nl_per_h = rate
        self.programme = programme if _keeps_programme(programme) else None
        self.schedule.boundary_from_ms = now
        self.concentration_change.begin(transit)
        if resuming:
            self._leave_minimum_rate("a refill at a new concentration resumed therapy")
        self._record_fill(fill_nl, concentration_ug_per_ml)
        self.concentration_change.announce(rate)
        self.checkpoint(durable=True)
        return outcome

    def _basal_program(self, programme_rate_nl_per_h: int, extra_nl_per_h: int,
                       programme: Any = None) -> PumpProgram | None:
        """The program that puts a basal rate in during a concentration transit: it ends the transit by itself;
        or that puts a flex step back in the form the pump leaves by itself.

        Used for every command that puts the programme's rate on the pump mid-transit: a basal change (a
        titration, a taper), and the fault reactions that resume delivery (:meth:`_resume_programme`,
        :meth:`_reprogram_current`, :meth:`resume_after_fault`). Sent as a plain rate, the pump would keep
        the transit rate until the controller could send the new one: a link down at the end of the transit
        then gives the new drug at the old drug's volume rate (a quarter of the dose after 2000 -> 500 µg/mL,
        four times it after 500 -> 2000), found by the clinical adversary. None outside a transit (and a
        flex step), with a bolus on top, where the pump holds no programs, or when the counter cannot be read now (a plain rate
        then, which the loop ends from the counter as before).

        A restore or a resume of a flex programme's step (``programme``, whose rate now is
        ``programme_rate_nl_per_h``) goes in the step's form (:meth:`_programme_form`), transit or not: as a
        plain rate a high step was held for good once the controller was gone (900 µg/day at the tip in 24 h
        against a 600 µg cap after a stop and its resume in the high step, then a controller death).

        Minimum-rate mode is not sent this way, by decision: the minimum rate is a volume rate fixed by the
        prescription (the kernel takes no other), the same before and after the old drug's front, so there is
        nothing for the pump to end.

        :param programme_rate_nl_per_h: the programme's rate at the reservoir's (new) concentration, nL/h.
        :param extra_nl_per_h: a running bolus's extra rate on top, nL/h.
        :param programme: the flex programme kept in effect, or None.
        """
        # Phase 1 is the old drug still ahead of the new: counted from the counter now, not at the last poll
        # (up to a poll interval of flow ago, which would keep the transit rate that much too long).
        if not self.concentration_change.settle() or extra_nl_per_h:
            return None
        now = self.now_ms()
        step = _keeps_programme(programme) and programme.rate_at(now) == programme_rate_nl_per_h
        if (not step and self.transit is None) or not self.commands.holds_programs():
            return None
        if step:
            return self._programme_form(programme, now)[0]
        return self.concentration_change.program_for(self.transit, programme_rate_nl_per_h)

    def _pushing_nl_per_h(self) -> int:
        """The verified rate the pump is delivering now, nL/h; 0 when stopped or uncertain."""
        return (self.committed_rate_nl_per_h or 0) if self._delivering() else 0

    def _transit_ended(self, send: bool) -> None:
        """A transit has ended (:meth:`ConcentrationChange.end`); with ``send``, put the programme's rate for the
        new drug on the pump (without, the caller is about to send a rate: the transit ended first so that rate
        is the new drug's). Then checkpoint."""
        if send and self.mode is Mode.RUNNING and not self.gate.interrupted:
            self._accrue()
            self._end_pump_held_bolus("concentration transit end")
            extra = self.bolus.extra_rate_nl_per_h if self.bolus is not None else 0
            # A step the pump must leave by itself goes in its step program again, not as a plain rate held
            # for good (a high step past the 24 h cap once the controller is gone). It puts the programme's basal in
            # (never a bolus): after a lost reply it is read back and sent once more.
            program = self._programme_form(self.programme, self.now_ms())[0] if extra == 0 else None
            if program is not None:
                outcome = self.commands.send_program(program, cause="concentration transit over", essential=True,
                                                     resend_after_read=True)
            else:
                outcome = self.commands.send_rate(self.basal_rate_nl_per_h + extra, previous_nl_per_h=None,
                                                  cause="concentration transit over", essential=True)
            self._after_program(outcome, "concentration transit over")
        self.checkpoint()

    def _end_bolus(self, why: str) -> None:
        run = self.bolus
        if run is None:
            return
        now = self.now_ms()
        if self.bolus_program is not None and why == "complete" and not self._bolus_phase_over(run, now):
            return
        dispensed = self.commands.read_dispensed()
        if dispensed is not None:
            self._reconcile(dispensed.infused_nl)
        self.bolus = None
        self.concentration_change.settle()  # the basal sent back is scaled for the drug in the catheter now
        if run.committed_pg:
            self.gate.release_bolus(run.kind, run.committed_pg)
        program, self.bolus_program = self.bolus_program, None
        if program is not None and why == "complete":
            # The pump ended it by itself and runs the basal phase: nothing to send.
            self.commands.committed_rate_nl_per_h = program.phases[-1].rate_nl_per_h
        elif program is not None and self.mode is Mode.RUNNING:
            outcome = self.commands.send_program(PumpProgram((ProgramPhase(self.pump_basal_nl_per_h),)),
                                                 cause=f"bolus_end: {why}", essential=True)
            self._after_program(outcome, f"bolus end ({why})")
        elif self.mode is Mode.RUNNING:
            outcome = self.commands.send_rate(self.pump_basal_nl_per_h, previous_nl_per_h=None,
                                              cause=f"bolus_end: {why}", essential=True)
            self._after_program(outcome, f"bolus end ({why})")
        detail = why if why == "complete" else f"{why}; partial: {describe_volume_nl(run.attributed_nl)} of {describe_volume_nl(run.volume_nl)} delivered"
        # Nothing counted by a readable counter: the bolus did not run (e.g. ended by a fault at once).
        self.commands.complete(run.bolus_id,
                               "not_applied" if dispensed is not None and run.attributed_nl == 0 else "applied",
                               {"detail": f"delivery reconciled from the pump counter: {detail}"})

        def close_record() -> None:
            # Durable with the resume point that no longer holds the bolus: a restart must never
            # find it open against a counter baseline from after it ended.
            with self.store.transaction():
                self.store.finish_bolus(run.bolus_id, now, run.attributed_nl, detail)
                self._stage_resume_point()

        self.commands.durably("bolus record", close_record)
        self._emit("bolus_end", kind=run.kind.label, bolus_id=run.bolus_id, delivered_nl=run.attributed_nl,
                   volume_nl=run.volume_nl, detail=detail)
        if run.kind is DeliveryKind.PRIMING:
            self._check_primed(f"{describe_volume_nl(run.attributed_nl)} of {describe_volume_nl(run.volume_nl)} "
                               f"delivered ({why})")

    def _bolus_phase_over(self, run: BolusRun, now: int) -> bool:
        """Whether the pump has left the bolus phase of its program (read from the pump: ``PHN``).

        Not yet (its volume is a little late, or the pump cannot be read): the end is looked at
        again shortly, never commanded.
        """
        phase = self.commands.call(self.pump.read_phase)
        if phase is not None:
            self.commands.note_phase(phase)
        if phase is not None and phase >= 2:
            return True
        run.end_ms = now + BOLUS_END_RECHECK_MS
        return False

    def _end_pump_held_bolus(self, why: str) -> None:
        """End a bolus the pump's program holds before the basal changes under it.

        The program returns to the basal it was written with; a new basal would be stale the
        moment the bolus phase ended, so the bolus ends (partial, logged) and the new rate follows.
        """
        if self.bolus_program is not None:
            self._end_bolus(f"ended by a {why}")

    def _check_primed(self, how: str) -> None:
        """After a priming ends (or when delivery may have pushed the saline out): is there drug at the tip?

        A priming cut short (a stall, a power cycle, a stop found after a link loss, a controller restart
        that found the pump stopped) leaves saline in the catheter: no drug reaches the tip until the basal
        has pushed it out, and the implant is not complete. That is PRIMING_INCOMPLETE (its alarm
        CATHETER_NOT_PRIMED, high priority), the same state as a refused priming: a concentration change is
        refused (``CATHETER_NOT_PRIMED``) until a clinician re-primes (:meth:`controller.therapy.Therapy.prime`).
        The condition ends when the catheter model holds no saline (a re-prime, or the basal pushed it out).
        Judged on the catheter model (the counter through the dead volume), not on the bolus's own end.

        :param how: what happened to the priming (journalled with the alarm).
        """
        saline_nl = self.saline_in_catheter_nl
        if saline_nl:
            rate = self.pump_basal_nl_per_h if self.mode is Mode.RUNNING else 0
            wait = (f"at {units.describe_rate_nl_per_h(rate)} no drug reaches the tip for "
                    f"{reservoir_math.transit_delay_ms(saline_nl, rate) / MS_PER_H:.1f} h" if rate else
                    "no drug reaches the tip while the pump is stopped")
            self._fault(FaultCode.PRIMING_INCOMPLETE,
                        f"priming incomplete: {how}; the catheter still holds {describe_volume_nl(saline_nl)} of "
                        f"saline, {wait}; the implant is not complete: re-prime the catheter")
        elif self.alarms.is_active(AlarmCode.CATHETER_NOT_PRIMED):
            self.alarms.clear(AlarmCode.CATHETER_NOT_PRIMED, detail=f"the catheter holds drug to the tip ({how})")

    def stop_bolus(self, why: str) -> None:
        """Stop a running bolus now (the partial amount is logged)."""
        self._end_bolus(why)

    def set_reservoir(self, fill_nl: int, concentration_ug_per_ml: int) -> None:
        """Record a refill at the concentration in use: the reservoir now holds ``fill_nl``.

        A new concentration goes through :meth:`change_concentration` (programme and transit with it).

        :raises StateError: for a concentration other than the one in use (nothing changed).
        """
        if self.mode is not Mode.IDLE and concentration_ug_per_ml != self.concentration_ug_per_ml:
            raise StateError(f"a refill at {concentration_ug_per_ml} µg/mL is a concentration change "
                             f"(in use: {self.concentration_ug_per_ml} µg/mL)")
        if self.mode is not Mode.IDLE:
            self.poll()  # everything delivered so far counts against the old fill
        self._record_fill(fill_nl, concentration_ug_per_ml)
        self.checkpoint()

    def discontinue_now(self, decision: GateDecision) -> bool:
        """Stop delivery after an authorised discontinue (the end of a taper, or an emergency)."""
        if not decision.allowed:
            raise StateError("discontinue was not authorised")
        if self.bolus is not None:
            self._end_bolus("ended by discontinue")
        self._accrue()
        self.discontinue_authorised = True
        stopped = self.commands.send_stop("discontinue")
        self._drain_hal_errors()
        self.gate.apply(decision, self.now_ms())
        self.tip_watch.reset()
        self.mode = Mode.DISCONTINUED
        self.basal_rate_nl_per_h = 0
        self._emit("discontinued", confirmed=stopped)
        self.checkpoint()
        return stopped

    def hold_for_procedure(self, decision: GateDecision) -> bool:
        """Stop delivery for a guided procedure's authorised zero-rate hold (SAFE-05), the kernel's decision applied.

        Like a discontinue it sends one journalled stop; unlike one the programme stays the kernel's projection
        and the interruption clock runs: delivery comes back only by a resume under the restart rule
        (:meth:`resume_after_fault`, from :meth:`controller.therapy.Therapy.end_procedure`). Until then the loop is
        in :attr:`Mode.PROCEDURE`: each poll reads and reconciles the pump and commands nothing.

        :param decision: the kernel's allowed ``PROCEDURE_STOP`` decision.
        :return: whether a status read confirmed the stop.
        :raises StateError: for a decision the kernel did not allow, or outside RUNNING (nothing changed).
        """
        if not decision.allowed:
            raise StateError("the procedure's zero-rate hold was not authorised")
        if self.mode is not Mode.RUNNING:
            raise StateError(f"no procedure hold in mode {self.mode.value}")
        if self.bolus is not None:
            self._end_bolus("ended by a procedure's zero-rate hold")
        self._accrue()
        stopped = self.commands.send_stop("procedure")
        self._drain_hal_errors()
        now = self.now_ms()
        self.gate.apply(decision, now)
        self.mode = Mode.PROCEDURE
        if self._interrupted_since_ms is None:
            self._begin_interruption(now)
        self._emit("procedure_hold", confirmed=stopped)
        self.checkpoint()
        return stopped

    def resume_after_fault(self, decision: GateDecision) -> ProgramOutcome | None:
        """After a STOP reaction and a clinician's acknowledgement, or at the end of a procedure's zero-rate hold:
        clear the pump alarm and restart.

        :param decision: the kernel's authorisation of the restart rate (the caller chooses the
            titration dose after a long interruption).
        """
        if self.mode not in (Mode.STOPPED_FAULT, Mode.MINIMUM_RATE, Mode.PROCEDURE):
            return None
        self._acknowledge_pump()
        # Read before the mode changes: what ran until now keeps its kind (minimum rate, or nothing).
        program = self._basal_program(decision.rate_nl_per_h, 0)
        self.mode = Mode.RUNNING
        outcome = self._program(self._pump_rate(decision.rate_nl_per_h), decision, cause="resume_after_fault",
                                program=program, resend_after_read=True)
        if outcome.committed:
            self.basal_rate_nl_per_h = decision.rate_nl_per_h
            self.programme = None
            if self.alarms.is_active(AlarmCode.MINIMUM_RATE_MODE):
                self.alarms.clear(AlarmCode.MINIMUM_RATE_MODE, detail="therapy resumed")
        else:
            self.mode = Mode.STOPPED_FAULT
        self.checkpoint()
        return outcome

    def resume_at_minimum_rate(self, reason: str) -> bool:
        """After a STOP reaction and a clinician's acknowledgement, when the kernel will not yet allow the resume dose:
        clear the pump alarm and run the minimum rate (SAFE-01: a stop is not a safe state). Returns success."""
        if self.mode is not Mode.STOPPED_FAULT:
            return False
        self._acknowledge_pump()
        return self.enter_minimum_rate(reason)

    def _begin_interruption(self, since_ms: int) -> None:
        """Delivery has been interrupted since controller time ``since_ms`` (a stop, minimum rate)."""
        self._interrupted_since_ms = since_ms
        back = timedelta(milliseconds=max(0, self.now_ms() - since_ms))
        self._interrupted_since_utc = (self.clock.utc_now() - back).isoformat()

    def _end_interruption(self) -> None:
        self._interrupted_since_ms = None
        self._interrupted_since_utc = None
        self._interruption_length_unknown = False

    def interruption_ms(self) -> int:
        """How long delivery has been interrupted, ms (0 if it is not): the longest of what controller time,
        the wall clock and a reboot of unknown length say (the restart rule's conservative side)."""
        if self._interrupted_since_ms is None:
            return 0
        longest = self.now_ms() - self._interrupted_since_ms
        if self._interrupted_since_utc is not None:
            wall_ms = int((self.clock.utc_now() - datetime.fromisoformat(self._interrupted_since_utc)).total_seconds()
                          * 1000)
            longest = max(longest, wall_ms)
        if self._interruption_length_unknown:
            longest = max(longest, self.config.restart_titration_after_ms + 1)
        return longest

    # -- durability -----------------------------------------------------------------------------------------

    def _resume_point(self) -> dict[str, Any]:
        return {
            "version": RESUME_POINT_VERSION,
            "now_ms": self.now_ms(),
            "utc": self.clock.utc_now().isoformat(),
            "mode": self.mode.value,
            "basal_rate_nl_per_h": self.basal_rate_nl_per_h,
            "programme": None if self.programme is None else [[list(x) for x in self.programme.steps],
                                                              self.programme.anchor_ms,
                                                              [list(b) for b in self.programme.periodic_boluses]],
            "last_poll_ms": self.schedule.last_poll_ms,
            "accounting": self.accounting.snapshot(),
            "discontinue_authorised": self.discontinue_authorised,
            "interrupted_since_ms": self._interrupted_since_ms,
            "interrupted_since_utc": self._interrupted_since_utc,
            "interruption_length_unknown": self._interruption_length_unknown,
            "committed_rate_nl_per_h": self.committed_rate_nl_per_h or 0,
            "therapy": dict(self.therapy_state),
            "gate": self.gate.snapshot(),
            "bolus": None if self.bolus is None else {"bolus_id": self.bolus.bolus_id,
                                                      "attributed_nl": self.bolus.attributed_nl},
            "bolus_program": None if self.bolus_program is None else [[p.rate_nl_per_h, p.volume_nl]
                                                                      for p in self.bolus_program.phases],
            "tip_watch": {"samples": [list(x) for x in self.tip_watch.samples], "armed": self.tip_watch.armed},
            "transit": self.concentration_change.snapshot(),
        }

    def _stage_resume_point(self) -> None:
        """Stage the resume point for the next commit (and the daily audit copy of the ledger).

        Once therapy has started the commit builds it (:meth:`Store.stage_resume_point`): once per commit.
        """
        now_ms = self.now_ms()
        if self.store.resume_point_source is None:
            self.store.save_resume_point(self._resume_point(), durable=False)
        else:
            self.store.stage_resume_point()
        if now_ms - self._last_ledger_snapshot_ms >= MS_PER_DAY:
            self.store.record_ledger_snapshot(self.gate.ledger_snapshot(), now_ms=now_ms, durable=False)
            self._last_ledger_snapshot_ms = now_ms

    def _commit_resume_point(self) -> None:
        """Commit the resume point now (built once, by the commit, once therapy has started)."""
        if self.store.resume_point_source is None:
            self.store.save_resume_point(self._resume_point())
        else:
            self.store.stage_resume_point(durable=True)

    def checkpoint(self, *, durable: bool = False) -> None:
        """Save the resume point: staged for the next commit, or committed now with ``durable``.

        A workflow whose success a clinician is told of calls this with ``durable=True`` before
        it returns (durable before acknowledged).
        """
        def write() -> None:
            self._stage_resume_point()
            if durable:
                self.store.flush()

        if self.commands.durably("checkpoint", write) and durable:
            self._last_durable_ms = self.now_ms()

    def commit_journal(self, what: str) -> None:
        """Commit what is staged in the journal now (a storage failure is alarmed, never raised), for a record
        that must be durable when no checkpoint follows (before the implant there is none)."""
        self.commands.durably(what, self.store.flush)

    def _moved_since(self, base_nl: int | None, counter_nl: int) -> int:
        """What the counter shows since ``base_nl`` (a reset or clear: everything it shows), nL."""
        if base_nl is None:
            return 0
        return counter_nl - base_nl if counter_nl >= base_nl else counter_nl

    def _pump_past_bolus_phase(self, body: dict[str, Any], sent_after: list[Any]) -> bool:
        """At restart: a bolus program was (or may have been) handed over, and the pump runs its basal phase."""
        programs = [r.params["phases"] for r in sent_after if r.kind == "program"]
        if body.get("bolus_program"):
            programs.append(body["bolus_program"])
        if not programs or any(len(p) != 2 or p[-1][0] != self.pump_basal_nl_per_h for p in programs):
            return False
        phase = self.commands.call(self.pump.read_phase)
        if phase is None or phase < 2:
            return False
        # The bolus program, in its last (basal) phase.
        self.commands.held_program = PumpProgram(tuple(ProgramPhase(int(r), int(v)) for r, v in programs[-1]))
        self.commands.note_phase(phase)
        return True

    def _bolus_program_at_restart(self, body: dict[str, Any], sent_after: list[Any],
                                  status: Any) -> tuple[str, int, int, int, int] | None:
        """At restart: the bolus program the pump verifiably runs, as ``(bolus ID, phase-1 rate nL/h, phase-1
        volume nL, basal rate nL/h, phase now)``; None when that is not certain.

        Certain only when the resume point holds the running bolus with its committed program, no rate
        command is unresolved since (nothing else can have been written), the pump infuses without an
        alarm, and its phase can be read (``PHN``).
        """
        program, running = body.get("bolus_program"), body.get("bolus") or {}
        if sent_after or not program or len(program) != 2 or not running.get("bolus_id"):
            return None
        (rate1, volume1), (rate2, _continuous) = program
        if status is None or status.alarm is not None or status.state is not PumpState.INFUSING \
                or rate2 != self.pump_basal_nl_per_h or rate1 <= rate2:
            return None
        phase = self.commands.call(self.pump.read_phase)
        if phase is None:
            return None
        self.commands.held_program = PumpProgram((ProgramPhase(int(rate1), int(volume1)), ProgramPhase(int(rate2))))
        self.commands.note_phase(phase)
        return running["bolus_id"], int(rate1), int(volume1), int(rate2), phase

    @staticmethod
    def _held_bolus_share(held: tuple[str, int, int, int, int], delta_nl: int, before_nl: int) -> int:
        """The bolus part of ``delta_nl`` counted since the resume point, by the program's split, nL.

        Phase 1 runs basal plus bolus at ``rate1``: of any volume it delivers, ``(rate1 - basal) / rate1``
        is bolus. Past phase 1, the bolus got all of its part of the phase-1 volume, whatever it had before.
        """
        _id, rate1, volume1, basal, phase = held
        program_bolus_nl = volume1 * (rate1 - basal) // rate1
        left_nl = max(0, program_bolus_nl - before_nl)
        return left_nl if phase >= 2 else min(left_nl, delta_nl * (rate1 - basal) // rate1)

    def _adopt_held_bolus(self, record: BolusRecord, held: tuple[str, int, int, int, int], got_nl: int) -> BolusRun:
        """Carry on with a bolus the pump's program still runs in its bolus phase, as if never interrupted."""
        _id, rate1, volume1, basal, _phase = held
        now = self.now_ms()
        done_nl = got_nl * rate1 // (rate1 - basal)  # phase-1 volume delivered so far, by the same split
        left_ms = -(-max(0, volume1 - done_nl) * MS_PER_H // rate1)
        kind = DeliveryKind.from_label(record.kind)
        run = BolusRun(record.bolus_id, kind, record.dose_ng, record.volume_nl, rate1 - basal,
                       now - done_nl * MS_PER_H // rate1, now + left_ms, attributed_nl=got_nl,
                       committed_pg=units.mass_pg_for_volume(max(0, record.volume_nl - got_nl),
                                                             self.concentration_ug_per_ml))
        self.bolus = run
        self.bolus_program = PumpProgram((ProgramPhase(rate1, volume1), ProgramPhase(basal)))
        self.commands.committed_rate_nl_per_h = rate1
        self.schedule.next_poll_ms = min(self.schedule.next_poll_ms, now + BOLUS_POLL_MS)
        return run

    def _complete_change_at_restart(self, change: dict[str, Any], now: int) -> tuple[str, ...]:
        """At restart: apply a concentration change whose program was handed over (or about to be) when the
        controller died, before anything reconciles or is sent (PRX-06, RES-04).

        Its fill is recorded and the kernel decides it again, now
        (:meth:`ConcentrationChange.complete_at_restart`); allowed, the programme, the basal rate and the transit
        of the old drug are the change's. The transit's start is the change's own when the pump is found running
        its program (:meth:`ConcentrationChange.adopt_program`), else now.

        :param change: the intent saved by :meth:`change_concentration` (µg/mL, nL, ms, nL/h).
        :param now: controller time, ms.
        :return: the kernel's reasons when it refuses (nothing but the fill is applied then); empty otherwise.
        """
        decision = self.concentration_change.complete_at_restart(change, now)
        if not decision.allowed:
            return decision.reasons or ("refused",)
        self.programme = decision.programme if _keeps_programme(decision.programme) else None
        self.basal_rate_nl_per_h = int(change["rate_nl_per_h"]) if self.programme is None \
            else self.programme.rate_at(now)
        if self.mode in (Mode.MINIMUM_RATE, Mode.STOPPED_FAULT):
            self._leave_minimum_rate("a refill at a new concentration resumed therapy (completed at restart)")
        return ()

    def _owed_minimum_rate(self) -> bool:
        """Enter the minimum rate a restart owes (:data:`MINIMUM_RATE_OWED_KEY`); whether one was owed.

        Owed while it cannot be commanded: nothing else is put back meanwhile (the loop's programme is the old
        drug's, the reservoir holds the new one).
        """
        owed = self.therapy_state.get(MINIMUM_RATE_OWED_KEY)
        if owed is None:
            return False
        if self.mode is Mode.MINIMUM_RATE or self.enter_minimum_rate(str(owed)):
            del self.therapy_state[MINIMUM_RATE_OWED_KEY]
            self.checkpoint(durable=True)
        return True

    def _leave_minimum_rate(self, detail: str) -> None:
        """Back to RUNNING from a missed refill's minimum rate or confirmed-empty stop, by an applied change that the
        kernel decided by the restart rule."""
        self.mode = Mode.RUNNING
        if self.alarms.is_active(AlarmCode.MINIMUM_RATE_MODE):
            self.alarms.clear(AlarmCode.MINIMUM_RATE_MODE, detail=detail)

    def recover(self) -> dict[str, Any]:
        """Resume after a crash or restart, before any therapy-changing command (PER-02, HAL-06).

        Restores the whole kernel state (24 h accounting, lockouts, dose history, interruptions)
        from the resume point, reads the pump, attributes the counter delta since the resume
        point, closes unfinished boluses from the counter without re-sending them, and puts the
        pump back on the committed programme if it was left at a bolus rate or stopped. With no
        resume point, the loop stays idle and sends nothing.

        **Time that cannot be fooled.** After a reboot (a new monotonic origin) the wall clock is
        not trusted for the rolling windows: it may have jumped either way. Controller time goes
        on by the least time that can have passed, the time the pump needed to deliver what its
        counter shows at the highest rate it held, and that delivery is placed as late as it can
        have happened (:meth:`~controller.gate.KernelGate.record_recovered`), so every 24 h window
        and lockout is at least as strict as the truth. An interruption that may have spanned the
        downtime counts as long (the restart rule's stricter side).

        If the kernel state cannot be read back, the controller keeps the programme in effect,
        raises CORRUPT_STATE_AT_STARTUP, and refuses increases and boluses (SAFE-04, PER-06).

        **A death inside a concentration change** (the resume point holds the change's intent,
        :meth:`change_concentration`): the reservoir holds the new drug, by the refill record, so the
        old programme is never put back. The fill is recorded before the counter is reconciled, the
        kernel decides the change afresh and it is applied with its transit
        (:meth:`_complete_change_at_restart`). A pump read back running the change's transit program
        (:meth:`ConcentrationChange.adopt_program`: phase by phase, in any of its phases) is taken over as it
        is, nothing sent; otherwise the transit program is sent by the usual restore (a fresh resume decision for a stopped pump). A
        change the kernel now refuses leaves minimum rate, also from a missed refill's confirmed-empty stop; with
        the pump unreadable it is owed (:data:`MINIMUM_RATE_OWED_KEY`, durable), THERAPY_STATUS_UNKNOWN and then
        the comms timeout are the alarm, nothing is sent, and the first poll that reads the pump enters it
        before anything else is put back (never the old programme on the new drug). Either way
        UNFINISHED_SESSION is raised (RES-04): the clinician never got the refill's confirmation. With no intent, nothing of the
        refill was durable and nothing reached the pump: the clinician repeats it.

        :return: a summary of what was found (for the journal and tests).
        """
        body = self.store.load_resume_point()
        if body is None:
            return {"resumed": False}
        if body.get("version") != RESUME_POINT_VERSION:
            raise ConfigError("resume_point.version", body.get("version"), f"{RESUME_POINT_VERSION}")
        acc = self.accounting
        acc.restore(body["accounting"])
        # The highest rate the pump can have held since: the resume point's, or a command sent after it.
        sent_after = [r for r in self.store.unresolved_commands() if r.kind in RATE_COMMAND_KINDS]
        held_rate = max([int(body.get("committed_rate_nl_per_h") or 0),
                         *(int(r.params.get("rate_nl_per_h", 0)) for r in sent_after)])
        # What the pump can have run since: the resume point's program or rate, or a command sent after it.
        held = [orphan_of_phases(body["bolus_program"]) if body.get("bolus_program")
                else orphan_of_rate(int(body.get("committed_rate_nl_per_h") or 0))]
        held += [orphan_of_phases(r.params["phases"]) if r.kind == "program" else
                 orphan_of_rate(int(r.params.get("rate_nl_per_h", 0))) for r in sent_after]
        committed_nl_per_h = int(body.get("committed_rate_nl_per_h") or 0)
        if body.get("transit") is not None and body["mode"] == Mode.RUNNING.value and committed_nl_per_h:
            # Mid-transit the pump holds the two-phase transit program (ConcentrationChange.program_for): with no
            # controller watching it goes on by itself, once the old drug ahead at the resume point has left, at the
            # programme's rate for the new drug, which neither the resume point's rate nor a command names.
            # Without it the least time was too long after a 2000 -> 500 µg/mL change: controller time 27 h ahead
            # of the truth after a 10 h reboot, and a raise let through against TIT-01.
            steps = (body.get("programme") or [[]])[0]
            after_nl_per_h = max([int(body["basal_rate_nl_per_h"]), *(int(step[2]) for step in steps)])
            old_nl = acc.catheter.volume_ahead_of_nl(int(body["transit"][1]))
            held.append(orphan_of_phases([[committed_nl_per_h, old_nl], [after_nl_per_h, 0]]))
            held_rate = max(held_rate, after_nl_per_h)
        status = self.commands.read_status()
        dispensed = self.commands.read_dispensed() if status is not None else None
        moved_nl = 0 if dispensed is None else self._moved_since(acc.last_counter_nl, dispensed.infused_nl)
        # The least time any of them needed to deliver what the counter shows.
        least_ms = min(s.least_time_ms(moved_nl) for s in held)
        saved_now = body["now_ms"]
        rebooted = self.clock.monotonic_ms() + self._time_offset_ms < saved_now
        if rebooted:
            self._time_offset_ms = saved_now + least_ms - self.clock.monotonic_ms()
        self.mode = Mode(body["mode"])
        self.basal_rate_nl_per_h = body["basal_rate_nl_per_h"]
        programme = body.get("programme")
        found: dict[str, Any] = {"resumed": True, "mode": self.mode.value, "closed_boluses": []}
        try:
            self.gate.restore(body["gate"], self.now_ms())
        except ConfigError as exc:
            found["kernel_history_lost"] = str(exc)
        self.programme = None if not programme else self.gate.make_programme(
            [tuple(x) for x in programme[0]], programme[1], periodic_boluses=[tuple(b) for b in programme[2]])
        self.discontinue_authorised = body["discontinue_authorised"]
        self._interrupted_since_ms = body["interrupted_since_ms"]
        self._interrupted_since_utc = body.get("interrupted_since_utc")
        self._interruption_length_unknown = bool(body.get("interruption_length_unknown"))
        self.therapy_state = dict(body["therapy"])
        self.tip_watch.samples = [(int(t), int(pg)) for t, pg in body["tip_watch"]["samples"]]
        self.tip_watch.armed = bool(body["tip_watch"]["armed"])
        self.concentration_change.restore(body.get("transit"))
        self.schedule.last_poll_ms = body["last_poll_ms"]
        now = self.now_ms()
        acc.accrual_ms = now
        self.schedule.next_poll_ms = now
        self.schedule.boundary_from_ms = now
        # Delivery is confirmed up to the least time the counter's volume took; no later.
        self._last_confirmed_ms = self._delivery_seen_ms = min(now, body["last_poll_ms"] + least_ms)
        if self.programme is not None:
            self.basal_rate_nl_per_h = self.programme.rate_at(now)
        if "kernel_history_lost" in found:
            self.gate.restore_degraded(acc.concentration_ug_per_ml or self.gate.concentration_ug_per_ml,
                                       self.programme, now)
            self._fault(FaultCode.CORRUPT_STATE_AT_STARTUP,
                        f"kernel history unreadable at restart ({found['kernel_history_lost']}); increases "
                        "and boluses refused, the programme in effect keeps running")
        change = self.therapy_state.pop(CONCENTRATION_CHANGE_KEY, None)
        change_refused: tuple[str, ...] = ()
        if change is not None and (self.mode is Mode.RUNNING or (
                self.mode is Mode.MINIMUM_RATE and change.get("from_minimum_rate")) or (
                self.mode is Mode.STOPPED_FAULT and change.get("from_confirmed_empty"))):
            change_refused = self._complete_change_at_restart(change, now)
            found["concentration_change"] = "refused" if change_refused else "completed"
        self.commands.committed_rate_nl_per_h = self.pump_basal_nl_per_h if self.mode is Mode.RUNNING else (
            self.config.minimum_rate_nl_per_h if self.mode is Mode.MINIMUM_RATE else 0)
        change_held = (change is not None and not change_refused
                       and self.concentration_change.adopt_program(change, status, sent_after))
        if change_held:
            found["concentration_change"] = "running"
        self.store.resume_point_source = self._resume_point  # restored: from now on every commit carries it
        open_boluses = [b for b in self.store.boluses() if b.status != "finished"]
        for record in open_boluses:
            # It may have started: count it for lockouts and the daily count, conservatively.
            self.gate.note_bolus_start(DeliveryKind.from_label(record.kind), record.requested_ms)
        held_bolus = self._bolus_program_at_restart(body, sent_after, status) if dispensed is not None else None
        continuing: BolusRun | None = None
        if dispensed is not None:
            # Everything since the resume point: attribute to the open bolus first (up to its volume), then basal;
            # a bolus the pump's program holds, by the program's own split (its phase 1 is basal plus bolus).
            delta = moved_nl
            shares_before: dict[DeliveryKind, int] = {}
            running = body.get("bolus") or {}
            for record in open_boluses:
                # Up to what remained of it at the resume point: what was counted before is in the ledger.
                before = running.get("attributed_nl", 0) if running.get("bolus_id") == record.bolus_id else 0
                share = min(delta, max(0, record.volume_nl - before))
                if held_bolus is not None and held_bolus[0] == record.bolus_id:
                    share = min(share, self._held_bolus_share(held_bolus, delta, before))
                kind = DeliveryKind.from_label(record.kind)
                acc.add_expected(kind, share)
                shares_before[kind] = shares_before.get(kind, 0) + share
                delta -= share
            if delta > 0:
                acc.add_expected(DeliveryKind.MINIMUM_RATE if self.mode is Mode.MINIMUM_RATE else DeliveryKind.BASAL,
                                 delta)
            acc.accrual_ms = now  # no further accrual: the shares above are the whole story
            _delta_nl, tip_pg = self._reconcile(
                dispensed.infused_nl, recovered=(min(body["last_poll_ms"], now), max(held_rate, self.pump_basal_nl_per_h)))
            # What left the tip while no controller watched is part of the patient's exposure: without it
            # the withdrawal watch would restart as if for a drug-naive patient.
            self.tip_watch.record(now, tip_pg)
            # That history was already reported by the previous instance's polls (if anyone was listening).
            acc.take_interval()
            for record in open_boluses:
                before = running.get("attributed_nl", 0) if running.get("bolus_id") == record.bolus_id else 0
                got = before + shares_before.get(DeliveryKind.from_label(record.kind), 0)
                if held_bolus is not None and held_bolus[0] == record.bolus_id and held_bolus[4] == 1:
                    # Still in the program's bolus phase: the pump ends it by itself; nothing is sent, nothing lost.
                    continuing = self._adopt_held_bolus(record, held_bolus, got)
                    continue
                self.commands.complete(record.bolus_id, "applied",
                                       {"detail": "closed after restart from the pump counter"})
                self.commands.durably("bolus record", lambda r=record, g=got: self.store.finish_bolus(
                    r.bolus_id, now, min(g, r.volume_nl), "closed after restart"))
                found["closed_boluses"].append(record.bolus_id)
                if record.kind == DeliveryKind.PRIMING.label:
                    self._check_primed(f"{describe_volume_nl(min(got, record.volume_nl))} of "
                                       f"{describe_volume_nl(record.volume_nl)} delivered (closed after a restart)")
        else:
            found["pump_unreachable"] = True
            self.alarms.raise_alarm(AlarmCode.THERAPY_STATUS_UNKNOWN, detail="pump unreachable at restart")
        not_delivering = status is None or status.alarm is not None or status.state is not PumpState.INFUSING
        if rebooted and (not_delivering or self.mode in (Mode.STOPPED_FAULT, Mode.MINIMUM_RATE)
                         or self._interrupted_since_ms is not None):
            # Neither clock says how long it has been: for the restart rule, as long as can be.
            self._interruption_length_unknown = True
        unresolved = self.commands.adopt_unresolved()
        if not unresolved and not open_boluses and not body.get("bolus_program") and body.get("transit") is None \
                and not body.get("programme"):  # a flex step may be held as a program (_programme_form)
            self.commands.resumed_in_last_phase()
        self._fault(FaultCode.CONTROLLER_DEATH,
                    f"restarted after an unclean stop; pump found "
                    f"{'unreadable' if status is None else status.state.value}, {describe_volume_nl(moved_nl)} "
                    "delivered meanwhile" + ("; a command's outcome was unknown" if unresolved else ""))
        if status is not None and self.commands.stops_unsettled:
            self.commands.settle_stops(status)
        if change is not None:
            self._fault(FaultCode.UNFINISHED_SESSION, self.concentration_change.report_at_restart(
                change, found.get("concentration_change"), change_refused))
        refused_note = "" if not change_refused else (
            f"the refill's concentration change to {change['new_ug_per_ml']} µg/mL could not be completed at restart "
            f"({','.join(change_refused)})")
        if change_refused and (status is None or self.mode is Mode.STOPPED_FAULT):
            # Unreadable: nothing can be commanded, and THERAPY_STATUS_UNKNOWN (then the comms timeout) is the
            # alarm; the first poll that reads the pump enters the minimum rate before anything else is put back.
            # Stopped at confirmed empty (its change refused): the reservoir is full now, the minimum rate is owed.
            self.therapy_state[MINIMUM_RATE_OWED_KEY] = refused_note
            if status is not None:
                self._owed_minimum_rate()
        if status is not None and self.mode in (Mode.RUNNING, Mode.MINIMUM_RATE):
            if status.alarm is not None:
                self._pump_alarm(status.alarm)
            elif change_refused:
                self.therapy_state[MINIMUM_RATE_OWED_KEY] = refused_note
                self._owed_minimum_rate()
            elif change_held:
                self._last_confirmed_ms = self._delivery_seen_ms = now
            elif open_boluses or unresolved or status.state is not PumpState.INFUSING:
                if status.state is not PumpState.INFUSING:
                    programming = [r.params.get("cause", "") for r in sent_after if r.kind == "program"]
                    self._fault(FaultCode.UNEXPLAINED_STOP, f"pump found {status.state.value} at restart" + (
                        f": the controller died inside the programming stop of a program ({programming[-1]}); "
                        "the last verified programme is resumed now" if programming else ""))
                elif continuing is not None:
                    self._last_confirmed_ms = now
                    found["bolus_continues"] = continuing.bolus_id
                elif self._pump_past_bolus_phase(body, sent_after):
                    # The pump's program ended the bolus by itself and runs its basal phase: nothing to send.
                    self._last_confirmed_ms = self._delivery_seen_ms = now
                else:
                    # The pump may still hold a bolus rate, or an unresolved command's: the committed programme.
                    self._reprogram_current("resume after restart")
            else:
                self._last_confirmed_ms = self._delivery_seen_ms = now
            if status.alarm is None and status.state is PumpState.INFUSING:
                # A transit the pump ended by itself while no controller watched ends here, before any command
                # can be scaled for the old drug that has left the catheter.
                self.concentration_change.check()
        self._drain_hal_errors()
        self._emit("recovered", **{k: v for k, v in found.items() if k != "closed_boluses"},
                   closed_boluses=len(found["closed_boluses"]))
        self.checkpoint(durable=True)
        return found

