"""A bolus program whose ending fails puts back its basal, never its bolus rate for good.

Found by the driver-plus-loop fuzz (``tests/hal/test_driver_loop_fuzz.py``, seed 1666757): a
titration during a clinician bolus ends the bolus first, as a fresh one-phase program at the
basal. The reply to the read-back's phase select (``PHN 1``) was lost, so the program was not
verified, and the issuer put "the previous rate" back: the committed rate, which for a running
bolus program is its first phase, the bolus rate. It went back as a one-phase *continuous*
program, so the pump ran the bolus rate with no end (about 110 µL/h for nine hours, 669 µg at
the tip in 24 h against a 300 µg cap) while the loop booked it as the kept basal. The fix
(``CommandIssuer._restorable_nl_per_h``): what goes back after a multi-phase program is its
continuous last phase, the rate its orphan schedule ends on.

Here the same fault is injected at the same frame, on the real driver and the simulated NE-1000.
The oracle is physical: the drug that left the catheter tip (the mechanism's volume through
:class:`sim.catheter.PhysicalCatheter`) in every 24 h window, against the prescription's cap, and the
rate the mechanism runs afterwards, against the label's basal (dose / concentration).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from controller.assembly import Controller
from sim.catheter import PhysicalCatheter
from sim.clock import VirtualClock
from sim.rig import simulated_pump
from tests.hal.near_cap_controller import (
    CAP_UG_PER_DAY,
    CONCENTRATION_UG_PER_ML,
    DOSE_UG_PER_DAY,
    SYRINGE_DIAMETER_MM,
    near_cap_controller,
)

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000
STEP_MS = 10 * MS_PER_MIN
TITRATED_UG_PER_DAY = 192
CLINICIAN_BOLUS_NG = 25_000
#: Over 35 min the bolus program's first phase (105.714 µL/h) is best held in µL/min (``1.762 UM``), in which
#: the titrated basal (16 µL/h = 0.2667 µL/min) cannot be set while running: as in the seed, the titration's
#: own rate change is refused and whatever the failed bolus end left running stays.
CLINICIAN_BOLUS_MS = 35 * 60_000


def _label_rate_nl_per_h(dose_ug_per_day: int) -> int:
    """The label's basal: dose over concentration, per hour (nL/h)."""
    return dose_ug_per_day * 1_000_000 // CONCENTRATION_UG_PER_ML // 24


@contextlib.contextmanager
def _rig() -> Iterator[tuple[Any, Controller, PhysicalCatheter, list[tuple[str, dict[str, Any]]]]]:
    clock = VirtualClock()
    with contextlib.ExitStack() as stack:
        rig = stack.enter_context(simulated_pump("inprocess", clock=clock, seed=1, fault_layer=True,
                                                 syringe_diameter_mm=SYRINGE_DIAMETER_MM, syringe_volume_ml="1000"))
        controller = near_cap_controller(stack, rig.url, clock, poll_interval_ms=5 * MS_PER_MIN)
        events: list[tuple[str, dict[str, Any]]] = []
        controller.subscribe(on_event=lambda event, payload: events.append((event, payload)))
        assert controller.therapy.implant(CONCENTRATION_UG_PER_ML, 20_000_000,
                                          dose_ng_per_day=DOSE_UG_PER_DAY * 1000).allowed
        catheter = PhysicalCatheter(controller.loop.config.dead_volume_nl, 0)  # unprimed: saline to the tip
        catheter.change_solution(CONCENTRATION_UG_PER_ML)
        yield rig, controller, catheter, events


def _run_measuring_tip(rig: Any, controller: Controller, catheter: PhysicalCatheter, span_ms: int,
                       tip_pg: list[int]) -> None:
    """Advance ``span_ms`` in steps, pushing what the mechanism moved through the physical catheter."""
    mechanics = rig.device.mechanics
    for _ in range(span_ms // STEP_MS):
        before = mechanics.actual_delivered_nl()
        controller.run_until(controller.now_ms() + STEP_MS)
        tip_pg.append(catheter.push(mechanics.actual_delivered_nl() - before))


def _max_24h_ug(tip_pg: list[int]) -> float:
    n = MS_PER_DAY // STEP_MS
    return max(sum(tip_pg[max(0, i - n + 1):i + 1]) for i in range(len(tip_pg))) / 1_000_000


@pytest.mark.parametrize("fault", [None, "lost-reply:match=PHN1$,after=2"],
                         ids=["clean line", "read-back of the bolus end lost"])
def test_a_titration_that_ends_a_bolus_over_a_lost_read_back_keeps_the_tip_dose_within_the_cap(
        fault: str | None) -> None:
    with _rig() as (rig, controller, catheter, events):
        tip_pg: list[int] = []
        _run_measuring_tip(rig, controller, catheter, 60 * MS_PER_MIN, tip_pg)  # priming over
        assert controller.therapy.clinician_bolus(CLINICIAN_BOLUS_NG, CLINICIAN_BOLUS_MS).allowed
        _run_measuring_tip(rig, controller, catheter, STEP_MS, tip_pg)  # inside the bolus phase
        assert rig.device.running_phase == 0, "the bolus phase should still be running"
        if fault is not None:
            # The ending program selects phase 1 to write it (the 1st PHN 1), then to read it back (the 2nd).
            rig.faults.add(fault)
        seen = len(events)
        titrated = controller.therapy.titrate(TITRATED_UG_PER_DAY * 1000)
        ended = [p for e, p in events[seen:] if e == "bolus_end"]
        assert ended and "basal change" in ended[0]["detail"], events[seen:]
        if fault is not None:
            assert any(e == "program" and "read-back failed" in p["detail"] for e, p in events[seen:]), \
                "the injected fault missed the read-back it was aimed at"
        _run_measuring_tip(rig, controller, catheter, MS_PER_DAY + 2 * MS_PER_H, tip_pg)
        mechanics = rig.device.mechanics
        assert _max_24h_ug(tip_pg) <= CAP_UG_PER_DAY
        assert mechanics.moving
        # The bolus rate never outlives its bolus: the mechanism runs the label's new basal.
        assert mechanics.rate_nl_per_h == pytest.approx(_label_rate_nl_per_h(TITRATED_UG_PER_DAY), rel=0.002)
        assert titrated.allowed, titrated
