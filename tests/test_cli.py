"""The ``itb`` command's common habits: help, ``--version``, logging, exit statuses, ``--json`` documents, pipes."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from controller.audit import SYSTEM_ACTOR
from controller.journal import Journal
from cython_ext.errors import CommunicationError, ConfigError, ConnectError, ItbError, StateError
from hil import cli, cmd_bench, cmd_journal
from hil.cli import ExitStatus
from hil.gravimetric.analysis import InsufficientDataError, RefusalReason
from sim.clock import VirtualClock

ROOT = Path(__file__).resolve().parents[1]
ENVELOPE = ["schema", "software", "passed", "error"]


def _subcommands() -> list[str]:
    parser = cli.build_parser()
    action = next(a for a in parser._subparsers._group_actions if a.dest == "command")  # type: ignore[union-attr]
    return sorted(action.choices)


def itb(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """``itb ARGS`` as a user runs it, in a fresh interpreter."""
    return subprocess.run([sys.executable, "-m", "hil.cli", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT, **kwargs)


def test_top_level_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["--help"])
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    for name in _subcommands():
        assert name in out


@pytest.mark.parametrize("name", _subcommands())
def test_each_subcommand_answers_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        cli.main([name, "--help"])
    assert excinfo.value.code == 0
    assert capsys.readouterr().out.strip()


def test_version_names_the_distribution_version_and_revision() -> None:
    from importlib import metadata

    done = itb("--version")
    assert done.returncode == 0, done.stderr
    revision = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    line = done.stdout.strip()
    assert line.startswith(f"itb-fil {metadata.version('itb-fil')} (git {revision[:12]}")


# -- the exit-status table -------------------------------------------------------------------------------------


def _doc_table(text: str) -> dict[int, str]:
    """``status -> meaning`` from an RST simple table or a Markdown table in ``text``."""
    rows = re.findall(r"^\|?\s*`?(\d{1,3})`?\s*(?:\||\s{2,})\s*([a-z][a-z ]+?)\s*(?:\||\s{2,}|$)", text, re.MULTILINE)
    return {int(status): meaning.strip() for status, meaning in rows}


def test_exit_status_table_is_one_table_in_the_cli_and_the_readme() -> None:
    in_cli = _doc_table(cli.__doc__ or "")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Exit status"):]
    in_readme = _doc_table(section[: section.index("\n## ", 3)])
    assert set(in_cli) == set(in_readme) == {int(s) for s in ExitStatus}
    assert in_cli == in_readme
    assert in_cli[0] == "ok" and in_cli[2] == "usage" and in_cli[130] == "interrupted"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (ConfigError("--rate", "x", "a rate with a unit"), ExitStatus.USAGE),
        (InsufficientDataError(RefusalReason.UNSTABLE_READINGS, "40 % unstable"), ExitStatus.REFUSED_DATA),
        (ConnectError("no such port"), ExitStatus.DEVICE_ERROR),
        (CommunicationError("garbled"), ExitStatus.DEVICE_ERROR),
        (StateError("not now"), ExitStatus.CHECK_FAILED),
        (ItbError("anything else"), ExitStatus.CHECK_FAILED),
        (KeyboardInterrupt(), ExitStatus.INTERRUPTED),
        (BrokenPipeError(), ExitStatus.CLOSED_PIPE),
    ],
)
def test_every_error_a_handler_raises_gets_its_status(
    error: BaseException, status: ExitStatus, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def handler(args: argparse.Namespace) -> int:
        raise error

    monkeypatch.setattr(cmd_journal, "_verify", handler)
    assert cli.main(["journal", "verify", str(tmp_path / "j.sqlite")]) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if isinstance(error, ItbError):
        assert err == f"itb: error: {error}\n"


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert itb("run", "--no-such-option").returncode == ExitStatus.USAGE
    done = itb("journal", "verify", str(tmp_path / "missing.sqlite"))
    assert done.returncode == ExitStatus.USAGE
    assert done.stderr.startswith("itb: error: file (=")


def test_a_port_that_does_not_open_exits_4(tmp_path: Path) -> None:
    done = itb("hil", "balance", "--balance", str(tmp_path / "ttyUSB-none"))
    assert done.returncode == ExitStatus.DEVICE_ERROR, done.stderr
    assert done.stderr.startswith("itb: error: ") and "Traceback" not in done.stderr


def test_refused_accuracy_data_exits_3(tmp_path: Path) -> None:
    done = itb("hil", "accuracy", "--pump", "sim", "--balance", "sim:mtsics", "--rate", "1.2mL/h", "--syringe",
               "14.5mm", "--duration", "10min", "--fault", "stall:at=300", "--report", str(tmp_path / "r"))
    assert done.returncode == ExitStatus.REFUSED_DATA, done.stdout + done.stderr
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["passed"] is False and summary["error"]["exit_status"] == ExitStatus.REFUSED_DATA


def test_an_accuracy_rate_with_any_digits_runs_and_reports_both_roundings() -> None:
    """0.1 mL/day is 4166.67 nL/h: set as 4167 nL/h, and the pump's read-back is reported beside it."""
    done = itb("hil", "accuracy", "--pump", "sim", "--balance", "sim:mtsics", "--rate", "0.1234567mL/h",
               "--syringe", "bd-10ml", "--duration", "10min")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "rate: 0.1234567mL/h = 123456.700 nL/h, set as 123457 nL/h" in done.stdout
    held = [line for line in done.stdout.splitlines() if line.startswith("rate: the pump holds")]
    assert len(held) == 1 and "from the 123457 nL/h set" in held[0]
    done = itb("hil", "accuracy", "--pump", "sim", "--balance", "sim:mtsics", "--rate", "0.1mL/day",
               "--syringe", "bd-1ml", "--duration", "10min", "--json")
    doc = json.loads(done.stdout)
    assert doc["config"]["rate_nl_per_h"] == 4167 and doc["held_rate_nl_per_h"] > 0
    assert "--rate 0.1mL/day = 4166.667 nL/h, set as 4167 nL/h (+0.008 %" in done.stderr


