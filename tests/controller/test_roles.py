"""The front door: every action x every role (SEC-01), high-risk confirmation (SEC-02), signed and
replay-protected commands (SEC-03), failed authentications logged with lockout (SEC-05).

The oracle for "allowed" is :data:`controller.roles.PERMISSIONS` read as a plain table; for
"nothing changed" it is a snapshot of the pump, the loop, the kernel and the store before and
after a refused request.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.assembly import ACTION_PARAMS, WORKFLOWS, Controller, ControllerSettings, build_controller
from controller.audit import Actor, Role
from controller.loop import Mode
from controller.patient import History, PatientRecord
from controller.roles import PERMISSIONS, Refusal, SecurityPolicy
from controller.signing import DEVELOPMENT_DIR, RigSecurity, SigningKey, TrustedKey, sign_command
from controller.store import Store
from sim.clock import VirtualClock
from sim.fake_pump import FakePump
from tests.controller.conftest import kernel_module
from tests.prescriptions import make_prescription, signed_file

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000
CONTROLLER_ACTIONS = sorted(a for a, p in PERMISSIONS.items() if p.scope == "controller")
RIG_ACTIONS = sorted(a for a, p in PERMISSIONS.items() if p.scope == "rig")
DOOR_CODES = {r.value for r in Refusal}


def key_of(role: Role) -> SigningKey:
    """The development key holding ``role`` (the journal key for the controller's own role)."""
    if role is Role.SYSTEM:
        return RigSecurity.load().journal_key
    return SigningKey.load(DEVELOPMENT_DIR / "signers" / f"{role.value}.key")


class Bench:
    """A controller over a fake pump in virtual time, built through the front door."""

    def __init__(self, *, store: Store | None = None, clock: VirtualClock | None = None,
                 policy: SecurityPolicy | None = None, security: RigSecurity | None = None,
                 screened: bool = False) -> None:
        self.clock = clock or VirtualClock()
        self.pump = FakePump(self.clock)
        self.store = store or Store(":memory:", self.clock)
        rx = make_prescription()
        patient = (PatientRecord(rx.patient.patient_id, rx.patient.origin, History.SCREENED) if screened else
                   PatientRecord(rx.patient.patient_id, rx.patient.origin, History.TRANSFERRED,
                                 prior_dose_ng_per_day=100_000))
        self.controller: Controller = build_controller(
            rx, patient, self.pump, self.clock, self.store,
            prescription_file=signed_file(rx), settings=ControllerSettings(poll_interval_ms=30 * MS_PER_MIN),
            kernel_module=kernel_module(), policy=policy, security=security)
        self.results: list[Any] = []
        self.controller.subscribe(on_result=self.results.append)

    def advance(self, ms: int) -> None:
        self.controller.run_until(self.controller.now_ms() + ms)

    def implanted(self) -> Bench:
        assert self.controller.implant().allowed
        self.advance(MS_PER_DAY)
        return self

    def signed(self, action: str, role: Role, *, key: SigningKey | None = None, at: datetime | None = None,
               **params: Any) -> bytes:
        return sign_command(key or key_of(role), controller_id=self.controller.controller_id, action=action,
                            role=role, params=params, issued_utc=at or self.clock.utc_now())

    def snapshot(self) -> tuple[Any, ...]:
        c = self.controller
        return (c.loop.mode, self.pump.rate_nl_per_h, self.pump.state, c.gate.daily_dose_ng(),
                c.therapy.prescribed_dose_ng_per_day, len(self.store.commands()), len(self.store.boluses()),
                self.resume_point(), c.therapy.patient_bolus, [a.code for a in c.alarms.active()])

    def resume_point(self) -> Any:
        """The resume point as of now (every commit carries a fresh one, so the staged copy may be older)."""
        source = self.store.resume_point_source
        return self.store.load_resume_point() if source is None else source()

    def refusals_journalled(self) -> list[Any]:
        return [e for e in self.store.entries() if e.action == "security.refused"]


def _stalled(bench: Bench) -> None:
    bench.pump.inject_stall()
    bench.advance(MS_PER_H)
    assert bench.controller.loop.mode is Mode.STOPPED_FAULT


def _priming_cut_short(bench: Bench) -> None:
    bench.pump.inject_stall()  # during the implant's priming bolus
    bench.advance(30 * MS_PER_MIN)
    bench.controller.therapy.acknowledge_alarms()  # resumes
    bench.advance(MS_PER_H)  # delivery confirmed: only the saline in the line is alarmed
    assert bench.controller.loop.saline_in_catheter_nl > 0


#: For each controller action: how to bring a fresh bench to a state where it succeeds, and its parameters.
SETUPS: dict[str, tuple[Any, dict[str, Any]]] = {
    "screening_dose": (lambda b: None, {"dose_ug": 50, "adequate": True}),
    "implant": (lambda b: None, {}),
    "configure_patient_bolus": (Bench.implanted, {}),
    "titrate": (Bench.implanted, {"dose_ng_per_day": 110_000}),
    "flex": (Bench.implanted, {"steps": [[0, 100_000], [12 * MS_PER_H, 110_000]]}),
    "clinician_bolus": (Bench.implanted, {"dose_ng": 25_000, "duration_ms": 10 * MS_PER_MIN}),
    "prime": (lambda b: (b.controller.implant(), _priming_cut_short(b)), {}),
    "patient_bolus": (lambda b: (b.implanted(), b.controller.configure_patient_bolus()), {}),
    "refill": (Bench.implanted, {"removed_nl": 19_000_000, "added_nl": 20_000_000, "concentration_ug_per_ml": 500}),
    "acknowledge_alarms": (lambda b: (b.implanted(), _stalled(b)), {}),
    "resume": (lambda b: (b.implanted(), _stalled(b)), {}),
    "taper": (Bench.implanted, {"target_dose_ng_per_day": 50_000, "authorised_by": "dev-clinician"}),
    "discontinue": (Bench.implanted, {"authorised_by": "dev-clinician", "emergency": True}),
    "begin_procedure": (Bench.implanted, {"authorised_by": "dev-clinician", "expected_duration_ms": MS_PER_H}),
    "end_procedure": (lambda b: (b.implanted(), b.controller.therapy.begin_procedure(
        "mri", authorised_by="dev-clinician", expected_duration_ms=MS_PER_H)), {}),
}


def test_every_controller_action_has_params_a_workflow_and_a_setup() -> None:
    assert set(ACTION_PARAMS) == set(WORKFLOWS) == set(CONTROLLER_ACTIONS) == set(SETUPS)
    assert all(p.roles for p in PERMISSIONS.values())
    assert not any(Role.SYSTEM in p.roles for p in PERMISSIONS.values())  # the controller asks nothing of itself


def _prepared(action: str) -> tuple[Bench, dict[str, Any]]:
    bench = Bench(screened=action == "screening_dose")
    setup, params = SETUPS[action]
    setup(bench)
    return bench, params


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
@pytest.mark.parametrize("action", CONTROLLER_ACTIONS)
def test_sec01_every_action_by_every_role_signed(action: str, role: Role) -> None:
    """A signed command: the permitted roles succeed; every other role is refused, journalled, and nothing changes."""
    bench, params = _prepared(action)
    before = bench.snapshot()
    result = bench.controller.act_signed(bench.signed(action, role, **params))
    if role in PERMISSIONS[action].roles:
        assert result.allowed, result
        assert not bench.refusals_journalled()
    else:
        assert not result.allowed and result.reasons == (Refusal.ROLE_NOT_PERMITTED.value,), result
        assert bench.snapshot() == before
        (entry,) = bench.refusals_journalled()
        assert (entry.role, entry.outcome, entry.new["action"]) == (role.value, "denied", action)
        assert bench.results[-1] is result


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
@pytest.mark.parametrize("action", CONTROLLER_ACTIONS)
def test_sec01_sec02_every_action_by_every_role_locally(action: str, role: Role) -> None:
    """A local request: the same table; a high-risk one by a permitted role needs re-authentication."""
    bench, params = _prepared(action)
    before = bench.snapshot()
    result = bench.controller.act(action, Actor(f"someone-{role.value}", role), **params)
    permitted = role in PERMISSIONS[action].roles
    high_risk = PERMISSIONS[action].high_risk(params)
    if permitted and not high_risk:
        assert result.allowed, result
        assert not bench.refusals_journalled()
        return
    expected = Refusal.REAUTHENTICATION_REQUIRED if permitted else Refusal.ROLE_NOT_PERMITTED
    assert result.reasons == (expected.value,) and not result.allowed
    assert bench.snapshot() == before
    (entry,) = bench.refusals_journalled()
    assert (entry.actor, entry.role) == (f"someone-{role.value}", role.value)


@pytest.mark.parametrize("role", list(Role), ids=lambda r: r.value)
@pytest.mark.parametrize("action", RIG_ACTIONS)
def test_sec01_rig_actions_pass_the_same_door(action: str, role: Role) -> None:
    bench = Bench().implanted()
    refused = bench.controller.admit(action, Actor("someone", role))
    if role in PERMISSIONS[action].roles:
        assert refused is None
    else:
        assert refused is not None and refused.reasons == (Refusal.ROLE_NOT_PERMITTED.value,)
        assert len(bench.refusals_journalled()) == 1


def test_unknown_actions_and_bad_parameters() -> None:
    bench = Bench().implanted()
    clinician = Actor("dr.a", Role.CLINICIAN)
    assert bench.controller.act("set_rate", clinician).reasons == (Refusal.UNKNOWN_ACTION.value,)
    assert bench.controller.act("fault", Actor("eng", Role.BENCH_ENGINEER)).reasons == (Refusal.UNKNOWN_ACTION.value,)
    with pytest.raises(Exception, match="titrate.dose_ng_per_day"):
        bench.controller.act("titrate", clinician, dose_ng_per_day=True)
    with pytest.raises(Exception, match="titrate.rate"):
        bench.controller.act("titrate", clinician, dose_ng_per_day=110_000, rate=1)
    signed = bench.controller.act_signed(bench.signed("titrate", Role.CLINICIAN, dose_ng_per_day="110000"))
    assert signed.reasons == (Refusal.COMMAND_MALFORMED.value,)


def test_sec02_an_override_makes_a_titration_high_risk() -> None:
    bench = Bench().implanted()
    clinician = Actor("dr.a", Role.CLINICIAN)
    refused = bench.controller.act("titrate", clinician, dose_ng_per_day=110_000, override_reason="seen today")
    assert refused.reasons == (Refusal.REAUTHENTICATION_REQUIRED.value,)
    signed = bench.signed("titrate", Role.CLINICIAN, dose_ng_per_day=110_000, override_reason="seen today")
    assert bench.controller.act_signed(signed).allowed


def test_sec02_without_signed_high_risk_a_local_taper_is_taken() -> None:
    bench = Bench(policy=SecurityPolicy(signed_high_risk=False)).implanted()
    assert bench.controller.act("taper", Actor("dr.a", Role.CLINICIAN), target_dose_ng_per_day=50_000,
                                authorised_by="dr.a").allowed


def _with_second_clinician() -> tuple[RigSecurity, SigningKey]:
    dev = RigSecurity.load()
    second = SigningKey.generate()
    trusted = TrustedKey(second.key_id, "dr.second", frozenset({Role.CLINICIAN}), second.public_key,
                         datetime.now(timezone.utc))
    return replace(dev, trust=dev.trust.with_key(trusted)), second


def test_sec02_dual_sign_off_where_configured() -> None:
    security, second = _with_second_clinician()
    bench = Bench(policy=SecurityPolicy(dual_sign_off=True), security=security).implanted()
    c = bench.controller

    def discontinue(*cosigners: SigningKey) -> Any:
        return c.act_signed(sign_command(key_of(Role.CLINICIAN), controller_id=c.controller_id, action="discontinue",
                                         role=Role.CLINICIAN, params={"authorised_by": "dev-clinician", "emergency": True},
                                         issued_utc=bench.clock.utc_now(), cosigners=cosigners))

    before = bench.snapshot()
    assert discontinue().reasons == (Refusal.SECOND_PERSON_REQUIRED.value,)
    assert discontinue(key_of(Role.CLINICIAN)).reasons == (Refusal.SECOND_PERSON_REQUIRED.value,)  # same person twice
    assert discontinue(key_of(Role.PATIENT)).reasons == (Refusal.WRONG_ROLE.value,)
    assert bench.snapshot() == before
    titrate = c.act_signed(bench.signed("titrate", Role.CLINICIAN, dose_ng_per_day=110_000))
    assert titrate.allowed  # not high risk: one signature is enough
    bench.advance(MS_PER_H)
    assert discontinue(second).allowed


def test_sec03_a_replay_is_refused_after_a_restart_too(tmp_path: Path) -> None:
    clock = VirtualClock()
    store = Store(tmp_path / "store.sqlite", clock)
    bench = Bench(store=store, clock=clock).implanted()
    command = bench.signed("clinician_bolus", Role.CLINICIAN, dose_ng=25_000, duration_ms=10 * MS_PER_MIN)
    assert bench.controller.act_signed(command).allowed
    bench.advance(MS_PER_MIN)
    before = bench.snapshot()
    assert bench.controller.act_signed(command).reasons == (Refusal.REPLAYED_NONCE.value,)
    assert bench.snapshot() == before
    bench.controller.detach()
    store.abandon()  # a crash right after
    again = Bench(store=Store(tmp_path / "store.sqlite", clock), clock=clock)
    again.controller.recover()
    assert again.controller.act_signed(command).reasons == (Refusal.REPLAYED_NONCE.value,)
    again.store.close()


def _resign_body(command: bytes, change: Any) -> bytes:
    """The command with its body changed and the old signature kept (a forgery)."""
    envelope = json.loads(command)
    body = json.loads(envelope["body"])
    change(body)
    envelope["body"] = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return json.dumps(envelope).encode()


def test_sec03_forged_and_misaddressed_commands_are_refused_and_logged() -> None:
    bench = Bench().implanted()
    c = bench.controller
    ok = bench.signed("titrate", Role.CLINICIAN, dose_ng_per_day=110_000)
    now = bench.clock.utc_now()
    revoked_dev = RigSecurity.load()
    cases = {
        Refusal.COMMAND_MALFORMED: b"{not json",
        Refusal.BAD_SIGNATURE: _resign_body(ok, lambda b: b["params"].update(dose_ng_per_day=200_000)),
        Refusal.UNKNOWN_KEY: bench.signed("titrate", Role.CLINICIAN, key=SigningKey.generate(),
                                          dose_ng_per_day=110_000),
        Refusal.WRONG_ROLE: bench.signed("titrate", Role.CLINICIAN, key=key_of(Role.PATIENT),
                                         dose_ng_per_day=110_000),
        Refusal.WRONG_CONTROLLER: sign_command(key_of(Role.CLINICIAN), controller_id="another-rig", action="titrate",
                                               role=Role.CLINICIAN, params={"dose_ng_per_day": 110_000},
                                               issued_utc=now),
        Refusal.COMMAND_EXPIRED: bench.signed("titrate", Role.CLINICIAN, at=now - timedelta(minutes=6),
                                              dose_ng_per_day=110_000),
        Refusal.COMMAND_FROM_FUTURE: bench.signed("titrate", Role.CLINICIAN, at=now + timedelta(minutes=2),
                                                  dose_ng_per_day=110_000),
    }
    before = bench.snapshot()
    for reason, command in cases.items():
        assert c.act_signed(command).reasons == (reason.value,), reason
    assert bench.snapshot() == before
    assert [e.new["reasons"] for e in bench.refusals_journalled()] == [[r.value] for r in cases]
    revoked = replace(revoked_dev, trust=revoked_dev.trust.with_revoked(key_of(Role.CLINICIAN).key_id, now))
    c.security = revoked
    assert c.act_signed(ok).reasons == (Refusal.KEY_REVOKED.value,)


@settings(max_examples=80, deadline=None)
@given(position=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_sec03_any_flipped_byte_of_a_signed_command_is_refused(bench_once: Bench, position: int, bit: int) -> None:
    command = bytearray(bench_once.signed("clinician_bolus", Role.CLINICIAN, dose_ng=25_000,
                                          duration_ms=10 * MS_PER_MIN))
    command[position % len(command)] ^= 1 << bit
    result = bench_once.controller.act_signed(bytes(command))
    assert not result.allowed and set(result.reasons) <= DOOR_CODES, result


@pytest.fixture(scope="module")
def bench_once() -> Bench:
    return Bench(policy=SecurityPolicy(lockout_after_failures=100)).implanted()


def test_sec05_repeated_failures_lock_a_key_out_for_a_while() -> None:
    policy = SecurityPolicy(lockout_after_failures=3, lockout_window_ms=10 * MS_PER_MIN, lockout_ms=15 * MS_PER_MIN)
    bench = Bench(policy=policy).implanted()
    c = bench.controller
    good = bench.signed("titrate", Role.CLINICIAN, dose_ng_per_day=110_000)
    for _ in range(3):
        stale = bench.signed("titrate", Role.CLINICIAN, at=bench.clock.utc_now() - timedelta(hours=1),
                             dose_ng_per_day=110_000)
        assert c.act_signed(stale).reasons == (Refusal.COMMAND_EXPIRED.value,)
    assert c.act_signed(good).reasons == (Refusal.LOCKED_OUT.value,)
    other = bench.signed("acknowledge_alarms", Role.CLINICIAN, key=key_of(Role.PATIENT))
    assert c.act_signed(other).reasons == (Refusal.WRONG_ROLE.value,)  # another key is not locked out
    assert len(bench.store.auth_failures(key_of(Role.CLINICIAN).key_id,
                                         since_utc=bench.clock.utc_now() - timedelta(hours=1))) == 3
    bench.advance(26 * MS_PER_MIN)
    assert c.act_signed(bench.signed("titrate", Role.CLINICIAN, dose_ng_per_day=110_000)).allowed


def test_a_command_carries_who_signed_it_into_the_journal() -> None:
    bench = Bench().implanted()
    command = bench.signed("titrate", Role.CLINICIAN, dose_ng_per_day=110_000)
    assert bench.controller.act_signed(command).allowed
    accepted = [e for e in bench.store.entries() if e.action == "security.accepted"]
    workflow = [e for e in bench.store.entries() if e.action == "workflow.titrate"]
    assert [(e.actor, e.role) for e in accepted + workflow] == [("dev-clinician", "clinician")] * 2
    assert accepted[0].new["nonce"] == json.loads(json.loads(command)["body"])["nonce"]
    assert base64.b64decode(json.loads(command)["signatures"][0]["signature"])
