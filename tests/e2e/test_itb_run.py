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
from tests.scenarios import implant_scenario

SHORT_FAILING = implant_scenario("short-failing", 2, "0d 09:00", label="implant", extra="""
[[expect]]
check = "alarm_raised"
code = "motor_stall"

[[expect]]
check = "invariants_hold"
""")


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
    assert "bridge" not in summary["delivered_by_kind_ug"]  # the concentration change adds no bolus
    transit = [c for c in summary["expectations"] if "transits held the tip dose" in c["name"]]
    assert len(transit) == 1 and transit[0]["passed"], transit
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


SAFE = implant_scenario("safe", "0.125", "0d 00:30", poll_interval_min=1, extra="""
[[expect]]
check = "alarm_not_raised"
code = "therapy_interrupted"
""")


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


#: A run longer than the test waits: 60 days of hourly polls (1 440) is still running when its 100th
#: poll is logged (the 21-day default once finished, in 0.7 s, before the signal arrived).
LONG = implant_scenario("long", 60, "0d 00:05", poll_interval_min=60)


def test_sigint_records_the_time_reached_and_exits_130(tmp_path: Path) -> None:
    import signal
    import time

    report = tmp_path / "r"
    (tmp_path / "long.toml").write_text(LONG)
    env = {**os.environ, "COLUMNS": "120"}
    # SIGINT at its default in the child, whatever this process inherited (a job started in the background by
    # a non-interactive shell ignores it, and Python then installs no KeyboardInterrupt handler).
    run = subprocess.Popen([sys.executable, "-m", "hil.cli", "run", str(tmp_path / "long.toml"), "--link", "inprocess",
                            "--report", str(report), "--no-progress"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = report / "run-log.jsonl"
    deadline = time.monotonic() + 60
    while not (log.is_file() and log.read_text().count('"type":"sample"') >= 100):  # an event: polls logged
        assert run.poll() is None and time.monotonic() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.01)
    run.send_signal(signal.SIGINT)
    out, _ = run.communicate(timeout=60)
    assert run.returncode == 130, out
    assert "INTERRUPTED" in out
    summary = json.loads((report / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["passed"] is False
    assert "interrupted by the operator" in summary["error"]["message"]
    last_t_ms = max(json.loads(line)["sample"]["t_ms"] for line in log.read_text().splitlines()
                    if '"type":"sample"' in line)
    assert summary["reached_days"] < summary["duration_days"] == 60
    # Within one poll interval (the days are a float: back to whole ms first, or exactly one interval fails by 6e-8).
    assert abs(round(summary["reached_days"] * 86_400_000) - last_t_ms) <= 3_600_000
    assert "interrupted" in (report / "report.html").read_text()


def test_a_port_that_will_not_open_leaves_no_report_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "never"
    assert main(["run", "--pump", str(tmp_path / "no-such-tty"), "--yes", "--report", str(report)]) == 4
    assert not report.exists()
    assert "itb run" not in capsys.readouterr().out  # no banner before the port was checked


def test_a_long_real_pump_run_needs_yes_without_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    report = tmp_path / "r"
    assert main(["run", "--pump", str(tmp_path / "no-such-tty"), "--report", str(report)]) == 2
    assert "--yes" in capsys.readouterr().err
    assert not report.exists()


def test_profile_sets_the_pump_port(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "bench.toml"
    profile.write_text(f'[pump]\nurl = "{tmp_path / "profile-tty"}"\nbaudrate = 9600\naddress = 3\n')
    assert main(["run", "--profile", str(profile), "--yes", "--report", str(tmp_path / "r"), "--json"]) == 4
    error = json.loads(capsys.readouterr().out)
    assert error["schema"] == "itb.error/1" and "profile-tty" in error["error"]["message"]
    with pytest.raises(SystemExit) as usage_error:  # the --address type= check: argparse's usage error
        main(["run", "--profile", str(profile), "--address", "100", "--report", str(tmp_path / "r")])
    assert usage_error.value.code == 2


def test_json_prints_the_run_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "short.toml"
    scenario.write_text(SHORT_FAILING)
    code = main(["run", str(scenario), "--link", "inprocess", "--report", str(tmp_path / "r"), "--json"])
    out = capsys.readouterr().out
    document = json.loads(out)
    assert code == 1 and document["passed"] is False
    assert list(document)[:4] == ["schema", "software", "passed", "error"] and document["schema"] == "itb.run/1"
    assert document == json.loads((tmp_path / "r" / "summary.json").read_text())
    assert document["simulation"]["pump"]["settings"]["time"] == "virtual"


def test_days_skips_unreached_actions_with_a_note(tmp_path: Path) -> None:
    assert main(["run", "--link", "inprocess", "--days", "2", "--report", str(tmp_path / "r"), "--no-progress"]) == 1
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["duration_days"] == 2
    assert not any(e["name"].startswith(("implant allowed", "too-soon denied")) for e in summary["expectations"])
    assert any("implant" in n and "beyond the shortened end" in n for n in summary["notes"])
    failed = {c["name"] for c in summary["implicit_checks"] if not c["passed"]}
    assert failed == {"therapy started", "dose delivered above zero"}  # shortened before its implant: said so


def test_bench_run_stops_on_the_first_sigint_and_prints_no_figures(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from hil.scenario.runner import ScenarioRunner

    def interrupted(self: ScenarioRunner, first: int) -> None:
        raise KeyboardInterrupt  # as Ctrl-C raises it inside the run

    monkeypatch.setattr(ScenarioRunner, "_run_actions", interrupted)
    assert main(["bench", "run", "--quick"]) == 130
    out = capsys.readouterr().out
    assert "wall_s" not in out and "targets" not in out
