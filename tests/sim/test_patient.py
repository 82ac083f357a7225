"""The virtual patient: PK/PD time course, steady state, withdrawal and overdose flags, seeding."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cython_ext.errors import ConfigError
from sim.patient import OverdoseLevel, Patient, PatientParameters, WithdrawalLevel

H = 3600.0


def test_bolus_effect_peaks_near_4_h_and_wears_off_by_12_h() -> None:
    patient = Patient()
    patient.bolus(50_000)  # 50 µg
    effects = [patient.advance_to(h * H).effect_ng_per_ml for h in range(1, 13)]
    assert effects.index(max(effects)) + 1 == 4
    ashworth = Patient()
    ashworth.bolus(50_000)
    at_peak = ashworth.advance_to(4 * H).ashworth
    assert 1.4 <= at_peak <= 1.9  # 3.8 -> about 1.5 after 50-100 µg (itb-clinical §2.3)
    assert ashworth.advance_to(24 * H).ashworth > 3.5


def test_infusion_reaches_css_equal_rate_over_clearance() -> None:
    patient = Patient()
    patient.set_infusion(300_000 / 24)  # 300 µg/day
    state = patient.advance_to(72 * H)
    assert math.isclose(state.csf_ng_per_ml, 12_500 / 30, rel_tol=1e-6)
    assert math.isclose(state.effect_ng_per_ml, state.csf_ng_per_ml, rel_tol=1e-3)


def test_stopping_maintenance_leads_to_withdrawal_within_days() -> None:
    patient = Patient()
    patient.set_infusion(400_000 / 24)
    patient.advance_to(20 * 24 * H)
    patient.set_infusion(0)
    assert patient.advance_to(20 * 24 * H + 2 * H).withdrawal is WithdrawalLevel.NONE
    assert patient.advance_to(21 * 24 * H).withdrawal is WithdrawalLevel.EARLY
    assert patient.advance_to(23 * 24 * H).withdrawal is WithdrawalLevel.SEVERE
    assert patient.peak_withdrawal is WithdrawalLevel.SEVERE


def test_restart_at_old_maintenance_dose_after_a_holiday_overdoses() -> None:
    patient = Patient()
    patient.set_infusion(400_000 / 24)
    patient.advance_to(20 * 24 * H)
    patient.set_infusion(0)
    patient.advance_to(27 * 24 * H)  # a week off: tolerance fades
    patient.set_infusion(55_000)  # 55 µg/h, the reported restart overdose
    patient.advance_to(27 * 24 * H + 12 * H)
    assert patient.peak_overdose >= OverdoseLevel.SEDATION


def test_usual_titration_never_overdoses() -> None:
    patient = Patient()
    dose = 100_000.0
    t = 0.0
    for _ in range(10):
        patient.set_infusion(dose / 24)
        t += 24 * H
        patient.advance_to(t)
        dose *= 1.2
    assert patient.peak_overdose is OverdoseLevel.NONE


@given(seed=st.integers(0, 10_000), cv=st.sampled_from([0.0, 0.1, 0.3]))
def test_sampled_patients_are_reproducible_and_plausible(seed: int, cv: float) -> None:
    a = PatientParameters.sampled(seed, variability_cv=cv)
    assert a == PatientParameters.sampled(seed, variability_cv=cv)
    assert 22 <= a.volume_ml <= 157 and 13 <= a.clearance_ml_per_h <= 80


@given(
    steps=st.lists(st.tuples(st.floats(0, 50_000), st.floats(0, 100_000), st.floats(1, 48 * H)), max_size=12)
)
def test_concentrations_stay_non_negative_and_time_monotonic(steps: list[tuple[float, float, float]]) -> None:
    patient = Patient()
    t = 0.0
    for rate, bolus, dt in steps:
        patient.set_infusion(rate)
        patient.bolus(bolus)
        t += dt
        state = patient.advance_to(t)
        assert state.csf_ng_per_ml >= 0 and state.effect_ng_per_ml >= -1e-9
        assert 0 <= state.ashworth <= 3.8 + 1e-9
        assert state.time_s == t


def test_bad_inputs_are_rejected() -> None:
    with pytest.raises(ConfigError, match="volume_ml"):
        PatientParameters(volume_ml=0)
    with pytest.raises(ConfigError, match="rate_ng_per_h"):
        Patient().set_infusion(-1)
    with pytest.raises(ConfigError, match="time_s"):
        patient = Patient()
        patient.advance_to(10)
        patient.advance_to(5)
    with pytest.raises(ConfigError, match="dose_ng"):
        Patient().bolus(float("nan"))
