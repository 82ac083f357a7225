"""What the pump delivered, by kind, into the kernel's 24 h ledger: accrual and reconciliation.

One tick::

    commanded since the last poll, by kind (basal / flex / bolus / periodic / minimum rate...)
      -> counter delta since the last reading (the pump's dispensed counter)
      -> delta split across kinds in proportion to what was commanded
      -> each part pushed through the catheter dead-volume queue (old drug first)
      -> what leaves the catheter tip recorded in the kernel ledger by kind
      -> drift: counted against commanded volume

:class:`Accounting` owns that state: the counter baseline, the commanded volume by
kind since the last reconciliation, the catheter queue, the reservoir fill and
everything dispensed since, and the per-kind totals for the report. Units: volumes
nL, masses pg, rates nL/h, times ms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.alarms import AlarmCode
from controller.reservoir import transit_rate_nl_per_h
from cython_ext import units
from cython_ext.units import MS_PER_DAY, MS_PER_H
from cython_ext.vocabulary import DeliveryKind

#: Kinds the loop runs as a timed extra rate on top of basal. (A concentration change's transit is
#: no bolus: it is the programme's own rate, scaled while the old drug leaves the tip: :class:`Transit`.)
BOLUS_RUN_KINDS = (DeliveryKind.BOLUS_CLINICIAN, DeliveryKind.BOLUS_PATIENT, DeliveryKind.PRIMING)
#: Alarms a new fill of the reservoir clears.
REFILL_CLEARS = (AlarmCode.RESERVOIR_LOW, AlarmCode.RESERVOIR_EMPTY, AlarmCode.REFILL_DUE)


def periodic_extra_nl_per_h(programme: Any, t_ms: int) -> int:
    """Extra rate of the periodic boluses of ``programme`` running at controller time ``t_ms``, nL/h.

    :param programme: a kernel programme, or None (no periodic boluses: 0).
    :param t_ms: controller time, ms.
    """
    if programme is None or not programme.periodic_boluses:
        return 0
    offset_ms = (t_ms - programme.anchor_ms) % MS_PER_DAY
    return sum(rate for start_ms, duration_ms, rate in programme.periodic_boluses
               if (offset_ms - start_ms) % MS_PER_DAY < duration_ms)


@dataclass
class CatheterQueue:
    """The dead volume (pump tubing and catheter) as a first-in, first-out queue of solutions.

    What the pump pushes now reaches the catheter tip only after ``capacity_nl`` more has moved,
    so after a refill the old drug is delivered first, and right after implant an unprimed
    catheter delivers saline (concentration 0).

    Segments are (volume nL, concentration µg/mL), oldest (nearest the tip) first.
    """

    segments: list[list[int]] = field(default_factory=list)

    @property
    def saline_nl(self) -> int:
        """Saline still ahead of the drug (an unprimed or part-primed line), nL; 0 once primed."""
        return sum(volume for volume, concentration in self.segments if concentration == 0)

    def fill(self, capacity_nl: int, concentration_ug_per_ml: int) -> None:
        """Fill the whole catheter with one solution (drug, or saline as concentration 0)."""
        self.segments = [[capacity_nl, concentration_ug_per_ml]] if capacity_nl else []

    def push(self, volume_nl: int, concentration_ug_per_ml: int) -> int:
        """Push ``volume_nl`` in at the pump end; return the drug (pg) that leaves at the tip."""
        segments = self.segments
        if len(segments) == 1 and segments[0][1] == concentration_ug_per_ml and volume_nl >= 0:
            return volume_nl * concentration_ug_per_ml  # one solution in and out: the catheter is unchanged
        capacity = sum(s[0] for s in segments)
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

    def volume_ahead_of_nl(self, concentration_ug_per_ml: int) -> int:
        """Volume that leaves the tip before the newest run of ``concentration_ug_per_ml`` arrives there, nL.

        0 when the whole catheter holds that solution (a transit to it is over).
        """
        ahead = 0
        for i in range(len(self.segments) - 1, -1, -1):
            if self.segments[i][1] != concentration_ug_per_ml:
                ahead = sum(s[0] for s in self.segments[:i + 1])
                break
        return ahead


@dataclass(frozen=True)
class Transit:
    """A concentration change crossing the dead volume (issue #9, itb-clinical §1.6).

    The reservoir holds the new drug; the catheter still holds the old, which leaves the tip first.
    Until it has all left, the pump runs the programme's rate (at the new concentration) scaled by
    new / old: the volume rate the old drug needs for the same dose. The end is found from the
    pump's counter through the catheter queue, never from a clock alone, and never cut short.

    :ivar old_concentration_ug_per_ml: the drug still in the catheter, µg/mL.
    :ivar new_concentration_ug_per_ml: the reservoir's and the programme's concentration, µg/mL.
    :ivar started_ms: controller time the change was committed, ms.
    """

    old_concentration_ug_per_ml: int
    new_concentration_ug_per_ml: int
    started_ms: int

    def pump_rate_nl_per_h(self, programme_rate_nl_per_h: int) -> int:
        """The volume rate that gives the programme's dose while the old drug leaves the tip, nL/h (rounded
        down: never more than prescribed)."""
        return transit_rate_nl_per_h(programme_rate_nl_per_h, self.old_concentration_ug_per_ml,
                                     self.new_concentration_ug_per_ml)


@dataclass
class BolusRun:
    """A bolus in progress: an extra rate on top of basal until ``end_ms``.

    :ivar bolus_id: the bolus record's ID (also its journal command ID).
    :ivar kind: clinician, patient or priming.
    :ivar dose_ng: authorised dose, ng.
    :ivar volume_nl: authorised volume, nL.
    :ivar extra_rate_nl_per_h: rate on top of basal while it runs, nL/h.
    :ivar start_ms: controller time it started, ms.
    :ivar end_ms: controller time it ends, ms.
    :ivar attributed_nl: counter volume attributed to it so far, nL.
    :ivar committed_pg: its commitment still held in the kernel ledger, pg.
    """

    bolus_id: str
    kind: DeliveryKind
    dose_ng: int
    volume_nl: int
    extra_rate_nl_per_h: int
    start_ms: int
    end_ms: int
    attributed_nl: int = 0
    committed_pg: int = 0


@dataclass
class Reservoir:
    """The implanted reservoir as the controller predicts it.

    :ivar fill_nl: volume at the last fill, nL.
    :ivar fill_utc: when it was filled.
    :ivar dispensed_since_fill_nl: everything the pump's counter showed since, nL.
    """

    fill_nl: int = 0
    fill_utc: datetime | None = None
    dispensed_since_fill_nl: int = 0

    @property
    def volume_nl(self) -> int:
        """Predicted volume left, nL (never below 0)."""
        return max(0, self.fill_nl - self.dispensed_since_fill_nl)


class TipDoseWatch:
    """The dose reaching the catheter tip, against the prescription: the withdrawal-risk alarm's condition.

    Each reconciliation adds the drug that left the tip over its interval. Over the trailing
    ``window_ms`` the watch compares it with the prescribed daily dose: below ``fraction_pct``
    of it is a deficit, whatever the cause (a stop, minimum-rate mode, an unprimed catheter, a
    concentration change). The watch arms only once a full window has reached the threshold, so
    a drug-naive patient whose catheter still holds saline after implant is not flagged: without
    prior exposure there is no dependence to withdraw from (itb-clinical §3.2).

    Intervals are whole: one that began before the window counts in full, so the watch may see
    a deficit up to one poll interval late, never early.

    :param window_ms: the trailing window, ms (> 0).
    :param fraction_pct: the threshold, % of the prescribed dose (1-100).
    """

    def __init__(self, window_ms: int, fraction_pct: int) -> None:
        self.window_ms = window_ms
        self.fraction_pct = fraction_pct
        #: (end of interval ms, drug that left the tip pg), oldest first.
        self.samples: list[tuple[int, int]] = []
        #: Whether a full window has reached the threshold since therapy started.
        self.armed = False

    def record(self, end_ms: int, tip_pg: int) -> None:
        """Add one reconciled interval ending at ``end_ms``."""
        self.samples.append((end_ms, tip_pg))

    def deficit_pct(self, now_ms: int, prescribed_ng_per_day: int) -> int | None:
        """The percentage of the prescribed dose that reached the tip over the window, if it is a deficit.

        :return: the delivered share (%, rounded down) when the watch is armed and it is below the
            threshold; None otherwise (no deficit, not armed, or less than a window of history).
        """
        start = now_ms - self.window_ms
        while len(self.samples) > 1 and self.samples[1][0] <= start:
            self.samples.pop(0)  # keep one interval that ends at or before the window's start
        if prescribed_ng_per_day <= 0 or not self.samples or self.samples[0][0] > start:
            return None
        delivered_pg = sum(pg for end, pg in self.samples if end > start)
        expected_pg = prescribed_ng_per_day * units.PG_PER_NG * self.window_ms // MS_PER_DAY
        share = 100 * delivered_pg // max(1, expected_pg)
        if share >= self.fraction_pct:
            self.armed = True
            return None
        return share if self.armed else None

    def reset(self) -> None:
        """Forget the history (an authorised discontinue: no dose is expected any more)."""
        self.samples = []
        self.armed = False


class Accounting:
    """Accrual of commanded volume and reconciliation of the pump counter into the kernel ledger.

    :param gate: the kernel gate whose ledger is fed (:meth:`~controller.gate.Gate.record_delivery`,
        :meth:`~controller.gate.Gate.release_bolus`).
    :param emit: the loop's event sink, ``emit(event, **payload)`` (a counter reset is an event).
    """

    def __init__(self, gate: Any, emit: Callable[..., None]) -> None:
        self.gate = gate
        self._emit = emit
        #: Drug in the reservoir, µg/mL (0 before implant).
        self.concentration_ug_per_ml = 0
        self.catheter = CatheterQueue()
        self.reservoir = Reservoir()
        #: The pump counter value the ledger is reconciled to, nL (None: not read yet).
        self.last_counter_nl: int | None = None
        #: Controller time up to which commanded volume is accrued, ms.
        self.accrual_ms = 0
        #: Commanded volume by kind since the last reconciliation, nL x ms/h (exact integers).
        self.expected: dict[DeliveryKind, int] = {}
        #: Drug that reached the catheter tip, by kind, since implant, pg.
        self.delivered_pg_by_kind: dict[DeliveryKind, int] = {}
        #: Counter volume reconciled since implant, nL (compared with the pump's own counter).
        self.total_counted_nl = 0
        self.interval_expected_nl = 0
        self.interval_delta_nl = 0
        self.interval_tip_pg = 0
        self.drift_expected_nl = 0
        self.drift_counted_nl = 0
        #: Controller time the drug reached the patient after the catheter held saline, ms: the start of the
        #: priming (or re-prime) that pushed the saline out, or the end of the reconciliation in which the basal
        #: pushed it out (never earlier than it happened); None while saline remains, or when the catheter held
        #: drug from the start. The first-24 h rule counts from it (:meth:`controller.therapy.Therapy._first_day_hold`).
        self.drug_at_tip_ms: int | None = None

    def record_fill(self, fill_nl: int, concentration_ug_per_ml: int, fill_utc: datetime) -> None:
        """The reservoir now holds ``fill_nl`` (nL) of ``concentration_ug_per_ml`` (µg/mL), filled at ``fill_utc``."""
        self.reservoir.fill_nl = fill_nl
        self.reservoir.fill_utc = fill_utc
        self.reservoir.dispensed_since_fill_nl = 0
        self.concentration_ug_per_ml = concentration_ug_per_ml

    def start(self, fill_nl: int, concentration_ug_per_ml: int, fill_utc: datetime, *, dead_volume_nl: int,
              catheter_primed: bool) -> None:
        """Therapy's first start: the reservoir filled (:meth:`record_fill`), the catheter's ``dead_volume_nl``
        (nL) holding the drug if it was primed, else saline."""
        self.record_fill(fill_nl, concentration_ug_per_ml, fill_utc)
        self.catheter.fill(dead_volume_nl, concentration_ug_per_ml if catheter_primed else 0)
        self.drug_at_tip_ms = None

    # -- accrual ---------------------------------------------------------------------------------

    def accrue(self, now_ms: int, rate_nl_per_h: int, *, bolus: BolusRun | None, running: bool,
               minimum_rate: bool, programme: Any) -> None:
        """Add what was commanded since the last accrual to the expected volume by kind.

        :param now_ms: controller time, ms.
        :param rate_nl_per_h: the rate the pump holds (0 when not delivering), nL/h.
        :param bolus: the bolus running, if any (its extra rate is its own kind).
        :param running: the committed programme is delivering (not minimum rate or stopped).
        :param minimum_rate: the loop is in minimum-rate mode.
        :param programme: the flex or periodic programme in effect, if any.
        """
        dt = now_ms - self.accrual_ms
        self.accrual_ms = now_ms
        if dt <= 0 or rate_nl_per_h <= 0:
            return
        rate = rate_nl_per_h
        expected = self.expected
        if bolus is not None:
            extra = min(bolus.extra_rate_nl_per_h, rate)
            expected[bolus.kind] = expected.get(bolus.kind, 0) + extra * dt
            rate -= extra
        if running and programme is not None:
            # Boundaries always accrue, so the whole interval lies in the segment that began it.
            periodic = min(periodic_extra_nl_per_h(programme, now_ms - dt), rate)
            if periodic > 0:
                expected[DeliveryKind.BOLUS_PERIODIC] = expected.get(DeliveryKind.BOLUS_PERIODIC, 0) + periodic * dt
                rate -= periodic
        flex = programme is not None and len(programme.steps) > 1
        kind = DeliveryKind.MINIMUM_RATE if minimum_rate else (DeliveryKind.FLEX if flex else DeliveryKind.BASAL)
        expected[kind] = expected.get(kind, 0) + rate * dt

    def add_expected(self, kind: DeliveryKind, volume_nl: int) -> None:
        """Count ``volume_nl`` as commanded for ``kind`` (restart attribution of what the counter shows)."""
        self.expected[kind] = self.expected.get(kind, 0) + volume_nl * MS_PER_H

    def _attribute(self, delta_nl: int) -> dict[DeliveryKind, int]:
        """Split a counter delta across kinds in proportion to what was commanded."""
        if delta_nl <= 0:
            return {}
        if len(self.expected) == 1:  # one kind commanded (the usual case): all of it, as the split below gives
            (kind, volume), = self.expected.items()
            return {kind if volume else DeliveryKind.BASAL: delta_nl}
        total = sum(self.expected.values())
        if total == 0:
            return {DeliveryKind.BASAL: delta_nl}
        shares = {k: delta_nl * v // total for k, v in self.expected.items() if v}
        remainder = delta_nl - sum(shares.values())
        if remainder:
            biggest = max(shares, key=lambda k: (self.expected[k], k.label))
            shares[biggest] += remainder
        return shares

    # -- reconciliation ------------------------------------------------------------------------------

    def reconcile(self, counter_nl: int, now_ms: int, last_poll_ms: int, bolus: BolusRun | None, *,
                  recovered: tuple[int, int] | None = None) -> tuple[int, int]:
        """Record the counter delta since the last reading into the ledger. Returns (delta nL, tip pg).

        The caller accrues up to ``now_ms`` first.

        :param counter_nl: the pump's dispensed counter now, nL.
        :param now_ms: controller time, ms.
        :param last_poll_ms: controller time of the previous reconciliation, ms.
        :param bolus: the bolus running, if any (its attributed volume and commitment move).
        :param recovered: after a restart, ``(earliest ms, highest rate nL/h)``: continuous (non-bolus)
            delivery since the resume point is placed as late as it can have happened at that rate,
            not before the earliest time (:meth:`~controller.gate.KernelGate.record_recovered`), so it
            counts in every rolling window it may belong to; it is never spread over a longer span
            than it took.
        """
        expected_nl = sum(self.expected.values()) // MS_PER_H
        self.interval_expected_nl += expected_nl
        if self.last_counter_nl is None or counter_nl < self.last_counter_nl:
            if self.last_counter_nl is not None:
                self._emit("counter_reset", previous_nl=self.last_counter_nl, now_nl=counter_nl)
            base = 0 if self.last_counter_nl is not None else counter_nl
        else:
            base = self.last_counter_nl
        delta = counter_nl - base
        self.last_counter_nl = counter_nl
        shares = self._attribute(delta)
        saline_before = self.drug_at_tip_ms is None and self.catheter.saline_nl > 0
        tip_pg_total = 0
        conc = self.concentration_ug_per_ml
        parts = shares.items() if len(shares) < 2 else sorted(shares.items(), key=lambda item: item[0].label)
        for kind, volume_nl in parts:
            if volume_nl <= 0 or not conc:
                continue
            tip_pg = self.catheter.push(volume_nl, conc)
            # What reaches the tip is what the patient gets (old drug first after a refill). A priming
            # bolus mixes and may reach the CSF before it ends, so it counts its full reservoir-side mass.
            counted_pg = tip_pg
            if kind is DeliveryKind.PRIMING:
                counted_pg = max(tip_pg, units.mass_pg_for_volume(volume_nl, conc))
            if recovered is not None and kind not in BOLUS_RUN_KINDS:
                self.gate.record_recovered(kind, counted_pg, now_ms, earliest_ms=recovered[0],
                                           max_rate_nl_per_h=recovered[1])
            else:
                self.gate.record_delivery(kind, counted_pg, last_poll_ms, now_ms)
            if kind in BOLUS_RUN_KINDS:
                released = self.gate.release_bolus(kind, counted_pg)
                if bolus is not None and kind is bolus.kind:
                    bolus.committed_pg = max(0, bolus.committed_pg - released)
            self.delivered_pg_by_kind[kind] = self.delivered_pg_by_kind.get(kind, 0) + tip_pg
            tip_pg_total += tip_pg
            if bolus is not None and kind is bolus.kind:
                bolus.attributed_nl += volume_nl
        if saline_before and not self.catheter.saline_nl:
            # A priming's drug mixes into the CSF as it runs (itb-clinical §5.3 [TGA-PRIME]; the ledger counts it so):
            # it is at the patient from the priming's start. The basal's only when it has pushed the saline out,
            # some time in this interval: at its end, never earlier.
            priming = bolus is not None and bolus.kind is DeliveryKind.PRIMING and shares.get(DeliveryKind.PRIMING)
            self.drug_at_tip_ms = bolus.start_ms if priming else now_ms
        self.reservoir.dispensed_since_fill_nl += delta
        self.total_counted_nl += delta
        self.drift_expected_nl += expected_nl
        self.drift_counted_nl += delta
        self.expected = {}
        self.interval_delta_nl += delta
        self.interval_tip_pg += tip_pg_total
        return delta, tip_pg_total

    def take_interval(self) -> tuple[int, int, int]:
        """(commanded nL, counted nL, tip pg) since the last call, for the poll record; resets them."""
        out = (self.interval_expected_nl, self.interval_delta_nl, self.interval_tip_pg)
        self.interval_expected_nl = self.interval_delta_nl = self.interval_tip_pg = 0
        return out

    # -- drift --------------------------------------------------------------------------------------

    def drift(self, tolerance_ppm: int, floor_nl: int) -> tuple[int, int, int]:
        """Counted minus commanded volume since the drift history began, with its limit.

        :return: (difference nL, commanded nL, counted nL) when the difference is beyond
            ``max(floor_nl, commanded x tolerance)``; otherwise (0, commanded, counted) after
            halving old history so the check stays sensitive to recent drift.
        """
        expected, counted = self.drift_expected_nl, self.drift_counted_nl
        diff = counted - expected
        limit = max(floor_nl, expected * tolerance_ppm // 1_000_000)
        if abs(diff) > limit:
            self.reset_drift()
            return diff, expected, counted
        if expected > 50 * floor_nl:
            self.drift_expected_nl //= 2
            self.drift_counted_nl //= 2
        return 0, expected, counted

    def reset_drift(self) -> None:
        """Forget drift history (a stop or an alarm explains any shortfall; its own alarm is raised)."""
        self.drift_expected_nl = 0
        self.drift_counted_nl = 0

    # -- resume point --------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """JSON-ready state for the resume point."""
        r = self.reservoir
        return {
            "concentration_ug_per_ml": self.concentration_ug_per_ml,
            "fill_nl": r.fill_nl,
            "fill_utc": None if r.fill_utc is None else r.fill_utc.isoformat(),
            "dispensed_since_fill_nl": r.dispensed_since_fill_nl,
            "last_counter_nl": self.last_counter_nl,
            "catheter": [list(s) for s in self.catheter.segments],
            "delivered_pg_by_kind": {k.label: v for k, v in self.delivered_pg_by_kind.items()},
            "total_counted_nl": self.total_counted_nl,
            "drug_at_tip_ms": self.drug_at_tip_ms,
        }

    def restore(self, body: dict[str, Any]) -> None:
        """Reload the state saved by :meth:`snapshot`."""
        self.concentration_ug_per_ml = body["concentration_ug_per_ml"]
        fill_utc = body.get("fill_utc")
        self.reservoir = Reservoir(body["fill_nl"], None if fill_utc is None else datetime.fromisoformat(fill_utc),
                                   body["dispensed_since_fill_nl"])
        self.last_counter_nl = body["last_counter_nl"]
        self.catheter.segments = [list(s) for s in body["catheter"]]
        self.delivered_pg_by_kind = {DeliveryKind.from_label(k): v for k, v in body["delivered_pg_by_kind"].items()}
        self.total_counted_nl = body["total_counted_nl"]
        self.drug_at_tip_ms = body.get("drug_at_tip_ms")


class AccountingViews:
    """What a control loop reads from, and records into, its :class:`Accounting` (``self.accounting``).

    One place for both loops that feed the ledger: :class:`controller.loop.ControlLoop` and the
    cohort's ideal-pump loop (:class:`hil.cohort.loop.IdealPumpLoop`). The loop provides
    ``accounting``, ``alarms`` and ``clock``.
    """

    accounting: Accounting
    alarms: Any
    clock: Any

    @property
    def concentration_ug_per_ml(self) -> int:
        """Drug in the reservoir, µg/mL (0 before implant)."""
        return self.accounting.concentration_ug_per_ml

    @property
    def saline_in_catheter_nl(self) -> int:
        """Saline still in the catheter ahead of the drug (an unprimed or part-primed line), nL; 0 once primed."""
        return self.accounting.catheter.saline_nl

    @property
    def drug_at_tip_ms(self) -> int | None:
        """When the saline the catheter held at implant was found flushed (drug at the tip), controller ms; None
        while saline remains or when the catheter held drug from the start (:attr:`Accounting.drug_at_tip_ms`)."""
        return self.accounting.drug_at_tip_ms

    @property
    def fill_nl(self) -> int:
        """Reservoir volume at the last fill, nL."""
        return self.accounting.reservoir.fill_nl

    @property
    def dispensed_since_fill_nl(self) -> int:
        """Everything reconciled as dispensed since the last fill, nL."""
        return self.accounting.reservoir.dispensed_since_fill_nl

    @property
    def delivered_pg_by_kind(self) -> dict[str, int]:
        """Drug that reached the catheter tip since implant, by delivery-kind label, pg."""
        return {k.label: v for k, v in self.accounting.delivered_pg_by_kind.items()}

    @property
    def total_counted_nl(self) -> int:
        """Counter volume reconciled since implant, nL (compared with the pump's own counter)."""
        return self.accounting.total_counted_nl

    def _record_fill(self, fill_nl: int, concentration_ug_per_ml: int) -> None:
        """A refill: the reservoir holds ``fill_nl`` (nL) at ``concentration_ug_per_ml`` (µg/mL) from now, and
        the alarms it cures (:data:`REFILL_CLEARS`) are cleared."""
        self.accounting.record_fill(fill_nl, concentration_ug_per_ml, self.clock.utc_now())
        for code in REFILL_CLEARS:
            if self.alarms.is_active(code):
                self.alarms.clear(code, detail="reservoir refilled")
