"""Public API of the safety kernel (both implementations: ``_kernel`` compiled, ``_kernel_py`` twin).

Units: time ms, mass ng (pg inside the ledger: 1 nL at 1 µg/mL is exactly 1 pg),
volume nL, concentration µg/mL, dose rate ng/day, volume rate nL/h. All integers;
a float anywhere raises :class:`TypeError`. Bad values raise
:class:`cython_ext.errors.ConfigError` (a ``ValueError`` with ``field``,
``value``, ``allowed``), the project's own error type: no layer translates it.

Typical use::

    from cython_ext import kernel as k
    limits = k.DEFAULT_LIBRARY[500]
    caps = k.make_caps(max_dose_ng_per_day=300_000, origin="spinal",
                       titration_start_dose_ng_per_day=150_000)    # from the patient record
    envelope = k.make_envelope(min_rate_nl_per_h=2_000, max_rate_nl_per_h=1_000_000)
    gate = k.SafetyKernel(limits, caps, envelope, k.Ledger())
    decision = gate.authorize(k.request_rate_change(12_500), now_ms)   # the first one starts therapy
    if decision.allowed:
        ...  # command the pump; on success:
        gate.apply(decision, now_ms)
    else:
        journal(decision.reasons)   # every failing reason code

Shared value objects (one pure-Python source for both implementations): Bounds,
DrugLimits, DEFAULT_LIBRARY, PatientCaps/make_caps/stricter_caps, PumpEnvelope/make_envelope,
Override/make_override, BridgePlan, Request + request_* constructors, Decision,
Interruption, Reason codes, tighten(), plan_titration(). Implemented twice and proven equal by
differential tests: Programme, Ledger, SafetyKernel.

The rules that hold over the patient's whole history
----------------------------------------------------

The kernel keeps the history the rules need (``dose_history``, the therapy start, the last
increase and titration step, an open ``interruption``, held caps, and the ledger) and is told
of what it does not authorise itself. Every rule reads that history, whatever path, restart
or fault led to the request. Sources are tags of ``reference/itb-clinical.md`` and IDs of
``reference/safety-requirements.md``.

- **Dose history.** Every applied programme, rate, resume and minimum-rate spell (its dose),
  every discontinue (0), and every :meth:`SafetyKernel.note_stopped` fact (0: a STOP fault
  reaction, or a pump found stopped, with the earliest time it may have stopped) enters it
  when it takes effect. It is pruned to what the 24 h rules can still see.
- **Titration cap over the trailing window (TIT-01, hard).** An increase of the daily dose may
  not exceed (1 + ``titration_cap_pct``) x the *lowest* daily dose in effect at any moment of
  ``[now - 24 h, now]`` (:meth:`SafetyKernel.titration_baseline_ng`): spinal 30 %, cerebral and
  paediatric 15 % (§1.4 [SAULINO16][CMSC15]). Stops, discontinues and minimum-rate spells
  count as the low doses they were, so after any of them no increase above (1 + cap) x that
  dose is possible until 24 h after the resume. *Decision on a confirmed decrease:* it lowers
  the baseline for the 24 h after it stops being in effect; the confirmation lifts only
  ``DECREASE_NEEDS_CONFIRMATION`` (TIT-03), never the cap. So "+29 %, cut 20 %, next day
  1.3 x the peak" is refused, and after a cut for side effects the way back up is measured
  from the dose the patient was cut to (TIT-01: "applied to the *cumulative* increase over
  the rolling 24 h so small steps cannot get round it"; §1.5 cuts of 10-20 % for side effects
  [SKYSCAPE][ROTE] mean the higher dose was not tolerated).
- **Titration interval (TIT-04, soft).** An increase within ``min_titration_interval_ms`` of
  the last increase is ``TITRATION_INTERVAL``; an override with a reason may lift it.
- **No increase in the first 24 h after therapy started (§1.3 [SKYSCAPE][SAULINO16], hard).**
  ``INCREASE_WITHIN_24H_OF_START``. The therapy start is the first delivery a fresh kernel
  applies (a rate, programme or minimum-rate start), or ``therapy_start_ms`` /
  ``programme_since_ms`` when the kernel is built with a programme. It used to be enforced
  only by the titration interval, which an override lifts; that path is closed.
  *Decision (issue #9, review 11):* the label's 24 h are of delivery to the patient, and the
  kernel does not know when the drug reached the catheter tip. The controller does (its catheter
  model), so it holds the same rule on that clock, with the same code and no override
  (``controller.therapy.Therapy._first_day_hold``): a catheter that held saline (no priming, a
  priming refused or cut short) gets no increase until 24 h after the model found the saline
  flushed, which no kernel state is needed for. The kernel is unchanged.
- **The restart rule (§1.6 [JP-LBL], §3.3 [OD91][DRUGLIB-OD], hard).** A stop, a minimum-rate
  spell or a discontinue opens an :class:`Interruption` (when it began, the dose just before
  it). Resuming is :func:`request_resume`; while an interruption is open a rate, programme or
  concentration change is decided the same way, so every path back to delivery meets it. After
  an interruption shorter than ``restart_threshold_ms`` (default
  :data:`DEFAULT_RESTART_THRESHOLD_MS` = 24 h, derived there from the CSF half-life and the
  withdrawal time course) the resume may restart at most at the dose in effect just before it
  (``RESTART_OVERDOSE_RISK_ABOVE_PRIOR_DOSE``); after a longer one at most at the lower of that
  and the caps' ``titration_start_dose_ng_per_day`` (``RESTART_OVERDOSE_RISK_ABOVE_START_DOSE``;
  when the caps do not give one, the minimum-rate dose). From there the dose climbs only up
  the titration cap (the interruption's low dose is in the window). The titration cap,
  interval, first-24 h rule and decrease confirmation do not apply to a resume; every other
  limit does. A resume is not a titration step.
- **Bolus overdose-risk rules (hard), named in their codes.** *Decision*, from the reference:
  the rules that bound the patient's cumulative exposure over the history are overdose-risk
  rules; the per-bolus limits of the prescription (enabled, size, lockout, count, pump rate)
  keep their own codes, which already name the limit. They are:

  - the rolling 24 h cap (PRX-03, PRX-04, BOL-01 "projected 24 h dose <= cap"; the Open PCA
    max-dose rule [S13]; overdoses at 800-2400 µg/24 h [OD91]): any bolus kind the projection
    refuses gets ``DOSE_CAP_24H`` and ``BOLUS_OVERDOSE_RISK_24H_CAP``;
  - a bolus stacked on a titration step: within :data:`BOLUS_STACKING_WINDOW_MS` (24 h) after a
    titration step (an applied increase while therapy was running; not the start, not a
    resume), a clinician or patient bolus is refused with ``BOLUS_OVERDOSE_RISK_TITRATION_STEP``
    when the daily dose in effect + every such bolus in the 24 h window (delivered and
    committed) + this bolus exceeds (1 + cap) x the trailing-window baseline. Sources: §5.1
    "boluses go into D as the programmed 24 h total", TIT-01, "special care during titration"
    [DRUGLIB-OD], an infusion's effect peaks 24-48 h after a change [LBL-PD] and is reassessed
    within 24 h [SAULINO16]: the step's effect is not yet known. The same sum bounds a second
    increase within that day (a step on a step, with the interval overridden): the new daily dose
    + the boluses of the 24 h window may not exceed (1 + cap) x the baseline, else
    ``TITRATION_CAP_EXCEEDED`` (a bolus given between two halves of a step is part of the step).

- **A caps change (an origin change, a new prescription) needs a confirmation** (an
  :class:`Override` naming :data:`CAPS_CHANGE_CONFIRMATION`, else ``CAPS_CHANGE_NOT_CONFIRMED``)
  and keeps every limit it loosens at its old value for :data:`CAPS_HOLD_MS` (24 h):
  :func:`stricter_caps`, read through :meth:`SafetyKernel.effective_caps`. Cerebral to spinal
  keeps 15 % for a day (issue #9). A second change within the 24 h keeps the strictest of all.
- **A concentration change keeps the dose at the catheter tip through the dead volume's transit**
  (issue #9; itb-clinical §1.6 "bridge bolus", BOL-06). *Decision*: the old drug in the dead
  volume is pushed at the volume rate the *old* concentration needs for the new programme's
  dose, for as long as the transit takes (weeks at the lowest doses: never cut short), and only
  then does the pump take the new concentration's rate; the controller times the switch from
  the pump's counter through its catheter queue. The :class:`BridgePlan` is that transit. It is
  part of the new programme's dose, not a bolus on top of it: nothing is committed in the
  ledger (what leaves the tip is recorded as delivered, old drug first), its rate must fit the
  pump (``RATE_ABOVE_PUMP_MAX``), and its tip dose ``volume x old concentration / duration`` may
  exceed the programme's daily dose by at most :data:`TRANSIT_DOSE_TOLERANCE_PCT`
  (``TRANSIT_DOSE_ABOVE_PROGRAMME``). Earlier versions committed the dead volume's mass as a
  bridge bolus over at most 24 h: that cut long transits short and pushed the rest of the old
  drug at the new volume rate (2x-4x at the tip for hours).
- **Soft overrides lift only** :data:`SOFT_REASONS`. Every code above is hard.
- **Time never goes backwards.** A request at a time before the newest event the kernel
  holds (:attr:`SafetyKernel.newest_event_ms`: the dose history, therapy start, bolus starts,
  a caps change) or in a minute before the newest ledger record is ``CLOCK_BEHIND_LEDGER``;
  :meth:`SafetyKernel.apply` and :meth:`SafetyKernel.note_stopped` at such a time raise.
  Delivery recovered after a restart goes in with :meth:`Ledger.record_latest`: placed as late
  as it can have happened, it counts in every rolling window it may belong to.
- **Restart-proof.** :meth:`SafetyKernel.state_snapshot` is the whole state, exact, versioned
  (:data:`STATE_SNAPSHOT_VERSION`) and checksummed; :meth:`SafetyKernel.from_snapshot` restores
  a kernel that decides exactly as the one that wrote it, and refuses a malformed, truncated or
  altered snapshot with ``ConfigError`` (then the controller must refuse increases and
  boluses, raise an alarm and keep the current rate: SAFE-04, PER-06).

What the controller wires (one call each): a STOP fault reaction or a pump found stopped ->
``note_stopped(earliest_ms)``; minimum-rate mode -> ``request_minimum_rate``; resuming ->
``request_resume``; the patient record -> ``titration_start_dose_ng_per_day`` and
``restart_threshold_ms`` in the caps; a prescription or origin change -> ``request_caps_change``
with the clinician's confirmation; the checkpoint -> ``state_snapshot`` / ``from_snapshot``;
delivery found after a restart -> ``ledger.record_latest``.
"""

