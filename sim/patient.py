"""A virtual ITB patient: one-compartment CSF pharmacokinetics, an effect compartment and an Emax model.

The model follows itb-clinical §2, §3 and §6:

* CSF is one well-stirred compartment, ``V`` = 70 mL, clearance ``CL`` = 30 mL/h
  (half-life about 1.6 h). Drug enters as a zero-order infusion (ng/h) plus
  instantaneous boluses (ng).
* An effect compartment with ``ke0`` ≈ 0.13 /h delays the effect: a bolus peaks
  at about 4 h, an infusion reaches about 90 % of its effect after a day.
* The Modified Ashworth score falls from its baseline by an Emax model of the
  effect-site concentration.
* Dependence is tracked as a slowly adapting level of the effect-site
  concentration (time constant days). Withdrawal is flagged when the
  effect-site concentration falls well below that level (early signs at once,
  severe after it persists for a day); overdose when it rises well above it
  (sedation, then respiratory depression).

The solution is exact for piecewise-constant input, so advancing a day costs
the same as advancing a minute. Inter-patient variability is drawn once from a
seeded generator; the model has no other randomness.

Units: concentrations ng/mL, infusion ng/h, doses ng, time seconds of model
time. The simulator keeps its own floats: it is a plant model, not dosing
arithmetic.
"""

from __future__ import annotations

import enum
import math
import random
from dataclasses import dataclass

from cython_ext.errors import ConfigError

S_PER_H = 3600.0


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
    """Parameters of one virtual patient.

    :ivar volume_ml: CSF volume of distribution, mL.
    :ivar clearance_ml_per_h: CSF clearance, mL/h.
    :ivar ke0_per_h: effect-compartment rate constant, 1/h.
    :ivar ashworth_baseline: untreated Modified Ashworth score (0-4).
    :ivar emax_ashworth: largest reduction of the score the drug can give.
    :ivar ec50_ng_per_ml: effect-site concentration giving half the maximum reduction, ng/mL.
    :ivar hill: steepness of the Emax curve.
    :ivar adaptation_tau_h: time constant of dependence (the adapted level), h.
    :ivar withdrawal_ratio: effect-site level below this fraction of the adapted level is withdrawal.
    :ivar withdrawal_floor_ng_per_ml: adapted level below which the patient is not dependent, ng/mL.
    :ivar severe_withdrawal_after_h: withdrawal lasting this long becomes severe, h.
    :ivar overdose_ratio: effect-site level above this multiple of the tolerated level is sedation.
    :ivar overdose_floor_ng_per_ml: tolerated level of a drug-naive patient, ng/mL.
    :ivar respiratory_ratio: multiple of the tolerated level that depresses breathing.
    """

    volume_ml: float = 70.0
    clearance_ml_per_h: float = 30.0
    ke0_per_h: float = 0.13
    ashworth_baseline: float = 3.8
    emax_ashworth: float = 3.3
    ec50_ng_per_ml: float = 80.0
    hill: float = 1.5
    adaptation_tau_h: float = 72.0
    withdrawal_ratio: float = 0.4
    withdrawal_floor_ng_per_ml: float = 40.0
    severe_withdrawal_after_h: float = 24.0
    overdose_ratio: float = 4.0
    overdose_floor_ng_per_ml: float = 150.0
    respiratory_ratio: float = 8.0

    def __post_init__(self) -> None:
        positive = (
            "volume_ml",
            "clearance_ml_per_h",
            "ke0_per_h",
            "ec50_ng_per_ml",
            "hill",
            "adaptation_tau_h",
            "severe_withdrawal_after_h",
            "overdose_floor_ng_per_ml",
        )
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(name, value, "a finite number > 0")
        if not 0 <= self.ashworth_baseline <= 4:
            raise ConfigError("ashworth_baseline", self.ashworth_baseline, "in [0, 4]")
        if not 0 <= self.emax_ashworth <= self.ashworth_baseline:
            raise ConfigError("emax_ashworth", self.emax_ashworth, f"in [0, {self.ashworth_baseline}]")
        if not 0 < self.withdrawal_ratio < 1:
            raise ConfigError("withdrawal_ratio", self.withdrawal_ratio, "in (0, 1)")
        if not 1 < self.overdose_ratio < self.respiratory_ratio:
            raise ConfigError("overdose_ratio", self.overdose_ratio, f"in (1, respiratory_ratio={self.respiratory_ratio})")
        if abs(self.clearance_ml_per_h / self.volume_ml - self.ke0_per_h) < 1e-9:
            raise ConfigError("ke0_per_h", self.ke0_per_h, "different from CL/V (the closed form needs k != ke0)")

    @property
    def k_per_h(self) -> float:
        """Elimination rate constant CL/V, 1/h."""
        return self.clearance_ml_per_h / self.volume_ml

    @classmethod
    def sampled(cls, seed: int, *, variability_cv: float = 0.25) -> PatientParameters:
        """Draw a patient around the defaults with log-normal variability.

        :param seed: seed of the generator; the same seed gives the same patient.
        :param variability_cv: coefficient of variation of V, CL and EC50 (0 gives the defaults).
        """
        if not 0 <= variability_cv <= 1:
            raise ConfigError("variability_cv", variability_cv, "in [0, 1]")
        rng = random.Random(seed)
        sigma = math.sqrt(math.log(1 + variability_cv**2))
        base = cls()

        def draw(value: float, lo: float, hi: float) -> float:
            return min(hi, max(lo, value * math.exp(rng.gauss(-sigma * sigma / 2, sigma))))

        for _ in range(100):
            volume = draw(base.volume_ml, 22.0, 157.0)
            clearance = draw(base.clearance_ml_per_h, 13.0, 80.0)
            if abs(clearance / volume - base.ke0_per_h) > 0.01:
                break
        return cls(
            volume_ml=volume,
            clearance_ml_per_h=clearance,
            ec50_ng_per_ml=draw(base.ec50_ng_per_ml, 30.0, 250.0),
        )


