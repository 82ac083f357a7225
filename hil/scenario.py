"""Scenario files: a strict TOML schema of timed clinical actions and expectations.

A scenario describes one virtual patient over days or months: the rig, the
therapy settings, what clinicians, the patient and the fault injector do and
when, and what must hold afterwards. Unknown keys, wrong types, NaN and
negative quantities are rejected with :class:`~cython_ext.errors.ConfigError` naming
the field, the value and what is allowed. Units are in every field name.

Decimal quantities may be written as TOML numbers (``fill_ml = 20.0``) or as
strings (``"0.048"``); a TOML float is read through its shortest decimal
representation, so ``0.048`` means exactly 48/1000. Times of actions are
``"<days>d <HH>:<MM>"`` after the scenario start (``"2d 09:30"``).

Tables: ``[scenario]`` (name, description, duration_days, poll_interval_min,
seed, prescription), ``[patient]`` (origin, variability_cv), ``[pump]`` (reservoir_ml,
syringe_diameter_mm, bias_pct, noise_pct, faults), ``[therapy]`` (caps and
thresholds, see :class:`TherapySettings`), then any number of ``[[action]]``
(``do`` = screening_dose, implant, titrate, flex, clinician_bolus,
configure_patient_bolus, patient_bolus, refill, fault, clear_fault,
acknowledge_alarms, taper, discontinue, restart_controller) and ``[[expect]]``
(``check`` = dose_within, alarm_raised, alarm_not_raised, denied, allowed,
no_overdose, no_severe_withdrawal, ashworth_at_most, boluses_delivered,
mode_at_end, invariants_hold). The safety invariants are checked on every run
whether or not a scenario asks. :data:`ACTION_FIELDS` and :data:`EXPECT_FIELDS`
list every parameter.

**Prescriptions.** ``[scenario] prescription = "spinal_simple_500.toml"`` names a
prescription file (:mod:`controller.prescription`), looked for beside the scenario,
then in :data:`PRESCRIPTION_DIR`. It is then the single source of the drug and
concentration, the patient's origin, the reservoir and pump, the caps, the boluses
and the titration policy: the kernel gets
:meth:`~controller.prescription.Prescription.kernel_caps_kwargs`, ``implant`` fills
the prescribed volume and starts the prescribed dose, and ``configure_patient_bolus``
activates the prescribed patient bolus. Giving any of these in the scenario too
(:data:`PRESCRIBED_KEYS`) is rejected; ``[therapy]`` keeps only what a prescription
cannot express (refill and drift tolerances, unconfirmed-delivery and restart times).
Simple and flex programmes are taken: a flex prescription's ``implant`` starts the whole
prescribed day (authorised by the kernel at once, anchored at the scenario's midnight) and the
loop changes the rate at each boundary; a timed ``flex`` action can still replace it later.
A periodic-bolus programme is taken the same way: the kernel authorises basal and periodic
boluses as one programme (its daily total against the 24 h cap), and the loop wakes at each
bolus start and end and records the bolus part in the ledger as a periodic bolus.

**Accuracy step.** An optional ``[accuracy]`` table (:mod:`hil.gravimetric.step`) measures
the pump's delivery accuracy gravimetrically before therapy starts: on its own simulated pump
and balance in virtual time, or on a real rig (``pump_url`` with ``balance_url``). Its verdict,
the overall mean error against ``max_abs_mean_error_pct``, is one of the run's checks, and its
report goes to ``accuracy/`` in the report directory.

Example::

    [scenario]
    name = "short"
    duration_days = 3

    [[action]]
    at = "0d 09:00"
    do = "implant"
    dose_ug_per_day = 100
    concentration_ug_per_ml = 500
    fill_ml = 20

    [[expect]]
    check = "dose_within"
    tolerance_pct = 5
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from cython_ext.errors import ConfigError, ItbError
from cython_ext.vocabulary import MAX_FLEX_STEPS, Origin

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000

_AT_RE = re.compile(r"^\s*(\d{1,4})d\s+(\d{2}):(\d{2})\s*$")

ORIGINS = tuple(origin.value for origin in Origin)


# --------------------------------------------------------------------------------------------
# field readers


def _decimal(path: str, value: Any, *, minimum: Decimal | None = None, maximum: Decimal | None = None,
             strict_min: bool = False) -> Decimal:
    """Read an exact decimal from an int, a decimal string or a TOML float."""
    if isinstance(value, bool):
        raise ConfigError(path, value, "a number")
    if isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(path, value, "a finite number")
        result = Decimal(repr(value))
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ConfigError(path, value, "a decimal number such as \"0.25\"") from None
        if not result.is_finite():
            raise ConfigError(path, value, "a finite number")
    else:
        raise ConfigError(path, value, "a number")
    allowed = _range_text(minimum, maximum, strict_min)
    if minimum is not None and (result < minimum or (strict_min and result == minimum)):
        raise ConfigError(path, value, allowed)
    if maximum is not None and result > maximum:
        raise ConfigError(path, value, allowed)
    return result


def _range_text(minimum: Decimal | None, maximum: Decimal | None, strict_min: bool) -> str:
    lo = "(" if strict_min else "["
    lo_val = "-inf" if minimum is None else str(minimum)
    hi_val = "inf" if maximum is None else str(maximum)
    return f"in {lo}{lo_val}, {hi_val}]"


def _int(path: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, value, "an integer")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ConfigError(path, value, _range_text(
            None if minimum is None else Decimal(minimum), None if maximum is None else Decimal(maximum), False))
    return value


def _bool(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, value, "true or false")
    return value


def _str(path: str, value: Any, *, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(path, value, "a non-empty string")
    if choices is not None and value not in choices:
        raise ConfigError(path, value, "one of " + ", ".join(choices))
    return value


def _scaled(path: str, value: Any, scale: int, *, minimum: Decimal | None = Decimal(0),
            maximum: Decimal | None = None, strict_min: bool = False) -> int:
    """An exact decimal multiplied by ``scale``; the result must be a whole number."""
    number = _decimal(path, value, minimum=minimum, maximum=maximum, strict_min=strict_min)
    scaled = number * scale
    if scaled != scaled.to_integral_value():
        raise ConfigError(path, value, f"a multiple of {Decimal(1) / scale} (no rounding is done)")
    return int(scaled)


def _nl_per_h_from_ml_per_day(path: str, value: Any) -> int:
    """A rate in mL/day that must be a whole number of nL/h (0.048 mL/day = 2000 nL/h)."""
    nl_per_day = _scaled(path, value, 1_000_000, minimum=Decimal(0), strict_min=True, maximum=Decimal(24))
    if nl_per_day % 24:
        raise ConfigError(path, value, "a whole number of nL/h (a multiple of 0.000024 mL/day)")
    return nl_per_day // 24


def parse_at(path: str, value: Any) -> int:
    """Parse ``"<days>d <HH>:<MM>"`` into milliseconds after the scenario start."""
    if not isinstance(value, str):
        raise ConfigError(path, value, "a time such as \"2d 09:30\"")
    match = _AT_RE.match(value)
    if not match:
        raise ConfigError(path, value, "a time such as \"2d 09:30\"")
    days, hours, minutes = (int(g) for g in match.groups())
    if hours > 23 or minutes > 59:
        raise ConfigError(path, value, "hours 00-23 and minutes 00-59")
    return days * MS_PER_DAY + hours * MS_PER_H + minutes * MS_PER_MIN


def _table(path: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(path, raw, "a table")
    return raw


class _Fields:
    """Reads a table field by field and rejects whatever is left unread."""

    def __init__(self, path: str, raw: Any) -> None:
        self.path = path
        self._raw = dict(_table(path, raw))

    def take(self, key: str, default: Any = ...) -> Any:
        if key in self._raw:
            return self._raw.pop(key)
        if default is ...:
            raise ConfigError(self.name(key), None, "present (required field)")
        return default

    def has(self, key: str) -> bool:
        return key in self._raw

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def done(self, allowed: tuple[str, ...] = ()) -> None:
        if self._raw:
            key = sorted(self._raw)[0]
            known = ", ".join(allowed) if allowed else "no other keys"
            raise ConfigError(self.name(key), self._raw[key], f"a known key ({known})",
                              detail="unknown key")


# --------------------------------------------------------------------------------------------
# the schema


@dataclass(frozen=True)
class ScenarioSettings:
    """The ``[scenario]`` table.

    :ivar name: short name (used in reports).
    :ivar description: one paragraph for the report.
    :ivar duration_ms: virtual length of the run, ms.
    :ivar poll_interval_ms: time between status polls, ms.
    :ivar seed: seed for every random choice of the run (patient, pump noise, faults).
    """

    name: str
    description: str = ""
    duration_ms: int = MS_PER_DAY
    poll_interval_ms: int = 30 * MS_PER_MIN
    seed: int = 0


@dataclass(frozen=True)
class PatientSettings:
    """The ``[patient]`` table.

    :ivar origin: spasticity origin: spinal, cerebral or paediatric (sets the titration cap).
    :ivar variability_cv: inter-patient variability of the PK/PD model (0 = reference patient).
    """

    origin: str = "spinal"
    variability_cv: Decimal = Decimal(0)


@dataclass(frozen=True)
class PumpSettings:
    """The ``[pump]`` table: the mechanism and its reservoir.

    :ivar reservoir_capacity_nl: largest volume the reservoir holds, nL.
    :ivar syringe_diameter_mm: inside diameter of the syringe that stands in for the reservoir, mm.
    :ivar bias_pct: systematic delivery error of the simulated mechanism, %.
    :ivar noise_pct: random delivery error of the simulated mechanism, %.
    :ivar faults: wire and device fault specs for the simulator (``sim.faults`` syntax).
    """

    reservoir_capacity_nl: int = 20_000_000
    syringe_diameter_mm: Decimal = Decimal("4.699")
    bias_pct: Decimal = Decimal(0)
    noise_pct: Decimal = Decimal(0)
    faults: tuple[str, ...] = ()


@dataclass(frozen=True)
class TherapySettings:
    """The ``[therapy]`` table: the clinician-configured safety parameters.

    :ivar max_dose_ug_per_day: prescription cap on the rolling 24 h dose, µg/day.
    :ivar minimum_rate_nl_per_h: minimum-rate mode rate, nL/h (0.048 mL/day = 2000 nL/h).
    :ivar low_reservoir_nl: low-reservoir alarm volume, nL.
    :ivar low_reservoir_days: low-reservoir alarm on days to the alarm volume, days.
    :ivar empty_reservoir_nl: volume at which the reservoir counts as empty, nL.
    :ivar dead_volume_nl: catheter and pump dead volume, nL.
    :ivar refill_tolerance_pct: allowed mismatch between expected and removed volume at refill, %.
    :ivar drift_tolerance_pct: allowed mismatch between the ledger and the pump counter, %.
    :ivar unconfirmed_alarm_ms: delivery unconfirmed for this long raises the therapy-interruption alarm, ms.
    :ivar restart_titration_after_ms: an interruption longer than this restarts at the titration dose, ms.
    :ivar max_bolus_ug: largest clinician or patient bolus, µg.
    :ivar bolus_lockout_ms: minimum time between bolus starts, ms.
    :ivar max_boluses_per_day: most clinician and patient boluses in any 24 h.
    :ivar patient_bolus_enabled: whether patient-activated boluses are prescribed.
    :ivar bolus_enabled: whether boluses are prescribed at all.
    :ivar titration_cap_pct: largest titration increase per 24 h, % (None: the origin's cap).
    :ivar min_titration_interval_ms: minimum time between titration steps, ms.
    :ivar decrease_confirm_pct: a decrease larger than this needs confirmation, %.

    With a prescription file, everything here except the refill and drift tolerances, the
    unconfirmed-delivery time and the restart-at-titration-dose time comes from the prescription.
    """

    max_dose_ug_per_day: int = 1000
    minimum_rate_nl_per_h: int = 2000
    low_reservoir_nl: int = 2_000_000
    low_reservoir_days: int = 7
    empty_reservoir_nl: int = 500_000
    dead_volume_nl: int = 250_000
    refill_tolerance_pct: Decimal = Decimal(20)
    drift_tolerance_pct: Decimal = Decimal(5)
    unconfirmed_alarm_ms: int = 2 * MS_PER_H
    restart_titration_after_ms: int = 24 * MS_PER_H
    max_bolus_ug: int = 50
    bolus_lockout_ms: int = 4 * MS_PER_H
    max_boluses_per_day: int = 4
    patient_bolus_enabled: bool = True
    bolus_enabled: bool = True
    titration_cap_pct: int | None = None
    min_titration_interval_ms: int = 24 * MS_PER_H
    decrease_confirm_pct: int = 20


def _frozen(mapping: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Action:
    """One timed action.

    :ivar at_ms: when, ms after the scenario start.
    :ivar do: what (one of :data:`ACTION_FIELDS`).
    :ivar params: the validated parameters, units in their names.
    :ivar label: name used by expectations to refer to this action.
    :ivar index: position in the file (ties at the same time run in file order).
    """

    at_ms: int
    do: str
    params: Mapping[str, Any] = field(default_factory=lambda: _frozen({}))
    label: str = ""
    index: int = 0


@dataclass(frozen=True)
class Expectation:
    """One check made after the run.

    :ivar check: which (one of :data:`EXPECT_FIELDS`).
    :ivar params: the validated parameters.
    """

    check: str
    params: Mapping[str, Any] = field(default_factory=lambda: _frozen({}))


@dataclass(frozen=True)
class Scenario:
    """A whole validated scenario file."""

    settings: ScenarioSettings
    patient: PatientSettings
    pump: PumpSettings
    therapy: TherapySettings
    actions: tuple[Action, ...]
    expectations: tuple[Expectation, ...]
    source: str = "<built-in>"
    #: The prescription (:class:`controller.prescription.Prescription`) the therapy follows, or None.
    prescription: Any = None
    #: Where it was loaded from ("" without one).
    prescription_source: str = ""
    #: A gravimetric accuracy step (:class:`hil.gravimetric.step.AccuracyStep`) run before therapy, or None.
    accuracy: Any = None

    def with_duration(self, duration_ms: int) -> Scenario:
        """The same scenario run for ``duration_ms`` (actions after the end are dropped)."""
        if duration_ms <= 0:
            raise ConfigError("duration_ms", duration_ms, "> 0")
        settings = ScenarioSettings(
            name=self.settings.name,
            description=self.settings.description,
            duration_ms=duration_ms,
            poll_interval_ms=self.settings.poll_interval_ms,
            seed=self.settings.seed,
        )
        actions = tuple(a for a in self.actions if a.at_ms <= duration_ms)
        return Scenario(settings, self.patient, self.pump, self.therapy, actions, self.expectations, self.source,
                        self.prescription, self.prescription_source, self.accuracy)


# Readers of each action's parameters: key -> (reader, default). A default of ... means required.
def _r_dose_ug(path: str, v: Any) -> int:
    return _int(path, v, minimum=1, maximum=100_000)


def _r_pct(path: str, v: Any) -> Decimal:
    return _decimal(path, v, minimum=Decimal(0), maximum=Decimal(1000))


def _r_conc(path: str, v: Any) -> int:
    return _int(path, v, minimum=1, maximum=100_000)


def _r_ml_to_nl(path: str, v: Any) -> int:
    return _scaled(path, v, 1_000_000, maximum=Decimal(1000))


def _r_min_to_ms(path: str, v: Any) -> int:
    return _scaled(path, v, MS_PER_MIN, minimum=Decimal(0), strict_min=True, maximum=Decimal(24 * 60))


def _r_h_to_ms(path: str, v: Any) -> int:
    return _scaled(path, v, MS_PER_H, minimum=Decimal(0), maximum=Decimal(24 * 365))


def _r_text(path: str, v: Any) -> str:
    return _str(path, v)


def _r_bool(path: str, v: Any) -> bool:
    return _bool(path, v)


def _r_count(path: str, v: Any) -> int:
    return _int(path, v, minimum=0, maximum=1000)


#: Device faults an action can inject at a time (wire faults go in ``[pump] faults``, see :mod:`sim.faults`).
FAULT_KINDS = ("stall", "occlusion", "power_cycle")


def _r_fault(path: str, v: Any) -> str:
    return _str(path, v, choices=FAULT_KINDS)


def _flex_steps(path: str, value: Any) -> tuple[tuple[int, int], ...]:
    """``[["00:00", 300], ["08:00", 450], ...]``: step start (time of day) and daily dose in µg/day."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_FLEX_STEPS:
        raise ConfigError(path, value, f"1 to {MAX_FLEX_STEPS} [\"HH:MM\", dose_ug_per_day] pairs")
    steps = []
    for index, item in enumerate(value):
        if not isinstance(item, list) or len(item) != 2:
            raise ConfigError(f"{path}[{index}]", item, "a [\"HH:MM\", dose_ug_per_day] pair")
        start = parse_at(f"{path}[{index}][0]", f"0d {item[0]}" if isinstance(item[0], str) else item[0])
        dose = _int(f"{path}[{index}][1]", item[1], minimum=1, maximum=100_000)
        steps.append((start, dose * 1000))
    if steps[0][0] != 0 or any(b[0] <= a[0] for a, b in zip(steps, steps[1:])):
        raise ConfigError(path, value, "steps starting at \"00:00\" in increasing time order")
    return tuple(steps)


#: Every action and its parameters: name -> {key: (reader, default)}; ``...`` = required.
ACTION_FIELDS: dict[str, dict[str, tuple[Any, Any]]] = {
    "screening_dose": {
        "dose_ug": (_r_dose_ug, ...),
        "adequate": (_r_bool, ...),
        "effect_h": (lambda p, v: _decimal(p, v, minimum=Decimal(0), maximum=Decimal(48)), Decimal(0)),
    },
    "implant": {
        "concentration_ug_per_ml": (_r_conc, None),  # required without a prescription; absent with one
        "fill_ml": (_r_ml_to_nl, None),
        "dose_ug_per_day": (lambda p, v: _int(p, v, minimum=1, maximum=100_000), None),
        "prime": (_r_bool, True),
    },
    "titrate": {
        "dose_ug_per_day": (lambda p, v: _int(p, v, minimum=0, maximum=100_000), None),
        "change_pct": (lambda p, v: _decimal(p, v, minimum=Decimal(-100), maximum=Decimal(1000)), None),
        "reason": (_r_text, "clinical response"),
        "override_reason": (_r_text, None),
    },
    "flex": {
        "steps": (lambda p, v: _flex_steps(p, v), ...),
        "override_reason": (_r_text, None),
    },
    "clinician_bolus": {
        "dose_ug": (_r_dose_ug, ...),
        "duration_min": (_r_min_to_ms, 10 * MS_PER_MIN),
    },
    "configure_patient_bolus": {
        "dose_ug": (_r_dose_ug, None),  # required without a prescription; absent with one
        "duration_min": (_r_min_to_ms, None),  # default 10 min without a prescription
    },
    "patient_bolus": {},
    "refill": {
        "removed_ml": (_r_ml_to_nl, ...),
        "added_ml": (_r_ml_to_nl, ...),
        "concentration_ug_per_ml": (_r_conc, ...),
        "lot": (_r_text, "unrecorded"),
        "acknowledge_mismatch": (_r_bool, False),
        "complete": (_r_bool, True),
    },
    "fault": {
        "kind": (_r_fault, ...),
        "count": (lambda p, v: _int(p, v, minimum=1, maximum=100), 1),
    },
    "clear_fault": {
        "kind": (_r_fault, ...),
    },
    "acknowledge_alarms": {},
    "taper": {
        "target_dose_ug_per_day": (lambda p, v: _int(p, v, minimum=0, maximum=100_000), ...),
        "authorised_by": (_r_text, ...),
    },
    "discontinue": {
        "authorised_by": (_r_text, None),
        "emergency": (_r_bool, False),
    },
    "restart_controller": {},
}

EXPECT_FIELDS: dict[str, dict[str, tuple[Any, Any]]] = {
    "dose_within": {"tolerance_pct": (_r_pct, ...)},
    "alarm_raised": {"code": (_r_text, ...)},
    "alarm_not_raised": {"code": (_r_text, ...)},
    "denied": {"action": (_r_text, ...), "reason": (_r_text, None)},
    "allowed": {"action": (_r_text, ...)},
    "no_overdose": {},
    "no_severe_withdrawal": {},
    "ashworth_at_most": {"score": (lambda p, v: _decimal(p, v, minimum=Decimal(0), maximum=Decimal(4)), ...)},
    "boluses_delivered": {"kind": (_r_text, ...), "count": (_r_count, ...)},
    "invariants_hold": {},
    "mode_at_end": {"mode": (lambda p, v: _str(p, v, choices=("idle", "running", "minimum_rate", "stopped_fault",
                                                             "discontinued")), ...)},
}


def _read_params(path: str, raw: _Fields, spec: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for key, (reader, default) in spec.items():
        if raw.has(key):
            params[key] = reader(raw.name(key), raw.take(key))
        elif default is ...:
            raise ConfigError(raw.name(key), None, "present (required field)")
        else:
            params[key] = default
    return params


def _fault_specs(path: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(path, value, "a list of fault spec strings such as \"lost-reply:match=RAT\"")
    from sim.faults import parse_fault

    for index, text in enumerate(value):
        try:
            parse_fault(text)
        except ConfigError as exc:
            raise ConfigError(f"{path}[{index}]", text, "a valid fault spec", detail=str(exc)) from None
    return tuple(value)


#: Folder of the prescriptions shipped with itb-fil (searched after the scenario's own folder).
PRESCRIPTION_DIR = Path(__file__).with_name("prescriptions")

#: Scenario keys a prescription sets: giving one as well is giving the same thing twice.
PRESCRIBED_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "patient": ("origin",),
    "pump": ("reservoir_ml",),
    "therapy": ("max_dose_ug_per_day", "minimum_rate_ml_per_day", "low_reservoir_ml", "low_reservoir_days",
                "empty_reservoir_ml", "dead_volume_ml", "max_bolus_ug", "bolus_lockout_h", "max_boluses_per_day",
                "patient_bolus_enabled"),
    "implant": ("concentration_ug_per_ml", "fill_ml", "dose_ug_per_day"),
    "configure_patient_bolus": ("dose_ug", "duration_min"),
})


def resolve_prescription(name: str, base_dir: Path | None) -> Path:
    """Find a scenario's prescription file: relative to the scenario's folder, then :data:`PRESCRIPTION_DIR`.

    :raises ConfigError: if neither holds it.
    """
    candidates = [(base_dir or Path.cwd()) / name, PRESCRIPTION_DIR / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    shipped = ", ".join(sorted(p.name for p in PRESCRIPTION_DIR.glob("*.toml")))
    raise ConfigError("scenario.prescription", name,
                      f"a file beside the scenario or a shipped prescription ({shipped})")


def _whole(path: str, value_n: int, per: int, unit: str) -> int:
    """``value_n / per`` as an exact integer (the scenario's settings are in whole ``unit``)."""
    if value_n % per:
        raise ConfigError(path, value_n, f"a whole number of {unit} (no rounding is done)")
    return value_n // per


def _prescribed_therapy(rx: Any, kept: Mapping[str, Any]) -> TherapySettings:
    """The therapy settings a prescription gives, plus the ``kept`` ones it cannot express.

    The bolus fields mirror :meth:`controller.prescription.Prescription.kernel_caps_kwargs`
    (one size, lockout and count for both kinds: the larger size, the longer lockout, the
    smaller count), which is what the runner gives the kernel.
    """
    from cython_ext import units

    conc = rx.drug.concentration_ug_per_ml
    if rx.programme.mode.value not in ("simple", "flex", "periodic"):
        raise ConfigError("prescription.programme.mode", rx.programme.mode.value, "simple, flex or periodic")
    enabled = [b for b in (rx.clinician_bolus, rx.patient_bolus) if b.enabled]
    sizes = [rx.clinician_bolus.max_dose_ng if rx.clinician_bolus.enabled else 0,
             rx.patient_bolus.dose_ng if rx.patient_bolus.enabled else 0]
    minimum_rate = units.rate_nl_per_h_for_dose(rx.titration.minimum_rate_ng_per_day, conc)
    if units.dose_ng_per_day_for_rate(minimum_rate, conc) != rx.titration.minimum_rate_ng_per_day:
        raise ConfigError("prescription.titration.minimum_rate_ug_per_day",
                          rx.titration.minimum_rate_ng_per_day / 1000,
                          f"a whole number of nL/h at {conc} ug/mL")
    return TherapySettings(
        max_dose_ug_per_day=_whole("prescription.titration.max_dose_ug_per_day", rx.titration.max_dose_ng_per_day,
                                   1000, "ug/day"),
        minimum_rate_nl_per_h=minimum_rate,
        low_reservoir_nl=rx.pump.low_reservoir_alarm_nl,
        low_reservoir_days=rx.pump.low_reservoir_alarm_days,
        empty_reservoir_nl=rx.pump.empty_threshold_nl,
        dead_volume_nl=rx.pump.dead_volume_nl,
        max_bolus_ug=_whole("prescription bolus size", max(sizes), 1000, "ug") if enabled else 1,
        bolus_lockout_ms=max((b.lockout_ms for b in enabled), default=4 * MS_PER_H),
        max_boluses_per_day=min((b.max_per_day for b in enabled), default=0),
        patient_bolus_enabled=rx.patient_bolus.enabled,
        bolus_enabled=rx.clinician_bolus.enabled,
        titration_cap_pct=rx.titration.max_increase_pct,
        min_titration_interval_ms=rx.titration.min_interval_ms,
        decrease_confirm_pct=rx.titration.decrease_confirm_pct,
        **kept,
    )


def _reject_twice(table: str, fields: _Fields, rx_source: str) -> None:
    for key in PRESCRIBED_KEYS[table]:
        if fields.has(key):
            raise ConfigError(fields.name(key), fields.take(key),
                              f"absent: the prescription {rx_source} sets it (give it once)")


def parse_scenario(text: str, *, source: str = "<string>", base_dir: Path | None = None) -> Scenario:
    """Parse and validate scenario TOML text.

    :param text: the TOML document.
    :param source: where it came from (for messages and the report).
    :param base_dir: the scenario's folder, where ``[scenario] prescription`` is looked for first
        (default: the current directory), then :data:`PRESCRIPTION_DIR`.
    :raises ConfigError: on any schema violation; nothing is partially accepted.
    """
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("scenario", source, "valid TOML", detail=str(exc)) from None
    top = _Fields("", doc)

    s = _Fields("scenario", top.take("scenario"))
    settings = ScenarioSettings(
        name=_str(s.name("name"), s.take("name")),
        description=s.take("description", ""),
        duration_ms=_scaled(s.name("duration_days"), s.take("duration_days", 1), MS_PER_DAY,
                            minimum=Decimal(0), strict_min=True, maximum=Decimal(3650)),
        poll_interval_ms=_scaled(s.name("poll_interval_min"), s.take("poll_interval_min", 30), MS_PER_MIN,
                                 minimum=Decimal(0), strict_min=True, maximum=Decimal(24 * 60)),
        seed=_int(s.name("seed"), s.take("seed", 0), minimum=0),
    )
    if not isinstance(settings.description, str):
        raise ConfigError("scenario.description", settings.description, "a string")
    rx = None
    rx_source = ""
    if s.has("prescription"):
        from controller.prescription import assess_change, load_prescription

        rx_path = resolve_prescription(_str(s.name("prescription"), s.take("prescription")), base_dir)
        rx = load_prescription(rx_path)
        assess_change(None, rx).require_acceptable()  # soft-limit breaches need their overrides (PRX-02)
        rx_source = str(rx_path)
    s.done(("name", "description", "duration_days", "poll_interval_min", "seed", "prescription"))

    p = _Fields("patient", top.take("patient", {}))
    if rx is not None:
        _reject_twice("patient", p, rx_source)
    patient = PatientSettings(
        origin=rx.patient.origin.value if rx is not None else
        _str(p.name("origin"), p.take("origin", "spinal"), choices=ORIGINS),
        variability_cv=_decimal(p.name("variability_cv"), p.take("variability_cv", 0),
                                minimum=Decimal(0), maximum=Decimal(1)),
    )
    p.done(("origin", "variability_cv"))

    u = _Fields("pump", top.take("pump", {}))
    if rx is not None:
        _reject_twice("pump", u, rx_source)
    pump = PumpSettings(
        reservoir_capacity_nl=rx.pump.pump_model.capacity_nl if rx is not None else
        _scaled(u.name("reservoir_ml"), u.take("reservoir_ml", 20), 1_000_000,
                minimum=Decimal(0), strict_min=True, maximum=Decimal(60)),
        syringe_diameter_mm=_decimal(u.name("syringe_diameter_mm"), u.take("syringe_diameter_mm", "4.699"),
                                     minimum=Decimal("0.1"), maximum=Decimal(50)),
        bias_pct=_decimal(u.name("bias_pct"), u.take("bias_pct", 0), minimum=Decimal(-50), maximum=Decimal(50)),
        noise_pct=_decimal(u.name("noise_pct"), u.take("noise_pct", 0), minimum=Decimal(0), maximum=Decimal(50)),
        faults=_fault_specs(u.name("faults"), u.take("faults", [])),
    )
    u.done(("reservoir_ml", "syringe_diameter_mm", "bias_pct", "noise_pct", "faults"))

    t = _Fields("therapy", top.take("therapy", {}))
    if rx is not None:
        _reject_twice("therapy", t, rx_source)
    therapy = TherapySettings(
        max_dose_ug_per_day=_int(t.name("max_dose_ug_per_day"), t.take("max_dose_ug_per_day", 1000),
                                 minimum=1, maximum=2003),
        minimum_rate_nl_per_h=_nl_per_h_from_ml_per_day(t.name("minimum_rate_ml_per_day"),
                                                        t.take("minimum_rate_ml_per_day", "0.048")),
        low_reservoir_nl=_r_ml_to_nl(t.name("low_reservoir_ml"), t.take("low_reservoir_ml", 2)),
        low_reservoir_days=_int(t.name("low_reservoir_days"), t.take("low_reservoir_days", 7), minimum=0, maximum=365),
        empty_reservoir_nl=_r_ml_to_nl(t.name("empty_reservoir_ml"), t.take("empty_reservoir_ml", "0.5")),
        dead_volume_nl=_r_ml_to_nl(t.name("dead_volume_ml"), t.take("dead_volume_ml", "0.25")),
        refill_tolerance_pct=_r_pct(t.name("refill_tolerance_pct"), t.take("refill_tolerance_pct", 20)),
        drift_tolerance_pct=_r_pct(t.name("drift_tolerance_pct"), t.take("drift_tolerance_pct", 5)),
        unconfirmed_alarm_ms=_r_h_to_ms(t.name("unconfirmed_alarm_h"), t.take("unconfirmed_alarm_h", 2)),
        restart_titration_after_ms=_r_h_to_ms(t.name("restart_titration_after_h"),
                                              t.take("restart_titration_after_h", 24)),
        max_bolus_ug=_int(t.name("max_bolus_ug"), t.take("max_bolus_ug", 50), minimum=1, maximum=100),
        bolus_lockout_ms=_r_h_to_ms(t.name("bolus_lockout_h"), t.take("bolus_lockout_h", 4)),
        max_boluses_per_day=_int(t.name("max_boluses_per_day"), t.take("max_boluses_per_day", 4), minimum=0, maximum=8),
        patient_bolus_enabled=_bool(t.name("patient_bolus_enabled"), t.take("patient_bolus_enabled", True)),
    )
    t.done(("max_dose_ug_per_day", "minimum_rate_ml_per_day", "low_reservoir_ml", "low_reservoir_days",
            "empty_reservoir_ml", "dead_volume_ml", "refill_tolerance_pct", "drift_tolerance_pct",
            "unconfirmed_alarm_h", "restart_titration_after_h", "max_bolus_ug", "bolus_lockout_h",
            "max_boluses_per_day", "patient_bolus_enabled"))
    if rx is not None:
        kept = {k: getattr(therapy, k) for k in ("refill_tolerance_pct", "drift_tolerance_pct",
                                                 "unconfirmed_alarm_ms", "restart_titration_after_ms")}
        therapy = _prescribed_therapy(rx, kept)
    if therapy.empty_reservoir_nl >= therapy.low_reservoir_nl:
        raise ConfigError("therapy.empty_reservoir_ml", therapy.empty_reservoir_nl / 1e6,
                          f"below therapy.low_reservoir_ml ({therapy.low_reservoir_nl / 1e6})")

    raw_actions = top.take("action", [])
    if not isinstance(raw_actions, list):
        raise ConfigError("action", raw_actions, "an array of tables ([[action]])")
    actions: list[Action] = []
    labels: set[str] = set()
    for index, raw in enumerate(raw_actions):
        path = f"action[{index}]"
        a = _Fields(path, raw)
        at_ms = parse_at(a.name("at"), a.take("at"))
        do = _str(a.name("do"), a.take("do"), choices=tuple(ACTION_FIELDS))
        label = a.take("label", "")
        if not isinstance(label, str):
            raise ConfigError(a.name("label"), label, "a string")
        if label:
            if label in labels:
                raise ConfigError(a.name("label"), label, "unique among actions")
            labels.add(label)
        if rx is not None and do in PRESCRIBED_KEYS:
            _reject_twice(do, a, rx_source)
        params = _read_params(path, a, ACTION_FIELDS[do])
        a.done(("at", "do", "label", *ACTION_FIELDS[do]))
        if rx is None and do == "implant":
            for key in ("concentration_ug_per_ml", "fill_ml"):
                if params[key] is None:
                    raise ConfigError(a.name(key), None, "present (required field without a prescription)")
        if do == "configure_patient_bolus":
            if rx is None and params["dose_ug"] is None:
                raise ConfigError(a.name("dose_ug"), None, "present (required field without a prescription)")
            if rx is None and params["duration_min"] is None:
                params["duration_min"] = 10 * MS_PER_MIN
            if rx is not None and not rx.patient_bolus.enabled:
                raise ConfigError(a.name("do"), do, f"an action the prescription {rx_source} allows "
                                  "(its patient bolus is not enabled)")
        if do == "titrate" and (params["dose_ug_per_day"] is None) == (params["change_pct"] is None):
            raise ConfigError(f"{path}.dose_ug_per_day", params["dose_ug_per_day"],
                              "given, or change_pct given, but not both")
        if do == "discontinue" and not params["emergency"] and params["authorised_by"] is None:
            raise ConfigError(f"{path}.authorised_by", None, "present unless emergency = true")
        if at_ms > settings.duration_ms:
            raise ConfigError(a.name("at"), a.name("at"), f"within the scenario ({settings.duration_ms} ms)")
        actions.append(Action(at_ms=at_ms, do=do, params=_frozen(params), label=label, index=index))
    actions.sort(key=lambda act: (act.at_ms, act.index))

    raw_expect = top.take("expect", [])
    if not isinstance(raw_expect, list):
        raise ConfigError("expect", raw_expect, "an array of tables ([[expect]])")
    expectations: list[Expectation] = []
    for index, raw in enumerate(raw_expect):
        path = f"expect[{index}]"
        e = _Fields(path, raw)
        check = _str(e.name("check"), e.take("check"), choices=tuple(EXPECT_FIELDS))
        params = _read_params(path, e, EXPECT_FIELDS[check])
        e.done(("check", *EXPECT_FIELDS[check]))
        if check in ("denied", "allowed") and params["action"] not in labels:
            raise ConfigError(f"{path}.action", params["action"], "the label of an action in this file")
        expectations.append(Expectation(check=check, params=_frozen(params)))

    accuracy = None
    if top.has("accuracy"):
        from hil.gravimetric.step import parse_accuracy_step

        accuracy = parse_accuracy_step(top.take("accuracy"))
    top.done(("scenario", "patient", "pump", "therapy", "action", "expect", "accuracy"))
    return Scenario(settings, patient, pump, therapy, tuple(actions), tuple(expectations), source, rx, rx_source,
                    accuracy)


#: Folder of the scenarios shipped with itb-fil.
SCENARIO_DIR = Path(__file__).with_name("scenarios")

#: Name of the scenario ``itb run`` runs when none is given.
DEFAULT_SCENARIO = "default"


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a scenario by file path, or by the name of a shipped one (``"default"``).

    :raises ConfigError: if it does not exist or does not validate.
    """
    path = Path(name_or_path)
    if not path.exists():
        shipped = SCENARIO_DIR / f"{name_or_path}.toml"
        if shipped.exists():
            path = shipped
        else:
            names = ", ".join(sorted(p.stem for p in SCENARIO_DIR.glob("*.toml")))
            raise ConfigError("scenario", str(name_or_path), f"an existing file or a shipped scenario ({names})")
    return parse_scenario(path.read_text(encoding="utf-8"), source=str(path), base_dir=path.parent)


def shipped_scenarios() -> list[str]:
    """Names of the scenarios in :data:`SCENARIO_DIR`."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


# --------------------------------------------------------------------------------------------
# running a scenario

#: Syringe volume of the simulated mechanism, mL: large, so the simulated syringe never runs dry;
#: the implanted reservoir is the controller's prediction, as on a real implant.
SIM_SYRINGE_VOLUME_ML = "1000"

#: Largest ``--speed`` for scaled real time (virtual seconds per wall second).
MAX_SPEED = 1000

#: Relative tolerance of the ledger-versus-pump-counter invariant, ppm, and its floor, nL.
COUNTER_MATCH_PPM = 5_000
COUNTER_MATCH_FLOOR_NL = 20_000


@dataclass
class RunOptions:
    """How to run a scenario.

    :ivar link: simulator link (``pty``, ``inprocess``, ``tcp``) when no real pump is given.
    :ivar pump_url: a real pump's serial URL; then the run is in real time.
    :ivar speed: virtual seconds per wall second for a simulated pump (None: as fast as possible);
        must be 1 with a real pump.
    :ivar report_dir: where the report, journal, checkpoint and serial trace go (None: no files kept).
    :ivar progress: called as ``progress(elapsed_ms, duration_ms)`` after each poll.
    :ivar balance_url: a real balance's serial URL, for the scenario's accuracy step on a real rig.
    :ivar safe_mode_timeout_s: run the pump in New Era Safe mode with this watchdog, s (1-255).
        The loop's poll heartbeats it; in real (or scaled) time a driver heartbeat thread also
        runs between polls. In virtual time the poll interval must be under half the watchdog.
    """

    link: str = "pty"
    pump_url: str | None = None
    speed: float | None = None
    report_dir: Path | None = None
    progress: Any = None
    safe_mode_timeout_s: int | None = None
    balance_url: str | None = None


class _AlarmTee:
    """Journal adapter for the alarm manager: writes to the journal and keeps a copy for the report."""

    def __init__(self, journal: Any, record: Any, clock_ms: Any) -> None:
        self.journal = journal
        self.record = record
        self.clock_ms = clock_ms

    def record_alarm(self, *, event: str, code: str, priority: str, actor: Any, detail: str = "") -> None:
        from hil.report import AlarmEvent

        self.record.alarms.append(AlarmEvent(self.clock_ms(), event, code, priority, detail))
        if self.journal is not None:
            self.journal.record_alarm(event=event, code=code, priority=priority, actor=actor, detail=detail)


def _jsonable_ints(payload: dict[str, Any]) -> dict[str, Any]:
    """Keep only values the journal stores exactly (no floats)."""
    return {k: v for k, v in payload.items() if v is None or isinstance(v, (bool, int, str, list))}


class ScenarioRunner:
    """Runs one scenario on a simulated or real pump and produces a :class:`~hil.report.RunRecord`.

    :param scenario: the validated scenario.
    :param options: where and how to run it.
    """

    def __init__(self, scenario: Scenario, options: RunOptions | None = None) -> None:
        self.scenario = scenario
        self.options = options or RunOptions()
        if self.options.pump_url is not None and self.options.speed not in (None, 1, 1.0):
            raise ConfigError("speed", self.options.speed, "1 with a real pump (--pump runs in real time)")
        if self.options.speed is not None and not 0 < self.options.speed <= MAX_SPEED:
            # Faster, and the few milliseconds of a programming exchange outlast the kernel's 60 s
            # decision age in scaled time; virtual time (no --speed) has no such limit.
            raise ConfigError("speed", self.options.speed, f"in (0, {MAX_SPEED}] (omit it for virtual time)")
        if self.options.pump_url is None and self.options.link not in ("pty", "inprocess", "tcp"):
            raise ConfigError("link", self.options.link, "one of pty, inprocess, tcp")
        safe = self.options.safe_mode_timeout_s
        if safe is not None:
            if isinstance(safe, bool) or not isinstance(safe, int) or not 1 <= safe <= 255:
                raise ConfigError("safe_mode_timeout_s", safe, "an integer in [1, 255] s")
            virtual = self.options.pump_url is None and self.options.speed is None
            if virtual and scenario.settings.poll_interval_ms * 2 >= safe * 1000:
                raise ConfigError("safe_mode_timeout_s", safe,
                                  f"more than twice the poll interval ({scenario.settings.poll_interval_ms / 1000:g} s) "
                                  "in virtual time, where only polls feed the watchdog")

    # -- set-up -----------------------------------------------------------------------------------

    def _clock(self) -> Any:
        from hal.clock import SystemClock
        from sim.clock import ScaledClock, VirtualClock

        if self.options.pump_url is not None:
            return SystemClock()
        if self.options.speed is not None:
            return ScaledClock(self.options.speed)
        return VirtualClock()

    def _gate(self, concentration: int, envelope: Any) -> Any:
        from controller.gate import KernelGate

        t = self.scenario.therapy
        if self.scenario.prescription is not None:
            # The prescription is the single source of the caps.
            return KernelGate(concentration, self.scenario.prescription.kernel_caps_kwargs(),
                              min_rate_nl_per_h=envelope.min_rate_nl_per_h, max_rate_nl_per_h=envelope.max_rate_nl_per_h)
        caps = dict(
            max_dose_ng_per_day=t.max_dose_ug_per_day * 1000,
            origin=self.scenario.patient.origin,
            bolus_enabled=True,
            patient_bolus_enabled=t.patient_bolus_enabled,
            max_bolus_ng=t.max_bolus_ug * 1000,
            bolus_lockout_ms=t.bolus_lockout_ms,
            max_boluses_per_day=t.max_boluses_per_day,
            minimum_rate_nl_per_h=t.minimum_rate_nl_per_h,
            max_priming_volume_nl=max(300_000, t.dead_volume_nl),
        )
        return KernelGate(concentration, caps, min_rate_nl_per_h=envelope.min_rate_nl_per_h,
                          max_rate_nl_per_h=envelope.max_rate_nl_per_h)

    def _loop_config(self) -> Any:
        from controller.loop import LoopConfig

        t = self.scenario.therapy
        return LoopConfig(
            poll_interval_ms=self.scenario.settings.poll_interval_ms,
            minimum_rate_nl_per_h=t.minimum_rate_nl_per_h,
            drift_tolerance_ppm=int(t.drift_tolerance_pct * 10_000),
            unconfirmed_alarm_ms=t.unconfirmed_alarm_ms,
            low_reservoir_nl=t.low_reservoir_nl,
            low_reservoir_days=t.low_reservoir_days,
            empty_reservoir_nl=t.empty_reservoir_nl,
            dead_volume_nl=t.dead_volume_nl,
            restart_titration_after_ms=t.restart_titration_after_ms,
            reservoir_capacity_nl=self.scenario.pump.reservoir_capacity_nl,
        )

    def _build_controller(self) -> None:
        from controller.alarms import AlarmManager
        from controller.loop import ControlLoop
        from controller.therapy import Therapy

        gate = self._gate(self._concentration, self._caps)
        self.alarms = AlarmManager(self.clock, self._tee)
        self.loop = ControlLoop(self.driver, self.clock, gate, self.alarms, self.store, self._loop_config())
        self.loop.journal = self.journal
        self.therapy = Therapy(self.loop, gate, dead_volume_nl=self.scenario.therapy.dead_volume_nl,
                               reservoir_capacity_nl=self.scenario.pump.reservoir_capacity_nl,
                               refill_tolerance_pct=int(self.scenario.therapy.refill_tolerance_pct),
                               restart_titration_after_ms=self.scenario.therapy.restart_titration_after_ms)
        from controller.gate import screening_gate

        self.therapy.screening_gate = getattr(self, "_screening_gate", None) or screening_gate()
        self._screening_gate = self.therapy.screening_gate
        self.gate = gate
        self.loop.observers.append(self._on_poll)
        self.loop.event_sinks.append(self._on_event)
        self.therapy.sinks.append(self._on_result)

    # -- callbacks ---------------------------------------------------------------------------------

    def _rel_ms(self) -> int:
        return self.loop.now_ms() - self.t0_ms if hasattr(self, "loop") else 0

    def _on_poll(self, poll: Any) -> None:
        from hil.report import Sample

        rel = poll.now_ms - self.t0_ms
        hours = poll.interval_ms / MS_PER_H
        if hours > 0:
            self.patient.set_infusion(poll.delivered_pg / 1000 / hours)
        state = self.patient.advance_to(max(self.patient.time_s, rel / 1000))
        conc = self.loop.concentration_ug_per_ml
        actual_nl = poll.delivered_nl
        if self.rig is not None:
            total = self.rig.device.mechanics.actual_delivered_nl()
            actual_nl, self._last_actual_nl = total - self._last_actual_nl, total
        if conc:
            self.delivered_pg += actual_nl * conc
            self.programmed_pg += poll.expected_nl * conc
        self.record.samples.append(Sample(
            t_ms=rel, rate_nl_per_h=poll.rate_nl_per_h, dose_24h_ug=poll.dose_24h_ng / 1000,
            cap_ug_per_day=poll.cap_ng_per_day / 1000, reservoir_ml=poll.reservoir_nl / 1e6,
            ashworth=round(state.ashworth, 3), effect_ng_per_ml=round(state.effect_ng_per_ml, 2)))
        if poll.dose_24h_ng > poll.cap_ng_per_day:
            self._breach("cap", f"rolling 24 h {poll.dose_24h_ng} ng > cap {poll.cap_ng_per_day} ng at {rel} ms")
        if poll.status_known and poll.mode in ("running", "minimum_rate") and self.loop.committed_rate_nl_per_h == 0:
            self._breach("zero_flow", f"zero flow while {poll.mode} at {rel} ms")
        if self.options.progress is not None:
            self.options.progress(rel, self.scenario.settings.duration_ms)

    def _on_event(self, event: str, payload: dict[str, Any]) -> None:
        from controller.audit import SYSTEM_ACTOR

        if event == "fault":
            self.faults.append(payload)
        if event == "counter_cleared":
            return  # routine housekeeping; not a therapy event
        if event == "program" and payload.get("result") == "committed" and not payload.get("uncertain"):
            # A verified rate the journal can replay from the authorised programme (flex steps, bolus ends);
            # the therapy events around it are journalled. Failures and uncertain outcomes always are.
            return
        if event == "stopped" and self.loop.mode.value == "running":
            self._breach("zero_flow", "stopped while running")
        if self.journal is not None:
            self.journal.append_audit(SYSTEM_ACTOR, f"loop.{event}", new=_jsonable_ints(payload))

    def _on_result(self, result: Any) -> None:
        from controller.audit import Actor, Role
        from hil.report import DecisionEvent

        self.record.decisions.append(DecisionEvent(self._rel_ms(), result.action, self._label, result.allowed,
                                                   tuple(result.reasons), result.detail))
        if self._label:
            self.results_by_label[self._label] = result
        if self.journal is not None:
            self.journal.append_audit(Actor("scenario", Role.CLINICIAN), f"workflow.{result.action}",
                                      new={"allowed": result.allowed, "reasons": list(result.reasons),
                                           "label": self._label},
                                      reason=result.detail, outcome="done" if result.allowed else "denied")

    def _breach(self, name: str, detail: str) -> None:
        self.breaches.setdefault(name, detail)

    # -- actions ---------------------------------------------------------------------------------------

    def _do(self, action: Action) -> None:
        p = action.params
        th = self.therapy
        self._label = action.label
        do = action.do
        if do == "screening_dose":
            result = th.screening_dose(p["dose_ug"], adequate=p["adequate"], effect_ms=int(p["effect_h"] * MS_PER_H))
            if result.allowed:
                self.patient.advance_to(max(self.patient.time_s, self._rel_ms() / 1000))
                self.patient.bolus(p["dose_ug"] * 1000)
        elif do == "implant":
            rx = self.scenario.prescription
            if rx is not None and rx.programme.mode.value in ("flex", "periodic"):
                steps = [(step.start_min * MS_PER_MIN, step.dose_ng_per_day) for step in rx.programme.steps]
                periodic = list(rx.kernel_periodic_boluses()) or None
                th.implant(rx.concentration_ug_per_ml, rx.pump.reservoir_volume_nl, flex_steps=steps,
                           anchor_ms=self.t0_ms, prime=p["prime"], periodic_boluses=periodic)
            elif rx is not None:
                th.implant(rx.concentration_ug_per_ml, rx.pump.reservoir_volume_nl,
                           dose_ng_per_day=rx.programme.steps[0].dose_ng_per_day, prime=p["prime"])
            else:
                dose = None if p["dose_ug_per_day"] is None else p["dose_ug_per_day"] * 1000
                th.implant(p["concentration_ug_per_ml"], p["fill_ml"], dose_ng_per_day=dose, prime=p["prime"])
        elif do == "titrate":
            if p["dose_ug_per_day"] is not None:
                target = p["dose_ug_per_day"] * 1000
            else:
                current = th.prescribed_dose_ng_per_day
                target = int(current * (100 + p["change_pct"]) / 100)
            th.titrate(target, reason=p["reason"], override_reason=p["override_reason"])
        elif do == "flex":
            th.set_flex(list(p["steps"]), anchor_ms=self.t0_ms, override_reason=p["override_reason"])
        elif do == "clinician_bolus":
            th.clinician_bolus(p["dose_ug"] * 1000, p["duration_min"])
        elif do == "configure_patient_bolus":
            rx = self.scenario.prescription
            if rx is not None:
                th.configure_patient_bolus(rx.patient_bolus.dose_ng, rx.patient_bolus.duration_ms)
            else:
                th.configure_patient_bolus(p["dose_ug"] * 1000, p["duration_min"])
        elif do == "patient_bolus":
            th.patient_bolus_request()
        elif do == "refill":
            th.refill(removed_nl=p["removed_ml"], added_nl=p["added_ml"],
                      concentration_ug_per_ml=p["concentration_ug_per_ml"], lot=p["lot"],
                      acknowledge_mismatch=p["acknowledge_mismatch"], complete=p["complete"])
        elif do == "fault":
            self._inject(p["kind"], clear=False)
        elif do == "clear_fault":
            self._inject(p["kind"], clear=True)
        elif do == "acknowledge_alarms":
            th.acknowledge_alarms()
        elif do == "taper":
            th.taper(p["target_dose_ug_per_day"] * 1000, authorised_by=p["authorised_by"])
        elif do == "discontinue":
            th.discontinue(authorised_by=p["authorised_by"], emergency=p["emergency"])
        elif do == "restart_controller":
            self._restart()
        self._label = ""

    def _inject(self, kind: str, *, clear: bool) -> None:
        from hil.report import DecisionEvent

        if self.rig is None:
            self.record.decisions.append(DecisionEvent(self._rel_ms(), "fault", self._label, False,
                                                       ("NO_SIMULATOR",), f"{kind}: only a simulated pump takes faults"))
            return
        device = self.rig.device
        if kind == "stall" and not clear:
            device.inject_stall()
        elif kind == "occlusion":
            device.set_occluded(not clear)
        elif kind == "power_cycle" and not clear:
            device.power_cycle()
        self.record.decisions.append(DecisionEvent(self._rel_ms(), "clear_fault" if clear else "fault",
                                                   self._label, True, (), f"{kind} injected" if not clear else f"{kind} cleared"))

    def _restart(self) -> None:
        """Drop the controller without saving anything (a crash) and start a new one from the store."""
        from hil.report import DecisionEvent

        self.loop.observers.clear()
        self.loop.event_sinks.clear()
        self._build_controller()
        found = self.loop.recover()
        self.therapy.restore_state()
        self.record.decisions.append(DecisionEvent(self._rel_ms(), "restart_controller", self._label, True, (),
                                                   f"resumed: {found}"))

    # -- the run ---------------------------------------------------------------------------------------

    def run(self) -> Any:
        """Run the scenario to its end and evaluate expectations and invariants."""
        import contextlib
        import tempfile
        import time
        from datetime import timezone

        import hal
        from controller.checkpoint import CheckpointStore
        from controller.journal import Journal
        from hal.pump import Direction
        from hil.report import RunRecord
        from sim.patient import Patient, PatientParameters
        from sim.rig import simulated_pump

        sc = self.scenario
        self.record = record = RunRecord(scenario=sc.settings.name, source=sc.source, description=sc.settings.description,
                                         duration_ms=sc.settings.duration_ms)
        self.breaches: dict[str, str] = {}
        self.faults: list[dict[str, Any]] = []
        self.results_by_label: dict[str, Any] = {}
        self._label = ""
        self.delivered_pg = 0
        self.programmed_pg = 0
        self._last_actual_nl = 0
        self.rig = None
        self.journal = None
        self.accuracy_outcome = None
        params = PatientParameters.sampled(sc.settings.seed, variability_cv=float(sc.patient.variability_cv))
        self.patient = Patient(params)
        implant = next((a for a in sc.actions if a.do == "implant"), None)
        if sc.prescription is not None:
            self._concentration = sc.prescription.concentration_ug_per_ml
        else:
            self._concentration = implant.params["concentration_ug_per_ml"] if implant else 500
        self.clock = self._clock()
        record.started_utc = self.clock.utc_now().astimezone(timezone.utc).isoformat()
        wall0 = time.perf_counter()
        with contextlib.ExitStack() as stack:
            work = self.options.report_dir
            if work is None:
                work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="itb-run-")))
            work.mkdir(parents=True, exist_ok=True)
            trace = work / "serial-trace.txt"
            for stale in ("journal.sqlite", "checkpoint.sqlite"):
                for suffix in ("", "-wal", "-shm"):
                    (work / (stale + suffix)).unlink(missing_ok=True)
            if self.options.balance_url is not None and (sc.accuracy is None or self.options.pump_url is None):
                raise ConfigError("balance_url", self.options.balance_url,
                                  "given only with a real pump and a scenario that has an [accuracy] step")
            if sc.accuracy is not None:
                # Before therapy, while the pump's port is still free: the step opens pump and balance itself.
                from hil.gravimetric.step import run_accuracy_step

                self.accuracy_outcome = run_accuracy_step(
                    sc.accuracy, report_dir=work / "accuracy", pump_url=self.options.pump_url,
                    balance_url=self.options.balance_url)
            if self.options.pump_url is None:
                self.rig = stack.enter_context(simulated_pump(
                    self.options.link, clock=self.clock, seed=sc.settings.seed, faults=sc.pump.faults,
                    syringe_diameter_mm=str(sc.pump.syringe_diameter_mm), syringe_volume_ml=SIM_SYRINGE_VOLUME_ML,
                    bias_pct=float(sc.pump.bias_pct), noise_pct=float(sc.pump.noise_pct)))
                url = self.rig.url
                record.link = f"simulated NE-1000 over {self.options.link}"
            else:
                url = self.options.pump_url
                record.link = "real pump"
            record.pump_url = url
            self.driver = hal.open_pump("ne1000", url, clock=self.clock, trace_path=trace,
                                        safe_mode_timeout_s=self.options.safe_mode_timeout_s)
            stack.callback(self.driver.close)
            if self.options.safe_mode_timeout_s is not None and (self.options.pump_url or self.options.speed):
                beat = getattr(self.driver, "start_heartbeat_thread", None)
                if callable(beat):
                    beat()
            record.trace_file = trace.name
            self._caps = self.driver.configure(syringe_diameter_mm=sc.pump.syringe_diameter_mm)
            self.driver.set_target_volume(0)
            self.driver.set_direction(Direction.INFUSE)
            self.journal = Journal(work / "journal.sqlite", self.clock)
            stack.callback(self.journal.close)
            self.store = CheckpointStore(work / "checkpoint.sqlite")
            stack.callback(self.store.close)
            self._tee = _AlarmTee(self.journal, record, lambda: self._rel_ms())
            if sc.prescription is not None:
                from controller.audit import Actor, Role
                from controller.prescription import assess_change

                # The prescription in effect, with its soft-limit overrides, before any therapy.
                self.journal.record_prescription(sc.prescription, Actor(sc.prescription.prescriber, Role.PRESCRIBER),
                                                 assessment=assess_change(None, sc.prescription),
                                                 reason=f"scenario {sc.settings.name}: {sc.prescription_source}")
            self._build_controller()
            self.t0_ms = self.loop.now_ms()
            try:
                for action in sc.actions:
                    self.loop.run_until(self.t0_ms + action.at_ms)
                    self._do(action)
                self.loop.run_until(self.t0_ms + sc.settings.duration_ms)
                self.loop.poll()
            except ItbError as exc:
                record.error = f"{type(exc).__name__}: {exc}"
            except KeyboardInterrupt:
                # The operator stopped the run: the pump keeps its last committed programme running.
                record.error = "interrupted by the operator; the pump keeps its last committed programme"
            record.wall_s = time.perf_counter() - wall0
            self._finish(record)
            if self.options.report_dir is None:
                record.trace_file = ""
        return record

    # -- evaluation ---------------------------------------------------------------------------------------

    def _finish(self, record: Any) -> None:
        from hil.report import CheckResult

        record.delivered_ug = self.delivered_pg / 1e6
        record.prescribed_ug = self.programmed_pg / 1e6
        record.delivered_by_kind_ug = {k: v / 1e6 for k, v in self.loop.delivered_pg_by_kind.items()}
        state = self.patient.state()
        record.patient = {
            "ashworth_final": round(state.ashworth, 3),
            "effect_ng_per_ml_final": round(state.effect_ng_per_ml, 2),
            "peak_overdose": self.patient.peak_overdose.name,
            "peak_withdrawal": self.patient.peak_withdrawal.name,
        }
        fc = self.loop.forecast()
        record.reservoir = {
            "remaining_ml": round(self.loop.reservoir_nl() / 1e6, 4),
            "concentration_ug_per_ml": self.loop.concentration_ug_per_ml,
            "days_to_low_alarm": None if fc is None else round(float(fc.days_to_low_alarm), 2),
            "low_alarm_utc": None if fc is None else fc.low_alarm_utc.isoformat(),
            "refill_due_utc": None if fc is None else fc.refill_due_utc.isoformat(),
        }
        pump_counted_nl = None
        if self.rig is not None:
            pump_counted_nl = self.rig.device.mechanics.infused_scaled // 3_600_000_000_000
            record.pump_dispensed_ml = pump_counted_nl / 1e6
        else:
            record.pump_dispensed_ml = self.loop.total_counted_nl / 1e6
        inv = record.invariants
        inv.append(CheckResult("rolling 24 h dose never above the cap", "cap" not in self.breaches,
                               self.breaches.get("cap", "checked at every poll")))
        inv.append(CheckResult("flow never zero without an authorised discontinue or STOP reaction",
                               "zero_flow" not in self.breaches and not self.loop.breaches,
                               self.breaches.get("zero_flow", "; ".join(self.loop.breaches) or "checked at every poll")))
        if pump_counted_nl is not None:
            diff = abs(pump_counted_nl - self.loop.total_counted_nl)
            limit = max(COUNTER_MATCH_FLOOR_NL, pump_counted_nl * COUNTER_MATCH_PPM // 1_000_000)
            inv.append(CheckResult("ledger matches the pump's dispensed volume", diff <= limit,
                                   f"ledger {self.loop.total_counted_nl} nL, pump {pump_counted_nl} nL, "
                                   f"difference {diff} nL (limit {limit} nL)"))
        boluses = self.store.boluses()
        record.boluses = [
            {"bolus_id": b.bolus_id, "kind": b.kind, "dose_ng": b.dose_ng, "volume_nl": b.volume_nl,
             "delivered_nl": b.delivered_nl, "status": b.status, "requested_t_ms": b.requested_ms - self.t0_ms,
             "detail": b.detail}
            for b in boluses
        ]
        ids = [b.bolus_id for b in boluses]
        twice = [b for b in boluses if b.delivered_nl is not None and b.delivered_nl > b.volume_nl + 1000]
        unfinished = [b for b in boluses if b.status != "finished" and (self.loop.bolus is None
                                                                       or self.loop.bolus.bolus_id != b.bolus_id)]
        running_id = None if self.loop.bolus is None else self.loop.bolus.bolus_id
        pending = [c for c in self.journal.pending_boluses() if c.command_id != running_id]
        inv.append(CheckResult("no bolus delivered twice",
                               len(ids) == len(set(ids)) and not twice and not unfinished and not pending,
                               f"{len(boluses)} boluses; over-delivered {len(twice)}; left open {len(unfinished)}; "
                               f"unresolved in the journal {len(pending)}"))
        raised = {a.code for a in record.alarms if a.event == "raise"}
        missing = sorted({f["alarm"] for f in self.faults} - raised)
        inv.append(CheckResult("every fault produced its alarm", not missing,
                               f"{len(self.faults)} faults" + (f"; missing {missing}" if missing else "")))
        if self.accuracy_outcome is not None:
            step = self.scenario.accuracy
            record.expectations.append(CheckResult(
                f"accuracy step: mean error within ±{step.max_abs_mean_error_pct:g} %", self.accuracy_outcome.passed,
                f"{self.accuracy_outcome.detail}; report in {self.accuracy_outcome.report_dir.name}/"))
        for exp in self.scenario.expectations:
            record.expectations.append(self._expect(exp, record, raised, boluses))

    def _expect(self, exp: Expectation, record: Any, raised: set[str], boluses: list[Any]) -> Any:
        from hil.report import CheckResult

        p = exp.params
        c = exp.check
        if c == "dose_within":
            err = record.dose_error_pct
            ok = err is not None and abs(err) <= float(p["tolerance_pct"])
            return CheckResult(f"delivered dose within {p['tolerance_pct']} % of programmed", ok,
                               f"delivered {record.delivered_ug:.1f} µg, programmed {record.prescribed_ug:.1f} µg"
                               + ("" if err is None else f" ({err:+.2f} %)"))
        if c == "alarm_raised":
            return CheckResult(f"alarm {p['code']} raised", p["code"] in raised, "raised" if p["code"] in raised else "not raised")
        if c == "alarm_not_raised":
            return CheckResult(f"alarm {p['code']} not raised", p["code"] not in raised,
                               "raised" if p["code"] in raised else "not raised")
        if c in ("denied", "allowed"):
            result = self.results_by_label.get(p["action"])
            if result is None:
                return CheckResult(f"{p['action']} {c}", False, "the action produced no decision")
            if c == "allowed":
                return CheckResult(f"{p['action']} allowed", result.allowed, result.detail or ",".join(result.reasons))
            ok = not result.allowed and (p["reason"] is None or p["reason"] in result.reasons)
            return CheckResult(f"{p['action']} denied" + (f" with {p['reason']}" if p["reason"] else ""), ok,
                               ",".join(result.reasons) or "allowed")
        if c == "no_overdose":
            peak = self.patient.peak_overdose
            return CheckResult("patient never overdosed", peak.value == 0, f"peak {peak.name}")
        if c == "no_severe_withdrawal":
            peak = self.patient.peak_withdrawal
            return CheckResult("patient never in severe withdrawal", peak.value < 2, f"peak {peak.name}")
        if c == "ashworth_at_most":
            final = self.patient.state().ashworth
            return CheckResult(f"final Ashworth at most {p['score']}", final <= float(p["score"]), f"{final:.2f}")
        if c == "boluses_delivered":
            n = sum(1 for b in boluses if b.kind == p["kind"] and b.status == "finished"
                    and not b.detail.startswith("not started"))
            return CheckResult(f"{p['count']} {p['kind']} boluses delivered", n == p["count"], f"{n} delivered")
        if c == "mode_at_end":
            mode = self.loop.mode.value
            return CheckResult(f"controller ends in mode {p['mode']}", mode == p["mode"], mode)
        if c == "invariants_hold":
            ok = all(i.passed for i in record.invariants)
            return CheckResult("all safety invariants hold", ok, "see the invariants table")
        raise ConfigError("expect.check", c, f"one of {tuple(EXPECT_FIELDS)}")


def run_scenario(scenario: Scenario, options: RunOptions | None = None) -> Any:
    """Run ``scenario`` and return its :class:`~hil.report.RunRecord` (see :class:`ScenarioRunner`)."""
    return ScenarioRunner(scenario, options).run()
