"""Normalised ``summary.json`` of a scenario run, for the golden comparison.

Removes what legitimately differs between two runs of the same scenario: wall-clock
timings, the pty path, the scenario file's absolute path, the software version and
git revision, and random bolus and command IDs (each is identified by its position instead). Everything else (decisions, alarms,
boluses, doses, samples, checks) must be identical.

Regenerate the goldens on purpose only, after a change of behaviour that is meant:
``ITB_REGENERATE_GOLDENS=1 .venv/bin/python -m pytest tests/e2e/test_summary_golden.py``,
and say in the commit message what changed and why.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

GOLDEN_DIR = Path(__file__).with_name("golden")
#: Keys whose values are timings or machine paths.
VOLATILE_KEYS = ("wall_s", "virtual_to_wall_ratio", "pump_url", "source", "software")


def normalise(summary: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``summary`` without its volatile parts."""
    out = {k: v for k, v in summary.items() if k not in VOLATILE_KEYS}
    ids = {b["bolus_id"]: f"bolus-{i}" for i, b in enumerate(out.get("boluses", []))}
    for i, command in enumerate(out.get("pump_commands", [])):
        ids.setdefault(command["command_id"], f"command-{i}")
    text = json.dumps(out, sort_keys=True)
    for real, stable in ids.items():
        text = text.replace(real, stable)
    return json.loads(text)


def golden_path(scenario: str) -> Path:
    """Where the golden summary of shipped scenario ``scenario`` lives."""
    return GOLDEN_DIR / f"{scenario}.summary.json"


def controller_series_digest(samples: list[Any]) -> str:
    """SHA-256 of the controller's side of the time series (time, rate, 24 h dose, cap, reservoir).

    The patient model's columns are left out: they change with the model, not with the controller.
    """
    rows = [[s.t_ms, s.rate_nl_per_h, s.dose_24h_ug, s.cap_ug_per_day, s.reservoir_ml] for s in samples]
    return hashlib.sha256(json.dumps(rows).encode("ascii")).hexdigest()
