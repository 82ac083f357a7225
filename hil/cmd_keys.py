"""``itb keys``: manage a rig's security directory (trust store, journal key, signed drug library).

A security directory holds ``trust.toml`` (every trusted key with its holder's name and
roles, signed by an administrator), ``drug-library.toml`` (the kernel's library, signed by
an administrator) and ``journal.key`` (the private key that seals the rig's journals). The
controller reads the directory named by ``ITB_SECURITY_DIR``, or the shipped development
one (:data:`controller.signing.DEVELOPMENT_DIR`).

* ``itb keys init DIR --admin NAME --admin-key-out FILE`` creates one: a new administrator
  key (written to ``FILE``, never into the directory) and a new journal key;
* ``itb keys add NAME --role ROLE (--public-key PEM | --generate OUT) --admin-key FILE``
  trusts a key; ``itb keys revoke KEY_ID --admin-key FILE`` revokes one;
* ``itb keys list`` shows the keys; ``itb keys sign-library --admin-key FILE`` signs the
  library the kernel now enforces (after a reviewed change of its limits).

Every change is signed with the administrator key given (SEC-01: keys are the
administrator's), and refused if that key is not a valid administrator key of the store.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any

from controller.audit import Role
from hil.cli_options import add_command_group

_PERSON_ROLES = tuple(r.value for r in Role if r is not Role.SYSTEM)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``itb keys init|add|list|revoke|sign-library``."""
    actions = add_command_group(subparsers, "keys",
                                "manage the rig's trust store, journal key and signed drug library",
                                "Manage a rig's security directory "
                                "(default: $ITB_SECURITY_DIR, else the development keys).")

    init = actions.add_parser("init", help="create a security directory with a new administrator and journal key",
                              description="Create DIR with a trust store, a journal key and the signed drug library. "
                              "The administrator's private key goes to --admin-key-out, outside DIR.")
    init.add_argument("dir", type=Path, help="the new security directory (must not exist, or be empty)")
    init.add_argument("--admin", required=True, help="the administrator's name")
    init.add_argument("--admin-key-out", type=Path, required=True, help="where to write the administrator's key")
    init.add_argument("--development", action="store_true",
                      help="mark every key as a development key (never for clinical use)")
    init.set_defaults(func=_init)

    add = actions.add_parser("add", help="trust a key for a person and their roles",
                             description="Add a key to the trust store, signed by an administrator.")
    add.add_argument("name", help="the key holder's name (ASCII letters, digits, '.', '_', '-')")
    add.add_argument("--role", action="append", required=True, choices=_PERSON_ROLES,
                     help="a role the key signs for (repeatable)")
    source = add.add_mutually_exclusive_group(required=True)
    source.add_argument("--public-key", type=Path, help="the holder's public key (PEM)")
    source.add_argument("--generate", type=Path, metavar="OUT", help="generate a new key and write it to OUT")
    add.add_argument("--expires", type=date.fromisoformat, default=None, help="last valid day, YYYY-MM-DD (UTC)")
    _admin_options(add)
    add.set_defaults(func=_add)

    listing = actions.add_parser("list", help="show the trusted keys", description="List the trust store's keys.")
    listing.add_argument("--dir", type=Path, default=None, help="the security directory (default: the one in use)")
    listing.add_argument("--json", action="store_true", help="print one JSON document (itb.keys/1)")
    listing.set_defaults(func=_list)

    revoke = actions.add_parser("revoke", help="revoke a key", description="Revoke a key of the trust store.")
    revoke.add_argument("key_id", help="the key id (16 hex digits, see itb keys list)")
    _admin_options(revoke)
    revoke.set_defaults(func=_revoke)

    library = actions.add_parser("sign-library", help="sign the drug library the kernel enforces",
                                 description="Write drug-library.toml from the kernel's library and sign it.")
    _admin_options(library)
    library.set_defaults(func=_sign_library)


def _admin_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin-key", type=Path, required=True, help="an administrator's private key")
    parser.add_argument("--dir", type=Path, default=None, help="the security directory (default: the one in use)")


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _directory(args: argparse.Namespace) -> Path:
    from controller.signing import RigSecurity

    return args.dir if args.dir is not None else RigSecurity.directory_in_use()


def _write_library(directory: Path, admin: Any, at: datetime) -> None:
    from controller import drug_library
    from controller.signing import LIBRARY_FILE, SIGNATURE_SUFFIX, Kind, sign_file

    data = drug_library.render(drug_library.kernel_library()).encode("utf-8")
    (directory / LIBRARY_FILE).write_bytes(data)
    (directory / (LIBRARY_FILE + SIGNATURE_SUFFIX)).write_bytes(sign_file(data, LIBRARY_FILE, Kind.DRUG_LIBRARY,
                                                                           admin, at))


def _key_comment(name: str, roles: list[str], development: bool) -> str:
    mark = "DEVELOPMENT KEY: published with the code, never for clinical use. " if development else ""
    return f"{mark}itb signing key of {name} ({', '.join(roles)}); keep it private"


