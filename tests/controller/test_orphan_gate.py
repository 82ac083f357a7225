"""The orphan check as one call of the Gate, and its refusal as the workflow's reason (issue #10).

Oracle: hand arithmetic on a controller before implant (an empty ledger): at 500 µg/mL a continuous
rate r nL/h delivers r x 24 x 0.5 ng a day, against the prescription's 1000 µg/day cap; its minimum
rate is 2000 nL/h.
"""

from __future__ import annotations

from pathlib import Path

from controller.program import ORPHAN_BELOW_MINIMUM, ORPHAN_OVER_CAP, orphan_of_program, orphan_of_rate
from controller.store import Store
from hal.pump import ProgramPhase, PumpProgram
from sim.clock import VirtualClock
from sim.fake_pump import FakePump
from tests.controller.conftest import build_rig

MS_PER_DAY = 86_400_000
DELIVERY_COMMANDS = {"set_rate", "start", "stop", "pause", "program"}


def test_the_gate_judges_an_orphan_schedule_in_one_call(tmp_path: Path) -> None:
    clock = VirtualClock()
    rig = build_rig(clock, FakePump(clock), Store(tmp_path / "s.sqlite", clock))
    gate, now = rig.loop.gate, rig.loop.now_ms()
    # 83 333 nL/h x 12 ng/(nL/h day) = 999 996 ng <= 1 000 000 ng; 83 334 nL/h gives 1 000 008 ng.
    assert gate.orphan_refusals(orphan_of_rate(83_333), now) == ()
    assert gate.orphan_refusals(orphan_of_rate(83_334), now) == (ORPHAN_OVER_CAP,)
    assert gate.orphan_refusals(orphan_of_rate(1_999), now) == (ORPHAN_BELOW_MINIMUM,)
    # A bolus program: 500 µg (1 000 000 nL) above a 41 666 nL/h basal (499 992 ng/day) passes by 8 ng; 1 nL more
    # of bolus volume (0.5 ng) still fits, 20 nL more (10 ng) does not.
    basal, extra = 41_666, 1_000_000
    for over_nl, refused in ((0, ()), (1, ()), (20, (ORPHAN_OVER_CAP,))):
        program = PumpProgram((ProgramPhase(basal + extra, extra + basal + over_nl), ProgramPhase(basal)))
        assert gate.orphan_refusals(orphan_of_program(program), now) == refused, over_nl


def test_a_change_the_orphan_check_refuses_is_denied_with_its_reason_and_nothing_is_sent(tmp_path: Path) -> None:
    """The workflow names the orphan check's reason (not PUMP_NOT_VERIFIED), and the pump hears nothing."""
    clock = VirtualClock()
    pump = FakePump(clock)
    rig = build_rig(clock, pump, Store(tmp_path / "s.sqlite", clock))
    assert rig.therapy.implant(500, 20_000_000, dose_ng_per_day=100_000).allowed
    rig.advance(2 * MS_PER_DAY)
    sent = [c for c in pump.command_log if c[0] in DELIVERY_COMMANDS]
    rig.loop.gate.orphan_refusals = lambda *_args, **_kwargs: (ORPHAN_OVER_CAP,)  # what the pump alone would breach
    result = rig.therapy.titrate(110_000)
    assert not result.allowed and result.reasons == (ORPHAN_OVER_CAP,), result
    bolus = rig.therapy.clinician_bolus(25_000, 10 * 60_000)
    assert not bolus.allowed and bolus.reasons == (ORPHAN_OVER_CAP,), bolus
    assert [c for c in pump.command_log if c[0] in DELIVERY_COMMANDS] == sent
    assert pump.rate_nl_per_h == 8333
