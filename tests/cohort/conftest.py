"""Fixtures of the cohort tests: the shipped policy file, signed copies of it, a small population of the shipped one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pytest

from controller.signing import DEVELOPMENT_DIR, SIGNATURE_SUFFIX, Kind, SigningKey, sign_file
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


def _sign_into(path: Path, text: str) -> None:
    data = text.encode("utf-8")
    key = SigningKey.load(DEVELOPMENT_DIR / "signers" / "clinician.key")
    path.write_bytes(data)
    path.with_name(path.name + SIGNATURE_SUFFIX).write_bytes(
        sign_file(data, path.name, Kind.PRESCRIPTION, key, datetime.now(timezone.utc)))


@pytest.fixture(scope="session")
def sign_into() -> Callable[[Path, str], None]:
    """``sign_into(path, text)`` writes a prescription file and its signature by the development clinician key."""
    return _sign_into


@pytest.fixture
def policy_dir(tmp_path: Path) -> Path:
    """A copy of the shipped policy file and its signed prescriptions (returns the policy file's path)."""
    policies = tmp_path / DEFAULT_POLICIES.name
    for path in DEFAULT_POLICIES.parent.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    return policies
