"""The journal: durable, append-only, hash-chained record of everything that affects therapy.

One SQLite file in WAL mode with ``synchronous=FULL`` (PER-01): every method
that records something returns only after its transaction is committed, so a
record is durable before the caller acknowledges anything.

Everything is one chain of entries (:data:`controller.audit.CHAINED_FIELDS`):
prescriptions, soft-limit overrides, committed programmes, kernel ledger
snapshots, commands (a ``pending`` entry written *before* the command is sent,
then a completion with its outcome), pump readings, alarm events and free
audit entries. Each entry holds actor and role, action, old and new values,
reason, command ID, UTC time with the local offset, monotonic time and outcome
(PER-04), plus the hash of the previous entry. A one-row ``head`` table holds
the entry count and the last hash, updated in the same transaction, so a
truncated tail is detected as well as an edited, deleted or reordered entry
(PER-03). Triggers refuse UPDATE and DELETE on entries.

**Sealed** (SEC-04): anyone with write access could still rebuild a consistent chain and
head, so the head is signed with the rig's journal key (Ed25519, :mod:`controller.signing`)
in every commit that moves it, and again on :meth:`Journal.close` (state ``closed``). The
journal's public key is in its ``meta`` table and bound into the genesis hash; the verifier
checks the seal with it and checks that the key is a ``system`` key of the rig's trust
store, so a chain rebuilt without the private key, or sealed with another key, fails.

::

    entries:  seq | kind | action | utc | offset | mono_ns | actor | role | cmd_id | outcome
              | reason | old_json | new_json | prev_hash | hash
    head:     count | last_hash | state | seal   (same transaction as each append; seal = Ed25519
                                                  signature of controller.signing.seal_message)
    meta:     journal_id, schema_version, created_utc, seal_key_id, seal_public_key

What a restart needs (PER-02, BOL-05): :meth:`Journal.last_prescription`,
:meth:`Journal.last_committed_programme`, :meth:`Journal.last_ledger_snapshot`,
:meth:`Journal.unresolved_commands` (pending or uncertain: never re-sent, only
reconciled) and :meth:`Journal.pending_boluses`.

Readings are **group-committed** and **batched**: a :meth:`Journal.record_reading` with
``durable=False`` (every poll of ``itb run``) is held in memory, each with its own UTC time,
offset and monotonic time. The run of readings recorded between two other entries becomes
**one** chained ``reading_batch`` entry (:data:`EntryKind.READING_BATCH`, its ``new`` value
``{"readings": [{"utc", "utc_offset_min", "monotonic_ns", "reading"}, ...]}``, its own times
those of its last reading), hashed once: editing, dropping or reordering any reading inside
it breaks that entry's hash like an edit of any entry. Readers never see a batch unless they
ask for that kind: :meth:`Journal.entries` and the JSON export expand it into one ``reading``
entry per reading (each with the sequence number and hash of its batch); the CSV export and
:func:`verify_journal` work on the stored entries. A batch is committed
inside the next commit that is made anyway (a command's pending record or outcome, a
checkpoint's resume point...), and at the latest when :data:`READINGS_PER_COMMIT` are
staged (outside a :meth:`~Journal.batch`), on :meth:`~Journal.flush` and on
:meth:`~Journal.close`. A crash therefore loses at most the readings since the last
commit, never a command, an outcome or a resume point (each still commits before its
method returns or its transaction ends); the pump's counter, re-read at recovery, is the
truth about delivery.

Long runs: inside ``with journal.batch():`` readings and free audit entries are
chained in memory and committed together at the end of the block (one fsync
instead of one per entry); every other record stays durable before its method
returns. One process writes a journal at a time.

Crash testing: ``fault_hook(point)`` is called at every write point
(``begin``, ``insert``, ``head``, ``commit``, ``committed``); raising from it,
or killing the process, must leave the complete old or complete new state.
"""

from __future__ import annotations

import csv
import enum
import base64
import hashlib
import io
import json
import os
import shutil
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from controller.audit import (
    CHAINED_FIELDS,
    SYSTEM_ACTOR,
    Actor,
    Role,
    canonical_json,
    entry_hash,
    genesis_hash,
    jsonable,
    row_hash,
)
from controller.signing import RigSecurity, SigningKey, TrustStore, key_id_of, seal_message, seal_verifies
from cython_ext.errors import ConfigError, ItbError, StateError
from hal.clock import Clock
from hal.lifecycle import ClosesOnExit

#: The path of a journal that lives in memory only (tests and benchmarks: nothing survives the process).
IN_MEMORY = ":memory:"

#: ``os.statvfs`` where there is one (POSIX); elsewhere the free space comes from ``shutil.disk_usage``.
_STATVFS = getattr(os, "statvfs", None)

#: Version of the journal's table layout.
JOURNAL_SCHEMA_VERSION = 2

#: Command outcomes. ``uncertain`` commands stay unresolved until reconciled.
COMMAND_OUTCOMES = ("applied", "not_applied", "uncertain")

#: Alarm events the journal accepts.
ALARM_EVENTS = ("raise", "clear", "acknowledge", "audio_pause")

#: Export formats.
EXPORT_FORMATS = ("csv", "json")

#: Default free-space threshold of the STORAGE_LOW alarm, bytes (weeks of entries at one a minute).
STORAGE_LOW_BYTES = 64 * 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    action TEXT NOT NULL,
    utc TEXT NOT NULL,
    utc_offset_min INTEGER NOT NULL,
    monotonic_ns INTEGER NOT NULL,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    command_id TEXT,
    outcome TEXT NOT NULL,
    reason TEXT NOT NULL,
    old_json TEXT,
    new_json TEXT,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_kind ON entries (kind, seq);
CREATE INDEX IF NOT EXISTS entries_command ON entries (command_id, seq);
CREATE TABLE IF NOT EXISTS head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    count INTEGER NOT NULL,
    last_hash TEXT NOT NULL,
    state TEXT NOT NULL,
    seal TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS entries_no_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'journal entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_no_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'journal entries are append-only'); END;
