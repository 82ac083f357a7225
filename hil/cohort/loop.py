"""The control loop's part in a workflow, on an ideal pump: what the cohort puts under :class:`Therapy`.

:class:`controller.therapy.Therapy` decides (its clinical rules, then the kernel
through :class:`controller.gate.KernelGate`) and hands an allowed decision to the
loop, which programs the pump and, once the pump holds it, applies the decision
to the kernel. :class:`IdealPumpLoop` takes that hand-over for the in-silico
cohort: the pump is ideal (it holds every authorised rate exactly, at once), so
each decision is applied at once and nothing is sent anywhere. It has the
attributes and methods of :class:`controller.loop.ControlLoop` that the
workflows use, with the same meaning (``tests/cohort`` checks the signatures).

The kernel's ledger is fed by the controller's own :class:`controller.accounting.Accounting`
from the ideal pump's counter (the exact volume commanded), before every
workflow (:meth:`poll`) and at the end of every bolus. The loop on a pump
records what each status poll found when the poll ends, every
``poll_interval_ms``; the kernel projects its 24 h cap from where in the window
those parts lie. So :class:`PollSpreadGate` records each reconciliation as the
parts the polls would have recorded (the rate is constant between two
reconciliations, bar a bolus, which is reconciled at its end): every
authorisation sees the 24 h window, its projection, the commitments and the
lockouts that it would see on the pump, with one reconciliation where the loop
has 48 a patient-day. Parts that fall before the window count in no window
from now on and are not recorded.

Units: times ms, volumes nL, rates nL/h, masses pg.
"""

from __future__ import annotations

from typing import Any

from controller.accounting import Accounting, AccountingViews, BolusRun
from controller.alarms import AlarmManager
from controller.commands import ProgramOutcome, ProgramResult
from controller.gate import GateDecision, KernelGate
from controller.loop import LoopConfig, Mode, check_bolus_start
from controller.store import BolusRecord
from cython_ext import units
from cython_ext.errors import StateError
from cython_ext.units import MS_PER_H
from cython_ext.vocabulary import DeliveryKind
from hal.clock import Clock


class PollSpreadGate:
    """The patient's gate as :class:`~controller.accounting.Accounting` sees it in the cohort.

    Delivery between two reconciliations is recorded in parts, one at the end of each
    ``poll_interval_ms`` slot it covers (as the loop's status polls would have recorded it),
    each in proportion to its time; parts at or before the 24 h window's edge are dropped.
    Everything else is the gate's own.

    :param gate: the patient's kernel gate.
    :param poll_interval_ms: the loop's time between status polls, ms.
    """

    def __init__(self, gate: KernelGate, poll_interval_ms: int) -> None:
        self._gate = gate
        self._interval_ms = poll_interval_ms

    def __getattr__(self, name: str) -> Any:
        return getattr(self._gate, name)

    def record_delivery(self, kind: DeliveryKind, mass_pg: int, start_ms: int, end_ms: int) -> None:
        """Record ``mass_pg`` delivered evenly over ``[start_ms, end_ms]``, in parts at the poll times (one kernel call)."""
        self._gate.record_delivery_spread(kind, mass_pg, start_ms, end_ms, self._interval_ms)


