"""What each scenario action does: one table from the action's ``do`` name to its handler.

Each handler takes the running :class:`~hil.scenario.runner.ScenarioRunner` and the
action's validated parameters (units as :data:`hil.scenario.schema.ACTION_FIELDS`
gives them) and drives the controller through its front door
(:class:`controller.assembly.Controller`), or the simulated rig for faults.
The table covers every action of the schema (a test checks it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from cython_ext.units import MS_PER_H, NG_PER_UG

if TYPE_CHECKING:
    from hil.scenario.runner import ScenarioRunner

Handler = Callable[["ScenarioRunner", Mapping[str, Any]], None]


def _screening_dose(run: ScenarioRunner, p: Mapping[str, Any]) -> None:
    result = run.controller.therapy.screening_dose(p["dose_ug"], adequate=p["adequate"],
                                                   effect_ms=int(p["effect_h"] * MS_PER_H))
    if result.allowed:
        run.patient_model_bolus(p["dose_ug"] * NG_PER_UG)


def _implant(run: ScenarioRunner, p: Mapping[str, Any]) -> None:
    run.physical_solution(run.controller.prescription.concentration_ug_per_ml)  # the pump is filled
    run.controller.implant(prime=p["prime"], anchor_ms=run.t0_ms)


def _titrate(run: ScenarioRunner, p: Mapping[str, Any]) -> None:
    therapy = run.controller.therapy
    if p["dose_ug_per_day"] is not None:
        target = p["dose_ug_per_day"] * NG_PER_UG
    else:
        target = int(therapy.prescribed_dose_ng_per_day * (100 + p["change_pct"]) / 100)
    therapy.titrate(target, reason=p["reason"], override_reason=p["override_reason"])


def _flex(run: ScenarioRunner, p: Mapping[str, Any]) -> None:
    run.controller.therapy.set_flex(list(p["steps"]), anchor_ms=run.t0_ms, override_reason=p["override_reason"])


def _clinician_bolus(run: ScenarioRunner, p: Mapping[str, Any]) -> None:
    run.controller.therapy.clinician_bolus(p["dose_ug"] * NG_PER_UG, p["duration_min"])


def _configure_patient_bolus(run: ScenarioRunner, p: Mapping[str, Any]) -> None:
    run.controller.configure_patient_bolus()


def _patient_bolus(run: ScenarioRunner, p: Mapping[str, Any]) -> None:
    run.controller.therapy.patient_bolus_request()


def _refill(run: ScenarioRunner, p: Mapping[str, Any]) -> None:
    result = run.controller.therapy.refill(removed_nl=p["removed_ml"], added_nl=p["added_ml"],
                                           concentration_ug_per_ml=p["concentration_ug_per_ml"], lot=p["lot"],
                                           acknowledge_mismatch=p["acknowledge_mismatch"], complete=p["complete"])
    if result.allowed:
        run.physical_solution(p["concentration_ug_per_ml"])  # the new drug really is in the reservoir


def _fault(run: ScenarioRunner, p: Mapping[str, Any]) -> None:
    run.inject_fault(p["kind"], clear=False)


def _clear_fault(run: ScenarioRunner, p: Mapping[str, Any]) -> None:
    run.inject_fault(p["kind"], clear=True)


def _acknowledge_alarms(run: ScenarioRunner, p: Mapping[str, Any]) -> None:
    run.controller.therapy.acknowledge_alarms()


def _taper(run: ScenarioRunner, p: Mapping[str, Any]) -> None:
    run.controller.therapy.taper(p["target_dose_ug_per_day"] * NG_PER_UG, authorised_by=p["authorised_by"])


def _discontinue(run: ScenarioRunner, p: Mapping[str, Any]) -> None:
    run.controller.therapy.discontinue(authorised_by=p["authorised_by"], emergency=p["emergency"])


def _restart_controller(run: ScenarioRunner, p: Mapping[str, Any]) -> None:
    run.restart_controller()


#: Every scenario action's handler, by its ``do`` name.
ACTIONS: Mapping[str, Handler] = MappingProxyType({
    "screening_dose": _screening_dose,
    "implant": _implant,
    "titrate": _titrate,
    "flex": _flex,
    "clinician_bolus": _clinician_bolus,
    "configure_patient_bolus": _configure_patient_bolus,
    "patient_bolus": _patient_bolus,
    "refill": _refill,
    "fault": _fault,
    "clear_fault": _clear_fault,
    "acknowledge_alarms": _acknowledge_alarms,
    "taper": _taper,
    "discontinue": _discontinue,
    "restart_controller": _restart_controller,
})
