"""Titration policy files: the rules a clinician follows, for every patient of a cohort.

A policy file (TOML) names the prescription each origin starts from and one or
more policies; every patient of the cohort is run under each policy::

    [cohort]
    days = 180                      # default length of the run, 1 .. MAX_DAYS

    [prescriptions]                 # one per origin, paths relative to this file, each signed (FILE.sig)
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
the prescription's cap, bolus lockouts and counts). The file is read through the
field kit (:mod:`cython_ext.fields`): unknown keys, NaN, values out of range and
missing fields are all reported at once, each naming its field and line
(:class:`~cython_ext.fields.FileErrors`, a :class:`~cython_ext.errors.ConfigError`),
before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from controller.prescription import Prescription, assess_change, parse_prescription
from controller.signing import SignedFile
from cython_ext import fields
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
    :ivar prescription_files: each prescription's file with its signature, as read (verified before a run).
    :ivar source: where it was read from.
    """

    days: int
    prescriptions: dict[Origin, Prescription]
    policies: tuple[TitrationPolicy, ...]
    prescription_files: dict[Origin, SignedFile]
    source: str = "<string>"


DOCUMENT = "policy file"
_INVALID = fields.INVALID


def _name(value: Any, field: str) -> str:
    name = fields.text(value, field, max_chars=MAX_NAME_CHARS)
    if not name:
        raise ConfigError(field, value, f"printable text of 1-{MAX_NAME_CHARS} characters")
    return name


def _score(value: Any, field: str, low: float, high: float, *, low_open: bool = True) -> float:
    """A Modified Ashworth score below ``high`` and above ``low`` (or at it, without ``low_open``)."""
    return float(fields.decimal(value, field, Decimal(repr(low)), Decimal(repr(high)), low_open=low_open,
                                high_open=True))


def _policy(t: fields.Table) -> Any:
    target = t.get("target_ashworth", _score, 0.0, 4.0)
    values = {
        "name": t.get("name", _name),
        "decision_hour": t.get("decision_hour", fields.integer, 0, 23, "h", default=9),
        "target_ashworth": target,
        "step_pct": t.get("step_pct", fields.integer, 1, 100, "%"),
        "interval_h": t.get("interval_h", fields.integer, 1, 720, "h", default=24),
        "retry_after_refusal_h": t.get("retry_after_refusal_h", fields.integer, 1, 2160, "h", default=168),
        "decrease_on_sedation": t.get("decrease_on_sedation", fields.boolean, default=True),
        "decrease_pct": t.get("decrease_pct", fields.integer, 1, 50, "%", default=15),
        "bolus_ng": t.get("bolus_ug", fields.scaled, NG_PER_UG, NG_PER_UG, 100 * NG_PER_UG, "µg",
                          default=50 * NG_PER_UG),
        "bolus_duration_ms": t.get("bolus_duration_min", fields.scaled, MS_PER_MIN, MS_PER_MIN, 240 * MS_PER_MIN,
                                   "min", default=10 * MS_PER_MIN),
        "refill_below_nl": t.get("refill_below_ml", fields.scaled, NL_PER_ML, 0, 60 * NL_PER_ML, "mL",
                                 low_open=True, default=4 * NL_PER_ML),
    }
    if target is _INVALID:  # both bounds depend on the target
        t.get("decrease_below_ashworth", default=None)
        t.get("bolus_above_ashworth", default=None)
        values["decrease_below_ashworth"] = values["bolus_above_ashworth"] = _INVALID
    else:
        values["decrease_below_ashworth"] = t.get("decrease_below_ashworth", _score, 0.0, target, low_open=False,
                                                  default=None)
        values["bolus_above_ashworth"] = t.get("bolus_above_ashworth", _score, target, 4.0, default=None)
    t.done()
    return t.doc.run(lambda **given: TitrationPolicy(**given), **values)


def _prescription(name: Any, field: str, base_dir: Path, origin: Origin) -> tuple[Prescription, SignedFile]:
    path = base_dir / fields.text(name, field)
    signed = SignedFile.read(path)
    rx = parse_prescription(signed.data, source=str(path))
    assess_change(None, rx).require_acceptable()
    if rx.patient.origin is not origin or rx.programme.mode.value != "simple":
        raise ConfigError(field, name, f"a simple-programme prescription for a {origin.value} patient")
    return rx, signed


def parse_protocol(doc: fields.Document, *, base_dir: Path, source: str = "<string>") -> CohortProtocol:
    """A :class:`CohortProtocol` from a document of the field kit (:func:`load_protocol`, or a mapping).

    :param base_dir: where the prescriptions are looked for.
    :raises ~cython_ext.fields.FileErrors: every unknown key, NaN, out-of-range or missing value, and
        every prescription that does not load or does not match its origin, each by its field.
    """
    top = doc.root
    head = top.table("cohort", default={})
    days = _INVALID if head is _INVALID else head.get("days", fields.integer, 1, MAX_DAYS, "days", default=180)
    if head is not _INVALID:
        head.done()
    rx_table = top.table("prescriptions")
    read = {}
    if rx_table is not _INVALID:
        for origin in Origin:
            read[origin] = rx_table.get(origin.value, _prescription, base_dir, origin)
        rx_table.done()
    tables = top.tables("policy", low=1, high=MAX_POLICIES)
    policies = _INVALID if tables is _INVALID else tuple(_policy(t) for t in tables)
    top.done()
    if policies is not _INVALID and not fields.any_invalid(*policies):
        names = [p.name for p in policies]
        if len(set(names)) != len(names):
            doc.record(ConfigError("policy.name", names, "unique names"))
    doc.finish()
    return CohortProtocol(days, {o: rx for o, (rx, _) in read.items()}, policies,
                          {o: signed for o, (_, signed) in read.items()}, source)


def protocol_from_dict(data: dict[str, Any], *, base_dir: Path, source: str = "<string>") -> CohortProtocol:
    """A :class:`CohortProtocol` from a mapping (a parsed policy file), read through the field kit.

    :raises ~cython_ext.fields.FileErrors: as :func:`parse_protocol`.
    """
    return parse_protocol(fields.Document.of(data, path="", document=DOCUMENT, source=source), base_dir=base_dir,
                          source=source)


def load_protocol(path: str | Path) -> CohortProtocol:
    """Read and check a policy file (TOML, bounded by the field kit); its prescriptions are read relative to it.

    :raises ~cython_ext.fields.FileErrors: every problem of the file, by field and line.
    """
    path = Path(path)
    doc = fields.load_toml(fields.read_file(path, document=DOCUMENT), document=DOCUMENT, source=str(path))
    return parse_protocol(doc, base_dir=path.parent, source=str(path))


def visit_ms(policy: TitrationPolicy, day: int) -> int:
    """Controller time of the visit on ``day`` (0-based), ms."""
    return (day * 24 + policy.decision_hour) * MS_PER_H
