"""An implant states what its catheter holds: saline (a new catheter) or drug (issue #9, BOL-06, VAL-01).

itb-clinical §1.3 and §5.3: the dead volume must be filled with drug before the basal dose reaches the
patient. A new catheter holds saline and is primed; without the priming it stays saline, the implant is
not complete and CATHETER_NOT_PRIMED (high priority) says so. A catheter kept from a replaced pump, or
filled with drug by the surgeon, holds the reservoir's drug to the tip: a priming bolus would push its
whole dead volume of drug into the patient, so it is refused before anything changes.

The oracle is physical: :class:`tests.controller.test_transit.TipOracle`, the fake pump's pushed volume
(``actual_delivered_nl``) through a :class:`sim.catheter.PhysicalCatheter` filled as the surgeon left it,
never the controller's own catheter model.
"""

from __future__ import annotations

from typing import Any

import pytest

from controller.alarms import AlarmCode, Priority
from controller.loop import Mode
from controller.therapy import CLINICIAN
from cython_ext.errors import ConfigError
from tests.controller.conftest import MS_PER_DAY, MS_PER_H, MS_PER_MIN, Rig
from tests.controller.test_transit import TipOracle

DOSE_UG_PER_DAY = 100  # at 500 µg/mL: 8.3 µL/h, 30 h to push the 0.25 mL catheter's saline out
DEAD_NL = 250_000
STEP_MS = 30 * MS_PER_MIN
#: Drug the prescription puts at the tip in one step, pg.
STEP_PG = DOSE_UG_PER_DAY * 1_000_000 * STEP_MS // MS_PER_DAY


def _rig(make_rig: Any, *, drug_in_catheter: bool) -> tuple[Rig, TipOracle]:
    rig = make_rig(concentration=500, dose_ug_per_day=DOSE_UG_PER_DAY, dead_volume_ml="0.25")
    oracle = TipOracle(rig, rig.prescription.pump.dead_volume_nl)
    if drug_in_catheter:
        oracle.catheter.fill(500)
    oracle.fill(500)
    return rig, oracle


def test_a_drug_filled_catheter_is_not_primed_and_the_tip_has_drug_from_the_start(make_rig: Any) -> None:
    """BOL-06: catheter = "drug" starts the controller's catheter model full of drug; no priming bolus, no
    alarm, the implant is complete, and the choice is in the journalled detail. The controller's tip dose
    equals the physical catheter's from the first step."""
    rig, oracle = _rig(make_rig, drug_in_catheter=True)
    polls: list[Any] = []
    rig.loop.observers.append(polls.append)
    result = rig.controller.act("implant", CLINICIAN, catheter="drug")
    assert result.allowed and result.reasons == (), result
    assert 'catheter = "drug"' in result.detail and "no priming" in result.detail, result.detail
    assert not [b for b in rig.store.boluses() if b.kind == "priming"]
    assert rig.therapy.implant_complete and rig.loop.saline_in_catheter_nl == 0
    assert not rig.alarms.has_priority(Priority.HIGH)
    journalled = [e for e in rig.store.entries() if e.action == "workflow.implant"]
    assert journalled and 'catheter = "drug"' in journalled[-1].reason, journalled
    for _ in range(4):
        got = oracle.step(STEP_MS)
        assert abs(got - STEP_PG) * 20 <= STEP_PG, f"{got} pg at the tip, {STEP_PG} prescribed"
    controller_tip_pg = sum(p.delivered_pg for p in polls)
    assert abs(controller_tip_pg - sum(pg for _, pg in oracle.steps)) * 20 <= STEP_PG, controller_tip_pg
    again = rig.controller.act("prime", CLINICIAN)
    assert not again.allowed and again.reasons == ("NOTHING_TO_PRIME",), again


@pytest.mark.parametrize("door", ["therapy", "front door"])
def test_a_priming_of_a_drug_filled_catheter_is_refused_naming_the_field_and_why(make_rig: Any, door: str) -> None:
    """BOL-06, VAL-01: prime = true with catheter = "drug" would push 0.25 mL of drug (125 µg at 500 µg/mL) on
    top of the dose: refused before anything is sent, naming the field, the value and the reason."""
    rig, _oracle = _rig(make_rig, drug_in_catheter=True)
    sent = len(rig.pump.command_log)
    with pytest.raises(ConfigError) as info:
        if door == "therapy":
            rig.therapy.implant(500, 20_000_000, dose_ng_per_day=DOSE_UG_PER_DAY * 1000, prime=True, catheter="drug")
        else:
            rig.controller.act("implant", CLINICIAN, prime=True, catheter="drug")
    assert info.value.field == "prime" and info.value.value is True
    message = str(info.value)
    assert 'catheter = "drug"' in message and "125 µg" in message and "overdose" in message, message
    assert rig.loop.mode is Mode.IDLE and rig.pump.rate_nl_per_h == 0
    assert len(rig.pump.command_log) == sent and not rig.store.boluses()


@pytest.mark.parametrize("value", ["water", "Drug", "", 0, None, True])
def test_an_unknown_catheter_content_is_refused_naming_the_allowed_values(make_rig: Any, value: Any) -> None:
    """VAL-01: what the catheter holds is one of the two words; anything else changes nothing."""
    rig, _oracle = _rig(make_rig, drug_in_catheter=False)
    with pytest.raises(ConfigError) as info:
        rig.therapy.implant(500, 20_000_000, dose_ng_per_day=DOSE_UG_PER_DAY * 1000, catheter=value)
    assert info.value.field == "catheter" and "'saline'" in str(info.value) and "'drug'" in str(info.value)
    assert rig.loop.mode is Mode.IDLE and rig.pump.rate_nl_per_h == 0


def test_a_saline_catheter_left_unprimed_is_alarmed_and_the_implant_is_not_complete(make_rig: Any) -> None:
    """BOL-06, ALM-01, issue #9: prime = false on a new (saline) catheter: the basal runs, but no drug reaches
    the tip for 30 h; CATHETER_NOT_PRIMED (high priority) and the result say the catheter holds no drug, the
    implant is not complete, and a re-prime is allowed. Physics: the tip gets saline."""
    rig, oracle = _rig(make_rig, drug_in_catheter=False)
    result = rig.controller.act("implant", CLINICIAN, prime=False)
    assert not result.allowed and result.reasons == ("CATHETER_NOT_PRIMED",), result
    assert "holds no drug" in result.detail and "prime = false" in result.detail, result.detail
    assert rig.loop.mode is Mode.RUNNING and rig.pump.rate_nl_per_h == 8333
    assert rig.alarms.is_active(AlarmCode.CATHETER_NOT_PRIMED)
    assert not rig.therapy.implant_complete
    assert oracle.step(6 * MS_PER_H) == 0 and oracle.catheter.concentration_at_tip() == 0
    rig.therapy.acknowledge_alarms()
    assert rig.controller.act("prime", CLINICIAN).allowed
    oracle.step(STEP_MS)
    oracle.step(STEP_MS)
    assert oracle.catheter.concentration_at_tip() == 500 and rig.therapy.implant_complete
