"""A scenario's ``[therapy] dead_volume_ml`` must be a catheter's: more than 0 and at most 1 mL (issue #9).

Found by the second outside clinical review: a scenario without a prescription took ``dead_volume_ml``
anywhere in [0, 1000] mL (a thousand times the prescription's own bound). BOL-06 derives the priming and
the concentration transit from it; 0 switches both off, and a refill with a new concentration then dies in
the transit plan. Refused when the file is read, naming field, value and range (PRX-01).
"""

from __future__ import annotations

import pytest

from cython_ext.fields import FileErrors
from hil.scenario.schema import parse_scenario

MINIMAL = """
[scenario]
name = "m"
duration_days = 2

[therapy]
dead_volume_ml = {value}
"""


@pytest.mark.parametrize("value", ["0", "0.0", "5", "1000"])
def test_a_dead_volume_outside_a_catheters_is_refused(value: str) -> None:
    """BOL-06, PRX-01: the error names therapy.dead_volume_ml, the value and (0, 1] mL."""
    with pytest.raises(FileErrors) as refused:
        parse_scenario(MINIMAL.format(value=value))
    assert refused.value.field == "therapy.dead_volume_ml"
    assert "(0, 1] mL" in refused.value.allowed, refused.value.allowed


@pytest.mark.parametrize("value", ["0.1", "0.25", "0.5", "1"])
def test_a_catheters_dead_volume_is_accepted(value: str) -> None:
    """BOL-06: 0.1 to 0.5 mL (itb-clinical §5.3), and up to 1 mL."""
    scenario = parse_scenario(MINIMAL.format(value=value))
    assert scenario.therapy.dead_volume_nl == int(float(value) * 1_000_000)
