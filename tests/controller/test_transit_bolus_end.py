"""No bolus runs during a concentration transit, so none ends in one (BOL-06, BOL-03; issue #9).

The end of a bolus puts a one-phase basal back on the pump. Mid-transit that would replace the transit program the
pump ends by itself (the old drug's volume rate, then the new drug's). It cannot happen: every path to a bolus
during a transit is refused, and a refill that changes the concentration ends a running bolus before the transit
begins. These tests walk each path and judge on the fake pump's own program and command log.
"""

from __future__ import annotations

from typing import Any

import pytest

from cython_ext.errors import StateError
from cython_ext.vocabulary import DeliveryKind
from tests.controller.conftest import MS_PER_H, MS_PER_MIN
from tests.controller.test_transit import implanted, refill


def test_every_bolus_is_refused_while_the_old_drug_crosses_and_nothing_reaches_the_pump(make_rig: Any) -> None:
    rig, oracle = implanted(make_rig, 500, 400, "0.25")
    assert rig.therapy.configure_patient_bolus(25_000, 10 * MS_PER_MIN).allowed
    assert refill(rig, oracle, 1000).allowed
    rig.advance(MS_PER_H)
    assert rig.loop.transit is not None
    sent = len(rig.pump.command_log)
    for result in (rig.therapy.clinician_bolus(50_000, 10 * MS_PER_MIN), rig.therapy.patient_bolus_request()):
        assert not result.allowed and "CONCENTRATION_TRANSIT" in result.reasons, result
    prime = rig.therapy.prime()
    assert not prime.allowed and prime.reasons == ("NOTHING_TO_PRIME",), prime  # the catheter holds drug to the tip
    assert rig.pump.command_log[sent:] == [] and rig.loop.bolus is None


def test_the_loop_itself_refuses_a_bolus_during_a_transit(make_rig: Any) -> None:
    """The loop is a library: a caller past the workflows (a kernel-authorised bolus) is refused there too."""
    rig, oracle = implanted(make_rig, 500, 400, "0.25")
    assert refill(rig, oracle, 1000).allowed
    decision = rig.gate.authorize_bolus(DeliveryKind.BOLUS_CLINICIAN, 20_000, 10 * MS_PER_MIN, rig.loop.now_ms())
    assert decision.allowed, decision
    sent = len(rig.pump.command_log)
    with pytest.raises(StateError, match="concentration change"):
        rig.loop.start_bolus(DeliveryKind.BOLUS_CLINICIAN, decision, 10 * MS_PER_MIN)
    assert rig.pump.command_log[sent:] == [] and rig.loop.bolus is None


def test_a_refill_that_changes_the_concentration_ends_a_running_bolus_before_the_transit_begins(
        make_rig: Any) -> None:
    rig, oracle = implanted(make_rig, 500, 400, "0.25")
    assert rig.therapy.configure_patient_bolus(25_000, 10 * MS_PER_MIN).allowed
    assert rig.therapy.patient_bolus_request().allowed
    rig.advance(2 * MS_PER_MIN)
    assert rig.loop.bolus is not None and len(rig.pump.read_program(1, 16).phases) == 2
    seen = len(rig.events)
    assert refill(rig, oracle, 1000).allowed
    names = [e for e, _ in rig.events[seen:]]
    assert names.index("bolus_end") < names.index("transit_start"), names
    assert rig.loop.bolus is None and rig.loop.bolus_program is None and rig.loop.transit is not None
    phases = rig.pump.read_program(1, 16).phases
    # The transit program: 400 µg/day of the old drug for the old drug ahead, then 400 µg/day of the new.
    assert [p.rate_nl_per_h for p in phases] == [33_332, 16_666] and rig.pump.rate_nl_per_h == 33_332, phases
    assert all(r.status == "finished" for r in rig.store.boluses())
