"""Parsing prescription files: the strict schema, read through the one field kit.

Every field is read by :mod:`cython_ext.fields` (bounded input, exact decimals, the
number policy, one error format), and every problem of a file is reported at once in
a :class:`PrescriptionError`. A section that depends on a broken one (the programme
on the drug and the pump, say) is not checked, so fixing one problem can reveal
another. Nothing is returned half-built.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from controller.prescription import library as drug_library
from controller.prescription.library import LibraryEntry
from controller.prescription.model import MIN_PER_DAY, PUMP_MODELS, SCHEMA_VERSION, ClinicianBolusSpec, DrugSpec
from controller.prescription.model import FlexStep, Patient, PatientBolusSpec, PeriodicBolus, Prescription
from controller.prescription.model import ProgrammeMode, ProgrammeSpec, PumpModel, PumpSpec, SoftLimitOverride
from controller.prescription.model import TitrationPolicy
from controller.prescription.review import soft_limit_breaches
from cython_ext import fields, units
from cython_ext.errors import ConfigError
from cython_ext.fields import INVALID, Table, any_invalid
from cython_ext.vocabulary import MAX_FLEX_STEPS, MAX_PERIODIC_BOLUSES, Origin

#: Allowed minimum interval between titration steps, hours.
MIN_INTERVAL_H_RANGE = (24, 24 * 14)
#: Allowed decrease-confirmation threshold, percent.
DECREASE_CONFIRM_PCT_RANGE = (5, 90)
#: Allowed low-reservoir alarm lead time, days.
LOW_ALARM_DAYS_RANGE = (1, 60)
#: Allowed bolus lockout, minutes (at most one day).
LOCKOUT_MIN_RANGE = (1, MIN_PER_DAY)
#: Allowed bolus duration, minutes.
BOLUS_DURATION_MIN_RANGE = (1, 24 * 60)
#: Allowed boluses per day.
BOLUSES_PER_DAY_RANGE = (1, 24)
#: Longest free-text field (an override's field or reason), characters.
MAX_TEXT_CHARS = fields.MAX_TEXT_CHARS
#: What a prescription file is called in whole-file problems.
DOCUMENT = "prescription"


class PrescriptionError(fields.FileErrors):
    """Every problem found in a prescription file, in line order (a :class:`~cython_ext.fields.FileErrors`).

    ``field``, ``value`` and ``allowed`` are those of the first problem; :attr:`errors` holds all
    of them, each with its line.
    """


def parse_prescription(
    text: str | bytes, *, library: Mapping[str, LibraryEntry] | None = None, source: str = "<string>"
) -> Prescription:
    """Parse and validate prescription TOML.

    :param text: the file contents (bytes are decoded as strict UTF-8).
    :param library: drug library keyed by entry code; defaults to the kernel's ``DEFAULT_LIBRARY``.
    :param source: where the text came from, for messages.
    :return: the validated :class:`Prescription`.
    :raises PrescriptionError: (a :class:`ConfigError`) naming the dotted field, the value, the
        allowed range and the line of every problem found; nothing is returned half-built.
    """
    lib = drug_library.default_library() if library is None else library
    try:
        doc = fields.load_toml(text, document=DOCUMENT, source=source)
        prescription = _read_document(doc.root, lib)
        doc.finish()
    except fields.FileErrors as exc:
        raise PrescriptionError(exc.errors, omitted=exc.omitted) from None
    raw = text if isinstance(text, bytes) else text.encode("utf-8")
    return replace(prescription, source_sha256=hashlib.sha256(raw).hexdigest())


def load_prescription(path: str | Path, *, library: Mapping[str, LibraryEntry] | None = None) -> Prescription:
    """Read and validate a prescription file (at most :attr:`~cython_ext.fields.Limits.file_bytes`).

    :param path: path of a UTF-8 TOML file.
    :param library: drug library; defaults to the kernel's ``DEFAULT_LIBRARY``.
    :raises PrescriptionError: if the file cannot be read or is invalid.
    """
    try:
        data = fields.read_file(path, document=DOCUMENT)
    except fields.FileErrors as exc:
        raise PrescriptionError(exc.errors) from None
    return parse_prescription(data, library=library, source=str(path))


def _read_document(top: Table, library: Mapping[str, LibraryEntry]) -> Any:
    doc = top.doc
    top.get("schema_version", fields.integer, SCHEMA_VERSION, SCHEMA_VERSION)
    prescription_id = top.get("prescription_id", fields.identifier)
    prescriber = top.get("prescriber", fields.person)
    patient = _patient(top.table("patient"))
    drug, entry = _drug(top.table("drug"), library)
    pump = _pump(top.table("pump"))
    model = INVALID if pump is INVALID else pump.pump_model
    programme = _programme(top.table("programme"), drug, entry, model)
    clinician_bolus = _clinician_bolus(top.table("clinician_bolus"), entry)
    patient_bolus = _patient_bolus(top.table("patient_bolus"), drug, entry, model)
    titration = _titration(top.table("titration"), patient, drug, entry, programme, model)
    overrides = _overrides(top.tables("soft_limit_overrides", default=[]))
    top.done()
    if doc.failed:
        return INVALID
    prescription = Prescription(
        prescription_id=prescription_id,
        prescriber=prescriber,
        patient=patient,
        drug=drug,
        pump=pump,
        programme=programme,
        clinician_bolus=clinician_bolus,
        patient_bolus=patient_bolus,
        titration=titration,
        soft_limit_overrides=overrides,
    )
    breaches = {b.field for b in soft_limit_breaches(prescription, library)}
    for index, override in enumerate(overrides):
        if override.field not in breaches:
            doc.record(ConfigError(f"soft_limit_overrides[{index}].field", override.field,
                                   f"a field that breaches a soft limit (breaching now: {sorted(breaches)})"))
    return prescription


def _sequence_of(values: Sequence[Any]) -> Any:
    return INVALID if any_invalid(*values) else tuple(values)


def _patient(t: Any) -> Any:
    if t is INVALID:
        return INVALID
    patient_id = t.get("id", fields.identifier)
    origin = t.get("origin", fields.choice, [o.value for o in Origin])
    t.done()
    return t.doc.run(lambda i, o: Patient(i, Origin(o)), patient_id, origin)


def _drug(t: Any, library: Mapping[str, LibraryEntry]) -> tuple[Any, Any]:
    if t is INVALID:
        return INVALID, INVALID
    code = t.get("library_code", fields.choice, sorted(library))
    concentration = t.get("concentration_ug_per_ml", fields.integer, 1, 10**6, "ug/mL")
    t.done()
    entry = t.doc.run(_usable_entry, code, library)
    drug = t.doc.run(_labelled, concentration, entry)
    return drug, (INVALID if drug is INVALID else entry)


def _usable_entry(code: str, library: Mapping[str, LibraryEntry]) -> LibraryEntry:
    entry = library[code]
    if entry.screening_only:
        usable = sorted(c for c, e in library.items() if not e.screening_only)
        raise ConfigError("drug.library_code", code, f"an entry for pump programmes, one of {usable}",
                          detail="screening-only concentration")
    return entry


def _labelled(concentration: int, entry: LibraryEntry) -> DrugSpec:
    if concentration != entry.concentration_ug_per_ml:
        raise ConfigError("drug.concentration_ug_per_ml", concentration,
                          f"{entry.concentration_ug_per_ml} ug/mL (the labelled concentration of {entry.code})")
    return DrugSpec(entry.code, concentration)


def _pump(t: Any) -> Any:
    if t is INVALID:
        return INVALID
    model = t.get("model", fields.choice, sorted(PUMP_MODELS))
    ml = units.NL_PER_ML
    capacity = max(m.capacity_nl for m in PUMP_MODELS.values()) if model is INVALID else (
        PUMP_MODELS[model].capacity_nl)
    reservoir = t.get("reservoir_volume_ml", fields.scaled, ml, 1, capacity, "mL")
    dead = t.get("dead_volume_ml", fields.scaled, ml, 0, ml, "mL", low_open=True)
    low = t.get("low_reservoir_alarm_ml", fields.scaled, ml, 1, (capacity if reservoir is INVALID else reservoir) - 1,
                "mL")
    empty = t.get("empty_threshold_ml", fields.scaled, ml, 0, (capacity if low is INVALID else low) - 1, "mL")
    days = t.get("low_reservoir_alarm_days", fields.integer, *LOW_ALARM_DAYS_RANGE, "days")
    t.done()
    return t.doc.run(PumpSpec, model, reservoir, dead, low, days, empty)


def _dose_rate(value: Any, field: str, drug: DrugSpec, entry: LibraryEntry, model: PumpModel) -> int:
    """A basal dose within the library's hard limits whose rate the pump can run, ng/day."""
    bounds = entry.dose_ng_per_day
    dose = fields.scaled(value, field, units.NG_PER_UG, bounds.lower_hard, bounds.upper_hard, "ug/day")
    rate = units.rate_nl_per_h_for_dose(dose, drug.concentration_ug_per_ml)
    if not model.min_rate_nl_per_h <= rate <= model.max_rate_nl_per_h:
        lo = units.dose_ng_per_day_for_rate(model.min_rate_nl_per_h, drug.concentration_ug_per_ml)
        hi = units.dose_ng_per_day_for_rate(model.max_rate_nl_per_h, drug.concentration_ug_per_ml, rounding="down")
        raise ConfigError(
            field,
            fields.shown(value),
            f"in [{fields.shown(units.units_to_decimal(lo, units.NG_PER_UG))}, "
            f"{fields.shown(units.units_to_decimal(hi, units.NG_PER_UG))}] ug/day",
            detail=f"the {model.name} rate range at {drug.concentration_ug_per_ml} ug/mL",
        )
    return dose


