"""Fixtures for the HAL tests: a leak check on threads and descriptors."""

from __future__ import annotations

from tests.leaks import no_leaks  # noqa: F401  (autouse: importing it switches it on here)
