"""Every cohort patient is a screened responder to the first test dose, and starts at what that record allows.

Oracle: the label (itb-clinical §1.3): test doses of 50 µg (25 µg for a child), a start at twice the
effective test dose when its effect lasted under 8 h.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from controller.signing import SignatureError
from cython_ext.errors import ConfigError
from cython_ext.vocabulary import Origin
from hil import cli
from hil.cmd_cohort import DEFAULT_POPULATION
from hil.cohort.policy import load_protocol
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


def _raise_start(sign_into, policy_dir: Path, origin: Origin, dose_ug_per_day: int) -> None:
    """Re-sign ``origin``'s prescription in ``policy_dir`` with another starting dose."""
    path = policy_dir.with_name(f"rx_{origin.value}.toml")
    old = f"\ndose_ug_per_day = {LABEL_START_UG_PER_DAY[origin]}\n"
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1
    sign_into(path, text.replace(old, f"\ndose_ug_per_day = {dose_ug_per_day}\n"))


@pytest.mark.parametrize("origin", list(Origin))
def test_a_start_above_the_record_is_refused_before_anything_runs(sign_into, policy_dir, small_population,
                                                                    origin) -> None:
    _raise_start(sign_into, policy_dir, origin, LABEL_START_UG_PER_DAY[origin] + 1)
    calls = []
    with pytest.raises(ConfigError) as caught:
        run_cohort(small_population, load_protocol(policy_dir), days=1,
                   progress=lambda done, total: calls.append(done))
    assert caught.value.field == f"prescriptions.{origin.value}"
    assert caught.value.value == LABEL_START_UG_PER_DAY[origin] + 1
    assert f"at most {LABEL_START_UG_PER_DAY[origin]} µg/day" in caught.value.allowed
    assert calls == []


def test_a_start_below_the_record_runs(sign_into, policy_dir, small_population) -> None:
    _raise_start(sign_into, policy_dir, Origin.SPINAL, 80)
    result = run_cohort(dataclasses.replace(small_population, size=4), load_protocol(policy_dir), days=1)
    spinal = [o for o in result.outcomes if o.origin == "spinal"]
    assert spinal and all(next(d for d in o.decisions if d.action == "implant").dose_ug_per_day == 80 for o in spinal)


def test_itb_cohort_refuses_a_prescription_above_the_record(sign_into, policy_dir, capsys) -> None:
    _raise_start(sign_into, policy_dir, Origin.CEREBRAL, 150)
    report = policy_dir.parent / "report"
    status = cli.main(["cohort", str(DEFAULT_POPULATION), str(policy_dir), "--patients", "4", "--report",
                       str(report), "--no-progress"])
    assert status == cli.ExitStatus.USAGE
    assert "prescriptions.cerebral" in capsys.readouterr().err
    assert not report.exists()


@pytest.mark.parametrize("tamper", ["unsigned", "changed"])
def test_a_prescription_the_trust_store_refuses_runs_nothing(policy_dir, small_population, tamper) -> None:
    path = policy_dir.with_name("rx_paediatric.toml")
    if tamper == "unsigned":
        path.with_name(path.name + ".sig").unlink()
        reason = "UNSIGNED"
    else:  # a changed number, the signature of the old bytes
        text = path.read_text(encoding="utf-8")
        path.write_text(text.replace("max_dose_ug_per_day = 500", "max_dose_ug_per_day = 600"), encoding="utf-8")
        reason = "CONTENT_CHANGED"
    calls = []
    with pytest.raises(SignatureError) as caught:
        run_cohort(small_population, load_protocol(policy_dir), days=1, progress=lambda d, t: calls.append(d))
    assert caught.value.reason.value == reason and calls == []