def _bolus_dose(value: Any, field: str, entry: LibraryEntry) -> int:
    bounds = entry.bolus_ng
    return fields.scaled(value, field, units.NG_PER_UG, bounds.lower_hard, bounds.upper_hard, "ug")


def _programme(t: Any, drug: Any, entry: Any, model: Any) -> Any:
    if any_invalid(t, drug, entry, model):
        return INVALID
    mode = t.get("mode", fields.choice, [m.value for m in ProgrammeMode])
    if mode is INVALID:
        return INVALID
    mode = ProgrammeMode(mode)
    if mode is ProgrammeMode.FLEX:
        steps = _steps(t.tables("steps", low=1, high=MAX_FLEX_STEPS), drug, entry, model)
        t.done()
        programme = t.doc.run(ProgrammeSpec, mode, steps)
    else:
        dose = t.get("dose_ug_per_day", _dose_rate, drug, entry, model)
        boluses = ()
        if mode is ProgrammeMode.PERIODIC:
            boluses = _periodic_boluses(t.tables("periodic_boluses", low=1, high=MAX_PERIODIC_BOLUSES), drug, entry,
                                        model, dose)
        t.done()
        programme = t.doc.run(lambda d, b: ProgrammeSpec(mode, (FlexStep(0, MIN_PER_DAY, d),), b), dose, boluses)
        if mode is ProgrammeMode.SIMPLE:
            return programme
    return t.doc.run(_daily_total_within, programme, entry)


