# cython: language_level=3
"""Compiled safety kernel: the implementation the package uses.

Same behaviour and API as the pure-Python twin ``_kernel_py`` (documented in
``kernel.pyi``), proven equal by differential tests. What differs is speed:

- :class:`Programme` keeps its rate function in C arrays with prefix integrals,
  so the volume between two times costs two binary searches.
- :class:`Ledger` is a ring of 1440 one-minute buckets per delivery kind in C
  arrays, with a running window total; totals are O(1) when time moves forward
  minute by minute.
- :class:`SafetyKernel` caches every limit as a C integer (the caps in force and,
  for 24 h after a caps change, the held stricter ones, chosen per call), keeps
  the history's times and the open interruption as C values, collects reasons in
  a bit mask, and projects the 24 h windows in three tiers: an O(1) conservative
  test (everything still inside the window now + everything committed + this
  request + a full day of basal), then a bound from 90-minute block sums (about
  17 evaluations), and only when both fail, i.e. near the cap, the exact
  minute-by-minute scan, integrating the programme incrementally. The tiers only
  ever answer "within the cap" when the exact scan would, so decisions equal the
  twin's brute force by construction (and by the differential tests).

Compiler directives (``setup.py``): bounds checking and wraparound stay on, and
``cdivision`` stays off, so C integer division keeps Python's floor semantics and
division by zero raises. Every input is range-checked before it reaches a C
integer, so no intermediate can overflow 64 bits (see the ``MAX_*`` constants).
"""

from cython_ext._common import *  # re-export the shared API
from cython_ext._common import (
    ALL_REASONS,
    BOLUS_HISTORY,
    COUNTED_BOLUS_KINDS,
    DEFAULT_LIBRARY,
    DISCONTINUE_AUTHORISATION,
    PROCEDURE_AUTHORISATION,
    LEDGER_RESOLUTION_MS,
    MAX_BUCKET_PG,
    MAX_RECORD_PG,
    N_KINDS,
    REASON_INDEX,
    SNAPSHOT_VERSION,
    SOFT_REASONS,
    WINDOW_BUCKETS,
    Decision,
    DeliveryKind,
    BridgePlan,
    DrugLimits,
    PatientCaps,
    PumpEnvelope,
    Reason,
    Request,
    RequestKind,
    TitrationStep,
    check_caps_against_limits,
    check_programme_shape,
    plan_titration,
    tighten,
    MAX_DECISION_AGE_MS,
    _check_snapshot,
    _check_interval,
    check_request,
    MIN_TIME_MS,
    MAX_TIME_MS,
    MIN_SPREAD_SLOT_MS,
    MAX_RATE_NL_PER_H,
    MAX_CONCENTRATION_UG_PER_ML,
    MAX_BOLUS_VOLUME_NL,
    Override,
    BOLUS_STACKING_WINDOW_MS,
    CAPS_CHANGE_CONFIRMATION,
    CAPS_HOLD_MS,
    NO_INCREASE_AFTER_START_MS,
    TRANSIT_DOSE_TOLERANCE_PCT,
    STATE_SNAPSHOT_VERSION,
    Interruption,
    InterruptionCause,
    caps_to_dict,
    state_checksum,
    stricter_caps,
    _check_state_snapshot,
    _prune_history,
)
from cython_ext.errors import ConfigError, require_int, require_range
from cython_ext.units import div_round

IMPLEMENTATION = "compiled"

ctypedef long long i64

cdef enum:
    MAX_SEGMENTS = 64
    NK = 8
    RING = 1440
    HIST = 256
    BLOCK = 90
    NBLK = 17

cdef i64 RES = 60000
cdef i64 DAY = 86400000
cdef i64 HOUR = 3600000
cdef i64 C_MAX_BUCKET = 10 ** 14
cdef i64 C_MAX_RECORD = 10 ** 13
cdef i64 NO_MINUTE = -(2 ** 62)  # the tag of a slot that never held a minute

# Request and delivery kinds as C constants, read from their one definition.
cdef int K_RATE = RequestKind.RATE_CHANGE, K_PROG = RequestKind.PROGRAMME_CHANGE, K_BOLUS = RequestKind.BOLUS
cdef int K_CONC = RequestKind.CONCENTRATION_CHANGE, K_DISC = RequestKind.DISCONTINUE, K_MIN = RequestKind.MINIMUM_RATE
cdef int K_RESUME = RequestKind.RESUME, K_CAPS = RequestKind.CAPS_CHANGE, K_PROC = RequestKind.PROCEDURE_STOP
cdef int D_CLIN = DeliveryKind.BOLUS_CLINICIAN, D_PAT = DeliveryKind.BOLUS_PATIENT, D_BRIDGE = DeliveryKind.BRIDGE
# C array sizes must be literals; they are checked against the vocabulary when the module loads.
if NK != N_KINDS or RING != WINDOW_BUCKETS or HIST != BOLUS_HISTORY:
    raise ImportError("compiled kernel constants disagree with cython_ext.vocabulary / _common; rebuild it")

# Reason bit positions (index into ALL_REASONS).
cdef int R_NO_PROGRAMME = REASON_INDEX[Reason.NO_PROGRAMME]
cdef int R_SCREENING_ONLY = REASON_INDEX[Reason.SCREENING_ONLY]
cdef int R_CLOCK = REASON_INDEX[Reason.CLOCK_BEHIND_LEDGER]
cdef int R_CONC_NOT_IN_LIB = REASON_INDEX[Reason.CONCENTRATION_NOT_IN_LIBRARY]
cdef int R_CONC_CHANGED = REASON_INDEX[Reason.CONCENTRATION_CHANGED]
cdef int R_CONC_UNCHANGED = REASON_INDEX[Reason.CONCENTRATION_UNCHANGED]
cdef int R_BRIDGE_MISSING = REASON_INDEX[Reason.BRIDGE_PLAN_MISSING]
cdef int R_DOSE_BELOW_HARD = REASON_INDEX[Reason.DOSE_BELOW_HARD]
cdef int R_DOSE_BELOW_SOFT = REASON_INDEX[Reason.DOSE_BELOW_SOFT]
cdef int R_DOSE_ABOVE_SOFT = REASON_INDEX[Reason.DOSE_ABOVE_SOFT]
cdef int R_DOSE_ABOVE_HARD = REASON_INDEX[Reason.DOSE_ABOVE_HARD]
cdef int R_DOSE_ABOVE_RX = REASON_INDEX[Reason.DOSE_ABOVE_PRESCRIPTION_CAP]
cdef int R_RATE_ZERO = REASON_INDEX[Reason.RATE_ZERO]
cdef int R_RATE_BELOW_HARD = REASON_INDEX[Reason.RATE_BELOW_HARD]
cdef int R_RATE_BELOW_SOFT = REASON_INDEX[Reason.RATE_BELOW_SOFT]
cdef int R_RATE_ABOVE_SOFT = REASON_INDEX[Reason.RATE_ABOVE_SOFT]
cdef int R_RATE_ABOVE_HARD = REASON_INDEX[Reason.RATE_ABOVE_HARD]
cdef int R_RATE_BELOW_PUMP = REASON_INDEX[Reason.RATE_BELOW_PUMP_MIN]
cdef int R_RATE_ABOVE_PUMP = REASON_INDEX[Reason.RATE_ABOVE_PUMP_MAX]
cdef int R_RATE_STEP = REASON_INDEX[Reason.RATE_NOT_PUMP_STEP]
cdef int R_RATE_BELOW_MIN = REASON_INDEX[Reason.RATE_BELOW_MINIMUM_RATE]
cdef int R_TIT_CAP = REASON_INDEX[Reason.TITRATION_CAP_EXCEEDED]
cdef int R_TIT_INTERVAL = REASON_INDEX[Reason.TITRATION_INTERVAL]
cdef int R_DECREASE = REASON_INDEX[Reason.DECREASE_NEEDS_CONFIRMATION]
cdef int R_BOLUS_DISABLED = REASON_INDEX[Reason.BOLUS_DISABLED]
cdef int R_BOLUS_BELOW_HARD = REASON_INDEX[Reason.BOLUS_BELOW_HARD]
cdef int R_BOLUS_BELOW_SOFT = REASON_INDEX[Reason.BOLUS_BELOW_SOFT]
cdef int R_BOLUS_ABOVE_SOFT = REASON_INDEX[Reason.BOLUS_ABOVE_SOFT]
cdef int R_BOLUS_ABOVE_HARD = REASON_INDEX[Reason.BOLUS_ABOVE_HARD]
cdef int R_BOLUS_ABOVE_RX = REASON_INDEX[Reason.BOLUS_ABOVE_PRESCRIPTION_MAX]
cdef int R_LOCKOUT = REASON_INDEX[Reason.BOLUS_LOCKOUT]
cdef int R_COUNT = REASON_INDEX[Reason.BOLUS_COUNT]
cdef int R_BOLUS_RATE = REASON_INDEX[Reason.BOLUS_RATE_ABOVE_PUMP_MAX]
cdef int R_PRIMING = REASON_INDEX[Reason.PRIMING_VOLUME_ABOVE_MAX]
cdef int R_CAP_24H = REASON_INDEX[Reason.DOSE_CAP_24H]
cdef int R_DISC_AUTH = REASON_INDEX[Reason.DISCONTINUE_NOT_AUTHORISED]
cdef int R_TAPER = REASON_INDEX[Reason.TAPER_INCOMPLETE]
cdef int R_MIN_ABOVE = REASON_INDEX[Reason.MINIMUM_RATE_ABOVE_CURRENT]
cdef int R_CONC_BELOW_HARD = REASON_INDEX[Reason.CONCENTRATION_BELOW_HARD]
cdef int R_CONC_BELOW_SOFT = REASON_INDEX[Reason.CONCENTRATION_BELOW_SOFT]
cdef int R_CONC_ABOVE_SOFT = REASON_INDEX[Reason.CONCENTRATION_ABOVE_SOFT]
cdef int R_CONC_ABOVE_HARD = REASON_INDEX[Reason.CONCENTRATION_ABOVE_HARD]
cdef int R_START_24H = REASON_INDEX[Reason.INCREASE_WITHIN_24H_OF_START]
cdef int R_RESUME_NONE = REASON_INDEX[Reason.RESUME_WITHOUT_INTERRUPTION]
cdef int R_RESTART_PRIOR = REASON_INDEX[Reason.RESTART_OVERDOSE_RISK_ABOVE_PRIOR_DOSE]
cdef int R_RESTART_START = REASON_INDEX[Reason.RESTART_OVERDOSE_RISK_ABOVE_START_DOSE]
cdef int R_BOLUS_OD_CAP = REASON_INDEX[Reason.BOLUS_OVERDOSE_RISK_24H_CAP]
cdef int R_BOLUS_OD_STEP = REASON_INDEX[Reason.BOLUS_OVERDOSE_RISK_TITRATION_STEP]
cdef int R_CAPS_UNCONFIRMED = REASON_INDEX[Reason.CAPS_CHANGE_NOT_CONFIRMED]
cdef int R_TRANSIT_DOSE = REASON_INDEX[Reason.TRANSIT_DOSE_ABOVE_PROGRAMME]
cdef int R_PROC_AUTH = REASON_INDEX[Reason.PROCEDURE_NOT_AUTHORISED]