from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

# Shared value objects: one definition for both implementations, documented where it is made.
from cython_ext._common import (
    Bounds as Bounds,
    BridgePlan as BridgePlan,
    DrugLimits as DrugLimits,
    Interruption as Interruption,
    InterruptionCause as InterruptionCause,
    Override as Override,
    PatientCaps as PatientCaps,
    PumpEnvelope as PumpEnvelope,
    Request as Request,
    RequestKind as RequestKind,
    TightenStep as TightenStep,
    Tightened as Tightened,
    TitrationStep as TitrationStep,
)
from cython_ext.vocabulary import DeliveryKind as DeliveryKind, Origin as Origin

IMPLEMENTATION: Literal["compiled", "python"]

MAX_RATE_NL_PER_H: int  # 10_000_000 nL/h; representation limit, not a clinical one
MAX_CONCENTRATION_UG_PER_ML: int  # 100_000
MAX_DOSE_NG_PER_DAY: int  # 100_000_000
MAX_BOLUS_VOLUME_NL: int  # 10_000_000
MAX_RECORD_PG: int  # 10**13 per ledger record
MAX_BUCKET_PG: int  # 10**14 per bucket and kind
MAX_BOLUSES_PER_DAY: int  # 96
MAX_FLEX_STEPS: int  # 13
MAX_PERIODIC_BOLUSES: int  # 24
LEDGER_RESOLUTION_MS: int  # 60_000: one-minute buckets
WINDOW_BUCKETS: int  # 1440: a record in minute m counts in windows ending in minutes m..m+1439
BOLUS_HISTORY: int  # 256 bolus starts remembered per 24 h
SNAPSHOT_VERSION: int  # ledger snapshot format
STATE_SNAPSHOT_VERSION: int  # kernel state snapshot format (2)
DEFAULT_RESTART_THRESHOLD_MS: int  # 24 h: shorter interruptions may resume at the prior dose
NO_INCREASE_AFTER_START_MS: int  # 24 h after therapy started: no increase (hard)
CAPS_HOLD_MS: int  # 24 h: a caps change keeps every loosened limit this long
BOLUS_STACKING_WINDOW_MS: int  # 24 h after a titration step: boluses count against the titration cap
TRANSIT_DOSE_TOLERANCE_PCT: int  # 1: a transit's tip dose may exceed the new dose by rounding only
MAX_TRANSIT_MS: int  # 366 days: longest transit a BridgePlan may plan
MAX_DECISION_AGE_MS: int  # 60_000: older decisions are not is_fresh(); re-authorise
MIN_TIME_MS: int  # -(2**61): earliest time (anchors) accepted
MAX_TIME_MS: int  # 2**62: latest time accepted
MIN_SPREAD_SLOT_MS: int  # 1000: shortest slot Ledger.record_spread divides a delivery into, ms
MAX_INTERVAL_MS: int  # 366 days: longest interval one integral call accepts
N_KINDS: int

