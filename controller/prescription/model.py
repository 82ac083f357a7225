"""The prescription model: frozen dataclasses in integer units (ng, nL, ms), and what the kernel takes from them.

A :class:`Prescription` is built only by the parser (:mod:`controller.prescription.parser`);
everything here is already validated. The methods turn it into the kernel's inputs
(:meth:`Prescription.kernel_steps`, :meth:`~Prescription.kernel_caps_kwargs`...) and back into
file form (:meth:`~Prescription.to_dict`, :meth:`~Prescription.to_toml`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from cython_ext import units
from cython_ext.errors import ConfigError
from cython_ext.vocabulary import Origin

#: The only schema version this parser reads.
SCHEMA_VERSION = 1
#: Minutes in one programme day.
MIN_PER_DAY = 1440


class ProgrammeMode(enum.Enum):
    """How the daily dose is delivered."""

    SIMPLE = "simple"
    FLEX = "flex"
    PERIODIC = "periodic"


@dataclass(frozen=True)
class PumpModel:
    """An implanted pump model the controller emulates.

    :param name: model key used in prescription files.
    :param capacity_nl: reservoir capacity, nL (RES-06).
    :param min_rate_nl_per_h: smallest programmable rate, nL/h.
    :param max_rate_nl_per_h: largest programmable rate, nL/h.
    :param max_residual_nl: reservoir dead space that cannot be drawn, nL.
    """

    name: str
    capacity_nl: int
    min_rate_nl_per_h: int
    max_rate_nl_per_h: int
    max_residual_nl: int


def _model(name: str, capacity_ml: int) -> PumpModel:
    return PumpModel(
        name=name,
        capacity_nl=capacity_ml * units.NL_PER_ML,
        min_rate_nl_per_h=units.rate_nl_per_h_for_ml_per_day("0.048", rounding="exact"),
        max_rate_nl_per_h=units.rate_nl_per_h_for_ml_per_day("24", rounding="exact"),
        max_residual_nl=units.decimal_to_units("1.4", units.NL_PER_ML),
    )


#: Pump models a prescription may name (SynchroMed II data from itb-clinical section 4.1.1; the 24 mL/day
#: maximum is the commonly quoted, unverified figure).
PUMP_MODELS: Mapping[str, PumpModel] = MappingProxyType(
    {m.name: m for m in (_model("synchromed-ii-20", 20), _model("synchromed-ii-40", 40))}
)


@dataclass(frozen=True)
class Patient:
    """Who the prescription is for.

    :param patient_id: the patient identifier.
    :param origin: origin of the spasticity.
    """

    patient_id: str
    origin: Origin


@dataclass(frozen=True)
class DrugSpec:
    """The drug: a library entry and its labelled concentration (PRX-08).

    :param library_code: the drug-library entry code.
    :param concentration_ug_per_ml: concentration, µg/mL.
    """

    library_code: str
    concentration_ug_per_ml: int


@dataclass(frozen=True)
class PumpSpec:
    """The implanted pump and its reservoir settings.

    :param model: the pump model key (see :data:`PUMP_MODELS`).
    :param reservoir_volume_nl: volume the reservoir holds when filled, nL (<= capacity).
    :param dead_volume_nl: pump tubing + catheter volume between reservoir and CSF, nL
        (sizes the priming bolus and the transit of a concentration change).
    :param low_reservoir_alarm_nl: low-reservoir alarm by volume, nL (RES-02).
    :param low_reservoir_alarm_days: low-reservoir alarm by days to empty (RES-02).
    :param empty_threshold_nl: volume at which the reservoir counts as empty, nL (RES-05).
    """

    model: str
    reservoir_volume_nl: int
    dead_volume_nl: int
    low_reservoir_alarm_nl: int
    low_reservoir_alarm_days: int
    empty_threshold_nl: int

    @property
    def pump_model(self) -> PumpModel:
        """The :class:`PumpModel` named by :attr:`model`."""
        return PUMP_MODELS[self.model]


@dataclass(frozen=True)
class FlexStep:
    """One period of the daily programme, as a dose rate.

    :param start_min: start, minutes after midnight, inclusive.
    :param end_min: end, minutes after midnight, exclusive (1440 = midnight).
    :param dose_ng_per_day: dose rate during the step, expressed per day, ng/day.
    """

    start_min: int
    end_min: int
    dose_ng_per_day: int

    @property
    def duration_min(self) -> int:
        """Length of the step, minutes."""
        return self.end_min - self.start_min

    def mass_ng(self) -> int:
        """Drug delivered during the step, ng (rounded up: counted against caps)."""
        return units.div_round(self.dose_ng_per_day * self.duration_min, MIN_PER_DAY, "up")


@dataclass(frozen=True)
class PeriodicBolus:
    """A bolus the programme gives every day at a fixed time.

    :param time_min: start, minutes after midnight.
    :param dose_ng: bolus mass, ng.
    :param duration_min: how long the bolus takes, minutes.
    """

    time_min: int
    dose_ng: int
    duration_min: int


@dataclass(frozen=True)
class ProgrammeSpec:
    """The daily programme. A simple programme is one step covering the whole day.

    :param mode: simple, flex or periodic.
    :param steps: basal steps, sorted, covering 0..1440 min with no gap or overlap.
    :param periodic_boluses: boluses given daily (periodic mode only), sorted by time.
    """

    mode: ProgrammeMode
    steps: tuple[FlexStep, ...]
    periodic_boluses: tuple[PeriodicBolus, ...] = ()

    def daily_total_ng(self) -> int:
        """Programmed drug per 24 h: basal steps plus periodic boluses, ng (rounded up)."""
        return sum(s.mass_ng() for s in self.steps) + sum(b.dose_ng for b in self.periodic_boluses)

    def step_at(self, minute_of_day: int) -> FlexStep:
        """The basal step in effect at ``minute_of_day`` (0..1439)."""
        for step in self.steps:
            if step.start_min <= minute_of_day < step.end_min:
                return step
        raise ConfigError("minute_of_day", minute_of_day, f"in [0, {MIN_PER_DAY - 1}]")

    def min_dose_ng_per_day(self) -> int:
        """Lowest basal dose rate of any step, ng/day."""
        return min(s.dose_ng_per_day for s in self.steps)


@dataclass(frozen=True)
class ClinicianBolusSpec:
    """Clinician bolus settings.

    :param enabled: whether clinician boluses may be given.
    :param max_dose_ng: largest single bolus, ng.
    :param lockout_ms: minimum time between boluses, ms.
    :param max_per_day: most boluses in a rolling 24 h.
    """

    enabled: bool
    max_dose_ng: int = 0
    lockout_ms: int = 0
    max_per_day: int = 0


@dataclass(frozen=True)
class PatientBolusSpec:
    """Patient-activated bolus settings; all four values are required when enabled.

    :param enabled: whether the patient may request boluses.
    :param dose_ng: bolus mass, ng.
    :param duration_ms: how long a bolus takes, ms.
    :param lockout_ms: minimum time between boluses, ms.
    :param max_per_day: most boluses in a rolling 24 h.
    """

    enabled: bool
    dose_ng: int = 0
    duration_ms: int = 0
    lockout_ms: int = 0
    max_per_day: int = 0


@dataclass(frozen=True)
class TitrationPolicy:
    """Titration and safety policy.

    :param max_dose_ng_per_day: prescription cap on the rolling 24 h total, ng/day (PRX-03).
    :param max_increase_pct: largest cumulative increase per rolling 24 h, percent (TIT-01).
    :param min_interval_ms: minimum time between titration steps, ms (TIT-04).
    :param decrease_confirm_pct: a decrease larger than this needs confirmation, percent (TIT-03).
    :param minimum_rate_ng_per_day: dose used in minimum-rate mode, ng/day (SAFE-02).
    """

    max_dose_ng_per_day: int
    max_increase_pct: int
    min_interval_ms: int
    decrease_confirm_pct: int
    minimum_rate_ng_per_day: int


@dataclass(frozen=True)
class SoftLimitOverride:
    """A prescriber's override of one soft limit (PRX-02).

    :param field: dotted field whose value breaches a soft limit.
    :param reason: why (free text, non-empty).
    :param prescriber: who overrides.
    """

    field: str
    reason: str
    prescriber: str


@dataclass(frozen=True)
class Prescription:
    """A complete, validated prescription. Build it with :func:`parse_prescription`.

    :param prescription_id: identifier of this prescription version.
    :param prescriber: who wrote it.
    :param patient: the patient.
    :param drug: drug and concentration.
    :param pump: pump and reservoir settings.
    :param programme: the daily programme.
    :param clinician_bolus: clinician bolus settings.
    :param patient_bolus: patient bolus settings.
    :param titration: titration policy.
    :param soft_limit_overrides: overrides of soft limits, with reasons.
    :param source_sha256: SHA-256 of the source text (not part of equality).
    """

    prescription_id: str
    prescriber: str
    patient: Patient
    drug: DrugSpec
    pump: PumpSpec
    programme: ProgrammeSpec
    clinician_bolus: ClinicianBolusSpec
    patient_bolus: PatientBolusSpec
    titration: TitrationPolicy
    soft_limit_overrides: tuple[SoftLimitOverride, ...] = ()
    source_sha256: str = field(default="", compare=False)

    @property
    def concentration_ug_per_ml(self) -> int:
        """The drug concentration, µg/mL."""
        return self.drug.concentration_ug_per_ml

    def rate_nl_per_h(self, dose_ng_per_day: int) -> int:
        """Volume rate that delivers ``dose_ng_per_day`` at this concentration, nL/h (rounded down)."""
        return units.rate_nl_per_h_for_dose(dose_ng_per_day, self.drug.concentration_ug_per_ml)

    def daily_volume_nl(self) -> int:
        """Programmed volume per 24 h (basal + periodic boluses), nL (rounded up)."""
        return units.div_round(
            self.programme.daily_total_ng() * units.PG_PER_NG, self.drug.concentration_ug_per_ml, "up"
        )

    def worst_case_daily_volume_nl(self) -> int:
        """Daily volume if every allowed patient bolus is also taken, nL (Prometra convention)."""
        extra_ng = self.patient_bolus.dose_ng * self.patient_bolus.max_per_day if self.patient_bolus.enabled else 0
        total_ng = self.programme.daily_total_ng() + extra_ng
        return units.div_round(total_ng * units.PG_PER_NG, self.drug.concentration_ug_per_ml, "up")

    def kernel_steps(self) -> tuple[tuple[int, int, int], ...]:
        """Basal steps as the kernel's ``Programme`` takes them: ``(start_offset_ms, duration_ms, rate_nl_per_h)``."""
        return tuple(
            (s.start_min * units.MS_PER_MIN, s.duration_min * units.MS_PER_MIN, self.rate_nl_per_h(s.dose_ng_per_day))
            for s in self.programme.steps
        )

    def kernel_periodic_boluses(self) -> tuple[tuple[int, int, int], ...]:
        """Periodic boluses as extra-rate triples ``(start_offset_ms, duration_ms, rate_nl_per_h)``
        (rate rounded down: never more than prescribed)."""
        triples = []
        for b in self.programme.periodic_boluses:
            duration_ms = b.duration_min * units.MS_PER_MIN
            volume_nl = units.volume_nl_for_mass(b.dose_ng, self.drug.concentration_ug_per_ml)
            rate = units.div_round(volume_nl * units.MS_PER_H, duration_ms, "down")
            triples.append((b.time_min * units.MS_PER_MIN, duration_ms, rate))
        return tuple(triples)

    def kernel_caps_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the kernel's ``make_caps`` (PatientCaps) from this prescription.

        The kernel applies one bolus size, lockout and count to both bolus kinds: the size is
        the larger of the two settings (the therapy workflow enforces each kind's own size),
        the lockout the longer and the count the smaller. Priming boluses are
        limited to the prescribed dead volume.
        """
        cb, pb, t = self.clinician_bolus, self.patient_bolus, self.titration
        enabled = [b for b in ((cb.max_dose_ng, cb.lockout_ms, cb.max_per_day) if cb.enabled else None,
                               (pb.dose_ng, pb.lockout_ms, pb.max_per_day) if pb.enabled else None) if b]
        kwargs: dict[str, Any] = {
            "max_dose_ng_per_day": t.max_dose_ng_per_day,
            "origin": self.patient.origin.value,
            "titration_cap_pct": t.max_increase_pct,
            "min_titration_interval_ms": t.min_interval_ms,
            "decrease_confirm_pct": t.decrease_confirm_pct,
            "bolus_enabled": cb.enabled,
            "patient_bolus_enabled": pb.enabled,
            "minimum_rate_nl_per_h": self.rate_nl_per_h(t.minimum_rate_ng_per_day),
            "max_priming_volume_nl": self.pump.dead_volume_nl,
        }
        if enabled:
            kwargs["max_bolus_ng"] = max(b[0] for b in enabled)
            kwargs["bolus_lockout_ms"] = max(b[1] for b in enabled)
            kwargs["max_boluses_per_day"] = min(b[2] for b in enabled)
        return kwargs

    def to_dict(self) -> dict[str, Any]:
        """The prescription in file form (external units, exact decimals), for journals and reports."""
        from controller.prescription.render import to_document  # the renderer imports this module

        return to_document(self)

    def to_toml(self) -> str:
        """Render as prescription-file TOML; ``parse_prescription(p.to_toml()) == p``."""
        from controller.prescription.render import render_prescription  # the renderer imports this module

        return render_prescription(self)

    def numeric_fields(self) -> dict[str, int]:
        """Every numeric value in internal units, by dotted file path (used for magnitude checks)."""
        return dict(_numeric_fields(self))



def _numeric_fields(p: Prescription) -> Iterator[tuple[str, int]]:
    yield "drug.concentration_ug_per_ml", p.drug.concentration_ug_per_ml
    yield "pump.reservoir_volume_ml", p.pump.reservoir_volume_nl
    yield "pump.dead_volume_ml", p.pump.dead_volume_nl
    yield "pump.low_reservoir_alarm_ml", p.pump.low_reservoir_alarm_nl
    yield "pump.low_reservoir_alarm_days", p.pump.low_reservoir_alarm_days
    yield "pump.empty_threshold_ml", p.pump.empty_threshold_nl
    if p.programme.mode is ProgrammeMode.FLEX:
        for i, s in enumerate(p.programme.steps):
            yield f"programme.steps[{i}].dose_ug_per_day", s.dose_ng_per_day
    else:
        yield "programme.dose_ug_per_day", p.programme.steps[0].dose_ng_per_day
    for i, b in enumerate(p.programme.periodic_boluses):
        yield f"programme.periodic_boluses[{i}].dose_ug", b.dose_ng
        yield f"programme.periodic_boluses[{i}].duration_min", b.duration_min
    if p.programme.mode is not ProgrammeMode.SIMPLE:
        yield "programme.daily_total_ug", p.programme.daily_total_ng()
    if p.clinician_bolus.enabled:
        yield "clinician_bolus.max_dose_ug", p.clinician_bolus.max_dose_ng
        yield "clinician_bolus.lockout_min", p.clinician_bolus.lockout_ms
        yield "clinician_bolus.max_per_day", p.clinician_bolus.max_per_day
    if p.patient_bolus.enabled:
        yield "patient_bolus.dose_ug", p.patient_bolus.dose_ng
        yield "patient_bolus.duration_min", p.patient_bolus.duration_ms
        yield "patient_bolus.lockout_min", p.patient_bolus.lockout_ms
        yield "patient_bolus.max_per_day", p.patient_bolus.max_per_day
    t = p.titration
    yield "titration.max_dose_ug_per_day", t.max_dose_ng_per_day
    yield "titration.max_increase_pct", t.max_increase_pct
    yield "titration.min_interval_h", t.min_interval_ms
    yield "titration.decrease_confirm_pct", t.decrease_confirm_pct
    yield "titration.minimum_rate_ug_per_day", t.minimum_rate_ng_per_day


