"""``itb bench cohort``: the in-silico cohort against its plant-only floor, in one run.

* **(a) the cohort**: :data:`PATIENTS` patients of the shipped population file
  (``hil/cohorts/mixed_origins.toml``, its seed) for :data:`DAYS` days under the first
  policy of ``hil/cohorts/policies/standard.toml``, every decision through the controller's
  workflows and the compiled kernel (:func:`hil.cohort.run.run_cohort`), on
  :data:`WORKERS` local processes;
* **(b) the plant-only NumPy baseline** over the same population and hourly step
  (:func:`sim.cohort_plant.time_plant_baseline` with the NumPy step), in this process,
  :data:`BASELINE_RUNS` times after (a): the fastest run counts. Every run is reported. Noise only
  slows a run down; (a) runs once and keeps all of its noise, while (b)'s fastest run is never
  slower than a single run would have been, so the ratio errs against the cohort, never for it
  (one run of each let one slow or lucky run of (b) decide);
* their ratio (a)/(b), in wall time (the target) and in CPU time (user and system, this
  process and its workers: what other load on a shared machine does not change), and peak
  memory: this process's peak resident set and the largest worker's (an upper bound of the
  total is this one plus every worker at its peak).

Targets: (a) at most :data:`TARGET_RATIO` times (b), (a) under :data:`TARGET_WALL_S` s,
peak memory under :data:`TARGET_MEMORY_MIB` MiB. ``--quick`` runs 1000 patients for
30 days. The machine's load average is reported with the figures: they are wall times.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import time
from typing import Any

from hil.cmd_cohort import DEFAULT_POLICIES, DEFAULT_POPULATION
from hil.cohort.policy import load_protocol
from hil.cohort.run import run_cohort
from sim.cohort_plant import time_plant_baseline
from sim.population import load_population

PATIENTS = 10_000
DAYS = 180
QUICK_PATIENTS = 1_000
QUICK_DAYS = 30
#: Local processes for (a): one per core of the 2-core machine the targets are set for.
WORKERS = 2
#: Runs of (b); the fastest is the baseline.
BASELINE_RUNS = 3
TARGET_RATIO = 3.0
TARGET_WALL_S = 60.0
TARGET_MEMORY_MIB = 2048.0


def _cpu_s() -> float:
    """CPU time of this process and its finished workers, user and system, s (unaffected by other load)."""
    return sum(getattr(resource.getrusage(who), f) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
               for f in ("ru_utime", "ru_stime"))


def _peak_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # KiB on Linux


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Benchmark entry point (``itb bench cohort [--quick] [--json]``)."""
    quick = bool(getattr(args, "quick", False))
    patients, days = (QUICK_PATIENTS, QUICK_DAYS) if quick else (PATIENTS, DAYS)
    population = dataclasses.replace(load_population(DEFAULT_POPULATION), size=patients)
    protocol = load_protocol(DEFAULT_POLICIES)
    protocol = dataclasses.replace(protocol, policies=protocol.policies[:1])
    load_before = os.getloadavg()
    start, cpu0 = time.perf_counter(), _cpu_s()
    result = run_cohort(population, protocol, days=days, workers=WORKERS)
    cohort_s, cohort_cpu_s = time.perf_counter() - start, _cpu_s() - cpu0
    worker_peak = _peak_mib(resource.RUSAGE_CHILDREN)
    baseline_walls, baseline_cpus = [], []
    for _ in range(BASELINE_RUNS):
        cpu0 = _cpu_s()
        baseline_walls.append(time_plant_baseline(patients, days, seed=population.seed,
                                                  implementation="numpy").wall_s)
        baseline_cpus.append(_cpu_s() - cpu0)
    baseline_s, baseline_cpu_s = min(baseline_walls), min(baseline_cpus)
    main_peak = _peak_mib(resource.RUSAGE_SELF)
    ratio = cohort_s / baseline_s if baseline_s > 0 else None
    memory_bound = main_peak + WORKERS * worker_peak
    decisions = sum(len(o.decisions) for o in result.outcomes)
    return {
        "patients": patients,
        "days": days,
        "policy": protocol.policies[0].name,
        "workers": WORKERS,
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "cohort_wall_s": round(cohort_s, 2),
        "cohort_workflow_results": decisions,
        "cohort_patient_days_per_s": round(patients * days / cohort_s),
        "cohort_cpu_s": round(cohort_cpu_s, 2),
        "plant_only_numpy_runs": BASELINE_RUNS,
        "plant_only_numpy_rule": "fastest run",
        "plant_only_numpy_wall_s": round(baseline_s, 2),
        "plant_only_numpy_cpu_s": round(baseline_cpu_s, 2),
        "plant_only_numpy_wall_s_each": [round(v, 2) for v in baseline_walls],
        "plant_only_numpy_cpu_s_each": [round(v, 2) for v in baseline_cpus],
        "cohort_cpu_over_plant_only_cpu": round(cohort_cpu_s / baseline_cpu_s, 2) if baseline_cpu_s > 0 else None,
        "cohort_over_plant_only": None if ratio is None else round(ratio, 2),
        "target_cohort_over_plant_only": TARGET_RATIO,
        "ratio_within_target": ratio is not None and ratio <= TARGET_RATIO,
        "target_cohort_wall_s": TARGET_WALL_S,
        "wall_within_target": cohort_s <= TARGET_WALL_S,
        "peak_rss_main_mib": round(main_peak, 1),
        "peak_rss_largest_worker_mib": round(worker_peak, 1),
        "peak_rss_upper_bound_mib": round(memory_bound, 1),
        "target_peak_rss_mib": TARGET_MEMORY_MIB,
        "memory_within_target": memory_bound <= TARGET_MEMORY_MIB,
    }
