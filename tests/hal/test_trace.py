"""The serial-trace reader (:mod:`hal.trace`) against the writer's format and hand-written lines, and replay."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cython_ext.errors import ConfigError
from hal.trace import parse_line, parse_trace, read_trace
from hal.transport import format_trace_line
from hil.cli import main
from tests.scenarios import implant_scenario

#: Written by hand from the format's description, not by our writer.
HAND_WRITTEN = [
    "# itb-fil serial trace  url=/dev/pts/3  opened=2026-01-05T08:00:00+00:00\n",
    "     0.000512 TX  30 56 45 52 0D                                      |0VER.|\n",
    "     0.004230 RX  02 30 30 53 7C 03                                   |.00S|.|\n",
    "     0.104870 --  timeout reading 1 byte(s)\n",
]


def test_a_hand_written_trace_reads_as_its_bytes() -> None:
    trace = parse_trace(HAND_WRITTEN)
    assert trace.header == {"url": "/dev/pts/3", "opened": "2026-01-05T08:00:00+00:00"}
    assert trace.stream("TX") == b"0VER\r"
    assert trace.stream("RX") == b"\x0200S|\x03"  # a '|' inside the ASCII column is data
    assert [e.direction for e in trace.events] == ["TX", "RX", "--"]
    assert trace.events[2].note == "timeout reading 1 byte(s)" and trace.events[2].line == 4


@given(st.binary(min_size=1, max_size=80), st.floats(0, 1e7, allow_nan=False), st.sampled_from(["TX", "RX"]))
def test_every_line_the_writer_writes_reads_back(data: bytes, elapsed_s: float, tag: str) -> None:
    event = parse_line(format_trace_line(elapsed_s, tag, data), 2)
    assert (event.direction, event.data) == (tag, data)
    assert event.elapsed_s == pytest.approx(round(elapsed_s, 6), abs=1e-6)


@pytest.mark.parametrize("line, field", [
    ("     0.1 TX  30 5G  |0?|", "trace line 2"),
    ("     0.1 TX  30 56  |0W|", "trace line 2"),  # the ASCII column disagrees with the bytes
    ("     0.1 XX  30  |0|", "trace line 2"),
    ("  soon TX  30  |0|", "trace line 2"),
])
def test_a_malformed_line_is_refused_naming_it(line: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_trace([HAND_WRITTEN[0], line])
    assert caught.value.field == field


def test_a_file_without_the_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    path.write_text("".join(HAND_WRITTEN[1:]))
    with pytest.raises(ConfigError):
        read_trace(path)


SHORT = implant_scenario("short", "0.1", "0d 00:30", poll_interval_min=10)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("trace")
    (work / "s.toml").write_text(SHORT)
    assert main(["run", str(work / "s.toml"), "--link", "inprocess", "--report", str(work / "r"), "--no-progress"]) == 0
    return work / "r" / "serial-trace.txt"


def test_a_virtual_time_session_replays_byte_for_byte(recorded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "replay", str(recorded), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["schema"] == "itb.trace/1" and document["differences"] == [] and document["tx_bytes"] > 100


def test_replay_names_the_first_reply_that_differs(recorded: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    lines = recorded.read_text().splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines) if " RX " in line and "30 30 53" in line)
    lines[number] = lines[number].replace("30 30 53", "30 30 49", 1).replace("00S", "00I", 1)  # S(topped) -> I
    tampered = tmp_path / "tampered.txt"
    tampered.write_text("".join(lines))
    assert main(["trace", "replay", str(tampered)]) == 1
    assert f"recorded line {number + 1}" in capsys.readouterr().out
    assert main(["trace", "replay", str(recorded), "--check", str(tampered)]) == 1
    assert main(["trace", "replay", str(recorded), "--check", str(recorded)]) == 0
