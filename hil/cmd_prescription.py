"""``itb prescription check``: validate a prescription file and show what it would deliver.

``--json`` prints one JSON object of one shape, valid file or not:

- ``file`` (the path), ``valid`` (every file named parsed), ``acceptable`` (valid, every
  soft-limit breach overridden and every tenfold change confirmed), and ``errors``: every
  problem of the file (and of ``--current``), each ``{"file", "line", "field", "value",
  "allowed", "detail", "code"}`` (``line`` and ``value`` may be null; see
  :meth:`cython_ext.fields.FieldError.to_dict`), and ``errors_omitted``, how many more were
  found than are listed (:attr:`cython_ext.fields.Limits.errors`). ``errors`` is empty when
  ``valid``.
- only when ``valid``: the description (``prescription_id``, ``patient_id``, ``origin``,
  ``drug``, ``concentration_ug_per_ml``, ``mode``, ``steps``, ``periodic_boluses``,
  ``daily_total_ug``, ``daily_volume_ml``, ``worst_case_daily_volume_ml``,
  ``cap_ug_per_day``, ``minimum_rate_ug_per_day``, ``reservoir``, ``soft_limit_breaches``,
  ``magnitude_changes``), exact decimals as strings.

Exit status: 0 valid and acceptable, 1 valid but not acceptable, 2 invalid.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from cython_ext import fields, units
from cython_ext.errors import ConfigError
from hil.cmd_sign import register_sign
from hil.cli_options import add_action, add_command_group, add_file_argument, add_json_flag


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``itb prescription check`` and ``itb prescription sign``."""
    actions = add_command_group(subparsers, "prescription", "validate prescription files",
                                "Work with prescription files (TOML, strict schema, units in field names).")
    check = add_action(
        actions, "check", _check, "validate a file; print daily delivery and reservoir alarm dates",
        "Validate a prescription file against the schema and the drug library. Print what it "
        "delivers per day (ug/day and mL/day, per flex step), and when the low-reservoir alarm would fall "
        "after a full fill. Exit 0 if valid and every soft-limit breach is overridden, non-zero otherwise.",
    )
    add_file_argument(check, "the prescription file")
    check.add_argument(
        "--fill-date",
        type=date.fromisoformat,
        default=None,
        help="date of the reservoir fill, YYYY-MM-DD (default: today, UTC)",
    )
    check.add_argument(
        "--current",
        type=Path,
        default=None,
        metavar="FILE",
        help="the prescription in effect: report every value changed tenfold or more (VAL-02)",
    )
    check.add_argument(
        "--confirm-magnitude",
        action="append",
        default=[],
        metavar="FIELD",
        help="confirm a tenfold change of this dotted field (repeatable)",
    )
    add_json_flag(check, "print one JSON object instead of text")
    register_sign(actions)


def _plain(value: Decimal) -> str:
    """Exact decimal text without exponent (``400``, ``0.25``)."""
    text = f"{value.normalize():f}"
    return text


def _ug(ng: int) -> str:
    return _plain(units.units_to_decimal(ng, units.NG_PER_UG))


def _ml(nl: int) -> str:
    return _plain(units.units_to_decimal(nl, units.NL_PER_ML))


