"""Prescriptions: strict schema (VAL-01), library pairs (PRX-08), schedules (VAL-04), soft limits (PRX-02),
tenfold changes (VAL-02), exact round trip, and ``itb prescription check``."""

from __future__ import annotations

import copy
import importlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import prescription as rx
from controller.prescription import (
    ProgrammeMode,
    assess_change,
    is_magnitude_change,
    library_from,
    load_prescription,
    parse_prescription,
)
from cython_ext.errors import ConfigError
from hil import cli

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "hil" / "prescriptions").glob("*.toml"))
# The library's numbers live in the kernel's shared module; the twin exposes the same DEFAULT_LIBRARY.
LIBRARY = library_from(importlib.import_module("cython_ext._kernel_py").DEFAULT_LIBRARY)
KERNEL = importlib.import_module("cython_ext._kernel_py")


def kernel_accepts(p: rx.Prescription) -> None:
    """The kernel's own configuration checks accept what the parser accepted."""
    caps = KERNEL.make_caps(**p.kernel_caps_kwargs())
    KERNEL.check_caps_against_limits(caps, KERNEL.DEFAULT_LIBRARY[p.concentration_ug_per_ml])
    programme = KERNEL.Programme(p.kernel_steps(), p.concentration_ug_per_ml,
                                 periodic_boluses=p.kernel_periodic_boluses())
    assert programme.daily_total_ng() <= p.programme.daily_total_ng()


@dataclass(frozen=True)
class Raw:
    """A TOML literal written as is (``nan``, ``inf``)."""

    text: str


def toml_value(value: Any) -> str:
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        text = f"{value:f}"
        return text if "." in text else text + ".0"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    raise TypeError(type(value))


def to_toml(doc: Mapping[str, Any], prefix: str = "") -> str:
    lines = [f"{k} = {toml_value(v)}" for k, v in doc.items() if not isinstance(v, (dict, list))]
    for key, value in doc.items():
        if isinstance(value, dict):
            lines += ["", f"[{prefix}{key}]", to_toml(value, f"{prefix}{key}.")]
        elif isinstance(value, list):
            for item in value:
                lines += ["", f"[[{prefix}{key}]]", to_toml(item, f"{prefix}{key}.")]
    return "\n".join(lines)


def base_doc(mode: str = "simple") -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema_version": 1,
        "prescription_id": "RX-1",
        "prescriber": "dr.a",
        "patient": {"id": "P-1", "origin": "spinal"},
        "drug": {"library_code": "baclofen-it-500", "concentration_ug_per_ml": 500},
        "pump": {
            "model": "synchromed-ii-20",
            "reservoir_volume_ml": 20,
            "dead_volume_ml": Decimal("0.25"),
            "low_reservoir_alarm_ml": 2,
            "low_reservoir_alarm_days": 7,
            "empty_threshold_ml": Decimal("0.5"),
        },
        "programme": {"mode": "simple", "dose_ug_per_day": 400},
        "clinician_bolus": {"enabled": True, "max_dose_ug": 50, "lockout_min": 240, "max_per_day": 2},
        "patient_bolus": {"enabled": False},
        "titration": {
            "max_dose_ug_per_day": 600,
            "max_increase_pct": 30,
            "min_interval_h": 24,
            "decrease_confirm_pct": 20,
            "minimum_rate_ug_per_day": 24,
        },
    }
    if mode == "flex":
        doc["programme"] = {
            "mode": "flex",
            "steps": [
                {"start_min": 0, "end_min": 360, "dose_ug_per_day": 300},
                {"start_min": 360, "end_min": 1320, "dose_ug_per_day": Decimal("200.5")},
                {"start_min": 1320, "end_min": 1440, "dose_ug_per_day": 300},
            ],
        }
    elif mode == "periodic":
        doc["programme"] = {
            "mode": "periodic",
            "dose_ug_per_day": 100,
            "periodic_boluses": [
                {"time_min": 480, "dose_ug": 25, "duration_min": 30},
                {"time_min": 1200, "dose_ug": Decimal("25.5"), "duration_min": 30},
            ],
        }
        doc["patient_bolus"] = {"enabled": True, "dose_ug": 10, "duration_min": 10, "lockout_min": 240,
                                "max_per_day": 3}
    return doc


def parse(doc: Mapping[str, Any]) -> rx.Prescription:
    return parse_prescription(to_toml(doc), library=LIBRARY)


