"""The one shape of every machine-readable document ``itb`` writes.

``summary.json`` of a run or an accuracy test, and the ``--json`` output of
``itb journal verify`` and ``itb bench``, are each one JSON object whose first
four keys are the same *envelope*; the rest belongs to the document's kind::

    {
      "schema": "itb.run/1",            # document kind and the version of its shape
      "software": {"name": "itb-fil", "version": "0.1.0",
                   "git_revision": "9bb6e93c...", "git_dirty": false},
      "passed": true,                    # what the exit status says: 0 exactly when true
      "error": null,                     # or {"type", "message", "exit_status"} (+ "field", "value", "allowed")
      ...                                # the kind's own keys, units in every name
    }

Kinds (the suffix ``/1`` changes only when a key changes meaning or goes away):

- ``itb.run/1``: ``summary.json`` of ``itb run`` (see :mod:`hil.report`);
- ``itb.accuracy/1``: ``summary.json`` of ``itb hil accuracy`` (see :mod:`hil.gravimetric.report`);
- ``itb.journal-verify/1``: ``itb journal verify --json``;
- ``itb.bench/1``: ``itb bench NAME --json``;
- ``itb.error/1``: any command given ``--json`` that stopped on an error before its own document.

``git_revision`` is the commit of the source tree the code runs from (None for
an installed copy outside a git checkout); ``git_dirty`` says whether that
tree had uncommitted changes.
"""

from __future__ import annotations

import functools
import json
import subprocess
from importlib import metadata
from pathlib import Path
from typing import IO, Any

#: The distribution name, as ``pyproject.toml`` spells it.
DISTRIBUTION = "itb-fil"
#: The machine-readable document of every report directory (run, accuracy, cohort, comparison).
SUMMARY_FILE = "summary.json"
#: The page of every report directory.
REPORT_FILE = "report.html"
_SOURCE_ROOT = Path(__file__).resolve().parents[1]
#: Longest wait for ``git`` when asking the source tree's revision, s.
GIT_TIMEOUT_S = 5.0


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(_SOURCE_ROOT), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


@functools.cache
def software() -> dict[str, Any]:
    """Name, version and git revision of the running code (computed once per process).

    :return: ``{"name", "version", "git_revision", "git_dirty"}``; the git fields are None
        outside a git checkout.
    """
    try:
        version = metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        version = "unknown"
    revision = None
    dirty = None
    if (_SOURCE_ROOT / ".git").exists():
        revision = _git("rev-parse", "HEAD")
        if revision is not None:
            status = _git("status", "--porcelain", "--untracked-files=no")
            dirty = None if status is None else bool(status)
    return {"name": DISTRIBUTION, "version": version, "git_revision": revision, "git_dirty": dirty}


def software_line() -> str:
    """``itb-fil 0.1.0 (git 9bb6e93c, modified)``: the one-line form for ``--version`` and reports."""
    info = software()
    text = f"{info['name']} {info['version']}"
    if info["git_revision"]:
        text += f" (git {info['git_revision'][:12]}{', modified' if info['git_dirty'] else ''})"
    return text


def error_dict(exc: BaseException, exit_status: int) -> dict[str, Any]:
    """The envelope's ``error`` object for ``exc``.

    :param exc: the error that stopped the command.
    :param exit_status: the exit status it gives.
    """
    data: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc), "exit_status": exit_status}
    for name in ("field", "value", "allowed"):
        if hasattr(exc, name):
            value = getattr(exc, name)
            data[name] = value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)
    return data


def document(schema: str, *, passed: bool, error: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    """A machine-readable document: the envelope, then ``fields``.

    :param schema: the kind and version, ``itb.<kind>/<n>``.
    :param passed: whether the command succeeded (exit status 0).
    :param error: :func:`error_dict` of the error that stopped it, if any.
    :raises ValueError: if a field would overwrite an envelope key.
    """
    envelope = {"schema": schema, "software": software(), "passed": passed, "error": error}
    clash = sorted(set(envelope) & set(fields))
    if clash:
        raise ValueError(f"fields {clash} belong to the envelope")
    return {**envelope, **fields}


def _text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def dump(data: dict[str, Any], stream: IO[str]) -> None:
    """Write ``data`` as indented JSON with a final newline (keys in insertion order)."""
    stream.write(_text(data))


def write_summary(directory: Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as ``directory``/:data:`SUMMARY_FILE`, UTF-8, in the form of :func:`dump`; returns its path."""
    path = directory / SUMMARY_FILE
    path.write_text(_text(data), encoding="utf-8")
    return path
