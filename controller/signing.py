"""Ed25519 signatures: the rig's trust store, signed files, signed commands and the journal's seal (SEC-03, SEC-04).

Every signature is Ed25519 from the ``cryptography`` package. A key is named by its
**key id**, the first 16 hex digits of the SHA-256 of its 32 raw public-key bytes.

**Signed files** (a prescription, the drug library, the trust store) keep their bytes
exactly as written and carry a detached signature beside them, ``FILE.sig``: ASCII
lines ending in LF, in this order::

    itb-signature/1
    kind: prescription                 # prescription | drug-library | trust-store
    file: spinal_simple_500.toml       # the file's name (a signature names the file it signs)
    size: 1234                         # the file's length, bytes
    sha256: 5f1c...                    # SHA-256 of the file's bytes, 64 hex digits
    key: 0123456789abcdef              # the signer's key id
    signed-utc: 2026-12-01T09:00:00+00:00
    signature: <base64 of 64 bytes>

The Ed25519 signature is over the bytes of the first seven lines, newlines included:
so it binds the kind, the name, the length and the digest of the file (and through the
digest every byte of it), the key and the time. A signed file must be UTF-8 without a
byte-order mark and with LF line endings: anything else is refused when signing and when
verifying, by name. :meth:`TrustStore.verify_file` checks, in order: a signature is present
and well formed, of the right kind, for this file, the file is not shorter than signed,
its encoding, the key is known, the signature verifies, the key is neither revoked nor
expired, its holder has a role the action needs (:data:`controller.roles.PERMISSIONS`),
and the file's bytes are the ones signed. Each refusal is a :class:`SignatureError`
naming its :class:`~controller.roles.Refusal` code.

**The trust store** (``trust.toml``, itself signed by one of its administrators) lists
each key with its holder's name, roles, optional expiry, revocation time and whether it
is a development key. **Signed commands** (:func:`sign_command`) carry a therapy change
over any remote interface: the controller's id, the action, the role, the parameters,
a nonce and the time, signed by the person asking (and, for dual sign-off, by a second
person). **The journal's seal** (:func:`seal_message`) signs the head of its hash chain.

The rig's security directory (:class:`RigSecurity`) holds ``trust.toml`` (+ ``.sig``),
``drug-library.toml`` (+ ``.sig``) and ``journal.key``, the private key that seals the
journal. It is the directory named by ``ITB_SECURITY_DIR``, or else the development
directory shipped beside this module (:data:`DEVELOPMENT_DIR`), whose keys are public
and marked as development keys: not for clinical use.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
import logging
import os
import re
import secrets
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from controller.audit import Role, canonical_json
from controller.roles import PERMISSIONS, Refusal
from cython_ext.errors import ConfigError

log = logging.getLogger(__name__)

#: Environment variable naming the rig's security directory.
SECURITY_DIR_ENV = "ITB_SECURITY_DIR"
#: The development security directory shipped with the code (public keys and PRIVATE keys: not for clinical use).
DEVELOPMENT_DIR = Path(__file__).resolve().with_name("development_keys")
#: Files of a security directory.
TRUST_FILE = "trust.toml"
LIBRARY_FILE = "drug-library.toml"
JOURNAL_KEY_FILE = "journal.key"
#: Suffix of a detached signature.
SIGNATURE_SUFFIX = ".sig"
#: Hex digits of a key id.
KEY_ID_HEX = 16
#: Longest signed file or command accepted, bytes.
MAX_SIGNED_BYTES = 1 << 20
#: Longest signature file, bytes.
MAX_SIGNATURE_BYTES = 1024
#: Allowed key holder names: ASCII letters, digits, ``.``, ``_``, ``-``; 1 to 64 characters.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HEX64_RE = re.compile(r"^[0-9a-f]{64}$")
_KEY_ID_RE = re.compile(rf"^[0-9a-f]{{{KEY_ID_HEX}}}$")
_NONCE_RE = re.compile(r"^[0-9a-f]{32}$")
_SIGNATURE_HEADER = "itb-signature/1"
_SIGNATURE_FIELDS = ("kind", "file", "size", "sha256", "key", "signed-utc", "signature")
_TRUST_SCHEMA = "itb.trust/1"
_COMMAND_SCHEMA = "itb.command/1"
_SEAL_DOMAIN = "itb-journal-head/1"


class SignatureError(ConfigError):
    """A signed artefact or a key was refused; :attr:`reason` is the :class:`~controller.roles.Refusal` code.

    :param reason: the refusal code.
    :param what: what was refused (``prescription spinal_simple_500.toml``, a key file...).
    :param detail: what exactly was wrong, in words.
    """

    def __init__(self, reason: Refusal, what: str, detail: str) -> None:
        super().__init__("signature", what, "a valid signature by a trusted key of a permitted role",
                         detail=f"{reason.value}: {detail}", error_code=reason.value)
        self.reason = reason


class Kind(enum.Enum):
    """What a file signature is for, and the action of :data:`~controller.roles.PERMISSIONS` its signer needs."""

    PRESCRIPTION = "prescription"
    DRUG_LIBRARY = "drug-library"
    TRUST_STORE = "trust-store"

    @property
    def roles(self) -> tuple[Role, ...]:
        """The roles whose signature the controller accepts on this kind."""
        action = {"prescription": "sign_prescription", "drug-library": "sign_drug_library",
                  "trust-store": "manage_keys"}[self.value]
        return PERMISSIONS[action].roles


def utc_text(moment: datetime) -> str:
    """ISO-8601 UTC text of an aware time, to the second."""
    return moment.astimezone(timezone.utc).replace(microsecond=0).isoformat()


def _parse_utc(text: Any, what: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise ConfigError(what, text, "an ISO-8601 time with its UTC offset")
    return moment.astimezone(timezone.utc)


def key_id_of(public_key: bytes) -> str:
    """The key id of 32 raw Ed25519 public-key bytes."""
    return hashlib.sha256(public_key).hexdigest()[:KEY_ID_HEX]


def _b64decode(text: Any, length: int, reason: Refusal, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True) if isinstance(text, str) else b""
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raw = b""
    if len(raw) != length:
        raise SignatureError(reason, what, f"not {length} bytes of base64")
    return raw


def check_text(data: bytes, what: str) -> str:
    """The text of a file that may be signed: UTF-8, no byte-order mark, LF line endings.

    :raises SignatureError: naming UTF8_BOM, CRLF_LINE_ENDINGS or NOT_UTF8.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        raise SignatureError(Refusal.UTF8_BOM, what, "the file starts with a UTF-8 byte-order mark; save it without")
    if b"\r" in data:
        raise SignatureError(Refusal.CRLF_LINE_ENDINGS, what, "the file has CR (CRLF) line endings; use LF only")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SignatureError(Refusal.NOT_UTF8, what, f"not UTF-8 at byte {exc.start}") from None


