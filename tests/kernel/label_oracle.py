"""An independent reference for the history rules: the label rules over the raw history.

The stateful restart test keeps its own record of what happened (every dose that took
effect and when, every stop, bolus and caps change, never pruned) and asks this oracle
which history-rule codes a request must get. Nothing here reads a kernel or its ledger, and
nothing is imported from ``cython_ext`` but the reason-code spellings: each rule is written
again, directly from its documented wording (``cython_ext/kernel.pyi``), in the most literal
form (the trailing-window minimum as an interval overlap, not the kernel's pruned list).

Rules (sources in ``kernel.pyi``):

- TIT-01: an increase may not take the daily dose above (1 + cap) x the lowest dose in effect
  at any moment of [now - 24 h, now]; stops and discontinues are 0, minimum rate its dose.
- TIT-04: an increase within ``min_titration_interval_ms`` of the last increase (soft).
- Label §1.3: no increase in the first 24 h after therapy started (hard).
- Restart rule (§1.6, §3.3): a resume after an interruption shorter than the threshold may
  restart at most at the dose just before it; after a longer one at most at the lower of that
  and the titration-phase starting dose (the minimum-rate dose when none is given).
- BOL-01: lockout and count over the counted (clinician, patient) boluses.
- Bolus stacking: within 24 h after a titration step, the dose in effect plus every counted
  bolus in the 24 h window plus this one may not exceed (1 + cap) x the trailing minimum; a
  second increase within that day likewise: its dose plus those boluses (TITRATION_CAP_EXCEEDED).
- A caps change keeps each loosened limit at its old value for 24 h.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DAY_MS = 86_400_000
MINUTE_MS = 60_000

#: The codes this oracle decides (a decision's other codes are out of its scope).
CHECKED = frozenset({
    "TITRATION_CAP_EXCEEDED", "TITRATION_INTERVAL", "INCREASE_WITHIN_24H_OF_START",
    "RESTART_OVERDOSE_RISK_ABOVE_PRIOR_DOSE", "RESTART_OVERDOSE_RISK_ABOVE_START_DOSE",
    "RESUME_WITHOUT_INTERRUPTION", "BOLUS_LOCKOUT", "BOLUS_COUNT", "BOLUS_OVERDOSE_RISK_TITRATION_STEP",
    "CAPS_CHANGE_NOT_CONFIRMED",
})
#: How each limit the oracle reads tightens.
_STRICTER = {
    "titration_cap_pct": min, "min_titration_interval_ms": max, "bolus_lockout_ms": max,
    "max_boluses_per_day": min, "restart_threshold_ms": min, "titration_start_dose_ng_per_day": min,
    "max_dose_ng_per_day": min,
    "minimum_rate_nl_per_h": lambda old, new: new,
}


@dataclass
class LabelOracle:
    """The raw history and the rules over it. Times in ms, doses in ng/day, masses in pg.

    :param caps: the limits the rules read (keys of ``_STRICTER``).
    :param concentration_ug_per_ml: the drug concentration (one for the whole run).
    """

    caps: dict
    concentration_ug_per_ml: int
    doses: list[tuple[int, int]] = field(default_factory=list)  # every dose that took effect
    programme_dose: int | None = None  # daily dose of the last authorised programme
    start_ms: int | None = None
    increases: list[int] = field(default_factory=list)  # the start and every titration step
    steps: list[int] = field(default_factory=list)  # titration steps only
    interruption: tuple[int, int] | None = None  # (since, dose just before)
    boluses: list[tuple[int, int]] = field(default_factory=list)  # counted boluses: (start, mass)
    held: tuple[int, dict] | None = None  # (until, limits in force until then)
    events: list[int] = field(default_factory=list)

    # -- the history ---------------------------------------------------------------------------

    def caps_at(self, now: int) -> dict:
        if self.held is not None and now < self.held[0]:
            return self.held[1]
        return self.caps

    def dose_taken_effect(self, now: int, dose: int, *, kind: str) -> None:
        """A dose took effect at ``now``: ``kind`` is start, step, same, resume, minimum_rate, stop, discontinue."""
        if kind in ("stop", "minimum_rate", "discontinue") and self.interruption is None:
            self.interruption = (now, self.doses[-1][1])
        if kind == "resume":
            self.interruption = None
        if kind == "start":
            self.start_ms = now
            self.increases.append(now)
        if kind == "step":
            self.increases.append(now)
            self.steps.append(now)
        self.doses.append((now, dose))
        self.events.append(now)

    def bolus_given(self, now: int, mass_pg: int) -> None:
        self.boluses.append((now, mass_pg))
        self.events.append(now)

    def caps_changed(self, now: int, new: dict) -> None:
        old = self.caps_at(now)
        self.held = (now + DAY_MS, {k: how(old[k], new[k]) for k, how in _STRICTER.items()})
        self.caps = new
        self.events.append(now)

    # -- the rules -----------------------------------------------------------------------------

    def trailing_minimum(self, now: int) -> int:
        """Lowest dose in effect at any moment of [now - 24 h, now]: every dose whose time in
        effect [took effect, next took effect) overlaps it, however short."""
        lowest = None
        for i, (at, dose) in enumerate(self.doses):
            ended = self.doses[i + 1][0] if i + 1 < len(self.doses) else None
            if at <= now and (ended is None or ended > now - DAY_MS):
                lowest = dose if lowest is None else min(lowest, dose)
        return 0 if lowest is None else lowest

    def rate_request(self, now: int, dose: int, *, resume_kind: bool, soft_lifted: frozenset) -> set[str]:
        """Codes for a rate change (or an explicit resume) to ``dose``."""
        caps = self.caps_at(now)
        codes: set[str] = set()
        interrupted = self.interruption is not None
        if resume_kind and not interrupted:
            codes.add("RESUME_WITHOUT_INTERRUPTION")
        if interrupted:
            since, before = self.interruption
            ceiling, code = before, "RESTART_OVERDOSE_RISK_ABOVE_PRIOR_DOSE"
            if now - since >= caps["restart_threshold_ms"]:
                start = caps["titration_start_dose_ng_per_day"] or -(-caps["minimum_rate_nl_per_h"] * 24 * self.concentration_ug_per_ml // 1000)
                if start < ceiling:
                    ceiling, code = start, "RESTART_OVERDOSE_RISK_ABOVE_START_DOSE"
            if dose > ceiling:
                codes.add(code)
        elif not resume_kind and self.programme_dose is not None and dose > self.programme_dose:
            if dose * 100 > self.trailing_minimum(now) * (100 + caps["titration_cap_pct"]) \
                    or self._stacked(now, dose, 0):
                codes.add("TITRATION_CAP_EXCEEDED")
            if self.increases and now - self.increases[-1] < caps["min_titration_interval_ms"]:
                codes.add("TITRATION_INTERVAL")
            if self.start_ms is not None and now - self.start_ms < DAY_MS:
                codes.add("INCREASE_WITHIN_24H_OF_START")
        return codes - soft_lifted

    def bolus_request(self, now: int, mass_pg: int) -> set[str]:
        """Codes for a counted (clinician or patient) bolus of ``mass_pg``."""
        caps = self.caps_at(now)
        codes: set[str] = set()
        if self.boluses and now - self.boluses[-1][0] < caps["bolus_lockout_ms"]:
            codes.add("BOLUS_LOCKOUT")
        if sum(1 for at, _m in self.boluses if now - DAY_MS < at <= now) >= caps["max_boluses_per_day"]:
            codes.add("BOLUS_COUNT")
        if self._stacked(now, self.programme_dose or 0, mass_pg):
            codes.add("BOLUS_OVERDOSE_RISK_TITRATION_STEP")
        return codes

    def _stacked(self, now: int, dose: int, mass_pg: int) -> bool:
        """Within 24 h of a step: ``dose`` + the counted boluses of the 24 h window + ``mass_pg`` above the cap."""
        if not self.steps or now - self.steps[-1] >= DAY_MS:
            return False
        caps = self.caps_at(now)
        m0 = now // MINUTE_MS
        given = sum(m for at, m in self.boluses if m0 - 1440 < at // MINUTE_MS <= m0)
        return (dose * 1000 + given + mass_pg) * 100 > self.trailing_minimum(now) * 1000 * (100 + caps["titration_cap_pct"])
