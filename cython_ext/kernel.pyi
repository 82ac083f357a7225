"""Public API of the safety kernel (both implementations: ``_kernel`` compiled, ``_kernel_py`` twin).

Units: time ms, mass ng (pg inside the ledger: 1 nL at 1 µg/mL is exactly 1 pg),
volume nL, concentration µg/mL, dose rate ng/day, volume rate nL/h. All integers;
a float anywhere raises :class:`TypeError`. Bad values raise
:class:`cython_ext.errors.ConfigError` (a ``ValueError`` with ``field``,
``value``, ``allowed``), the project's own error type: no layer translates it.

Typical use::

    from cython_ext import kernel as k
    limits = k.DEFAULT_LIBRARY[500]
    caps = k.make_caps(max_dose_ng_per_day=300_000, origin="spinal")
    envelope = k.make_envelope(min_rate_nl_per_h=2_000, max_rate_nl_per_h=1_000_000)
    gate = k.SafetyKernel(limits, caps, envelope, k.Ledger(),
                          programme=k.Programme.continuous(16_000, 500), programme_since_ms=now_ms)
    decision = gate.authorize(k.request_rate_change(18_000), now_ms)
    if decision.allowed:
        ...  # command the pump; on success:
        gate.apply(decision, now_ms)
    else:
        journal(decision.reasons)   # every failing reason code

Shared value objects (one pure-Python source for both implementations): Bounds,
DrugLimits, DEFAULT_LIBRARY, PatientCaps/make_caps, PumpEnvelope/make_envelope,
Override/make_override, BridgePlan, Request + request_* constructors, Decision,
Reason codes, tighten(), plan_titration(). Implemented twice and proven equal by
differential tests: Programme, Ledger, SafetyKernel.
"""

import enum
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

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
SNAPSHOT_VERSION: int
MAX_DECISION_AGE_MS: int  # 60_000: older decisions are not is_fresh(); re-authorise
MIN_TIME_MS: int  # -(2**61): earliest time (anchors) accepted
MAX_TIME_MS: int  # 2**62: latest time accepted
MAX_INTERVAL_MS: int  # 366 days: longest interval one integral call accepts
N_KINDS: int

class DeliveryKind(enum.IntEnum):
    """What a ledger entry was delivered as; every kind counts towards 24 h totals."""
    BASAL = 0
    FLEX = 1
    BOLUS_CLINICIAN = 2
    BOLUS_PATIENT = 3
    BOLUS_PERIODIC = 4
    PRIMING = 5
    BRIDGE = 6
    MINIMUM_RATE = 7

BOLUS_KINDS: tuple[DeliveryKind, ...]  # clinician, patient, priming, bridge
COUNTED_BOLUS_KINDS: tuple[DeliveryKind, ...]  # clinician, patient: size, lockout and count apply

class RequestKind(enum.IntEnum):
    RATE_CHANGE = 1
    PROGRAMME_CHANGE = 2
    BOLUS = 3
    CONCENTRATION_CHANGE = 4
    DISCONTINUE = 5
    MINIMUM_RATE = 6

class Origin(enum.Enum):
    SPINAL = "spinal"  # titration cap 30 %
    CEREBRAL = "cerebral"  # 15 %
    PAEDIATRIC = "paediatric"  # 15 %

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
    TITRATION_CAP_EXCEEDED: str  # net increase over the dose in effect 24 h earlier > cap %
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

ALL_REASONS: tuple[str, ...]  # every code, in the order decisions list them
SOFT_REASONS: frozenset[str]
DISCONTINUE_AUTHORISATION: str  # "DISCONTINUE": the Override code that authorises zero flow
REASON_INDEX: dict[str, int]

class Bounds(NamedTuple):
    """lower_hard <= lower_soft <= upper_soft <= upper_hard, in the quantity's unit."""
    lower_hard: int
    lower_soft: int
    upper_soft: int
    upper_hard: int
    def validate(self, field: str, unit: str = "") -> Bounds: ...
    def classify(self, value: int) -> int:
        """-2 below hard, -1 below soft, 0 inside soft, 1 above soft, 2 above hard."""

def make_bounds(field: str, lower_hard: int, lower_soft: int, upper_soft: int, upper_hard: int, unit: str = "") -> Bounds: ...

class DrugLimits(NamedTuple):
    """Drug-library entry at one concentration. Call validate() after building one by hand."""
    code: str
    name: str
    concentration_ug_per_ml: int
    concentration: Bounds  # µg/mL
    dose_ng_per_day: Bounds
    rate_nl_per_h: Bounds
    bolus_ng: Bounds
    bolus_lockout_ms: Bounds
    boluses_per_day: Bounds
    screening_only: bool = ...
    def validate(self) -> DrugLimits: ...

#: Intrathecal baclofen at 50 (screening only), 500, 1000, 2000 µg/mL, keyed by µg/mL.
#: Hard dose 12-2003 µg/day, soft 24-1000; rate hard 2000-1 000 000 nL/h (0.048-24 mL/day);
#: concentration ±5 % hard, ±2 % soft; bolus 1-100 µg hard, 10-75 soft; lockout >= 1 h hard,
#: >= 3 h soft; boluses/day <= 8 hard, <= 4 soft. Soft and bolus numbers are PLACEHOLDERS.
DEFAULT_LIBRARY: dict[int, DrugLimits]

