"""The physics of a simulated weighing pan, shared by the MT-SICS and SBI emulators.

The pan holds a beaker (``initial_load_ug``) into which a simulated pump
delivers water. The gross mass at virtual time *t* is::

    gross = initial_load + delivered_nl() * density(temperature) * buoyancy
            - evaporation_ug_per_h * t_h + drift_ug_per_h * t_h + scripted steps

and a displayed reading is ``gross - zero - tare + noise``, rounded to the
readability ``resolution_ug`` (that rounding is the balance's display, as on
the real device). Density in g/mL equals µg/nL, so nanolitres become
micrograms with no other factor. ``buoyancy`` is what air does to a balance
adjusted with weights of density rho_w: water of density d indicates
``(1 - rho_air/d) / (1 - rho_air/rho_w)`` of its mass (1 without air, the default).

Stability: the pan is *moving* when the reading changed faster than
``stability_band_ug`` per ``settling_s`` between the last two observations,
or within ``settling_s`` of a scripted disturbance, zero, tare or load step.
While moving, readings are flagged dynamic (``S D`` / no unit) and commands
that need a stable weight are not executable.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, fields

from hal.balance import MASS_UNIT_UG, water_density_g_per_ml
from hal.clock import NS_PER_S, Clock
from cython_ext.errors import ConfigError
from cython_ext.fields import is_finite_number, is_int

NS_PER_H = 3600 * NS_PER_S


@dataclass(frozen=True)
class PanSettings:
    """Physical settings of a simulated balance, validated when built.

    :ivar temperature_c: water temperature, °C (sets the density).
    :ivar resolution_ug: readability (value of the last digit), µg; a power of ten.
    :ivar noise_ug: standard deviation of Gaussian reading noise, µg.
    :ivar drift_ug_per_h: linear drift of the reading, µg/h (either sign).
    :ivar evaporation_ug_per_h: water lost from the beaker, µg/h (>= 0).
    :ivar settling_s: time a reading needs to settle after a disturbance, s.
    :ivar stability_band_ug: largest change per ``settling_s`` still flagged stable, µg.
    :ivar initial_load_ug: the beaker and its water above the zero point at start, µg.
    :ivar capacity_ug: the weighing capacity; above it the balance reports overload, µg.
    :ivar disturbances_s: scripted disturbances as ``(start_s, duration_s)`` pairs (virtual time from creation).
    :ivar air_density_g_per_ml: density of the air around the pan, g/mL (0: no air, no buoyancy).
    :ivar weights_density_g_per_ml: density of the weights the balance was adjusted with, g/mL.
    """

    temperature_c: float = 20.0
    resolution_ug: int = 10
    noise_ug: float = 0.0
    drift_ug_per_h: float = 0.0
    evaporation_ug_per_h: float = 0.0
    settling_s: float = 2.0
    stability_band_ug: int = 1000
    initial_load_ug: int = 0
    capacity_ug: int = 220_000_000
    disturbances_s: tuple[tuple[float, float], ...] = ()
    air_density_g_per_ml: float = 0.0
    weights_density_g_per_ml: float = 8.0

    def __post_init__(self) -> None:
        water_density_g_per_ml(self.temperature_c)
        if not is_finite_number(self.air_density_g_per_ml) or not 0 <= self.air_density_g_per_ml <= 0.01:
            raise ConfigError("air_density_g_per_ml", self.air_density_g_per_ml, "in [0, 0.01] g/mL")
        if not is_finite_number(self.weights_density_g_per_ml) or not 1 <= self.weights_density_g_per_ml <= 25:
            raise ConfigError("weights_density_g_per_ml", self.weights_density_g_per_ml, "in [1, 25] g/mL")
        if not is_int(self.resolution_ug) or self.resolution_ug < 1 or not _power_of_ten(self.resolution_ug):
            raise ConfigError("resolution_ug", self.resolution_ug, "a power of ten >= 1 µg (1, 10, 100...)")
        for name in ("noise_ug", "evaporation_ug_per_h", "settling_s"):
            value = getattr(self, name)
            if not is_finite_number(value) or value < 0:
                raise ConfigError(name, value, "a finite number >= 0")
        if not is_finite_number(self.drift_ug_per_h):
            raise ConfigError("drift_ug_per_h", self.drift_ug_per_h, "a finite number")
        if not is_int(self.stability_band_ug) or self.stability_band_ug < 0:
            raise ConfigError("stability_band_ug", self.stability_band_ug, "an integer >= 0 µg")
        if not is_int(self.capacity_ug) or self.capacity_ug < 1:
            raise ConfigError("capacity_ug", self.capacity_ug, "an integer >= 1 µg")
        if not is_int(self.initial_load_ug) or not 0 <= self.initial_load_ug <= self.capacity_ug:
            raise ConfigError("initial_load_ug", self.initial_load_ug, f"an integer in [0, {self.capacity_ug}] µg")
        for index, pair in enumerate(self.disturbances_s):
            if (
                not isinstance(pair, tuple)
                or len(pair) != 2
                or not all(is_finite_number(v) and v >= 0 for v in pair)
            ):
                raise ConfigError(f"disturbances_s[{index}]", pair, "a (start_s, duration_s) pair of numbers >= 0")

    @classmethod
    def from_options(cls, options: dict[str, object]) -> PanSettings:
        """Build settings from keyword options, rejecting unknown names.

        :raises ConfigError: an unknown option or a bad value.
        """
        known = {f.name for f in fields(cls)}
        for name in options:
            if name not in known:
                raise ConfigError(name, options[name], f"a known balance option ({', '.join(sorted(known))})")
        values = dict(options)
        if "disturbances_s" in values:
            pairs = values["disturbances_s"]
            if not isinstance(pairs, (list, tuple)):
                raise ConfigError("disturbances_s", pairs, "a list of (start_s, duration_s) pairs")
            values["disturbances_s"] = tuple(
                tuple(pair) if isinstance(pair, (list, tuple)) else pair for pair in pairs
            )
        return cls(**values)  # type: ignore[arg-type]


def _power_of_ten(value: int) -> bool:
    while value % 10 == 0:
        value //= 10
    return value == 1


def display_decimals(unit: str, resolution_ug: int) -> int:
    """Decimals a balance shows in ``unit`` when its last digit is worth ``resolution_ug`` µg.

    :raises ConfigError: ``unit`` is not one a balance displays (g, mg, kg), or the
        readability is coarser than 1 ``unit``.
    """
    scale_ug = MASS_UNIT_UG.get(unit)
    if scale_ug is None or unit in ("ug", "µg"):
        raise ConfigError("unit", unit, "one of 'g', 'mg', 'kg'")
    if scale_ug % resolution_ug:
        raise ConfigError("resolution_ug", resolution_ug, f"at most 1 {unit}")
    return len(str(scale_ug // resolution_ug)) - 1


@dataclass(frozen=True)
class PanReading:
    """What the display shows now: ``net_ug`` rounded to the resolution, and the range state."""

    net_ug: int
    stable: bool
    overload: bool
    underload: bool


class Pan:
    """The weighing pan of one simulated balance.

    :param clock: the device clock (virtual in tests).
    :param delivered_nl: returns the volume delivered into the beaker so far, nL.
    :param settings: physical settings.
    :param seed: seed of the reading noise.
    """

    def __init__(
        self,
        clock: Clock,
        delivered_nl: Callable[[], int],
        settings: PanSettings | None = None,
        *,
        seed: int = 0,
    ) -> None:
        self.clock = clock
        self.settings = settings or PanSettings()
        self._delivered_nl = delivered_nl
        self._density_g_per_ml = water_density_g_per_ml(self.settings.temperature_c)
        air = self.settings.air_density_g_per_ml
        self._buoyancy = (1 - air / self._density_g_per_ml) / (1 - air / self.settings.weights_density_g_per_ml)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._t0_ns = clock.monotonic_ns()
        self._zero_ug = 0
        self._tare_ug = 0
        self._step_ug = 0
        self._settle_until_ns = self._t0_ns
        self._last: tuple[int, float] | None = None
        self._previous: tuple[int, float] | None = None

    @property
    def density_g_per_ml(self) -> float:
        """Water density used for the conversion, g/mL (= µg/nL)."""
        return self._density_g_per_ml

    def gross_ug(self) -> float:
        """The true gross mass on the pan now, µg (no noise, no rounding)."""
        with self._lock:
            return self._gross_ug(self.clock.monotonic_ns())

    def _gross_ug(self, now_ns: int) -> float:
        s = self.settings
        elapsed_h = (now_ns - self._t0_ns) / NS_PER_H
        return (
            s.initial_load_ug
            + self._delivered_nl() * self._density_g_per_ml * self._buoyancy
            + (s.drift_ug_per_h - s.evaporation_ug_per_h) * elapsed_h
            + self._step_ug
        )

    def _disturbed(self, now_ns: int) -> bool:
        if now_ns < self._settle_until_ns:
            return True
        elapsed_s = (now_ns - self._t0_ns) / NS_PER_S
        return any(start <= elapsed_s < start + duration for start, duration in self.settings.disturbances_s)

    def _observe(self, now_ns: int) -> tuple[float, bool]:
        gross = self._gross_ug(now_ns)
        if self._last is None or now_ns > self._last[0]:
            self._previous, self._last = self._last, (now_ns, gross)
        elif now_ns == self._last[0]:
            self._last = (now_ns, gross)
        moving = False
        if self._previous is not None and self._last is not None:
            (t_prev, m_prev), (t_last, m_last) = self._previous, self._last
            dt_s = (t_last - t_prev) / NS_PER_S
            if dt_s > 0:
                speed_ug_per_s = abs(m_last - m_prev) / dt_s
                moving = speed_ug_per_s * max(self.settings.settling_s, 1e-9) > self.settings.stability_band_ug
        return gross, not (moving or self._disturbed(now_ns))

    def read(self) -> PanReading:
        """Take one reading now (draws one noise sample)."""
        with self._lock:
            now_ns = self.clock.monotonic_ns()
            gross, stable = self._observe(now_ns)
            noise = self._rng.gauss(0.0, self.settings.noise_ug) if self.settings.noise_ug else 0.0
            resolution = self.settings.resolution_ug
            net_ug = round((gross - self._zero_ug - self._tare_ug + noise) / resolution) * resolution
            overload = gross > self.settings.capacity_ug
            underload = gross < -max(self.settings.capacity_ug // 100, resolution)
            return PanReading(net_ug, stable, overload, underload)

    def stable_now(self) -> bool:
        """True when the pan is settled (a stable-weight command would execute)."""
        with self._lock:
            return self._observe(self.clock.monotonic_ns())[1]

    def _settle(self, now_ns: int) -> None:
        self._settle_until_ns = max(self._settle_until_ns, now_ns + round(self.settings.settling_s * NS_PER_S))

    def zero(self) -> None:
        """Make the current gross mass the zero point (and clear the tare); starts a settling period."""
        with self._lock:
            now_ns = self.clock.monotonic_ns()
            self._zero_ug = round(self._gross_ug(now_ns))
            self._tare_ug = 0
            self._settle(now_ns)

    def tare(self) -> int:
        """Store the current net mass as tare, µg (rounded to the resolution); starts a settling period."""
        with self._lock:
            now_ns = self.clock.monotonic_ns()
            resolution = self.settings.resolution_ug
            self._tare_ug = round((self._gross_ug(now_ns) - self._zero_ug) / resolution) * resolution
            self._settle(now_ns)
            return self._tare_ug

    @property
    def tare_ug(self) -> int:
        """The stored tare, µg."""
        with self._lock:
            return self._tare_ug

    def clear_tare(self) -> None:
        """Forget the tare."""
        with self._lock:
            self._tare_ug = 0

    def preset_tare(self, tare_ug: int) -> None:
        """Store a tare given as a number (a preset tare, not weighed), µg, a multiple of the resolution."""
        if not is_int(tare_ug) or tare_ug < 0 or tare_ug % self.settings.resolution_ug:
            raise ConfigError("tare_ug", tare_ug, f"an integer >= 0 µg, a multiple of {self.settings.resolution_ug} µg")
        with self._lock:
            self._tare_ug = tare_ug

    def add_load(self, delta_ug: int) -> None:
        """Scripted step: put mass on (positive) or take it off (negative) the pan, µg; starts settling."""
        if not is_int(delta_ug):
            raise ConfigError("delta_ug", delta_ug, "an integer µg")
        with self._lock:
            self._step_ug += delta_ug
            self._settle(self.clock.monotonic_ns())

    def disturb(self, duration_s: float) -> None:
        """Scripted disturbance (a draught, a knock): readings are unstable for ``duration_s``."""
        if not is_finite_number(duration_s) or duration_s < 0:
            raise ConfigError("duration_s", duration_s, "a finite number >= 0 s")
        with self._lock:
            now_ns = self.clock.monotonic_ns()
            self._settle_until_ns = max(self._settle_until_ns, now_ns + round(duration_s * NS_PER_S))


class PeriodicSchedule:
    """Output due every ``interval_ns`` on a clock (a ``SIR`` stream, an auto-print).

    After a jump of virtual time, at most ``max_catch_up`` outputs are due at
    once; the older ones are dropped, as a real balance's line would drop them.

    :param clock: the device clock.
    :param interval_ns: time between outputs, ns (> 0).
    :param max_catch_up: most outputs one :meth:`take_due` returns.
    """

    def __init__(self, clock: Clock, interval_ns: int, max_catch_up: int) -> None:
        if interval_ns <= 0:
            raise ValueError(f"interval_ns (={interval_ns}) must be > 0")
        self._clock = clock
        self.interval_ns = interval_ns
        self.max_catch_up = max_catch_up
        #: When the next output falls due, ns; None while stopped.
        self.next_ns: int | None = None

    @property
    def active(self) -> bool:
        """True while outputs are scheduled."""
        return self.next_ns is not None

    def start(self) -> None:
        """Schedule the first output one interval from now."""
        self.next_ns = self._clock.monotonic_ns() + self.interval_ns

    def stop(self) -> None:
        """Stop scheduling outputs."""
        self.next_ns = None

    def take_due(self) -> int:
        """How many outputs are due now (bounded); advances the schedule past them."""
        if self.next_ns is None:
            return 0
        now_ns = self._clock.monotonic_ns()
        if now_ns < self.next_ns:
            return 0
        due = (now_ns - self.next_ns) // self.interval_ns + 1
        self.next_ns += due * self.interval_ns
        return min(due, self.max_catch_up)
