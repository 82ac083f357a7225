"""Scenario files: a strict TOML schema of timed clinical actions and expectations.

A scenario describes one virtual patient over days or months: the rig, the
therapy settings, what clinicians, the patient and the fault injector do and
when, and what must hold afterwards. The file is read through the one field kit
(:mod:`cython_ext.fields`): bounded input, and every problem of the file (unknown
keys, wrong types, NaN, out-of-range quantities) reported at once as a
:class:`~cython_ext.fields.FileErrors`, each naming the field, the value, what is
allowed and the line. Units are in every field name.

Decimal quantities may be written as TOML numbers (``fill_ml = 20.0``) or as
strings (``"0.048"``); a TOML float is read as the exact decimal it is written as,
so ``0.048`` means exactly 48/1000. Times of actions are ``"<days>d <HH>:<MM>"``
after the scenario start (``"2d 09:30"``). The scenario ``name`` is at most
:data:`MAX_NAME_CHARS` characters, the ``description`` at most
:data:`MAX_DESCRIPTION_CHARS`.

The roles: :mod:`hil.scenario.model` (the validated dataclasses),
:mod:`hil.scenario.params` (every action's and expectation's parameters),
:mod:`hil.scenario.prescribed` (the prescription file and what it sets), and this
module (reading a file into a :class:`~hil.scenario.model.Scenario`).

Tables: ``[scenario]`` (name, description, duration_days, poll_interval_min,
seed, prescription), ``[patient]`` (origin, variability_cv), ``[pump]`` (reservoir_ml,
syringe_diameter_mm, bias_pct, noise_pct, faults), ``[therapy]`` (caps and
thresholds, see :class:`TherapySettings`), then any number of ``[[action]]``
(``do`` = screening_dose, implant, titrate, flex, clinician_bolus, prime,
configure_patient_bolus, patient_bolus, refill, fault, clear_fault,
acknowledge_alarms, taper, discontinue, begin_procedure, end_procedure, restart_controller, replay) and
``[[expect]]``
(``check`` = dose_within, alarm_raised, alarm_not_raised, denied, allowed,
no_overdose, no_severe_withdrawal, ashworth_at_most, boluses_delivered,
transits_hold_tip_dose, mode_at_end, invariants_hold). The safety invariants are checked on every run
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
The prescription's detached signature (``FILE.sig``) is read with it: the controller's front
door refuses a prescription whose signature does not verify (:mod:`controller.signing`).

**Who acts.** Every action reaches the controller's front door under a role
(:data:`controller.roles.PERMISSIONS`): ``role`` names it (default: the first role the table
permits), ``actor`` the person (default: the role's name). ``signed = true`` sends the action
as a signed command with the development key of its role (a real rig's trust store refuses
that key), and ``do = "replay"`` with ``of = LABEL`` sends the exact bytes of an earlier signed
action again.

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

from decimal import Decimal
from pathlib import Path
from typing import Any

from controller.assembly import MAX_REFILL_TOLERANCE_PCT, MAX_RESTART_TITRATION_AFTER_MS
from controller.audit import Role
from controller.patient import max_prior_dose_ng_per_day
from controller.prescription import assess_change, load_prescription
from controller.signing import SignedFile
from cython_ext import fields
from cython_ext.errors import ConfigError
from cython_ext.fields import INVALID, FieldError, Table, any_invalid
from cython_ext.units import MS_PER_DAY, MS_PER_H, MS_PER_MIN, NG_PER_UG, NL_PER_ML, units_to_decimal
from cython_ext.vocabulary import CatheterFill, Origin
from hil.gravimetric.step import read_accuracy_step
from hil.scenario.model import (
    Action,
    Expectation,
    PatientSettings,
    PumpSettings,
    Scenario,
    ScenarioSettings,
    TherapySettings,
    frozen,
)
from hil.scenario.params import (ACTION_FIELDS, EXPECT_FIELDS, dead_volume_ml_to_nl, h_to_ms, ml_to_nl, parse_at,
                                 percent, read_params, whole_percent)
from hil.scenario.prescribed import PRESCRIBED_KEYS, PRESCRIPTION_DIR, prescribed_therapy, resolve_prescription
from sim.faults import parse_fault

__all__ = [
    "ACTION_FIELDS",
    "DEFAULT_SCENARIO",
    "EXPECT_FIELDS",
    "MAX_DESCRIPTION_CHARS",
    "MAX_DURATION_DAYS",
    "MAX_NAME_CHARS",
    "ORIGINS",
    "PRESCRIBED_KEYS",
    "PRESCRIPTION_DIR",
    "SCENARIO_DIR",
    "Action",
    "Expectation",
    "Scenario",
    "load_scenario",
    "parse_at",
    "parse_scenario",
    "resolve_prescription",
    "shipped_scenarios",
]

ORIGINS = tuple(origin.value for origin in Origin)
#: Roles an action may be asked under (every :class:`controller.audit.Role` but the controller's own).
PERSON_ROLES = tuple(role.value for role in Role if role is not Role.SYSTEM)
#: Longest scenario name (it titles the report and the console table), characters.
MAX_NAME_CHARS = 100
#: Longest scenario description, characters.
MAX_DESCRIPTION_CHARS = 1000
#: Longest scenario, days.
MAX_DURATION_DAYS = 3650
#: What a scenario file is called in whole-file problems.
DOCUMENT = "scenario"
#: Folder of the scenarios shipped with itb-fil.
SCENARIO_DIR = Path(__file__).resolve().parents[1] / "scenarios"
#: Name of the scenario ``itb run`` runs when none is given.
DEFAULT_SCENARIO = "default"

_THERAPY = TherapySettings()


def parse_scenario(text: str | bytes, *, source: str = "<string>", base_dir: Path | None = None) -> Scenario:
    """Parse and validate scenario TOML.

    :param text: the TOML document (bytes are decoded as strict UTF-8).
    :param source: where it came from (for messages and the report).
    :param base_dir: the scenario's folder, where ``[scenario] prescription`` is looked for first
        (default: the current directory), then :data:`PRESCRIPTION_DIR`.
    :raises ~cython_ext.fields.FileErrors: every schema violation of the file (and of its
        prescription file); nothing is partially accepted.
    """
    doc = fields.load_toml(text, document=DOCUMENT, source=source)
    scenario = _read(doc.root, source, base_dir)
    doc.finish()
    return scenario


def load_scenario(name_or_path: str | Path) -> Scenario:
    """Load a scenario by file path, or by the name of a shipped one (``"default"``).

    :raises ConfigError: if it does not exist or does not validate.
    """
    path = Path(name_or_path)
    if not _is_file(path):
        shipped = SCENARIO_DIR / f"{name_or_path}.toml"
        if _is_file(shipped):
            path = shipped
        else:
            raise ConfigError(DOCUMENT, fields.shown(str(name_or_path)),
                              f"an existing file or a shipped scenario ({', '.join(shipped_scenarios())})")
    data = fields.read_file(path, document=DOCUMENT)
    return parse_scenario(data, source=str(path), base_dir=path.parent)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, or with a NUL in it
        return False


def shipped_scenarios() -> list[str]:
    """Names of the scenarios in :data:`SCENARIO_DIR`."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.toml"))


