"""Nothing is lost between runs: journals are never overwritten, and a run killed with SIGKILL resumes.

The kill test is the real thing: ``itb sim serve`` is a separate process (the pump outlives the
controller, as a real one does), ``itb run`` is a subprocess on its pty, killed with SIGKILL at
points drawn from a seeded generator (counted in polls the run has logged: an event, not a
guess of time), then ``itb run --resume``. The oracle is the simulator's own state over its
control plane (its dispensed counter and the volume its mechanism moved), not our ledger.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hil.cli import main
from hil.scenario.runlog import FLUSH_EVERY_SAMPLES, RUN_LOG_FILE, read_run_log
from tests.scenarios import implant_scenario

#: Speed of the simulator and the controller in the kill test (virtual seconds per wall second).
SPEED = 1000
#: Longest wait for any one event of a subprocess, s (a deadline, not a pause).
DEADLINE_S = 60.0

RESUMABLE = implant_scenario("resumable", "0.125", "0d 00:05", poll_interval_min=1, label="implant", extra="""
[[action]]
at = "0d 01:00"
do = "clinician_bolus"
label = "bolus"
dose_ug = 20
duration_min = 30

[[action]]
at = "0d 02:40"
do = "discontinue"
label = "stop"
authorised_by = "dr.example"
emergency = true
signed = true  # a high-risk change: only as a signed command (SEC-02)