"""

_COLUMNS = (*CHAINED_FIELDS, "hash")
_INSERT_ENTRY = f"INSERT INTO entries ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


#: Most readings staged before they are committed on their own (outside a batch): the readings a
#: crash can lose when nothing else commits meanwhile.
READINGS_PER_COMMIT = 96


class JournalError(ItbError):
    """The journal could not be written or read (I/O, corruption, wrong file)."""


class EntryKind(enum.Enum):
    """What an entry records."""

    AUDIT = "audit"
    PRESCRIPTION = "prescription"
    OVERRIDE = "override"
    PROGRAMME = "programme"
    LEDGER = "ledger"
    COMMAND = "command"
    READING = "reading"
    #: Readings recorded in a row, as one chained entry; :meth:`Journal.entries` expands it into readings.
    READING_BATCH = "reading_batch"
    ALARM = "alarm"


@dataclass(frozen=True)
class JournalEntry:
    """One entry as stored (``old``/``new`` decoded from JSON).

    :param seq: position in the chain, from 1.
    :param kind: what it records (an :class:`EntryKind` value).
    :param action: what happened (``raise``, ``pending``, ``committed``...).
    :param utc: ISO-8601 UTC time.
    :param utc_offset_min: the local offset from UTC at that time, minutes.
    :param monotonic_ns: the controller's monotonic time, ns.
    :param actor: who acted.
    :param role: under which role.
    :param command_id: the command ID, if any.
    :param outcome: the outcome, if any ("" otherwise).
    :param reason: why ("" if none given).
    :param old: previous value, if any.
    :param new: new value, if any.
    :param hash: this entry's hash.
    """

    seq: int
    kind: str
    action: str
    utc: str
    utc_offset_min: int
    monotonic_ns: int
    actor: str
    role: str
    command_id: str | None
    outcome: str
    reason: str
    old: Any
    new: Any
    hash: str

    @property
    def monotonic_ms(self) -> int:
        """The monotonic time in whole ms."""
        return self.monotonic_ns // 1_000_000


@dataclass(frozen=True)
class CommandRecord:
    """A command as the journal knows it.

    :param command_id: unique ID, chosen before sending.
    :param kind: what kind of command (``set_rate``, ``bolus_patient``...).
    :param params: its parameters as recorded when pending.
    :param status: ``pending`` or one of :data:`COMMAND_OUTCOMES`.
    :param detail: the latest completion detail.
    :param pending_seq: sequence number of the pending entry.
    :param pending_monotonic_ns: monotonic time of the pending entry, ns.
    :param pending_utc: UTC time of the pending entry (ISO-8601); monotonic time does not
        survive a reboot, wall time does.
    """

    command_id: str
    kind: str
    params: Mapping[str, Any]
    status: str
    detail: Any
    pending_seq: int
    pending_monotonic_ns: int
    pending_utc: str = ""

    @property
    def unresolved(self) -> bool:
        """True while nobody knows whether it took effect (pending or uncertain)."""
        return self.status in ("pending", "uncertain")


@dataclass(frozen=True)
class VerifyReport:
    """Result of :func:`verify_journal`.

    :param ok: True if nothing was found wrong.
    :param entries_checked: how many entries were read.
    :param problems: one line per problem, each saying what and where.
    :param first_bad_seq: the first sequence number that failed, if any.
    :param signature_checked: True if the head's seal verified with a ``system`` key of the trust store.
    :param signed: True if the journal carries a seal key (every journal this code writes does).
    :param sealed_by: the sealing key as the trust store names it ("" if unknown).
    :param closed: True if the head was sealed by a clean close (False: open, or a crash).
    """

    ok: bool
    entries_checked: int
    problems: tuple[str, ...]
    first_bad_seq: int | None = None
    signature_checked: bool = False
    signed: bool = False
    sealed_by: str = ""
    closed: bool = False


#: Metadata bound into the genesis hash, in order (see :func:`controller.audit.genesis_hash`).
_GENESIS_META = ("schema_version", "created_utc", "seal_public_key")


def _genesis(meta: Mapping[str, Any]) -> str:
    """The genesis hash of the journal whose ``meta`` table is given (KeyError if a key is missing)."""
    return genesis_hash(meta["journal_id"], *(str(meta[name]) for name in _GENESIS_META))


def new_command_id() -> str:
    """A fresh unique command ID (UUID4, hex)."""
    return uuid.uuid4().hex


def _connect(path: Path, *, read_only: bool) -> sqlite3.Connection:
    if read_only:
        if not path.is_file():
            raise JournalError(f"journal {path} does not exist")
        # A file: URI must be percent-encoded, or '#', '%' and '?' in the path change its meaning.
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                             check_same_thread=False)
    else:
        db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    return db


def _decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _expanded(entry: JournalEntry) -> Iterator[JournalEntry]:
    """``entry``, or for a reading batch one ``reading`` entry per reading it holds (its seq and hash)."""
    if entry.kind != EntryKind.READING_BATCH.value:
        yield entry
        return
    for one in entry.new["readings"]:
        yield JournalEntry(entry.seq, EntryKind.READING.value, "reading", one["utc"], one["utc_offset_min"],
                           one["monotonic_ns"], entry.actor, entry.role, None, "", "", None, one["reading"],
                           entry.hash)


def _row_to_entry(row: Sequence[Any]) -> JournalEntry:
    values = dict(zip(_COLUMNS, row, strict=True))
    return JournalEntry(
        seq=values["seq"],
        kind=values["kind"],
        action=values["action"],
        utc=values["utc"],
        utc_offset_min=values["utc_offset_min"],
        monotonic_ns=values["monotonic_ns"],
        actor=values["actor"],
        role=values["role"],
        command_id=values["command_id"],
        outcome=values["outcome"],
        reason=values["reason"],
        old=_decode(values["old_json"]),
        new=_decode(values["new_json"]),
        hash=values["hash"],
    )


class _Pending(NamedTuple):
    """An entry to append, before it gets its sequence number and hash (a tuple: one is built per reading)."""

    kind: EntryKind
    action: str
    actor: Actor
    command_id: str | None
    outcome: str
    reason: str
    old_json: str | None
    new_json: str | None
    utc: str
    utc_offset_min: int
    monotonic_ns: int


class Journal(ClosesOnExit):
    """The controller's journal over one SQLite file (created if missing).

    Thread-safe: one lock serialises every write.

    :param path: the journal file, or :data:`IN_MEMORY` (tests only: nothing survives the process).
    :param clock: the injected clock (UTC and monotonic time of every entry).
    :param local_tz: the time zone whose UTC offset is stored with each entry
        (default: the system's local zone).
    :param fault_hook: test hook called with the name of each write point.
    :param seal_key: the private key that seals the head (default: the journal key of the rig's
        security directory, :class:`controller.signing.RigSecurity`); fixed when the journal is
        created, so a journal is only ever written with its own key.
    :raises JournalError: if the file is not a journal, cannot be opened in WAL mode, its head
        seal does not verify, or it was sealed with another key.
    """

    def __init__(
        self,
        path: str | Path,
        clock: Clock,
        *,
        local_tz: tzinfo | None = None,
        fault_hook: Callable[[str], None] | None = None,
        seal_key: SigningKey | None = None,
    ) -> None:
        if seal_key is not None and not isinstance(seal_key, SigningKey):
            raise ConfigError("seal_key", type(seal_key).__name__, "a controller.signing.SigningKey")
        self._key = seal_key if seal_key is not None else RigSecurity.load().journal_key
        self.path = Path(path)
        self._storage_dir: str | None = None
        self._clock = clock
        self._local_tz = local_tz
        self.fault_hook = fault_hook
        self._lock = threading.RLock()
        self._closed = False
        #: Chained rows not yet committed, and the head they follow.
        self._tail: list[list[Any]] = []
        self._tail_base: tuple[int, str] = (0, "")
        #: Other statements (of subclasses' tables) to commit with the next transaction.
        self._staged: list[tuple[str, tuple[Any, ...]]] = []
        self._tx_depth = 0
        self._in_batch = False
        #: Readings staged since the last commit.
        self._staged_readings = 0
        #: Readings recorded since the last other entry (not yet chained), and their actor.
        self._readings: list[dict[str, Any]] = []
        self._readings_actor: Actor = SYSTEM_ACTOR
        #: In-process view of every command: ID -> (pending entry, latest completion or None).
        self._commands: dict[str, tuple[JournalEntry, JournalEntry | None]] = {}
        try:
            self._db = _connect(self.path, read_only=False)
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: {exc}") from exc
        try:
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if tables and "meta" not in tables:
                raise JournalError(f"{self.path} is an SQLite file but not an itb journal (tables {sorted(tables)})")
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            self._db.execute("PRAGMA synchronous=FULL")
            in_memory = str(path) == IN_MEMORY
            if (mode != "wal" and not in_memory) or self._db.execute("PRAGMA synchronous").fetchone()[0] != 2:
                raise JournalError(f"journal {self.path}: could not enable WAL with synchronous=FULL")
            self._db.executescript(_SCHEMA)
            self._init_meta()
            self.journal_id: str = self._meta("journal_id")
            self._tail_base = self._head()
            self._load_commands()
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.Error):
                raise JournalError(f"journal {self.path}: {exc}") from exc
            raise

    # -- lifecycle -------------------------------------------------------------------------------------

    def _init_meta(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if self._db.execute("SELECT value FROM meta WHERE key='journal_id'").fetchone() is None:
                jid = uuid.uuid4().hex
                meta = {
                    "journal_id": jid,
                    "schema_version": str(JOURNAL_SCHEMA_VERSION),
                    "created_utc": self._clock.utc_now().isoformat(),
                    "seal_key_id": self._key.key_id,
                    "seal_public_key": base64.b64encode(self._key.public_key).decode("ascii"),
                }
                self._db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", list(meta.items()))
                genesis = _genesis(meta)
                self._db.execute("INSERT INTO head (id, count, last_hash, state, seal) VALUES (1, 0, ?, 'open', ?)",
                                 (genesis, self._seal(jid, 0, genesis, "open")))
            else:
                meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
                if meta.get("schema_version") != str(JOURNAL_SCHEMA_VERSION):
                    raise JournalError(f"journal {self.path}: unsupported schema version {meta.get('schema_version')}")
                if meta.get("seal_key_id") != self._key.key_id:
                    raise JournalError(f"journal {self.path}: sealed with key {meta.get('seal_key_id')}, not with this "
                                       f"rig's journal key {self._key.key_id}")
                count, last_hash, state, seal = self._db.execute(
                    "SELECT count, last_hash, state, seal FROM head WHERE id=1").fetchone()
                if not seal_verifies(self._key.public_key, seal, seal_message(meta["journal_id"], count, last_hash,
                                                                              state)):
                    raise JournalError(f"journal {self.path}: the head's seal does not verify: the journal was "
                                       "altered; it is not appended to (run itb journal verify)")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def _seal(self, journal_id: str, count: int, last_hash: str, state: str) -> str:
        """The seal of a head: base64 of the journal key's signature."""
        return base64.b64encode(self._key.sign(seal_message(journal_id, count, last_hash, state))).decode("ascii")

    def _meta(self, key: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        if row is None:
            raise JournalError(f"journal {self.path}: meta key {key!r} missing")
        return str(row[0])

    def close(self) -> None:
        """Commit what is staged, seal the head as ``closed``, checkpoint the WAL and close (idempotent)."""
        with self._lock:
            if self._closed:
                return
            try:
                self._flush_locked()
                self._seal_closed()
            finally:
                self._closed = True
                self._tail = []
                self._staged = []
                self._readings = []
                try:
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    self._db.close()

    def _seal_closed(self) -> None:
        count, last_hash = self._head()
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("UPDATE head SET state='closed', seal=? WHERE id=1",
                             (self._seal(self.journal_id, count, last_hash, "closed"),))
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise JournalError(f"journal {self.path}: sealing on close failed: {exc}") from exc

    def abandon(self) -> None:
        """Close without committing what is staged, as a crash would (tests of crash recovery)."""
        with self._lock:
            self._tail, self._staged, self._readings = [], [], []
            if not self._closed:
                self._closed = True
                self._db.close()

    # -- the one write path ----------------------------------------------------------------------------

    def _hook(self, point: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(point)

    def _chain(self, items: Sequence[_Pending], count: int, prev: str) -> list[list[Any]]:
        """Give ``items`` their sequence numbers and hashes after (``count``, ``prev``); return full rows."""
        rows = []
        for item in items:
            count += 1
            row = [count, item.kind.value, item.action, item.utc, item.utc_offset_min, item.monotonic_ns,
                   item.actor.name, item.actor.role.value, item.command_id, item.outcome, item.reason,
                   item.old_json, item.new_json, prev]
            prev = row_hash(row)
            row.append(prev)
            rows.append(row)
        return rows

    def _head(self) -> tuple[int, str]:
        count, last_hash = self._db.execute("SELECT count, last_hash FROM head WHERE id=1").fetchone()
        return int(count), str(last_hash)

    def _commit(self, rows: Sequence[Sequence[Any]], base: tuple[int, str],
                statements: Sequence[tuple[str, tuple[Any, ...]]] = ()) -> None:
        """Insert ``rows`` (chained after ``base``), run ``statements`` and move the head, in one
        transaction. Durable on return."""
        try:
            self._hook("begin")
            self._db.execute("BEGIN IMMEDIATE")
            try:
                if self._head() != base:
                    raise JournalError(f"journal {self.path}: another writer appended; one writer per journal")
                if self.fault_hook is not None:
                    for _row in rows:
                        self._hook("insert")
                self._db.executemany(_INSERT_ENTRY, rows)
                for sql, params in statements:
                    self._hook("insert")
                    self._db.execute(sql, params)
                if rows:
                    self._hook("head")
                    last = rows[-1]
                    self._db.execute("UPDATE head SET count=?, last_hash=?, state='open', seal=? WHERE id=1",
                                     (last[0], last[-1], self._seal(self.journal_id, last[0], last[-1], "open")))
                self._hook("commit")
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: write failed: {exc}") from exc
        self._hook("committed")

    def _append(self, items: Sequence[_Pending], *, durable: bool = True,
                want_entries: bool = True) -> tuple[JournalEntry, ...]:
        """Chain ``items`` after everything written so far (caller holds the lock).

        ``want_entries=False`` returns no entries (a routine reading's caller needs none; the
        command index needs them, so commands always want them).

        A ``durable`` append commits everything staged, ``items`` included, before it returns,
        unless a :meth:`transaction` is open (then the transaction commits it when it ends). A
        non-durable append stays staged until the next commit: a crash before then loses it.
        Inside :meth:`batch`, readings and free audit entries are non-durable.
        """
        if self._closed:
            raise StateError(f"journal {self.path} is closed")
        if not items:
            return ()
        self._chain_readings()
        rows = self._chain_tail(items)
        if want_entries or any(item.kind is EntryKind.COMMAND for item in items):
            entries = tuple(_row_to_entry(r) for r in rows)
        else:
            entries = ()
        for item, entry in zip(items, entries):
            if item.kind is EntryKind.COMMAND:
                self._index_command(entry)
        if durable and self._tx_depth == 0:
            self._flush_locked()
        return entries

    def _chain_tail(self, items: Sequence[_Pending]) -> list[list[Any]]:
        """Chain ``items`` after the last entry written or staged; add their rows to the tail."""
        after = (self._tail[-1][0], self._tail[-1][-1]) if self._tail else self._tail_base
        rows = self._chain(items, *after)
        self._tail.extend(rows)
        return rows

    def _chain_readings(self) -> None:
        """Chain the readings recorded since the last other entry as one reading batch (caller holds the lock)."""
        readings = self._readings
        if not readings:
            return
        self._readings = []
        last = readings[-1]
        self._chain_tail([_Pending(EntryKind.READING_BATCH, "readings", self._readings_actor, None, "", "", None,
                                   canonical_json({"readings": readings}, plain=True), last["utc"],
                                   last["utc_offset_min"], last["monotonic_ns"])])

    def _stage(self, sql: str, params: tuple[Any, ...], *, durable: bool) -> None:
        """Stage one statement on another table of this database, committed like :meth:`_append`."""
        if self._closed:
            raise StateError(f"journal {self.path} is closed")
        self._staged.append((sql, params))
        if durable and self._tx_depth == 0:
            self._flush_locked()

    def _flush_locked(self) -> None:
        """Commit everything staged in one transaction. On failure it is all dropped (never half-written)."""
        self._chain_readings()
        if not self._tail and not self._staged:
            return
        self._before_commit()
        rows, base, statements = self._tail, self._tail_base, self._staged
        self._tail, self._staged = [], []
        self._staged_readings = 0
        try:
            self._commit(rows, base, statements)
        except BaseException:
            self._reload_view()
            if not self._closed:
                self._tail_base = self._head()
            raise
        # Committed: the head is what the transaction wrote (it checked that nobody else moved it).
        self._tail_base = (rows[-1][0], rows[-1][-1]) if rows else base

    def _write(self, items: Sequence[_Pending], *, durable: bool = True, batchable: bool = False,
               want_entries: bool = True) -> tuple[JournalEntry, ...]:
        """Append ``items``: durable on return when ``durable``, unless ``batchable`` inside :meth:`batch`."""
        with self._lock:
            return self._append(items, durable=durable and not (batchable and self._in_batch),
                                want_entries=want_entries)

    def flush(self) -> None:
        """Commit everything staged now (durable on return)."""
        with self._lock:
            if self._tx_depth == 0:
                self._flush_locked()

    @contextmanager
    def transaction(self) -> Iterator[Journal]:
        """Group every write inside the block into one durable commit at its end.

        If the block raises, what it staged is discarded (nothing half-applied) and the error
        propagates; what was staged before the block is kept. Blocks nest: only the outermost
        commits. The lock is held for the whole block.
        """
        with self._lock:
            if self._closed:
                raise StateError(f"journal {self.path} is closed")
            self._chain_readings()  # readings from before the block are kept if it raises
            mark = (len(self._tail), len(self._staged), self._view_mark())
            self._tx_depth += 1
            try:
                yield self
            except BaseException:
                self._tx_depth -= 1
                self._readings = []
                del self._tail[mark[0]:]
                del self._staged[mark[1]:]
                self._restore_view(mark[2])
                raise
            self._tx_depth -= 1
            if self._tx_depth == 0:
                self._flush_locked()

    @contextmanager
    def batch(self) -> Iterator[Journal]:
        """Group readings and audit entries into one transaction (fewer fsyncs in long runs).

        Inside the block, :meth:`record_reading` and :meth:`append_audit` entries are
        chained in memory and committed together when the block ends (also when it
        raises). Everything else (commands, prescriptions, programmes, ledger
        snapshots, alarms) is still durable before its method returns, and commits
        the entries buffered before it. A crash inside the block loses the buffered
        entries as a whole, never part of one.

        :raises StateError: if a batch is already open.
        """
        with self._lock:
            if self._in_batch:
                raise StateError("a journal batch is already open")
            if self._closed:
                raise StateError(f"journal {self.path} is closed")
            self._in_batch = True
        try:
            yield self
        finally:
            with self._lock:
                self._in_batch = False
                self._flush_locked()

    def _item(
        self,
        kind: EntryKind,
        action: str,
        actor: Actor,
        *,
        command_id: str | None = None,
        outcome: str = "",
        reason: str = "",
        old: Any = None,
        new: Any = None,
    ) -> _Pending:
        if not isinstance(actor, Actor):
            raise ConfigError("actor", actor, "an Actor (name and role)")
        if not isinstance(action, str) or not action:
            raise ConfigError("action", action, "a non-empty string")
        if not isinstance(reason, str):
            raise ConfigError("reason", reason, "a string")
        utc, offset_min, monotonic_ns = self._stamp()
        return _Pending(
            kind,
            action,
            actor,
            command_id,
            outcome,
            reason,
            None if old is None else canonical_json(old),
            None if new is None else canonical_json(new),
            utc,
            offset_min,
            monotonic_ns,
        )

    def _stamp(self) -> tuple[str, int, int]:
        """Now: the ISO-8601 UTC time, the local offset from UTC (minutes) and the monotonic time (ns)."""
        utc = self._clock.utc_now()
        local = utc.astimezone(self._local_tz) if self._local_tz is not None else utc.astimezone()
        offset = local.utcoffset()
        return (utc.isoformat(), int(offset.total_seconds() // 60) if offset is not None else 0,
                self._clock.monotonic_ns())

    # -- recording -------------------------------------------------------------------------------------

    def append_audit(
        self,
        actor: Actor,
        action: str,
        *,
        old: Any = None,
        new: Any = None,
        reason: str = "",
        command_id: str | None = None,
        outcome: str = "",
        durable: bool = True,
    ) -> JournalEntry:
        """Record one audited action (PER-04).

        :param actor: who acted.
        :param action: what they did (``"titration_step"``, ``"refill"``...).
        :param old: the value before (JSON-representable, no floats).
        :param new: the value after.
        :param reason: why.
        :param command_id: the command it relates to, if any.
        :param outcome: the outcome, if known.
        :param durable: False stages the entry until the next commit (a record of routine events
            that nobody is told was stored; a crash before the next commit loses it).
        :return: the stored entry.
        :raises ConfigError: for an invalid actor, action or payload.
        :raises JournalError: if the write failed (nothing was recorded).
        """
        item = self._item(EntryKind.AUDIT, action, actor, old=old, new=new, reason=reason, command_id=command_id,
                          outcome=outcome)
        return self._write([item], durable=durable, batchable=True)[0]

    def record_alarm(self, *, event: str, code: str, priority: str, actor: Actor, detail: str = "",
                     durable: bool = True) -> JournalEntry:
        """Record an alarm event (ALM-06); used by :class:`controller.alarms.AlarmManager`.

        :param event: one of :data:`ALARM_EVENTS`.
        :param code: the alarm code value.
        :param priority: the priority name.
        :param actor: who raised, cleared, acknowledged or paused.
        :param detail: context.
        :param durable: False stages it for the next commit (annunciation never waits for the disk).
        """
        if event not in ALARM_EVENTS:
            raise ConfigError("event", event, f"one of {ALARM_EVENTS}")
        item = self._item(EntryKind.ALARM, event, actor, reason=detail, new={"code": code, "priority": priority})
        return self._write([item], durable=durable)[0]

    def record_reading(self, reading: Mapping[str, Any], *, actor: Actor = SYSTEM_ACTOR,
                       durable: bool = True) -> None:
        """Record a pump (or balance) reading: state, rate, dispensed volume... (integers, no floats).

        A reading is written at every poll, so this returns no entry (read it back with the
        journal's queries). It is held, with its times, until the next other entry or commit, and
        the readings held then are chained as one :data:`EntryKind.READING_BATCH` entry.

        :param durable: False stages it for the next commit (a routine reading at every poll costs no fsync),
            at the latest the one made when :data:`READINGS_PER_COMMIT` are staged (outside a :meth:`batch`).
        """
        if not isinstance(actor, Actor):
            raise ConfigError("actor", actor, "an Actor (name and role)")
        utc, offset_min, monotonic_ns = self._stamp()
        one = {"utc": utc, "utc_offset_min": offset_min, "monotonic_ns": monotonic_ns, "reading": jsonable(reading)}
        with self._lock:
            if self._closed:
                raise StateError(f"journal {self.path} is closed")
            if self._readings and actor != self._readings_actor:
                self._chain_readings()
            self._readings_actor = actor
            self._readings.append(one)
            self._staged_readings += 1
            if self._tx_depth == 0 and not self._in_batch and (durable or self._staged_readings >= READINGS_PER_COMMIT):
                self._flush_locked()

    def record_ledger_snapshot(self, snapshot: Any, *, now_ms: int, actor: Actor = SYSTEM_ACTOR,
                               durable: bool = True) -> JournalEntry:
        """Record an exact kernel ledger snapshot taken at monotonic ``now_ms``.

        :param snapshot: the kernel's ``Ledger.snapshot()`` (JSON-representable or bytes).
        :param now_ms: the monotonic time the snapshot refers to, ms.
        :param durable: False stages it for the next commit (the audit copy of what the resume
            point holds anyway).
        """
        if isinstance(now_ms, bool) or not isinstance(now_ms, int):
            raise ConfigError("now_ms", now_ms, "an integer monotonic time in ms")
        item = self._item(EntryKind.LEDGER, "snapshot", actor, new={"now_ms": now_ms, "snapshot": snapshot})
        return self._write([item], durable=durable)[0]

    def record_programme_committed(
        self, programme: Mapping[str, Any], *, actor: Actor, command_id: str | None = None, reason: str = ""
    ) -> JournalEntry:
        """Record that ``programme`` is now the committed programme on the pump (after read-back)."""
        previous = self.last_committed_programme()
        item = self._item(EntryKind.PROGRAMME, "committed", actor, old=previous, new=dict(programme),
                          command_id=command_id, reason=reason, outcome="applied")
        return self._write([item])[0]

    def record_prescription(self, prescription: Any, actor: Actor, *, assessment: Any, reason: str = "") -> JournalEntry:
        """Record a new prescription in effect, with every soft-limit override first (PRX-02).

        The override entries and the prescription entry are one transaction, the
        overrides first: the prescription is never on record without them.

        :param prescription: a :class:`controller.prescription.Prescription`.
        :param actor: who puts it in effect; must be a clinician if any soft limit is overridden.
        :param assessment: the :class:`controller.prescription.ChangeAssessment` of this prescription
            against the one in effect (:func:`controller.prescription.assess_change`); it must be acceptable.
        :param reason: why the prescription changes.
        :return: the prescription entry.
        :raises ConfigError: if the assessment is not acceptable or the actor lacks the prescriber role.
        """
        items = []
        if assessment is None or getattr(assessment, "new", None) != prescription:
            raise ConfigError("assessment", type(assessment).__name__, "the ChangeAssessment of this prescription")
        assessment.require_acceptable()
        breaches = [b for b in assessment.soft_limit_breaches if b.overridden_by is not None]
        if breaches and actor.role is not Role.CLINICIAN:
            raise ConfigError("actor.role", actor.role.value, "clinician (soft-limit overrides, PRX-02)")
        for breach in breaches:
            items.append(
                self._item(
                    EntryKind.OVERRIDE,
                    "soft_limit_override",
                    actor,
                    reason=breach.overridden_by.reason,
                    new={
                        "field": breach.field,
                        "value": breach.value,
                        "bound": breach.bound,
                        "limit": breach.limit,
                        "prescriber": breach.overridden_by.prescriber,
                    },
                )
            )
        for change in assessment.magnitude_changes:
            items.append(
                self._item(
                    EntryKind.AUDIT,
                    "magnitude_confirmed",
                    actor,
                    old={"field": change.field, "value": change.old},
                    new={"field": change.field, "value": change.new},
                    reason="tenfold change confirmed (VAL-02)",
                )
            )
        previous = self.last_prescription_record()
        toml_text = prescription.to_toml()
        items.append(
            self._item(
                EntryKind.PRESCRIPTION,
                "in_effect",
                actor,
                reason=reason,
                old=None if previous is None else {"prescription_id": previous["prescription_id"]},
                new={
                    "prescription_id": prescription.prescription_id,
                    "toml": toml_text,
                    "toml_sha256": hashlib.sha256(toml_text.encode("utf-8")).hexdigest(),
                },
            )
        )
        return self._write(items)[-1]

    # -- commands (BOL-05, HAL-02/03) -------------------------------------------------------------------

    def begin_command(
        self, command_id: str, kind: str, params: Mapping[str, Any], *, actor: Actor = SYSTEM_ACTOR
    ) -> JournalEntry:
        """Record a command as pending, durably. Call this BEFORE anything is sent.

        Inside a :meth:`transaction` the record is durable when the transaction ends, which
        must also be before anything is sent.

        :param command_id: unique ID (see :func:`new_command_id`).
        :param kind: the command kind (``set_rate``, ``bolus_patient``, ``stop``...).
        :param params: its parameters (integers in internal units).
        :param actor: who asked for it.
        :raises ConfigError: if the ID is empty or already used.
        """
        if not isinstance(command_id, str) or not command_id:
            raise ConfigError("command_id", command_id, "a non-empty string")
        if not isinstance(kind, str) or not kind:
            raise ConfigError("kind", kind, "a non-empty string")
        with self._lock:
            if command_id in self._commands:
                raise ConfigError("command_id", command_id, "unique (this ID is already in the journal)")
            item = self._item(EntryKind.COMMAND, "pending", actor, command_id=command_id,
                              new={"kind": kind, "params": dict(params)})
            return self._append([item])[0]

    def complete_command(
        self, command_id: str, outcome: str, *, detail: Any = None, actor: Actor = SYSTEM_ACTOR,
        durable: bool = True,
    ) -> JournalEntry:
        """Record what a command is known to have done.

        ``uncertain`` leaves it unresolved; a later call with ``applied`` or
        ``not_applied`` (after reconciling with the pump) resolves it.

        :param command_id: the ID given to :meth:`begin_command`.
        :param outcome: one of :data:`COMMAND_OUTCOMES`.
        :param detail: what was established (readings, counters...).
        :param durable: False stages the outcome until the next commit. Safe for any outcome:
            if a crash loses it, the command is still pending in the journal, so a restart
            treats it as uncertain and reconciles it with the pump.
        :raises ConfigError: for an unknown ID or outcome.
        :raises StateError: if the command is already resolved.
        """
        if outcome not in COMMAND_OUTCOMES:
            raise ConfigError("outcome", outcome, f"one of {COMMAND_OUTCOMES}")
        with self._lock:
            record = self._command_record(command_id)
            if record is None:
                raise ConfigError("command_id", command_id, "the ID of a pending command")
            if not record.unresolved:
                raise StateError(f"command {command_id} is already resolved as {record.status}")
            item = self._item(EntryKind.COMMAND, "completed", actor, command_id=command_id, outcome=outcome,
                              new=detail)
            return self._append([item], durable=durable)[0]

    def command(self, command_id: str) -> CommandRecord | None:
        """The command with this ID, or None (staged records included)."""
        with self._lock:
            return self._command_record(command_id)

    def commands(self) -> tuple[CommandRecord, ...]:
        """Every command, in the order it was recorded (staged records included)."""
        with self._lock:
            records = [self._command_record(cid) for cid in self._commands]
        return tuple(r for r in records if r is not None)

    def unresolved_commands(self) -> tuple[CommandRecord, ...]:
        """Commands pending or uncertain, oldest first: reconcile these, never re-send them."""
        with self._lock:
            records = [self._command_record(cid) for cid in self._commands]
        return tuple(r for r in records if r is not None and r.unresolved)

    def last_boluses(self) -> dict[str, CommandRecord]:
        """For each bolus command kind, the latest bolus that was or may have been delivered
        (applied, pending or uncertain): what a restart needs to keep lockouts (PER-02)."""
        with self._lock:
            records = [self._command_record(cid) for cid in self._commands]
        latest: dict[str, CommandRecord] = {}
        for record in records:
            if record is not None and record.kind.startswith("bolus") and record.status != "not_applied":
                latest[record.kind] = record
        return latest

    def pending_boluses(self) -> tuple[CommandRecord, ...]:
        """Unresolved commands whose kind starts with ``bolus``: a restart must not deliver them again."""
        return tuple(r for r in self.unresolved_commands() if r.kind.startswith("bolus"))

    def _index_command(self, entry: JournalEntry) -> None:
        """Keep the in-process view of commands up to date with one command entry."""
        if entry.action == "pending":
            self._commands[entry.command_id] = (entry, None)
        elif entry.command_id in self._commands:
            self._commands[entry.command_id] = (self._commands[entry.command_id][0], entry)

    def _load_commands(self) -> None:
        """Read every command entry of the file into the in-process view (at open)."""
        self._commands = {}
        rows = self._db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM entries WHERE kind='command' ORDER BY seq").fetchall()
        for row in rows:
            self._index_command(_row_to_entry(row))

    def _before_commit(self) -> None:
        """Called before each commit, under the lock, to stage what must go with it (subclasses)."""

    def _reload_view(self) -> None:
        """After a failed commit (everything staged was dropped): the in-process view is the file's again."""
        self._load_commands()

    def _view_mark(self) -> Any:
        """A copy of the in-process view, to restore if a transaction is discarded."""
        return dict(self._commands)

    def _restore_view(self, mark: Any) -> None:
        self._commands = mark

    def _command_record(self, command_id: str) -> CommandRecord | None:
        found = self._commands.get(command_id)
        if found is None:
            return None
        pending, last = found
        return CommandRecord(
            command_id=command_id,
            kind=pending.new["kind"],
            params=pending.new["params"],
            status="pending" if last is None else last.outcome,
            detail=None if last is None else last.new,
            pending_seq=pending.seq,
            pending_monotonic_ns=pending.monotonic_ns,
            pending_utc=pending.utc,
        )

    # -- queries for restart --------------------------------------------------------------------------

    def _last(self, kind: EntryKind) -> JournalEntry | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM entries WHERE kind=? ORDER BY seq DESC LIMIT 1", (kind.value,)
            ).fetchone()
        return None if row is None else _row_to_entry(row)

    def alarm_events(self) -> tuple[tuple[str, str], ...]:
        """Every alarm event as ``(event, code value)``, oldest first, for
        :meth:`controller.alarms.AlarmManager.restore` after a restart."""
        return tuple((e.action, e.new["code"]) for e in self.entries(EntryKind.ALARM) if e.action != "audio_pause")

    def last_prescription_record(self) -> dict[str, Any] | None:
        """The last prescription entry's payload (``prescription_id``, ``toml``, ``toml_sha256``), or None."""
        entry = self._last(EntryKind.PRESCRIPTION)
        return None if entry is None else dict(entry.new)

    def last_prescription(self, *, library: Any = None) -> Any:
        """The prescription last put in effect, re-parsed and checked, or None.

        :raises JournalError: if the stored text no longer matches its hash or fails to parse
            (PER-06: never fall back to defaults).
        """
        from controller.prescription import parse_prescription

        record = self.last_prescription_record()
        if record is None:
            return None
        text = record["toml"]
        if hashlib.sha256(text.encode("utf-8")).hexdigest() != record["toml_sha256"]:
            raise JournalError(f"journal {self.path}: stored prescription fails its checksum")
        try:
            return parse_prescription(text, library=library)
        except ConfigError as exc:
            raise JournalError(f"journal {self.path}: stored prescription is invalid: {exc}") from exc

    def last_committed_programme(self) -> dict[str, Any] | None:
        """The programme last recorded as committed on the pump, or None."""
        entry = self._last(EntryKind.PROGRAMME)
        return None if entry is None else dict(entry.new)

    def last_ledger_snapshot(self) -> tuple[Any, int] | None:
        """The last kernel ledger snapshot and the monotonic ms it refers to, or None.

        Bytes snapshots come back as bytes.
        """
        entry = self._last(EntryKind.LEDGER)
        if entry is None:
            return None
        snapshot = entry.new["snapshot"]
        if isinstance(snapshot, dict) and set(snapshot) == {"$bytes_hex"}:
            snapshot = bytes.fromhex(snapshot["$bytes_hex"])
        return snapshot, int(entry.new["now_ms"])

    def entries(self, kind: EntryKind | None = None) -> Iterator[JournalEntry]:
        """Every committed entry in order, optionally of one kind.

        Reading batches are expanded: each reading comes as a ``reading`` entry (with its own
        times, and the sequence number and hash of its batch); only ``kind=EntryKind.READING_BATCH``
        gives the batches as stored.
        """
        kinds = (kind.value,) if kind is not None else ()
        if kind is EntryKind.READING:
            kinds = (EntryKind.READING.value, EntryKind.READING_BATCH.value)
        with self._lock:
            rows = self._db.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM entries"
                + (f" WHERE kind IN ({', '.join('?' * len(kinds))})" if kinds else "") + " ORDER BY seq", kinds
            ).fetchall()
        if kind is EntryKind.READING_BATCH:
            return iter([_row_to_entry(r) for r in rows])
        return iter([one for r in rows for one in _expanded(_row_to_entry(r))])

    def durability_settings(self) -> dict[str, Any]:
        """The connection's SQLite durability pragmas: ``journal_mode`` (``"wal"``) and ``synchronous`` (2 = FULL)."""
        with self._lock:
            return {
                "journal_mode": self._db.execute("PRAGMA journal_mode").fetchone()[0],
                "synchronous": self._db.execute("PRAGMA synchronous").fetchone()[0],
            }

    def count(self) -> int:
        """Number of entries (from the head record)."""
        with self._lock:
            return int(self._db.execute("SELECT count FROM head WHERE id=1").fetchone()[0])

    def storage_free_bytes(self) -> int:
        """Free space on the journal's file system, bytes (for the STORAGE_LOW alarm, PER-05).

        The folder is resolved once: the poll asks this every hour, and resolving walks every component.
        """
        if self._storage_dir is None:
            self._storage_dir = str(self.path.resolve().parent)
        if _STATVFS is None:
            return shutil.disk_usage(self._storage_dir).free
        st = _STATVFS(self._storage_dir)  # shutil.disk_usage's ``free``, without its total and used
        return st.f_bavail * st.f_frsize

    def storage_low(self, *, threshold_bytes: int = STORAGE_LOW_BYTES) -> bool:
        """True when free space is at or below ``threshold_bytes``: raise STORAGE_LOW before the disk is full.

        :param threshold_bytes: the alarm threshold, bytes, > 0.
        :raises ConfigError: for a non-positive or non-integer threshold.
        """
        if isinstance(threshold_bytes, bool) or not isinstance(threshold_bytes, int) or threshold_bytes <= 0:
            raise ConfigError("threshold_bytes", threshold_bytes, "an integer > 0 bytes")
        return self.storage_free_bytes() <= threshold_bytes

    def verify(self, *, trust: TrustStore | None = None) -> VerifyReport:
        """Verify this journal's chain and head (see :func:`verify_journal`)."""
        trust = trust if trust is not None else RigSecurity.load().trust
        with self._lock:
            return _verify(self._db, trust)


# ---------------------------------------------------------------------------------------------------
# verification and export (work on a closed file, read-only)


def _lenient_text(raw: bytes) -> str:
    """Decode stored text for verification; invalid UTF-8 (damage) survives as surrogates and fails its hash."""
    return raw.decode("utf-8", "surrogateescape")


def _check_seal(meta: Mapping[str, Any], head: Sequence[Any], trust: TrustStore) -> tuple[list[str], str, bool]:
    """Problems with the head's seal, the sealing key as the trust store names it, and whether it verified."""
    try:
        public_key = base64.b64decode(meta["seal_public_key"], validate=True)
    except (KeyError, TypeError, ValueError):
        return ["meta: the seal key is missing or damaged: not a sealed journal"], "", False
    key_id = key_id_of(public_key)
    problems = []
    if meta.get("seal_key_id") != key_id:
        problems.append(f"meta: seal key id {meta.get('seal_key_id')!r} is not that of the seal key ({key_id})")
    count, last_hash, state, seal = head
    if state not in ("open", "closed") or not isinstance(count, int) or not isinstance(last_hash, str) \
            or not last_hash.isascii() \
            or not seal_verifies(public_key, seal, seal_message(meta["journal_id"], count, last_hash, state)):
        problems.append("head: the seal does not verify: the head was rewritten without the journal key")
    trusted = trust.keys.get(key_id)
    if trusted is None:
        problems.append(f"head: sealed by key {key_id}, which the trust store does not know: the journal was "
                        "rebuilt with another key, or the trust store is another rig's")
        return problems, "", False
    if Role.SYSTEM not in trusted.roles:
        problems.append(f"head: sealed by {trusted}, which is not a system (journal) key")
    if trusted.revoked_utc is not None:
        problems.append(f"head: sealed by {trusted}, revoked at {trusted.revoked_utc.isoformat()}")
    return problems, str(trusted), not problems


def _verify(db: sqlite3.Connection, trust: TrustStore) -> VerifyReport:
    """Verify the journal behind ``db``; every kind of damage becomes a problem line, never an exception."""
    problems: list[str] = []
    first_bad: int | None = None
    checked = 0
    signed = False
    sealed_by = ""
    seal_ok = False
    closed = False

    def bad(seq: int | None, text: str) -> None:
        nonlocal first_bad
        problems.append(text)
        if seq is not None and (first_bad is None or seq < first_bad):
            first_bad = seq

    saved_factory = db.text_factory
    db.text_factory = _lenient_text
    try:
        check = db.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            bad(None, f"SQLite integrity check failed: {check}")
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        if not isinstance(meta.get("journal_id"), str):
            return VerifyReport(False, 0, ("meta: journal_id missing or damaged",))
        triggers = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
        for name in ("entries_no_update", "entries_no_delete"):
            if name not in triggers:
                bad(None, f"schema: append-only trigger {name} was removed")
        head = db.execute("SELECT count, last_hash, state, seal FROM head WHERE id=1").fetchone()
        signed = "seal_public_key" in meta
        try:
            prev = _genesis(meta)
        except KeyError as exc:
            return VerifyReport(False, 0, (f"meta: {exc.args[0]} missing",))
        expected_seq = 1
        for row in db.execute(f"SELECT {', '.join(_COLUMNS)} FROM entries ORDER BY seq"):
            fields = dict(zip(_COLUMNS, row, strict=True))
            seq = fields["seq"]
            checked += 1
            if not isinstance(seq, int) or isinstance(seq, bool):
                bad(expected_seq, f"entry {expected_seq}: sequence number damaged ({seq!r})")
                seq = expected_seq
            if seq != expected_seq:
                bad(expected_seq, f"entry {expected_seq}: missing (next stored entry is {seq}): deletion")
            if fields["prev_hash"] != prev:
                bad(seq, f"entry {seq}: does not link to the entry before it: deletion, insertion or reordering")
            try:
                matches = entry_hash(fields) == fields["hash"]
            except (ConfigError, TypeError, ValueError):
                matches = False
            if not matches:
                bad(seq, f"entry {seq}: content does not match its hash: edited")
            prev = fields["hash"]
            expected_seq = seq + 1
        if head is None:
            bad(None, "head: record missing")
        else:
            count, last_hash = head[0], head[1]
            seal_problems, sealed_by, seal_ok = _check_seal(meta, head, trust)
            for problem in seal_problems:
                bad(None, problem)
            closed = head[2] == "closed"
            if count != checked:
                where = checked + 1 if isinstance(count, int) and count > checked else None
                bad(where, f"head: records {count!r} entries but {checked} are stored: truncated or appended")
            elif last_hash != prev:
                bad(checked, f"head: last hash does not match entry {checked}: tail replaced")
    except Exception as exc:  # a damaged file can fail in many ways; the verdict must still be returned
        return VerifyReport(False, checked, (*problems, f"cannot read journal: {type(exc).__name__}: {exc}"),
                            first_bad)
    finally:
        db.text_factory = saved_factory
    return VerifyReport(not problems, checked, tuple(problems), first_bad, seal_ok, signed, sealed_by, closed)


def verify_journal(path: str | Path, *, trust: TrustStore | None = None) -> VerifyReport:
    """Verify a journal file: every entry's hash, the chain, contiguity, and the sealed head.

    Detects an edited, deleted, inserted or reordered entry, a truncated tail, a removed
    append-only trigger, a head rewritten without the journal key, and a chain rebuilt and
    sealed with a key that is not a ``system`` key of the trust store. Opens the file read-only.

    :param path: the journal file (closed, or a copy taken with its ``-wal`` file).
    :param trust: the trust store holding the journal key (default: the rig's,
        :class:`controller.signing.RigSecurity`).
    :return: the report; never raises for a damaged file.
    """
    trust = trust if trust is not None else RigSecurity.load().trust
    try:
        db = _connect(Path(path), read_only=True)
    except (JournalError, sqlite3.Error) as exc:
        return VerifyReport(False, 0, (f"cannot open journal: {exc}",))
    try:
        return _verify(db, trust)
    finally:
        db.close()


def export_journal(path: str | Path, fmt: str, out: TextIO) -> int:
    """Write every entry of a journal to ``out`` as CSV or JSON.

    CSV has one row per stored entry with the stored columns (``old_json``/``new_json``
    as JSON text); JSON is one object with ``journal_id``, ``created_utc``, the
    ``head`` record and ``entries`` (with ``old``/``new`` decoded, and each reading
    batch expanded into its readings, as :meth:`Journal.entries` gives them). Export does
    not verify: run :func:`verify_journal` for that.

    :param path: the journal file.
    :param fmt: ``"csv"`` or ``"json"``.
    :param out: a text stream.
    :return: the number of entries written.
    :raises ConfigError: for an unknown format.
    :raises JournalError: if the file cannot be read.
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError("format", fmt, f"one of {EXPORT_FORMATS}")
    try:
        db = _connect(Path(path), read_only=True)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            head = db.execute("SELECT count, last_hash, state FROM head WHERE id=1").fetchone()
            rows = db.execute(f"SELECT {', '.join(_COLUMNS)} FROM entries ORDER BY seq").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise JournalError(f"journal {path}: {exc}") from exc
    if fmt == "csv":
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(_COLUMNS)
        writer.writerows(rows)
        written = len(rows)
    else:
        entries = []
        for row in rows:
            values = dict(zip(_COLUMNS, row, strict=True))
            if values["kind"] == EntryKind.READING_BATCH.value:
                for one in _expanded(_row_to_entry(row)):
                    entries.append({**{k: v for k, v in asdict(one).items() if k not in ("old", "new")},
                                    "prev_hash": values["prev_hash"], "old": None, "new": one.new})
                continue
            values["old"] = _decode(values.pop("old_json"))
            values["new"] = _decode(values.pop("new_json"))
            entries.append(values)
        written = len(entries)
        document = {
            "journal_id": meta.get("journal_id"),
            "created_utc": meta.get("created_utc"),
            "head": {
                "count": head[0] if head else None,
                "last_hash": head[1] if head else None,
                "state": head[2] if head else None,
                "seal_key_id": meta.get("seal_key_id"),
            },
            "entries": entries,
        }
        json.dump(document, out, indent=1, sort_keys=True)
        out.write("\n")
    return written


def export_text(path: str | Path, fmt: str) -> str:
    """:func:`export_journal` into a string."""
    buffer = io.StringIO()
    export_journal(path, fmt, buffer)
    return buffer.getvalue()

