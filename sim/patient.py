"""A virtual ITB patient calibrated to the literature: CSF and plasma pharmacokinetics, effect sites, tolerance.

Every number is from ``itb-clinical.md`` (citation keys in brackets) or is derived
from those numbers, and says so. The model is one linear system::

    dx/dt = M x + B u        u = (intrathecal ng/h at the catheter tip, oral ng/h into the gut)

with ten states (indices ``GUT`` ... ``CHRONIC``) and one adaptation state outside it:

* **gut** (ng): oral depot, first-order absorption ``absorption_rate_per_h``; a
  fraction ``oral_bioavailability`` of a tablet reaches it.
* **plasma** (ng): volume ``plasma_volume_l_per_kg`` x weight (0.7 L/kg), half-life
  ``plasma_half_life_h`` (3-4 h) [CH-ORAL]. It receives the CSF outflow: the
  intrathecal-to-plasma transfer is the CSF clearance (bulk outflow) [GH-LBL-SUMMARY].
* **csf** (ng): lumbar CSF around the catheter tip, ``csf_volume_ml`` (70 mL, range
  22-157), clearance ``csf_clearance_ml_per_h`` (30 mL/h, range 13-80) [CH-ODDB][EJCP][§6].
* **deep** (ng): a slowly exchanging CSF/tissue space (``deep_volume_ml``,
  ``deep_clearance_ml_per_h``). DERIVED: it gives the bolus CSF half-life of about
  1.5 h over the first hours [GH-LBL-SUMMARY] together with a steady state that takes
  1-2 days [CH-ODDB] and an infusion effect that is maximal at 24-48 h [LBL-PD].
* **fast**, **transit**, **slow** (ng/mL): the spinal effect site. The cord sees
  ``cord_penetration`` x the lumbar CSF concentration plus the blood-derived level
  (plasma / ``plasma_to_csf_ratio``, 8.5 [CH-ORAL]). Superficial laminae
  (``fast_fraction``, rate ``fast_rate_per_h``) equilibrate fast and deeper tissue
  through a two-stage chain (``transit_rate_per_h``, ``slow_rate_per_h``): the bolus
  effect begins within 1 h, peaks at about 4 h and lasts 4-8 h [LBL-PD][TIMECOURSE],
  and an infusion is first felt at 6-8 h [LBL-PD][PDRHEALTH]. DERIVED by fitting those
  label time courses (Heetla's fitted ke0 was not retrieved [HEETLA16]).
* **brain** (ng/mL): the supraspinal site of sedation, fed by the cisternal CSF
  (``rostral_fraction`` of the lumbar level, 4:1 lumbar:cisternal, UNVERIFIED [§2.2])
  and by blood, at ``brain_rate_per_h``.
* **tolerance** (ng/mL, not linear): follows the brain level, building over days
  (``tolerance_build_tau_h``) and fading within a day or two (``tolerance_fade_tau_h``);
  it raises the sedation threshold, so a full-dose restart after a drug holiday
  overdoses [OD91][§3.3]. Updated after each exact step from the step's mean brain level
  (:func:`next_tolerance`).
* **dependence** (ng/mL): lag of the spinal level (``dependence_tau_h``); withdrawal
  needs it, so a drug-naive patient shows none [BOXED][COFFEY02].
* **chronic** (ng/mL): months-long lag of the spinal level (``chronic_tolerance_tau_h``)
  that raises the EC50: doses grow about 3.5x in the first year [JSCM23].

The outputs are functions of the state: the Modified Ashworth score (an Emax model,
3.8 -> 1.5 after a 50 µg bolus [ARCH94]), the withdrawal and overdose flags, and a
side-effect proxy of the brain level (:func:`side_effect_fraction`).

The solution is exact for piecewise-constant input (a matrix exponential of the
augmented system), so advancing a day costs the same as advancing a minute.
:func:`system_matrices` and the output functions take NumPy arrays of parameters,
so the vectorised cohort plant (:mod:`sim.cohort_plant`) uses the same equations.
Two sources are not yet in the reference's list: [AGARWAL14] Agarwal SK et al., J Child
Neurol 2015;30:37-41 (oral bioavailability 74 %); [MIMS-BAC10] MIMS Philippines, Bac-10
monograph (baclofen rapidly and almost completely absorbed, peak plasma 0.5-3 h).

Units: amounts ng, concentrations ng/mL, time s at the interface and h inside.
The simulator keeps its own floats: it is a plant model, not dosing arithmetic.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import numpy as np

from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_H, MS_PER_S, NG_PER_UG, UG_PER_MG

#: Seconds per hour of model time.
S_PER_H = MS_PER_H / MS_PER_S

GUT, PLASMA, CSF, DEEP, FAST, TRANSIT, SLOW, BRAIN, DEPENDENCE, CHRONIC = range(10)
#: Number of states of the linear system.
N_STATES = 10
#: Input columns of ``B``: intrathecal ng/h into the CSF, oral ng/h into the gut.
INTRATHECAL_INPUT, ORAL_INPUT = 0, 1
#: Longest step over which the flags are evaluated, h.
MAX_STEP_H = 1.0


class WithdrawalLevel(enum.IntEnum):
    """How far withdrawal has progressed."""

    NONE = 0
    EARLY = 1  # itching, rising tone, paraesthesia
    SEVERE = 2  # rebound rigidity, fever, autonomic instability


class OverdoseLevel(enum.IntEnum):
    """How far overdose has progressed."""

    NONE = 0
    SEDATION = 1  # drowsiness, rostral hypotonia
    RESPIRATORY = 2  # respiratory depression, coma risk


@dataclass(frozen=True)
class PatientParameters:
    """Parameters of one virtual patient; the defaults are the reference adult.

    :ivar weight_kg: body weight, kg (reference 75 kg, ASSUMPTION).
    :ivar csf_volume_ml: lumbar CSF volume of distribution, mL (70; 22-157 [CH-ODDB][§6]).
    :ivar csf_clearance_ml_per_h: CSF clearance into blood, mL/h (30; 13-80 [GH-LBL-SUMMARY][EJCP]).
    :ivar deep_volume_ml: slowly exchanging CSF/tissue volume, mL (DERIVED, see the module).
    :ivar deep_clearance_ml_per_h: exchange clearance with it, mL/h (DERIVED).
    :ivar plasma_volume_l_per_kg: plasma volume of distribution, L/kg (0.7 [CH-ORAL]).
    :ivar plasma_half_life_h: plasma elimination half-life, h (3.5; 3-4 [CH-ORAL]).
    :ivar oral_bioavailability: fraction of a tablet absorbed (0.85; 0.74 to "almost
        complete" [AGARWAL14][MIMS-BAC10]).
    :ivar absorption_rate_per_h: first-order oral absorption, 1/h (1.6: peak plasma at
        about 1.5 h, range 0.5-3 h [MIMS-BAC10]).
    :ivar plasma_to_csf_ratio: plasma over CSF (and CNS tissue) level under systemic
        dosing (8.5 [CH-ORAL]).
    :ivar cord_penetration: spinal effect-site level per unit lumbar CSF level. DERIVED:
        the typical intrathecal steady state (geometric mean of 130-1240 ng/mL [CH-ODDB])
        gives the spinal level of the typical effective oral dose (geometric mean of
        40-80 mg/day [PMS-BACLOFEN], through [CH-ORAL]).
    :ivar rostral_fraction: cisternal over lumbar CSF level during lumbar delivery
        (0.25: 4:1, UNVERIFIED [§2.2][KROIN93]).
    :ivar fast_fraction: share of the spinal effect site that equilibrates fast (DERIVED).
    :ivar fast_rate_per_h: its equilibration rate, 1/h (DERIVED).
    :ivar transit_rate_per_h: first stage of the slow chain, 1/h (DERIVED).
    :ivar slow_rate_per_h: second stage of the slow chain, 1/h (DERIVED).
    :ivar brain_rate_per_h: equilibration of the brain level, 1/h (0.2, ASSUMPTION: restart
        overdoses showed about 6 h after restarting [OD91]).
    :ivar ashworth_baseline: untreated Modified Ashworth score, 0-4 (3.8 [ARCH94]).
    :ivar ec50_ng_per_ml: naive spinal level giving half the largest reduction, ng/mL
        (DERIVED: a 50 µg bolus takes the score from 3.8 to 1.5 at its peak [ARCH94]).
    :ivar hill: steepness of the Emax curve (DERIVED with the time course).
    :ivar chronic_tolerance_tau_h: time constant of chronic tolerance, h (90 days, ASSUMPTION:
        the steepest dose rise is in year 1 [JSCM23]).
    :ivar chronic_tolerance_ratio: chronic level, in EC50s, that doubles the EC50 (DERIVED:
        a fixed-tone titration ends about 3.5x above its start [JSCM23]).
    :ivar tolerance_build_tau_h: time constant of building tolerance to sedation, h (72,
        ASSUMPTION: titration takes days [CMSC15-SURVEY]).
    :ivar tolerance_fade_tau_h: time constant of losing it, h (12, ASSUMPTION: a 48 h
        holiday loses it, so a restart must be at the titration dose [JP-LBL][OD91]).
    :ivar tolerance_gain: sedation threshold rise per unit tolerance level (ASSUMPTION:
        titration steps of up to 30 %/24 h [SAULINO16] never sedate).
    :ivar sedation_threshold_ng_per_ml: drug-naive brain level that sedates, ng/mL
        (reference: the peak of a 250 µg lumbar bolus, ASSUMPTION; the sensitive tail
        reaches a 25 µg bolus [DRUGLIB-OD]).
    :ivar respiratory_ratio: multiple of the sedation threshold that depresses breathing
        (2, ASSUMPTION; coma up to 72 h [DRUGLIB-OD]).
    :ivar dependence_tau_h: time constant of dependence, h (72, ASSUMPTION: a taper of
        20 % every 2 days [JP-LBL] causes no withdrawal).
    :ivar dependence_floor_ratio: dependence level, in naive EC50s, below which the
        patient is not dependent (0.5, ASSUMPTION: screening boluses leave none).
    :ivar withdrawal_ratio: spinal level below this fraction of the dependence level is withdrawal.
    :ivar severe_withdrawal_after_h: withdrawal lasting this long is severe, h (24: the
        syndrome builds over 1-3 days [COFFEY02][NSWIKI]).
    :ivar side_effect_ec50_ng_per_ml: brain level at which half of patients have
        dose-limiting side effects, ng/mL (DERIVED: 25-75 % of patients on 40-80 mg/day
        oral [ERTZGAARD17][PMS-BACLOFEN]).
    :ivar side_effect_hill: steepness of that proportion (DERIVED: 25 % -> 75 % over a
        doubling of dose).
    """

    weight_kg: float = 75.0
    csf_volume_ml: float = 70.0
    csf_clearance_ml_per_h: float = 30.0
    deep_volume_ml: float = 144.0
    deep_clearance_ml_per_h: float = 5.2
    plasma_volume_l_per_kg: float = 0.7
    plasma_half_life_h: float = 3.5
    oral_bioavailability: float = 0.85
    absorption_rate_per_h: float = 1.6
    plasma_to_csf_ratio: float = 8.5
    cord_penetration: float = 0.0561
    rostral_fraction: float = 0.25
    fast_fraction: float = 0.11
    fast_rate_per_h: float = 2.6
    transit_rate_per_h: float = 0.54
    slow_rate_per_h: float = 0.46
    brain_rate_per_h: float = 0.2
    ashworth_baseline: float = 3.8
    ec50_ng_per_ml: float = 8.34
    hill: float = 1.9
    chronic_tolerance_tau_h: float = 90 * 24.0
    chronic_tolerance_ratio: float = 1.32
    tolerance_build_tau_h: float = 72.0
    tolerance_fade_tau_h: float = 12.0
    tolerance_gain: float = 1.5
    sedation_threshold_ng_per_ml: float = 10.98
    respiratory_ratio: float = 2.0
    dependence_tau_h: float = 72.0
    dependence_floor_ratio: float = 0.5
    withdrawal_ratio: float = 0.5
    severe_withdrawal_after_h: float = 24.0
    side_effect_ec50_ng_per_ml: float = 22.67
    side_effect_hill: float = 3.17

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            low, high = PARAMETER_LIMITS[f.name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not low <= value <= high or value == 0 and low == 0 and f.name in _POSITIVE:
                raise ConfigError(f.name, value, f"a finite number in [{low:g}, {high:g}]"
                                  + (" and > 0" if f.name in _POSITIVE else ""))
        if self.ashworth_baseline <= 0:
            raise ConfigError("ashworth_baseline", self.ashworth_baseline, "in (0, 4]")

    def as_arrays(self) -> dict[str, np.ndarray]:
        """The parameters as 0-d float arrays, for :func:`system_matrices` and the output functions."""
        return {name: np.asarray(float(value)) for name, value in asdict(self).items()}

    @classmethod
    def sampled(cls, seed: int, *, variability_cv: float = 0.25) -> PatientParameters:
        """Draw a scenario patient: log-normal variability of CSF volume, CSF clearance and EC50.

        The medians are the reference patient and each draw stays within its documented
        range (CSF volume 22-157 mL [CH-ODDB], clearance 13-80 mL/h [EJCP], EC50 within
        a factor of 4); everything else is the reference. The in-silico cohort draws from
        the documented population instead (:mod:`sim.population`).

        :param seed: seed of the generator; the same seed gives the same patient.
        :param variability_cv: coefficient of variation of the three (0 gives the reference patient).
        :raises ConfigError: for a CV outside [0, 1].
        """
        if isinstance(variability_cv, bool) or not isinstance(variability_cv, (int, float)) \
                or not 0 <= variability_cv <= 1:
            raise ConfigError("variability_cv", variability_cv, "in [0, 1]")
        base = cls()
        if variability_cv == 0:
            return base
        from sim.population import truncated_lognormal

        rng = np.random.default_rng(seed)
        sigma = math.sqrt(math.log(1 + variability_cv**2))

        def draw(median: float, low: float, high: float) -> float:
            return float(truncated_lognormal(rng, median, sigma, low, high, 1)[0])

        return cls(
            csf_volume_ml=draw(base.csf_volume_ml, 22.0, 157.0),
            csf_clearance_ml_per_h=draw(base.csf_clearance_ml_per_h, 13.0, 80.0),
            ec50_ng_per_ml=draw(base.ec50_ng_per_ml, base.ec50_ng_per_ml / 4, base.ec50_ng_per_ml * 4),
        )


#: Hard limits of every parameter (physiological plausibility, not the population ranges).
PARAMETER_LIMITS: dict[str, tuple[float, float]] = {
    "weight_kg": (2.0, 300.0),
    "csf_volume_ml": (5.0, 500.0),
    "csf_clearance_ml_per_h": (1.0, 500.0),
    "deep_volume_ml": (1.0, 5000.0),
    "deep_clearance_ml_per_h": (0.01, 500.0),
    "plasma_volume_l_per_kg": (0.1, 5.0),
    "plasma_half_life_h": (0.5, 48.0),
    "oral_bioavailability": (0.0, 1.0),
    "absorption_rate_per_h": (0.05, 50.0),
    "plasma_to_csf_ratio": (1.0, 100.0),
    "cord_penetration": (0.001, 1.0),
    "rostral_fraction": (0.0, 1.0),
    "fast_fraction": (0.0, 1.0),
    "fast_rate_per_h": (0.01, 50.0),
    "transit_rate_per_h": (0.01, 50.0),
    "slow_rate_per_h": (0.01, 50.0),
    "brain_rate_per_h": (0.01, 50.0),
    "ashworth_baseline": (0.0, 4.0),
    "ec50_ng_per_ml": (0.01, 10_000.0),
    "hill": (0.2, 10.0),
    "chronic_tolerance_tau_h": (24.0, 87_600.0),
    "chronic_tolerance_ratio": (0.05, 1000.0),
    "tolerance_build_tau_h": (1.0, 8760.0),
    "tolerance_fade_tau_h": (1.0, 8760.0),
    "tolerance_gain": (0.0, 100.0),
    "sedation_threshold_ng_per_ml": (0.01, 10_000.0),
    "respiratory_ratio": (1.01, 100.0),
    "dependence_tau_h": (1.0, 8760.0),
    "dependence_floor_ratio": (0.0, 100.0),
    "withdrawal_ratio": (0.01, 0.99),
    "severe_withdrawal_after_h": (0.5, 240.0),
    "side_effect_ec50_ng_per_ml": (0.01, 10_000.0),
    "side_effect_hill": (0.2, 10.0),
}
#: Parameters that must be strictly positive although their lower limit is 0.
_POSITIVE = frozenset({"oral_bioavailability"})


def system_matrices(p: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The linear system ``dx/dt = M x + B u`` for one patient or a batch (time in hours).

    :param p: parameter arrays by :class:`PatientParameters` field name, all of one shape ``S``.
    :return: ``M`` of shape ``S + (N_STATES, N_STATES)`` and ``B`` of shape ``S + (N_STATES, 2)``.
    """
    shape = np.shape(p["csf_volume_ml"])
    m = np.zeros(shape + (N_STATES, N_STATES))
    b = np.zeros(shape + (N_STATES, 2))
    vc, vd = p["csf_volume_ml"], p["deep_volume_ml"]
    cl, q = p["csf_clearance_ml_per_h"], p["deep_clearance_ml_per_h"]
    vp_ml = p["plasma_volume_l_per_kg"] * p["weight_kg"] * 1000.0
    ka = p["absorption_rate_per_h"]
    blood = 1.0 / (p["plasma_to_csf_ratio"] * vp_ml)  # CNS level per ng in plasma, 1/mL
    cord = p["cord_penetration"] / vc  # spinal level per ng in the lumbar CSF, 1/mL
    w = p["fast_fraction"]
    m[..., GUT, GUT] = -ka
    m[..., PLASMA, GUT] = ka
    m[..., PLASMA, PLASMA] = -math.log(2) / p["plasma_half_life_h"]
    m[..., PLASMA, CSF] = cl / vc
    m[..., CSF, CSF] = -(cl + q) / vc
    m[..., CSF, DEEP] = q / vd
    m[..., DEEP, CSF] = q / vc
    m[..., DEEP, DEEP] = -q / vd
    for site, rate in ((FAST, p["fast_rate_per_h"]), (TRANSIT, p["transit_rate_per_h"])):
        m[..., site, CSF] = rate * cord
        m[..., site, PLASMA] = rate * blood
        m[..., site, site] = -rate
    m[..., SLOW, TRANSIT] = p["slow_rate_per_h"]
    m[..., SLOW, SLOW] = -p["slow_rate_per_h"]
    kb = p["brain_rate_per_h"]
    m[..., BRAIN, CSF] = kb * cord * p["rostral_fraction"]
    m[..., BRAIN, PLASMA] = kb * blood
    m[..., BRAIN, BRAIN] = -kb
    for state, tau in ((DEPENDENCE, p["dependence_tau_h"]), (CHRONIC, p["chronic_tolerance_tau_h"])):
        m[..., state, FAST] = w / tau
        m[..., state, SLOW] = (1.0 - w) / tau
        m[..., state, state] = -1.0 / tau
    b[..., CSF, INTRATHECAL_INPUT] = 1.0
    b[..., GUT, ORAL_INPUT] = p["oral_bioavailability"]
    return m, b


def expm_batched(a: np.ndarray) -> np.ndarray:
    """Matrix exponential of every ``n x n`` matrix in ``a`` (shape ``... x n x n``).

    Scaling and squaring with a degree-18 Taylor polynomial: every matrix is scaled
    by the same power of two so that its 1-norm is at most 1/2, where the truncation
    error is below 1e-22. Vectorised over the batch; ``scipy.linalg.expm`` takes
    about 10 ms per matrix here, which is 100 s for a cohort of 10 000.
    """
    norm = float(np.max(np.abs(a).sum(axis=-2), initial=0.0))
    squarings = max(0, math.ceil(math.log2(norm / 0.5))) if norm > 0.5 else 0
    scaled = a / 2.0**squarings
    eye = np.broadcast_to(np.eye(a.shape[-1]), a.shape)
    result = eye.copy()
    for k in range(18, 0, -1):  # Horner: I + A/1 (I + A/2 (I + ...))
        result = eye + np.matmul(scaled, result) / k
    for _ in range(squarings):
        result = np.matmul(result, result)
    return result


def step_matrices(m: np.ndarray, b: np.ndarray, dt_h: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact step over ``dt_h`` hours of constant input: ``x1 = Phi x0 + Gamma u``.

    The matrix exponential of the augmented system ``[[M, B], [0, 0]] dt`` holds both,
    so a singular ``M`` needs no special case.

    :return: ``Phi`` (``... x n x n``) and ``Gamma`` (``... x n x 2``).
    """
    n = m.shape[-1]
    aug = np.zeros(m.shape[:-2] + (n + 2, n + 2))
    aug[..., :n, :n] = m * dt_h
    aug[..., :n, n:] = b * dt_h
    e = expm_batched(aug)
    return e[..., :n, :n], e[..., :n, n:]


def spinal_level(x: np.ndarray, p: Mapping[str, np.ndarray]) -> np.ndarray:
    """Spinal effect-site level, ng/mL (``x`` has the states on its last axis)."""
    w = p["fast_fraction"]
    return w * x[..., FAST] + (1.0 - w) * x[..., SLOW]


def csf_level(x: np.ndarray, p: Mapping[str, np.ndarray]) -> np.ndarray:
    """Lumbar CSF concentration, ng/mL: the intrathecal part plus the blood-derived part [CH-ORAL]."""
    return x[..., CSF] / p["csf_volume_ml"] + plasma_level(x, p) / p["plasma_to_csf_ratio"]


def plasma_level(x: np.ndarray, p: Mapping[str, np.ndarray]) -> np.ndarray:
    """Plasma concentration, ng/mL."""
    return x[..., PLASMA] / (p["plasma_volume_l_per_kg"] * p["weight_kg"] * 1000.0)


def tone_reduction(x: np.ndarray, p: Mapping[str, np.ndarray]) -> np.ndarray:
    """Reduction of the Modified Ashworth score from its baseline (Emax model, the largest being the baseline)."""
    ec50 = p["ec50_ng_per_ml"] * (1.0 + np.maximum(x[..., CHRONIC], 0.0) / (p["chronic_tolerance_ratio"]
                                                                          * p["ec50_ng_per_ml"]))
    drive = (np.maximum(spinal_level(x, p), 0.0) / ec50) ** p["hill"]
    return p["ashworth_baseline"] * drive / (1.0 + drive)


def ashworth_score(x: np.ndarray, p: Mapping[str, np.ndarray]) -> np.ndarray:
    """Modified Ashworth score, 0 (no tone) to 4 (rigid)."""
    return p["ashworth_baseline"] - tone_reduction(x, p)


def overdose_level(x: np.ndarray, tolerance: np.ndarray, p: Mapping[str, np.ndarray]) -> np.ndarray:
    """Overdose level (:class:`OverdoseLevel` values): the brain level against the tolerated level.

    :param tolerance: the tolerance level, ng/mL (:func:`next_tolerance`).
    """
    threshold = p["sedation_threshold_ng_per_ml"] + p["tolerance_gain"] * np.maximum(tolerance, 0.0)
    brain = x[..., BRAIN]
    return np.where(brain >= p["respiratory_ratio"] * threshold, int(OverdoseLevel.RESPIRATORY),
                    np.where(brain >= threshold, int(OverdoseLevel.SEDATION), int(OverdoseLevel.NONE)))


def next_tolerance(tolerance: np.ndarray, brain_before: np.ndarray, brain_after: np.ndarray, dt_h: float,
                   p: Mapping[str, np.ndarray]) -> np.ndarray:
    """Tolerance after a step of ``dt_h`` hours: a lag of the step's mean brain level, ng/mL.

    It builds with ``tolerance_build_tau_h`` and fades with ``tolerance_fade_tau_h``.
    """
    mean = 0.5 * (brain_before + brain_after)
    tau = np.where(mean > tolerance, p["tolerance_build_tau_h"], p["tolerance_fade_tau_h"])
    return mean + (tolerance - mean) * np.exp(-dt_h / tau)


def in_withdrawal(x: np.ndarray, p: Mapping[str, np.ndarray]) -> np.ndarray:
    """True where the patient is dependent and the spinal level has fallen well below the dependence level."""
    dependence = x[..., DEPENDENCE]
    dependent = dependence >= p["dependence_floor_ratio"] * p["ec50_ng_per_ml"]
    return dependent & (spinal_level(x, p) < p["withdrawal_ratio"] * dependence)


def side_effect_fraction(x: np.ndarray, p: Mapping[str, np.ndarray]) -> np.ndarray:
    """Side-effect proxy: the share of patients with dose-limiting side effects at this brain level (0-1)."""
    drive = (np.maximum(x[..., BRAIN], 0.0) / p["side_effect_ec50_ng_per_ml"]) ** p["side_effect_hill"]
    return drive / (1.0 + drive)


@dataclass(frozen=True)
class PatientState:
    """One observation of the patient.

    :ivar time_s: model time, s.
    :ivar csf_ng_per_ml: lumbar CSF concentration, ng/mL.
    :ivar plasma_ng_per_ml: plasma concentration, ng/mL.
    :ivar effect_ng_per_ml: spinal effect-site level, ng/mL.
    :ivar brain_ng_per_ml: supraspinal (sedation) level, ng/mL.
    :ivar tolerance_ng_per_ml: the brain level the patient tolerates by adaptation, ng/mL.
    :ivar dependence_ng_per_ml: the spinal level the patient depends on, ng/mL.
    :ivar ashworth: Modified Ashworth score, 0 (no tone) to 4 (rigid).
    :ivar side_effects: side-effect proxy, 0-1 (:func:`side_effect_fraction`).
    :ivar withdrawal: withdrawal level.
    :ivar overdose: overdose level.
    """

    time_s: float
    csf_ng_per_ml: float
    plasma_ng_per_ml: float
    effect_ng_per_ml: float
    brain_ng_per_ml: float
    tolerance_ng_per_ml: float
    dependence_ng_per_ml: float
    ashworth: float
    side_effects: float
    withdrawal: WithdrawalLevel
    overdose: OverdoseLevel


class Patient:
    """One patient's state, advanced exactly over piecewise-constant input.

    Drug enters as mass at the catheter tip over an interval
    (:meth:`receive_intrathecal`), as an instantaneous lumbar injection (:meth:`bolus`)
    or as tablets (:meth:`take_oral`). Flags are evaluated at least every
    :data:`MAX_STEP_H` hours.

    :param parameters: the patient (default: the reference adult).
    :param start_s: model time at creation, s.
    """

    def __init__(self, parameters: PatientParameters | None = None, *, start_s: float = 0.0) -> None:
        self.parameters = parameters or PatientParameters()
        arrays = self.parameters.as_arrays()
        self._m, self._b = system_matrices(arrays)
        # The output functions take plain floats as well as 0-d arrays, with the same results, faster.
        self._p = {name: float(value) for name, value in arrays.items()}
        self._steps: dict[float, tuple[np.ndarray, np.ndarray]] = {}
        self._time_s = float(start_s)
        self._x = np.zeros(N_STATES)
        self._tolerance = 0.0
        self._withdrawal_since_s: float | None = None
        #: The overdose level of the current state, kept by :meth:`_update_flags` (every change of state runs it).
        self._overdose_now = self._overdose()
        self.peak_overdose = OverdoseLevel.NONE
        self.peak_withdrawal = WithdrawalLevel.NONE

    @property
    def time_s(self) -> float:
        """Model time, s."""
        return self._time_s

    @property
    def states(self) -> np.ndarray:
        """A copy of the state vector (indices ``GUT`` ... ``CHRONIC``)."""
        return self._x.copy()

    @property
    def tolerance_ng_per_ml(self) -> float:
        """The tolerance level, ng/mL."""
        return self._tolerance

    def receive_intrathecal(self, mass_ug: float, start_s: float, end_s: float) -> PatientState:
        """Drug reaching the catheter tip: ``mass_ug`` spread evenly over [``start_s``, ``end_s``].

        The model first advances to ``start_s`` without input; ``start_s == end_s``
        is an instantaneous delivery. Feed it what the mechanism physically pushed
        out of the catheter, not what the controller believes it delivered.

        :param mass_ug: drug mass, µg (finite, >= 0).
        :param start_s: start of the interval, s (not before the model time).
        :param end_s: end of the interval, s (not before ``start_s``).
        :return: the state at ``end_s``.
        :raises ConfigError: for a negative or non-finite mass or an interval in the past or reversed.
        """
        self.infuse_intrathecal(mass_ug, start_s, end_s)
        return self.state()

    def infuse_intrathecal(self, mass_ug: float, start_s: float, end_s: float) -> None:
        """:meth:`receive_intrathecal` without building the observation (a caller that wants two of its
        numbers reads them: :meth:`ashworth`, :meth:`effect_ng_per_ml`)."""
        if not (math.isfinite(mass_ug) and mass_ug >= 0):
            raise ConfigError("mass_ug", mass_ug, ">= 0 and finite")
        if not math.isfinite(start_s) or start_s < self._time_s:
            raise ConfigError("start_s", start_s, f">= the model time {self._time_s}")
        if not math.isfinite(end_s) or end_s < start_s:
            raise ConfigError("end_s", end_s, f">= start_s {start_s}")
        self._advance(start_s, 0.0, 0.0)
        mass_ng = mass_ug * NG_PER_UG
        if end_s == start_s:
            self._x[CSF] += mass_ng
            self._update_flags()
        else:
            self._advance(end_s, mass_ng / ((end_s - start_s) / S_PER_H), 0.0)

    def bolus(self, dose_ng: float) -> None:
        """An instantaneous intrathecal injection now (a screening bolus by lumbar puncture), ng (>= 0)."""
        if not (math.isfinite(dose_ng) and dose_ng >= 0):
            raise ConfigError("dose_ng", dose_ng, ">= 0 and finite")
        self.receive_intrathecal(dose_ng / NG_PER_UG, self._time_s, self._time_s)

    def take_oral(self, dose_mg: float) -> None:
        """Swallow a tablet now, mg (>= 0); ``oral_bioavailability`` of it reaches the gut depot."""
        if not (math.isfinite(dose_mg) and dose_mg >= 0):
            raise ConfigError("dose_mg", dose_mg, ">= 0 and finite")
        self._x[GUT] += dose_mg * UG_PER_MG * NG_PER_UG * self.parameters.oral_bioavailability
        self._update_flags()

    def advance_to(self, time_s: float) -> PatientState:
        """Advance the model without input to ``time_s`` (not backwards) and return the state there."""
        if not math.isfinite(time_s) or time_s < self._time_s:
            raise ConfigError("time_s", time_s, f">= the model time {self._time_s}")
        self._advance(time_s, 0.0, 0.0)
        return self.state()

    def _advance(self, time_s: float, intrathecal_ng_per_h: float, oral_ng_per_h: float) -> None:
        """Integrate to ``time_s`` with constant inputs, ng/h; the flags follow each step."""
        if self._time_s >= time_s:
            return
        u = np.array([intrathecal_ng_per_h, oral_ng_per_h])
        while self._time_s < time_s:
            step_s = min(MAX_STEP_H * S_PER_H, time_s - self._time_s)
            phi, gamma = self._step(step_s / S_PER_H)
            before = float(self._x[BRAIN])
            self._x = phi @ self._x + gamma @ u
            self._tolerance = self._next_tolerance(before, float(self._x[BRAIN]), step_s / S_PER_H)
            self._time_s += step_s
            self._update_flags()

    def _step(self, dt_h: float) -> tuple[np.ndarray, np.ndarray]:
        cached = self._steps.get(dt_h)
        if cached is None:
            if len(self._steps) > 64:
                self._steps.clear()
            cached = self._steps[dt_h] = step_matrices(self._m, self._b, dt_h)
        return cached

    # One patient's flags in plain floats: the arithmetic of next_tolerance, in_withdrawal and overdose_level
    # (same operations in the same order, so the same numbers) without building 0-d arrays at every step.

    def _next_tolerance(self, brain_before: float, brain_after: float, dt_h: float) -> float:
        """:func:`next_tolerance` of this patient after a step of ``dt_h`` hours, ng/mL."""
        p = self._p
        mean = 0.5 * (brain_before + brain_after)
        tau = p["tolerance_build_tau_h"] if mean > self._tolerance else p["tolerance_fade_tau_h"]
        return float(mean + (self._tolerance - mean) * np.exp(-dt_h / tau))

    def _in_withdrawal(self) -> bool:
        """:func:`in_withdrawal` of this patient now."""
        p, x = self._p, self._x
        dependence = float(x[DEPENDENCE])
        if not dependence >= p["dependence_floor_ratio"] * p["ec50_ng_per_ml"]:
            return False
        w = p["fast_fraction"]
        return w * float(x[FAST]) + (1.0 - w) * float(x[SLOW]) < p["withdrawal_ratio"] * dependence

    def _overdose(self) -> OverdoseLevel:
        """:func:`overdose_level` of this patient now."""
        p = self._p
        threshold = p["sedation_threshold_ng_per_ml"] + p["tolerance_gain"] * max(self._tolerance, 0.0)
        brain = float(self._x[BRAIN])
        if brain >= p["respiratory_ratio"] * threshold:
            return OverdoseLevel.RESPIRATORY
        return OverdoseLevel.SEDATION if brain >= threshold else OverdoseLevel.NONE

    def _update_flags(self) -> None:
        if self._in_withdrawal():
            if self._withdrawal_since_s is None:
                self._withdrawal_since_s = self._time_s
        else:
            self._withdrawal_since_s = None
        self._overdose_now = self._overdose()
        self.peak_overdose = max(self.peak_overdose, self._overdose_now)
        self.peak_withdrawal = max(self.peak_withdrawal, self._withdrawal())

    def _withdrawal(self) -> WithdrawalLevel:
        if self._withdrawal_since_s is None:
            return WithdrawalLevel.NONE
        if (self._time_s - self._withdrawal_since_s) / S_PER_H >= self.parameters.severe_withdrawal_after_h:
            return WithdrawalLevel.SEVERE
        return WithdrawalLevel.EARLY

    def ashworth(self) -> float:
        """Modified Ashworth score now: :func:`ashworth_score` in plain floats (the same operations in the
        same order, so the same number, without building 0-d arrays at every poll)."""
        p = self._p
        ec50 = p["ec50_ng_per_ml"]
        ec50 = ec50 * (1.0 + max(float(self._x[CHRONIC]), 0.0) / (p["chronic_tolerance_ratio"] * ec50))
        drive = (max(self.effect_ng_per_ml(), 0.0) / ec50) ** p["hill"]
        return p["ashworth_baseline"] - p["ashworth_baseline"] * drive / (1.0 + drive)

    def effect_ng_per_ml(self) -> float:
        """Spinal effect-site level now, ng/mL (:func:`spinal_level` in plain floats)."""
        w, x = self._p["fast_fraction"], self._x
        return w * float(x[FAST]) + (1.0 - w) * float(x[SLOW])

    def state(self) -> PatientState:
        """The current observation."""
        x, p = self._x, self._p
        return PatientState(
            time_s=self._time_s,
            csf_ng_per_ml=float(csf_level(x, p)),
            plasma_ng_per_ml=float(plasma_level(x, p)),
            effect_ng_per_ml=self.effect_ng_per_ml(),
            brain_ng_per_ml=float(x[BRAIN]),
            tolerance_ng_per_ml=self._tolerance,
            dependence_ng_per_ml=float(x[DEPENDENCE]),
            ashworth=self.ashworth(),
            side_effects=float(side_effect_fraction(x, p)),
            withdrawal=self._withdrawal(),
            overdose=self._overdose_now,
        )
