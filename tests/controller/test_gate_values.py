"""Gates built from the same inputs share the kernel's immutable caps, envelope and library entry; bad input
is refused every time, and values that compare equal but differ in type never share what was checked.

Oracle: the kernel's own constructors (``make_caps``, ``make_envelope``, ``library_entry``) called directly.
"""

from __future__ import annotations

import pytest

from controller.gate import KernelGate
from cython_ext import kernel
from cython_ext.errors import ConfigError

CAPS = {"max_dose_ng_per_day": 500_000, "origin": "spinal", "titration_cap_pct": 30, "bolus_enabled": True}


def _gate(caps: dict) -> KernelGate:
    return KernelGate(500, caps, min_rate_nl_per_h=1, max_rate_nl_per_h=10_000_000)


def test_gates_of_the_same_inputs_hold_the_kernels_own_values() -> None:
    a, b = _gate(CAPS), _gate(dict(CAPS))
    assert a.caps == b.caps == kernel.make_caps(**CAPS)
    assert a.envelope == kernel.make_envelope(1, min(10_000_000, kernel.MAX_RATE_NL_PER_H), 1)
    assert a.kernel.limits == kernel.library_entry(500)
    assert a.kernel is not b.kernel and a.kernel.ledger is not b.kernel.ledger


@pytest.mark.parametrize("field, value", [("bolus_enabled", 1), ("max_dose_ng_per_day", 500_000.0),
                                          ("max_dose_ng_per_day", -1)])
def test_bad_caps_are_refused_every_time_even_when_they_equal_good_ones(field, value) -> None:
    _gate(CAPS)  # the good caps built first
    for _ in range(2):
        with pytest.raises((ConfigError, TypeError), match=field):
            _gate({**CAPS, field: value})
