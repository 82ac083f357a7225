"""The run log: what a scenario run observed, one JSON object per line, flushed as it happens.

``run-log.jsonl`` in the report directory lets ``itb run --resume`` rebuild the
report of a run whose controller died: every poll's sample (with what the patient
model was fed), alarm event, clinical decision, injected fault, test dose, each
controller session (``segment``) and each gap while the controller was down. The
controller's own durable state is its journal (``journal.sqlite``); this file holds
only what the *report* needs, and nothing in it is read back into the controller.

Each line is written and flushed at once (no fsync: a killed process loses nothing
the kernel already holds; a power cut may lose the last lines). A line cut short
by a kill is ignored on reading.

Line types (``type`` key) and their fields, times ``t_ms`` since the scenario start:

- ``segment``: ``index``, ``t_ms``, ``utc``, ``trace_file``;
- ``sample``: ``sample`` (the :class:`~hil.report.Sample` fields), ``interval_ms``, ``tip_pg``
  (drug at the catheter tip over the interval), ``delivered_pg``, ``programmed_pg``,
  ``total_counted_nl`` (the ledger's counted volume after the poll);
- ``alarm``: the :class:`~hil.report.AlarmEvent` fields;
- ``decision``: the :class:`~hil.report.DecisionEvent` fields;
- ``fault``: ``payload``; ``breach``: ``name``, ``detail``; ``test_dose``: ``t_ms``, ``dose_ng``;
- ``gap``: ``from_t_ms``, ``to_t_ms``, ``delivered_nl``; ``note``: ``text``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

#: File name of the run log in the report directory.
RUN_LOG_FILE = "run-log.jsonl"

#: One encoder for every line (``json.dumps`` with options builds a new one per call).
_LINE = json.JSONEncoder(default=str, separators=(",", ":"))


class RunLog:
    """Append-only writer of the run log (line-buffered, flushed per line).

    :param path: the log file (appended to; created if missing).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = path.open("a", encoding="utf-8")

    def write(self, kind: str, **fields: Any) -> None:
        """Append one line of type ``kind``."""
        if self._file is None:
            return
        self._file.write(_LINE.encode({"type": kind, **fields}) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file (safe to call twice)."""
        if self._file is not None:
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