BOLUS_KINDS: tuple[DeliveryKind, ...]  # clinician, patient, priming, bridge
COUNTED_BOLUS_KINDS: tuple[DeliveryKind, ...]  # clinician, patient: size, lockout and count apply

TITRATION_CAP_PCT_BY_ORIGIN: dict[Origin, int]

class Reason:
    """Reason codes (str constants). Soft ones (SOFT_REASONS) may be lifted by an Override."""
    NO_PROGRAMME: str
    SCREENING_ONLY: str
    CLOCK_BEHIND_LEDGER: str  # now is in a minute before the newest ledger record
    CONCENTRATION_NOT_IN_LIBRARY: str
    CONCENTRATION_CHANGED: str  # programme change at another concentration: use a concentration change
    CONCENTRATION_UNCHANGED: str
    BRIDGE_PLAN_MISSING: str
    DOSE_BELOW_HARD: str
    DOSE_BELOW_SOFT: str
    DOSE_ABOVE_SOFT: str
    DOSE_ABOVE_HARD: str
    DOSE_ABOVE_PRESCRIPTION_CAP: str
    RATE_ZERO: str  # zero flow only via request_discontinue
    RATE_BELOW_HARD: str
    RATE_BELOW_SOFT: str
    RATE_ABOVE_SOFT: str
    RATE_ABOVE_HARD: str
    RATE_BELOW_PUMP_MIN: str
    RATE_ABOVE_PUMP_MAX: str
    RATE_NOT_PUMP_STEP: str
    RATE_BELOW_MINIMUM_RATE: str
    TITRATION_CAP_EXCEEDED: str  # above (1 + cap) x the lowest dose in effect over the trailing 24 h
    TITRATION_INTERVAL: str  # increase sooner than min_titration_interval_ms after the last (soft)
    DECREASE_NEEDS_CONFIRMATION: str  # decrease > decrease_confirm_pct (soft)
    BOLUS_DISABLED: str
    BOLUS_BELOW_HARD: str
    BOLUS_BELOW_SOFT: str
    BOLUS_ABOVE_SOFT: str
    BOLUS_ABOVE_HARD: str
    BOLUS_ABOVE_PRESCRIPTION_MAX: str
    BOLUS_LOCKOUT: str
    BOLUS_COUNT: str
    BOLUS_RATE_ABOVE_PUMP_MAX: str
    PRIMING_VOLUME_ABOVE_MAX: str
    # Some projected 24 h window would exceed the cap. Windows are 1440 one-minute buckets;
    # checked: every window ending in minutes m0..m0+1439 (m0 = now's minute) holding what is
    # still inside from before now + all committed + the request (in minute m0) + programme
    # basal from now to the window's end (rounded up), and the window ending in m0+1440
    # (committed + one full day of basal), which every later window equals.
    DOSE_CAP_24H: str
    DISCONTINUE_NOT_AUTHORISED: str
    TAPER_INCOMPLETE: str
    MINIMUM_RATE_ABOVE_CURRENT: str
    CONCENTRATION_BELOW_HARD: str  # refill record outside the entry's concentration bounds (PRX-06)
    CONCENTRATION_BELOW_SOFT: str
    CONCENTRATION_ABOVE_SOFT: str
    CONCENTRATION_ABOVE_HARD: str
    INCREASE_WITHIN_24H_OF_START: str  # an increase in the first 24 h after therapy started (hard)
    RESUME_WITHOUT_INTERRUPTION: str  # request_resume with nothing interrupted
    RESTART_OVERDOSE_RISK_ABOVE_PRIOR_DOSE: str  # resume above the dose just before the interruption
    RESTART_OVERDOSE_RISK_ABOVE_START_DOSE: str  # long interruption: resume above the titration start dose
    BOLUS_OVERDOSE_RISK_24H_CAP: str  # with DOSE_CAP_24H on a bolus
    BOLUS_OVERDOSE_RISK_TITRATION_STEP: str  # a bolus stacked on a titration step beyond the cap
    CAPS_CHANGE_NOT_CONFIRMED: str
    TRANSIT_DOSE_ABOVE_PROGRAMME: str  # a concentration change's transit gives more at the tip than the new dose
    PROCEDURE_NOT_AUTHORISED: str  # a procedure's zero-rate hold without an Override naming PROCEDURE (SAFE-05)

