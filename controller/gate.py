"""The controller's one door to the safety kernel (DESIGN principle 1: one gate).

:class:`Gate` is what the control loop and the workflows call; :class:`KernelGate`
implements it over :mod:`cython_ext.kernel`. The gate builds kernel requests,
returns the kernel's decision unchanged (reasons are the kernel's
machine-readable codes), applies a decision only after the pump change was
verified, keeps the ledger fed with delivered drug by kind, and releases bolus
commitments as the pump reports their delivery.

It also saves and restores the kernel state for the checkpoint: the ledger
snapshot (exact: 24 h totals, bolus starts and lockouts) plus the programme in
effect and when it took effect. Restoring rebuilds the kernel with that
programme taking effect at its recorded time, which keeps the titration
interval and baseline at least as strict as before the restart.

The kernel raises the project's own :class:`~cython_ext.errors.ConfigError`,
so its errors pass through unchanged.

One label rule is held partly beside the gate: the kernel counts "no increase in the
first 24 h" (``INCREASE_WITHIN_24H_OF_START``) from the pump's start, while the drug
reaches the patient only once the catheter's saline is out. The workflows hold the same
rule, code and hardness from that moment, found on the controller's catheter model
(:meth:`controller.therapy.Therapy._first_day_hold`; itb-clinical §1.3, issue #9).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from controller.program import OrphanSchedule
from controller.program import orphan_refusals as program_orphan_refusals
from cython_ext import units
from cython_ext.errors import ConfigError
from cython_ext.vocabulary import DeliveryKind

def _kernel() -> Any:
    from cython_ext import kernel

    return kernel


def kernel_implementation() -> str:
    """Which kernel implementation this process uses: ``"compiled"``, or ``"python"`` (the twin, on request)."""
    return _kernel().IMPLEMENTATION


@dataclass(frozen=True)
class GateDecision:
    """A kernel decision as the controller uses it.

    :ivar allowed: the kernel's verdict.
    :ivar reasons: the kernel's reason codes (empty when allowed), plus workflow codes added by the caller.
    :ivar rate_nl_per_h: authorised basal (or minimum) rate, nL/h.
    :ivar volume_nl: authorised bolus (or transit) volume, nL.
    :ivar duration_ms: authorised bolus duration, ms.
    :ivar dose_ng: authorised bolus mass, ng (rounded up).
    :ivar dose_ng_per_day: daily dose of the programme after the decision, ng/day.
    :ivar overridden: soft limits the request's override lifted.
    :ivar raw: the kernel's own decision (applied as is).
    :ivar programme: the authorised kernel programme (programme and concentration changes).
    """

    allowed: bool
    reasons: tuple[str, ...]
    rate_nl_per_h: int = 0
    volume_nl: int = 0
    duration_ms: int = 0
    dose_ng: int = 0
    dose_ng_per_day: int = 0
    overridden: tuple[str, ...] = ()
    raw: Any = field(default=None, compare=False, repr=False)
    programme: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def denied(cls, *reasons: str) -> GateDecision:
        """A denial decided outside the kernel (a workflow rule such as ``HIGH_PRIORITY_ALARM``)."""
        return cls(False, tuple(reasons))


class Gate(ABC):
    """What the controller needs from the safety kernel."""

    @abstractmethod
    def authorize_basal(self, rate_nl_per_h: int, now_ms: int, *, override: tuple[tuple[str, ...], str, str] | None = None) -> GateDecision:
        """Authorise a simple continuous programme at ``rate_nl_per_h`` (same concentration)."""

    @abstractmethod
    def authorize_bolus(self, kind: DeliveryKind, volume_nl: int, duration_ms: int, now_ms: int, *,
                        override: tuple[tuple[str, ...], str, str] | None = None) -> GateDecision:
        """Authorise a bolus of ``kind`` (clinician, patient, priming or bridge)."""

    @abstractmethod
    def authorize_concentration_change(self, concentration_ug_per_ml: int, rate_nl_per_h: int,
                                       transit_volume_nl: int, transit_duration_ms: int, now_ms: int, *,
                                       override: tuple[tuple[str, ...], str, str] | None = None,
                                       steps: list[tuple[int, int, int]] | None = None,
                                       periodic_boluses: list[tuple[int, int, int]] | tuple = ()) -> GateDecision:
        """Authorise a programme at a new concentration with the transit of the old drug.

        :param rate_nl_per_h: the new programme's rate at ``concentration_ug_per_ml``, nL/h (a continuous
            programme; with ``steps``, the rate of the step in force now).
        :param transit_volume_nl: old drug to push through the catheter (the dead volume), nL.
        :param transit_duration_ms: how long that takes at the transit rate, ms (the kernel refuses a
            transit faster than the pump or above the new programme's dose).
        :param override: the prescription's signed soft-limit overrides (codes, reason, prescriber).
        :param steps: a flex programme's ``(start_offset_ms, duration_ms, rate_nl_per_h)`` steps at the new
            concentration, on the programme in effect's anchor; None: continuous at ``rate_nl_per_h``.
        :param periodic_boluses: its ``(start_offset_ms, duration_ms, extra_rate_nl_per_h)`` boluses at the new
            concentration. The kernel judges the whole programme (its daily total against the 24 h cap).
        """

    @abstractmethod
    def authorize_minimum_rate(self, rate_nl_per_h: int, now_ms: int) -> GateDecision:
        """Authorise minimum-rate mode."""

    @abstractmethod
    def authorize_discontinue(self, now_ms: int, *, authorised_by: str | None, reason: str,
                              emergency: bool) -> GateDecision:
        """Authorise zero flow (end of a taper, or an emergency)."""

    @abstractmethod
    def authorize_procedure_stop(self, now_ms: int, *, authorised_by: str | None, reason: str) -> GateDecision:
        """Authorise a guided procedure's zero-rate hold (SAFE-05: an MRI whose pump labelling requires zero)."""

    @abstractmethod
    def apply(self, decision: GateDecision, now_ms: int) -> None:
        """Record an allowed decision that the pump now carries out."""

    @abstractmethod
    def record_delivery(self, kind: DeliveryKind, mass_pg: int, start_ms: int, end_ms: int) -> None:
        """Record drug delivered between two polls into the 24 h ledger."""

    @abstractmethod
    def make_programme(self, steps: list[tuple[int, int, int]], anchor_ms: int, *,
                       periodic_boluses: list[tuple[int, int, int]] | tuple = ()) -> Any:
        """Build a kernel programme from flex steps (and periodic boluses) at the current concentration."""

    @abstractmethod
    def authorize_programme(self, steps: list[tuple[int, int, int]], now_ms: int, *, anchor_ms: int,
                            override: tuple[tuple[str, ...], str, str] | None = None,
                            periodic_boluses: list[tuple[int, int, int]] | tuple = ()) -> GateDecision:
        """Authorise a flex or periodic-bolus programme as a whole."""

    @abstractmethod
    def note_bolus_start(self, kind: DeliveryKind, at_ms: int) -> None:
        """Count a bolus start (for lockouts) that the restored state does not hold."""

    @abstractmethod
    def orphan_refusals(self, schedule: OrphanSchedule, now_ms: int, *,
                        concentration_ug_per_ml: int | None = None,
                        catheter: list[list[int]] | None = None) -> tuple[str, ...]:
        """Why ``schedule``, what the pump would do with no further command, may not be left running
        (:mod:`controller.program`); empty when it may."""

    @abstractmethod
    def release_bolus(self, kind: DeliveryKind, mass_pg: int) -> int:
        """Release up to ``mass_pg`` of a bolus commitment; returns what was released."""

    @abstractmethod
    def total_24h_ng(self, now_ms: int) -> int:
        """Rolling 24 h delivered plus committed, ng."""

    @abstractmethod
    def cap_ng_per_day(self) -> int:
        """The rolling 24 h cap in force, ng."""

    @abstractmethod
    def plan_taper(self, target_dose_ng_per_day: int, now_ms: int) -> list[tuple[int, int]]:
        """Earliest allowed (time ms, dose ng/day) steps to a target."""

    @abstractmethod
    def daily_dose_ng(self) -> int:
        """Daily dose of the programme in effect, ng/day."""

    def note_titration_start_dose(self, dose_ng_per_day: int, now_ms: int) -> None:
        """Tell the kernel the patient's titration-phase starting dose (the restart rule's ceiling
        after a long interruption). The default does nothing."""
        del dose_ng_per_day, now_ms

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """JSON-ready kernel state for the checkpoint."""

    def ledger_snapshot(self) -> Any:
        """The ledger part of :meth:`snapshot` (the daily audit copy), ``snapshot()["ledger"]``."""
        return self.snapshot()["ledger"]

    @abstractmethod
    def restore(self, snapshot: dict[str, Any], now_ms: int | None = None) -> None:
        """Rebuild the kernel state from :meth:`snapshot`, under the prescription in effect at ``now_ms``."""


#: Reason code of a gate that lost the kernel history at a restart: no increase, no bolus.
HISTORY_UNAVAILABLE = "HISTORY_UNAVAILABLE"

#: Screening test doses go over this long by lumbar puncture (the label: at least 1 minute), ms.
SCREENING_DURATION_MS = 15 * units.MS_PER_MIN
#: The screening-only library concentration, µg/mL.
SCREENING_CONCENTRATION_UG_PER_ML = 50


def screening_gate(*, kernel_module: Any = None) -> KernelGate:
    """A gate for screening test doses: the 50 µg/mL screening-only library entry, one dose per 24 h.

    Test doses go by lumbar puncture, not through the pump, but through the kernel all the same:
    each is authorised as a clinician bolus of 50 µg/mL (at most 100 µg, 24 h lockout, one per day).
    """
    return KernelGate(
        SCREENING_CONCENTRATION_UG_PER_ML,
        dict(max_dose_ng_per_day=100_000, bolus_enabled=True, patient_bolus_enabled=False, max_bolus_ng=100_000,
             bolus_lockout_ms=units.MS_PER_DAY, max_boluses_per_day=1),
        min_rate_nl_per_h=1, max_rate_nl_per_h=10_000_000, kernel_module=kernel_module)


#: Kernel values already built, by their inputs (see :func:`_kernel_values`); bounded by :data:`_KERNEL_VALUES_MAX`.
_KERNEL_VALUES: dict[tuple[Any, ...], tuple[Any, Any, Any]] = {}
_KERNEL_VALUES_MAX = 256


def _kernel_values(k: Any, caps_kwargs: dict[str, Any], concentration_ug_per_ml: int, min_rate_nl_per_h: int,
                   max_rate_nl_per_h: int) -> tuple[Any, Any, Any]:
    """The kernel's caps, pump envelope and library entry for a gate: ``(caps, envelope, limits)``.

    All three are immutable kernel values that depend only on these inputs, so gates built from
    the same prescription and pump share them (a cohort builds thousands); each is built and
    checked by the kernel the first time, and bad input raises every time, as it is never stored.
    """
    try:
        # Types are part of the key: True == 1 and 1 == 1.0 must not share what the kernel checked for one.
        key = (k, tuple((name, type(v), v) for name, v in sorted(caps_kwargs.items())),
               *((type(v), v) for v in (concentration_ug_per_ml, min_rate_nl_per_h, max_rate_nl_per_h)))
        hash(key)
    except TypeError:
        key = None
    values = _KERNEL_VALUES.get(key) if key is not None else None
    if values is None:
        caps = k.make_caps(**caps_kwargs)
        # The kernel plans within its own ceiling; a faster pump is simply never asked for more.
        ceiling = getattr(k, "MAX_RATE_NL_PER_H", max_rate_nl_per_h)
        envelope = k.make_envelope(min_rate_nl_per_h, min(max_rate_nl_per_h, ceiling), 1)
        values = (caps, envelope, k.library_entry(concentration_ug_per_ml))
        if key is not None and len(_KERNEL_VALUES) < _KERNEL_VALUES_MAX:
            _KERNEL_VALUES[key] = values
    return values


class KernelGate(Gate):
    """:class:`Gate` over :mod:`cython_ext.kernel`.

    :param concentration_ug_per_ml: drug in the pump at start (a library entry).
    :param caps_kwargs: keyword arguments of ``kernel.make_caps`` (the prescription caps).
    :param min_rate_nl_per_h: the pump's lowest rate, nL/h.
    :param max_rate_nl_per_h: the pump's highest rate, nL/h.
    :param kernel_module: a kernel implementation module (default: the selected one).
    """

    def __init__(self, concentration_ug_per_ml: int, caps_kwargs: dict[str, Any], *,
                 min_rate_nl_per_h: int, max_rate_nl_per_h: int, kernel_module: Any = None) -> None:
        self.k = kernel_module if kernel_module is not None else _kernel()
        self._caps_kwargs = dict(caps_kwargs)
        self.caps, self.envelope, limits = _kernel_values(self.k, self._caps_kwargs, concentration_ug_per_ml,
                                                          min_rate_nl_per_h, max_rate_nl_per_h)
        self.kernel = self.k.SafetyKernel(limits, self.caps, self.envelope, self.k.Ledger())
        self.programme_since_ms = 0
        #: The kernel's history could not be restored after a restart: increases and boluses are refused.
        self.history_lost = False

    # -- helpers --------------------------------------------------------------------------------

    @property
    def concentration_ug_per_ml(self) -> int:
        """Concentration the kernel believes is in the pump, µg/mL."""
        return self.kernel.limits.concentration_ug_per_ml

    @staticmethod
    def _kind(kind: DeliveryKind) -> int:
        if not isinstance(kind, DeliveryKind):
            raise ConfigError("kind", kind, f"a DeliveryKind ({[k.name for k in DeliveryKind]})")
        return int(kind)

    def _wrap(self, decision: Any) -> GateDecision:
        return GateDecision(
            allowed=bool(decision.allowed),
            reasons=tuple(decision.reasons),
            rate_nl_per_h=decision.rate_nl_per_h,
            volume_nl=decision.volume_nl,
            duration_ms=decision.duration_ms,
            dose_ng=units.div_round(decision.mass_pg, units.PG_PER_NG, "up"),
            dose_ng_per_day=decision.daily_dose_ng,
            overridden=tuple(decision.overridden),
            raw=decision,
            programme=decision.programme,
        )

    def _authorize(self, request: Any, now_ms: int) -> GateDecision:
        decision = self._wrap(self.kernel.authorize(request, now_ms))
        if self.history_lost and decision.allowed:
            # Without the dose history nothing can be judged that raises exposure (SAFE-04, PER-06).
            if request.kind == int(self.k.RequestKind.BOLUS):
                return GateDecision.denied(HISTORY_UNAVAILABLE)
            if decision.dose_ng_per_day > self.kernel.daily_dose_ng and request.kind != int(self.k.RequestKind.MINIMUM_RATE):
                return GateDecision.denied(HISTORY_UNAVAILABLE)
        return decision

    def _override(self, override: tuple[tuple[str, ...], str, str] | None) -> Any:
        if override is None:
            return None
        codes, reason, actor = override
        return self.k.make_override(codes, reason=reason, actor=actor)

    # -- authorisation ----------------------------------------------------------------------------

    def authorize_basal(self, rate_nl_per_h: int, now_ms: int, *, override: tuple[tuple[str, ...], str, str] | None = None) -> GateDecision:
        request = self.k.request_rate_change(rate_nl_per_h, override=self._override(override))
        return self._authorize(request, now_ms)

    def make_programme(self, steps: list[tuple[int, int, int]], anchor_ms: int, *,
                       periodic_boluses: list[tuple[int, int, int]] | tuple = ()) -> Any:
        """A kernel programme at the current concentration.

        :param steps: ``(start_offset_ms, duration_ms, rate_nl_per_h)`` basal steps covering 24 h.
        :param anchor_ms: controller time of the programme's day offset 0, ms.
        :param periodic_boluses: ``(start_offset_ms, duration_ms, extra_rate_nl_per_h)`` boluses given
            daily on top of the steps.
        """
        return self.k.Programme([tuple(s) for s in steps], self.concentration_ug_per_ml, anchor_ms=anchor_ms,
                                periodic_boluses=[tuple(b) for b in periodic_boluses])

    def authorize_programme(self, steps: list[tuple[int, int, int]], now_ms: int, *, anchor_ms: int,
                            override: tuple[tuple[str, ...], str, str] | None = None,
                            periodic_boluses: list[tuple[int, int, int]] | tuple = ()) -> GateDecision:
        """Authorise a flex programme (up to :data:`~cython_ext.vocabulary.MAX_FLEX_STEPS` steps covering 24 h from ``anchor_ms``) with any periodic
        boluses, as a whole: the kernel checks the daily total (basal + periodic) against the 24 h cap."""
        programme = self.make_programme(steps, anchor_ms, periodic_boluses=periodic_boluses)
        request = self.k.request_programme_change(programme, override=self._override(override))
        decision = self._authorize(request, now_ms)
        if decision.allowed:
            return GateDecision(True, decision.reasons, programme.rate_at(now_ms), 0, 0, 0, decision.dose_ng_per_day,
                                decision.overridden, decision.raw, programme)
        return decision

    def authorize_bolus(self, kind: DeliveryKind, volume_nl: int, duration_ms: int, now_ms: int, *,
                        override: tuple[tuple[str, ...], str, str] | None = None) -> GateDecision:
        request = self.k.request_bolus(self._kind(kind), volume_nl, duration_ms, override=self._override(override))
        return self._authorize(request, now_ms)

    def authorize_concentration_change(self, concentration_ug_per_ml: int, rate_nl_per_h: int,
                                       transit_volume_nl: int, transit_duration_ms: int, now_ms: int, *,
                                       override: tuple[tuple[str, ...], str, str] | None = None,
                                       steps: list[tuple[int, int, int]] | None = None,
                                       periodic_boluses: list[tuple[int, int, int]] | tuple = ()) -> GateDecision:
        anchor = 0 if self.kernel.programme is None else self.kernel.programme.anchor_ms
        if steps is None:
            programme = self.k.Programme.continuous(rate_nl_per_h, concentration_ug_per_ml, anchor_ms=anchor)
        else:
            programme = self.k.Programme([tuple(s) for s in steps], concentration_ug_per_ml, anchor_ms=anchor,
                                         periodic_boluses=[tuple(b) for b in periodic_boluses])
            rate_nl_per_h = programme.rate_at(now_ms)
        transit = self.k.BridgePlan(transit_volume_nl, transit_duration_ms) if transit_volume_nl else None
        request = self.k.request_concentration_change(programme, transit, override=self._override(override))
        decision = self._authorize(request, now_ms)
        if decision.allowed:
            return GateDecision(decision.allowed, decision.reasons, rate_nl_per_h, decision.volume_nl,
                                decision.duration_ms, decision.dose_ng, decision.dose_ng_per_day,
                                decision.overridden, decision.raw, programme)
        return decision

    def authorize_minimum_rate(self, rate_nl_per_h: int, now_ms: int) -> GateDecision:
        if rate_nl_per_h != self.caps.minimum_rate_nl_per_h:
            raise ConfigError("rate_nl_per_h", rate_nl_per_h, f"the prescription's minimum rate {self.caps.minimum_rate_nl_per_h} nL/h")
        return self._authorize(self.k.request_minimum_rate(), now_ms)

    def authorize_discontinue(self, now_ms: int, *, authorised_by: str | None, reason: str,
                              emergency: bool) -> GateDecision:
        authorisation = None
        if authorised_by:
            authorisation = self._override(((self.k.DISCONTINUE_AUTHORISATION,), reason, authorised_by))
        return self._authorize(self.k.request_discontinue(authorisation, emergency=emergency), now_ms)

    def authorize_procedure_stop(self, now_ms: int, *, authorised_by: str | None, reason: str) -> GateDecision:
        """The kernel's ``request_procedure_stop`` with an authorisation naming ``PROCEDURE`` by ``authorised_by``
        (none without one: the kernel refuses ``PROCEDURE_NOT_AUTHORISED``)."""
        authorisation = None
        if authorised_by:
            authorisation = self._override(((self.k.PROCEDURE_AUTHORISATION,), reason, authorised_by))
        return self._authorize(self.k.request_procedure_stop(authorisation), now_ms)

    # -- effects ----------------------------------------------------------------------------------------

    def apply(self, decision: GateDecision, now_ms: int) -> None:
        if decision.raw is None:
            raise ConfigError("decision", decision, "a kernel decision (workflow denials are never applied)")
        self.kernel.apply(decision.raw, now_ms)
        if decision.raw.kind != int(self.k.RequestKind.BOLUS):
            self.programme_since_ms = now_ms

    def record_delivery(self, kind: DeliveryKind, mass_pg: int, start_ms: int, end_ms: int) -> None:
        del start_ms
        if mass_pg <= 0:
            return
        self.kernel.ledger.record(self._kind(kind), mass_pg, end_ms)

    def record_delivery_spread(self, kind: DeliveryKind, mass_pg: int, start_ms: int, end_ms: int,
                               poll_interval_ms: int) -> None:
        """Record drug delivered evenly over ``[start_ms, end_ms]`` as status polls every ``poll_interval_ms``
        would have recorded it, in one call (the kernel's ``Ledger.record_spread``; ms, pg)."""
        self.kernel.ledger.record_spread(self._kind(kind), mass_pg, start_ms, end_ms, poll_interval_ms)

    def note_bolus_start(self, kind: DeliveryKind, at_ms: int) -> None:
        """Count a bolus start the checkpoint missed (a crash after it was sent): lockouts survive restarts."""
        k = self._kind(kind)
        ledger = self.kernel.ledger
        starts = [s for s in ledger.snapshot()["bolus_starts"] if s[1] == k]
        if any(at == at_ms for at, _ in starts):
            return
        newest = ledger.last_bolus_ms(tuple(DeliveryKind))
        ledger.record_bolus_start(k, max(at_ms, newest or 0))

    def orphan_refusals(self, schedule: OrphanSchedule, now_ms: int, *,
                        concentration_ug_per_ml: int | None = None,
                        catheter: list[list[int]] | None = None) -> tuple[str, ...]:
        """The orphan check (:func:`controller.program.orphan_refusals`) against this gate's kernel, at ``now_ms``
        (controller time, ms); ``concentration_ug_per_ml``: a reservoir drug the kernel does not hold yet, µg/mL;
        ``catheter``: the catheter's contents, ``[volume nL, µg/mL]`` tip first, when they decide the tip dose."""
        return program_orphan_refusals(self.k, self.kernel, schedule, now_ms,
                                       concentration_ug_per_ml=concentration_ug_per_ml, catheter=catheter)

    def release_bolus(self, kind: DeliveryKind, mass_pg: int) -> int:
        k = self._kind(kind)
        amount = min(mass_pg, self.kernel.ledger.committed_pg(k))
        if amount > 0:
            self.kernel.ledger.release(k, amount)
        return max(amount, 0)

    def total_24h_ng(self, now_ms: int) -> int:
        return self.kernel.ledger.total_24h_ng(now_ms)

    def cap_ng_per_day(self) -> int:
        return self.kernel.cap_pg() // units.PG_PER_NG

    def plan_taper(self, target_dose_ng_per_day: int, now_ms: int) -> list[tuple[int, int]]:
        return [(s.at_ms, s.dose_ng_per_day) for s in self.kernel.plan_titration(target_dose_ng_per_day, now_ms)]

    def daily_dose_ng(self) -> int:
        return self.kernel.daily_dose_ng

    def note_titration_start_dose(self, dose_ng_per_day: int, now_ms: int) -> None:
        """A confirmed kernel caps change that sets ``titration_start_dose_ng_per_day`` (held 24 h at
        the old value, as every loosened limit is)."""
        caps = self.caps._replace(titration_start_dose_ng_per_day=dose_ng_per_day)
        if caps == self.caps:
            return
        confirmation = self._override(((self.k.CAPS_CHANGE_CONFIRMATION,), "titration-phase starting dose", "therapy"))
        decision = self._authorize(self.k.request_caps_change(caps, confirmation=confirmation), now_ms)
        if decision.allowed:
            self.kernel.apply(decision.raw, now_ms)
            self.caps = caps

    def note_stopped(self, at_ms: int) -> None:
        """Tell the kernel delivery stopped at ``at_ms`` (a STOP reaction, a pump found stopped): the
        stop enters the dose history as the zero dose it was and opens an interruption."""
        self.kernel.note_stopped(max(at_ms, self.kernel.newest_event_ms or at_ms))

    @property
    def interrupted(self) -> bool:
        """Whether an interruption is open in the kernel (a stop or minimum-rate spell not resumed from)."""
        return self.kernel.interruption is not None

    def authorize_resume(self, rate_nl_per_h: int, now_ms: int, *, programme: Any = None) -> GateDecision:
        """Authorise resuming delivery after an interruption (the restart rule): a continuous rate, or
        ``programme`` (a flex or periodic-bolus programme, whose rate now is ``rate_nl_per_h``)."""
        if programme is not None:
            decision = self._authorize(self.k.request_resume(programme=programme), now_ms)
            if decision.allowed:
                return GateDecision(True, decision.reasons, programme.rate_at(now_ms), 0, 0, 0,
                                    decision.dose_ng_per_day, decision.overridden, decision.raw, programme)
            return decision
        return self._authorize(self.k.request_resume(rate_nl_per_h), now_ms)

    def record_recovered(self, kind: DeliveryKind, mass_pg: int, now_ms: int, *, max_rate_nl_per_h: int,
                         earliest_ms: int) -> None:
        """Record delivery found after a restart as late as it can have happened (see ``Ledger.record_latest``).

        :param max_rate_nl_per_h: the highest rate it can have run at, nL/h.
        :param earliest_ms: it cannot have begun before this (the resume point), ms.
        """
        if mass_pg <= 0:
            return
        self.kernel.ledger.record_latest(self._kind(kind), mass_pg, now_ms, max_rate_nl_per_h=max(1, max_rate_nl_per_h),
                                         concentration_ug_per_ml=self.concentration_ug_per_ml, earliest_ms=earliest_ms)

    def snapshot(self) -> dict[str, Any]:
        """The kernel's whole state (:meth:`SafetyKernel.state_snapshot`: exact, versioned, checksummed)."""
        return self.kernel.state_snapshot()

    def ledger_snapshot(self) -> Any:
        """``snapshot()["ledger"]`` without building (and checksumming) the rest of the kernel's state."""
        return self.kernel.ledger.snapshot()

    def restore(self, snapshot: dict[str, Any], now_ms: int | None = None) -> None:
        """Rebuild the kernel exactly as it was: dose history, interruption, held caps, ledger, lockouts.

        The caps of the prescription this gate was built with then take effect through the kernel's
        caps change at ``now_ms`` (controller time; default the newest event of the history).

        :raises ConfigError: for a malformed, truncated or altered snapshot (the caller must then refuse
            increases and boluses and keep the current rate: see :meth:`restore_degraded`).
        """
        prescribed = self.caps  # from the prescription in effect now, which may be a new one
        self.kernel = self.k.SafetyKernel.from_snapshot(snapshot, None, self.envelope)
        self.caps = self.kernel.caps
        self.programme_since_ms = snapshot.get("therapy_start_ms") or 0
        self.history_lost = False
        # The prescription put in effect at this start rules, through the kernel's caps change: a
        # stricter limit (a new origin's titration cap) at once, a looser one held 24 h at the old
        # value. The titration-phase starting dose is the therapy's record, not the prescription's.
        wanted = prescribed._replace(titration_start_dose_ng_per_day=self.caps.titration_start_dose_ng_per_day)
        if wanted != self.caps:
            now_ms = max(now_ms or 0, self.kernel.newest_event_ms or 0)
            confirmation = self._override(((self.k.CAPS_CHANGE_CONFIRMATION,), "prescription in effect at a restart",
                                           "controller start"))
            decision = self._authorize(self.k.request_caps_change(wanted, confirmation=confirmation), now_ms)
            if not decision.allowed:
                raise ConfigError("prescription", "the prescription in effect",
                                  "caps the kernel accepts over the restored history",
                                  detail=", ".join(decision.reasons))
            self.kernel.apply(decision.raw, now_ms)
            self.caps = wanted

    def restore_degraded(self, concentration_ug_per_ml: int, programme: Any | None, now_ms: int) -> None:
        """The kernel history could not be read back: a fresh kernel holding only the programme in effect.

        It has no dose history, so it could not judge an increase or a bolus: :attr:`history_lost`
        makes the gate refuse both (``HISTORY_UNAVAILABLE``) until a clinician starts again; decreases,
        minimum rate and a discontinue stay possible (SAFE-04, PER-06).
        """
        limits = self.k.library_entry(concentration_ug_per_ml)
        self.kernel = self.k.SafetyKernel(limits, self.caps, self.envelope, self.k.Ledger(), programme=programme,
                                          programme_since_ms=now_ms)
        self.history_lost = True