def _init(args: argparse.Namespace) -> int:
    from controller.signing import JOURNAL_KEY_FILE, TRUST_FILE, SigningKey, TrustedKey, TrustStore
    from cython_ext.errors import ConfigError

    directory: Path = args.dir
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise ConfigError("dir", str(directory), "a new or empty directory")
    admin_out: Path = args.admin_key_out
    if admin_out.resolve().parent == directory.resolve():
        raise ConfigError("--admin-key-out", str(admin_out), "a file outside the security directory")
    now = _now()
    admin, journal = SigningKey.generate(), SigningKey.generate()
    store = TrustStore([
        TrustedKey(admin.key_id, args.admin, frozenset({Role.ADMINISTRATOR}), admin.public_key, now,
                   development=args.development),
        TrustedKey(journal.key_id, "rig-journal", frozenset({Role.SYSTEM}), journal.public_key, now,
                   development=args.development),
    ])
    directory.mkdir(parents=True, exist_ok=True)
    admin_out.parent.mkdir(parents=True, exist_ok=True)
    admin.save(admin_out, comment=_key_comment(args.admin, ["administrator"], args.development))
    journal.save(directory / JOURNAL_KEY_FILE, comment=_key_comment("rig-journal", ["system"], args.development))
    store.save(directory / TRUST_FILE, admin, now)
    _write_library(directory, admin, now)
    print(f"{directory}: trust store with administrator {args.admin} (key {admin.key_id}, written to {admin_out}) "
          f"and journal key {journal.key_id}; drug library signed")
    return 0


def _load_for_change(args: argparse.Namespace) -> tuple[Path, Any, Any]:
    from controller.signing import TRUST_FILE, SigningKey, TrustStore

    directory = _directory(args)
    return directory, TrustStore.load(directory / TRUST_FILE), SigningKey.load(args.admin_key)


def _add(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from controller.roles import Refusal
    from controller.signing import NAME_RE, TRUST_FILE, SignatureError, SigningKey, TrustedKey, key_id_of
    from cython_ext.errors import ConfigError

    if not NAME_RE.match(args.name):
        raise ConfigError("name", args.name, "1-64 ASCII letters, digits, '.', '_' or '-'")
    directory, store, admin = _load_for_change(args)
    now = _now()
    development = any(k.development for k in store.keys.values() if Role.ADMINISTRATOR in k.roles)
    if args.public_key is not None:
        try:
            public = serialization.load_pem_public_key(args.public_key.read_bytes())
        except OSError as exc:
            raise ConfigError("--public-key", str(args.public_key), "a readable file", detail=str(exc)) from exc
        except (ValueError, TypeError) as exc:
            raise SignatureError(Refusal.MALFORMED_KEY, str(args.public_key), f"not a PEM public key ({exc})") from None
        if not isinstance(public, Ed25519PublicKey):
            raise SignatureError(Refusal.MALFORMED_KEY, str(args.public_key), "not an Ed25519 public key")
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        new = None
    else:
        new = SigningKey.generate()
        raw = new.public_key
    expires = None if args.expires is None else datetime.combine(args.expires, time(23, 59, 59), timezone.utc)
    key = TrustedKey(key_id_of(raw), args.name, frozenset(Role(r) for r in args.role), raw, now, not_after=expires,
                     development=development)
    changed = store.with_key(key)
    if new is not None:
        new.save(args.generate, comment=_key_comment(args.name, sorted(args.role), development))
    changed.save(directory / TRUST_FILE, admin, now)
    print(f"added {key}" + (f"; private key written to {args.generate}" if new is not None else ""))
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from controller.signing import TRUST_FILE

    directory, store, admin = _load_for_change(args)
    now = _now()
    changed = store.with_revoked(args.key_id, now)
    changed.save(directory / TRUST_FILE, admin, now)
    print(f"revoked {changed.keys[args.key_id]}")
    return 0


def _sign_library(args: argparse.Namespace) -> int:
    from controller.signing import Kind

    directory, store, admin = _load_for_change(args)
    now = _now()
    key = store.check_signature(admin.key_id, admin.sign(b"check"), b"check", now, Kind.DRUG_LIBRARY.roles,
                                "--admin-key")
    _write_library(directory, admin, now)
    print(f"{directory}: drug library signed by {key}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from controller.signing import TRUST_FILE, TrustStore, utc_text
    from hil.output import document, dump

    directory = _directory(args)
    store = TrustStore.load(directory / TRUST_FILE)
    rows = [{"key_id": k.key_id, "name": k.name, "roles": sorted(r.value for r in k.roles),
             "added_utc": utc_text(k.added_utc), "not_after": None if k.not_after is None else utc_text(k.not_after),
             "revoked_utc": None if k.revoked_utc is None else utc_text(k.revoked_utc), "development": k.development}
            for k in store.keys.values()]
    if args.json:
        dump(document("itb.keys/1", passed=True, dir=str(directory), keys=rows), sys.stdout)
        return 0
    print(f"{directory / TRUST_FILE}: {len(rows)} keys")
    for row in rows:
        state = f"revoked {row['revoked_utc']}" if row["revoked_utc"] else (
            f"expires {row['not_after']}" if row["not_after"] else "no expiry")
        dev = "  DEVELOPMENT" if row["development"] else ""
        print(f"  {row['key_id']}  {row['name']:<20} {','.join(row['roles']):<28} {state}{dev}")
    return 0