ALL_REASONS: tuple[str, ...]  # every code, in the order decisions list them
SOFT_REASONS: frozenset[str]
DISCONTINUE_AUTHORISATION: str  # "DISCONTINUE": the Override code that authorises zero flow
CAPS_CHANGE_CONFIRMATION: str  # "CAPS_CHANGE": the Override code that confirms a caps change
PROCEDURE_AUTHORISATION: str  # "PROCEDURE": the Override code that authorises a procedure's zero-rate hold
REASON_INDEX: dict[str, int]

def make_bounds(field: str, lower_hard: int, lower_soft: int, upper_soft: int, upper_hard: int, unit: str = "") -> Bounds: ...

#: Intrathecal baclofen at 50 (screening only), 500, 1000, 2000 µg/mL, keyed by µg/mL.
#: Hard dose 12-2003 µg/day, soft 24-1000; rate hard 2000-1 000 000 nL/h (0.048-24 mL/day);
#: concentration ±5 % hard, ±2 % soft; bolus 1-100 µg hard, 10-75 soft; lockout >= 1 h hard,
#: >= 3 h soft; boluses/day <= 8 hard, <= 4 soft. Soft and bolus numbers are PLACEHOLDERS.
DEFAULT_LIBRARY: dict[int, DrugLimits]

