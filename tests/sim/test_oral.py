"""Oral baclofen and the oral-versus-intrathecal comparison against the literature (issue #12).

Bands: "about 1/100" [MEDSCAPE-ITB][DRUGLIB-DESC] is a rule of thumb to one
significant figure, so a ratio passes within a factor of 3 of it (1/300 to 1/33).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from cython_ext.errors import ConfigError
from sim.oral import (
    LABELLED_MAXIMUM,
    LABELLED_TITRATION,
    MAX_ORAL_MG_PER_DAY,
    OralStep,
    compare_routes,
    dose_schedule,
    equivalent_intrathecal_dose_ug_per_day,
    oral_steady_day,
    simulate_regimen,
)
from sim.patient import OverdoseLevel, Patient, PatientParameters, plasma_level, spinal_level
from sim.population import Population

#: Band of "about 1/100": a factor of 3 either side.
ABOUT_1_IN_100 = (1 / 300, 1 / 33)


def test_labelled_titration_is_the_label() -> None:
    """5 mg three times a day for 3 days, then 10, 15, 20 mg; never above 80 mg/day [PMS-BACLOFEN]."""
    assert [(s.dose_mg, s.times_per_day, s.days) for s in LABELLED_TITRATION] == \
        [(5, 3, 3), (10, 3, 3), (15, 3, 3), (20, 3, 3)]
    assert LABELLED_MAXIMUM.daily_dose_mg == 80 == MAX_ORAL_MG_PER_DAY
    doses = list(dose_schedule(LABELLED_TITRATION))
    assert len(doses) == 36 and sum(d for _, d in doses) == 3 * 3 * (5 + 10 + 15 + 20)
    with pytest.raises(ConfigError, match="dose_mg"):
        OralStep(3, 25.0, 4)  # 100 mg/day
    with pytest.raises(ConfigError, match="times_per_day"):
        OralStep(3, 5.0, 5)


def test_plasma_half_life_and_volume_are_the_label() -> None:
    """After one tablet the plasma level falls with a 3-4 h half-life; its peak fits Vd 0.7 L/kg [CH-ORAL]."""
    params = PatientParameters()
    patient = Patient(params)
    patient.take_oral(10)
    levels = np.array([patient.advance_to(t * 360).plasma_ng_per_ml for t in range(1, 241)])  # 24 h, 6 min steps
    t = np.arange(1, 241) * 0.1
    tail = t >= 8
    half_life = -math.log(2) / np.polyfit(t[tail], np.log(levels[tail]), 1)[0]
    assert 3.0 <= half_life <= 4.0
    assert 0.5 <= t[np.argmax(levels)] <= 3.0  # peak 0.5-3 h [MIMS-BAC10]
    # the absorbed dose in 0.7 L/kg is an upper bound of the peak, and the peak is most of it
    ceiling = 10e6 * params.oral_bioavailability / (0.7 * params.weight_kg * 1000)
    assert 0.5 * ceiling <= levels.max() <= ceiling


def test_csf_is_about_8_5_times_below_plasma_on_oral_dosing() -> None:
    """[CH-ORAL]; the day-mean CSF over the day-mean plasma at steady state."""
    comparison = compare_routes()
    assert comparison.oral.plasma_ng_per_ml / comparison.oral.csf_ng_per_ml == pytest.approx(8.5, rel=0.02)


@pytest.mark.parametrize("step", [LABELLED_TITRATION[-1], LABELLED_MAXIMUM], ids=["60 mg/day", "80 mg/day"])
def test_intrathecal_dose_and_plasma_are_about_1_in_100_of_oral(step: OralStep) -> None:
    """Same tone reduction, about 1/100 the daily dose [MEDSCAPE-ITB] and plasma [DRUGLIB-DESC]; the CSF
    is higher intrathecally [CH-ODDB 130-1240 ng/mL], and the side-effect proxy lower [ERTZGAARD17]."""
    c = compare_routes(step=step)
    assert c.intrathecal.tone_reduction == pytest.approx(c.oral.tone_reduction, rel=1e-6)
    assert ABOUT_1_IN_100[0] <= c.dose_ratio <= ABOUT_1_IN_100[1], 1 / c.dose_ratio
    assert ABOUT_1_IN_100[0] <= c.plasma_ratio <= ABOUT_1_IN_100[1], 1 / c.plasma_ratio
    assert c.intrathecal.plasma_ng_per_ml <= 5.0  # [CH-ODDB]
    assert 130 * 0.75 <= c.intrathecal.csf_ng_per_ml <= 1240 * 1.25
    assert c.intrathecal.csf_ng_per_ml > 5 * c.oral.csf_ng_per_ml
    assert 0.25 <= c.oral.side_effects <= 0.75  # 25-75 % with dose-limiting effects on oral [ERTZGAARD17]
    assert c.intrathecal.side_effects < c.oral.side_effects / 5


def test_the_ratios_hold_across_the_population() -> None:
    """The median over virtual patients of the documented population stays about 1/100."""
    sample = Population(size=40, seed=5).sample()
    ratios = np.array([compare_routes(sample.patient(i)).dose_ratio for i in range(sample.size)])
    assert ABOUT_1_IN_100[0] <= float(np.median(ratios)) <= ABOUT_1_IN_100[1]


def test_the_equivalent_dose_really_matches_the_oral_tone() -> None:
    """Oracle: run the intrathecal dose for a year on the scalar model and compare with the oral mean."""
    params = PatientParameters()
    step = LABELLED_TITRATION[-1]
    dose = equivalent_intrathecal_dose_ug_per_day(params, step)
    patient = Patient(params)
    patient.receive_intrathecal(dose * 365, 0.0, 365 * 86_400.0)
    oral_day = oral_steady_day(params, step)
    from sim.patient import tone_reduction

    oral_mean = float(np.mean(tone_reduction(oral_day, params.as_arrays())))
    assert params.ashworth_baseline - patient.state().ashworth == pytest.approx(oral_mean, rel=0.02)


def test_periodic_steady_state_is_what_the_regimen_converges_to() -> None:
    """The closed-form steady day equals the last day of a simulated regimen (plasma and spinal level,
    which settle within days; the months-long chronic state is left out)."""
    params = PatientParameters()
    step = OralStep(10, 20.0, 3)
    patient = Patient(params)
    samples = simulate_regimen(patient, (step,), sample_h=0.1)
    closed = oral_steady_day(params, step)
    p = params.as_arrays()
    np.testing.assert_allclose([s.plasma_ng_per_ml for s in samples[-240:]], plasma_level(closed, p), rtol=1e-6)
    np.testing.assert_allclose([s.effect_ng_per_ml for s in samples[-240:]], spinal_level(closed, p), rtol=1e-3)


def test_the_labelled_titration_does_not_overdose_the_reference_patient() -> None:
    patient = Patient()
    simulate_regimen(patient, LABELLED_TITRATION + (LABELLED_MAXIMUM,))
    assert patient.peak_overdose is OverdoseLevel.NONE
