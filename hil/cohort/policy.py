"""Titration policy files: the rules a clinician follows, for every patient of a cohort.

A policy file (TOML) names the prescription each origin starts from and one or
more policies; every patient of the cohort is run under each policy::

    [cohort]
    days = 180                      # default length of the run, 1 .. MAX_DAYS

    [prescriptions]                 # one per origin, paths relative to this file
    spinal = "rx_spinal.toml"
    cerebral = "rx_cerebral.toml"
    paediatric = "rx_paediatric.toml"

    [[policy]]
    name = "standard"
    decision_hour = 9               # the daily visit, hour of the day 0-23
    target_ashworth = 2.0           # titrate up while the Modified Ashworth score is above this
    step_pct = 20                   # each increase, % of the daily dose
    interval_h = 24                 # at least this long after the last increase
    retry_after_refusal_h = 168     # ask again this long after a refused increase
    decrease_below_ashworth = 0.5   # optional: decrease when the tone is this low (over-treated)
    decrease_on_sedation = true     # decrease when the patient is sedated (overdose flag)
    decrease_pct = 15               # each decrease, % of the daily dose
    bolus_above_ashworth = 3.5      # optional: a clinician bolus when the tone is this high
    bolus_ug = 50
    bolus_duration_min = 10
    refill_below_ml = 4.0           # refill when the reservoir holds this little

The policy only *asks*: every increase, decrease, bolus and refill goes through
the controller's workflows (:class:`controller.therapy.Therapy`) and the compiled
safety kernel, which may refuse it (the titration cap per 24 h, the interval,
the prescription's cap, bolus lockouts and counts). Unknown keys, NaN, values
out of range and missing fields are rejected with a
:class:`~cython_ext.errors.ConfigError` naming the field, before anything runs.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from controller.prescription import Prescription, assess_change, load_prescription
from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_H, MS_PER_MIN, NG_PER_UG, NL_PER_ML
from cython_ext.vocabulary import Origin

#: Longest cohort run, days.
MAX_DAYS = 3650
#: Most policies in one file.
MAX_POLICIES = 16
#: Longest policy name, characters.
MAX_NAME_CHARS = 64


@dataclass(frozen=True)
class TitrationPolicy:
    """One clinician's rules (see the module docstring for the fields and their units).

    :ivar name: short name, unique in its file.
    :ivar decision_hour: hour of the day of the daily visit, 0-23.
    :ivar target_ashworth: target Modified Ashworth score, (0, 4).
    :ivar step_pct: each increase, % of the daily dose, 1-100.
    :ivar interval_h: least time after an increase before the next, h, 1-720.
    :ivar retry_after_refusal_h: time after a refused increase before asking again, h, 1-2160.
    :ivar decrease_below_ashworth: decrease when the score is below this (None: never for low tone).
    :ivar decrease_on_sedation: decrease when the patient is sedated.
    :ivar decrease_pct: each decrease, % of the daily dose, 1-50.
    :ivar bolus_above_ashworth: a clinician bolus when the score is above this (None: no boluses).
    :ivar bolus_ng: bolus size, ng.
    :ivar bolus_duration_ms: bolus duration, ms.
    :ivar refill_below_nl: refill when the reservoir holds at most this, nL.
    """

    name: str
    decision_hour: int
    target_ashworth: float
    step_pct: int
    interval_h: int
    retry_after_refusal_h: int
    decrease_below_ashworth: float | None
    decrease_on_sedation: bool
    decrease_pct: int
    bolus_above_ashworth: float | None
    bolus_ng: int
    bolus_duration_ms: int
    refill_below_nl: int

    def increased_dose_ng_per_day(self, dose_ng_per_day: int) -> int:
        """The next step up from ``dose_ng_per_day``, ng/day, to the whole µg below (at least the next whole µg)."""
        ug = dose_ng_per_day * (100 + self.step_pct) // (100 * NG_PER_UG)
        return max(ug, dose_ng_per_day // NG_PER_UG + 1) * NG_PER_UG

    def decreased_dose_ng_per_day(self, dose_ng_per_day: int) -> int:
        """The next step down from ``dose_ng_per_day``, ng/day, to the whole µg."""
        return -(-dose_ng_per_day * (100 - self.decrease_pct) // (100 * NG_PER_UG)) * NG_PER_UG

    def next_increase_h(self, asked_h: float, allowed: bool) -> float:
        """When an increase may next be asked for, h, after one asked at ``asked_h``."""
        return asked_h + (self.interval_h if allowed else self.retry_after_refusal_h)

    def choose(self, ashworth: np.ndarray, sedated: np.ndarray, increase_due: np.ndarray,
               reservoir_nl: np.ndarray) -> dict[str, np.ndarray]:
        """What the clinician asks for at a visit, for one patient or many (arrays of one shape).

        :param ashworth: Modified Ashworth score observed.
        :param sedated: whether the patient is sedated (an overdose flag).
        :param increase_due: whether an increase may be asked for (:meth:`next_increase_h` has passed).
        :param reservoir_nl: volume left in the reservoir, nL.
        :return: boolean arrays ``refill``, ``decrease``, ``increase`` and ``bolus``.
        """
        decrease = np.asarray(sedated) & self.decrease_on_sedation
        if self.decrease_below_ashworth is not None:
            decrease = decrease | (ashworth < self.decrease_below_ashworth)
        increase = ~decrease & (ashworth > self.target_ashworth) & increase_due
        bolus = np.zeros_like(decrease)
        if self.bolus_above_ashworth is not None:
            bolus = ~decrease & (ashworth > self.bolus_above_ashworth)
        return {"refill": reservoir_nl <= self.refill_below_nl, "decrease": decrease, "increase": increase,
                "bolus": bolus}


@dataclass(frozen=True)
class CohortProtocol:
    """A whole policy file.

    :ivar days: default length of the run, days.
    :ivar prescriptions: the prescription each origin starts from.
    :ivar policies: the policies, in file order.
    :ivar source: where it was read from.
    """

    days: int
    prescriptions: dict[Origin, Prescription]
    policies: tuple[TitrationPolicy, ...]
    source: str = "<string>"


class _Fields:
    """One table read field by field; :meth:`done` rejects whatever was not read."""

    def __init__(self, path: str, raw: Any) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(path, raw, "a table")
        self.path = path
        self._raw = dict(raw)

    def name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def take(self, key: str, default: Any = ...) -> Any:
        if key in self._raw:
            return self._raw.pop(key)
        if default is ...:
            raise ConfigError(self.name(key), None, "present (required field)")
        return default

    def number(self, key: str, low: float, high: float, default: Any = ..., *, integer: bool = False,
               open_low: bool = False, open_high: bool = False) -> Any:
        value = self.take(key, default)
        if value is None:
            return None
        kinds: tuple[type, ...] = (int,) if integer else (int, float)
        inside = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value) \
            and (low < value if open_low else low <= value) and (value < high if open_high else value <= high)
        if not inside:
            what = "an integer" if integer else "a finite number"
            raise ConfigError(self.name(key), value, f"{what} in {'(' if open_low else '['}{low:g}, {high:g}"
                                                     f"{')' if open_high else ']'}")
        return value

    def done(self) -> None:
        if self._raw:
            key = sorted(self._raw)[0]
            raise ConfigError(self.name(key), self._raw[key], "a known key", detail="unknown key")


def _policy(path: str, raw: Any) -> TitrationPolicy:
    f = _Fields(path, raw)
    name = f.take("name")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_CHARS or not name.isprintable():
        raise ConfigError(f.name("name"), name, f"printable text of 1-{MAX_NAME_CHARS} characters")
    target = f.number("target_ashworth", 0, 4, open_low=True, open_high=True)
    below = f.number("decrease_below_ashworth", 0, target, None, open_high=True)
    above = f.number("bolus_above_ashworth", target, 4, None, open_low=True, open_high=True)
    sedation = f.take("decrease_on_sedation", True)
    if not isinstance(sedation, bool):
        raise ConfigError(f.name("decrease_on_sedation"), sedation, "true or false")
    policy = TitrationPolicy(
        name=name,
        decision_hour=f.number("decision_hour", 0, 23, 9, integer=True),
        target_ashworth=float(target),
        step_pct=f.number("step_pct", 1, 100, integer=True),
        interval_h=f.number("interval_h", 1, 720, 24, integer=True),
        retry_after_refusal_h=f.number("retry_after_refusal_h", 1, 2160, 168, integer=True),
        decrease_below_ashworth=None if below is None else float(below),
        decrease_on_sedation=sedation,
        decrease_pct=f.number("decrease_pct", 1, 50, 15, integer=True),
        bolus_above_ashworth=None if above is None else float(above),
        bolus_ng=round(f.number("bolus_ug", 1, 100, 50) * NG_PER_UG),
        bolus_duration_ms=round(f.number("bolus_duration_min", 1, 240, 10) * MS_PER_MIN),
        refill_below_nl=round(f.number("refill_below_ml", 0, 60, 4.0, open_low=True) * NL_PER_ML),
    )
    f.done()
    return policy


def protocol_from_dict(doc: dict[str, Any], *, base_dir: Path, source: str = "<string>") -> CohortProtocol:
    """A :class:`CohortProtocol` from a parsed policy file.

    :param base_dir: where the prescriptions are looked for.
    :raises ConfigError: naming the field, for unknown keys, NaN, out-of-range or missing values, and
        for a prescription that does not load or does not match its origin.
    """
    top = _Fields("", doc)
    head = _Fields("cohort", top.take("cohort", {}))
    days = head.number("days", 1, MAX_DAYS, 180, integer=True)
    head.done()
    rx_table = _Fields("prescriptions", top.take("prescriptions"))
    prescriptions = {}
    for origin in Origin:
        name = rx_table.take(origin.value)
        if not isinstance(name, str) or not name:
            raise ConfigError(rx_table.name(origin.value), name, "a prescription file name")
        rx = load_prescription(base_dir / name)
        assess_change(None, rx).require_acceptable()
        if rx.patient.origin is not origin or rx.programme.mode.value != "simple":
            raise ConfigError(rx_table.name(origin.value), name,
                              f"a simple-programme prescription for a {origin.value} patient")
        prescriptions[origin] = rx
    rx_table.done()
    raw = top.take("policy")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_POLICIES:
        raise ConfigError("policy", raw, f"an array of 1-{MAX_POLICIES} tables ([[policy]])")
    policies = tuple(_policy(f"policy[{i}]", table) for i, table in enumerate(raw))
    names = [p.name for p in policies]
    if len(set(names)) != len(names):
        raise ConfigError("policy.name", names, "unique names")
    top.done()
    return CohortProtocol(days, prescriptions, policies, source)


def load_protocol(path: str | Path) -> CohortProtocol:
    """Read and check a policy file (TOML); its prescriptions are read relative to it.

    :raises ConfigError: for unreadable TOML or any bad field (named).
    """
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("policy file", str(path), "a readable UTF-8 file", detail=str(exc)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("policy file", str(path), "valid TOML", detail=str(exc)) from exc
    return protocol_from_dict(doc, base_dir=path.parent, source=str(path))


def visit_ms(policy: TitrationPolicy, day: int) -> int:
    """Controller time of the visit on ``day`` (0-based), ms."""
    return (day * 24 + policy.decision_hour) * MS_PER_H