[[expect]]
check = "allowed"
action = "bolus"
""")

SHORT = implant_scenario("short", "0.25", "0d 00:30", label="implant")

REFUSED = implant_scenario("refused-implant", 1, "0d 01:00", label="implant", extra="""
[pump]
syringe_diameter_mm = "40"
""")


def itb(*args: str, cwd: Path, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.Popen([sys.executable, "-m", "hil.cli", *args], cwd=cwd, env=env, text=True, **kwargs)


def wait_for(predicate: object, what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def logged_samples(report: Path) -> int:
    path = report / RUN_LOG_FILE
    if not path.is_file():
        return 0
    return sum(1 for line in path.read_text().splitlines() if line.startswith('{"type":"sample"'))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_second_run_never_overwrites_the_first_journal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "short.toml"
    scenario.write_text(SHORT)
    report = tmp_path / "r"
    args = ["run", str(scenario), "--link", "inprocess", "--report", str(report), "--no-progress"]
    assert main(args) == 0
    first = {name: sha256(report / name) for name in ("journal.sqlite", "run-log.jsonl", "serial-trace.txt")}
    capsys.readouterr()

    assert main(args) == 2
    assert "--new-run" in capsys.readouterr().err
    assert {name: sha256(report / name) for name in first} == first

    assert main([*args, "--new-run"]) == 0
    archived = [p for p in report.iterdir() if p.name.startswith("previous-")]
    assert len(archived) == 1
    assert {name: sha256(archived[0] / name) for name in first} == first
    assert main(["journal", "verify", str(archived[0] / "journal.sqlite")]) == 0
    assert sha256(report / "journal.sqlite") != first["journal.sqlite"]
    summary = json.loads((report / "summary.json").read_text())
    assert any(archived[0].name in note for note in summary["notes"])


def test_resuming_a_run_whose_simulated_pump_died_with_it_is_refused(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "short.toml"
    scenario.write_text(SHORT)
    report = tmp_path / "r"
    assert main(["run", str(scenario), "--link", "inprocess", "--report", str(report), "--no-progress"]) == 0
    before = sha256(report / "journal.sqlite")
    assert main(["run", "--resume", str(report), "--no-progress"]) == 2
    assert "outlived" in capsys.readouterr().err
    assert sha256(report / "journal.sqlite") == before


def test_a_refused_implant_fails_the_run_naming_why(tmp_path: Path) -> None:
    scenario = tmp_path / "refused.toml"
    scenario.write_text(REFUSED)
    assert main(["run", str(scenario), "--link", "inprocess", "--report", str(tmp_path / "r"), "--no-progress"]) == 1
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["passed"] is False and summary["expectations"] == []
    implicit = {c["name"]: c for c in summary["implicit_checks"]}
    assert set(implicit) == {"therapy started", "no programme refused", "dose delivered above zero",
                             "a refused implant is alarmed"}
    assert [name for name, c in implicit.items() if not c["passed"]] == [
        "therapy started", "no programme refused", "dose delivered above zero"]
    assert "RATE_BELOW_PUMP_MIN" in implicit["no programme refused"]["detail"]
    assert "implant_not_done raised" in implicit["a refused implant is alarmed"]["detail"]
    assert "implant_not_done" in summary["alarms_raised"]
    html = (tmp_path / "r" / "report.html").read_text()
    assert "RATE_BELOW_PUMP_MIN" in html and "Implicit checks" in html


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_loses_and_repeats_nothing(tmp_path: Path) -> None:
    scenario = tmp_path / "resumable.toml"
    scenario.write_text(RESUMABLE)
    report = tmp_path / "r"
    sim = itb("sim", "serve", "--speed", str(SPEED), "--control", cwd=tmp_path, stdin=subprocess.PIPE,
              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert sim.stdout is not None and sim.stdin is not None
        url = sim.stdout.readline().split()[-1]
        rng = random.Random(20260105)
        first_kill = rng.randint(5, 70)
        kills = [first_kill, first_kill + rng.randint(15, 70)]
        run_args = [str(scenario), "--pump", url, "--sim-pump", "--speed", str(SPEED), "--report", str(report),
                    "--no-progress"]
        for n, at_samples in enumerate(kills):
            args = ["run", *run_args] if n == 0 else ["run", "--resume", str(report), "--no-progress"]
            run = itb(*args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for(lambda k=at_samples: logged_samples(report) >= k or run.poll() is not None, f"{at_samples} polls")
            assert run.poll() is None, "the run ended before its kill point"
            run.send_signal(signal.SIGKILL)
            assert run.wait(timeout=DEADLINE_S) == -signal.SIGKILL
        done = itb("run", "--resume", str(report), "--no-progress", cwd=tmp_path, stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT)
        out, _ = done.communicate(timeout=120)
        assert done.returncode == 0, out
        sim.stdin.write("state\n")
        sim.stdin.flush()
        pump = json.loads(sim.stdout.readline())
    finally:
        sim.send_signal(signal.SIGINT)
        sim.communicate(timeout=DEADLINE_S)  # closes its pipes too

    summary = json.loads((report / "summary.json").read_text())
    assert summary["passed"], [c for c in summary["invariants"] + summary["implicit_checks"] if not c["passed"]]
    assert len(summary["controller_gaps"]) == 2
    ledger_nl = round(summary["pump_dispensed_ml"] * 1e6)
    assert pump["state"] == "S"  # stopped (the prompt letter) by the emergency discontinue stopped it: the counter holds still
    assert abs(ledger_nl - pump["infused_nl"]) <= 100, (ledger_nl, pump)  # one display digit
    assert abs(pump["actual_delivered_nl"] - pump["infused_nl"]) <= 100  # the physics, no bias or noise
    boluses = summary["boluses"]
    assert [b["kind"] for b in boluses] == ["priming", "clinician"]  # each exactly once
    assert all(b["status"] == "finished" and b["delivered_nl"] <= b["volume_nl"] * 1.01 for b in boluses)
    actions = [(d["action"], d["label"]) for d in summary["decisions"] if d["label"]]
    assert actions == [("priming_bolus", "implant"), ("implant", "implant"), ("clinician_bolus", "bolus"),
                       ("discontinue", "stop")]
    times = [json.loads(line)["sample"]["t_ms"] for line in (report / RUN_LOG_FILE).read_text().splitlines()
             if line.startswith('{"type":"sample"')]
    assert times == sorted(times) and len(times) == summary["samples"]
    assert summary["reached_days"] == summary["duration_days"]
    assert summary["trace_files"] == ["serial-trace.txt", "serial-trace-2.txt", "serial-trace-3.txt"]
    assert main(["journal", "verify", str(report / "journal.sqlite")]) == 0
    html = (report / "report.html").read_text()
    assert "Controller down from" in html and "SIMULATED" in html


_KILLED_WRITER = """
import os, sys
from pathlib import Path
from hil.scenario.runlog import FLUSH_EVERY_SAMPLES, RunLog
log = RunLog(Path(sys.argv[1]))
for t in range(4 + FLUSH_EVERY_SAMPLES + 5):
    log.sample(sample={"t_ms": t})
    if t == 3:
        log.write("decision", t_ms=t)
os._exit(0)  # as SIGKILL would: no close, no flush, Python's buffers lost
"""


def test_a_killed_run_log_keeps_every_line_but_the_samples_since_its_last_flush(tmp_path: Path) -> None:
    path = tmp_path / RUN_LOG_FILE
    subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(path)], check=True, timeout=DEADLINE_S)
    text = path.read_text()
    assert text.endswith("\n")  # whole lines only
    lines = list(read_run_log(path))
    # The decision flushed the four samples before it, the next 64 samples flushed as one group, five were lost.
    assert [(line["type"], line.get("sample", line).get("t_ms")) for line in lines] == \
        [("sample", t) for t in range(4)] + [("decision", 3)] + [("sample", t) for t in range(4, 4 + FLUSH_EVERY_SAMPLES)]
