"""Rendering a prescription as file TOML: the exact inverse of the parser."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from decimal import Decimal
from typing import Any

from controller.prescription.model import SCHEMA_VERSION, Prescription, ProgrammeMode
from cython_ext import units
from cython_ext.errors import ConfigError


def _dec(value: int, scale: int) -> Decimal:
    """Exact decimal without trailing zeros or exponent (``400``, ``0.25``)."""
    return Decimal(f"{units.units_to_decimal(value, scale).normalize():f}")


def to_document(p: Prescription) -> dict[str, Any]:
    """``p`` in file form: external units, exact decimals without exponent, tables as dicts."""
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
        return f"{value:f}"
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
    return "\n".join(_toml_lines(to_document(p))) + "\n"