def test_json_error_is_a_document_on_stdout(tmp_path: Path) -> None:
    done = itb("journal", "verify", str(tmp_path / "missing.sqlite"), "--json")
    assert done.returncode == ExitStatus.USAGE
    doc = json.loads(done.stdout)
    assert list(doc)[:4] == ENVELOPE
    assert doc["schema"] == "itb.error/1" and doc["passed"] is False and doc["command"] == "journal"
    assert doc["error"] == {"type": "ConfigError", "message": done.stderr.removeprefix("itb: error: ").strip(),
                            "exit_status": 2, "field": "file", "value": str(tmp_path / "missing.sqlite"),
                            "allowed": "an existing journal file"}


# -- logging ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "shown"),
    [([], {"INFO", "WARNING", "ERROR"}), (["-v"], {"DEBUG", "INFO", "WARNING", "ERROR"}),
     (["-q"], {"WARNING", "ERROR"}), (["-qq"], {"ERROR"}), (["-q", "-v"], {"INFO", "WARNING", "ERROR"})],
)
def test_verbosity_flags_set_what_is_logged(flags: list[str], shown: set[str], monkeypatch: pytest.MonkeyPatch,
                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def handler(args: argparse.Namespace) -> int:
        log = logging.getLogger("hil.cmd_journal")
        for level in ("DEBUG", "INFO", "WARNING", "ERROR"):
            log.log(getattr(logging, level), "level %s", level)
        logging.getLogger("some.library").info("library chatter")
        return 0

    monkeypatch.setattr(cmd_journal, "_verify", handler)
    # The flags work before the subcommand and after it.
    for argv in ([*flags, "journal", "verify", "f"], ["journal", "verify", "f", *flags]):
        assert cli.main(argv) == 0
        err = capsys.readouterr().err
        assert {level for level in ("DEBUG", "INFO", "WARNING", "ERROR") if f"level {level}" in err} == shown
        assert "library chatter" not in err
    if "WARNING" in shown:
        assert "itb: warning: level WARNING" in err or "itb: hil.cmd_journal: warning: level WARNING" in err


def test_export_reports_its_count_through_logging(tmp_path: Path) -> None:
    journal = _journal(tmp_path)
    out = tmp_path / "out.csv"
    done = itb("journal", "export", str(journal), "--format", "csv", "--out", str(out))
    assert done.returncode == 0 and re.fullmatch(r"itb: \d+ entries written to .*\n", done.stderr)
    assert itb("-q", "journal", "export", str(journal), "--format", "csv", "--out", str(out)).stderr == ""


# -- --json documents --------------------------------------------------------------------------------------------


def _journal(tmp_path: Path, entries: int = 5) -> Path:
    path = tmp_path / "journal.sqlite"
    clock = VirtualClock()
    journal = Journal(path, clock)
    for index in range(entries):
        clock.advance(60)
        journal.append_audit(SYSTEM_ACTOR, "test.entry", new={"index": index, "text": "x" * 200})
    journal.close()
    return path


def test_journal_verify_json_is_a_document(tmp_path: Path) -> None:
    path = _journal(tmp_path)
    done = itb("journal", "verify", str(path), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert list(doc)[:4] == ENVELOPE
    assert doc["schema"] == "itb.journal-verify/1" and doc["passed"] is True and doc["error"] is None
    assert doc["entries_checked"] >= 5 and doc["problems"] == [] and doc["first_bad_seq"] is None

    db = sqlite3.connect(path)
    db.executescript("DROP TRIGGER entries_no_update; UPDATE entries SET reason = 'edited' WHERE seq = 3;")
    db.close()
    done = itb("journal", "verify", str(path), "--json")
    assert done.returncode == ExitStatus.CHECK_FAILED
    doc = json.loads(done.stdout)
    assert doc["passed"] is False and doc["first_bad_seq"] is not None and doc["problems"]


def test_bench_json_is_a_document_whose_verdicts_set_the_exit_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = {
        "kernel": {"authorize_ns_median_compiled": 900.0, "meets_targets": True},
        "run": {"inprocess": {"wall_s": 1.0, "within_target": True, "invariants_held": True},
                "pty": {"wall_s": 2.0, "within_target": True, "invariants_held": True}},
        "serial": {"paced_19200_within_target": True},
        "cohort": {"cohort_wall_s": 40.0, "wall_within_target": True},
    }
    monkeypatch.setattr(cmd_bench, "run_benchmark", lambda name, args: figures[name])
    assert cli.main(["bench", "all", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert list(doc)[:4] == ENVELOPE
    assert doc["schema"] == "itb.bench/1" and doc["passed"] is True and doc["benchmarks"] == figures

    figures["run"]["pty"]["invariants_held"] = False
    assert cli.main(["bench", "run", "--json"]) == ExitStatus.CHECK_FAILED
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] is False and list(doc["benchmarks"]) == ["run"]
    assert cli.main(["bench", "run"]) == ExitStatus.CHECK_FAILED
    assert capsys.readouterr().out.splitlines()[-1] == "FAILED: run.pty.invariants_held"


def test_bench_verdicts_are_found_at_any_depth() -> None:
    held = cmd_bench.verdicts({"x": {"a": {"within_target": False, "within_target_ms": 3}, "meets_targets": 1,
                                     "paced_within_target": True, "targets": True}})
    assert held == {"x.a.within_target": False, "x.meets_targets": True, "x.paced_within_target": True}


def test_bench_run_states_its_floor_ratio_and_the_sameness_of_its_runs_as_verdicts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from hil.bench import run as bench_run

    figures = bench_run.measure("inprocess", 1, 2)
    held = cmd_bench.verdicts({"run": {"inprocess": figures}})
    ratio = figures["full_over_kernel_and_accounting"]
    assert held["run.inprocess.floor_ratio_within_target"] == (ratio <= bench_run.TARGET_FLOOR_RATIO)
    assert held["run.inprocess.polls_identical_in_every_run"] is True
    monkeypatch.setattr(bench_run, "TARGET_FLOOR_RATIO", 0.0)  # no loop is within this: the verdict fails
    monkeypatch.setattr(cmd_bench, "run_benchmark", lambda name, args: bench_run.measure("inprocess", 1, 1))
    assert cli.main(["bench", "run"]) == ExitStatus.CHECK_FAILED


# -- pipes -------------------------------------------------------------------------------------------------------


def test_a_closed_pipe_is_no_traceback(tmp_path: Path) -> None:
    journal = _journal(tmp_path, entries=400)  # well over a pipe buffer of CSV
    reader = subprocess.Popen([sys.executable, "-m", "hil.cli", "journal", "export", str(journal), "--format", "csv"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=dict(os.environ))
    assert reader.stdout is not None and reader.stderr is not None
    assert reader.stdout.readline().startswith(b"seq")
    reader.stdout.close()  # what `| head -1` does
    status = reader.wait(timeout=60)
    err = reader.stderr.read().decode()
    reader.stderr.close()
    assert status == ExitStatus.CLOSED_PIPE, err
    assert err == ""