class _Prescribed:
    """The scenario's prescription: named or not, loaded (or :data:`INVALID`), and where from."""

    def __init__(self, name: Any = None, rx: Any = None, source: str = "", file: Any = None) -> None:
        self.named = name is not None
        self.rx = rx
        self.source = source or str(name)
        #: The prescription's bytes with its signature (:class:`controller.signing.SignedFile`), or None.
        self.file = file

    def reject_twice(self, table: Table, keys: tuple[str, ...]) -> None:
        """Record every key of ``keys`` in ``table``: the prescription sets it already."""
        for key in keys:
            if table.has(key):
                table.doc.record(ConfigError(table.name(key), fields.shown(table.get(key)),
                                             f"absent: the prescription {self.source} sets it (give it once)"))


def _read(top: Table, source: str, base_dir: Path | None) -> Any:
    doc = top.doc
    s = top.table("scenario")
    settings, prescribed = (INVALID, _Prescribed()) if s is INVALID else _settings(s, base_dir)
    patient = _patient(top.table("patient", default={}), prescribed)
    pump = _pump(top.table("pump", default={}), prescribed)
    therapy = _therapy(top.table("therapy", default={}), prescribed)
    labels: dict[str, int] = {}
    signed: dict[str, int] = {}
    actions = [_action(a, index, settings, prescribed, labels, signed)
               for index, a in enumerate(_tables(top, "action"))]
    expectations = [_expectation(e, labels) for e in _tables(top, "expect")]
    accuracy = None
    if top.has("accuracy"):
        table = top.table("accuracy")
        accuracy = INVALID if table is INVALID else read_accuracy_step(table)
    top.done()
    if doc.failed:
        return INVALID
    ordered = tuple(sorted(actions, key=lambda act: (act.at_ms, act.index)))
    return Scenario(settings, patient, pump, therapy, ordered, tuple(expectations), source,
                    prescribed.rx, prescribed.source if prescribed.named else "", accuracy, prescribed.file)


