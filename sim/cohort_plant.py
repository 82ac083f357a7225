"""The in-silico cohort's plant: N patients' PK/PD state as NumPy arrays, stepped exactly.

The equations and parameters are those of the scalar model (:mod:`sim.patient`):
:func:`~sim.patient.system_matrices` builds every patient's linear system at once,
one batched matrix exponential gives each patient's exact step, and the same
output functions give the tone, the side-effect proxy and the flags. A step is
a batched matrix-vector product, so hourly steps over 180 days cost 4320 of them
whatever the dose history. Input per step and patient: the drug mass that reached
the catheter tip over the step (spread evenly, as
:meth:`~sim.patient.Patient.receive_intrathecal`), plus optional lumbar boluses and
tablets at the step's start. :func:`time_plant_baseline` is the plant-only
baseline for ``itb bench cohort``.

Two implementations of the step, chosen when the plant is built: ``"compiled"``
(:mod:`sim._cohort_step`, one pass over the patients, the default) and ``"numpy"``
(array operations, the reference the compiled step is tested against, and the
baseline). Each patient's step matrices are computed with that patient's own
scaling of the matrix exponential (:func:`step_matrices` scales a batch by its
largest norm), so a patient's trajectory does not depend on which patients share
its plant: a cohort split into chunks gives the figures of the whole.
"""

from __future__ import annotations

import math
import resource
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cython_ext.errors import ConfigError
from cython_ext.units import H_PER_DAY, NG_PER_UG, UG_PER_MG
from sim.patient import (
    BRAIN,
    CSF,
    GUT,
    INTRATHECAL_INPUT,
    N_STATES,
    PARAMETER_LIMITS,
    WithdrawalLevel,
    ashworth_score,
    csf_level,
    in_withdrawal,
    next_tolerance,
    overdose_level,
    plasma_level,
    side_effect_fraction,
    spinal_level,
    step_matrices,
    system_matrices,
)
from sim.population import Population

#: Longest step, h (the flags and the tolerance are evaluated once a step).
MAX_STEP_H = 1.0
#: Implementations of the step.
IMPLEMENTATIONS = ("compiled", "numpy")


def _compiled_step() -> Any:
    try:
        from sim import _cohort_step
    except ImportError as exc:
        raise ImportError("the cohort plant's compiled step sim._cohort_step is not built: build it with "
                          "`make test` or `pip install -e .`, or ask for implementation='numpy'") from exc
    return _cohort_step


