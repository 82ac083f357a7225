"""Every cohort patient is a screened responder to the first test dose, and starts at what that record allows.

Oracle: the label (itb-clinical §1.3): test doses of 50 µg (25 µg for a child), a start at twice the
effective test dose when its effect lasted under 8 h.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cython_ext.errors import ConfigError
from cython_ext.vocabulary import Origin
from hil import cli
from hil.cmd_cohort import DEFAULT_POLICIES, DEFAULT_POPULATION
from hil.cohort.run import run_cohort

#: Twice the label's first test dose, µg/day.
LABEL_START_UG_PER_DAY = {Origin.SPINAL: 100, Origin.CEREBRAL: 100, Origin.PAEDIATRIC: 50}


def test_every_patient_is_implanted_at_twice_the_first_test_dose(protocol, small_population) -> None:
    result = run_cohort(small_population, protocol, days=1)
    assert {o.origin for o in result.outcomes} == {o.value for o in Origin}
    for outcome in result.outcomes:
        implant = next(d for d in outcome.decisions if d.action == "implant")
        assert implant.allowed
        assert implant.dose_ug_per_day == LABEL_START_UG_PER_DAY[Origin(outcome.origin)]


@pytest.mark.parametrize("origin", list(Origin))
def test_a_start_above_the_record_is_refused_before_anything_runs(protocol, small_population, origin) -> None:
    rx = protocol.prescriptions[origin]
    step = rx.programme.steps[0]
    high = dataclasses.replace(step, dose_ng_per_day=step.dose_ng_per_day + 1000)
    above = dataclasses.replace(rx, programme=dataclasses.replace(rx.programme, steps=(high, *rx.programme.steps[1:])))
    bad = dataclasses.replace(protocol, prescriptions={**protocol.prescriptions, origin: above})
    calls = []
    with pytest.raises(ConfigError) as caught:
        run_cohort(small_population, bad, days=1, progress=lambda done, total: calls.append(done))
    assert caught.value.field == f"prescriptions.{origin.value}"
    assert caught.value.value == LABEL_START_UG_PER_DAY[origin] + 1
    assert str(LABEL_START_UG_PER_DAY[origin]) in caught.value.allowed
    assert calls == []


def test_itb_cohort_refuses_a_prescription_above_the_record(tmp_path: Path, capsys) -> None:
    policies = tmp_path / "policies.toml"
    policies.write_text(DEFAULT_POLICIES.read_text(encoding="utf-8"), encoding="utf-8")
    for name in ("rx_spinal.toml", "rx_cerebral.toml", "rx_paediatric.toml"):
        text = (DEFAULT_POLICIES.parent / name).read_text(encoding="utf-8")
        if name == "rx_cerebral.toml":
            text = text.replace("\ndose_ug_per_day = 100\n", "\ndose_ug_per_day = 150\n")
        (tmp_path / name).write_text(text, encoding="utf-8")
    report = tmp_path / "report"
    status = cli.main(["cohort", str(DEFAULT_POPULATION), str(policies), "--patients", "4", "--report", str(report),
                       "--no-progress"])
    assert status == cli.ExitStatus.USAGE
    assert "prescriptions.cerebral" in capsys.readouterr().err
    assert not report.exists()
