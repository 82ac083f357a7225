"""A scenario's prescription file: where it is found, and the therapy settings it gives.

With ``[scenario] prescription``, the prescription is the single source of the drug,
the caps, the boluses, the titration policy and the reservoir; :data:`PRESCRIBED_KEYS`
lists the scenario keys it sets, which the scenario may not give again.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from controller.prescription import Prescription
from cython_ext import units
from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_H
from hil.scenario.model import TherapySettings

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


def _whole(field: str, value_n: int, per: int, unit: str) -> int:
    """``value_n / per`` as an exact integer (the scenario's settings are in whole ``unit``)."""
    if value_n % per:
        raise ConfigError(field, units.units_to_decimal(value_n, per), f"a whole number of {unit} in a scenario",
                          detail="no rounding is done")
    return value_n // per


def prescribed_therapy(rx: Prescription, kept: Mapping[str, Any]) -> TherapySettings:
    """The therapy settings a prescription gives, plus the ``kept`` ones it cannot express.

    The bolus fields mirror :meth:`controller.prescription.Prescription.kernel_caps_kwargs`
    (one size, lockout and count for both kinds: the larger size, the longer lockout, the
    smaller count), which is what the runner gives the kernel.

    :raises ConfigError: naming the prescription's field, for a value the scenario's whole-unit
        settings cannot hold.
    """
    conc = rx.drug.concentration_ug_per_ml
    enabled = [b for b in (rx.clinician_bolus, rx.patient_bolus) if b.enabled]
    sizes = {"clinician_bolus.max_dose_ug": rx.clinician_bolus.max_dose_ng if rx.clinician_bolus.enabled else 0,
             "patient_bolus.dose_ug": rx.patient_bolus.dose_ng if rx.patient_bolus.enabled else 0}
    largest = max(sizes, key=lambda name: sizes[name])
    minimum_rate = units.rate_nl_per_h_for_dose(rx.titration.minimum_rate_ng_per_day, conc)
    if units.dose_ng_per_day_for_rate(minimum_rate, conc) != rx.titration.minimum_rate_ng_per_day:
        raise ConfigError("titration.minimum_rate_ug_per_day",
                          units.units_to_decimal(rx.titration.minimum_rate_ng_per_day, units.NG_PER_UG),
                          f"a whole number of nL/h at {conc} ug/mL")
    return TherapySettings(
        max_dose_ug_per_day=_whole("titration.max_dose_ug_per_day", rx.titration.max_dose_ng_per_day,
                                   units.NG_PER_UG, "ug/day"),
        minimum_rate_nl_per_h=minimum_rate,
        low_reservoir_nl=rx.pump.low_reservoir_alarm_nl,
        low_reservoir_days=rx.pump.low_reservoir_alarm_days,
        empty_reservoir_nl=rx.pump.empty_threshold_nl,
        dead_volume_nl=rx.pump.dead_volume_nl,
        max_bolus_ug=_whole(largest, sizes[largest], units.NG_PER_UG, "ug") if enabled else 1,
        bolus_lockout_ms=max((b.lockout_ms for b in enabled), default=4 * MS_PER_H),
        max_boluses_per_day=min((b.max_per_day for b in enabled), default=0),
        patient_bolus_enabled=rx.patient_bolus.enabled,
        bolus_enabled=rx.clinician_bolus.enabled,
        titration_cap_pct=rx.titration.max_increase_pct,
        min_titration_interval_ms=rx.titration.min_interval_ms,
        decrease_confirm_pct=rx.titration.decrease_confirm_pct,
        **kept,
    )