def _daily_total_within(programme: ProgrammeSpec, entry: LibraryEntry) -> ProgrammeSpec:
    total = programme.daily_total_ng()
    bounds = entry.dose_ng_per_day
    fields.scaled(units.units_to_decimal(total, units.NG_PER_UG), "programme.daily_total_ug", units.NG_PER_UG,
                  bounds.lower_hard, bounds.upper_hard, "ug/day")
    return programme


def _steps(tables: Any, drug: DrugSpec, entry: LibraryEntry, model: PumpModel) -> Any:
    if tables is INVALID:
        return INVALID
    steps = []
    for t in tables:
        start = t.get("start_min", fields.integer, 0, MIN_PER_DAY - 1, "min")
        end = t.get("end_min", fields.integer, 1 if start is INVALID else start + 1, MIN_PER_DAY, "min")
        dose = t.get("dose_ug_per_day", _dose_rate, drug, entry, model)
        t.done()
        steps.append(t.doc.run(FlexStep, start, end, dose))
    return tables[0].doc.run(_cover_the_day, *steps)


def _cover_the_day(*steps: FlexStep) -> tuple[FlexStep, ...]:
    expected_start = 0
    for index, step in enumerate(steps):
        if step.start_min != expected_start:
            problem = "a gap" if step.start_min > expected_start else "an overlap"
            raise ConfigError(
                f"programme.steps[{index}].start_min",
                step.start_min,
                f"{expected_start} (steps in time order must cover 24 h without gaps or overlaps)",
                detail=f"{problem} before this step",
            )
        expected_start = step.end_min
    if expected_start != MIN_PER_DAY:
        raise ConfigError(f"programme.steps[{len(steps) - 1}].end_min", expected_start,
                          f"{MIN_PER_DAY} (the last step must end at midnight)")
    return steps


