"""Value objects shared by both kernel implementations (compiled and twin).

Everything here is configuration or a plain record: drug-library entries,
prescription caps (and how a caps change tightens them), the pump envelope,
requests, decisions, interruptions, reason codes, the tightening chain, the
titration planner and the validation of snapshots. None of it is on the hot
path; :class:`Ledger`, :class:`Programme` and :class:`SafetyKernel` are
implemented twice (``_kernel.pyx`` and ``_kernel_py.py``) and proven equal by
tests. The rules over the patient's history, and their sources, are in
``kernel.pyi``.

All numbers are integers in the fixed-point units of :mod:`cython_ext.units`.
Configuration is validated when built: bad values raise
:class:`~cython_ext.errors.ConfigError` naming field, value and range;
non-integers raise :class:`TypeError`.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from cython_ext.errors import ConfigError, require_int, require_range
from cython_ext.units import MS_PER_DAY, MS_PER_H, div_round
from cython_ext.vocabulary import (
    ALL_REASONS,
    BOLUS_KINDS,
    CAPS_CHANGE_CONFIRMATION,
    COUNTED_BOLUS_KINDS,
    DISCONTINUE_AUTHORISATION,
    MAX_FLEX_STEPS,
    MAX_PERIODIC_BOLUSES,
    N_KINDS,
    PROCEDURE_AUTHORISATION,
    SOFT_REASONS,
    TITRATION_CAP_PCT_BY_ORIGIN,
    DeliveryKind,
    Origin,
    Reason,
)

__all__ = [
    "MAX_RATE_NL_PER_H",
    "MAX_CONCENTRATION_UG_PER_ML",
    "MAX_DOSE_NG_PER_DAY",
    "MAX_BOLUS_VOLUME_NL",
    "MAX_RECORD_PG",
    "MAX_BUCKET_PG",
    "MAX_BOLUSES_PER_DAY",
    "MAX_FLEX_STEPS",
    "MAX_PERIODIC_BOLUSES",
    "LEDGER_RESOLUTION_MS",
    "WINDOW_BUCKETS",
    "BOLUS_HISTORY",
    "SNAPSHOT_VERSION",
    "STATE_SNAPSHOT_VERSION",
    "DEFAULT_RESTART_THRESHOLD_MS",
    "NO_INCREASE_AFTER_START_MS",
    "CAPS_HOLD_MS",
    "BOLUS_STACKING_WINDOW_MS",
    "TRANSIT_DOSE_TOLERANCE_PCT",
    "MAX_TRANSIT_MS",
    "DeliveryKind",
    "N_KINDS",
    "BOLUS_KINDS",
    "COUNTED_BOLUS_KINDS",
    "RequestKind",
    "Origin",
    "TITRATION_CAP_PCT_BY_ORIGIN",
    "Reason",
    "ALL_REASONS",
    "SOFT_REASONS",
    "DISCONTINUE_AUTHORISATION",
    "CAPS_CHANGE_CONFIRMATION",
    "PROCEDURE_AUTHORISATION",
    "REASON_INDEX",
    "Bounds",
    "make_bounds",
    "DrugLimits",
    "DEFAULT_LIBRARY",
    "library_entry",
    "PatientCaps",
    "make_caps",
    "check_caps_against_limits",
    "stricter_caps",
    "caps_to_dict",
    "caps_from_dict",
    "state_checksum",
    "InterruptionCause",
    "Interruption",
    "PumpEnvelope",
    "make_envelope",
    "Override",
    "make_override",
    "BridgePlan",
    "Request",
    "request_rate_change",
    "request_programme_change",
    "request_bolus",
    "request_concentration_change",
    "request_discontinue",
    "request_minimum_rate",
    "request_resume",
    "request_caps_change",
    "request_procedure_stop",
    "Decision",
    "TitrationStep",
    "plan_titration",
    "TightenStep",
    "Tightened",
    "tighten",
    "check_programme_shape",
    "MAX_DECISION_AGE_MS",
    "MIN_TIME_MS",
    "MAX_TIME_MS",
    "MAX_INTERVAL_MS",
    "MIN_SPREAD_SLOT_MS",
    "check_request",
    "ConfigError",
]

# Representation limits. They keep every intermediate of the compiled kernel far
# inside a signed 64-bit integer; they are not clinical limits.
#: Range of every monotonic time the kernel accepts, ms (anchors may be negative).
MIN_TIME_MS = -(2**61)
MAX_TIME_MS = 2**62
#: Longest interval a programme integrates in one call, ms.
MAX_INTERVAL_MS = 366 * MS_PER_DAY
#: Largest rate any object accepts, nL/h (10 mL/h = 240 mL/day).
MAX_RATE_NL_PER_H = 10_000_000
#: Largest concentration any object accepts, µg/mL.
MAX_CONCENTRATION_UG_PER_ML = 100_000
#: Largest daily dose any object accepts, ng/day (100 mg/day).
MAX_DOSE_NG_PER_DAY = 100_000_000
#: Shortest slot :meth:`Ledger.record_spread` divides a delivery into, ms (so one call records at
#: most a day's worth of parts, 86 402).
MIN_SPREAD_SLOT_MS = 1_000
#: Largest single bolus volume, nL (10 mL).
MAX_BOLUS_VOLUME_NL = 10_000_000
#: Largest amount one ledger record may carry, pg.
MAX_RECORD_PG = 10**13
#: Largest amount one ledger bucket (or one kind's commitment) may hold, pg.
MAX_BUCKET_PG = 10**14
#: Largest count of boluses per 24 h any configuration accepts.
MAX_BOLUSES_PER_DAY = 96
#: Ledger resolution, ms (one minute).
LEDGER_RESOLUTION_MS = 60_000
#: Buckets in the rolling window: an amount recorded in minute ``m`` counts in
#: the windows ending in minutes ``m`` to ``m + 1439``.
WINDOW_BUCKETS = 1440
#: Bolus starts the ledger remembers (more than any configuration can allow in 24 h).
BOLUS_HISTORY = 256
#: Ledger snapshot format version.
SNAPSHOT_VERSION = 1
#: Kernel state snapshot format version (2: the whole history, caps and interruption).
STATE_SNAPSHOT_VERSION = 2
#: No increase of the daily dose this long after therapy started, ms (label: "do not raise
#: the dose in the first 24 h", itb-clinical.md §1.3). A hard rule.
NO_INCREASE_AFTER_START_MS = MS_PER_DAY
#: A caps change keeps every limit it loosens at its old value this long, ms.
CAPS_HOLD_MS = MS_PER_DAY
#: A bolus this soon after a titration step counts against the titration cap, ms.
BOLUS_STACKING_WINDOW_MS = MS_PER_DAY
#: A concentration change's transit (the dead volume's old drug pushed at the old-concentration
#: rate) may give at the tip at most this much more than the new programme's daily dose, %:
#: room for rounding the transit's length up to whole ms and its rate to whole nL/h, no more.
TRANSIT_DOSE_TOLERANCE_PCT = 1
#: Longest transit a concentration change may plan, ms: a year (0.5 mL of dead volume at the
#: lowest rates takes weeks; longer than a refill interval is already flagged by the refill).
MAX_TRANSIT_MS = 366 * MS_PER_DAY
#: Default restart threshold: an interruption shorter than this may resume at the dose in
#: effect just before it; a longer one only at the titration-phase starting dose, ms.
#: 24 h = 5 x the longest CSF elimination half-life (1-5 h, itb-clinical.md §2.2
#: [CH-ODDB][EJCP]): after it, less than 4 % of the drug is left, the tolerated steady
#: state is gone, and re-introduction is a new start [JP-LBL][OD91][DRUGLIB-OD]. Below it,
#: withdrawal is only beginning (the syndrome builds over 24-72 h, §3.2 [COFFEY02]), and
#: restoring the tolerated dose is its treatment. A PLACEHOLDER needing clinical sign-off.
DEFAULT_RESTART_THRESHOLD_MS = MS_PER_DAY


class RequestKind(enum.IntEnum):
    """What a :class:`Request` asks for."""

    RATE_CHANGE = 1
    PROGRAMME_CHANGE = 2
    BOLUS = 3
    CONCENTRATION_CHANGE = 4
    DISCONTINUE = 5
    MINIMUM_RATE = 6
    RESUME = 7
    CAPS_CHANGE = 8
    PROCEDURE_STOP = 9


#: Position of each reason code in :data:`ALL_REASONS` (bit index in the compiled kernel).
REASON_INDEX: dict[str, int] = {code: i for i, code in enumerate(ALL_REASONS)}


class Bounds(NamedTuple):
    """Hard and soft bounds of one quantity: ``lower_hard <= lower_soft <= upper_soft <= upper_hard``.

    A value outside ``[lower_hard, upper_hard]`` is rejected outright. A value
    outside ``[lower_soft, upper_soft]`` but inside the hard range needs an
    :class:`Override`. The unit is that of the quantity the bounds belong to.
    Use :func:`make_bounds` (or :meth:`validate`) to check the ordering.
    """

    lower_hard: int
    lower_soft: int
    upper_soft: int
    upper_hard: int

    def validate(self, field: str, unit: str = "") -> Bounds:
        """Check types and ordering; return ``self``.

        :param field: name of the quantity, used in errors (``"dose_ng_per_day"``).
        :param unit: unit text for the error message.
        :raises TypeError: if a bound is not an int.
        :raises ConfigError: naming the field and all four values if the ordering fails.
        """
        for name, value in zip(self._fields, self):
            require_int(f"{field}.{name}", value)
        if self.lower_hard < 0:
            raise ConfigError(f"{field}.lower_hard", self.lower_hard, f">= 0 {unit}".rstrip())
        if not (self.lower_hard <= self.lower_soft <= self.upper_soft <= self.upper_hard):
            raise ConfigError(
                field,
                tuple(self),
                "ordered lower_hard <= lower_soft <= upper_soft <= upper_hard",
                detail=(
                    f"lower_hard={self.lower_hard}, lower_soft={self.lower_soft}, "
                    f"upper_soft={self.upper_soft}, upper_hard={self.upper_hard} {unit}"
                ).rstrip(),
            )
        return self

    def classify(self, value: int) -> int:
        """Where ``value`` lies: -2 below hard, -1 below soft, 0 inside soft, 1 above soft, 2 above hard."""
        if value < self.lower_hard:
            return -2
        if value > self.upper_hard:
            return 2
        if value < self.lower_soft:
            return -1
        if value > self.upper_soft:
            return 1
        return 0


def make_bounds(field: str, lower_hard: int, lower_soft: int, upper_soft: int, upper_hard: int, unit: str = "") -> Bounds:
    """Build validated :class:`Bounds` (see :meth:`Bounds.validate`)."""
    return Bounds(lower_hard, lower_soft, upper_soft, upper_hard).validate(field, unit)


class DrugLimits(NamedTuple):
    """One drug-library entry: a drug at one concentration, with its hard and soft bounds.

    :param code: library code (``"baclofen-it-500"``).
    :param name: human-readable name.
    :param concentration_ug_per_ml: nominal concentration, µg/mL.
    :param concentration: bounds on an entered or measured concentration, µg/mL.
    :param dose_ng_per_day: bounds on a programme's daily dose, ng/day.
    :param rate_nl_per_h: bounds on any programmed rate, nL/h.
    :param bolus_ng: bounds on one bolus (clinician or patient), ng.
    :param bolus_lockout_ms: bounds on the prescription's bolus lockout, ms.
    :param boluses_per_day: bounds on the prescription's boluses per 24 h.
    :param screening_only: only clinician (screening) boluses; no continuous programme.
    """

    code: str
    name: str
    concentration_ug_per_ml: int
    concentration: Bounds
    dose_ng_per_day: Bounds
    rate_nl_per_h: Bounds
    bolus_ng: Bounds
    bolus_lockout_ms: Bounds
    boluses_per_day: Bounds
    screening_only: bool = False

    def validate(self) -> DrugLimits:
        """Check every field and bound ordering; return ``self``.

        :raises ConfigError: naming the offending field and its values.
        :raises TypeError: for non-integer numbers.
        """
        if not isinstance(self.code, str) or not self.code:
            raise ConfigError("code", self.code, "a non-empty string")
        if not isinstance(self.screening_only, bool):
            raise ConfigError("screening_only", self.screening_only, "True or False")
        require_range("concentration_ug_per_ml", self.concentration_ug_per_ml, 1, MAX_CONCENTRATION_UG_PER_ML, "µg/mL")
        self.concentration.validate("concentration", "µg/mL")
        if not self.concentration.lower_hard <= self.concentration_ug_per_ml <= self.concentration.upper_hard:
            raise ConfigError(
                "concentration_ug_per_ml",
                self.concentration_ug_per_ml,
                f"within the concentration hard bounds [{self.concentration.lower_hard}, "
                f"{self.concentration.upper_hard}] µg/mL",
            )
        self.dose_ng_per_day.validate("dose_ng_per_day", "ng/day")
        self.rate_nl_per_h.validate("rate_nl_per_h", "nL/h")
        self.bolus_ng.validate("bolus_ng", "ng")
        self.bolus_lockout_ms.validate("bolus_lockout_ms", "ms")
        self.boluses_per_day.validate("boluses_per_day")
        if self.dose_ng_per_day.upper_hard > MAX_DOSE_NG_PER_DAY:
            raise ConfigError("dose_ng_per_day.upper_hard", self.dose_ng_per_day.upper_hard, f"<= {MAX_DOSE_NG_PER_DAY} ng/day")
        if self.rate_nl_per_h.upper_hard > MAX_RATE_NL_PER_H:
            raise ConfigError("rate_nl_per_h.upper_hard", self.rate_nl_per_h.upper_hard, f"<= {MAX_RATE_NL_PER_H} nL/h")
        if self.boluses_per_day.upper_hard > MAX_BOLUSES_PER_DAY:
            raise ConfigError("boluses_per_day.upper_hard", self.boluses_per_day.upper_hard, f"<= {MAX_BOLUSES_PER_DAY}")
        return self


def _baclofen(concentration_ug_per_ml: int, *, screening_only: bool = False) -> DrugLimits:
    c = concentration_ug_per_ml
    # Rate bounds. Hard: SynchroMed II minimum flow 0.048 mL/day (2000 nL/h) and the
    # assumed maximum 24 mL/day (1 000 000 nL/h, UNVERIFIED). Soft upper: the rate that
    # delivers the hard dose ceiling at this concentration.
    soft_rate_max = min(1_000_000, div_round(2_003_000 * 1000, c * 24, "down"))
    return DrugLimits(
        code=f"baclofen-it-{c}",
        name=f"baclofen intrathecal {c} µg/mL" + (" (screening only)" if screening_only else ""),
        concentration_ug_per_ml=c,
        # Label: content within ±5 % of nominal (hard). Soft ±2 % is a PLACEHOLDER.
        # Rounded inwards: the integer bounds never admit more than ±5 % / ±2 %.
        concentration=make_bounds("concentration", -(-c * 95 // 100), -(-c * 98 // 100), c * 102 // 100, c * 105 // 100),
        # Hard 12-2003 µg/day: lowest and highest daily doses reported (itb-clinical §1.5, §6).
        # Soft 24-1000 µg/day: warn above 1000 (limited experience), below 24 (paediatric
        # minimum). PLACEHOLDERS needing clinical sign-off.
        dose_ng_per_day=make_bounds("dose_ng_per_day", 12_000, 24_000, 1_000_000, 2_003_000),
        rate_nl_per_h=make_bounds("rate_nl_per_h", 2_000, 2_000, max(2_000, soft_rate_max), 1_000_000),
        # One bolus: screening doses are 25/50/75/100 µg and overdose has been reported after
        # 25 µg in a sensitive adult. Hard 1-100 µg, soft 10-75 µg: PLACEHOLDERS.
        bolus_ng=make_bounds("bolus_ng", 1_000, 10_000, 75_000, 100_000),
        # Prescription lockout between boluses: hard >= 1 h, soft >= 3 h; upper bounds wide.
        # PLACEHOLDERS.
        bolus_lockout_ms=make_bounds("bolus_lockout_ms", 1 * MS_PER_H, 3 * MS_PER_H, 2 * MS_PER_DAY, 7 * MS_PER_DAY),
        # Prescription boluses per 24 h: hard <= 8, soft <= 4. PLACEHOLDERS.
        boluses_per_day=make_bounds("boluses_per_day", 0, 0, 4, 8),
        screening_only=screening_only,
    ).validate()


#: Default drug library: intrathecal baclofen at 50 (screening only), 500, 1000 and
#: 2000 µg/mL, keyed by concentration in µg/mL. Numbers derive from itb-clinical.md §6;
#: every soft bound and the bolus bounds are placeholders needing clinical sign-off.
DEFAULT_LIBRARY: dict[int, DrugLimits] = {
    50: _baclofen(50, screening_only=True),
    500: _baclofen(500),
    1000: _baclofen(1000),
    2000: _baclofen(2000),
}


def library_entry(concentration_ug_per_ml: int, library: dict[int, DrugLimits] | None = None) -> DrugLimits:
    """Look up the library entry for a concentration.

    :param concentration_ug_per_ml: nominal concentration, µg/mL.
    :param library: defaults to :data:`DEFAULT_LIBRARY`.
    :raises ConfigError: if the concentration is not in the library (PRX-08).
    """
    library = DEFAULT_LIBRARY if library is None else library
    require_int("concentration_ug_per_ml", concentration_ug_per_ml)
    try:
        return library[concentration_ug_per_ml]
    except KeyError:
        raise ConfigError(
            "concentration_ug_per_ml", concentration_ug_per_ml, f"one of {sorted(library)} µg/mL"
        ) from None


class PatientCaps(NamedTuple):
    """Prescription caps for one patient, on top of the drug library. Build with :func:`make_caps`.

    :param origin: origin of spasticity (selects the default titration cap).
    :param max_dose_ng_per_day: rolling 24 h cap on everything delivered, ng.
    :param titration_cap_pct: largest increase over the lowest dose in effect in the trailing 24 h, %.
    :param min_titration_interval_ms: minimum time between dose increases, ms (TIT-04).
    :param decrease_confirm_pct: decreases larger than this % need confirmation (TIT-03).
    :param bolus_enabled: clinician boluses allowed.
    :param patient_bolus_enabled: patient-activated boluses allowed.
    :param max_bolus_ng: largest clinician or patient bolus, ng.
    :param bolus_lockout_ms: minimum time between bolus starts, ms.
    :param max_boluses_per_day: most clinician + patient boluses in any 24 h.
    :param minimum_rate_nl_per_h: minimum-rate mode rate (> 0) and floor of every programme rate, nL/h.
    :param max_priming_volume_nl: largest priming or bridge bolus, nL.
    :param taper_pct: largest decrease per taper step in :func:`plan_titration`, %.
    :param taper_interval_ms: time between taper steps, ms.
    :param titration_start_dose_ng_per_day: the patient's titration-phase starting dose, ng/day
        (from the patient record): the most a resume after a long interruption may restart at.
        0 = not given: such a resume may restart at no more than the minimum-rate dose.
    :param restart_threshold_ms: an interruption shorter than this may resume at the dose in
        effect just before it; a longer one only at the titration-phase starting dose, ms.
    """

    origin: Origin
    max_dose_ng_per_day: int
    titration_cap_pct: int
    min_titration_interval_ms: int
    decrease_confirm_pct: int
    bolus_enabled: bool
    patient_bolus_enabled: bool
    max_bolus_ng: int
    bolus_lockout_ms: int
    max_boluses_per_day: int
    minimum_rate_nl_per_h: int
    max_priming_volume_nl: int
    taper_pct: int
    taper_interval_ms: int
    titration_start_dose_ng_per_day: int = 0
    restart_threshold_ms: int = DEFAULT_RESTART_THRESHOLD_MS


def make_caps(
    *,
    max_dose_ng_per_day: int,
    origin: Origin | str = Origin.SPINAL,
    titration_cap_pct: int | None = None,
    min_titration_interval_ms: int = MS_PER_DAY,
    decrease_confirm_pct: int = 20,
    bolus_enabled: bool = True,
    patient_bolus_enabled: bool = False,
    max_bolus_ng: int = 50_000,
    bolus_lockout_ms: int = 4 * MS_PER_H,
    max_boluses_per_day: int = 2,
    minimum_rate_nl_per_h: int = 2_000,
    max_priming_volume_nl: int = 300_000,
    taper_pct: int = 20,
    taper_interval_ms: int = 2 * MS_PER_DAY,
    titration_start_dose_ng_per_day: int = 0,
    restart_threshold_ms: int = DEFAULT_RESTART_THRESHOLD_MS,
) -> PatientCaps:
    """Build validated :class:`PatientCaps`. Defaults are PLACEHOLDERS needing clinical sign-off.

    ``titration_cap_pct`` defaults from ``origin`` (spinal 30 %, cerebral 15 %, paediatric 15 %);
    an explicit value may only be lower. ``decrease_confirm_pct`` 20 % follows the usual
    10-20 % side-effect cut; ``taper_pct`` 20 % per 2 days follows the Japanese label;
    ``restart_threshold_ms`` defaults to :data:`DEFAULT_RESTART_THRESHOLD_MS` (24 h, see there).

    :raises ConfigError: naming the field, value and allowed range.
    :raises TypeError: for non-integer numbers.
    """
    try:
        origin = Origin(origin)
    except ValueError:
        raise ConfigError("origin", origin, f"one of {[o.value for o in Origin]}") from None
    origin_cap = TITRATION_CAP_PCT_BY_ORIGIN[origin]
    if titration_cap_pct is None:
        titration_cap_pct = origin_cap
    require_range("titration_cap_pct", titration_cap_pct, 0, origin_cap, "%")
    require_range("max_dose_ng_per_day", max_dose_ng_per_day, 1, MAX_DOSE_NG_PER_DAY, "ng/day")
    require_range("min_titration_interval_ms", min_titration_interval_ms, 0, 30 * MS_PER_DAY, "ms")
    require_range("decrease_confirm_pct", decrease_confirm_pct, 0, 100, "%")
    for name, flag in (("bolus_enabled", bolus_enabled), ("patient_bolus_enabled", patient_bolus_enabled)):
        if not isinstance(flag, bool):
            raise ConfigError(name, flag, "True or False")
    require_range("max_bolus_ng", max_bolus_ng, 0, MAX_DOSE_NG_PER_DAY, "ng")
    require_range("bolus_lockout_ms", bolus_lockout_ms, 0, 30 * MS_PER_DAY, "ms")
    require_range("max_boluses_per_day", max_boluses_per_day, 0, MAX_BOLUSES_PER_DAY, "")
    require_range("minimum_rate_nl_per_h", minimum_rate_nl_per_h, 1, MAX_RATE_NL_PER_H, "nL/h")
    require_range("max_priming_volume_nl", max_priming_volume_nl, 0, MAX_BOLUS_VOLUME_NL, "nL")
    require_range("taper_pct", taper_pct, 1, 50, "%")
    require_range("taper_interval_ms", taper_interval_ms, MS_PER_H, 30 * MS_PER_DAY, "ms")
    require_range("titration_start_dose_ng_per_day", titration_start_dose_ng_per_day, 0, max_dose_ng_per_day,
                  "ng/day (0: not given)")
    require_range("restart_threshold_ms", restart_threshold_ms, 0, 7 * MS_PER_DAY, "ms")
    return PatientCaps(
        origin,
        max_dose_ng_per_day,
        titration_cap_pct,
        min_titration_interval_ms,
        decrease_confirm_pct,
        bolus_enabled,
        patient_bolus_enabled,
        max_bolus_ng,
        bolus_lockout_ms,
        max_boluses_per_day,
        minimum_rate_nl_per_h,
        max_priming_volume_nl,
        taper_pct,
        taper_interval_ms,
        titration_start_dose_ng_per_day,
        restart_threshold_ms,
    )


#: How each limit of :class:`PatientCaps` tightens: ``min`` (lower is stricter), ``max``
#: (higher is stricter), ``all`` (off is stricter) or ``new`` (a setting, not a limit).
#: The minimum rate is the clinician-set fault fallback (SAFE-02), one value, so it takes the
#: new setting at once; origin only names where the titration cap came from.
_STRICTER = {
    "origin": "new",
    "max_dose_ng_per_day": "min",
    "titration_cap_pct": "min",
    "min_titration_interval_ms": "max",
    "decrease_confirm_pct": "min",
    "bolus_enabled": "all",
    "patient_bolus_enabled": "all",
    "max_bolus_ng": "min",
    "bolus_lockout_ms": "max",
    "max_boluses_per_day": "min",
    "minimum_rate_nl_per_h": "new",
    "max_priming_volume_nl": "min",
    "taper_pct": "min",
    "taper_interval_ms": "max",
    "titration_start_dose_ng_per_day": "min",
    "restart_threshold_ms": "min",
}


def stricter_caps(old: PatientCaps, new: PatientCaps) -> PatientCaps:
    """The caps in force during the 24 h after a change from ``old`` to ``new``: every limit at
    the stricter of its two values (see ``_STRICTER``), every setting at its new value.

    :return: valid :class:`PatientCaps` (the titration cap is never above the new origin's).
    """
    merged = {}
    for name in PatientCaps._fields:
        a, b = getattr(old, name), getattr(new, name)
        how = _STRICTER[name]
        merged[name] = b if how == "new" else min(a, b) if how == "min" else max(a, b) if how == "max" else a and b
    return PatientCaps(**merged)


def caps_to_dict(caps: PatientCaps) -> dict:
    """:class:`PatientCaps` as exact JSON-ready data (origin by its value)."""
    out = caps._asdict()
    out["origin"] = caps.origin.value
    return out


def caps_from_dict(data: object, field: str = "caps") -> PatientCaps:
    """Rebuild :class:`PatientCaps` from :func:`caps_to_dict` output, validating every value.

    :raises ConfigError: naming ``field`` and the first bad key or value (never ``TypeError``).
    """
    if not isinstance(data, dict) or set(data) != set(PatientCaps._fields):
        got = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ConfigError(f"{field} keys", got, f"exactly {sorted(PatientCaps._fields)}")
    try:
        caps = make_caps(**data)
    except TypeError as exc:
        raise ConfigError(field, data, "integers and booleans from caps_to_dict()", detail=str(exc)) from None
    if caps_to_dict(caps) != data:
        raise ConfigError(field, data, "exactly what caps_to_dict() wrote")
    return caps


def check_caps_against_limits(caps: PatientCaps, limits: DrugLimits) -> None:
    """Reject a prescription whose caps fall outside the library entry's hard bounds.

    :raises ConfigError: naming the cap, its value and the hard range.
    """
    pairs = (
        ("max_dose_ng_per_day", caps.max_dose_ng_per_day, limits.dose_ng_per_day, "ng/day"),
        ("max_bolus_ng", caps.max_bolus_ng, limits.bolus_ng, "ng"),
        ("bolus_lockout_ms", caps.bolus_lockout_ms, limits.bolus_lockout_ms, "ms"),
        ("max_boluses_per_day", caps.max_boluses_per_day, limits.boluses_per_day, ""),
        ("minimum_rate_nl_per_h", caps.minimum_rate_nl_per_h, limits.rate_nl_per_h, "nL/h"),
    )
    for name, value, bounds, unit in pairs:
        if name == "max_bolus_ng" and not (caps.bolus_enabled or caps.patient_bolus_enabled):
            continue
        if name in ("bolus_lockout_ms", "max_boluses_per_day") and not (caps.bolus_enabled or caps.patient_bolus_enabled):
            continue
        low = 0 if name == "max_dose_ng_per_day" else bounds.lower_hard
        if not low <= value <= bounds.upper_hard:
            raise ConfigError(name, value, f"in [{low}, {bounds.upper_hard}] {unit}".rstrip(), detail=f"library {limits.code}")


class PumpEnvelope(NamedTuple):
    """What the pump mechanism can deliver. Build with :func:`make_envelope`.

    :param min_rate_nl_per_h: lowest non-zero rate, nL/h.
    :param max_rate_nl_per_h: highest rate, nL/h.
    :param rate_step_nl_per_h: every rate must be a multiple of this, nL/h.
    """

    min_rate_nl_per_h: int
    max_rate_nl_per_h: int
    rate_step_nl_per_h: int = 1


def make_envelope(min_rate_nl_per_h: int, max_rate_nl_per_h: int, rate_step_nl_per_h: int = 1) -> PumpEnvelope:
    """Build a validated :class:`PumpEnvelope`.

    :raises ConfigError: unless ``1 <= min <= max <= MAX_RATE_NL_PER_H`` and ``step >= 1``.
    """
    require_range("min_rate_nl_per_h", min_rate_nl_per_h, 1, MAX_RATE_NL_PER_H, "nL/h")
    require_range("max_rate_nl_per_h", max_rate_nl_per_h, min_rate_nl_per_h, MAX_RATE_NL_PER_H, "nL/h")
    require_range("rate_step_nl_per_h", rate_step_nl_per_h, 1, max_rate_nl_per_h, "nL/h")
    return PumpEnvelope(min_rate_nl_per_h, max_rate_nl_per_h, rate_step_nl_per_h)


class Override(NamedTuple):
    """An explicit, recorded permission to pass named soft limits (or to discontinue).

    :param codes: reason codes lifted: members of :data:`SOFT_REASONS`; or
        :data:`DISCONTINUE_AUTHORISATION` (authorises a discontinue); or
        :data:`CAPS_CHANGE_CONFIRMATION` (confirms a caps change); or :data:`PROCEDURE_AUTHORISATION` (authorises a
        procedure's zero-rate hold). No code lifts a hard rule.
    :param reason: why (recorded in the journal); must not be empty.
    :param actor: who authorised it (user and role).
    """

    codes: frozenset[str]
    reason: str
    actor: str


def make_override(codes: Iterable[str], *, reason: str, actor: str) -> Override:
    """Build a validated :class:`Override`.

    :raises ConfigError: for an unknown or hard code, or an empty reason or actor.
    """
    codes = frozenset(codes)
    allowed = SOFT_REASONS | {DISCONTINUE_AUTHORISATION, CAPS_CHANGE_CONFIRMATION, PROCEDURE_AUTHORISATION}
    bad = sorted(codes - allowed)
    if bad or not codes:
        raise ConfigError("override.codes", sorted(codes), f"a non-empty subset of {sorted(allowed)}")
    if not isinstance(reason, str) or not reason.strip():
        raise ConfigError("override.reason", reason, "a non-empty text")
    if not isinstance(actor, str) or not actor.strip():
        raise ConfigError("override.actor", actor, "a non-empty text")
    return Override(codes, reason, actor)


class BridgePlan(NamedTuple):
    """The transit of a concentration change: the old solution pushed out of the dead volume.

    Until the dead volume has been flushed, the pump keeps the volume rate the *old*
    concentration needs for the new programme's dose, so the tip gets that dose throughout
    (itb-clinical §1.6: a concentration change keeps the dose, not the volume rate). The
    transit is part of the programme's dose, not on top of it: nothing is committed, and the
    kernel checks that its rate fits the pump and its dose at the tip
    (``volume x old concentration / duration``) is not above the programme's daily dose by more
    than :data:`TRANSIT_DOSE_TOLERANCE_PCT` (``TRANSIT_DOSE_ABOVE_PROGRAMME``).

    :param volume_nl: dead volume holding the old solution, nL (> 0).
    :param duration_ms: its transit at the old-concentration rate, ms (> 0, at most
        :data:`MAX_TRANSIT_MS`: at the lowest doses it takes days, and it is never cut short).
    """

    volume_nl: int
    duration_ms: int


class Request(NamedTuple):
    """A request to change delivery. Build with the ``request_*`` functions, not directly.

    Fields unused by a kind hold ``0`` / ``None``.
    """

    kind: int
    rate_nl_per_h: int
    programme: object
    bolus_kind: int
    volume_nl: int
    duration_ms: int
    bridge: BridgePlan | None
    override: Override | None
    emergency: bool
    record_concentration_ug_per_ml: int = 0  # refill record, 0 when not given
    caps: PatientCaps | None = None  # a caps change's new caps


def _check_override(override: object) -> Override | None:
    if override is not None and not isinstance(override, Override):
        raise ConfigError("override", override, "None or an Override from make_override()")
    return override


def request_rate_change(rate_nl_per_h: int, *, override: Override | None = None) -> Request:
    """Request a simple continuous programme at ``rate_nl_per_h`` (same concentration).

    :param rate_nl_per_h: new rate, nL/h (0 is accepted here and denied by the kernel: use discontinue).
    :param override: lifts named soft limits.
    """
    require_range("rate_nl_per_h", rate_nl_per_h, 0, MAX_RATE_NL_PER_H, "nL/h")
    return Request(RequestKind.RATE_CHANGE, rate_nl_per_h, None, -1, 0, 0, None, _check_override(override), False)


def request_programme_change(programme: object, *, override: Override | None = None) -> Request:
    """Request a new programme (simple continuous or flex, plus periodic boluses), same concentration.

    :param programme: a ``Programme`` of either implementation.
    :param override: lifts named soft limits.
    """
    if not hasattr(programme, "steps") or not hasattr(programme, "concentration_ug_per_ml"):
        raise ConfigError("programme", programme, "a Programme")
    return Request(RequestKind.PROGRAMME_CHANGE, 0, programme, -1, 0, 0, None, _check_override(override), False)


def request_bolus(kind: DeliveryKind | int, volume_nl: int, duration_ms: int, *, override: Override | None = None) -> Request:
    """Request a bolus of ``volume_nl`` over ``duration_ms`` at the current concentration.

    :param kind: one of :data:`BOLUS_KINDS` (clinician, patient, priming, bridge).
    :param volume_nl: volume, nL (> 0).
    :param duration_ms: duration, ms (> 0).
    :param override: lifts named soft limits.
    """
    require_int("kind", kind)
    if kind not in [int(k) for k in BOLUS_KINDS]:
        raise ConfigError("kind", kind, f"one of {[k.name for k in BOLUS_KINDS]}")
    require_range("volume_nl", volume_nl, 1, MAX_BOLUS_VOLUME_NL, "nL")
    require_range("duration_ms", duration_ms, 1, MS_PER_DAY, "ms")
    return Request(RequestKind.BOLUS, 0, None, int(kind), volume_nl, duration_ms, None, _check_override(override), False)


def request_concentration_change(
    programme: object,
    bridge: BridgePlan | None,
    *,
    override: Override | None = None,
    record_concentration_ug_per_ml: int | None = None,
) -> Request:
    """Request a programme at a new concentration (refill), with its bridge plan.

    A missing bridge plan (``None``) is accepted here and denied by the kernel with
    ``BRIDGE_PLAN_MISSING``, so the decision is journalled.

    :param programme: the new programme, at the new concentration.
    :param bridge: the :class:`BridgePlan`, or ``None``.
    :param override: lifts named soft limits.
    :param record_concentration_ug_per_ml: the concentration on the refill record (label or
        measurement), µg/mL; checked against the new entry's concentration bounds (PRX-06).
    """
    record = 0
    if record_concentration_ug_per_ml is not None:
        record = require_range("record_concentration_ug_per_ml", record_concentration_ug_per_ml, 1, MAX_CONCENTRATION_UG_PER_ML, "µg/mL")
    if not hasattr(programme, "steps") or not hasattr(programme, "concentration_ug_per_ml"):
        raise ConfigError("programme", programme, "a Programme")
    if bridge is not None:
        if not isinstance(bridge, BridgePlan):
            raise ConfigError("bridge", bridge, "None or a BridgePlan")
        require_range("bridge.volume_nl", bridge.volume_nl, 1, MAX_BOLUS_VOLUME_NL, "nL")
        require_range("bridge.duration_ms", bridge.duration_ms, 1, MAX_TRANSIT_MS, "ms")
    return Request(RequestKind.CONCENTRATION_CHANGE, 0, programme, -1, 0, 0, bridge, _check_override(override), False, record)


def request_discontinue(authorisation: Override | None, *, emergency: bool = False) -> Request:
    """Request zero flow. Needs an :class:`Override` naming :data:`DISCONTINUE_AUTHORISATION`.

    Without ``emergency`` the stop is the end of a taper and is allowed only once the
    programme is already at or below the minimum-rate dose; with it, the stop is
    immediate (clinician judgement, recorded).

    :param authorisation: the authorising override.
    :param emergency: stop now, whatever the current dose.

    After a discontinue the kernel holds no programme, the dose history holds the zero
    dose, and an interruption is open: the next rate or programme change is a *resume*,
    bounded by the restart rule (see :func:`request_resume`), never a fresh start.
    """
    if not isinstance(emergency, bool):
        raise ConfigError("emergency", emergency, "True or False")
    return Request(RequestKind.DISCONTINUE, 0, None, -1, 0, 0, None, _check_override(authorisation), emergency)


def request_procedure_stop(authorisation: Override | None) -> Request:
    """Request the zero-rate hold of a guided procedure (SAFE-05: an MRI whose pump labelling requires the pump
    stopped, emptied and programmed to zero first [S34][PROM-MRI]). Needs an :class:`Override` naming
    :data:`PROCEDURE_AUTHORISATION` (else ``PROCEDURE_NOT_AUTHORISED``); refused with ``NO_PROGRAMME`` before
    therapy has started or after a discontinue.

    Once applied the dose history holds the zero dose and an interruption opens (cause ``procedure``); the
    programme stays the 24 h projection's basal, as for a stop. Delivery comes back only by
    :func:`request_resume`, under the restart rule: never at a dose the rule would refuse.

    :param authorisation: the authorising override (who, and why).
    """
    return Request(RequestKind.PROCEDURE_STOP, 0, None, -1, 0, 0, None, _check_override(authorisation), False)


def check_request(request: object) -> Request:
    """Re-check a request's fields (a :class:`Request` can be built directly, bypassing the
    ``request_*`` constructors). Both kernels call this before deciding.

    :raises ConfigError: naming the first field out of range.
    :raises TypeError: for a non-integer number.
    """
    if not isinstance(request, Request):
        raise ConfigError("request", request, "a Request from a request_* constructor")
    kind = require_int("request.kind", request.kind)
    if kind not in [int(k) for k in RequestKind]:
        raise ConfigError("request.kind", kind, f"one of {[k.name for k in RequestKind]}")
    _check_override(request.override)
    if not isinstance(request.emergency, bool):
        raise ConfigError("request.emergency", request.emergency, "True or False")
    if kind == RequestKind.RATE_CHANGE:
        require_range("rate_nl_per_h", request.rate_nl_per_h, 0, MAX_RATE_NL_PER_H, "nL/h")
    elif kind in (RequestKind.PROGRAMME_CHANGE, RequestKind.CONCENTRATION_CHANGE):
        if not hasattr(request.programme, "steps") or not hasattr(request.programme, "concentration_ug_per_ml"):
            raise ConfigError("programme", request.programme, "a Programme")
        if kind == RequestKind.CONCENTRATION_CHANGE and request.bridge is not None:
            if not isinstance(request.bridge, BridgePlan):
                raise ConfigError("bridge", request.bridge, "None or a BridgePlan")
            require_range("bridge.volume_nl", request.bridge.volume_nl, 1, MAX_BOLUS_VOLUME_NL, "nL")
            require_range("bridge.duration_ms", request.bridge.duration_ms, 1, MAX_TRANSIT_MS, "ms")
        require_range("record_concentration_ug_per_ml", request.record_concentration_ug_per_ml, 0, MAX_CONCENTRATION_UG_PER_ML, "µg/mL (0: none)")
    elif kind == RequestKind.RESUME:
        if request.programme is None:
            require_range("rate_nl_per_h", request.rate_nl_per_h, 0, MAX_RATE_NL_PER_H, "nL/h")
        elif not hasattr(request.programme, "steps") or not hasattr(request.programme, "concentration_ug_per_ml"):
            raise ConfigError("programme", request.programme, "a Programme")
    elif kind == RequestKind.CAPS_CHANGE:
        _check_caps(request.caps)
    elif kind == RequestKind.BOLUS:
        bolus_kind = require_int("kind", request.bolus_kind)
        if bolus_kind not in [int(k) for k in BOLUS_KINDS]:
            raise ConfigError("kind", bolus_kind, f"one of {[k.name for k in BOLUS_KINDS]}")
        require_range("volume_nl", request.volume_nl, 1, MAX_BOLUS_VOLUME_NL, "nL")
        require_range("duration_ms", request.duration_ms, 1, MS_PER_DAY, "ms")
    return request


def request_resume(rate_nl_per_h: int | None = None, *, programme: object = None,
                   override: Override | None = None) -> Request:
    """Request to resume delivery after an interruption (a stop, a minimum-rate spell or a
    discontinue): a simple continuous rate, or a whole programme, at the current concentration.

    The restart rule decides it instead of the titration rules (cap, interval, first 24 h,
    decrease confirmation): after an interruption shorter than the caps' ``restart_threshold_ms``
    at most the daily dose in effect just before it; after a longer one at most the lower of that
    and the titration-phase starting dose. Above the rule the refusal is
    ``RESTART_OVERDOSE_RISK_*`` (hard: no override lifts it). Every other limit applies as
    to a programme change. While an interruption is open, a rate, programme or concentration
    change is decided the same way: every path back to delivery meets the restart rule.

    :param rate_nl_per_h: simple continuous rate, nL/h (give this or ``programme``).
    :param programme: a ``Programme`` of either implementation (give this or a rate).
    :param override: lifts named soft limits (never the restart rule).
    :raises ConfigError: unless exactly one of ``rate_nl_per_h`` and ``programme`` is given.
    """
    if (rate_nl_per_h is None) == (programme is None):
        raise ConfigError("resume", (rate_nl_per_h, programme), "exactly one of rate_nl_per_h and programme")
    if programme is not None:
        if not hasattr(programme, "steps") or not hasattr(programme, "concentration_ug_per_ml"):
            raise ConfigError("programme", programme, "a Programme")
        return Request(RequestKind.RESUME, 0, programme, -1, 0, 0, None, _check_override(override), False)
    require_range("rate_nl_per_h", rate_nl_per_h, 0, MAX_RATE_NL_PER_H, "nL/h")
    return Request(RequestKind.RESUME, rate_nl_per_h, None, -1, 0, 0, None, _check_override(override), False)


#: Caps :func:`_check_caps` has accepted, each as its exact type and every field's exact type and
#: value (``True == 1`` and ``1 == 1.0`` must not share a result); at most :data:`_CHECKED_CAPS_MAX`.
_CHECKED_CAPS: set[tuple] = set()
_CHECKED_CAPS_MAX = 1024


def _check_caps(caps: object) -> PatientCaps:
    """A :class:`PatientCaps` whose every value :func:`make_caps` accepts (it may be built directly).

    The check is a pure function of the caps' type and its fields' types and values, so caps that
    equal, type for type, caps it has accepted are accepted without running it again: a caps change
    is checked once by :func:`request_caps_change` and then found here by ``check_request``.
    """
    if not isinstance(caps, PatientCaps):
        raise ConfigError("caps", caps, "a PatientCaps from make_caps()")
    try:
        key: tuple | None = (type(caps), tuple((type(v), v) for v in caps))
        hash(key)
    except TypeError:
        key = None
    if key is not None and key in _CHECKED_CAPS:
        return caps
    if caps_from_dict(caps_to_dict(caps)) != caps:
        raise ConfigError("caps", caps, "exactly what make_caps() builds")
    if key is not None and len(_CHECKED_CAPS) < _CHECKED_CAPS_MAX:
        _CHECKED_CAPS.add(key)
    return caps


def request_caps_change(caps: PatientCaps, *, confirmation: Override | None) -> Request:
    """Request to replace the prescription caps mid-therapy (a new prescription, an origin change).

    Every limit the change loosens keeps its old value for :data:`CAPS_HOLD_MS` (24 h) after
    the change is applied (:func:`stricter_caps`); a limit it tightens takes effect at once.
    The change needs a confirmation: an :class:`Override` naming
    :data:`CAPS_CHANGE_CONFIRMATION` with the reason and the actor, which the decision
    carries (``decision.request.override``) for the journal; without one the decision is
    ``CAPS_CHANGE_NOT_CONFIRMED``. The programme in effect must fit the new caps (dose within
    ``max_dose_ng_per_day``, no rate below ``minimum_rate_nl_per_h``).

    :param caps: the new caps, from :func:`make_caps`.
    :param confirmation: the confirming override.
    :raises ConfigError: for caps that :func:`make_caps` would not build.
    """
    return Request(RequestKind.CAPS_CHANGE, 0, None, -1, 0, 0, None, _check_override(confirmation), False, 0,
                   _check_caps(caps))


def request_minimum_rate() -> Request:
    """Request minimum-rate mode (fault fallback): continuous at the prescription's minimum rate.

    Not a titration step: no interval or confirmation rule applies. The rate must fit the
    pump and the library's hard rate bounds and lie at or below the current dose. It is
    projected against the 24 h cap only when it is not below every rate of the programme
    in effect (that programme's own projection already covers a lower rate).
    """
    return Request(RequestKind.MINIMUM_RATE, 0, None, -1, 0, 0, None, None, False)


class InterruptionCause(str, enum.Enum):
    """What interrupted delivery (the latest transition of an open interruption)."""

    STOPPED = "stopped"  # a STOP fault reaction, or a pump found stopped (SafetyKernel.note_stopped)
    MINIMUM_RATE = "minimum_rate"  # minimum-rate mode (an applied request_minimum_rate)
    DISCONTINUED = "discontinued"  # an applied request_discontinue
    PROCEDURE = "procedure"  # an applied request_procedure_stop (a guided procedure's zero-rate hold)


class Interruption(NamedTuple):
    """An open interruption of delivery: from its first stop, minimum-rate spell or discontinue
    until a resume.

    :param since_ms: when it began, ms (the earliest time the controller says delivery may have stopped).
    :param dose_before_ng_per_day: the daily dose in effect just before it, ng/day.
    :param cause: :class:`InterruptionCause` value of its latest transition.
    """

    since_ms: int
    dose_before_ng_per_day: int
    cause: str


class Decision(NamedTuple):
    """The kernel's answer to one request. Immutable; denials change nothing.

    :param allowed: True if every check passed (soft ones possibly overridden).
    :param kind: the :class:`RequestKind`.
    :param reasons: every failing reason code, in :data:`ALL_REASONS` order; empty when allowed.
    :param overridden: soft codes lifted by the request's override.
    :param rate_nl_per_h: authorised continuous rate (rate change, minimum rate, 0 for discontinue), else 0.
    :param programme: authorised programme (programme or concentration change), else ``None``.
    :param bolus_kind: ledger kind of the bolus, else -1.
    :param volume_nl: authorised bolus volume (or bridge volume), nL.
    :param duration_ms: authorised bolus (or bridge) duration, ms.
    :param mass_pg: drug mass of that bolus, pg.
    :param daily_dose_ng: daily dose of the programme in effect after the decision, ng/day.
    :param at_ms: monotonic time of the decision, ms.
    :param request: the request decided on.
    :param state_version: the kernel's ``state_version`` when it decided (see ``is_fresh``).
    """

    allowed: bool
    kind: int
    reasons: tuple[str, ...]
    overridden: tuple[str, ...]
    rate_nl_per_h: int
    programme: object
    bolus_kind: int
    volume_nl: int
    duration_ms: int
    mass_pg: int
    daily_dose_ng: int
    at_ms: int
    request: Request
    state_version: int


class TitrationStep(NamedTuple):
    """One step of a titration or taper plan.

    :param at_ms: earliest monotonic time the step may be applied, ms.
    :param dose_ng_per_day: daily dose after the step, ng/day.
    """

    at_ms: int
    dose_ng_per_day: int


def plan_titration(
    current_dose_ng_per_day: int,
    target_dose_ng_per_day: int,
    *,
    start_ms: int,
    titration_cap_pct: int,
    interval_ms: int = MS_PER_DAY,
    taper_pct: int = 20,
    taper_interval_ms: int = 2 * MS_PER_DAY,
) -> tuple[TitrationStep, ...]:
    """Earliest allowed sequence of daily-dose steps from the current dose to the target.

    Up: each step raises by at most ``titration_cap_pct`` (rounded down), at most once per
    ``max(interval_ms, 24 h)``, so the net increase over any 24 h stays within the cap.
    Down: each step cuts by at most ``taper_pct`` (rounded so the cut never exceeds it),
    once per ``taper_interval_ms``. The last step lands exactly on the target.

    :param current_dose_ng_per_day: dose in effect now, ng/day (> 0).
    :param target_dose_ng_per_day: wanted dose, ng/day (> 0).
    :param start_ms: earliest time of the first step, ms.
    :param titration_cap_pct: upward cap per step, % (> 0 to move up).
    :return: the steps, empty if already at the target.
    :raises ConfigError: if the target cannot be reached (zero cap, or a dose so
        small that a whole-ng step is impossible).
    """
    current = require_range("current_dose_ng_per_day", current_dose_ng_per_day, 1, MAX_DOSE_NG_PER_DAY, "ng/day")
    target = require_range("target_dose_ng_per_day", target_dose_ng_per_day, 1, MAX_DOSE_NG_PER_DAY, "ng/day")
    at = require_int("start_ms", start_ms)
    require_range("titration_cap_pct", titration_cap_pct, 0, 100, "%")
    require_range("interval_ms", interval_ms, 0, 30 * MS_PER_DAY, "ms")
    require_range("taper_pct", taper_pct, 1, 100, "%")
    require_range("taper_interval_ms", taper_interval_ms, 0, 30 * MS_PER_DAY, "ms")
    steps: list[TitrationStep] = []
    dose = current
    up_interval = max(interval_ms, MS_PER_DAY)
    while dose != target:
        if target > dose:
            nxt = min(target, dose * (100 + titration_cap_pct) // 100)
            gap = up_interval
        else:
            nxt = max(target, -(-dose * (100 - taper_pct) // 100))
            gap = taper_interval_ms
        if nxt == dose:
            raise ConfigError(
                "target_dose_ng_per_day", target, "reachable in whole-ng steps under the caps",
                detail=f"stuck at {dose} ng/day",
            )
        steps.append(TitrationStep(at, nxt))
        dose = nxt
        at += gap
    return tuple(steps)


class TightenStep(NamedTuple):
    """One step of a tightening chain that lowered a value.

    :param name: the limit's name (``"cap_headroom"``, ``"pump_step"``).
    :param before: value before the step.
    :param after: value after the step (``<= before``).
    :param reason: why it lowered the value.
    """

    name: str
    before: int
    after: int
    reason: str


class Tightened(NamedTuple):
    """Result of :func:`tighten`.

    :param value: the final value, ``<= original`` and ``<=`` every ceiling.
    :param original: the value asked for.
    :param steps: the steps that lowered it, in order; empty if nothing changed.
    """

    value: int
    original: int
    steps: tuple[TightenStep, ...]


def tighten(value: int, ceilings: Sequence[tuple[str, int, str]] = (), *, step: int = 1, step_name: str = "pump_step") -> Tightened:
    """The one place a value is lowered: apply each ceiling, then round down to ``step``.

    Each limiter may only lower the value, and each one that does records why.
    Properties (tested): the result is ``<=`` the input and every ceiling, a
    multiple of ``step``, independent of ceiling order, and applying the chain
    to its own result changes nothing.

    :param value: requested amount, >= 0 (any unit; the ceilings share it).
    :param ceilings: ``(name, ceiling, reason)`` triples; ceilings below 0 act as 0.
    :raises ConfigError: for a negative ``value`` (rejected, not clamped).
    :param step: round down to a multiple of this (the pump's step), >= 1.
    :param step_name: name recorded for the rounding step.
    :return: a :class:`Tightened`.
    """
    value = require_range("value", value, 0, 10**18, "")
    step = require_range("step", step, 1, 10**15, "")
    original = value
    steps: list[TightenStep] = []
    for name, ceiling, reason in ceilings:
        ceiling = max(0, require_int(f"ceiling {name}", ceiling))
        if ceiling < value:
            steps.append(TightenStep(name, value, ceiling, reason))
            value = ceiling
    rounded = value - value % step
    if rounded != value:
        steps.append(TightenStep(step_name, value, rounded, f"rounded down to a multiple of {step}"))
        value = rounded
    return Tightened(value, original, tuple(steps))


def check_programme_shape(steps: Sequence, periodic_boluses: Sequence, concentration_ug_per_ml: int, anchor_ms: int):
    """Validate and normalise a programme's parts (shared by both ``Programme`` classes).

    :param steps: ``(start_offset_ms, duration_ms, rate_nl_per_h)`` triples, contiguous from 0,
        covering exactly 24 h, 1 to 13 of them.
    :param periodic_boluses: ``(start_offset_ms, duration_ms, rate_nl_per_h)`` extra-rate triples,
        inside one day, not overlapping each other, at most 24.
    :param concentration_ug_per_ml: concentration of the programme, µg/mL.
    :param anchor_ms: monotonic time at which offset 0 of the day falls, ms.
    :return: ``(steps, periodic_boluses, segments)`` as tuples of int tuples; ``segments`` is the
        merged ``(start_offset_ms, rate_nl_per_h)`` rate function over the day.
    :raises ConfigError: on gaps, overlaps, too many steps or out-of-range numbers.
    """
    require_range("concentration_ug_per_ml", concentration_ug_per_ml, 1, MAX_CONCENTRATION_UG_PER_ML, "µg/mL")
    require_range("anchor_ms", anchor_ms, MIN_TIME_MS, MAX_TIME_MS, "ms")
    steps = tuple(tuple(s) for s in steps)
    periodic = tuple(tuple(b) for b in periodic_boluses)
    if not 1 <= len(steps) <= MAX_FLEX_STEPS:
        raise ConfigError("steps", len(steps), f"between 1 and {MAX_FLEX_STEPS} steps")
    expected = 0
    for i, step in enumerate(steps):
        if len(step) != 3:
            raise ConfigError(f"steps[{i}]", step, "(start_offset_ms, duration_ms, rate_nl_per_h)")
        start, duration, rate = step
        # Plain ints in range pass without building the field names (a kernel builds a programme
        # at every rate change); anything else goes through the checks that name the field.
        if not (type(start) is int and start == expected and type(duration) is int and 1 <= duration <= MS_PER_DAY
                and type(rate) is int and 0 <= rate <= MAX_RATE_NL_PER_H):
            require_int(f"steps[{i}].start_offset_ms", start)
            if start != expected:
                raise ConfigError(
                    f"steps[{i}].start_offset_ms", start, f"{expected} (steps must be contiguous, no gap or overlap)"
                )
            require_range(f"steps[{i}].duration_ms", duration, 1, MS_PER_DAY, "ms")
            require_range(f"steps[{i}].rate_nl_per_h", rate, 0, MAX_RATE_NL_PER_H, "nL/h")
        expected = start + duration
    if expected != MS_PER_DAY:
        raise ConfigError("steps", expected, f"ending at {MS_PER_DAY} ms (steps must cover 24 h exactly)")
    if len(periodic) > MAX_PERIODIC_BOLUSES:
        raise ConfigError("periodic_boluses", len(periodic), f"at most {MAX_PERIODIC_BOLUSES}")
    last_end = 0
    for i, b in enumerate(sorted(periodic)):
        if len(b) != 3:
            raise ConfigError(f"periodic_boluses[{i}]", b, "(start_offset_ms, duration_ms, rate_nl_per_h)")
        start, duration, rate = b
        require_range(f"periodic_boluses[{i}].start_offset_ms", start, 0, MS_PER_DAY - 1, "ms")
        require_range(f"periodic_boluses[{i}].duration_ms", duration, 1, MS_PER_DAY - start, "ms")
        require_range(f"periodic_boluses[{i}].rate_nl_per_h", rate, 1, MAX_RATE_NL_PER_H, "nL/h")
        if start < last_end:
            raise ConfigError(f"periodic_boluses[{i}].start_offset_ms", start, f">= {last_end} (boluses must not overlap)")
        last_end = start + duration
    periodic = tuple(sorted(periodic))
    if not periodic:
        # No overlays: the rate function is the steps themselves (each already <= the highest
        # rate), neighbours of equal rate merged.
        merged: list[tuple[int, int]] = []
        for start, _, rate in steps:
            if not merged or merged[-1][1] != rate:
                merged.append((start, rate))
        return steps, periodic, tuple(merged)
    # Merge the step function and the bolus overlays into one rate function.
    cuts = sorted({0} | {s[0] for s in steps} | {b[0] for b in periodic} | {b[0] + b[1] for b in periodic if b[0] + b[1] < MS_PER_DAY})
    segments: list[tuple[int, int]] = []
    for cut in cuts:
        rate = next(s[2] for s in reversed(steps) if s[0] <= cut)
        rate += sum(b[2] for b in periodic if b[0] <= cut < b[0] + b[1])
        if rate > MAX_RATE_NL_PER_H:
            raise ConfigError("programme rate", rate, f"<= {MAX_RATE_NL_PER_H} nL/h at offset {cut} ms")
        if not segments or segments[-1][1] != rate:
            segments.append((cut, rate))
    return steps, periodic, tuple(segments)


def _kind(value: object) -> int:
    """Check a delivery kind (an int in ``[0, N_KINDS)``)."""
    value = require_int("kind", value)
    if not 0 <= value < N_KINDS:
        raise ConfigError("kind", value, f"a DeliveryKind in [0, {N_KINDS - 1}]")
    return value


def _snap_int(field: str, value: object, low: int, high: int, unit: str = "") -> int:
    """An int in ``[low, high]`` from a snapshot; anything else is a :class:`ConfigError` (never ``TypeError``)."""
    if type(value) is not int:
        raise ConfigError(field, value, f"an int in [{low}, {high}] {unit}".rstrip())
    return require_range(field, value, low, high, unit)


def _snap_list(field: str, value: object, length: int | None = None) -> list | tuple:
    """A list (or tuple) from a snapshot, of ``length`` items when given."""
    if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
        raise ConfigError(field, value, "a list" + ("" if length is None else f" of {length} items"))
    return value


def _snap_dict(field: str, value: object, keys: set[str]) -> dict:
    """A dict from a snapshot with exactly ``keys``."""
    if not isinstance(value, dict) or set(value) != keys:
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise ConfigError(f"{field} keys", got, f"exactly {sorted(keys)}")
    return value


def _snap_optional_time(field: str, value: object) -> int | None:
    return None if value is None else _snap_int(field, value, 0, MAX_TIME_MS, "ms")


def _check_snapshot(snapshot: object) -> dict:
    """Validate a ledger snapshot (shared shape for both implementations).

    :raises ConfigError: naming the first malformed field; never ``TypeError``.
    """
    keys = {"version", "resolution_ms", "latest_minute", "buckets", "committed_pg", "bolus_starts", "last_bolus_start_ms"}
    snapshot = _snap_dict("snapshot", snapshot, keys)
    if type(snapshot["version"]) is not int or snapshot["version"] != SNAPSHOT_VERSION:
        raise ConfigError("snapshot.version", snapshot["version"], f"{SNAPSHOT_VERSION}")
    if type(snapshot["resolution_ms"]) is not int or snapshot["resolution_ms"] != LEDGER_RESOLUTION_MS:
        raise ConfigError("snapshot.resolution_ms", snapshot["resolution_ms"], f"{LEDGER_RESOLUTION_MS}")
    latest = snapshot["latest_minute"]
    if latest is not None:
        _snap_int("snapshot.latest_minute", latest, 0, 2**62 // LEDGER_RESOLUTION_MS, "min")
    buckets = []
    previous = None
    for i, item in enumerate(_snap_list("snapshot.buckets", snapshot["buckets"])):
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not isinstance(item[1], (list, tuple)) or len(item[1]) != N_KINDS:
            raise ConfigError(f"snapshot.buckets[{i}]", item, f"[minute, [{N_KINDS} ints]]")
        minute = item[0]
        if type(minute) is not int or latest is None or not latest - WINDOW_BUCKETS < minute <= latest or (
            previous is not None and minute <= previous
        ):
            raise ConfigError(f"snapshot.buckets[{i}].minute", minute, "increasing and inside the window")
        values = list(item[1])
        if not all(type(v) is int and 0 <= v <= MAX_BUCKET_PG for v in values):
            values = [_snap_int(f"snapshot.buckets[{i}][{k}]", v, 0, MAX_BUCKET_PG, "pg") for k, v in enumerate(values)]
        buckets.append((minute, values))
        previous = minute
    committed = [
        _snap_int(f"snapshot.committed_pg[{k}]", v, 0, MAX_BUCKET_PG, "pg")
        for k, v in enumerate(_snap_list("snapshot.committed_pg", snapshot["committed_pg"], N_KINDS))
    ]
    starts = []
    for i, item in enumerate(_snap_list("snapshot.bolus_starts", snapshot["bolus_starts"])):
        item = _snap_list(f"snapshot.bolus_starts[{i}]", item, 2)
        at = _snap_int(f"snapshot.bolus_starts[{i}].at_ms", item[0], 0, 2**62, "ms")
        if starts and at < starts[-1][0]:
            raise ConfigError(f"snapshot.bolus_starts[{i}].at_ms", at, f">= {starts[-1][0]} (in time order)")
        starts.append((at, _snap_int(f"snapshot.bolus_starts[{i}].kind", item[1], 0, N_KINDS - 1)))
    if starts and (len(starts) > BOLUS_HISTORY or starts[0][0] <= starts[-1][0] - MS_PER_DAY):
        raise ConfigError("snapshot.bolus_starts", len(starts), f"at most {BOLUS_HISTORY}, all within 24 h of the newest")
    last = [
        _snap_int(f"snapshot.last_bolus_start_ms[{k}]", v, -1, 2**62, "ms")
        for k, v in enumerate(_snap_list("snapshot.last_bolus_start_ms", snapshot["last_bolus_start_ms"], N_KINDS))
    ]
    for at, kind in starts:
        if last[kind] < at:
            raise ConfigError(f"snapshot.last_bolus_start_ms[{kind}]", last[kind], f">= {at} (its newest start)")
    return {
        "latest_minute": latest,
        "buckets": buckets,
        "committed_pg": committed,
        "bolus_starts": starts,
        "last_bolus_start_ms": last,
    }


def _prune_history(history: list[tuple[int, int]], now_ms: int) -> list[tuple[int, int]]:
    """Drop dose-history entries no future titration check can need.

    Keeps the newest entry in effect at ``now_ms - 24 h`` and everything after it.
    """
    keep_from = 0
    for i, (at, _dose) in enumerate(history):
        if at <= now_ms - MS_PER_DAY:
            keep_from = i
    return history[keep_from:]


#: Decisions older than this are no longer fresh (``SafetyKernel.is_fresh``): re-authorise, ms.
MAX_DECISION_AGE_MS = 60_000


def _check_interval(t0_ms: object, t1_ms: object) -> None:
    """Check the arguments of ``Programme.volume_numerator`` / ``delivered_pg``."""
    require_range("t0_ms", t0_ms, MIN_TIME_MS, MAX_TIME_MS, "ms")
    require_range("t1_ms", t1_ms, t0_ms, t0_ms + MAX_INTERVAL_MS, "ms")


_STATE_KEYS = {
    "version", "state_version", "concentration_ug_per_ml", "caps", "held_caps", "programme", "dose_history",
    "therapy_start_ms", "last_increase_ms", "last_step_ms", "interruption", "ledger", "checksum",
}


#: The checksum's canonical encoder, built once (``json.dumps`` with options builds one per call).
_CANONICAL_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


def _state_encoder() -> object:
    """The C encoder that ``_CANONICAL_JSON.encode`` builds at every call, built once (None without the C
    accelerator). Its circular-reference markers are its own: :func:`state_checksum` builds a new one after
    a failed call, whose markers may be left set."""
    make = json.encoder.c_make_encoder
    if make is None:
        return None
    enc = _CANONICAL_JSON
    return make({}, enc.default, json.encoder.encode_basestring_ascii, None, enc.key_separator,
                enc.item_separator, enc.sort_keys, enc.skipkeys, enc.allow_nan)


_STATE_ENCODER = _state_encoder()


def _rebuild_state_encoder() -> None:
    global _STATE_ENCODER
    _STATE_ENCODER = _state_encoder()


def state_checksum(state: dict) -> str:
    """SHA-256 (hex) of a state snapshot's canonical JSON, without its ``checksum`` key.

    :raises ConfigError: if the state is not JSON data.
    """
    try:
        body = {k: v for k, v in state.items() if k != "checksum"}
        text = _CANONICAL_JSON.encode(body) if _STATE_ENCODER is None else "".join(_STATE_ENCODER(body, 0))
    except (TypeError, ValueError) as exc:
        _rebuild_state_encoder()
        raise ConfigError("state snapshot", type(state).__name__, "JSON data from state_snapshot()", detail=str(exc)) from None
    return hashlib.sha256(text.encode()).hexdigest()


def _check_state_snapshot(snapshot: object, library: dict, programme_class: type) -> dict:
    """Validate a kernel state snapshot (shared by both implementations); return its parts.

    Checks the version, the checksum (:func:`state_checksum`: a truncated or altered snapshot,
    even one that still parses, is refused), every field's type and range, the time order of the
    dose history, and that the parts agree with each other (the last dose is that of the
    programme in effect, or 0 while stopped or discontinued; an interruption only after therapy
    started), so that a restored kernel is exactly the one that wrote it.

    :param programme_class: the implementation's ``Programme``, to rebuild the programme with.
    :raises ConfigError: naming the first malformed field; never ``TypeError``.
    """
    if isinstance(snapshot, dict) and snapshot.get("version") != STATE_SNAPSHOT_VERSION:
        raise ConfigError("state.version", snapshot.get("version"), f"{STATE_SNAPSHOT_VERSION}")
    snapshot = _snap_dict("state snapshot", snapshot, _STATE_KEYS)
    if type(snapshot["version"]) is not int:
        raise ConfigError("state.version", snapshot["version"], f"{STATE_SNAPSHOT_VERSION}")
    if snapshot["checksum"] != state_checksum(snapshot):
        raise ConfigError("state.checksum", snapshot["checksum"], "the SHA-256 of the rest (the snapshot was altered or truncated)")
    state_version = _snap_int("state.state_version", snapshot["state_version"], 0, 2**62)
    conc = snapshot["concentration_ug_per_ml"]
    if type(conc) is not int or conc not in library:
        raise ConfigError("state.concentration_ug_per_ml", conc, f"one of {sorted(library)} µg/mL")
    caps = caps_from_dict(snapshot["caps"], "state.caps")
    held = None
    if snapshot["held_caps"] is not None:
        item = _snap_dict("state.held_caps", snapshot["held_caps"], {"until_ms", "caps"})
        held = (_snap_int("state.held_caps.until_ms", item["until_ms"], CAPS_HOLD_MS, MAX_TIME_MS, "ms"),
                caps_from_dict(item["caps"], "state.held_caps.caps"))
    programme = None
    if snapshot["programme"] is not None:
        p = _snap_dict("state.programme", snapshot["programme"], {"steps", "periodic_boluses", "anchor_ms"})
        try:
            programme = programme_class(
                [tuple(_snap_list(f"state.programme.steps[{i}]", x, 3)) for i, x in enumerate(_snap_list("state.programme.steps", p["steps"]))],
                conc,
                periodic_boluses=[tuple(_snap_list(f"state.programme.periodic_boluses[{i}]", x, 3))
                                  for i, x in enumerate(_snap_list("state.programme.periodic_boluses", p["periodic_boluses"]))],
                anchor_ms=p["anchor_ms"],
            )
        except TypeError as exc:
            raise ConfigError("state.programme", p, "integer steps, boluses and anchor", detail=str(exc)) from None
    history = []
    for i, item in enumerate(_snap_list("state.dose_history", snapshot["dose_history"])):
        item = _snap_list(f"state.dose_history[{i}]", item, 2)
        at = _snap_int(f"state.dose_history[{i}].at_ms", item[0], MIN_TIME_MS, MAX_TIME_MS, "ms")
        dose = _snap_int(f"state.dose_history[{i}].dose_ng_per_day", item[1], 0, MAX_DOSE_NG_PER_DAY, "ng/day")
        if history and at < history[-1][0]:
            raise ConfigError(f"state.dose_history[{i}].at_ms", at, f">= {history[-1][0]} (in time order)")
        history.append((at, dose))
    start = snapshot["therapy_start_ms"]
    if start is not None:
        start = _snap_int("state.therapy_start_ms", start, MIN_TIME_MS, MAX_TIME_MS, "ms")
    if (start is None) != (not history) or (history and start > history[-1][0]):
        raise ConfigError("state.therapy_start_ms", start, "set exactly once the dose history holds a dose, not after its newest entry")
    last_increase = snapshot["last_increase_ms"]
    if last_increase is not None:
        last_increase = _snap_int("state.last_increase_ms", last_increase, MIN_TIME_MS, MAX_TIME_MS, "ms")
    last_step = snapshot["last_step_ms"]
    if last_step is not None:
        last_step = _snap_int("state.last_step_ms", last_step, MIN_TIME_MS, MAX_TIME_MS, "ms")
    interruption = None
    if snapshot["interruption"] is not None:
        item = _snap_dict("state.interruption", snapshot["interruption"], set(Interruption._fields))
        try:
            cause = InterruptionCause(item["cause"]).value
        except (ValueError, TypeError):
            raise ConfigError("state.interruption.cause", item["cause"], f"one of {[c.value for c in InterruptionCause]}") from None
        interruption = Interruption(
            _snap_int("state.interruption.since_ms", item["since_ms"], MIN_TIME_MS, MAX_TIME_MS, "ms"),
            _snap_int("state.interruption.dose_before_ng_per_day", item["dose_before_ng_per_day"], 0, MAX_DOSE_NG_PER_DAY, "ng/day"),
            cause,
        )
        if not history or interruption.since_ms > history[-1][0]:
            raise ConfigError("state.interruption.since_ms", interruption.since_ms, "at or before the newest dose-history entry")
    last_dose = history[-1][1] if history else None
    in_effect = None if programme is None else programme.daily_total_ng()
    if interruption is None or interruption.cause == InterruptionCause.MINIMUM_RATE:
        consistent = last_dose == in_effect and (interruption is None or programme is not None)
    elif interruption.cause in (InterruptionCause.STOPPED, InterruptionCause.PROCEDURE):
        consistent = last_dose == 0 and programme is not None
    else:
        consistent = last_dose == 0 and programme is None
    if not consistent:
        raise ConfigError("state.dose_history", last_dose, f"the dose of the programme in effect ({in_effect}), "
                          "or 0 while stopped or discontinued")
    return {
        "state_version": state_version, "limits": library[conc], "caps": caps, "held_caps": held,
        "programme": programme, "dose_history": history, "therapy_start_ms": start,
        "last_increase_ms": last_increase, "last_step_ms": last_step, "interruption": interruption,
    }