class IdealPumpLoop(AccountingViews):
    """The loop's side of the workflows for one patient, on an ideal pump (no HAL, no store).

    :param gate: the patient's kernel gate.
    :param alarms: the patient's alarm manager.
    :param config: the loop parameters (:func:`controller.assembly.loop_config`).
    :param clock: the cohort's clock (controller time).
    """

    #: The ideal pump's commands are never refused by the orphan check (the cohort has no controller
    #: death to bound); the workflows read it when a change was not verified.
    orphan_refused: tuple[str, ...] = ()

    def __init__(self, gate: KernelGate, alarms: AlarmManager, config: LoopConfig, clock: Clock) -> None:
        self.gate = gate
        self.alarms = alarms
        self.config = config
        self.clock = clock
        self.accounting = Accounting(PollSpreadGate(gate, config.poll_interval_ms), lambda event, **payload: None)
        self.mode = Mode.IDLE
        self.basal_rate_nl_per_h = 0
        self.programme: Any = None
        self.bolus: BolusRun | None = None
        #: Never set: a cohort refills at the concentration in use (no concentration-change transit).
        self.transit: None = None
        self.session_open: str | None = None
        self.therapy_state: dict[str, Any] = {}
        #: Bolus records in request order (the loop keeps them in its store).
        self.boluses: list[BolusRecord] = []
        self._pumped_numerator = 0  # exact volume pumped since implant, nL x ms/h
        self._pumped_ms = 0
        self._reconciled_ms = 0

    # -- views (as ControlLoop) --------------------------------------------------------------------

    def now_ms(self) -> int:
        """Controller time, ms."""
        return self.clock.monotonic_ms()

    def interruption_ms(self) -> int:
        """How long delivery has been interrupted, ms: never, on an ideal pump."""
        return 0

    def rate_nl_per_h(self) -> int:
        """The rate the pump runs now (basal plus a running bolus), nL/h."""
        if self.mode is not Mode.RUNNING:
            return 0
        return self.basal_rate_nl_per_h + (self.bolus.extra_rate_nl_per_h if self.bolus is not None else 0)

    # -- the ideal pump and the ledger ---------------------------------------------------------------

    def _pump_until(self, t_ms: int) -> None:
        """Count what the pump pushed up to ``t_ms`` at the rate it runs, and accrue it by kind."""
        if t_ms < self._pumped_ms:
            raise StateError(f"time went back: {t_ms} ms < {self._pumped_ms} ms")
        rate = self.rate_nl_per_h()
        self._pumped_numerator += rate * (t_ms - self._pumped_ms)
        self._pumped_ms = t_ms
        self.accounting.accrue(t_ms, rate, bolus=self.bolus, running=self.mode is Mode.RUNNING,
                               minimum_rate=False, programme=self.programme)

    def _reconcile(self, t_ms: int) -> None:
        if t_ms == self._reconciled_ms:
            return  # nothing pumped since: nothing to record
        self._pump_until(t_ms)
        self.accounting.reconcile(self._pumped_numerator // MS_PER_H, t_ms, self._reconciled_ms, self.bolus)
        self._reconciled_ms = t_ms

    def poll(self) -> None:
        """Bring the kernel's ledger up to now (the workflows call it before a refill; the cohort before each)."""
        if self.mode is not Mode.IDLE:
            self._reconcile(self.now_ms())

    def end_bolus_if_due(self) -> BolusRun | None:
        """End a bolus whose time is up: reconcile at its end, release what remains committed, back to basal.

        :return: the bolus that ended, or None.
        """
        run = self.bolus
        if run is None or run.end_ms > self.now_ms():
            return None
        self._reconcile(run.end_ms)
        self.bolus = None
        if run.committed_pg:
            self.gate.release_bolus(run.kind, run.committed_pg)
        return run

    # -- therapy changes (each from an authorised decision, as ControlLoop) ----------------------------

    def _committed(self, rate_nl_per_h: int) -> ProgramOutcome:
        return ProgramOutcome(ProgramResult.COMMITTED, rate_nl_per_h, detail="ideal pump")

    def start_therapy(self, concentration_ug_per_ml: int, fill_nl: int, decision: GateDecision,
                      *, catheter_primed: bool) -> ProgramOutcome:
        """First start after implant: the reservoir filled, the authorised starting rate running."""
        if self.mode is not Mode.IDLE:
            raise StateError(f"therapy already started (mode {self.mode.value})")
        now = self.now_ms()
        acc = self.accounting
        acc.start(fill_nl, concentration_ug_per_ml, self.clock.utc_now(), dead_volume_nl=self.config.dead_volume_nl,
                  catheter_primed=catheter_primed)
        acc.last_counter_nl = self._pumped_numerator // MS_PER_H
        acc.accrual_ms = self._pumped_ms = self._reconciled_ms = now
        self.gate.apply(decision, now)
        self.mode = Mode.RUNNING
        self.basal_rate_nl_per_h = decision.rate_nl_per_h
        return self._committed(decision.rate_nl_per_h)

    def change_basal(self, decision: GateDecision) -> ProgramOutcome:
        """A new authorised basal rate."""
        if self.mode is not Mode.RUNNING:
            raise StateError(f"no therapy running (mode {self.mode.value})")
        now = self.now_ms()
        self._pump_until(now)
        self.gate.apply(decision, now)
        self.basal_rate_nl_per_h = decision.rate_nl_per_h
        self.programme = None
        return self._committed(decision.rate_nl_per_h)

    def start_bolus(self, kind: DeliveryKind, decision: GateDecision, duration_ms: int) -> BolusRecord | None:
        """An authorised bolus as an extra rate for ``duration_ms`` (the loop's rounding: it ends by time)."""
        check_bolus_start(self, kind, duration_ms)
        now = self.now_ms()
        self._pump_until(now)
        volume_nl = decision.volume_nl
        extra = -(-volume_nl * MS_PER_H // duration_ms)
        record = BolusRecord(bolus_id=f"{kind.label}-{len(self.boluses) + 1}", kind=kind.label,
                             dose_ng=decision.dose_ng, volume_nl=volume_nl, status="running", requested_ms=now,
                             started_ms=now)
        self.bolus = BolusRun(record.bolus_id, kind, decision.dose_ng, volume_nl, extra, now,
                              now + -(-volume_nl * MS_PER_H // extra),
                              committed_pg=units.mass_pg_for_volume(volume_nl, self.concentration_ug_per_ml))
        self.gate.apply(decision, now)
        self.boluses.append(record)
        return record

    def stop_bolus(self, why: str) -> None:
        """Stop a running bolus now (a refill session opens): what ran so far counts."""
        del why
        run = self.bolus
        if run is not None:
            self.bolus = BolusRun(run.bolus_id, run.kind, run.dose_ng, run.volume_nl, run.extra_rate_nl_per_h,
                                  run.start_ms, self.now_ms(), run.attributed_nl, run.committed_pg)
            self.end_bolus_if_due()

    def set_reservoir(self, fill_nl: int, concentration_ug_per_ml: int) -> None:
        """A refill: the reservoir now holds ``fill_nl`` at ``concentration_ug_per_ml``."""
        self.poll()
        self._record_fill(fill_nl, concentration_ug_per_ml)

    def checkpoint(self, *, durable: bool = False) -> None:
        """Nothing to save: a cohort run keeps no resume point (it is not restarted)."""
        del durable

    def resume_at_minimum_rate(self, reason: str) -> bool:
        """Never needed: the ideal pump never stops on a fault, so there is no stop to leave (returns False)."""
        del reason
        return False

    def commit_journal(self, what: str) -> None:
        """Nothing to commit: a cohort run keeps no journal."""
        del what
