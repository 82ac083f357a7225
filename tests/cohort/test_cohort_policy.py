"""Policy files: the shipped one loads; any bad field is refused by name, and nothing runs."""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cython_ext.errors import ConfigError
from hil import cli
from hil.cmd_cohort import DEFAULT_POLICIES, DEFAULT_POPULATION
from hil.cohort.policy import protocol_from_dict

BASE = tomllib.loads(DEFAULT_POLICIES.read_text(encoding="utf-8"))
BASE_DIR = DEFAULT_POLICIES.parent

#: (path into the document, a bad value, the field the error must name).
BAD = [
    (("policy", 0, "step_pct"), 0, "policy[0].step_pct"),
    (("policy", 0, "step_pct"), 101, "policy[0].step_pct"),
    (("policy", 0, "step_pct"), 12.5, "policy[0].step_pct"),
    (("policy", 0, "target_ashworth"), math.nan, "policy[0].target_ashworth"),
    (("policy", 0, "target_ashworth"), 4.0, "policy[0].target_ashworth"),
    (("policy", 0, "decrease_below_ashworth"), 2.5, "policy[0].decrease_below_ashworth"),
    (("policy", 0, "bolus_above_ashworth"), 1.0, "policy[0].bolus_above_ashworth"),
    (("policy", 0, "bolus_ug"), math.inf, "policy[0].bolus_ug"),
    (("policy", 0, "interval_h"), -24, "policy[0].interval_h"),
    (("policy", 1, "decision_hour"), 24, "policy[1].decision_hour"),
    (("policy", 1, "refill_below_ml"), 0, "policy[1].refill_below_ml"),
    (("policy", 1, "decrease_on_sedation"), "yes", "policy[1].decrease_on_sedation"),
    (("policy", 1, "name"), "", "policy[1].name"),
    (("policy", 0, "surprise"), 1, "policy[0].surprise"),
    (("cohort", "days"), 0, "cohort.days"),
    (("cohort", "weeks"), 3, "cohort.weeks"),
    (("prescriptions", "spinal"), "rx_cerebral.toml", "prescriptions.spinal"),
    (("extra",), {}, "extra"),
]


def _with(path: tuple, value) -> dict:
    doc = copy.deepcopy(BASE)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def test_the_shipped_policy_file_loads(protocol) -> None:
    assert [p.name for p in protocol.policies] == ["steady-12pct", "fast-25pct"]
    assert protocol.policies[0].bolus_ng == 25_000 and protocol.policies[1].bolus_above_ashworth is None
    assert {o.value: rx.patient.origin.value for o, rx in protocol.prescriptions.items()} == \
        {"spinal": "spinal", "cerebral": "cerebral", "paediatric": "paediatric"}


@pytest.mark.parametrize(("path", "value", "field"), BAD)
def test_a_bad_field_is_refused_by_name(path, value, field) -> None:
    with pytest.raises(ConfigError) as info:
        protocol_from_dict(_with(path, value), base_dir=BASE_DIR)
    assert info.value.field == field


def test_a_missing_field_is_refused_by_name() -> None:
    doc = copy.deepcopy(BASE)
    del doc["policy"][0]["step_pct"]
    with pytest.raises(ConfigError) as info:
        protocol_from_dict(doc, base_dir=BASE_DIR)
    assert info.value.field == "policy[0].step_pct"


@given(st.floats(allow_nan=True, allow_infinity=True))
def test_a_target_is_taken_exactly_when_it_lies_inside_the_score(value) -> None:
    ok = math.isfinite(value) and 0 < value < 4 and value > BASE["policy"][0]["decrease_below_ashworth"] \
        and value < BASE["policy"][0]["bolus_above_ashworth"]
    doc = _with(("policy", 0, "target_ashworth"), value)
    if ok:
        assert protocol_from_dict(doc, base_dir=BASE_DIR).policies[0].target_ashworth == value
    else:
        with pytest.raises(ConfigError):
            protocol_from_dict(doc, base_dir=BASE_DIR)


