"""A caps change runs ``make_caps`` once, and the shortcut refuses exactly what the full check refuses.

``request_caps_change`` checks the new caps; ``authorize`` re-checks the request (it may be built
directly). The second check finds caps equal, type for type, to ones already accepted and does not
run ``make_caps`` again. Oracle: the full check (``caps_from_dict(caps_to_dict(caps)) == caps``,
what ``_check_caps`` ran before), on caps that equal accepted ones by value but not by type.
"""

from __future__ import annotations

import pytest

import cython_ext._common as common
from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_DAY

from .conftest import make_gate


@pytest.fixture
def make_caps_calls(monkeypatch):
    calls = []
    real = common.make_caps

    def counting(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(common, "make_caps", counting)
    monkeypatch.setattr(common, "_CHECKED_CAPS", set())
    return calls


def test_a_caps_change_runs_make_caps_once(impl, make_caps_calls) -> None:
    gate = make_gate(impl)
    new = gate.caps._replace(titration_start_dose_ng_per_day=123_000)
    confirmation = impl.make_override([impl.CAPS_CHANGE_CONFIRMATION], reason="test", actor="test")
    request = impl.request_caps_change(new, confirmation=confirmation)
    decision = gate.authorize(request, 3 * MS_PER_DAY)
    assert decision.allowed
    gate.apply(decision, 3 * MS_PER_DAY)
    assert gate.caps == new
    assert len(make_caps_calls) == 1


@pytest.mark.parametrize("field, value", [
    ("max_boluses_per_day", True),           # == 1, a bool
    ("bolus_lockout_ms", 4.0 * 3_600_000),   # == 14_400_000, a float
    ("max_dose_ng_per_day", 400_000.0),
    ("bolus_enabled", 1),                    # == True, an int
])
def test_caps_equal_by_value_but_not_by_type_are_still_refused(impl, make_caps_calls, field, value) -> None:
    gate = make_gate(impl)
    good = gate.caps._replace(max_boluses_per_day=1)
    impl.request_caps_change(good, confirmation=None)
    bad = good._replace(**{field: value})
    assert bad == good  # equal as tuples: only the types tell them apart
    with pytest.raises(ConfigError):
        impl.request_caps_change(bad, confirmation=None)
    assert len(make_caps_calls) == 2
