"""The ideal-pump loop stands where ControlLoop stands, and the kernel's ledger sees what the pump pushed."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import controller.therapy
from controller.loop import ControlLoop
from cython_ext.units import MS_PER_DAY, MS_PER_H, MS_PER_MIN
from hil.cohort.engine import CohortPatient
from hil.cohort.loop import IdealPumpLoop
from hil.cohort.run import SYRINGE_DIAMETER_MM
from hal.newera.codec import syringe_rate_envelope_nl_per_h
from sim.clock import VirtualClock

#: Loop members that only workflows the cohort never calls use (flex, concentration change, taper, resume).
NOT_IN_THE_COHORT = {"schedule_action", "cancel_scheduled", "set_programme", "change_concentration",
                     "discontinue_now", "resume_after_fault"}
SHARED = ("now_ms", "interruption_ms", "poll", "start_therapy", "change_basal", "start_bolus", "stop_bolus",
          "set_reservoir", "checkpoint")


def _loop_members_therapy_uses() -> set[str]:
    tree = ast.parse(Path(inspect.getsourcefile(controller.therapy)).read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and (
                (isinstance(node.value, ast.Attribute) and node.value.attr == "loop")
                or (isinstance(node.value, ast.Name) and node.value.id == "loop")):
            names.add(node.attr)
    return names


def test_the_loop_has_every_member_the_cohorts_workflows_use() -> None:
    used = _loop_members_therapy_uses()
    assert {"change_basal", "start_bolus", "set_reservoir", "mode", "alarms"} <= used  # the parse sees them
    missing = {name for name in used if not hasattr(IdealPumpLoop, name)
               and name not in ("gate", "alarms", "config", "clock", "mode", "bolus", "session_open",
                                "therapy_state", "accounting")}
    assert missing <= NOT_IN_THE_COHORT, missing - NOT_IN_THE_COHORT


@pytest.mark.parametrize("name", SHARED)
def test_shared_members_take_the_control_loops_arguments(name) -> None:
    ours = inspect.signature(getattr(IdealPumpLoop, name)).parameters
    theirs = inspect.signature(getattr(ControlLoop, name)).parameters
    assert [(p.name, p.kind) for p in ours.values()] == [(p.name, p.kind) for p in theirs.values()]


@pytest.fixture
def patient(protocol):
    from cython_ext.vocabulary import Origin

    clock = VirtualClock()
    p = CohortPatient(0, protocol.prescriptions[Origin.SPINAL], clock,
                      syringe_rate_envelope_nl_per_h(SYRINGE_DIAMETER_MM))
    return p, clock


def _at(clock: VirtualClock, t_ms: int) -> None:
    clock.advance_to_ns(t_ms * 1_000_000)


def test_the_ledger_holds_what_the_ideal_pump_pushed_in_the_last_24_h(patient, protocol) -> None:
    p, clock = patient
    _at(clock, 9 * MS_PER_H)
    assert p.implant().allowed
    rate = p.loop.basal_rate_nl_per_h
    conc = p.prescription.concentration_ug_per_ml
    _at(clock, 9 * MS_PER_H + 3 * MS_PER_DAY)
    p.loop.end_bolus_if_due()
    p.loop.poll()
    hour_ng = rate * conc / 1000
    total = p.gate.total_24h_ng(clock.monotonic_ms())
    # Three days reconciled at once, placed as late as they can have run at the basal rate: the window
    # holds the last day of basal, its first minute maybe not, each minute rounded up to the picogram.
    rounding_ng = 24 * 60 / 1000
    assert hour_ng * (24 - 1 / 60) - 1 <= total <= hour_ng * 24 + rounding_ng
    assert p.therapy.clinician_bolus(25_000, 10 * MS_PER_MIN).allowed
    _at(clock, clock.monotonic_ms() + MS_PER_H)
    p.loop.end_bolus_if_due()
    p.loop.poll()
    # The basal as before, the bolus recorded when it ended (as the loop records each poll).
    with_bolus = p.gate.total_24h_ng(clock.monotonic_ms())
    assert hour_ng * (24 - 1 / 60) + 25_000 - 1 <= with_bolus <= hour_ng * 24 + 25_000 + rounding_ng + 1
    assert p.therapy.clinician_bolus(25_000, 10 * MS_PER_MIN).reasons == ("BOLUS_LOCKOUT",)


def test_a_priming_bolus_counts_at_its_reservoir_mass(patient) -> None:
    p, clock = patient
    _at(clock, 9 * MS_PER_H)
    p.implant()
    _at(clock, 10 * MS_PER_H)
    assert p.loop.end_bolus_if_due() is not None and p.loop.bolus is None
    conc = p.prescription.concentration_ug_per_ml
    dead_ng = p.prescription.pump.dead_volume_nl * conc / 1000
    # The catheter held saline: the basal of the first hour pushed saline out, and the ledger counts only
    # what left the tip -- but the priming bolus counts its full reservoir-side mass (Accounting's rule).
    assert p.gate.total_24h_ng(clock.monotonic_ms()) == pytest.approx(dead_ng, abs=1)
    assert p.gate.kernel.ledger.committed_pg() == 0
