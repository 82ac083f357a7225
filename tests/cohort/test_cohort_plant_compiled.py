"""The compiled plant step against the NumPy step, and a patient's trajectory whatever its batch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cython_ext.errors import ConfigError
from sim.cohort_plant import CohortPlant
from sim.population import Population

SAMPLE = Population(size=40, seed=5).sample()


def _subset(rows) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in SAMPLE.parameters.items()}


@settings(max_examples=25)
@given(st.lists(st.tuples(st.floats(0, 80), st.floats(0, 100), st.floats(0, 40)), min_size=1, max_size=96),
       st.integers(0, 2**32 - 1))
def test_the_compiled_step_is_the_numpy_step(doses, seed) -> None:
    rng = np.random.default_rng(seed)
    compiled, reference = (CohortPlant(SAMPLE.parameters, implementation=i) for i in ("compiled", "numpy"))
    for it, bolus, oral in doses:
        scale = rng.random(SAMPLE.size)
        for plant in (compiled, reference):
            plant.step(it * scale, bolus_ug=bolus * (scale > 0.9), oral_mg=oral * (scale < 0.1))
    assert np.allclose(compiled.x, reference.x, rtol=1e-12, atol=1e-9)
    assert np.allclose(compiled.tolerance, reference.tolerance, rtol=1e-12, atol=1e-12)
    for name in ("peak_overdose", "peak_withdrawal", "overdose_days", "withdrawal_days", "severe_withdrawal_days"):
        assert np.array_equal(getattr(compiled, name), getattr(reference, name)), name
    a, b = compiled.state(), reference.state()
    assert np.array_equal(a.withdrawal, b.withdrawal) and np.array_equal(a.overdose, b.overdose)


def test_withdrawal_and_overdose_are_flagged_by_both() -> None:
    """Not vacuous: a high dose, then nothing, gives every flag in both implementations."""
    plants = [CohortPlant(SAMPLE.parameters, implementation=i) for i in ("compiled", "numpy")]
    for plant in plants:
        for hour in range(24 * 20):
            plant.step(200.0 if hour < 24 * 14 else 0.0)
    for plant in plants:
        assert plant.overdose_days.sum() > 0 and plant.severe_withdrawal_days.sum() > 0
    assert np.array_equal(plants[0].severe_withdrawal_days, plants[1].severe_withdrawal_days)


@pytest.mark.parametrize("implementation", ["compiled", "numpy"])
def test_a_patient_has_the_same_trajectory_in_any_batch(implementation) -> None:
    alone = CohortPlant(_subset([7]), implementation=implementation)
    batch = CohortPlant(_subset(list(range(40))), implementation=implementation)
    for hour in range(24 * 5):
        alone.step(12.0 + hour % 3)
        batch.step(np.full(40, 12.0 + hour % 3))
    assert np.array_equal(alone.x[0], batch.x[7])


def test_an_unknown_implementation_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        CohortPlant(SAMPLE.parameters, implementation="fortran")
    assert info.value.field == "implementation"


@settings(max_examples=25)
@given(st.lists(st.integers(1, 30), min_size=1, max_size=8), st.floats(0, 60), st.integers(0, 2**32 - 1),
       st.sampled_from(["compiled", "numpy"]))
def test_steps_in_blocks_are_single_steps(blocks, dose, seed, implementation) -> None:
    """Oracle: one :meth:`CohortPlant.step` per hour. Blocks of any length, across day ends, after a high
    dose and then none (so the flags and the day counts move), give the same plant bit for bit."""
    rng = np.random.default_rng(seed)
    hours = sum(blocks)
    doses = rng.random((hours, SAMPLE.size)) * dose * np.where(np.arange(hours) < hours // 2, 8.0, 0.0)[:, None]
    single, blocked = (CohortPlant(SAMPLE.parameters, implementation=implementation) for _ in range(2))
    for row in doses:
        single.step(row)
    first = 0
    for length in blocks:
        blocked.step_hours(doses[first:first + length])
        first += length
    assert single.time_h == blocked.time_h
    assert single.x.tobytes() == blocked.x.tobytes() and single.tolerance.tobytes() == blocked.tolerance.tobytes()
    for name in ("peak_overdose", "peak_withdrawal", "overdose_days", "withdrawal_days", "severe_withdrawal_days",
                 "_withdrawal_since_h", "_today"):
        assert getattr(single, name).tobytes() == getattr(blocked, name).tobytes(), name


def test_blocked_steps_refuse_bad_input_and_advance_nothing() -> None:
    plant = CohortPlant(SAMPLE.parameters)
    for bad in (np.full((3, SAMPLE.size), -1.0), np.full((2, SAMPLE.size), np.nan), np.zeros((2, SAMPLE.size + 1)),
                np.zeros(SAMPLE.size)):
        with pytest.raises(ConfigError) as info:
            plant.step_hours(bad)
        assert info.value.field == "intrathecal_ug"
    assert plant.time_h == 0.0 and not plant.x.any()
