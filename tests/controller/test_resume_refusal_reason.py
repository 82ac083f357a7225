"""A resume the orphan check refuses names the check's reason, not PUMP_NOT_VERIFIED (SAFE-01, issue #9).

The pump answered every command: nothing is unverified. The clinician must see why the pump stays
stopped (what it would deliver alone breaks the 24 h cap or the minimum rate), and the stop stays alarmed.
"""

from __future__ import annotations

from controller.alarms import AlarmCode


def test_a_resume_refused_by_the_orphan_check_says_so_and_the_stop_stays_alarmed() -> None:
    from tests.controller.test_clinical_adversary import ClinicalAdversary

    machine = ClinicalAdversary()
    try:
        machine.implant(origin="spinal", effective=2, effect_h=4, cap_ug=800, child_starts_low=False)
        machine.time_passes(minutes=1440)
        machine.pump.inject_stall()
        machine.time_passes(minutes=60)
        assert machine.pump.pushing_nl_per_h() == 0
        loop = machine.rig.loop
        loop.gate.orphan_refusals = lambda *args, **kwargs: ("ORPHAN_OVER_CAP",)
        result = machine.therapy.resume()
        assert not result.allowed
        assert "ORPHAN_OVER_CAP" in result.reasons, result
        assert "PUMP_NOT_VERIFIED" not in result.reasons, result
        assert machine.pump.pushing_nl_per_h() == 0
        assert loop.alarms.is_active(AlarmCode.THERAPY_INTERRUPTED) or loop.alarms.is_active(AlarmCode.MOTOR_STALL)
    finally:
        machine.teardown()
