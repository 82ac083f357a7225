"""A concentration change keeps the prescribed *programme* at the catheter tip, not only its daily total.

Found by the second outside clinical review of issue #9 (``itb run`` on a flex prescription refilled from
2000 to 500 µg/mL: 290 µg/day flat at the tip for the 5.6 days after the refill, where the flex programme
prescribed 200 µg/day from midnight and 380 µg/day from noon; no alarm, no word in the refill's decision).

BOL-06 and itb-clinical §5.3: the tip dose stays within tolerance of the prescription through the transit
of the dead volume. PRX-06 and PRX-07: a concentration change re-derives the rate of the programme in
effect; it never silently replaces the prescribed programme (TIT-05: the dose in effect is the one the
clinician prescribed). The oracle is physical: the fake pump's pushed volume through
:class:`sim.catheter.PhysicalCatheter` (:class:`~tests.controller.test_transit.TipOracle`), compared
with the flex steps as this test prescribes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from controller.store import Store
from sim.clock import VirtualClock
from sim.fake_pump import FakePump
from tests.controller.conftest import MS_PER_DAY, MS_PER_H, MS_PER_MIN, build_rig
from tests.controller.test_refill_crash import Death, _die, _undie
from tests.controller.test_transit import TipOracle, refill

#: The flex programme: (start of the step in the day, ms; daily dose, µg/day). Daily total 290 µg.
FLEX_UG_PER_DAY = ((0, 200), (12 * MS_PER_H, 380))
#: Observation step, ms (the flex boundaries fall on step edges).
STEP_MS = 30 * MS_PER_MIN
#: Relative tolerance of the tip dose over one step, % (the issue's ±10 %).
TIP_TOLERANCE_PCT = 10


def _step_dose_ug_per_day(t_ms: int) -> int:
    """The flex step's daily dose in force at controller time ``t_ms`` (the programme's day starts at 0)."""
    of_day = t_ms % MS_PER_DAY
    return [dose for start, dose in FLEX_UG_PER_DAY if start <= of_day][-1]


def _on_flex(make_rig: Any, concentration: int) -> tuple[Any, TipOracle]:
    """300 µg/day at ``concentration`` (0.4 mL of drug in the catheter), then a day on the flex programme."""
    rig = make_rig(concentration=concentration, dose_ug_per_day=300, dead_volume_ml="0.4", max_dose_ug_per_day=600)
    oracle = TipOracle(rig, rig.prescription.pump.dead_volume_nl)
    oracle.fill(concentration)
    oracle.catheter.fill(concentration)  # a catheter kept from the replaced pump: drug to the tip
    assert rig.therapy.implant(concentration, 20_000_000, dose_ng_per_day=300_000, catheter="drug").allowed
    for _ in range(2 * MS_PER_DAY // STEP_MS):
        oracle.step(STEP_MS)
    assert rig.therapy.set_flex([(start, dose * 1000) for start, dose in FLEX_UG_PER_DAY], anchor_ms=0).allowed
    oracle.step(STEP_MS)  # the change's own step
    return rig, oracle


def _steps_off(rig: Any, oracle: TipOracle, days: int) -> list[str]:
    """The 30 min steps of the next ``days`` whose tip dose is off the flex step's by more than the tolerance."""
    off = []
    for _ in range(days * MS_PER_DAY // STEP_MS):
        at = rig.loop.now_ms()
        got_pg = oracle.step(STEP_MS)
        expected_pg = _step_dose_ug_per_day(at) * 1_000_000 * STEP_MS // MS_PER_DAY
        if abs(got_pg - expected_pg) * 100 > expected_pg * TIP_TOLERANCE_PCT:
            off.append(f"{at / MS_PER_H:.1f} h: {got_pg * MS_PER_DAY / STEP_MS / 1e6:.0f} µg/day at the tip, "
                       f"{_step_dose_ug_per_day(at)} prescribed")
    return off


def test_the_flex_steps_reach_the_tip_and_survive_a_refill_of_the_same_drug(make_rig: Any) -> None:
    """BOL-06, TIT-05: the oracle's own check. A day on the flex programme, a refill at the same concentration, a
    day more: every step leaves the flex step's dose at the tip."""
    rig, oracle = _on_flex(make_rig, 1000)
    assert not _steps_off(rig, oracle, 1)
    assert refill(rig, oracle, 1000).allowed
    oracle.step(STEP_MS)  # the refill's own step
    assert not _steps_off(rig, oracle, 1)


@pytest.mark.parametrize(("old", "new"), [(2000, 500), (500, 1000)])
def test_a_concentration_change_keeps_the_flex_steps_at_the_tip(make_rig: Any, old: int, new: int) -> None:
    """BOL-06, PRX-06, PRX-07, TIT-05: every 30 min step for two days after the refill leaves the flex step's dose
    at the tip, within ±10 %."""
    rig, oracle = _on_flex(make_rig, old)
    assert not _steps_off(rig, oracle, 1)
    assert refill(rig, oracle, new).allowed
    oracle.step(STEP_MS)  # the refill's own step
    off = _steps_off(rig, oracle, 2)
    assert not off, f"{len(off)} of {2 * MS_PER_DAY // STEP_MS} steps off by more than ±10 %: {off[:3]}"


#: Periodic boluses on a 200 µg/day basal at 2000 µg/mL: 30 µg over 30 min at 08:00 and at 20:00, as the kernel
#: takes them (start in the day ms, duration ms, extra rate nL/h). Daily total 260 µg.
PERIODIC = ((8 * MS_PER_H, 30 * MS_PER_MIN, 30_000), (20 * MS_PER_H, 30 * MS_PER_MIN, 30_000))
PERIODIC_BOLUS_UG = 30
PERIODIC_BASAL_UG_PER_DAY = 200


def test_a_concentration_change_keeps_the_periodic_boluses_at_the_tip(make_rig: Any) -> None:
    """BOL-06, PRX-06, PRX-07, TIT-05: in the two days after a 2000 -> 500 µg/mL refill each periodic bolus's half-hour
    still leaves its 30 µg (within ±10 %) on top of the basal at the tip."""
    rig = make_rig(concentration=2000, dose_ug_per_day=200, dead_volume_ml="0.3", max_dose_ug_per_day=600)
    oracle = TipOracle(rig, rig.prescription.pump.dead_volume_nl)
    oracle.fill(2000)
    oracle.catheter.fill(2000)
    result = rig.therapy.implant(2000, 20_000_000, flex_steps=[(0, PERIODIC_BASAL_UG_PER_DAY * 1000)],
                                 periodic_boluses=list(PERIODIC), catheter="drug")
    assert result.allowed, result
    for _ in range(2 * MS_PER_DAY // STEP_MS):
        oracle.step(STEP_MS)
    basal_pg = PERIODIC_BASAL_UG_PER_DAY * 1_000_000 * STEP_MS // MS_PER_DAY
    expected_pg = basal_pg + PERIODIC_BOLUS_UG * 1_000_000

    def bolus_steps(days: int) -> list[float]:
        got = []
        for _ in range(days * MS_PER_DAY // STEP_MS):
            at = rig.loop.now_ms()
            pg = oracle.step(STEP_MS)
            if any(at % MS_PER_DAY == start for start, _, _ in PERIODIC):
                got.append(pg / 1e6)
        return got

    before = bolus_steps(1)
    assert before and all(abs(ug * 1e6 - expected_pg) * 100 <= expected_pg * TIP_TOLERANCE_PCT for ug in before), before
    assert refill(rig, oracle, 500).allowed
    oracle.step(STEP_MS)
    after = bolus_steps(2)
    short = [ug for ug in after if abs(ug * 1e6 - expected_pg) * 100 > expected_pg * TIP_TOLERANCE_PCT]
    assert not short, f"{len(short)} of {len(after)} bolus half-hours off {expected_pg / 1e6:.1f} µg: {short}"


def _flex_rig(path: Path, clock: VirtualClock, pump: FakePump, **kwargs: Any) -> Any:
    return build_rig(clock, pump, Store(path, clock), concentration=2000, dose_ug_per_day=300, dead_volume_ml="0.4",
                     max_dose_ug_per_day=600, **kwargs)


@pytest.mark.parametrize("kill_after", [1, 2, 3])
def test_a_death_inside_a_flex_concentration_change_completes_it_with_the_programme(tmp_path: Path,
                                                                                   kill_after: int) -> None:
    """PER-02, PRX-06, RES-04, BOL-06: killed right after each delivery command of a 2000 -> 500 µg/mL refill of the
    flex programme, the rebooted controller completes the change with the programme's two steps (from the crash
    intent), and every 30 min step of the next two days leaves the flex step's dose at the tip, within ±10 %."""
    clock = VirtualClock()
    pump = FakePump(clock)
    path = tmp_path / f"flex-{kill_after}.sqlite"
    rig = _flex_rig(path, clock, pump)
    oracle = TipOracle(rig, rig.prescription.pump.dead_volume_nl)
    oracle.fill(2000)
    oracle.catheter.fill(2000)
    assert rig.therapy.implant(2000, 20_000_000, dose_ng_per_day=300_000, catheter="drug").allowed
    for _ in range(2 * MS_PER_DAY // STEP_MS):
        oracle.step(STEP_MS)
    assert rig.therapy.set_flex([(start, dose * 1000) for start, dose in FLEX_UG_PER_DAY], anchor_ms=0).allowed
    for _ in range(MS_PER_DAY // STEP_MS + 1):
        oracle.step(STEP_MS)
    calls = _die(pump, kill_after)
    with pytest.raises(Death):
        refill(rig, oracle, 500)
    assert calls[0] == kill_after
    _undie(pump)
    rig.store.abandon()
    rig.controller.detach()
    again = _flex_rig(path, clock, pump, recover=True, prescription=rig.prescription, settings=rig.settings,
                      patient=rig.controller.patient)
    oracle.rig = again
    assert again.loop.concentration_ug_per_ml == 500 and again.gate.concentration_ug_per_ml == 500
    assert again.loop.programme is not None and len(again.loop.programme.steps) == 2
    oracle.step(STEP_MS)  # the restart's own step
    off = _steps_off(again, oracle, 2)
    assert not off, f"{len(off)} of {2 * MS_PER_DAY // STEP_MS} steps off by more than ±10 %: {off[:3]}"
    again.store.close()
