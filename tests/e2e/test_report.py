"""The run report, read back as a reader or a program reads it: HTML tables, links, PNGs, JSON, CSV.

The oracle is the :class:`RunRecord` itself (what the runner saw), never the
report's own template: tables are parsed from the page, alarm durations are
recomputed from the raw events, and the PNGs are read for their size and
resolution.
"""

from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hil.report import (
    PLOTS,
    PRINT_DPI,
    REPORT_FILES,
    AlarmEvent,
    CheckResult,
    DecisionEvent,
    PumpCommand,
    RunRecord,
    Sample,
    write_report,
)
from hil.scenario import RunOptions, ScenarioRunner, load_scenario

ROOT = Path(__file__).resolve().parents[2]
H = 3_600_000
DAY = 24 * H


class Page(HTMLParser):
    """Tables (by id: header row and body rows of cell text), links and images of a page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self.images: list[str] = []
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(a.get("id") or f"table{len(self.tables)}", [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])
        elif tag == "img":
            self.images.append(a["src"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self._table[-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def png_geometry(path: Path) -> tuple[int, int, float]:
    """(width px, height px, dots per inch) from the PNG's IHDR and pHYs chunks."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    offset, dpi = 8, 0.0
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset:offset + 8])
        body = data[offset + 8:offset + 8 + length]
        assert zlib.crc32(kind + body) == struct.unpack(">I", data[offset + 8 + length:offset + 12 + length])[0]
        if kind == b"pHYs":
            per_m, _, unit = struct.unpack(">IIB", body)
            assert unit == 1
            dpi = per_m * 0.0254
        offset += 12 + length
    return width, height, dpi


def synthetic_record() -> RunRecord:
    """A run with every kind of row, built by hand (the numbers are the oracle)."""
    samples = [Sample(t_ms=t * H, rate_nl_per_h=12_500 if t < 50 else 3_125, dose_24h_ug=min(t, 24) * 6.25,
                      cap_ug_per_day=1000.0, reservoir_ml=10 - t * 0.1, ashworth=3.0 - t / 40, effect_ng_per_ml=t)
               for t in range(0, 73)]
    return RunRecord(
        scenario="synthetic", source="synthetic.toml", description="Three days, by hand.",
        link="simulated NE-1000 over pty", pump_url="/dev/pts/9", duration_ms=3 * DAY, wall_s=1.5,
        started_utc="2026-01-05T08:00:00+00:00", samples=samples,
        alarms=[
            AlarmEvent(10 * H, "raise", "reservoir_low", "MEDIUM", "2 mL left"),
            AlarmEvent(20 * H, "raise", "motor_stall", "HIGH", "pump latched stall"),
            AlarmEvent(20 * H + 30 * 60_000, "acknowledge", "motor_stall", "HIGH", "acknowledged"),
            AlarmEvent(22 * H + 5 * 60_000, "clear", "motor_stall", "HIGH", "delivery confirmed"),
            AlarmEvent(30 * H, "clear", "reservoir_low", "MEDIUM", "refilled"),
            AlarmEvent(40 * H, "raise", "motor_stall", "HIGH", "again"),
        ],
        decisions=[
            DecisionEvent(30 * H, "refill", "refill", True, (), "500 -> 2000 µg/mL"),
            DecisionEvent(20 * H, "fault", "", True, (), "stall injected"),
            DecisionEvent(33 * H, "patient_bolus", "locked-out", False, ("BOLUS_LOCKOUT",), ""),
        ],
        commands=[
            PumpCommand(9 * H, "set_rate", "applied", rate_nl_per_h=12_500, command_id="c1"),
            PumpCommand(50 * H, "set_rate", "uncertain", rate_nl_per_h=3_125, detail="reply lost"),
            PumpCommand(51 * H, "set_volume", "not_applied", volume_nl=250_000, detail="?OOR"),
        ],
        expectations=[CheckResult("alarm motor_stall raised", True, "raised")],
        invariants=[CheckResult("rolling 24 h dose never above the cap", False, "1001 > 1000 at 5 h")],
        delivered_ug=450.0, prescribed_ug=450.9, delivered_by_kind_ug={"basal": 400.0, "patient": 50.0},
        pump_dispensed_ml=0.9,
        patient={"ashworth_final": 1.2, "effect_ng_per_ml_final": 70.0, "peak_overdose": "NONE",
                 "peak_withdrawal": "MILD"},
        reservoir={"remaining_ml": 2.8, "concentration_ug_per_ml": 2000, "days_to_low_alarm": 3.5,
                   "low_alarm_utc": "2026-01-11T20:00:00+00:00", "refill_due_utc": "2026-01-10T20:00:00+00:00"},
        low_reservoir_ml=2.0,
        boluses=[{"bolus_id": "b1", "kind": "patient", "dose_ng": 25_000, "volume_nl": 50_000, "delivered_nl": 49_990,
                  "status": "finished", "requested_t_ms": 12 * H, "detail": "complete"}],
        trace_file="serial-trace.txt", accuracy_report="accuracy/report.html",
    )


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunRecord, Path, Page]:
    out = tmp_path_factory.mktemp("synthetic")
    record = synthetic_record()
    (out / "serial-trace.txt").write_text("trace\n")
    (out / "journal.sqlite").write_bytes(b"")
    (out / "accuracy").mkdir()
    (out / "accuracy" / "report.html").write_text("<html></html>")
    page = write_report(record, out)
    return record, out, Page(page.read_text(encoding="utf-8"))