def library_entry(concentration_ug_per_ml: int, library: dict[int, DrugLimits] | None = None) -> DrugLimits: ...

def make_caps(
    *,
    max_dose_ng_per_day: int,
    origin: Origin | str = ...,  # spinal
    titration_cap_pct: int | None = ...,  # origin default; may only be lower
    min_titration_interval_ms: int = ...,  # 24 h
    decrease_confirm_pct: int = ...,  # 20
    bolus_enabled: bool = ...,  # True
    patient_bolus_enabled: bool = ...,  # False
    max_bolus_ng: int = ...,  # 50 µg
    bolus_lockout_ms: int = ...,  # 4 h
    max_boluses_per_day: int = ...,  # 2
    minimum_rate_nl_per_h: int = ...,  # 2000 (0.048 mL/day)
    max_priming_volume_nl: int = ...,  # 0.3 mL
    taper_pct: int = ...,  # 20
    taper_interval_ms: int = ...,  # 2 days
    titration_start_dose_ng_per_day: int = ...,  # 0 (not given); at most max_dose_ng_per_day
    restart_threshold_ms: int = ...,  # 24 h; 0 to 7 days
) -> PatientCaps: ...
def check_caps_against_limits(caps: PatientCaps, limits: DrugLimits) -> None: ...
def stricter_caps(old: PatientCaps, new: PatientCaps) -> PatientCaps:
    """Every limit at the stricter of the two, every setting (origin, minimum rate) at the new value."""
def caps_to_dict(caps: PatientCaps) -> dict: ...
def caps_from_dict(data: object, field: str = "caps") -> PatientCaps:
    """Validated inverse of caps_to_dict; ConfigError (never TypeError) for anything else."""

def make_envelope(min_rate_nl_per_h: int, max_rate_nl_per_h: int, rate_step_nl_per_h: int = 1) -> PumpEnvelope: ...

def make_override(codes: Iterable[str], *, reason: str, actor: str) -> Override: ...

