"""Virtual populations: documented parameter distributions, seeded draws, and the population file.

A population file (TOML) names its size, seed, the share of each origin, the
weight distribution of each origin and the distribution of any
:class:`~sim.patient.PatientParameters` field; fields it does not name take the
documented default below (:data:`DOCUMENTED`), and fields without a documented
distribution stay at the reference value::

    [population]
    size = 10000          # 1 .. MAX_POPULATION
    seed = 1

    [origins]             # shares, summing to 1
    spinal = 0.5
    cerebral = 0.4
    paediatric = 0.1

    [weight_kg.paediatric]
    distribution = "lognormal"   # or "uniform" (min, max) or "fixed" (value)
    median = 25.0
    sigma_log = 0.35
    min = 12.0
    max = 70.0

    [parameters.csf_clearance_ml_per_h]
    distribution = "lognormal"
    median = 30.0
    sigma_log = 0.46
    min = 13.0
    max = 80.0

Unknown keys, NaN or infinite numbers and values outside a parameter's hard
limits (:data:`~sim.patient.PARAMETER_LIMITS`) are rejected with a
:class:`~cython_ext.errors.ConfigError` naming the field. Log-normal draws are
truncated to [min, max] by inverse-CDF sampling (never clipped). The same file
and seed give the same patients.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from cython_ext import fields
from cython_ext.errors import ConfigError
from cython_ext.vocabulary import Origin
from sim.patient import PARAMETER_LIMITS, PatientParameters

#: Largest population a file may ask for (the cohort plant holds 11 float64 states a patient).
MAX_POPULATION = 1_000_000
#: Largest log-normal sigma accepted (a factor of 20 per standard deviation).
MAX_SIGMA_LOG = 3.0
DISTRIBUTIONS = ("lognormal", "uniform", "fixed")


def truncated_lognormal(rng: np.random.Generator, median: float, sigma_log: float, low: float, high: float,
                        n: int) -> np.ndarray:
    """``n`` draws of a log-normal (``median``, ``sigma_log``) truncated to [``low``, ``high``] (inverse CDF)."""
    if sigma_log == 0:
        return np.full(n, float(median))
    # Imported here: SciPy's special functions take about 0.5 s to import, and the processes that
    # only run a drawn cohort (its workers) never draw.
    from scipy.special import ndtr, ndtri

    a, b = ndtr((math.log(low) - math.log(median)) / sigma_log), ndtr((math.log(high) - math.log(median)) / sigma_log)
    u = a + (b - a) * rng.random(n)
    return np.clip(np.exp(math.log(median) + sigma_log * ndtri(u)), low, high)  # the clip only absorbs rounding


@dataclass(frozen=True)
class Distribution:
    """One parameter's distribution.

    :ivar kind: ``lognormal`` (median, sigma_log, min, max), ``uniform`` (min, max) or ``fixed`` (value).
    :ivar median: log-normal median, in the parameter's unit.
    :ivar sigma_log: log-normal standard deviation of the natural log.
    :ivar low: lower bound (``min``), in the parameter's unit.
    :ivar high: upper bound (``max``), in the parameter's unit.
    :ivar value: the fixed value, in the parameter's unit.
    :ivar source: citation keys or ASSUMPTION.
    """

    kind: str
    median: float = 0.0
    sigma_log: float = 0.0
    low: float = 0.0
    high: float = 0.0
    value: float = 0.0
    source: str = ""

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` draws, float64."""
        if self.kind == "fixed":
            return np.full(n, self.value)
        if self.kind == "uniform":
            return self.low + (self.high - self.low) * rng.random(n)
        return truncated_lognormal(rng, self.median, self.sigma_log, self.low, self.high, n)


def _lognormal(median: float, sigma_log: float, low: float, high: float, source: str) -> Distribution:
    return Distribution("lognormal", median=median, sigma_log=sigma_log, low=low, high=high, source=source)