def with_value(doc: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    new = copy.deepcopy(doc)
    node: Any = new
    parts = path.replace("]", "").replace("[", ".").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    last = parts[-1]
    if value is _DELETE:
        del node[last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return new


_DELETE = object()


def rejects(doc: Mapping[str, Any], field: str) -> ConfigError:
    with pytest.raises(ConfigError) as excinfo:
        parse(doc)
    assert excinfo.value.field == field, str(excinfo.value)
    return excinfo.value


# -- the shipped examples --------------------------------------------------------------------------


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_prescriptions_are_valid_and_round_trip(path: Path) -> None:
    p = load_prescription(path, library=LIBRARY)
    kernel_accepts(p)
    assert parse_prescription(p.to_toml(), library=LIBRARY) == p
    assert assess_change(None, p, library=LIBRARY).acceptable
    assert len(p.source_sha256) == 64


def test_three_programme_modes_ship() -> None:
    modes = {load_prescription(p, library=LIBRARY).programme.mode for p in SHIPPED}
    assert modes == set(ProgrammeMode)


# -- exact units -----------------------------------------------------------------------------------


def test_values_convert_exactly_to_integer_units() -> None:
    p = parse(base_doc("periodic"))
    assert p.pump.dead_volume_nl == 250_000
    assert p.pump.empty_threshold_nl == 500_000
    assert p.programme.periodic_boluses[1].dose_ng == 25_500
    assert p.programme.daily_total_ng() == 150_500
    assert p.patient_bolus.lockout_ms == 240 * 60_000
    assert p.titration.min_interval_ms == 24 * 3_600_000
    assert p.rate_nl_per_h(400_000) == 33_333


def test_flex_daily_total_and_kernel_steps() -> None:
    p = parse(base_doc("flex"))
    assert p.programme.daily_total_ng() == 75_000 + 133_667 + 25_000
    steps = p.kernel_steps()
    assert [s[:2] for s in steps] == [(0, 360 * 60_000), (360 * 60_000, 960 * 60_000), (1320 * 60_000, 120 * 60_000)]
    assert sum(s[1] for s in steps) == 86_400_000
    assert p.programme.step_at(400).dose_ng_per_day == 200_500


def test_kernel_caps_kwargs_take_the_stricter_bolus_settings() -> None:
    doc = base_doc("periodic")
    doc["clinician_bolus"] = {"enabled": True, "max_dose_ug": 50, "lockout_min": 180, "max_per_day": 2}
    kwargs = parse(doc).kernel_caps_kwargs()
    assert kwargs["max_bolus_ng"] == 50_000
    assert kwargs["bolus_lockout_ms"] == 240 * 60_000
    assert kwargs["max_boluses_per_day"] == 2
    assert kwargs["minimum_rate_nl_per_h"] == 2_000
    assert kwargs["max_priming_volume_nl"] == 250_000


# -- schema errors name the dotted field ------------------------------------------------------------


def test_unknown_keys_are_rejected_everywhere() -> None:
    rejects({**base_doc(), "dose_mg": 1}, "dose_mg")
    rejects(with_value(base_doc(), "pump.reservoir_ml", 20), "pump.reservoir_ml")
    rejects(with_value(base_doc("flex"), "programme.steps[1].rate", 1), "programme.steps[1].rate")
    rejects(with_value(base_doc(), "patient_bolus.dose_ug", 10), "patient_bolus.dose_ug")


def test_missing_keys_are_rejected() -> None:
    rejects(with_value(base_doc(), "titration.minimum_rate_ug_per_day", _DELETE), "titration.minimum_rate_ug_per_day")
    doc = base_doc("periodic")
    rejects(with_value(doc, "patient_bolus.max_per_day", _DELETE), "patient_bolus.max_per_day")
    rejects(with_value(doc, "patient_bolus.lockout_min", _DELETE), "patient_bolus.lockout_min")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("programme.dose_ug_per_day", Raw("nan")),
        ("programme.dose_ug_per_day", Raw("inf")),
        ("programme.dose_ug_per_day", Decimal("-400")),
        ("programme.dose_ug_per_day", "400"),
        ("programme.dose_ug_per_day", True),
        ("programme.dose_ug_per_day", Decimal("400.0001")),
        ("pump.dead_volume_ml", Decimal("-0.1")),
        ("pump.low_reservoir_alarm_days", Decimal("7.5")),
        ("clinician_bolus.max_per_day", 0),
        ("clinician_bolus.enabled", 1),
        ("patient.origin", "spinal cord"),
        ("patient.id", ""),
        ("patient.id", "P\u00071"),
        ("schema_version", 2),
    ],
)
def test_bad_values_are_rejected_with_field_value_and_range(path: str, value: Any) -> None:
    error = rejects(with_value(base_doc(), path, value), path)
    assert error.allowed


def test_invalid_toml_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse_prescription("schema_version = = 1", library=LIBRARY)
    assert excinfo.value.field == "prescription"


# -- library pairs, capacity, hard limits ----------------------------------------------------------


def test_only_labelled_library_pairs() -> None:
    rejects(with_value(base_doc(), "drug.library_code", "baclofen-it-750"), "drug.library_code")
    rejects(with_value(base_doc(), "drug.concentration_ug_per_ml", 2000), "drug.concentration_ug_per_ml")
    error = rejects(
        with_value(with_value(base_doc(), "drug.library_code", "baclofen-it-50"), "drug.concentration_ug_per_ml", 50),
        "drug.library_code",
    )
    assert "screening" in str(error)