def _tables(top: Table, key: str) -> list[Table]:
    tables = top.tables(key, default=[])
    return [] if tables is INVALID else tables


def _description(value: Any, field: str) -> str:
    return value if value == "" else fields.text(value, field, max_chars=MAX_DESCRIPTION_CHARS)


def _settings(s: Table, base_dir: Path | None) -> tuple[Any, _Prescribed]:
    doc = s.doc
    defaults = ScenarioSettings(name="")
    name = s.get("name", fields.text, max_chars=MAX_NAME_CHARS)
    description = s.get("description", _description, default=defaults.description)
    duration_ms = s.get("duration_days", fields.scaled, MS_PER_DAY, 0, MAX_DURATION_DAYS * MS_PER_DAY, "days",
                        low_open=True, strings=True, default=defaults.duration_ms)
    poll_ms = s.get("poll_interval_min", fields.scaled, MS_PER_MIN, 0, MS_PER_DAY, "min", low_open=True,
                    strings=True, default=defaults.poll_interval_ms)
    seed = s.get("seed", fields.integer, *fields.SEED_RANGE, default=defaults.seed)
    rx_name = s.get("prescription", fields.text, default=None)
    s.done()
    prescribed = _Prescribed()
    if rx_name is INVALID:
        prescribed = _Prescribed(rx_name, INVALID)
    elif rx_name is not None:
        rx_path = doc.run(resolve_prescription, rx_name, base_dir)
        rx = INVALID if rx_path is INVALID else doc.run(load_prescription, rx_path)
        rx_file = None if rx_path is INVALID else doc.run(SignedFile.read, rx_path)
        prescribed = _Prescribed(rx_name, rx, "" if rx_path is INVALID else str(rx_path), rx_file)
        if rx is not INVALID:
            try:
                assess_change(None, rx).require_acceptable()  # soft-limit breaches need their overrides (PRX-02)
            except ConfigError as exc:
                doc.record(FieldError.of(exc, source=prescribed.source))
                prescribed.rx = INVALID
    return doc.run(ScenarioSettings, name, description, duration_ms, poll_ms, seed), prescribed


