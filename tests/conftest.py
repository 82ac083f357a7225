"""Shared test configuration.

Hypothesis runs derandomized so every run of the suite is the same run; set
``ITB_HYPOTHESIS_PROFILE=thorough`` for a longer, randomized search.
Hardware tests (marked ``hil``) are skipped unless ``--hil-env FILE`` or an
``ITB_HIL_*`` variable is given.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=2000,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("ITB_HYPOTHESIS_PROFILE", "ci"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--hil-env",
        metavar="FILE",
        default=None,
        help="bench profile (TOML) naming real devices; enables tests marked 'hil'",
    )


def _hil_enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("--hil-env")) or any(k.startswith("ITB_HIL_") for k in os.environ)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _hil_enabled(config):
        return
    skip = pytest.mark.skip(reason="hardware test: pass --hil-env FILE or set ITB_HIL_* to run")
    for item in items:
        if item.get_closest_marker("hil") is not None:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fuzzed-reply figure (issue #11) and the clinical adversary's step figure (issue #9) of this run,
    when a fuzz suite or an adversary machine ran."""
    from tests import reply_tally, step_tally

    reply_tally.TALLY.pytest_terminal_summary(terminalreporter)
    step_tally.TALLY.pytest_terminal_summary(terminalreporter)
