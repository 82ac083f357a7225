"""The cohort's decisions equal the full controller's over the simulated pump, patient by patient.

The cohort runs a patient's workflows over an ideal-pump loop and a vectorised plant;
the reference (:func:`hil.cohort.reference.run_on_controller`) runs the same patient
and policy on the controller built by ``build_controller``, polling a simulated NE-1000
in virtual time, with the scalar patient model fed from each poll. Every workflow
result (time, action, verdict, reason codes, dose) must be the same.
"""

from __future__ import annotations

import pytest

from cython_ext.vocabulary import Origin
from hil.cohort.engine import run_chunk
from hil.cohort.reference import run_on_controller
from hil.cohort.run import chunk_specs

DAYS = 21


@pytest.mark.parametrize(("policy_index", "i", "origin"), [
    (0, 5, Origin.SPINAL),      # a clinician bolus for high tone, two weeks of titration
    (0, 1, Origin.PAEDIATRIC),  # its own prescription and dead volume
    (1, 8, Origin.CEREBRAL),    # 25 % steps above the cerebral cap: the kernel refuses them
])
def test_cohort_decisions_equal_the_full_controllers(protocol, small_population, policy_index, i, origin) -> None:
    sample = small_population.sample()
    assert sample.origins[i] == origin.value
    policy = protocol.policies[policy_index]
    spec = next(s for s in chunk_specs(sample, protocol, DAYS, 1) if s.first_index == i and s.policy == policy)
    cohort = run_chunk(spec)[0].decisions
    reference = run_on_controller(sample.patient(i), protocol.prescriptions[origin],
                                  protocol.prescription_files[origin], policy, DAYS)
    actions = [d.action for d in reference]
    assert actions[:2] == ["priming_bolus", "implant"] and actions.count("titrate") >= 3
    assert cohort == reference
    if origin is Origin.SPINAL:
        assert "clinician_bolus" in actions
    if origin is Origin.CEREBRAL:
        assert any("TITRATION_CAP_EXCEEDED" in d.reasons for d in cohort)
