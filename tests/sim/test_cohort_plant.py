"""The vectorised cohort plant equals the scalar patient model; the population file is strict and seeded."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import expm

from cython_ext.errors import ConfigError
from cython_ext.vocabulary import Origin
from sim.cohort_plant import CohortPlant, time_plant_baseline
from sim.patient import Patient, expm_batched, system_matrices
from sim.population import (
    MAX_POPULATION,
    Population,
    load_population,
    population_from_dict,
)

H = 3600.0
EXAMPLE = Path(__file__).resolve().parents[2] / "hil" / "cohorts" / "mixed_origins.toml"


def _run_both(population_seed: int, history_seed: int, hours: int) -> None:
    """Drive a plant and one scalar patient per row with the same random history; compare every hour."""
    sample = Population(size=5, seed=population_seed).sample()
    plant = CohortPlant(sample.parameters)
    patients = [Patient(sample.patient(i)) for i in range(sample.size)]
    rng = np.random.default_rng(history_seed)
    for _ in range(hours):
        infused = rng.choice([0.0, 5.0, 20.0, 60.0], size=sample.size) * rng.random(sample.size)
        bolus = np.where(rng.random(sample.size) < 0.03, rng.uniform(10, 300, sample.size), 0.0)
        oral = np.where(rng.random(sample.size) < 0.05, rng.choice([5.0, 10.0, 20.0], sample.size), 0.0)
        plant.step(infused, bolus_ug=bolus, oral_mg=oral)
        cohort = plant.state()
        for i, patient in enumerate(patients):
            patient.bolus(bolus[i] * 1000)
            patient.take_oral(oral[i])
            state = patient.receive_intrathecal(infused[i], patient.time_s, patient.time_s + H)
            np.testing.assert_allclose(plant.x[i], patient.states, rtol=1e-9, atol=1e-9)
            assert cohort.tolerance_ng_per_ml[i] == pytest.approx(state.tolerance_ng_per_ml, rel=1e-9, abs=1e-12)
            assert cohort.ashworth[i] == pytest.approx(state.ashworth, rel=1e-9, abs=1e-12)
            assert cohort.csf_ng_per_ml[i] == pytest.approx(state.csf_ng_per_ml, rel=1e-9, abs=1e-12)
            assert (cohort.overdose[i], cohort.withdrawal[i]) == (state.overdose, state.withdrawal)
            assert (plant.peak_overdose[i], plant.peak_withdrawal[i]) == (patient.peak_overdose,
                                                                            patient.peak_withdrawal)


@pytest.mark.parametrize("population_seed, history_seed", [(1, 2), (7, 8)])
def test_the_vectorised_plant_equals_the_scalar_model(population_seed: int, history_seed: int) -> None:
    _run_both(population_seed, history_seed, hours=10 * 24)


def test_the_plant_and_the_model_agree_through_withdrawal_and_overdose() -> None:
    """A history that reaches both flags: maintenance, a stop, then a full restart."""
    sample = Population(size=3, seed=4).sample()
    plant = CohortPlant(sample.parameters)
    patients = [Patient(sample.patient(i)) for i in range(3)]
    for hour in range(40 * 24):
        rate = 0.0 if 30 * 24 <= hour < 33 * 24 else 60.0  # 1440 µg/day, 3 days off, restart
        plant.step(rate)
        for patient in patients:
            patient.receive_intrathecal(rate, patient.time_s, patient.time_s + H)
    for i, patient in enumerate(patients):
        np.testing.assert_allclose(plant.x[i], patient.states, rtol=1e-9, atol=1e-9)
        assert (plant.peak_overdose[i], plant.peak_withdrawal[i]) == (patient.peak_overdose, patient.peak_withdrawal)
    assert plant.peak_withdrawal.max() == 2 and plant.peak_overdose.max() >= 1
    assert (plant.withdrawal_days >= 1).all() and (plant.severe_withdrawal_days <= plant.withdrawal_days).all()


def test_the_batched_exponential_equals_scipy() -> None:
    sample = Population(size=20, seed=9).sample()
    m, _ = system_matrices(sample.parameters)
    for dt_h in (0.1, 1.0, 24.0):
        ours = expm_batched(m * dt_h)
        for i in range(0, 20, 5):
            np.testing.assert_allclose(ours[i], expm(m[i] * dt_h), rtol=1e-10, atol=1e-13)


def test_bad_plant_inputs_are_rejected_before_anything_moves() -> None:
    sample = Population(size=4, seed=1).sample()
    plant = CohortPlant(sample.parameters)
    with pytest.raises(ConfigError, match="intrathecal_ug"):
        plant.step(np.array([1.0, -1.0, 0.0, 0.0]))
    with pytest.raises(ConfigError, match="oral_mg"):
        plant.step(oral_mg=float("nan"))
    with pytest.raises(ConfigError, match="step_h"):
        CohortPlant(sample.parameters, step_h=2.0)
    bad = dict(sample.parameters, csf_volume_ml=np.array([70.0, 0.0, 70.0, 70.0]))
    with pytest.raises(ConfigError, match="parameters.csf_volume_ml"):
        CohortPlant(bad)
    assert plant.time_h == 0 and not plant.x.any()


def test_the_baseline_timing_runs_and_reports() -> None:
    timing = time_plant_baseline(patients=50, days=2)
    assert timing.steps == 48 and timing.wall_s > 0 and timing.peak_rss_mib > 0


# -- the population file ----------------------------------------------------------------------------

def _doc(**overrides: object) -> dict:
    doc = {"population": {"size": 100, "seed": 3},
           "origins": {"spinal": 0.5, "cerebral": 0.5},
           "parameters": {"csf_clearance_ml_per_h": {"distribution": "lognormal", "median": 30.0,
                                                     "sigma_log": 0.46, "min": 13.0, "max": 80.0}}}
    doc.update(overrides)
    return doc


def test_the_example_population_file_loads_and_is_deterministic() -> None:
    population = load_population(EXAMPLE)
    a, b = population.sample(), population.sample()
    assert a.size == population.size
    np.testing.assert_array_equal(a.parameters["csf_clearance_ml_per_h"], b.parameters["csf_clearance_ml_per_h"])
    assert (a.origins == b.origins).all()
    assert set(a.origins) <= {o.value for o in Origin}


def test_draws_follow_their_documented_ranges() -> None:
    sample = Population(size=4000, seed=2).sample()
    clearance = sample.parameters["csf_clearance_ml_per_h"]
    assert clearance.min() >= 13 and clearance.max() <= 80  # [EJCP]
    assert math.isclose(float(np.median(clearance)), 30, rel_tol=0.05)
    half_life = sample.parameters["plasma_half_life_h"]
    assert half_life.min() >= 3 and half_life.max() <= 4  # [CH-ORAL]
    children = sample.parameters["weight_kg"][sample.origins == "paediatric"]
    adults = sample.parameters["weight_kg"][sample.origins == "spinal"]
    assert np.median(children) < np.median(adults)


@pytest.mark.parametrize("doc, field", [
    (_doc(extra={"a": 1}), "population file.extra"),
    (_doc(population={"size": 10, "seed": 1, "colour": "red"}), "population.colour"),
    (_doc(population={"size": 0, "seed": 1}), "population.size"),
    (_doc(population={"size": MAX_POPULATION + 1, "seed": 1}), "population.size"),
    (_doc(population={"seed": 1}), "population.size"),
    (_doc(origins={"spinal": 0.5, "cerebral": 0.4}), "origins"),
    (_doc(origins={"martian": 1.0}), "origins.martian"),
    (_doc(parameters={"csf_clearance_ml_per_h": {"distribution": "lognormal", "median": float("nan"),
                                                 "sigma_log": 0.4, "min": 13.0, "max": 80.0}}),
     "parameters.csf_clearance_ml_per_h.median"),
    (_doc(parameters={"csf_clearance_ml_per_h": {"distribution": "uniform", "min": 13.0, "max": 9000.0}}),
     "parameters.csf_clearance_ml_per_h.max"),
    (_doc(parameters={"csf_clearance_ml_per_h": {"distribution": "uniform", "min": 40.0, "max": 20.0}}),
     "parameters.csf_clearance_ml_per_h.max"),
    (_doc(parameters={"csf_clearance_ml_per_h": {"distribution": "gamma"}}),
     "parameters.csf_clearance_ml_per_h.distribution"),
    (_doc(parameters={"csf_clearance_ml_per_h": {"distribution": "fixed", "value": 30.0, "median": 3.0}}),
     "parameters.csf_clearance_ml_per_h.median"),
    (_doc(parameters={"wisdom": {"distribution": "fixed", "value": 1.0}}), "parameters.wisdom"),
    (_doc(weight_kg={"spinal": {"distribution": "fixed", "value": float("inf")}}), "weight_kg.spinal.value"),
])
def test_bad_population_files_name_the_field(doc: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        population_from_dict(doc)
    assert err.value.field == field


def test_unreadable_toml_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("[population\nsize = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="population file"):
        load_population(path)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32), size=st.integers(1, 40))
def test_every_drawn_patient_is_a_valid_scalar_patient(seed: int, size: int) -> None:
    sample = Population(size=size, seed=seed).sample()
    for i in range(size):
        sample.patient(i)  # validates every parameter against its hard limits
