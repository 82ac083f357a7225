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

from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_DAY, MS_PER_H, MS_PER_MIN
from cython_ext.vocabulary import MAX_FLEX_STEPS, Origin


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
PRESCRIPTION_DIR = Path(__file__).resolve().parents[1] / "prescriptions"

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
SCENARIO_DIR = Path(__file__).resolve().parents[1] / "scenarios"

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