def test_every_file_is_written(synthetic: tuple[RunRecord, Path, Page]) -> None:
    _, out, _ = synthetic
    for name in REPORT_FILES:
        assert (out / name).stat().st_size > 0, name


def test_summary_has_the_envelope_and_the_lists(synthetic: tuple[RunRecord, Path, Page]) -> None:
    record, out, _ = synthetic
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert list(summary)[:4] == ["schema", "software", "passed", "error"]
    assert summary["schema"] == "itb.run/1" and summary["passed"] is False and summary["error"] is None
    assert summary["software"]["name"] == "itb-fil" and summary["software"]["version"]
    assert [(a["t_ms"], a["event"], a["code"]) for a in summary["alarm_events"]] == [
        (a.t_ms, a.event, a.code) for a in record.alarms]
    assert [(d["action"], d["allowed"], d["reasons"]) for d in summary["decisions"]] == [
        ("refill", True, []), ("fault", True, []), ("patient_bolus", False, ["BOLUS_LOCKOUT"])]
    assert summary["denials"] == [d for d in summary["decisions"] if not d["allowed"]]
    assert [(c["command"], c["outcome"]) for c in summary["pump_commands"]] == [
        ("set_rate", "applied"), ("set_rate", "uncertain"), ("set_volume", "not_applied")]
    assert summary["samples"] == len(record.samples) and summary["timeseries_file"] == "timeseries.csv"
    assert summary["low_reservoir_ml"] == 2.0 and summary["accuracy_report"] == "accuracy/report.html"


def test_alarm_periods_follow_the_raw_events(synthetic: tuple[RunRecord, Path, Page]) -> None:
    _, out, page = synthetic
    periods = json.loads((out / "summary.json").read_text(encoding="utf-8"))["alarm_periods"]
    assert [(p["code"], p["raised_t_ms"], p["cleared_t_ms"], p["acknowledged_t_ms"], p["duration_ms"])
            for p in periods] == [
        ("reservoir_low", 10 * H, 30 * H, None, 20 * H),
        ("motor_stall", 20 * H, 22 * H + 5 * 60_000, 20 * H + 30 * 60_000, 2 * H + 5 * 60_000),
        ("motor_stall", 40 * H, None, None, None),
    ]
    header, *rows = page.tables["alarms"]
    assert header == ["Alarm", "Priority", "Raised", "Cleared", "Acknowledged", "Duration", "Why"]
    assert [(r[0], r[1], r[2], r[3], r[5]) for r in rows] == [
        ("Reservoir low", "medium", "0d 10:00", "1d 06:00", "20 h"),
        ("Motor stall", "high", "0d 20:00", "0d 22:05", "2 h 5 min"),
        ("Motor stall", "high", "1d 16:00", "active at the end", "n/a"),
    ]


@given(st.lists(st.tuples(st.integers(0, 50), st.sampled_from(["raise", "clear", "acknowledge"]),
                          st.sampled_from(["a", "b"])), max_size=30))
def test_alarm_periods_never_overlap_per_code_and_cover_every_raise(steps: list[tuple[int, str, str]]) -> None:
    events, t = [], 0
    for gap, event, code in steps:
        t += gap
        events.append(AlarmEvent(t, event, code, "HIGH"))
    periods = RunRecord("s", "s", alarms=events).alarm_periods()
    for code in ("a", "b"):
        mine = [p for p in periods if p.code == code]
        # An independent walk: an alarm is active from a raise (while not active) to the next clear.
        active, raises = False, 0
        for e in events:
            if e.code == code and e.event == "raise" and not active:
                active, raises = True, raises + 1
            elif e.code == code and e.event == "clear":
                active = False
        assert len(mine) == raises
        for before, after in zip(mine, mine[1:]):
            assert before.cleared_t_ms is not None and before.cleared_t_ms <= after.raised_t_ms
        assert all(p.duration_ms is None or p.duration_ms == p.cleared_t_ms - p.raised_t_ms >= 0 for p in mine)
        assert (bool(mine) and mine[-1].cleared_t_ms is None) == active


