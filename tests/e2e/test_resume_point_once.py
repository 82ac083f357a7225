"""The resume point is built once per commit, and what is stored is what building it at every staging stored.

The oracle is the eager staging the store had before (build and encode the resume point each time it
is staged, then again at the commit): the same scenarios run both ways, with seeded command IDs and
nonces, must commit the same resume point rows (sequence number and body) at every commit and leave
every table of the database identical.
"""

from __future__ import annotations

import random
import secrets
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from controller.loop import ControlLoop
from controller.store import _RESUME_SQL, Store
from hil.scenario import SCENARIO_DIR, RunOptions, ScenarioRunner, load_scenario

SCENARIOS = ("default", "faults", "restart-after-interruption", "refill", "taper")


def _run(name: str, work: Path, monkeypatch: pytest.MonkeyPatch, *, eager: bool) -> dict[str, Any]:
    rng = random.Random(8)
    commits: list[list[Any]] = []
    built = [0]
    commit, resume_point = Store._commit, ControlLoop._resume_point

    def spy_commit(self: Store, rows: Any, base: Any, statements: Any = ()) -> None:
        commits.append([list(params) for sql, params in statements if sql == _RESUME_SQL])
        commit(self, rows, base, statements)

    def counted(self: ControlLoop) -> dict[str, Any]:
        built[0] += 1
        return resume_point(self)

    with monkeypatch.context() as m:
        m.setattr(uuid, "uuid4", lambda: uuid.UUID(int=rng.getrandbits(128), version=4))
        m.setattr(secrets, "token_hex", lambda n=32: "%0*x" % (2 * n, rng.getrandbits(8 * n)))
        m.setattr(Store, "_commit", spy_commit)
        m.setattr(ControlLoop, "_resume_point", counted)
        if eager:
            m.setattr(Store, "stage_resume_point",
                      lambda self, durable=False: self.save_resume_point(self.resume_point_source(), durable=durable))
        record = ScenarioRunner(load_scenario(SCENARIO_DIR / f"{name}.toml"),
                                RunOptions(link="inprocess", report_dir=work)).run()
    assert not record.error, record.error
    tables = {}
    for db in sorted(work.rglob("*.sqlite")):
        con = sqlite3.connect(db)
        for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name"):
            tables[f"{db.name}:{table}"] = con.execute(f"SELECT * FROM {table}").fetchall()
        con.close()
    return {"commits": commits, "tables": tables, "built": built[0]}


@pytest.mark.parametrize("name", SCENARIOS)
def test_the_resume_point_built_once_per_commit_stores_the_same_rows(name: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    eager = _run(name, tmp_path / "eager", monkeypatch, eager=True)
    lazy = _run(name, tmp_path / "lazy", monkeypatch, eager=False)
    with_resume_point = sum(1 for statements in lazy["commits"] if statements)
    assert with_resume_point > 0
    assert lazy["commits"] == eager["commits"]
    assert lazy["tables"] == eager["tables"]
    assert all(len(statements) <= 1 for statements in lazy["commits"])
    assert lazy["built"] <= with_resume_point < eager["built"]
