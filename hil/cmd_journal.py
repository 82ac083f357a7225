"""``itb journal``: verify a journal's hash chain, or export it as CSV or JSON.

``itb journal verify --json`` prints one ``itb.journal-verify/1`` document (the
envelope of :mod:`hil.output`, then ``file``, ``entries_checked``, ``signed``
(the journal carries a seal key), ``signature_checked`` (its head's seal verified
with a ``system`` key of the trust store), ``sealed_by``, ``closed`` (sealed by a
clean close), ``problems`` and ``first_bad_seq``); its ``passed`` is the exit
status: 0 intact, 1 not. The trust store is the rig's (``ITB_SECURITY_DIR``, else
the development keys) unless ``--trust-store`` names another rig's. A journal file
that does not exist is a usage error (exit 2), not a failed verification.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from hil.cli_options import add_action, add_command_group, add_file_argument, add_json_flag

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``itb journal verify`` and ``itb journal export``."""
    actions = add_command_group(subparsers, "journal", "verify or export a controller journal (SQLite, hash-chained)",
                                "Verify a journal's audit chain, or export its entries.")
    verify = add_action(
        actions, "verify", _verify, "detect any edit, deletion, reordering, truncation or rebuilt chain",
        "Check every entry's hash, the chain links, contiguity, and the head's Ed25519 seal against "
        "the trust store's journal key. Exit 0 if intact, 1 with what and where if not. Verify a closed journal "
        "(or a copy with its -wal file).",
    )
    add_file_argument(verify, "the journal file")
    verify.add_argument(
        "--trust-store",
        type=Path,
        default=None,
        help="the trust.toml of the rig that wrote the journal (default: this rig's)",
    )
    add_json_flag(verify, "print one JSON document (itb.journal-verify/1)")
    export = add_action(actions, "export", _export, "write every entry as CSV or JSON",
                        "Export every journal entry in chain order.")
    add_file_argument(export, "the journal file")
    export.add_argument("--format", choices=("csv", "json"), required=True, help="output format")
    export.add_argument("--out", type=Path, default=None, help="output file (default: standard output)")


def _require_file(path: Path) -> None:
    """:raises ConfigError: if ``path`` is not an existing file (a usage error, exit 2)."""
    from cython_ext.errors import ConfigError

    if not path.is_file():
        raise ConfigError("file", str(path), "an existing journal file")


def _verify(args: argparse.Namespace) -> int:
    from controller.journal import verify_journal
    from controller.signing import TrustStore
    from cython_ext.errors import ConfigError
    from hil.output import document, dump

    _require_file(args.file)
    trust = None
    if args.trust_store is not None:
        if not args.trust_store.is_file():
            raise ConfigError("--trust-store", str(args.trust_store), "an existing trust.toml")
        trust = TrustStore.load(args.trust_store)
    report = verify_journal(args.file, trust=trust)
    if args.json:
        dump(document("itb.journal-verify/1", passed=report.ok, file=str(args.file),
                      entries_checked=report.entries_checked, signed=report.signed,
                      signature_checked=report.signature_checked, sealed_by=report.sealed_by,
                      closed=report.closed, problems=list(report.problems),
                      first_bad_seq=report.first_bad_seq), sys.stdout)
        return 0 if report.ok else 1
    if report.ok:
        state = "closed cleanly" if report.closed else "left open: the controller stopped without closing it"
        print(f"{args.file}: OK, {report.entries_checked} entries, chain verified, head sealed by "
              f"{report.sealed_by}; {state}")
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
