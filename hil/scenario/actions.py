"""What each scenario action does: one table from the action's ``do`` name to its handler.

Each handler takes the running :class:`~hil.scenario.runner.ScenarioRunner` and the
validated :class:`~hil.scenario.schema.Action` (parameters in the units
:data:`hil.scenario.schema.ACTION_FIELDS` gives them) and asks the controller's front
door (:meth:`controller.assembly.Controller.act`) under the action's role, or sends it as a
signed command (:meth:`~controller.assembly.Controller.act_signed`) with the development
key of that role; a ``rig`` action (a fault, a simulated crash) passes the same door
(:meth:`~controller.assembly.Controller.admit`) before the rig carries it out. The table
covers every action of the schema (a test checks it).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from controller.audit import Actor, Role
from controller.roles import PERMISSIONS
from controller.signing import DEVELOPMENT_DIR, SigningKey, sign_command
from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_H, NG_PER_UG
from cython_ext.vocabulary import CatheterFill

if TYPE_CHECKING:
    from hil.scenario.runner import ScenarioRunner
    from hil.scenario.schema import Action

Handler = Callable[["ScenarioRunner", "Action"], None]

#: The signed commands a run has sent, by action label (for ``replay``).
_SENT: weakref.WeakKeyDictionary[Any, dict[str, bytes]] = weakref.WeakKeyDictionary()


@functools.cache
def development_signer(role: Role) -> SigningKey:
    """The development key of ``role`` (public: a real rig's trust store does not hold it)."""
    return SigningKey.load(DEVELOPMENT_DIR / "signers" / f"{role.value}.key")


def _actor(action: Action) -> Actor:
    role = Role(action.role) if action.role else PERMISSIONS[action.do].roles[0]
    return Actor(action.actor or role.value, role)


def _ask(run: ScenarioRunner, action: Action, **params: Any) -> Any:
    """Ask the front door for ``action.do`` with ``params`` (internal units), locally or signed."""
    actor = _actor(action)
    controller = run.controller
    if not action.signed:
        return controller.act(action.do, actor, **params)
    command = sign_command(development_signer(actor.role), controller_id=controller.controller_id, action=action.do,
                           role=actor.role, params=params, issued_utc=controller.loop.clock.utc_now())
    if action.label:
        _SENT.setdefault(run, {})[action.label] = command
    return controller.act_signed(command)


def _screening_dose(run: ScenarioRunner, a: Action) -> None:
    p = a.params
    result = _ask(run, a, dose_ug=p["dose_ug"], adequate=p["adequate"], effect_ms=int(p["effect_h"] * MS_PER_H))
    if result.allowed:
        run.patient_model_bolus(p["dose_ug"] * NG_PER_UG)


def _implant(run: ScenarioRunner, a: Action) -> None:
    concentration = run.controller.prescription.concentration_ug_per_ml
    if a.params["catheter"] == CatheterFill.DRUG.value:
        run.catheter.fill(concentration)  # kept from the replaced pump, or filled by the surgeon
    run.physical_solution(concentration)  # the pump is filled
    _ask(run, a, prime=a.params["prime"], catheter=a.params["catheter"], anchor_ms=run.t0_ms)


def _titrate(run: ScenarioRunner, a: Action) -> None:
    p = a.params
    if p["dose_ug_per_day"] is not None:
        target = p["dose_ug_per_day"] * NG_PER_UG
    else:
        target = int(run.controller.therapy.prescribed_dose_ng_per_day * (100 + p["change_pct"]) / 100)
    _ask(run, a, dose_ng_per_day=target, reason=p["reason"], override_reason=p["override_reason"])


def _flex(run: ScenarioRunner, a: Action) -> None:
    _ask(run, a, steps=[list(step) for step in a.params["steps"]], anchor_ms=run.t0_ms,
         override_reason=a.params["override_reason"])


def _clinician_bolus(run: ScenarioRunner, a: Action) -> None:
    _ask(run, a, dose_ng=a.params["dose_ug"] * NG_PER_UG, duration_ms=a.params["duration_min"])


def _prime(run: ScenarioRunner, a: Action) -> None:
    _ask(run, a, duration_ms=a.params["duration_min"])


def _refill(run: ScenarioRunner, a: Action) -> None:
    p = a.params
    result = _ask(run, a, removed_nl=p["removed_ml"], added_nl=p["added_ml"],
                  concentration_ug_per_ml=p["concentration_ug_per_ml"], lot=p["lot"],
                  acknowledge_mismatch=p["acknowledge_mismatch"], complete=p["complete"])
    if result.allowed:
        run.physical_solution(p["concentration_ug_per_ml"])  # the new drug really is in the reservoir


def _taper(run: ScenarioRunner, a: Action) -> None:
    _ask(run, a, target_dose_ng_per_day=a.params["target_dose_ug_per_day"] * NG_PER_UG,
         authorised_by=a.params["authorised_by"])


def _discontinue(run: ScenarioRunner, a: Action) -> None:
    _ask(run, a, authorised_by=a.params["authorised_by"], emergency=a.params["emergency"])


def _begin_procedure(run: ScenarioRunner, a: Action) -> None:
    p = a.params
    _ask(run, a, kind=p["kind"], authorised_by=p["authorised_by"], expected_duration_ms=p["expected_duration_min"],
         zero_rate_required=p["zero_rate_required"])


def _without_params(run: ScenarioRunner, a: Action) -> None:
    _ask(run, a)


def _fault(run: ScenarioRunner, a: Action) -> None:
    if run.controller.admit(a.do, _actor(a)) is None:
        run.inject_fault(a.params["kind"], clear=False)


def _clear_fault(run: ScenarioRunner, a: Action) -> None:
    if run.controller.admit(a.do, _actor(a)) is None:
        run.inject_fault(a.params["kind"], clear=True)


def _restart_controller(run: ScenarioRunner, a: Action) -> None:
    if run.controller.admit(a.do, _actor(a)) is None:
        run.restart_controller()


def _replay(run: ScenarioRunner, a: Action) -> None:
    sent = _SENT.get(run, {}).get(a.params["of"])
    if sent is None:
        raise ConfigError("replay.of", a.params["of"], "a signed action this process sent (a resumed run cannot "
                          "replay one sent before the interruption)")
    run.controller.act_signed(sent)


#: Every scenario action's handler, by its ``do`` name.
ACTIONS: Mapping[str, Handler] = MappingProxyType({
    "screening_dose": _screening_dose,
    "implant": _implant,
    "titrate": _titrate,
    "flex": _flex,
    "clinician_bolus": _clinician_bolus,
    "prime": _prime,
    "configure_patient_bolus": _without_params,
    "patient_bolus": _without_params,
    "refill": _refill,
    "fault": _fault,
    "clear_fault": _clear_fault,
    "acknowledge_alarms": _without_params,
    "taper": _taper,
    "discontinue": _discontinue,
    "begin_procedure": _begin_procedure,
    "end_procedure": _without_params,
    "restart_controller": _restart_controller,
    "replay": _replay,
})