def request_rate_change(rate_nl_per_h: int, *, override: Override | None = None) -> Request: ...
def request_programme_change(programme: Programme, *, override: Override | None = None) -> Request: ...
def request_bolus(kind: DeliveryKind | int, volume_nl: int, duration_ms: int, *, override: Override | None = None) -> Request: ...
def request_concentration_change(
    programme: Programme,
    bridge: BridgePlan | None,
    *,
    override: Override | None = None,
    record_concentration_ug_per_ml: int | None = None,
) -> Request: ...
def request_discontinue(authorisation: Override | None, *, emergency: bool = False) -> Request: ...
def request_minimum_rate() -> Request: ...
def request_procedure_stop(authorisation: Override | None) -> Request:
    """A guided procedure's zero-rate hold (SAFE-05, an MRI whose pump labelling requires zero [S34]): needs an
    Override naming PROCEDURE and a programme in effect (else NO_PROGRAMME); applied, the dose history holds 0 and
    an interruption (cause "procedure") opens with the programme kept as the projection's basal, as for a stop.
    Delivery comes back only by request_resume, under the restart rule."""
def request_resume(rate_nl_per_h: int | None = None, *, programme: Programme | None = None,
                   override: Override | None = None) -> Request:
    """Resume after an interruption (exactly one of a rate or a programme): the restart rule."""
def request_caps_change(caps: PatientCaps, *, confirmation: Override | None) -> Request:
    """Replace the caps; needs an Override naming CAPS_CHANGE; loosened limits held 24 h."""
def check_request(request: Request) -> Request:
    """Re-check every field (both kernels call it: a Request can be built directly)."""

class Decision(NamedTuple):
    allowed: bool
    kind: int  # RequestKind
    reasons: tuple[str, ...]  # every failing code, ALL_REASONS order; () when allowed
    overridden: tuple[str, ...]  # soft codes lifted by the override (+ "DISCONTINUE", "CAPS_CHANGE" or "PROCEDURE")
    rate_nl_per_h: int  # rate change / minimum rate; 0 otherwise (and for discontinue)
    programme: Programme | None  # programme / concentration change
    bolus_kind: int  # DeliveryKind of a bolus (BRIDGE for a concentration change), else -1
    volume_nl: int
    duration_ms: int
    mass_pg: int  # bolus mass (0 for a concentration change: its transit is part of the programme)
    daily_dose_ng: int  # daily dose of the programme in effect after the decision
    at_ms: int
    request: Request
    state_version: int  # kernel state_version it was decided on

def state_checksum(state: dict) -> str:
    """SHA-256 hex of a state snapshot's canonical JSON, without its checksum key."""

def plan_titration(
    current_dose_ng_per_day: int,
    target_dose_ng_per_day: int,
    *,
    start_ms: int,
    titration_cap_pct: int,
    interval_ms: int = ...,
    taper_pct: int = ...,
    taper_interval_ms: int = ...,
) -> tuple[TitrationStep, ...]: ...

def tighten(value: int, ceilings: Sequence[tuple[str, int, str]] = (), *, step: int = 1, step_name: str = "pump_step") -> Tightened:
    """Only lowers: clamp >= 0, each (name, ceiling, reason), round down to step; records why."""

class Programme:
    """Rate function over a repeating 24 h day at one concentration (simple continuous or flex)."""
    steps: tuple[tuple[int, int, int], ...]  # (start_offset_ms, duration_ms, rate_nl_per_h)
    periodic_boluses: tuple[tuple[int, int, int], ...]  # extra rate on top of the steps
    concentration_ug_per_ml: int
    anchor_ms: int  # monotonic time of day offset 0
    segments: tuple[tuple[int, int], ...]  # merged (start_offset_ms, rate_nl_per_h)
    def __init__(
        self,
        steps: Sequence[tuple[int, int, int]],
        concentration_ug_per_ml: int,
        *,
        periodic_boluses: Sequence[tuple[int, int, int]] = (),
        anchor_ms: int = 0,
    ) -> None: ...
    @classmethod
    def continuous(cls, rate_nl_per_h: int, concentration_ug_per_ml: int, *, anchor_ms: int = 0) -> Programme: ...
    def rate_at(self, t_ms: int) -> int: ...
    def next_boundary(self, t_ms: int) -> int | None: ...
    def volume_numerator(self, t0_ms: int, t1_ms: int) -> int:
        """Exact volume in [t0, t1) times 3 600 000 (nL·ms/h)."""
    def delivered_pg(self, t0_ms: int, t1_ms: int) -> int:
        """Mass delivered in [t0, t1), pg, rounded up."""
    def daily_total_nl(self) -> int: ...
    def daily_total_pg(self) -> int: ...
    def daily_total_ng(self) -> int: ...
    @property
    def max_rate_nl_per_h(self) -> int: ...
    @property
    def min_rate_nl_per_h(self) -> int: ...
    def key(self) -> tuple: ...

