"""The shipped scenarios of issue #9's history rules, judged on the wire and in the patient's record.

``screening-non-responder``: no response to 50, 75 or 100 µg, so no pump (itb-clinical §1.2); every
path to an implant is refused and nothing that delivers ever reaches the pump.
``restart-after-interruption``: a 26 h stop after titration to 259 µg/day restarts at the 150 µg/day
titration-phase starting dose (§1.6 [JP-LBL], §3.3) and climbs back only at the 30 % cap (TIT-01).
Rates are computed here from the label's numbers (dose / concentration), not from our units module.
"""

from __future__ import annotations

from typing import Any

import pytest

from hil.scenario import RunOptions, ScenarioRunner, load_scenario

MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000


def _rate_nl_per_h(dose_ug_per_day: float, concentration_ug_per_ml: int = 500) -> int:
    """nL/h of a daily dose: µg/day / µg/mL = mL/day; x 10^6 / 24."""
    return int(dose_ug_per_day / concentration_ug_per_ml * 1_000_000 / 24)


@pytest.fixture(scope="module")
def non_responder() -> Any:
    return ScenarioRunner(load_scenario("screening-non-responder"), RunOptions(link="inprocess")).run()


@pytest.fixture(scope="module")
def restarted() -> Any:
    return ScenarioRunner(load_scenario("restart-after-interruption"), RunOptions(link="inprocess")).run()


def _decision(record: Any, label: str) -> Any:
    return next(d for d in record.decisions if d.label == label)


def test_a_non_responder_is_refused_by_every_path_and_the_pump_never_moves(non_responder: Any) -> None:
    """Every path is refused and the patient's lack of intrathecal therapy is alarmed (implant_not_done, ALM-01),
    so the run passes: the controller did what the label asks (issue #9)."""
    failed = [c.name for c in non_responder.checks() if not c.passed]
    assert failed == [], failed
    checks = {c.name: c for c in non_responder.checks()}
    assert checks["a refused implant is alarmed"].passed
    assert "implant_not_done" in {a.code for a in non_responder.alarms if a.event == "raise"}
    for label in ("implant", "implant-after-restart", "fourth-test-dose"):
        assert "NOT_A_CANDIDATE" in _decision(non_responder, label).reasons, label
    delivering = [c for c in non_responder.commands if c.command in ("set_rate", "start") and c.outcome != "not_applied"]
    assert not delivering, delivering
    assert non_responder.pump_dispensed_ml == 0


def test_a_long_interruption_restarts_at_the_starting_dose_and_climbs_only_at_the_cap(restarted: Any) -> None:
    assert restarted.passed, [c.name for c in (*restarted.invariants, *restarted.expectations) if not c.passed]
    resume_ms = _decision(restarted, "resume").t_ms
    climb_ms = _decision(restarted, "climb-1").t_ms
    assert climb_ms - resume_ms > MS_PER_DAY  # no increase was possible in the day after the resume
    before = [c.rate_nl_per_h for c in restarted.commands if c.command == "set_rate" and c.outcome == "applied"
              and c.rate_nl_per_h and c.t_ms < resume_ms]
    after = [c.rate_nl_per_h for c in restarted.commands if c.command == "set_rate" and c.outcome == "applied"
             and c.rate_nl_per_h and resume_ms <= c.t_ms < climb_ms]
    assert abs(before[-1] - _rate_nl_per_h(259.2)) <= 1  # titrated up to 259.2 µg/day before the stop
    assert after and all(abs(r - _rate_nl_per_h(150)) <= 1 for r in after), after  # 2 x the 75 µg test dose
    detail = _decision(restarted, "resume").detail
    assert "titration-phase starting dose" in detail and "restart rule" in detail, detail


def test_the_restart_after_a_long_interruption_says_why(restarted: Any) -> None:
    """Issue #9 (restart after an interruption: "the alarm and the journal say why"), itb-clinical §1.6, §3.3: the
    resume's record names the interruption's length, the threshold, the dose resumed at and where it comes from."""
    detail = _decision(restarted, "resume").detail
    for words in ("26.", "h interruption", "24 h threshold", "150 µg/day", "the screening record"):
        assert words in detail, (words, detail)
