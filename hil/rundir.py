"""Report directories that hold durable records: never deleted, never overwritten.

A report directory of ``itb run`` holds the controller's journal
(``journal.sqlite``), the record of what a pump delivered; one of
``itb hil accuracy`` holds the raw weighings (``samples.csv``). A command that
writes such records calls :func:`claim` first:

- a directory with none of them is used as it is (created if missing);
- one that holds them is refused (:class:`~cython_ext.errors.ConfigError`, exit
  status 2), unless the command is told what to do with the old run: resume it
  (``itb run --resume``: the records are kept and appended to) or start a new run
  (``--new-run``): every file of the old run is *moved*, never deleted, into a
  dated subfolder ``previous-<UTC time of its newest file>/``.

Earlier ``previous-*`` folders stay where they are, so a directory keeps the
whole history of the runs made in it.
"""

from __future__ import annotations

import enum
import shutil
from datetime import datetime, timezone
from pathlib import Path

from cython_ext.errors import ConfigError

#: Prefix of the subfolders that old runs are moved into.
ARCHIVE_PREFIX = "previous-"


class Existing(enum.Enum):
    """What to do with a report directory that already holds durable records."""

    REFUSE = "refuse"
    NEW_RUN = "new_run"
    RESUME = "resume"


def holds_records(directory: Path, durable: tuple[str, ...]) -> list[str]:
    """The names in ``durable`` that exist in ``directory`` (SQLite side files included)."""
    return [name for name in durable if (directory / name).exists()]


def archive(directory: Path) -> Path:
    """Move every file of the run in ``directory`` into a new ``previous-<UTC>`` subfolder.

    The folder is named after the newest modification time among the moved files, in UTC
    (``previous-20260105T080000Z``; ``-2``, ``-3``... if taken). Nothing is deleted.

    :return: the subfolder the files were moved into.
    """
    moving = [p for p in sorted(directory.iterdir()) if not p.name.startswith(ARCHIVE_PREFIX)]
    newest = max((p.stat().st_mtime for p in moving), default=datetime.now(timezone.utc).timestamp())
    stamp = datetime.fromtimestamp(newest, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = directory / f"{ARCHIVE_PREFIX}{stamp}"
    n = 2
    while target.exists():
        target = directory / f"{ARCHIVE_PREFIX}{stamp}-{n}"
        n += 1
    target.mkdir()
    for path in moving:
        shutil.move(str(path), str(target / path.name))
    return target


def claim(directory: Path, durable: tuple[str, ...], existing: Existing, *, option: str) -> Path | None:
    """Make ``directory`` ready for a run without losing any earlier record.

    :param directory: the report directory (created if missing).
    :param durable: names of the files that are durable records (``journal.sqlite``...).
    :param existing: what to do if some are there.
    :param option: the command-line option being checked (for the error).
    :return: the ``previous-*`` folder the old run was moved to, or None.
    :raises ConfigError: the directory holds records and ``existing`` is :attr:`Existing.REFUSE`,
        or it holds none and ``existing`` is :attr:`Existing.RESUME`.
    """
    found = holds_records(directory, durable) if directory.is_dir() else []
    if existing is Existing.RESUME:
        if not found:
            raise ConfigError(option, str(directory), f"a report directory holding a run to resume ({durable[0]})")
        return None
    if found and existing is Existing.REFUSE:
        raise ConfigError(option, str(directory),
                          "a report directory without an earlier run's records "
                          f"(it holds {', '.join(found)}): pass --resume to continue that run, or --new-run "
                          f"to move its files into a {ARCHIVE_PREFIX}<date> subfolder")
    directory.mkdir(parents=True, exist_ok=True)
    return archive(directory) if found else None