@dataclass(frozen=True)
class PatientState:
    """One observation of the patient.

    :ivar time_s: model time, s.
    :ivar csf_ng_per_ml: CSF concentration, ng/mL.
    :ivar effect_ng_per_ml: effect-site concentration, ng/mL.
    :ivar adapted_ng_per_ml: the level the patient has adapted to, ng/mL.
    :ivar ashworth: Modified Ashworth score, 0 (no tone) to 4 (rigid).
    :ivar withdrawal: withdrawal level.
    :ivar overdose: overdose level.
    """

    time_s: float
    csf_ng_per_ml: float
    effect_ng_per_ml: float
    adapted_ng_per_ml: float
    ashworth: float
    withdrawal: WithdrawalLevel
    overdose: OverdoseLevel


class Patient:
    """The patient's state, advanced in exact steps of piecewise-constant infusion.

    :param parameters: the patient (default: the reference patient of itb-clinical §6).
    :param start_s: model time at creation, s.
    """

    def __init__(self, parameters: PatientParameters | None = None, *, start_s: float = 0.0) -> None:
        self.parameters = parameters or PatientParameters()
        self._time_s = float(start_s)
        self._c = 0.0
        self._ce = 0.0
        self._adapted = 0.0
        self._withdrawal_since_s: float | None = None
        self._infusion_ng_per_h = 0.0
        self.peak_overdose = OverdoseLevel.NONE
        self.peak_withdrawal = WithdrawalLevel.NONE

    @property
    def time_s(self) -> float:
        """Model time, s."""
        return self._time_s

    def set_infusion(self, rate_ng_per_h: float) -> None:
        """Set the drug input rate reaching the CSF from now on, ng/h (>= 0)."""
        if not (math.isfinite(rate_ng_per_h) and rate_ng_per_h >= 0):
            raise ConfigError("rate_ng_per_h", rate_ng_per_h, ">= 0 and finite")
        self._infusion_ng_per_h = float(rate_ng_per_h)

    def bolus(self, dose_ng: float) -> None:
        """Give an instantaneous intrathecal bolus, ng (>= 0)."""
        if not (math.isfinite(dose_ng) and dose_ng >= 0):
            raise ConfigError("dose_ng", dose_ng, ">= 0 and finite")
        self._c += dose_ng / self.parameters.volume_ml
        self._update_flags()

    def advance_to(self, time_s: float) -> PatientState:
        """Advance the model to ``time_s`` (not backwards) and return the state there.

        Long gaps are integrated in slices of at most one hour so that the
        adapted level and the withdrawal timer follow the concentration.
        """
        if time_s < self._time_s:
            raise ConfigError("time_s", time_s, f">= the model time {self._time_s}")
        while self._time_s < time_s:
            step_s = min(S_PER_H, time_s - self._time_s)
            self._step(step_s / S_PER_H)
            self._time_s += step_s
            self._update_flags()
        return self.state()

    def _step(self, dt_h: float) -> None:
        p = self.parameters
        k = p.k_per_h
        ke0 = p.ke0_per_h
        css = self._infusion_ng_per_h / p.clearance_ml_per_h
        ek = math.exp(-k * dt_h)
        ee = math.exp(-ke0 * dt_h)
        c0 = self._c
        ce0 = self._ce
        self._c = css + (c0 - css) * ek
        self._ce = css + (ce0 - css) * ee + (c0 - css) * ke0 / (ke0 - k) * (ek - ee)
        # The adapted level follows the effect site as a slow first-order lag (midpoint input).
        ea = math.exp(-dt_h / p.adaptation_tau_h)
        mid = 0.5 * (ce0 + self._ce)
        self._adapted = mid + (self._adapted - mid) * ea

    def _withdrawal_now(self) -> bool:
        p = self.parameters
        return self._adapted >= p.withdrawal_floor_ng_per_ml and self._ce < p.withdrawal_ratio * self._adapted

    def _update_flags(self) -> None:
        if self._withdrawal_now():
            if self._withdrawal_since_s is None:
                self._withdrawal_since_s = self._time_s
        else:
            self._withdrawal_since_s = None
        state = self.state()
        self.peak_overdose = max(self.peak_overdose, state.overdose)
        self.peak_withdrawal = max(self.peak_withdrawal, state.withdrawal)

    def _overdose_level(self) -> OverdoseLevel:
        p = self.parameters
        tolerated = max(self._adapted, p.overdose_floor_ng_per_ml)
        if self._ce > p.respiratory_ratio * tolerated:
            return OverdoseLevel.RESPIRATORY
        if self._ce > p.overdose_ratio * tolerated:
            return OverdoseLevel.SEDATION
        return OverdoseLevel.NONE

    def _withdrawal_level(self) -> WithdrawalLevel:
        if self._withdrawal_since_s is None:
            return WithdrawalLevel.NONE
        elapsed_h = (self._time_s - self._withdrawal_since_s) / S_PER_H
        if elapsed_h >= self.parameters.severe_withdrawal_after_h:
            return WithdrawalLevel.SEVERE
        return WithdrawalLevel.EARLY

    def ashworth(self) -> float:
        """Modified Ashworth score for the current effect-site concentration."""
        p = self.parameters
        ce = max(self._ce, 0.0)
        drive = ce**p.hill
        return p.ashworth_baseline - p.emax_ashworth * drive / (p.ec50_ng_per_ml**p.hill + drive)

    def state(self) -> PatientState:
        """The current observation."""
        return PatientState(
            time_s=self._time_s,
            csf_ng_per_ml=self._c,
            effect_ng_per_ml=self._ce,
            adapted_ng_per_ml=self._adapted,
            ashworth=self.ashworth(),
            withdrawal=self._withdrawal_level(),
            overdose=self._overdose_level(),
        )
