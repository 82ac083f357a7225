"""``itb run oral-vs-intrathecal``: the two arms against the literature's ratios and against mass balance.

Bands: "about 1/100" (dose [MEDSCAPE-ITB], plasma [DRUGLIB-DESC]) is a rule of thumb to
one significant figure, so a ratio passes within a factor of 3 of it (1/300 to 1/33),
the band of :data:`hil.oral_vs_intrathecal.ABOUT_1_IN_100`. The plasma levels are also
checked against mass balance, which knows nothing of our compartments: at a steady
state, mean plasma = absorbed dose rate / plasma clearance, with the clearance
ln 2 / half-life x volume (all of an intrathecal dose leaves the CSF into blood; a
share ``oral_bioavailability`` of a tablet is absorbed).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hil import cli
from hil.oral_vs_intrathecal import ABOUT_1_IN_100, run_comparison

DAYS = 16


@pytest.fixture(scope="module", params=[(0, 0.0), (3, 0.25)], ids=["reference-adult", "varied-patient"])
def comparison(request):
    seed, cv = request.param
    return run_comparison(days=DAYS, seed=seed, variability_cv=cv, link="inprocess")


def _mass_balance_plasma_ng_per_ml(parameters, absorbed_ug_per_day: float) -> float:
    clearance_ml_per_h = math.log(2) / parameters.plasma_half_life_h * parameters.plasma_volume_l_per_kg \
        * parameters.weight_kg * 1000
    return absorbed_ug_per_day * 1000 / 24 / clearance_ml_per_h


def test_the_ratios_are_about_1_in_100(comparison) -> None:
    low, high = ABOUT_1_IN_100
    ratios = comparison.ratios()
    assert low <= ratios["dose"] <= high
    assert low <= ratios["plasma"] <= high
    assert ratios["csf"] > 1  # the intrathecal route puts the drug where it acts
    assert ratios["side_effects"] < 0.2  # and keeps it from the brain's blood supply
    assert comparison.passed and comparison.record.passed


def test_the_arms_match_tone_and_the_doses_are_the_prescribed_ones(comparison) -> None:
    oral, it = comparison.oral.last_day(), comparison.intrathecal.last_day()
    assert oral["dose_ug_per_day"] == 60_000  # 20 mg three times a day
    assert it["dose_ug_per_day"] == round(comparison.target_ug_per_day)
    assert it["ashworth"] == pytest.approx(oral["ashworth"], abs=0.05)


def test_plasma_levels_follow_mass_balance(comparison) -> None:
    p = comparison.parameters
    oral, it = comparison.oral.last_day(), comparison.intrathecal.last_day()
    assert oral["plasma_ng_per_ml"] == pytest.approx(
        _mass_balance_plasma_ng_per_ml(p, 60_000 * p.oral_bioavailability), rel=0.05)
    assert it["plasma_ng_per_ml"] == pytest.approx(_mass_balance_plasma_ng_per_ml(p, it["dose_ug_per_day"]), rel=0.05)


def test_itb_run_writes_the_comparison(tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert cli.main(["run", "oral-vs-intrathecal", "--link", "inprocess", "--days", str(DAYS), "--report",
                     str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["schema"] == "itb.comparison/1" and summary["passed"] is True
    assert all(summary["checks"].values())
    ratios = summary["ratios"]
    assert ratios["dose"] == pytest.approx(summary["intrathecal_last_day"]["dose_ug_per_day"] / 60_000)
    page = (out / "report.html").read_text(encoding="utf-8")
    for name in ("dose.png", "csf.png", "plasma.png", "tone.png", "side_effects.png"):
        assert f"src='{name}'" in page and (out / name).read_bytes()[:4] == b"\x89PNG"
    assert (out / "intrathecal" / "report.html").is_file() and (out / "intrathecal" / "summary.json").is_file()
    rows = (out / "timeseries.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("arm,t_h") and sum(r.startswith("oral,") for r in rows) == DAYS * 24


def test_itb_run_lists_it_and_refuses_a_real_pump(capsys) -> None:
    assert cli.main(["run", "--list"]) == 0
    assert "oral-vs-intrathecal" in capsys.readouterr().out.split()
    assert cli.main(["run", "oral-vs-intrathecal", "--pump", "/dev/ttyUSB0"]) == cli.ExitStatus.USAGE
