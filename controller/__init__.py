"""The dosing firmware as a library: prescriptions, titration, boluses, reservoir, alarms, journal, control loop.

``controller`` imports ``cython_ext`` and ``hal`` only; never ``sim`` or ``hil``.
"""
