"""One chunk of a cohort: N patients under one policy, real decisions over a vectorised plant.

Per patient, the decisions are the firmware's: a :class:`controller.gate.KernelGate`
over the compiled kernel, built from the patient's prescription as
:func:`controller.assembly.build_controller` builds it, and the workflows of
:class:`controller.therapy.Therapy` (implant with priming, titration, clinician
boluses, refills) over an :class:`~hil.cohort.loop.IdealPumpLoop`. Between
decisions the patients are one :class:`sim.cohort_plant.CohortPlant`, stepped
hourly for all of them at once; the pump is ideal, so what it pushes each hour
is the authorised rate, plus any bolus, exactly. The catheter starts full of
saline (it is primed at implant), so the first dead volume pushed brings no drug
to the tip.

Each day at the policy's hour the clinician sees every patient: the policy
(:meth:`~hil.cohort.policy.TitrationPolicy.choose`) says, for all patients at
once, who needs a refill, a decrease, an increase or a bolus, and only those
patients' workflows run, in that order, after their ledger is brought up to date.
Every workflow result is kept (action, allowed, reason codes), so the refusals by
reason code are the kernel's and the workflows' own.

The result of a chunk depends only on its patients, its policy and its days
(each patient's plant matrices are computed alone, see :class:`CohortPlant`), so
a cohort gives the same figures however it is split and wherever chunks run.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import numpy as np

from controller.alarms import AlarmManager
from controller.assembly import ControllerSettings, loop_config
from controller.gate import KernelGate
from controller.loop import LoopConfig
from controller.patient import PatientRecord, ScreeningDose
from controller.prescription import Prescription
from controller.therapy import PAEDIATRIC_FIRST_TEST_DOSE_UG, SCREENING_SEQUENCE_UG, Therapy, WorkflowResult
from cython_ext.errors import ConfigError, StateError
from cython_ext.units import H_PER_DAY, MS_PER_DAY, MS_PER_H, NG_PER_UG, NL_PER_ML, PG_PER_NG
from cython_ext.vocabulary import Origin
from hil.cohort.loop import IdealPumpLoop
from hil.cohort.policy import TitrationPolicy
from hal.clock import NS_PER_MS, Clock
from sim.clock import DEFAULT_EPOCH_UTC, VirtualClock
from sim.cohort_plant import CohortPlant

#: Lot recorded for the cohort's refills.
REFILL_LOT = "cohort"


class ChunkClock(Clock):
    """A chunk's controller time: whole ms, one thread, moved only by the chunk's hour loop.

    Reads as a :class:`~sim.clock.VirtualClock` from the same origin at the same time would
    (monotonic ns, ms, and UTC), without its lock and conversions: the patients of a chunk read
    it about 60 times a patient-day.

    :param start_utc: the wall time at monotonic zero.
    """

    def __init__(self, start_utc: datetime = DEFAULT_EPOCH_UTC) -> None:
        if start_utc.tzinfo is None:
            raise ValueError("start_utc must be timezone-aware")
        self._origin_utc = start_utc
        self._ms = 0
        self._utc = start_utc

    def monotonic_ns(self) -> int:
        """Controller time, ns."""
        return self._ms * NS_PER_MS

    def monotonic_ms(self) -> int:
        """Controller time, ms."""
        return self._ms

    def utc_now(self) -> datetime:
        """The start wall time plus the time elapsed."""
        return self._utc

    def advance_to_ms(self, t_ms: int) -> None:
        """Move to ``t_ms`` (ms, never backwards)."""
        if t_ms < self._ms:
            raise StateError(f"time went back: {t_ms} ms < {self._ms} ms")
        if t_ms > self._ms:
            self._ms = t_ms
            self._utc = self._origin_utc + timedelta(milliseconds=t_ms)

    def sleep(self, seconds: float) -> None:
        """Refused: nothing in a chunk waits (the cohort's loop does not sleep; only its hour loop moves time)."""
        raise StateError(f"sleep({seconds!r}) on a cohort chunk's clock: its time moves only with the hour loop")


@dataclass(frozen=True)
class ChunkSpec:
    """What one chunk runs (picklable: it travels to worker processes and Dask workers).

    :ivar first_index: index of its first patient in the population.
    :ivar origins: each patient's origin (``Origin`` values), shape (N,).
    :ivar parameters: every :class:`~sim.patient.PatientParameters` field, arrays of shape (N,).
    :ivar policy: the titration policy.
    :ivar prescriptions: the prescription each origin starts from.
    :ivar days: days to run.
    :ivar pump_rate_envelope_nl_per_h: the pump's lowest and highest rate, nL/h (bounds the kernel).
    """

    first_index: int
    origins: np.ndarray
    parameters: dict[str, np.ndarray]
    policy: TitrationPolicy
    prescriptions: dict[Origin, Prescription]
    days: int
    pump_rate_envelope_nl_per_h: tuple[int, int]


class Decision(NamedTuple):
    """One workflow result of one patient (a named tuple: a chunk makes and ships some 16 a patient).

    :ivar t_ms: controller time, ms from the cohort's start.
    :ivar action: the workflow (``implant``, ``titrate``, ``priming_bolus``, ``clinician_bolus``, ``refill``).
    :ivar allowed: whether it was carried out.
    :ivar reasons: reason codes (the kernel's and the workflow's).
    :ivar dose_ug_per_day: the daily dose prescribed after it, µg/day.
    """

    t_ms: int
    action: str
    allowed: bool
    reasons: tuple[str, ...]
    dose_ug_per_day: float


@dataclass
class PatientOutcome:
    """What happened to one patient under one policy (one row of ``patients.csv``).

    :ivar patient: index in the population.
    :ivar policy: the policy's name.
    :ivar origin: the patient's origin.
    :ivar days_to_target: first visit day with the score at or below the target (None: never).
    :ivar dose_at_target_ug_per_day: the daily dose then, µg/day.
    :ivar final_dose_ug_per_day: the daily dose at the end, µg/day.
    :ivar final_ashworth: the Modified Ashworth score at the end.
    :ivar overdose_days: days with any overdose flag.
    :ivar withdrawal_days: days with any withdrawal flag.
    :ivar severe_withdrawal_days: days with severe withdrawal.
    :ivar peak_overdose: highest overdose level (0-2).
    :ivar peak_withdrawal: highest withdrawal level (0-2).
    :ivar increases: allowed dose increases.
    :ivar decreases: allowed dose decreases.
    :ivar boluses: clinician boluses given.
    :ivar refusals: workflow results that were refused.
    :ivar refill_days: day of each refill (fractional days from the start).
    :ivar delivered_ug: drug that reached the catheter tip, µg.
    :ivar decisions: every workflow result, in order.
    """

    patient: int
    policy: str
    origin: str
    days_to_target: int | None = None
    dose_at_target_ug_per_day: float | None = None
    final_dose_ug_per_day: float = 0.0
    final_ashworth: float = 0.0
    overdose_days: int = 0
    withdrawal_days: int = 0
    severe_withdrawal_days: int = 0
    peak_overdose: int = 0
    peak_withdrawal: int = 0
    increases: int = 0
    decreases: int = 0
    boluses: int = 0
    refusals: int = 0
    refill_days: list[float] = field(default_factory=list)
    delivered_ug: float = 0.0
    decisions: list[Decision] = field(default_factory=list)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled with its decisions as plain tuples (a chunk's results go to the parent process or a Dask
        client: pickling some 40 000 named tuples one object at a time was most of that cost)."""
        state = dict(self.__dict__)
        state["decisions"] = [tuple(d) for d in self.decisions]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state["decisions"] = [tuple.__new__(Decision, d) for d in state["decisions"]]
        self.__dict__.update(state)

    @property
    def refill_intervals_days(self) -> list[float]:
        """Days from implant to the first refill, then between refills."""
        if not self.refill_days:
            return []
        return list(np.diff([0.0, *self.refill_days]))


#: How long the effective screening test dose of every cohort patient worked, ms (under 8 h: the
#: starting dose is twice the test dose).
SCREENING_EFFECT_MS = 6 * MS_PER_H


def screened_record(prescription: Prescription) -> PatientRecord:
    """The patient record of a cohort patient: screened, the first test dose of the ladder effective.

    The test dose (50 µg, 25 µg for a child) was given by lumbar puncture before the cohort's
    time 0; its effect lasted :data:`SCREENING_EFFECT_MS`, so the record allows a start at twice it
    (the prescription's starting dose must be no more, or the implant is refused).
    """
    rx = prescription
    first = PAEDIATRIC_FIRST_TEST_DOSE_UG if rx.patient.origin is Origin.PAEDIATRIC else SCREENING_SEQUENCE_UG[0]
    return PatientRecord(rx.patient.patient_id, rx.patient.origin,
                         screening=[ScreeningDose(0, first, True, SCREENING_EFFECT_MS)])


def check_startable(prescriptions: dict[Origin, Prescription], pump_rate_envelope_nl_per_h: tuple[int, int]) -> None:
    """Refuse, before anything runs, a prescription whose starting dose the cohort's record does not allow.

    Each cohort patient is a screened responder to the first test dose (:func:`screened_record`); the
    controller's own rule (:meth:`controller.therapy.Therapy.record_start_dose`) then allows a start at
    twice it. A prescription starting above that would have every implant refused
    (``IMPLANT_DOSE_ABOVE_RECORD``): a cohort that models no therapy, so it is bad input.

    :param prescriptions: the prescription each origin starts from.
    :param pump_rate_envelope_nl_per_h: the pump's lowest and highest rate, nL/h.
    :raises ConfigError: naming ``prescriptions.<origin>``, its starting dose (µg/day) and the allowance.
    """
    for origin, rx in prescriptions.items():
        therapy = CohortPatient(0, rx, VirtualClock(), pump_rate_envelope_nl_per_h).therapy
        allowed_ng, rule, _ = therapy.record_start_dose()
        dose_ng = rx.programme.steps[0].dose_ng_per_day
        if allowed_ng is None or dose_ng > allowed_ng:
            raise ConfigError(f"prescriptions.{origin.value}", dose_ng / NG_PER_UG,
                              f"a starting dose of at most {(allowed_ng or 0) / NG_PER_UG:g} µg/day ({rule})",
                              detail="every cohort patient is a screened responder to the first test dose")


class _NullJournal:
    """Alarm events of a cohort patient go nowhere: the decisions are the record."""

    def record_alarm(self, **event: Any) -> None:
        del event


class _Recorder:
    """The sink of a patient's workflow results: each with the loop's time (ms), and the refills carried out.

    Its own object, not a method of the patient, so the patient's objects hold no reference cycle and
    are freed as soon as a chunk is done with them (a chunk runs without the cyclic collector).
    """

    def __init__(self, loop: IdealPumpLoop) -> None:
        self._loop = loop
        self.results: list[tuple[int, WorkflowResult]] = []
        self.refills = 0

    def __call__(self, result: WorkflowResult) -> None:
        self.results.append((self._loop.now_ms(), result))
        self.refills += result.action == "refill" and result.allowed


class CohortPatient:
    """One patient's controller side: kernel gate, alarms, ideal-pump loop and workflows.

    :param index: index in the population.
    :param prescription: the prescription the patient starts from.
    :param clock: the chunk's clock (controller time).
    :param pump_rate_envelope_nl_per_h: the pump's lowest and highest rate, nL/h.
    :param settings: rig and clinic timing (default :class:`ControllerSettings`, as ``itb run``).
    :param config: the loop parameters, when the caller has built them already (they must be
        :func:`~controller.assembly.loop_config` of ``prescription`` and ``settings``; a chunk builds them once
        per prescription).
    """

    def __init__(self, index: int, prescription: Prescription, clock: Clock,
                 pump_rate_envelope_nl_per_h: tuple[int, int], settings: ControllerSettings | None = None, *,
                 config: LoopConfig | None = None) -> None:
        settings = settings or ControllerSettings()
        rx = prescription
        self.index = index
        self.prescription = rx
        low, high = pump_rate_envelope_nl_per_h
        caps = {**rx.kernel_caps_kwargs(), "restart_threshold_ms": settings.restart_titration_after_ms}  # as assembly
        self.gate = KernelGate(rx.concentration_ug_per_ml, caps, min_rate_nl_per_h=low, max_rate_nl_per_h=high)
        self.alarms = AlarmManager(clock, _NullJournal())
        config = config if config is not None else loop_config(rx, settings)
        self.loop = IdealPumpLoop(self.gate, self.alarms, config, clock)
        self.therapy = Therapy(self.loop, self.gate, screened_record(rx),
                               dead_volume_nl=config.dead_volume_nl, reservoir_capacity_nl=config.reservoir_capacity_nl,
                               refill_tolerance_pct=settings.refill_tolerance_pct,
                               restart_titration_after_ms=settings.restart_titration_after_ms,
                               priming_duration_ms=settings.priming_duration_ms)
        self._recorder = _Recorder(self.loop)
        self.therapy.sinks.append(self._recorder)

    @property
    def results(self) -> list[tuple[int, WorkflowResult]]:
        """Every workflow result at its controller time (ms), in order."""
        return self._recorder.results

    @property
    def refills(self) -> int:
        """Refills carried out."""
        return self._recorder.refills

    def implant(self) -> WorkflowResult:
        """Fill the pump, start the prescribed dose and prime the catheter (as ``Controller.implant``)."""
        rx = self.prescription
        return self.therapy.implant(rx.concentration_ug_per_ml, rx.pump.reservoir_volume_nl,
                                    dose_ng_per_day=rx.programme.steps[0].dose_ng_per_day, prime=True)

    def visit(self, policy: TitrationPolicy, *, refill_removed_nl: int | None, decrease: bool, increase: bool,
              bolus: bool) -> None:
        """One visit: the ledger brought up to now, then what the policy asks (:func:`ask`)."""
        self.loop.poll()
        ask(self.therapy, self.prescription, policy, refill_removed_nl=refill_removed_nl, decrease=decrease,
            increase=increase, bolus=bolus)


def ask(therapy: Therapy, prescription: Prescription, policy: TitrationPolicy, *, refill_removed_nl: int | None,
        decrease: bool, increase: bool, bolus: bool) -> None:
    """What a clinician asks of the workflows at a visit, in order: a refill, a dose change, a bolus.

    The same function serves the cohort and the full controller (:mod:`hil.cohort.reference`).

    :param therapy: the patient's workflows.
    :param prescription: the prescription (the refill's volume and drug).
    :param refill_removed_nl: the volume drawn out for a refill, nL (None: no refill).
    """
    if refill_removed_nl is not None:
        therapy.refill(removed_nl=refill_removed_nl, added_nl=prescription.pump.reservoir_volume_nl,
                       concentration_ug_per_ml=prescription.concentration_ug_per_ml, lot=REFILL_LOT)
    dose = therapy.prescribed_dose_ng_per_day
    if decrease:
        therapy.titrate(policy.decreased_dose_ng_per_day(dose), reason=f"policy {policy.name}: decrease")
    elif increase:
        therapy.titrate(policy.increased_dose_ng_per_day(dose), reason=f"policy {policy.name}: increase")
    if bolus:
        therapy.clinician_bolus(policy.bolus_ng, policy.bolus_duration_ms)


def _bolus_volume_by_hour(start_ms: int, end_ms: int, extra_nl_per_h: int) -> dict[int, float]:
    """The extra volume a bolus pushes in each plant hour it touches, nL."""
    out = {}
    hour = start_ms // MS_PER_H
    while hour * MS_PER_H < end_ms:
        overlap = min(end_ms, (hour + 1) * MS_PER_H) - max(start_ms, hour * MS_PER_H)
        out[hour] = extra_nl_per_h * overlap / MS_PER_H
        hour += 1
    return out


def decisions(results: list[tuple[int, WorkflowResult]]) -> list[Decision]:
    """Workflow results at their times as :class:`Decision` records, each with the dose prescribed after it."""
    out = []
    dose = 0.0
    for t_ms, result in results:
        if result.action in ("implant", "titrate") and result.allowed:
            dose = result.values["dose_ug_per_day"]
        out.append(Decision(t_ms, result.action, result.allowed, tuple(result.reasons), dose))
    return out


def _summarise(patient: CohortPatient, outcome: PatientOutcome) -> None:
    """Fill ``outcome`` from the patient's workflow results."""
    outcome.decisions = decisions(patient.results)
    dose = 0.0
    for d in outcome.decisions:
        before, dose = dose, d.dose_ug_per_day
        if not d.allowed:
            outcome.refusals += 1
        elif d.action == "titrate":
            outcome.increases += dose > before
            outcome.decreases += dose < before
        elif d.action == "clinician_bolus":
            outcome.boluses += 1
        elif d.action == "refill":
            outcome.refill_days.append(d.t_ms / MS_PER_DAY)
    outcome.final_dose_ug_per_day = patient.therapy.prescribed_dose_ng_per_day / NG_PER_UG


def _next_visit_hour(hour: int, decision_hour: int) -> int:
    """The first hour after ``hour`` at the policy's visit hour of day, h from the start."""
    visit = hour - hour % H_PER_DAY + decision_hour
    return visit if visit > hour else visit + H_PER_DAY


def _next_bolus_end_hour(bolus_end_ms: np.ndarray) -> float:
    """The first hour at whose start a running bolus is over (inf: none runs), h from the start.

    Every bolus still running ends after the hour being handled (those due have just been ended).
    """
    soonest = bolus_end_ms.min(initial=np.inf)
    return math.inf if soonest == np.inf else -(-int(soonest) // MS_PER_H)


@contextmanager
def _no_automatic_gc() -> Iterator[None]:
    """Suspend the cyclic garbage collector's automatic passes, restoring its state after.

    A chunk keeps tens of container objects a patient alive for its whole run and allocates
    millions of short-lived ones, which reference counting frees; the automatic passes mostly
    re-scan the live ones (about 14 % of a chunk's CPU time). A chunk makes no cyclic garbage
    (a patient's objects hold no cycle: see :class:`_Recorder`; ``tests/cohort`` checks it), so
    reference counting frees the patients as it returns.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def run_chunk(spec: ChunkSpec) -> list[PatientOutcome]:
    """Run one chunk to its end (without the garbage collector's automatic passes: :func:`_no_automatic_gc`).

    :return: one :class:`PatientOutcome` per patient, in order.
    """
    with _no_automatic_gc():
        return _run_chunk(spec)


def _run_chunk(spec: ChunkSpec) -> list[PatientOutcome]:
    policy = spec.policy
    n = len(spec.origins)
    clock = ChunkClock()
    plant = CohortPlant(spec.parameters)
    settings = ControllerSettings()
    configs = {origin: loop_config(rx, settings) for origin, rx in spec.prescriptions.items()}
    patients = []
    for i, origin in enumerate(spec.origins.tolist()):
        origin = Origin(origin)
        patients.append(CohortPatient(spec.first_index + i, spec.prescriptions[origin], clock,
                                      spec.pump_rate_envelope_nl_per_h, settings, config=configs[origin]))
    rxs = [p.prescription for p in patients]
    concentration = np.array([rx.concentration_ug_per_ml for rx in rxs], dtype=float)
    basal_nl_per_h = np.zeros(n)
    saline_nl = np.array([rx.pump.dead_volume_nl for rx in rxs], dtype=float)
    saline_left = bool(saline_nl.any())
    reservoir_nl = np.zeros(n)
    bolus_end_ms = np.full(n, np.inf)
    extra_nl: dict[int, np.ndarray] = {}
    next_increase_h = np.zeros(n)
    delivered_ug = np.zeros(n)
    outcomes = [PatientOutcome(spec.first_index + i, policy.name, str(origin)) for i, origin in enumerate(spec.origins)]

    def after_change(i: int, t_ms: int) -> None:
        loop = patients[i].loop
        basal_nl_per_h[i] = loop.basal_rate_nl_per_h
        run = loop.bolus
        if run is not None and run.start_ms == t_ms and bolus_end_ms[i] == np.inf:
            bolus_end_ms[i] = run.end_ms
            for hour, volume in _bolus_volume_by_hour(run.start_ms, run.end_ms, run.extra_rate_nl_per_h).items():
                extra_nl.setdefault(hour, np.zeros(n))[i] += volume

    total_h = spec.days * H_PER_DAY
    hour = 0
    while hour < total_h:
        t_ms = hour * MS_PER_H
        clock.advance_to_ms(t_ms)
        for i in np.flatnonzero(bolus_end_ms <= t_ms).tolist():
            patients[i].loop.end_bolus_if_due()
            bolus_end_ms[i] = np.inf
            after_change(i, t_ms)
        day, hour_of_day = divmod(hour, H_PER_DAY)
        if hour_of_day == policy.decision_hour:
            if day == 0:
                for i, patient in enumerate(patients):
                    patient.implant()
                    reservoir_nl[i] = patient.loop.fill_nl
                    next_increase_h[i] = policy.next_increase_h(hour, True)
                    after_change(i, t_ms)
            else:
                state = plant.state()
                for i in np.flatnonzero(state.ashworth <= policy.target_ashworth):
                    if outcomes[i].days_to_target is None:
                        outcomes[i].days_to_target = day
                        outcomes[i].dose_at_target_ug_per_day = patients[i].therapy.prescribed_dose_ng_per_day / NG_PER_UG
                asks = policy.choose(state.ashworth, state.overdose > 0, next_increase_h <= hour, reservoir_nl)
                acting = np.flatnonzero(asks["refill"] | asks["decrease"] | asks["increase"] | asks["bolus"])
                refills, decreases, increases, boluses = (asks[k][acting].tolist()
                                                          for k in ("refill", "decrease", "increase", "bolus"))
                for i, refill_due, decrease, increase, bolus in zip(acting.tolist(), refills, decreases, increases,
                                                                     boluses):
                    patient = patients[i]
                    before = patient.therapy.prescribed_dose_ng_per_day
                    fills = patient.refills
                    patient.visit(policy, refill_removed_nl=int(round(reservoir_nl[i])) if refill_due else None,
                                  decrease=decrease, increase=increase, bolus=bolus)
                    if patient.refills > fills:
                        reservoir_nl[i] = patient.loop.fill_nl
                    if increase and not decrease:
                        raised = patient.therapy.prescribed_dose_ng_per_day > before
                        next_increase_h[i] = policy.next_increase_h(hour, raised)
                    after_change(i, t_ms)
        # Until the next visit or bolus end nothing changes but what the pump pushes: pump those
        # hours here, then step the plant through all of them at once.
        until = min(total_h, _next_visit_hour(hour, policy.decision_hour), _next_bolus_end_hour(bolus_end_ms))
        # An hour with no bolus once no catheter holds saline pushes the basal, all drug: the same
        # figures as the general step, which it skips.
        tips_ug = np.empty((until - hour, n))
        basal_tip_ug = None
        for step, pumped_hour in enumerate(range(hour, until)):
            extra = extra_nl.pop(pumped_hour, None)
            if extra is None and not saline_left:
                if basal_tip_ug is None:
                    basal_tip_ug = basal_nl_per_h * concentration / (PG_PER_NG * NG_PER_UG)
                reservoir_nl -= basal_nl_per_h
                delivered_ug += basal_tip_ug
                tips_ug[step] = basal_tip_ug
                continue
            pumped = basal_nl_per_h + (0.0 if extra is None else extra)
            drug_nl = np.maximum(pumped - saline_nl, 0.0)
            np.maximum(saline_nl - pumped, 0.0, out=saline_nl)
            saline_left = bool(saline_nl.any())
            reservoir_nl -= pumped
            tip_ug = drug_nl * concentration / (PG_PER_NG * NG_PER_UG)
            delivered_ug += tip_ug
            tips_ug[step] = tip_ug
        plant.step_hours(tips_ug)
        hour = until
    state = plant.state()
    for i, (patient, outcome) in enumerate(zip(patients, outcomes)):
        _summarise(patient, outcome)
        outcome.final_ashworth = float(state.ashworth[i])
        outcome.overdose_days = int(plant.overdose_days[i])
        outcome.withdrawal_days = int(plant.withdrawal_days[i])
        outcome.severe_withdrawal_days = int(plant.severe_withdrawal_days[i])
        outcome.peak_overdose = int(plant.peak_overdose[i])
        outcome.peak_withdrawal = int(plant.peak_withdrawal[i])
        outcome.delivered_ug = float(delivered_ug[i])
    return outcomes
