"""Scenario files: strict schema, exact decimals, unknown keys rejected, every shipped scenario valid."""

from __future__ import annotations

import importlib
import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.prescription import library_from, load_prescription
from cython_ext.errors import ConfigError
from cython_ext.fields import FileErrors
from cython_ext.units import MS_PER_DAY, MS_PER_H
from hil.gravimetric.profile import load_profile
from sim.population import load_population
from hil.scenario.schema import (
    ACTION_FIELDS,
    MAX_NAME_CHARS,
    load_scenario,
    parse_at,
    parse_scenario,
    shipped_scenarios,
)

ROOT = Path(__file__).resolve().parents[2]
#: ``repr`` of every shipped file as loaded before the shared field kit (by main at 507a4e7).
LOADED_BEFORE = json.loads((Path(__file__).parent / "golden" / "loaded_objects.json").read_text(encoding="utf-8"))
LIBRARY = library_from(importlib.import_module("cython_ext._kernel_py").DEFAULT_LIBRARY)

MINIMAL = """
[scenario]
name = "m"
duration_days = 2
"""


def with_lines(*lines: str) -> str:
    return MINIMAL + "\n".join(lines) + "\n"


def test_minimal_scenario_has_documented_defaults() -> None:
    sc = parse_scenario(MINIMAL)
    assert sc.settings.duration_ms == 2 * MS_PER_DAY
    assert sc.therapy.minimum_rate_nl_per_h == 2000  # 0.048 mL/day
    assert sc.therapy.dead_volume_nl == 250_000
    assert sc.actions == () and sc.expectations == ()


@pytest.mark.parametrize("name", shipped_scenarios())
def test_every_shipped_scenario_validates(name: str) -> None:
    sc = load_scenario(name)
    assert sc.settings.name
    assert sc.expectations, "a shipped scenario must check something"


def test_every_shipped_file_loads_to_the_same_objects_as_before() -> None:
    """Valid files do not change meaning: the same dataclasses, field for field (exact decimals included)."""
    loaded = {
        "prescriptions": {p.name: repr(load_prescription(p, library=LIBRARY))
                          for p in sorted((ROOT / "hil" / "prescriptions").glob("*.toml"))},
        "scenarios": {name: repr(load_scenario(name)).replace(str(ROOT), "<root>") for name in shipped_scenarios()},
        "profiles": {p.name: repr(load_profile(p)) for p in sorted((ROOT / "hil" / "profiles").glob("*.toml"))},
        "populations": {p.name: repr(load_population(p)) for p in sorted((ROOT / "hil" / "cohorts").glob("*.toml"))},
    }
    assert loaded == LOADED_BEFORE


