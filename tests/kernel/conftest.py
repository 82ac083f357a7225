"""Fixtures and Hypothesis strategies shared by the kernel tests.

``impl`` runs a test once per implementation (compiled kernel and pure-Python
twin); ``compiled`` and ``twin`` give one each for differential tests.
"""

from __future__ import annotations

import pytest
from hypothesis import strategies as st

from cython_ext import kernel as selected
from cython_ext.units import MS_PER_DAY

COMPILED = selected.load("compiled")
TWIN = selected.load("python")
MINUTE_MS = 60_000


@pytest.fixture(params=["compiled", "python"])
def impl(request):
    """Each kernel implementation in turn."""
    return selected.load(request.param)


@pytest.fixture
def compiled():
    return COMPILED


@pytest.fixture
def twin():
    return TWIN


def decision_key(decision) -> tuple:
    """A decision as plain data, comparable across implementations."""
    fields = decision._asdict()
    programme = fields.pop("programme")
    fields["programme"] = None if programme is None else programme.key()
    request = fields.pop("request")
    fields["request_kind"] = request.kind
    return tuple(sorted(fields.items()))


def make_gate(k, *, concentration=500, max_dose_ng_per_day=400_000, programme_rate=16_000, since_ms=0, **caps_kwargs):
    """A kernel on the default library with a simple continuous programme (or none if rate is None)."""
    limits = k.DEFAULT_LIBRARY[concentration]
    caps = k.make_caps(max_dose_ng_per_day=max_dose_ng_per_day, **caps_kwargs)
    envelope = k.make_envelope(2_000, 1_000_000)
    programme = None if programme_rate is None else k.Programme.continuous(programme_rate, concentration)
    return k.SafetyKernel(limits, caps, envelope, k.Ledger(), programme=programme, programme_since_ms=since_ms)


# -- strategies ------------------------------------------------------------------------------

def bounds_strategy(low: int, high: int):
    """Valid ordered bounds inside [low, high]."""
    return st.lists(st.integers(low, high), min_size=4, max_size=4).map(sorted).map(tuple)


@st.composite
def limits_strategy(draw, k):
    conc = draw(st.sampled_from([50, 500, 1000, 2000]))
    base = k.DEFAULT_LIBRARY[conc]
    dose = draw(bounds_strategy(1_000, 3_000_000))
    rate = draw(bounds_strategy(1_000, 1_200_000))
    bolus = draw(bounds_strategy(0, 150_000))
    return base._replace(
        dose_ng_per_day=k.Bounds(*dose),
        rate_nl_per_h=k.Bounds(*rate),
        bolus_ng=k.Bounds(*bolus),
        screening_only=draw(st.booleans()) if conc == 50 else False,
    )


@st.composite
def steps_strategy(draw, *, max_steps=13, rates=st.integers(0, 60_000)):
    n = draw(st.integers(1, max_steps))
    cuts = sorted(draw(st.sets(st.integers(1, MS_PER_DAY // MINUTE_MS - 1), min_size=n - 1, max_size=n - 1)))
    starts = [0] + [c * MINUTE_MS for c in cuts]
    ends = starts[1:] + [MS_PER_DAY]
    return [(s, e - s, draw(rates)) for s, e in zip(starts, ends)]


@st.composite
def periodic_strategy(draw):
    n = draw(st.integers(0, 3))
    out = []
    cursor = 0
    for _ in range(n):
        start = draw(st.integers(cursor, cursor + 6 * 60)) * MINUTE_MS
        duration = draw(st.integers(1, 60)) * MINUTE_MS
        if start + duration > MS_PER_DAY:
            break
        out.append((start, duration, draw(st.integers(1, 200_000))))
        cursor = (start + duration) // MINUTE_MS
    return out
