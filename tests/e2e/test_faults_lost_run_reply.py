"""A lost or corrupted reply to the implant's ``RUN`` never leaves the implant unfinished (first found with seed 7).

The faults scenario corrupts pump replies at random (``corrupt:p=0.0002``, seeded). With seed 7,
before boluses became pump programs, the corrupted byte was the prompt of the reply to the
implant's ``RUN``; the traffic has changed since, so the case is now pinned without luck: the
reply to the first ``RUN`` (the implant's priming program, ``RUN 1``) is lost on purpose. The
driver reports the start ``UNCERTAIN``, the command issuer reads the pump back and finds it
infusing: nothing is left unknown, so no latching THERAPY_STATUS_UNKNOWN blocks the priming
bolus; the flaky link is alarmed as COMMS_DEGRADED instead.
"""

from __future__ import annotations

import dataclasses

from hil.scenario import RunOptions, ScenarioRunner, load_scenario


def test_faults_scenario_recovers_from_a_lost_reply_to_the_implants_run() -> None:
    scenario = load_scenario("faults")
    # Seed 7: without the lost reply this run raises no COMMS_DEGRADED at all.
    scenario = dataclasses.replace(scenario, settings=dataclasses.replace(scenario.settings, seed=7))
    pump = dataclasses.replace(scenario.pump, faults=(*scenario.pump.faults, "lost-reply:match=RUN,after=1"))
    record = ScenarioRunner(dataclasses.replace(scenario, pump=pump), RunOptions(link="inprocess")).run()
    assert record.passed, [c.name for c in (*record.invariants, *record.expectations) if not c.passed]
    implant = next(d for d in record.decisions if d.action == "implant")
    assert implant.allowed, implant
    raised = {a.code for a in record.alarms if a.event == "raise"}
    assert "comms_degraded" in raised
    priming = next(b for b in record.boluses if b["kind"] == "priming")
    assert priming["status"] == "finished" and priming["delivered_nl"] > 0
