"""Recovery after a crash or a reboot in the middle of a concentration transit (PER-02, TIT-01, BOL-06; issue #9).

The durable resume point can be old: while nothing changes, the loop commits it only at its periodic
checkpoint (``LoopConfig.checkpoint_interval_ms``, 72 h), and a transit of a low dose lasts days. After a
reboot, controller time goes on by the least time the pump needed to deliver what its counter shows; in a
transit the pump runs the two-phase program that ends the transit by itself, so its second phase, at the new
drug's higher volume rate, must be among what it can have run. Judged on physical time (the world's clock)
and by the label oracle on the pump's physical record, never on the kernel's ledger.
"""

from __future__ import annotations

import pytest

from tests.controller.adversary_world import world_ms

MS_PER_H = 3_600_000


def _in_the_last_hours_of_a_transit(machine) -> None:
    """Spinal, 200 µg/day; 500 -> 2000 -> 500 µg/mL: the second transit runs 4.2 µL/h for 60 h, then 16.7."""
    machine.implant(origin="spinal", effective=2, effect_h=4, cap_ug=800, child_starts_low=False)
    machine.time_passes(minutes=1440)
    machine.change_concentration(concentration=2000, pocket_fill=False)
    machine.time_passes(minutes=1440)
    machine.change_concentration(concentration=500, pocket_fill=False)
    machine.time_passes(minutes=57 * 60)
    assert machine.rig.loop.transit is not None and machine.pump.read_phase() == 1


@pytest.mark.parametrize("downtime_min", [60, 600, 1500])
def test_controller_time_after_a_reboot_across_the_pump_s_own_transit_end_never_runs_ahead(downtime_min: int) -> None:
    """A reboot an hour before the pump's second phase, the host down 1, 10 or 25 h: controller time went on by what
    the first phase's rate needed for the counter's volume, 27 h too far after 10 h down (every lockout and 24 h
    window that much looser). It may not run ahead of physical time, and here it matches it to a minute."""
    from tests.controller.test_clinical_adversary import ClinicalAdversary

    machine = ClinicalAdversary()
    try:
        _in_the_last_hours_of_a_transit(machine)
        machine.time_passes(minutes=120)
        controller_ms, physical_ms = machine.rig.controller.now_ms(), world_ms(machine.world)
        machine.restart(downtime_min=downtime_min, reboot=True, wall_jump_h=0, new_origin="")
        moved_ms = machine.rig.controller.now_ms() - controller_ms
        passed_ms = world_ms(machine.world) - physical_ms
        assert moved_ms <= passed_ms, f"controller +{moved_ms / MS_PER_H:.2f} h, physical +{passed_ms / MS_PER_H:.2f} h"
        assert passed_ms - moved_ms <= 60_000
        machine.time_passes(minutes=60)
        machine.the_label_holds()
    finally:
        machine.teardown()


def test_a_raise_after_a_reboot_across_the_pump_s_own_transit_end_keeps_the_trailing_cap() -> None:
    """TIT-01: +20 % an hour before the crash, 10 h down with a reboot, then +20 % again: 240 -> 288 µg/day was
    allowed (the lowest dose of the previous 24 h was 200, cap 30 %): controller time had run 27 h ahead."""
    from tests.controller.test_clinical_adversary import ClinicalAdversary

    machine = ClinicalAdversary()
    try:
        _in_the_last_hours_of_a_transit(machine)
        machine.titrate(pct=20, override=False)
        machine.time_passes(minutes=60)
        machine.restart(downtime_min=600, reboot=True, wall_jump_h=0, new_origin="")
        machine.time_passes(minutes=60)
        machine.titrate(pct=20, override=False)
        machine.time_passes(minutes=60)
        machine.the_label_holds()
    finally:
        machine.teardown()
