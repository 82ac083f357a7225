"""A transferred patient's documented prior dose is held to the label's hard maximum daily dose (review 11).

The oracle is the label (itb-clinical §1.5): the highest intrathecal baclofen dose reported is
2003 µg/day, the hard upper bound of every entry of the drug library. Before the fix a scenario file
took up to 100 000 µg/day and the patient record any positive dose. Checked where a patient record is
read: the scenario file (and so ``itb run`` on the command line) and the record itself (the API every
other caller, a bench tool or the pytest plugin, builds).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.patient import History, PatientRecord
from cython_ext.errors import ConfigError
from cython_ext.vocabulary import Origin
from hil.cli import main
from hil.scenario.schema import load_scenario
from tests.scenarios import implant_scenario

#: The label's highest reported daily dose, µg/day (itb-clinical §1.5 and its table of hard limits).
LABEL_MAX_UG_PER_DAY = 2003


def _scenario(tmp_path: Path, prior_ug_per_day: int) -> Path:
    path = tmp_path / "prior.toml"
    path.write_text(implant_scenario("prior", 1, "0d 00:30").replace("prior_dose_ug_per_day = 400",
                                                                      f"prior_dose_ug_per_day = {prior_ug_per_day}"))
    return path


def test_the_record_takes_the_label_maximum_and_refuses_a_nanogram_more() -> None:
    limit_ng = LABEL_MAX_UG_PER_DAY * 1000
    record = PatientRecord("P-1", Origin.SPINAL, History.TRANSFERRED, prior_dose_ng_per_day=limit_ng)
    assert record.prior_dose_ng_per_day == limit_ng
    with pytest.raises(ConfigError) as refused:
        PatientRecord("P-1", Origin.SPINAL, History.TRANSFERRED, prior_dose_ng_per_day=limit_ng + 1)
    text = str(refused.value)
    assert "patient.prior_dose_ng_per_day" in text and str(limit_ng + 1) in text and str(limit_ng) in text


def test_a_scenario_file_takes_the_label_maximum(tmp_path: Path) -> None:
    assert load_scenario(_scenario(tmp_path, LABEL_MAX_UG_PER_DAY)).patient.prior_dose_ug_per_day == LABEL_MAX_UG_PER_DAY


@pytest.mark.parametrize("prior", [LABEL_MAX_UG_PER_DAY + 1, 5000, 100_000])
def test_a_scenario_file_above_the_label_maximum_is_refused_naming_field_value_and_range(
        tmp_path: Path, prior: int) -> None:
    with pytest.raises(ConfigError) as refused:
        load_scenario(_scenario(tmp_path, prior))
    text = str(refused.value)
    assert "patient.prior_dose_ug_per_day" in text and f"={prior}" in text
    assert f"[1, {LABEL_MAX_UG_PER_DAY}] ug/day" in text


def test_itb_run_refuses_it_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "r"
    code = main(["run", str(_scenario(tmp_path, 5000)), "--link", "inprocess", "--report", str(report),
                 "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "patient.prior_dose_ug_per_day (=5000)" in err and f"[1, {LABEL_MAX_UG_PER_DAY}]" in err
    assert not report.exists()