def patient_step_matrices(m: np.ndarray, b: np.ndarray, dt_h: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~sim.patient.step_matrices` for a batch, each patient scaled by its own norm.

    Patients are grouped by the number of squarings their own augmented matrix needs
    (its 1-norm halved until at most 1/2, as :func:`~sim.patient.expm_batched` does), so
    each gets the matrices it would get alone, whatever the batch.
    """
    norms = np.maximum(np.abs(m).sum(axis=-2).max(axis=-1), np.abs(b).sum(axis=-2).max(axis=-1)) * dt_h
    squarings = np.where(norms > 0.5, np.ceil(np.log2(np.maximum(norms, 0.5) / 0.5)), 0)
    phi = np.empty_like(m)
    gamma = np.empty_like(b)
    for count in np.unique(squarings):
        chosen = squarings == count
        phi[chosen], gamma[chosen] = step_matrices(m[chosen], b[chosen], dt_h)
    return phi, gamma


@dataclass(frozen=True)
class CohortState:
    """One observation of every patient (arrays of shape (N,)).

    :ivar time_h: plant time, h.
    :ivar csf_ng_per_ml: lumbar CSF concentration, ng/mL.
    :ivar plasma_ng_per_ml: plasma concentration, ng/mL.
    :ivar effect_ng_per_ml: spinal effect-site level, ng/mL.
    :ivar brain_ng_per_ml: supraspinal level, ng/mL.
    :ivar tolerance_ng_per_ml: tolerance level, ng/mL.
    :ivar ashworth: Modified Ashworth score.
    :ivar side_effects: side-effect proxy, 0-1.
    :ivar overdose: :class:`~sim.patient.OverdoseLevel` values.
    :ivar withdrawal: :class:`~sim.patient.WithdrawalLevel` values.
    """

    time_h: float
    csf_ng_per_ml: np.ndarray
    plasma_ng_per_ml: np.ndarray
    effect_ng_per_ml: np.ndarray
    brain_ng_per_ml: np.ndarray
    tolerance_ng_per_ml: np.ndarray
    ashworth: np.ndarray
    side_effects: np.ndarray
    overdose: np.ndarray
    withdrawal: np.ndarray


class CohortPlant:
    """N virtual patients advanced together in exact steps of ``step_h`` hours.

    :param parameters: every :class:`~sim.patient.PatientParameters` field as an array of shape (N,)
        (e.g. :attr:`~sim.population.SampledPopulation.parameters`).
    :param step_h: step length, h, in (0, :data:`MAX_STEP_H`].
    :param implementation: ``"compiled"`` or ``"numpy"`` (see the module docstring).
    :raises ConfigError: for a missing, misshapen or out-of-range parameter, a bad step or implementation.
    :raises ImportError: for the compiled step when it is not built (it is never silently replaced).
    """

    def __init__(self, parameters: Mapping[str, np.ndarray], *, step_h: float = 1.0,
                 implementation: str = "compiled") -> None:
        if not (isinstance(step_h, (int, float)) and math.isfinite(step_h) and 0 < step_h <= MAX_STEP_H):
            raise ConfigError("step_h", step_h, f"in (0, {MAX_STEP_H:g}] h")
        if implementation not in IMPLEMENTATIONS:
            raise ConfigError("implementation", implementation, f"one of {list(IMPLEMENTATIONS)}")
        self.implementation = implementation
        self._compiled = _compiled_step() if implementation == "compiled" else None
        p = {}
        size = None
        for name, (low, high) in PARAMETER_LIMITS.items():
            if name not in parameters:
                raise ConfigError(f"parameters.{name}", None, "an array for every patient")
            values = np.asarray(parameters[name], dtype=float)
            size = len(values) if size is None else size
            if values.shape != (size,) or size == 0:
                raise ConfigError(f"parameters.{name}", values.shape, f"one value per patient, shape ({size},)")
            if not np.all(np.isfinite(values) & (values >= low) & (values <= high)):
                raise ConfigError(f"parameters.{name}", values[~((values >= low) & (values <= high))][:3],
                                  f"finite values in [{low:g}, {high:g}]")
            p[name] = values
        self.parameters = p
        self.size = int(size or 0)
        self.step_h = float(step_h)
        m, b = system_matrices(p)
        phi, gamma = patient_step_matrices(m, b, self.step_h)
        if self._compiled is not None:
            # The entries of Phi that some patient has (the model's structure), row by row: the
            # compiled product adds only those, in the full product's order.
            rows, columns = np.nonzero(np.any(phi != 0, axis=0))
            self._phi_values = np.ascontiguousarray(phi[:, rows, columns])
            self._phi_row_start = np.searchsorted(rows, np.arange(N_STATES + 1)).astype(np.intc)
            self._phi_columns = columns.astype(np.intc)
            self._gamma_it_rows = np.ascontiguousarray(gamma[:, :, INTRATHECAL_INPUT])
            self._flag_parameters = np.ascontiguousarray(
                np.stack([p[name] for name in self._compiled.FLAG_PARAMETERS], axis=1))
            self._decays = self._compiled.tolerance_decays(self._flag_parameters, self.step_h)
            self._x = np.zeros((self.size, N_STATES))
        else:
            # Phi is nearly lower triangular: column j is zero outside one band of rows for every
            # patient. Keep each column's band as (rows, N) and add its products into that band.
            self._columns = []
            for j in range(N_STATES):
                rows = np.flatnonzero(np.any(phi[:, :, j] != 0, axis=0))
                low, high = int(rows.min()), int(rows.max()) + 1
                self._columns.append((j, low, high, np.ascontiguousarray(phi[:, low:high, j].T)))
            self._products = np.empty((N_STATES, self.size))
            self._gamma_it = np.ascontiguousarray(gamma[:, :, INTRATHECAL_INPUT].T)
            self._xt = np.zeros((N_STATES, self.size))
        self.tolerance = np.zeros(self.size)
        self.time_h = 0.0
        self._withdrawal_since_h = np.full(self.size, np.nan)
        self.peak_overdose = np.zeros(self.size, dtype=np.int8)
        self.peak_withdrawal = np.zeros(self.size, dtype=np.int8)
        #: Days (24 h blocks from time 0) with any overdose, any withdrawal and severe withdrawal flag.
        self.overdose_days = np.zeros(self.size, dtype=np.int32)
        self.withdrawal_days = np.zeros(self.size, dtype=np.int32)
        self.severe_withdrawal_days = np.zeros(self.size, dtype=np.int32)
        self._today = np.zeros((3, self.size), dtype=bool)
        self._today_flags = self._today.view(np.uint8)
        self._no_input = np.zeros(self.size)

    def step(self, intrathecal_ug: np.ndarray | float = 0.0, *, bolus_ug: np.ndarray | float = 0.0,
             oral_mg: np.ndarray | float = 0.0) -> None:
        """Advance one step.

        :param intrathecal_ug: drug reaching the catheter tip during the step, µg per patient (>= 0).
        :param bolus_ug: lumbar injections at the step's start, µg per patient (>= 0).
        :param oral_mg: tablets swallowed at the step's start, mg per patient (>= 0).
        :raises ConfigError: for a negative, non-finite or misshapen input; nothing is advanced then.
        """
        it = self._input("intrathecal_ug", intrathecal_ug)
        bolus = self._input("bolus_ug", bolus_ug)
        oral = self._input("oral_mg", oral_mg)
        if self._compiled is not None:
            self._compiled_step(it, bolus, oral)
            return
        xt = self._xt
        xt[CSF] += bolus * NG_PER_UG
        xt[GUT] += oral * (UG_PER_MG * NG_PER_UG) * self.parameters["oral_bioavailability"]
        before = xt[BRAIN].copy()
        stepped = np.zeros_like(xt)
        for j, low, high, values in self._columns:
            products = self._products[: high - low]
            np.multiply(values, xt[j], out=products)
            stepped[low:high] += products
        xt = stepped
        xt += self._gamma_it * (it * NG_PER_UG / self.step_h)
        self._xt = xt
        x = self.x
        self.tolerance = next_tolerance(self.tolerance, before, x[:, BRAIN], self.step_h, self.parameters)
        self.time_h += self.step_h
        self._update_flags()

    def step_hours(self, intrathecal_ug: np.ndarray) -> None:
        """Advance one step per row of ``intrathecal_ug``, with no bolus and no tablet: what as many
        :meth:`step` calls do, in one pass of the compiled step (each patient's steps in turn).

        :param intrathecal_ug: (steps, N): row ``s`` is the drug reaching the catheter tip during step
            ``s``, µg per patient (>= 0).
        :raises ConfigError: for a negative, non-finite or misshapen input; nothing is advanced then.
        """
        arr = np.asarray(intrathecal_ug, dtype=float)
        if arr.ndim != 2 or arr.shape[1] != self.size:
            raise ConfigError("intrathecal_ug", arr.shape, f"shape (steps, {self.size})")
        if not np.all(np.isfinite(arr) & (arr >= 0)):
            raise ConfigError("intrathecal_ug", intrathecal_ug, "finite values >= 0")
        if self._compiled is None:
            for row in arr:
                self.step(row)
            return
        times_h = np.empty(len(arr))
        closes_day = np.zeros(len(arr), dtype=np.uint8)
        for s in range(len(arr)):
            self.time_h += self.step_h
            times_h[s] = self.time_h
            closes_day[s] = self._day_ends()
        self._compiled.step_hours(self._phi_values, self._phi_row_start, self._phi_columns, self._gamma_it_rows,
                                  self._x, self.tolerance, self._decays, self._withdrawal_since_h,
                                  self.peak_overdose, self.peak_withdrawal, self._today_flags, self._flag_parameters,
                                  np.ascontiguousarray(arr * NG_PER_UG), times_h, closes_day, self.overdose_days,
                                  self.withdrawal_days, self.severe_withdrawal_days, self.step_h)

    def _compiled_step(self, it: np.ndarray, bolus: np.ndarray, oral: np.ndarray) -> None:
        assert self._compiled is not None

        def ng(values: np.ndarray, scale: float) -> np.ndarray:
            return self._no_input if values.strides == (0,) and not values[0] else np.ascontiguousarray(values * scale)

        self.time_h += self.step_h
        self._compiled.step(self._phi_values, self._phi_row_start, self._phi_columns, self._gamma_it_rows, self._x,
                            self.tolerance, self._decays, self._withdrawal_since_h,
                            self.peak_overdose, self.peak_withdrawal, self._today_flags, self._flag_parameters,
                            self.parameters["oral_bioavailability"], ng(it, NG_PER_UG), ng(bolus, NG_PER_UG),
                            ng(oral, UG_PER_MG * NG_PER_UG), self.step_h, self.time_h)
        self._close_day_if_due()

    @property
    def x(self) -> np.ndarray:
        """The states, shape (N, states) (a view: do not write to it)."""
        return self._x if self._compiled is not None else self._xt.T

    def _input(self, name: str, value: np.ndarray | float) -> np.ndarray:
        arr = np.broadcast_to(np.asarray(value, dtype=float), (self.size,))
        if arr.strides == (0,) and arr.size and arr[0] == 0:
            return arr  # the common "nothing given"
        if not np.all(np.isfinite(arr) & (arr >= 0)):
            raise ConfigError(name, value, "finite values >= 0, one per patient or one for all")
        return arr

    def _update_flags(self) -> None:
        p = self.parameters
        now = in_withdrawal(self.x, p)
        self._withdrawal_since_h = np.where(now, np.where(np.isnan(self._withdrawal_since_h), self.time_h,
                                                          self._withdrawal_since_h), np.nan)
        withdrawal = self._withdrawal_level(now)
        overdose = overdose_level(self.x, self.tolerance, p)
        np.maximum(self.peak_overdose, overdose, out=self.peak_overdose, casting="unsafe")
        np.maximum(self.peak_withdrawal, withdrawal, out=self.peak_withdrawal, casting="unsafe")
        self._today |= (overdose > 0, withdrawal > 0, withdrawal >= int(WithdrawalLevel.SEVERE))
        self._close_day_if_due()

    def _day_ends(self) -> bool:
        """Whether plant time is at the end of a day (24 h block from time 0)."""
        return math.isclose(self.time_h % H_PER_DAY, 0.0, abs_tol=1e-9) or \
            math.isclose(self.time_h % H_PER_DAY, H_PER_DAY, abs_tol=1e-9)

    def _close_day_if_due(self) -> None:
        if self._day_ends():
            self._close_day()

    def _close_day(self) -> None:
        self.overdose_days += self._today[0]
        self.withdrawal_days += self._today[1]
        self.severe_withdrawal_days += self._today[2]
        self._today[:] = False

    def _withdrawal_level(self, now: np.ndarray) -> np.ndarray:
        elapsed = np.where(now, self.time_h - np.nan_to_num(self._withdrawal_since_h), -1.0)
        severe = elapsed >= self.parameters["severe_withdrawal_after_h"]
        return np.where(severe, int(WithdrawalLevel.SEVERE), np.where(now, int(WithdrawalLevel.EARLY),
                                                                        int(WithdrawalLevel.NONE)))

    def state(self) -> CohortState:
        """The current observation of every patient."""
        x, p = self.x, self.parameters
        now = ~np.isnan(self._withdrawal_since_h)
        return CohortState(
            time_h=self.time_h,
            csf_ng_per_ml=csf_level(x, p),
            plasma_ng_per_ml=plasma_level(x, p),
            effect_ng_per_ml=spinal_level(x, p),
            brain_ng_per_ml=x[:, BRAIN].copy(),
            tolerance_ng_per_ml=self.tolerance.copy(),
            ashworth=ashworth_score(x, p),
            side_effects=side_effect_fraction(x, p),
            overdose=overdose_level(x, self.tolerance, p).astype(np.int8),
            withdrawal=self._withdrawal_level(now).astype(np.int8),
        )


@dataclass(frozen=True)
class PlantTiming:
    """The plant-only baseline of ``itb bench cohort``.

    :ivar patients: patients simulated.
    :ivar days: days simulated.
    :ivar steps: steps taken (hourly).
    :ivar wall_s: wall time from building the plant to the last step, s.
    :ivar peak_rss_mib: the process's peak resident set size (interpreter and libraries included), MiB.
    """

    patients: int
    days: int
    steps: int
    wall_s: float
    peak_rss_mib: float


def time_plant_baseline(patients: int = 10_000, days: int = 180, *, seed: int = 0,
                        dose_ug_per_day: float = 300.0, implementation: str = "numpy") -> PlantTiming:
    """Time the plant alone: ``patients`` from the documented population on a constant dose for ``days``.

    The baseline of ``itb bench cohort`` is the NumPy step (``implementation``).

    :param patients: cohort size (1 .. the population limit).
    :param days: days to simulate, 1-3650.
    :param seed: population seed.
    :param dose_ug_per_day: intrathecal dose of every patient, µg/day (>= 0).
    :raises ConfigError: for a bad argument.
    """
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 3650:
        raise ConfigError("days", days, "an integer in [1, 3650]")
    if not (isinstance(dose_ug_per_day, (int, float)) and math.isfinite(dose_ug_per_day) and dose_ug_per_day >= 0):
        raise ConfigError("dose_ug_per_day", dose_ug_per_day, "a finite number >= 0")
    sample = Population(size=patients, seed=seed).sample()
    steps = days * H_PER_DAY
    hourly_ug = np.full(patients, dose_ug_per_day / H_PER_DAY)
    start = time.perf_counter()
    plant = CohortPlant(sample.parameters, implementation=implementation)
    for _ in range(steps):
        plant.step(hourly_ug)
    wall = time.perf_counter() - start
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return PlantTiming(patients, days, steps, wall, rss_kib / 1024)

