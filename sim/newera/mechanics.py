"""Syringe-pump mechanics: plunger travel, syringe contents and delivered volume.

Motion is piecewise constant: a commanded rate (nL/h) and direction hold
until the firmware changes them. Volume is integrated *exactly* and lazily:
moved volume is kept in "nL*ns/h" units (nL scaled by ``NS_PER_H``), so
``rate_nl_per_h * dt_ns`` adds without rounding and no sampling pattern can
change the result.

Two volumes are tracked:

* the **commanded** volume, what the pump's own counter reports (``DIS``);
* the **actual** volume (:meth:`Mechanics.actual_delivered_nl`), what leaves
  the syringe and what a balance weighs: commanded volume times
  ``(1 + bias_pct/100)``, times a seeded noise factor that is constant over
  each ``noise_chunk_nl`` of commanded travel. Because the noise is a function
  of the commanded volume, not of when it is read, the same run gives the same
  actual volume whatever the read pattern.

Mechanics does not decide events (target volume, end of travel, occlusion):
the firmware (:class:`sim.newera.firmware.Ne1000`) asks for event times with
:meth:`Mechanics.time_to_move_ns` and integrates up to them first.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Callable

from hal.clock import Clock
from cython_ext.errors import ConfigError

NS_PER_H = 3_600_000_000_000
NL_PER_ML = 1_000_000

#: Direction of motion as a sign: +1 infuse (contents leave), -1 withdraw, 0 still.
INFUSE = 1
WITHDRAW = -1
STILL = 0


class Mechanics:
    """The plunger of one syringe in one pump.

    :param clock: the device clock; time is read only through the firmware.
    :param syringe_volume_nl: syringe capacity, nL (> 0).
    :param fill_nl: contents at start, nL (0 to capacity; default full).
    :param bias_pct: systematic delivery error, percent (-50 to 50): +2 delivers 2 % more.
    :param noise_pct: standard deviation of the per-chunk delivery error, percent (0 to 20).
    :param noise_chunk_nl: commanded volume over which one noise draw holds, nL (> 0).
    :param dose_step_nl: volume of one motor step, nL (0: continuous flow). With steps the
        liquid leaves in whole steps, so a balance sees pulsatile flow at low rates.
    :param seed: seed of the noise generator.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        syringe_volume_nl: int,
        fill_nl: int | None = None,
        bias_pct: float = 0.0,
        noise_pct: float = 0.0,
        noise_chunk_nl: int = 1000,
        dose_step_nl: int = 0,
        seed: int = 0,
    ) -> None:
        if not isinstance(syringe_volume_nl, int) or syringe_volume_nl <= 0:
            raise ConfigError("syringe_volume_nl", syringe_volume_nl, "an int > 0 nL")
        fill = syringe_volume_nl if fill_nl is None else fill_nl
        if not isinstance(fill, int) or not 0 <= fill <= syringe_volume_nl:
            raise ConfigError("fill_nl", fill_nl, f"an int in [0, {syringe_volume_nl}] nL")
        if not -50.0 <= bias_pct <= 50.0:
            raise ConfigError("bias_pct", bias_pct, "in [-50, 50] %")
        if not 0.0 <= noise_pct <= 20.0:
            raise ConfigError("noise_pct", noise_pct, "in [0, 20] %")
        if not isinstance(dose_step_nl, int) or dose_step_nl < 0:
            raise ConfigError("dose_step_nl", dose_step_nl, "an int >= 0 nL (0: continuous)")
        if not isinstance(noise_chunk_nl, int) or noise_chunk_nl <= 0:
            raise ConfigError("noise_chunk_nl", noise_chunk_nl, "an int > 0 nL")
        self._clock = clock
        self.syringe_volume_nl = syringe_volume_nl
        self.bias_pct = bias_pct
        self.noise_pct = noise_pct
        self.noise_chunk_nl = noise_chunk_nl
        self.dose_step_nl = dose_step_nl
        self._rng = random.Random(seed)
        self._chunk_factors: list[float] = []
        self._chunk_cumulative: list[float] = [0.0]
        self._t_ns = clock.monotonic_ns()
        self.rate_nl_per_h = 0
        self.direction = STILL
        # Scaled totals (nL * NS_PER_H): commanded motion since creation.
        self._infused_scaled = 0
        self._withdrawn_scaled = 0
        self._contents_scaled = fill * NS_PER_H
        #: Called before reading volumes so the firmware can process due events first.
        self.sync: Callable[[], None] = lambda: None
        #: Guards reads from other threads (a balance); the firmware shares its own lock here.
        self.lock: threading.RLock = threading.RLock()

    # -- time -----------------------------------------------------------------------------
    @property
    def time_ns(self) -> int:
        """Device-clock time up to which motion has been integrated, ns."""
        return self._t_ns

    def integrate_to(self, t_ns: int) -> None:
        """Integrate the current motion up to ``t_ns`` (never backwards)."""
        dt = t_ns - self._t_ns
        if dt <= 0:
            return
        moved = self.rate_nl_per_h * dt if self.direction != STILL else 0
        if self.direction == INFUSE:
            self._infused_scaled += moved
            self._contents_scaled -= moved
        elif self.direction == WITHDRAW:
            self._withdrawn_scaled += moved
            self._contents_scaled += moved
        self._t_ns = t_ns

    def set_motion(self, rate_nl_per_h: int, direction: int) -> None:
        """Change motion from the integrated time on (integrate first)."""
        if direction == STILL or rate_nl_per_h <= 0:
            self.rate_nl_per_h, self.direction = 0, STILL
        else:
            self.rate_nl_per_h, self.direction = rate_nl_per_h, direction

    def stop(self) -> None:
        """Stop the plunger."""
        self.set_motion(0, STILL)

    @property
    def moving(self) -> bool:
        """True while the plunger moves."""
        return self.direction != STILL

    def time_to_move_ns(self, volume_scaled: int) -> int | None:
        """Nanoseconds of the current motion needed to move ``volume_scaled`` more (ceiling).

        :return: None when still.
        """
        if not self.moving:
            return None
        if volume_scaled <= 0:
            return 0
        return -(-volume_scaled // self.rate_nl_per_h)

    def travel_left_scaled(self) -> int | None:
        """Scaled volume left before the end of travel in the current direction, or None when still."""
        if self.direction == INFUSE:
            return self._contents_scaled
        if self.direction == WITHDRAW:
            return self.syringe_volume_nl * NS_PER_H - self._contents_scaled
        return None

    # -- volumes --------------------------------------------------------------------------
    @property
    def infused_scaled(self) -> int:
        """Commanded infused volume since creation, nL * NS_PER_H."""
        return self._infused_scaled

    @property
    def withdrawn_scaled(self) -> int:
        """Commanded withdrawn volume since creation, nL * NS_PER_H."""
        return self._withdrawn_scaled

    def contents_nl(self) -> int:
        """Syringe contents now (commanded travel), whole nL, rounded down."""
        self.sync()
        return self._contents_scaled // NS_PER_H

    def commanded_infused_nl(self) -> int:
        """Commanded infused volume since creation, whole nL (rounded down)."""
        self.sync()
        return self._infused_scaled // NS_PER_H

    def commanded_withdrawn_nl(self) -> int:
        """Commanded withdrawn volume since creation, whole nL (rounded down)."""
        self.sync()
        return self._withdrawn_scaled // NS_PER_H

    def actual_delivered_nl(self) -> int:
        """Physical net volume pushed out of the syringe so far, nL (bias and noise applied).

        This is what a balance under the outlet weighs (withdrawal takes liquid back).
        Safe to call from another thread.
        """
        with self.lock:
            return self._actual_delivered_nl()

    def _actual_delivered_nl(self) -> int:
        self.sync()
        gain = 1.0 + self.bias_pct / 100.0
        infused_nl = self._stepped(self._infused_scaled)
        withdrawn_nl = self._stepped(self._withdrawn_scaled)
        return round(self._actual_infused(infused_nl) * gain - withdrawn_nl * gain)

    def _stepped(self, moved_scaled: int) -> float:
        """Commanded travel, nL, rounded down to whole motor steps when steps are modelled."""
        if self.dose_step_nl == 0:
            return moved_scaled / NS_PER_H
        step_scaled = self.dose_step_nl * NS_PER_H
        return float(moved_scaled // step_scaled * self.dose_step_nl)

    def _actual_infused(self, commanded_nl: float) -> float:
        if self.noise_pct == 0.0:
            return commanded_nl
        chunk = self.noise_chunk_nl
        full = int(commanded_nl // chunk)
        self._extend_chunks(full + 1)
        partial = commanded_nl - full * chunk
        return self._chunk_cumulative[full] + partial * self._chunk_factors[full]

    def _extend_chunks(self, count: int) -> None:
        sigma = self.noise_pct / 100.0
        while len(self._chunk_factors) < count:
            # A factor stays positive: the plunger never sucks back while infusing.
            factor = max(0.0, 1.0 + self._rng.gauss(0.0, sigma))
            self._chunk_factors.append(factor)
            self._chunk_cumulative.append(self._chunk_cumulative[-1] + factor * self.noise_chunk_nl)

    def plunger_travel_mm(self, diameter_mm: float) -> float:
        """Plunger travel from the full mark for a syringe of ``diameter_mm``, mm."""
        area_mm2 = math.pi * (diameter_mm / 2.0) ** 2
        emptied_nl = self.syringe_volume_nl - self._contents_scaled / NS_PER_H
        return emptied_nl / 1000.0 / area_mm2  # 1 uL = 1 mm^3

    def refill(self, fill_nl: int) -> None:
        """Replace the syringe contents (a syringe change), nL."""
        if not isinstance(fill_nl, int) or not 0 <= fill_nl <= self.syringe_volume_nl:
            raise ConfigError("fill_nl", fill_nl, f"an int in [0, {self.syringe_volume_nl}] nL")
        self._contents_scaled = fill_nl * NS_PER_H