def _patient(p: Any, prescribed: _Prescribed) -> Any:
    if p is INVALID:
        return INVALID
    if prescribed.named:
        prescribed.reject_twice(p, PRESCRIBED_KEYS["patient"])
        origin = INVALID if prescribed.rx is INVALID else prescribed.rx.patient.origin.value
    else:
        origin = p.get("origin", fields.choice, ORIGINS, default=PatientSettings().origin)
    cv = p.get("variability_cv", fields.decimal, 0, 1, strings=True, default=PatientSettings().variability_cv)
    history = p.get("history", fields.choice, ("screened", "transferred"), default=PatientSettings().history)
    # The drug library's hard maximum daily dose, as the patient record holds it (rounded down to whole µg).
    prior = p.get("prior_dose_ug_per_day", fields.integer, 1, max_prior_dose_ng_per_day() // NG_PER_UG, "ug/day",
                  default=None)
    if history == "transferred" and prior is None:
        p.doc.record(ConfigError(p.name("prior_dose_ug_per_day"), None,
                                 "given for a transferred patient (the replaced pump's documented dose)"))
        prior = INVALID
    elif history == "screened" and prior is not None and prior is not INVALID:
        p.doc.record(ConfigError(p.name("prior_dose_ug_per_day"), prior,
                                 "absent for a screened patient (the screening record decides the dose)"))
        prior = INVALID
    p.done(*PRESCRIBED_KEYS["patient"])
    return p.doc.run(PatientSettings, origin, cv, history, prior)


def _pump(u: Any, prescribed: _Prescribed) -> Any:
    if u is INVALID:
        return INVALID
    defaults = PumpSettings()
    if prescribed.named:
        prescribed.reject_twice(u, PRESCRIBED_KEYS["pump"])
        capacity = INVALID if prescribed.rx is INVALID else prescribed.rx.pump.pump_model.capacity_nl
    else:
        capacity = u.get("reservoir_ml", fields.scaled, NL_PER_ML, 0, 60 * NL_PER_ML, "mL", low_open=True,
                         strings=True, default=defaults.reservoir_capacity_nl)
    diameter = u.get("syringe_diameter_mm", fields.decimal, Decimal("0.1"), 50, "mm", strings=True,
                     default=defaults.syringe_diameter_mm)
    bias = u.get("bias_pct", fields.decimal, -50, 50, "%", strings=True, default=defaults.bias_pct)
    noise = u.get("noise_pct", fields.decimal, 0, 50, "%", strings=True, default=defaults.noise_pct)
    faults = _faults(u)
    u.done(*PRESCRIBED_KEYS["pump"])
    return u.doc.run(PumpSettings, capacity, diameter, bias, noise, faults)


def _faults(u: Table) -> Any:
    specs = u.get("faults", default=[])
    if not isinstance(specs, list) or not all(isinstance(spec, str) for spec in specs):
        return u.doc.record(ConfigError(u.name("faults"), fields.shown(specs),
                                        "a list of fault spec strings such as \"lost-reply:match=RAT\""))
    checked = [u.doc.run(_fault_spec, spec, f"{u.name('faults')}[{index}]") for index, spec in enumerate(specs)]
    return INVALID if any_invalid(*checked) else tuple(specs)


def _fault_spec(spec: str, field: str) -> str:
    try:
        parse_fault(spec)
    except ConfigError as exc:
        raise ConfigError(field, fields.shown(spec), "a valid fault spec (see sim.faults)", detail=str(exc)) from None
    return spec


def _nl_per_h_from_ml_per_day(value: Any, field: str) -> int:
    """A rate in mL/day that must be a whole number of nL/h (0.048 mL/day = 2000 nL/h)."""
    nl_per_day = fields.scaled(value, field, NL_PER_ML, 0, 24 * NL_PER_ML, "mL/day", low_open=True, strings=True)
    if nl_per_day % 24:
        raise ConfigError(field, fields.shown(value), "a whole number of nL/h (a multiple of 0.000024 mL/day)")
    return nl_per_day // 24


