"""Scenarios that name a prescription file: the prescription is the single source of the therapy settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.prescription import load_prescription
from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_H
from hil.scenario import (
    PRESCRIPTION_DIR,
    RunOptions,
    ScenarioRunner,
    load_scenario,
    parse_scenario,
)
from tests.scenarios import implant_scenario

HEAD = """
[scenario]
name = "rx"
duration_days = 3
prescription = "{rx}"
"""

TRANSFERRED = """
[patient]
history = "transferred"
prior_dose_ug_per_day = 400
"""

IMPLANT = """
[[action]]
at = "0d 09:00"
do = "implant"
label = "implant"
catheter = "drug"
"""


def scenario_text(rx: str = "spinal_simple_500.toml", *extra: str) -> str:
    return HEAD.format(rx=rx) + "\n".join(extra) + "\n"


def test_default_scenario_takes_its_therapy_from_its_prescription() -> None:
    sc = load_scenario("default")
    rx = load_prescription(PRESCRIPTION_DIR / "spinal_screened_150_500.toml")
    assert sc.prescription == rx
    assert sc.patient.origin == "spinal"
    assert sc.pump.reservoir_capacity_nl == 20_000_000
    t = sc.therapy
    assert (t.max_dose_ug_per_day, t.minimum_rate_nl_per_h, t.max_bolus_ug, t.bolus_lockout_ms,
            t.max_boluses_per_day, t.dead_volume_nl) == (1000, 2000, 50, 4 * MS_PER_H, 4, 250_000)
    assert t.refill_tolerance_pct == 20  # kept in [therapy]: a prescription cannot express it


@pytest.mark.parametrize("extra, field", [
    ('[patient]\norigin = "spinal"', "patient.origin"),
    ("[pump]\nreservoir_ml = 20", "pump.reservoir_ml"),
    ("[therapy]\nmax_dose_ug_per_day = 600", "therapy.max_dose_ug_per_day"),
    ('[therapy]\nminimum_rate_ml_per_day = "0.048"', "therapy.minimum_rate_ml_per_day"),
    ("[therapy]\nbolus_lockout_h = 4", "therapy.bolus_lockout_h"),
    (IMPLANT + "concentration_ug_per_ml = 500", "action[0].concentration_ug_per_ml"),
    (IMPLANT + "fill_ml = 10", "action[0].fill_ml"),
    (IMPLANT + "dose_ug_per_day = 400", "action[0].dose_ug_per_day"),
])
def test_the_same_setting_given_twice_is_rejected(extra: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_scenario(scenario_text("spinal_simple_500.toml", extra))
    assert info.value.field == field
    assert "prescription" in str(info.value)


def test_what_a_prescription_cannot_express_stays_in_therapy() -> None:
    sc = parse_scenario(scenario_text("spinal_simple_500.toml", "[therapy]\ndrift_tolerance_pct = 3\n"
                                                                "unconfirmed_alarm_h = 1"))
    assert sc.therapy.drift_tolerance_pct == 3 and sc.therapy.unconfirmed_alarm_ms == MS_PER_H
    assert sc.therapy.max_dose_ug_per_day == 600  # from the prescription


def test_prescription_is_found_beside_the_scenario_first(tmp_path: Path) -> None:
    text = (PRESCRIPTION_DIR / "spinal_simple_500.toml").read_text(encoding="utf-8")
    (tmp_path / "spinal_simple_500.toml").write_text(text.replace("max_dose_ug_per_day = 600",
                                                                  "max_dose_ug_per_day = 700"), encoding="utf-8")
    path = tmp_path / "local.toml"
    path.write_text(scenario_text("spinal_simple_500.toml"), encoding="utf-8")
    assert load_scenario(path).therapy.max_dose_ug_per_day == 700
    (tmp_path / "spinal_simple_500.toml").unlink()
    assert load_scenario(path).therapy.max_dose_ug_per_day == 600  # then the shipped folder


def test_missing_prescription_is_rejected() -> None:
    with pytest.raises(ConfigError) as info:
        parse_scenario(scenario_text("no-such-prescription.toml"))
    assert info.value.field == "scenario.prescription"


def test_a_periodic_bolus_prescription_is_refused_with_a_clear_reason() -> None:
    """The loop now delivers periodic boluses: such a prescription parses and keeps its periodic boluses
    (delivery is tested in test_scenario_periodic.py)."""
    scenario = parse_scenario(scenario_text("paediatric_periodic_500.toml"))
    assert scenario.prescription.programme.mode.value == "periodic"
    assert len(scenario.prescription.kernel_periodic_boluses()) == 2


def test_patient_bolus_configuration_comes_from_the_prescription() -> None:
    action = '[[action]]\nat = "1d 09:00"\ndo = "configure_patient_bolus"'
    with pytest.raises(ConfigError) as info:  # spinal_simple_500 prescribes no patient bolus
        parse_scenario(scenario_text("spinal_simple_500.toml", action))
    assert info.value.field == "action[0].do"
    with pytest.raises(ConfigError) as info:
        parse_scenario(scenario_text("spinal_screened_150_500.toml", action + "\ndose_ug = 25"))
    assert info.value.field == "action[0].dose_ug"
    assert parse_scenario(scenario_text("spinal_screened_150_500.toml", action)).actions[0].do == \
        "configure_patient_bolus"


def test_without_a_prescription_the_implant_must_name_drug_and_fill() -> None:
    with pytest.raises(ConfigError) as info:
        parse_scenario('[scenario]\nname = "m"\n' + IMPLANT)
    assert info.value.field == "action[0].concentration_ug_per_ml"


def test_run_follows_the_prescription_caps() -> None:
    """spinal_simple_500: 400 ug/day at 500 ug/mL, cap 600 ug/day, clinician boluses at most 2 a day."""
    text = scenario_text("spinal_simple_500.toml", TRANSFERRED, IMPLANT, """
