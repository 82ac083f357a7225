"""``itb sim serve`` end to end: a real subprocess, a real pty or socket, SIGTERM, clean exit."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import serial

from cython_ext.errors import HalUnavailableError
from hal.newera.framing import encode_safe
from hil import cli, cmd_sim
from hil.cmd_sim import handle_control
from sim.clock import VirtualClock
from sim.faults import FaultyDevice
from sim.newera import Ne1000


@contextmanager
def serve(*extra: str) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """Start ``itb sim serve``; yield the process and the URL lines it printed first."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil.cli", "sim", "serve", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip()]
        if "--balance" in extra:
            lines.append(proc.stdout.readline().strip())
        yield proc, lines
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> str:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def test_serve_on_a_pty_answers_and_stops_cleanly_on_sigterm() -> None:
    with serve("--address", "3", "--log-traffic", "--profile", "ne1000x2-v3.928", "--fill-ml", "1") as (proc, lines):
        url = lines[0].split()[-1]
        assert url.startswith("/dev/pts/"), lines
        port = serial.serial_for_url(url, timeout=10)
        try:
            port.write(b"3\r")
            assert port.read_until(b"\x03") == b"\x0203A?R\x03"
            port.write(b"3VER\r")
            assert port.read_until(b"\x03") == b"\x0203SNE1000X2V3.928\x03"
        finally:
            port.close()
        err = stop(proc)
    assert "pump RX 33 56 45 52 0d" in err
    assert "stopped" in err


def test_serve_on_tcp_in_safe_mode_with_a_fault_stops_on_sigint() -> None:
    with serve("--link", "tcp:0", "--safe-timeout", "30", "--no-reset-alarm", "--fault", "lost-reply:match=VER") as (
        proc,
        lines,
    ):
        url = lines[0].split()[-1]
        assert url.startswith("socket://127.0.0.1:"), lines
        port = serial.serial_for_url(url, timeout=10)
        try:
            port.write(encode_safe(b"0VER"))
            port.write(encode_safe(b"0"))
            assert port.read(8) == encode_safe(b"00S"), "the VER reply was lost, the status reply was not"
        finally:
            port.close()
        stop(proc, signal.SIGINT)


def test_serve_with_a_balance_prints_its_url_second() -> None:
    with serve("--balance", "mtsics", "--no-reset-alarm", "--dose-step-nl", "20") as (proc, lines):
        assert lines[0].split()[-1].startswith("/dev/pts/")
        balance_url = lines[1].split()[-1]
        assert balance_url.startswith("/dev/pts/"), lines
        port = serial.serial_for_url(balance_url, timeout=10)
        try:
            port.write(b"SI\r\n")
            reply = port.read_until(b"\r\n")
            assert reply.startswith(b"S ") and reply.endswith(b" g\r\n"), reply
        finally:
            port.close()
        stop(proc)


@pytest.mark.parametrize(
    "argv",
    [
        ["--link", "serial"],
        ["--link", "tcp:70000"],
        ["--address", "100"],
        ["--speed", "0"],
        ["--safe-timeout", "256"],
        ["--baud", "14400"],
        ["--pump", "ne500"],
        ["--speed", "-2"],
        ["--speed", "fast"],
        ["--profile", "ne9000"],
        ["--dose-step-nl", "-5"],
    ],
)
def test_bad_arguments_are_rejected(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["sim", "serve", *argv])
    assert excinfo.value.code == 2
    err = capsys.readouterr().err
    assert "must be" in err or "invalid choice" in err


def test_bad_fault_spec_is_an_error_exit(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as excinfo:
        cli.main(["sim", "serve", "--fault", "explode"])
    assert excinfo.value.code == 2
    assert "fault kind" in capsys.readouterr().err


def test_control_plane_commands() -> None:
    clock = VirtualClock()
    pump = Ne1000(clock, power_on_alarm=False)
    pump.receive(b"0RAT3600UH\r0RUN\r")
    clock.advance(1)
    answer = handle_control("state", pump)
    assert (answer["state"], answer["infused_nl"], answer["actual_delivered_nl"]) == ("I", 1000, 1000)
    assert handle_control("stall", pump)["alarm"] == "S"
    assert handle_control("occlude", pump)["occluded"] is True
    assert handle_control("power-loss", pump)["powered"] is False
    assert handle_control("power-restore", pump)["alarm"] == "R"
    assert handle_control("refill 1.5", pump)["contents_nl"] == 1_500_000
    assert "error" in handle_control("refill 9", pump)
    assert "error" in handle_control("refill", pump)
    assert "error" in handle_control("explode", pump)
    assert "error" in handle_control("", pump)
    assert "error" in handle_control("fault stall", pump), "no fault layer"


def test_control_plane_adds_faults() -> None:
    clock = VirtualClock()
    pump = Ne1000(clock, power_on_alarm=False)
    layer = FaultyDevice(pump, [], clock=clock)
    assert handle_control("fault lost-reply:match=VER", pump, layer)["ok"] == "fault"
    assert layer.receive(b"0VER\r") == b""
    assert "error" in handle_control("fault explode", pump, layer)


def test_control_plane_over_stdin() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil.cli", "sim", "serve", "--control", "--no-reset-alarm"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        url = proc.stdout.readline().split()[-1]
        proc.stdin.write("stall\nfault lost-reply:match=VER\n")
        proc.stdin.flush()
        assert '"alarm": "S"' in proc.stdout.readline()
        assert '"ok": "fault"' in proc.stdout.readline()
        port = serial.serial_for_url(url, timeout=10)
        try:
            port.write(b"0VER\r")
            port.write(b"0\r")
            assert port.read_until(b"\x03") == b"\x0200S\x03", "VER's reply (carrying A?S) was lost"
        finally:
            port.close()
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_missing_balance_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> None:
        raise ImportError(f"No module named {name!r}")

    monkeypatch.setattr(cmd_sim.importlib, "import_module", missing)
    with pytest.raises(HalUnavailableError, match="simulated balances are not available"):
        cmd_sim._load_balance_factory()


def test_help_and_readme_list_every_command_the_simulated_pump_implements() -> None:
    from pathlib import Path

    from sim.newera import COMMANDS

    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    listed = cmd_sim.PUMP_SUMMARY.split("commands")[1].split("program")[0].split()
    for spec in COMMANDS:
        assert ("*" if spec.system else "") + spec.name in listed, spec.name
    assert cmd_sim.PUMP_SUMMARY in readme, "README's simulator section repeats the --help summary"