@given(st.integers(min_value=1_000, max_value=2_000_000), st.integers(min_value=1, max_value=100))
def test_a_step_up_is_the_percentage_to_the_whole_ug_and_never_nothing(dose_ng, pct) -> None:
    policy = protocol_from_dict(_with(("policy", 0, "step_pct"), pct), base_dir=BASE_DIR).policies[0]
    up = policy.increased_dose_ng_per_day(dose_ng)
    assert up % 1000 == 0 and up > dose_ng
    assert up <= max(dose_ng * (100 + pct) / 100, (dose_ng // 1000 + 1) * 1000)
    down = policy.decreased_dose_ng_per_day(dose_ng)
    assert down % 1000 == 0 and down >= dose_ng * (100 - policy.decrease_pct) / 100 - 1e-9


def test_choose_asks_in_the_documented_order(protocol) -> None:
    policy = protocol.policies[0]
    asks = policy.choose(np.array([3.8, 3.8, 1.0, 0.2, 3.0]), np.array([False, True, False, False, False]),
                         np.array([True, True, False, True, True]), np.array([1e7, 1e7, 1e7, 1e7, 3e6]))
    assert asks["increase"].tolist() == [True, False, False, False, True]
    assert asks["decrease"].tolist() == [False, True, False, True, False]
    assert asks["bolus"].tolist() == [True, False, False, False, False]
    assert asks["refill"].tolist() == [False, False, False, False, True]


@pytest.mark.parametrize("which", ["population", "policies"])
def test_itb_cohort_refuses_a_bad_file_and_runs_nothing(tmp_path: Path, which: str, capsys) -> None:
    population = tmp_path / "population.toml"
    policies = tmp_path / "policies.toml"
    population.write_text(DEFAULT_POPULATION.read_text(encoding="utf-8"), encoding="utf-8")
    policies.write_text(DEFAULT_POLICIES.read_text(encoding="utf-8"), encoding="utf-8")
    for name in ("rx_spinal.toml", "rx_cerebral.toml", "rx_paediatric.toml"):
        (tmp_path / name).write_text((BASE_DIR / name).read_text(encoding="utf-8"), encoding="utf-8")
    if which == "population":
        population.write_text(population.read_text(encoding="utf-8").replace("sigma_log = 0.46", "sigma_log = nan"),
                              encoding="utf-8")
        field = "parameters.csf_clearance_ml_per_h.sigma_log"
    else:
        policies.write_text(policies.read_text(encoding="utf-8").replace("step_pct = 12", "step_pct = 12\nstep = 1"),
                            encoding="utf-8")
        field = "policy[0].step"
    report = tmp_path / "report"
    status = cli.main(["cohort", str(population), str(policies), "--report", str(report), "--no-progress"])
    assert status == cli.ExitStatus.USAGE
    assert field in capsys.readouterr().err
    assert not report.exists()


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    from cython_ext.fields import FileErrors

    for name in ("rx_spinal.toml", "rx_cerebral.toml", "rx_paediatric.toml"):
        (tmp_path / name).write_text((BASE_DIR / name).read_text(encoding="utf-8"), encoding="utf-8")
    text = DEFAULT_POLICIES.read_text(encoding="utf-8").replace("step_pct = 12", "step_pct = 0") \
        .replace("decision_hour = 9\ntarget_ashworth = 2.0\nstep_pct = 25", "decision_hour = 25\n"
                 "target_ashworth = 2.0\nstep_pct = 25")
    (tmp_path / "policies.toml").write_text(text, encoding="utf-8")
    from hil.cohort.policy import load_protocol

    with pytest.raises(FileErrors) as info:
        load_protocol(tmp_path / "policies.toml")
    assert [e.field for e in info.value.errors] == ["policy[0].step_pct", "policy[1].decision_hour"]
    assert all(e.line for e in info.value.errors)


def test_the_cli_bounds_are_the_loaders() -> None:
    from hil import cmd_cohort
    from hil.cohort import policy, run
    from sim import population

    assert (cmd_cohort.MAX_DAYS, cmd_cohort.MAX_PATIENTS, cmd_cohort.MAX_WORKERS) == \
        (policy.MAX_DAYS, population.MAX_POPULATION, run.MAX_WORKERS)
    with pytest.raises(SystemExit) as info:
        cli.main(["cohort", "--workers", "0"])
    assert info.value.code == cli.ExitStatus.USAGE
