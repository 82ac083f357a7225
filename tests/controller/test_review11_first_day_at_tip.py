"""No increase in the first 24 h of delivery, counted from the drug reaching the catheter tip (issue #9, review 11).

The label (itb-clinical §1.3 [SKYSCAPE][SAULINO16]): "do not raise the dose in the first 24 h"; an
infusion's effect builds over 24-48 h (§2.1). With a catheter that still held saline (no priming, a
priming cut short) the pump's start is not when the patient got the drug: 0.25 mL at 100 µg/day takes
30 h to push out. An increase 30 min after the drug first reached the tip was allowed.

Oracles, both independent of the controller: the drug at the tip is the fake pump's pushed volume
(``actual_delivered_nl``) through :class:`sim.catheter.PhysicalCatheter` filled as the surgeon left it
(:class:`tests.controller.test_transit.TipOracle`); the label rule is computed by hand from it: an
increase is forbidden while the drug has been at the tip less than 24 h, and due once it has been
there 24 h plus one poll (the controller finds the flush at a reconciliation, never early). A priming
that runs its course at the implant is the exception the label itself makes: its drug mixes into the CSF as
it runs (itb-clinical §5.3 [TGA-PRIME]), so delivery starts with it, the implant's 24 h. TIT-01
(the trailing-day baseline: a day at the tip of none or part of the dose is no baseline for a raise),
BOL-06 (the priming that fills the dead volume), PER-02 (it survives a controller restart).
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from controller.loop import Mode
from tests.controller.conftest import MS_PER_DAY, MS_PER_H, MS_PER_MIN, Rig
from tests.controller.test_transit import TipOracle

DOSE_UG_PER_DAY = 100  # at 500 µg/mL: 8.3 µL/h, 30 h to push the 0.25 mL catheter's saline out
RAISED_NG_PER_DAY = 120_000  # +20 %: inside the 30 % spinal cap
STEP_MS = 30 * MS_PER_MIN  # the rig's poll interval too
CODE = "INCREASE_WITHIN_24H_OF_START"


def _unprimed(rig: Rig) -> Rig:
    result = rig.therapy.implant(500, 20_000_000, dose_ng_per_day=DOSE_UG_PER_DAY * 1000, prime=False)
    assert not result.allowed and result.reasons == ("CATHETER_NOT_PRIMED",), result
    return rig


def _primed(rig: Rig) -> Rig:
    result = rig.therapy.implant(500, 20_000_000, dose_ng_per_day=DOSE_UG_PER_DAY * 1000)
    assert result.allowed, result
    return rig


def _drug_filled(rig: Rig) -> Rig:
    result = rig.therapy.implant(500, 20_000_000, dose_ng_per_day=DOSE_UG_PER_DAY * 1000, catheter="drug")
    assert result.allowed, result
    return rig


def _priming_cut_by_a_power_cycle(rig: Rig) -> Rig:
    _primed(rig)
    rig.advance(10 * MS_PER_MIN)
    rig.pump.power_cycle()
    rig.advance(STEP_MS)
    assert rig.loop.mode is Mode.MINIMUM_RATE
    rig.therapy.acknowledge_alarms()  # and resume: the catheter still holds most of its saline
    assert rig.loop.mode is Mode.RUNNING and rig.loop.saline_in_catheter_nl > 100_000
    return rig


STARTS: dict[str, Callable[[Rig], Rig]] = {
    "prime-false": _unprimed,
    "priming-cut-short": _priming_cut_by_a_power_cycle,
    "primed": _primed,
    "catheter-drug": _drug_filled,
}


def _rig(make_rig: Any, start: str) -> tuple[Rig, TipOracle]:
    rig = make_rig(concentration=500, dose_ug_per_day=DOSE_UG_PER_DAY, dead_volume_ml="0.25")
    oracle = TipOracle(rig, rig.prescription.pump.dead_volume_nl)
    if start == "catheter-drug":
        oracle.catheter.fill(500)
    oracle.fill(500)
    rig = STARTS[start](rig)
    oracle.rig = rig
    return rig, oracle


@pytest.mark.parametrize("restart", [False, True], ids=["no-restart", "restart-after-the-drug-arrived"])
@pytest.mark.parametrize("start", list(STARTS))
def test_an_increase_waits_24_h_after_the_drug_reached_the_tip(make_rig: Any, start: str, restart: bool) -> None:
    """§1.3, TIT-01, BOL-06: a +20 % titration is asked for every 30 min from the implant. Each refusal before
    the first allowed one names the rule (or the saline still in the line); the first allowed one comes no
    sooner than 24 h after the physical catheter first let drug out, and no later than a poll after that.
    With a controller restart (crash) after the drug arrived, the rule holds across it (PER-02)."""
    rig, oracle = _rig(make_rig, start)
    implant_ms = rig.loop.now_ms() if start in ("primed", "catheter-drug") else None
    arrived_ms: int | None = None  # end of the first step in which the physical tip let drug out
    restarted = False
    while True:
        got = oracle.step(STEP_MS)
        now = rig.loop.now_ms()
        if got > 0 and arrived_ms is None:
            arrived_ms = now
        if restart and not restarted and arrived_ms is not None and now >= arrived_ms + 2 * MS_PER_H:
            rig = rig.restart()
            oracle.rig = rig
            restarted = True
            rig.advance(MS_PER_MIN)
            rig.therapy.acknowledge_alarms()
            now = rig.loop.now_ms()
        result = rig.therapy.titrate(RAISED_NG_PER_DAY)
        # By hand: the drug may have arrived as early as the start of its step (or the priming's start, §5.3);
        # before 24 h after that, the label forbids the raise outright.
        if arrived_ms is not None and implant_ms is not None:
            arrived_ms = min(arrived_ms, implant_ms + STEP_MS)
        forbidden = arrived_ms is None or now < arrived_ms - STEP_MS + MS_PER_DAY
        if result.allowed:
            assert not forbidden, (f"{start}: raise allowed {(now - arrived_ms) / MS_PER_H:.1f} h after the drug "
                                   f"reached the tip" if arrived_ms else f"{start}: raise allowed, no drug at the tip")
            # Physics: a whole day of the prescribed dose has reached the tip (within 10 %: the step's edges).
            assert oracle.last_24h_pg() * 10 >= DOSE_UG_PER_DAY * 1_000_000 * 9, oracle.last_24h_pg()
            break
        # Named: the saline still in the line, or the first 24 h (other rules may refuse it as well).
        assert {"CATHETER_NOT_PRIMED", CODE} & set(result.reasons), (start, result)
        if result.reasons == (CODE,) and arrived_ms is not None and now - arrived_ms >= MS_PER_H:
            assert "first 24 h of delivery" in result.detail or start == "catheter-drug", result.detail
        assert arrived_ms is None or now < arrived_ms + MS_PER_DAY + STEP_MS, \
            f"{start}: still refused {(now - arrived_ms) / MS_PER_H:.1f} h after the drug reached the tip: {result}"
        assert now < 4 * MS_PER_DAY, f"{start}: no drug at the tip after 4 days"
    assert restarted is restart
    assert rig.gate.daily_dose_ng() == RAISED_NG_PER_DAY


@pytest.mark.parametrize("start", ["prime-false", "priming-cut-short"])
def test_the_first_day_rule_is_hard_and_covers_a_flex_programme(make_rig: Any, start: str) -> None:
    """§1.3: 6 h after the drug first reached the tip (physical catheter), past the kernel's own 24 h from the pump's
    start, a prescriber's override reason does not lift the rule, and a flex programme with a larger daily total
    is refused by it too; a decrease is allowed."""
    rig, oracle = _rig(make_rig, start)
    while oracle.step(STEP_MS) == 0:
        assert rig.loop.now_ms() < 3 * MS_PER_DAY
    for _ in range(6 * MS_PER_H // STEP_MS):
        oracle.step(STEP_MS)
    assert rig.loop.now_ms() > MS_PER_DAY  # the kernel's 24 h from the start are over
    overridden = rig.therapy.titrate(RAISED_NG_PER_DAY, override_reason="spasticity unchanged")
    assert not overridden.allowed and CODE in overridden.reasons, overridden
    assert "first 24 h of delivery" in overridden.detail and "no override" in overridden.detail, overridden.detail
    flex = rig.therapy.set_flex([(0, 90_000), (12 * MS_PER_H, 150_000)])  # 120 µg/day in total
    assert not flex.allowed and CODE in flex.reasons, flex
    assert rig.gate.daily_dose_ng() in (99_996, 100_000)
    lower = rig.therapy.titrate(90_000)
    assert lower.allowed, lower
