"""The in-silico cohort: virtual patients titrated by the firmware's own decisions over a vectorised plant.

- :mod:`hil.cohort.policy` -- titration policy files (the clinician's rules) and their strict loader.
- :mod:`hil.cohort.loop` -- :class:`~hil.cohort.loop.IdealPumpLoop`: the control loop's part in a
  workflow, on an ideal pump (no HAL, no store).
- :mod:`hil.cohort.engine` -- one chunk: per patient a kernel gate and the therapy workflows, one
  :class:`~sim.cohort_plant.CohortPlant` for all.
- :mod:`hil.cohort.run` -- :func:`~hil.cohort.run.run_cohort`: chunks here, on local processes or on Dask.
- :mod:`hil.cohort.reference` -- the same patient and policy on the full controller over the simulated
  pump (the differential check).
- :mod:`hil.cohort.report` -- ``summary.json``, ``patients.csv``, ``report.html`` and its plots.
"""
