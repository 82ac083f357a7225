"""The controller's front door: one function builds the whole dosing firmware, nothing else wires it.

:func:`build_controller` takes a prescription with its signed file, a patient record,
a pump driver, a clock and the durable store, and returns a :class:`Controller`: the
safety kernel's gate (caps from the prescription, rate envelope from the pump), the
screening gate, the alarm manager (journalled to the store), the control loop and the
clinical workflows, connected by constructor injection. The scenario runner, the tests
and any future tool build the controller here and drive it through the
:class:`Controller`'s methods; none of them constructs the parts.

Security (SEC-01 to SEC-04): the controller is built only from a prescription whose file
verifies against the rig's trust store with a clinician's signature, and only if the
kernel's drug library is the one an administrator signed. Every request that changes
therapy passes one door, :meth:`Controller.act` (a local caller naming its actor) or
:meth:`Controller.act_signed` (a signed command from any remote interface: identity,
nonce and time verified, replays refused), checked against
:data:`controller.roles.PERMISSIONS`; a refusal has a reason code, is journalled
durably, and changes nothing.

Finding your way:

* where a **rate is decided**: the workflows of :class:`controller.therapy.Therapy` ask the
  kernel through :class:`controller.gate.KernelGate` (every delivery decision);
* where a **rate is sent**: :class:`controller.commands.CommandIssuer` (the only sender of
  delivery commands, journalled and verified), driven by :class:`controller.loop.ControlLoop`.

Units: times ms, doses ng/day, volumes nL, rates nL/h.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from types import MappingProxyType, NoneType
from typing import Any

from controller import drug_library
from controller.alarms import AlarmCode, AlarmManager
from controller.audit import SYSTEM_ACTOR, Actor, Role
from controller.gate import KernelGate, screening_gate
from controller.loop import ControlLoop, LoopConfig, PollRecord
from controller.patient import PatientRecord
from controller.prescription import Prescription, assess_change, parse_prescription, soft_limit_breaches
from controller.roles import PERMISSIONS, Refusal, SecurityPolicy, refusals
from controller.signing import Kind, RigSecurity, SignatureError, SignedFile, parse_command
from controller.store import Store
from controller.therapy import (CLINICIAN, PROCEDURE_RESUME_VERIFY_MS, SignedDoseOverride, Therapy, WorkflowResult,
                                Why)
from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_H, MS_PER_MIN, MS_PER_S
from hal.clock import Clock
from hal.pump import PumpDriver

__all__ = ["MAX_REFILL_TOLERANCE_PCT", "MAX_RESTART_TITRATION_AFTER_MS", "Controller", "ControllerSettings",
           "build_controller"]

#: Largest restart threshold a rig may set, ms: the 24 h default. The label restarts at the titration dose after *any*
#: interruption (itb-clinical §1.6 [JP-LBL], §3.3); a rig may set a stricter (shorter) threshold, never a looser one,
#: since a longer one would put a maintenance dose back on a patient whose tolerance has had days to fall.
MAX_RESTART_TITRATION_AFTER_MS = 24 * MS_PER_H
#: Largest refill tolerance a rig may set, % of the expected volume (RES-03).
MAX_REFILL_TOLERANCE_PCT = 100
#: ``T_resume`` bounds (SAFE-05), ms: see :attr:`ControllerSettings.procedure_resume_verify_ms`.
PROCEDURE_RESUME_VERIFY_RANGE_MS = (5 * MS_PER_MIN, 6 * MS_PER_H)


@dataclass(frozen=True)
class ControllerSettings:
    """What a rig or clinic sets that a prescription does not say (units in names).

    :ivar poll_interval_ms: time between status polls, ms.
    :ivar drift_tolerance_ppm: allowed mismatch between commanded and counted volume, ppm.
    :ivar unconfirmed_alarm_ms: delivery unconfirmed this long raises THERAPY_STATUS_UNKNOWN, ms.
    :ivar refill_tolerance_pct: allowed mismatch between expected and removed volume at a refill, %.
    :ivar restart_titration_after_ms: an interruption longer than this restarts at the titration dose, ms.
    :ivar priming_duration_ms: how long the priming bolus after implant runs, ms.
    :ivar counter_clear_above_nl: clear the pump's dispensed counter when it passes this, nL (its
        display resolution coarsens as it grows).
    :ivar withdrawal_alarm_after_ms: the dose reaching the catheter tip below
        ``withdrawal_alarm_fraction_pct`` of the prescription for this long raises the high-priority
        WITHDRAWAL_RISK alarm, ms. Default 6 h: about four CSF half-lives (1.6 h, itb-clinical §6),
        well inside the 24-72 h over which the withdrawal syndrome builds (§3.2).
    :ivar withdrawal_alarm_fraction_pct: see ``withdrawal_alarm_after_ms``, % of the prescribed dose
        (default 50).
    :ivar procedure_resume_verify_ms: ``T_resume`` (SAFE-05): after a guided procedure the pump's restart must be
        verified (read back running at the commanded rate, its counter advancing) within this, else the
        high-priority PROCEDURE_RESUME_FAILED, ms, in [5 min, 6 h]. Default 1 h: two default poll intervals, and
        four checks 15 min apart; the FDA asks for the pump to be checked after every MRI (itb-clinical §4.1.4
        [FDA-MRI17]), so the alarm must come while the patient is still with the staff who scanned them, hours
        before the withdrawal syndrome builds (24-72 h, §3.2); even at the lowest labelled rate (0.048 mL/day,
        2 µL/h) a 1 µL counter moves twice in it. At most 6 h, the default WITHDRAWAL_RISK window: a longer one
        would come after the tip-dose alarm and add nothing.
    """

    poll_interval_ms: int = 30 * MS_PER_MIN
    drift_tolerance_ppm: int = 50_000
    unconfirmed_alarm_ms: int = 2 * MS_PER_H
    refill_tolerance_pct: int = 20
    restart_titration_after_ms: int = 24 * MS_PER_H
    priming_duration_ms: int = 30 * MS_PER_MIN
    counter_clear_above_nl: int = 1_000_000
    withdrawal_alarm_after_ms: int = 6 * MS_PER_H
    withdrawal_alarm_fraction_pct: int = 50
    procedure_resume_verify_ms: int = PROCEDURE_RESUME_VERIFY_MS

    def __post_init__(self) -> None:
        if isinstance(self.counter_clear_above_nl, bool) or not isinstance(self.counter_clear_above_nl, int) \
                or self.counter_clear_above_nl <= 0:
            raise ConfigError("counter_clear_above_nl", self.counter_clear_above_nl, "an integer > 0 nL")
        for name in ("poll_interval_ms", "unconfirmed_alarm_ms", "priming_duration_ms", "withdrawal_alarm_after_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < MS_PER_S:
                raise ConfigError(name, value, f"an integer >= {MS_PER_S} ms")
        low, high = PROCEDURE_RESUME_VERIFY_RANGE_MS
        value = self.procedure_resume_verify_ms
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError("procedure_resume_verify_ms", value, f"an integer in [{low}, {high}] ms")
        for name, high in (("drift_tolerance_ppm", 10_000_000), ("refill_tolerance_pct", MAX_REFILL_TOLERANCE_PCT),
                           ("withdrawal_alarm_fraction_pct", 100),
                           ("restart_titration_after_ms", MAX_RESTART_TITRATION_AFTER_MS)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
                raise ConfigError(name, value, f"an integer in [0, {high}]")


def loop_config(prescription: Prescription, settings: ControllerSettings) -> LoopConfig:
    """The loop's parameters: thresholds from the prescription, timing from the settings."""
    rx = prescription
    return LoopConfig(
        poll_interval_ms=settings.poll_interval_ms,
        minimum_rate_nl_per_h=rx.rate_nl_per_h(rx.titration.minimum_rate_ng_per_day),
        drift_tolerance_ppm=settings.drift_tolerance_ppm,
        unconfirmed_alarm_ms=settings.unconfirmed_alarm_ms,
        low_reservoir_nl=rx.pump.low_reservoir_alarm_nl,
        low_reservoir_days=rx.pump.low_reservoir_alarm_days,
        empty_reservoir_nl=rx.pump.empty_threshold_nl,
        dead_volume_nl=rx.pump.dead_volume_nl,
        restart_titration_after_ms=settings.restart_titration_after_ms,
        reservoir_capacity_nl=rx.pump.pump_model.capacity_nl,
        counter_clear_above_nl=settings.counter_clear_above_nl,
        withdrawal_alarm_after_ms=settings.withdrawal_alarm_after_ms,
        withdrawal_alarm_fraction_pct=settings.withdrawal_alarm_fraction_pct,
    )


