"""After a missed refill, a refill with a new concentration gets the patient out of minimum-rate mode (issue #9).

Found by the second outside clinical review with ``itb run``: 300 µg/day at 500 µg/mL from 4 mL, the refill
missed; the pump runs at the minimum rate (24 µg/day, 8 % of the dose) with the withdrawal alarm raised. The
clinician refills with 1000 µg/mL: refused (``NOT_RUNNING``: "concentration change refused in mode
minimum_rate"), before and after acknowledging the alarms, so the patient stays at 8 % of the dose until
someone refills with the old concentration. The label treats a missed refill as the withdrawal emergency
(itb-clinical §3.2, boxed warning); RES-05 leaves minimum-rate mode at the refill, the restart rule (§1.6)
then resumes at the titration-phase starting dose, and BOL-06 keeps the tip dose through the transit.

The oracle is physical: the fake pump's pushed volume through :class:`sim.catheter.PhysicalCatheter`
(:class:`~tests.controller.test_transit.TipOracle`), against the restart rule's 100 µg/day computed by hand
(a transferred patient: the lower of the documented 300 µg/day and 2 x the 50 µg first test dose).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.alarms import AlarmCode
from controller.loop import Mode
from controller.store import Store
from sim.clock import VirtualClock
from sim.fake_pump import FakePump
from tests.controller.conftest import MS_PER_DAY, MS_PER_H, build_rig
from tests.controller.test_refill_crash import die_inside_refill, reboot
from tests.controller.test_transit import TipOracle

RESTART_DOSE_UG_PER_DAY = 100  # min(300, 2 x 50): the restart rule for a transferred patient


def _empty_on_minimum_rate(make_rig: Any) -> tuple[Any, TipOracle]:
    rig = make_rig(concentration=500, dose_ug_per_day=300, reservoir_ml=4, dead_volume_ml="0.25")
    oracle = TipOracle(rig, rig.prescription.pump.dead_volume_nl)
    oracle.fill(500)
    oracle.catheter.fill(500)
    assert rig.therapy.implant(500, 4_000_000, dose_ng_per_day=300_000, catheter="drug").allowed
    for _ in range(10 * 24):
        oracle.step(MS_PER_H)
        if rig.loop.mode is Mode.MINIMUM_RATE:
            break
    assert rig.loop.mode is Mode.MINIMUM_RATE
    for _ in range(24):  # a day at the minimum rate before anyone comes
        oracle.step(MS_PER_H)
    assert "withdrawal_risk" in rig.log.raised()
    return rig, oracle


@pytest.mark.parametrize(("concentration_ug_per_ml", "lot"), [(500, "R1"), (1000, "R2")], ids=["same-drug", "new-drug"])
def test_a_missed_refill_resumes_at_the_restart_dose(make_rig: Any, concentration_ug_per_ml: int, lot: str) -> None:
    """RES-05, PRX-06, BOL-06, the restart rule: refilled at the old 500 µg/mL (the oracle's own check) or at a new
    1000 µg/mL and acknowledged, the tip gets 100 µg/day (within 10 %) over the next day, never the old dose."""
    rig, oracle = _empty_on_minimum_rate(make_rig)
    oracle.fill(concentration_ug_per_ml)
    refill = rig.therapy.refill(removed_nl=0, added_nl=20_000_000, concentration_ug_per_ml=concentration_ug_per_ml,
                                lot=lot)
    assert refill.allowed, refill
    rig.therapy.acknowledge_alarms()
    for _ in range(24):
        oracle.step(MS_PER_H)
    got_ug = oracle.last_24h_pg() / 1e6
    assert abs(got_ug - RESTART_DOSE_UG_PER_DAY) <= RESTART_DOSE_UG_PER_DAY * 0.10, got_ug


def test_a_new_concentration_never_ends_a_minimum_rate_held_for_suspected_over_delivery(make_rig: Any) -> None:
    """RES-05, SAFE-02: the refill ends only the missed refill's spell. With over-delivery suspected as well, the
    change is refused (NOT_RUNNING), the pump keeps the minimum rate and the old drug stays recorded."""
    rig, oracle = _empty_on_minimum_rate(make_rig)
    rig.loop.alarms.raise_alarm(AlarmCode.OVER_DELIVERY_SUSPECTED, detail="test: drift over")
    refill = rig.therapy.refill(removed_nl=0, added_nl=20_000_000, concentration_ug_per_ml=1000, lot="R3")
    assert not refill.allowed and "NOT_RUNNING" in refill.reasons, refill
    assert rig.loop.mode is Mode.MINIMUM_RATE and rig.loop.concentration_ug_per_ml == 500
    assert rig.pump.rate_nl_per_h == rig.loop.config.minimum_rate_nl_per_h


@pytest.mark.parametrize("kill_after", [1, 2, 3])
def test_a_death_inside_the_missed_refills_change_completes_it_at_the_restart_dose(tmp_path: Path,
                                                                                  kill_after: int) -> None:
    """PER-02, RES-04, PRX-06, the restart rule: killed right after each delivery command of the 1000 µg/mL refill
    that ends the minimum rate, the rebooted controller completes the change (from the crash intent) and the tip
    gets the restart rule's 100 µg/day (within 10 %) over the next day, never more."""
    path = tmp_path / f"missed-{kill_after}.sqlite"
    clock = VirtualClock()
    pump = FakePump(clock)

    def on_file(settings: Any = None, **rx: Any) -> Any:
        return build_rig(clock, pump, Store(path, clock), settings=settings, **rx)

    rig, oracle = _empty_on_minimum_rate(on_file)
    oracle.fill(1000)
    assert die_inside_refill(rig, pump, kill_after, 1000, "R4") == kill_after
    again = reboot(rig, clock, pump, path)
    oracle.rig = again
    assert again.loop.concentration_ug_per_ml == 1000 and again.gate.concentration_ug_per_ml == 1000
    assert again.loop.mode is Mode.RUNNING, again.loop.mode
    assert again.therapy.prescribed_dose_ng_per_day == RESTART_DOSE_UG_PER_DAY * 1000
    again.therapy.acknowledge_alarms()
    for _ in range(24):
        oracle.step(MS_PER_H)
    got_ug = oracle.last_24h_pg() / 1e6
    assert abs(got_ug - RESTART_DOSE_UG_PER_DAY) <= RESTART_DOSE_UG_PER_DAY * 0.10, got_ug
    again.store.close()
