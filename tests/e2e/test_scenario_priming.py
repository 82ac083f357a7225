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

SCENARIO = '''[scenario]
name = "priming-cut-short"
description = "A stall ten minutes into the priming bolus; the clinician re-primes the rest of the catheter."
duration_days = 3
poll_interval_min = 30
seed = 5
prescription = "spinal_simple_500.toml"

[patient]
history = "transferred"
prior_dose_ug_per_day = 400

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
