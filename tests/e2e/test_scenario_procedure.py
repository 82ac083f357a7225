"""SAFE-05 end to end: the shipped ``mri`` scenario over the byte-level simulator ("Scenario: pump fails to restart
after the procedure").

Judged on the run's record against the clock and the simulator's physics, not on the controller's accounting: the
alarm comes no later than ``T_resume`` (the default, 60 min) after the procedure's end and not before the checks
could have seen the counter; during the zero-rate hold the simulator's mechanism moves nothing (SAFE-03).
"""

from __future__ import annotations

from hil.scenario import RunOptions, ScenarioRunner, load_scenario
from controller.therapy import PROCEDURE_RESUME_VERIFY_MS

MS_PER_MIN = 60_000


def test_the_pump_that_fails_to_restart_after_the_mri_is_alarmed_within_t_resume() -> None:
    runner = ScenarioRunner(load_scenario("mri"), RunOptions(link="inprocess"))
    moved: list[tuple[int, int]] = []
    runner_poll = runner._on_poll

    def watch(poll):  # the simulator's own pushed volume at every poll
        runner_poll(poll)
        moved.append((poll.now_ms - runner.t0_ms, runner.rig.device.mechanics.actual_delivered_nl()))

    runner._on_poll = watch
    record = runner.run()
    assert record.passed, [c for c in record.checks() if not c.passed]
    decisions = {d.label: d for d in record.decisions if d.label}
    begun, ended = decisions["mri"].t_ms, decisions["end-mri"].t_ms
    assert decisions["mri"].allowed and decisions["end-mri"].allowed
    raised = [a.t_ms for a in record.alarms if a.code == "procedure_resume_failed" and a.event == "raise"]
    assert raised and ended < raised[0] <= ended + PROCEDURE_RESUME_VERIFY_MS
    during = [nl for t, nl in moved if begun <= t <= ended]
    assert len(during) >= 2 and max(during) == min(during), "the mechanism moved during the zero-rate hold"
