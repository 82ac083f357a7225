"""Oral baclofen, and the same patient on the intrathecal dose that matches its tone reduction.

The oral arm uses the patient model's gut and plasma compartments
(:mod:`sim.patient`): plasma half-life 3-4 h, Vd 0.7 L/kg, CNS levels about 8.5x
below plasma [CH-ORAL], absorption with a peak at 0.5-3 h [MIMS-BAC10]. The
labelled titration is 5 mg three times a day for 3 days, then 10, 15 and 20 mg
three times a day for 3 days each, never above 80 mg/day (20 mg four times a
day) [PMS-BACLOFEN][MIMS-BACLOFEN].

:func:`compare_routes` puts one virtual patient on an oral maintenance step until
its daily cycle repeats exactly (the periodic steady state, solved in closed form),
finds the continuous intrathecal dose whose steady state gives the same mean tone
reduction (:func:`equivalent_intrathecal_dose_ug_per_day`), and reports both arms
side by side: daily dose, plasma, CSF, Ashworth score and the side-effect proxy.
The review behind the comparison [ERTZGAARD17] and the label [MEDSCAPE-ITB]
[DRUGLIB-DESC] put the intrathecal dose and plasma level at about 1/100 of oral.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.optimize import brentq

from cython_ext.errors import ConfigError
from cython_ext.units import H_PER_DAY, NG_PER_UG, UG_PER_MG
from sim.patient import (
    GUT,
    INTRATHECAL_INPUT,
    Patient,
    PatientParameters,
    PatientState,
    S_PER_H,
    ashworth_score,
    csf_level,
    plasma_level,
    side_effect_fraction,
    step_matrices,
    system_matrices,
    tone_reduction,
)

#: Largest labelled oral daily dose, mg/day (20 mg four times a day) [PMS-BACLOFEN].
MAX_ORAL_MG_PER_DAY = 80.0
#: Clock hours of the doses for 1-4 tablets a day (waking hours; ASSUMPTION).
DOSE_HOURS = {1: (8.0,), 2: (8.0, 20.0), 3: (8.0, 14.0, 20.0), 4: (8.0, 12.0, 16.0, 20.0)}
#: Sampling step of the steady-state day, h (the dose hours fall on it).
SAMPLE_STEP_H = 0.1


@dataclass(frozen=True)
class OralStep:
    """One step of an oral regimen: the same tablets every day for some days.

    :ivar days: how long the step lasts, days (>= 1).
    :ivar dose_mg: one dose, mg (> 0).
    :ivar times_per_day: doses a day, 1-4 (at :data:`DOSE_HOURS`).
    """

    days: int
    dose_mg: float
    times_per_day: int

    def __post_init__(self) -> None:
        if isinstance(self.days, bool) or not isinstance(self.days, int) or not 1 <= self.days <= 3650:
            raise ConfigError("days", self.days, "an integer in [1, 3650]")
        if isinstance(self.times_per_day, bool) or self.times_per_day not in DOSE_HOURS:
            raise ConfigError("times_per_day", self.times_per_day, f"one of {sorted(DOSE_HOURS)}")
        if not (isinstance(self.dose_mg, (int, float)) and math.isfinite(self.dose_mg) and self.dose_mg > 0):
            raise ConfigError("dose_mg", self.dose_mg, "a finite number > 0 mg")
        if self.daily_dose_mg > MAX_ORAL_MG_PER_DAY:
            raise ConfigError("dose_mg", self.dose_mg,
                              f"at most {MAX_ORAL_MG_PER_DAY:g} mg/day in all ({self.times_per_day} doses a day)")

    @property
    def daily_dose_mg(self) -> float:
        """Total a day, mg."""
        return self.dose_mg * self.times_per_day


#: The labelled oral titration: 5, 10, 15, 20 mg three times a day, 3 days each [PMS-BACLOFEN].
LABELLED_TITRATION = (OralStep(3, 5.0, 3), OralStep(3, 10.0, 3), OralStep(3, 15.0, 3), OralStep(3, 20.0, 3))
#: The labelled maximum: 20 mg four times a day, 80 mg/day [PMS-BACLOFEN][MIMS-BACLOFEN].
LABELLED_MAXIMUM = OralStep(3, 20.0, 4)


def dose_schedule(steps: tuple[OralStep, ...]) -> Iterator[tuple[float, float]]:
    """Every dose of a regimen from its day 0: (time h, dose mg), in time order."""
    day = 0
    for step in steps:
        for d in range(step.days):
            for hour in DOSE_HOURS[step.times_per_day]:
                yield (day + d) * H_PER_DAY + hour, step.dose_mg
        day += step.days


def simulate_regimen(patient: Patient, steps: tuple[OralStep, ...], *, sample_h: float = 1.0) -> list[PatientState]:
    """Give ``patient`` a regimen from its current time and sample it every ``sample_h`` hours.

    :return: the states at each sample, to the end of the regimen's last day.
    """
    if not (math.isfinite(sample_h) and sample_h > 0):
        raise ConfigError("sample_h", sample_h, "a finite number > 0 h")
    t0_s = patient.time_s
    end_h = sum(s.days for s in steps) * H_PER_DAY
    doses = list(dose_schedule(steps))
    samples = []
    k = 0
    n = int(math.floor(end_h / sample_h + 1e-9))
    for i in range(1, n + 1):
        t_h = i * sample_h
        while k < len(doses) and doses[k][0] <= t_h:
            patient.advance_to(t0_s + doses[k][0] * S_PER_H)
            patient.take_oral(doses[k][1])
            k += 1
        samples.append(patient.advance_to(t0_s + t_h * S_PER_H))
    return samples


@dataclass(frozen=True)
class ArmFigures:
    """One arm of the comparison, averaged over a steady-state day.

    :ivar daily_dose_ug: drug given a day, µg.
    :ivar plasma_ng_per_ml: mean plasma level, ng/mL.
    :ivar csf_ng_per_ml: mean lumbar CSF level, ng/mL.
    :ivar tone_reduction: mean reduction of the Modified Ashworth score.
    :ivar ashworth: mean Modified Ashworth score.
    :ivar side_effects: mean side-effect proxy (share of patients with dose-limiting side effects).
    """

    daily_dose_ug: float
    plasma_ng_per_ml: float
    csf_ng_per_ml: float
    tone_reduction: float
    ashworth: float
    side_effects: float


@dataclass(frozen=True)
class RouteComparison:
    """The same patient, oral versus intrathecal, at the same tone reduction.

    :ivar oral: the oral arm (periodic steady state of the maintenance step).
    :ivar intrathecal: the intrathecal arm (steady state of a continuous infusion).
    """

    oral: ArmFigures
    intrathecal: ArmFigures

    @property
    def dose_ratio(self) -> float:
        """Intrathecal over oral daily dose (about 1/100 [MEDSCAPE-ITB])."""
        return self.intrathecal.daily_dose_ug / self.oral.daily_dose_ug

    @property
    def plasma_ratio(self) -> float:
        """Intrathecal over oral plasma level (about 1/100 [DRUGLIB-DESC])."""
        return self.intrathecal.plasma_ng_per_ml / self.oral.plasma_ng_per_ml


def _figures(daily_dose_ug: float, x: np.ndarray, p: dict[str, np.ndarray]) -> ArmFigures:
    return ArmFigures(
        daily_dose_ug=daily_dose_ug,
        plasma_ng_per_ml=float(np.mean(plasma_level(x, p))),
        csf_ng_per_ml=float(np.mean(csf_level(x, p))),
        tone_reduction=float(np.mean(tone_reduction(x, p))),
        ashworth=float(np.mean(ashworth_score(x, p))),
        side_effects=float(np.mean(side_effect_fraction(x, p))),
    )


def oral_steady_day(parameters: PatientParameters, step: OralStep) -> np.ndarray:
    """States over one day of ``step`` at its periodic steady state, every :data:`SAMPLE_STEP_H` h.

    The day's map ``x -> Phi_day x + c`` is affine, so the repeating start state is
    ``(I - Phi_day)^-1 c``: exact, with no warm-up.

    :return: array (samples, states), the first sample just after midnight.
    """
    p = parameters.as_arrays()
    m, b = system_matrices(p)
    phi, _ = step_matrices(m, b, SAMPLE_STEP_H)
    n = int(round(H_PER_DAY / SAMPLE_STEP_H))
    dose_at = {int(round(h / SAMPLE_STEP_H)) for h in DOSE_HOURS[step.times_per_day]}
    kick = np.zeros(len(phi))
    kick[GUT] = step.dose_mg * UG_PER_MG * NG_PER_UG * parameters.oral_bioavailability

    def day(x: np.ndarray) -> list[np.ndarray]:
        out = []
        for i in range(n):
            if i in dose_at:
                x = x + kick
            x = phi @ x
            out.append(x)
        return out

    c = day(np.zeros(len(phi)))[-1]
    phi_day = np.linalg.matrix_power(phi, n)
    start = np.linalg.solve(np.eye(len(phi)) - phi_day, c)
    return np.array(day(start))


def intrathecal_steady_state(parameters: PatientParameters, dose_ug_per_day: float) -> np.ndarray:
    """States at the steady state of a continuous intrathecal infusion of ``dose_ug_per_day`` µg/day."""
    p = parameters.as_arrays()
    m, b = system_matrices(p)
    rate_ng_per_h = dose_ug_per_day * NG_PER_UG / H_PER_DAY
    return np.linalg.solve(m, -b[:, INTRATHECAL_INPUT] * rate_ng_per_h)


def equivalent_intrathecal_dose_ug_per_day(parameters: PatientParameters, step: OralStep) -> float:
    """The continuous intrathecal dose whose steady state matches the mean tone reduction of ``step``, µg/day.

    :raises ConfigError: when the oral step gives no tone reduction to match.
    """
    p = parameters.as_arrays()
    target = float(np.mean(tone_reduction(oral_steady_day(parameters, step), p)))
    if not target > 0:
        raise ConfigError("step", step, "an oral step that reduces tone")

    def gap(dose: float) -> float:
        return float(tone_reduction(intrathecal_steady_state(parameters, dose), p)) - target

    high = 1.0
    while gap(high) < 0:
        high *= 2
        if high > 1e7:
            raise ConfigError("step", step, "a tone reduction that intrathecal dosing can reach")
    return float(brentq(gap, 0.0, high, xtol=1e-9, rtol=1e-12))


def compare_routes(parameters: PatientParameters | None = None, step: OralStep = LABELLED_TITRATION[-1]
                   ) -> RouteComparison:
    """The side-by-side figures for one patient: ``step`` taken orally versus the matching intrathecal dose.

    :param parameters: the patient (default: the reference adult).
    :param step: the oral maintenance step (default: the end of the labelled titration, 20 mg three times a day).
    """
    parameters = parameters or PatientParameters()
    p = parameters.as_arrays()
    oral = _figures(step.daily_dose_mg * UG_PER_MG, oral_steady_day(parameters, step), p)
    dose = equivalent_intrathecal_dose_ug_per_day(parameters, step)
    intrathecal = _figures(dose, intrathecal_steady_state(parameters, dose)[None, :], p)
    return RouteComparison(oral=oral, intrathecal=intrathecal)
