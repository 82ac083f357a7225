"""``itb journal``: verify a journal's hash chain, or export it as CSV or JSON.

``itb journal verify --json`` prints one ``itb.journal-verify/1`` document (the
envelope of :mod:`hil.output`, then ``file``, ``entries_checked``, ``signed``,
``signature_checked``, ``problems`` and ``first_bad_seq``); its ``passed`` is
the exit status: 0 intact, 1 not. A journal file that does not exist is a
usage error (exit 2), not a failed verification.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``itb journal verify`` and ``itb journal export``."""
    parser = subparsers.add_parser(
        "journal",
        help="verify or export a controller journal (SQLite, hash-chained)",
        description="Verify a journal's audit chain, or export its entries.",
    )
    actions = parser.add_subparsers(dest="journal_command", metavar="ACTION", required=True)
    verify = actions.add_parser(
        "verify",
        help="detect any edit, deletion, reordering or truncation",
        description="Check every entry's hash, the chain links, contiguity and the head record. "
        "Exit 0 if intact, 1 with what and where if not. Verify a closed journal (or a copy with its -wal file).",
    )
    verify.add_argument("file", type=Path, help="the journal file")
    verify.add_argument(
        "--key-file",
        type=Path,
        default=None,
        help="file holding the checkpoint key of a signed journal (checks the head signature)",
    )
    verify.add_argument("--json", action="store_true", help="print one JSON document (itb.journal-verify/1)")
    verify.set_defaults(func=_verify)
    export = actions.add_parser(
        "export",
        help="write every entry as CSV or JSON",
        description="Export every journal entry in chain order.",
    )
    export.add_argument("file", type=Path, help="the journal file")
    export.add_argument("--format", choices=("csv", "json"), required=True, help="output format")
    export.add_argument("--out", type=Path, default=None, help="output file (default: standard output)")
    export.set_defaults(func=_export)


def _require_file(path: Path) -> None:
    """:raises ConfigError: if ``path`` is not an existing file (a usage error, exit 2)."""
    from cython_ext.errors import ConfigError

    if not path.is_file():
        raise ConfigError("file", str(path), "an existing journal file")


def _verify(args: argparse.Namespace) -> int:
    from controller.journal import verify_journal

    from cython_ext.errors import ConfigError
    from hil.output import document, dump

    _require_file(args.file)
    key = None
    if args.key_file is not None:
        try:
            key = args.key_file.read_bytes()
        except OSError as exc:
            raise ConfigError("--key-file", str(args.key_file), "a readable file", detail=str(exc)) from exc
    report = verify_journal(args.file, checkpoint_key=key)
    if args.json:
        dump(document("itb.journal-verify/1", passed=report.ok, file=str(args.file),
                      entries_checked=report.entries_checked, signed=report.signed,
                      signature_checked=report.signature_checked, problems=list(report.problems),
                      first_bad_seq=report.first_bad_seq), sys.stdout)
        return 0 if report.ok else 1
    if report.ok:
        if report.signature_checked:
            signature = "head signature verified"
        elif report.signed:
            signature = "head signature NOT checked: pass --key-file"
        else:
            signature = "unsigned head"
        print(f"{args.file}: OK, {report.entries_checked} entries, chain and head verified ({signature})")
        return 0
    print(f"{args.file}: FAILED verification ({len(report.problems)} problem(s)):", file=sys.stderr)
    for problem in report.problems:
        print(f"  {problem}", file=sys.stderr)
    if report.first_bad_seq is not None:
        print(f"  first bad entry: {report.first_bad_seq}", file=sys.stderr)
    return 1


def _export(args: argparse.Namespace) -> int:
    from controller.journal import export_journal

    _require_file(args.file)
    if args.out is None:
        export_journal(args.file, args.format, sys.stdout)
        return 0
    from cython_ext.errors import ConfigError

    try:
        out = args.out.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigError("--out", str(args.out), "a writable file", detail=str(exc)) from exc
    with out:
        count = export_journal(args.file, args.format, out)
    log.info("%d entries written to %s", count, args.out)
    return 0