def test_tables_speak_in_labels_and_units(synthetic: tuple[RunRecord, Path, Page]) -> None:
    _, _, page = synthetic
    for table_id, rows in page.tables.items():
        labels = rows[0] if table_id not in ("overview", "reservoir", "patient") else [r[0] for r in rows]
        for label in labels:
            assert "_" not in label and label[:1].isupper(), (table_id, label)
    overview = dict(page.tables["overview"])
    assert overview["Started"] == "2026-01-05 08:00 UTC"
    assert overview["Drug moved out of the reservoir (pump; not the dose at the tip)"] == "450.0 µg"
    assert overview["Moved against commanded (pump volume accuracy)"] == "-0.20 %"
    assert overview["Software"].startswith("itb-fil ")
    reservoir = dict(page.tables["reservoir"])
    assert reservoir["Remaining volume"] == "2.8 mL" and reservoir["Refill due"] == "2026-01-10 20:00 UTC"
    assert dict(page.tables["patient"])["Worst withdrawal grade"] == "Mild"
    assert page.tables["kinds"][1:] == [["Basal", "400.0", "88.9"], ["Patient bolus", "50.0", "11.1"]]
    assert page.tables["boluses"][1][:6] == ["0d 12:00", "Patient bolus", "25", "50.0", "50.0", "100.0"]


def test_pump_commands_show_value_and_outcome(synthetic: tuple[RunRecord, Path, Page]) -> None:
    _, _, page = synthetic
    assert page.tables["commands"] == [
        ["Time", "Command", "Value", "Outcome", "Detail"],
        ["0d 09:00", "Set rate", "12.500 µL/h", "applied", ""],
        ["2d 02:00", "Set rate", "3.125 µL/h", "UNCERTAIN", "reply lost"],
        ["2d 03:00", "Set volume", "0.2500 mL", "not applied", "?OOR"],
    ]


def test_failed_checks_come_first_and_links_resolve(synthetic: tuple[RunRecord, Path, Page]) -> None:
    _, out, page = synthetic
    assert page.tables["failed"][1:] == [["Rolling 24 h dose never above the cap", "FAIL", "1001 > 1000 at 5 h"]]
    assert set(page.links) == {"summary.json", "timeseries.csv", "serial-trace.txt", "journal.sqlite",
                               "accuracy/report.html"}
    for link in page.links:
        assert (out / link).is_file(), link
    assert page.images == [name for name, _ in PLOTS]


def test_plots_are_print_resolution_and_share_one_geometry(synthetic: tuple[RunRecord, Path, Page]) -> None:
    _, out, _ = synthetic
    geometry = {png_geometry(out / name) for name, _ in PLOTS}
    assert len(geometry) == 1
    width, height, dpi = geometry.pop()
    assert round(dpi) == PRINT_DPI and width >= 8 * PRINT_DPI


def test_timeseries_csv_holds_every_sample(synthetic: tuple[RunRecord, Path, Page]) -> None:
    record, out, _ = synthetic
    with (out / "timeseries.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(record.samples)
    assert [int(r["t_ms"]) for r in rows] == [s.t_ms for s in record.samples]
    assert [float(r["dose_24h_ug"]) for r in rows] == [s.dose_24h_ug for s in record.samples]


def test_a_real_run_reports_what_the_pump_did(tmp_path: Path) -> None:
    scenario = load_scenario("faults").with_duration(7 * DAY)
    record = ScenarioRunner(scenario, RunOptions(link="inprocess", report_dir=tmp_path)).run()
    page = Page(write_report(record, tmp_path).read_text(encoding="utf-8"))
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    raised = [e for e in summary["alarm_events"] if e["event"] == "raise"]
    assert len(page.tables["alarms"]) - 1 == len(summary["alarm_periods"]) == len(raised)
    assert {row[0] for row in page.tables["alarms"][1:]} >= {"Pump reset", "Therapy interrupted"}
    assert len(page.tables["decisions"]) - 1 == len(record.decisions)
    trace = tmp_path / record.trace_file
    assert record.trace_file in page.links and trace.stat().st_size > 0


def test_matplotlib_waits_for_the_report() -> None:
    probe = (
        "import sys, tempfile\n"
        "from pathlib import Path\n"
        "import hil.cli, hil.report\n"
        "from hil.scenario import RunOptions, ScenarioRunner, load_scenario\n"
        "hil.cli.build_parser()\n"
        "record = ScenarioRunner(load_scenario('periodic').with_duration(86_400_000),"
        " RunOptions(link='inprocess')).run()\n"
        "assert 'matplotlib' not in sys.modules, 'imported before the report'\n"
        "hil.report.write_report(record, Path(tempfile.mkdtemp()))\n"
        "assert 'matplotlib' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
