"""The controller's one durable store: journal, resume point and bolus records in one SQLite file.

:class:`Store` is a :class:`~controller.journal.Journal` (the hash-chained audit trail,
WAL, ``synchronous=FULL``) that also holds, in the same database:

* the **resume point** (one row): therapy mode, programme, concentration, reservoir
  fill, the kernel state (24 h accounting, lockouts, dose history), the pump counter
  the ledger was reconciled to, and the workflow state (PER-01, PER-02);
* the **bolus records**: each bolus is written as ``pending`` *before* any command is
  sent, then ``running`` once the pump holds the bolus rate, then ``finished`` with the
  volume actually attributed to it. A restart finds any record not ``finished`` and
  closes it from the pump's counter: it is never sent again (BOL-05);
* the **nonces** of every signed command accepted (SEC-03): a command is taken only if
  its nonce is new, and the nonce is committed before the command acts, so a replay is
  refused after a restart too;
* the **failed authentications** of each key, for the lockout (SEC-05).

One file means crash recovery reasons over one transaction order. Writes are staged
and committed together: the pending record of a command, the resume point and the
bolus record it needs go in **one transaction** before the command's bytes are sent
(:meth:`~controller.journal.Journal.transaction`); outcomes and routine updates are
staged and ride along with the next commit. Every commit carries the resume point as
it is at that moment (:attr:`Store.resume_point_source`), so the resume point on disk is
never older than any command, outcome or bolus record committed with it. A crash at any point leaves the complete
state of some earlier commit; a command whose outcome was lost is still pending, so
a restart reconciles it with the pump.

Every commit is a crash point: :attr:`Store.writes` counts them and
:attr:`Store.before_write` (a test hook) is called with the number of the next one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from controller.audit import one_shot_encoder
from controller.journal import Journal
from cython_ext.errors import ConfigError, StateError
from hal.clock import Clock

_SCHEMA = """
CREATE TABLE IF NOT EXISTS resume_point (
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
CREATE TABLE IF NOT EXISTS nonces (
    nonce TEXT PRIMARY KEY,
    key_id TEXT NOT NULL,
    issued_utc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS auth_failures (
    key_id TEXT NOT NULL,
    at_utc TEXT NOT NULL,
    reason TEXT NOT NULL
);
"""

BOLUS_STATUSES = ("pending", "running", "finished")

_RESUME_SQL = "INSERT OR REPLACE INTO resume_point (id, seq, body) VALUES (1, ?, ?)"
#: The resume point's encoder, built once (``json.dumps`` with options builds one per call): sorted keys, no spaces.
_RESUME_JSON = one_shot_encoder(json.JSONEncoder(sort_keys=True, separators=(",", ":"), check_circular=False))
#: Staged in place of the resume point's statement by :meth:`Store.stage_resume_point`: the commit builds it.
_RESUME_DUE = (_RESUME_SQL, None)


@dataclass(frozen=True)
class BolusRecord:
    """One bolus as stored.

    :ivar bolus_id: unique ID chosen before anything is sent.
    :ivar kind: the delivery kind's label: ``clinician``, ``patient``, ``priming`` or ``bridge``.
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


class Store(Journal):
    """The journal plus the resume point and the bolus records, in one SQLite file.

    :param path: the database file (created if missing).
    :param clock: the injected clock (times of journal entries).
    :param kwargs: as for :class:`~controller.journal.Journal` (``local_tz``, ``fault_hook``,
        ``seal_key``).
    """

    def __init__(self, path: str | Path, clock: Clock, **kwargs: Any) -> None:
        #: Number of commits so far (each one a crash point).
        self.writes = 0
        #: Test hook: called with the number of the next commit before it starts; raising simulates a crash.
        self.before_write: Callable[[int], None] | None = None
        #: Gives the controller's resume point as it is now. Set, every commit carries it: the resume
        #: point on disk is never older than anything else committed (a command, a bolus, an outcome).
        self.resume_point_source: Callable[[], dict[str, Any]] | None = None
        super().__init__(path, clock, **kwargs)
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._read_view()

    def _before_commit(self) -> None:
        if self.resume_point_source is not None:
            self.save_resume_point(self.resume_point_source(), durable=False)
        else:
            self._staged = [s for s in self._staged if s is not _RESUME_DUE]

    def _commit(self, rows: Any, base: Any, statements: Any = ()) -> None:
        if self.before_write is not None:
            self.before_write(self.writes + 1)
        super()._commit(rows, base, statements)
        self.writes += 1

    def _read_view(self) -> None:
        row = self._db.execute("SELECT seq, body FROM resume_point WHERE id = 1").fetchone()
        self._resume_seq = 0 if row is None else int(row[0])
        self._resume_text: str | None = None if row is None else str(row[1])
        self._boluses: dict[str, BolusRecord] = {
            r[0]: BolusRecord(*r) for r in self._db.execute(
                "SELECT bolus_id, kind, dose_ng, volume_nl, status, requested_ms, started_ms, ended_ms, "
                "delivered_nl, detail FROM bolus ORDER BY requested_ms, rowid")
        }
        self._nonces: set[str] = {r[0] for r in self._db.execute("SELECT nonce FROM nonces")}
        self._auth_failures: list[tuple[str, datetime]] = [
            (r[0], datetime.fromisoformat(r[1])) for r in self._db.execute("SELECT key_id, at_utc FROM auth_failures")]

    def _reload_view(self) -> None:
        super()._reload_view()
        self._read_view()

    def _view_mark(self) -> Any:
        return (super()._view_mark(), self._resume_seq, self._resume_text, dict(self._boluses), set(self._nonces),
                list(self._auth_failures))

    def _restore_view(self, mark: Any) -> None:
        commands, self._resume_seq, self._resume_text, self._boluses, self._nonces, self._auth_failures = mark
        super()._restore_view(commands)

    # -- resume point ---------------------------------------------------------------------------

    def save_resume_point(self, body: dict[str, Any], *, durable: bool = True) -> None:
        """Replace the resume point with ``body`` (JSON-serialisable, integers for quantities).

        :param durable: False stages it for the next commit (routine updates); only the newest
            staged resume point is written.
        """
        text = _RESUME_JSON(body)
        with self._lock:
            self._staged = [s for s in self._staged if s[0] != _RESUME_SQL]
            self._resume_seq += 1
            self._resume_text = text
            self._stage(_RESUME_SQL, (self._resume_seq, text), durable=durable)

    def stage_resume_point(self, *, durable: bool = False) -> None:
        """Stage the resume point for the next commit without building it: the commit builds it once,
        from :attr:`resume_point_source`, as it is then (what :meth:`save_resume_point` would have
        staged now is replaced at the commit anyway). The next :meth:`flush` commits it even if
        nothing else is staged.

        :param durable: commit now (inside a :meth:`transaction`, when it ends).
        :raises StateError: if there is no :attr:`resume_point_source`.
        """
        if self.resume_point_source is None:
            raise StateError("no resume point source: stage a resume point with save_resume_point")
        with self._lock:
            if self._closed:
                raise StateError(f"journal {self.path} is closed")
            self._resume_seq += 1
            if _RESUME_DUE not in self._staged:
                self._staged.append(_RESUME_DUE)
            if durable and self._tx_depth == 0:
                self._flush_locked()

    def load_resume_point(self) -> dict[str, Any] | None:
        """The latest resume point (staged included), or None if none was ever saved."""
        with self._lock:
            if _RESUME_DUE in self._staged and self.resume_point_source is not None:
                return json.loads(_RESUME_JSON(self.resume_point_source()))
            return None if self._resume_text is None else json.loads(self._resume_text)

    # -- bolus records ----------------------------------------------------------------------------

    def add_bolus(self, record: BolusRecord) -> None:
        """Record a new ``pending`` bolus, durably (before anything is sent; inside a
        :meth:`transaction`, durable when it ends).

        :raises ConfigError: if the ID exists already (a bolus is never recorded twice).
        """
        if record.status != "pending":
            raise ConfigError("status", record.status, "'pending' for a new bolus")
        with self._lock:
            if record.bolus_id in self._boluses:
                raise ConfigError("bolus_id", record.bolus_id, "a new, unused bolus ID")
            self._boluses[record.bolus_id] = record
            self._stage(
                "INSERT INTO bolus (bolus_id, kind, dose_ng, volume_nl, status, requested_ms) VALUES (?,?,?,?,?,?)",
                (record.bolus_id, record.kind, record.dose_ng, record.volume_nl, "pending", record.requested_ms),
                durable=True)

    def mark_running(self, bolus_id: str, started_ms: int, *, durable: bool = False) -> None:
        """The pump is confirmed at the bolus rate (staged by default: a restart closes a pending
        bolus from the counter all the same)."""
        with self._lock:
            record = self._boluses.get(bolus_id)
            if record is None or record.status != "pending":
                return
            self._boluses[bolus_id] = replace(record, status="running", started_ms=started_ms)
            self._stage("UPDATE bolus SET status = 'running', started_ms = ? WHERE bolus_id = ? AND status = 'pending'",
                        (started_ms, bolus_id), durable=durable)

    def finish_bolus(self, bolus_id: str, ended_ms: int, delivered_nl: int, detail: str, *,
                     durable: bool = False) -> None:
        """Close a bolus with the volume attributed to it (staged by default, like the resume point
        that goes with it; if a crash loses both, a restart closes the bolus from the counter)."""
        with self._lock:
            record = self._boluses.get(bolus_id)
            if record is None or record.status == "finished":
                return
            self._boluses[bolus_id] = replace(record, status="finished", ended_ms=ended_ms,
                                              delivered_nl=delivered_nl, detail=detail)
            self._stage("UPDATE bolus SET status = 'finished', ended_ms = ?, delivered_nl = ?, detail = ? "
                        "WHERE bolus_id = ? AND status != 'finished'",
                        (ended_ms, delivered_nl, detail, bolus_id), durable=durable)

    def boluses(self, *, status: str | None = None) -> list[BolusRecord]:
        """Bolus records in request order (staged included), optionally only those with ``status``."""
        if status is not None and status not in BOLUS_STATUSES:
            raise ConfigError("status", status, f"one of {BOLUS_STATUSES}")
        with self._lock:
            records = sorted(self._boluses.values(), key=lambda b: b.requested_ms)
        return [b for b in records if status is None or b.status == status]

    # -- signed commands: nonces and failed authentications ---------------------------------------

    def nonce_used(self, nonce: str) -> bool:
        """True if a signed command with this nonce was accepted before (staged included)."""
        with self._lock:
            return nonce in self._nonces

    def use_nonce(self, nonce: str, key_id: str, issued_utc: datetime) -> None:
        """Remember an accepted command's nonce, durably (inside a :meth:`transaction`, when it ends).

        :raises ConfigError: if the nonce was used before (a replay).
        """
        with self._lock:
            if nonce in self._nonces:
                raise ConfigError("nonce", nonce, "a nonce never used before (this one is a replay)")
            self._nonces.add(nonce)
            self._stage("INSERT INTO nonces (nonce, key_id, issued_utc) VALUES (?, ?, ?)",
                        (nonce, key_id, issued_utc.isoformat()), durable=True)

    def record_auth_failure(self, key_id: str, at_utc: datetime, reason: str) -> None:
        """Record one failed authentication of key ``key_id`` at ``at_utc`` (durably)."""
        with self._lock:
            self._auth_failures.append((key_id, at_utc))
            self._stage("INSERT INTO auth_failures (key_id, at_utc, reason) VALUES (?, ?, ?)",
                        (key_id, at_utc.isoformat(), reason), durable=True)

    def auth_failures(self, key_id: str, *, since_utc: datetime) -> list[datetime]:
        """The times key ``key_id`` failed to authenticate at or after ``since_utc``, oldest first."""
        with self._lock:
            return sorted(at for kid, at in self._auth_failures if kid == key_id and at >= since_utc)
