"""Simulated devices that speak the exact wire protocols, a patient model, faults and virtual time.

``sim`` may import ``hal`` for wire codecs and the :class:`~hal.clock.Clock`
interface only. It never imports ``controller`` or ``hil``.
"""
