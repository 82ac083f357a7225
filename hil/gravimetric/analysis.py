"""Gravimetric flow analysis after IEC 60601-2-24: flow series, start-up graph, trumpet curve.

A pure function (:func:`analyse`) of a weight series taken every ``S``
seconds. With W in µg, d in g/mL (= µg/nL) and S in seconds, the flow over
interval *i* is::

    Q_i [mL/h] = (W_i - W_{i-1}) / d / 1e6 [mL]  /  (S / 3600) [h]

which is the reference formula ``Q_i = 60 (W_i - W_{i-1}) / (S d)`` with W in g
and S in minutes. A balance adjusted with steel weights reads water about
0.1 % light (air buoyancy); ``air_buoyancy_correction`` multiplies every flow by
``(1 - rho_air/rho_weights) / (1 - rho_air/d)`` with rho_air = 0.0012 g/mL and
rho_weights = 8.0 g/mL (the ISO 8655-6 convention). It is off by default,
matching the reference formula and the simulator, which has no air. The trumpet curve uses the analysis period only (the second
hour of a 2 h run: by default the second half of the run). For an observation
window of P minutes, ``p = P*60/S`` flows and ``m = N - p + 1`` sliding
windows over the N flows of the period::

    E_p(max) = max_j (100/p) * sum_{i=j}^{j+p-1} (Q_i - r) / r      (min likewise)

and the overall mean error is ``A = 100 (Qbar - r) / r``, Qbar the mean flow
over the period. With S = 30 s and a 60 min period, P = 2, 5, 11, 19, 31 min
give p = 4, 10, 22, 38, 62 and m = 117, 111, 99, 83, 59.

The analysis refuses (:class:`InsufficientDataError`) rather than report a
number the data cannot support: too many unstable readings, missing samples,
a weight that went down without a marked refill, or a period too short for
the smallest window. A window containing a missing flow is left out; the
counts of windows used are reported.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from cython_ext.errors import ConfigError, ItbError
from cython_ext.fields import is_finite_number, is_int

#: Observation windows of the trumpet curve, minutes.
STANDARD_WINDOWS_MIN: tuple[int, ...] = (2, 5, 11, 19, 31)
#: Sampling interval of the standard method, s.
STANDARD_INTERVAL_S = 30
#: Duration of the standard run, s.
STANDARD_DURATION_S = 7200
MS_PER_S = 1000
S_PER_H = 3600
UG_PER_G = 1_000_000
NL_PER_ML = 1_000_000
#: Conventional densities for the air-buoyancy correction, g/mL.
AIR_DENSITY_G_PER_ML = 0.0012
WEIGHTS_DENSITY_G_PER_ML = 8.0


class RefusalReason(enum.Enum):
    """Why the data cannot support a result."""

    UNSTABLE_READINGS = "unstable_readings"
    MISSING_SAMPLES = "missing_samples"
    MASS_DECREASED = "mass_decreased"
    TOO_SHORT = "too_short"
    PUMP_NOT_DELIVERING = "pump_not_delivering"


class InsufficientDataError(ItbError):
    """The weight series cannot support an accuracy result; no number is reported.

    :param reason: the machine-readable reason.
    :param detail: what was found, with the limit that was exceeded.
    """

    def __init__(self, reason: RefusalReason, detail: str) -> None:
        super().__init__(f"accuracy result refused ({reason.value}): {detail}", error_code=f"GRAVIMETRIC_{reason.name}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class WeightSample:
    """One scheduled balance reading.

    :ivar elapsed_ms: scheduled time of the sample from the start of sampling, ms.
    :ivar mass_ug: the reading, µg, or None when the sample is missing.
    :ivar stable: the balance's stability flag.
    :ivar refill: the beaker was emptied or exchanged just before this sample:
        the flow ending here is not computed and a decrease is allowed.
    """

    elapsed_ms: int
    mass_ug: int | None
    stable: bool = True
    refill: bool = False


@dataclass(frozen=True, kw_only=True)
class AnalysisOptions:
    """The analysis choices a run makes besides its rate, interval and water; shared by
    :class:`AnalysisSettings` and the procedure's ``AccuracyConfig`` (one set of defaults).

    :ivar windows_min: trumpet observation windows, whole minutes, each a multiple of S.
    :ivar analysis_start_s: start of the analysis period from the first sample, s,
        a multiple of S; None means the second half of the run.
    :ivar max_unstable_fraction: largest share of present samples flagged unstable.
    :ivar max_missing_fraction: largest share of samples missing.
    :ivar backwards_tolerance_ug: a drop larger than this between samples refuses the run, µg.
    :ivar evaporation_ug_per_h: measured evaporation (blank run), added back to every reading, µg/h.
    :ivar air_buoyancy_correction: correct the balance readings for air buoyancy (see the module docstring).
    """

    windows_min: tuple[int, ...] = STANDARD_WINDOWS_MIN
    analysis_start_s: int | None = None
    max_unstable_fraction: float = 0.2
    max_missing_fraction: float = 0.0
    backwards_tolerance_ug: int = 100
    evaporation_ug_per_h: float = 0.0
    air_buoyancy_correction: bool = False

    def analysis_options(self) -> dict[str, Any]:
        """These options as keywords (``windows_min`` as a tuple), to build an :class:`AnalysisSettings`."""
        values = {f.name: getattr(self, f.name) for f in fields(AnalysisOptions)}
        values["windows_min"] = tuple(self.windows_min)
        return values


@dataclass(frozen=True, kw_only=True)
class AnalysisSettings(AnalysisOptions):
    """What the analysis needs besides the weights; checked when built (keywords only).

    :ivar rate_nl_per_h: the set rate r, nL/h (> 0).
    :ivar interval_s: sampling interval S, whole seconds (> 0).
    :ivar density_g_per_ml: water density d, g/mL.

    and the :class:`AnalysisOptions`.
    """

    rate_nl_per_h: int
    interval_s: int = STANDARD_INTERVAL_S
    density_g_per_ml: float = 0.998207

    def __post_init__(self) -> None:
        if not is_int(self.rate_nl_per_h) or self.rate_nl_per_h <= 0:
            raise ConfigError("rate_nl_per_h", self.rate_nl_per_h, "an integer > 0 nL/h")
        if not is_int(self.interval_s) or self.interval_s <= 0:
            raise ConfigError("interval_s", self.interval_s, "an integer > 0 s")
        if not is_finite_number(self.density_g_per_ml) or not 0.9 <= self.density_g_per_ml <= 1.1:
            raise ConfigError("density_g_per_ml", self.density_g_per_ml, "in [0.9, 1.1] g/mL")
        if not self.windows_min:
            raise ConfigError("windows_min", self.windows_min, "at least one window")
        for window in self.windows_min:
            if not is_int(window) or window <= 0 or (window * 60) % self.interval_s:
                raise ConfigError(
                    "windows_min", self.windows_min, f"whole minutes > 0, each a multiple of {self.interval_s} s"
                )
        if self.analysis_start_s is not None and (
            not is_int(self.analysis_start_s) or self.analysis_start_s < 0 or self.analysis_start_s % self.interval_s
        ):
            raise ConfigError(
                "analysis_start_s", self.analysis_start_s, f"an integer >= 0 s, a multiple of {self.interval_s} s"
            )
        for name in ("max_unstable_fraction", "max_missing_fraction"):
            value = getattr(self, name)
            if not is_finite_number(value) or not 0 <= value <= 1:
                raise ConfigError(name, value, "in [0, 1]")
        if not is_int(self.backwards_tolerance_ug) or self.backwards_tolerance_ug < 0:
            raise ConfigError("backwards_tolerance_ug", self.backwards_tolerance_ug, "an integer >= 0 µg")
        if not is_finite_number(self.evaporation_ug_per_h) or self.evaporation_ug_per_h < 0:
            raise ConfigError("evaporation_ug_per_h", self.evaporation_ug_per_h, "a finite number >= 0 µg/h")
        if not isinstance(self.air_buoyancy_correction, bool):
            raise ConfigError("air_buoyancy_correction", self.air_buoyancy_correction, "true or false")

    @property
    def buoyancy_factor(self) -> float:
        """Multiplier applied to every flow: 1.0 without the air-buoyancy correction."""
        if not self.air_buoyancy_correction:
            return 1.0
        return (1 - AIR_DENSITY_G_PER_ML / WEIGHTS_DENSITY_G_PER_ML) / (1 - AIR_DENSITY_G_PER_ML / self.density_g_per_ml)

    @property
    def rate_ml_per_h(self) -> float:
        """The set rate r, mL/h."""
        return self.rate_nl_per_h / NL_PER_ML


@dataclass(frozen=True)
class FlowPoint:
    """Flow over one interval, ending at ``elapsed_s``; None when a sample is missing."""

    elapsed_s: float
    flow_ml_per_h: float | None


@dataclass(frozen=True)
class TrumpetPoint:
    """Extreme errors over one observation window length.

    :ivar window_min: observation window P, min.
    :ivar p: flows per window.
    :ivar m: sliding windows in the period (``N - p + 1``).
    :ivar windows_used: windows without a missing flow (== m for complete data).
    :ivar max_error_pct: largest mean error over a window, %.
    :ivar min_error_pct: smallest mean error over a window, %.
    """

    window_min: int
    p: int
    m: int
    windows_used: int
    max_error_pct: float
    min_error_pct: float


@dataclass(frozen=True)
class AccuracyAnalysis:
    """The result of :func:`analyse`.

    :ivar settings: the settings used.
    :ivar flows: flow per interval over the whole run (the start-up graph).
    :ivar analysis_start_s: start of the analysis period, s from the first sample.
    :ivar analysis_flows: flows in the analysis period.
    :ivar trumpet: one point per computable window (windows longer than the period are omitted).
    :ivar omitted_windows_min: windows that could not be computed.
    :ivar mean_flow_ml_per_h: Qbar over the period, mL/h.
    :ivar mean_error_pct: A, the overall mean error, %.
    :ivar samples: samples in the series.
    :ivar missing_samples: samples without a reading.
    :ivar unstable_samples: present samples flagged unstable.
    """

    settings: AnalysisSettings
    flows: tuple[FlowPoint, ...]
    analysis_start_s: int
    analysis_flows: tuple[FlowPoint, ...]
    trumpet: tuple[TrumpetPoint, ...]
    omitted_windows_min: tuple[int, ...]
    mean_flow_ml_per_h: float
    mean_error_pct: float
    samples: int
    missing_samples: int
    unstable_samples: int
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (the flow series is left to the CSV)."""
        return {
            "rate_nl_per_h": self.settings.rate_nl_per_h,
            "rate_ml_per_h": self.settings.rate_ml_per_h,
            "interval_s": self.settings.interval_s,
            "density_g_per_ml": self.settings.density_g_per_ml,
            "evaporation_ug_per_h": self.settings.evaporation_ug_per_h,
            "air_buoyancy_correction": self.settings.air_buoyancy_correction,
            "analysis_start_s": self.analysis_start_s,
            "analysis_flows": len(self.analysis_flows),
            "mean_flow_ml_per_h": self.mean_flow_ml_per_h,
            "mean_error_pct": self.mean_error_pct,
            "trumpet": [asdict(point) for point in self.trumpet],
            "omitted_windows_min": list(self.omitted_windows_min),
            "samples": self.samples,
            "missing_samples": self.missing_samples,
            "unstable_samples": self.unstable_samples,
            "notes": list(self.notes),
        }