def _ml_per_day(dose_ng_per_day: int, concentration_ug_per_ml: int) -> str:
    """Prescribed volume per day, mL/day, to 0.0001 mL (before the pump's rate rounding)."""
    exact = Decimal(dose_ng_per_day) / Decimal(concentration_ug_per_ml * 1000)
    return _plain(exact.quantize(Decimal("0.0001")))


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _hhmm(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _days(value: Any) -> Decimal:
    return (Decimal(value.numerator) / Decimal(value.denominator)).quantize(Decimal("0.01"))


def summarise(
    path: Path, fill_utc: datetime, *, current: Path | None = None, confirmed: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Validate ``path`` and describe its delivery and reservoir forecast.

    :param path: the prescription file.
    :param fill_utc: when the reservoir is filled (timezone-aware).
    :param current: the prescription in effect, for the tenfold-change check.
    :param confirmed: dotted fields whose tenfold change is confirmed.
    :return: a JSON-ready summary; ``acceptable`` is False if a soft-limit breach lacks an
        override or a tenfold change is unconfirmed.
    :raises ConfigError: if a file is invalid.
    """
    # Deferred: the controller is only needed to check a file, and ``itb --help`` stays fast.
    from controller import reservoir
    from controller.prescription import assess_change, file_value, load_prescription

    p = load_prescription(path)
    conc = p.drug.concentration_ug_per_ml
    steps = []
    for step in p.programme.steps:
        rate = p.rate_nl_per_h(step.dose_ng_per_day)
        steps.append(
            {
                "from": _hhmm(step.start_min),
                "to": _hhmm(step.end_min) if step.end_min < 1440 else "24:00",
                "dose_rate_ug_per_day": _ug(step.dose_ng_per_day),
                "volume_rate_ml_per_day": _ml_per_day(step.dose_ng_per_day, conc),
                "rate_nl_per_h": rate,
                "delivers_ug": _ug(step.mass_ng()),
            }
        )
    boluses = [
        {"at": _hhmm(b.time_min), "dose_ug": _ug(b.dose_ng), "duration_min": b.duration_min}
        for b in p.programme.periodic_boluses
    ]
    settings = reservoir.ReservoirSettings.from_pump_spec(p.pump)
    state = reservoir.ReservoirState(p.pump.reservoir_volume_nl, 0, fill_utc)
    worst = p.worst_case_daily_volume_nl()
    fc = reservoir.forecast(state, worst, settings, fill_utc)
    assessment = assess_change(
        load_prescription(current) if current is not None else None, p, confirmed_magnitude_fields=confirmed
    )
    return {
        "file": str(path),
        "valid": True,
        "errors": [],
        "errors_omitted": 0,
        "prescription_id": p.prescription_id,
        "patient_id": p.patient.patient_id,
        "origin": p.patient.origin.value,
        "drug": p.drug.library_code,
        "concentration_ug_per_ml": conc,
        "mode": p.programme.mode.value,
        "steps": steps,
        "periodic_boluses": boluses,
        "daily_total_ug": _ug(p.programme.daily_total_ng()),
        "daily_volume_ml": _ml(p.daily_volume_nl()),
        "worst_case_daily_volume_ml": _ml(worst),
        "cap_ug_per_day": _ug(p.titration.max_dose_ng_per_day),
        "minimum_rate_ug_per_day": _ug(p.titration.minimum_rate_ng_per_day),
        "reservoir": {
            "fill_ml": _ml(p.pump.reservoir_volume_nl),
            "fill_utc": _when(fill_utc),
            "low_alarm_ml": _ml(p.pump.low_reservoir_alarm_nl),
            "low_alarm_days": p.pump.low_reservoir_alarm_days,
            "days_to_low_alarm": _plain(_days(fc.days_to_low_alarm)),
            "low_alarm_utc": _when(fc.low_alarm_utc),
            "days_to_empty": _plain(_days(fc.days_to_empty)),
            "refill_due_utc": _when(fc.refill_due_utc),
            "refill_due_before_fill": fc.refill_due_utc <= fill_utc,
        },
        "soft_limit_breaches": [
            {
                "field": b.field,
                "value": b.value_text(),
                "bound": b.bound,
                "limit": b.limit_text(),
                "overridden": b.overridden_by is not None,
                "reason": b.overridden_by.reason if b.overridden_by else "",
            }
            for b in assessment.soft_limit_breaches
        ],
        "magnitude_changes": [
            {
                "field": c.field,
                "old": _plain(file_value(c.field, c.old)),
                "new": _plain(file_value(c.field, c.new)),
                "confirmed": c.field in confirmed,
            }
            for c in assessment.magnitude_changes
        ],
        "acceptable": assessment.acceptable,
    }


def _print_text(s: dict[str, Any]) -> None:
    verdict = "VALID" if s["acceptable"] else (
        "VALID FILE, NOT ACCEPTABLE (soft-limit breach without override, or unconfirmed tenfold change)"
    )
    print(f"{s['file']}: {verdict}")
    print(f"  prescription {s['prescription_id']} for patient {s['patient_id']} ({s['origin']} origin)")
    print(f"  drug {s['drug']} at {s['concentration_ug_per_ml']} ug/mL; programme: {s['mode']}")
    for step in s["steps"]:
        print(
            f"    {step['from']}-{step['to']}  {step['dose_rate_ug_per_day']:>8} ug/day"
            f"  {step['volume_rate_ml_per_day']:>8} mL/day ({step['rate_nl_per_h']} nL/h)"
            f"  delivers {step['delivers_ug']} ug"
        )
    for bolus in s["periodic_boluses"]:
        print(f"    bolus at {bolus['at']}: {bolus['dose_ug']} ug over {bolus['duration_min']} min")
    print(f"  per day: {s['daily_total_ug']} ug/day = {s['daily_volume_ml']} mL/day "
          f"(worst case with every patient bolus: {s['worst_case_daily_volume_ml']} mL/day)")
    print(f"  cap {s['cap_ug_per_day']} ug/day; minimum rate {s['minimum_rate_ug_per_day']} ug/day")
    r = s["reservoir"]
    print(
        f"  reservoir: {r['fill_ml']} mL filled {r['fill_utc']}; low alarm ({r['low_alarm_ml']} mL or "
        f"{r['low_alarm_days']} days to empty) in {r['days_to_low_alarm']} days, on {r['low_alarm_utc']}"
    )
    print(f"  empty in {r['days_to_empty']} days; refill due by {r['refill_due_utc']}")
    if r["refill_due_before_fill"]:
        print("  WARNING: the low-reservoir alarm falls within the refill margin of the fill itself: "
              "this fill does not last a refill interval")
    for b in s["soft_limit_breaches"]:
        state = f"overridden: {b['reason']}" if b["overridden"] else "NOT overridden"
        op = "below" if b["bound"] == "lower_soft" else "above"
        print(f"  {b['field']}: {b['value']} is {op} the soft limit {b['limit']}: {state}")
    for c in s["magnitude_changes"]:
        state = "confirmed" if c["confirmed"] else "NOT confirmed (--confirm-magnitude FIELD)"
        print(f"  {c['field']} changes tenfold or more: {c['old']} -> {c['new']}: {state}")


def _check(args: argparse.Namespace) -> int:
    if args.fill_date is None:
        fill_utc = datetime.now(timezone.utc)
    else:
        fill_utc = datetime(args.fill_date.year, args.fill_date.month, args.fill_date.day, tzinfo=timezone.utc)
    try:
        summary = summarise(args.file, fill_utc, current=args.current,
                            confirmed=frozenset(args.confirm_magnitude))
    except ConfigError as exc:
        if isinstance(exc, fields.FileErrors):
            return _invalid(args, exc.errors, exc.omitted)
        return _invalid(args, (fields.FieldError.of(exc, source=str(args.file)),), 0)
    except ImportError as exc:
        print(f"itb: error: cannot load the drug library: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_text(summary)
    return 0 if summary["acceptable"] else 1


def _invalid(args: argparse.Namespace, problems: tuple[fields.FieldError, ...], omitted: int) -> int:
    """Report an invalid file: every problem, one line each (or the JSON shape); exit status 2."""
    if args.json:
        outcome = {"file": str(args.file), "valid": False, "acceptable": False,
                   "errors": [problem.to_dict() for problem in problems], "errors_omitted": omitted}
        json.dump(outcome, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(f"{args.file}: INVALID ({len(problems) + omitted} problem(s))", file=sys.stderr)
        for problem in problems:
            print(f"  {problem.one_line()}", file=sys.stderr)
        if omitted:
            print(f"  ... and {omitted} more", file=sys.stderr)
    return 2