def test_reservoir_cannot_exceed_device_capacity() -> None:
    """RES-06: the entered reservoir volume may not exceed the pump model's capacity (20 or 40 mL)."""
    rejects(with_value(base_doc(), "pump.reservoir_volume_ml", Decimal("20.001")), "pump.reservoir_volume_ml")
    doc = with_value(base_doc(), "pump.model", "synchromed-ii-40")
    assert parse(with_value(doc, "pump.reservoir_volume_ml", 40)).pump.reservoir_volume_nl == 40_000_000


def test_thresholds_must_be_ordered() -> None:
    rejects(with_value(base_doc(), "pump.empty_threshold_ml", 2), "pump.empty_threshold_ml")
    rejects(with_value(base_doc(), "pump.low_reservoir_alarm_ml", 20), "pump.low_reservoir_alarm_ml")


@pytest.mark.parametrize(("dose", "ok"), [(Decimal("2003"), True), (Decimal("2003.001"), False),
                                          (Decimal("24"), True), (Decimal("23.999"), False)])
def test_dose_hard_limit_and_pump_minimum_rate_boundaries(dose: Decimal, ok: bool) -> None:
    doc = with_value(with_value(base_doc(), "programme.dose_ug_per_day", dose), "titration.max_dose_ug_per_day",
                     Decimal("2003"))
    if ok:
        assert parse(doc).programme.steps[0].dose_ng_per_day == int(dose * 1000)
    else:
        rejects(doc, "programme.dose_ug_per_day")


def test_cap_must_cover_the_programme_and_minimum_rate_fit_under_it() -> None:
    rejects(with_value(base_doc(), "titration.max_dose_ug_per_day", 399), "titration.max_dose_ug_per_day")
    rejects(with_value(base_doc(), "titration.minimum_rate_ug_per_day", Decimal("23.999")),
            "titration.minimum_rate_ug_per_day")
    rejects(with_value(base_doc(), "titration.minimum_rate_ug_per_day", 401), "titration.minimum_rate_ug_per_day")


@pytest.mark.parametrize(("origin", "pct", "ok"), [("spinal", 30, True), ("spinal", 31, False),
                                                   ("cerebral", 15, True), ("cerebral", 16, False),
                                                   ("paediatric", 16, False)])
def test_titration_cap_by_origin(origin: str, pct: int, ok: bool) -> None:
    doc = with_value(with_value(base_doc(), "patient.origin", origin), "titration.max_increase_pct", pct)
    if ok:
        assert parse(doc).titration.max_increase_pct == pct
    else:
        rejects(doc, "titration.max_increase_pct")


def test_bolus_too_fast_for_the_pump_is_rejected() -> None:
    doc = with_value(base_doc("periodic"), "patient_bolus.dose_ug", 100)
    error = rejects(with_value(doc, "patient_bolus.duration_min", 1), "patient_bolus.duration_min")
    assert "maximum rate" in str(error)


# -- schedules (VAL-04) -----------------------------------------------------------------------------


def test_flex_gap_overlap_and_short_day_are_rejected() -> None:
    flex = base_doc("flex")
    error = rejects(with_value(flex, "programme.steps[1].start_min", 361), "programme.steps[1].start_min")
    assert "gap" in str(error)
    error = rejects(with_value(flex, "programme.steps[1].start_min", 300), "programme.steps[1].start_min")
    assert "overlap" in str(error)
    rejects(with_value(flex, "programme.steps[2].end_min", 1439), "programme.steps[2].end_min")
    rejects(with_value(flex, "programme.steps[0].end_min", 0), "programme.steps[0].end_min")


def test_at_most_13_flex_steps() -> None:
    def steps(n: int) -> list[dict[str, Any]]:
        bounds = [round(i * 1440 / n) for i in range(n + 1)]
        return [{"start_min": a, "end_min": b, "dose_ug_per_day": 300} for a, b in zip(bounds, bounds[1:])]

    assert len(parse(with_value(base_doc("flex"), "programme.steps", steps(13))).programme.steps) == 13
    rejects(with_value(base_doc("flex"), "programme.steps", steps(14)), "programme.steps")


def test_periodic_boluses_may_not_overlap_or_run_past_midnight() -> None:
    doc = base_doc("periodic")
    rejects(with_value(doc, "programme.periodic_boluses[1].time_min", 500), "programme.periodic_boluses[1].time_min")
    rejects(with_value(doc, "programme.periodic_boluses[1].duration_min", 241),
            "programme.periodic_boluses[1].duration_min")


def test_daily_total_with_boluses_must_stay_under_the_cap() -> None:
    doc = with_value(base_doc("periodic"), "titration.max_dose_ug_per_day", 150)
    rejects(doc, "titration.max_dose_ug_per_day")


@st.composite
def partitions(draw: st.DrawFn) -> list[tuple[int, int]]:
    cuts = draw(st.lists(st.integers(1, 1439), max_size=12, unique=True))
    bounds = [0, *sorted(cuts), 1440]
    return list(zip(bounds, bounds[1:]))


