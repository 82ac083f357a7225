"""A prescription's signed soft-limit override starts therapy at its dose (issue #9, second review).

Found by the second outside clinical review with ``itb run`` on the shipped
``spinal_high_dose_2000.toml`` (1200 µg/day at 2000 µg/mL, "stable on 1200 ug/day for 3 years", with a
``[[soft_limit_overrides]]`` entry for ``programme.dose_ug_per_day``) for a transferred patient documented
at 1200 µg/day: the implant was refused with ``DOSE_ABOVE_SOFT`` and no alarm, so the replacement pump never
started. The override is the prescriber's confirmation with a reason that PRX-02 asks for, journalled when
the prescription is put in effect (a breach without one cannot be written: the file is refused);
refusing it leaves a pump-replacement patient with no drug (itb-clinical §3.2, boxed warning: abrupt
withdrawal).

Judged on the fake pump's physical rate against the prescription as written: 1200 µg/day at 2000 µg/mL is
25 000 nL/h.
"""

from __future__ import annotations

from typing import Any

from controller.patient import History, PatientRecord
from controller.store import Store
from sim.clock import VirtualClock
from sim.fake_pump import FakePump
from tests.controller.conftest import MS_PER_H, build_rig
from tests.prescriptions import make_prescription

OVERRIDES = """
[[soft_limit_overrides]]
field = "programme.dose_ug_per_day"
reason = "stable on 1200 ug/day for 3 years"
prescriber = "dr.test"

[[soft_limit_overrides]]
field = "titration.max_dose_ug_per_day"
reason = "cap just above the established dose"
prescriber = "dr.test"
"""

def _replacement(extra: str) -> Any:
    rx = make_prescription(concentration=2000, dose_ug_per_day=1200, max_dose_ug_per_day=1400,
                           extra=extra)
    patient = PatientRecord(rx.patient.patient_id, rx.patient.origin, History.TRANSFERRED,
                            prior_dose_ng_per_day=1_200_000)
    clock = VirtualClock()
    pump = FakePump(clock)
    return build_rig(clock, pump, Store(":memory:", clock), prescription=rx, patient=patient)


def test_a_signed_override_of_the_dose_starts_the_replacement_pump_at_it() -> None:
    """PRX-02, SAFE-01: 1200 µg/day with the prescription's override of programme.dose_ug_per_day runs at once."""
    rig = _replacement(OVERRIDES)
    result = rig.controller.implant(catheter="drug")
    assert result.allowed, result
    rig.advance(MS_PER_H)
    assert rig.pump.rate_nl_per_h == 25_000
    assert rig.pump.actual_delivered_nl >= 24_000



def test_a_signed_override_of_the_dose_lets_the_concentration_change() -> None:
    """PRX-02, PRX-06, BOL-06: two days on 1200 µg/day at 2000 µg/mL, refilled with 1000 µg/mL: the change is
    accepted and the old drug crosses at its own rate (25 000 nL/h, the 1000 µg/mL programme's 50 000 halved)."""
    rig = _replacement(OVERRIDES)
    assert rig.controller.implant(catheter="drug").allowed
    rig.advance(2 * 24 * MS_PER_H)
    result = rig.therapy.refill(removed_nl=rig.loop.reservoir_nl(), added_nl=20_000_000,
                                concentration_ug_per_ml=1000, lot="H1")
    assert result.allowed, result
    assert rig.loop.transit is not None and rig.pump.rate_nl_per_h == 25_000
