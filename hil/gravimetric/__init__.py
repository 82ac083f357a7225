"""Gravimetric delivery-accuracy testing (IEC 60601-2-24 method): pure analysis, procedure, report.

- :mod:`hil.gravimetric.analysis`: flow series, trumpet curve and mean error
  from a weight series, as a pure function; refuses unsupported data.
- :mod:`hil.gravimetric.procedure`: set-up checks, stabilisation and sampling
  against a pump and a balance (real, or a simulated rig in virtual time);
  :func:`~hil.gravimetric.procedure.run_accuracy` for scenario files.
- :mod:`hil.gravimetric.report`: ``report.html`` with PNG plots, ``summary.json``, raw CSV.
- :mod:`hil.gravimetric.profile`: the strict bench profile (TOML) and unit-bearing CLI strings.
- :mod:`hil.gravimetric.blank`: the no-flow blank run that measures evaporation.
- :mod:`hil.gravimetric.simrig`: a simulated pump and balance on one virtual clock.
"""
