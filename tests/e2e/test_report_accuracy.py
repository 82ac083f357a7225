"""The accuracy report, read back: the verdict against a limit, labelled tables, print-resolution plots, links."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hil.gravimetric.procedure import AccuracyResult, run_accuracy
from hil.gravimetric.report import STARTUP_PNG, TRUMPET_PNG, summary, write_report
from hil.gravimetric.simrig import RigSettings, simulated_accuracy_rig
from hil.report import PRINT_DPI
from tests.e2e.test_report import Page, png_geometry

BIAS_PCT = 3.0


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[AccuracyResult, Path]:
    out = tmp_path_factory.mktemp("accuracy")
    with simulated_accuracy_rig(RigSettings("mtsics", link="inprocess", seed=1, bias_pct=BIAS_PCT, noise_pct=0.5,
                                            faults=(), balance_options={"noise_ug": 5.0, "resolution_ug": 10})) as rig:
        result = run_accuracy(rig.pump_url, rig.balance_url, 1_200_000, syringe_diameter_mm=14.5, clock=rig.clock,
                              balance_driver="mtsics", report_dir=out, duration_s=3600)
    return result, out


def _page(out: Path) -> Page:
    return Page((out / "report.html").read_text(encoding="utf-8"))


def _h1(out: Path) -> str:
    text = (out / "report.html").read_text(encoding="utf-8")
    return text[text.index("<h1>"):text.index("</h1>")]


@pytest.mark.parametrize(("limit_pct", "passed", "verdict"), [(None, True, "REPORTED"), (5.0, True, "PASSED"),
                                                               (2.0, False, "FAILED")])
def test_the_verdict_follows_the_limit(measured: tuple[AccuracyResult, Path], tmp_path: Path,
                                       limit_pct: float | None, passed: bool, verdict: str) -> None:
    result, _ = measured
    data = write_report(tmp_path, result.measurement, result.analysis,
                        summary(result.measurement, result.analysis, limit_pct=limit_pct))
    on_disk = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(data))
    assert list(on_disk)[:4] == ["schema", "software", "passed", "error"]
    assert on_disk["schema"] == "itb.accuracy/1" and on_disk["passed"] is passed and on_disk["limit_pct"] == limit_pct
    # The simulated pump runs 3 % fast: the oracle for the mean error is the injected bias.
    assert on_disk["analysis"]["mean_error_pct"] == pytest.approx(BIAS_PCT, abs=0.3)
    assert verdict in _h1(tmp_path)
    overview = dict(_page(tmp_path).tables["overview"])
    assert overview["Limit on |A|"] == ("none given" if limit_pct is None else f"{limit_pct:g} %")


def test_tables_use_labels_and_units(measured: tuple[AccuracyResult, Path]) -> None:
    result, out = measured
    page = _page(out)
    overview = dict(page.tables["overview"])
    assert overview["Set rate r"] == "1.2 mL/h"
    assert overview["Sampling duration T"] == "60 min" and overview["Sampling interval S"] == "30 s"
    assert overview["Pump's dispensed counter"] == f"{result.measurement.dispensed.infused_nl / 1e6:.6f} mL"
    header, *rows = page.tables["trumpet"]
    assert header == ["Window P, min", "Flows per window p", "Windows m", "Windows used", "Ep(max), %", "Ep(min), %"]
    assert [int(r[0]) for r in rows] == [t.window_min for t in result.analysis.trumpet]
    assert [float(r[4]) for r in rows] == [round(t.max_error_pct, 3) for t in result.analysis.trumpet]
    assert all(r[1] == "pass" for r in page.tables["checks"][1:])
    assert {"samples.csv", "summary.json", "pump_trace.txt", "balance_trace.txt"} == set(page.links)
    for link in page.links:
        assert (out / link).is_file()


def test_plots_are_print_resolution(measured: tuple[AccuracyResult, Path]) -> None:
    _, out = measured
    for name in (STARTUP_PNG, TRUMPET_PNG):
        assert round(png_geometry(out / name)[2]) == PRINT_DPI
    assert _page(out).images == [TRUMPET_PNG, STARTUP_PNG]


def test_a_refused_run_shows_why_and_no_number(tmp_path: Path) -> None:
    from hil.gravimetric.analysis import InsufficientDataError

    balance = {"noise_ug": 5.0, "resolution_ug": 10}
    with simulated_accuracy_rig(RigSettings("mtsics", link="inprocess", seed=0, bias_pct=0.0, noise_pct=0.0,
                                            faults=("stall:at=300",), balance_options=balance)) as rig:
        with pytest.raises(InsufficientDataError):
            run_accuracy(rig.pump_url, rig.balance_url, 1_200_000, syringe_diameter_mm=14.5, clock=rig.clock,
                         balance_driver="mtsics", report_dir=tmp_path, duration_s=600)
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["passed"] is False and summary["result"] == "refused" and "analysis" not in summary
    assert summary["error"]["type"] == "InsufficientDataError" and summary["error"]["exit_status"] == 3
    page = _page(tmp_path)
    assert "REFUSED" in _h1(tmp_path) and page.images == []
    assert "Overall mean error A" not in dict(page.tables["overview"])
