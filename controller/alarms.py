"""Alarm conditions, their IEC 60601-1-8 priorities, and the manager that annunciates them.

Every :class:`AlarmCode` has exactly one row in :data:`ALARM_TABLE` giving its
:class:`Priority`, whether it latches, the operator text and the rationale for
the priority (ALM-01). The :class:`AlarmManager` keeps every active alarm:
with several active, :meth:`AlarmManager.highest` is the one annunciated and
the others stay queued, never dropped (ALM-04).

Latching (ALM-03): a latching alarm stays active until its condition has
cleared *and* an operator has acknowledged it, in either order. A
non-latching alarm goes when its condition clears. Every high-priority alarm
latches. Audio can be paused for at most :data:`AUDIO_PAUSE_MAX_S`; a new
alarm condition ends the pause. There is no permanent mute.

Every raise, clear, acknowledgement and audio pause is written to the journal
with its actor and time (ALM-06); after a restart :meth:`AlarmManager.restore`
replays those events so a latched alarm is still held. Annunciation comes first: if the journal
write fails, the alarm is still active, a :attr:`AlarmCode.JOURNAL_WRITE_FAILURE`
alarm is added, and the write error propagates to the caller.

::

    condition raised ---> ACTIVE(unacked) --ack--> ACTIVE(acked) --clear--> gone
                             |                                      ^
                             +--clear--> LATCHED(unacked) --ack-----+   (latching only;
                                                                          non-latching: clear -> gone)
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Protocol

from controller.audit import SYSTEM_ACTOR, Actor
from controller.tables import one_row_each
from hal.clock import NS_PER_S, Clock
from cython_ext.errors import ConfigError, StateError

#: Longest audio pause an operator may request, seconds (IEC 60601-1-8 practice: 2 min).
AUDIO_PAUSE_MAX_S = 120

_WITHDRAWAL_RISK = (
    "Risk of baclofen WITHDRAWAL: high fever, altered mental state, rebound spasticity and rigidity, "
    "which can progress to rhabdomyolysis, organ failure and death within 24-72 h. "
    "Restore intrathecal delivery or start the withdrawal protocol now."
)


class Priority(enum.IntEnum):
    """IEC 60601-1-8 alarm priority; a larger value is more urgent."""

    LOW = 1
    """Operator awareness (cyan/yellow steady, one pulse)."""
    MEDIUM = 2
    """Prompt operator response (yellow flashing, three pulses)."""
    HIGH = 3
    """Immediate operator response (red flashing, two bursts of five pulses)."""


class AlarmCode(enum.Enum):
    """Every alarm condition the controller can annunciate (values are stable journal codes)."""

    # high priority
    MOTOR_STALL = "motor_stall"
    OCCLUSION = "occlusion"
    THERAPY_INTERRUPTED = "therapy_interrupted"
    THERAPY_STATUS_UNKNOWN = "therapy_status_unknown"
    RESERVOIR_EMPTY = "reservoir_empty"
    DOSE_CAP_BREACH_ATTEMPT = "dose_cap_breach_attempt"
    OVER_DELIVERY_SUSPECTED = "over_delivery_suspected"
    INTEGRITY_ERROR = "integrity_error"
    JOURNAL_WRITE_FAILURE = "journal_write_failure"
    CORRUPT_STATE_AT_STARTUP = "corrupt_state_at_startup"
    PUMP_IDENTITY_MISMATCH = "pump_identity_mismatch"
    UNFINISHED_SESSION = "unfinished_session"
    PUMP_RESET = "pump_reset"
    ALARM_SYSTEM_FAILURE = "alarm_system_failure"
    WITHDRAWAL_RISK = "withdrawal_risk"
    CATHETER_NOT_PRIMED = "catheter_not_primed"
    IMPLANT_NOT_DONE = "implant_not_done"
    PROCEDURE_RESUME_FAILED = "procedure_resume_failed"
    PROCEDURE_OVERRUN = "procedure_overrun"
    # medium priority
    RESERVOIR_LOW = "reservoir_low"
    BATTERY_ERI = "battery_eri"
    COMMS_DEGRADED = "comms_degraded"
    REFILL_DISCREPANCY = "refill_discrepancy"
    UNDER_DELIVERY_SUSPECTED = "under_delivery_suspected"
    MINIMUM_RATE_MODE = "minimum_rate_mode"
    STORAGE_LOW = "storage_low"
    CLOCK_ANOMALY = "clock_anomaly"
    PUMP_PROGRAM_REJECTED = "pump_program_rejected"
    PROGRAMME_STEP_REFUSED = "programme_step_refused"
    PROCEDURE_IN_PROGRESS = "procedure_in_progress"
    RESTARTED_AT_STARTING_DOSE = "restarted_at_starting_dose"
    # low priority
    REFILL_DUE = "refill_due"
    BOLUS_DENIED = "bolus_denied"
    SOFT_LIMIT_OVERRIDDEN = "soft_limit_overridden"
    CONTROLLER_DEATH = "controller_death"
    INFO = "info"


@dataclass(frozen=True)
class AlarmSpec:
    """One row of the alarm table.

    :param code: the alarm condition.
    :param priority: its IEC 60601-1-8 priority.
    :param latching: True if it stays until cleared *and* acknowledged.
    :param message: operator text shown when it is annunciated.
    :param rationale: why it has this priority (ALM-01).
    """

    code: AlarmCode
    priority: Priority
    latching: bool
    message: str
    rationale: str


def _spec(code: AlarmCode, priority: Priority, message: str, rationale: str, *, latching: bool = False) -> AlarmSpec:
    return AlarmSpec(code, priority, latching or priority is Priority.HIGH, message, rationale)


_H, _M, _L = Priority.HIGH, Priority.MEDIUM, Priority.LOW

#: The alarm table (ALM-01): every :class:`AlarmCode` maps to exactly one :class:`AlarmSpec`.
ALARM_TABLE: Mapping[AlarmCode, AlarmSpec] = one_row_each(
    AlarmCode,
    lambda spec: spec.code,
    (
        _spec(
            AlarmCode.MOTOR_STALL,
            _H,
            "Pump motor stalled: baclofen is no longer being delivered. " + _WITHDRAWAL_RISK,
            "Delivery has stopped; withdrawal can kill within days (boxed warning, SynchroMed stall recalls).",
        ),
        _spec(
            AlarmCode.OCCLUSION,
            _H,
            "Occlusion: baclofen is not reaching the patient. " + _WITHDRAWAL_RISK,
            "Delivery stopped and pressure builds a bolus behind the blockage (IEC 60601-2-24 practice).",
        ),
        _spec(
            AlarmCode.THERAPY_INTERRUPTED,
            _H,
            "Therapy interrupted: the pump is not delivering baclofen. " + _WITHDRAWAL_RISK,
            "Unexplained stop; withdrawal risk (ALM-07, boxed warning).",
        ),
        _spec(
            AlarmCode.THERAPY_STATUS_UNKNOWN,
            _H,
            "Therapy status unknown: delivery has not been confirmed for too long. " + _WITHDRAWAL_RISK,
            "Unconfirmed delivery may be an interruption (ALM-07); the user may believe therapy runs when it does not.",
        ),
        _spec(
            AlarmCode.RESERVOIR_EMPTY,
            _H,
            "Reservoir empty: refill immediately; delivery is at minimum rate or stopped. " + _WITHDRAWAL_RISK,
            "Empty reservoir is the commonest cause of withdrawal (RES-05).",
        ),
        _spec(
            AlarmCode.DOSE_CAP_BREACH_ATTEMPT,
            _H,
            "A command that would exceed the daily dose cap was refused.",
            "Overdose risk: sedation, respiratory depression, coma (PRX-03/04).",
        ),
        _spec(
            AlarmCode.OVER_DELIVERY_SUSPECTED,
            _H,
            "Measured delivery exceeds the programme beyond tolerance; minimum-rate mode entered.",
            "Possible overdose in progress (G1).",
        ),
        _spec(
            AlarmCode.INTEGRITY_ERROR,
            _H,
            "Memory or data integrity error: stored settings or journal failed verification.",
            "Corrupt critical values can cause any delivery error (G34, PER-06).",
        ),
        _spec(
            AlarmCode.JOURNAL_WRITE_FAILURE,
            _H,
            "Journal write failed: safety records cannot be saved; therapy continues on the last programme.",
            "Without durable records, caps and lockouts cannot survive a restart (PER-01, PER-02).",
        ),
        _spec(
            AlarmCode.CORRUPT_STATE_AT_STARTUP,
            _H,
            "Stored state is missing or corrupt at start-up: no therapy change will be made until a clinician acts.",
            "Unknown state must not drive therapy (SAFE-04, PER-06).",
        ),
        _spec(
            AlarmCode.PUMP_IDENTITY_MISMATCH,
            _H,
            "Connected pump is not the one on record: no therapy change will be made until a clinician acts.",
            "History and programme of another pump would be wrong for this patient (lesson 5).",
        ),
        _spec(
            AlarmCode.UNFINISHED_SESSION,
            _H,
            "A programming or refill session was not finished; the last committed programme is kept.",
            "Unfinished sessions left pumps stopped and patients in withdrawal (RES-04, HSA 2021).",
        ),
        _spec(
            AlarmCode.PUMP_RESET,
            _H,
            "Pump reset or lost power: delivery was interrupted and is restarting at minimum rate. "
            + _WITHDRAWAL_RISK,
            "Interruption of unknown length; restarting at full dose is an overdose risk.",
        ),
        _spec(
            AlarmCode.ALARM_SYSTEM_FAILURE,
            _H,
            "Alarm system self-test failed: alarms may not be heard.",
            "An alarm that cannot sound is a failure to alarm (ALM-05).",
        ),
        _spec(
            AlarmCode.PROCEDURE_RESUME_FAILED,
            _H,
            "Therapy not verified running after the procedure: the pump may have FAILED TO RESTART (its read-back "
            "does not show it running at the commanded rate with its counter advancing). Check the pump now. "
            + _WITHDRAWAL_RISK,
            "MRI has left pumps stalled or failing to restart; the FDA asks for the pump to be checked after every "
            "MRI (SAFE-05 [S34], itb-clinical §4.1.4 [FDA-MRI17]). A pump left stopped is the withdrawal hazard of "
            "the boxed warning.",
        ),
        _spec(
            AlarmCode.PROCEDURE_OVERRUN,
            _H,
            "The procedure has run past its expected duration and therapy has not been resumed: the patient is "
            "without the planned intrathecal baclofen. End the procedure and resume therapy, or confirm the "
            "alternative (oral or IV) baclofen cover. " + _WITHDRAWAL_RISK,
            "A procedure left open leaves the pump stopped or at its minimum rate with no end in sight: the "
            "'pump left stopped' programming error of the withdrawal reports (itb-clinical §3.2 [BMC04]).",
        ),
        _spec(
            AlarmCode.RESERVOIR_LOW,
            _M,
            "Reservoir low: schedule a refill.",
            "Prompt action prevents an empty reservoir (RES-02).",
        ),
        _spec(
            AlarmCode.BATTERY_ERI,
            _M,
            "Battery at elective replacement indicator: the pump stops about 90 days from now.",
            "Replacement must be planned within weeks (SynchroMed ERI).",
        ),
        _spec(
            AlarmCode.COMMS_DEGRADED,
            _M,
            "Communication with the pump is degraded; the pump continues its last programme.",
            "Loss of comms must not cause a delivery error but needs prompt attention (HAL-05).",
        ),
        _spec(
            AlarmCode.REFILL_DISCREPANCY,
            _M,
            "Refill volumes differ from the prediction beyond tolerance: possible pocket fill, leak or "
            "delivery fault. A clinician must acknowledge.",
            "Pocket fills caused deaths (RES-03); needs a clinician, not an emergency response.",
            latching=True,
        ),
        _spec(
            AlarmCode.UNDER_DELIVERY_SUSPECTED,
            _M,
            "Measured delivery is below the programme beyond tolerance.",
            "Under-delivery drifts towards withdrawal over hours to days (G4).",
        ),
        _spec(
            AlarmCode.MINIMUM_RATE_MODE,
            _M,
            "Minimum-rate mode: the pump delivers only the clinician-set minimum rate, below the prescribed "
            "dose. " + _WITHDRAWAL_RISK,
            "Entering or leaving minimum-rate mode must be alarmed (SAFE-02); a sub-therapeutic rate is the "
            "withdrawal hazard of the boxed warning, so the text names it.",
        ),
        _spec(
            AlarmCode.WITHDRAWAL_RISK,
            _H,
            "The dose reaching the catheter tip has stayed far below the prescription, or delivery was stopped "
            "with no taper (an emergency discontinue): cover with oral baclofen and a benzodiazepine. "
            + _WITHDRAWAL_RISK,
            "Whatever the cause (a stop, minimum-rate mode, an unprimed catheter after a refill, a "
            "concentration change gone wrong), a sustained deficit at the tip is the withdrawal hazard of the boxed warning "
            "(itb-clinical §3.2); an emergency discontinue is that abrupt stop at once (§1.6, §3.2; issue #9).",
        ),
        _spec(
            AlarmCode.CATHETER_NOT_PRIMED,
            _H,
            "Priming incomplete: the catheter still holds saline, so no baclofen reaches the catheter tip "
            "until it is primed; the implant is not complete. Re-prime the catheter (the remaining dead "
            "volume). " + _WITHDRAWAL_RISK,
            "A priming cut short by a fault leaves the patient without drug for the time the basal needs to "
            "push the saline out (30 h for 0.25 mL at 100 µg/day), unseen unless alarmed (BOL-06, issue #9).",
        ),
        _spec(
            AlarmCode.IMPLANT_NOT_DONE,
            _H,
            "Implant not done: the implant was refused, so the patient receives NO intrathecal baclofen. A "
            "patient who was on intrathecal therapy (a pump replacement) is in abrupt withdrawal. "
            + _WITHDRAWAL_RISK,
            "A refused implant leaves the patient with no intrathecal therapy; for a transferred patient that is "
            "the abrupt stop of the boxed warning (itb-clinical §3.2), unseen unless alarmed (issue #9).",
        ),
        _spec(
            AlarmCode.STORAGE_LOW,
            _M,
            "Storage for the journal is running low.",
            "Must be fixed before records are lost (PER-05).",
        ),
        _spec(
            AlarmCode.CLOCK_ANOMALY,
            _M,
            "Clock anomaly: wall time jumped or the pump clock disagrees.",
            "Clock errors shift schedules; lockouts use monotonic time so this is not immediate (BOL-02).",
        ),
        _spec(
            AlarmCode.PUMP_PROGRAM_REJECTED,
            _M,
            "The pump rejected a programme; the last committed programme keeps running.",
            "Therapy continues, but the intended change did not happen.",
        ),
        _spec(
            AlarmCode.PROGRAMME_STEP_REFUSED,
            _M,
            "A step of the flex or periodic programme was not sent: left running by the pump alone it would "
            "pass the 24 h cap or fall below the minimum rate; the pump keeps its last command.",
            "Therapy continues off the prescribed day (under-delivery, never over); review the programme.",
        ),
        _spec(
            AlarmCode.PROCEDURE_IN_PROGRESS,
            _M,
            "Guided procedure in progress: intrathecal delivery is held at zero (or at the minimum rate) as the "
            "pump labelling requires. Give the alternative oral or IV baclofen cover planned for it, and end the "
            "procedure as soon as it is over; boluses and dose increases are refused until then. "
            + _WITHDRAWAL_RISK,
            "Held for the whole procedure: the stop is deliberate and authorised, but it is an interruption the "
            "patient may go into withdrawal from (SAFE-05: the alternative-therapy reminder [S34]; itb-clinical "
            "§1.4: keep oral baclofen on hand for withdrawal emergencies [CMSC15]).",
        ),
        _spec(
            AlarmCode.RESTARTED_AT_STARTING_DOSE,
            _M,
            "Therapy restarted by the restart rule after a long interruption: at the titration-phase starting "
            "dose, not the dose before it. Review the patient (withdrawal signs may return at the lower dose); "
            "titrate up again within the titration cap. A clinician must acknowledge.",
            "The label restarts at titration-phase doses after an interruption, an overdose risk otherwise "
            "(itb-clinical §1.6 [JP-LBL], §3.3 [OD91][DRUGLIB-OD]); the lower dose is the safe choice, so not "
            "an emergency, but the clinician must know why the dose fell and re-titrate (issue #9).",
            latching=True,
        ),
        _spec(
            AlarmCode.REFILL_DUE,
            _L,
            "Refill due soon.",
            "Awareness; the medium low-reservoir alarm follows if ignored.",
        ),
        _spec(
            AlarmCode.BOLUS_DENIED,
            _L,
            "Bolus request refused (lockout, count or dose cap).",
            "Awareness; nothing was delivered.",
        ),
        _spec(
            AlarmCode.SOFT_LIMIT_OVERRIDDEN,
            _L,
            "A soft limit was overridden by a prescriber; the reason is recorded.",
            "Awareness; overrides are audited (PRX-02).",
        ),
        _spec(
            AlarmCode.CONTROLLER_DEATH,
            _L,
            "The controller restarted after an unclean stop (a crash, a kill, a power cut); meanwhile the "
            "pump ran the last command's orphan schedule alone.",
            "Awareness; read the journal's record of what the pump delivered alone and how it was reconciled.",
        ),
        _spec(AlarmCode.INFO, _L, "Information.", "Awareness only."),
    ),
)


_CODES_BY_VALUE: Mapping[str, AlarmCode] = MappingProxyType({c.value: c for c in AlarmCode})


class AlarmJournal(Protocol):
    """What the alarm manager needs from the journal (see :class:`controller.journal.Journal`)."""

    def record_alarm(self, *, event: str, code: str, priority: str, actor: Actor, detail: str) -> None:
        """Durably record one alarm event (``raise``, ``clear``, ``acknowledge``, ``audio_pause``)."""


@dataclass(frozen=True)
class ActiveAlarm:
    """An alarm the manager holds.

    :param spec: the alarm's table row.
    :param raised_monotonic_ns: when the condition was (last) raised, monotonic ns.
    :param condition_active: True while the condition persists.
    :param acknowledged: True once an operator acknowledged it.
    :param detail: free text from whoever raised it.
    :param occurrences: how many times the condition has been raised while held.
    :param restored: True while it is held only from the journal of an earlier process (:meth:`AlarmManager.restore`):
        its condition has not been seen since the restart, so a raise of it now is news.
    """

    spec: AlarmSpec
    raised_monotonic_ns: int
    condition_active: bool
    acknowledged: bool
    detail: str
    occurrences: int = 1
    restored: bool = False

    @property
    def current(self) -> bool:
        """True if its condition is known to hold in this process: raised here, and not cleared since."""
        return self.condition_active and not self.restored

    @property
    def code(self) -> AlarmCode:
        """The alarm condition."""
        return self.spec.code

    @property
    def priority(self) -> Priority:
        """The alarm's priority."""
        return self.spec.priority

    @property
    def latched(self) -> bool:
        """True when the condition has cleared but the alarm waits for acknowledgement."""
        return not self.condition_active