@given(parts=partitions(), shift=st.integers(-5, 5), index=st.integers(0, 12))
def test_schedules_cover_24_h_exactly(parts: list[tuple[int, int]], shift: int, index: int) -> None:
    """VAL-04: a contiguous cover parses; moving one boundary creates a gap or overlap that is rejected."""
    steps = [{"start_min": a, "end_min": b, "dose_ug_per_day": 300} for a, b in parts]
    doc = with_value(base_doc("flex"), "programme.steps", steps)
    assert sum(s.duration_min for s in parse(doc).programme.steps) == 1440
    i = index % len(steps)
    moved = steps[i]["start_min"] + shift
    if shift == 0 or i == 0 or not 0 <= moved < steps[i]["end_min"]:
        return
    broken = copy.deepcopy(steps)
    broken[i]["start_min"] = moved
    with pytest.raises(ConfigError) as excinfo:
        parse(with_value(doc, "programme.steps", broken))
    assert excinfo.value.field == f"programme.steps[{i}].start_min"


# -- soft limits and overrides (PRX-02) -------------------------------------------------------------


def test_soft_limit_breach_needs_an_override_with_reason() -> None:
    doc = with_value(with_value(base_doc(), "programme.dose_ug_per_day", 1200), "titration.max_dose_ug_per_day", 1500)
    p = parse(doc)
    assessment = assess_change(None, p, library=LIBRARY)
    assert {b.field for b in assessment.unoverridden_breaches} == {
        "programme.dose_ug_per_day",
        "titration.max_dose_ug_per_day",
    }
    with pytest.raises(ConfigError) as excinfo:
        assessment.require_acceptable()
    assert excinfo.value.error_code == "SOFT_LIMIT_NOT_OVERRIDDEN"
    doc["soft_limit_overrides"] = [
        {"field": "programme.dose_ug_per_day", "reason": "long-standing high dose", "prescriber": "dr.a"},
        {"field": "titration.max_dose_ug_per_day", "reason": "cap above dose", "prescriber": "dr.a"},
    ]
    overridden = parse(doc)
    assessment = assess_change(None, overridden, library=LIBRARY)
    assert assessment.acceptable
    assert all(b.overridden_by is not None and b.overridden_by.reason for b in assessment.soft_limit_breaches)
    assert parse_prescription(overridden.to_toml(), library=LIBRARY) == overridden


def test_override_of_a_value_within_soft_limits_is_rejected() -> None:
    doc = base_doc()
    doc["soft_limit_overrides"] = [{"field": "programme.dose_ug_per_day", "reason": "why", "prescriber": "dr.a"}]
    rejects(doc, "soft_limit_overrides[0].field")
    doc["soft_limit_overrides"] = [{"field": "programme.dose_ug_per_day", "reason": "", "prescriber": "dr.a"}]
    rejects(doc, "soft_limit_overrides[0].reason")


def test_short_lockout_is_a_soft_limit_breach() -> None:
    p = parse(with_value(base_doc(), "clinician_bolus.lockout_min", 60))
    assert [b.field for b in rx.soft_limit_breaches(p, LIBRARY)] == ["clinician_bolus.lockout_min"]
    rejects(with_value(base_doc(), "clinician_bolus.lockout_min", 59), "clinician_bolus.lockout_min")


# -- tenfold changes (VAL-02) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "flagged"),
    [(1000, 9990, False), (1000, 10000, True), (1000, 9999, False), (1000, 101, False), (1000, 100, True),
     (1000, 99, True), (0, 1, True), (0, 0, False), (5, 5, False)],
)
def test_magnitude_boundary(old: int, new: int, flagged: bool) -> None:
    assert is_magnitude_change(old, new) is flagged


@pytest.mark.parametrize(("new_dose", "flagged"), [(Decimal("999"), False), (1000, True)])
def test_tenfold_dose_change_needs_confirmation(new_dose: Any, flagged: bool) -> None:
    current = parse(with_value(with_value(base_doc(), "programme.dose_ug_per_day", 100),
                               "titration.max_dose_ug_per_day", 1000))
    proposed = parse(with_value(with_value(base_doc(), "programme.dose_ug_per_day", new_dose),
                                "titration.max_dose_ug_per_day", 1000))
    assessment = assess_change(current, proposed, library=LIBRARY)
    fields = {c.field for c in assessment.magnitude_changes}
    assert ("programme.dose_ug_per_day" in fields) is flagged
    assert assessment.acceptable is not flagged
    if flagged:
        with pytest.raises(ConfigError) as excinfo:
            assessment.require_acceptable()
        assert excinfo.value.error_code == "MAGNITUDE_UNCONFIRMED"
        confirmed = assess_change(current, proposed, confirmed_magnitude_fields=fields, library=LIBRARY)
        assert confirmed.acceptable
        confirmed.require_acceptable()


def test_tenfold_decrease_is_flagged_too() -> None:
    current = parse(with_value(base_doc(), "clinician_bolus.lockout_min", 1440))
    proposed = parse(with_value(base_doc(), "clinician_bolus.lockout_min", 144))
    assert [c.field for c in assess_change(current, proposed, library=LIBRARY).magnitude_changes] == [
        "clinician_bolus.lockout_min"
    ]


# -- property tests: malformed input rejected, valid input round-trips -------------------------------


