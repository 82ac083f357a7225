"""Prescriptions: a strict TOML schema, parsed exactly into frozen dataclasses of integer units.

A prescription file names the patient, the drug (a drug-library entry and its
labelled concentration, PRX-08), the implanted pump being emulated, the
programme (simple continuous, flex steps covering 24 h, or a basal rate with
periodic boluses), the clinician and patient bolus settings, and the titration
policy. Every number carries its unit in its key; decimals are parsed exactly
(``tomllib`` with ``parse_float=Decimal``) and converted once, through
:mod:`cython_ext.units`, to the integer units used everywhere else (ng, nL, ms).

Unknown keys, missing keys, wrong types, booleans where numbers belong, NaN,
infinity, negative values and values outside the drug library's hard limits
are rejected with a :class:`~cython_ext.errors.ConfigError` naming the dotted field,
the value and the allowed range. Parsing builds the whole object or raises:
nothing is half-applied. Soft-limit breaches are not errors of the file, but a
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

from __future__ import annotations

import enum
import hashlib
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cython_ext import units
from cython_ext.errors import ConfigError
from cython_ext.vocabulary import MAX_FLEX_STEPS, MAX_PERIODIC_BOLUSES, Origin

#: The only schema version this parser reads.
SCHEMA_VERSION = 1
#: Minutes in one programme day.
MIN_PER_DAY = 1440
#: A value at least this many times, or at most 1/this of, the current one needs confirmation (VAL-02).
MAGNITUDE_FACTOR = 10
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
#: Longest text field, characters.
MAX_TEXT_CHARS = 200


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
        (sizes bridge and priming boluses).
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
        the lockout the longer and the count the smaller. Priming and bridge boluses are
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
        return _to_document(self)

    def to_toml(self) -> str:
        """Render as prescription-file TOML; ``parse_prescription(p.to_toml()) == p``."""
        return render_prescription(self)

    def numeric_fields(self) -> dict[str, int]:
        """Every numeric value in internal units, by dotted file path (used for magnitude checks)."""
        return dict(_numeric_fields(self))


# ---------------------------------------------------------------------------------------------------
# drug library access


@dataclass(frozen=True)
class LibraryBounds:
    """Hard and soft limits of one quantity in one drug-library entry (internal units).

    :raises ConfigError: unless ``0 <= lower_hard <= lower_soft <= upper_soft <= upper_hard`` (VAL-03).
    """

    lower_hard: int
    lower_soft: int
    upper_soft: int
    upper_hard: int

    def __post_init__(self) -> None:
        if not 0 <= self.lower_hard <= self.lower_soft <= self.upper_soft <= self.upper_hard:
            raise ConfigError(
                "library.bounds",
                (self.lower_hard, self.lower_soft, self.upper_soft, self.upper_hard),
                "ordered 0 <= lower_hard <= lower_soft <= upper_soft <= upper_hard",
            )


@dataclass(frozen=True)
class LibraryEntry:
    """What the prescription checks need from one drug-library entry (a view of the kernel's ``DrugLimits``).

    :param code: entry code.
    :param concentration_ug_per_ml: the labelled concentration, µg/mL.
    :param screening_only: True for the screening concentration (not for pump programmes).
    :param dose_ng_per_day: bounds of the daily dose, ng/day.
    :param bolus_ng: bounds of a single bolus, ng.
    :param bolus_lockout_ms: bounds of the bolus lockout, ms (None if the library has none).
    :param boluses_per_day: bounds of boluses per day (None if the library has none).
    :param rate_nl_per_h: bounds of any programmed rate, nL/h (None if the library has none).
    """

    code: str
    concentration_ug_per_ml: int
    screening_only: bool
    dose_ng_per_day: LibraryBounds
    bolus_ng: LibraryBounds
    bolus_lockout_ms: LibraryBounds | None = None
    boluses_per_day: LibraryBounds | None = None
    rate_nl_per_h: LibraryBounds | None = None


def _bounds(obj: Any) -> LibraryBounds:
    return LibraryBounds(int(obj.lower_hard), int(obj.lower_soft), int(obj.upper_soft), int(obj.upper_hard))


def _entry_from_kernel(limits: Any) -> LibraryEntry:
    def optional(name: str) -> LibraryBounds | None:
        value = getattr(limits, name, None)
        return _bounds(value) if value is not None and hasattr(value, "upper_hard") else None

    return LibraryEntry(
        code=str(limits.code),
        concentration_ug_per_ml=int(limits.concentration_ug_per_ml),
        screening_only=bool(limits.screening_only),
        dose_ng_per_day=_bounds(limits.dose_ng_per_day),
        bolus_ng=_bounds(limits.bolus_ng),
        bolus_lockout_ms=optional("bolus_lockout_ms"),
        boluses_per_day=optional("boluses_per_day"),
        rate_nl_per_h=optional("rate_nl_per_h"),
    )


def library_from(drug_limits: Mapping[Any, Any] | Sequence[Any]) -> Mapping[str, LibraryEntry]:
    """A prescription library from kernel ``DrugLimits`` entries (a mapping's values, or a sequence).

    :param drug_limits: e.g. ``kernel.DEFAULT_LIBRARY``.
    :return: entries keyed by their code.
    """
    entries = drug_limits.values() if isinstance(drug_limits, Mapping) else drug_limits
    return MappingProxyType({e.code: _entry_from_kernel(e) for e in entries})


def default_library() -> Mapping[str, LibraryEntry]:
    """The kernel's drug library (``DEFAULT_LIBRARY``), keyed by entry code.

    :raises ImportError: if the safety kernel is not built (see ``cython_ext``); the
        library is never silently taken from elsewhere.
    """
    from cython_ext import kernel

    return library_from(kernel.DEFAULT_LIBRARY)


# ---------------------------------------------------------------------------------------------------
# parsing

_Doc = Mapping[str, Any]


class _Plain(str):
    """Exact decimal text that shows without quotes in error messages (``=400.5``, not ``=Decimal('400.5')``)."""

    def __repr__(self) -> str:
        return str(self)


def _shown(value: Any) -> Any:
    """How a file value appears in a :class:`ConfigError`: decimals as plain text, the rest as given."""
    return _Plain(f"{value:f}") if isinstance(value, Decimal) and value.is_finite() else value


def _keys(doc: _Doc, path: str, required: Sequence[str], optional: Sequence[str] = ()) -> None:
    allowed = set(required) | set(optional)
    for key in doc:
        if key not in allowed:
            dotted = f"{path}.{key}" if path else key
            raise ConfigError(dotted, doc[key], f"absent (unknown key; allowed here: {sorted(allowed)})")
    for key in required:
        if key not in doc:
            dotted = f"{path}.{key}" if path else key
            raise ConfigError(dotted, None, "present (required key is missing)")


def _table(doc: _Doc, key: str, path: str = "") -> _Doc:
    value = doc[key]
    dotted = f"{path}.{key}" if path else key
    if not isinstance(value, Mapping):
        raise ConfigError(dotted, value, "a table")
    return value


def _text(value: Any, dotted: str, choices: Sequence[str] | None = None) -> str:
    if not isinstance(value, str):
        raise ConfigError(dotted, value, "a string")
    if choices is not None:
        if value not in choices:
            raise ConfigError(dotted, value, f"one of {list(choices)}")
        return value
    if not value or value != value.strip() or len(value) > MAX_TEXT_CHARS or not value.isprintable():
        raise ConfigError(dotted, value, f"a non-empty printable string of at most {MAX_TEXT_CHARS} characters")
    return value


def _bool(value: Any, dotted: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(dotted, value, "true or false")
    return value


def _int(value: Any, dotted: str, low: int, high: int, unit: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(dotted, value, f"an integer in [{low}, {high}] {unit}".rstrip())
    if not low <= value <= high:
        raise ConfigError(dotted, value, f"in [{low}, {high}] {unit}".rstrip())
    return value


def _decimal(value: Any, dotted: str, scale: int, unit: str, *, allow_zero: bool = False) -> int:
    """An exact decimal number (TOML int or float parsed as Decimal) in ``unit``, times ``scale``."""
    sign = ">= 0" if allow_zero else "> 0"
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise ConfigError(dotted, value, f"a number {sign} {unit}")
    if isinstance(value, Decimal) and not value.is_finite():
        raise ConfigError(dotted, value, f"a finite number {sign} {unit}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(dotted, _shown(value), f"{sign} {unit}")
    try:
        return units.decimal_to_units(value, scale, field=dotted)
    except ConfigError as exc:
        raise ConfigError(dotted, _shown(value), f"a multiple of {Decimal(1) / scale:f} {unit}",
                          detail=exc.detail) from exc


def _within(internal: int, shown: Any, dotted: str, low: int, high: int, scale: int, unit: str) -> None:
    if not low <= internal <= high:
        lo = units.units_to_decimal(low, scale).normalize()
        hi = units.units_to_decimal(high, scale).normalize()
        raise ConfigError(dotted, _shown(shown), f"in [{lo:f}, {hi:f}] {unit}")


def parse_prescription(text: str, *, library: Mapping[str, LibraryEntry] | None = None) -> Prescription:
    """Parse and validate prescription TOML text.

    :param text: the file contents.
    :param library: drug library keyed by entry code; defaults to the kernel's ``DEFAULT_LIBRARY``.
    :return: the validated :class:`Prescription`.
    :raises PrescriptionError: (a :class:`ConfigError`) naming the dotted field, the value and the
        allowed range of the first problem, with every problem found in ``errors``; nothing is
        returned half-built.
    :raises ConfigError: for text that is not TOML, or a stale soft-limit override.
    """
    if not isinstance(text, str):
        raise ConfigError("prescription", type(text).__name__, "TOML text (str)")
    try:
        doc = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("prescription", "<text>", "valid TOML", detail=str(exc)) from exc
    lib = default_library() if library is None else library
    prescription = _parse_document(doc, lib)
    return replace(prescription, source_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest())


def load_prescription(path: str | Path, *, library: Mapping[str, LibraryEntry] | None = None) -> Prescription:
    """Read and validate a prescription file.

    :param path: path of a UTF-8 TOML file.
    :param library: drug library; defaults to the kernel's ``DEFAULT_LIBRARY``.
    :raises ConfigError: if the file cannot be read or is invalid.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("path", str(path), "a readable UTF-8 file", detail=str(exc)) from exc
    return parse_prescription(text, library=library)


_TOP_KEYS = (
    "schema_version",
    "prescription_id",
    "prescriber",
    "patient",
    "drug",
    "pump",
    "programme",
    "clinician_bolus",
    "patient_bolus",
    "titration",
)


class PrescriptionError(ConfigError):
    """Every problem found in a prescription file.

    ``field``, ``value`` and ``allowed`` are those of the first problem; :attr:`errors`
    holds all of them in file order. Sections that depend on a broken one (the
    programme on the drug and pump, say) are not checked, so fixing one problem can
    reveal another.

    :param errors: the problems found, at least one.
    """

    def __init__(self, errors: Sequence[ConfigError]) -> None:
        first = errors[0]
        details = [_detail_of(first)] if _detail_of(first) else []
        if len(errors) > 1:
            details.append(f"{len(errors) - 1} more problem(s): " + "; ".join(str(e) for e in errors[1:]))
        super().__init__(first.field, first.value, first.allowed, detail="; ".join(details),
                         error_code=first.error_code)
        self.errors: tuple[ConfigError, ...] = tuple(errors)


def _detail_of(error: ConfigError) -> str:
    base = f"{error.field} (={error.value!r}) must be {error.allowed}"
    text = str(error)
    return text[len(base) + 2:] if text.startswith(base + ": ") else ""


class _Collector:
    """Runs section parsers, keeping the first error of each section."""

    def __init__(self) -> None:
        self.errors: list[ConfigError] = []

    def run(self, parse: Any, *args: Any) -> Any:
        if any(arg is None for arg in args):
            return None
        try:
            return parse(*args)
        except ConfigError as exc:
            self.errors.append(exc)
            return None


def _parse_document(doc: _Doc, library: Mapping[str, LibraryEntry]) -> Prescription:
    found = _Collector()
    allowed = {*_TOP_KEYS, "soft_limit_overrides"}
    for key in doc:
        if key not in allowed:
            found.errors.append(ConfigError(key, doc[key], f"absent (unknown key; allowed here: {sorted(allowed)})"))
    for key in _TOP_KEYS:
        if key not in doc:
            found.errors.append(ConfigError(key, None, "present (required key is missing)"))

    def section(key: str, parse: Any, *deps: Any) -> Any:
        if key not in doc:
            return None
        return found.run(lambda *a: parse(_table(doc, key), *a), *deps)

    def scalar(key: str, parse: Any, *args: Any) -> Any:
        return found.run(parse, doc[key], key, *args) if key in doc else None

    scalar("schema_version", _int, SCHEMA_VERSION, SCHEMA_VERSION)
    prescription_id = scalar("prescription_id", _text)
    prescriber = scalar("prescriber", _text)
    patient = section("patient", _parse_patient)
    drug_and_entry = section("drug", _parse_drug, library)
    drug, entry = drug_and_entry if drug_and_entry is not None else (None, None)
    pump = section("pump", _parse_pump)
    model = pump.pump_model if pump is not None else None
    programme = section("programme", _parse_programme, drug, entry, model)
    clinician_bolus = section("clinician_bolus", _parse_clinician_bolus, entry)
    patient_bolus = section("patient_bolus", _parse_patient_bolus, drug, entry, model)
    titration = section("titration", _parse_titration, patient, drug, entry, programme, model)
    overrides = found.run(_parse_overrides, doc.get("soft_limit_overrides", []))
    if found.errors:
        raise PrescriptionError(found.errors)
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
    for override in overrides:
        if override.field not in breaches:
            raise ConfigError(
                "soft_limit_overrides.field",
                override.field,
                f"a field that breaches a soft limit (breaching now: {sorted(breaches)})",
            )
    return prescription


def _parse_patient(doc: _Doc) -> Patient:
    _keys(doc, "patient", ("id", "origin"))
    return Patient(
        patient_id=_text(doc["id"], "patient.id"),
        origin=Origin(_text(doc["origin"], "patient.origin", [o.value for o in Origin])),
    )


def _parse_drug(doc: _Doc, library: Mapping[str, LibraryEntry]) -> tuple[DrugSpec, LibraryEntry]:
    _keys(doc, "drug", ("library_code", "concentration_ug_per_ml"))
    code = _text(doc["library_code"], "drug.library_code", sorted(library))
    entry = library[code]
    if entry.screening_only:
        usable = sorted(c for c, e in library.items() if not e.screening_only)
        raise ConfigError("drug.library_code", code, f"an entry for pump programmes, one of {usable}",
                          detail="screening-only concentration")
    concentration = _int(doc["concentration_ug_per_ml"], "drug.concentration_ug_per_ml", 1, 10**6, "ug/mL")
    if concentration != entry.concentration_ug_per_ml:
        raise ConfigError(
            "drug.concentration_ug_per_ml",
            concentration,
            f"{entry.concentration_ug_per_ml} ug/mL (the labelled concentration of {code})",
        )
    return DrugSpec(code, concentration), entry


def _parse_pump(doc: _Doc) -> PumpSpec:
    _keys(
        doc,
        "pump",
        (
            "model",
            "reservoir_volume_ml",
            "dead_volume_ml",
            "low_reservoir_alarm_ml",
            "low_reservoir_alarm_days",
            "empty_threshold_ml",
        ),
    )
    model = PUMP_MODELS[_text(doc["model"], "pump.model", sorted(PUMP_MODELS))]
    ml = units.NL_PER_ML
    reservoir = _decimal(doc["reservoir_volume_ml"], "pump.reservoir_volume_ml", ml, "mL")
    _within(reservoir, doc["reservoir_volume_ml"], "pump.reservoir_volume_ml", 1, model.capacity_nl, ml, "mL")
    dead = _decimal(doc["dead_volume_ml"], "pump.dead_volume_ml", ml, "mL", allow_zero=True)
    _within(dead, doc["dead_volume_ml"], "pump.dead_volume_ml", 0, ml, ml, "mL")
    empty = _decimal(doc["empty_threshold_ml"], "pump.empty_threshold_ml", ml, "mL", allow_zero=True)
    low = _decimal(doc["low_reservoir_alarm_ml"], "pump.low_reservoir_alarm_ml", ml, "mL")
    _within(low, doc["low_reservoir_alarm_ml"], "pump.low_reservoir_alarm_ml", 1, reservoir - 1, ml, "mL")
    _within(empty, doc["empty_threshold_ml"], "pump.empty_threshold_ml", 0, low - 1, ml, "mL")
    days = _int(doc["low_reservoir_alarm_days"], "pump.low_reservoir_alarm_days", *LOW_ALARM_DAYS_RANGE, "days")
    return PumpSpec(model.name, reservoir, dead, low, days, empty)


def _check_dose_rate(
    dose_ng_per_day: int, shown: Any, dotted: str, drug: DrugSpec, entry: LibraryEntry, model: PumpModel
) -> None:
    bounds = entry.dose_ng_per_day
    _within(dose_ng_per_day, shown, dotted, bounds.lower_hard, bounds.upper_hard, units.NG_PER_UG, "ug/day")
    rate = units.rate_nl_per_h_for_dose(dose_ng_per_day, drug.concentration_ug_per_ml)
    if not model.min_rate_nl_per_h <= rate <= model.max_rate_nl_per_h:
        lo = units.dose_ng_per_day_for_rate(model.min_rate_nl_per_h, drug.concentration_ug_per_ml)
        hi = units.dose_ng_per_day_for_rate(model.max_rate_nl_per_h, drug.concentration_ug_per_ml, rounding="down")
        raise ConfigError(
            dotted,
            _shown(shown),
            f"in [{units.units_to_decimal(lo, units.NG_PER_UG).normalize():f}, "
            f"{units.units_to_decimal(hi, units.NG_PER_UG).normalize():f}] ug/day",
            detail=f"the {model.name} rate range at {drug.concentration_ug_per_ml} ug/mL",
        )


def _parse_programme(doc: _Doc, drug: DrugSpec, entry: LibraryEntry, model: PumpModel) -> ProgrammeSpec:
    if "mode" not in doc:
        raise ConfigError("programme.mode", None, "present (required key is missing)")
    mode = ProgrammeMode(_text(doc["mode"], "programme.mode", [m.value for m in ProgrammeMode]))
    ug = units.NG_PER_UG
    if mode is ProgrammeMode.SIMPLE:
        _keys(doc, "programme", ("mode", "dose_ug_per_day"))
        dose = _decimal(doc["dose_ug_per_day"], "programme.dose_ug_per_day", ug, "ug/day")
        _check_dose_rate(dose, doc["dose_ug_per_day"], "programme.dose_ug_per_day", drug, entry, model)
        return ProgrammeSpec(mode, (FlexStep(0, MIN_PER_DAY, dose),))
    if mode is ProgrammeMode.PERIODIC:
        _keys(doc, "programme", ("mode", "dose_ug_per_day", "periodic_boluses"))
        dose = _decimal(doc["dose_ug_per_day"], "programme.dose_ug_per_day", ug, "ug/day")
        _check_dose_rate(dose, doc["dose_ug_per_day"], "programme.dose_ug_per_day", drug, entry, model)
        boluses = _parse_periodic_boluses(doc["periodic_boluses"], drug, entry, model, dose)
        programme = ProgrammeSpec(mode, (FlexStep(0, MIN_PER_DAY, dose),), boluses)
    else:
        _keys(doc, "programme", ("mode", "steps"))
        programme = ProgrammeSpec(mode, _parse_steps(doc["steps"], drug, entry, model))
    total = programme.daily_total_ng()
    bounds = entry.dose_ng_per_day
    _within(total, units.units_to_decimal(total, ug), "programme.daily_total_ug", bounds.lower_hard,
            bounds.upper_hard, ug, "ug/day")
    return programme


def _array_of_tables(value: Any, dotted: str, max_items: int) -> list[_Doc]:
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise ConfigError(dotted, value, "an array of tables")
    if not 1 <= len(value) <= max_items:
        raise ConfigError(dotted, f"{len(value)} entries", f"between 1 and {max_items} entries")
    return value


def _parse_steps(value: Any, drug: DrugSpec, entry: LibraryEntry, model: PumpModel) -> tuple[FlexStep, ...]:
    items = _array_of_tables(value, "programme.steps", MAX_FLEX_STEPS)
    steps = []
    for index, item in enumerate(items):
        path = f"programme.steps[{index}]"
        _keys(item, path, ("start_min", "end_min", "dose_ug_per_day"))
        start = _int(item["start_min"], f"{path}.start_min", 0, MIN_PER_DAY - 1, "min")
        end = _int(item["end_min"], f"{path}.end_min", start + 1, MIN_PER_DAY, "min")
        dose = _decimal(item["dose_ug_per_day"], f"{path}.dose_ug_per_day", units.NG_PER_UG, "ug/day")
        _check_dose_rate(dose, item["dose_ug_per_day"], f"{path}.dose_ug_per_day", drug, entry, model)
        steps.append(FlexStep(start, end, dose))
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
        raise ConfigError(
            f"programme.steps[{len(steps) - 1}].end_min",
            expected_start,
            f"{MIN_PER_DAY} (the last step must end at midnight)",
        )
    return tuple(steps)


def _parse_periodic_boluses(
    value: Any, drug: DrugSpec, entry: LibraryEntry, model: PumpModel, basal_ng_per_day: int
) -> tuple[PeriodicBolus, ...]:
    items = _array_of_tables(value, "programme.periodic_boluses", MAX_PERIODIC_BOLUSES)
    boluses = []
    previous_end = 0
    for index, item in enumerate(items):
        path = f"programme.periodic_boluses[{index}]"
        _keys(item, path, ("time_min", "dose_ug", "duration_min"))
        time_min = _int(item["time_min"], f"{path}.time_min", 0, MIN_PER_DAY - 1, "min")
        duration = _int(item["duration_min"], f"{path}.duration_min", 1, MIN_PER_DAY - time_min, "min")
        dose = _decimal(item["dose_ug"], f"{path}.dose_ug", units.NG_PER_UG, "ug")
        b = entry.bolus_ng
        _within(dose, item["dose_ug"], f"{path}.dose_ug", b.lower_hard, b.upper_hard, units.NG_PER_UG, "ug")
        if time_min < previous_end:
            raise ConfigError(
                f"{path}.time_min", time_min, f">= {previous_end} min (boluses in time order, not overlapping)"
            )
        _check_bolus_rate(dose, duration * units.MS_PER_MIN, basal_ng_per_day, f"{path}.duration_min", duration,
                          drug, model)
        previous_end = time_min + duration
        boluses.append(PeriodicBolus(time_min, dose, duration))
    return tuple(boluses)


def _check_bolus_rate(
    dose_ng: int, duration_ms: int, basal_ng_per_day: int, dotted: str, shown: Any, drug: DrugSpec, model: PumpModel
) -> None:
    """A bolus on top of the basal rate must fit within the pump's maximum rate."""
    bolus_pg_per_h = dose_ng * units.PG_PER_NG * units.MS_PER_H
    bolus_rate = units.div_round(bolus_pg_per_h, duration_ms * drug.concentration_ug_per_ml, "up")
    basal_rate = units.rate_nl_per_h_for_dose(basal_ng_per_day, drug.concentration_ug_per_ml, rounding="up")
    if bolus_rate + basal_rate > model.max_rate_nl_per_h:
        headroom = model.max_rate_nl_per_h - basal_rate
        if headroom <= 0:
            raise ConfigError(dotted, shown, "a bolus on a basal rate below the pump maximum",
                              detail=f"the basal rate leaves no room under the {model.name} maximum rate")
        shortest_ms = units.div_round(bolus_pg_per_h, headroom * drug.concentration_ug_per_ml, "up")
        raise ConfigError(
            dotted,
            shown,
            f">= {units.div_round(shortest_ms, units.MS_PER_MIN, 'up')} min",
            detail=f"faster would exceed the {model.name} maximum rate",
        )


def _parse_clinician_bolus(doc: _Doc, entry: LibraryEntry) -> ClinicianBolusSpec:
    if "enabled" not in doc:
        raise ConfigError("clinician_bolus.enabled", None, "present (required key is missing)")
    if not _bool(doc["enabled"], "clinician_bolus.enabled"):
        _keys(doc, "clinician_bolus", ("enabled",))
        return ClinicianBolusSpec(False)
    _keys(doc, "clinician_bolus", ("enabled", "max_dose_ug", "lockout_min", "max_per_day"))
    dose = _decimal(doc["max_dose_ug"], "clinician_bolus.max_dose_ug", units.NG_PER_UG, "ug")
    b = entry.bolus_ng
    _within(dose, doc["max_dose_ug"], "clinician_bolus.max_dose_ug", b.lower_hard, b.upper_hard, units.NG_PER_UG,
            "ug")
    lockout = _parse_lockout(doc["lockout_min"], "clinician_bolus.lockout_min", entry)
    count = _parse_count(doc["max_per_day"], "clinician_bolus.max_per_day", entry)
    return ClinicianBolusSpec(True, dose, lockout, count)


def _parse_lockout(value: Any, dotted: str, entry: LibraryEntry) -> int:
    low, high = LOCKOUT_MIN_RANGE
    if entry.bolus_lockout_ms is not None:
        low = max(low, units.div_round(entry.bolus_lockout_ms.lower_hard, units.MS_PER_MIN, "up"))
    return _int(value, dotted, low, high, "min") * units.MS_PER_MIN


def _parse_count(value: Any, dotted: str, entry: LibraryEntry) -> int:
    low, high = BOLUSES_PER_DAY_RANGE
    if entry.boluses_per_day is not None:
        high = min(high, entry.boluses_per_day.upper_hard)
    return _int(value, dotted, low, high, "per day")


def _parse_patient_bolus(doc: _Doc, drug: DrugSpec, entry: LibraryEntry, model: PumpModel) -> PatientBolusSpec:
    if "enabled" not in doc:
        raise ConfigError("patient_bolus.enabled", None, "present (required key is missing)")
    if not _bool(doc["enabled"], "patient_bolus.enabled"):
        _keys(doc, "patient_bolus", ("enabled",))
        return PatientBolusSpec(False)
    _keys(doc, "patient_bolus", ("enabled", "dose_ug", "duration_min", "lockout_min", "max_per_day"))
    dose = _decimal(doc["dose_ug"], "patient_bolus.dose_ug", units.NG_PER_UG, "ug")
    b = entry.bolus_ng
    _within(dose, doc["dose_ug"], "patient_bolus.dose_ug", b.lower_hard, b.upper_hard, units.NG_PER_UG, "ug")
    duration_min = _int(doc["duration_min"], "patient_bolus.duration_min", *BOLUS_DURATION_MIN_RANGE, "min")
    _check_bolus_rate(dose, duration_min * units.MS_PER_MIN, 0, "patient_bolus.duration_min", duration_min, drug,
                      model)
    lockout = _parse_lockout(doc["lockout_min"], "patient_bolus.lockout_min", entry)
    if lockout < duration_min * units.MS_PER_MIN:
        raise ConfigError("patient_bolus.lockout_min", doc["lockout_min"],
                          f">= patient_bolus.duration_min ({duration_min} min)")
    count = _parse_count(doc["max_per_day"], "patient_bolus.max_per_day", entry)
    return PatientBolusSpec(True, dose, duration_min * units.MS_PER_MIN, lockout, count)


def _parse_titration(
    doc: _Doc, patient: Patient, drug: DrugSpec, entry: LibraryEntry, programme: ProgrammeSpec, model: PumpModel
) -> TitrationPolicy:
    _keys(
        doc,
        "titration",
        ("max_dose_ug_per_day", "max_increase_pct", "min_interval_h", "decrease_confirm_pct",
         "minimum_rate_ug_per_day"),
    )
    ug = units.NG_PER_UG
    bounds = entry.dose_ng_per_day
    cap = _decimal(doc["max_dose_ug_per_day"], "titration.max_dose_ug_per_day", ug, "ug/day")
    total = programme.daily_total_ng()
    _within(cap, doc["max_dose_ug_per_day"], "titration.max_dose_ug_per_day", max(total, bounds.lower_hard),
            bounds.upper_hard, ug, "ug/day")
    origin_cap = patient.origin.titration_cap_pct
    increase = _int(doc["max_increase_pct"], "titration.max_increase_pct", 1, origin_cap,
                    f"% (the {patient.origin.value}-origin cap)")
    interval_h = _int(doc["min_interval_h"], "titration.min_interval_h", *MIN_INTERVAL_H_RANGE, "h")
    confirm = _int(doc["decrease_confirm_pct"], "titration.decrease_confirm_pct", *DECREASE_CONFIRM_PCT_RANGE, "%")
    minimum = _decimal(doc["minimum_rate_ug_per_day"], "titration.minimum_rate_ug_per_day", ug, "ug/day")
    floor_ng = units.dose_ng_per_day_for_rate(model.min_rate_nl_per_h, drug.concentration_ug_per_ml)
    _within(minimum, doc["minimum_rate_ug_per_day"], "titration.minimum_rate_ug_per_day", floor_ng,
            programme.min_dose_ng_per_day(), ug, "ug/day")
    return TitrationPolicy(cap, increase, interval_h * units.MS_PER_H, confirm, minimum)


def _parse_overrides(value: Any) -> tuple[SoftLimitOverride, ...]:
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise ConfigError("soft_limit_overrides", value, "an array of tables")
    overrides = []
    seen: set[str] = set()
    for index, item in enumerate(value):
        path = f"soft_limit_overrides[{index}]"
        _keys(item, path, ("field", "reason", "prescriber"))
        override = SoftLimitOverride(
            _text(item["field"], f"{path}.field"),
            _text(item["reason"], f"{path}.reason"),
            _text(item["prescriber"], f"{path}.prescriber"),
        )
        if override.field in seen:
            raise ConfigError(f"{path}.field", override.field, "listed once (duplicate override)")
        seen.add(override.field)
        overrides.append(override)
    return tuple(overrides)


# ---------------------------------------------------------------------------------------------------
# rendering (the exact inverse of parsing)


def _dec(value: int, scale: int) -> Decimal:
    """Exact decimal without trailing zeros or exponent (``400``, ``0.25``)."""
    return Decimal(f"{units.units_to_decimal(value, scale).normalize():f}")


def _to_document(p: Prescription) -> dict[str, Any]:
    ug, ml = units.NG_PER_UG, units.NL_PER_ML
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "prescription_id": p.prescription_id,
        "prescriber": p.prescriber,
        "patient": {"id": p.patient.patient_id, "origin": p.patient.origin.value},
        "drug": {"library_code": p.drug.library_code, "concentration_ug_per_ml": p.drug.concentration_ug_per_ml},
        "pump": {
            "model": p.pump.model,
            "reservoir_volume_ml": _dec(p.pump.reservoir_volume_nl, ml),
            "dead_volume_ml": _dec(p.pump.dead_volume_nl, ml),
            "low_reservoir_alarm_ml": _dec(p.pump.low_reservoir_alarm_nl, ml),
            "low_reservoir_alarm_days": p.pump.low_reservoir_alarm_days,
            "empty_threshold_ml": _dec(p.pump.empty_threshold_nl, ml),
        },
    }
    programme: dict[str, Any] = {"mode": p.programme.mode.value}
    if p.programme.mode is ProgrammeMode.FLEX:
        programme["steps"] = [
            {"start_min": s.start_min, "end_min": s.end_min, "dose_ug_per_day": _dec(s.dose_ng_per_day, ug)}
            for s in p.programme.steps
        ]
    else:
        programme["dose_ug_per_day"] = _dec(p.programme.steps[0].dose_ng_per_day, ug)
    if p.programme.mode is ProgrammeMode.PERIODIC:
        programme["periodic_boluses"] = [
            {"time_min": b.time_min, "dose_ug": _dec(b.dose_ng, ug), "duration_min": b.duration_min}
            for b in p.programme.periodic_boluses
        ]
    doc["programme"] = programme
    cb = p.clinician_bolus
    doc["clinician_bolus"] = (
        {
            "enabled": True,
            "max_dose_ug": _dec(cb.max_dose_ng, ug),
            "lockout_min": cb.lockout_ms // units.MS_PER_MIN,
            "max_per_day": cb.max_per_day,
        }
        if cb.enabled
        else {"enabled": False}
    )
    pb = p.patient_bolus
    doc["patient_bolus"] = (
        {
            "enabled": True,
            "dose_ug": _dec(pb.dose_ng, ug),
            "duration_min": pb.duration_ms // units.MS_PER_MIN,
            "lockout_min": pb.lockout_ms // units.MS_PER_MIN,
            "max_per_day": pb.max_per_day,
        }
        if pb.enabled
        else {"enabled": False}
    )
    t = p.titration
    doc["titration"] = {
        "max_dose_ug_per_day": _dec(t.max_dose_ng_per_day, ug),
        "max_increase_pct": t.max_increase_pct,
        "min_interval_h": t.min_interval_ms // units.MS_PER_H,
        "decrease_confirm_pct": t.decrease_confirm_pct,
        "minimum_rate_ug_per_day": _dec(t.minimum_rate_ng_per_day, ug),
    }
    if p.soft_limit_overrides:
        doc["soft_limit_overrides"] = [
            {"field": o.field, "reason": o.reason, "prescriber": o.prescriber} for o in p.soft_limit_overrides
        ]
    return doc


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        text = f"{value:f}"
        return text if "." in text else text
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    raise ConfigError("prescription", type(value).__name__, "renderable as TOML")


def _toml_lines(doc: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    scalars = {k: v for k, v in doc.items() if not isinstance(v, (Mapping, list))}
    for key, value in scalars.items():
        yield f"{key} = {_toml_value(value)}"
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield ""
            yield f"[{name}]"
            yield from _toml_lines(value, f"{name}.")
        elif isinstance(value, list):
            for item in value:
                yield ""
                yield f"[[{name}]]"
                yield from _toml_lines(item, f"{name}.")


def render_prescription(p: Prescription) -> str:
    """Render ``p`` as prescription-file TOML (exact decimals); the inverse of :func:`parse_prescription`."""
    return "\n".join(_toml_lines(_to_document(p))) + "\n"


# ---------------------------------------------------------------------------------------------------
# value checks: soft limits (PRX-02) and tenfold changes (VAL-02)


def file_value(field: str, internal: int) -> Decimal:
    """A value in internal units shown in the unit its dotted file ``field`` names.

    ``file_value("programme.dose_ug_per_day", 400_000) == Decimal("400")``;
    ``file_value("patient_bolus.lockout_min", 14_400_000) == Decimal("240")``.

    :param field: dotted file path (its last part carries the unit).
    :param internal: the value in ng, ng/day, nL, ms or plain count.
    :return: the exact value in the file's unit.
    """
    name = field.rsplit(".", 1)[-1]
    if name.endswith(("_ug", "_ug_per_day")):
        scale = units.NG_PER_UG
    elif name.endswith("_ml"):
        scale = units.NL_PER_ML
    elif name.endswith("_min"):
        scale = units.MS_PER_MIN
    elif name.endswith("_h"):
        scale = units.MS_PER_H
    else:
        scale = 1
    return units.units_to_decimal(internal, scale).normalize() + 0


@dataclass(frozen=True)
class SoftLimitBreach:
    """A value outside the drug library's soft limits (inside its hard limits).

    :param field: dotted file path of the value to change (or override).
    :param value: the value, internal units of ``quantity``.
    :param bound: ``"lower_soft"`` or ``"upper_soft"``.
    :param limit: the soft limit, same units.
    :param overridden_by: the matching override, if the prescription has one.
    :param quantity: the library quantity (``dose_ng_per_day``, ``bolus_ng``, ``rate_nl_per_h``,
        ``bolus_lockout_ms``, ``boluses_per_day``).
    """

    field: str
    value: int
    bound: str
    limit: int
    overridden_by: SoftLimitOverride | None = None
    quantity: str = "dose_ng_per_day"

    @property
    def kernel_reason(self) -> str | None:
        """The safety kernel's reason code for this breach (``DOSE_ABOVE_SOFT``...), or None where the
        kernel has no soft limit of its own (lockout, boluses per day)."""
        side = "ABOVE" if self.bound == "upper_soft" else "BELOW"
        prefix = {"dose_ng_per_day": "DOSE", "bolus_ng": "BOLUS", "rate_nl_per_h": "RATE"}.get(self.quantity)
        return f"{prefix}_{side}_SOFT" if prefix else None

    def value_text(self) -> str:
        """The value in display units (``1200 ug/day``, ``169784 nL/h``)."""
        return _quantity_text(self.quantity, self.value)

    def limit_text(self) -> str:
        """The soft limit in display units."""
        return _quantity_text(self.quantity, self.limit)


_QUANTITY_UNITS: Mapping[str, tuple[int, str]] = MappingProxyType(
    {
        "dose_ng_per_day": (units.NG_PER_UG, "ug/day"),
        "bolus_ng": (units.NG_PER_UG, "ug"),
        "rate_nl_per_h": (1, "nL/h"),
        "bolus_lockout_ms": (units.MS_PER_MIN, "min"),
        "boluses_per_day": (1, "per day"),
    }
)


def _quantity_text(quantity: str, internal: int) -> str:
    scale, unit = _QUANTITY_UNITS.get(quantity, (1, ""))
    return f"{units.units_to_decimal(internal, scale).normalize() + 0:f} {unit}".rstrip()


def _soft_checked_values(p: Prescription) -> Iterator[tuple[str, int, str]]:
    """(dotted field, value, library quantity) for every value with soft limits."""
    if p.programme.mode is ProgrammeMode.FLEX:
        for i, s in enumerate(p.programme.steps):
            yield f"programme.steps[{i}].dose_ug_per_day", s.dose_ng_per_day, "dose_ng_per_day"
    else:
        yield "programme.dose_ug_per_day", p.programme.steps[0].dose_ng_per_day, "dose_ng_per_day"
    if p.programme.mode is not ProgrammeMode.SIMPLE:
        yield "programme.daily_total_ug", p.programme.daily_total_ng(), "dose_ng_per_day"
    basal_rate = p.rate_nl_per_h(p.programme.steps[0].dose_ng_per_day)
    for i, (b, triple) in enumerate(zip(p.programme.periodic_boluses, p.kernel_periodic_boluses(), strict=True)):
        yield f"programme.periodic_boluses[{i}].dose_ug", b.dose_ng, "bolus_ng"
        yield f"programme.periodic_boluses[{i}].duration_min", basal_rate + triple[2], "rate_nl_per_h"
    if p.clinician_bolus.enabled:
        yield "clinician_bolus.max_dose_ug", p.clinician_bolus.max_dose_ng, "bolus_ng"
        yield "clinician_bolus.lockout_min", p.clinician_bolus.lockout_ms, "bolus_lockout_ms"
        yield "clinician_bolus.max_per_day", p.clinician_bolus.max_per_day, "boluses_per_day"
    if p.patient_bolus.enabled:
        yield "patient_bolus.dose_ug", p.patient_bolus.dose_ng, "bolus_ng"
        yield "patient_bolus.lockout_min", p.patient_bolus.lockout_ms, "bolus_lockout_ms"
        yield "patient_bolus.max_per_day", p.patient_bolus.max_per_day, "boluses_per_day"
    yield "titration.max_dose_ug_per_day", p.titration.max_dose_ng_per_day, "dose_ng_per_day"


def soft_limit_breaches(
    p: Prescription, library: Mapping[str, LibraryEntry] | None = None
) -> tuple[SoftLimitBreach, ...]:
    """Every value of ``p`` outside its library soft limits, each with its override if any.

    :param p: the prescription.
    :param library: drug library; defaults to the kernel's ``DEFAULT_LIBRARY``.
    """
    lib = default_library() if library is None else library
    entry = lib[p.drug.library_code]
    overrides = {o.field: o for o in p.soft_limit_overrides}
    found = []
    for dotted, value, quantity in _soft_checked_values(p):
        bounds: LibraryBounds | None = getattr(entry, quantity)
        if bounds is None:
            continue
        if value < bounds.lower_soft:
            found.append(
                SoftLimitBreach(dotted, value, "lower_soft", bounds.lower_soft, overrides.get(dotted), quantity)
            )
        elif value > bounds.upper_soft:
            found.append(
                SoftLimitBreach(dotted, value, "upper_soft", bounds.upper_soft, overrides.get(dotted), quantity)
            )
    return tuple(found)


@dataclass(frozen=True)
class MagnitudeChange:
    """A value changed by a factor of :data:`MAGNITUDE_FACTOR` or more, either way (VAL-02).

    :param field: dotted file path of the value.
    :param old: current value, internal units.
    :param new: proposed value, internal units.
    """

    field: str
    old: int
    new: int


def is_magnitude_change(old: int, new: int) -> bool:
    """True if ``new`` is at least 10x, or at most a tenth of, ``old`` (exact integer arithmetic).

    A change from zero to non-zero counts; zero to zero does not.
    """
    if old == new:
        return False
    if old <= 0 or new <= 0:
        return True
    return new >= MAGNITUDE_FACTOR * old or new * MAGNITUDE_FACTOR <= old


def magnitude_changes(current: Prescription, new: Prescription) -> tuple[MagnitudeChange, ...]:
    """Every numeric field present in both prescriptions whose value changed tenfold or more."""
    old_fields = current.numeric_fields()
    return tuple(
        MagnitudeChange(name, old_fields[name], value)
        for name, value in new.numeric_fields().items()
        if name in old_fields and is_magnitude_change(old_fields[name], value)
    )


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


@dataclass(frozen=True)
class ChangeAssessment:
    """What a prescription change needs before it may take effect.

    :param current: the prescription in effect (None for the first one).
    :param new: the proposed prescription.
    :param magnitude_changes: tenfold changes (each needs confirmation, VAL-02).
    :param soft_limit_breaches: soft-limit breaches of ``new`` (each needs an override, PRX-02).
    :param confirmed_magnitude_fields: fields whose tenfold change was confirmed.
    """

    current: Prescription | None
    new: Prescription
    magnitude_changes: tuple[MagnitudeChange, ...]
    soft_limit_breaches: tuple[SoftLimitBreach, ...]
    confirmed_magnitude_fields: frozenset[str] = frozenset()

    @property
    def unconfirmed_magnitude_changes(self) -> tuple[MagnitudeChange, ...]:
        """Tenfold changes nobody has confirmed."""
        return tuple(c for c in self.magnitude_changes if c.field not in self.confirmed_magnitude_fields)

    @property
    def unoverridden_breaches(self) -> tuple[SoftLimitBreach, ...]:
        """Soft-limit breaches without an override."""
        return tuple(b for b in self.soft_limit_breaches if b.overridden_by is None)

    @property
    def acceptable(self) -> bool:
        """True when every tenfold change is confirmed and every soft-limit breach overridden."""
        return not self.unconfirmed_magnitude_changes and not self.unoverridden_breaches

    def kernel_override_kwargs(self) -> dict[str, Any] | None:
        """Keyword arguments for the kernel's ``make_override`` lifting exactly the soft limits this
        prescription overrides (``codes``, ``reason``, ``actor``), or None if it overrides none
        the kernel knows. Journal the overrides before using it (PRX-02)."""
        overridden = [b for b in self.soft_limit_breaches if b.overridden_by is not None and b.kernel_reason]
        if not overridden:
            return None
        return {
            "codes": frozenset(b.kernel_reason for b in overridden),
            "reason": "; ".join(sorted({f"{b.field}: {b.overridden_by.reason}" for b in overridden})),  # type: ignore[union-attr]
            "actor": ", ".join(sorted({b.overridden_by.prescriber for b in overridden})),  # type: ignore[union-attr]
        }

    def require_acceptable(self) -> None:
        """Raise for the first unconfirmed tenfold change or unoverridden soft-limit breach.

        :raises ConfigError: naming the field, the value and what it needs.
        """
        for change in self.unconfirmed_magnitude_changes:
            raise ConfigError(
                change.field,
                _Plain(f"{file_value(change.field, change.new):f}"),
                f"less than {MAGNITUDE_FACTOR}x and more than 1/{MAGNITUDE_FACTOR} of the current "
                f"{file_value(change.field, change.old):f}, or confirmed",
                detail="tenfold change needs magnitude confirmation (VAL-02)",
                error_code="MAGNITUDE_UNCONFIRMED",
            )
        for breach in self.unoverridden_breaches:
            op = ">=" if breach.bound == "lower_soft" else "<="
            raise ConfigError(
                breach.field,
                _Plain(breach.value_text()),
                f"{op} {breach.limit_text()} (soft limit) or overridden with a reason by a prescriber",
                detail="soft-limit breach needs an override (PRX-02)",
                error_code="SOFT_LIMIT_NOT_OVERRIDDEN",
            )


def assess_change(
    current: Prescription | None,
    new: Prescription,
    *,
    confirmed_magnitude_fields: frozenset[str] | set[str] = frozenset(),
    library: Mapping[str, LibraryEntry] | None = None,
) -> ChangeAssessment:
    """Check a proposed prescription against the one in effect.

    :param current: the prescription in effect, or None for the first prescription.
    :param new: the proposed prescription.
    :param confirmed_magnitude_fields: dotted fields whose tenfold change the user confirmed.
    :param library: drug library; defaults to the kernel's ``DEFAULT_LIBRARY``.
    :return: the assessment; call :meth:`ChangeAssessment.require_acceptable` before applying.
    """
    changes = magnitude_changes(current, new) if current is not None else ()
    return ChangeAssessment(
        current=current,
        new=new,
        magnitude_changes=changes,
        soft_limit_breaches=soft_limit_breaches(new, library),
        confirmed_magnitude_fields=frozenset(confirmed_magnitude_fields),
    )
