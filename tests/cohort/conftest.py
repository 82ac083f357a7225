"""Fixtures of the cohort tests: the shipped policy file, a small population drawn from the shipped one."""

from __future__ import annotations

import dataclasses

import pytest

from hil.cmd_cohort import DEFAULT_POLICIES, DEFAULT_POPULATION
from hil.cohort.policy import CohortProtocol, load_protocol
from sim.population import Population, load_population


@pytest.fixture(scope="session")
def protocol() -> CohortProtocol:
    """The shipped policy file."""
    return load_protocol(DEFAULT_POLICIES)


@pytest.fixture(scope="session")
def small_population() -> Population:
    """The shipped population file (its distributions and seed) at sixteen patients."""
    return dataclasses.replace(load_population(DEFAULT_POPULATION), size=16)
