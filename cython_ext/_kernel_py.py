"""Pure-Python twin of the safety kernel: simple, obviously correct, and slow.

It exists to be compared with the compiled ``_kernel`` on random inputs; the
package only uses it when asked (``ITB_PURE_PYTHON=1`` or
``cython_ext.kernel.load(implementation="python")``). It does every projection
by brute force, and reads the history rules (trailing-window baseline, restart
rule, stacking, held caps) straight from the lists it keeps: no fast paths, no
running totals, no cached copies.

The public API is documented in ``cython_ext/kernel.pyi``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from cython_ext._common import *  # noqa: F401,F403  (re-export the shared API)
from cython_ext._common import (
    BOLUS_HISTORY,
    BOLUS_STACKING_WINDOW_MS,
    TRANSIT_DOSE_TOLERANCE_PCT,
    CAPS_CHANGE_CONFIRMATION,
    CAPS_HOLD_MS,
    COUNTED_BOLUS_KINDS,
    MAX_CONCENTRATION_UG_PER_ML,
    MAX_RATE_NL_PER_H,
    NO_INCREASE_AFTER_START_MS,
    STATE_SNAPSHOT_VERSION,
    Interruption,
    InterruptionCause,
    caps_to_dict,
    state_checksum,
    stricter_caps,
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
    Tightened,
    MAX_BOLUS_VOLUME_NL,
    MAX_DECISION_AGE_MS,
    _check_snapshot,
    _check_interval,
    check_request,
    MIN_TIME_MS,
    MAX_TIME_MS,
    MIN_SPREAD_SLOT_MS,
    _check_state_snapshot,
    _kind,
    _prune_history,
)
from cython_ext.errors import ConfigError, require_int, require_range
from cython_ext.units import MS_PER_DAY, MS_PER_H, PG_PER_NG, div_round

IMPLEMENTATION = "python"

#: Reason codes for a value below hard, below soft, above soft and above hard, per bounded quantity.
_RATE_BOUND_REASONS = (Reason.RATE_BELOW_HARD, Reason.RATE_BELOW_SOFT, Reason.RATE_ABOVE_SOFT,
                       Reason.RATE_ABOVE_HARD)
_DOSE_BOUND_REASONS = (Reason.DOSE_BELOW_HARD, Reason.DOSE_BELOW_SOFT, Reason.DOSE_ABOVE_SOFT,
                       Reason.DOSE_ABOVE_HARD)
_BOLUS_BOUND_REASONS = (Reason.BOLUS_BELOW_HARD, Reason.BOLUS_BELOW_SOFT, Reason.BOLUS_ABOVE_SOFT,
                        Reason.BOLUS_ABOVE_HARD)
_CONCENTRATION_BOUND_REASONS = (Reason.CONCENTRATION_BELOW_HARD, Reason.CONCENTRATION_BELOW_SOFT,
                                Reason.CONCENTRATION_ABOVE_SOFT, Reason.CONCENTRATION_ABOVE_HARD)


def _add_bound_reason(where: int, reasons: set[str], codes: tuple[str, str, str, str]) -> None:
    """Add the code for where a value lies (:meth:`Bounds.classify`: -2, -1, 0, 1, 2); nothing inside soft bounds."""
    if where:
        reasons.add(codes[where + 2 if where < 0 else where + 1])


class Programme:
    """A delivery programme: a rate function over a repeating 24 h day, at one concentration.

    :param steps: ``(start_offset_ms, duration_ms, rate_nl_per_h)`` flex steps, contiguous from
        0 and covering exactly 24 h (one step = simple continuous), at most 13.
    :param concentration_ug_per_ml: concentration, µg/mL.
    :param periodic_boluses: ``(start_offset_ms, duration_ms, rate_nl_per_h)`` extra rates on top of
        the steps, inside one day, not overlapping.
    :param anchor_ms: monotonic time at which day offset 0 falls, ms.
    :raises ConfigError: on gaps, overlaps or out-of-range numbers.
    """

    __slots__ = ("steps", "periodic_boluses", "concentration_ug_per_ml", "anchor_ms", "segments", "_starts", "_cum", "_day")

    def __init__(self, steps, concentration_ug_per_ml: int, *, periodic_boluses=(), anchor_ms: int = 0) -> None:
        self.steps, self.periodic_boluses, self.segments = check_programme_shape(
            steps, periodic_boluses, concentration_ug_per_ml, anchor_ms
        )
        self.concentration_ug_per_ml = concentration_ug_per_ml
        self.anchor_ms = anchor_ms
        self._starts = [start for start, _rate in self.segments]
        cum = [0]
        for i, (start, rate) in enumerate(self.segments):
            end = self.segments[i + 1][0] if i + 1 < len(self.segments) else MS_PER_DAY
            cum.append(cum[-1] + rate * (end - start))
        self._cum = cum
        self._day = cum[-1]

    @classmethod
    def continuous(cls, rate_nl_per_h: int, concentration_ug_per_ml: int, *, anchor_ms: int = 0) -> Programme:
        """Simple continuous programme at one rate, nL/h."""
        return cls([(0, MS_PER_DAY, rate_nl_per_h)], concentration_ug_per_ml, anchor_ms=anchor_ms)

    def _segment(self, offset: int) -> int:
        """Index of the segment holding day offset ``offset`` (the last one starting at or before it)."""
        return bisect.bisect_right(self._starts, offset) - 1

    def rate_at(self, t_ms: int) -> int:
        """Commanded rate at monotonic time ``t_ms``, nL/h (steps plus active periodic boluses)."""
        offset = (require_range("t_ms", t_ms, MIN_TIME_MS, MAX_TIME_MS, "ms") - self.anchor_ms) % MS_PER_DAY
        return self.segments[self._segment(offset)][1]

    def next_boundary(self, t_ms: int) -> int | None:
        """First monotonic time after ``t_ms`` at which the rate changes, ms; ``None`` if it never does."""
        t_ms = require_range("t_ms", t_ms, MIN_TIME_MS, MAX_TIME_MS, "ms")
        if len(self.segments) == 1:
            return None
        day_start = t_ms - (t_ms - self.anchor_ms) % MS_PER_DAY
        for day in (0, 1):
            for start, _rate in self.segments:
                at = day_start + day * MS_PER_DAY + start
                if start == 0 and self.segments[-1][1] == self.segments[0][1]:
                    continue
                if at > t_ms:
                    return at
        return None  # unreachable: a multi-segment day always changes within 24 h

    def _prefix(self, offset: int) -> int:
        i = self._segment(offset)
        start, rate = self.segments[i]
        return self._cum[i] + rate * (offset - start)

    def _vnum(self, t0_ms: int, t1_ms: int) -> int:
        """``volume_numerator`` unchecked, for the kernel's own projections (whose windows may end
        past MAX_TIME_MS when now is near it), nL·ms/h."""
        o0 = (t0_ms - self.anchor_ms) % MS_PER_DAY
        o1 = o0 + (t1_ms - t0_ms)
        return (o1 // MS_PER_DAY) * self._day + self._prefix(o1 % MS_PER_DAY) - self._prefix(o0)

    def _mass_pg(self, t0_ms: int, t1_ms: int) -> int:
        """``delivered_pg`` unchecked (see ``_vnum``), pg, rounded up."""
        return div_round(self._vnum(t0_ms, t1_ms) * self.concentration_ug_per_ml, MS_PER_H, "up")

    def volume_numerator(self, t0_ms: int, t1_ms: int) -> int:
        """Exact volume delivered in ``[t0_ms, t1_ms)`` times ``MS_PER_H``, i.e. in nL·ms/h."""
        _check_interval(t0_ms, t1_ms)
        return self._vnum(t0_ms, t1_ms)

    def delivered_pg(self, t0_ms: int, t1_ms: int) -> int:
        """Drug mass the programme delivers in ``[t0_ms, t1_ms)``, pg, rounded up."""
        _check_interval(t0_ms, t1_ms)
        return self._mass_pg(t0_ms, t1_ms)

    def daily_total_nl(self) -> int:
        """Volume over one 24 h day, nL, rounded up."""
        return div_round(self._day, MS_PER_H, "up")

    def daily_total_pg(self) -> int:
        """Drug mass over one 24 h day (steps and periodic boluses), pg, rounded up."""
        return div_round(self._day * self.concentration_ug_per_ml, MS_PER_H, "up")

    def daily_total_ng(self) -> int:
        """Drug mass over one 24 h day, ng/day, rounded up."""
        return div_round(self.daily_total_pg(), PG_PER_NG, "up")

    @property
    def max_rate_nl_per_h(self) -> int:
        """Highest rate anywhere in the day, nL/h."""
        return max(rate for _start, rate in self.segments)

    @property
    def min_rate_nl_per_h(self) -> int:
        """Lowest rate anywhere in the day, nL/h."""
        return min(rate for _start, rate in self.segments)

    def key(self) -> tuple:
        """Canonical value: equal keys mean equal programmes, across implementations."""
        return (self.steps, self.periodic_boluses, self.concentration_ug_per_ml, self.anchor_ms)

    def __eq__(self, other: object) -> bool:
        return hasattr(other, "key") and hasattr(other, "segments") and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    def __repr__(self) -> str:
        return (
            f"Programme(steps={self.steps!r}, concentration_ug_per_ml={self.concentration_ug_per_ml}, "
            f"periodic_boluses={self.periodic_boluses!r}, anchor_ms={self.anchor_ms})"
        )


def _as_programme(p: object) -> Programme:
    if isinstance(p, Programme):
        return p
    return Programme(p.steps, p.concentration_ug_per_ml, periodic_boluses=p.periodic_boluses, anchor_ms=p.anchor_ms)


class Ledger:
    """Rolling 24 h record of drug delivered and committed, in picograms, at one-minute resolution.

    An amount recorded at time ``t`` lands in minute ``t // 60000`` and counts in the
    24 h totals of every minute from that one to 1439 minutes later. Committed
    amounts (authorised, not yet reported delivered) count in every total until
    released. Bolus starts are kept for lockout and count checks.
    """

    def __init__(self) -> None:
        self._buckets: dict[int, list[int]] = {}
        self._latest: int | None = None
        self._committed = [0] * N_KINDS
        self._starts: list[tuple[int, int]] = []
        self._last_start = [-1] * N_KINDS

    @property
    def latest_minute(self) -> int | None:
        """Newest minute recorded (``t_ms // 60000``), or ``None`` for an empty ledger."""
        return self._latest

    def record(self, kind: int, mass_pg: int, at_ms: int) -> None:
        """Record drug delivered.

        :param kind: :class:`DeliveryKind` of the delivery.
        :param mass_pg: mass delivered, pg (``volume_nl * concentration_ug_per_ml``).
        :param at_ms: monotonic time of delivery, ms; may not be older than the window.
        :raises ConfigError: for negative amounts, a time before the window, or overflow.
        """
        kind = _kind(kind)
        mass_pg = require_range("mass_pg", mass_pg, 0, MAX_RECORD_PG, "pg")
        at_ms = require_range("at_ms", at_ms, 0, 2**62, "ms")
        minute = at_ms // LEDGER_RESOLUTION_MS
        if self._latest is not None and minute <= self._latest - WINDOW_BUCKETS:
            raise ConfigError(
                "at_ms", at_ms, f">= {(self._latest - WINDOW_BUCKETS + 1) * LEDGER_RESOLUTION_MS} ms (inside the 24 h window)"
            )
        bucket = self._buckets.get(minute)
        if bucket is None:
            bucket = [0] * N_KINDS
        if bucket[kind] + mass_pg > MAX_BUCKET_PG:
            raise ConfigError("mass_pg", mass_pg, f"<= {MAX_BUCKET_PG - bucket[kind]} pg (bucket full)")
        bucket[kind] += mass_pg
        self._buckets[minute] = bucket
        if self._latest is None or minute > self._latest:
            self._latest = minute
            horizon = minute - WINDOW_BUCKETS
            for m in [m for m in self._buckets if m <= horizon]:
                del self._buckets[m]

    def record_volume(self, kind: int, volume_nl: int, concentration_ug_per_ml: int, at_ms: int) -> int:
        """Record a delivered volume at a concentration; return the mass recorded, pg."""
        volume_nl = require_range("volume_nl", volume_nl, 0, MAX_RECORD_PG, "nL")
        conc = require_range("concentration_ug_per_ml", concentration_ug_per_ml, 1, 10**6, "µg/mL")
        mass = volume_nl * conc
        self.record(kind, mass, at_ms)
        return mass

    def record_latest(self, kind: int, mass_pg: int, now_ms: int, *, max_rate_nl_per_h: int,
                      concentration_ug_per_ml: int, earliest_ms: int | None = None) -> int:
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
        kind = _kind(kind)
        left = require_range("mass_pg", mass_pg, 0, MAX_RECORD_PG, "pg")
        rate = require_range("max_rate_nl_per_h", max_rate_nl_per_h, 1, MAX_RATE_NL_PER_H, "nL/h")
        conc = require_range("concentration_ug_per_ml", concentration_ug_per_ml, 1, MAX_CONCENTRATION_UG_PER_ML, "µg/mL")
        m0 = self._check_now(now_ms)
        window_first = max(0, m0 - WINDOW_BUCKETS + 1)
        first = window_first
        earliest_minute = None
        if earliest_ms is not None:
            earliest_minute = require_range("earliest_ms", earliest_ms, 0, now_ms, "ms") // LEDGER_RESOLUTION_MS
            first = max(first, earliest_minute)
        per_minute = div_round(rate * conc * LEDGER_RESOLUTION_MS, MS_PER_H, "up")
        placed: dict[int, int] = {m0: 0}
        minute = m0
        while left > 0 and minute >= first:
            placed[minute] = min(left, per_minute)
            left -= placed[minute]
            minute -= 1
        if left > 0 and first == window_first:
            # Room before the window: delivered there, it is in no window ending now or later.
            if earliest_minute is None:
                left = 0
            else:
                left = max(0, left - max(0, window_first - earliest_minute) * per_minute)
        placed[m0] += left
        for m, amount in placed.items():
            held = self._buckets.get(m, [0] * N_KINDS)[kind] if m > m0 - WINDOW_BUCKETS else 0
            if held + amount > MAX_BUCKET_PG:
                raise ConfigError("mass_pg", mass_pg, f"<= {MAX_BUCKET_PG - held} pg in minute {m} (bucket full)")
        for m in sorted(placed, reverse=True):
            self.record(kind, placed[m], m * LEDGER_RESOLUTION_MS)
        return min(m for m, amount in placed.items() if amount or m == m0) * LEDGER_RESOLUTION_MS

    def record_spread(self, kind: int, mass_pg: int, start_ms: int, end_ms: int, slot_ms: int) -> None:
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
        kind = _kind(kind)
        mass = require_range("mass_pg", mass_pg, 0, MAX_RECORD_PG, "pg")
        start = require_range("start_ms", start_ms, 0, MAX_TIME_MS, "ms")
        end = require_range("end_ms", end_ms, start, MAX_TIME_MS, "ms")
        slot = require_range("slot_ms", slot_ms, MIN_SPREAD_SLOT_MS, MS_PER_DAY, "ms")
        span = end - start
        edge = end - MS_PER_DAY
        by_minute: dict[int, int] = {}
        if span == 0:
            by_minute[end // LEDGER_RESOLUTION_MS] = mass
        else:
            # Cuts at or before the edge bound only parts that are dropped: start from the last of them.
            first = max(start, edge // slot * slot)
            cuts = [first, *range((first // slot + 1) * slot, end, slot), end]
            for a, b in zip(cuts, cuts[1:]):
                part = mass * (b - start) // span - mass * (a - start) // span
                if b > edge:
                    minute = b // LEDGER_RESOLUTION_MS
                    by_minute[minute] = by_minute.get(minute, 0) + part
        placed = sorted((m, pg) for m, pg in by_minute.items() if pg)
        if not placed:
            return
        if self._latest is not None and placed[0][0] <= self._latest - WINDOW_BUCKETS:
            raise ConfigError("end_ms", end_ms, f"a span whose parts lie inside the 24 h window "
                              f"(its first part at minute {placed[0][0]}, the window's first "
                              f"{self._latest - WINDOW_BUCKETS + 1})")
        for minute, pg in placed:
            held = self._buckets.get(minute, [0] * N_KINDS)[kind] if self._latest is not None else 0
            if held + pg > MAX_BUCKET_PG:
                raise ConfigError("mass_pg", mass_pg, f"<= {MAX_BUCKET_PG - held} pg in minute {minute} (bucket full)")
        for minute, pg in placed:
            self.record(kind, pg, minute * LEDGER_RESOLUTION_MS)

    def commit(self, kind: int, mass_pg: int) -> None:
        """Add an authorised, not yet delivered amount; it counts in every total until released."""
        kind = _kind(kind)
        mass_pg = require_range("mass_pg", mass_pg, 0, MAX_RECORD_PG, "pg")
        if self._committed[kind] + mass_pg > MAX_BUCKET_PG:
            raise ConfigError("mass_pg", mass_pg, f"<= {MAX_BUCKET_PG - self._committed[kind]} pg")
        self._committed[kind] += mass_pg

    def release(self, kind: int, mass_pg: int) -> None:
        """Remove a committed amount (delivered and recorded, or cancelled).

        :raises ConfigError: if more than is committed for ``kind`` would be released.
        """
        kind = _kind(kind)
        mass_pg = require_range("mass_pg", mass_pg, 0, self._committed[kind], "pg")
        self._committed[kind] -= mass_pg

    def committed_pg(self, kind: int | None = None) -> int:
        """Outstanding committed amount, pg (all kinds, or one)."""
        if kind is None:
            return sum(self._committed)
        return self._committed[_kind(kind)]

    def record_bolus_start(self, kind: int, at_ms: int) -> None:
        """Remember that a bolus started (for lockout and count); starts must not go back in time.

        :raises ConfigError: for a time before the newest start, or more than 256 starts in 24 h.
        """
        kind = _kind(kind)
        at_ms = require_range("at_ms", at_ms, 0, 2**62, "ms")
        if self._starts and at_ms < self._starts[-1][0]:
            raise ConfigError("at_ms", at_ms, f">= {self._starts[-1][0]} ms (newest bolus start)")
        self._starts = [s for s in self._starts if s[0] > at_ms - MS_PER_DAY]
        if len(self._starts) >= BOLUS_HISTORY:
            raise ConfigError("bolus starts in 24 h", len(self._starts) + 1, f"<= {BOLUS_HISTORY}")
        self._starts.append((at_ms, kind))
        self._last_start[kind] = at_ms

    def bolus_count_24h(self, now_ms: int, kinds: Iterable[int] = COUNTED_BOLUS_KINDS) -> int:
        """Bolus starts of ``kinds`` in ``(now_ms - 24 h, now_ms]``."""
        wanted = {_kind(k) for k in kinds}
        now_ms = require_range("now_ms", now_ms, 0, MAX_TIME_MS, "ms")
        return sum(1 for at, k in self._starts if k in wanted and now_ms - MS_PER_DAY < at <= now_ms)

    def last_bolus_ms(self, kinds: Iterable[int] = COUNTED_BOLUS_KINDS) -> int | None:
        """Time of the newest bolus start of ``kinds``, ms, or ``None``."""
        times = [self._last_start[_kind(k)] for k in kinds]
        newest = max(times, default=-1)
        return None if newest < 0 else newest

    def _check_now(self, now_ms: int) -> int:
        now_ms = require_range("now_ms", now_ms, 0, 2**62, "ms")
        minute = now_ms // LEDGER_RESOLUTION_MS
        if self._latest is not None and minute < self._latest:
            raise ConfigError("now_ms", now_ms, f">= {self._latest * LEDGER_RESOLUTION_MS} ms (newest record)")
        return minute

    def bucket_totals(self, first_minute: int, last_minute: int) -> list[int]:
        """Per-minute totals (all kinds), pg, for minutes ``first_minute..last_minute``."""
        return [sum(self._buckets.get(m, (0,))) for m in range(first_minute, last_minute + 1)]

    def delivered_24h_pg(self, now_ms: int, kind: int | None = None) -> int:
        """Delivered in the 24 h window ending in ``now_ms``'s minute, pg (all kinds, or one)."""
        minute = self._check_now(now_ms)
        if kind is not None:
            kind = _kind(kind)  # refused even when no bucket is in the window, as the compiled ledger does
        total = 0
        for m, bucket in self._buckets.items():
            if minute - WINDOW_BUCKETS < m <= minute:
                total += sum(bucket) if kind is None else bucket[kind]
        return total

    def total_24h_pg(self, now_ms: int, kind: int | None = None) -> int:
        """Delivered in the 24 h window plus everything committed, pg (all kinds, or one)."""
        return self.delivered_24h_pg(now_ms, kind) + self.committed_pg(kind)

    def total_24h_ng(self, now_ms: int, kind: int | None = None) -> int:
        """:meth:`total_24h_pg` in ng, rounded up."""
        return div_round(self.total_24h_pg(now_ms, kind), PG_PER_NG, "up")

    def snapshot(self) -> dict:
        """Exact, JSON-serialisable state; identical across implementations for identical histories."""
        buckets = []
        if self._latest is not None:
            for m in sorted(self._buckets):
                if m > self._latest - WINDOW_BUCKETS and any(self._buckets[m]):
                    buckets.append([m, list(self._buckets[m])])
        return {
            "version": SNAPSHOT_VERSION,
            "resolution_ms": LEDGER_RESOLUTION_MS,
            "latest_minute": self._latest,
            "buckets": buckets,
            "committed_pg": list(self._committed),
            "bolus_starts": [[at, k] for at, k in self._starts],
            "last_bolus_start_ms": list(self._last_start),
        }

    @classmethod
    def restore(cls, snapshot: dict) -> Ledger:
        """Rebuild a ledger from :meth:`snapshot` output, checking every field.

        :raises ConfigError: for a wrong version, resolution or any malformed value.
        """
        data = _check_snapshot(snapshot)
        ledger = cls()
        ledger._latest = data["latest_minute"]
        ledger._buckets = {m: list(b) for m, b in data["buckets"]}
        ledger._committed = list(data["committed_pg"])
        ledger._starts = [(at, k) for at, k in data["bolus_starts"]]
        ledger._last_start = list(data["last_bolus_start_ms"])
        return ledger


class SafetyKernel:
    """The one gate: every change to delivery is authorised here, then applied.

    Not thread-safe: one owner (the control loop) calls it. Denials never change state.
    The rules, and the history they read, are documented in ``kernel.pyi``.

    :param limits: drug-library entry of the drug in the pump now.
    :param caps: the patient's prescription caps (checked against ``limits`` hard bounds).
    :param envelope: what the pump can deliver.
    :param ledger: the rolling 24 h ledger (a new empty one if ``None``).
    :param library: library for concentration changes (default :data:`DEFAULT_LIBRARY`).
    :param programme: programme in effect now, or ``None`` (therapy not yet started).
    :param programme_since_ms: when ``programme`` took effect, ms; the dose history holds it from
        then (and, unknown before, as if before too).
    :param therapy_start_ms: when therapy started (the implant), ms, at or before
        ``programme_since_ms``; by default ``programme_since_ms``, the strict reading. Only with
        a programme. A fresh kernel learns it from the first delivery it applies.
    :raises ConfigError: if caps or programme break the library's hard bounds.
    """

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
        therapy_start_ms: int | None = None,
    ) -> None:
        if not isinstance(limits, DrugLimits):
            raise ConfigError("limits", limits, "a DrugLimits")
        if not isinstance(caps, PatientCaps):
            raise ConfigError("caps", caps, "a PatientCaps from make_caps()")
        if not isinstance(envelope, PumpEnvelope):
            raise ConfigError("envelope", envelope, "a PumpEnvelope from make_envelope()")
        limits.validate()
        check_caps_against_limits(caps, limits)
        self.limits = limits
        self.caps = caps
        self.envelope = envelope
        self.ledger = Ledger() if ledger is None else ledger
        self.library = dict(DEFAULT_LIBRARY if library is None else library)
        self.programme: Programme | None = None
        self.dose_history: list[tuple[int, int]] = []
        self.last_increase_ms: int | None = None
        self.last_step_ms: int | None = None
        self.therapy_start_ms: int | None = None
        self.interruption: Interruption | None = None
        self.held_caps: tuple[int, PatientCaps] | None = None
        self.state_version = 0
        if programme is not None:
            programme = _as_programme(programme)
            if programme.concentration_ug_per_ml != limits.concentration_ug_per_ml:
                raise ConfigError(
                    "programme.concentration_ug_per_ml", programme.concentration_ug_per_ml, f"{limits.concentration_ug_per_ml} µg/mL (the library entry)"
                )
            since = require_range("programme_since_ms", programme_since_ms, MIN_TIME_MS, MAX_TIME_MS, "ms")
            start = since
            if therapy_start_ms is not None:
                start = require_range("therapy_start_ms", therapy_start_ms, MIN_TIME_MS, since, "ms")
            self.programme = programme
            self.dose_history.append((since, programme.daily_total_ng()))
            self.last_increase_ms = since
            self.therapy_start_ms = start
        elif therapy_start_ms is not None:
            raise ConfigError("therapy_start_ms", therapy_start_ms, "None without a programme (the first delivery sets it)")

    # -- queries -----------------------------------------------------------------------------

    @property
    def daily_dose_ng(self) -> int:
        """Daily dose of the last authorised programme, ng/day (0 if none; still set while stopped)."""
        return 0 if self.programme is None else self.programme.daily_total_ng()

    def dose_in_effect_ng(self, t_ms: int) -> int:
        """Daily dose that was in effect at ``t_ms``, ng/day (the first recorded dose if earlier)."""
        if not self.dose_history:
            return 0
        dose = self.dose_history[0][1]
        for at, d in self.dose_history:
            if at <= t_ms:
                dose = d
        return dose

    def titration_baseline_ng(self, now_ms: int) -> int:
        """Lowest daily dose in effect at any moment of ``[now_ms - 24 h, now_ms]``, ng/day (0 if none).

        The dose in effect at ``now_ms - 24 h`` and every dose that took effect after it, however
        briefly: stops and discontinues count as 0, minimum-rate spells as their dose.
        """
        now_ms = require_range("now_ms", now_ms, MIN_TIME_MS, MAX_TIME_MS, "ms")
        cutoff = now_ms - MS_PER_DAY
        doses = [d for at, d in self.dose_history if at > cutoff]
        before = [d for at, d in self.dose_history if at <= cutoff]
        if before:
            doses.append(before[-1])
        return min(doses, default=0)

    def effective_caps(self, now_ms: int) -> PatientCaps:
        """The caps in force at ``now_ms``: within 24 h of a caps change, the stricter of old and new."""
        if self.held_caps is not None and now_ms < self.held_caps[0]:
            return self.held_caps[1]
        return self.caps

    @property
    def newest_event_ms(self) -> int | None:
        """Newest time the kernel's state holds (dose history, therapy start, bolus start, caps
        change), ms; ``None`` if none. Requests and facts before it are refused: time never goes back."""
        times = [self.ledger.last_bolus_ms(tuple(range(N_KINDS))), self.therapy_start_ms]
        if self.dose_history:
            times.append(self.dose_history[-1][0])
        if self.held_caps is not None:
            times.append(self.held_caps[0] - CAPS_HOLD_MS)
        return max((t for t in times if t is not None), default=None)

    def _clock_behind(self, now_ms: int) -> bool:
        latest = self.ledger.latest_minute
        newest = self.newest_event_ms
        return (latest is not None and now_ms // LEDGER_RESOLUTION_MS < latest) or (newest is not None and now_ms < newest)

    def cap_pg(self, limits: DrugLimits | None = None, *, now_ms: int | None = None) -> int:
        """Rolling 24 h cap, pg: the prescription cap in force or the library's hard dose ceiling,
        whichever is lower. Without ``now_ms``, a caps change's held (stricter) cap while one is stored."""
        limits = self.limits if limits is None else limits
        caps = self.caps if self.held_caps is None else self.held_caps[1]
        if now_ms is not None:
            caps = self.effective_caps(now_ms)
        return min(caps.max_dose_ng_per_day, limits.dose_ng_per_day.upper_hard) * PG_PER_NG

    def _window_parts(self, programme: Programme | None, now_ms: int, cap_pg: int) -> tuple[int, int]:
        """The projection, brute force. Returns ``(early, late)``, both ``total - cap`` in pg:

        - ``early``: the largest over the windows ending in minutes ``m0 .. m0+1439``
          (``m0`` = now's minute), which hold what is still inside from before now,
          everything committed, and the programme's basal from now to the window's end;
          a request's own amount, placed in minute ``m0``, adds to every one of them;
        - ``late``: the window ending in minute ``m0+1440``, the first that holds nothing
          from before now: committed plus a full day of basal (as is every later window
          while the programme runs).
        """
        m0 = now_ms // LEDGER_RESOLUTION_MS
        past = self.ledger.bucket_totals(m0 - WINDOW_BUCKETS + 1, m0)
        committed = self.ledger.committed_pg()
        suffix = [0] * (WINDOW_BUCKETS + 1)
        for k in range(WINDOW_BUCKETS - 1, -1, -1):
            suffix[k] = suffix[k + 1] + past[k]
        early = None
        for k in range(WINDOW_BUCKETS):
            still_inside = suffix[k]  # minutes m0+k-1439 .. m0: still inside the window ending in minute m0+k
            basal = 0 if programme is None else programme._mass_pg(now_ms, (m0 + k + 1) * LEDGER_RESOLUTION_MS)
            excess = still_inside + committed + basal - cap_pg
            early = excess if early is None else max(early, excess)
        day = 0
        if programme is not None:
            day = programme._mass_pg((m0 + 1) * LEDGER_RESOLUTION_MS, (m0 + 1 + WINDOW_BUCKETS) * LEDGER_RESOLUTION_MS)
        return early, committed + day - cap_pg

    def _window_excess(self, programme: Programme | None, extra_pg: int, now_ms: int, cap_pg: int) -> int:
        """Largest ``window total - cap`` over every window ending from now's minute on, pg."""
        early, late = self._window_parts(programme, now_ms, cap_pg)
        return max(early + extra_pg, late)

    def headroom_pg(self, now_ms: int, programme: Programme | None = None) -> int:
        """Largest extra amount that keeps every projected 24 h window within the cap, pg (>= 0).

        Use it with :func:`tighten` to cut a running bolus at the cap (BOL-04).

        :param programme: programme to project (default: the one in effect).
        """
        self.ledger._check_now(now_ms)
        programme = self.programme if programme is None else _as_programme(programme)
        early, late = self._window_parts(programme, now_ms, self.cap_pg(now_ms=now_ms))
        return 0 if late > 0 else max(0, -early)

    def projected_excess_pg(self, now_ms: int, programme: Programme | None, extra_pg: int = 0) -> int:
        """Largest ``window total - cap`` over every trailing 24 h window ending from now's minute on, pg.

        The windows hold what the ledger has inside them, everything committed, ``programme``'s
        basal from now (None: nothing more) and ``extra_pg`` placed at now. > 0: some window
        passes the cap (an orphan schedule's check, :mod:`controller.program`).
        """
        extra = require_range("extra_pg", extra_pg, 0, MAX_RECORD_PG, "pg")
        self.ledger._check_now(now_ms)
        programme = None if programme is None else _as_programme(programme)
        return self._window_excess(programme, extra, now_ms, self.cap_pg(now_ms=now_ms))

    def tighten_running_bolus(self, remaining_volume_nl: int, now_ms: int, *, step_nl: int = 1) -> Tightened:
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
        remaining = require_range("remaining_volume_nl", remaining_volume_nl, 0, MAX_BOLUS_VOLUME_NL, "nL")
        self.ledger._check_now(now_ms)
        conc = self.limits.concentration_ug_per_ml
        excess = self._window_excess(self.programme, 0, now_ms, self.cap_pg(now_ms=now_ms))
        ceiling = remaining if excess <= 0 else remaining - div_round(excess, conc, "up")
        return tighten(remaining, [("cap_headroom", ceiling, f"rolling 24 h cap: {max(excess, 0)} pg over")], step=step_nl)

    def plan_titration(self, target_dose_ng_per_day: int, now_ms: int) -> tuple[TitrationStep, ...]:
        """Earliest allowed steps from the current dose to a target (see :func:`plan_titration`).

        An upward plan starts no sooner than the titration interval after the last increase, 24 h
        after therapy started, and 24 h after every dose below the current one left the trailing
        window, so that each step is one :meth:`authorize` allows at its time.
        """
        if self.programme is None:
            raise ConfigError("programme", None, "a programme in effect")
        caps = self.effective_caps(now_ms)
        current = self.daily_dose_ng
        start = now_ms
        if target_dose_ng_per_day > current:
            if self.last_increase_ms is not None:
                start = max(start, self.last_increase_ms + caps.min_titration_interval_ms)
            if self.therapy_start_ms is not None:
                start = max(start, self.therapy_start_ms + NO_INCREASE_AFTER_START_MS)
            for (_at, dose), (ended, _next) in zip(self.dose_history, self.dose_history[1:]):
                if dose < current:
                    start = max(start, ended + MS_PER_DAY)
        return plan_titration(
            current,
            target_dose_ng_per_day,
            start_ms=start,
            titration_cap_pct=caps.titration_cap_pct,
            interval_ms=caps.min_titration_interval_ms,
            taper_pct=caps.taper_pct,
            taper_interval_ms=caps.taper_interval_ms,
        )

    # -- authorize ---------------------------------------------------------------------------

    def _check_rate(self, rate: int, limits: DrugLimits, caps: PatientCaps, reasons: set[str]) -> None:
        if rate == 0:
            reasons.add(Reason.RATE_ZERO)
        _add_bound_reason(limits.rate_nl_per_h.classify(rate), reasons, _RATE_BOUND_REASONS)
        if rate < self.envelope.min_rate_nl_per_h:
            reasons.add(Reason.RATE_BELOW_PUMP_MIN)
        if rate > self.envelope.max_rate_nl_per_h:
            reasons.add(Reason.RATE_ABOVE_PUMP_MAX)
        if rate % self.envelope.rate_step_nl_per_h:
            reasons.add(Reason.RATE_NOT_PUMP_STEP)
        if rate < caps.minimum_rate_nl_per_h:
            reasons.add(Reason.RATE_BELOW_MINIMUM_RATE)

    def _check_restart(self, dose: int, limits: DrugLimits, caps: PatientCaps, now_ms: int, reasons: set[str]) -> None:
        """The restart rule (see :func:`request_resume`)."""
        it = self.interruption
        ceiling, code = it.dose_before_ng_per_day, Reason.RESTART_OVERDOSE_RISK_ABOVE_PRIOR_DOSE
        if now_ms - it.since_ms >= caps.restart_threshold_ms:
            start = caps.titration_start_dose_ng_per_day or div_round(
                caps.minimum_rate_nl_per_h * 24 * limits.concentration_ug_per_ml, PG_PER_NG, "up")
            if start < ceiling:
                ceiling, code = start, Reason.RESTART_OVERDOSE_RISK_ABOVE_START_DOSE
        if dose > ceiling:
            reasons.add(code)

    def _check_programme(self, programme: Programme, limits: DrugLimits, caps: PatientCaps, extra_pg: int, now_ms: int,
                         resume: bool, reasons: set[str]) -> int:
        if limits.screening_only:
            reasons.add(Reason.SCREENING_ONLY)
        for _start, rate in programme.segments:
            self._check_rate(rate, limits, caps, reasons)
        dose = programme.daily_total_ng()
        _add_bound_reason(limits.dose_ng_per_day.classify(dose), reasons, _DOSE_BOUND_REASONS)
        if dose > caps.max_dose_ng_per_day:
            reasons.add(Reason.DOSE_ABOVE_PRESCRIPTION_CAP)
        if resume:
            if self.interruption is not None:
                self._check_restart(dose, limits, caps, now_ms, reasons)
        elif self.programme is not None:
            current = self.daily_dose_ng
            if dose > current:
                if dose * 100 > self.titration_baseline_ng(now_ms) * (100 + caps.titration_cap_pct):
                    reasons.add(Reason.TITRATION_CAP_EXCEEDED)
                elif self._stacked_on_step(dose, 0, caps, now_ms):
                    reasons.add(Reason.TITRATION_CAP_EXCEEDED)  # a step on a step: the boluses given since count in D too
                if self.last_increase_ms is not None and now_ms - self.last_increase_ms < caps.min_titration_interval_ms:
                    reasons.add(Reason.TITRATION_INTERVAL)
                if self.therapy_start_ms is not None and now_ms - self.therapy_start_ms < NO_INCREASE_AFTER_START_MS:
                    reasons.add(Reason.INCREASE_WITHIN_24H_OF_START)
            elif dose < current and (current - dose) * 100 > current * caps.decrease_confirm_pct:
                reasons.add(Reason.DECREASE_NEEDS_CONFIRMATION)
        if self._window_excess(programme, extra_pg, now_ms, self.cap_pg(limits, now_ms=now_ms)) > 0:
            reasons.add(Reason.DOSE_CAP_24H)
        return dose

    def _stacked_on_step(self, dose_ng_per_day: int, mass_pg: int, caps: PatientCaps, now_ms: int) -> bool:
        """Within a day of a titration step: daily ``dose_ng_per_day`` + the counted boluses of the 24 h
        window (delivered and committed) + ``mass_pg`` beyond (1 + cap) x the trailing-window baseline."""
        if self.last_step_ms is None or now_ms - self.last_step_ms >= BOLUS_STACKING_WINDOW_MS:
            return False
        given = sum(self.ledger.total_24h_pg(now_ms, k) for k in COUNTED_BOLUS_KINDS)
        ceiling = self.titration_baseline_ng(now_ms) * PG_PER_NG * (100 + caps.titration_cap_pct)
        return (dose_ng_per_day * PG_PER_NG + given + mass_pg) * 100 > ceiling

    def _is_resume(self, kind: int) -> bool:
        """A resume request, or a rate, programme or concentration change while interrupted."""
        return kind == RequestKind.RESUME or (
            self.interruption is not None
            and kind in (RequestKind.RATE_CHANGE, RequestKind.PROGRAMME_CHANGE, RequestKind.CONCENTRATION_CHANGE)
        )

    def authorize(self, request: Request, now_ms: int) -> Decision:
        """Decide on a request. Pure: reads state, changes nothing.

        :param request: from one of the ``request_*`` constructors.
        :param now_ms: monotonic time, ms.
        :return: a :class:`Decision` listing every failing reason.
        :raises TypeError: if ``now_ms`` is not an int.
        :raises ConfigError: for a malformed request, or new caps outside the library's hard bounds.
        """
        now_ms = require_range("now_ms", now_ms, 0, 2**62, "ms")
        check_request(request)
        caps = self.effective_caps(now_ms)
        reasons: set[str] = set()
        kind = request.kind
        resume = self._is_resume(kind)
        rate = 0
        programme = None
        bolus_kind = -1
        volume = 0
        duration = 0
        mass = 0
        dose = self.daily_dose_ng
        if self._clock_behind(now_ms):
            reasons.add(Reason.CLOCK_BEHIND_LEDGER)
        elif kind in (RequestKind.RATE_CHANGE, RequestKind.PROGRAMME_CHANGE, RequestKind.RESUME):
            if kind == RequestKind.RESUME and self.interruption is None:
                reasons.add(Reason.RESUME_WITHOUT_INTERRUPTION)
            if request.programme is None:
                rate = request.rate_nl_per_h
                anchor = 0 if self.programme is None else self.programme.anchor_ms
                candidate = Programme.continuous(rate, self.limits.concentration_ug_per_ml, anchor_ms=anchor)
            else:
                candidate = programme = _as_programme(request.programme)
                if programme.concentration_ug_per_ml != self.limits.concentration_ug_per_ml:
                    reasons.add(Reason.CONCENTRATION_CHANGED)
            dose = self._check_programme(candidate, self.limits, caps, 0, now_ms, resume, reasons)
        elif kind == RequestKind.CONCENTRATION_CHANGE:
            programme = _as_programme(request.programme)
            dose = programme.daily_total_ng()
            new_limits = self.library.get(programme.concentration_ug_per_ml)
            if self.programme is None:
                reasons.add(Reason.NO_PROGRAMME)
            if new_limits is None:
                reasons.add(Reason.CONCENTRATION_NOT_IN_LIBRARY)
            if programme.concentration_ug_per_ml == self.limits.concentration_ug_per_ml:
                reasons.add(Reason.CONCENTRATION_UNCHANGED)
            if request.bridge is None:
                reasons.add(Reason.BRIDGE_PLAN_MISSING)
            else:
                # The transit: the old drug in the dead volume is pushed at the old-concentration
                # rate for the new programme's dose. It is part of that dose, not on top of it, so
                # nothing is committed; its rate and its dose at the tip are checked here.
                volume = request.bridge.volume_nl
                duration = request.bridge.duration_ms
                bolus_kind = int(DeliveryKind.BRIDGE)
                if volume > caps.max_priming_volume_nl:
                    reasons.add(Reason.PRIMING_VOLUME_ABOVE_MAX)
                if volume and duration:
                    if volume * MS_PER_H > self.envelope.max_rate_nl_per_h * duration:
                        reasons.add(Reason.RATE_ABOVE_PUMP_MAX)
                    tip_pg_per_day = volume * self.limits.concentration_ug_per_ml * MS_PER_DAY
                    if tip_pg_per_day * 100 > programme.daily_total_pg() * duration * (100 + TRANSIT_DOSE_TOLERANCE_PCT):
                        reasons.add(Reason.TRANSIT_DOSE_ABOVE_PROGRAMME)
            if new_limits is not None and request.record_concentration_ug_per_ml:
                where = new_limits.concentration.classify(request.record_concentration_ug_per_ml)
                _add_bound_reason(where, reasons, _CONCENTRATION_BOUND_REASONS)
            if new_limits is not None and self.programme is not None:
                dose = self._check_programme(programme, new_limits, caps, mass, now_ms, resume, reasons)
        elif kind == RequestKind.BOLUS:
            bolus_kind = request.bolus_kind
            volume = request.volume_nl
            duration = request.duration_ms
            mass = volume * self.limits.concentration_ug_per_ml
            if bolus_kind in COUNTED_BOLUS_KINDS:
                enabled = caps.bolus_enabled if bolus_kind == DeliveryKind.BOLUS_CLINICIAN else (
                    caps.patient_bolus_enabled and not self.limits.screening_only
                )
                if not enabled:
                    reasons.add(Reason.BOLUS_DISABLED)
                mass_ng = div_round(mass, PG_PER_NG, "up")
                _add_bound_reason(self.limits.bolus_ng.classify(mass_ng), reasons, _BOLUS_BOUND_REASONS)
                if mass_ng > caps.max_bolus_ng:
                    reasons.add(Reason.BOLUS_ABOVE_PRESCRIPTION_MAX)
                last = self.ledger.last_bolus_ms(COUNTED_BOLUS_KINDS)
                if last is not None and now_ms - last < caps.bolus_lockout_ms:
                    reasons.add(Reason.BOLUS_LOCKOUT)
                if self.ledger.bolus_count_24h(now_ms, COUNTED_BOLUS_KINDS) >= caps.max_boluses_per_day:
                    reasons.add(Reason.BOLUS_COUNT)
                if self._stacked_on_step(self.daily_dose_ng, mass, caps, now_ms):
                    reasons.add(Reason.BOLUS_OVERDOSE_RISK_TITRATION_STEP)
            elif volume > caps.max_priming_volume_nl:
                reasons.add(Reason.PRIMING_VOLUME_ABOVE_MAX)
            basal_now = 0 if self.programme is None else self.programme.rate_at(now_ms)
            if volume * MS_PER_H > (self.envelope.max_rate_nl_per_h - basal_now) * duration:
                reasons.add(Reason.BOLUS_RATE_ABOVE_PUMP_MAX)
            if self._window_excess(self.programme, mass, now_ms, self.cap_pg(now_ms=now_ms)) > 0:
                reasons.add(Reason.DOSE_CAP_24H)
                reasons.add(Reason.BOLUS_OVERDOSE_RISK_24H_CAP)
        elif kind == RequestKind.DISCONTINUE:
            dose = 0
            if request.override is None or DISCONTINUE_AUTHORISATION not in request.override.codes:
                reasons.add(Reason.DISCONTINUE_NOT_AUTHORISED)
            if not request.emergency and self.programme is not None:
                floor = caps.minimum_rate_nl_per_h * 24 * self.limits.concentration_ug_per_ml
                if self.programme.daily_total_pg() > floor:
                    reasons.add(Reason.TAPER_INCOMPLETE)
        elif kind == RequestKind.PROCEDURE_STOP:
            dose = 0
            if request.override is None or PROCEDURE_AUTHORISATION not in request.override.codes:
                reasons.add(Reason.PROCEDURE_NOT_AUTHORISED)
            if self.programme is None:
                reasons.add(Reason.NO_PROGRAMME)
        elif kind == RequestKind.MINIMUM_RATE:
            rate = caps.minimum_rate_nl_per_h
            self._check_rate(rate, self.limits, caps, reasons)
            reasons.discard(Reason.RATE_BELOW_SOFT)
            reasons.discard(Reason.RATE_ABOVE_SOFT)
            dose = div_round(rate * 24 * self.limits.concentration_ug_per_ml, PG_PER_NG, "up")
            if self.programme is not None and dose > self.daily_dose_ng:
                reasons.add(Reason.MINIMUM_RATE_ABOVE_CURRENT)
            # Below every rate of the programme in effect, the earlier projection still covers
            # it; otherwise (no programme, or a lower step somewhere) project it afresh.
            if self.programme is None or rate > self.programme.min_rate_nl_per_h:
                flat = Programme.continuous(rate, self.limits.concentration_ug_per_ml)
                if self._window_excess(flat, 0, now_ms, self.cap_pg(now_ms=now_ms)) > 0:
                    reasons.add(Reason.DOSE_CAP_24H)
        elif kind == RequestKind.CAPS_CHANGE:
            new = request.caps
            check_caps_against_limits(new, self.limits)
            if request.override is None or CAPS_CHANGE_CONFIRMATION not in request.override.codes:
                reasons.add(Reason.CAPS_CHANGE_NOT_CONFIRMED)
            if self.programme is not None:
                if dose > min(new.max_dose_ng_per_day, caps.max_dose_ng_per_day):
                    reasons.add(Reason.DOSE_ABOVE_PRESCRIPTION_CAP)
                if self.programme.min_rate_nl_per_h < new.minimum_rate_nl_per_h:
                    reasons.add(Reason.RATE_BELOW_MINIMUM_RATE)
        else:
            raise ConfigError("request.kind", kind, f"one of {[k.name for k in RequestKind]}")
        overridden: list[str] = []
        if request.override is not None:
            for code in sorted(reasons, key=REASON_INDEX.__getitem__):
                if code in SOFT_REASONS and code in request.override.codes:
                    overridden.append(code)
            reasons.difference_update(overridden)
            if kind == RequestKind.DISCONTINUE and DISCONTINUE_AUTHORISATION in request.override.codes:
                overridden.append(DISCONTINUE_AUTHORISATION)
            if kind == RequestKind.CAPS_CHANGE and CAPS_CHANGE_CONFIRMATION in request.override.codes:
                overridden.append(CAPS_CHANGE_CONFIRMATION)
            if kind == RequestKind.PROCEDURE_STOP and PROCEDURE_AUTHORISATION in request.override.codes:
                overridden.append(PROCEDURE_AUTHORISATION)
        ordered = tuple(sorted(reasons, key=REASON_INDEX.__getitem__))
        return Decision(
            not ordered, int(kind), ordered, tuple(overridden), rate, programme, bolus_kind,
            volume, duration, mass, dose, now_ms, request, self.state_version,
        )

    # -- apply -------------------------------------------------------------------------------

    def is_fresh(self, decision: Decision, now_ms: int) -> bool:
        """True if ``decision`` was made on the current state less than a minute ago.

        Check it just before commanding the pump; a stale decision must be re-authorised.
        """
        return (
            isinstance(decision, Decision)
            and decision.state_version == self.state_version
            and decision.at_ms <= now_ms <= decision.at_ms + MAX_DECISION_AGE_MS
        )

    def _check_event_time(self, field: str, t_ms: object) -> int:
        t_ms = require_range(field, t_ms, 0, MAX_TIME_MS, "ms")
        newest = self.newest_event_ms
        if newest is not None and t_ms < newest:
            raise ConfigError(field, t_ms, f">= {newest} ms (the newest event the kernel holds: time never goes back)")
        return t_ms

    def _interrupt(self, at_ms: int, dose: int, cause: InterruptionCause) -> None:
        """Enter (or continue) an interruption at ``at_ms`` with ``dose`` in effect from then."""
        if self.interruption is None:
            self.interruption = Interruption(at_ms, self.dose_history[-1][1], cause.value)
        else:
            self.interruption = self.interruption._replace(cause=cause.value)
        self._record_dose(at_ms, dose)

    def _record_dose(self, at_ms: int, dose: int) -> None:
        self.dose_history.append((at_ms, dose))
        self.dose_history = _prune_history(self.dose_history, at_ms)
        if self.held_caps is not None and at_ms >= self.held_caps[0]:
            self.held_caps = None

    def note_stopped(self, at_ms: int) -> None:
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

    def apply(self, decision: Decision, now_ms: int) -> None:
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
        now_ms = require_range("now_ms", now_ms, 0, 2**62, "ms")
        if not isinstance(decision, Decision) or not decision.allowed:
            raise ConfigError("decision.allowed", getattr(decision, "allowed", None), "True (only allowed decisions are applied)")
        if now_ms < decision.at_ms:
            raise ConfigError("now_ms", now_ms, f">= {decision.at_ms} ms (the decision's time)")
        self._check_event_time("now_ms", now_ms)
        kind = decision.kind
        if kind == RequestKind.CAPS_CHANGE:
            new = decision.request.caps
            check_caps_against_limits(new, self.limits)
            self.held_caps = (now_ms + CAPS_HOLD_MS, stricter_caps(self.effective_caps(now_ms), new))
            self.caps = new
            self.state_version += 1
            return
        if kind == RequestKind.PROCEDURE_STOP:
            # The zero dose of the hold, as a stop: the programme stays the projection's basal.
            self._interrupt(now_ms, 0, InterruptionCause.PROCEDURE)
            self.state_version += 1
            return
        if kind == RequestKind.BOLUS:
            self.ledger.commit(decision.bolus_kind, decision.mass_pg)
            try:
                self.ledger.record_bolus_start(decision.bolus_kind, now_ms)
            except (ConfigError, TypeError):
                self.ledger.release(decision.bolus_kind, decision.mass_pg)  # all or nothing
                raise
        if kind != RequestKind.BOLUS:
            resume = self._is_resume(kind)
            started = bool(self.dose_history)
            if kind == RequestKind.CONCENTRATION_CHANGE:
                self.limits = self.library[decision.programme.concentration_ug_per_ml]
            if decision.programme is not None:
                programme = _as_programme(decision.programme)
            else:
                anchor = 0 if self.programme is None else self.programme.anchor_ms
                programme = Programme.continuous(decision.rate_nl_per_h, self.limits.concentration_ug_per_ml, anchor_ms=anchor)
            previous = self.daily_dose_ng
            dose = programme.daily_total_ng()
            if kind == RequestKind.DISCONTINUE:
                if started:
                    self.programme = None
                    self._interrupt(now_ms, 0, InterruptionCause.DISCONTINUED)
            elif kind == RequestKind.MINIMUM_RATE and started:
                self.programme = programme
                self._interrupt(now_ms, dose, InterruptionCause.MINIMUM_RATE)
            else:
                self.programme = programme
                self._record_dose(now_ms, dose)
                if resume:
                    self.interruption = None
                elif not started:
                    self.therapy_start_ms = now_ms
                    if kind != RequestKind.MINIMUM_RATE:
                        self.last_increase_ms = now_ms
                elif dose > previous:
                    self.last_increase_ms = now_ms
                    self.last_step_ms = now_ms
        self.state_version += 1

    # -- persistence -------------------------------------------------------------------------

    def state_snapshot(self) -> dict:
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
    def from_snapshot(cls, snapshot: dict, caps: PatientCaps | None, envelope: PumpEnvelope, *,
                      library: dict[int, DrugLimits] | None = None) -> SafetyKernel:
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
        gate = cls(parts["limits"], parts["caps"], envelope, Ledger.restore(snapshot["ledger"]), library=library)
        gate.programme = parts["programme"]
        gate.dose_history = list(parts["dose_history"])
        gate.therapy_start_ms = parts["therapy_start_ms"]
        gate.last_increase_ms = parts["last_increase_ms"]
        gate.last_step_ms = parts["last_step_ms"]
        gate.interruption = parts["interruption"]
        gate.held_caps = parts["held_caps"]
        gate.state_version = parts["state_version"]
        return gate