cdef tuple _ALL_REASONS = ALL_REASONS
cdef unsigned long long _SOFT_MASK = 0
for _code in SOFT_REASONS:
    _SOFT_MASK |= (<unsigned long long>1) << REASON_INDEX[_code]
assert len(ALL_REASONS) <= 64

_tuple_new = tuple.__new__
_EMPTY = ()


cdef inline unsigned long long bit(int index):
    return (<unsigned long long>1) << index


cdef inline unsigned long long bound_bit(int where, int below_hard, int below_soft, int above_soft, int above_hard):
    """The reason bit for where a value lies (``classify_c``: -2, -1, 0, 1, 2); 0 inside the soft bounds."""
    if where == -2:
        return bit(below_hard)
    if where == -1:
        return bit(below_soft)
    if where == 1:
        return bit(above_soft)
    if where == 2:
        return bit(above_hard)
    return 0


cdef inline i64 ceil_div(i64 a, i64 b):
    """Ceiling of a / b for a >= 0, b > 0."""
    return -((-a) // b)


cdef inline i64 mass_pg_of(i64 vnum, i64 conc):
    """ceil(vnum * conc / HOUR) without forming the full product."""
    cdef i64 q = vnum // HOUR
    cdef i64 r = vnum - q * HOUR
    return q * conc + ceil_div(r * conc, HOUR)


cdef inline int classify_c(const i64* b, i64 value) noexcept:
    if value < b[0]:
        return -2
    if value > b[3]:
        return 2
    if value < b[1]:
        return -1
    if value > b[2]:
        return 1
    return 0


cdef inline i64 or_zero(object at_ms) except? -1:
    """A time that may be ``None`` (ms) as the C copy the hot path reads beside its ``has_`` flag."""
    return 0 if at_ms is None else at_ms


cdef inline void load_bounds(i64* out, object bounds) except *:
    out[0] = bounds[0]
    out[1] = bounds[1]
    out[2] = bounds[2]
    out[3] = bounds[3]


cdef struct Walker:
    # Integrates a programme forward in time: the volume numerator delivered since the
    # start, kept as q * HOUR + r so that the mass can be formed without overflow.
    i64 t      # absolute time reached, ms
    i64 o      # offset within the programme day, ms
    int i      # segment holding offset o
    i64 q
    i64 r


cdef extern from "Python.h":
    long long PyLong_AsLongLongAndOverflow(object value, int* overflow) except? -1


cdef inline i64 _range(str field, object value, i64 low, i64 high, str unit) except? -1:
    """``require_range`` for the kernel's hot paths: an exact ``int`` inside ``[low, high]`` is read
    in C and returned; anything else (another type, out of range, beyond 64 bits) goes to
    ``require_range`` itself, which refuses it with its own error (same type, field, value, range)."""
    cdef int overflow = 0
    cdef i64 v
    if type(value) is int:
        v = PyLong_AsLongLongAndOverflow(value, &overflow)
        if overflow == 0 and low <= v <= high:
            return v
    return require_range(field, value, low, high, unit)


cdef tuple codes_of(unsigned long long mask):
    if mask == 0:
        return _EMPTY
    cdef list out = []
    cdef int i
    for i in range(64):
        if mask & bit(i):
            out.append(_ALL_REASONS[i])
    return tuple(out)


cdef int check_kind(object kind) except -1:
    cdef int overflow = 0
    cdef i64 v
    if type(kind) is int:
        v = PyLong_AsLongLongAndOverflow(kind, &overflow)
        if overflow == 0 and 0 <= v < NK:
            return <int>v
    cdef object k = require_int("kind", kind)
    if not 0 <= k < NK:
        raise ConfigError("kind", k, f"a DeliveryKind in [0, {N_KINDS - 1}]")
    return <int>k


# ---------------------------------------------------------------------------------------------
# Programme


cdef class Programme:
    """A delivery programme: a rate function over a repeating 24 h day, at one concentration.

    :param steps: ``(start_offset_ms, duration_ms, rate_nl_per_h)`` flex steps, contiguous from
        0 and covering exactly 24 h (one step = simple continuous), at most 13.
    :param concentration_ug_per_ml: concentration, µg/mL.
    :param periodic_boluses: ``(start_offset_ms, duration_ms, rate_nl_per_h)`` extra rates on top of
        the steps, inside one day, not overlapping.
    :param anchor_ms: monotonic time at which day offset 0 falls, ms.
    :raises ConfigError: on gaps, overlaps or out-of-range numbers.
    """

    cdef readonly tuple steps
    cdef readonly tuple periodic_boluses
    cdef readonly tuple segments
    cdef readonly object concentration_ug_per_ml
    cdef readonly object anchor_ms
    cdef i64 conc
    cdef i64 anchor
    cdef int nseg
    cdef i64 starts[MAX_SEGMENTS]
    cdef i64 rates[MAX_SEGMENTS]
    cdef i64 cum[MAX_SEGMENTS + 1]
    cdef i64 day
    cdef i64 max_rate
    cdef i64 min_rate

    def __init__(self, steps, concentration_ug_per_ml, *, periodic_boluses=(), anchor_ms=0):
        self.steps, self.periodic_boluses, self.segments = check_programme_shape(
            steps, periodic_boluses, concentration_ug_per_ml, anchor_ms
        )
        if len(self.segments) > MAX_SEGMENTS:
            raise ConfigError("segments", len(self.segments), f"<= {MAX_SEGMENTS}")
        self.concentration_ug_per_ml = concentration_ug_per_ml
        self.anchor_ms = anchor_ms
        self.conc = concentration_ug_per_ml
        self.anchor = anchor_ms
        self.nseg = len(self.segments)
        cdef int i
        cdef i64 end
        self.cum[0] = 0
        self.max_rate = 0
        self.min_rate = 2 ** 62
        for i in range(self.nseg):
            self.starts[i] = self.segments[i][0]
            self.rates[i] = self.segments[i][1]
        for i in range(self.nseg):
            end = self.starts[i + 1] if i + 1 < self.nseg else DAY
            self.cum[i + 1] = self.cum[i] + self.rates[i] * (end - self.starts[i])
            if self.rates[i] > self.max_rate:
                self.max_rate = self.rates[i]
            if self.rates[i] < self.min_rate:
                self.min_rate = self.rates[i]
        self.day = self.cum[self.nseg]

    @classmethod
    def continuous(cls, rate_nl_per_h, concentration_ug_per_ml, *, anchor_ms=0):
        """Simple continuous programme at one rate, nL/h."""
        if cls is Programme:
            return continuous_programme(rate_nl_per_h, concentration_ug_per_ml, anchor_ms)
        return cls([(0, DAY, rate_nl_per_h)], concentration_ug_per_ml, anchor_ms=anchor_ms)

    cdef inline int _segment(self, i64 offset):
        cdef int lo = 0, hi = self.nseg - 1, mid
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.starts[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo

    cdef inline i64 _prefix(self, i64 offset):
        cdef int i = self._segment(offset)
        return self.cum[i] + self.rates[i] * (offset - self.starts[i])

    cdef i64 _vnum(self, i64 t0, i64 t1):
        cdef i64 o0 = (t0 - self.anchor) % DAY
        cdef i64 o1 = o0 + (t1 - t0)
        return (o1 // DAY) * self.day + self._prefix(o1 % DAY) - self._prefix(o0)

    cdef void _walker_start(self, Walker* w, i64 t):
        w.t = t
        w.o = (t - self.anchor) % DAY
        w.i = self._segment(w.o)
        w.q = 0
        w.r = 0

    cdef i64 _walk_to_pg(self, Walker* w, i64 t):
        """Advance ``w`` to time ``t`` (>= w.t); return the mass delivered since the start, pg (rounded up)."""
        cdef i64 length = t - w.t
        cdef i64 take, nb
        while length > 0:
            nb = self.starts[w.i + 1] if w.i + 1 < self.nseg else DAY
            take = nb - w.o
            if take > length:
                take = length
            w.r += self.rates[w.i] * take
            w.o += take
            length -= take
            if w.o == nb:
                w.i += 1
                if w.i == self.nseg:
                    w.i = 0
                    w.o = 0
        w.t = t
        if w.r >= HOUR:
            w.q += w.r // HOUR
            w.r = w.r % HOUR
        return w.q * self.conc + ceil_div(w.r * self.conc, HOUR)

    def rate_at(self, t_ms):
        """Commanded rate at monotonic time ``t_ms``, nL/h (steps plus active periodic boluses)."""
        cdef i64 t = _range("t_ms", t_ms, MIN_TIME_MS, MAX_TIME_MS, "ms")
        return self.rates[self._segment((t - self.anchor) % DAY)]

    def next_boundary(self, t_ms):
        """First monotonic time after ``t_ms`` at which the rate changes, ms; ``None`` if it never does."""
        cdef i64 t = _range("t_ms", t_ms, MIN_TIME_MS, MAX_TIME_MS, "ms")
        if self.nseg == 1:
            return None
        cdef i64 day_start = t - (t - self.anchor) % DAY
        cdef i64 at
        cdef int d, i
        for d in range(2):
            for i in range(self.nseg):
                if i == 0 and self.rates[self.nseg - 1] == self.rates[0]:
                    continue
                at = day_start + d * DAY + self.starts[i]
                if at > t:
                    return at
        return None

    def volume_numerator(self, t0_ms, t1_ms):
        """Exact volume delivered in ``[t0_ms, t1_ms)`` times ``MS_PER_H``, i.e. in nL·ms/h."""
        _check_interval(t0_ms, t1_ms)
        return self._vnum(t0_ms, t1_ms)

    def delivered_pg(self, t0_ms, t1_ms):
        """Drug mass the programme delivers in ``[t0_ms, t1_ms)``, pg, rounded up."""
        _check_interval(t0_ms, t1_ms)
        return mass_pg_of(self._vnum(t0_ms, t1_ms), self.conc)

    def daily_total_nl(self):
        """Volume over one 24 h day, nL, rounded up."""
        return ceil_div(self.day, HOUR)

    cdef inline i64 _daily_pg(self):
        return mass_pg_of(self.day, self.conc)

    def daily_total_pg(self):
        """Drug mass over one 24 h day (steps and periodic boluses), pg, rounded up."""
        return self._daily_pg()

    def daily_total_ng(self):
        """Drug mass over one 24 h day, ng/day, rounded up."""
        return ceil_div(self._daily_pg(), 1000)

    @property
    def max_rate_nl_per_h(self):
        """Highest rate anywhere in the day, nL/h."""
        return self.max_rate

    @property
    def min_rate_nl_per_h(self):
        """Lowest rate anywhere in the day, nL/h."""
        return self.min_rate

    def key(self):
        """Canonical value: equal keys mean equal programmes, across implementations."""
        return (self.steps, self.periodic_boluses, self.concentration_ug_per_ml, self.anchor_ms)

    def __eq__(self, other):
        return hasattr(other, "key") and hasattr(other, "segments") and self.key() == other.key()

    def __hash__(self):
        return hash(self.key())

    def __repr__(self):
        return (
            f"Programme(steps={self.steps!r}, concentration_ug_per_ml={self.concentration_ug_per_ml}, "
            f"periodic_boluses={self.periodic_boluses!r}, anchor_ms={self.anchor_ms})"
        )

    def __reduce__(self):
        return (_rebuild_programme, (self.steps, self.concentration_ug_per_ml, self.periodic_boluses, self.anchor_ms))


cdef inline bint exact_in(object value, i64 low, i64 high):
    """True if ``value`` is an exact ``int`` inside ``[low, high]`` (what ``require_range`` returns unchanged)."""
    cdef int overflow = 0
    cdef i64 v
    if type(value) is not int:
        return False
    v = PyLong_AsLongLongAndOverflow(value, &overflow)
    return overflow == 0 and low <= v <= high


cdef Programme continuous_programme(object rate, object conc, object anchor):
    """``Programme([(0, DAY, rate)], conc, anchor_ms=anchor)``, built without the general shape check
    when every value is one that check passes unchanged (an exact int in its range: for one step
    covering the day it checks nothing else, and its result is the one built here); anything else
    goes through the constructor, which refuses it with the same error as the twin's."""
    if not (exact_in(rate, 0, MAX_RATE_NL_PER_H) and exact_in(conc, 1, MAX_CONCENTRATION_UG_PER_ML)
            and exact_in(anchor, MIN_TIME_MS, MAX_TIME_MS)):
        return Programme([(0, DAY, rate)], conc, anchor_ms=anchor)
    cdef Programme p = Programme.__new__(Programme)
    cdef i64 r = rate
    p.steps = ((0, DAY, rate),)
    p.periodic_boluses = ()
    p.segments = ((0, rate),)
    p.concentration_ug_per_ml = conc
    p.anchor_ms = anchor
    p.conc = conc
    p.anchor = anchor
    p.nseg = 1
    p.starts[0] = 0
    p.rates[0] = r
    p.cum[0] = 0
    p.cum[1] = r * DAY
    p.day = p.cum[1]
    p.max_rate = r
    p.min_rate = r
    return p


def _rebuild_programme(steps, concentration_ug_per_ml, periodic_boluses, anchor_ms):
    return Programme(steps, concentration_ug_per_ml, periodic_boluses=periodic_boluses, anchor_ms=anchor_ms)


cdef Programme as_programme(object p):
    if isinstance(p, Programme):
        return <Programme>p
    return Programme(p.steps, p.concentration_ug_per_ml, periodic_boluses=p.periodic_boluses, anchor_ms=p.anchor_ms)


# ---------------------------------------------------------------------------------------------
# Ledger


cdef class Ledger:
    """Rolling 24 h record of drug delivered and committed, in picograms, at one-minute resolution.

    An amount recorded at time ``t`` lands in minute ``t // 60000`` and counts in the
    24 h totals of every minute from that one to 1439 minutes later. Committed
    amounts (authorised, not yet reported delivered) count in every total until
    released. Bolus starts are kept for lockout and count checks.
    """

    cdef i64 buckets[RING][NK]
    cdef i64 btotal[RING]
    cdef i64 tags[RING]
    cdef bint has_latest
    cdef i64 latest
    cdef i64 window_total
    cdef i64 committed[NK]
    cdef i64 start_at[HIST]
    cdef int start_kind[HIST]
    cdef int start_first
    cdef int start_count
    cdef i64 last_start[NK]
    # Sums over 90-minute blocks of absolute minutes (block b = minute // 90), for the
    # kernel's fast projection bound; a window of 1440 minutes touches at most 17 blocks.
    cdef i64 bsum[NBLK]
    cdef i64 btag[NBLK]

    def __cinit__(self):
        # The allocator zeroes the arrays; a slot is live only while its tag is a minute of the window.
        cdef int i, k
        for i in range(RING):
            self.tags[i] = NO_MINUTE
        for k in range(NK):
            self.last_start[k] = -1
        for i in range(NBLK):
            self.btag[i] = NO_MINUTE
        self.has_latest = False
        self.latest = 0
        self.window_total = 0
        self.start_first = 0
        self.start_count = 0

    @property
    def latest_minute(self):
        """Newest minute recorded (``t_ms // 60000``), or ``None`` for an empty ledger."""
        return self.latest if self.has_latest else None

    cdef void _advance(self, i64 minute):
        """Move the window so that it ends in ``minute`` (> latest), expiring what leaves it.

        A slot holds minute ``tags[slot]``'s buckets and is live only while that minute is inside
        the window; nothing is cleared here (:meth:`_claim` empties a slot when a minute is first
        written into it). A move of less than a day walks the minutes entering the window: the
        minute 1440 before each leaves the window total and its 90-minute block's sum if its slot
        still holds it, and a block is emptied when its first minute enters. A longer move (or the
        first) leaves nothing live: the total is 0 and every block of the new window is emptied.
        """
        cdef i64 x, first, old, b, ob, block_end, last_block
        cdef int slot, bs, obs
        if not self.has_latest or minute - self.latest >= RING:
            self.window_total = 0
            b = (minute - RING + 1) // BLOCK
            last_block = minute // BLOCK
            while b <= last_block:
                bs = b % NBLK
                self.btag[bs] = b
                self.bsum[bs] = 0
                b += 1
            self.latest = minute
            self.has_latest = True
            return
        first = self.latest + 1
        slot = first % RING
        b = first // BLOCK
        block_end = (b + 1) * BLOCK
        bs = b % NBLK
        if self.btag[bs] != b:
            self.btag[bs] = b
            self.bsum[bs] = 0
        for x in range(first, minute + 1):
            if x == block_end:
                b += 1
                block_end += BLOCK
                bs += 1
                if bs == NBLK:
                    bs = 0
                if self.btag[bs] != b:
                    self.btag[bs] = b
                    self.bsum[bs] = 0
            old = x - RING
            if self.tags[slot] == old and self.btotal[slot] != 0:
                self.window_total -= self.btotal[slot]
                # old's block is b - 16 (or b - 15): never b, though it may share b's place among
                # the NBLK, where b's reset above already emptied it.
                ob = old // BLOCK
                obs = ob % NBLK
                if self.btag[obs] == ob:
                    self.bsum[obs] -= self.btotal[slot]
            slot += 1
            if slot == RING:
                slot = 0
        self.latest = minute
        self.has_latest = True

    cdef inline int _claim(self, i64 minute) noexcept:
        """The slot of ``minute`` (inside the window), emptied first if it holds another minute."""
        cdef int slot = minute % RING
        cdef int k
        if self.tags[slot] != minute:
            self.tags[slot] = minute
            self.btotal[slot] = 0
            for k in range(NK):
                self.buckets[slot][k] = 0
        return slot

    cdef inline i64 _held(self, i64 minute, int k) noexcept:
        """What ``minute``'s bucket of kind ``k`` holds, pg (0 unless the minute is live)."""
        if not self.has_latest or minute > self.latest or minute <= self.latest - RING or minute < 0:
            return 0
        cdef int slot = minute % RING
        return self.buckets[slot][k] if self.tags[slot] == minute else 0

    def record(self, kind, mass_pg, at_ms):
        """Record drug delivered.

        :param kind: :class:`DeliveryKind` of the delivery.
        :param mass_pg: mass delivered, pg (``volume_nl * concentration_ug_per_ml``).
        :param at_ms: monotonic time of delivery, ms; may not be older than the window.
        :raises ConfigError: for negative amounts, a time before the window, or overflow.
        """
        cdef int k = check_kind(kind)
        cdef i64 mass = _range("mass_pg", mass_pg, 0, MAX_RECORD_PG, "pg")
        cdef i64 at = _range("at_ms", at_ms, 0, 2 ** 62, "ms")
        cdef i64 minute = at // RES
        if self.has_latest and minute <= self.latest - RING:
            raise ConfigError(
                "at_ms", at_ms, f">= {(self.latest - RING + 1) * RES} ms (inside the 24 h window)"
            )
        cdef i64 before = self._held(minute, k)
        if before + mass > C_MAX_BUCKET:
            raise ConfigError("mass_pg", mass_pg, f"<= {C_MAX_BUCKET - before} pg (bucket full)")
        self._put(k, minute, mass)

    cdef void _put(self, int k, i64 minute, i64 mass):
        """Add ``mass`` to ``minute``'s bucket of kind ``k`` (checked: inside the window, room in the bucket)."""
        if not self.has_latest or minute > self.latest:
            self._advance(minute)
        cdef int slot = self._claim(minute)
        self.buckets[slot][k] += mass
        self.btotal[slot] += mass
        self.window_total += mass
        self.bsum[(minute // BLOCK) % NBLK] += mass

    def record_volume(self, kind, volume_nl, concentration_ug_per_ml, at_ms):
        """Record a delivered volume at a concentration; return the mass recorded, pg."""
        volume_nl = _range("volume_nl", volume_nl, 0, MAX_RECORD_PG, "nL")
        conc = _range("concentration_ug_per_ml", concentration_ug_per_ml, 1, 10 ** 6, "µg/mL")
        mass = volume_nl * conc
        self.record(kind, mass, at_ms)
        return mass

    def record_latest(self, kind, mass_pg, now_ms, *, max_rate_nl_per_h, concentration_ug_per_ml, earliest_ms=None):
        """Record drug delivered at an unknown time before ``now_ms``, as late as it can have happened.

        For delivery recovered after a restart (a counter delta since the last checkpoint). The
        mass fills the minutes backwards from now's minute, each up to what ``max_rate_nl_per_h``
        delivers in a minute at the concentration (rounded up), never before ``earliest_ms``'s
        minute. What still remains once the window's first minute is reached was delivered before
        the window, where no window ending now or later can see it, as far as the minutes between
        ``earliest_ms`` (unbounded when None) and the window hold it at that rate; only what cannot
        have been delivered at all at that rate since ``earliest_ms`` counts in full in now's
        minute. So every 24 h window ending now or later holds at least as much of it as any real
        delivery at or below that rate could have put there: it counts in every rolling window it
        may belong to, and no projection becomes looser. All or nothing.

        :param kind: :class:`DeliveryKind` of the delivery.
        :param mass_pg: mass delivered, pg.
        :param now_ms: when the delivery was found, ms; not in a minute before the newest record.
        :param max_rate_nl_per_h: the highest rate it can have run at, nL/h (>= 1).
        :param concentration_ug_per_ml: concentration it was delivered at, µg/mL.
        :param earliest_ms: the earliest it can have started (the checkpoint), ms, or ``None``.
        :return: start of the earliest minute that received any of it, ms.
        :raises ConfigError: for a clock behind the newest record, bad values, or a bucket overflow.
        """
        cdef int k = check_kind(kind)
        cdef i64 left = _range("mass_pg", mass_pg, 0, MAX_RECORD_PG, "pg")
        cdef i64 rate = _range("max_rate_nl_per_h", max_rate_nl_per_h, 1, MAX_RATE_NL_PER_H, "nL/h")
        cdef i64 conc = _range("concentration_ug_per_ml", concentration_ug_per_ml, 1, MAX_CONCENTRATION_UG_PER_ML, "µg/mL")
        cdef i64 m0 = self._check_now(now_ms)
        cdef i64 window_first = m0 - RING + 1
        if window_first < 0:
            window_first = 0
        cdef i64 first = window_first
        cdef i64 e = -1
        if earliest_ms is not None:
            e = _range("earliest_ms", earliest_ms, 0, now_ms, "ms") // RES
            if e > first:
                first = e
        cdef i64 per_minute = ceil_div(rate * conc * RES, HOUR)
        cdef i64 room
        cdef i64 minute = m0, take, held, lowest = m0
        cdef i64 amounts[RING]
        cdef int n = 0, i, slot
        while left > 0 and minute >= first:
            take = per_minute if per_minute < left else left
            amounts[n] = take
            left -= take
            lowest = minute
            minute -= 1
            n += 1
        if n == 0:
            amounts[0] = 0
            n = 1
        if left > 0 and first == window_first:
            # Room before the window: delivered there, it is in no window ending now or later.
            if earliest_ms is None:
                left = 0
            elif window_first > e:
                # (window_first - e) minutes of room; compared by count first, so the product cannot overflow.
                room = window_first - e
                if room >= ceil_div(left, per_minute):
                    left = 0
                else:
                    left -= room * per_minute
        amounts[0] += left
        for i in range(n):
            self._check_room(k, m0 - i, amounts[i], mass_pg)
        for i in range(n):
            self.record(k, amounts[i], (m0 - i) * RES)
        return lowest * RES

    cdef int _check_room(self, int k, i64 minute, i64 amount, object mass_pg) except -1:
        """Refuse ``amount`` more of kind ``k`` in ``minute`` if its bucket cannot hold it (``mass_pg``: the caller's)."""
        cdef i64 held = self._held(minute, k)
        if held + amount > C_MAX_BUCKET:
            raise ConfigError("mass_pg", mass_pg, f"<= {C_MAX_BUCKET - held} pg in minute {minute} (bucket full)")
        return 0

    def record_spread(self, kind, mass_pg, start_ms, end_ms, slot_ms):
        """Record drug delivered at an even rate over ``[start_ms, end_ms]``, as polls every ``slot_ms`` record it.

        The span is cut at every multiple of ``slot_ms`` strictly inside it (the poll times) and
        at its end. The part ending at ``b`` is what an even delivery had given by ``b`` less what
        it had given by the part's start, each rounded down: ``mass * (b - start) // span``. Each
        part is recorded at ``b``, as :meth:`record` would, in order; parts of 0 pg, and parts at
        or before ``end_ms - 24 h`` (in no window ending at ``end_ms`` or later), are not. A span
        of 0 records the whole mass at ``end_ms``. All or nothing.

        :param kind: :class:`DeliveryKind` of the delivery.
        :param mass_pg: mass delivered over the span, pg.
        :param start_ms: when the delivery began (the previous reconciliation), ms.
        :param end_ms: when it was found (>= ``start_ms``), ms.
        :param slot_ms: time between polls, ms (``MIN_SPREAD_SLOT_MS`` to 24 h).
        :raises ConfigError: for bad values, a part before the 24 h window of the newest record,
            or a bucket overflow; nothing is recorded then.
        """
        cdef int k = check_kind(kind)
        cdef i64 mass = _range("mass_pg", mass_pg, 0, MAX_RECORD_PG, "pg")
        cdef i64 start = _range("start_ms", start_ms, 0, MAX_TIME_MS, "ms")
        cdef i64 end = _range("end_ms", end_ms, start, MAX_TIME_MS, "ms")
        cdef i64 step = _range("slot_ms", slot_ms, MIN_SPREAD_SLOT_MS, DAY, "ms")
        cdef i64 span = end - start
        # The parts by minute, in time order (parts of one minute are consecutive): at most RING + 1.
        cdef i64 minutes[RING + 1]
        cdef i64 amounts[RING + 1]
        cdef int n = 0, i
        cdef i64 edge, b, q, r, dq = 0, dr = 0, given
        if span == 0:
            self._add_part(minutes, amounts, &n, end // RES, mass)
        else:
            edge = end - DAY
            b = edge // step * step
            if b < start:
                b = start
            given = (<object>mass * (b - start)) // span  # exact: the product may exceed 64 bits
            b = (b // step + 1) * step
            if b < end:
                q, r = divmod(<object>mass * (b - start), span)
                if b + step < end:
                    dq, dr = divmod(<object>mass * step, span)
                while True:
                    if b > edge:
                        self._add_part(minutes, amounts, &n, b // RES, q - given)
                    given = q
                    b += step
                    if b >= end:
                        break
                    # mass * (b - start) = q * span + r, one slot on: r + dr < 2 * span <= 2 ** 63.
                    q += dq
                    r += dr
                    if r >= span:
                        r -= span
                        q += 1
            self._add_part(minutes, amounts, &n, end // RES, mass - given)
        if n == 0:
            return
        if self.has_latest and minutes[0] <= self.latest - RING:
            raise ConfigError("end_ms", end_ms, f"a span whose parts lie inside the 24 h window "
                              f"(its first part at minute {minutes[0]}, the window's first "
                              f"{self.latest - RING + 1})")
        for i in range(n):
            self._check_room(k, minutes[i], amounts[i], mass_pg)
        for i in range(n):
            self._put(k, minutes[i], amounts[i])

    cdef inline void _add_part(self, i64* minutes, i64* amounts, int* n, i64 minute, i64 pg):
        """Append a part of ``pg`` > 0 in ``minute`` (>= the last one's) to the list, merged by minute."""
        if pg == 0:
            return
        if n[0] and minutes[n[0] - 1] == minute:
            amounts[n[0] - 1] += pg
        else:
            minutes[n[0]] = minute
            amounts[n[0]] = pg
            n[0] += 1

    cdef i64 _delivered_kinds(self, i64 minute, unsigned int kinds_mask):
        """Delivered of ``kinds_mask`` in the window ending in ``minute`` (>= latest), pg."""
        cdef i64 total = 0, x
        cdef int slot, k
        if not self.has_latest:
            return 0
        for x in range(minute - RING + 1, self.latest + 1):
            if x < 0:
                continue
            slot = x % RING
            if self.tags[slot] == x:
                for k in range(NK):
                    if (kinds_mask >> k) & 1:
                        total += self.buckets[slot][k]
        return total

    def commit(self, kind, mass_pg):
        """Add an authorised, not yet delivered amount; it counts in every total until released."""
        cdef int k = check_kind(kind)
        cdef i64 mass = _range("mass_pg", mass_pg, 0, MAX_RECORD_PG, "pg")
        if self.committed[k] + mass > C_MAX_BUCKET:
            raise ConfigError("mass_pg", mass_pg, f"<= {C_MAX_BUCKET - self.committed[k]} pg")
        self.committed[k] += mass

    def release(self, kind, mass_pg):
        """Remove a committed amount (delivered and recorded, or cancelled).

        :raises ConfigError: if more than is committed for ``kind`` would be released.
        """
        cdef int k = check_kind(kind)
        cdef i64 mass = _range("mass_pg", mass_pg, 0, self.committed[k], "pg")
        self.committed[k] -= mass

    cdef inline i64 _committed_total(self):
        cdef i64 total = 0
        cdef int k
        for k in range(NK):
            total += self.committed[k]
        return total

    def committed_pg(self, kind=None):
        """Outstanding committed amount, pg (all kinds, or one)."""
        if kind is None:
            return self._committed_total()
        return self.committed[check_kind(kind)]

    def record_bolus_start(self, kind, at_ms):
        """Remember that a bolus started (for lockout and count); starts must not go back in time.

        :raises ConfigError: for a time before the newest start, or more than 256 starts in 24 h.
        """
        cdef int k = check_kind(kind)
        cdef i64 at = _range("at_ms", at_ms, 0, 2 ** 62, "ms")
        cdef int newest
        if self.start_count:
            newest = (self.start_first + self.start_count - 1) % HIST
            if at < self.start_at[newest]:
                raise ConfigError("at_ms", at_ms, f">= {self.start_at[newest]} ms (newest bolus start)")
        while self.start_count and self.start_at[self.start_first] <= at - DAY:
            self.start_first = (self.start_first + 1) % HIST
            self.start_count -= 1
        if self.start_count >= HIST:
            raise ConfigError("bolus starts in 24 h", self.start_count + 1, f"<= {BOLUS_HISTORY}")
        cdef int slot = (self.start_first + self.start_count) % HIST
        self.start_at[slot] = at
        self.start_kind[slot] = k
        self.start_count += 1
        self.last_start[k] = at

    cdef int _count(self, i64 now, unsigned int kinds_mask):
        cdef int i, slot, n = 0
        for i in range(self.start_count):
            slot = (self.start_first + i) % HIST
            if (kinds_mask >> self.start_kind[slot]) & 1 and now - DAY < self.start_at[slot] <= now:
                n += 1
        return n

    cdef i64 _last(self, unsigned int kinds_mask):
        cdef i64 newest = -1
        cdef int k
        for k in range(NK):
            if (kinds_mask >> k) & 1 and self.last_start[k] > newest:
                newest = self.last_start[k]
        return newest

    def bolus_count_24h(self, now_ms, kinds=COUNTED_BOLUS_KINDS):
        """Bolus starts of ``kinds`` in ``(now_ms - 24 h, now_ms]``."""
        cdef unsigned int mask = 0
        for k in kinds:
            mask |= 1u << check_kind(k)
        return self._count(_range("now_ms", now_ms, 0, MAX_TIME_MS, "ms"), mask)

    def last_bolus_ms(self, kinds=COUNTED_BOLUS_KINDS):
        """Time of the newest bolus start of ``kinds``, ms, or ``None``."""
        cdef unsigned int mask = 0
        for k in kinds:
            mask |= 1u << check_kind(k)
        cdef i64 newest = self._last(mask)
        return None if newest < 0 else newest

    cdef i64 _check_now(self, object now_ms) except -1:
        cdef i64 now = _range("now_ms", now_ms, 0, 2 ** 62, "ms")
        cdef i64 minute = now // RES
        if self.has_latest and minute < self.latest:
            raise ConfigError("now_ms", now_ms, f">= {self.latest * RES} ms (newest record)")
        return minute

    cdef inline i64 _block(self, i64 b):
        """Sum of one 90-minute block, 0 if it is not held."""
        return self.bsum[b % NBLK] if self.btag[b % NBLK] == b else 0

    cdef inline i64 _bucket(self, i64 minute):
        """Total of one minute's bucket, 0 if it is not held (outside the window or never written)."""
        if minute < 0 or not self.has_latest or minute > self.latest or minute <= self.latest - RING:
            return 0
        cdef int slot = minute % RING
        return self.btotal[slot] if self.tags[slot] == minute else 0

    cdef i64 _delivered(self, i64 minute):
        """Delivered total in the window ending in ``minute`` (>= latest), all kinds."""
        if not self.has_latest:
            return 0
        if minute - self.latest >= RING:
            return 0
        cdef i64 total = self.window_total
        cdef i64 x
        for x in range(self.latest - RING + 1, minute - RING + 1):
            total -= self._bucket(x)
        return total

    def bucket_totals(self, first_minute, last_minute):
        """Per-minute totals (all kinds), pg, for minutes ``first_minute..last_minute``."""
        return [self._bucket(m) for m in range(first_minute, last_minute + 1)]

    def delivered_24h_pg(self, now_ms, kind=None):
        """Delivered in the 24 h window ending in ``now_ms``'s minute, pg (all kinds, or one)."""
        cdef i64 minute = self._check_now(now_ms)
        if kind is None:
            return self._delivered(minute)
        return self._delivered_kinds(minute, 1u << check_kind(kind))

    def total_24h_pg(self, now_ms, kind=None):
        """Delivered in the 24 h window plus everything committed, pg (all kinds, or one)."""
        return self.delivered_24h_pg(now_ms, kind) + self.committed_pg(kind)

    def total_24h_ng(self, now_ms, kind=None):
        """:meth:`total_24h_pg` in ng, rounded up."""
        return ceil_div(self.total_24h_pg(now_ms, kind), 1000)

    def snapshot(self):
        """Exact, JSON-serialisable state; identical across implementations for identical histories."""
        cdef list buckets = []
        cdef i64 m
        cdef int slot, k, i
        cdef bint nonzero
        if self.has_latest:
            for m in range(self.latest - RING + 1, self.latest + 1):
                if m < 0:
                    continue
                slot = m % RING
                if self.tags[slot] != m:
                    continue
                nonzero = False
                for k in range(NK):
                    if self.buckets[slot][k]:
                        nonzero = True
                if nonzero:
                    buckets.append([m, [self.buckets[slot][k] for k in range(NK)]])
        starts = []
        for i in range(self.start_count):
            slot = (self.start_first + i) % HIST
            starts.append([self.start_at[slot], self.start_kind[slot]])
        return {
            "version": SNAPSHOT_VERSION,
            "resolution_ms": LEDGER_RESOLUTION_MS,
            "latest_minute": self.latest if self.has_latest else None,
            "buckets": buckets,
            "committed_pg": [self.committed[k] for k in range(NK)],
            "bolus_starts": starts,
            "last_bolus_start_ms": [self.last_start[k] for k in range(NK)],
        }

    @classmethod
    def restore(cls, snapshot):
        """Rebuild a ledger from :meth:`snapshot` output, checking every field.

        :raises ConfigError: for a wrong version, resolution or any malformed value.
        """
        data = _check_snapshot(snapshot)
        cdef Ledger ledger = cls()
        cdef int slot, k, i
        if data["latest_minute"] is not None:
            ledger._advance(data["latest_minute"])
        for minute, values in data["buckets"]:
            slot = ledger._claim(minute)
            for k in range(NK):
                ledger.buckets[slot][k] = values[k]
                ledger.btotal[slot] += values[k]
                ledger.window_total += values[k]
                ledger.bsum[(minute // BLOCK) % NBLK] += values[k]
        for k in range(NK):
            ledger.committed[k] = data["committed_pg"][k]
            ledger.last_start[k] = data["last_bolus_start_ms"][k]
        i = 0
        for at, kind in data["bolus_starts"]:
            ledger.start_at[i] = at
            ledger.start_kind[i] = kind
            i += 1
        ledger.start_first = 0
        ledger.start_count = i
        return ledger

    def __reduce__(self):
        return (_restore_ledger, (self.snapshot(),))


def _restore_ledger(snapshot):
    return Ledger.restore(snapshot)


# ---------------------------------------------------------------------------------------------
# Safety kernel


cdef object _MAX_RATE = MAX_RATE_NL_PER_H
cdef object _MAX_VOLUME = MAX_BOLUS_VOLUME_NL
cdef object _DAY_OBJ = 86400000


cdef bint _request_ok(tuple req):
    """Cheap re-check of a request's hot fields; False sends it to the full ``check_request``."""
    kind = req[0]
    override = req[7]
    if override is not None and type(override) is not Override:
        return False
    if type(req[8]) is not bool:
        return False
    if kind == K_RATE:
        rate = req[1]
        return type(rate) is int and 0 <= rate <= _MAX_RATE
    if kind == K_BOLUS:
        volume = req[4]
        duration = req[5]
        return (
            (req[3] == D_CLIN or req[3] == D_PAT or req[3] == 5 or req[3] == D_BRIDGE)
            and type(volume) is int and 1 <= volume <= _MAX_VOLUME
            and type(duration) is int and 1 <= duration <= _DAY_OBJ
        )
    return kind == K_DISC or kind == K_MIN or kind == K_PROC  # programme requests always take the full check


cdef i64 NO_INCREASE_MS = NO_INCREASE_AFTER_START_MS
cdef i64 STACKING_MS = BOLUS_STACKING_WINDOW_MS
cdef i64 HOLD_MS = CAPS_HOLD_MS
cdef i64 TRANSIT_TOL_PCT = TRANSIT_DOSE_TOLERANCE_PCT
cdef i64 NO_TIME = -(2 ** 62)  # "no such event" (every real time is >= MIN_TIME_MS = -(2**61))


cdef struct CapsC:
    # The C copy of one PatientCaps (the hot path reads only these).
    i64 max_dose
    i64 tit_cap_pct
    i64 tit_interval
    i64 decrease_pct
    i64 max_bolus_ng
    i64 lockout_ms
    i64 max_boluses
    i64 max_priming_nl
    i64 min_rate
    i64 start_dose
    i64 restart_ms
    bint bolus_on
    bint patient_bolus_on


cdef void load_caps(CapsC* c, object caps) except *:
    c.max_dose = caps.max_dose_ng_per_day
    c.tit_cap_pct = caps.titration_cap_pct
    c.tit_interval = caps.min_titration_interval_ms
    c.decrease_pct = caps.decrease_confirm_pct
    c.max_bolus_ng = caps.max_bolus_ng
    c.lockout_ms = caps.bolus_lockout_ms
    c.max_boluses = caps.max_boluses_per_day
    c.max_priming_nl = caps.max_priming_volume_nl
    c.min_rate = caps.minimum_rate_nl_per_h
    c.start_dose = caps.titration_start_dose_ng_per_day
    c.restart_ms = caps.restart_threshold_ms
    c.bolus_on = caps.bolus_enabled
    c.patient_bolus_on = caps.patient_bolus_enabled


cdef class SafetyKernel:
    """The one gate: every change to delivery is authorised here, then applied.

    Not thread-safe: one owner (the control loop) calls it. Denials never change state.
    The rules, and the history they read, are documented in ``kernel.pyi``.

    :param limits: drug-library entry of the drug in the pump now.
    :param caps: the patient's prescription caps (checked against ``limits`` hard bounds).
    :param envelope: what the pump can deliver.
    :param ledger: the rolling 24 h ledger (a new empty one if ``None``); must be this
        implementation's :class:`Ledger`.
    :param library: library for concentration changes (default :data:`DEFAULT_LIBRARY`).
    :param programme: programme in effect now, or ``None`` (therapy not yet started).
    :param programme_since_ms: when ``programme`` took effect, ms; the dose history holds it from
        then (and, unknown before, as if before too).
    :param therapy_start_ms: when therapy started (the implant), ms, at or before
        ``programme_since_ms``; by default ``programme_since_ms``, the strict reading. Only with
        a programme. A fresh kernel learns it from the first delivery it applies.
    :raises ConfigError: if caps or programme break the library's hard bounds.
    """

    cdef readonly object limits
    cdef readonly object caps
    cdef readonly object envelope
    cdef readonly Ledger ledger
    cdef readonly dict library
    cdef readonly object programme
    cdef readonly list dose_history
    cdef readonly object last_increase_ms
    cdef readonly object last_step_ms
    cdef readonly object therapy_start_ms
    cdef readonly object interruption
    cdef readonly object held_caps
    cdef readonly i64 state_version
    # C copies of everything the hot path reads.
    cdef Programme prog
    cdef i64 conc, cur_dose_ng
    cdef bint has_prog, has_last_increase, has_last_step, has_start, interrupted, has_held
    cdef i64 last_increase, last_step, therapy_start, int_since, int_before, held_until, newest_kernel
    cdef i64 env_min, env_max, env_step
    cdef CapsC cur
    cdef CapsC held
    cdef bint screening_only
    cdef i64 rate_b[4]
    cdef i64 dose_b[4]
    cdef i64 bolus_b[4]

    def __init__(self, limits, caps, envelope, ledger=None, *, library=None, programme=None, programme_since_ms=0,
                 therapy_start_ms=None):
        if not isinstance(limits, DrugLimits):
            raise ConfigError("limits", limits, "a DrugLimits")
        if not isinstance(caps, PatientCaps):
            raise ConfigError("caps", caps, "a PatientCaps from make_caps()")
        if not isinstance(envelope, PumpEnvelope):
            raise ConfigError("envelope", envelope, "a PumpEnvelope from make_envelope()")
        if ledger is not None and not isinstance(ledger, Ledger):
            raise ConfigError("ledger", type(ledger).__name__, "a compiled Ledger (the same implementation)")
        limits.validate()
        check_caps_against_limits(caps, limits)
        self.envelope = envelope
        self.ledger = Ledger() if ledger is None else ledger
        self.library = dict(DEFAULT_LIBRARY if library is None else library)
        self.dose_history = []
        self.state_version = 0
        self.env_min, self.env_max, self.env_step = envelope
        self._set_caps(caps)
        self._set_held(None)
        self._set_limits(limits)
        self._set_programme(None)
        self._set_times(None, None, None)
        self._set_interruption(None)
        if programme is not None:
            prog = as_programme(programme)
            if prog.concentration_ug_per_ml != limits.concentration_ug_per_ml:
                raise ConfigError(
                    "programme.concentration_ug_per_ml", prog.concentration_ug_per_ml,
                    f"{limits.concentration_ug_per_ml} µg/mL (the library entry)",
                )
            since = _range("programme_since_ms", programme_since_ms, MIN_TIME_MS, MAX_TIME_MS, "ms")
            start = since
            if therapy_start_ms is not None:
                start = _range("therapy_start_ms", therapy_start_ms, MIN_TIME_MS, since, "ms")
            self._set_programme(prog)
            self.dose_history.append((since, prog.daily_total_ng()))
            self._set_times(start, since, None)
        elif therapy_start_ms is not None:
            raise ConfigError("therapy_start_ms", therapy_start_ms, "None without a programme (the first delivery sets it)")
        self._refresh_newest()

    cdef void _set_limits(self, object limits):
        self.limits = limits
        self.conc = limits.concentration_ug_per_ml
        self.screening_only = limits.screening_only
        load_bounds(self.rate_b, limits.rate_nl_per_h)
        load_bounds(self.dose_b, limits.dose_ng_per_day)
        load_bounds(self.bolus_b, limits.bolus_ng)

    cdef void _set_caps(self, object caps):
        self.caps = caps
        load_caps(&self.cur, caps)

    cdef void _set_held(self, object held):
        self.held_caps = held
        self.has_held = held is not None
        if held is not None:
            self.held_until = held[0]
            load_caps(&self.held, held[1])

    cdef void _set_programme(self, Programme prog):
        self.programme = prog
        self.prog = prog
        self.has_prog = prog is not None
        self.cur_dose_ng = ceil_div(prog._daily_pg(), 1000) if prog is not None else 0

    cdef void _set_times(self, object start, object increase, object step):
        """The times the increase rules read (ms, ``None`` for not yet): therapy start, last increase, last step."""
        self.therapy_start_ms, self.last_increase_ms, self.last_step_ms = start, increase, step
        self.has_start, self.has_last_increase, self.has_last_step = start is not None, increase is not None, step is not None
        self.therapy_start, self.last_increase, self.last_step = or_zero(start), or_zero(increase), or_zero(step)

    cdef void _set_interruption(self, object it):
        self.interruption = it
        self.interrupted = it is not None
        if it is not None:
            self.int_since = it.since_ms
            self.int_before = it.dose_before_ng_per_day

    cdef void _refresh_newest(self):
        """Newest time held by the kernel's own state (the ledger's bolus starts are read live)."""
        cdef i64 newest = NO_TIME
        if self.has_start:
            newest = self.therapy_start
        if self.dose_history and self.dose_history[-1][0] > newest:
            newest = self.dose_history[-1][0]
        if self.has_held and self.held_until - HOLD_MS > newest:
            newest = self.held_until - HOLD_MS
        self.newest_kernel = newest

    cdef inline i64 _newest(self):
        cdef i64 bolus = self.ledger._last(0xFF)  # -1: no bolus start
        return bolus if bolus >= 0 and bolus > self.newest_kernel else self.newest_kernel

    cdef inline CapsC* _caps_at(self, i64 now):
        if self.has_held and now < self.held_until:
            return &self.held
        return &self.cur

    # -- queries -----------------------------------------------------------------------------

    @property
    def daily_dose_ng(self):
        """Daily dose of the last authorised programme, ng/day (0 if none; still set while stopped)."""
        return self.cur_dose_ng

    cdef i64 _dose_in_effect(self, i64 t):
        if not self.dose_history:
            return 0
        cdef i64 dose = self.dose_history[0][1]
        for at, d in self.dose_history:
            if at <= t:
                dose = d
        return dose

    def dose_in_effect_ng(self, t_ms):
        """Daily dose that was in effect at ``t_ms``, ng/day (the first recorded dose if earlier)."""
        return self._dose_in_effect(t_ms)

    cdef i64 _baseline(self, i64 now):
        cdef i64 cutoff = now - DAY
        cdef i64 best = -1, before = -1, at, d
        for item in self.dose_history:
            at = item[0]
            d = item[1]
            if at > cutoff:
                if best < 0 or d < best:
                    best = d
            else:
                before = d
        if before >= 0 and (best < 0 or before < best):
            best = before
        return best if best >= 0 else 0

    def titration_baseline_ng(self, now_ms):
        """Lowest daily dose in effect at any moment of ``[now_ms - 24 h, now_ms]``, ng/day (0 if none).

        The dose in effect at ``now_ms - 24 h`` and every dose that took effect after it, however
        briefly: stops and discontinues count as 0, minimum-rate spells as their dose.
        """
        return self._baseline(_range("now_ms", now_ms, MIN_TIME_MS, MAX_TIME_MS, "ms"))

    def effective_caps(self, now_ms):
        """The caps in force at ``now_ms``: within 24 h of a caps change, the stricter of old and new."""
        if self.has_held and now_ms < self.held_until:
            return self.held_caps[1]
        return self.caps

    @property
    def newest_event_ms(self):
        """Newest time the kernel's state holds (dose history, therapy start, bolus start, caps
        change), ms; ``None`` if none. Requests and facts before it are refused: time never goes back."""
        cdef i64 newest = self._newest()
        return None if newest == NO_TIME else newest

    cdef inline i64 _cap_for(self, const CapsC* c, const i64* dose_b):
        return (c.max_dose if c.max_dose < dose_b[3] else dose_b[3]) * 1000

    def cap_pg(self, limits=None, *, now_ms=None):
        """Rolling 24 h cap, pg: the prescription cap in force or the library's hard dose ceiling,
        whichever is lower. Without ``now_ms``, a caps change's held (stricter) cap while one is stored."""
        cdef i64 dose_b[4]
        load_bounds(dose_b, (self.limits if limits is None else limits).dose_ng_per_day)
        cdef CapsC* c = &self.held if self.has_held else &self.cur
        if now_ms is not None:
            c = self._caps_at(now_ms)
        return self._cap_for(c, dose_b)

    cdef inline i64 _basal_pg(self, Programme p, i64 rate, i64 conc, i64 t0, i64 t1):
        if p is not None:
            return mass_pg_of(p._vnum(t0, t1), p.conc)
        return mass_pg_of(rate * (t1 - t0), conc)

    cdef inline i64 _basal_walk(self, Programme p, Walker* w, i64 rate, i64 conc, i64 now, i64 t):
        """Basal mass from ``now`` to ``t`` (t never decreasing between calls), pg, rounded up."""
        if p is not None:
            return p._walk_to_pg(w, t)
        return mass_pg_of(rate * (t - now), conc)

    cdef i64 _late(self, Programme p, i64 rate, i64 conc, i64 now, i64 cap):
        """``total - cap`` of the window ending in minute m0+1440: committed + a full day of basal."""
        cdef i64 m0 = now // RES
        return self.ledger._committed_total() + self._basal_pg(p, rate, conc, (m0 + 1) * RES, (m0 + 1 + RING) * RES) - cap

    cdef i64 _early(self, Programme p, i64 rate, i64 conc, i64 extra, i64 now, i64 cap, bint exact):
        """Largest ``window - cap`` over windows ending in minutes m0..m0+1439, with ``extra`` in all, pg.

        With ``exact`` false, returns a value <= 0 as soon as a conservative bound shows
        every window is within the cap; otherwise scans every minute.
        """
        cdef i64 m0 = now // RES
        cdef i64 inside = self.ledger._delivered(m0)
        cdef i64 fixed = self.ledger._committed_total() + extra
        cdef i64 bound
        cdef Walker w
        if p is not None:
            p._walker_start(&w, now)
        if not exact:
            bound = inside + fixed + self._basal_pg(p, rate, conc, now, (m0 + RING) * RES) - cap
            if bound <= 0:
                return bound
            bound = self._block_bound(p, rate, conc, now, m0, inside) + fixed - cap
            if bound <= 0:
                return bound
        cdef i64 worst = inside + fixed + self._basal_walk(p, &w, rate, conc, now, (m0 + 1) * RES) - cap
        cdef i64 k, e
        for k in range(1, RING):
            inside -= self.ledger._bucket(m0 + k - RING)
            e = inside + fixed + self._basal_walk(p, &w, rate, conc, now, (m0 + k + 1) * RES) - cap
            if e > worst:
                worst = e
        return worst

    cdef i64 _excess(self, Programme p, i64 rate, i64 conc, i64 extra, i64 now, i64 cap, bint exact):
        """Largest ``window - cap`` over every window ending from now's minute on, pg
        (> 0 exactly when the twin's brute force finds one over the cap)."""
        cdef i64 late = self._late(p, rate, conc, now, cap)
        if late > 0 and not exact:
            return late
        cdef i64 early = self._early(p, rate, conc, extra, now, cap, exact)
        return early if early > late else late

    cdef i64 _block_bound(self, Programme p, i64 rate, i64 conc, i64 now, i64 m0, i64 inside):
        """Upper bound of ``still inside + basal`` over all windows, from 90-minute block sums.

        Between two checkpoints where a whole block leaves the window, the part still
        inside can only shrink and the basal only grow, so each stretch is bounded by its
        first ``inside`` plus its last basal: about 17 evaluations instead of 1440.
        """
        cdef Ledger led = self.ledger
        cdef i64 lo = m0 - RING + 1
        cdef i64 j1 = -((-lo) // BLOCK)
        cdef i64 jlast = m0 // BLOCK
        cdef int n = jlast - j1 + 1
        cdef i64 suffix[NBLK + 1]
        cdef i64 acc = 0, ka, kb, value, worst
        cdef int i
        cdef Walker w
        if p is not None:
            p._walker_start(&w, now)
        if n > NBLK:
            n = NBLK
        for i in range(n - 1, -1, -1):
            acc += led._block(j1 + i)
            suffix[i] = acc
        ka = j1 * BLOCK + RING - 1 - m0
        if ka > 0:
            worst = inside + self._basal_walk(p, &w, rate, conc, now, (m0 + ka) * RES)
        else:
            worst = -(2 ** 62)
        for i in range(n):
            ka = (j1 + i) * BLOCK + RING - 1 - m0
            if ka > RING - 1:
                break
            kb = ka + BLOCK - 1
            if kb > RING - 1:
                kb = RING - 1
            value = suffix[i] + self._basal_walk(p, &w, rate, conc, now, (m0 + kb + 1) * RES)
            if value > worst:
                worst = value
        return worst

    def headroom_pg(self, now_ms, programme=None):
        """Largest extra amount that keeps every projected 24 h window within the cap, pg (>= 0).

        Use it with :func:`tighten` to cut a running bolus at the cap (BOL-04).

        :param programme: programme to project (default: the one in effect).
        """
        self.ledger._check_now(now_ms)
        cdef Programme p = self.prog if programme is None else as_programme(programme)
        cdef i64 cap = self._cap_for(self._caps_at(now_ms), self.dose_b)
        if self._late(p, 0, self.conc, now_ms, cap) > 0:
            return 0
        cdef i64 early = self._early(p, 0, self.conc, 0, now_ms, cap, True)
        return -early if early < 0 else 0

    def projected_excess_pg(self, now_ms, programme, extra_pg=0):
        """Largest ``window total - cap`` over every trailing 24 h window ending from now's minute on, pg.

        The windows hold what the ledger has inside them, everything committed, ``programme``'s
        basal from now (None: nothing more) and ``extra_pg`` placed at now. > 0: some window
        passes the cap (an orphan schedule's check, :mod:`controller.program`).
        """
        extra = _range("extra_pg", extra_pg, 0, MAX_RECORD_PG, "pg")
        self.ledger._check_now(now_ms)
        cdef Programme p = None if programme is None else as_programme(programme)
        cdef i64 cap = self._cap_for(self._caps_at(now_ms), self.dose_b)
        return self._excess(p, 0, self.conc, extra, now_ms, cap, True)

    def tighten_running_bolus(self, remaining_volume_nl, now_ms, *, step_nl=1):
        """Cut the rest of a running bolus so that every projected 24 h window fits the cap (BOL-04).

        The bolus's remaining mass must still be committed in the ledger (as :meth:`apply`
        left it, less what was delivered and released). If the projection is over the cap
        (something else was delivered meanwhile), the remainder is lowered by the excess,
        then rounded down to the pump's step; each lowering is recorded with its reason.
        Release the cut amount from the commitment when the pump stops short.

        :param remaining_volume_nl: volume still to deliver, nL.
        :param now_ms: monotonic time, ms.
        :param step_nl: the pump's volume step, nL.
        :return: a :class:`Tightened` (``value`` <= ``remaining_volume_nl``).
        """
        remaining = _range("remaining_volume_nl", remaining_volume_nl, 0, MAX_BOLUS_VOLUME_NL, "nL")
        self.ledger._check_now(now_ms)
        cdef i64 cap = self._cap_for(self._caps_at(now_ms), self.dose_b)
        cdef i64 excess = self._excess(self.prog, 0, self.conc, 0, now_ms, cap, True)
        ceiling = remaining if excess <= 0 else remaining - ceil_div(excess, self.conc)
        return tighten(remaining, [("cap_headroom", ceiling, f"rolling 24 h cap: {max(excess, 0)} pg over")], step=step_nl)

    def plan_titration(self, target_dose_ng_per_day, now_ms):
        """Earliest allowed steps from the current dose to a target (see :func:`plan_titration`).

        An upward plan starts no sooner than the titration interval after the last increase, 24 h
        after therapy started, and 24 h after every dose below the current one left the trailing
        window, so that each step is one :meth:`authorize` allows at its time.
        """
        if self.programme is None:
            raise ConfigError("programme", None, "a programme in effect")
        caps = self.effective_caps(now_ms)
        start = now_ms
        if target_dose_ng_per_day > self.cur_dose_ng:
            if self.last_increase_ms is not None:
                start = max(start, self.last_increase_ms + caps.min_titration_interval_ms)
            if self.therapy_start_ms is not None:
                start = max(start, self.therapy_start_ms + NO_INCREASE_AFTER_START_MS)
            for i in range(len(self.dose_history) - 1):
                if self.dose_history[i][1] < self.cur_dose_ng:
                    start = max(start, self.dose_history[i + 1][0] + DAY)
        return plan_titration(
            self.cur_dose_ng,
            target_dose_ng_per_day,
            start_ms=start,
            titration_cap_pct=caps.titration_cap_pct,
            interval_ms=caps.min_titration_interval_ms,
            taper_pct=caps.taper_pct,
            taper_interval_ms=caps.taper_interval_ms,
        )

    # -- authorize ---------------------------------------------------------------------------

    cdef unsigned long long _rate_mask(self, i64 rate, const i64* rate_b, const CapsC* c):
        cdef unsigned long long m = 0
        if rate == 0:
            m |= bit(R_RATE_ZERO)
        m |= bound_bit(classify_c(rate_b, rate), R_RATE_BELOW_HARD, R_RATE_BELOW_SOFT, R_RATE_ABOVE_SOFT,
                       R_RATE_ABOVE_HARD)
        if rate < self.env_min:
            m |= bit(R_RATE_BELOW_PUMP)
        if rate > self.env_max:
            m |= bit(R_RATE_ABOVE_PUMP)
        if rate % self.env_step:
            m |= bit(R_RATE_STEP)
        if rate < c.min_rate:
            m |= bit(R_RATE_BELOW_MIN)
        return m

    cdef unsigned long long _restart_mask(self, i64 dose, i64 conc, const CapsC* c, i64 now):
        """The restart rule (see :func:`request_resume`)."""
        cdef i64 ceiling = self.int_before, start
        cdef int code = R_RESTART_PRIOR
        if now - self.int_since >= c.restart_ms:
            start = c.start_dose if c.start_dose else ceil_div(c.min_rate * 24 * conc, 1000)
            if start < ceiling:
                ceiling = start
                code = R_RESTART_START
        return bit(code) if dose > ceiling else 0

    cdef unsigned long long _dose_mask(self, i64 dose, const i64* dose_b, i64 conc, i64 now, const CapsC* c, bint resume):
        cdef unsigned long long m = 0
        m |= bound_bit(classify_c(dose_b, dose), R_DOSE_BELOW_HARD, R_DOSE_BELOW_SOFT, R_DOSE_ABOVE_SOFT,
                       R_DOSE_ABOVE_HARD)
        if dose > c.max_dose:
            m |= bit(R_DOSE_ABOVE_RX)
        cdef i64 current
        if resume:
            if self.interrupted:
                m |= self._restart_mask(dose, conc, c, now)
        elif self.has_prog:
            current = self.cur_dose_ng
            if dose > current:
                if dose * 100 > self._baseline(now) * (100 + c.tit_cap_pct):
                    m |= bit(R_TIT_CAP)
                elif self.has_last_step and now - self.last_step < STACKING_MS and self._stacked(dose, now, 0, c):
                    m |= bit(R_TIT_CAP)  # a step on a step: the boluses given since count in D too
                if self.has_last_increase and now - self.last_increase < c.tit_interval:
                    m |= bit(R_TIT_INTERVAL)
                if self.has_start and now - self.therapy_start < NO_INCREASE_MS:
                    m |= bit(R_START_24H)
            elif dose < current and (current - dose) * 100 > current * c.decrease_pct:
                m |= bit(R_DECREASE)
        return m

    cdef unsigned long long _programme_mask(self, Programme p, object limits, i64 extra, i64 now, const CapsC* c, bint resume):
        cdef unsigned long long m = 0
        cdef int i
        cdef i64 rate_b[4]
        cdef i64 dose_b[4]
        load_bounds(rate_b, limits.rate_nl_per_h)
        load_bounds(dose_b, limits.dose_ng_per_day)
        if limits.screening_only:
            m |= bit(R_SCREENING_ONLY)
        for i in range(p.nseg):
            m |= self._rate_mask(p.rates[i], rate_b, c)
        m |= self._dose_mask(ceil_div(p._daily_pg(), 1000), dose_b, p.conc, now, c, resume)
        if self._excess(p, 0, p.conc, extra, now, self._cap_for(c, dose_b), False) > 0:
            m |= bit(R_CAP_24H)
        return m

    cdef bint _stacked(self, i64 dose, i64 now, i64 mass, const CapsC* c):
        """Daily ``dose`` + the counted boluses of the 24 h window + ``mass`` beyond the titration cap (see kernel.pyi)."""
        cdef Ledger led = self.ledger
        cdef unsigned int kinds = (1u << D_CLIN) | (1u << D_PAT)
        given = led._delivered_kinds(now // RES, kinds) + led.committed[D_CLIN] + led.committed[D_PAT]
        ceiling = self._baseline(now) * 1000 * (100 + c.tit_cap_pct)
        return (dose * 1000 + given + mass) * 100 > ceiling  # Python ints: no overflow

    def authorize(self, request, now_ms):
        """Decide on a request. Pure: reads state, changes nothing.

        :param request: from one of the ``request_*`` constructors.
        :param now_ms: monotonic time, ms.
        :return: a :class:`Decision` listing every failing reason.
        :raises TypeError: if ``now_ms`` is not an int.
        :raises ConfigError: for a malformed request, or new caps outside the library's hard bounds.
        """
        if type(now_ms) is not int:
            require_int("now_ms", now_ms)
        if not 0 <= now_ms <= 2 ** 62:
            raise ConfigError("now_ms", now_ms, f"in [0, {2 ** 62}] ms")
        if not isinstance(request, Request) or not _request_ok(<tuple>request):
            check_request(request)  # raises the same error as the twin
        cdef i64 now = now_ms
        cdef tuple req = <tuple>request
        cdef int kind = req[0]
        cdef unsigned long long m = 0
        cdef i64 rate = 0, volume = 0, duration = 0, mass = 0, mass_ng, dose = self.cur_dose_ng
        cdef i64 last, basal_now
        cdef int bolus_kind = -1
        cdef Programme cand
        cdef object programme = None
        cdef object override = req[7]
        cdef object new_limits, bridge, new_caps
        cdef i64 conc_b[4]
        cdef i64 dose_b[4]
        cdef CapsC* c = self._caps_at(now)
        cdef bint resume = kind == K_RESUME or (self.interrupted and (kind == K_RATE or kind == K_PROG or kind == K_CONC))
        if (self.ledger.has_latest and now // RES < self.ledger.latest) or now < self._newest():
            m |= bit(R_CLOCK)
        elif kind == K_RATE or (kind == K_RESUME and req[2] is None):
            if kind == K_RESUME and not self.interrupted:
                m |= bit(R_RESUME_NONE)
            rate = req[1]
            if self.screening_only:
                m |= bit(R_SCREENING_ONLY)
            m |= self._rate_mask(rate, self.rate_b, c)
            dose = ceil_div(rate * 24 * self.conc, 1000)
            m |= self._dose_mask(dose, self.dose_b, self.conc, now, c, resume)
            if self._excess(None, rate, self.conc, 0, now, self._cap_for(c, self.dose_b), False) > 0:
                m |= bit(R_CAP_24H)
        elif kind == K_PROG or kind == K_RESUME:
            if kind == K_RESUME and not self.interrupted:
                m |= bit(R_RESUME_NONE)
            cand = as_programme(req[2])
            programme = cand
            if cand.conc != self.conc:
                m |= bit(R_CONC_CHANGED)
            dose = ceil_div(cand._daily_pg(), 1000)
            m |= self._programme_mask(cand, self.limits, 0, now, c, resume)
        elif kind == K_CONC:
            cand = as_programme(req[2])
            programme = cand
            dose = ceil_div(cand._daily_pg(), 1000)
            new_limits = self.library.get(cand.concentration_ug_per_ml)
            if not self.has_prog:
                m |= bit(R_NO_PROGRAMME)
            if new_limits is None:
                m |= bit(R_CONC_NOT_IN_LIB)
            if cand.conc == self.conc:
                m |= bit(R_CONC_UNCHANGED)
            bridge = req[6]
            if bridge is None:
                m |= bit(R_BRIDGE_MISSING)
            else:
                # The transit: nothing committed (it is part of the new programme's dose); its rate
                # and its dose at the tip are checked (see the twin).
                volume = bridge[0]
                duration = bridge[1]
                bolus_kind = D_BRIDGE
                if volume > c.max_priming_nl:
                    m |= bit(R_PRIMING)
                if volume and duration:
                    if volume * HOUR > int(self.env_max) * duration:
                        m |= bit(R_RATE_ABOVE_PUMP)
                    # Python ints: volume x concentration x day x 100 can pass 64 bits.
                    if int(volume) * self.conc * DAY * 100 > int(cand._daily_pg()) * duration * (100 + TRANSIT_TOL_PCT):
                        m |= bit(R_TRANSIT_DOSE)
            if new_limits is not None and req[9]:
                load_bounds(conc_b, new_limits.concentration)
                m |= bound_bit(classify_c(conc_b, req[9]), R_CONC_BELOW_HARD, R_CONC_BELOW_SOFT,
                               R_CONC_ABOVE_SOFT, R_CONC_ABOVE_HARD)
            if new_limits is not None and self.has_prog:
                m |= self._programme_mask(cand, new_limits, mass, now, c, resume)
        elif kind == K_BOLUS:
            bolus_kind = req[3]
            volume = req[4]
            duration = req[5]
            mass = volume * self.conc
            if bolus_kind == D_CLIN or bolus_kind == D_PAT:
                if bolus_kind == D_CLIN:
                    if not c.bolus_on:
                        m |= bit(R_BOLUS_DISABLED)
                elif not c.patient_bolus_on or self.screening_only:
                    m |= bit(R_BOLUS_DISABLED)
                mass_ng = ceil_div(mass, 1000)
                m |= bound_bit(classify_c(self.bolus_b, mass_ng), R_BOLUS_BELOW_HARD, R_BOLUS_BELOW_SOFT,
                               R_BOLUS_ABOVE_SOFT, R_BOLUS_ABOVE_HARD)
                if mass_ng > c.max_bolus_ng:
                    m |= bit(R_BOLUS_ABOVE_RX)
                last = self.ledger._last((1u << D_CLIN) | (1u << D_PAT))
                if last >= 0 and now - last < c.lockout_ms:
                    m |= bit(R_LOCKOUT)
                if self.ledger._count(now, (1u << D_CLIN) | (1u << D_PAT)) >= c.max_boluses:
                    m |= bit(R_COUNT)
                if self.has_last_step and now - self.last_step < STACKING_MS and self._stacked(self.cur_dose_ng, now, mass, c):
                    m |= bit(R_BOLUS_OD_STEP)
            elif volume > c.max_priming_nl:
                m |= bit(R_PRIMING)
            basal_now = 0
            if self.has_prog:
                basal_now = self.prog.rates[self.prog._segment((now - self.prog.anchor) % DAY)]
            if volume * HOUR > (self.env_max - basal_now) * duration:
                m |= bit(R_BOLUS_RATE)
            if self._excess(self.prog, 0, self.conc, mass, now, self._cap_for(c, self.dose_b), False) > 0:
                m |= bit(R_CAP_24H) | bit(R_BOLUS_OD_CAP)
        elif kind == K_DISC:
            dose = 0
            if override is None or DISCONTINUE_AUTHORISATION not in override.codes:
                m |= bit(R_DISC_AUTH)
            if not req[8] and self.has_prog:
                if self.prog._daily_pg() > c.min_rate * 24 * self.conc:
                    m |= bit(R_TAPER)
        elif kind == K_PROC:
            dose = 0
            if override is None or PROCEDURE_AUTHORISATION not in override.codes:
                m |= bit(R_PROC_AUTH)
            if not self.has_prog:
                m |= bit(R_NO_PROGRAMME)
        elif kind == K_MIN:
            rate = c.min_rate
            m |= self._rate_mask(rate, self.rate_b, c)
            m &= ~(bit(R_RATE_BELOW_SOFT) | bit(R_RATE_ABOVE_SOFT))
            dose = ceil_div(rate * 24 * self.conc, 1000)
            if self.has_prog and dose > self.cur_dose_ng:
                m |= bit(R_MIN_ABOVE)
            if not self.has_prog or rate > self.prog.min_rate:
                if self._excess(None, rate, self.conc, 0, now, self._cap_for(c, self.dose_b), False) > 0:
                    m |= bit(R_CAP_24H)
        elif kind == K_CAPS:
            new_caps = req[10]
            check_caps_against_limits(new_caps, self.limits)
            if override is None or CAPS_CHANGE_CONFIRMATION not in override.codes:
                m |= bit(R_CAPS_UNCONFIRMED)
            if self.has_prog:
                if dose > min(new_caps.max_dose_ng_per_day, c.max_dose):
                    m |= bit(R_DOSE_ABOVE_RX)
                if self.prog.min_rate < new_caps.minimum_rate_nl_per_h:
                    m |= bit(R_RATE_BELOW_MIN)
        else:
            raise ConfigError("request.kind", kind, f"one of {[k.name for k in RequestKind]}")
        cdef tuple overridden = _EMPTY
        cdef unsigned long long lifted = 0
        cdef int i
        if override is not None:
            codes = override.codes
            if m & _SOFT_MASK:
                for i in range(64):
                    if m & _SOFT_MASK & bit(i) and _ALL_REASONS[i] in codes:
                        lifted |= bit(i)
                m &= ~lifted
            overridden = codes_of(lifted)
            if kind == K_DISC and DISCONTINUE_AUTHORISATION in codes:
                overridden = overridden + (DISCONTINUE_AUTHORISATION,)
            if kind == K_CAPS and CAPS_CHANGE_CONFIRMATION in codes:
                overridden = overridden + (CAPS_CHANGE_CONFIRMATION,)
            if kind == K_PROC and PROCEDURE_AUTHORISATION in codes:
                overridden = overridden + (PROCEDURE_AUTHORISATION,)
        return _tuple_new(Decision, (
            m == 0, kind, codes_of(m), overridden, rate, programme, bolus_kind,
            volume, duration, mass, dose, now_ms, request, self.state_version,
        ))

    # -- apply -------------------------------------------------------------------------------

    def is_fresh(self, decision, now_ms):
        """True if ``decision`` was made on the current state less than a minute ago.

        Check it just before commanding the pump; a stale decision must be re-authorised.
        """
        return (
            isinstance(decision, Decision)
            and decision.state_version == self.state_version
            and decision.at_ms <= now_ms <= decision.at_ms + MAX_DECISION_AGE_MS
        )

    cdef object _check_event_time(self, str field, object t_ms):
        t_ms = _range(field, t_ms, 0, MAX_TIME_MS, "ms")
        newest = self.newest_event_ms
        if newest is not None and t_ms < newest:
            raise ConfigError(field, t_ms, f">= {newest} ms (the newest event the kernel holds: time never goes back)")
        return t_ms

    cdef void _record_dose(self, object at_ms, object dose) except *:
        self.dose_history.append((at_ms, dose))
        self.dose_history = _prune_history(self.dose_history, at_ms)
        if self.has_held and at_ms >= self.held_until:
            self._set_held(None)
        self._refresh_newest()

    cdef void _interrupt(self, object at_ms, object dose, object cause) except *:
        """Enter (or continue) an interruption at ``at_ms`` with ``dose`` in effect from then."""
        if self.interruption is None:
            self._set_interruption(Interruption(at_ms, self.dose_history[-1][1], cause.value))
        else:
            self._set_interruption(self.interruption._replace(cause=cause.value))
        self._record_dose(at_ms, dose)

    def note_stopped(self, at_ms):
        """Record a fact the kernel did not authorise: delivery stopped at ``at_ms`` (a STOP fault
        reaction, or the pump found stopped).

        The dose history gets a zero dose from ``at_ms`` (the titration baseline sees it for 24 h
        after the resume) and an interruption opens there unless one is open already (a stop
        during minimum-rate mode continues it). The programme stays the projection's basal: a
        stop that may not have taken effect is counted as running, never the other way round.
        Pass the earliest time delivery may have stopped (the last time it was confirmed
        running): an earlier time makes the restart rule stricter, never looser. Nothing changes
        if nothing is being delivered (not started, already stopped or discontinued).

        :param at_ms: when delivery stopped, ms; not before :attr:`newest_event_ms`.
        :raises ConfigError: for a time before the newest event.
        """
        at_ms = self._check_event_time("at_ms", at_ms)
        if not self.dose_history or self.dose_history[-1][1] == 0:
            return
        self._interrupt(at_ms, 0, InterruptionCause.STOPPED)
        self.state_version += 1

    def apply(self, decision, now_ms):
        """Record an allowed decision that was executed.

        Sets the programme in effect, extends the dose history (titration baseline and
        interval), opens or closes an interruption, installs new caps, and for boluses records
        the start and commits the mass in the ledger. The caller releases the commitment as
        the pump reports delivery. An executed decision is always recorded, however old (use
        :meth:`is_fresh` *before* commanding), but never before a newer event.

        :param decision: an allowed decision from :meth:`authorize`.
        :param now_ms: monotonic time the decision was executed, ms (not before the decision
            nor before :attr:`newest_event_ms`).
        :raises ConfigError: for a denied decision, an earlier time, or caps that no longer fit
            the library entry; nothing changes.
        """
        now_ms = _range("now_ms", now_ms, 0, 2 ** 62, "ms")
        if not isinstance(decision, Decision) or not decision.allowed:
            raise ConfigError("decision.allowed", getattr(decision, "allowed", None), "True (only allowed decisions are applied)")
        if now_ms < decision.at_ms:
            raise ConfigError("now_ms", now_ms, f">= {decision.at_ms} ms (the decision's time)")
        self._check_event_time("now_ms", now_ms)
        kind = decision.kind
        cdef Programme prog
        if kind == K_CAPS:
            new = decision.request.caps
            check_caps_against_limits(new, self.limits)
            self._set_held((now_ms + CAPS_HOLD_MS, stricter_caps(self.effective_caps(now_ms), new)))
            self._set_caps(new)
            self._refresh_newest()
            self.state_version += 1
            return
        if kind == K_PROC:
            # The zero dose of the hold, as a stop: the programme stays the projection's basal (see the twin).
            self._interrupt(now_ms, 0, InterruptionCause.PROCEDURE)
            self.state_version += 1
            return
        if kind == K_BOLUS:
            self.ledger.commit(decision.bolus_kind, decision.mass_pg)
            try:
                self.ledger.record_bolus_start(decision.bolus_kind, now_ms)
            except (ConfigError, TypeError):
                self.ledger.release(decision.bolus_kind, decision.mass_pg)  # all or nothing
                raise
        if kind != K_BOLUS:
            resume = kind == K_RESUME or (self.interrupted and (kind == K_RATE or kind == K_PROG or kind == K_CONC))
            started = bool(self.dose_history)
            if kind == K_CONC:
                self._set_limits(self.library[decision.programme.concentration_ug_per_ml])
            if decision.programme is not None:
                prog = as_programme(decision.programme)
            else:
                anchor = 0 if self.programme is None else self.programme.anchor_ms
                prog = continuous_programme(decision.rate_nl_per_h, self.conc, anchor)
            previous = self.cur_dose_ng
            dose = prog.daily_total_ng()
            if kind == K_DISC:
                if started:
                    self._set_programme(None)
                    self._interrupt(now_ms, 0, InterruptionCause.DISCONTINUED)
            elif kind == K_MIN and started:
                self._set_programme(prog)
                self._interrupt(now_ms, dose, InterruptionCause.MINIMUM_RATE)
            else:
                self._set_programme(prog)
                self._record_dose(now_ms, dose)
                if resume:
                    self._set_interruption(None)
                elif not started:
                    self._set_times(now_ms, self.last_increase_ms if kind == K_MIN else now_ms, self.last_step_ms)
                    self._refresh_newest()
                elif dose > previous:
                    self._set_times(self.therapy_start_ms, now_ms, now_ms)
        self.state_version += 1

    # -- persistence -------------------------------------------------------------------------

    def state_snapshot(self):
        """The kernel's whole state, exact and JSON-serialisable (format :data:`STATE_SNAPSHOT_VERSION`):
        concentration, caps and any held caps, programme, dose history, therapy start, last
        increase and step, interruption, state version and the ledger snapshot. Identical across
        implementations, with a SHA-256 ``checksum`` of the rest that :meth:`from_snapshot` verifies."""
        p = self.programme
        it = self.interruption
        state = {
            "version": STATE_SNAPSHOT_VERSION,
            "state_version": self.state_version,
            "concentration_ug_per_ml": self.limits.concentration_ug_per_ml,
            "caps": caps_to_dict(self.caps),
            "held_caps": None if self.held_caps is None else {
                "until_ms": self.held_caps[0], "caps": caps_to_dict(self.held_caps[1]),
            },
            "programme": None if p is None else {
                "steps": [list(x) for x in p.steps],
                "periodic_boluses": [list(x) for x in p.periodic_boluses],
                "anchor_ms": p.anchor_ms,
            },
            "dose_history": [[at, dose] for at, dose in self.dose_history],
            "therapy_start_ms": self.therapy_start_ms,
            "last_increase_ms": self.last_increase_ms,
            "last_step_ms": self.last_step_ms,
            "interruption": None if it is None else it._asdict(),
            "ledger": self.ledger.snapshot(),
        }
        state["checksum"] = state_checksum(state)
        return state

    @classmethod
    def from_snapshot(cls, snapshot, caps, envelope, *, library=None):
        """Rebuild a kernel from :meth:`state_snapshot` output: every rule resumes exactly where it
        was (PER-02); the restored kernel decides as the one that wrote the snapshot.

        :param caps: ``None`` (the snapshot's), or the caller's copy, which must equal the
            snapshot's: caps change only through :func:`request_caps_change`.
        :raises ConfigError: for a malformed, truncated or inconsistent snapshot, other caps, or
            caps outside the library's hard bounds. Then nothing is restored: the caller must
            refuse increases and boluses and keep the current rate.
        """
        library = dict(DEFAULT_LIBRARY if library is None else library)
        parts = _check_state_snapshot(snapshot, library, Programme)
        if caps is not None and caps != parts["caps"]:
            raise ConfigError("caps", caps, "the snapshot's caps (change caps with request_caps_change)")
        cdef SafetyKernel gate = cls(parts["limits"], parts["caps"], envelope, Ledger.restore(snapshot["ledger"]), library=library)
        gate._set_programme(parts["programme"])
        gate.dose_history = list(parts["dose_history"])
        gate._set_times(parts["therapy_start_ms"], parts["last_increase_ms"], parts["last_step_ms"])
        gate._set_interruption(parts["interruption"])
        gate._set_held(parts["held_caps"])
        gate.state_version = parts["state_version"]
        gate._refresh_newest()
        return gate
