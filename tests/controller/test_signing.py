"""Signed prescriptions, drug library and trust store (SEC-04), the keys CLI, and no secrets but marked
development keys in the repository (SEC-05).

Oracles: the bytes on disk (a flipped byte anywhere), the trust store as written, and the
running controller's state before and after a refused prescription change.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tomllib
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller import drug_library
from controller.assembly import build_controller
from controller.audit import Role
from controller.prescription import parse_prescription
from controller.roles import Refusal
from controller.signing import (
    DEVELOPMENT_DIR,
    SECURITY_DIR_ENV,
    Kind,
    RigSecurity,
    SignatureError,
    SignedFile,
    SigningKey,
    TrustedKey,
    TrustStore,
    sign_file,
)
from cython_ext.errors import ConfigError
from hil import cli
from tests.controller.conftest import kernel_module

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "hil" / "prescriptions" / "spinal_simple_500.toml"
NOW = datetime(2026, 6, 1, tzinfo=timezone.utc)


def signer(role: str) -> SigningKey:
    return SigningKey.load(DEVELOPMENT_DIR / "signers" / f"{role}.key")


def dev() -> RigSecurity:
    return RigSecurity.load(DEVELOPMENT_DIR)


def signed(data: bytes, *, name: str = "rx.toml", role: str = "clinician", kind: Kind = Kind.PRESCRIPTION,
           key: SigningKey | None = None) -> SignedFile:
    return SignedFile(name, data, sign_file(data, name, kind, key or signer(role), NOW))


def refusal(trust: TrustStore, file: SignedFile, kind: Kind = Kind.PRESCRIPTION) -> Refusal:
    with pytest.raises(SignatureError) as info:
        trust.verify_file(file, kind, NOW)
    assert info.value.reason.value in str(info.value)
    return info.value.reason


def with_key(role: Role, **changes: Any) -> tuple[TrustStore, SigningKey]:
    key = SigningKey.generate()
    trusted = TrustedKey(key.key_id, "dr.other", frozenset({role}), key.public_key, NOW - timedelta(days=1), **changes)
    return dev().trust.with_key(trusted), key


DATA = SHIPPED.read_bytes()


def test_sec04_the_shipped_prescriptions_verify_with_the_development_clinician() -> None:
    for path in sorted((ROOT / "hil" / "prescriptions").glob("*.toml")):
        verified = dev().trust.verify_file(SignedFile.read(path), Kind.PRESCRIPTION, NOW)
        assert verified.key.name == "dev-clinician" and verified.key.development


@pytest.mark.parametrize(("name", "make", "reason"), [
    ("a changed byte", lambda: replace(signed(DATA), data=DATA.replace(b"400", b"900")), Refusal.CONTENT_CHANGED),
    ("a byte appended", lambda: replace(signed(DATA), data=DATA + b"\n"), Refusal.CONTENT_CHANGED),
    ("a truncated file", lambda: replace(signed(DATA), data=DATA[:-40]), Refusal.TRUNCATED),
    ("a signature for another file", lambda: replace(signed(DATA, name="other.toml"), name="rx.toml"),
     Refusal.FOR_ANOTHER_FILE),
    ("another file's signature, renamed", lambda: SignedFile(
        "rx.toml", DATA, signed(DATA.replace(b"400", b"300")).signature), Refusal.CONTENT_CHANGED),
    ("no signature", lambda: SignedFile("rx.toml", DATA), Refusal.UNSIGNED),
    ("a malformed signature", lambda: SignedFile("rx.toml", DATA, b"itb-signature/1\nkind: x\n"),
     Refusal.SIGNATURE_MALFORMED),
    ("a signature's header edited", lambda: SignedFile("rx.toml", DATA, signed(DATA).signature.replace(
        b"signed-utc: 2026-06-01", b"signed-utc: 2026-06-02")), Refusal.BAD_SIGNATURE),
    ("a drug-library signature", lambda: signed(DATA, kind=Kind.DRUG_LIBRARY, role="administrator"),
     Refusal.WRONG_KIND),
    ("an unknown key", lambda: signed(DATA, key=SigningKey.generate()), Refusal.UNKNOWN_KEY),
    ("a patient's key", lambda: signed(DATA, role="patient"), Refusal.WRONG_ROLE),
    ("the administrator's key", lambda: signed(DATA, role="administrator"), Refusal.WRONG_ROLE),
])
def test_sec04_a_prescription_file_is_refused_by_name(name: str, make: Any, reason: Refusal) -> None:
    assert refusal(dev().trust, make()) is reason, name


@pytest.mark.parametrize(("bad", "reason"), [
    (b"\xef\xbb\xbf" + DATA, Refusal.UTF8_BOM),
    (DATA.replace(b"\n", b"\r\n"), Refusal.CRLF_LINE_ENDINGS),
    (DATA.replace(b"dr.example", b"dr.ex\xe4mple"), Refusal.NOT_UTF8),
])
def test_sec04_bom_crlf_and_non_utf8_are_refused_to_sign_and_to_load(bad: bytes, reason: Refusal) -> None:
    with pytest.raises(SignatureError) as info:
        sign_file(bad, "rx.toml", Kind.PRESCRIPTION, signer("clinician"), NOW)
    assert info.value.reason is reason
    converted = replace(signed(DATA), data=bad)  # signed clean, then converted by an editor
    assert refusal(dev().trust, converted) in (reason, Refusal.TRUNCATED)


def test_sec04_expired_and_revoked_keys_are_refused() -> None:
    trust, key = with_key(Role.CLINICIAN, not_after=NOW - timedelta(seconds=1))
    assert refusal(trust, signed(DATA, key=key)) is Refusal.KEY_EXPIRED
    trust, key = with_key(Role.CLINICIAN)
    assert trust.verify_file(signed(DATA, key=key), Kind.PRESCRIPTION, NOW).key.name == "dr.other"
    assert refusal(trust.with_revoked(key.key_id, NOW), signed(DATA, key=key)) is Refusal.KEY_REVOKED


def test_sec04_malformed_keys_are_refused(tmp_path: Path) -> None:
    text = dev().trust.to_toml()
    first = dev().trust.keys[next(iter(dev().trust.keys))]
    good = base64.b64encode(first.public_key).decode()
    for broken in (good[:-4] + "====", "not base64!", base64.b64encode(b"x" * 31).decode()):
        with pytest.raises(SignatureError) as info:
            TrustStore.parse(text.replace(good, broken, 1))
        assert info.value.reason is Refusal.MALFORMED_KEY
    wrong_id = text.replace(f'id = "{first.key_id}"', 'id = "0000000000000000"', 1)
    with pytest.raises(SignatureError, match="MALFORMED_KEY"):
        TrustStore.parse(wrong_id)
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    with pytest.raises(SignatureError) as info:
        SigningKey.load(bad_key)
    assert info.value.reason is Refusal.MALFORMED_KEY
    assert cli.main(["prescription", "sign", str(SHIPPED), "--key", str(bad_key)]) == 2


@settings(max_examples=120, deadline=None)
@given(which=st.sampled_from(["prescription", "library", "trust store"]), part=st.sampled_from(["file", "sig"]),
       position=st.integers(0, 1 << 16), bit=st.integers(0, 7))
def test_sec04_any_flipped_byte_of_a_signed_file_is_detected(which: str, part: str, position: int, bit: int) -> None:
    security = dev()
    file, kind = {"prescription": (SignedFile.read(SHIPPED), Kind.PRESCRIPTION),
                  "library": (security.library, Kind.DRUG_LIBRARY),
                  "trust store": (SignedFile.read(DEVELOPMENT_DIR / "trust.toml"), Kind.TRUST_STORE)}[which]
    raw = bytearray(file.data if part == "file" else file.signature)
    raw[position % len(raw)] ^= 1 << bit
    flipped = replace(file, data=bytes(raw)) if part == "file" else replace(file, signature=bytes(raw))
    with pytest.raises(SignatureError):
        security.trust.verify_file(flipped, kind, NOW)


# -- at the front door ----------------------------------------------------------------------------


def test_sec04_a_refused_prescription_change_leaves_the_running_programme(running: Any) -> None:
    """A new prescription that fails its signature is refused before anything is built or recorded."""
    rx = running.prescription
    raised = parse_prescription(rx.to_toml().replace("dose_ug_per_day = 100", "dose_ug_per_day = 150"))
    data = raised.to_toml().encode()
    genuine = signed(data, name="rx.toml")
    attempts = {
        Refusal.CONTENT_CHANGED: replace(genuine, data=data.replace(b"150", b"190")),
        Refusal.WRONG_ROLE: signed(data, name="rx.toml", role="patient"),
        Refusal.UNSIGNED: None,
    }
    before = (running.store.count(), running.store.last_prescription_record(), running.pump.rate_nl_per_h)
    for reason, file in attempts.items():
        with pytest.raises(SignatureError) as info:
            build_controller(raised, running.controller.patient, running.pump, running.clock, running.store,
                             prescription_file=file, kernel_module=kernel_module())
        assert info.value.reason is reason
    with pytest.raises(SignatureError, match="does not hold this prescription"):
        build_controller(raised, running.controller.patient, running.pump, running.clock, running.store,
                         prescription_file=signed(rx.to_toml().encode()), kernel_module=kernel_module())
    assert (running.store.count(), running.store.last_prescription_record(), running.pump.rate_nl_per_h) == before
    running.advance(3_600_000)
    assert running.loop.mode.value == "running" and running.pump.rate_nl_per_h == before[2]


def test_sec04_the_signer_is_journalled_with_the_prescription(running: Any) -> None:
    entries = list(running.store.entries())
    verified = [e for e in entries if e.action == "prescription.signature_verified"]
    prescription = [e for e in entries if e.kind == "prescription"]
    assert len(verified) == 1 and verified[0].new["development_key"] is True
    assert verified[0].seq < prescription[0].seq and prescription[0].actor == "dev-clinician"


def test_sec04_a_kernel_library_that_is_not_the_signed_one_is_refused() -> None:
    library = dict(kernel_module().DEFAULT_LIBRARY)
    drug_library.require_signed(dev(), library)
    entry = library[500]
    library[500] = entry._replace(bolus_ng=entry.bolus_ng._replace(upper_hard=entry.bolus_ng.upper_hard + 1))
    with pytest.raises(SignatureError) as info:
        drug_library.require_signed(dev(), library)
    assert info.value.reason is Refusal.LIBRARY_MISMATCH and "line" in info.value.detail


def _copy_of_dev(tmp_path: Path) -> Path:
    target = tmp_path / "security"
    shutil.copytree(DEVELOPMENT_DIR, target)
    return target


def test_sec04_a_tampered_security_directory_is_refused(tmp_path: Path) -> None:
    copy = _copy_of_dev(tmp_path)
    assert RigSecurity.load(copy).library_signer.key.name == "dev-administrator"
    library = copy / "drug-library.toml"
    library.write_bytes(library.read_bytes().replace(b"100000]", b"200000]", 1))
    with pytest.raises(SignatureError, match="CONTENT_CHANGED"):
        RigSecurity.load(copy)
    copy = _copy_of_dev(tmp_path / "2")
    trust = copy / "trust.toml"
    trust.write_bytes(trust.read_bytes().replace(b'roles = ["patient"]', b'roles = ["clinician"]'))
    with pytest.raises(SignatureError, match="CONTENT_CHANGED"):
        RigSecurity.load(copy)


# -- the keys CLI -----------------------------------------------------------------------------------


def test_keys_init_add_list_revoke_and_a_rig_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    rig, admin = tmp_path / "rig", tmp_path / "people" / "admin.key"
    assert cli.main(["keys", "init", str(rig), "--admin", "ada", "--admin-key-out", str(admin)]) == 0
    assert cli.main(["keys", "init", str(rig), "--admin", "ada", "--admin-key-out", str(tmp_path / "a2")]) == 2
    doctor = tmp_path / "people" / "dr.lee.key"
    assert cli.main(["keys", "add", "dr.lee", "--role", "clinician", "--generate", str(doctor),
                     "--admin-key", str(admin), "--dir", str(rig)]) == 0
    assert cli.main(["keys", "add", "mallory", "--role", "clinician", "--generate", str(tmp_path / "m.key"),
                     "--admin-key", str(doctor), "--dir", str(rig)]) == 2  # only an administrator changes keys
    capsys.readouterr()
    assert cli.main(["keys", "list", "--dir", str(rig)]) == 0
    listing = capsys.readouterr().out
    assert "ada" in listing and "dr.lee" in listing and "rig-journal" in listing and "mallory" not in listing
    monkeypatch.setenv(SECURITY_DIR_ENV, str(rig))
    rx = tmp_path / "rx.toml"
    rx.write_bytes(DATA)
    assert cli.main(["prescription", "sign", str(rx), "--key", str(doctor)]) == 0
    ours = RigSecurity.load()
    assert ours.directory == rig.resolve() and not ours.development
    assert ours.trust.verify_file(SignedFile.read(rx), Kind.PRESCRIPTION, datetime.now(timezone.utc))
    assert refusal(ours.trust, SignedFile.read(SHIPPED)) is Refusal.UNKNOWN_KEY  # the development key is not trusted
    lee = SigningKey.load(doctor).key_id
    assert cli.main(["keys", "revoke", lee, "--admin-key", str(admin)]) == 0
    with pytest.raises(SignatureError, match="KEY_REVOKED"):
        RigSecurity.load().trust.verify_file(SignedFile.read(rx), Kind.PRESCRIPTION, datetime.now(timezone.utc))
    assert cli.main(["keys", "sign-library", "--admin-key", str(admin)]) == 0
    assert cli.main(["keys", "sign-library", "--admin-key", str(doctor)]) == 2


def test_keys_add_takes_a_public_key_file(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    rig, admin = tmp_path / "rig", tmp_path / "admin.key"
    assert cli.main(["keys", "init", str(rig), "--admin", "ada", "--admin-key-out", str(admin)]) == 0
    public = tmp_path / "tech.pub"
    public.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert cli.main(["keys", "add", "tech.t", "--role", "pump_technician", "--public-key", str(public),
                     "--expires", "2030-01-01", "--admin-key", str(admin), "--dir", str(rig)]) == 0
    (key,) = [k for k in TrustStore.load(rig / "trust.toml").keys.values() if k.name == "tech.t"]
    assert key.roles == {Role.PUMP_TECHNICIAN} and key.not_after.year == 2029 + 1
    public.write_text("not a key")
    assert cli.main(["keys", "add", "x", "--role", "patient", "--public-key", str(public),
                     "--admin-key", str(admin), "--dir", str(rig)]) == 2


# -- SEC-05: no secrets but marked development keys; pinned dependencies ---------------------------


def test_sec05_the_only_private_keys_in_the_repository_are_marked_development_keys() -> None:
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True)
    holders = []
    for name in tracked.stdout.splitlines():
        path = ROOT / name
        if not path.is_file() or path.suffix in (".py", ".md"):
            continue
        if b"PRIVATE KEY-----" in path.read_bytes():
            assert path.is_relative_to(DEVELOPMENT_DIR), f"{name} holds a private key outside the development keys"
            assert path.read_text().startswith("# DEVELOPMENT KEY"), name
            holders.append(SigningKey.load(path).key_id)
    trust = dev().trust
    assert holders and all(trust.keys[k].development for k in holders)
    assert all(k.development for k in trust.keys.values())


def test_sec05_every_dependency_is_pinned_to_a_major_range() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = project["dependencies"] + [r for group in project["optional-dependencies"].values() for r in group]
    for requirement in requirements:
        assert "==" in requirement or (">=" in requirement and "<" in requirement), requirement
    assert any(r.startswith("cryptography") for r in project["dependencies"])


def test_signing_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    assert cli.main(["prescription", "sign", str(tmp_path / "none.toml"),
                     "--key", str(DEVELOPMENT_DIR / "signers" / "clinician.key")]) == 2
    assert not (tmp_path / "none.toml.sig").exists()
    with pytest.raises(ConfigError):
        SignedFile.read(tmp_path / "none.toml")
