"""Running a cohort: the population drawn once, split into chunks, run here, on local processes or on Dask.

:func:`run_cohort` draws the patients from the population file (seeded), and for
each policy splits them into chunks of :data:`DEFAULT_CHUNK_PATIENTS` (the unit of
work, :class:`~hil.cohort.engine.ChunkSpec`). Chunks run in this process, on
``workers`` local processes (:class:`concurrent.futures.ProcessPoolExecutor`), or
on a Dask distributed cluster (``scheduler="tcp://HOST:PORT"``); a chunk's result
depends only on its patients, so all three give the same outcomes for the same
seed. ``progress`` is told how many patient runs are done after each chunk.
"""

from __future__ import annotations

import multiprocessing
import re
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

from controller.prescription import parse_prescription
from controller.roles import Refusal
from controller.signing import Kind, RigSecurity, SignatureError
from cython_ext.errors import ConfigError
from hal.newera.codec import syringe_rate_envelope_nl_per_h
from hil.cohort.engine import ChunkSpec, PatientOutcome, check_startable, run_chunk
from hil.cohort.policy import MAX_DAYS, CohortProtocol
from sim.population import Population, SampledPopulation

#: Patients per chunk (the unit of work sent to a process or a Dask worker).
DEFAULT_CHUNK_PATIENTS = 2500
#: Most local worker processes.
MAX_WORKERS = 64
#: Inside diameter of the simulated NE-1000's syringe, mm (``itb run``'s default): it sets the pump's
#: rate envelope, which bounds the kernel as it does for the full controller.
SYRINGE_DIAMETER_MM = Decimal("4.699")
_SCHEDULER_RE = re.compile(r"^tcp://[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


@dataclass(frozen=True)
class CohortResult:
    """Every patient's outcome under every policy.

    :ivar outcomes: by policy (in file order), then by patient index.
    :ivar population: the population drawn.
    :ivar sample: the patients drawn.
    :ivar protocol: the policy file.
    :ivar days: days each patient ran.
    :ivar where: ``local``, ``processes:N`` or the Dask scheduler's address.
    """

    outcomes: tuple[PatientOutcome, ...]
    population: Population
    sample: SampledPopulation
    protocol: CohortProtocol
    days: int
    where: str


def chunk_specs(sample: SampledPopulation, protocol: CohortProtocol, days: int,
                chunk_patients: int = DEFAULT_CHUNK_PATIENTS) -> list[ChunkSpec]:
    """The chunks of a cohort: each policy's patients, ``chunk_patients`` at a time, in order."""
    envelope = syringe_rate_envelope_nl_per_h(SYRINGE_DIAMETER_MM)
    specs = []
    for policy in protocol.policies:
        for first in range(0, sample.size, chunk_patients):
            last = min(sample.size, first + chunk_patients)
            specs.append(ChunkSpec(first, sample.origins[first:last],
                                   {k: v[first:last].copy() for k, v in sample.parameters.items()},
                                   policy, protocol.prescriptions, days, envelope))
    return specs


def _check(days: int, workers: int, scheduler: str | None, chunk_patients: int) -> None:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ConfigError("days", days, f"an integer in [1, {MAX_DAYS}]")
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise ConfigError("workers", workers, f"an integer in [1, {MAX_WORKERS}]")
    if isinstance(chunk_patients, bool) or not isinstance(chunk_patients, int) or not 1 <= chunk_patients <= 100_000:
        raise ConfigError("chunk_patients", chunk_patients, "an integer in [1, 100000]")
    if scheduler is not None:
        if not _SCHEDULER_RE.match(scheduler):
            raise ConfigError("scheduler", scheduler, "a Dask scheduler address tcp://HOST:PORT")
        if workers != 1:
            raise ConfigError("workers", workers, "1 with a scheduler (the cluster has its own workers)")


def _local(specs: list[ChunkSpec], workers: int) -> Iterator[tuple[int, list[PatientOutcome]]]:
    if workers == 1:
        for i, spec in enumerate(specs):
            yield i, run_chunk(spec)
        return
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(run_chunk, spec): i for i, spec in enumerate(specs)}
        for future in as_completed(futures):
            yield futures[future], future.result()


def _dask(specs: list[ChunkSpec], scheduler: str) -> Iterator[tuple[int, list[PatientOutcome]]]:
    try:
        from distributed import Client
        from distributed import as_completed as dask_completed
    except ImportError as exc:
        raise ConfigError("scheduler", scheduler, "a Dask cluster with dask[distributed] installed here "
                          "(pip install 'itb-fil[cluster]')") from exc
    with Client(scheduler, timeout="30s") as client:
        futures = client.map(run_chunk, specs, pure=False)
        index = {future.key: i for i, future in enumerate(futures)}
        for future in dask_completed(futures):
            yield index[future.key], future.result()


def verify_prescriptions(protocol: CohortProtocol, security: RigSecurity | None = None) -> None:
    """Check every prescription's file as the controller's front door does before it puts one in effect.

    Signed by a clinician's key of the rig's trust store (SEC-04), and holding exactly the prescription
    the cohort runs.

    :param security: the rig's keys (default: :meth:`~controller.signing.RigSecurity.load`).
    :raises SignatureError: naming the first check that failed.
    """
    security = security if security is not None else RigSecurity.load()
    for origin, signed in protocol.prescription_files.items():
        security.trust.verify_file(signed, Kind.PRESCRIPTION, datetime.now(timezone.utc))
        if parse_prescription(signed.data) != protocol.prescriptions[origin]:
            raise SignatureError(Refusal.CONTENT_CHANGED, f"prescription {signed.name}",
                                 "the file does not hold the cohort's prescription")


def run_cohort(population: Population, protocol: CohortProtocol, *, days: int | None = None, workers: int = 1,
               scheduler: str | None = None, chunk_patients: int = DEFAULT_CHUNK_PATIENTS,
               progress: Callable[[int, int], Any] | None = None) -> CohortResult:
    """Run every patient of ``population`` under every policy of ``protocol``.

    :param population: the population (its seed fixes the patients).
    :param protocol: the policy file.
    :param days: days per patient (default: the policy file's).
    :param workers: local processes, 1-64 (1: this process).
    :param scheduler: a Dask scheduler, ``tcp://HOST:PORT`` (then ``workers`` must be 1).
    :param chunk_patients: patients per chunk.
    :param progress: called as ``progress(done, total)`` in patient runs after each chunk.
    :raises ConfigError: for a bad argument, or a prescription starting above what the cohort's patient
        record allows (:func:`~hil.cohort.engine.check_startable`); nothing runs.
    :raises SignatureError: for a prescription whose file the rig's trust store refuses
        (:func:`verify_prescriptions`); nothing runs.
    """
    days = protocol.days if days is None else days
    _check(days, workers, scheduler, chunk_patients)
    verify_prescriptions(protocol)
    check_startable(protocol.prescriptions, syringe_rate_envelope_nl_per_h(SYRINGE_DIAMETER_MM))
    sample = population.sample()
    specs = chunk_specs(sample, protocol, days, chunk_patients)
    results: list[list[PatientOutcome] | None] = [None] * len(specs)
    total = sample.size * len(protocol.policies)
    done = 0
    chunks = _dask(specs, scheduler) if scheduler is not None else _local(specs, workers)
    for i, outcomes in chunks:
        results[i] = outcomes
        done += len(outcomes)
        if progress is not None:
            progress(done, total)
    where = scheduler if scheduler is not None else "local" if workers == 1 else f"processes:{workers}"
    ordered = tuple(outcome for chunk in results for outcome in (chunk or ()))
    return CohortResult(ordered, population, sample, protocol, days, where)