_REF = PatientParameters()
#: The documented population distributions (citation keys of itb-clinical.md).
DOCUMENTED: dict[str, Distribution] = {
    # 22-157 mL and 13-80 mL/h read as 95 % ranges around the reference.
    "csf_volume_ml": _lognormal(_REF.csf_volume_ml, 0.50, 22.0, 157.0, "[CH-ODDB][§6]"),
    "csf_clearance_ml_per_h": _lognormal(_REF.csf_clearance_ml_per_h, 0.46, 13.0, 80.0, "[EJCP][GH-LBL-SUMMARY]"),
    "plasma_half_life_h": Distribution("uniform", low=3.0, high=4.0, source="[CH-ORAL]"),
    "oral_bioavailability": Distribution("uniform", low=0.74, high=1.0, source="[AGARWAL14][MIMS-BAC10]"),
    # Peak plasma 0.5-3 h after a tablet.
    "absorption_rate_per_h": _lognormal(_REF.absorption_rate_per_h, 0.6, 0.6, 6.0, "[MIMS-BAC10]"),
    # The steady-state spread 130-1240 ng/mL read as a 90 % range of the titrated level.
    "ec50_ng_per_ml": _lognormal(_REF.ec50_ng_per_ml, math.log(1240 / 130) / (2 * 1.6449), _REF.ec50_ng_per_ml / 8,
                                 _REF.ec50_ng_per_ml * 8, "[CH-ODDB][ARCH94]"),
    # Median: a 250 µg lumbar bolus; the sensitive tail reaches below 25 µg (lower bound 20 µg).
    "sedation_threshold_ng_per_ml": _lognormal(_REF.sedation_threshold_ng_per_ml, 0.99,
                                               _REF.sedation_threshold_ng_per_ml * 20 / 250,
                                               _REF.sedation_threshold_ng_per_ml * 10, "[DRUGLIB-OD][OD91] ASSUMPTION"),
}
#: Documented weight distribution of each origin, kg (ASSUMPTION: the reference gives none).
DOCUMENTED_WEIGHT: dict[Origin, Distribution] = {
    Origin.SPINAL: _lognormal(75.0, 0.2, 40.0, 150.0, "ASSUMPTION"),
    Origin.CEREBRAL: _lognormal(70.0, 0.2, 35.0, 150.0, "ASSUMPTION"),
    Origin.PAEDIATRIC: _lognormal(25.0, 0.35, 12.0, 70.0, "ASSUMPTION (Gablofen from age 4 [GAB-EMPR])"),
}


@dataclass(frozen=True)
class SampledPopulation:
    """Drawn patients: one origin and one value of every parameter each.

    :ivar origins: origin of each patient (``Origin`` values), shape (N,).
    :ivar parameters: every :class:`PatientParameters` field as a float64 array of shape (N,).
    """

    origins: np.ndarray
    parameters: dict[str, np.ndarray]

    @property
    def size(self) -> int:
        """Number of patients."""
        return len(self.origins)

    def patient(self, index: int) -> PatientParameters:
        """Patient ``index`` as a scalar :class:`PatientParameters`."""
        return PatientParameters(**{name: float(values[index]) for name, values in self.parameters.items()})


@dataclass(frozen=True)
class Population:
    """A population definition (see the module docstring for the file format).

    :ivar size: number of patients, 1 .. :data:`MAX_POPULATION`.
    :ivar seed: seed of the draws.
    :ivar origins: share of each origin (sums to 1).
    :ivar weights: weight distribution of each origin with a share, kg.
    :ivar distributions: distribution of each varied parameter; the others are the reference.
    """

    size: int
    seed: int
    origins: dict[Origin, float] = field(default_factory=lambda: {Origin.SPINAL: 0.5, Origin.CEREBRAL: 0.4,
                                                                   Origin.PAEDIATRIC: 0.1})
    weights: dict[Origin, Distribution] = field(default_factory=lambda: dict(DOCUMENTED_WEIGHT))
    distributions: dict[str, Distribution] = field(default_factory=lambda: dict(DOCUMENTED))

    def __post_init__(self) -> None:
        _check_int("population.size", self.size, 1, MAX_POPULATION)
        _check_int("population.seed", self.seed, 0, 2**63 - 1)

    def sample(self) -> SampledPopulation:
        """Draw the patients (deterministic for the seed)."""
        rng = np.random.default_rng(self.seed)
        kinds = list(self.origins)
        shares = np.array([self.origins[o] for o in kinds])
        picks = rng.choice(len(kinds), size=self.size, p=shares / shares.sum())
        origins = np.array([kinds[i].value for i in picks])
        params = {f: np.full(self.size, float(getattr(_REF, f))) for f in PARAMETER_LIMITS}
        params["weight_kg"] = np.empty(self.size)
        for i, origin in enumerate(kinds):
            chosen = picks == i
            params["weight_kg"][chosen] = self.weights[origin].sample(rng, int(chosen.sum()))
        for name in sorted(self.distributions):
            params[name] = self.distributions[name].sample(rng, self.size)
        return SampledPopulation(origins, params)


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ConfigError(name, value, f"an integer in [{low}, {high}]")
    return value


