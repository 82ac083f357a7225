"""Every shipped scenario gives the same ``summary.json`` as its stored golden (timings aside).

This pins the controller's behaviour across restructuring: decisions, alarms,
boluses, delivered doses, samples and checks must not change unless a change of
behaviour is meant (see :mod:`tests.e2e.summary_golden` for how to regenerate).
Runs over the in-process link: the bytes are the same as over a pty, without the
terminal.
"""

from __future__ import annotations

import json
import os

import pytest

from hil.scenario import RunOptions, ScenarioRunner, load_scenario, shipped_scenarios
from tests.e2e.summary_golden import controller_series_digest, golden_path, normalise

REGENERATE = os.environ.get("ITB_REGENERATE_GOLDENS") == "1"


@pytest.mark.parametrize("name", shipped_scenarios())
def test_summary_matches_golden(name: str) -> None:
    record = ScenarioRunner(load_scenario(name), RunOptions(link="inprocess")).run()
    got = normalise(record.summary())
    got["controller_series_sha256"] = controller_series_digest(record.samples)
    path = golden_path(name)
    if REGENERATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    want = json.loads(path.read_text(encoding="utf-8"))
    mismatched = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
    assert not mismatched, f"{name}: summary differs from its golden in {mismatched}"
