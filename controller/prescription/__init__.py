"""Prescriptions: a strict TOML schema, parsed exactly into frozen dataclasses of integer units.

One role per module:

- :mod:`~controller.prescription.model` -- the frozen dataclasses and what the kernel takes from them;
- :mod:`~controller.prescription.library` -- the drug library as the checks see it;
- :mod:`~controller.prescription.parser` -- the file schema, read through :mod:`cython_ext.fields`;
- :mod:`~controller.prescription.render` -- the exact inverse: a prescription as file TOML;
- :mod:`~controller.prescription.review` -- soft-limit breaches (PRX-02) and tenfold changes (VAL-02).

A prescription file names the patient, the drug (a drug-library entry and its
labelled concentration, PRX-08), the implanted pump being emulated, the
programme (simple continuous, flex steps covering 24 h, or a basal rate with
periodic boluses), the clinician and patient bolus settings, and the titration
policy. Every number carries its unit in its key; decimals are parsed exactly
(``tomllib`` with ``parse_float=Decimal``) and converted once, through
:mod:`cython_ext.units`, to the integer units used everywhere else (ng, nL, ms).

Unknown keys, missing keys, wrong types, booleans where numbers belong, NaN,
infinity, negative values and values outside the drug library's hard limits
are rejected with a :class:`PrescriptionError` naming, for every problem of the
file, the dotted field, the value, the allowed range and the line. The file is
bounded and its numbers follow the kit's policy (:mod:`cython_ext.fields`: no
``0x10``, ``1_6`` or ``-0``; no ``16.0`` for an integer). The prescription and
patient IDs are :func:`~cython_ext.fields.identifier` codes and the prescriber a
:func:`~cython_ext.fields.person` name (documented ASCII sets: no homoglyphs).
Parsing builds the whole object or raises: nothing is half-applied. Soft-limit breaches are not errors of the file, but a
breach is only acceptable with a matching ``[[soft_limit_overrides]]`` entry
giving a reason and the prescriber (PRX-02); :func:`assess_change` reports
them, together with the tenfold magnitude checks against the current
prescription (VAL-02).

Example (``hil/prescriptions/spinal_simple_500.toml`` ships with the tool)::

    schema_version = 1
    prescription_id = "RX-0001"
    prescriber = "dr.jones"

    [patient]
    id = "P-0001"
    origin = "spinal"                 # spinal | cerebral | paediatric

    [drug]
    library_code = "baclofen-it-500"  # an entry of the kernel's DEFAULT_LIBRARY
    concentration_ug_per_ml = 500

    [pump]
    model = "synchromed-ii-20"
    reservoir_volume_ml = 20
    dead_volume_ml = 0.25
    low_reservoir_alarm_ml = 2
    low_reservoir_alarm_days = 7
    empty_threshold_ml = 0.5

    [programme]
    mode = "simple"                   # simple | flex | periodic
    dose_ug_per_day = 400

    [clinician_bolus]
    enabled = true
    max_dose_ug = 100
    lockout_min = 240
    max_per_day = 3

    [patient_bolus]
    enabled = false

    [titration]
    max_dose_ug_per_day = 800
    max_increase_pct = 30             # at most the origin's cap: spinal 30, cerebral/paediatric 15
    min_interval_h = 24
    decrease_confirm_pct = 50
    minimum_rate_ug_per_day = 24      # >= the pump's minimum rate at this concentration

    # a flex programme instead: up to 13 [[programme.steps]] tables with start_min, end_min
    # (minutes after midnight, covering 0..1440 exactly) and dose_ug_per_day; a periodic one:
    # dose_ug_per_day plus [[programme.periodic_boluses]] with time_min, dose_ug, duration_min.
    # soft-limit breaches need [[soft_limit_overrides]] with field, reason, prescriber.
"""

from controller.prescription.library import LibraryBounds, LibraryEntry, default_library, library_from
from controller.prescription.model import (
    MIN_PER_DAY,
    PUMP_MODELS,
    SCHEMA_VERSION,
    ClinicianBolusSpec,
    DrugSpec,
    FlexStep,
    Patient,
    PatientBolusSpec,
    PeriodicBolus,
    Prescription,
    ProgrammeMode,
    ProgrammeSpec,
    PumpModel,
    PumpSpec,
    SoftLimitOverride,
    TitrationPolicy,
)
from controller.prescription.parser import (
    BOLUS_DURATION_MIN_RANGE,
    BOLUSES_PER_DAY_RANGE,
    DECREASE_CONFIRM_PCT_RANGE,
    LOCKOUT_MIN_RANGE,
    LOW_ALARM_DAYS_RANGE,
    MAX_TEXT_CHARS,
    MIN_INTERVAL_H_RANGE,
    PrescriptionError,
    load_prescription,
    parse_prescription,
)
from controller.prescription.render import render_prescription
from controller.prescription.review import (
    MAGNITUDE_FACTOR,
    ChangeAssessment,
    MagnitudeChange,
    SoftLimitBreach,
    assess_change,
    file_value,
    is_magnitude_change,
    magnitude_changes,
    soft_limit_breaches,
)

__all__ = [
    "BOLUSES_PER_DAY_RANGE",
    "BOLUS_DURATION_MIN_RANGE",
    "DECREASE_CONFIRM_PCT_RANGE",
    "LOCKOUT_MIN_RANGE",
    "LOW_ALARM_DAYS_RANGE",
    "MAGNITUDE_FACTOR",
    "MAX_TEXT_CHARS",
    "MIN_INTERVAL_H_RANGE",
    "MIN_PER_DAY",
    "PUMP_MODELS",
    "SCHEMA_VERSION",
    "ChangeAssessment",
    "ClinicianBolusSpec",
    "DrugSpec",
    "FlexStep",
    "LibraryBounds",
    "LibraryEntry",
    "MagnitudeChange",
    "Patient",
    "PatientBolusSpec",
    "PeriodicBolus",
    "Prescription",
    "PrescriptionError",
    "ProgrammeMode",
    "ProgrammeSpec",
    "PumpModel",
    "PumpSpec",
    "SoftLimitBreach",
    "SoftLimitOverride",
    "TitrationPolicy",
    "assess_change",
    "default_library",
    "file_value",
    "is_magnitude_change",
    "library_from",
    "load_prescription",
    "magnitude_changes",
    "parse_prescription",
    "render_prescription",
    "soft_limit_breaches",
]