[[action]]
at = "1d 10:00"
do = "titrate"
label = "over-cap"
dose_ug_per_day = 700

[[action]]
at = "1d 11:00"
do = "titrate"
label = "within-cap"
dose_ug_per_day = 500

[[expect]]
check = "denied"
action = "over-cap"

[[expect]]
check = "allowed"
action = "within-cap"
""")
    record = ScenarioRunner(parse_scenario(text), RunOptions(link="inprocess")).run()
    assert not record.error, record.error
    assert record.passed, [(c.name, c.detail) for c in (*record.invariants, *record.expectations) if not c.passed]
    rates = {s.rate_nl_per_h for s in record.samples}
    assert {33_330, 41_670} <= rates  # 400 then 500 ug/day at 500 ug/mL (as the pump represents them)


def test_a_prescription_with_an_unoverridden_soft_limit_breach_is_refused(tmp_path: Path) -> None:
    text = (PRESCRIPTION_DIR / "cerebral_refill_400_2000.toml").read_text(encoding="utf-8")
    (tmp_path / "rx.toml").write_text(text[:text.index("[[soft_limit_overrides]]")], encoding="utf-8")
    path = tmp_path / "s.toml"
    path.write_text(scenario_text("rx.toml"), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_scenario(path)
    assert info.value.field == "titration.max_dose_ug_per_day"


def test_the_prescription_in_effect_is_journalled(tmp_path: Path) -> None:
    from controller.journal import Journal
    from sim.clock import VirtualClock

    sc = parse_scenario(scenario_text("spinal_simple_500.toml", TRANSFERRED, IMPLANT))
    record = ScenarioRunner(sc, RunOptions(link="inprocess", report_dir=tmp_path)).run()
    assert not record.error, record.error
    with Journal(tmp_path / "journal.sqlite", VirtualClock()) as journal:
        assert journal.last_prescription() == sc.prescription


OVER_DELIVERING = implant_scenario("over-delivering", 4, "0d 09:00", extra="""
[pump]
bias_pct = {bias}
""")


def test_an_over_delivering_mechanism_shows_in_the_patient_not_only_in_the_counter() -> None:
    """The patient model receives what the mechanism pushed through the catheter (issues #10, #12).

    The oracle is the simulated mechanism's own volume, pushed through the physical catheter: with a
    +25 % bias, 25 % more drug reaches the tip than the controller's reconciliation believes, and the
    patient's CSF level shows it.
    """
    runs = {}
    for bias in (0, 25):
        scenario = parse_scenario(OVER_DELIVERING.format(bias=bias), base_dir=PRESCRIPTION_DIR)
        runs[bias] = ScenarioRunner(scenario, RunOptions(link="inprocess")).run()
    exact, over = runs[0], runs[25]
    believed = sum(over.delivered_by_kind_ug.values())
    assert exact.delivered_at_tip_ug == pytest.approx(sum(exact.delivered_by_kind_ug.values()), rel=0.01)
    assert over.delivered_at_tip_ug == pytest.approx(1.25 * believed, rel=0.02)
    assert over.patient["effect_ng_per_ml_final"] > 1.2 * exact.patient["effect_ng_per_ml_final"]
