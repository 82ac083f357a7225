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