def _order_key(alarm: ActiveAlarm) -> tuple[int, int, str]:
    return (-int(alarm.priority), alarm.raised_monotonic_ns, alarm.code.value)


def _after_clear(spec: AlarmSpec, held: ActiveAlarm) -> ActiveAlarm | None:
    """What stays of ``held`` when its condition clears: a latching alarm not yet acknowledged
    stays (condition inactive) until an operator acknowledges it; anything else goes (None)."""
    if spec.latching and not held.acknowledged:
        return replace(held, condition_active=False)
    return None


def _after_acknowledge(held: ActiveAlarm) -> ActiveAlarm | None:
    """What stays of ``held`` when an operator acknowledges it: an alarm whose condition persists
    stays, marked acknowledged; a latched one whose condition has cleared goes (None)."""
    if held.condition_active:
        return replace(held, acknowledged=True)
    return None


class AlarmManager:
    """Holds active alarms, orders them by priority, latches, and journals every event.

    Thread-safe: one lock serialises events and queries.

    :param clock: the injected clock (monotonic time for ordering and audio pause).
    :param journal: where every event is recorded (:class:`AlarmJournal`).
    """

    def __init__(self, clock: Clock, journal: AlarmJournal) -> None:
        self._clock = clock
        self._journal = journal
        self._alarms: dict[AlarmCode, ActiveAlarm] = {}
        #: Events handed to the journal so far (the loop commits them by the end of the poll that made them).
        self.events_recorded = 0
        self._audio_paused_until_ns: int | None = None
        self._lock = threading.RLock()

    # -- events -------------------------------------------------------------------------------------

    def raise_alarm(self, code: AlarmCode, *, actor: Actor = SYSTEM_ACTOR, detail: str = "") -> ActiveAlarm:
        """Raise (or re-raise) the condition ``code``.

        Re-raising a held alarm keeps its place in the queue, refreshes the detail
        and counts the occurrence; a latched alarm whose condition returns becomes
        active again. A new condition ends any audio pause.

        :param code: the alarm condition.
        :param actor: who detected it (usually the controller).
        :param detail: context for the operator and the journal.
        :return: the alarm as now held.
        :raises ConfigError: if ``code`` is not an :class:`AlarmCode`.
        """
        spec = self._spec(code)
        with self._lock:
            now_ns = self._clock.monotonic_ns()
            held = self._alarms.get(code)
            if held is None:
                alarm = ActiveAlarm(spec, now_ns, True, False, detail)
                self._audio_paused_until_ns = None
            else:
                alarm = replace(
                    held,
                    condition_active=True,
                    # A restored alarm raised again is a new occurrence the operator has not seen.
                    acknowledged=held.acknowledged and held.condition_active and not held.restored,
                    detail=detail or held.detail,
                    occurrences=held.occurrences + 1,
                    restored=False,
                )
                if not held.condition_active:
                    self._audio_paused_until_ns = None
            self._alarms[code] = alarm
            self._record("raise", spec, actor, detail)
            return alarm

    def clear(self, code: AlarmCode, *, actor: Actor = SYSTEM_ACTOR, detail: str = "") -> ActiveAlarm | None:
        """The condition ``code`` no longer holds.

        A non-latching alarm, or a latching one already acknowledged, is removed; a
        latching, unacknowledged alarm stays (latched) until acknowledged.
        Clearing an alarm that is not held does nothing and records nothing.

        :param code: the alarm condition.
        :param actor: who observed the condition clear.
        :param detail: context for the journal.
        :return: the alarm if still held (latched), else None.
        """
        spec = self._spec(code)
        with self._lock:
            held = self._alarms.get(code)
            if held is None or not held.condition_active:
                return held
            remaining = self._hold(code, _after_clear(spec, held))
            self._record("clear", spec, actor, detail)
            return remaining

    def acknowledge(self, code: AlarmCode, *, actor: Actor, detail: str = "") -> ActiveAlarm | None:
        """An operator acknowledges ``code``.

        A latched alarm (condition already cleared) is removed; an alarm whose
        condition persists stays, marked acknowledged (it goes when it clears).

        :param code: the alarm condition.
        :param actor: the operator (never the controller itself).
        :param detail: context for the journal.
        :return: the alarm if still held, else None.
        :raises ConfigError: if ``code`` is not held, or ``actor`` is the system.
        """
        spec = self._spec(code)
        if actor == SYSTEM_ACTOR:
            raise ConfigError("actor", str(actor), "an operator, not the controller")
        with self._lock:
            held = self._alarms.get(code)
            if held is None:
                raise ConfigError("code", code.value, f"one of the held alarms {[c.value for c in self._alarms]}")
            remaining = self._hold(code, _after_acknowledge(held))
            self._record("acknowledge", spec, actor, detail)
            return remaining

    def pause_audio(self, *, actor: Actor, duration_s: int) -> None:
        """Pause the audible signal for ``duration_s`` seconds (visual signals continue).

        :param actor: the operator.
        :param duration_s: 1 .. :data:`AUDIO_PAUSE_MAX_S` seconds, integer.
        :raises ConfigError: for a non-integer or out-of-range duration.
        """
        if isinstance(duration_s, bool) or not isinstance(duration_s, int) or not 1 <= duration_s <= AUDIO_PAUSE_MAX_S:
            raise ConfigError("duration_s", duration_s, f"an integer in [1, {AUDIO_PAUSE_MAX_S}] s")
        with self._lock:
            self._audio_paused_until_ns = self._clock.monotonic_ns() + duration_s * NS_PER_S
            self._record("audio_pause", ALARM_TABLE[AlarmCode.INFO], actor, f"audio paused for {duration_s} s")

    def restore(self, events: Iterable[tuple[str, str]]) -> int:
        """Rebuild the held alarms after a restart by replaying journalled events, oldest first.

        A latched or unacknowledged alarm from before the restart is held again
        (ALM-03 survives restarts); nothing is journalled by the replay. Restored
        alarms keep their order and count as older than any raised from now on.

        A restored alarm is marked :attr:`ActiveAlarm.restored` until its condition is
        raised again in this process: the journal may have lost its clear (events are
        staged and commit with the next transaction), so a fault seen after the restart
        must raise it anew, unacknowledged, and never be swallowed as "already held"
        (a new motor stall after a restart went unannounced; found by the clinical
        adversary, issue #9).

        :param events: ``(event, code value)`` pairs as the journal holds them
            (see :meth:`controller.journal.Journal.alarm_events`).
        :return: the number of alarms held afterwards.
        :raises StateError: if this manager already holds alarms.
        :raises ConfigError: for an unknown event or alarm code (nothing is restored).
        """
        with self._lock:
            if self._alarms:
                raise StateError("restore() needs a manager that holds no alarms yet")
            pending = list(events)
            now_ns = self._clock.monotonic_ns()
            for index, (event, value) in enumerate(pending):
                if value not in _CODES_BY_VALUE or event not in ("raise", "clear", "acknowledge"):
                    self._alarms.clear()
                    raise ConfigError("events", (event, value), "journalled alarm events of known alarm codes")
                code = _CODES_BY_VALUE[value]
                spec = ALARM_TABLE[code]
                held = self._alarms.get(code)
                at_ns = now_ns - (len(pending) - index)
                if event == "raise":
                    if held is None:
                        self._alarms[code] = ActiveAlarm(spec, at_ns, True, False, "restored", restored=True)
                    else:
                        self._alarms[code] = replace(
                            held,
                            condition_active=True,
                            acknowledged=held.acknowledged and held.condition_active,
                            occurrences=held.occurrences + 1,
                        )
                elif event == "clear" and held is not None and held.condition_active:
                    self._hold(code, _after_clear(spec, held))
                elif event == "acknowledge" and held is not None:
                    self._hold(code, _after_acknowledge(held))
            return len(self._alarms)

    # -- queries ------------------------------------------------------------------------------------

    def active(self) -> tuple[ActiveAlarm, ...]:
        """Every held alarm, most urgent first (priority, then oldest first)."""
        with self._lock:
            return tuple(sorted(self._alarms.values(), key=_order_key))

    def highest(self) -> ActiveAlarm | None:
        """The alarm to annunciate now, or None when none is held."""
        ordered = self.active()
        return ordered[0] if ordered else None

    def is_active(self, code: AlarmCode) -> bool:
        """True while ``code`` is held (active or latched)."""
        with self._lock:
            # Most polls hold no alarm: then the (Python-level) hash of the enum member is not needed.
            return bool(self._alarms) and code in self._alarms

    def is_current(self, code: AlarmCode) -> bool:
        """True while ``code``'s condition is known to hold in this process (:attr:`ActiveAlarm.current`)."""
        with self._lock:
            held = self._alarms.get(code) if self._alarms else None
            return held is not None and held.current

    def has_priority(self, priority: Priority) -> bool:
        """True if any held alarm has at least ``priority`` (BOL-03 checks HIGH)."""
        with self._lock:
            return any(a.priority >= priority for a in self._alarms.values())

    def audio_paused(self) -> bool:
        """True while an audio pause is running."""
        with self._lock:
            until = self._audio_paused_until_ns
            return until is not None and self._clock.monotonic_ns() < until

    def audible(self) -> ActiveAlarm | None:
        """The alarm that should sound now: the most urgent unacknowledged one, unless audio is paused."""
        with self._lock:
            if self.audio_paused():
                return None
            return next((a for a in self.active() if not a.acknowledged), None)

    # -- internals ----------------------------------------------------------------------------------

    def _hold(self, code: AlarmCode, alarm: ActiveAlarm | None) -> ActiveAlarm | None:
        """Hold ``alarm`` for ``code``, or stop holding ``code`` when it is None; returns ``alarm``.

        The caller holds the lock.
        """
        if alarm is None:
            del self._alarms[code]
        else:
            self._alarms[code] = alarm
        return alarm

    @staticmethod
    def _spec(code: AlarmCode) -> AlarmSpec:
        if not isinstance(code, AlarmCode):
            raise ConfigError("code", code, "an AlarmCode")
        return ALARM_TABLE[code]

    def _record(self, event: str, spec: AlarmSpec, actor: Actor, detail: str) -> None:
        self.events_recorded += 1
        try:
            self._journal.record_alarm(
                event=event, code=spec.code.value, priority=spec.priority.name, actor=actor, detail=detail
            )
        except Exception:
            if AlarmCode.JOURNAL_WRITE_FAILURE not in self._alarms:
                failure = ALARM_TABLE[AlarmCode.JOURNAL_WRITE_FAILURE]
                self._alarms[failure.code] = ActiveAlarm(failure, self._clock.monotonic_ns(), True, False, event)
                self._audio_paused_until_ns = None
            raise



