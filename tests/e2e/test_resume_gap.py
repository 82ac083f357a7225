"""A resumed run's controller gap is when the controller really stopped and restarted (review 11, case k1).

The controller dies at a chosen poll (an exception out of the progress callback: nothing more runs,
nothing is saved cleanly); the simulated pump, served in this process on a virtual clock the test
holds, runs on alone for :data:`DOWN_MS`; then the run is resumed from its report directory. The
oracle is the test's own record of those instants and the simulator's mechanism (the volume it moved
while no controller ran), not the runner's ledger.

Before the fix the run log was replayed after the recovery had already logged this session's
CONTROLLER_DEATH alarm: the gap began at the restart (``1.829 to 1.830 days`` for a kill at 1.354 days)
and the alarm was reported twice.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.scenario import RunOptions, load_scenario
from hil.scenario.runner import SIM_SYRINGE_VOLUME_ML, ScenarioRunner, resume_options, run_scenario
from sim.clock import VirtualClock
from sim.rig import simulated_pump
from tests.scenarios import implant_scenario

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
#: The controller dies at the first poll at or after this scenario time, ms.
KILL_AT_MS = 12 * MS_PER_H
#: How long the pump runs with no controller, ms.
DOWN_MS = 6 * MS_PER_H
#: The pump's dispensed counter resolution at this rate and syringe, nL (the gap is counted by it).
COUNTER_SLACK_NL = 100


class Killed(BaseException):
    """The controller process ends here (not an ItbError: the runner must not catch it)."""


def test_the_gap_runs_from_the_last_sign_of_life_to_the_restart_with_what_the_pump_moved_meanwhile(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "gap.toml"
    path.write_text(implant_scenario("gap", 1, "0d 00:30", poll_interval_min=30))
    scenario = load_scenario(path)
    report = tmp_path / "r"
    world = VirtualClock()
    # The run and the pump share the test's virtual clock (itb sim serve would run in scaled real time).
    monkeypatch.setattr(ScenarioRunner, "_clock", lambda self: world)
    killed_at: list[int] = []

    def die(rel_ms: int, _duration_ms: int) -> None:
        if rel_ms >= KILL_AT_MS:
            killed_at.append(rel_ms)
            raise Killed

    with simulated_pump("inprocess", clock=world, syringe_diameter_mm=str(scenario.pump.syringe_diameter_mm),
                        syringe_volume_ml=SIM_SYRINGE_VOLUME_ML) as rig:
        options = RunOptions(pump_url=rig.url, pump_simulated=True, speed=1000, report_dir=report, progress=die)
        with pytest.raises(Killed):
            run_scenario(scenario, options)
        moved_at_death_nl = rig.device.mechanics.actual_delivered_nl()
        world.advance(DOWN_MS / 1000)
        moved_at_restart_nl = rig.device.mechanics.actual_delivered_nl()
        resumed, options = resume_options(report)
        record = run_scenario(resumed, options)

    assert record.error == "", record.error
    [gap] = record.gaps
    [death] = killed_at
    assert gap["from_t_ms"] == death  # its last poll, logged before it died
    assert death + DOWN_MS <= gap["to_t_ms"] <= death + DOWN_MS + MS_PER_MIN
    assert gap["counted_from_t_ms"] == death
    alone_nl = moved_at_restart_nl - moved_at_death_nl
    assert alone_nl > 100_000  # 6 h at 33.3 µL/h: the pump did run on alone
    assert abs(gap["delivered_nl"] - alone_nl) <= COUNTER_SLACK_NL, (gap, alone_nl)
    deaths = [a for a in record.alarms if a.code == "controller_death" and a.event == "raise"]
    assert len(deaths) == 1 and death + DOWN_MS <= deaths[0].t_ms <= gap["to_t_ms"], deaths
    summary = record.summary()
    assert summary["controller_gaps"] == [gap]
    times = [a.t_ms for a in record.alarms]
    assert times == sorted(times)  # the dead session's alarms first, then the recovery's
    # The prescription's dose runs on through the gap (the programme held; the pump ran it alone):
    # 400 µg/day from the implant at 00:30 to the end of the day, no bolus but the priming.
    assert record.prescribed_at_tip_ug == pytest.approx(400 * 23.5 / 24, abs=0.1)
