"""Durable controller state: the resume point after a crash or restart (PER-01, PER-02, BOL-05).

A small SQLite store (WAL, ``synchronous=FULL``) beside the audit journal. It
holds exactly what the control loop needs to resume without harm:

* the latest **checkpoint**: therapy mode, programme, concentration, reservoir
  fill, the kernel ledger snapshot (24 h accounting and lockouts), the pump
  counter reading the ledger was reconciled to, and the titration history;
* the **bolus records**: each bolus is written as ``pending`` *before* any
  command is sent, then ``running`` once the pump holds the bolus rate, then
  ``finished`` with the volume actually attributed to it. A restart finds any
  record not ``finished`` and closes it from the pump's counter: it is never
  sent again.

Every write is one transaction; a crash between two writes leaves the
complete previous state. The write points are counted
(:attr:`CheckpointStore.writes`) so tests can crash at each one.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from cython_ext.errors import ConfigError, StateError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bolus (
    bolus_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    dose_ng INTEGER NOT NULL,
    volume_nl INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'finished')),
    requested_ms INTEGER NOT NULL,
    started_ms INTEGER,
    ended_ms INTEGER,
    delivered_nl INTEGER,
    detail TEXT NOT NULL DEFAULT ''
);
"""

BOLUS_STATUSES = ("pending", "running", "finished")


@dataclass(frozen=True)
class BolusRecord:
    """One bolus as stored.

    :ivar bolus_id: unique ID chosen before anything is sent.
    :ivar kind: ``clinician``, ``patient``, ``priming`` or ``bridge``.
    :ivar dose_ng: authorised dose, ng.
    :ivar volume_nl: authorised volume, nL.
    :ivar status: ``pending`` (nothing sent yet or send unconfirmed), ``running``, ``finished``.
    :ivar requested_ms: controller time of the request, ms.
    :ivar started_ms: controller time the pump was confirmed at the bolus rate, ms.
    :ivar ended_ms: controller time it ended, ms.
    :ivar delivered_nl: volume attributed to it from the pump counter, nL.
    :ivar detail: why it ended (``complete``, ``stopped at the 24 h cap``, ``closed after restart``...).
    """

    bolus_id: str
    kind: str
    dose_ng: int
    volume_nl: int
    status: str
    requested_ms: int
    started_ms: int | None = None
    ended_ms: int | None = None
    delivered_nl: int | None = None
    detail: str = ""


class CheckpointStore:
    """The resume-point store.

    :param path: SQLite file, or ``":memory:"`` (tests only: nothing survives the process).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError("checkpoint_path", self.path, "a writable SQLite file", detail=str(exc)) from None
        self._closed = False
        #: Number of committed writes so far (each is one crash point).
        self.writes = 0
        #: Test hook: called with the write number before each commit; raising simulates a crash.
        self.before_write: Callable[[int], None] | None = None

    def _write(self, statements: list[tuple[str, tuple[Any, ...]]]) -> None:
        if self._closed:
            raise StateError("checkpoint store is closed")
        with self._lock:
            if self.before_write is not None:
                self.before_write(self.writes + 1)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(sql, params)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self.writes += 1

    # -- checkpoint -----------------------------------------------------------------------------

    def save(self, body: dict[str, Any]) -> None:
        """Durably replace the checkpoint with ``body`` (JSON-serialisable, integers for quantities)."""
        text = json.dumps(body, sort_keys=True, separators=(",", ":"))
        row = self._db.execute("SELECT seq FROM checkpoint WHERE id = 1").fetchone()
        seq = 1 if row is None else row[0] + 1
        self._write([("INSERT OR REPLACE INTO checkpoint (id, seq, body) VALUES (1, ?, ?)", (seq, text))])

    def load(self) -> dict[str, Any] | None:
        """The latest checkpoint, or None if none was ever saved."""
        row = self._db.execute("SELECT body FROM checkpoint WHERE id = 1").fetchone()
        return None if row is None else json.loads(row[0])

    # -- bolus records ------------------------------------------------------------------------------

    def add_bolus(self, record: BolusRecord) -> None:
        """Write a new ``pending`` record (before anything is sent).

        :raises ConfigError: if the ID exists already (a bolus is never recorded twice).
        """
        if record.status != "pending":
            raise ConfigError("status", record.status, "'pending' for a new bolus")
        exists = self._db.execute("SELECT 1 FROM bolus WHERE bolus_id = ?", (record.bolus_id,)).fetchone()
        if exists:
            raise ConfigError("bolus_id", record.bolus_id, "a new, unused bolus ID")
        self._write([(
            "INSERT INTO bolus (bolus_id, kind, dose_ng, volume_nl, status, requested_ms) VALUES (?,?,?,?,?,?)",
            (record.bolus_id, record.kind, record.dose_ng, record.volume_nl, "pending", record.requested_ms),
        )])

    def mark_running(self, bolus_id: str, started_ms: int) -> None:
        """The pump is confirmed at the bolus rate."""
        self._write([("UPDATE bolus SET status = 'running', started_ms = ? WHERE bolus_id = ? AND status = 'pending'",
                      (started_ms, bolus_id))])

    def finish_bolus(self, bolus_id: str, ended_ms: int, delivered_nl: int, detail: str,
                     checkpoint: dict[str, Any] | None = None) -> None:
        """Close a bolus with the volume attributed to it, optionally with a new checkpoint, atomically."""
        statements: list[tuple[str, tuple[Any, ...]]] = [(
            "UPDATE bolus SET status = 'finished', ended_ms = ?, delivered_nl = ?, detail = ? "
            "WHERE bolus_id = ? AND status != 'finished'",
            (ended_ms, delivered_nl, detail, bolus_id),
        )]
        if checkpoint is not None:
            text = json.dumps(checkpoint, sort_keys=True, separators=(",", ":"))
            row = self._db.execute("SELECT seq FROM checkpoint WHERE id = 1").fetchone()
            seq = 1 if row is None else row[0] + 1
            statements.append(("INSERT OR REPLACE INTO checkpoint (id, seq, body) VALUES (1, ?, ?)", (seq, text)))
        self._write(statements)

    def boluses(self, *, status: str | None = None) -> list[BolusRecord]:
        """Bolus records in request order, optionally only those with ``status``."""
        if status is not None and status not in BOLUS_STATUSES:
            raise ConfigError("status", status, f"one of {BOLUS_STATUSES}")
        sql = ("SELECT bolus_id, kind, dose_ng, volume_nl, status, requested_ms, started_ms, ended_ms, "
               "delivered_nl, detail FROM bolus")
        params: tuple[Any, ...] = ()
        if status is not None:
            sql += " WHERE status = ?"
            params = (status,)
        sql += " ORDER BY requested_ms, rowid"
        return [BolusRecord(*row) for row in self._db.execute(sql, params).fetchall()]

    def close(self) -> None:
        """Close the database. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._db.close()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