def _therapy(t: Any, prescribed: _Prescribed) -> Any:
    if t is INVALID:
        return INVALID
    doc = t.doc
    kept = {
        "refill_tolerance_pct": t.get("refill_tolerance_pct", whole_percent, MAX_REFILL_TOLERANCE_PCT,
                                      default=_THERAPY.refill_tolerance_pct),
        "drift_tolerance_pct": t.get("drift_tolerance_pct", percent, default=_THERAPY.drift_tolerance_pct),
        "unconfirmed_alarm_ms": t.get("unconfirmed_alarm_h", h_to_ms, default=_THERAPY.unconfirmed_alarm_ms),
        "restart_titration_after_ms": t.get("restart_titration_after_h", fields.scaled, MS_PER_H, 0,
                                            MAX_RESTART_TITRATION_AFTER_MS, "h", strings=True,
                                            default=_THERAPY.restart_titration_after_ms),
    }
    if prescribed.named:
        prescribed.reject_twice(t, PRESCRIBED_KEYS["therapy"])
        t.done(*PRESCRIBED_KEYS["therapy"])
        if any_invalid(prescribed.rx, *kept.values()):
            return INVALID
        try:
            return prescribed_therapy(prescribed.rx, kept)
        except ConfigError as exc:
            return doc.record(FieldError.of(exc, source=prescribed.source))
    own = {
        "max_dose_ug_per_day": t.get("max_dose_ug_per_day", fields.integer, 1, 2003, "ug/day",
                                     default=_THERAPY.max_dose_ug_per_day),
        "minimum_rate_nl_per_h": t.get("minimum_rate_ml_per_day", _nl_per_h_from_ml_per_day,
                                       default=_THERAPY.minimum_rate_nl_per_h),
        "low_reservoir_nl": t.get("low_reservoir_ml", ml_to_nl, default=_THERAPY.low_reservoir_nl),
        "low_reservoir_days": t.get("low_reservoir_days", fields.integer, 0, 365, "days",
                                    default=_THERAPY.low_reservoir_days),
        "empty_reservoir_nl": t.get("empty_reservoir_ml", ml_to_nl, default=_THERAPY.empty_reservoir_nl),
        "dead_volume_nl": t.get("dead_volume_ml", dead_volume_ml_to_nl, default=_THERAPY.dead_volume_nl),
        "max_bolus_ug": t.get("max_bolus_ug", fields.integer, 1, 100, "ug", default=_THERAPY.max_bolus_ug),
        "bolus_lockout_ms": t.get("bolus_lockout_h", h_to_ms, default=_THERAPY.bolus_lockout_ms),
        "max_boluses_per_day": t.get("max_boluses_per_day", fields.integer, 0, 8,
                                     default=_THERAPY.max_boluses_per_day),
        "patient_bolus_enabled": t.get("patient_bolus_enabled", fields.boolean,
                                       default=_THERAPY.patient_bolus_enabled),
    }
    t.done()
    therapy = doc.run(lambda **values: TherapySettings(**values), **own, **kept)
    return doc.run(_empty_below_low, therapy)


def _empty_below_low(therapy: TherapySettings) -> TherapySettings:
    if therapy.empty_reservoir_nl >= therapy.low_reservoir_nl:
        low_ml = units_to_decimal(therapy.low_reservoir_nl, NL_PER_ML)
        raise ConfigError("therapy.empty_reservoir_ml", units_to_decimal(therapy.empty_reservoir_nl, NL_PER_ML),
                          f"below therapy.low_reservoir_ml ({fields.shown(low_ml)})")
    return therapy


def _label(value: Any, field: str) -> str:
    return value if value == "" else fields.text(value, field)


