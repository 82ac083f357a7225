"""A prescription's dead volume must be a catheter's: more than 0 and at most 1 mL (issue #9, second review).

Found by the second outside clinical review: ``pump.dead_volume_ml = 0`` used to pass ``itb prescription check``
(VALID), the implant ran with no priming and no word about the catheter, and the first concentration-change
refill then killed the run two days in with ``ConfigError: dead_volume_nl (=0) must be >= 1`` from the
transit plan. An implanted catheter always holds drug (itb-clinical §5.3 [PROM-CATH]: 0.0026 mL/cm of
implanted length; 0.1-0.5 mL with the pump's tubing), and BOL-06 derives the priming and the transit from
that volume: a zero would switch off both. Bad input is refused when the file is read, naming field, value
and range (PRX-01, DESIGN principle 2).
"""

from __future__ import annotations

import pytest

from cython_ext.errors import ConfigError
from tests.prescriptions import make_prescription


@pytest.mark.parametrize("dead_volume_ml", ["0", "0.0"])
def test_a_zero_dead_volume_is_refused_when_the_prescription_is_read(dead_volume_ml: str) -> None:
    """BOL-06, PRX-01: 0 mL is refused with the field, the value and (0, 1] mL."""
    with pytest.raises(ConfigError) as refused:
        make_prescription(dead_volume_ml=dead_volume_ml)
    assert refused.value.field == "pump.dead_volume_ml"
    assert refused.value.allowed.startswith("a number in (0, 1] mL"), refused.value.allowed


def test_a_dead_volume_above_1_ml_is_refused_when_the_prescription_is_read() -> None:
    """BOL-06, PRX-01: 1.001 mL is refused with the field, the value and the range up to 1 mL."""
    with pytest.raises(ConfigError) as refused:
        make_prescription(dead_volume_ml="1.001")
    assert refused.value.field == "pump.dead_volume_ml"
    assert "1] mL" in refused.value.allowed, refused.value.allowed


@pytest.mark.parametrize("dead_volume_ml", ["0.001", "0.05", "0.5", "1"])
def test_every_catheter_dead_volume_is_accepted(dead_volume_ml: str) -> None:
    """BOL-06: the smallest whole microlitre up to 1 mL."""
    assert make_prescription(dead_volume_ml=dead_volume_ml).pump.dead_volume_nl == int(float(dead_volume_ml) * 1e6)
