"""After a concentration change the report tells the dose at the tip from the drug out of the reservoir (review 11, c1).

120 µg/day (``spinal_low_dose_2000.toml``: 2000 µg/mL, a 0.1 mL catheter) is implanted at 01:00 with
the catheter already full of drug, and refilled with 500 µg/mL a day later; the run lasts four days.
Computed here from those facts alone (the label arithmetic, not the runner):

* the prescription asks for 120 µg/day over the 95 h from implant to end: **475 µg** at the tip,
  and the controller keeps the tip there (the old drug crosses at its own rate);
* the pump moves, out of the reservoir, 24 h x 2.5 µL/h of 2000 µg/mL (120 µg), then the catheter's
  100 µL at 2.5 µL/h (40 h) and 31 h x 10 µL/h, both of 500 µg/mL (50 + 155 µg): **325 µg**.

Before the fix the report's one "dose delivered / prescribed" row said 325 / 325 µg, and the summary
had no prescription-side figure at the tip at all.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hil.cli import main

PRESCRIBED_AT_TIP_UG = 120 * 95 / 24
OUT_OF_RESERVOIR_UG = 24 * 2.5 * 2 + 100 * 0.5 + 31 * 10 * 0.5

SCENARIO = """
[scenario]
name = "tip-after-a-decrease"
duration_days = 4
poll_interval_min = 30
prescription = "spinal_low_dose_2000.toml"

[patient]
history = "transferred"
prior_dose_ug_per_day = 120

[[action]]
at = "0d 01:00"
do = "implant"
catheter = "drug"

[[action]]
at = "1d 01:00"
do = "refill"
removed_ml = "19.9"
added_ml = 20
concentration_ug_per_ml = 500
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    tmp = tmp_path_factory.mktemp("tip")
    (tmp / "s.toml").write_text(SCENARIO)
    report = tmp / "r"
    args = ["run", str(tmp / "s.toml"), "--link", "inprocess", "--report", str(report), "--no-progress"]
    assert main(args) == 0
    return json.loads((report / "summary.json").read_text()), (report / "report.html").read_text()


def test_the_summary_gives_the_prescription_s_dose_at_the_tip_beside_what_reached_it(run: tuple[dict, str]) -> None:
    summary, _ = run
    assert summary["prescribed_at_tip_ug"] == pytest.approx(PRESCRIBED_AT_TIP_UG, abs=0.1)
    assert summary["delivered_at_tip_ug"] == pytest.approx(PRESCRIBED_AT_TIP_UG, rel=0.01)
    assert abs(summary["dose_at_tip_error_pct"]) < 1


def test_the_reservoir_figures_keep_their_meaning_and_are_not_the_tip_dose(run: tuple[dict, str]) -> None:
    summary, _ = run
    assert summary["delivered_ug"] == pytest.approx(OUT_OF_RESERVOIR_UG, rel=0.01)
    assert summary["prescribed_ug"] == pytest.approx(OUT_OF_RESERVOIR_UG, rel=0.01)
    assert summary["delivered_ug"] < 0.75 * summary["prescribed_at_tip_ug"]


def test_the_report_labels_each_side_so_the_reservoir_figure_cannot_be_read_as_the_dose(
        run: tuple[dict, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, html = run
    monkeypatch.setenv("COLUMNS", "200")  # one table row per line
    assert "Prescribed to reach the patient" in html and f"{PRESCRIBED_AT_TIP_UG:.1f} µg" in html
    assert "out of the reservoir" in html and "Dose delivered<" not in html
    (tmp_path / "s.toml").write_text(SCENARIO)
    assert main(["run", str(tmp_path / "s.toml"), "--link", "inprocess", "--report", str(tmp_path / "r"),
                 "--no-progress"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "dose at the catheter tip / prescribed" in out and f"/ {PRESCRIBED_AT_TIP_UG:.1f} µg" in out
    assert "reservoir drug moved / commanded" in out and "dose delivered / prescribed" not in out
