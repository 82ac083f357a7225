"""A cohort's outcomes for the shipped seed are pinned: speed work on the cohort must not move them.

The golden holds, for the first :data:`PATIENTS` patients of the shipped population under both shipped
policies for :data:`DAYS` days, every field of each :class:`~hil.cohort.engine.PatientOutcome` and a
SHA-256 of its workflow results (time, action, allowed, reason codes, dose). They include refusals
that depend on the kernel's 24 h ledger (``DOSE_CAP_24H``, ``BOLUS_OVERDOSE_RISK_TITRATION_STEP``),
so a change in what the ledger records is seen.

Regenerate on purpose only, after a change of behaviour that is meant (the patient model, the
controller's rules): ``ITB_REGENERATE_GOLDENS=1 .venv/bin/python -m pytest -q
tests/cohort/test_cohort_golden.py``, and say in the commit message why it moved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from hil.cohort.run import run_cohort

PATIENTS = 180
DAYS = 180
GOLDEN = Path(__file__).with_name("golden") / f"outcomes_{PATIENTS}x{DAYS}.json"
#: Relative tolerance for the patient model's floats (tone, levels): the last digit of an ``exp`` or a sum
#: may differ between numpy builds; decisions, counts and reason codes are compared exactly.
FLOAT_REL_TOL = 1e-9
#: Reasons that only the kernel's 24 h ledger can give: the golden must hold each of them.
LEDGER_REASONS = ("DOSE_CAP_24H", "BOLUS_OVERDOSE_RISK_TITRATION_STEP")


def _row(outcome: Any) -> dict[str, Any]:
    row = dataclasses.asdict(outcome)
    decisions = [[d.t_ms, d.action, d.allowed, list(d.reasons), d.dose_ug_per_day] for d in outcome.decisions]
    row["decisions"] = hashlib.sha256(json.dumps(decisions).encode("ascii")).hexdigest()
    row["reasons"] = sorted({r for d in outcome.decisions for r in d.reasons})
    return row


@pytest.fixture(scope="module")
def rows(protocol, small_population) -> list[dict[str, Any]]:
    population = dataclasses.replace(small_population, size=PATIENTS)
    return [_row(o) for o in run_cohort(population, protocol, days=DAYS, chunk_patients=64).outcomes]


def test_the_cohort_outcomes_equal_the_golden(rows) -> None:
    if os.environ.get("ITB_REGENERATE_GOLDENS") == "1":
        GOLDEN.write_text("[\n" + ",\n".join(json.dumps(r, sort_keys=True) for r in rows) + "\n]\n")
    golden = json.loads(GOLDEN.read_text())
    assert len(rows) == len(golden) == 2 * PATIENTS
    for got, want in zip(rows, golden):
        got = json.loads(json.dumps(got))
        where = f"patient {want['patient']} under {want['policy']}"
        assert sorted(got) == sorted(want), where
        for field, value in want.items():
            if isinstance(value, float):
                assert math.isclose(got[field], value, rel_tol=FLOAT_REL_TOL), f"{where}: {field}"
            else:
                assert got[field] == value, f"{where}: {field}"


def test_the_golden_holds_refusals_of_the_ledger() -> None:
    golden = json.loads(GOLDEN.read_text())
    seen = {r for row in golden for r in row["reasons"]}
    assert set(LEDGER_REASONS) <= seen
