"""Simulated New Era NE-1000 syringe pump: firmware on a byte stream plus mechanics.

:class:`Ne1000` is the device (the :mod:`sim.device` protocol);
``Ne1000(...).mechanics`` is its :class:`Mechanics`, whose
:meth:`~Mechanics.actual_delivered_nl` is what a balance weighs.
"""

from sim.newera.firmware import COMMANDS, Ne1000, normalise, rate_envelope_nl_per_h
from sim.newera.mechanics import Mechanics

__all__ = ["COMMANDS", "Mechanics", "Ne1000", "normalise", "rate_envelope_nl_per_h"]
