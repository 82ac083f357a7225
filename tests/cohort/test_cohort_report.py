"""``itb cohort`` end to end: the files a reader gets, read back as a reader reads them."""

from __future__ import annotations

import csv
import json
import re
import statistics
import struct
from collections import Counter
from pathlib import Path

from hil import cli
from hil.cohort.report import CSV_COLUMNS, PLOTS


def test_itb_cohort_writes_summary_table_and_page(tmp_path: Path) -> None:
    out = tmp_path / "report"
    assert cli.main(["cohort", "--patients", "6", "--days", "10", "--report", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["schema"] == "itb.cohort/1" and summary["passed"] is True
    assert summary["population"]["size"] == 6 and summary["days"] == 10 and summary["where"] == "local"
    with (out / "patients.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 6 * len(summary["policies"])
    for policy in summary["policies"]:
        mine = [r for r in rows if r["policy"] == policy["name"]]
        reached = [int(r["days_to_target"]) for r in mine if r["days_to_target"]]
        assert policy["reached_target"] == len(reached)
        if reached:
            assert policy["days_to_target"]["median"] == statistics.median(reached)
            assert policy["days_to_target"]["p5"] <= policy["days_to_target"]["p95"] <= 10
        counted = Counter()
        for r in mine:
            for item in filter(None, r["refusal_reasons"].split(";")):
                code, n = item.split(":")
                counted[code] += int(n)
        assert dict(counted) == policy["refusals_by_reason"]
    assert any(p["refusals_by_reason"].get("TITRATION_CAP_EXCEEDED") for p in summary["policies"])
    page = (out / "report.html").read_text(encoding="utf-8")
    for name, _alt in PLOTS:
        assert f"src='{name}'" in page
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])
        assert width > 1000 and height > 400
    names = re.findall(r"<tr><td>([^<]+)</td><td class='num'>6</td>", page)
    assert names == [p["name"] for p in summary["policies"]]