def analyse(samples: Sequence[WeightSample], settings: AnalysisSettings) -> AccuracyAnalysis:
    """Compute the flow series, trumpet curve and mean error of a weight series.

    :param samples: readings in order; sample *k* must be scheduled at ``k * S``.
    :param settings: rate, interval, density, windows and refusal limits.
    :raises ConfigError: the samples are not on the ``k * S`` schedule.
    :raises InsufficientDataError: the data cannot support a result (see the module docstring).
    :return: the analysis.
    """
    interval_ms = settings.interval_s * MS_PER_S
    for index, sample in enumerate(samples):
        if sample.elapsed_ms != index * interval_ms:
            raise ConfigError(
                f"samples[{index}].elapsed_ms", sample.elapsed_ms, f"{index * interval_ms} ms (index x interval)"
            )
    total = len(samples)
    if total < 2:
        raise InsufficientDataError(RefusalReason.TOO_SHORT, f"{total} sample(s); at least 2 are needed")
    if settings.analysis_start_s is None:
        start_index = (total - 1) // 2
    else:
        start_index = settings.analysis_start_s // settings.interval_s
    period_flows = max(0, total - 1 - start_index)
    smallest_p = min(settings.windows_min) * 60 // settings.interval_s
    if period_flows < smallest_p:
        raise InsufficientDataError(
            RefusalReason.TOO_SHORT,
            f"the analysis period holds {period_flows} flows (run {(total - 1) * settings.interval_s} s, period "
            f"from {start_index * settings.interval_s} s); the {min(settings.windows_min)} min window needs {smallest_p}",
        )
    present = [s for s in samples if s.mass_ug is not None]
    missing = total - len(present)
    unstable = sum(1 for s in present if not s.stable)
    if missing > settings.max_missing_fraction * total:
        raise InsufficientDataError(
            RefusalReason.MISSING_SAMPLES,
            f"{missing} of {total} samples missing; at most {settings.max_missing_fraction:.0%} allowed",
        )
    if present and unstable > settings.max_unstable_fraction * len(present):
        raise InsufficientDataError(
            RefusalReason.UNSTABLE_READINGS,
            f"{unstable} of {len(present)} readings unstable; at most {settings.max_unstable_fraction:.0%} allowed",
        )

    evaporation_ug_per_ms = settings.evaporation_ug_per_h / (S_PER_H * MS_PER_S)
    corrected = [
        None if s.mass_ug is None else s.mass_ug + evaporation_ug_per_ms * s.elapsed_ms for s in samples
    ]
    interval_h = settings.interval_s / S_PER_H
    flows: list[FlowPoint] = []
    for i in range(1, total):
        before, after = corrected[i - 1], corrected[i]
        elapsed_s = samples[i].elapsed_ms / MS_PER_S
        if before is None or after is None or samples[i].refill:
            flows.append(FlowPoint(elapsed_s, None))
            continue
        raw_drop_ug = samples[i - 1].mass_ug - samples[i].mass_ug  # type: ignore[operator]
        if raw_drop_ug > settings.backwards_tolerance_ug:
            raise InsufficientDataError(
                RefusalReason.MASS_DECREASED,
                f"the weight fell by {raw_drop_ug} µg between {samples[i - 1].elapsed_ms / MS_PER_S:g} s and "
                f"{elapsed_s:g} s without a refill mark; tolerance {settings.backwards_tolerance_ug} µg",
            )
        volume_ml = (after - before) * settings.buoyancy_factor / settings.density_g_per_ml / UG_PER_G
        flows.append(FlowPoint(elapsed_s, volume_ml / interval_h))

    analysis_flows = tuple(flows[start_index:])
    rate = settings.rate_ml_per_h
    errors = [None if f.flow_ml_per_h is None else (f.flow_ml_per_h - rate) / rate for f in analysis_flows]
    known = [e for e in errors if e is not None]
    if not known:
        raise InsufficientDataError(RefusalReason.MISSING_SAMPLES, "no complete interval in the analysis period")
    trumpet: list[TrumpetPoint] = []
    omitted: list[int] = []
    count = len(errors)
    for window in settings.windows_min:
        p = window * 60 // settings.interval_s
        m = count - p + 1
        if m < 1:
            omitted.append(window)
            continue
        window_errors = []
        for j in range(m):
            chunk = errors[j : j + p]
            if any(e is None for e in chunk):
                continue
            window_errors.append(100.0 / p * math.fsum(chunk))  # type: ignore[arg-type]
        if not window_errors:
            omitted.append(window)
            continue
        trumpet.append(TrumpetPoint(window, p, m, len(window_errors), max(window_errors), min(window_errors)))
    mean_flow = math.fsum(f.flow_ml_per_h for f in analysis_flows if f.flow_ml_per_h is not None) / len(known)
    notes = []
    if len(known) < len(errors):
        notes.append(f"{len(errors) - len(known)} interval(s) in the analysis period have no flow (missing or refill)")
    if omitted:
        notes.append(f"windows {omitted} min omitted: longer than the analysis period or never complete")
    return AccuracyAnalysis(
        settings=settings,
        flows=tuple(flows),
        analysis_start_s=start_index * settings.interval_s,
        analysis_flows=analysis_flows,
        trumpet=tuple(trumpet),
        omitted_windows_min=tuple(omitted),
        mean_flow_ml_per_h=mean_flow,
        mean_error_pct=100.0 * (mean_flow - rate) / rate,
        samples=total,
        missing_samples=missing,
        unstable_samples=unstable,
        notes=tuple(notes),
    )
