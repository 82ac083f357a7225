"""The tightening chain: only lowers, records why, idempotent, order-independent."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cython_ext._common import tighten

ceilings = st.lists(
    st.tuples(st.sampled_from(["hard", "clinician", "pump", "headroom"]), st.integers(-100, 10**9), st.just("why")),
    max_size=5,
)


@given(st.integers(0, 10**9), ceilings, st.integers(1, 10_000))
def test_never_raises_and_within_every_limit(value, limits, step):
    out = tighten(value, limits, step=step)
    assert 0 <= out.value <= value
    assert out.value % step == 0
    assert all(out.value <= max(ceiling, 0) for _name, ceiling, _why in limits)
    assert out.original == value
    for s in out.steps:
        assert s.after < s.before and s.reason


@given(st.integers(0, 10**9), ceilings, st.integers(1, 10_000))
def test_idempotent(value, limits, step):
    once = tighten(value, limits, step=step)
    twice = tighten(once.value, limits, step=step)
    assert twice.value == once.value
    assert twice.steps == ()


@given(st.integers(0, 10**9), ceilings, st.integers(1, 10_000), st.randoms(use_true_random=False))
def test_order_does_not_change_the_result(value, limits, step, rnd):
    shuffled = list(limits)
    rnd.shuffle(shuffled)
    assert tighten(value, limits, step=step).value == tighten(value, shuffled, step=step).value


def test_records_each_lowering_step():
    out = tighten(1_000, [("clinician", 800, "prescription cap"), ("pump", 900, "pump max"), ("headroom", 755, "24 h cap")], step=10)
    assert out.value == 750
    assert [(s.name, s.before, s.after) for s in out.steps] == [
        ("clinician", 1_000, 800),
        ("headroom", 800, 755),
        ("pump_step", 755, 750),
    ]


def test_rejects_float_and_negative():
    with pytest.raises(TypeError):
        tighten(1.0)
    with pytest.raises(ValueError):
        tighten(-1)