def leaves(doc: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from leaves(value, f"{path}.{key}" if path else key)
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from leaves(value, f"{path}[{i}]")
    else:
        yield path, doc


def tables(doc: Any, path: str = "") -> Iterator[str]:
    if isinstance(doc, dict):
        yield path
        for key, value in doc.items():
            yield from tables(value, f"{path}.{key}" if path else key)
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from tables(value, f"{path}[{i}]")


def bad_values_for(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return [1, "yes", Decimal("1.5")]
    if isinstance(value, (int, Decimal)):
        return [Decimal("-1"), -1, Raw("nan"), Raw("inf"), Raw("-inf"), "12", True]
    return [7, True, "", " padded "]


BASES = [base_doc("simple"), base_doc("flex"), base_doc("periodic")]


@given(data=st.data())
def test_malformed_input_is_rejected_naming_the_field(data: st.DataObject) -> None:
    doc = data.draw(st.sampled_from(BASES))
    kind = data.draw(st.sampled_from(["value", "unknown", "missing"]))
    if kind == "value":
        path, value = data.draw(st.sampled_from(list(leaves(doc))))
        bad = data.draw(st.sampled_from(bad_values_for(value)))
        rejects(with_value(doc, path, bad), path)
    elif kind == "unknown":
        table = data.draw(st.sampled_from(list(tables(doc))))
        key = data.draw(st.sampled_from(["extra", "rate_ml_per_h", "dose"]))
        path = f"{table}.{key}" if table else key
        rejects(with_value(doc, path, 1), path)
    else:
        path, _ = data.draw(st.sampled_from([lf for lf in leaves(doc) if not lf[0].endswith("enabled")]))
        if path.startswith("programme.mode"):
            return
        rejects(with_value(doc, path, _DELETE), path)


@st.composite
def valid_docs(draw: st.DrawFn) -> dict[str, Any]:
    conc = draw(st.sampled_from([500, 1000, 2000]))
    origin = draw(st.sampled_from(["spinal", "cerebral", "paediatric"]))
    floor_ng = 48 * conc
    dose_ng = st.integers(max(12_000, floor_ng), 2_003_000)
    doc = base_doc()
    doc["patient"]["origin"] = origin
    doc["drug"] = {"library_code": f"baclofen-it-{conc}", "concentration_ug_per_ml": conc}
    model_ml = draw(st.sampled_from([20, 40]))
    doc["pump"]["model"] = f"synchromed-ii-{model_ml}"
    doc["pump"]["reservoir_volume_ml"] = Decimal(draw(st.integers(3_000, model_ml * 1000))) / 1000
    doc["pump"]["dead_volume_ml"] = Decimal(draw(st.integers(1, 1000))) / 1000
    mode = draw(st.sampled_from(["simple", "flex", "periodic"]))
    if mode == "flex":
        parts = draw(partitions())
        doc["programme"] = {"mode": "flex", "steps": [
            {"start_min": a, "end_min": b, "dose_ug_per_day": Decimal(draw(dose_ng)) / 1000} for a, b in parts
        ]}
    else:
        doc["programme"] = {"mode": mode, "dose_ug_per_day": Decimal(draw(dose_ng)) / 1000}
        if mode == "periodic":
            count = draw(st.integers(1, 4))
            doc["programme"]["periodic_boluses"] = [
                {"time_min": i * 360 + draw(st.integers(0, 200)), "dose_ug": Decimal(draw(st.integers(1_000, 50_000))) / 1000,
                 "duration_min": draw(st.integers(30, 120))}
                for i in range(count)
            ]
    if draw(st.booleans()):
        doc["clinician_bolus"] = {"enabled": False}
    if draw(st.booleans()):
        duration = draw(st.integers(30, 120))
        doc["patient_bolus"] = {
            "enabled": True,
            "dose_ug": Decimal(draw(st.integers(1_000, 100_000))) / 1000,
            "duration_min": duration,
            "lockout_min": draw(st.integers(max(60, duration), 1440)),
            "max_per_day": draw(st.integers(1, 8)),
        }
    doc["titration"]["max_increase_pct"] = draw(st.integers(1, 15 if origin != "spinal" else 30))
    doc["titration"]["min_interval_h"] = draw(st.integers(24, 336))
    doc["titration"]["decrease_confirm_pct"] = draw(st.integers(5, 90))
    doc["titration"]["minimum_rate_ug_per_day"] = Decimal(floor_ng) / 1000
    return doc


@given(doc=valid_docs(), cap_extra_ng=st.integers(0, 500_000))
def test_valid_prescriptions_round_trip_exactly(doc: dict[str, Any], cap_extra_ng: int) -> None:
    doc["titration"]["max_dose_ug_per_day"] = Decimal(2_003_000) / 1000
    try:
        first = parse(doc)
    except ConfigError as exc:
        # Only the daily total may legitimately exceed the hard ceiling for random step doses.
        assert exc.field in {"programme.daily_total_ug", "titration.max_dose_ug_per_day"}, str(exc)
        return
    cap = min(2_003_000, first.programme.daily_total_ng() + cap_extra_ng)
    doc["titration"]["max_dose_ug_per_day"] = Decimal(cap) / 1000
    p = parse(doc)
    text = p.to_toml()
    again = parse_prescription(text, library=LIBRARY)
    assert again == p
    assert again.to_toml() == text
    assert p.programme.daily_total_ng() <= p.titration.max_dose_ng_per_day
    kernel_accepts(p)


# -- itb prescription check -------------------------------------------------------------------------


@pytest.fixture
def library_in_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rx.library, "default_library", lambda: LIBRARY)


@pytest.mark.usefixtures("library_in_cli")
def test_check_prints_daily_delivery_and_alarm_date(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "hil" / "prescriptions" / "spinal_simple_500.toml"
    assert cli.main(["prescription", "check", str(path), "--fill-date", "2026-01-05"]) == 0
    out = capsys.readouterr().out
    assert "400 ug/day" in out and "0.8 mL/day" in out
    assert "in 18 days, on 2026-01-23" in out


@pytest.mark.usefixtures("library_in_cli")
def test_check_json_lists_flex_steps(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "hil" / "prescriptions" / "cerebral_flex_1000.toml"
    assert cli.main(["prescription", "check", str(path), "--fill-date", "2026-01-05", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert [s["volume_rate_ml_per_day"] for s in summary["steps"]] == ["0.3", "0.2", "0.3"]
    assert summary["acceptable"] is True


@pytest.mark.usefixtures("library_in_cli")
def test_check_fails_on_bad_file_and_on_unoverridden_soft_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(to_toml(with_value(base_doc(), "programme.dose_ug_per_day", Raw("nan"))), encoding="utf-8")
    assert cli.main(["prescription", "check", str(bad)]) != 0
    assert "programme.dose_ug_per_day" in capsys.readouterr().err
    soft = tmp_path / "soft.toml"
    soft.write_text(to_toml(with_value(with_value(base_doc(), "programme.dose_ug_per_day", 1200),
                                       "titration.max_dose_ug_per_day", 1200)), encoding="utf-8")
    assert cli.main(["prescription", "check", str(soft)]) == 1
    assert "NOT overridden" in capsys.readouterr().out


def test_a_library_with_misordered_limits_is_refused() -> None:
    """VAL-03: the library's limit ordering is checked when it is loaded."""
    entry = KERNEL.DEFAULT_LIBRARY[500]
    bad_bounds = entry.dose_ng_per_day._replace(lower_soft=entry.dose_ng_per_day.upper_soft + 1)
    with pytest.raises(ConfigError) as excinfo:
        library_from([entry._replace(dose_ng_per_day=bad_bounds)])
    assert excinfo.value.field == "library.bounds"


@pytest.mark.parametrize(
    ("field", "internal", "shown"),
    [("programme.dose_ug_per_day", 400_500, "400.5"), ("patient_bolus.lockout_min", 14_400_000, "240"),
     ("pump.dead_volume_ml", 250_000, "0.25"), ("titration.min_interval_h", 86_400_000, "24"),
     ("clinician_bolus.max_per_day", 3, "3")],
)
def test_file_values_are_shown_in_the_file_unit(field: str, internal: int, shown: str) -> None:
    assert f"{rx.file_value(field, internal):f}" == shown


def test_unacceptable_change_error_speaks_file_units() -> None:
    doc = with_value(with_value(base_doc(), "programme.dose_ug_per_day", 1200), "titration.max_dose_ug_per_day", 1500)
    with pytest.raises(ConfigError) as excinfo:
        assess_change(None, parse(doc), library=LIBRARY).require_acceptable()
    assert "=1200" in str(excinfo.value) and "<= 1000" in str(excinfo.value)


def test_independent_problems_are_all_reported() -> None:
    doc = with_value(base_doc(), "patient.origin", "spine")
    doc = with_value(doc, "pump.dead_volume_ml", Decimal("-1"))
    doc = with_value(doc, "clinician_bolus.max_per_day", 99)
    doc["colour"] = "blue"
    with pytest.raises(rx.PrescriptionError) as excinfo:
        parse(doc)
    fields = [e.field for e in excinfo.value.errors]
    assert fields == ["colour", "patient.origin", "pump.dead_volume_ml", "clinician_bolus.max_per_day"]
    assert excinfo.value.field == "colour"
    lines = [e.line for e in excinfo.value.errors]
    assert lines == sorted(lines) and None not in lines
    assert str(excinfo.value).splitlines() == [e.one_line() for e in excinfo.value.errors]


def test_sections_that_depend_on_a_broken_one_are_not_checked() -> None:
    doc = with_value(base_doc(), "drug.library_code", "morphine")
    doc = with_value(doc, "programme.dose_ug_per_day", Decimal("99999"))
    with pytest.raises(rx.PrescriptionError) as excinfo:
        parse(doc)
    assert [e.field for e in excinfo.value.errors] == ["drug.library_code"]


@pytest.mark.usefixtures("library_in_cli")
def test_check_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = with_value(with_value(base_doc(), "patient.origin", "spine"), "clinician_bolus.max_per_day", 99)
    bad = tmp_path / "two.toml"
    bad.write_text(to_toml(doc), encoding="utf-8")
    assert cli.main(["prescription", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "INVALID (2 problem(s))" in err and "patient.origin" in err and "clinician_bolus.max_per_day" in err


@pytest.mark.usefixtures("library_in_cli")
def test_check_against_the_current_prescription(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    current = tmp_path / "current.toml"
    current.write_text(to_toml(with_value(base_doc(), "programme.dose_ug_per_day", 40)), encoding="utf-8")
    new = tmp_path / "new.toml"
    new.write_text(to_toml(base_doc()), encoding="utf-8")
    args = ["prescription", "check", str(new), "--current", str(current)]
    assert cli.main(args) == 1
    out = capsys.readouterr().out
    assert "programme.dose_ug_per_day changes tenfold or more: 40 -> 400: NOT confirmed" in out
    assert cli.main([*args, "--confirm-magnitude", "programme.dose_ug_per_day"]) == 0


def test_to_dict_is_plain_json_data() -> None:
    from controller.audit import canonical_json

    p = parse(base_doc("flex"))
    text = canonical_json(p.to_dict())
    assert '"dose_ug_per_day":"300"' in text and '"dose_ug_per_day":"200.5"' in text
    assert "E+" not in text


def _fast_kernel() -> Any:
    """The compiled kernel when built (the twin's brute-force projections are slow), else the twin."""
    try:
        return importlib.import_module("cython_ext._kernel")
    except ImportError:
        return KERNEL


def _kernel_decision(p: rx.Prescription, override_kwargs: dict[str, Any] | None) -> Any:
    KERNEL = _fast_kernel()  # noqa: N806
    gate = KERNEL.SafetyKernel(KERNEL.DEFAULT_LIBRARY[p.concentration_ug_per_ml],
                               KERNEL.make_caps(**p.kernel_caps_kwargs()), KERNEL.make_envelope(2_000, 1_000_000))
    programme = KERNEL.Programme(p.kernel_steps(), p.concentration_ug_per_ml,
                                 periodic_boluses=p.kernel_periodic_boluses())
    override = KERNEL.make_override(**override_kwargs) if override_kwargs else None
    return gate.authorize(KERNEL.request_programme_change(programme, override=override), 0)


@settings(max_examples=40)
@given(doc=valid_docs())
def test_kernel_agrees_with_the_prescription_soft_limits(doc: dict[str, Any]) -> None:
    """The one gate and the prescription agree: a programme the prescription calls within its soft
    limits is authorised; one it overrides is authorised with the override it carries."""
    doc["titration"]["max_dose_ug_per_day"] = Decimal(2_003_000) / 1000
    try:
        p = parse(doc)
    except ConfigError:
        return
    breaches = assess_change(None, p, library=LIBRARY).soft_limit_breaches
    # The kernel applies the dose soft limits to a programme; periodic bolus sizes are soft-checked
    # by the prescription only (the kernel bounds them by rate and the 24 h cap).
    codes = {b.kernel_reason for b in breaches
             if b.field.startswith("programme.") and b.quantity in ("dose_ng_per_day", "rate_nl_per_h")}
    decision = _kernel_decision(p, None)
    # The prescription judges the prescribed dose, the kernel the rate-rounded one: the prescription
    # may be stricter at a boundary, never looser.
    assert set(decision.reasons) <= codes
    if not codes:
        assert decision.allowed
    if not breaches:
        return
    doc["soft_limit_overrides"] = [
        {"field": b.field, "reason": "clinically justified", "prescriber": "dr.a"} for b in breaches
    ]
    overridden = assess_change(None, parse(doc), library=LIBRARY)
    assert overridden.acceptable
    assert _kernel_decision(overridden.new, overridden.kernel_override_kwargs()).allowed


# -- bad input never crashes (issue #15) and the per-field decisions of the field kit ----------------


def numeric_leaves(doc: Any) -> list[str]:
    return [path for path, value in leaves(doc) if isinstance(value, (int, Decimal)) and not isinstance(value, bool)]


@pytest.mark.parametrize("literal", ["1e999999", "-1e999999", "1e-999999"])
@pytest.mark.parametrize("path", numeric_leaves(base_doc("periodic")))
def test_a_number_beyond_the_decimal_range_is_a_config_error(path: str, literal: str) -> None:
    """Regression: ``reservoir_volume_ml = 1e999999`` raised decimal.Overflow."""
    error = rejects(with_value(base_doc("periodic"), path, Raw(literal)), path)
    assert error.errors[0].line is not None


@pytest.mark.parametrize(
    "text",
    ["x = " + "[" * 5000 + "]" * 5000, "x = " + "{a = " * 5000 + "1" + "}" * 5000, "[" + "a." * 5000 + "a]\n",
     "a" + ".a" * 200_000 + " = 1\n"],
    ids=["arrays", "inline tables", "dotted table", "dotted key"],
)
def test_deep_nesting_is_a_config_error(text: str) -> None:
    """Regression: deeply nested tables or arrays raised RecursionError (a dotted key of 200 000
    parts took the standard parser minutes and gigabytes)."""
    with pytest.raises(rx.PrescriptionError) as excinfo:
        parse_prescription(text, library=LIBRARY)
    assert "at most 16" in excinfo.value.allowed and excinfo.value.errors[0].line == 1


@pytest.mark.parametrize(
    ("path", "literal", "why"),
    [("clinician_bolus.lockout_min", "0xF0", "hexadecimal"), ("clinician_bolus.max_per_day", "0b10", "binary"),
     ("titration.min_interval_h", "2_4", "_ separators"), ("pump.dead_volume_ml", "-0.0", "negative zero"),
     ("pump.low_reservoir_alarm_days", "-0", "negative zero")],
)
def test_misleading_number_forms_are_refused(path: str, literal: str, why: str) -> None:
    """Decision: ``0x10``, ``1_6`` (16 where 1.6 was meant) and ``-0`` are not numbers a prescription holds."""
    error = rejects(with_value(base_doc(), path, Raw(literal)), path)
    assert why in str(error)


@pytest.mark.parametrize("path", ["clinician_bolus.max_per_day", "titration.max_increase_pct",
                                  "drug.concentration_ug_per_ml", "pump.low_reservoir_alarm_days"])
def test_a_float_for_an_integer_field_is_refused(path: str) -> None:
    """PRX-05 decision: ``2.0`` for a count is refused (write ``2``), never read as 2."""
    value = dict(leaves(base_doc()))[path]
    error = rejects(with_value(base_doc(), path, Decimal(value) + Decimal("0.0")), path)
    assert "without a decimal point" in str(error)


@pytest.mark.parametrize("path", ["prescription_id", "prescriber", "patient.id"])
@pytest.mark.parametrize("text", ["RX-\u0420001", "\u60a3\u8005-1", "RX-1\U0001f642", "RX\u200b-1", "RX-1\u202e"],
                         ids=["Cyrillic", "CJK", "emoji", "zero-width", "bidi"])
def test_identities_a_clinician_reads_are_a_documented_ascii_set(path: str, text: str) -> None:
    """Decision: prescription ID, patient ID and prescriber are ASCII (no look-alikes)."""
    rejects(with_value(base_doc(), path, text), path)


def test_every_problem_has_its_line() -> None:
    doc = with_value(with_value(base_doc(), "pump.dead_volume_ml", Raw("nan")), "titration.max_increase_pct", 99)
    text = to_toml(doc)
    with pytest.raises(rx.PrescriptionError) as excinfo:
        parse_prescription(text, library=LIBRARY, source="rx.toml")
    lines = text.splitlines()
    for problem in excinfo.value.errors:
        key = problem.field.rsplit(".", 1)[-1]
        assert lines[problem.line - 1].startswith(f"{key} = "), problem.one_line()
        assert problem.one_line().startswith(f"rx.toml:{problem.line}: {problem.field} (=")


def test_invalid_utf8_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(to_toml(base_doc()).encode() + b'\n# caf\xe9\n')
    with pytest.raises(rx.PrescriptionError) as excinfo:
        load_prescription(bad, library=LIBRARY)
    assert excinfo.value.allowed == "valid UTF-8 text" and excinfo.value.errors[0].source == str(bad)


@pytest.mark.usefixtures("library_in_cli")
def test_check_json_of_an_invalid_file_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = with_value(with_value(base_doc(), "patient.origin", "spine"), "clinician_bolus.max_per_day", 99)
    bad = tmp_path / "two.toml"
    bad.write_text(to_toml(doc), encoding="utf-8")
    assert cli.main(["prescription", "check", str(bad), "--json"]) == 2
    outcome = json.loads(capsys.readouterr().out)
    assert outcome["valid"] is False and outcome["acceptable"] is False and outcome["errors_omitted"] == 0
    assert [(e["field"], e["value"]) for e in outcome["errors"]] == [("patient.origin", "'spine'"),
                                                                    ("clinician_bolus.max_per_day", "99")]
    for error in outcome["errors"]:
        assert set(error) == {"file", "line", "field", "value", "allowed", "detail", "code"}
        assert error["file"] == str(bad) and isinstance(error["line"], int) and error["allowed"]


@pytest.mark.usefixtures("library_in_cli")
@pytest.mark.parametrize("content", [b"\xff\xfe", b"x = " + b"[" * 100, b""], ids=["not UTF-8", "too deep", "empty"])
def test_check_json_of_any_bad_file_has_the_same_shape(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       content: bytes) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_bytes(content)
    for target in (bad, tmp_path / "missing.toml"):
        assert cli.main(["prescription", "check", str(target), "--json"]) == 2
        outcome = json.loads(capsys.readouterr().out)
        assert outcome["valid"] is False and outcome["errors"] and outcome["errors"][0]["field"]


@pytest.mark.usefixtures("library_in_cli")
def test_check_json_of_a_valid_file_has_the_same_keys(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "hil" / "prescriptions" / "spinal_simple_500.toml"
    assert cli.main(["prescription", "check", str(path), "--fill-date", "2026-01-05", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["valid"], summary["acceptable"], summary["errors"], summary["errors_omitted"]) == (True, True, [], 0)
