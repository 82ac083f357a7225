"""The scenario action ``prime``: a priming cut short by a stall is alarmed, and the clinician re-primes (BOL-06, issue #9).

Run through ``itb run``'s runner on the simulated NE-1000 (in process), judged by the scenario's own expectations
and the run's safety invariants.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cython_ext.fields import FileErrors
from hil.scenario import RunOptions, ScenarioRunner
from hil.scenario.schema import PRESCRIPTION_DIR, parse_scenario

#: The transferred patient on the 500 ug/day spinal prescription that both scenarios here start from.
SETTING = '''poll_interval_min = 30
seed = 5
prescription = "spinal_simple_500.toml"

[patient]
history = "transferred"
prior_dose_ug_per_day = 400
'''

SCENARIO = '''[scenario]
name = "priming-cut-short"
description = "A stall ten minutes into the priming bolus; the clinician re-primes the rest of the catheter."
duration_days = 3
''' + SETTING + '''
[pump]
syringe_diameter_mm = "4.699"

[[action]]
at = "0d 09:00"
do = "implant"
label = "implant"

[[action]]
at = "0d 09:10"
do = "fault"
kind = "stall"

[[action]]
at = "0d 09:50"
do = "clear_fault"
kind = "stall"

[[action]]
at = "0d 10:00"
do = "acknowledge_alarms"
label = "resume"

[[action]]
at = "0d 11:00"
do = "acknowledge_alarms"

[[action]]
at = "0d 11:05"
do = "prime"
label = "re-prime"

[[action]]
at = "0d 12:00"
do = "prime"
label = "nothing-left"

[[expect]]
check = "alarm_raised"
code = "catheter_not_primed"

[[expect]]
check = "allowed"
action = "re-prime"

[[expect]]
check = "denied"
action = "nothing-left"
reason = "NOTHING_TO_PRIME"

[[expect]]
check = "invariants_hold"
'''


def test_a_stalled_priming_is_alarmed_and_the_re_prime_is_allowed_once() -> None:
    record = ScenarioRunner(parse_scenario(SCENARIO, base_dir=PRESCRIPTION_DIR), RunOptions(link="inprocess")).run()
    failed = [c.name for c in (*record.invariants, *record.expectations, *record.implicit_checks) if not c.passed]
    assert record.passed, failed


@pytest.mark.parametrize("bad", ['duration_min = 0', 'duration_min = 2000', 'volume_ml = 0.1'])
def test_the_prime_action_is_strict(bad: str) -> None:
    text = SCENARIO.replace('do = "prime"\nlabel = "re-prime"', f'do = "prime"\nlabel = "re-prime"\n{bad}')
    with pytest.raises(FileErrors) as refused:
        parse_scenario(text, base_dir=Path(PRESCRIPTION_DIR))
    assert bad.split(" =")[0] in str(refused.value)


def test_a_prescription_above_the_transfer_record_is_refused_naming_the_rule() -> None:
    """Issue #9 ("a prescription that asks for more than the record allows is refused with an error that names
    the rule"), itb-clinical §1.3: the file asks 400 µg/day for a patient transferred at 100 µg/day. Through the
    Python front door (the runner drives :mod:`controller.assembly`) and as ``itb run`` judges it (the run fails)."""
    text = SCENARIO.replace("prior_dose_ug_per_day = 400", "prior_dose_ug_per_day = 100")
    record = ScenarioRunner(parse_scenario(text, base_dir=PRESCRIPTION_DIR), RunOptions(link="inprocess")).run()
    implant = next(d for d in record.decisions if d.label == "implant")
    assert not implant.allowed and implant.reasons[0] == "IMPLANT_DOSE_ABOVE_RECORD", implant
    assert "400 µg/day is above 100 µg/day, the documented dose of the replaced pump" in implant.detail, implant
    assert not record.passed


def test_itb_run_refuses_a_prescription_above_the_record_with_exit_status_1(tmp_path: Path) -> None:
    """The same through ``itb run`` on a scenario file and its prescription: exit status 1, the rule named."""
    import subprocess
    import sys

    scenario = tmp_path / "above-record.toml"
    scenario.write_text(SCENARIO.replace("prior_dose_ug_per_day = 400", "prior_dose_ug_per_day = 100"),
                        encoding="utf-8")
    itb = Path(sys.executable).with_name("itb")
    done = subprocess.run([str(itb), "run", str(scenario), "--report", str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stderr
    assert "IMPLANT_DOSE_ABOVE_RECORD" in done.stdout, done.stdout


CATHETER_SCENARIO = '''[scenario]
name = "catheter-at-implant"
duration_days = 2
''' + SETTING + '''
[[action]]
at = "0d 09:00"
do = "implant"
label = "implant"
'''


def _run(implant_keys: str) -> object:
    text = CATHETER_SCENARIO + implant_keys + "\n"
    return ScenarioRunner(parse_scenario(text, base_dir=PRESCRIPTION_DIR), RunOptions(link="inprocess")).run()


def test_a_drug_filled_catheter_delivers_at_the_tip_from_the_start_without_priming() -> None:
    """BOL-06, issue #9: ``catheter = "drug"`` (kept from the replaced pump): the simulator's catheter starts full
    of drug, no priming bolus runs, no alarm, and everything the mechanism pushed reached the tip."""
    record = _run('catheter = "drug"')
    implant = next(d for d in record.decisions if d.label == "implant")
    assert implant.allowed and 'catheter = "drug"' in implant.detail, implant
    summary = record.summary()
    assert not summary["boluses"] and "catheter_not_primed" not in summary["alarms_raised"], summary["alarms_raised"]
    assert summary["delivered_at_tip_ug"] == pytest.approx(summary["delivered_ug"], abs=0.01), summary


def test_a_saline_catheter_left_unprimed_is_alarmed_and_holds_the_dead_volume_back() -> None:
    """BOL-06, ALM-01, issue #9: ``prime = false`` on the default (saline) catheter: CATHETER_NOT_PRIMED, the implant
    not complete (denied), and the simulator's tip gets the pushed volume less the 0.25 mL dead volume of saline."""
    record = _run("prime = false")
    implant = next(d for d in record.decisions if d.label == "implant")
    assert not implant.allowed and implant.reasons == ("CATHETER_NOT_PRIMED",), implant
    assert "holds no drug" in implant.detail, implant
    summary = record.summary()
    assert "catheter_not_primed" in summary["alarms_raised"], summary["alarms_raised"]
    saline_ug = 250_000 * 500 / 1e9 * 1000  # 0.25 mL at 500 µg/mL, µg
    assert summary["delivered_ug"] - summary["delivered_at_tip_ug"] == pytest.approx(saline_ug, abs=0.5), summary


@pytest.mark.parametrize("keys, field, words", [
    ('catheter = "water"', "action[0].catheter", "['saline', 'drug']"),
    ("catheter = 1", "action[0].catheter", "['saline', 'drug']"),
    ('catheter = "drug"\nprime = true', "action[0].prime", 'catheter = "drug"'),
])
def test_the_catheter_key_is_strict(keys: str, field: str, words: str) -> None:
    """VAL-01: the field, the value and the allowed values; a priming of a drug-filled catheter is refused
    at parse time, before the run, naming why (an overdose)."""
    with pytest.raises(FileErrors) as refused:
        parse_scenario(CATHETER_SCENARIO + keys + "\n", base_dir=Path(PRESCRIPTION_DIR))
    message = str(refused.value)
    assert field in message and words in message, message
