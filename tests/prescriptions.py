"""Prescriptions for tests, written as prescription files and parsed by the real parser.

Tests build the controller only through its front door
(:func:`controller.assembly.build_controller`), which takes a validated
:class:`~controller.prescription.Prescription` and its signed file; :func:`make_prescription`
renders one from a few keyword arguments, and :func:`signed_file` signs its text with the
development clinician key, so every test controller is one a clinician could have prescribed.
"""

from __future__ import annotations

from datetime import datetime, timezone

from controller.prescription import Prescription, parse_prescription
from controller.signing import DEVELOPMENT_DIR, Kind, SignedFile, SigningKey, sign_file

#: Minimum-rate mode volume rate every test prescription uses: 0.048 mL/day (2000 nL/h).
MINIMUM_RATE_NL_PER_H = 2000


def make_prescription(*, concentration: int = 500, dose_ug_per_day: int = 100, max_dose_ug_per_day: int = 1000,
                      origin: str = "spinal", clinician_bolus_ug: int = 50, patient_bolus_ug: int = 25,
                      patient_bolus: bool = True, lockout_min: int = 240, boluses_per_day: int = 4,
                      reservoir_ml: int = 20, model: str = "synchromed-ii-20", dead_volume_ml: str = "0.25",
                      max_increase_pct: int | None = None, min_interval_h: int = 24, decrease_confirm_pct: int = 20,
                      empty_threshold_ml: str = "0.5", extra: str = "") -> Prescription:
    """A prescription with the given numbers (µg, µg/day, µg/mL, mL, min, h); the rest are sensible defaults.

    The minimum rate is 2000 nL/h at ``concentration`` (0.048 mL/day). ``extra`` is appended
    verbatim (e.g. ``[[soft_limit_overrides]]`` tables).
    """
    minimum_ug_per_day = MINIMUM_RATE_NL_PER_H * 24 * concentration // 1_000_000
    cap = 30 if origin == "spinal" else 15
    increase = cap if max_increase_pct is None else max_increase_pct
    patient = (f"enabled = true\ndose_ug = {patient_bolus_ug}\nduration_min = 10\nlockout_min = {lockout_min}\n"
               f"max_per_day = {boluses_per_day}") if patient_bolus else "enabled = false"
    text = f"""schema_version = 1
prescription_id = "RX-TEST"
prescriber = "dr.test"

[patient]
id = "P-TEST"
origin = "{origin}"

[drug]
library_code = "baclofen-it-{concentration}"
concentration_ug_per_ml = {concentration}

[pump]
model = "{model}"
reservoir_volume_ml = {reservoir_ml}
dead_volume_ml = {dead_volume_ml}
low_reservoir_alarm_ml = 2
low_reservoir_alarm_days = 7
empty_threshold_ml = {empty_threshold_ml}

[programme]
mode = "simple"
dose_ug_per_day = {dose_ug_per_day}

[clinician_bolus]
enabled = true
max_dose_ug = {clinician_bolus_ug}
lockout_min = {lockout_min}
max_per_day = {boluses_per_day}

[patient_bolus]
{patient}

[titration]
max_dose_ug_per_day = {max_dose_ug_per_day}
max_increase_pct = {increase}
min_interval_h = {min_interval_h}
decrease_confirm_pct = {decrease_confirm_pct}
minimum_rate_ug_per_day = {minimum_ug_per_day}
{extra}"""
    return parse_prescription(text)



def signed_file(prescription: Prescription) -> SignedFile:
    """The prescription as its file (``PRESCRIPTION_ID.toml``), signed by the development clinician."""
    data = prescription.to_toml().encode("utf-8")
    name = f"{prescription.prescription_id}.toml"
    key = SigningKey.load(DEVELOPMENT_DIR / "signers" / "clinician.key")
    return SignedFile(name, data, sign_file(data, name, Kind.PRESCRIPTION, key, datetime.now(timezone.utc)))
