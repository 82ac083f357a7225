"""A scenario's ``[therapy]`` settings are refused when the file is read, in the file's own field and unit.

Found by the second outside clinical review (issue #9): ``restart_titration_after_h = 1000`` and
``refill_tolerance_pct = 500`` passed the scenario schema and were then refused by the controller's settings
as ``restart_titration_after_ms (=3600000000) must be an integer in [0, 2592000000]`` and
``refill_tolerance_pct (=500) must be an integer in [0, 100]``: no file, no line, the restart threshold in
ms. ``refill_tolerance_pct = 12.5`` was cut to 12 without a word (DESIGN principle 2: reject, never clamp
silently). The restart threshold is the restart rule's (itb-clinical §1.6 [JP-LBL], §3.3); RES-03 the
refill tolerance's. Bad input names the field, the value and the allowed range (PRX-01, VAL).
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from cython_ext.fields import FileErrors
from hil.scenario.schema import parse_scenario

MINIMAL = """
[scenario]
name = "m"
duration_days = 2

[therapy]
{key} = {value}
"""


@pytest.mark.parametrize(("key", "value", "allowed"), [
    ("restart_titration_after_h", "25", "[0, 24] h"),
    ("restart_titration_after_h", "24.001", "[0, 24] h"),
    ("refill_tolerance_pct", "101", "[0, 100] %"),
    ("refill_tolerance_pct", "12.5", "[0, 100] %"),
])
def test_a_therapy_setting_the_controller_would_refuse_is_refused_in_the_file(key: str, value: str,
                                                                              allowed: str) -> None:
    """PRX-01, RES-03, the restart rule: the error names therapy.<key>, the value, and the range in the file's unit."""
    with pytest.raises(FileErrors) as refused:
        parse_scenario(MINIMAL.format(key=key, value=value))
    assert refused.value.field == f"therapy.{key}"
    assert allowed in refused.value.allowed, refused.value.allowed


@pytest.mark.parametrize(("key", "value", "read"), [
    ("restart_titration_after_h", "0", ("restart_titration_after_ms", 0)),
    ("restart_titration_after_h", "24", ("restart_titration_after_ms", 24 * 3_600_000)),
    ("refill_tolerance_pct", "0", ("refill_tolerance_pct", Decimal(0))),
    ("refill_tolerance_pct", "100", ("refill_tolerance_pct", Decimal(100))),
])
def test_the_bounds_themselves_are_accepted(key: str, value: str, read: tuple[str, object]) -> None:
    """The restart rule, RES-03: 0 and 24 h (stricter than the default allowed, never looser), 0 and 100 %."""
    therapy = parse_scenario(MINIMAL.format(key=key, value=value)).therapy
    assert getattr(therapy, read[0]) == read[1]
