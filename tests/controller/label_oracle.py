"""The label's dosing rules, judged on what the patient physically received.

:class:`LabelOracle` reads only the physical record of :mod:`tests.controller.adversary_world`
(the rate the pump's mechanism pushed, in physical time, and the drug that left the catheter tip)
plus what the adversary itself knows (the patient's screening, the prescription it gave, the
boluses it asked for and was told were started, the alarms it heard). It never reads the
controller's ledger, accounting or kernel. The rules, as written in
``reference/itb-clinical.md`` and ``reference/safety-requirements.md``:

* **PRX-03 / BOL-01** (§5.1): the drug leaving the tip in any 24 h never exceeds the cap.
* **§1.3** the starting dose is at most 2 x the effective test dose (1 x when its effect lasted
  more than 8 h); **no increase in the first 24 h** after implant (after an unprimed implant, in
  the 24 h after its drug first left the tip: the patient got saline until then).
* **TIT-01** (§1.4, §3.3): an increase may not take the basal dose above (1 + cap) x the lowest
  dose in effect at any moment of the previous 24 h (stops and minimum-rate spells count as the
  low doses they were); the cap is the origin's (spinal 30 %, cerebral and paediatric 15 %), the
  stricter of old and new for 24 h after an origin change (issue #9).
* **TIT-01 with §5.1** ("boluses go into D"): in the 24 h after an increase, everything the pump
  pushed, boluses included, stays within (1 + cap) x that baseline for a day.
* **The restart rule** (§1.6 [JP-LBL], §3.3): after an interruption, delivery comes back at most
  at the dose before it; after one longer than the threshold, at most at the titration-phase
  starting dose.
* **BOL-01, BOL-02, PER-02**: bolus lockout and count per kind hold across restarts, reboots and
  clock jumps.
* **RES-03**: after a refill whose volumes disagree (a possible pocket fill) no bolus and no
  increase until a clinician acknowledges it.
* **SAFE-01, §3.2** (stopping is not a safe state): a clinician who acknowledges a stop, or asks
  to resume, gets delivery back.
* **ALM-07** (§3.2): a pump standing still raises a therapy-interruption alarm, and delivery
  unconfirmed for long raises one too.
* **Withdrawal** (issue #9, §3.2): the tip dose below half the prescription for 6 h raises
  WITHDRAWAL_RISK.
* **A concentration change** (issue #9, BOL-06, §5.3): from the refill until an hour after the old
  drug has left the tip, the drug leaving the tip over every poll-long window where the pump
  delivers its basal is within ±10 % of the prescription (the 24 h cap at the tip holds as ever).

The basal dose the patient is on is what the mechanism pushes, times the concentration leaving
the tip (kept as the rate of the implant's drug that gives the same dose), outside the windows of boluses
the adversary was told had started (a bolus window hides the basal under it: the oracle then
knows less, never more, so it cannot flag what did not happen). Rises are judged as they happen;
tolerances cover only integer rounding and the sampling of time.

Units: times physical ms, rates nL/h, doses ng/day, drug pg.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.controller.adversary_world import MS_PER_DAY, TipRecord, WitnessedPump

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
PG_PER_NG = 1000
#: How near a concentration front's arrival at the tip a rate change counts as the transit's end, ms: the
#: controller ends a transit once at most a minute of flow of the old drug is left (4 min at a rate 4x lower).
FRONT_GRACE_MS = 5 * MS_PER_MIN
#: The tip-dose window of a concentration change: the poll interval, ms (issue #9: "at every poll").
TRANSIT_WINDOW_MS = 30 * MS_PER_MIN
#: The tip dose over each window of a transit is within this share of the prescription, % (issue #9).
TRANSIT_TOLERANCE_PCT = 10
#: How long after the old drug has left the tip the transit's windows are still judged, ms.
TRANSIT_AFTER_MS = MS_PER_H


def dose_ng_per_day(rate_nl_per_h: int, concentration_ug_per_ml: int) -> int:
    """Daily dose of a volume rate: nL/h x 24 h x µg/mL is pg/day; /1000 is ng/day."""
    return rate_nl_per_h * 24 * concentration_ug_per_ml // PG_PER_NG


@dataclass
class Violation:
    """One breach of a label rule, with the requirement it breaks and the facts."""

    rule: str
    at_ms: int
    detail: str

    def __str__(self) -> str:
        return f"[{self.rule}] at {self.at_ms / MS_PER_H:.2f} h: {self.detail}"


@dataclass
class LabelOracle:
    """The label's rules over one patient's physical history.

    :param pump: the witnessed pump (its mechanism's rate log).
    :param tip: the tip record.
    :param concentration_ug_per_ml: the drug in the reservoir.
    :param cap_ng_per_day: the prescription's 24 h cap.
    :param cap_pct: the titration cap of the patient's origin, %.
    :param start_dose_ng_per_day: the label's starting dose from the screening record (§1.3).
    :param minimum_rate_nl_per_h: the prescription's minimum rate: at or below it, delivery is interrupted.
    :param restart_threshold_ms: interruptions longer than this restart at the starting dose.
    :param withdrawal_window_ms: the tip-dose window of the withdrawal alarm.
    :param withdrawal_fraction_pct: below this share of the prescription in the window is a deficit.
    """

    pump: WitnessedPump
    tip: TipRecord
    concentration_ug_per_ml: int
    cap_ng_per_day: int
    cap_pct: int
    start_dose_ng_per_day: int
    minimum_rate_nl_per_h: int
    restart_threshold_ms: int
    withdrawal_window_ms: int = 6 * MS_PER_H
    withdrawal_fraction_pct: int = 50
    bolus_lockout_ms: int = 4 * MS_PER_H
    boluses_per_day: int = 4
    #: Physical time since which a refill discrepancy holds boluses and increases (None: nothing held).
    held_since_ms: int | None = None
    #: Bolus starts by kind, ms.
    bolus_starts: dict[str, list[int]] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    #: Physical time of the implant (None before it).
    implant_ms: int | None = None
    #: Whether the implant's priming bolus ran (False: the catheter held saline until the basal pushed it out).
    primed: bool = True
    #: ``[start, end)`` of every bolus the adversary was told had started (priming included), ms.
    bolus_windows: list[tuple[int, int]] = field(default_factory=list)
    #: ``(from ms, cap %)``: the origin's titration cap in force from then on.
    cap_history: list[tuple[int, int]] = field(default_factory=list)
    #: ``(ms, event, code)`` of every alarm event heard.
    alarm_events: list[tuple[int, str, str]] = field(default_factory=list)
    #: ``(from ms, dose ng/day)``: what the clinician has prescribed.
    prescriptions: list[tuple[int, int]] = field(default_factory=list)
    #: ``[start, end)`` of every spell without a link to the pump, ms (end None: still down).
    link_down: list[list[int | None]] = field(default_factory=list)
    #: ``(crash, restart)`` of every spell with no controller running, ms.
    controller_down: list[tuple[int, int]] = field(default_factory=list)
    #: Rules this oracle does not judge (a variant machine names them and why).
    unjudged: frozenset[str] = frozenset()
    #: ``(ms, rate)`` the basal dose the patient is on, known points in time order.
    basal: list[tuple[int, int]] = field(default_factory=list)
    _log_seen: int = 0
    _steps: list[tuple[int, int, float]] = field(default_factory=list)  # (at, baseline rate, cap %) of increases
    _checked_upto_ms: int = 0
    _basal_upto_ms: int = 0
    #: ``[start ms, old, new, front ms or None]`` of every concentration change the controller accepted.
    transits: list[list[int | None]] = field(default_factory=list)
    _transit_judged: int = 0  # tip stretches whose windows are judged
    _armed: bool = False

    # -- what the adversary tells it ------------------------------------------------------------------

    def implanted(self, at_ms: int, priming_ms: int, *, primed: bool = True) -> None:
        """The implant happened at ``at_ms``; ``primed``: its priming bolus ran (else the catheter kept its saline)."""
        self.implant_ms = at_ms
        self.primed = primed
        self.cap_history.append((at_ms, self.cap_pct))
        if primed:
            self.bolus_windows.append((at_ms, at_ms + priming_ms + MS_PER_MIN))

    def first_day_from_ms(self) -> int | None:
        """Where the label's first 24 h start: the implant, or, for an unprimed catheter, the moment the
        implant's drug first left the tip (before that the patient got saline; issue #9, review 11).
        None while no drug has reached the tip."""
        if self.primed:
            return self.implant_ms
        return next((at for at, old, new in self.tip.boundaries if not old and new), None)

    def bolus_started(self, at_ms: int, duration_ms: int, kind: str) -> None:
        """A bolus of ``kind`` (clinician, patient) the adversary was told had started: BOL-01, RES-03."""
        self.bolus_windows.append((at_ms, at_ms + duration_ms + MS_PER_MIN))
        if self.held_since_ms is not None:
            self._fail("RES-03 refill discrepancy holds boluses", at_ms,
                       f"a {kind} bolus started while a refill discrepancy from "
                       f"{self.held_since_ms / MS_PER_H:.1f} h was not acknowledged")
        starts = self.bolus_starts.setdefault(kind, [])
        if starts and at_ms - starts[-1] < self.bolus_lockout_ms:
            self._fail("BOL-01 / BOL-02 / PER-02 bolus lockout", at_ms,
                       f"a {kind} bolus {(at_ms - starts[-1]) / MS_PER_MIN:.0f} min after the last, lockout "
                       f"{self.bolus_lockout_ms / MS_PER_MIN:.0f} min")
        starts.append(at_ms)
        in_day = [t for t in starts if t > at_ms - MS_PER_DAY]
        if len(in_day) > self.boluses_per_day:
            self._fail("BOL-01 / BOL-02 / PER-02 boluses per day", at_ms,
                       f"{len(in_day)} {kind} boluses in 24 h, at most {self.boluses_per_day}")

    def refill_discrepancy(self, at_ms: int) -> None:
        """A refill whose volumes disagree beyond any tolerance: boluses and increases wait (RES-03)."""
        if self.held_since_ms is None:
            self.held_since_ms = at_ms

    def stuck(self, at_ms: int, action: str, reasons: tuple[str, ...], detail: str) -> None:
        """A clinician asked to resume after a stop, and delivery did not restart."""
        self._fail("SAFE-01 / §3.2 a stop is not a safe state", at_ms,
                   f"after '{action}' the pump stays stopped: {','.join(reasons)} ({detail})")

    def acknowledged(self) -> None:
        self.held_since_ms = None

    def prescribed(self, at_ms: int, dose: int) -> None:
        if not self.prescriptions or self.prescriptions[-1][1] != dose:
            self.prescriptions.append((at_ms, dose))

    def concentration_changed(self, at_ms: int, old_ug_per_ml: int, new_ug_per_ml: int) -> None:
        """A refill put a new concentration in the reservoir (the controller accepted the change)."""
        self.transits.append([at_ms, old_ug_per_ml, new_ug_per_ml, None])

    def origin_changed(self, at_ms: int, cap_pct: int) -> None:
        self.cap_history.append((at_ms, cap_pct))

    def alarm(self, at_ms: int, event: str, code: str) -> None:
        self.alarm_events.append((at_ms, event, code))

    # -- helpers -------------------------------------------------------------------------------------

    def cap_pct_at(self, t_ms: int) -> int:
        """The titration cap in force: the origin's, the stricter of old and new for 24 h after a change."""
        changes = [(since, pct) for since, pct in self.cap_history if since <= t_ms]
        if not changes:
            return self.cap_pct
        since, pct = changes[-1]
        if len(changes) > 1 and t_ms - since < MS_PER_DAY:
            return min(pct, self.cap_pct_at(since - 1))
        return pct

    def _in_bolus(self, t_ms: int) -> bool:
        return any(s <= t_ms < e for s, e in self.bolus_windows)

    def _rate_at(self, t_ms: int) -> int:
        rate = 0
        for at, r in self.pump.rate_log:
            if at > t_ms:
                break
            rate = r
        return rate

    def _raised_since(self, codes: set[str], since_ms: int) -> bool:
        return any(t >= since_ms and event == "raise" and code in codes for t, event, code in self.alarm_events)

    def _link_down_within(self, start_ms: int, end_ms: int) -> bool:
        return any(s < end_ms and (e is None or e > start_ms) for s, e in self.link_down)

    def _fail(self, rule: str, at_ms: int, detail: str) -> None:
        if all(v.rule != rule for v in self.violations):  # the first breach of each rule tells the story
            self.violations.append(Violation(rule, at_ms, detail))

    def _ng(self, rate: int) -> int:
        return dose_ng_per_day(rate, self.concentration_ug_per_ml)

    def _rate_for(self, dose: int) -> int:
        return dose * PG_PER_NG // (24 * self.concentration_ug_per_ml)

    @staticmethod
    def _slack(rate: int) -> int:
        """Integer rounding of dose to rate: 2 nL/h, or 0.2 %."""
        return max(2, rate // 500)

    # -- the rules -------------------------------------------------------------------------------------

    def check(self, now_ms: int) -> None:
        """Judge everything up to ``now_ms`` that the record now settles."""
        self._basal_points(now_ms)
        self._dose_cap(now_ms)
        self._transit_tip_dose(now_ms)
        self._stacked_boluses(now_ms)
        self._interruption_alarm(now_ms)
        self._withdrawal_alarm(now_ms)
        self._checked_upto_ms = now_ms

    def _settled_ms(self, now_ms: int) -> int:
        """How far the basal points can be settled: ``now_ms``, or two graces of flow short of it while a
        concentration front is on its way to the tip or has just left it (a rate change near the
        front must be seen with it), ms."""
        fronts = [at for at, old, _new in self.tip.boundaries if old]
        if len(fronts) < self.tip.drug_changes or (fronts and self._moving_ms(fronts[-1], now_ms) <= 2 * FRONT_GRACE_MS):
            return max(self._basal_upto_ms, self._back_by_flow(now_ms, 2 * FRONT_GRACE_MS))
        return now_ms

    def _back_by_flow(self, end_ms: int, span_ms: int) -> int:
        """The latest time before ``end_ms`` from which the mechanism pushed for ``span_ms`` up to ``end_ms``, ms
        (a pump standing still brings a front no nearer); the start of the record when it never pushed that long."""
        log = self.pump.rate_log
        t, need = end_ms, span_ms
        for at, rate in reversed([(a, r) for a, r in log if a < end_ms]):
            if rate:
                if t - at >= need:
                    return t - need
                need -= t - at
            t = at
        return log[0][0]

    def _tip_factor(self, t_ms: int) -> tuple[int, int]:
        """The drug leaving the tip at ``t_ms`` over the reference (implant) drug, as (numerator, denominator).

        Before the implant's drug front reached the tip the catheter held saline; the priming bolus
        window hides that, so the implant's drug counts from the implant on.
        """
        concentration = self.concentration_ug_per_ml
        for at, old, new in self.tip.boundaries:
            if at > t_ms:
                break
            if old:
                concentration = new
        return concentration, self.concentration_ug_per_ml

    def _rate_point_factor(self, t_ms: int, rate: int) -> tuple[int, int]:
        """The tip factor for the rate (nL/h) the mechanism took at ``t_ms``.

        A rate put in just before a concentration front reaches the tip (within :data:`FRONT_GRACE_MS`),
        and the last the mechanism delivered at around that front, is the rate for the drug behind the front:
        the end of a transit switched a moment early. The moment it ran with the drug ahead is no dose
        in effect; its drug is judged by the transit tip-dose rule.
        """
        for at, old, new in self.tip.boundaries:
            # Near in flow, not in clock time: a pump standing still (a refill's pause, a stop) pushes no old drug
            # out, so the front is as near after it as before (the controller ends a transit by the volume left).
            if old and t_ms < at and self._moving_ms(t_ms, at) <= FRONT_GRACE_MS:
                # Superseded by another rate (a stop, the minimum rate or the same rate again does not supersede
                # it: it was the rate the mechanism was set to deliver the dose at).
                later = [a for a, r in self.pump.rate_log
                         if t_ms < a <= at + FRONT_GRACE_MS and r > self.minimum_rate_nl_per_h and r != rate]
                if not later:
                    return new, self.concentration_ug_per_ml
        return self._tip_factor(t_ms)

    def _moving_ms(self, start_ms: int, end_ms: int) -> int:
        """How long the mechanism pushed (any rate above 0) within ``[start_ms, end_ms]``, ms (from its rate log)."""
        moving, t, rate = 0, start_ms, self._rate_at(start_ms)
        for at, r in self.pump.rate_log:
            if start_ms < at < end_ms:
                moving += (at - t) if rate else 0
                t, rate = at, r
        return moving + ((end_ms - t) if rate else 0)

    def _basal_points(self, now_ms: int) -> None:
        """Turn mechanism changes outside bolus windows (and the ends of those windows) into basal points.

        A point is the dose the patient is put on: the mechanism's rate times the drug leaving the tip
        (with the front of a concentration change as :meth:`_rate_point_factor` takes it), kept as the
        rate of the reference (implant) drug that gives that dose. A front reaching the tip is no point
        of its own: whether the mechanism's rate changed with it, as the transit's end should, is the
        transit tip-dose rule's to judge (:meth:`_transit_tip_dose`), from the drug that left the tip.
        """
        log = self.pump.rate_log
        settled = self._settled_ms(now_ms)
        # (seen at, equivalent rate, mechanism rate, earliest it can have begun): a rate first seen at the
        # end of a bolus window may have been put in at any time under it.
        candidates: list[tuple[int, int, int, int]] = []
        while self._log_seen < len(log) and log[self._log_seen][0] <= settled:
            at, rate = log[self._log_seen]
            if not self._in_bolus(at):
                num, den = self._rate_point_factor(at, rate)
                candidates.append((at, rate * num // den, rate, at))
            self._log_seen += 1
        for s, e in self.bolus_windows:
            if self._basal_upto_ms < e <= settled and not self._in_bolus(e):
                rate = self._rate_at(e)
                num, den = self._tip_factor(e)
                candidates.append((e, rate * num // den, rate, self._hidden_since(e)))
        self._basal_upto_ms = max(self._basal_upto_ms, settled)
        # In time order, and in the mechanism's order within a millisecond (not by rate).
        for at, rate, raw, earliest in sorted(candidates, key=lambda c: c[0]):
            if self.implant_ms is None or at < self.implant_ms:
                self.basal.append((at, rate, raw))
                continue
            if self.basal and self.basal[-1][1:] == (rate, raw):
                continue
            # What the mechanism did for no time at all (the stop of a reprogramming in the same millisecond)
            # was in effect at no moment: the rise is from the dose before it.
            previous, previous_raw = next((p[1:] for p in reversed(self.basal) if p[0] < at), (0, 0))
            self.basal.append((at, rate, raw))
            if rate > previous:
                self._rise(at, previous, previous_raw, rate, earliest)

    def _hidden_since(self, end_ms: int) -> int:
        """The start of the run of bolus windows that ends at ``end_ms``: since then the basal was not seen, ms."""
        start, moved = end_ms, True
        while moved:
            moved = False
            for s, e in self.bolus_windows:
                if s < start <= e:
                    start, moved = s, True
        return start

    def _rise(self, at: int, previous: int, previous_raw: int, rate: int, earliest: int) -> None:
        """Judge a rise of the basal seen at ``at``, which can have been put in as early as ``earliest``.

        Rates are equivalent rates of the reference drug (the dose); ``previous_raw`` is what the
        mechanism pushed before, nL/h: at or below the minimum rate, delivery was interrupted.
        """
        floor = self.minimum_rate_nl_per_h
        start_rate = self._rate_for(self.start_dose_ng_per_day)
        if previous_raw <= floor:
            # A rate another replaced in the same millisecond (a reprogramming's intermediate) was no dose.
            before = [(t, r) for i, (t, r, raw) in enumerate(self.basal[:-1])
                      if t >= (self.implant_ms or 0) and raw > floor
                      and not (self.basal[i + 1][0] == t and self.basal[i + 1][2] > floor)]
            gap_from = before[-1][0] if before else None
            if gap_from is None:
                # The start of therapy (§1.3): at most the record's starting dose.
                if rate > start_rate + self._slack(start_rate):
                    self._fail("§1.3 implant dose", at, f"started at {self._ng(rate) / 1000:g} µg/day, above the "
                               f"{self.start_dose_ng_per_day / 1000:g} µg/day the screening record allows")
                return
            prior = before[-1][1]
            after = [t for t, r, raw in self.basal[:-1] if t > before[-1][0] and raw <= floor]
            since = after[0] if after else at
            length = at - since
            if rate > prior + self._slack(prior):
                self._fail("restart rule (§1.6, §3.3)", at,
                           f"resumed at {self._ng(rate) / 1000:g} µg/day after a {length / MS_PER_H:.1f} h "
                           f"interruption, above the {self._ng(prior) / 1000:g} µg/day before it")
            if length > self.restart_threshold_ms and rate > start_rate + self._slack(start_rate):
                self._fail("restart rule (§1.6, §3.3)", at,
                           f"resumed at {self._ng(rate) / 1000:g} µg/day after a {length / MS_PER_H:.1f} h "
                           f"interruption, above the titration-phase starting dose "
                           f"{self.start_dose_ng_per_day / 1000:g} µg/day")
            return
        assert self.implant_ms is not None
        if rate <= previous + self._slack(previous):
            # Integer rounding, not an increase: the end of a concentration transit, whose rate is rounded
            # down for the old drug, comes back up to the programme's rate by a nanolitre an hour.
            return
        if self.held_since_ms is not None and earliest > self.held_since_ms:
            self._fail("RES-03 refill discrepancy holds increases", at,
                       f"{self._ng(previous) / 1000:g} -> {self._ng(rate) / 1000:g} µg/day while a refill "
                       f"discrepancy was not acknowledged")
        first_day = self.first_day_from_ms()
        if first_day is None or at - first_day < MS_PER_DAY:
            self._fail("§1.3 no increase in the first 24 h", at,
                       f"{self._ng(previous) / 1000:g} -> {self._ng(rate) / 1000:g} µg/day "
                       f"{(at - self.implant_ms) / MS_PER_H:.1f} h after the implant" + (
                           "" if self.primed else " of an unprimed catheter, " + (
                               "before any drug reached the tip" if first_day is None else
                               f"{(at - first_day) / MS_PER_H:.1f} h after its drug reached the tip")))
        lowest = self.lowest_basal(at - MS_PER_DAY, at)
        pct = self.cap_pct_at(at)
        ceiling = lowest * (100 + pct) // 100
        if rate > ceiling + self._slack(ceiling):
            self._fail("TIT-01 trailing-window titration cap", at,
                       f"{self._ng(previous) / 1000:g} -> {self._ng(rate) / 1000:g} µg/day; the lowest dose in "
                       f"effect in the previous 24 h was {self._ng(lowest) / 1000:g} µg/day, cap {pct} %")
        self._steps.append((at, lowest, pct))

    def lowest_basal(self, start_ms: int, end_ms: int) -> int:
        """The lowest basal rate in effect at any known moment of ``[start_ms, end_ms]`` of therapy, nL/h.

        Under a bolus the basal is not known; before the implant there was no therapy (the first
        24 h rule judges increases that close to it).
        """
        in_effect = [] if self._in_bolus(start_ms) else [
            r for t, r, _raw in self.basal if t <= start_ms and t >= (self.implant_ms or 0)][-1:]
        # What the mechanism did for no time at all (the stop of a reprogramming, a rate a fault ended
        # in the same instant) was in effect at no moment: it is not a dose of the window.
        in_effect += [r for i, (t, r, _raw) in enumerate(self.basal) if start_ms < t <= end_ms
                      and (i + 1 == len(self.basal) or self.basal[i + 1][0] != t)]
        return min(in_effect) if in_effect else 0

    def _dose_cap(self, now_ms: int) -> None:
        end = self.tip.last_ms
        if end is None:
            return
        tip = self.tip.tip_pg_within(end - MS_PER_DAY, end)
        cap = self.cap_ng_per_day * PG_PER_NG
        if tip > cap + cap // 200:
            self._fail("PRX-03 / BOL-01 24 h cap at the tip", end,
                       f"{tip / 1e6:.1f} µg left the catheter tip in the 24 h to here, cap {cap / 1e6:g} µg")

    def _stacked_boluses(self, now_ms: int) -> None:
        for step in [s for s in self._steps if s[0] + MS_PER_DAY <= now_ms]:
            self._steps.remove(step)
            at, lowest, pct = step
            allowed = dose_ng_per_day(lowest, self.concentration_ug_per_ml) * PG_PER_NG * (100 + pct) // 100
            # At the tip: while a concentration change crosses the catheter, the pump end pushes the new drug at
            # the old drug's volume rate (the same dose at the tip, a multiple of it at the pump end).
            pushed = self.tip.tip_pg_within(at, at + MS_PER_DAY)
            if pushed > allowed + allowed // 200 + 2 * PG_PER_NG * 1000:
                self._fail("TIT-01 with §5.1: boluses stacked on a titration step", at,
                           f"{pushed / 1e6:.1f} µg pushed in the 24 h after the step, above (1 + {pct} %) x "
                           f"{self._ng(lowest) / 1000:g} µg/day")

    def _transit_tip_dose(self, now_ms: int) -> None:
        """Issue #9, BOL-06, §5.3: over every poll-long window of a concentration change's transit (until an
        hour after the old drug has left the tip) the tip dose is the prescription's, within 10 %.

        Windows are whole sampled stretches, the shortest run ending at each stretch that spans a poll
        interval. Judged where the pump delivers its basal: no bolus window overlaps, the mechanism
        pushes above the minimum rate throughout (stops and minimum-rate spells are the withdrawal
        rule's), and no lost reply has left the pump's rate unknown (that fault's reaction is to
        continue with THERAPY_STATUS_UNKNOWN raised until a poll settles it, DESIGN principle 4; the
        cap still judges it). A link down or a controller down is judged: the pump must end the
        transit by itself.
        """
        for transit in self.transits:
            if transit[3] is None:
                transit[3] = next((at for at, old, new in self.tip.boundaries
                                   if at >= transit[0] and (old, new) == (transit[1], transit[2])), None)
        if not self.transits or "transit" in self.unjudged:
            self._transit_judged = len(self.tip.ends)
            return
        starts, ends = self.tip.starts, self.tip.ends
        for j in range(self._transit_judged, len(ends)):
            end = ends[j]
            i = j
            while i > 0 and end - starts[i] < TRANSIT_WINDOW_MS:
                i -= 1
            start = starts[i]
            if end - start < TRANSIT_WINDOW_MS:
                continue
            if not any(t[0] <= start and (t[3] is None or end <= t[3] + TRANSIT_AFTER_MS) for t in self.transits):
                continue
            if any(s < end and e > start for s, e in self.bolus_windows):
                continue
            rates = [self._rate_at(start)] + [r for at, r in self.pump.rate_log if start < at < end]
            if min(rates) <= self.minimum_rate_nl_per_h:
                continue
            if any(s < end and (e is None or e > start) for s, e in self._spells("therapy_status_unknown")):
                continue  # a lost reply left the pump's rate unknown: continue + alarm until a poll settles it
            expected = self._prescribed_pg(start, end)
            got = self.tip.tip_pg_within(start, end)
            if abs(got - expected) * 100 > expected * TRANSIT_TOLERANCE_PCT + expected // 5:
                self._fail("issue #9 / BOL-06 tip dose during a concentration change", end,
                           f"{got / 1e6:.2f} µg left the tip in the {(end - start) / MS_PER_MIN:.0f} min to here, "
                           f"prescribed {expected / 1e6:.2f} µg (±{TRANSIT_TOLERANCE_PCT} %); changes "
                           f"{[(round(t[0] / MS_PER_H, 2), t[1], t[2]) for t in self.transits]}")
        self._transit_judged = len(ends)

    def _spells(self, code: str) -> list[tuple[int, int | None]]:
        """``(raise, clear or None)`` of every spell the alarm ``code`` was raised, ms."""
        spells: list[tuple[int, int | None]] = []
        for t, event, c in self.alarm_events:
            if c != code:
                continue
            if event == "raise" and (not spells or spells[-1][1] is not None):
                spells.append((t, None))
            elif event == "clear" and spells and spells[-1][1] is None:
                spells[-1] = (spells[-1][0], t)
        return spells

    def _prescribed_pg(self, start_ms: int, end_ms: int) -> int:
        """The drug the prescriptions in effect over ``[start_ms, end_ms]`` give, pg."""
        total = 0
        for k, (since, dose) in enumerate(self.prescriptions):
            until = self.prescriptions[k + 1][0] if k + 1 < len(self.prescriptions) else end_ms
            overlap = min(until, end_ms) - max(since, start_ms)
            if overlap > 0:
                total += dose * PG_PER_NG * overlap // MS_PER_DAY
        return total

    def _interruption_alarm(self, now_ms: int) -> None:
        """ALM-07: the mechanism standing still since ``since`` for an hour (comms up) or 2.5 h has an alarm."""
        log = self.pump.rate_log
        if self.implant_ms is None or log[-1][1] != 0 or log[-1][0] < self.implant_ms:
            return
        since = log[-1][0]
        # With no controller running nobody can alarm: the clock starts again at the restart.
        since = max([since] + [end for start, end in self.controller_down if end > since])
        still = now_ms - since
        codes = {"therapy_interrupted", "therapy_status_unknown", "motor_stall", "pump_reset", "reservoir_empty"}
        link = self._link_down_within(since, now_ms)
        if (still >= MS_PER_H and not link) or still >= 5 * MS_PER_H // 2:
            if not self._raised_since(codes, since - MS_PER_MIN) and not any(self._active(c) for c in codes):
                self._fail("ALM-07 therapy interruption alarm", now_ms,
                           f"the pump has stood still for {still / MS_PER_H:.1f} h without an interruption alarm")

    def _withdrawal_alarm(self, now_ms: int) -> None:
        """Withdrawal: the tip dose below the fraction for the window (plus an hour for polls) has its alarm."""
        end = self.tip.last_ms
        if not self.prescriptions or end is None:
            return
        since, dose = self.prescriptions[-1]
        if dose <= 0:
            return
        window = self.withdrawal_window_ms
        share_pg = dose * PG_PER_NG * window // MS_PER_DAY
        if not self._armed:
            # A drug-naive patient is not in withdrawal: the patient counts as exposed once a whole day
            # has brought the share (stricter than the controller's one window: it cannot flag early).
            start = end - MS_PER_DAY
            if start >= since and self.tip.tip_pg_within(start, end) * 100 >= dose * PG_PER_NG * self.withdrawal_fraction_pct:
                self._armed = True
            return
        span = window + MS_PER_H
        start = end - span
        if "withdrawal" in self.unjudged or start < since or self._link_down_within(start, end) \
                or any(s < end and e > start for s, e in self.controller_down) or self.tip.first_ms > start:
            return
        upper = self.tip.tip_pg_touching(start, end)
        if upper * 100 <= share_pg * (self.withdrawal_fraction_pct - 10):
            if not self._raised_since({"withdrawal_risk"}, start) and not self._active("withdrawal_risk"):
                self._fail("withdrawal alarm (issue #9, §3.2)", end,
                           f"{upper / 1e6:.1f} µg left the tip in {span / MS_PER_H:g} h against "
                           f"{dose / 1000:g} µg/day prescribed, and no WITHDRAWAL_RISK alarm")

    def _active(self, code: str) -> bool:
        changes = [event for _t, event, c in self.alarm_events if c == code and event in ("raise", "clear")]
        return bool(changes) and changes[-1] == "raise"
