"""A cohort is a function of its seed: the same outcomes run here, on local processes, in other chunks, on Dask."""

from __future__ import annotations

import dataclasses

import pytest

from hil.cohort.run import run_cohort

DAYS = 12


@pytest.fixture(scope="module")
def here(protocol, small_population):
    """The reference run: this process, one chunk per patient."""
    return run_cohort(small_population, protocol, days=DAYS, chunk_patients=1)


def _rows(result) -> list:
    return [dataclasses.astuple(o) for o in result.outcomes]


def test_the_same_seed_gives_the_same_cohort_in_any_chunks(here, protocol, small_population) -> None:
    again = run_cohort(small_population, protocol, days=DAYS, chunk_patients=5)
    assert _rows(again) == _rows(here)
    assert [o.patient for o in here.outcomes] == list(range(16)) * 2
    assert any(d.action == "titrate" for o in here.outcomes for d in o.decisions)


def test_another_seed_gives_another_cohort(here, protocol, small_population) -> None:
    other = run_cohort(dataclasses.replace(small_population, seed=small_population.seed + 1), protocol, days=DAYS)
    assert _rows(other) != _rows(here)


def test_local_processes_give_the_same_cohort(here, protocol, small_population) -> None:
    assert _rows(run_cohort(small_population, protocol, days=DAYS, workers=2, chunk_patients=4)) == _rows(here)


def test_a_dask_cluster_gives_the_same_cohort(here, protocol, small_population) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        result = run_cohort(small_population, protocol, days=DAYS, scheduler=cluster.scheduler_address,
                            chunk_patients=4)
    assert result.where == cluster.scheduler_address
    assert _rows(result) == _rows(here)