#: The therapy-state key (``loop.therapy_state``) of a RESTARTED_AT_STARTING_DOSE no clinician has acknowledged
#: yet (its detail), or None: a restart raises it again (:meth:`controller.therapy.Therapy.restore_state`).
RESTART_RULE_ALARM_KEY = "restart_rule_alarm_unacknowledged"


def raise_restart_rule_alarm(alarms: AlarmManager, state: dict, resumed_ng_per_day: int, before_ng_per_day: int,
                             why: str) -> None:
    """Raise RESTARTED_AT_STARTING_DOSE as an event, latched until a clinician acknowledges it (ALM-03).

    For a resume the restart rule decided after an interruption of the threshold or longer (itb-clinical §1.6,
    §3.3; issue #9: "the alarm and the journal say why"): the detail names the rule, the dose resumed against
    the dose before (ng/day) and ``why`` (the resume's note: the interruption's length, the threshold, where
    the dose comes from). Both control loops and the workflows raise it through here. The detail is also kept
    in ``state`` (the loop's therapy state, under :data:`RESTART_RULE_ALARM_KEY`) until the acknowledgement.
    """
    detail = (f"restart rule: resumed at {resumed_ng_per_day / 1000:g} µg/day, not the "
              f"{before_ng_per_day / 1000:g} µg/day before the interruption: {why}")
    state[RESTART_RULE_ALARM_KEY] = detail
    alarms.raise_alarm(AlarmCode.RESTARTED_AT_STARTING_DOSE, detail=detail)
    alarms.clear(AlarmCode.RESTARTED_AT_STARTING_DOSE, detail="latched until a clinician acknowledges it")