def test_decimals_are_exact_and_floats_read_as_written() -> None:
    sc = parse_scenario(MINIMAL + '[therapy]\ndead_volume_ml = 0.3\nempty_reservoir_ml = "0.25"\n')
    assert sc.therapy.dead_volume_nl == 300_000
    assert sc.therapy.empty_reservoir_nl == 250_000


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (MINIMAL + "[scenario2]\nx = 1\n", "scenario2"),
        (MINIMAL.replace('duration_days = 2', 'duration_days = 2\ncolour = "red"'), "scenario.colour"),
        (MINIMAL + '[patient]\norigin = "lumbar"\n', "patient.origin"),
        (MINIMAL + "[therapy]\ndead_volume_ml = -1\n", "therapy.dead_volume_ml"),
        (MINIMAL + "[therapy]\nmax_dose_ug_per_day = nan\n", "therapy.max_dose_ug_per_day"),
        (MINIMAL + '[therapy]\nminimum_rate_ml_per_day = "0.05"\n', "therapy.minimum_rate_ml_per_day"),
        (MINIMAL + "[therapy]\nlow_reservoir_ml = 0.0000001\n", "therapy.low_reservoir_ml"),
        (MINIMAL + "[pump]\nfaults = [\"explode\"]\n", "pump.faults[0]"),
        (with_lines("[[action]]", 'at = "0d 09:00"', 'do = "dance"'), "action[0].do"),
        (with_lines("[[action]]", 'at = "0d 25:00"', 'do = "patient_bolus"'), "action[0].at"),
        (with_lines("[[action]]", 'at = "9d 09:00"', 'do = "patient_bolus"'), "action[0].at"),
        (with_lines("[[action]]", 'at = "0d 09:00"', 'do = "patient_bolus"', "dose_ug = 5"), "action[0].dose_ug"),
        (with_lines("[[action]]", 'at = "0d 09:00"', 'do = "clinician_bolus"'), "action[0].dose_ug"),
        (with_lines("[[action]]", 'at = "0d 09:00"', 'do = "titrate"'), "action[0].dose_ug_per_day"),
        (with_lines("[[action]]", 'at = "0d 09:00"', 'do = "discontinue"'), "action[0].authorised_by"),
        (with_lines("[[expect]]", 'check = "denied"', 'action = "nope"'), "expect[0].action"),
        (with_lines("[[expect]]", 'check = "vibes"'), "expect[0].check"),
        ("not toml [", "scenario"),
    ],
)
def test_bad_files_are_rejected_naming_the_field(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_scenario(text)
    assert info.value.field == field


def test_actions_are_sorted_by_time_then_file_order() -> None:
    sc = parse_scenario(with_lines(
        "[[action]]", 'at = "1d 10:00"', 'do = "patient_bolus"', 'label = "b"',
        "[[action]]", 'at = "0d 10:00"', 'do = "patient_bolus"', 'label = "a"',
        "[[action]]", 'at = "1d 10:00"', 'do = "acknowledge_alarms"', 'label = "c"',
    ))
    assert [a.label for a in sc.actions] == ["a", "b", "c"]


def test_duplicate_labels_are_rejected() -> None:
    with pytest.raises(ConfigError, match="unique"):
        parse_scenario(with_lines("[[action]]", 'at = "0d 10:00"', 'do = "patient_bolus"', 'label = "x"',
                                  "[[action]]", 'at = "0d 11:00"', 'do = "patient_bolus"', 'label = "x"'))


def test_with_duration_drops_later_actions() -> None:
    sc = parse_scenario(with_lines("[[action]]", 'at = "1d 10:00"', 'do = "patient_bolus"'))
    assert sc.with_duration(MS_PER_DAY).actions == ()
    assert sc.with_duration(3 * MS_PER_DAY).settings.duration_ms == 3 * MS_PER_DAY


@given(days=st.integers(0, 999), hours=st.integers(0, 23), minutes=st.integers(0, 59))
def test_parse_at_round_trips(days: int, hours: int, minutes: int) -> None:
    assert parse_at(f"{days}d {hours:02d}:{minutes:02d}", "at") == days * MS_PER_DAY + hours * MS_PER_H + minutes * 60_000


def test_every_action_kind_has_a_schema() -> None:
    assert {"screening_dose", "implant", "titrate", "clinician_bolus", "patient_bolus", "refill", "fault",
            "acknowledge_alarms", "taper", "discontinue", "restart_controller"} <= set(ACTION_FIELDS)
    assert Decimal("0.25") * 1_000_000 == 250_000


# -- bad input never crashes (issue #15) ------------------------------------------------------------


def test_invalid_utf8_is_a_config_error_with_its_line(tmp_path: Path) -> None:
    """Regression: scenario files with invalid UTF-8 raised UnicodeDecodeError."""
    bad = tmp_path / "bad.toml"
    bad.write_bytes(MINIMAL.encode() + b'description = "caf\xe9"\n')
    with pytest.raises(FileErrors) as excinfo:
        load_scenario(bad)
    problem = excinfo.value.errors[0]
    assert (problem.field, problem.allowed, problem.line) == ("scenario", "valid UTF-8 text", 5)
    assert problem.one_line().startswith(f"{bad}:5: scenario (=bytes e9")


@pytest.mark.parametrize(
    "extra",
    ["x = " + "[" * 5000 + "]" * 5000, "x = " + "{a = " * 5000 + "1" + "}" * 5000, "[" + "a." * 5000 + "a]"],
    ids=["arrays", "inline tables", "tables"],
)
def test_deep_nesting_is_a_config_error(extra: str) -> None:
    """Regression: deeply nested tables or arrays raised RecursionError."""
    with pytest.raises(FileErrors) as excinfo:
        parse_scenario(MINIMAL + extra + "\n")
    assert "at most 16" in excinfo.value.allowed and excinfo.value.errors[0].line == 5


def test_a_very_long_name_is_refused_before_anything_runs() -> None:
    """Regression: a scenario whose name was 200 000 characters long hung ``itb run``."""
    for length, limit in ((200_000, 10_000), (MAX_NAME_CHARS + 1, MAX_NAME_CHARS)):
        with pytest.raises(FileErrors) as excinfo:
            parse_scenario(MINIMAL.replace('name = "m"', f'name = "{"x" * length}"'))
        assert excinfo.value.field == "scenario.name" and f"at most {limit} characters" in excinfo.value.allowed
    assert parse_scenario(MINIMAL.replace('name = "m"', f'name = "{"x" * MAX_NAME_CHARS}"')).settings.name


@pytest.mark.parametrize("spec", ["delay:s=1e308", "stall:at=1e308", "occlusion:clear=inf", "junk:bytes=1e9"])
def test_an_absurd_fault_value_is_refused_before_any_thread_starts(spec: str) -> None:
    """Regression: ``pump.faults = ["delay:s=1e308"]`` crashed the simulator thread mid-run."""
    with pytest.raises(FileErrors) as excinfo:
        parse_scenario(MINIMAL + f'[pump]\nfaults = ["lost-reply:match=RUN", "{spec}"]\n')
    assert excinfo.value.field == "pump.faults[1]" and excinfo.value.errors[0].line == 6


def test_every_problem_of_a_file_is_reported_with_its_line() -> None:
    text = with_lines(
        "seed = -1",
        "[pump]", "bias_pct = 80", "colour = 'red'",
        "[[action]]", 'at = "0d 25:00"', 'do = "titrate"', "dose_ug_per_day = 16.0",
        "[[expect]]", 'check = "denied"', 'action = "nope"',
    )
    with pytest.raises(FileErrors) as excinfo:
        parse_scenario(text, source="s.toml")
    found = [(e.field, e.line) for e in excinfo.value.errors]
    assert found == [("scenario.seed", 5), ("pump.bias_pct", 7), ("pump.colour", 8), ("action[0].at", 10),
                     ("action[0].dose_ug_per_day", 12), ("expect[0].action", 15)]
    assert str(excinfo.value).splitlines()[0] == "s.toml:5: scenario.seed (=-1) must be an integer in [0, 4294967295]"


def test_a_prescription_key_given_twice_names_both_files(tmp_path: Path) -> None:
    (tmp_path / "rx.toml").write_text((ROOT / "hil" / "prescriptions" / "spinal_simple_500.toml").read_text()
                                      .replace('origin = "spinal"', 'origin = "lumbar"'))
    scenario = tmp_path / "s.toml"
    scenario.write_text(MINIMAL + 'prescription = "rx.toml"\n[patient]\norigin = "spinal"\n')
    with pytest.raises(FileErrors) as excinfo:
        load_scenario(scenario)
    assert [(e.source, e.field) for e in excinfo.value.errors] == [(str(scenario), "patient.origin"),
                                                                   (str(tmp_path / "rx.toml"), "patient.origin")]