def _number(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ConfigError(name, fields.shown(value), f"a finite number in [{low:g}, {high:g}]")
    return float(value)


def _table(name: str, value: Any, allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(name, value, "a table")
    if allowed is not None:
        for key in value:
            if key not in allowed:
                raise ConfigError(f"{name}.{key}", value[key], f"a key of {name}: one of {list(allowed)}")
    return value


def parse_distribution(name: str, table: Any, limits: tuple[float, float]) -> Distribution:
    """One ``distribution`` table, checked against the parameter's hard ``limits``.

    :raises ConfigError: naming ``name.key`` for an unknown key, a missing key or a bad value.
    """
    t = _table(name, table)
    kind = t.get("distribution")
    if kind not in DISTRIBUTIONS:
        raise ConfigError(f"{name}.distribution", kind, f"one of {list(DISTRIBUTIONS)}")
    keys = {"lognormal": ("median", "sigma_log", "min", "max"), "uniform": ("min", "max"), "fixed": ("value",)}[kind]
    _table(name, t, ("distribution", *keys))
    for key in keys:
        if key not in t:
            raise ConfigError(f"{name}.{key}", None, f"required for a {kind} distribution")
    low, high = limits
    if kind == "fixed":
        return Distribution("fixed", value=_number(f"{name}.value", t["value"], low, high), source="population file")
    lo = _number(f"{name}.min", t["min"], low, high)
    hi = _number(f"{name}.max", t["max"], low, high)
    if not lo < hi:
        raise ConfigError(f"{name}.max", t["max"], f"> {name}.min ({lo:g})")
    if kind == "uniform":
        return Distribution("uniform", low=lo, high=hi, source="population file")
    if lo <= 0:
        raise ConfigError(f"{name}.min", t["min"], "> 0 for a log-normal distribution")
    median = _number(f"{name}.median", t["median"], lo, hi)
    sigma = _number(f"{name}.sigma_log", t["sigma_log"], 0.0, MAX_SIGMA_LOG)
    return Distribution("lognormal", median=median, sigma_log=sigma, low=lo, high=hi, source="population file")


def population_from_dict(doc: dict[str, Any]) -> Population:
    """A :class:`Population` from a parsed population file.

    :raises ConfigError: naming the field, for unknown keys, NaN, out-of-range or missing values.
    """
    _table("population file", doc, ("population", "origins", "weight_kg", "parameters"))
    head = _table("population", doc.get("population"), ("size", "seed"))
    for key in ("size", "seed"):
        if key not in head:
            raise ConfigError(f"population.{key}", None, "required")
    population = Population(size=head["size"], seed=head["seed"])
    if "origins" in doc:
        shares = _table("origins", doc["origins"], tuple(o.value for o in Origin))
        origins = {Origin(k): _number(f"origins.{k}", v, 0.0, 1.0) for k, v in shares.items()}
        if not origins or abs(sum(origins.values()) - 1.0) > 1e-9:
            raise ConfigError("origins", shares, "shares of spinal, cerebral, paediatric that sum to 1")
        population = replace(population, origins={o: s for o, s in origins.items() if s > 0})
    weights = dict(DOCUMENTED_WEIGHT)
    for origin, table in _table("weight_kg", doc.get("weight_kg", {}), tuple(o.value for o in Origin)).items():
        weights[Origin(origin)] = parse_distribution(f"weight_kg.{origin}", table, PARAMETER_LIMITS["weight_kg"])
    distributions = dict(DOCUMENTED)
    allowed = tuple(name for name in PARAMETER_LIMITS if name != "weight_kg")
    for name, table in _table("parameters", doc.get("parameters", {}), allowed).items():
        distributions[name] = parse_distribution(f"parameters.{name}", table, PARAMETER_LIMITS[name])
    return replace(population, weights=weights, distributions=distributions)


def parse_population(text: str | bytes, *, source: str = "<string>") -> Population:
    """Check population-file TOML, bounded by the field kit (:mod:`cython_ext.fields`).

    :param text: the file's text or bytes (strict UTF-8).
    :param source: where it came from, for messages.
    :raises ~cython_ext.fields.FileErrors: for a file too large, not UTF-8 or not TOML, a limit
        broken, or a bad field (named, with its line).
    """
    doc = fields.load_toml(text, document="population file", source=source)
    population = doc.run(population_from_dict, doc.root.raw)
    doc.finish()
    return population


def load_population(path: str | Path) -> Population:
    """Read and check a population file (TOML), as :func:`parse_population`.

    :param path: the file.
    :raises ~cython_ext.fields.FileErrors: for an unreadable file, or as :func:`parse_population`.
    """
    return parse_population(fields.read_file(path, document="population file"), source=str(path))
