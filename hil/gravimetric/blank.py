"""The no-flow blank run: how fast the beaker on the pan loses (or gains) weight with the pump idle.

Set up exactly as for an accuracy run (beaker, oil film, cannula under the
surface), but deliver nothing. The least-squares slope of the weight against
time is the rate to put in the bench profile as ``[water]
evaporation_ug_per_h`` (the loss is minus the slope). The fit is a pure
function (:func:`fit_blank`); :func:`run_blank` samples a balance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hal.balance import open_balance
from hal.clock import NS_PER_S, Clock, SystemClock
from cython_ext.errors import CommunicationError, ConfigError, DeviceError
from hil.gravimetric.analysis import InsufficientDataError, RefusalReason, WeightSample

S_PER_H = 3600
MS_PER_S = 1000


@dataclass(frozen=True)
class BlankResult:
    """The straight line through a blank run.

    :ivar slope_ug_per_h: change of the reading per hour, µg/h (negative: losing weight).
    :ivar loss_ug_per_h: minus the slope: the evaporation rate to correct for, µg/h.
    :ivar residual_sd_ug: standard deviation of the readings about the line, µg.
    :ivar samples: readings used.
    :ivar duration_s: time from the first to the last reading used, s.
    """

    slope_ug_per_h: float
    loss_ug_per_h: float
    residual_sd_ug: float
    samples: int
    duration_s: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "slope_ug_per_h": self.slope_ug_per_h,
            "loss_ug_per_h": self.loss_ug_per_h,
            "residual_sd_ug": self.residual_sd_ug,
            "samples": self.samples,
            "duration_s": self.duration_s,
        }


def fit_blank(samples: Sequence[WeightSample], *, min_samples: int = 3) -> BlankResult:
    """Least-squares line through the present readings of a blank run.

    :param samples: readings (missing ones are skipped).
    :param min_samples: fewest readings that make a fit (>= 3).
    :raises ConfigError: ``min_samples`` below 3.
    :raises InsufficientDataError: fewer readings than ``min_samples``, or all at one time.
    """
    if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 3:
        raise ConfigError("min_samples", min_samples, "an integer >= 3")
    points = [(s.elapsed_ms / MS_PER_S, float(s.mass_ug)) for s in samples if s.mass_ug is not None]
    if len(points) < min_samples:
        raise InsufficientDataError(
            RefusalReason.TOO_SHORT, f"{len(points)} readings in the blank run; at least {min_samples} are needed"
        )
    count = len(points)
    mean_t = math.fsum(t for t, _ in points) / count
    mean_m = math.fsum(m for _, m in points) / count
    sxx = math.fsum((t - mean_t) ** 2 for t, _ in points)
    if sxx == 0:
        raise InsufficientDataError(RefusalReason.TOO_SHORT, "all blank readings were taken at the same time")
    slope_ug_per_s = math.fsum((t - mean_t) * (m - mean_m) for t, m in points) / sxx
    residuals = [m - (mean_m + slope_ug_per_s * (t - mean_t)) for t, m in points]
    residual_sd = math.sqrt(math.fsum(r * r for r in residuals) / (count - 2))
    slope_ug_per_h = slope_ug_per_s * S_PER_H
    return BlankResult(
        slope_ug_per_h=slope_ug_per_h,
        loss_ug_per_h=-slope_ug_per_h,
        residual_sd_ug=residual_sd,
        samples=count,
        duration_s=points[-1][0] - points[0][0],
    )


def run_blank(
    balance_url: str,
    *,
    duration_s: int,
    interval_s: int = 30,
    balance_driver: str = "mtsics",
    balance_options: dict[str, Any] | None = None,
    clock: Clock | None = None,
) -> BlankResult:
    """Sample a balance every ``interval_s`` for ``duration_s`` with nothing delivered, and fit the drift.

    A reading that fails is skipped (and not counted).

    :param balance_url: serial URL of the balance.
    :param duration_s: length of the blank run, whole seconds (> 0, a multiple of ``interval_s``).
    :param interval_s: sampling interval, whole seconds (> 0).
    :param balance_driver: ``"mtsics"`` or ``"sbi"``.
    :param balance_options: extra keywords for :func:`hal.balance.open_balance`.
    :param clock: the clock (system clock by default; a VirtualClock for a simulated balance).
    :raises ConfigError: bad duration or interval (nothing is opened).
    :raises InsufficientDataError: too few readings to fit.
    """
    if isinstance(interval_s, bool) or not isinstance(interval_s, int) or interval_s <= 0:
        raise ConfigError("interval_s", interval_s, "an integer > 0 s")
    if isinstance(duration_s, bool) or not isinstance(duration_s, int) or duration_s <= 0 or duration_s % interval_s:
        raise ConfigError("duration_s", duration_s, f"an integer > 0 s, a multiple of {interval_s} s")
    clock = clock or SystemClock()
    samples: list[WeightSample] = []
    with open_balance(balance_driver, balance_url, clock=clock, **(balance_options or {})) as balance:
        origin_ns = clock.monotonic_ns()
        for index in range(duration_s // interval_s + 1):
            slot_ns = origin_ns + index * interval_s * NS_PER_S
            wait_ns = slot_ns - clock.monotonic_ns()
            if wait_ns > 0:
                clock.sleep(wait_ns / NS_PER_S)
            try:
                reading = balance.read_immediate()
            except (CommunicationError, DeviceError):
                continue
            samples.append(WeightSample(index * interval_s * MS_PER_S, reading.mass_ug, reading.stable))
    return fit_blank(samples)
