"""Versioned device profiles: the numbers that differ between New Era models and firmware.

A profile is data, checked when built; the firmware emulation
(:class:`sim.newera.firmware.Ne1000`) reads every limit from it. Sources:
reference/pump-protocols.md §1.1 (baud rates), §1.3 (phases, diameter rule,
speed limits, ``VER`` strings).
"""

from __future__ import annotations

from dataclasses import dataclass

from cython_ext.errors import ConfigError


@dataclass(frozen=True)
class DeviceProfile:
    """Model- and firmware-specific limits of a New Era syringe pump.

    :ivar name: profile key (``"ne1000-v3.928"``).
    :ivar version_reply: the ``VER`` reply data.
    :ivar phase_count: program phases (41 base firmware, 340 with the X2 upgrade).
    :ivar diameter_min_milli: smallest syringe diameter, thousandths of a mm.
    :ivar diameter_max_milli: largest syringe diameter, thousandths of a mm.
    :ivar ul_diameter_limit_milli: diameters at or below this use µL, above it mL (thousandths of a mm).
    :ivar max_speed_cm_per_min: fastest plunger speed, cm/min.
    :ivar min_speed_cm_per_h: slowest plunger speed, cm/h.
    :ivar baud_rates: baud rates ``*ADR n B <baud>`` accepts.
    """

    name: str
    version_reply: str
    phase_count: int = 41
    diameter_min_milli: int = 100
    diameter_max_milli: int = 50_000
    ul_diameter_limit_milli: int = 14_000
    max_speed_cm_per_min: float = 5.1005
    min_speed_cm_per_h: float = 0.004205
    baud_rates: tuple[int, ...] = (19200, 9600, 2400, 1200, 300)

    def __post_init__(self) -> None:
        if not 1 <= self.phase_count <= 999:
            raise ConfigError("phase_count", self.phase_count, "in [1, 999]")
        if not 0 < self.diameter_min_milli < self.diameter_max_milli:
            raise ConfigError("diameter_min_milli", self.diameter_min_milli, f"in (0, {self.diameter_max_milli})")
        if not 0 < self.min_speed_cm_per_h / 60 < self.max_speed_cm_per_min:
            raise ConfigError("min_speed_cm_per_h", self.min_speed_cm_per_h, "> 0 and below the maximum speed")
        if not self.baud_rates or 19200 not in self.baud_rates:
            raise ConfigError("baud_rates", self.baud_rates, "a tuple that includes 19200")


#: NE-1000, base firmware V3.928 (the default).
NE1000_V3_928 = DeviceProfile(name="ne1000-v3.928", version_reply="NE1000V3.928")
#: NE-1000 with the X2 program-memory upgrade: 340 phases, and ``X2`` in the version string.
NE1000_X2_V3_928 = DeviceProfile(name="ne1000x2-v3.928", version_reply="NE1000X2V3.928", phase_count=340)

#: Profiles by name.
PROFILES: dict[str, DeviceProfile] = {p.name: p for p in (NE1000_V3_928, NE1000_X2_V3_928)}