class Ledger:
    """Rolling 24 h ledger in pg at 1-minute resolution: delivered by kind, committed, bolus starts."""
    def __init__(self) -> None: ...
    @property
    def latest_minute(self) -> int | None: ...
    def record(self, kind: int, mass_pg: int, at_ms: int) -> None: ...
    def record_volume(self, kind: int, volume_nl: int, concentration_ug_per_ml: int, at_ms: int) -> int: ...
    def record_latest(self, kind: int, mass_pg: int, now_ms: int, *, max_rate_nl_per_h: int,
                      concentration_ug_per_ml: int, earliest_ms: int | None = None) -> int:
        """Delivery found at ``now_ms`` (after a restart), placed as late as it can have happened.

        Contract: the mass fills the minutes backwards from now's minute, each with at most what
        ``max_rate_nl_per_h`` delivers in a minute at the concentration (rounded up), never before
        ``earliest_ms``'s minute (the checkpoint) nor the window's first minute; what does not fit
        counts in full in now's minute. Every 24 h window ending now or later then holds at least
        as much of it as any delivery at or below that rate could have put there, so no rolling
        window check is looser than the truth. ``now_ms`` may not lie in a minute before the
        newest record (time never goes backwards). All or nothing. Returns the start of the
        earliest minute that received any of it, ms.
        """
    def record_spread(self, kind: int, mass_pg: int, start_ms: int, end_ms: int, slot_ms: int) -> None:
        """Delivery at an even rate over ``[start_ms, end_ms]``, recorded as polls every ``slot_ms`` record it.

        Contract: the same ledger as :meth:`record` of each part in time order. The span is cut at
        every multiple of ``slot_ms`` strictly inside it and at ``end_ms``; the part ending at ``b``
        is ``mass * (b - start) // span`` less the same at the part's start, recorded at ``b``.
        Parts of 0 pg, and parts at or before ``end_ms - 24 h`` (in no window ending at ``end_ms``
        or later), are not recorded; a span of 0 records the mass at ``end_ms``. ``slot_ms`` from
        ``MIN_SPREAD_SLOT_MS`` to 24 h. All or nothing: a part before the window of the newest
        record, or a full bucket, refuses the whole call. One call instead of one per poll: the
        in-silico cohort reconciles once a day what 48 polls would have recorded.
        """
    def commit(self, kind: int, mass_pg: int) -> None: ...
    def release(self, kind: int, mass_pg: int) -> None: ...
    def committed_pg(self, kind: int | None = None) -> int: ...
    def record_bolus_start(self, kind: int, at_ms: int) -> None: ...
    def bolus_count_24h(self, now_ms: int, kinds: Iterable[int] = ...) -> int: ...
    def last_bolus_ms(self, kinds: Iterable[int] = ...) -> int | None: ...
    def bucket_totals(self, first_minute: int, last_minute: int) -> list[int]: ...
    def delivered_24h_pg(self, now_ms: int, kind: int | None = None) -> int: ...
    def total_24h_pg(self, now_ms: int, kind: int | None = None) -> int:
        """Delivered in the window ending in now's minute + everything committed, pg."""
    def total_24h_ng(self, now_ms: int, kind: int | None = None) -> int: ...
    def snapshot(self) -> dict:
        """Exact JSON-serialisable state, identical across implementations."""
    @classmethod
    def restore(cls, snapshot: dict) -> Ledger: ...