def _periodic_boluses(tables: Any, drug: DrugSpec, entry: LibraryEntry, model: PumpModel, basal: Any) -> Any:
    if tables is INVALID:
        return INVALID
    boluses = []
    previous_end: Any = 0
    for t in tables:
        time_min = t.get("time_min", fields.integer, 0, MIN_PER_DAY - 1, "min")
        duration = t.get("duration_min", fields.integer, 1, MIN_PER_DAY - (0 if time_min is INVALID else time_min),
                         "min")
        dose = t.get("dose_ug", _bolus_dose, entry)
        t.done()
        t.doc.run(_after, time_min, previous_end, t.name("time_min"))
        t.doc.run(_check_bolus_rate, dose, duration, basal, t.name("duration_min"), drug, model)
        previous_end = t.doc.run(lambda start, length: start + length, time_min, duration)
        boluses.append(t.doc.run(PeriodicBolus, time_min, dose, duration))
    return _sequence_of(boluses)


def _after(time_min: int, previous_end: int, field: str) -> None:
    if time_min < previous_end:
        raise ConfigError(field, time_min, f">= {previous_end} min (boluses in time order, not overlapping)")


def _check_bolus_rate(dose_ng: int, duration_min: int, basal_ng_per_day: int, field: str, drug: DrugSpec,
                      model: PumpModel) -> None:
    """A bolus on top of the basal rate must fit within the pump's maximum rate."""
    bolus_pg_per_h = dose_ng * units.PG_PER_NG * units.MS_PER_H
    bolus_rate = units.div_round(bolus_pg_per_h, duration_min * units.MS_PER_MIN * drug.concentration_ug_per_ml, "up")
    basal_rate = units.rate_nl_per_h_for_dose(basal_ng_per_day, drug.concentration_ug_per_ml, rounding="up")
    if bolus_rate + basal_rate > model.max_rate_nl_per_h:
        headroom = model.max_rate_nl_per_h - basal_rate
        if headroom <= 0:
            raise ConfigError(field, duration_min, "a bolus on a basal rate below the pump maximum",
                              detail=f"the basal rate leaves no room under the {model.name} maximum rate")
        shortest_ms = units.div_round(bolus_pg_per_h, headroom * drug.concentration_ug_per_ml, "up")
        raise ConfigError(field, duration_min, f">= {units.div_round(shortest_ms, units.MS_PER_MIN, 'up')} min",
                          detail=f"faster would exceed the {model.name} maximum rate")


def _lockout_ms(value: Any, field: str, entry: LibraryEntry) -> int:
    low, high = LOCKOUT_MIN_RANGE
    if entry.bolus_lockout_ms is not None:
        low = max(low, units.div_round(entry.bolus_lockout_ms.lower_hard, units.MS_PER_MIN, "up"))
    return fields.integer(value, field, low, high, "min") * units.MS_PER_MIN


def _count(value: Any, field: str, entry: LibraryEntry) -> int:
    low, high = BOLUSES_PER_DAY_RANGE
    if entry.boluses_per_day is not None:
        high = min(high, entry.boluses_per_day.upper_hard)
    return fields.integer(value, field, low, high, "per day")


