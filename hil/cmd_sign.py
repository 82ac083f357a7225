"""``itb prescription sign FILE --key KEY``: write the detached signature ``FILE.sig`` (SEC-04).

The signature covers the file's exact bytes (see :mod:`controller.signing`); a file with a
UTF-8 byte-order mark or CRLF line endings is refused rather than signed. After signing,
the command says whether the rig's trust store (``ITB_SECURITY_DIR``, or the development
one) would accept the signature, and why not: a signature is only as good as the key's
place in the trust store of the rig that loads the file.
"""

from __future__ import annotations

import argparse
import logging
from datetime import datetime, timezone
from pathlib import Path

from hil.cli_options import add_action, add_file_argument

log = logging.getLogger(__name__)


def register_sign(actions: argparse._SubParsersAction) -> None:
    """Add the ``sign`` action to ``itb prescription``."""
    sign = add_action(actions, "sign", _sign, "sign a prescription file (writes FILE.sig)",
                      "Sign FILE's exact bytes with an Ed25519 key; the signature goes to FILE.sig beside it.")
    add_file_argument(sign, "the prescription file")
    sign.add_argument("--key", type=Path, required=True, help="the signer's private key (PEM)")


def _sign(args: argparse.Namespace) -> int:
    from controller.signing import SIGNATURE_SUFFIX, Kind, RigSecurity, SignatureError, SignedFile, SigningKey, sign_file
    from cython_ext.errors import ConfigError

    key = SigningKey.load(args.key)
    path: Path = args.file
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError("file", str(path), "a readable prescription file", detail=str(exc)) from exc
    now = datetime.now(timezone.utc)
    signature = sign_file(data, path.name, Kind.PRESCRIPTION, key, now)
    path.with_name(path.name + SIGNATURE_SUFFIX).write_bytes(signature)
    security = RigSecurity.load()
    try:
        verified = security.trust.verify_file(SignedFile(path.name, data, signature), Kind.PRESCRIPTION, now)
        log.info("%s signed by %s; this rig's trust store (%s) accepts it", path, verified.key, security.directory)
    except SignatureError as exc:
        log.warning("%s signed with key %s, but this rig's trust store (%s) would refuse it: %s", path, key.key_id,
                    security.directory, exc.detail)
    return 0
