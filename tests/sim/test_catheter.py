"""The physical catheter against a brute-force oracle, and against the controller's own model of it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.accounting import CatheterQueue
from cython_ext.errors import ConfigError
from sim.catheter import PhysicalCatheter

#: A scripted step: push a volume (nL), or change the solution entering (µg/mL).
steps = st.lists(st.one_of(st.tuples(st.just("push"), st.integers(0, 400)),
                           st.tuples(st.just("change"), st.sampled_from([0, 50, 500, 1000, 2000]))), max_size=30)


def _brute_force(dead_nl: int, initial: int, script: list[tuple[str, int]]) -> list[int]:
    """One nL at a time through a literal list of nL-sized parcels: the obvious model."""
    tube = [initial] * dead_nl
    entering = initial
    out = []
    for action, value in script:
        if action == "change":
            entering = value
            continue
        if action == "fill":
            tube, entering = [value] * dead_nl, value
            continue
        drug = 0
        for _ in range(value):
            tube.append(entering)
            drug += tube.pop(0) if tube else entering
        out.append(drug)
    return out


@given(dead_nl=st.integers(0, 300), initial=st.sampled_from([0, 500, 2000]), script=steps)
def test_physical_catheter_equals_parcel_by_parcel_transport(dead_nl: int, initial: int,
                                                              script: list[tuple[str, int]]) -> None:
    catheter = PhysicalCatheter(dead_nl, initial)
    got = []
    for action, value in script:
        if action == "change":
            catheter.change_solution(value)
        else:
            got.append(catheter.push(value))
    assert got == _brute_force(dead_nl, initial, script)


@given(dead_nl=st.integers(0, 300), script=st.lists(st.one_of(
    st.tuples(st.just("push"), st.integers(0, 400)),
    st.tuples(st.sampled_from(["change", "fill"]), st.sampled_from([0, 500, 2000]))), max_size=30))
def test_a_catheter_filled_whole_then_transports_as_parcels(dead_nl: int, script: list[tuple[str, int]]) -> None:
    """Issue #9: ``fill`` (a catheter kept full of drug from a replaced pump, or filled by the surgeon) puts the
    solution in the whole dead volume and at the pump end; what leaves the tip after is the parcels' order."""
    catheter = PhysicalCatheter(dead_nl, 0)
    got = []
    for action, value in script:
        if action == "push":
            got.append(catheter.push(value))
        else:
            getattr(catheter, "fill" if action == "fill" else "change_solution")(value)
    assert got == _brute_force(dead_nl, 0, script)


@given(dead_nl=st.integers(1, 300), initial=st.sampled_from([0, 500, 2000]), script=steps)
def test_the_controllers_catheter_model_agrees_with_the_physics(dead_nl: int, initial: int,
                                                                 script: list[tuple[str, int]]) -> None:
    """The controller's queue (its belief) and the simulator's positions (the truth) are two models of one tube."""
    physical = PhysicalCatheter(dead_nl, initial)
    believed = CatheterQueue()
    believed.fill(dead_nl, initial)
    entering = initial
    for action, value in script:
        if action == "change":
            physical.change_solution(value)
            entering = value
        else:
            assert physical.push(value) == believed.push(value, entering)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ConfigError, match="dead_volume_nl"):
        PhysicalCatheter(-1)
    catheter = PhysicalCatheter(10)
    with pytest.raises(ConfigError, match="volume_nl"):
        catheter.push(-5)
    with pytest.raises(ConfigError, match="concentration_ug_per_ml"):
        catheter.change_solution(-1)