def _enabled(t: Table) -> Any:
    """A bolus table's ``enabled``; a disabled one may hold nothing else."""
    enabled = t.get("enabled", fields.boolean)
    if enabled is False:
        t.done()
    return enabled


def _clinician_bolus(t: Any, entry: Any) -> Any:
    enabled = INVALID if any_invalid(t, entry) else _enabled(t)
    if enabled is not True:
        return enabled if enabled is INVALID else ClinicianBolusSpec(False)
    dose = t.get("max_dose_ug", _bolus_dose, entry)
    lockout = t.get("lockout_min", _lockout_ms, entry)
    count = t.get("max_per_day", _count, entry)
    t.done()
    return t.doc.run(ClinicianBolusSpec, True, dose, lockout, count)


def _patient_bolus(t: Any, drug: Any, entry: Any, model: Any) -> Any:
    enabled = INVALID if any_invalid(t, drug, entry, model) else _enabled(t)
    if enabled is not True:
        return enabled if enabled is INVALID else PatientBolusSpec(False)
    dose = t.get("dose_ug", _bolus_dose, entry)
    duration_min = t.get("duration_min", fields.integer, *BOLUS_DURATION_MIN_RANGE, "min")
    lockout = t.get("lockout_min", _lockout_ms, entry)
    count = t.get("max_per_day", _count, entry)
    t.done()
    t.doc.run(_check_bolus_rate, dose, duration_min, 0, t.name("duration_min"), drug, model)
    t.doc.run(_lockout_covers_bolus, lockout, duration_min, t.name("lockout_min"))
    return t.doc.run(lambda d, m, lo, c: PatientBolusSpec(True, d, m * units.MS_PER_MIN, lo, c),
                     dose, duration_min, lockout, count)


def _lockout_covers_bolus(lockout_ms: int, duration_min: int, field: str) -> None:
    if lockout_ms < duration_min * units.MS_PER_MIN:
        raise ConfigError(field, lockout_ms // units.MS_PER_MIN, f">= patient_bolus.duration_min ({duration_min} min)")


def _titration(t: Any, patient: Any, drug: Any, entry: Any, programme: Any, model: Any) -> Any:
    if any_invalid(t, patient, drug, entry, programme, model):
        return INVALID
    ug = units.NG_PER_UG
    bounds = entry.dose_ng_per_day
    cap = t.get("max_dose_ug_per_day", fields.scaled, ug, max(programme.daily_total_ng(), bounds.lower_hard),
                bounds.upper_hard, "ug/day")
    increase = t.get("max_increase_pct", fields.integer, 1, patient.origin.titration_cap_pct,
                     f"% (the {patient.origin.value}-origin cap)")
    interval_h = t.get("min_interval_h", fields.integer, *MIN_INTERVAL_H_RANGE, "h")
    confirm = t.get("decrease_confirm_pct", fields.integer, *DECREASE_CONFIRM_PCT_RANGE, "%")
    floor_ng = units.dose_ng_per_day_for_rate(model.min_rate_nl_per_h, drug.concentration_ug_per_ml)
    minimum = t.get("minimum_rate_ug_per_day", fields.scaled, ug, floor_ng, programme.min_dose_ng_per_day(), "ug/day")
    t.done()
    return t.doc.run(lambda c, i, h, d, m: TitrationPolicy(c, i, h * units.MS_PER_H, d, m),
                     cap, increase, interval_h, confirm, minimum)


def _overrides(tables: Any) -> Any:
    if tables is INVALID:
        return INVALID
    overrides = []
    seen: set[str] = set()
    for t in tables:
        override = t.doc.run(SoftLimitOverride, t.get("field", fields.text), t.get("reason", fields.text),
                             t.get("prescriber", fields.person))
        t.done()
        if override is not INVALID and override.field in seen:
            t.doc.record(ConfigError(t.name("field"), override.field, "listed once (duplicate override)"))
        elif override is not INVALID:
            seen.add(override.field)
        overrides.append(override)
    return _sequence_of(overrides)
