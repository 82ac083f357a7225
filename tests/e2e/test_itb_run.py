"""End to end: ``itb run`` over a real pty, in virtual time, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hil.cli import main
from hil.report import REPORT_FILES

SHORT_FAILING = """
[scenario]
name = "short-failing"
duration_days = 2
prescription = "spinal_simple_500.toml"

[[action]]
at = "0d 09:00"
do = "implant"
label = "implant"

[[expect]]
check = "alarm_raised"
code = "motor_stall"

[[expect]]
check = "invariants_hold"
"""


def run_itb(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.setdefault("COLUMNS", "120")
    return subprocess.run([sys.executable, "-m", "hil.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=100)


def test_default_scenario_over_a_pty(tmp_path: Path) -> None:
    done = run_itb("run", "--report", str(tmp_path / "report"), "--no-progress", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASSED" in done.stdout
    report = tmp_path / "report"
    for name in (*REPORT_FILES, "serial-trace.txt"):
        assert (report / name).stat().st_size > 0, name
    summary = json.loads((report / "summary.json").read_text())
    assert summary["passed"] is True
    assert summary["scenario"] == "default"
    assert summary["link"] == "simulated NE-1000 over pty"
    assert summary["pump_url"].startswith("/dev/pts/")
    assert summary["duration_days"] == 21
    assert {"motor_stall", "reservoir_low", "therapy_interrupted"} <= set(summary["alarms_raised"])
    reasons = {r for d in summary["denials"] for r in d["reasons"]}
    assert {"TITRATION_INTERVAL", "TITRATION_CAP_EXCEEDED", "BOLUS_LOCKOUT"} <= reasons
    assert abs(summary["dose_error_pct"]) < 1
    assert summary["delivered_by_kind_ug"]["bridge"] > 0
    assert all(c["passed"] for c in summary["invariants"])
    trace = (report / "serial-trace.txt").read_text()
    assert "RAT" in trace and "DIS" in trace  # the exact bytes went over the wire
    html = (report / "report.html").read_text()
    assert "PASSED" in html and "dose24.png" in html


def test_failed_expectation_gives_exit_status_1(tmp_path: Path) -> None:
    scenario = tmp_path / "short.toml"
    scenario.write_text(SHORT_FAILING)
    code = main(["run", str(scenario), "--link", "inprocess", "--report", str(tmp_path / "r"), "--no-progress"])
    assert code == 1
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    failed = [e["name"] for e in summary["expectations"] if not e["passed"]]
    assert failed == ["alarm motor_stall raised"]


def test_real_pump_requires_real_time(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "--pump", "/dev/null-pump", "--speed", "10", "--report", str(tmp_path)])
    assert code == 2
    assert "speed" in capsys.readouterr().err


def test_unknown_scenario_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "no-such-scenario", "--report", str(tmp_path)]) == 2
    assert "shipped scenario" in capsys.readouterr().err


def test_list_shows_shipped_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--list"]) == 0
    assert "default" in capsys.readouterr().out.split()


SAFE = """
[scenario]
name = "safe"
duration_days = "0.125"
poll_interval_min = 1
prescription = "spinal_simple_500.toml"

[[action]]
at = "0d 00:30"
do = "implant"

[[expect]]
check = "alarm_not_raised"
code = "therapy_interrupted"
"""


def test_safe_mode_run_keeps_the_watchdog_fed(tmp_path: Path) -> None:
    scenario = tmp_path / "safe.toml"
    scenario.write_text(SAFE)
    code = main(["run", str(scenario), "--link", "inprocess", "--safe-mode", "180", "--report", str(tmp_path / "r"),
                 "--no-progress"])
    assert code == 0
    trace = (tmp_path / "r" / "serial-trace.txt").read_text()
    assert "53 41 46 31 38 30" in trace  # SAF180 went over the wire


def test_safe_mode_needs_polls_inside_the_watchdog_in_virtual_time(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--safe-mode", "60", "--report", str(tmp_path), "--no-progress"]) == 2
    assert "safe_mode_timeout_s" in capsys.readouterr().err
