"""Scenario files: a strict TOML schema of timed clinical actions and expectations.

A scenario describes one virtual patient over days or months: the rig, the
therapy settings, what clinicians, the patient and the fault injector do and
when, and what must hold afterwards. Unknown keys, wrong types, NaN and
negative quantities are rejected with :class:`~hal.errors.ConfigError` naming
the field, the value and what is allowed. Units are in every field name.

Decimal quantities may be written as TOML numbers (``fill_ml = 20.0``) or as
strings (``"0.048"``); a TOML float is read through its shortest decimal
representation, so ``0.048`` means exactly 48/1000. Times of actions are
``"<days>d <HH>:<MM>"`` after the scenario start (``"2d 09:30"``).

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

from hal.errors import ConfigError

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000

_AT_RE = re.compile(r"^\s*(\d{1,4})d\s+(\d{2}):(\d{2})\s*$")

ORIGINS = ("spinal", "cerebral", "paediatric")


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
            raise ConfigError(f"{self.path}.{key}", None, "present (required field)")
        return default

    def has(self, key: str) -> bool:
        return key in self._raw

    def name(self, key: str) -> str:
        return f"{self.path}.{key}"

    def done(self, allowed: tuple[str, ...] = ()) -> None:
        if self._raw:
            key = sorted(self._raw)[0]
            known = ", ".join(allowed) if allowed else "no other keys"
            raise ConfigError(f"{self.path}.{key}", self._raw[key], f"a known key ({known})",
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
    """

    reservoir_capacity_nl: int = 20_000_000
    syringe_diameter_mm: Decimal = Decimal("4.699")
    bias_pct: Decimal = Decimal(0)
    noise_pct: Decimal = Decimal(0)


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
        return Scenario(settings, self.patient, self.pump, self.therapy, actions, self.expectations, self.source)


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


FAULT_KINDS = ("stall", "occlusion", "power_cycle", "lost_reply", "comms_down", "comms_up")


def _r_fault(path: str, v: Any) -> str:
    return _str(path, v, choices=FAULT_KINDS)


#: Every action and its parameters: name -> {key: (reader, default)}; ``...`` = required.
ACTION_FIELDS: dict[str, dict[str, tuple[Any, Any]]] = {
    "screening_dose": {
        "dose_ug": (_r_dose_ug, ...),
        "adequate": (_r_bool, ...),
        "effect_h": (lambda p, v: _decimal(p, v, minimum=Decimal(0), maximum=Decimal(48)), Decimal(0)),
    },
    "implant": {
        "concentration_ug_per_ml": (_r_conc, ...),
        "fill_ml": (_r_ml_to_nl, ...),
        "dose_ug_per_day": (lambda p, v: _int(p, v, minimum=1, maximum=100_000), None),
        "prime": (_r_bool, True),
    },
    "titrate": {
        "dose_ug_per_day": (lambda p, v: _int(p, v, minimum=0, maximum=100_000), None),
        "change_pct": (lambda p, v: _decimal(p, v, minimum=Decimal(-100), maximum=Decimal(1000)), None),
        "reason": (_r_text, "clinical response"),
        "override_reason": (_r_text, None),
    },
    "clinician_bolus": {
        "dose_ug": (_r_dose_ug, ...),
        "duration_min": (_r_min_to_ms, 10 * MS_PER_MIN),
    },
    "configure_patient_bolus": {
        "dose_ug": (_r_dose_ug, ...),
        "lockout_h": (_r_h_to_ms, ...),
        "max_per_day": (lambda p, v: _int(p, v, minimum=1, maximum=24), ...),
        "duration_min": (_r_min_to_ms, 10 * MS_PER_MIN),
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


def parse_scenario(text: str, *, source: str = "<string>") -> Scenario:
    """Parse and validate scenario TOML text.

    :param text: the TOML document.
    :param source: where it came from (for messages and the report).
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
    s.done(("name", "description", "duration_days", "poll_interval_min", "seed"))

    p = _Fields("patient", top.take("patient", {}))
    patient = PatientSettings(
        origin=_str(p.name("origin"), p.take("origin", "spinal"), choices=ORIGINS),
        variability_cv=_decimal(p.name("variability_cv"), p.take("variability_cv", 0),
                                minimum=Decimal(0), maximum=Decimal(1)),
    )
    p.done(("origin", "variability_cv"))

    u = _Fields("pump", top.take("pump", {}))
    pump = PumpSettings(
        reservoir_capacity_nl=_scaled(u.name("reservoir_ml"), u.take("reservoir_ml", 20), 1_000_000,
                                      minimum=Decimal(0), strict_min=True, maximum=Decimal(60)),
        syringe_diameter_mm=_decimal(u.name("syringe_diameter_mm"), u.take("syringe_diameter_mm", "4.699"),
                                     minimum=Decimal("0.1"), maximum=Decimal(50)),
        bias_pct=_decimal(u.name("bias_pct"), u.take("bias_pct", 0), minimum=Decimal(-50), maximum=Decimal(50)),
        noise_pct=_decimal(u.name("noise_pct"), u.take("noise_pct", 0), minimum=Decimal(0), maximum=Decimal(50)),
    )
    u.done(("reservoir_ml", "syringe_diameter_mm", "bias_pct", "noise_pct"))

    t = _Fields("therapy", top.take("therapy", {}))
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
    )
    t.done(("max_dose_ug_per_day", "minimum_rate_ml_per_day", "low_reservoir_ml", "low_reservoir_days",
            "empty_reservoir_ml", "dead_volume_ml", "refill_tolerance_pct", "drift_tolerance_pct",
            "unconfirmed_alarm_h", "restart_titration_after_h"))
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
        params = _read_params(path, a, ACTION_FIELDS[do])
        a.done(("at", "do", "label", *ACTION_FIELDS[do]))
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

    top.done(("scenario", "patient", "pump", "therapy", "action", "expect"))
    return Scenario(settings, patient, pump, therapy, tuple(actions), tuple(expectations), source)


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
    return parse_scenario(path.read_text(encoding="utf-8"), source=str(path))


def shipped_scenarios() -> list[str]:
    """Names of the scenarios in :data:`SCENARIO_DIR`."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))
