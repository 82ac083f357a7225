"""Clinical workflows on top of the control loop: screening, implant, titration, boluses, refill, taper.

Each workflow checks its own clinical rules, asks the kernel (through
:class:`~controller.gate.Gate`), programs the pump through the loop (atomic:
the old programme keeps running on any failure), and only then has the kernel
apply the decision. Every outcome is a :class:`WorkflowResult` carrying
machine-readable reason codes: the kernel's own (``TITRATION_CAP_EXCEEDED``,
``BOLUS_LOCKOUT``...) and the workflow's (:class:`Why`).

Rules (itb-clinical §1-§3, safety-requirements §5):

* **Screening**: test doses 50, then 75, then 100 µg, at least 24 h apart, each
  after an inadequate one; no response to 100 µg means not a candidate. The
  starting daily dose is twice the effective dose, or equal to it when the
  effect lasted more than 8 h.
* **Implant**: what the catheter's dead volume holds is stated (itb-clinical
  §1.3, §5.3; BOL-06; a clinical safety review's decision, issue #9). Saline (a
  new catheter, the default): the priming bolus fills it; without it the
  catheter stays saline, CATHETER_NOT_PRIMED is raised and the implant is not
  complete. Drug (kept from a replaced pump, or filled by the surgeon): no
  priming, which would push a whole dead volume of drug into the patient.
* **Titration**: within the origin cap, at most once per 24 h (the kernel).
  No increase (a titration, or a flex programme with a larger daily total)
  while the catheter holds saline ahead of the drug (no override):
  the dose in effect has not reached the patient, so its lack of effect says
  nothing and a raise would arrive on top of it; decreases stay allowed. Nor
  for 24 h after the saline is out (§1.3's first 24 h, of delivery at the tip).
  Restarting after an interruption longer than the configured time begins at
  the titration (starting) dose, not the old maintenance dose.
* **Boluses**: refused while a high-priority alarm is active or a refill or
  programming session is open (BOL-03); lockout, count, size and the 24 h cap
  are the kernel's. A bolus is recorded before it is sent and never re-sent.
* **Refill**: volumes removed and added are recorded; a mismatch beyond
  tolerance raises a latching alarm a clinician must acknowledge; a
  concentration change is authorised *before* the new drug is committed; the
  old drug still in the catheter then crosses it at the volume rate that gives
  the new dose at the old concentration (the transit), however long that takes,
  and counted boluses wait until it has left the tip. An unfinished session
  raises an alarm and leaves the last committed programme running.
* **A missed refill** (RES-05: the minimum rate at the empty threshold, or the
  stop at confirmed empty) is ended by the refill itself, at the old
  concentration or a new one, and therapy resumes there and then by the restart
  rule (§1.6, §3.3): the old dose after an interruption shorter than the
  threshold, the titration-phase starting dose after a longer one. Not at a
  later acknowledgement: the clinician is present at the refill, the refill
  cures the one cause, and every hour more at the minimum rate or stopped
  deepens the withdrawal (§3.2); the latched alarms still wait for an
  acknowledgement. After the confirmed-empty stop the catheter still holds the
  old drug to the tip (the stop came on the *predicted* volume reaching zero,
  and a stopped pump pushes nothing), so a new concentration gets the old
  drug's transit as after the minimum rate; assuming saline there would push
  the old drug at the new drug's volume rate, 4x the dose for 2000 -> 500 µg/mL
  (§5.3). A decision of the clinical safety review (issue #9).
* **Taper and discontinue**: only with authorisation; down at most 20 % every
  2 days (the kernel's plan) to the minimum-rate dose, then stop, unless an
  emergency discontinue is authorised.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable

from controller import reservoir as reservoir_math
from controller.alarms import RESTART_RULE_ALARM_KEY, AlarmCode, Priority, raise_restart_rule_alarm
from controller.audit import Actor, Role
from controller.gate import SCREENING_CONCENTRATION_UG_PER_ML, SCREENING_DURATION_MS, Gate
from controller.loop import ControlLoop, Mode
from controller.patient import History, PatientRecord, ScreeningDose
from cython_ext import units
from cython_ext.vocabulary import COUNTED_BOLUS_KINDS, MAX_FLEX_STEPS, CatheterFill, DeliveryKind, Origin
from cython_ext.errors import ConfigError, StateError
from hal.pump import PumpState

MS_PER_MIN = units.MS_PER_MIN
MS_PER_H = units.MS_PER_H
MS_PER_DAY = units.MS_PER_DAY
NG_PER_UG = units.NG_PER_UG

#: Screening test doses in order, µg (itb-clinical §1.2: 50, then 75, then 100, each after an inadequate one).
SCREENING_SEQUENCE_UG = (50, 75, 100)
#: The first test dose a small (paediatric) patient may have instead, µg; 50 follows it (§1.2 [CCN][JP-LBL]).
PAEDIATRIC_FIRST_TEST_DOSE_UG = 25
#: Minimum time between screening doses, ms.
SCREENING_INTERVAL_MS = MS_PER_DAY
#: Effect lasting longer than this makes the starting dose 1x the test dose, ms.
LONG_EFFECT_MS = 8 * MS_PER_H
#: No increase until this long after the drug first reached the catheter tip, ms (§1.3 "do not raise the dose
#: in the first 24 h"; the kernel's ``NO_INCREASE_AFTER_START_MS`` counts the same 24 h from the pump's start).
NO_INCREASE_AFTER_DRUG_AT_TIP_MS = MS_PER_DAY


class Why(str, enum.Enum):
    """Workflow reason codes (the kernel's codes are passed through unchanged)."""

    HIGH_PRIORITY_ALARM = "HIGH_PRIORITY_ALARM"
    SESSION_OPEN = "SESSION_OPEN"
    NOT_RUNNING = "NOT_RUNNING"
    BOLUS_RUNNING = "BOLUS_RUNNING"
    PATIENT_BOLUS_NOT_CONFIGURED = "PATIENT_BOLUS_NOT_CONFIGURED"
    SCREENING_ORDER = "SCREENING_ORDER"
    SCREENING_INTERVAL = "SCREENING_INTERVAL"
    SCREENING_COMPLETE = "SCREENING_COMPLETE"
    NOT_A_CANDIDATE = "NOT_A_CANDIDATE"
    NO_EFFECTIVE_SCREENING = "NO_EFFECTIVE_SCREENING"
    ALREADY_IMPLANTED = "ALREADY_IMPLANTED"
    PUMP_NOT_VERIFIED = "PUMP_NOT_VERIFIED"
    REFILL_MISMATCH = "REFILL_MISMATCH"
    SESSION_UNFINISHED = "SESSION_UNFINISHED"
    ZERO_ONLY_BY_DISCONTINUE = "ZERO_ONLY_BY_DISCONTINUE"
    NOT_AUTHORISED = "NOT_AUTHORISED"
    NOTHING_TO_RESUME = "NOTHING_TO_RESUME"
    RATE_NOT_REPRESENTABLE = "RATE_NOT_REPRESENTABLE"
    NOT_DURABLE = "NOT_DURABLE"
    REFILL_DISCREPANCY_UNACKNOWLEDGED = "REFILL_DISCREPANCY_UNACKNOWLEDGED"
    PRIMING_REFUSED = "PRIMING_REFUSED"
    IMPLANT_DOSE_ABOVE_RECORD = "IMPLANT_DOSE_ABOVE_RECORD"
    NOT_SCREENED = "NOT_SCREENED"
    CONCENTRATION_TRANSIT = "CONCENTRATION_TRANSIT"
    CATHETER_NOT_PRIMED = "CATHETER_NOT_PRIMED"
    NOTHING_TO_PRIME = "NOTHING_TO_PRIME"
    PROCEDURE_IN_PROGRESS = "PROCEDURE_IN_PROGRESS"
    NO_PROCEDURE = "NO_PROCEDURE"
    PROCEDURE_RESUME_UNVERIFIED = "PROCEDURE_RESUME_UNVERIFIED"


@dataclass(frozen=True)
class WorkflowResult:
    """The outcome of one workflow call.

    :ivar action: workflow name.
    :ivar allowed: True if it was carried out (the pump holds the change, verified).
    :ivar reasons: reason codes (kernel and :class:`Why`).
    :ivar detail: human-readable summary with units.
    :ivar values: numbers for the report (units in the keys).
    """

    action: str
    allowed: bool
    reasons: tuple[str, ...] = ()
    detail: str = ""
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PatientBolusSettings:
    """A patient-activated bolus as prescribed.

    :ivar dose_ng: size, ng.
    :ivar duration_ms: delivery time, ms.
    """

    dose_ng: int
    duration_ms: int


@dataclass(frozen=True)
class SignedDoseOverride:
    """A prescription's signed override of a dose soft limit (PRX-02), journalled with the prescription.

    :ivar code: the kernel's soft-limit code it lifts (``DOSE_ABOVE_SOFT`` or ``DOSE_BELOW_SOFT``).
    :ivar dose_ng_per_day: the dose it was signed for, ng/day: it lifts the limit for no dose further out.
    :ivar reason: the prescriber's reason, with the prescription and field it comes from.
    :ivar prescriber: who signed it.
    """

    code: str
    dose_ng_per_day: int
    reason: str
    prescriber: str

    def covers(self, dose_ng_per_day: int) -> bool:
        """Whether ``dose_ng_per_day`` (ng/day) is no further beyond the soft limit than the signed dose."""
        if self.code == "DOSE_ABOVE_SOFT":
            return dose_ng_per_day <= self.dose_ng_per_day
        return dose_ng_per_day >= self.dose_ng_per_day


#: The loop's therapy-state key of an unacknowledged refill discrepancy (its finding), or None.
REFILL_HOLD_KEY = "refill_discrepancy_unacknowledged"

#: The loop's therapy-state key of an emergency discontinue's withdrawal-risk detail (the alarm it raised), or None.
EMERGENCY_DISCONTINUE_KEY = "emergency_discontinue"

#: High-priority alarms a (re-)priming is not held back by: the conditions it remedies.
#: An implant refused before (IMPLANT_NOT_DONE) is cured by the implant this priming is part of.
PRIMING_REMEDIES = frozenset({AlarmCode.CATHETER_NOT_PRIMED, AlarmCode.WITHDRAWAL_RISK, AlarmCode.IMPLANT_NOT_DONE})

CLINICIAN = Actor("clinician", Role.CLINICIAN)
PATIENT = Actor("patient", Role.PATIENT)


#: The refusal code of the first-24 h rule (the kernel's, reused for the drug at the tip: :meth:`Therapy._first_day_hold`).
FIRST_DAY_REASON = "INCREASE_WITHIN_24H_OF_START"


def _with_first_day(decision: Any, first_day: str | None) -> tuple[str, ...]:
    """The kernel's refusal reasons, with the first-24 h rule's code when ``first_day`` says it holds."""
    reasons = tuple(decision.reasons) if not decision.allowed else ()
    if first_day and FIRST_DAY_REASON not in reasons:
        reasons += (FIRST_DAY_REASON,)
    return reasons


def _first_day_note(decision: Any, first_day: str | None) -> str:
    """The first-24 h rule's explanation for a refusal's detail, unless the kernel's own 24 h refused it too."""
    if not first_day or (not decision.allowed and FIRST_DAY_REASON in decision.reasons):
        return ""
    return f": {first_day}"


class _Checkpointed:
    """A :class:`Therapy` integer kept in the loop's checkpoint, ``loop.therapy_state[key]`` (0 until set).

    :param key: its key in the checkpoint (a stored name: the loop reads it too, and journals keep it).
    :param after_set: called with the therapy and the new value once it is stored, or None.
    """

    def __init__(self, key: str, after_set: Callable[[Therapy, int], None] | None = None) -> None:
        self._key = key
        self._after_set = after_set

    def __get__(self, therapy: Therapy | None, owner: type | None = None) -> Any:
        return self if therapy is None else int(therapy.loop.therapy_state.get(self._key, 0))

    def __set__(self, therapy: Therapy, value: int) -> None:
        therapy.loop.therapy_state[self._key] = int(value)
        if self._after_set is not None:
            self._after_set(therapy, int(value))


class ProcedureKind(str, enum.Enum):
    """A guided procedure the pump must be prepared for (SAFE-05)."""

    MRI = "mri"


#: Whether each procedure kind's pump labelling requires zero flow (True) or lets the minimum rate run (False), when
#: the clinician does not say. MRI: zero. The Prometra labelling requires the pump emptied and programmed to 0.0
#: mg/day before any MRI, since the field can open both valves and dump the reservoir into the patient
#: (itb-clinical §4.2 [PROM-MRI][PROM-MRI20]; safety-requirements §3.3 [S34]); on a SynchroMed the field stalls the
#: motor during the scan anyway (§4.1.4 [FDA-MRI17]), so a minimum rate would not be delivered either, only claimed.
#: A pump whose labelling lets it run through the scan (MedStream is called MRI-compatible, §4.3) is held at the
#: minimum rate when the clinician says so (``zero_rate_required=False``). A PLACEHOLDER needing clinical sign-off.
ZERO_RATE_REQUIRED_BY_KIND = {ProcedureKind.MRI: True}
#: Shortest and longest expected procedure, ms (a scan takes minutes to about an hour; 12 h bounds any one session).
PROCEDURE_DURATION_RANGE_MS = (MS_PER_MIN, 12 * MS_PER_H)
#: The loop's therapy-state key of the procedure in progress (:meth:`Therapy.begin_procedure`), or None.
PROCEDURE_KEY = "procedure"
#: Default time within which the pump's restart after a procedure must be verified (``T_resume``, SAFE-05), ms. See
#: :class:`controller.assembly.ControllerSettings`.
PROCEDURE_RESUME_VERIFY_MS = MS_PER_H


class Therapy:
    """The workflows for one patient and one pump.

    :param loop: the control loop (owns the pump).
    :param gate: the kernel gate (the same one the loop uses).
    :param patient: the patient record (screening doses or the documented prior dose).
    :param dead_volume_nl: catheter and pump dead volume, nL.
    :param reservoir_capacity_nl: reservoir capacity, nL.
    :param refill_tolerance_pct: refill mismatch tolerance, % of the prediction.
    :param restart_titration_after_ms: interruptions longer than this restart at the titration dose, ms.
    :param priming_duration_ms: how long a priming bolus runs, ms.
    :param procedure_resume_verify_ms: ``T_resume``: after a procedure the pump must be verified running (its
        read-back at the commanded rate, its counter advancing) within this, else PROCEDURE_RESUME_FAILED, ms.
    """

    def __init__(
        self,
        loop: ControlLoop,
        gate: Gate,
        patient: PatientRecord,
        *,
        dead_volume_nl: int,
        reservoir_capacity_nl: int,
        refill_tolerance_pct: int = 20,
        restart_titration_after_ms: int = 24 * MS_PER_H,
        priming_duration_ms: int = 30 * 60_000,
        procedure_resume_verify_ms: int = PROCEDURE_RESUME_VERIFY_MS,
    ) -> None:
        self.loop = loop
        self.gate = gate
        self.dead_volume_nl = dead_volume_nl
        self.reservoir_capacity_nl = reservoir_capacity_nl
        self.refill_tolerance_pct = refill_tolerance_pct
        self.restart_titration_after_ms = restart_titration_after_ms
        self.priming_duration_ms = priming_duration_ms
        #: ``T_resume``: the pump's restart after a procedure must be verified within this, ms (SAFE-05).
        self.procedure_resume_verify_ms = procedure_resume_verify_ms
        #: The patient record (screening doses are appended to it as they are given).
        self.patient = patient
        self.patient_bolus: PatientBolusSettings | None = None
        #: Kernel gate for screening test doses (``controller.gate.screening_gate()``); None skips that check.
        self.screening_gate: Gate | None = None
        #: Called with every WorkflowResult (runner, report, journal).
        self.sinks: list[Callable[[WorkflowResult], None]] = []
        #: The prescription's signed overrides of the programme's dose soft limits (set by the assembly).
        self.dose_overrides: tuple[SignedDoseOverride, ...] = ()

    # -- state kept in the loop's checkpoint -----------------------------------------------------------

    #: The daily dose the clinician prescribed last, ng/day (survives restarts).
    prescribed_dose_ng_per_day = _Checkpointed("prescribed_dose_ng_per_day")
    #: The post-implant starting dose, ng/day: where therapy restarts after a long interruption.
    titration_start_dose_ng_per_day = _Checkpointed(
        "titration_start_dose_ng_per_day",
        lambda therapy, value: therapy.gate.note_titration_start_dose(value, therapy.loop.now_ms())
    )

    def _save_patient_bolus(self) -> None:
        pb = self.patient_bolus
        self.loop.therapy_state["patient_bolus"] = None if pb is None else [pb.dose_ng, pb.duration_ms]

    def _update_bolus_reserve(self) -> None:
        """Reservoir worst case: every allowed patient bolus, every day, at the concentration now in the pump."""
        per_day = getattr(getattr(self.gate, "caps", None), "max_boluses_per_day", 0)
        volume = 0
        if self.patient_bolus is not None and self.loop.concentration_ug_per_ml:
            volume = units.volume_nl_for_mass(self.patient_bolus.dose_ng, self.loop.concentration_ug_per_ml,
                                              rounding="up")
        self.loop.therapy_state["patient_bolus_nl_per_day"] = volume * per_day

    def restore_state(self, *, concentration_changed: bool = False) -> None:
        """Reload workflow state after :meth:`ControlLoop.recover`.

        The alarm manager has already restored what the journal holds (:meth:`controller.assembly.Controller.recover`);
        the conditions kept in the therapy state, which is durable with the resume point, are raised again here if
        the journal did not bring them back: a refill discrepancy no clinician had acknowledged (its hold on boluses
        and increases, RES-03, outlives the process), a restart-rule alarm no clinician has acknowledged (ALM-03) and
        an emergency discontinue's withdrawal risk.

        :param concentration_changed: the recovery completed a refill's concentration change the
            controller died inside: the bolus reserve is worked out again at the new concentration.
        """
        pb = self.loop.therapy_state.get("patient_bolus")
        self.patient_bolus = None if not pb else PatientBolusSettings(int(pb[0]), int(pb[1]))
        if concentration_changed:
            self._update_bolus_reserve()
        self._restore_procedure()
        stopped = self.loop.therapy_state.get(EMERGENCY_DISCONTINUE_KEY)
        alarms = self.loop.alarms
        if stopped and self.loop.mode is Mode.DISCONTINUED and not alarms.is_active(AlarmCode.WITHDRAWAL_RISK):
            # The patient is still without the drug an emergency discontinue stopped: the alarm outlives the process.
            alarms.raise_alarm(AlarmCode.WITHDRAWAL_RISK, detail=f"{stopped} (held across a restart)")
        restarted = self.loop.therapy_state.get(RESTART_RULE_ALARM_KEY)
        if restarted and not alarms.is_active(AlarmCode.RESTARTED_AT_STARTING_DOSE):
            alarms.raise_alarm(AlarmCode.RESTARTED_AT_STARTING_DOSE, detail=f"{restarted} (held across a restart)")
            alarms.clear(AlarmCode.RESTARTED_AT_STARTING_DOSE, detail="latched until a clinician acknowledges it")
        held = self.loop.therapy_state.get(REFILL_HOLD_KEY)
        if held and not self._refill_discrepancy_unacknowledged():
            self.loop.alarms.raise_alarm(AlarmCode.REFILL_DISCREPANCY, detail=f"{held} (held across a restart)")
            self.loop.alarms.clear(AlarmCode.REFILL_DISCREPANCY, detail="refill recorded before the restart")

    # -- helpers ------------------------------------------------------------------------------------

    def _done(self, result: WorkflowResult) -> WorkflowResult:
        for sink in self.sinks:
            sink(result)
        return result

    def _deny(self, action: str, *reasons: str, detail: str = "", **values: Any) -> WorkflowResult:
        return self._done(WorkflowResult(action, False, tuple(str(r.value if isinstance(r, Why) else r) for r in reasons),
                                         detail, dict(values)))

    def _not_programmed(self) -> tuple[str | Why, ...]:
        """Why a programming did not commit: the orphan check's ``ORPHAN_*`` codes when it refused the command
        before anything was sent (what the pump would do alone breaks the cap or the minimum), else
        PUMP_NOT_VERIFIED."""
        return self.loop.orphan_refused or (Why.PUMP_NOT_VERIFIED,)

    def _signed_dose_override(self, dose_ng_per_day: int) -> tuple[tuple[str, ...], str, str] | None:
        """The prescription's signed dose overrides that cover ``dose_ng_per_day`` (ng/day), as the kernel takes
        them; None when none does (no other soft limit is lifted)."""
        covering = [o for o in self.dose_overrides if o.covers(dose_ng_per_day)]
        if not covering:
            return None
        return (tuple(sorted({o.code for o in covering})), "; ".join(o.reason for o in covering),
                covering[0].prescriber)

    def _rate_for_dose(self, dose_ng_per_day: int, concentration_ug_per_ml: int | None = None) -> int:
        conc = concentration_ug_per_ml or self.loop.concentration_ug_per_ml
        return units.rate_nl_per_h_for_dose(dose_ng_per_day, conc)

    def _refill_discrepancy_unacknowledged(self) -> bool:
        """A refill found volumes beyond tolerance (a possible pocket fill) and no clinician has acknowledged it."""
        alarms = self.loop.alarms
        return alarms.is_active(AlarmCode.REFILL_DISCREPANCY) and \
            any(a.code is AlarmCode.REFILL_DISCREPANCY and not a.acknowledged for a in alarms.active())

    def _bolus_blockers(self) -> list[Why]:
        blockers = []
        if self.loop.alarms.has_priority(Priority.HIGH):
            blockers.append(Why.HIGH_PRIORITY_ALARM)
        if self._refill_discrepancy_unacknowledged():
            # Drug may be in the pocket rather than the reservoir (RES-03): nothing more until a clinician looks.
            blockers.append(Why.REFILL_DISCREPANCY_UNACKNOWLEDGED)
        if self.loop.session_open is not None:
            blockers.append(Why.SESSION_OPEN)
        if self.loop.mode is not Mode.RUNNING:
            blockers.append(Why.NOT_RUNNING)
        if self.loop.bolus is not None:
            blockers.append(Why.BOLUS_RUNNING)
        if self.loop.transit is not None:
            # A bolus sized at the new concentration would push old drug: after a decrease, a multiple
            # of the bolus would reach the tip. It waits until the catheter holds only the new drug.
            blockers.append(Why.CONCENTRATION_TRANSIT)
        if self.procedure is not None:
            # SAFE-05: held for the procedure, or its restart not yet verified: nothing on top of it.
            blockers.append(Why.PROCEDURE_IN_PROGRESS)
        return blockers

    # -- screening and implant ----------------------------------------------------------------------

    def screening_dose(self, dose_ug: int, *, adequate: bool, effect_ms: int = 0) -> WorkflowResult:
        """Record a screening test dose given by lumbar puncture (the pump is not involved).

        :param dose_ug: test dose, µg (must be the next in 50, 75, 100).
        :param adequate: whether the response was adequate.
        :param effect_ms: how long the effect lasted, ms (decides the starting dose).
        """
        now = self.loop.now_ms()
        if self.loop.mode is not Mode.IDLE:
            return self._deny("screening_dose", Why.ALREADY_IMPLANTED)
        if self.patient.history is History.TRANSFERRED:
            return self._deny("screening_dose", Why.NOT_SCREENED, detail="a transferred patient is not screened")
        if any(s.adequate for s in self.patient.screening):
            return self._deny("screening_dose", Why.SCREENING_COMPLETE)
        allowed = self._next_test_doses_ug()
        if not allowed:
            return self._deny("screening_dose", Why.NOT_A_CANDIDATE)
        if dose_ug not in allowed:
            return self._deny("screening_dose", Why.SCREENING_ORDER,
                              detail=f"next test dose is {' or '.join(str(d) for d in allowed)} µg", dose_ug=dose_ug)
        if self.patient.screening and now - self.patient.screening[-1].at_ms < SCREENING_INTERVAL_MS:
            return self._deny("screening_dose", Why.SCREENING_INTERVAL,
                              detail="test doses must be at least 24 h apart", dose_ug=dose_ug)
        refused = self._screening_through_kernel(dose_ug, now)
        if refused:
            return self._deny("screening_dose", *refused, dose_ug=dose_ug)
        self.patient.screening.append(ScreeningDose(now, dose_ug, adequate, effect_ms))
        verdict = "adequate" if adequate else "inadequate"
        return self._done(WorkflowResult("screening_dose", True, (), f"{dose_ug} µg test dose, {verdict} response",
                                         {"dose_ug": dose_ug, "adequate": adequate}))

    def _screening_through_kernel(self, dose_ug: int, now_ms: int) -> tuple[str, ...]:
        """Authorise and account one test dose on the screening gate; returns the refusal's reasons, if any."""
        if self.screening_gate is None:
            return ()
        volume = units.volume_nl_for_mass(dose_ug * NG_PER_UG, SCREENING_CONCENTRATION_UG_PER_ML)
        override = None
        if dose_ug > 75:  # above the library's soft bolus limit: the protocol's third dose
            override = (("BOLUS_ABOVE_SOFT",), "screening protocol third test dose", str(CLINICIAN))
        decision = self.screening_gate.authorize_bolus(DeliveryKind.BOLUS_CLINICIAN, volume, SCREENING_DURATION_MS,
                                                       now_ms, override=override)
        if not decision.allowed:
            return decision.reasons
        # Given by lumbar puncture in one go: applied, delivered and released at once.
        self.screening_gate.apply(decision, now_ms)
        mass_pg = units.mass_pg_for_volume(volume, SCREENING_CONCENTRATION_UG_PER_ML)
        self.screening_gate.record_delivery(DeliveryKind.BOLUS_CLINICIAN, mass_pg, now_ms, now_ms)
        self.screening_gate.release_bolus(DeliveryKind.BOLUS_CLINICIAN, mass_pg)
        return ()

    def replay_screening(self) -> None:
        """After a restart: account the record's test doses on a fresh screening gate, in order, at their times."""
        for dose in self.patient.screening:
            self._screening_through_kernel(dose.dose_ug, dose.at_ms)

    def _next_test_doses_ug(self) -> tuple[int, ...]:
        """The test doses the screening may give next, µg (empty: the ladder is exhausted)."""
        given = [s.dose_ug for s in self.patient.screening]
        if not given:
            if self.patient.origin is Origin.PAEDIATRIC:
                return (PAEDIATRIC_FIRST_TEST_DOSE_UG, SCREENING_SEQUENCE_UG[0])
            return (SCREENING_SEQUENCE_UG[0],)
        ladder = (PAEDIATRIC_FIRST_TEST_DOSE_UG, *SCREENING_SEQUENCE_UG)
        following = ladder[ladder.index(given[-1]) + 1:]
        return following[:1]

    def starting_dose_ng_per_day(self) -> int | None:
        """Starting daily dose from screening: 2x the effective dose, 1x if its effect lasted > 8 h."""
        effective = next((s for s in self.patient.screening if s.adequate), None)
        if effective is None:
            return None
        factor = 1 if effective.effect_ms > LONG_EFFECT_MS else 2
        return effective.dose_ug * NG_PER_UG * factor

    def record_start_dose(self) -> tuple[int | None, str, Why | None]:
        """The highest daily dose the patient record allows therapy to start at, and the rule.

        A screened patient: 2 x the effective test dose, or 1 x when its effect lasted more than
        8 h (itb-clinical §1.3 [SKYSCAPE][SAULINO16]); none for a patient with no effective test
        dose (a non-responder to 100 µg is not a candidate, by any path). A transferred patient
        (a pump replacement): the documented dose of the replaced pump.

        :return: (dose ng/day or None, the rule in words, the refusal's reason code when None).
        """
        if self.patient.history is History.TRANSFERRED:
            return self.patient.prior_dose_ng_per_day, "the documented dose of the replaced pump", None
        dose = self.starting_dose_ng_per_day()
        if dose is None:
            reason = Why.NO_EFFECTIVE_SCREENING if self._next_test_doses_ug() else Why.NOT_A_CANDIDATE
            return None, "no effective screening test dose", reason
        effect = next(s for s in self.patient.screening if s.adequate)
        factor = "1 x" if effect.effect_ms > LONG_EFFECT_MS else "2 x"
        return dose, f"{factor} the effective {effect.dose_ug} µg test dose (label, itb-clinical §1.3)", None

    def restart_start_dose(self) -> int:
        """The titration-phase starting dose a long interruption restarts at (the restart rule), ng/day.

        A screened patient: the start dose from screening. A transferred patient has no screening
        record; the label's rule for them is to begin the titration phase again (§1.6 [JP-LBL]), so
        the lower of the documented dose and 2 x the first test dose (50 µg, or 25 µg for a child):
        the lowest starting dose a screening could have given. This second choice is a decision
        needing clinical review.
        """
        if self.patient.history is History.TRANSFERRED:
            first = PAEDIATRIC_FIRST_TEST_DOSE_UG if self.patient.origin is Origin.PAEDIATRIC else SCREENING_SEQUENCE_UG[0]
            return min(self.patient.prior_dose_ng_per_day or 0, 2 * first * NG_PER_UG)
        return self.starting_dose_ng_per_day() or 0

    def implant(self, concentration_ug_per_ml: int, fill_nl: int, **options: Any) -> WorkflowResult:
        """Fill the new pump and start therapy (:meth:`_implant`, which takes the same arguments).

        A refused implant (the patient record allows no start, a dose above what it allows, the kernel's or the
        pump's refusal) leaves the patient with no intrathecal therapy: IMPLANT_NOT_DONE (high priority, naming
        the withdrawal risk of a patient who was on it) is raised and journalled with the refusal, and cleared
        by an implant that starts therapy. A decision of the clinical safety review (issue #9).
        """
        result = self._implant(concentration_ug_per_ml, fill_nl, **options)
        alarms = self.loop.alarms
        if self.loop.mode is Mode.IDLE and Why.ALREADY_IMPLANTED.value not in result.reasons:
            alarms.raise_alarm(AlarmCode.IMPLANT_NOT_DONE,
                               detail=f"implant refused ({','.join(result.reasons)}): {result.detail}; the patient "
                                      "receives no intrathecal therapy")
            # Durable now, with the refusal: before an implant no checkpoint commits what is staged.
            self.loop.commit_journal("journal implant refusal")
        elif self.loop.mode is not Mode.IDLE and alarms.is_active(AlarmCode.IMPLANT_NOT_DONE):
            alarms.clear(AlarmCode.IMPLANT_NOT_DONE, detail="implant done: therapy started")
        return result

    def _implant(self, concentration_ug_per_ml: int, fill_nl: int, *, dose_ng_per_day: int | None = None,
                 prime: bool | None = None, catheter: CatheterFill | str = CatheterFill.SALINE,
                 flex_steps: list[tuple[int, int]] | None = None,
                 anchor_ms: int = 0, periodic_boluses: list[tuple[int, int, int]] | None = None,
                 override: tuple[tuple[str, ...], str, str] | None = None) -> WorkflowResult:
        """Fill the new pump, start the starting dose (or a prescribed flex or periodic-bolus programme), and
        prime the catheter if it holds saline.

        What the catheter holds is stated, never assumed (itb-clinical §1.3, §5.3; BOL-06). A new
        catheter holds saline: the priming bolus pushes it out. Without the priming the catheter stays
        saline: CATHETER_NOT_PRIMED (high priority), the implant is not complete (the result is not
        allowed, though the basal runs), and no increase until the drug reaches the tip (:meth:`titrate`).
        A catheter kept from a replaced pump, or filled with drug by the surgeon, holds the reservoir's drug
        to the tip: no priming, which would push a whole dead volume of drug into the patient.

        :param concentration_ug_per_ml: drug filled (a library entry; 500 µg/mL is usual).
        :param fill_nl: volume filled, nL.
        :param dose_ng_per_day: explicit starting dose, ng/day (default: from screening); not with ``flex_steps``.
        :param prime: run a priming bolus of the dead volume; default: only for a saline catheter.
        :param catheter: what the dead volume holds (:class:`~cython_ext.vocabulary.CatheterFill`, or its value):
            ``"saline"`` (a new catheter, the default) or ``"drug"`` (the reservoir's drug).
        :param flex_steps: a prescribed flex programme, ``(start_ms_of_day, dose_ng_per_day)`` steps as for
            :meth:`set_flex`; the kernel authorises the whole day at once and the loop changes the rate
            at each boundary from the start.
        :param anchor_ms: controller time at which the flex programme's day starts (its midnight).
        :param periodic_boluses: prescribed periodic boluses as the kernel takes them,
            ``(start_offset_ms, duration_ms, extra_rate_nl_per_h)``, given daily on top of ``flex_steps``
            (a single step for a periodic programme). The kernel authorises basal and boluses as one
            programme (its daily total against the 24 h cap); the loop wakes at each bolus start and end.
        :param override: the prescription's signed soft-limit overrides (PRX-02) as the kernel takes them:
            (reason codes, the prescriber's reason, the prescriber); no other limit is lifted.
        """
        action = "implant"
        fill, prime = self._catheter_at_implant(catheter, prime, concentration_ug_per_ml)
        if periodic_boluses is not None and flex_steps is None:
            raise ConfigError("periodic_boluses", periodic_boluses, "only with flex_steps (the basal programme)")
        if flex_steps is not None:
            if dose_ng_per_day is not None:
                raise ConfigError("dose_ng_per_day", dose_ng_per_day, "absent when flex_steps are given")
            self._check_flex_steps(flex_steps)
        if self.loop.mode is not Mode.IDLE:
            return self._deny(action, Why.ALREADY_IMPLANTED)
        if fill_nl <= 0 or fill_nl > self.reservoir_capacity_nl:
            raise ConfigError("fill_nl", fill_nl, f"in [1, {self.reservoir_capacity_nl}] nL (reservoir capacity)")
        allowed_ng, rule, refusal = self.record_start_dose()
        if allowed_ng is None:
            return self._deny(action, refusal, detail=f"the patient record allows no start: {rule}")
        if dose_ng_per_day is None and flex_steps is None:
            dose_ng_per_day = allowed_ng
        if concentration_ug_per_ml != getattr(self.gate, "concentration_ug_per_ml", concentration_ug_per_ml):
            raise ConfigError("concentration_ug_per_ml", concentration_ug_per_ml,
                              f"the concentration the gate was built for ({self.gate.concentration_ug_per_ml})")
        now = self.loop.now_ms()
        if flex_steps is not None:
            extra: dict[str, Any] = {"periodic_boluses": list(periodic_boluses)} if periodic_boluses else {}
            decision = self.gate.authorize_programme(self._flex_kernel_steps(flex_steps, concentration_ug_per_ml), now,
                                                     anchor_ms=anchor_ms, override=override, **extra)
            if not decision.allowed:
                return self._deny(action, *decision.reasons,
                                  detail=f"starting programme of {len(flex_steps)} steps and "
                                         f"{len(periodic_boluses or ())} periodic boluses refused")
            dose_ng_per_day = decision.dose_ng_per_day
            rate = decision.rate_nl_per_h
            if dose_ng_per_day > allowed_ng:
                return self._deny(action, Why.IMPLANT_DOSE_ABOVE_RECORD,
                                  detail=f"the programme's {dose_ng_per_day / 1000:g} µg/day is above "
                                         f"{allowed_ng / 1000:g} µg/day, {rule}")
        else:
            if dose_ng_per_day > allowed_ng:
                return self._deny(action, Why.IMPLANT_DOSE_ABOVE_RECORD,
                                  detail=f"{dose_ng_per_day / 1000:g} µg/day is above {allowed_ng / 1000:g} µg/day, "
                                         f"{rule}")
            rate = self._rate_for_dose(dose_ng_per_day, concentration_ug_per_ml)
            decision = self.gate.authorize_basal(rate, now, override=override)
            if not decision.allowed:
                return self._deny(action, *decision.reasons,
                                  detail=f"starting dose {dose_ng_per_day / 1000:g} µg/day")
        outcome = self.loop.start_therapy(concentration_ug_per_ml, fill_nl, decision,
                                          catheter_primed=fill is CatheterFill.DRUG)
        if not outcome.committed:
            return self._deny(action, *self._not_programmed(), detail=outcome.detail)
        self.titration_start_dose_ng_per_day = self.restart_start_dose()
        self.prescribed_dose_ng_per_day = dose_ng_per_day
        self.loop.checkpoint(durable=True)
        detail = f"started {dose_ng_per_day / 1000:g} µg/day at {concentration_ug_per_ml} µg/mL ({units.describe_rate_nl_per_h(rate)})"
        if flex_steps is not None and len(flex_steps) > 1:
            detail += f" as a flex programme of {len(flex_steps)} steps"
        if periodic_boluses:
            detail += f" with {len(periodic_boluses)} periodic boluses a day"
        values: dict[str, Any] = {"dose_ug_per_day": dose_ng_per_day / 1000, "rate_nl_per_h": rate,
                                  "catheter": fill.value}
        if fill is CatheterFill.DRUG and self.dead_volume_nl:
            detail += (f"; the catheter holds {units.describe_volume_nl(self.dead_volume_nl)} of drug to the tip "
                       f"(catheter = \"drug\"), no priming")
        if fill is CatheterFill.SALINE and self.dead_volume_nl:
            primed = self._bolus(DeliveryKind.PRIMING, self.dead_volume_nl, self.priming_duration_ms) if prime \
                else None
            if primed is None or not primed.allowed:
                # Therapy runs, but the catheter still holds saline: no drug reaches the tip for the transit time.
                hours = reservoir_math.transit_delay_ms(self.dead_volume_nl, rate) / MS_PER_H if rate else float("inf")
                why = f"priming refused ({','.join(primed.reasons)})" if primed is not None else \
                    "no priming (prime = false)"
                note = (f"implant not complete: {why}; the catheter holds no drug, and at "
                        f"{units.describe_rate_nl_per_h(rate)} none reaches the tip for {hours:.1f} h")
                # The alarm a re-prime cures (:meth:`prime`), not UNFINISHED_SESSION: that one is never
                # cleared by delivery and holds every bolus, the re-prime included.
                self.loop.alarms.raise_alarm(AlarmCode.CATHETER_NOT_PRIMED, detail=note)
                reasons = (Why.PRIMING_REFUSED.value, *primed.reasons) if primed is not None else \
                    (Why.CATHETER_NOT_PRIMED.value,)
                return self._done(WorkflowResult(action, False, reasons, f"{detail}; {note}", values))
            detail += "; priming started"
        return self._done(WorkflowResult(action, True, (), detail, values))

    def _catheter_at_implant(self, catheter: Any, prime: Any,
                             concentration_ug_per_ml: int) -> tuple[CatheterFill, bool]:
        """What the catheter holds and whether to prime it, checked before anything changes.

        :raises ConfigError: ``catheter`` not one of the :class:`~cython_ext.vocabulary.CatheterFill` values,
            ``prime`` not a bool or None, or a priming asked for a catheter that already holds drug.
        """
        allowed = [f.value for f in CatheterFill]
        try:
            fill = catheter if isinstance(catheter, CatheterFill) else CatheterFill(catheter)
        except (ValueError, TypeError):
            raise ConfigError("catheter", catheter, f"one of {allowed}") from None
        if prime is None:
            return fill, fill is CatheterFill.SALINE
        if not isinstance(prime, bool):
            raise ConfigError("prime", prime, "true, false or absent (absent: prime a saline catheter only)")
        if prime and fill is CatheterFill.DRUG and self.dead_volume_nl:
            dose_ug = units.mass_pg_for_volume(self.dead_volume_nl, concentration_ug_per_ml) / units.PG_PER_NG / NG_PER_UG
            raise ConfigError("prime", prime, 'false (or absent) with catheter = "drug"',
                              detail=f"the catheter already holds drug to the tip; a priming bolus would push its "
                                     f"{units.describe_volume_nl(self.dead_volume_nl)} ({dose_ug:g} µg) into the "
                                     f"patient on top of the dose, an overdose")
        return fill, prime

    # -- titration ---------------------------------------------------------------------------------

    def titrate(self, dose_ng_per_day: int, *, reason: str = "clinical response",
                override_reason: str | None = None, actor: Actor = CLINICIAN) -> WorkflowResult:
        """Change the daily dose (up within the origin cap and interval, down with confirmation).

        :param dose_ng_per_day: new daily dose, ng/day (> 0; zero only through :meth:`discontinue`).
        :param override_reason: a prescriber's reason to lift soft limits (interval, large decrease).
        """
        action = "titrate"
        held = self._procedure_refusal(action, dose_ng_per_day)
        if held is not None:
            return held  # SAFE-05: the refusal names the procedure (its zero-rate hold is not "not running")
        if self.loop.mode not in (Mode.RUNNING, Mode.MINIMUM_RATE):
            # First: before the implant there is no dose to change (a relative step comes to 0), and the
            # refusal says so, not that zero needs a discontinue.
            started = "therapy has not started (no implant yet)" if self.loop.mode is Mode.IDLE else \
                f"therapy is not running (mode {self.loop.mode.value})"
            return self._deny(action, Why.NOT_RUNNING, detail=f"no titration: {started}")
        if dose_ng_per_day <= 0:
            return self._deny(action, Why.ZERO_ONLY_BY_DISCONTINUE)
        if self.loop.session_open is not None:
            return self._deny(action, Why.SESSION_OPEN)
        if dose_ng_per_day > self.prescribed_dose_ng_per_day and self._refill_discrepancy_unacknowledged():
            return self._deny(action, Why.REFILL_DISCREPANCY_UNACKNOWLEDGED,
                              detail="no increase until a clinician acknowledges the refill discrepancy")
        held = self._saline_holds_increase(action, dose_ng_per_day)
        if held is not None:
            return held
        first_day = self._first_day_hold(dose_ng_per_day)
        rate = self._rate_for_dose(dose_ng_per_day)
        now = self.loop.now_ms()
        override = None
        if override_reason:
            override = (("TITRATION_INTERVAL", "DECREASE_NEEDS_CONFIRMATION", "DOSE_ABOVE_SOFT", "RATE_ABOVE_SOFT"),
                        override_reason, str(actor))
        decision = self.gate.authorize_basal(rate, now, override=override)
        before = self.gate.daily_dose_ng()
        if not decision.allowed or first_day:
            return self._deny(action, *_with_first_day(decision, first_day),
                              detail=f"{before / 1000:g} -> {dose_ng_per_day / 1000:g} µg/day refused"
                                     + _first_day_note(decision, first_day),
                              dose_ug_per_day=dose_ng_per_day / 1000)
        outcome = self.loop.change_basal(decision)
        if not outcome.committed:
            return self._deny(action, *self._not_programmed(), detail=outcome.detail)
        self.prescribed_dose_ng_per_day = dose_ng_per_day
        self.loop.checkpoint(durable=True)
        return self._done(WorkflowResult(action, True, decision.overridden,
                                         f"{before / 1000:g} -> {dose_ng_per_day / 1000:g} µg/day ({reason})",
                                         {"dose_ug_per_day": dose_ng_per_day / 1000, "rate_nl_per_h": rate}))

    def _saline_holds_increase(self, action: str, dose_ng_per_day: int) -> WorkflowResult | None:
        """The refusal of an increase to ``dose_ng_per_day`` (ng/day) while the catheter holds saline, else None.

        The dose in effect has not reached the patient yet: a lack of effect says nothing, and the raise
        would arrive on top of it. A hard rule, like the 24 h after implant (no override).
        """
        saline_nl = self.loop.saline_in_catheter_nl
        if dose_ng_per_day <= self.prescribed_dose_ng_per_day or not saline_nl:
            return None
        return self._deny(action, Why.CATHETER_NOT_PRIMED,
                          detail=f"no increase while the catheter still holds {units.describe_volume_nl(saline_nl)} "
                                 f"of saline: re-prime it, or wait until the basal has pushed it out")

    def _first_day_hold(self, dose_ng_per_day: int) -> str | None:
        """Why an increase to ``dose_ng_per_day`` (ng/day) is in the first 24 h of delivery, else None.

        "Do not raise the dose in the first 24 h" (itb-clinical §1.3 [SKYSCAPE][SAULINO16]) is about the drug
        the patient has had, and the infusion's effect builds over 24-48 h (§2.1). The kernel counts the 24 h
        from the pump's start (``INCREASE_WITHIN_24H_OF_START``); that is also when the drug reaches the patient
        when the catheter held drug, or was primed at the implant (a priming's drug mixes into the CSF as it
        runs, §5.3 [TGA-PRIME], as the ledger counts it). A catheter that held saline past the start (not primed,
        a priming refused or cut short) has the drug at its tip only when the catheter model finds the saline
        flushed (:attr:`~controller.accounting.Accounting.drug_at_tip_ms`: a re-prime's start, or the end of
        the reconciliation in which the basal pushed it out, never early): 30 h after the start for an unprimed
        0.25 mL at 100 µg/day. Until 24 h after that, the dose in effect at the tip over the trailing day was
        none or part of the prescription, so an increase is refused with the same code as the kernel's, hard
        (no override). This
        also keeps the trailing-window titration baseline (TIT-01) honest: the first increase comes only once a
        whole day of the dose has reached the tip. A decision of the clinical safety review (issue #9).
        """
        since = self.loop.drug_at_tip_ms
        if since is None or dose_ng_per_day <= self.prescribed_dose_ng_per_day:
            return None
        waited = self.loop.now_ms() - since
        if waited >= NO_INCREASE_AFTER_DRUG_AT_TIP_MS:
            return None
        return (f"no increase in the first 24 h of delivery: the catheter model found the drug at its tip only "
                f"{waited / MS_PER_H:.1f} h ago (the saline it held flushed); increases from "
                f"{(NO_INCREASE_AFTER_DRUG_AT_TIP_MS - waited) / MS_PER_H:.1f} h from now (itb-clinical §1.3; "
                "no override)")

    @staticmethod
    def _check_flex_steps(steps: list[tuple[int, int]]) -> None:
        if not steps or steps[0][0] != 0 or any(b[0] <= a[0] for a, b in zip(steps, steps[1:])) \
                or steps[-1][0] >= MS_PER_DAY or len(steps) > MAX_FLEX_STEPS:
            raise ConfigError("steps", steps, f"1-{MAX_FLEX_STEPS} (start_ms, dose) steps from 0, increasing, inside 24 h")

    def _flex_kernel_steps(self, steps: list[tuple[int, int]],
                           concentration_ug_per_ml: int | None = None) -> list[tuple[int, int, int]]:
        """``(start_ms_of_day, dose_ng_per_day)`` steps as the kernel's ``(start, duration_ms, rate_nl_per_h)``."""
        bounds = [start for start, _ in steps] + [MS_PER_DAY]
        return [(start, bounds[i + 1] - start, self._rate_for_dose(dose, concentration_ug_per_ml))
                for i, (start, dose) in enumerate(steps)]

    def set_flex(self, steps: list[tuple[int, int]], *, anchor_ms: int = 0, actor: Actor = CLINICIAN,
                 override_reason: str | None = None) -> WorkflowResult:
        """Put a flex programme in effect: ``(start_ms_of_day, dose_ng_per_day)`` steps covering 24 h.

        Each step delivers at the rate of its daily dose from its start to the next step's start
        (the last to midnight). The kernel checks the whole day at once (daily total against the
        titration cap and the 24 h cap); the loop then changes the rate at each boundary.

        :param steps: 1 to :data:`~cython_ext.vocabulary.MAX_FLEX_STEPS` steps, the first starting at 0, starts strictly increasing and < 24 h.
        :param anchor_ms: controller time at which the programme's day starts (its midnight).
        """
        action = "flex"
        self._check_flex_steps(steps)
        held = self._procedure_refusal(action, None)
        if held is not None:
            return held
        if self.loop.mode is not Mode.RUNNING:
            return self._deny(action, Why.NOT_RUNNING)
        if self.loop.session_open is not None:
            return self._deny(action, Why.SESSION_OPEN)
        kernel_steps = self._flex_kernel_steps(steps)
        override = None
        if override_reason:
            override = (("TITRATION_INTERVAL", "DECREASE_NEEDS_CONFIRMATION"), override_reason, str(actor))
        decision = self.gate.authorize_programme(kernel_steps, self.loop.now_ms(), anchor_ms=anchor_ms,
                                                 override=override)
        first_day = self._first_day_hold(decision.dose_ng_per_day) if decision.dose_ng_per_day else None
        if not decision.allowed or first_day:
            return self._deny(action, *_with_first_day(decision, first_day),
                              detail=f"flex programme of {len(steps)} steps refused"
                                     + _first_day_note(decision, first_day))
        held = self._saline_holds_increase(action, decision.dose_ng_per_day)
        if held is not None:
            return held
        outcome = self.loop.set_programme(decision)
        if not outcome.committed:
            return self._deny(action, *self._not_programmed(), detail=outcome.detail)
        self.prescribed_dose_ng_per_day = decision.dose_ng_per_day
        self.loop.checkpoint(durable=True)
        return self._done(WorkflowResult(action, True, decision.overridden,
                                         f"{len(steps)} steps, {decision.dose_ng_per_day / 1000:g} µg/day in total",
                                         {"dose_ug_per_day": decision.dose_ng_per_day / 1000}))

    # -- boluses -------------------------------------------------------------------------------------

    def _bolus(self, kind: DeliveryKind, volume_nl: int, duration_ms: int, *, action: str = "") -> WorkflowResult:
        action = action or f"{kind.label}_bolus"
        blockers = self._bolus_blockers()
        if kind is DeliveryKind.PRIMING:
            blockers = [b for b in blockers if b is not Why.SESSION_OPEN]
            if Why.HIGH_PRIORITY_ALARM in blockers and all(
                    a.code in PRIMING_REMEDIES for a in self.loop.alarms.active() if a.priority is Priority.HIGH):
                # Nothing but the saline in the line (and the deficit at the tip it causes): the priming is the cure.
                blockers.remove(Why.HIGH_PRIORITY_ALARM)
        if blockers:
            return self._deny(action, *blockers)
        decision = self.gate.authorize_bolus(kind, volume_nl, duration_ms, self.loop.now_ms())
        if not decision.allowed:
            if "DOSE_CAP_24H" in decision.reasons:
                # An event, not a lasting condition: it latches until a clinician acknowledges it.
                self.loop.alarms.raise_alarm(AlarmCode.DOSE_CAP_BREACH_ATTEMPT, detail=f"{kind.label} bolus refused")
                self.loop.alarms.clear(AlarmCode.DOSE_CAP_BREACH_ATTEMPT, detail="nothing was delivered")
            if kind in COUNTED_BOLUS_KINDS:
                self.loop.alarms.raise_alarm(AlarmCode.BOLUS_DENIED, detail=",".join(decision.reasons))
                self.loop.alarms.clear(AlarmCode.BOLUS_DENIED)
            return self._deny(action, *decision.reasons, volume_nl=volume_nl)
        record = self.loop.start_bolus(kind, decision, duration_ms)
        if record is None:
            durable = not self.loop.alarms.is_active(AlarmCode.JOURNAL_WRITE_FAILURE)
            return self._deny(action, *(self._not_programmed() if durable else (Why.NOT_DURABLE,)))
        dose_ug = decision.dose_ng / 1000
        return self._done(WorkflowResult(action, True, decision.overridden,
                                         f"{dose_ug:g} µg ({units.describe_volume_nl(volume_nl)}) over {duration_ms // 60000} min",
                                         {"dose_ug": dose_ug, "bolus_id": record.bolus_id}))

    def prime(self, *, duration_ms: int | None = None, actor: Actor = CLINICIAN) -> WorkflowResult:
        """Re-prime: a priming bolus of the saline still in the catheter, after a priming cut short (BOL-06).

        The volume is the saline the catheter model still holds ahead of the drug (the remaining dead
        volume); the kernel authorises it like the first priming (priming volume limit, the pump's rate,
        the 24 h cap). Once it has pushed the saline out, CATHETER_NOT_PRIMED clears and the implant is
        complete (:attr:`implant_complete`). Decision: neither CATHETER_NOT_PRIMED nor WITHDRAWAL_RISK
        holds it back (BOL-03 is about boluses of drug on top of therapy; this one is their remedy); every
        other high-priority alarm, an open session, a bolus running or a mode other than running does.

        :param duration_ms: how long it runs, ms (> 0); default: the first priming's rate
            (``priming_duration_ms`` for the whole dead volume), at least a minute.
        :param actor: the clinician.
        :raises ConfigError: for a duration that is not a positive integer (nothing changed).
        """
        action = "prime"
        del actor  # the front door has checked the role; the journal records it with the request
        if duration_ms is not None and (isinstance(duration_ms, bool) or not isinstance(duration_ms, int)
                                        or duration_ms <= 0):
            raise ConfigError("duration_ms", duration_ms, "an integer > 0 ms")
        if self.loop.mode is not Mode.RUNNING:
            return self._deny(action, Why.NOT_RUNNING)
        saline_nl = self.loop.saline_in_catheter_nl
        if saline_nl == 0:
            return self._deny(action, Why.NOTHING_TO_PRIME, detail="the catheter holds drug to the tip")
        if duration_ms is None:
            duration_ms = max(MS_PER_MIN, -(-self.priming_duration_ms * saline_nl // max(1, self.dead_volume_nl)))
        return self._bolus(DeliveryKind.PRIMING, saline_nl, duration_ms, action=action)

    @property
    def implant_complete(self) -> bool:
        """Whether therapy has started and the catheter holds drug to its tip (no saline left from the implant)."""
        return self.loop.mode is not Mode.IDLE and self.loop.saline_in_catheter_nl == 0

    def clinician_bolus(self, dose_ng: int, duration_ms: int) -> WorkflowResult:
        """A clinician bolus of ``dose_ng`` over ``duration_ms``."""
        volume = units.volume_nl_for_mass(dose_ng, self.loop.concentration_ug_per_ml) if self.loop.concentration_ug_per_ml else 0
        if volume <= 0:
            return self._deny("clinician_bolus", Why.NOT_RUNNING)
        return self._bolus(DeliveryKind.BOLUS_CLINICIAN, volume, duration_ms)

    def configure_patient_bolus(self, dose_ng: int, duration_ms: int) -> WorkflowResult:
        """Set the patient-activated bolus size (lockout and count are the prescription caps in the kernel)."""
        if dose_ng <= 0 or duration_ms <= 0:
            raise ConfigError("dose_ng", dose_ng, "> 0 with duration_ms > 0")
        self.patient_bolus = PatientBolusSettings(dose_ng, duration_ms)
        self._save_patient_bolus()
        self._update_bolus_reserve()
        self.loop.checkpoint(durable=True)
        return self._done(WorkflowResult("configure_patient_bolus", True, (),
                                         f"{dose_ng / 1000:g} µg over {duration_ms // 60000} min"))

    def patient_bolus_request(self) -> WorkflowResult:
        """The patient presses the bolus button."""
        if self.patient_bolus is None:
            return self._deny("patient_bolus", Why.PATIENT_BOLUS_NOT_CONFIGURED)
        if not self.loop.concentration_ug_per_ml:
            return self._deny("patient_bolus", Why.NOT_RUNNING)
        volume = units.volume_nl_for_mass(self.patient_bolus.dose_ng, self.loop.concentration_ug_per_ml)
        return self._bolus(DeliveryKind.BOLUS_PATIENT, volume, self.patient_bolus.duration_ms)

    # -- refill -------------------------------------------------------------------------------------

    def refill(self, *, removed_nl: int, added_nl: int, concentration_ug_per_ml: int, lot: str,
               acknowledge_mismatch: bool = False, complete: bool = True,
               refill_utc: datetime | None = None, actor: Actor = CLINICIAN) -> WorkflowResult:
        """A refill session: check the volumes, authorise any concentration change, fill, transit.

        :param removed_nl: volume drawn out, nL.
        :param added_nl: volume injected, nL.
        :param concentration_ug_per_ml: the new drug's concentration.
        :param lot: drug lot.
        :param acknowledge_mismatch: the clinician acknowledges a volume mismatch in this session.
        :param complete: False models a session abandoned before it was committed (RES-04).
        """
        action = "refill"
        loop = self.loop
        blocked = self._refill_blocked(concentration_ug_per_ml)
        if blocked is not None:
            return blocked
        loop.session_open = "refill"
        try:
            if loop.bolus is not None and loop.bolus.kind in COUNTED_BOLUS_KINDS:
                loop.stop_bolus("refill session opened")
            loop.poll()
            # The poll may find a fault (a power cycle, a stall): decide again on what it found.
            blocked = self._refill_blocked(concentration_ug_per_ml)
            if blocked is not None:
                return blocked
            predicted = reservoir_math.ReservoirState(loop.fill_nl, loop.dispensed_since_fill_nl,
                                                      refill_utc or loop.clock.utc_now())
            record = reservoir_math.RefillRecord(removed_nl, added_nl, concentration_ug_per_ml, lot,
                                                 refill_utc or loop.clock.utc_now())
            check = reservoir_math.check_refill(
                predicted, record, capacity_nl=self.reservoir_capacity_nl,
                prescribed_concentration_ug_per_ml=loop.concentration_ug_per_ml,
                tolerance_pct=self.refill_tolerance_pct)
            values: dict[str, Any] = {"expected_removed_nl": check.expected_removed_nl, "removed_nl": removed_nl,
                                      "added_nl": added_nl, "difference_nl": check.difference_nl}
            mismatch_reasons: tuple[str, ...] = ()
            if not check.within_tolerance:
                # Held in the resume point too (the alarm's journal entry carries it): a restart keeps the hold.
                loop.therapy_state[REFILL_HOLD_KEY] = check.finding if not acknowledge_mismatch else None
                loop.alarms.raise_alarm(AlarmCode.REFILL_DISCREPANCY, actor=actor, detail=check.finding)
                loop.alarms.clear(AlarmCode.REFILL_DISCREPANCY, detail="refill recorded")
                if acknowledge_mismatch:
                    loop.alarms.acknowledge(AlarmCode.REFILL_DISCREPANCY, actor=actor, detail="clinician reviewed")
                mismatch_reasons = (Why.REFILL_MISMATCH.value,)
            if not complete:
                loop.alarms.raise_alarm(AlarmCode.UNFINISHED_SESSION, detail="refill session abandoned")
                return self._deny(action, Why.SESSION_UNFINISHED, *mismatch_reasons,
                                  detail="last committed programme keeps running", **values)
            old_conc = loop.concentration_ug_per_ml
            dose = self.prescribed_dose_ng_per_day or self.gate.daily_dose_ng()
            if concentration_ug_per_ml != old_conc:
                return self._concentration_change(record, check, old_conc, dose, values, mismatch_reasons)
            missed = self._missed_refill()  # before the fill: it clears the empty condition
            loop.set_reservoir(added_nl, concentration_ug_per_ml)
            self._update_bolus_reserve()
            detail = f"refilled {added_nl / 1e6:g} mL at {concentration_ug_per_ml} µg/mL"
            if missed:
                # The refill cures the interruption's only cause and the clinician is there: therapy resumes now
                # by the restart rule, as a refill at a new concentration does, not at a later acknowledgement.
                resumed = self.resume(actor=actor)
                values["restart"] = resumed.detail or ",".join(resumed.reasons)
                detail += (f"; {resumed.detail}" if resumed.allowed else
                           f"; therapy NOT resumed ({','.join(resumed.reasons)}): {resumed.detail}")
            return self._done(WorkflowResult(action, True, mismatch_reasons, detail, values))
        finally:
            loop.session_open = None

    def _refill_blocked(self, concentration_ug_per_ml: int) -> WorkflowResult | None:
        """The refusal of a refill in the loop's present state, or None when it may go on."""
        loop = self.loop
        if loop.mode not in (Mode.RUNNING, Mode.MINIMUM_RATE, Mode.STOPPED_FAULT):
            return self._deny("refill", Why.NOT_RUNNING)
        if concentration_ug_per_ml == loop.concentration_ug_per_ml:
            return None
        if loop.mode is not Mode.RUNNING and not self._missed_refill():
            # The transit needs a programme to scale: refill at the same concentration, resume, then change
            # concentration at the next refill. A missed refill's minimum rate is the exception (below).
            return self._deny("refill", Why.NOT_RUNNING,
                              detail=f"concentration change refused in mode {loop.mode.value}")
        if loop.transit is not None:
            # Three drugs in the line (the catheter's old, the reservoir's, the new one) cannot be dosed
            # by one rate: refill at the concentration in use, change it at the next refill.
            return self._deny("refill", Why.CONCENTRATION_TRANSIT,
                              detail=f"the {loop.transit.old_concentration_ug_per_ml} µg/mL drug is still "
                                     "crossing the catheter")
        if loop.bolus is not None and loop.bolus.kind is DeliveryKind.PRIMING:
            # The change would end the priming: the catheter would keep its saline, and the patient would
            # get no drug until the basal had pushed it out (30 h at 100 µg/day), with no alarm.
            return self._deny("refill", Why.BOLUS_RUNNING,
                              detail="the priming is still filling the catheter: change the concentration "
                                     "once it is over")
        saline_nl = loop.saline_in_catheter_nl
        if saline_nl:
            # A priming cut short (a stall, a stop) left saline in the line: no transit rate can hold the
            # tip dose while saline leaves the tip, and the change would hide that behind a transit.
            return self._deny("refill", Why.CATHETER_NOT_PRIMED,
                              detail=f"the catheter still holds {saline_nl / 1000:g} µL of saline (priming "
                                     "incomplete): prime it (the prime action), then change the concentration")
        return None

    @staticmethod
    def _programme_at(programme: Any, old_ug_per_ml: int, new_ug_per_ml: int) -> dict[str, Any]:
        """A flex or periodic-bolus programme's steps and boluses at a new concentration, each rate for the same
        dose (rounded down: never more than prescribed), as the gate takes them (``steps``, ``periodic_boluses``:
        start ms, duration ms, nL/h)."""
        def scaled(rows: Any) -> list[tuple[int, int, int]]:
            return [(int(start), int(duration), int(rate) * old_ug_per_ml // new_ug_per_ml)
                    for start, duration, rate in rows]
        return {"steps": scaled(programme.steps), "periodic_boluses": scaled(programme.periodic_boluses)}

    def _missed_refill(self) -> bool:
        """Whether the loop is interrupted by a missed refill alone, with the kernel's concentration the
        reservoir's: the one interruption a refill ends by itself, at the old concentration or a new one.

        A missed refill is either of RES-05's two steps: the minimum rate at the empty threshold, or the stop at
        confirmed empty (the predicted volume used up; RESERVOIR_EMPTY held). Neither with another fault held
        that has its own reaction and wants a clinician (over-delivery suspected, a pump reset, an unfinished
        session; for the stop also a stall or an occlusion).
        """
        loop = self.loop
        others = [AlarmCode.OVER_DELIVERY_SUSPECTED, AlarmCode.PUMP_RESET, AlarmCode.UNFINISHED_SESSION]
        if loop.mode is Mode.STOPPED_FAULT:
            if loop.accounting.reservoir.volume_nl > 0:
                return False  # a stop for something else: not the confirmed empty
            others += [AlarmCode.MOTOR_STALL, AlarmCode.OCCLUSION]
        elif loop.mode is not Mode.MINIMUM_RATE:
            return False
        return (loop.alarms.is_active(AlarmCode.RESERVOIR_EMPTY)
                and not any(loop.alarms.is_active(code) for code in others)
                and self.gate.concentration_ug_per_ml == loop.concentration_ug_per_ml)

    def _concentration_change(self, record: Any, check: Any, old_conc: int, dose_ng_per_day: int,
                              values: dict[str, Any], extra: tuple[str, ...]) -> WorkflowResult:
        """Authorise and program a new concentration with the transit of the old drug (BOL-06).

        In a missed refill's minimum rate (:meth:`_missed_refill`) the change is the resume: the new
        programme is the restart rule's dose (:meth:`_restart_dose`, the kernel deciding it by the same rule),
        with the transit of the old drug still in the catheter; the minimum rate never runs on the new drug.
        """
        loop = self.loop
        new_conc = record.concentration_ug_per_ml
        restart_note = ""
        shape: dict[str, Any] = {}
        if loop.mode in (Mode.MINIMUM_RATE, Mode.STOPPED_FAULT):
            dose_ng_per_day, restart_note = self._restart_dose()
        elif loop.programme is not None:
            shape = self._programme_at(loop.programme, old_conc, new_conc)
            dose_ng_per_day = loop.programme.daily_total_ng()
        plan = reservoir_math.plan_transit(self.dead_volume_nl, old_conc, new_conc, dose_ng_per_day)
        now = loop.now_ms()
        override = self._signed_dose_override(dose_ng_per_day)
        decision = self.gate.authorize_concentration_change(new_conc, plan.new_rate_nl_per_h, plan.volume_nl,
                                                            plan.duration_ms, now, override=override, **shape)
        if not decision.allowed:
            loop.alarms.raise_alarm(AlarmCode.UNFINISHED_SESSION,
                                    detail="concentration change refused; new drug not committed")
            return self._deny("refill", *decision.reasons, *extra,
                              detail=f"{old_conc} -> {new_conc} µg/mL refused; old programme keeps running", **values)
        prescribed = self.prescribed_dose_ng_per_day
        long_interruption = bool(restart_note) and self._restart_rule_applies()
        if restart_note:
            # Durable with the change's intent: a restart that completes it resumes from the restart dose.
            self.prescribed_dose_ng_per_day = dose_ng_per_day
        outcome = loop.change_concentration(decision, new_conc, record.volume_added_nl, override=override,
                                            shape=shape)
        if not outcome.committed:
            if restart_note:
                self.prescribed_dose_ng_per_day = prescribed
                loop.checkpoint(durable=True)
            loop.alarms.raise_alarm(AlarmCode.UNFINISHED_SESSION,
                                    detail=f"transit programming failed: {outcome.detail}")
            return self._deny("refill", *self._not_programmed(), *extra, detail=outcome.detail, **values)
        self._update_bolus_reserve()
        if long_interruption:
            raise_restart_rule_alarm(loop.alarms, loop.therapy_state, dose_ng_per_day, prescribed, restart_note)
        if restart_note:
            values["restart"] = f"resumed at {dose_ng_per_day / 1000:g} µg/day ({restart_note})"
        values.update({"new_rate_nl_per_h": plan.new_rate_nl_per_h, "transit_rate_nl_per_h": plan.rate_nl_per_h,
                       "transit_volume_nl": plan.volume_nl, "transit_duration_h": plan.duration_ms / MS_PER_H})
        if shape:
            values["programme"] = shape
            how = (f"the programme ({len(shape['steps'])} steps, {len(shape['periodic_boluses'])} periodic boluses) "
                   f"carried over for the same doses; the old drug crosses the catheter in about "
                   f"{plan.duration_ms / MS_PER_H:.1f} h at the daily mean, each step at its volume rate for its dose")
        else:
            how = (f"the old drug crosses the catheter at {units.describe_rate_nl_per_h(plan.rate_nl_per_h)} for about "
                   f"{plan.duration_ms / MS_PER_H:.1f} h, then {units.describe_rate_nl_per_h(plan.new_rate_nl_per_h)}")
        return self._done(WorkflowResult("refill", True, extra, f"{old_conc} -> {new_conc} µg/mL; {how}", values))

    # -- alarms, interruptions, restart ----------------------------------------------------------------

    def acknowledge_alarms(self, actor: Actor = CLINICIAN) -> WorkflowResult:
        """A clinician acknowledges every held alarm, and resumes therapy after a STOP reaction."""
        codes = [a.code.value for a in self.loop.alarms.active()]
        self.loop.therapy_state[REFILL_HOLD_KEY] = None
        self.loop.therapy_state[RESTART_RULE_ALARM_KEY] = None
        for alarm in self.loop.alarms.active():
            self.loop.alarms.acknowledge(alarm.code, actor=actor, detail="acknowledged")
        detail = f"acknowledged {', '.join(codes) or 'nothing'}"
        if self.loop.mode in (Mode.STOPPED_FAULT, Mode.MINIMUM_RATE):
            resumed = self.resume(actor=actor)
            detail += f"; resume: {resumed.detail or ','.join(resumed.reasons)}"
        return self._done(WorkflowResult("acknowledge_alarms", True, (), detail, {"codes": codes}))

    def resume(self, *, actor: Actor = CLINICIAN) -> WorkflowResult:
        """Resume after a stop or minimum-rate mode, by the restart rule (itb-clinical §1.6, §3.3).

        After an interruption shorter than the restart threshold: the last prescribed dose. After one
        of the threshold or longer, as the kernel counts it (or one whose length is unknown after a
        reboot): the patient's titration-phase starting dose (:meth:`restart_start_dose`), from where
        it climbs back only at the titration cap. The kernel decides it again on its own history
        (``request_resume``); a refusal names the overdose risk.
        """
        loop = self.loop
        held = self._procedure_refusal("resume", None, resuming_allowed=True)
        if held is not None:
            return held
        if loop.mode not in (Mode.STOPPED_FAULT, Mode.MINIMUM_RATE):
            return self._deny("resume", Why.NOTHING_TO_RESUME)
        dose, note = self._restart_dose()
        before_ng, long_interruption = self.prescribed_dose_ng_per_day, self._restart_rule_applies()
        decision = self.gate.authorize_resume(self._rate_for_dose(dose), loop.now_ms())
        if not decision.allowed:
            refused = f"resume at {dose / 1000:g} µg/day refused ({note})"
            if set(decision.reasons) == {"DOSE_CAP_24H"} and loop.mode is Mode.STOPPED_FAULT \
                    and loop.resume_at_minimum_rate(f"{refused}: the 24 h cap does not allow it yet; minimum rate until "
                                                "it does, then resume again"):
                # A stop is not a safe state (SAFE-01, §3.2): when only the 24 h cap stands in the way (delivery a
                # restart could not place is counted as late as it may have been, so the window can look fuller
                # than it was), the patient gets the minimum rate, which the kernel judged within the cap, rather
                # than nothing; the dose itself waits for the window (found by the clinical adversary).
                refused += "; minimum rate entered instead until the 24 h window allows it (resume again then)"
            return self._deny("resume", *decision.reasons, detail=refused)
        outcome = loop.resume_after_fault(decision)
        if outcome is None:
            return self._deny("resume", Why.PUMP_NOT_VERIFIED)
        if not outcome.committed:
            return self._deny("resume", *self._not_programmed(), detail=outcome.detail)
        self.prescribed_dose_ng_per_day = dose
        if long_interruption:
            raise_restart_rule_alarm(loop.alarms, loop.therapy_state, dose, before_ng, note)
        self.loop.checkpoint(durable=True)
        return self._done(WorkflowResult("resume", True, (), f"resumed at {dose / 1000:g} µg/day ({note})",
                                         {"dose_ug_per_day": dose / 1000}))

    def _restart_rule_applies(self) -> bool:
        """Whether the interruption now open is of the restart threshold or longer (:meth:`_restart_dose`)."""
        return self.loop.interruption_ms() >= self.restart_titration_after_ms

    def _restart_dose(self) -> tuple[int, str]:
        """The daily dose the restart rule gives after the interruption now open, ng/day, and why."""
        interrupted = self.loop.interruption_ms()
        dose = self.prescribed_dose_ng_per_day
        note = f"last prescribed dose after a {interrupted / MS_PER_H:.1f} h interruption"
        if interrupted >= self.restart_titration_after_ms:
            start = self.titration_start_dose_ng_per_day
            if start and start < dose:
                dose = start
            source = ("the label's rule for a transferred patient (the lower of the documented dose and 2 x the "
                      "first test dose)" if self.patient.history is History.TRANSFERRED
                      else "the screening record (the starting dose from the effective test dose)")
            note = (f"the titration-phase starting dose {dose / 1000:g} µg/day, from {source}, after a "
                    f"{interrupted / MS_PER_H:.1f} h interruption (restart rule: an overdose risk otherwise; longer "
                    f"than the {self.restart_titration_after_ms / MS_PER_H:g} h threshold); titrate up again from here")
        return dose, note

    # -- guided procedure (MRI) ---------------------------------------------------------------------------

    @property
    def procedure(self) -> dict[str, Any] | None:
        """The guided procedure in progress (held, or its restart not yet verified), as the durable therapy state
        holds it; None when there is none (SAFE-05)."""
        return self.loop.therapy_state.get(PROCEDURE_KEY)

    def _procedure_refusal(self, action: str, dose_ng_per_day: int | None, *,
                           resuming_allowed: bool = False) -> WorkflowResult | None:
        """The refusal of ``action`` during a procedure, else None.

        While held every titration, flex programme and resume is refused (the procedure ends by
        :meth:`end_procedure`, under the restart rule). Until its restart is verified, increases are refused
        (``dose_ng_per_day`` above the prescribed dose, or None: a programme), so that nothing lands on top of a
        pump that may not be delivering; a resume after a failed restart (``resuming_allowed``) is not.
        """
        proc = self.procedure
        if proc is None:
            return None
        what = f"{proc['kind']} authorised by {proc['authorised_by']}"
        if proc["phase"] == "held":
            return self._deny(action, Why.PROCEDURE_IN_PROGRESS,
                              detail=f"a guided procedure is in progress ({what}): end it first (end_procedure)")
        if resuming_allowed or (dose_ng_per_day is not None and dose_ng_per_day <= self.prescribed_dose_ng_per_day):
            return None
        return self._deny(action, Why.PROCEDURE_IN_PROGRESS,
                          detail=f"no increase until the pump's restart after the procedure ({what}) is verified")

    def _save_procedure(self, proc: dict[str, Any] | None) -> None:
        self.loop.therapy_state[PROCEDURE_KEY] = proc

    def begin_procedure(self, kind: ProcedureKind | str, *, authorised_by: str, expected_duration_ms: int,
                        zero_rate_required: bool | None = None) -> WorkflowResult:
        """Prepare the pump for a guided procedure (SAFE-05, an MRI), as its labelling requires.

        ``zero_rate_required`` (default :data:`ZERO_RATE_REQUIRED_BY_KIND`: zero for an MRI) decides the hold.
        Zero: the kernel authorises the zero-rate hold (``PROCEDURE_STOP``, authorised by ``authorised_by``), the
        pump is stopped and the loop holds :attr:`~controller.loop.Mode.PROCEDURE`, commanding nothing; the
        clinician empties the reservoir where the labelling says so (a refill record at the next fill). Minimum
        rate allowed: the kernel's minimum-rate mode. Either way PROCEDURE_IN_PROGRESS is held for the whole
        procedure (the alternative oral or IV baclofen cover, the withdrawal risk), boluses and increases are
        refused naming the procedure, and PROCEDURE_OVERRUN is raised if it is still open past
        ``expected_duration_ms``. The state is durable: a restart keeps the pump held and the alarm raised.

        :param kind: a :class:`ProcedureKind` or its value (``"mri"``).
        :param authorised_by: the clinician who authorises the hold (journalled with the kernel's decision).
        :param expected_duration_ms: how long the procedure is expected to take, ms, in
            :data:`PROCEDURE_DURATION_RANGE_MS`.
        :param zero_rate_required: True: zero flow (the labelling requires it); False: the minimum rate runs.
        :raises ConfigError: for a kind, duration or flag out of range (nothing changed).
        """
        action = "begin_procedure"
        try:
            kind = ProcedureKind(kind)
        except ValueError:
            raise ConfigError("kind", kind, f"one of {[k.value for k in ProcedureKind]}") from None
        low, high = PROCEDURE_DURATION_RANGE_MS
        if isinstance(expected_duration_ms, bool) or not isinstance(expected_duration_ms, int) \
                or not low <= expected_duration_ms <= high:
            raise ConfigError("expected_duration_ms", expected_duration_ms, f"an integer in [{low}, {high}] ms")
        if zero_rate_required is None:
            zero_rate_required = ZERO_RATE_REQUIRED_BY_KIND[kind]
        if not isinstance(zero_rate_required, bool):
            raise ConfigError("zero_rate_required", zero_rate_required, "true, false or absent (the kind's default)")
        loop = self.loop
        if not authorised_by or not str(authorised_by).strip():
            return self._deny(action, Why.NOT_AUTHORISED)
        if self.procedure is not None:
            return self._deny(action, Why.PROCEDURE_IN_PROGRESS, detail="a procedure is already in progress")
        if loop.mode is not Mode.RUNNING:
            return self._deny(action, Why.NOT_RUNNING, detail=f"a procedure starts from running therapy "
                                                               f"(mode {loop.mode.value}): resolve that first")
        if loop.session_open is not None:
            return self._deny(action, Why.SESSION_OPEN)
        now = loop.now_ms()
        hold = "zero flow (the labelling requires it)" if zero_rate_required else "the minimum rate"
        proc = {"kind": kind.value, "authorised_by": str(authorised_by), "zero_rate": zero_rate_required,
                "started_ms": now, "expected_end_ms": now + expected_duration_ms, "phase": "held",
                "overrun": False, "deadline_ms": None, "last_check": None, "failed": False}
        if zero_rate_required:
            decision = self.gate.authorize_procedure_stop(now, authorised_by=str(authorised_by),
                                                          reason=f"{kind.value}: pump labelling requires zero flow")
            if not decision.allowed:
                return self._deny(action, *decision.reasons)
            # Durable with the stop's pending record: a restart after the stop finds the procedure.
            self._save_procedure(proc)
            confirmed = loop.hold_for_procedure(decision)
        else:
            self._save_procedure(proc)
            confirmed = loop.enter_minimum_rate(f"{kind.value}: held at the minimum rate for the procedure")
            if not confirmed and loop.mode is not Mode.MINIMUM_RATE:
                self._save_procedure(None)
                loop.checkpoint(durable=True)
                return self._deny(action, *self._not_programmed(), detail="the minimum rate was not verified")
        loop.alarms.raise_alarm(AlarmCode.PROCEDURE_IN_PROGRESS, detail=(
            f"{kind.value} authorised by {authorised_by}, expected {expected_duration_ms / MS_PER_MIN:g} min: delivery "
            f"held at {hold}; give the alternative (oral or IV) baclofen cover"))
        loop.schedule_action(proc["expected_end_ms"] + 1, self._check_procedure_overrun, PROCEDURE_KEY)
        loop.checkpoint(durable=True)
        detail = f"{kind.value}: delivery held at {hold} for {expected_duration_ms / MS_PER_MIN:g} min"
        if not confirmed:
            detail += "; the stop was NOT confirmed by the pump's read-back: check the pump before the scan"
        return self._done(WorkflowResult(action, confirmed, () if confirmed else (Why.PUMP_NOT_VERIFIED.value,),
                                         detail, {"zero_rate": zero_rate_required,
                                                  "expected_duration_min": expected_duration_ms / MS_PER_MIN}))

    def end_procedure(self, *, actor: Actor = CLINICIAN) -> WorkflowResult:
        """End the procedure: resume therapy under the restart rule, then verify the pump restarted (SAFE-05).

        The dose is the restart rule's (:meth:`_restart_dose`: the last prescribed dose after a short hold, the
        titration-phase starting dose after one of the restart threshold or longer), authorised by the kernel as a
        resume. Therapy counts as resumed only once verified: a poll's read-back shows the pump running at the
        commanded rate, without an alarm, and its counter advancing by at least half what that rate pushes
        between two checks (and one counter step). Checks run every quarter of ``T_resume``
        (:attr:`procedure_resume_verify_ms`); not verified within it, PROCEDURE_RESUME_FAILED is raised (high
        priority: the pump failed to restart, the withdrawal risk), at once when the pump refuses the resume.
        The checks go on after that; the alarm latches until a clinician acknowledges it.

        :param actor: the clinician.
        """
        action = "end_procedure"
        del actor  # the front door has checked the role; the journal records it with the request
        proc = self.procedure
        loop = self.loop
        if proc is None or proc["phase"] != "held":
            return self._deny(action, Why.NO_PROCEDURE, detail="no procedure is holding delivery")
        if loop.session_open is not None:
            return self._deny(action, Why.SESSION_OPEN)
        dose, note = self._restart_dose()
        now = loop.now_ms()
        decision = self.gate.authorize_resume(self._rate_for_dose(dose), now)
        if not decision.allowed:
            return self._deny(action, *decision.reasons,
                              detail=f"resume at {dose / 1000:g} µg/day refused ({note}); the procedure still holds")
        deadline = now + self.procedure_resume_verify_ms
        proc = dict(proc, phase="resuming", deadline_ms=deadline, last_check=None, ended_ms=now)
        # Durable with the resume's pending record: a restart after it goes on verifying to the same deadline.
        self._save_procedure(proc)
        loop.cancel_scheduled(PROCEDURE_KEY)
        outcome = loop.resume_after_fault(decision)
        for code in (AlarmCode.PROCEDURE_IN_PROGRESS, AlarmCode.PROCEDURE_OVERRUN):
            if loop.alarms.is_active(code):
                loop.alarms.clear(code, detail="procedure ended")
        committed = outcome is not None and outcome.committed
        if committed:
            self.prescribed_dose_ng_per_day = dose
        self._schedule_resumption_check(now)
        loop.checkpoint(durable=True)
        verify = f"the pump's restart must be verified within {self.procedure_resume_verify_ms / MS_PER_MIN:g} min"
        if not committed:
            self._resumption_failed(f"the pump did not take the resume ({'' if outcome is None else outcome.detail})")
            return self._deny(action, *(self._not_programmed() if outcome is not None else (Why.PUMP_NOT_VERIFIED,)),
                              Why.PROCEDURE_RESUME_UNVERIFIED, detail=f"resume at {dose / 1000:g} µg/day not taken "
                                                                        f"by the pump; {verify}")
        return self._done(WorkflowResult(action, True, (), f"resumed at {dose / 1000:g} µg/day ({note}); {verify}",
                                         {"dose_ug_per_day": dose / 1000}))

    def _check_step_ms(self) -> int:
        """Time between two checks of the restart, ms: a quarter of ``T_resume``, at least a minute."""
        return max(MS_PER_MIN, self.procedure_resume_verify_ms // 4)

    def _schedule_resumption_check(self, now_ms: int) -> None:
        proc = self.procedure
        if proc is None or proc["phase"] != "resuming":
            return
        at = now_ms + self._check_step_ms()
        if not proc["failed"]:
            at = min(at, proc["deadline_ms"])
        self.loop.schedule_action(max(at, now_ms + 1), self._check_resumption, PROCEDURE_KEY)

    def _check_resumption(self) -> None:
        """One check of the restart after a procedure: read the pump (a poll), compare with the last check."""
        proc = self.procedure
        loop = self.loop
        if proc is None or proc["phase"] != "resuming":
            return
        loop.poll()
        now = loop.now_ms()
        status = loop.last_status
        counted = loop.total_counted_nl
        rate = loop.committed_rate_nl_per_h
        running = (loop.mode is Mode.RUNNING and status is not None and status.alarm is None
                   and status.state is PumpState.INFUSING and bool(rate)
                   and self._held_as_commanded(rate, loop.pump_basal_nl_per_h))
        last = proc["last_check"]
        verified = False
        why = "the pump is not reported running at the commanded rate"
        if running and last is not None and last[2]:
            expected = rate * (now - last[0]) // MS_PER_H
            moved = counted - last[1]
            needed = max(loop.counter_resolution_nl, 1, expected // 2)
            verified = moved >= needed
            why = (f"the counter moved {units.describe_volume_nl(max(0, moved))} in {(now - last[0]) / MS_PER_MIN:g} "
                   f"min at {units.describe_rate_nl_per_h(rate)} (at least {units.describe_volume_nl(needed)} needed)")
        elif running:
            why = "running at the commanded rate; the counter is read again at the next check"
        if verified:
            self._save_procedure(None)
            loop.cancel_scheduled(PROCEDURE_KEY)
            if loop.alarms.is_active(AlarmCode.PROCEDURE_RESUME_FAILED):
                loop.alarms.clear(AlarmCode.PROCEDURE_RESUME_FAILED, detail=f"restart verified: {why}")
            loop.checkpoint(durable=True)
            self._done(WorkflowResult("procedure_resumption", True, (), f"therapy verified running after the "
                                      f"{proc['kind']}: {why}"))
            return
        self._save_procedure(dict(proc, last_check=[now, counted, running]))
        if now >= proc["deadline_ms"] and not proc["failed"]:
            self._resumption_failed(f"not verified {(now - proc['ended_ms']) / MS_PER_MIN:g} min after the "
                                    f"{proc['kind']}: {why}")
        self._schedule_resumption_check(now)
        loop.checkpoint()

    def _held_as_commanded(self, held_nl_per_h: int, commanded_nl_per_h: int) -> bool:
        """Whether the rate the pump holds, verified (nL/h), is the commanded one as the pump can hold it: within
        its stated rate tolerance (the digits it can display), at least 1 nL/h."""
        try:
            tolerance_ppm = self.loop.pump.capabilities().rate_tolerance_ppm
        except StateError:
            return held_nl_per_h == commanded_nl_per_h
        return abs(held_nl_per_h - commanded_nl_per_h) * 1_000_000 <= max(1_000_000, commanded_nl_per_h * tolerance_ppm)

    def _resumption_failed(self, why: str) -> None:
        """PROCEDURE_RESUME_FAILED, durable: the restart after the procedure is not verified."""
        proc = self.procedure
        if proc is None:
            return
        self._save_procedure(dict(proc, failed=True))
        self.loop.alarms.raise_alarm(AlarmCode.PROCEDURE_RESUME_FAILED, detail=why)
        self.loop.checkpoint(durable=True)
        self._done(WorkflowResult("procedure_resumption", False, (Why.PROCEDURE_RESUME_UNVERIFIED.value,),
                                  f"the pump may have failed to restart: {why}"))

    def _check_procedure_overrun(self) -> None:
        """PROCEDURE_OVERRUN when the procedure still holds delivery past its expected end (run 1 ms after it)."""
        proc = self.procedure
        if proc is None or proc["phase"] != "held":
            return
        over_min = (self.loop.now_ms() - proc["expected_end_ms"]) / MS_PER_MIN
        self._save_procedure(dict(proc, overrun=True))
        self.loop.alarms.raise_alarm(AlarmCode.PROCEDURE_OVERRUN, detail=(
            f"{proc['kind']} authorised by {proc['authorised_by']} still open {over_min:g} min past its expected "
            f"end; delivery held at {'zero' if proc['zero_rate'] else 'the minimum rate'}"))
        self.loop.checkpoint(durable=True)

    def _restore_procedure(self) -> None:
        """After a restart: hold the procedure's alarms again and put its checks back on the schedule."""
        proc = self.procedure
        if proc is None:
            return
        alarms = self.loop.alarms
        if proc["phase"] == "held":
            alarms.raise_alarm(AlarmCode.PROCEDURE_IN_PROGRESS, detail=f"{proc['kind']} authorised by "
                               f"{proc['authorised_by']} (held across a restart): give the alternative baclofen cover")
            if proc["overrun"]:
                alarms.raise_alarm(AlarmCode.PROCEDURE_OVERRUN, detail="held across a restart")
            else:
                self.loop.schedule_action(proc["expected_end_ms"] + 1, self._check_procedure_overrun, PROCEDURE_KEY)
            return
        if proc["failed"]:
            alarms.raise_alarm(AlarmCode.PROCEDURE_RESUME_FAILED, detail="restart not verified (held across a restart)")
        # The controller's death broke the chain of readings: verification starts again from the next one.
        self._save_procedure(dict(proc, last_check=None))
        self._schedule_resumption_check(self.loop.now_ms())

    # -- taper and discontinue --------------------------------------------------------------------------

    def taper(self, target_dose_ng_per_day: int, *, authorised_by: str) -> WorkflowResult:
        """Plan and schedule an authorised taper (<= 20 % per 2 days) to ``target`` (0: to discontinue)."""
        action = "taper"
        if not authorised_by:
            return self._deny(action, Why.NOT_AUTHORISED)
        if self.loop.mode is not Mode.RUNNING:
            return self._deny(action, Why.NOT_RUNNING)
        floor = units.dose_ng_per_day_for_rate(self.loop.config.minimum_rate_nl_per_h,
                                               self.loop.concentration_ug_per_ml)
        goal = max(target_dose_ng_per_day, floor)
        steps = self.gate.plan_taper(goal, self.loop.now_ms()) if goal != self.gate.daily_dose_ng() else []
        self.loop.cancel_scheduled("taper")
        for at_ms, dose in steps:
            self.loop.schedule_action(at_ms, lambda d=dose: self._taper_step(d, authorised_by), "taper")
        if target_dose_ng_per_day == 0:
            last = steps[-1][0] if steps else self.loop.now_ms()
            self.loop.schedule_action(last + self.gate_taper_interval_ms(),
                               lambda: self.discontinue(authorised_by=authorised_by, emergency=False), "taper")
        return self._done(WorkflowResult(action, True, (), f"{len(steps)} steps to {goal / 1000:g} µg/day"
                                         + (", then discontinue" if target_dose_ng_per_day == 0 else ""),
                                         {"steps": [(t, d / 1000) for t, d in steps]}))

    def gate_taper_interval_ms(self) -> int:
        """Time between taper steps from the prescription caps, ms."""
        caps = getattr(self.gate, "caps", None)
        return getattr(caps, "taper_interval_ms", 2 * MS_PER_DAY)

    def _taper_step(self, dose_ng_per_day: int, authorised_by: str) -> None:
        if self.loop.mode is not Mode.RUNNING:
            # A fault reaction (minimum rate, stop) outranks a scheduled step; the clinician re-plans.
            self._deny("taper_step", Why.NOT_RUNNING, detail=f"skipped {dose_ng_per_day / 1000:g} µg/day step")
            return
        self.titrate(dose_ng_per_day, reason="taper step",
                     override_reason=f"authorised taper ({authorised_by})",
                     actor=Actor(authorised_by, Role.CLINICIAN))

    def discontinue(self, *, authorised_by: str | None, emergency: bool = False) -> WorkflowResult:
        """Stop delivery: authorised only, and only at the end of a taper unless an emergency.

        An emergency discontinue is the abrupt stop of the boxed warning (itb-clinical §1.6, §3.2): the patient
        is dependent on the dose stopped, and withdrawal builds over 1-3 days and can kill. So it raises
        WITHDRAWAL_RISK (high priority, latched) at once, naming the dose stopped and the cover it needs (oral
        baclofen, which alone is often not enough, and benzodiazepines; restore intrathecal delivery as soon as
        possible). A discontinue that ends a completed taper (the kernel allows no other without the emergency
        flag) raises none: the dose came down in steps to the minimum-rate dose, as the label asks. A decision
        of the clinical safety review (issue #9, review 11).
        """
        action = "discontinue"
        if self.loop.mode not in (Mode.RUNNING, Mode.MINIMUM_RATE, Mode.STOPPED_FAULT):
            return self._deny(action, Why.NOT_RUNNING)
        decision = self.gate.authorize_discontinue(self.loop.now_ms(), authorised_by=authorised_by,
                                                   reason="emergency discontinue" if emergency else "end of taper",
                                                   emergency=emergency)
        if not decision.allowed:
            return self._deny(action, *decision.reasons)
        self.loop.cancel_scheduled("taper")
        stopped_ng = self.gate.daily_dose_ng()
        stopped = self.loop.discontinue_now(decision)
        self.prescribed_dose_ng_per_day = 0
        if emergency:
            why = (f"emergency discontinue: intrathecal baclofen stopped abruptly from {stopped_ng / 1000:g} µg/day "
                   "with no taper (itb-clinical §3.2); start oral baclofen cover now, with a benzodiazepine "
                   "(oral baclofen alone is often not enough), follow the withdrawal protocol, watch for "
                   "itching, fever, rebound spasticity and altered mental state over the next 1-3 days, and "
                   "restore intrathecal delivery as soon as it is safe")
            self.loop.therapy_state[EMERGENCY_DISCONTINUE_KEY] = why  # kept: a restart raises it again
            self.loop.alarms.raise_alarm(AlarmCode.WITHDRAWAL_RISK,
                                         actor=Actor(authorised_by or "clinician", Role.CLINICIAN), detail=why)
            self.loop.checkpoint(durable=True)
        return self._done(WorkflowResult(action, True, decision.overridden,
                                         "delivery stopped" + ("" if stopped else " (stop not confirmed)")))