class _AlarmJournal:
    """Where the alarm manager records events: every listener (a report), then the store.

    Events are staged in the store and commit with its next transaction (every command's
    pending record, every acknowledged workflow, the periodic resume point): annunciation never
    waits for the disk, and a storage failure surfaces where durability is needed, as
    JOURNAL_WRITE_FAILURE, instead of stopping an alarm.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.listeners: list[Callable[..., None]] = []

    def record_alarm(self, *, event: str, code: str, priority: str, actor: Actor, detail: str = "") -> None:
        for listener in self.listeners:
            listener(event=event, code=code, priority=priority, actor=actor, detail=detail)
        self.store.record_alarm(event=event, code=code, priority=priority, actor=actor, detail=detail, durable=False)


def _journal_int_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """Keep only values the journal stores exactly (no floats)."""
    return {k: v for k, v in payload.items() if v is None or isinstance(v, (bool, int, str, list))}


_REQUIRED = object()
_OPTIONAL_TEXT = (str, NoneType)

#: The parameters of every controller action (internal units in the names): name -> (type, default).
ACTION_PARAMS: Mapping[str, Mapping[str, tuple[Any, Any]]] = MappingProxyType({
    "screening_dose": {"dose_ug": (int, _REQUIRED), "adequate": (bool, _REQUIRED), "effect_ms": (int, 0)},
    "implant": {"prime": ((bool, NoneType), None), "catheter": (str, "saline"), "anchor_ms": (int, 0)},
    "configure_patient_bolus": {},
    "titrate": {"dose_ng_per_day": (int, _REQUIRED), "reason": (str, "clinical response"),
                "override_reason": (_OPTIONAL_TEXT, None)},
    "flex": {"steps": (list, _REQUIRED), "anchor_ms": (int, 0), "override_reason": (_OPTIONAL_TEXT, None)},
    "clinician_bolus": {"dose_ng": (int, _REQUIRED), "duration_ms": (int, _REQUIRED)},
    "prime": {"duration_ms": ((int, NoneType), None)},
    "patient_bolus": {},
    "refill": {"removed_nl": (int, _REQUIRED), "added_nl": (int, _REQUIRED),
               "concentration_ug_per_ml": (int, _REQUIRED), "lot": (str, "unrecorded"),
               "acknowledge_mismatch": (bool, False), "complete": (bool, True)},
    "acknowledge_alarms": {},
    "resume": {},
    "taper": {"target_dose_ng_per_day": (int, _REQUIRED), "authorised_by": (str, _REQUIRED)},
    "discontinue": {"authorised_by": (_OPTIONAL_TEXT, None), "emergency": (bool, False)},
    "begin_procedure": {"kind": (str, "mri"), "authorised_by": (str, _REQUIRED),
                        "expected_duration_ms": (int, _REQUIRED), "zero_rate_required": ((bool, NoneType), None)},
    "end_procedure": {},
})


def _action_params(action: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """``given`` checked against :data:`ACTION_PARAMS` (types exact, bool is not int), defaults filled in.

    :raises ConfigError: naming the parameter.
    """
    spec = ACTION_PARAMS[action]
    unknown = sorted(set(given) - set(spec))
    if unknown:
        raise ConfigError(f"{action}.{unknown[0]}", given[unknown[0]], f"one of the parameters {sorted(spec)}")
    params = {}
    for name, (kind, default) in spec.items():
        value = given.get(name, default)
        if value is _REQUIRED:
            raise ConfigError(f"{action}.{name}", None, "given (a required parameter)")
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise ConfigError(f"{action}.{name}", value, f"of type {' or '.join(k.__name__ for k in kinds)}")
        params[name] = value
    if action == "flex":
        steps = params["steps"]
        if not all(isinstance(s, (list, tuple)) and len(s) == 2 and all(type(v) is int for v in s) for s in steps):
            raise ConfigError("flex.steps", steps, "[start_ms_of_day, dose_ng_per_day] pairs of integers")
        params["steps"] = [tuple(s) for s in steps]
    return params


Workflow = Callable[["Controller", Actor, Mapping[str, Any]], WorkflowResult]

#: What each controller action runs, once the door has let it through (a test checks it covers
#: every ``controller`` action of :data:`controller.roles.PERMISSIONS`).
WORKFLOWS: Mapping[str, Workflow] = MappingProxyType({
    "screening_dose": lambda c, a, p: c.therapy.screening_dose(p["dose_ug"], adequate=p["adequate"],
                                                               effect_ms=p["effect_ms"]),
    "implant": lambda c, a, p: c._implant(prime=p["prime"], catheter=p["catheter"], anchor_ms=p["anchor_ms"]),
    "configure_patient_bolus": lambda c, a, p: c._configure_patient_bolus(),
    "titrate": lambda c, a, p: c.therapy.titrate(p["dose_ng_per_day"], reason=p["reason"],
                                                 override_reason=p["override_reason"], actor=a),
    "flex": lambda c, a, p: c.therapy.set_flex(p["steps"], anchor_ms=p["anchor_ms"], actor=a,
                                               override_reason=p["override_reason"]),
    "clinician_bolus": lambda c, a, p: c.therapy.clinician_bolus(p["dose_ng"], p["duration_ms"]),
    "patient_bolus": lambda c, a, p: c.therapy.patient_bolus_request(),
    "prime": lambda c, a, p: c.therapy.prime(duration_ms=p["duration_ms"], actor=a),
    "refill": lambda c, a, p: c.therapy.refill(
        removed_nl=p["removed_nl"], added_nl=p["added_nl"], concentration_ug_per_ml=p["concentration_ug_per_ml"],
        lot=p["lot"], acknowledge_mismatch=p["acknowledge_mismatch"], complete=p["complete"], actor=a),
    "acknowledge_alarms": lambda c, a, p: c.therapy.acknowledge_alarms(actor=a),
    "resume": lambda c, a, p: c.therapy.resume(actor=a),
    "taper": lambda c, a, p: c.therapy.taper(p["target_dose_ng_per_day"], authorised_by=p["authorised_by"]),
    "discontinue": lambda c, a, p: c.therapy.discontinue(authorised_by=p["authorised_by"], emergency=p["emergency"]),
    "begin_procedure": lambda c, a, p: c.therapy.begin_procedure(
        p["kind"], authorised_by=p["authorised_by"], expected_duration_ms=p["expected_duration_ms"],
        zero_rate_required=p["zero_rate_required"]),
    "end_procedure": lambda c, a, p: c.therapy.end_procedure(actor=a),
})


@dataclass
class Controller:
    """The dosing firmware for one patient and one pump, assembled by :func:`build_controller`.

    Drive it with :meth:`run_until` (virtual or real time) and its workflow methods; watch it
    with :meth:`subscribe`. Every workflow returns a :class:`~controller.therapy.WorkflowResult`
    whose reason codes are the kernel's and the workflow's.

    :ivar prescription: the prescription in effect.
    :ivar patient: the patient record.
    :ivar store: the durable store (journal, resume point, bolus records).
    :ivar gate: the safety kernel's gate.
    :ivar alarms: the alarm manager.
    :ivar loop: the control loop (owns the pump).
    :ivar therapy: the clinical workflows (the controller's inside: requests from people go
        through :meth:`act` or :meth:`act_signed`).
    :ivar security: the rig's verified keys and drug library.
    :ivar policy: how strict the door is.
    """

    prescription: Prescription
    patient: PatientRecord
    store: Store
    gate: KernelGate
    alarms: AlarmManager
    loop: ControlLoop
    therapy: Therapy
    _alarm_journal: _AlarmJournal = field(repr=False)
    security: RigSecurity = field(repr=False, default=None)  # type: ignore[assignment]
    policy: SecurityPolicy = field(default_factory=SecurityPolicy)
    _requester: Actor | None = field(default=None, repr=False)

    # -- time and observation ------------------------------------------------------------------------

    def now_ms(self) -> int:
        """Controller time, ms."""
        return self.loop.now_ms()

    def run_until(self, t_ms: int) -> None:
        """Handle every event due up to controller time ``t_ms``, sleeping on the clock in between."""
        self.loop.run_until(t_ms)

    def poll(self) -> PollRecord:
        """One status poll now."""
        return self.loop.poll()

    def subscribe(self, *, on_poll: Callable[[PollRecord], None] | None = None,
                  on_event: Callable[[str, dict[str, Any]], None] | None = None,
                  on_result: Callable[[WorkflowResult], None] | None = None,
                  on_alarm: Callable[..., None] | None = None) -> None:
        """Watch the controller: each poll, each therapy event, each workflow result, each alarm event."""
        if on_poll is not None:
            self.loop.observers.append(on_poll)
        if on_event is not None:
            self.loop.event_sinks.append(on_event)
        if on_result is not None:
            self.therapy.sinks.append(on_result)
        if on_alarm is not None:
            self._alarm_journal.listeners.append(on_alarm)

    def detach(self) -> None:
        """Drop every subscriber (before the controller is abandoned, as in a simulated crash)."""
        self.loop.observers.clear()
        self.loop.event_sinks.clear()
        self.therapy.sinks.clear()
        self._alarm_journal.listeners.clear()

    def recover(self) -> dict[str, Any]:
        """Resume from the store after a restart, before any command (see :meth:`ControlLoop.recover`).

        The alarms held before the restart are held again first (ALM-03, :meth:`AlarmManager.restore`):
        a stall's HIGH alarms must not vanish with the process while the pump is still stopped, and the
        condition's later clear or an operator's acknowledgement must find them. CONTROLLER_DEATH is the
        exception that proves it: it names one unclean stop, which ended when that restart came back, so a
        held one is cleared here and the recovery raises this restart's own (unacknowledged, with its
        own detail); held, it would swallow every later death, acknowledged or not.
        """
        self.alarms.restore(self.store.alarm_events())
        if self.alarms.is_active(AlarmCode.CONTROLLER_DEATH):
            self.alarms.clear(AlarmCode.CONTROLLER_DEATH, detail="superseded by a new restart after an unclean stop")
        found = self.loop.recover()
        self.therapy.restore_state(concentration_changed=found.get("concentration_change") in ("completed", "running"))
        return found

    # -- the front door ----------------------------------------------------------------------------------

    @property
    def controller_id(self) -> str:
        """This controller's identity, to which a signed command must be addressed (its journal's id)."""
        return self.store.journal_id

    def act(self, action: str, actor: Actor, **params: Any) -> WorkflowResult:
        """Ask for ``action`` as ``actor``, locally (the caller vouches for who it is).

        :param action: an action of :data:`controller.roles.PERMISSIONS` (scope ``controller``).
        :param actor: who asks, under which role.
        :param params: the action's parameters (:data:`ACTION_PARAMS`; internal units).
        :return: the workflow's result, or a refusal whose reasons are :class:`~controller.roles.Refusal`
            codes (journalled; nothing changed).
        :raises ConfigError: for parameters the action does not take, or of the wrong type.
        """
        if not isinstance(actor, Actor):
            raise ConfigError("actor", actor, "an Actor (name and role)")
        if action not in ACTION_PARAMS:
            return self._refuse(action, actor, (Refusal.UNKNOWN_ACTION,), f"{action} is not a controller action")
        checked = _action_params(action, params)
        refused = refusals(action, actor.role, checked, signers=0, policy=self.policy)
        if refused:
            return self._refuse(action, actor, refused, f"{actor} may not ask for {action} this way")
        return self._run(action, actor, checked)

    def act_signed(self, command: bytes) -> WorkflowResult:
        """Take a signed command (:func:`controller.signing.sign_command`) from any remote interface.

        The command is taken only if it is addressed to this controller, its requester's key
        (and any co-signer's) is in the trust store, valid and holds the role asked under, its
        nonce was never seen, it is fresh (:attr:`SecurityPolicy.max_command_age_ms`), the key
        is not locked out by failed attempts, and the role table lets it through. Its nonce is
        stored durably before anything acts.

        :param command: the command's bytes, as received.
        :return: the workflow's result, or a journalled refusal (nothing changed).
        """
        actor = Actor("unauthenticated", Role.SYSTEM)
        try:
            cmd = parse_command(command)
        except SignatureError as exc:
            return self._refuse("signed_command", actor, (exc.reason,), exc.detail)
        key_id = cmd.signatures[0][0]
        known = self.security.trust.keys.get(key_id)
        actor = Actor(known.name, cmd.role) if known is not None else Actor(f"key-{key_id}", cmd.role)
        context = {"key_id": key_id, "nonce": cmd.nonce}
        if cmd.controller_id != self.controller_id:
            return self._refuse(cmd.action, actor, (Refusal.WRONG_CONTROLLER,),
                                f"addressed to controller {cmd.controller_id}", **context)
        now = self.loop.clock.utc_now()
        if self._locked_out(key_id, now):
            return self._refuse(cmd.action, actor, (Refusal.LOCKED_OUT,),
                                f"key {key_id} is locked out after repeated failed authentications", **context)
        permission = PERMISSIONS.get(cmd.action)
        roles = permission.roles if permission is not None else ()
        signers: set[str] = set()
        for index, (signer_id, signature) in enumerate(cmd.signatures):
            try:
                key = self.security.trust.check_signature(signer_id, signature, cmd.body, datetime.now(timezone.utc),
                                                          (cmd.role,) if index == 0 else roles, "signed command")
            except SignatureError as exc:
                self._auth_failed(signer_id, now, exc.reason)
                return self._refuse(cmd.action, actor, (exc.reason,), exc.detail, **context)
            signers.add(key.name)
        if self.store.nonce_used(cmd.nonce):
            self._auth_failed(key_id, now, Refusal.REPLAYED_NONCE)
            return self._refuse(cmd.action, actor, (Refusal.REPLAYED_NONCE,),
                                "its nonce was used before: a replay", **context)
        age_ms = (now - cmd.issued_utc) // timedelta(milliseconds=1)
        if age_ms > self.policy.max_command_age_ms or -age_ms > self.policy.max_clock_skew_ms:
            reason = Refusal.COMMAND_EXPIRED if age_ms > 0 else Refusal.COMMAND_FROM_FUTURE
            self._auth_failed(key_id, now, reason)
            return self._refuse(cmd.action, actor, (reason,), f"issued {age_ms} ms before the controller's time "
                                f"(allowed: up to {self.policy.max_command_age_ms} ms)", **context)
        if cmd.action not in ACTION_PARAMS:
            return self._refuse(cmd.action, actor, (Refusal.UNKNOWN_ACTION,),
                                f"{cmd.action} is not a controller action", **context)
        try:
            checked = _action_params(cmd.action, cmd.params)
        except ConfigError as exc:
            return self._refuse(cmd.action, actor, (Refusal.COMMAND_MALFORMED,), str(exc), **context)
        refused = refusals(cmd.action, cmd.role, checked, signers=len(signers), policy=self.policy)
        if refused:
            return self._refuse(cmd.action, actor, refused, f"{actor} may not ask for {cmd.action}", **context)

        def accept() -> None:
            with self.store.transaction():
                self.store.use_nonce(cmd.nonce, key_id, cmd.issued_utc)
                self.store.append_audit(actor, "security.accepted", reason=f"signed command {cmd.action}",
                                        new={"action": cmd.action, "signers": sorted(signers), **context})

        if not self.loop.commands.durably("journal signed command", accept):
            return self._refuse(cmd.action, actor, (Why.NOT_DURABLE,), "its nonce could not be stored", **context)
        return self._run(cmd.action, actor, checked)

    def admit(self, action: str, actor: Actor) -> WorkflowResult | None:
        """Check a ``rig`` action (a simulated fault, a simulated crash) at the door before the rig does it.

        :return: None if ``actor`` may; otherwise the journalled refusal.
        """
        refused = refusals(action, actor.role, {}, signers=0, policy=self.policy, scope="rig")
        return self._refuse(action, actor, refused, f"{actor} may not ask for {action}") if refused else None

    def _run(self, action: str, actor: Actor, params: Mapping[str, Any]) -> WorkflowResult:
        self._requester = actor
        try:
            return WORKFLOWS[action](self, actor, params)
        finally:
            self._requester = None

    def _refuse(self, action: str, actor: Actor, reasons: tuple[Any, ...], detail: str,
                **context: Any) -> WorkflowResult:
        """A refusal at the door: journalled durably with who asked, given to every observer, nothing changed."""
        codes = tuple(r.value for r in reasons)
        result = WorkflowResult(action, False, codes, detail)
        self.loop.commands.durably("journal refusal", lambda: self.store.append_audit(
            actor, "security.refused", new={"action": action, "reasons": list(codes), **context}, reason=detail,
            outcome="denied"))
        for sink in list(self.therapy.sinks):
            if sink != self._journal_result:
                sink(result)
        return result

    def _auth_failed(self, key_id: str, now: datetime, reason: Refusal) -> None:
        self.loop.commands.durably("journal failed authentication",
                                   lambda: self.store.record_auth_failure(key_id, now, reason.value))

    def _locked_out(self, key_id: str, now: datetime) -> bool:
        """True while ``key_id`` has failed :attr:`SecurityPolicy.lockout_after_failures` times in a window
        that ended less than :attr:`SecurityPolicy.lockout_ms` ago."""
        policy = self.policy
        window = timedelta(milliseconds=policy.lockout_window_ms)
        failures = self.store.auth_failures(key_id, since_utc=now - window - timedelta(milliseconds=policy.lockout_ms))
        n = policy.lockout_after_failures
        return any(failures[i + n - 1] - failures[i] <= window for i in range(len(failures) - n + 1))

    # -- workflows from the prescription ---------------------------------------------------------------

    def implant(self, *, prime: bool | None = None, catheter: str = "saline", anchor_ms: int = 0,
                actor: Actor = CLINICIAN) -> WorkflowResult:
        """Fill the pump with the prescription's drug and volume and start the prescribed programme, as ``actor``.

        A simple programme starts its dose; a flex or periodic-bolus programme starts its whole day
        (authorised at once), anchored at controller time ``anchor_ms`` (its midnight).

        :param prime: run a priming bolus of the dead volume; default: only for a saline catheter.
        :param catheter: what the dead volume holds: ``"saline"`` (a new catheter) or ``"drug"`` (kept from a
            replaced pump, or filled with drug by the surgeon); see :meth:`controller.therapy.Therapy.implant`.
        """
        return self.act("implant", actor, prime=prime, catheter=catheter, anchor_ms=anchor_ms)

    def configure_patient_bolus(self, *, actor: Actor = CLINICIAN) -> WorkflowResult:
        """Activate the prescription's patient bolus (size and duration; lockout and count are the kernel's)."""
        return self.act("configure_patient_bolus", actor)

    def _implant(self, *, prime: bool | None, catheter: str, anchor_ms: int) -> WorkflowResult:
        rx = self.prescription
        override = self._programme_override()
        if rx.programme.mode.value in ("flex", "periodic"):
            steps = [(step.start_min * MS_PER_MIN, step.dose_ng_per_day) for step in rx.programme.steps]
            return self.therapy.implant(rx.concentration_ug_per_ml, rx.pump.reservoir_volume_nl, flex_steps=steps,
                                        anchor_ms=anchor_ms, prime=prime, catheter=catheter,
                                        periodic_boluses=list(rx.kernel_periodic_boluses()) or None,
                                        override=override)
        return self.therapy.implant(rx.concentration_ug_per_ml, rx.pump.reservoir_volume_nl,
                                    dose_ng_per_day=rx.programme.steps[0].dose_ng_per_day, prime=prime,
                                    catheter=catheter, override=override)

    def _programme_override(self) -> tuple[tuple[str, ...], str, str] | None:
        """The prescription's signed overrides of the programme's soft limits (dose, rate), as the kernel takes
        them (PRX-02): journalled with the prescription when it was put in effect; none if it has none."""
        overridden = [b for b in soft_limit_breaches(self.prescription)
                      if b.overridden_by is not None and b.field.startswith("programme.") and b.kernel_reason]
        if not overridden:
            return None
        reasons = tuple(sorted({b.kernel_reason for b in overridden}))
        why = "; ".join(f"{b.field}: {b.overridden_by.reason}" for b in overridden)
        prescriber = overridden[0].overridden_by.prescriber
        return reasons, f"prescription {self.prescription.prescription_id}: {why}", prescriber

    def _dose_overrides(self) -> tuple[SignedDoseOverride, ...]:
        """The prescription's signed overrides of the programme's dose soft limits, each with the dose it covers
        (PRX-02): the only soft limits a concentration change may lift (a dose means the same at any
        concentration; a rate at the prescription's concentration does not)."""
        rx = self.prescription
        return tuple(SignedDoseOverride(b.kernel_reason, b.value, f"prescription {rx.prescription_id}: {b.field}: "
                                        f"{b.overridden_by.reason}", b.overridden_by.prescriber)
                     for b in soft_limit_breaches(rx)
                     if b.overridden_by is not None and b.field.startswith("programme.")
                     and b.quantity == "dose_ng_per_day" and b.kernel_reason)

    def _configure_patient_bolus(self) -> WorkflowResult:
        pb = self.prescription.patient_bolus
        return self.therapy.configure_patient_bolus(pb.dose_ng, pb.duration_ms)

    # -- durability ------------------------------------------------------------------------------------------

    def _journal_event(self, event: str, payload: dict[str, Any]) -> None:
        if event == "counter_cleared":
            return  # routine housekeeping; not a therapy event
        if event == "program" and payload.get("result") == "committed" and not payload.get("uncertain"):
            # A verified rate the journal can replay from the authorised programme (flex steps, bolus ends);
            # the therapy events around it are journalled. Failures and uncertain outcomes always are.
            return
        self.store.append_audit(SYSTEM_ACTOR, f"loop.{event}", new=_journal_int_payload(payload), durable=False)

    def _journal_result(self, result: WorkflowResult) -> None:
        """Journal a workflow's outcome: durably when it changed something (it is acknowledged now)."""
        self.loop.commands.durably("journal workflow", lambda: self.store.append_audit(
            self._requester or SYSTEM_ACTOR, f"workflow.{result.action}", new={"allowed": result.allowed, "reasons": list(result.reasons)},
            reason=result.detail, outcome="done" if result.allowed else "denied", durable=result.allowed))


def build_controller(prescription: Prescription, patient: PatientRecord, pump: PumpDriver, clock: Clock,
                     store: Store, *, prescription_file: SignedFile | None = None,
                     settings: ControllerSettings | None = None, kernel_module: Any = None, reason: str = "",
                     security: RigSecurity | None = None, policy: SecurityPolicy | None = None,
                     origin_change_reason: str = "") -> Controller:
    """Build the whole controller. The only place its parts are wired.

    First the prescription's file must verify (SEC-04): signed by a clinician's key of the rig's
    trust store (not revoked, not expired at wall-clock time), its bytes exactly those signed, and
    ``prescription`` exactly what those bytes parse to; and the kernel's drug library must be the
    one an administrator signed. A refusal raises before anything is built or recorded, so the
    prescription in effect and the programme running stay as they were.

    The prescription is put in effect in the journal (with its soft-limit overrides) before any
    therapy, unless the store already holds it as the one in effect (a restart). To resume after a
    crash, build on the same store and call :meth:`Controller.recover` before anything else.

    :param prescription: the validated prescription (the single source of drug, caps, boluses,
        titration policy and reservoir).
    :param prescription_file: its signed file (:meth:`controller.signing.SignedFile.read`).
    :param patient: the patient record (screening or documented prior dose).
    :param pump: the pump driver, connected and configured (its rate envelope bounds the kernel).
    :param clock: the injected clock.
    :param store: the durable store.
    :param settings: rig and clinic timing (default :class:`ControllerSettings`).
    :param kernel_module: a kernel implementation module (default: the selected one; tests use it to
        run the twin).
    :param reason: why this prescription is put in effect (journalled).
    :param security: the rig's keys and drug library (default: :meth:`RigSecurity.load`).
    :param policy: how strict the front door is (default :class:`~controller.roles.SecurityPolicy`).
    :param origin_change_reason: the confirmation, with its reason, of a prescription whose patient
        origin differs from the one in effect (itb-clinical §1: the origin selects the titration
        cap). Journalled with the prescription; the kernel then holds the stricter of the two
        caps for 24 h when the history is restored (:meth:`Controller.recover`).
    :raises SignatureError: if the prescription's signature or the drug library is refused.
    :raises ConfigError: if the patient record does not belong to the prescription, an origin change
        is not confirmed, or any part refuses its configuration (nothing recorded).
    """
    settings = settings or ControllerSettings()
    security = security if security is not None else RigSecurity.load()
    rx = prescription
    verified = _verify_prescription(rx, prescription_file, security)
    drug_library.require_signed(security, drug_library.kernel_library() if kernel_module is None
                                else kernel_module.DEFAULT_LIBRARY)
    if patient.patient_id != rx.patient.patient_id or patient.origin is not rx.patient.origin:
        raise ConfigError("patient", f"{patient.patient_id} ({patient.origin.value})",
                          f"the prescription's patient {rx.patient.patient_id} ({rx.patient.origin.value})")
    caps = pump.capabilities()
    caps_kwargs = {**rx.kernel_caps_kwargs(), "restart_threshold_ms": settings.restart_titration_after_ms}
    gate = KernelGate(rx.concentration_ug_per_ml, caps_kwargs, min_rate_nl_per_h=caps.min_rate_nl_per_h,
                      max_rate_nl_per_h=caps.max_rate_nl_per_h, kernel_module=kernel_module)
    alarm_journal = _AlarmJournal(store)
    alarms = AlarmManager(clock, alarm_journal)
    config = loop_config(rx, settings)
    loop = ControlLoop(pump, clock, gate, alarms, store, config)
    therapy = Therapy(loop, gate, patient, dead_volume_nl=config.dead_volume_nl,
                      reservoir_capacity_nl=config.reservoir_capacity_nl,
                      refill_tolerance_pct=settings.refill_tolerance_pct,
                      restart_titration_after_ms=settings.restart_titration_after_ms,
                      priming_duration_ms=settings.priming_duration_ms,
                      procedure_resume_verify_ms=settings.procedure_resume_verify_ms)
    therapy.screening_gate = screening_gate(kernel_module=kernel_module)
    therapy.replay_screening()
    controller = Controller(rx, patient, store, gate, alarms, loop, therapy, alarm_journal, security,
                            policy or SecurityPolicy())
    in_effect = store.last_prescription_record()
    if in_effect is None or in_effect["toml"] != rx.to_toml():
        previous = None if in_effect is None else store.last_prescription()
        if previous is not None and previous.patient.origin is not rx.patient.origin:
            if not origin_change_reason.strip():
                raise ConfigError("origin_change_reason", origin_change_reason,
                                  f"a confirmation with a reason for the origin change "
                                  f"{previous.patient.origin.value} -> {rx.patient.origin.value} "
                                  "(the origin selects the titration cap)")
            reason = f"{reason}; origin {previous.patient.origin.value} -> {rx.patient.origin.value} confirmed: " \
                     f"{origin_change_reason.strip()}".lstrip("; ")
        signer = Actor(verified.key.name, Role.CLINICIAN)
        assessment = assess_change(previous, rx)
        with store.transaction():
            store.append_audit(signer, "prescription.signature_verified", reason=str(verified.key), new={
                "file": prescription_file.name, "sha256": verified.sha256, "key_id": verified.key.key_id,
                "signed_utc": verified.signed_utc.isoformat(), "development_key": verified.key.development})
            store.record_prescription(rx, signer, assessment=assessment, reason=reason)
    therapy.dose_overrides = controller._dose_overrides()
    loop.event_sinks.append(controller._journal_event)
    therapy.sinks.append(controller._journal_result)
    return controller


def _verify_prescription(rx: Prescription, signed: SignedFile | None, security: RigSecurity) -> Any:
    """The verified signature of ``rx``'s file (see :func:`build_controller`).

    :raises SignatureError: UNSIGNED without a file; the file's own refusal; CONTENT_CHANGED if the
        file does not parse to ``rx``.
    """
    what = f"prescription {rx.prescription_id}"
    if signed is None:
        raise SignatureError(Refusal.UNSIGNED, what, "a prescription is put in effect only from its signed file")
    verified = security.trust.verify_file(signed, Kind.PRESCRIPTION, datetime.now(timezone.utc))
    if parse_prescription(signed.text) != rx:
        raise SignatureError(Refusal.CONTENT_CHANGED, what, f"{signed.name} does not hold this prescription")
    return verified
