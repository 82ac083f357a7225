"""Simulated New Era NE-1000 syringe pump: firmware on a byte stream plus mechanics.

:class:`Ne1000` is the device (the :mod:`sim.device` protocol);
``Ne1000(...).mechanics`` is its :class:`Mechanics`, whose
:meth:`~Mechanics.actual_delivered_nl` is what a balance weighs.
"""

from sim.newera.firmware import COMMANDS, Ne1000, normalise, rate_envelope_nl_per_h
from sim.newera.mechanics import Mechanics
from sim.newera.profile import NE1000_V3_928, NE1000_X2_V3_928, PROFILES, DeviceProfile

__all__ = [
    "COMMANDS",
    "NE1000_V3_928",
    "NE1000_X2_V3_928",
    "PROFILES",
    "DeviceProfile",
    "Mechanics",
    "Ne1000",
    "normalise",
    "rate_envelope_nl_per_h",
]
