"""The run log: what a scenario run observed, one JSON object per line, flushed as it happens.

``run-log.jsonl`` in the report directory lets ``itb run --resume`` rebuild the
report of a run whose controller died: every poll's sample (with what the patient
model was fed), alarm event, clinical decision, injected fault, test dose, each
controller session (``segment``) and each gap while the controller was down. The
controller's own durable state is its journal (``journal.sqlite``); this file holds
only what the *report* needs, and nothing in it is read back into the controller.

Every line but a ``sample`` is written and flushed at once. ``sample`` lines (one
per poll, the bulk of the file) are **group-flushed**: kept in memory and written,
whole lines only, with the next line of any other type, when the controller's
journal makes a durable commit (the runner flushes then), every
:data:`FLUSH_EVERY_SAMPLES` samples, at least every :data:`FLUSH_INTERVAL_S` of
real time, and on :meth:`RunLog.close`. So a killed process loses at most the
samples since the last flush, never an alarm, decision, note or any other line,
and never part of a line. ``--resume`` reads the last sample's
``total_counted_nl``: the delivery of lost samples is not lost, it counts in the
gap (the pump's counter, read at recovery, is the truth). No fsync: a power cut
may lose the last lines. A line cut short by a kill is ignored on reading.

Line types (``type`` key) and their fields, times ``t_ms`` since the scenario start:

- ``segment``: ``index``, ``t_ms``, ``utc``, ``trace_file``;
- ``sample``: ``sample`` (the :class:`~hil.report.Sample` fields), ``interval_ms``, ``tip_pg``
  (drug at the catheter tip over the interval), ``delivered_pg``, ``programmed_pg``,
  ``total_counted_nl`` (the ledger's counted volume after the poll);
- ``alarm``: the :class:`~hil.report.AlarmEvent` fields;
- ``decision``: the :class:`~hil.report.DecisionEvent` fields;
- ``fault``: ``payload``; ``breach``: ``name``, ``detail``; ``test_dose``: ``t_ms``, ``dose_ng``;
- ``gap``: ``from_t_ms`` (the last line of the earlier session), ``to_t_ms`` (the recovery), ``delivered_nl``
  (counted from ``counted_from_t_ms``, the last sample the log kept, to the recovery); ``note``: ``text``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from controller.audit import one_shot_encoder

#: File name of the run log in the report directory.
RUN_LOG_FILE = "run-log.jsonl"

#: Most ``sample`` lines kept in memory before they are flushed (a kill loses at most these).
FLUSH_EVERY_SAMPLES = 64
#: Longest real time a ``sample`` line is kept in memory before it is flushed, s (a bench run in real time).
FLUSH_INTERVAL_S = 1.0
#: One encoder for every line (``json.dumps`` with options builds a new one per call).
_LINE = one_shot_encoder(json.JSONEncoder(default=str, separators=(",", ":"), check_circular=False))


class RunLog:
    """Append-only writer of the run log: every line flushed at once, ``sample`` lines group-flushed.

    :param path: the log file (appended to; created if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = path.open("a", encoding="utf-8")
        self._kept: list[str] = []
        self._flushed_at = time.monotonic()

    def write(self, kind: str, **fields: Any) -> None:
        """Append one line of type ``kind`` and flush it (with the samples kept before it)."""
        if self._file is None:
            return
        self._kept.append(_LINE({"type": kind, **fields}))
        self.flush()

    def sample(self, **fields: Any) -> None:
        """Append one ``sample`` line, flushed with the next group (see the module docstring)."""
        if self._file is None:
            return
        self._kept.append(_LINE({"type": "sample", **fields}))
        if len(self._kept) >= FLUSH_EVERY_SAMPLES or time.monotonic() - self._flushed_at >= FLUSH_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        """Write and flush every line kept, whole lines only, in order."""
        if self._file is None or not self._kept:
            return
        lines, self._kept = self._kept, []
        self._file.write("\n".join(lines) + "\n")
        self._file.flush()
        self._flushed_at = time.monotonic()

    def close(self) -> None:
        """Flush and close the file (safe to call twice)."""
        if self._file is not None:
            self.flush()
            self._file.close()
            self._file = None


def read_run_log(path: Path) -> Iterator[dict[str, Any]]:
    """Every complete line of the run log at ``path``, in order (none if it does not exist)."""
    if not path.is_file():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.endswith("\n"):
                return  # cut short by a kill: the rest never happened as far as the report knows
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                return