def library_entry(concentration_ug_per_ml: int, library: dict[int, DrugLimits] | None = None) -> DrugLimits: ...

class PatientCaps(NamedTuple):
    origin: Origin
    max_dose_ng_per_day: int
    titration_cap_pct: int
    min_titration_interval_ms: int
    decrease_confirm_pct: int
    bolus_enabled: bool
    patient_bolus_enabled: bool
    max_bolus_ng: int
    bolus_lockout_ms: int
    max_boluses_per_day: int
    minimum_rate_nl_per_h: int
    max_priming_volume_nl: int
    taper_pct: int
    taper_interval_ms: int

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
) -> PatientCaps: ...
def check_caps_against_limits(caps: PatientCaps, limits: DrugLimits) -> None: ...

class PumpEnvelope(NamedTuple):
    min_rate_nl_per_h: int
    max_rate_nl_per_h: int
    rate_step_nl_per_h: int = ...

def make_envelope(min_rate_nl_per_h: int, max_rate_nl_per_h: int, rate_step_nl_per_h: int = 1) -> PumpEnvelope: ...

class Override(NamedTuple):
    """Explicit permission to pass the named soft limits (or DISCONTINUE), with reason and actor."""
    codes: frozenset[str]
    reason: str
    actor: str

def make_override(codes: Iterable[str], *, reason: str, actor: str) -> Override: ...

class BridgePlan(NamedTuple):
    volume_nl: int  # dead volume, counted at the OLD concentration
    duration_ms: int

class Request(NamedTuple):
    kind: int
    rate_nl_per_h: int
    programme: Programme | None
    bolus_kind: int
    volume_nl: int
    duration_ms: int
    bridge: BridgePlan | None
    override: Override | None
    emergency: bool
    record_concentration_ug_per_ml: int = ...  # refill record, 0 when not given

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
def check_request(request: Request) -> Request:
    """Re-check every field (both kernels call it: a Request can be built directly)."""

class Decision(NamedTuple):
    allowed: bool
    kind: int  # RequestKind
    reasons: tuple[str, ...]  # every failing code, ALL_REASONS order; () when allowed
    overridden: tuple[str, ...]  # soft codes lifted by the override (+ "DISCONTINUE")
    rate_nl_per_h: int  # rate change / minimum rate; 0 otherwise (and for discontinue)
    programme: Programme | None  # programme / concentration change
    bolus_kind: int  # DeliveryKind of a bolus (BRIDGE for a concentration change), else -1
    volume_nl: int
    duration_ms: int
    mass_pg: int  # bolus (or bridge) mass
    daily_dose_ng: int  # daily dose of the programme in effect after the decision
    at_ms: int
    request: Request
    state_version: int  # kernel state_version it was decided on

class TitrationStep(NamedTuple):
    at_ms: int
    dose_ng_per_day: int

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

class TightenStep(NamedTuple):
    name: str
    before: int
    after: int
    reason: str

class Tightened(NamedTuple):
    value: int
    original: int
    steps: tuple[TightenStep, ...]

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
    dose_history: list[tuple[int, int]]  # (at_ms, daily dose ng) pruned to what titration needs
    last_increase_ms: int | None
    state_version: int  # +1 per apply()
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
    ) -> None: ...
    @property
    def daily_dose_ng(self) -> int: ...
    def dose_in_effect_ng(self, t_ms: int) -> int: ...
    def cap_pg(self, limits: DrugLimits | None = None) -> int: ...
    def headroom_pg(self, now_ms: int, programme: Programme | None = None) -> int:
        """Largest extra mass keeping every projected window within the cap (for tighten())."""
    def tighten_running_bolus(self, remaining_volume_nl: int, now_ms: int, *, step_nl: int = 1) -> Tightened:
        """BOL-04: cut a running bolus's (still committed) remainder by any excess over the cap."""
    def plan_titration(self, target_dose_ng_per_day: int, now_ms: int) -> tuple[TitrationStep, ...]: ...
    def authorize(self, request: Request, now_ms: int) -> Decision:
        """Pure: every failing reason; never changes state."""
    def is_fresh(self, decision: Decision, now_ms: int) -> bool:
        """Decided on the current state_version, at most MAX_DECISION_AGE_MS ago: check before commanding."""
    def apply(self, decision: Decision, now_ms: int) -> None:
        """Record an allowed, EXECUTED decision (however late); all or nothing."""
    def state_snapshot(self) -> dict:
        """Concentration, programme, dose history, last increase and ledger: exact, JSON-serialisable."""
    @classmethod
    def from_snapshot(
        cls, snapshot: dict, caps: PatientCaps, envelope: PumpEnvelope, *, library: dict[int, DrugLimits] | None = None
    ) -> SafetyKernel:
        """Restart exactly where state_snapshot() left off (PER-02)."""