# ---------------------------------------------------------------------------------------------------
# keys


class SigningKey:
    """An Ed25519 private key (who holds it is the trust store's business, by key id).

    :param private_key: the key.
    """

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key: bytes = private_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                                       serialization.PublicFormat.Raw)
        self.key_id: str = key_id_of(self.public_key)

    @classmethod
    def generate(cls) -> SigningKey:
        """A new random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: str | Path) -> SigningKey:
        """Read a private key file (PEM, PKCS#8, unencrypted; comment lines before it are allowed).

        :raises ConfigError: if the file cannot be read.
        :raises SignatureError: MALFORMED_KEY if it is not an Ed25519 private key.
        """
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError("key", str(path), "a readable private key file", detail=str(exc)) from exc
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise SignatureError(Refusal.MALFORMED_KEY, str(path), f"not a PEM private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError(Refusal.MALFORMED_KEY, str(path), f"a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    def save(self, path: str | Path, *, comment: str) -> None:
        """Write the key as PEM (PKCS#8), readable by its owner only, after one ``# comment`` line.

        :raises ConfigError: if the file exists already or cannot be written.
        """
        pem = self._key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
        path = Path(path)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise ConfigError("key file", str(path), "a new file (an existing key is never overwritten)",
                              detail=str(exc)) from exc
        with os.fdopen(fd, "wb") as out:
            out.write(f"# {comment}\n".encode("ascii", "replace") + pem)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._key.sign(message)


def _verifies(public_key: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


@dataclass(frozen=True)
class TrustedKey:
    """One key of the trust store.

    :ivar key_id: the key id (16 hex digits).
    :ivar name: its holder.
    :ivar roles: the roles its signatures carry.
    :ivar public_key: 32 raw bytes.
    :ivar added_utc: when it was added.
    :ivar not_after: when it expires (None: it does not).
    :ivar revoked_utc: when it was revoked (None: it is not).
    :ivar development: a development key (public, never for clinical use).
    """

    key_id: str
    name: str
    roles: frozenset[Role]
    public_key: bytes
    added_utc: datetime
    not_after: datetime | None = None
    revoked_utc: datetime | None = None
    development: bool = False

    def __str__(self) -> str:
        dev = ", DEVELOPMENT key" if self.development else ""
        return f"key {self.key_id} of {self.name} ({', '.join(sorted(r.value for r in self.roles))}{dev})"

    def refusal(self, at: datetime) -> tuple[Refusal, str] | None:
        """Why this key may not sign at time ``at`` (revoked or expired), or None."""
        if self.revoked_utc is not None:
            return Refusal.KEY_REVOKED, f"{self} was revoked at {utc_text(self.revoked_utc)}"
        if self.not_after is not None and at > self.not_after:
            return Refusal.KEY_EXPIRED, f"{self} expired at {utc_text(self.not_after)}"
        return None


@dataclass(frozen=True)
class Verified:
    """A signature that passed every check: who signed, and what.

    :ivar key: the signer's key.
    :ivar sha256: SHA-256 (hex) of the signed bytes.
    :ivar signed_utc: the time the signer put on it.
    """

    key: TrustedKey
    sha256: str
    signed_utc: datetime


@dataclass(frozen=True)
class SignedFile:
    """A file's exact bytes and its detached signature, as read (nothing is verified yet).

    :ivar name: the file's name (the signature must name it).
    :ivar data: its bytes.
    :ivar signature: the bytes of ``FILE.sig``, or None if there is none.
    """

    name: str
    data: bytes = field(repr=False)
    signature: bytes | None = field(default=None, repr=False)

    @classmethod
    def read(cls, path: str | Path) -> SignedFile:
        """Read ``path`` and, if present, ``path.sig``.

        :raises ConfigError: if the file cannot be read or is larger than :data:`MAX_SIGNED_BYTES`.
        """
        path = Path(path)
        try:
            data = path.read_bytes()
            sig_path = path.with_name(path.name + SIGNATURE_SUFFIX)
            signature = sig_path.read_bytes()[:MAX_SIGNATURE_BYTES + 1] if sig_path.is_file() else None
        except OSError as exc:
            raise ConfigError("file", str(path), "a readable file", detail=str(exc)) from exc
        if len(data) > MAX_SIGNED_BYTES:
            raise ConfigError("file", str(path), f"at most {MAX_SIGNED_BYTES} bytes")
        return cls(path.name, data, signature)

    @property
    def text(self) -> str:
        """The file's text (:func:`check_text`)."""
        return check_text(self.data, self.name)


def sign_file(data: bytes, name: str, kind: Kind, key: SigningKey, at: datetime) -> bytes:
    """The detached signature (``.sig`` bytes) of a file (see the module docstring).

    :param data: the file's bytes, exactly.
    :param name: the file's name.
    :param kind: what it is.
    :param key: the signer's private key.
    :param at: the signing time.
    :raises SignatureError: if the file is not UTF-8 with LF line endings and no byte-order mark.
    """
    check_text(data, name)
    if not name or "/" in name or "\n" in name or not name.isascii():
        raise ConfigError("file name", name, "a plain ASCII file name")
    header = (f"{_SIGNATURE_HEADER}\nkind: {kind.value}\nfile: {name}\nsize: {len(data)}\n"
              f"sha256: {hashlib.sha256(data).hexdigest()}\nkey: {key.key_id}\nsigned-utc: {utc_text(at)}\n")
    signature = base64.b64encode(key.sign(header.encode("ascii"))).decode("ascii")
    return (header + f"signature: {signature}\n").encode("ascii")


@dataclass(frozen=True)
class _FileSignature:
    message: bytes
    kind: str
    file: str
    size: int
    sha256: str
    key_id: str
    signed_utc: datetime
    signature: bytes


def _parse_file_signature(raw: bytes | None, what: str) -> _FileSignature:
    if raw is None:
        raise SignatureError(Refusal.UNSIGNED, what, f"no {SIGNATURE_SUFFIX} file beside it")

    def malformed(why: str) -> SignatureError:
        return SignatureError(Refusal.SIGNATURE_MALFORMED, what, f"its {SIGNATURE_SUFFIX} file is malformed: {why}")

    if len(raw) > MAX_SIGNATURE_BYTES or not raw.isascii():
        raise malformed("not a short ASCII file")
    text = raw.decode("ascii")
    if "\r" in text or not text.endswith("\n"):
        raise malformed("lines must end in LF, the last one too")
    lines = text[:-1].split("\n")
    if len(lines) != 1 + len(_SIGNATURE_FIELDS) or lines[0] != _SIGNATURE_HEADER:
        raise malformed(f"expected '{_SIGNATURE_HEADER}' and {len(_SIGNATURE_FIELDS)} fields")
    values = {}
    for line, name in zip(lines[1:], _SIGNATURE_FIELDS, strict=True):
        prefix = f"{name}: "
        if not line.startswith(prefix):
            raise malformed(f"expected '{name}:' in line '{line[:40]}'")
        values[name] = line[len(prefix):]
    if not values["size"].isdigit() or not _HEX64_RE.match(values["sha256"]) \
            or not _KEY_ID_RE.match(values["key"]):
        raise malformed("size, sha256 or key is not in its form")
    try:
        signed_utc = _parse_utc(values["signed-utc"], "signed-utc")
    except ConfigError:
        raise malformed("signed-utc is not an ISO-8601 time with offset") from None
    signature = _b64decode(values["signature"], 64, Refusal.SIGNATURE_MALFORMED, what)
    message = text[:text.index("\nsignature: ") + 1].encode("ascii")
    return _FileSignature(message, values["kind"], values["file"], int(values["size"]), values["sha256"],
                          values["key"], signed_utc, signature)


# ---------------------------------------------------------------------------------------------------
# the trust store


def _key_from_toml(raw: Any, index: int) -> TrustedKey:
    where = f"trust.keys[{index}]"
    if not isinstance(raw, dict):
        raise ConfigError(where, raw, "a table")
    allowed = {"id", "name", "roles", "public_key", "added_utc", "not_after", "revoked_utc", "development"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}", raw[unknown[0]], f"one of {sorted(allowed)}")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ConfigError(f"{where}.name", name, "1-64 ASCII letters, digits, '.', '_' or '-'")
    role_values = raw.get("roles")
    known = {r.value: r for r in Role}
    if not isinstance(role_values, list) or not role_values or not all(v in known for v in role_values):
        raise ConfigError(f"{where}.roles", role_values, f"a non-empty list of {sorted(known)}")
    public_key = _b64decode(raw.get("public_key"), 32, Refusal.MALFORMED_KEY, f"{where}.public_key")
    try:
        Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise SignatureError(Refusal.MALFORMED_KEY, f"{where}.public_key", "not an Ed25519 public key") from None
    if raw.get("id") != key_id_of(public_key):
        raise SignatureError(Refusal.MALFORMED_KEY, f"{where}.id",
                             f"id {raw.get('id')!r} is not the key id of its public key ({key_id_of(public_key)})")
    development = raw.get("development", False)
    if not isinstance(development, bool):
        raise ConfigError(f"{where}.development", development, "true or false")
    return TrustedKey(
        key_id=raw["id"], name=name, roles=frozenset(known[v] for v in role_values), public_key=public_key,
        added_utc=_parse_utc(raw.get("added_utc"), f"{where}.added_utc"),
        not_after=None if raw.get("not_after") is None else _parse_utc(raw["not_after"], f"{where}.not_after"),
        revoked_utc=None if raw.get("revoked_utc") is None else _parse_utc(raw["revoked_utc"],
                                                                          f"{where}.revoked_utc"),
        development=development)


def _toml_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=True)


class TrustStore:
    """The keys a rig trusts, with their holders' names and roles.

    :param keys: the keys (key ids unique).
    :raises ConfigError: if a key id repeats.
    """

    def __init__(self, keys: Iterable[TrustedKey]) -> None:
        self.keys: dict[str, TrustedKey] = {}
        for key in keys:
            if key.key_id in self.keys:
                raise ConfigError("trust.keys.id", key.key_id, "unique")
            self.keys[key.key_id] = key

    # -- reading and writing --------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> TrustStore:
        """Parse ``trust.toml`` text (not its signature: see :meth:`load`).

        :raises ConfigError: naming the field at fault; SignatureError MALFORMED_KEY for a bad key.
        """
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError("trust", "trust.toml", "valid TOML", detail=str(exc)) from None
        if set(doc) - {"schema", "keys"} or doc.get("schema") != _TRUST_SCHEMA:
            raise ConfigError("trust.schema", doc.get("schema"), f"{_TRUST_SCHEMA!r} with [[keys]] tables only")
        keys = doc.get("keys", [])
        if not isinstance(keys, list):
            raise ConfigError("trust.keys", keys, "an array of tables ([[keys]])")
        return cls(_key_from_toml(raw, i) for i, raw in enumerate(keys))

    @classmethod
    def load(cls, path: str | Path, *, at: datetime | None = None) -> TrustStore:
        """Read a trust store and check its signature by one of its own administrators.

        :param at: the time the administrator's key must be valid at (default: now).
        :raises SignatureError: if the store is unsigned, tampered with, or signed by a key that is
            not one of its administrators'.
        """
        signed = SignedFile.read(path)
        store = cls.parse(signed.text)
        store.verify_file(signed, Kind.TRUST_STORE, at or datetime.now(timezone.utc))
        return store

    def to_toml(self) -> str:
        """The store as ``trust.toml`` text (keys in the order they were added)."""
        out = ["# The keys this rig trusts: who may sign prescriptions, the drug library, commands and this file.",
               "# Change it with `itb keys`, never by hand: it is signed by an administrator.",
               f"schema = {_toml_string(_TRUST_SCHEMA)}", ""]
        for key in self.keys.values():
            out += ["[[keys]]", f"id = {_toml_string(key.key_id)}", f"name = {_toml_string(key.name)}",
                    "roles = [" + ", ".join(_toml_string(r.value) for r in sorted(key.roles, key=lambda r: r.value))
                    + "]",
                    f"public_key = {_toml_string(base64.b64encode(key.public_key).decode('ascii'))}",
                    f"added_utc = {_toml_string(utc_text(key.added_utc))}"]
            if key.not_after is not None:
                out.append(f"not_after = {_toml_string(utc_text(key.not_after))}")
            if key.revoked_utc is not None:
                out.append(f"revoked_utc = {_toml_string(utc_text(key.revoked_utc))}")
            if key.development:
                out.append("development = true  # a published key: never for clinical use")
            out.append("")
        return "\n".join(out)

    def save(self, path: str | Path, admin: SigningKey, at: datetime) -> None:
        """Write the store and its signature by ``admin`` (one of its administrators).

        :raises SignatureError: if ``admin`` is not a valid administrator key of this store.
        """
        path = Path(path)
        data = self.to_toml().encode("utf-8")
        signature = sign_file(data, path.name, Kind.TRUST_STORE, admin, at)
        self.verify_file(SignedFile(path.name, data, signature), Kind.TRUST_STORE, at)
        for target, content in ((path, data), (path.with_name(path.name + SIGNATURE_SUFFIX), signature)):
            staging = target.with_name(target.name + ".new")
            staging.write_bytes(content)
            staging.replace(target)

    # -- changes ----------------------------------------------------------------------------------------

    def with_key(self, key: TrustedKey) -> TrustStore:
        """A copy with ``key`` added.

        :raises ConfigError: if its id is there already.
        """
        return TrustStore([*self.keys.values(), key])

    def with_revoked(self, key_id: str, at: datetime) -> TrustStore:
        """A copy with key ``key_id`` revoked at ``at``.

        :raises ConfigError: for an unknown or already revoked key.
        """
        key = self.keys.get(key_id)
        if key is None or key.revoked_utc is not None:
            raise ConfigError("key id", key_id, f"a key of this store that is not revoked ({sorted(self.keys)})")
        return TrustStore(replace(k, revoked_utc=at) if k.key_id == key_id else k for k in self.keys.values())

    # -- verification -----------------------------------------------------------------------------------

    def check_signature(self, key_id: str, signature: bytes, message: bytes, at: datetime,
                        roles: Sequence[Role], what: str) -> TrustedKey:
        """Check one signature: a known key, a valid signature, not revoked or expired, a permitted role.

        :raises SignatureError: UNKNOWN_KEY, BAD_SIGNATURE, KEY_REVOKED, KEY_EXPIRED or WRONG_ROLE.
        """
        key = self.keys.get(key_id)
        if key is None:
            raise SignatureError(Refusal.UNKNOWN_KEY, what, f"key {key_id} is not in this rig's trust store")
        if not _verifies(key.public_key, signature, message):
            raise SignatureError(Refusal.BAD_SIGNATURE, what, f"the signature does not verify with {key}")
        refused = key.refusal(at)
        if refused is not None:
            raise SignatureError(refused[0], what, refused[1])
        if not key.roles & set(roles):
            raise SignatureError(Refusal.WRONG_ROLE, what,
                                 f"{key} may not sign this; it needs {' or '.join(r.value for r in roles)}")
        return key

    def verify_file(self, signed: SignedFile, kind: Kind, at: datetime) -> Verified:
        """Every check of a signed file, in the order of the module docstring.

        :param signed: the file and its signature.
        :param kind: what the file must be.
        :param at: the time the key must be valid at.
        :return: who signed it.
        :raises SignatureError: naming the first check that failed.
        """
        what = f"{kind.value} {signed.name}"
        sig = _parse_file_signature(signed.signature, what)
        if sig.kind != kind.value:
            raise SignatureError(Refusal.WRONG_KIND, what, f"the signature is for a {sig.kind}, not a {kind.value}")
        if sig.file != signed.name:
            raise SignatureError(Refusal.FOR_ANOTHER_FILE, what, f"the signature is for {sig.file}")
        if len(signed.data) < sig.size:
            raise SignatureError(Refusal.TRUNCATED, what, f"{len(signed.data)} of the {sig.size} bytes signed")
        check_text(signed.data, what)
        key = self.check_signature(sig.key_id, sig.signature, sig.message, at, kind.roles, what)
        digest = hashlib.sha256(signed.data).hexdigest()
        if len(signed.data) != sig.size or digest != sig.sha256:
            raise SignatureError(Refusal.CONTENT_CHANGED, what,
                                 f"its bytes are not the ones {key} signed ({len(signed.data)} bytes, "
                                 f"sha256 {digest[:16]}...; signed: {sig.size} bytes, {sig.sha256[:16]}...)")
        return Verified(key, digest, sig.signed_utc)


# ---------------------------------------------------------------------------------------------------
# signed commands (any remote interface)


@dataclass(frozen=True)
class SignedCommand:
    """A therapy change as a remote interface sends it, parsed (signatures not yet checked).

    :ivar controller_id: the controller it is addressed to (:attr:`controller.assembly.Controller.controller_id`).
    :ivar action: the action (:data:`~controller.roles.PERMISSIONS`).
    :ivar role: the role it is asked under.
    :ivar params: the action's parameters (internal units, JSON values).
    :ivar nonce: 32 random hex digits, never used twice.
    :ivar issued_utc: when it was signed.
    :ivar signatures: ``(key id, signature)``: the requester's first, then any co-signers'.
    :ivar body: the signed bytes.
    """

    controller_id: str
    action: str
    role: Role
    params: Mapping[str, Any]
    nonce: str
    issued_utc: datetime
    signatures: tuple[tuple[str, bytes], ...]
    body: bytes = field(repr=False)


def sign_command(key: SigningKey, *, controller_id: str, action: str, role: Role, params: Mapping[str, Any],
                 issued_utc: datetime, nonce: str | None = None, cosigners: Sequence[SigningKey] = ()) -> bytes:
    """A signed command: canonical JSON ``{"body": TEXT, "signatures": [{"key", "signature"}...]}``.

    ``TEXT`` is the canonical JSON (sorted keys, no spaces, ASCII) of ``schema``
    (``itb.command/1``), ``controller``, ``action``, ``role``, ``params``, ``nonce`` and
    ``issued_utc``; every signature is over its UTF-8 bytes.

    :param key: the requester's key.
    :param cosigners: further people signing the same body (dual sign-off).
    :param nonce: 32 hex digits (default: fresh random ones).
    """
    body = canonical_json({"schema": _COMMAND_SCHEMA, "controller": controller_id, "action": action,
                           "role": role.value, "params": dict(params), "nonce": nonce or secrets.token_hex(16),
                           "issued_utc": utc_text(issued_utc)})
    message = body.encode("utf-8")
    signatures = [{"key": k.key_id, "signature": base64.b64encode(k.sign(message)).decode("ascii")}
                  for k in (key, *cosigners)]
    return canonical_json({"body": body, "signatures": signatures}).encode("ascii")


def parse_command(data: bytes) -> SignedCommand:
    """Parse a signed command's bytes (strictly: exact keys and types).

    :raises SignatureError: COMMAND_MALFORMED naming what is wrong.
    """
    def malformed(why: str) -> SignatureError:
        return SignatureError(Refusal.COMMAND_MALFORMED, "signed command", why)

    if not isinstance(data, bytes) or len(data) > MAX_SIGNED_BYTES:
        raise malformed(f"not bytes of at most {MAX_SIGNED_BYTES}")
    try:
        envelope = json.loads(data)
        body = json.loads(envelope["body"]) if isinstance(envelope, dict) and isinstance(envelope.get("body"),
                                                                                         str) else None
    except (ValueError, KeyError):
        raise malformed("not JSON") from None
    if not isinstance(envelope, dict) or set(envelope) != {"body", "signatures"} or not isinstance(body, dict):
        raise malformed("expected an object with body and signatures")
    keys = {"schema", "controller", "action", "role", "params", "nonce", "issued_utc"}
    if set(body) != keys or body["schema"] != _COMMAND_SCHEMA:
        raise malformed(f"the body must hold exactly {sorted(keys)}, schema {_COMMAND_SCHEMA}")
    roles = {r.value: r for r in Role}
    if not isinstance(body["controller"], str) or not isinstance(body["action"], str) \
            or body["role"] not in roles or not isinstance(body["params"], dict) \
            or not isinstance(body["nonce"], str) or not _NONCE_RE.match(body["nonce"]):
        raise malformed("controller, action, role, params or nonce is not in its form")
    try:
        issued = _parse_utc(body["issued_utc"], "issued_utc")
    except ConfigError:
        raise malformed("issued_utc is not an ISO-8601 time with offset") from None
    raw_signatures = envelope["signatures"]
    if not isinstance(raw_signatures, list) or not 1 <= len(raw_signatures) <= 4:
        raise malformed("signatures must be a list of 1 to 4")
    signatures = []
    for raw in raw_signatures:
        if not isinstance(raw, dict) or set(raw) != {"key", "signature"} or not isinstance(raw["key"], str) \
                or not _KEY_ID_RE.match(raw["key"]):
            raise malformed("each signature is {key, signature}")
        signatures.append((raw["key"], _b64decode(raw["signature"], 64, Refusal.COMMAND_MALFORMED,
                                                  "signed command")))
    return SignedCommand(body["controller"], body["action"], roles[body["role"]], body["params"], body["nonce"],
                         issued, tuple(signatures), envelope["body"].encode("utf-8"))


# ---------------------------------------------------------------------------------------------------
# the journal's seal


def seal_message(journal_id: str, count: int, last_hash: str, state: str) -> bytes:
    """The bytes the journal key signs for a head: domain, journal id, entry count, last hash, open/closed."""
    return f"{_SEAL_DOMAIN}\n{journal_id}\n{count}\n{last_hash}\n{state}\n".encode("ascii")


def seal_verifies(public_key: bytes, seal: Any, message: bytes) -> bool:
    """True if ``seal`` (base64 text) is the journal key's signature of ``message``."""
    try:
        signature = _b64decode(seal, 64, Refusal.BAD_SIGNATURE, "seal")
    except SignatureError:
        return False
    return _verifies(public_key, signature, message)


# ---------------------------------------------------------------------------------------------------
# the rig's security directory


@dataclass(frozen=True)
class RigSecurity:
    """A rig's verified security material (:meth:`load`).

    :ivar directory: where it was read from.
    :ivar trust: the trust store (its signature checked).
    :ivar journal_key: the private key that seals this rig's journals (a ``system`` key of the store).
    :ivar library: the signed drug library file.
    :ivar library_signer: who signed it (an administrator).
    """

    directory: Path
    trust: TrustStore
    journal_key: SigningKey
    library: SignedFile
    library_signer: Verified

    @property
    def development(self) -> bool:
        """True if this is the shipped development material (public keys: never for clinical use)."""
        return self.directory == DEVELOPMENT_DIR

    @classmethod
    def directory_in_use(cls) -> Path:
        """``$ITB_SECURITY_DIR``, or :data:`DEVELOPMENT_DIR` when it is not set."""
        named = os.environ.get(SECURITY_DIR_ENV)
        return Path(named).resolve() if named else DEVELOPMENT_DIR

    @classmethod
    def load(cls, directory: str | Path | None = None) -> RigSecurity:
        """Read and verify a security directory (default: :meth:`directory_in_use`); cached while unchanged.

        :raises ConfigError: if a file is missing or unreadable.
        :raises SignatureError: if the trust store or the drug library fails its signature, or the
            journal key is not a ``system`` key of the store.
        """
        where = Path(directory).resolve() if directory is not None else cls.directory_in_use()
        files = [where / name for name in (TRUST_FILE, TRUST_FILE + SIGNATURE_SUFFIX, LIBRARY_FILE,
                                           LIBRARY_FILE + SIGNATURE_SUFFIX, JOURNAL_KEY_FILE)]
        try:
            stamp = tuple(p.stat().st_mtime_ns for p in files)
        except OSError as exc:
            raise ConfigError(SECURITY_DIR_ENV, str(where),
                              f"a security directory holding {', '.join(p.name for p in files)}",
                              detail=str(exc)) from exc
        cached = _LOADED.get(where)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        now = datetime.now(timezone.utc)
        trust = TrustStore.load(where / TRUST_FILE, at=now)
        journal_key = SigningKey.load(where / JOURNAL_KEY_FILE)
        trusted = trust.keys.get(journal_key.key_id)
        if trusted is None or Role.SYSTEM not in trusted.roles or trusted.refusal(now) is not None:
            raise SignatureError(Refusal.UNKNOWN_KEY, str(where / JOURNAL_KEY_FILE),
                                 f"key {journal_key.key_id} is not a valid system key of {where / TRUST_FILE}")
        library = SignedFile.read(where / LIBRARY_FILE)
        signer = trust.verify_file(library, Kind.DRUG_LIBRARY, now)
        loaded = cls(where, trust, journal_key, library, signer)
        if loaded.development:
            log.info("security: the DEVELOPMENT keys of %s are in use (public keys: not for clinical use; "
                     "set %s on a real rig)", where, SECURITY_DIR_ENV)
        _LOADED[where] = (stamp, loaded)
        return loaded


_LOADED: dict[Path, tuple[tuple[int, ...], RigSecurity]] = {}