def _action(a: Table, index: int, settings: Any, prescribed: _Prescribed, labels: dict[str, int],
            signed_labels: dict[str, int]) -> Any:
    """One action; ``signed_labels`` maps the label of every signed action read so far to its time."""
    doc = a.doc
    at_ms = a.get("at", parse_at)
    do = a.get("do", fields.choice, tuple(ACTION_FIELDS))
    label = a.get("label", _label, default="")
    role = a.get("role", fields.choice, PERSON_ROLES, default="")
    actor = a.get("actor", _label, default="")
    signed = a.get("signed", fields.boolean, default=False)
    if not any_invalid(label) and label:
        if label in labels:
            doc.record(ConfigError(a.name("label"), label, "unique among actions",
                                   detail=f"action[{labels[label]}] has it already"))
        labels.setdefault(label, index)
    if do is INVALID:
        return INVALID
    spec = ACTION_FIELDS[do]
    skipped: tuple[str, ...] = ()
    if prescribed.named and do in PRESCRIBED_KEYS:
        skipped = PRESCRIBED_KEYS[do]
        prescribed.reject_twice(a, skipped)
    params = read_params(a, spec, skipped)
    a.done(*skipped)
    _action_rules(a, do, params, prescribed)
    if at_ms is not INVALID and settings is not INVALID and at_ms > settings.duration_ms:
        doc.record(ConfigError(a.name("at"), a.raw["at"], f"within the scenario ({settings.duration_ms} ms)"))
    if do == "replay" and not any_invalid(at_ms, params["of"]) and signed_labels.get(params["of"], at_ms + 1) > at_ms:
        params["of"] = doc.record(ConfigError(a.name("of"), params["of"],
                                              "the label of a signed action earlier in this file and time"))
    if any_invalid(at_ms, label, role, actor, signed, *params.values()):
        return INVALID
    if signed and label:
        signed_labels[label] = at_ms
    return Action(at_ms=at_ms, do=do, params=frozen(params), label=label, index=index, role=role, actor=actor,
                  signed=signed)


def _action_rules(a: Table, do: str, params: dict[str, Any], prescribed: _Prescribed) -> None:
    """The rules between one action's parameters (and the prescription)."""
    doc = a.doc
    required = "present (required field without a prescription)"
    if not prescribed.named and do == "implant":
        for key in ("concentration_ug_per_ml", "fill_ml"):
            if params[key] is None:
                params[key] = doc.record(ConfigError(a.name(key), None, required))
    if do == "implant" and not any_invalid(params["catheter"], params["prime"]):
        drug = params["catheter"] == CatheterFill.DRUG.value
        if params["prime"] is None:
            params["prime"] = not drug  # stated in the action: a saline catheter is primed, a drug-filled one not
        elif drug and params["prime"]:
            params["prime"] = doc.record(ConfigError(
                a.name("prime"), True, 'false or absent with catheter = "drug"',
                detail="the catheter already holds drug to the tip: a priming bolus would push its dead volume "
                       "of drug into the patient, an overdose"))
    if do == "configure_patient_bolus":
        if not prescribed.named and params["dose_ug"] is None:
            params["dose_ug"] = doc.record(ConfigError(a.name("dose_ug"), None, required))
        if not prescribed.named and params["duration_min"] is None:
            params["duration_min"] = 10 * MS_PER_MIN
        if prescribed.rx is not None and not any_invalid(prescribed.rx) and not prescribed.rx.patient_bolus.enabled:
            doc.record(ConfigError(a.name("do"), do, f"an action the prescription {prescribed.source} allows "
                                   "(its patient bolus is not enabled)"))
    if do == "titrate" and not any_invalid(params["dose_ug_per_day"], params["change_pct"]) and (
            (params["dose_ug_per_day"] is None) == (params["change_pct"] is None)):
        doc.record(ConfigError(a.name("dose_ug_per_day"), params["dose_ug_per_day"],
                               "given, or change_pct given, but not both"))
    if do == "discontinue" and params["emergency"] is False and params["authorised_by"] is None:
        doc.record(ConfigError(a.name("authorised_by"), None, "present unless emergency = true"))


def _expectation(e: Table, labels: dict[str, int]) -> Any:
    check = e.get("check", fields.choice, tuple(EXPECT_FIELDS))
    if check is INVALID:
        return INVALID
    params = read_params(e, EXPECT_FIELDS[check])
    e.done()
    if check in ("denied", "allowed") and not any_invalid(params["action"]) and params["action"] not in labels:
        params["action"] = e.doc.record(ConfigError(e.name("action"), params["action"],
                                                    "the label of an action in this file"))
    if any_invalid(*params.values()):
        return INVALID
    return Expectation(check=check, params=frozen(params))