class SafetyKernel:
    """The one gate. authorize() is pure; apply() records an allowed, executed decision."""
    limits: DrugLimits
    caps: PatientCaps
    envelope: PumpEnvelope
    ledger: Ledger
    library: dict[int, DrugLimits]
    programme: Programme | None
    dose_history: list[tuple[int, int]]  # (at_ms, daily dose ng in effect from then) pruned to the 24 h rules' need
    last_increase_ms: int | None  # the start or the last titration step (TIT-04 interval)
    last_step_ms: int | None  # the last titration step (bolus stacking)
    therapy_start_ms: int | None  # no increase in the 24 h after it
    interruption: Interruption | None  # open from a stop, minimum rate or discontinue until a resume
    held_caps: tuple[int, PatientCaps] | None  # (until_ms, caps in force until then) after a caps change
    state_version: int  # +1 per apply() and per note_stopped() that changed something
    def __init__(
        self,
        limits: DrugLimits,
        caps: PatientCaps,
        envelope: PumpEnvelope,
        ledger: Ledger | None = None,
        *,
        library: dict[int, DrugLimits] | None = None,
        programme: Programme | None = None,
        programme_since_ms: int = 0,
        therapy_start_ms: int | None = None,  # with a programme; default programme_since_ms
    ) -> None: ...
    @property
    def daily_dose_ng(self) -> int:
        """Daily dose of the last authorised programme (still set, and projected, while stopped)."""
    def dose_in_effect_ng(self, t_ms: int) -> int: ...
    def titration_baseline_ng(self, now_ms: int) -> int:
        """Lowest daily dose in effect at any moment of [now - 24 h, now] (TIT-01 baseline)."""
    def effective_caps(self, now_ms: int) -> PatientCaps:
        """The caps in force: within 24 h of a caps change, stricter_caps(old, new)."""
    @property
    def newest_event_ms(self) -> int | None: ...
    def cap_pg(self, limits: DrugLimits | None = None, *, now_ms: int | None = None) -> int:
        """The 24 h cap in force at now_ms (without it: a held stricter cap while one is stored)."""
    def headroom_pg(self, now_ms: int, programme: Programme | None = None) -> int:
        """Largest extra mass keeping every projected window within the cap (for tighten())."""
    def projected_excess_pg(self, now_ms: int, programme: Programme | None, extra_pg: int = 0) -> int:
        """Largest ``window total - cap`` (pg) over every trailing 24 h window ending from now's minute
        on, holding the ledger's part, everything committed, ``programme``'s basal from now (None:
        none) and ``extra_pg`` at now; > 0 means a window passes the cap (the orphan check)."""
    def tighten_running_bolus(self, remaining_volume_nl: int, now_ms: int, *, step_nl: int = 1) -> Tightened:
        """BOL-04: cut a running bolus's (still committed) remainder by any excess over the cap."""
    def plan_titration(self, target_dose_ng_per_day: int, now_ms: int) -> tuple[TitrationStep, ...]: ...
    def authorize(self, request: Request, now_ms: int) -> Decision:
        """Pure: every failing reason; never changes state."""
    def is_fresh(self, decision: Decision, now_ms: int) -> bool:
        """Decided on the current state_version, at most MAX_DECISION_AGE_MS ago: check before commanding."""
    def apply(self, decision: Decision, now_ms: int) -> None:
        """Record an allowed, EXECUTED decision (however late, never before newest_event_ms); all or nothing."""
    def note_stopped(self, at_ms: int) -> None:
        """A fact the kernel did not authorise: delivery stopped at ``at_ms`` (a STOP fault reaction,
        or a pump found stopped; pass the earliest time it may have stopped). A zero dose enters the
        history and an interruption opens (or continues); the programme stays the projection's basal.
        A no-op when nothing is delivered."""
    def state_snapshot(self) -> dict:
        """The whole state (version 2): caps and held caps, programme, dose history, therapy start,
        last increase and step, interruption, state version, ledger; exact, JSON-serialisable,
        identical across implementations, with a SHA-256 checksum of the rest."""
    @classmethod
    def from_snapshot(
        cls, snapshot: dict, caps: PatientCaps | None, envelope: PumpEnvelope, *, library: dict[int, DrugLimits] | None = None
    ) -> SafetyKernel:
        """Restart exactly where state_snapshot() left off (PER-02): decides as the writer would.

        ``caps``: None (the snapshot's) or equal to them. Raises ConfigError for another version,
        a checksum mismatch (truncated or altered), any malformed or inconsistent part, or other
        caps; then the caller refuses increases and boluses and keeps the current rate (SAFE-04)."""
