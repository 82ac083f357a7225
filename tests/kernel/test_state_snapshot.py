"""The kernel's whole state is one exact, versioned, checksummed snapshot (PER-02, PER-06, SAFE-04).

A snapshot restores into a kernel that decides exactly as the one that wrote it (the
stateful restart test shows it along random histories); here every way a stored snapshot can
go wrong is refused with :class:`ConfigError` (never a ``TypeError``, never a quietly looser
kernel): an older version, a truncation anywhere (even one that still parses), an altered
value, a value of the wrong type, other caps than the snapshot's.
"""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_DAY, MS_PER_H

from .conftest import COMPILED, TWIN

T0 = 20 * MS_PER_DAY


def lived_in(k):
    """A kernel with every part of its state set: history, stop, resume, held caps, bolus, ledger."""
    caps = k.make_caps(max_dose_ng_per_day=1_000_000, origin="cerebral", min_titration_interval_ms=0,
                       patient_bolus_enabled=True, bolus_lockout_ms=MS_PER_H, titration_start_dose_ng_per_day=100_000)
    gate = k.SafetyKernel(k.DEFAULT_LIBRARY[1000], caps, k.make_envelope(2_000, 1_000_000), k.Ledger())
    t = T0

    def act(request):
        d = gate.authorize(request, t)
        assert d.allowed, d.reasons
        gate.apply(d, t)
        return d

    act(k.request_rate_change(10_000))
    for minute in range(0, 2 * 24 * 60, 30):
        gate.ledger.record(0, 5_000_000, T0 + minute * 60_000)
    t = T0 + 2 * MS_PER_DAY
    act(k.request_rate_change(11_000))
    d = act(k.request_bolus(k.DeliveryKind.BOLUS_PATIENT, 10_000, 600_000))
    gate.ledger.record(d.bolus_kind, d.mass_pg // 2, t)
    gate.ledger.release(d.bolus_kind, d.mass_pg // 2)
    gate.note_stopped(t + MS_PER_H)
    t += 2 * MS_PER_H
    act(k.request_minimum_rate())
    t += MS_PER_H
    act(k.request_caps_change(caps._replace(origin=k.Origin.SPINAL), confirmation=k.make_override(
        {"CAPS_CHANGE"}, reason="re-assessed", actor="dr")))
    return gate


def paths(node, prefix=()):
    """Every path to a node below the root."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield prefix + (key,)
        yield from paths(child, prefix + (key,))


def at(node, path):
    for key in path:
        node = node[key]
    return node


STATE = json.loads(json.dumps(lived_in(COMPILED).state_snapshot()))
PATHS = [p for p in paths(STATE) if p != ("checksum",)]


def test_snapshot_is_exact_and_equal_across_implementations(impl):
    gate = lived_in(impl)
    state = json.loads(json.dumps(gate.state_snapshot()))
    assert state == STATE  # the twin writes the very same bytes
    again = impl.SafetyKernel.from_snapshot(state, None, gate.envelope)
    assert again.state_snapshot() == state
    for name in ("dose_history", "therapy_start_ms", "last_increase_ms", "last_step_ms", "interruption", "held_caps",
                 "caps", "state_version", "newest_event_ms"):
        assert getattr(again, name) == getattr(gate, name), name
    assert again.interruption is not None and again.held_caps is not None


def restore(k, state, caps=None):
    return k.SafetyKernel.from_snapshot(state, caps, k.make_envelope(2_000, 1_000_000))


def test_other_versions_and_caps_are_refused(impl):
    with pytest.raises(ConfigError, match="version"):
        restore(impl, dict(STATE, version=1))
    with pytest.raises(ConfigError, match="caps"):
        restore(impl, STATE, impl.make_caps(max_dose_ng_per_day=1_000_000))
    assert restore(impl, STATE, restore(impl, STATE).caps).caps.origin is impl.Origin.SPINAL
    for bad in (None, [], "state", {}):
        with pytest.raises(ConfigError):
            restore(impl, bad)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(PATHS), st.sampled_from(["drop", "truncate", "bump", "float", "text"]))
def test_altered_or_truncated_snapshot_is_refused(path, how):
    """Without a matching checksum nothing restores, however plausible the change."""
    state = copy.deepcopy(STATE)
    parent, key = at(state, path[:-1]), path[-1]
    value = parent[key]
    if how == "drop":
        del parent[key]
    elif how == "truncate":
        parent[key] = value[:-1] if isinstance(value, list) and value else None
    elif how == "bump":
        parent[key] = value + 1 if type(value) is int else not value if type(value) is bool else [value]
    else:
        parent[key] = 1.5 if how == "float" else "x"
    for k in (COMPILED, TWIN):
        with pytest.raises(ConfigError):
            restore(k, state)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(PATHS), st.sampled_from([1.5, "x", None, [], {}]))
def test_wrong_type_is_a_config_error_even_with_a_fresh_checksum(path, junk):
    """The structure is checked too: a rewritten checksum does not let a wrong type through."""
    state = copy.deepcopy(STATE)
    parent, key = at(state, path[:-1]), path[-1]
    if junk is None and parent[key] is None or junk == [] and isinstance(parent[key], list):
        return  # the same kind of value: not malformed
    parent[key] = junk
    state["checksum"] = COMPILED.state_checksum(state)
    for k in (COMPILED, TWIN):
        with pytest.raises(ConfigError):
            restore(k, state)


@pytest.mark.parametrize(("part", "value"), [
    ("dose_history", [[T0, 240_000], [T0 - 1, 0]]),  # out of time order
    ("therapy_start_ms", None),  # a history without a start
    ("interruption", {"since_ms": T0 + 9 * MS_PER_DAY, "dose_before_ng_per_day": 1, "cause": "minimum_rate"}),  # after the history
    ("interruption", {"since_ms": T0, "dose_before_ng_per_day": 1, "cause": "stopped"}),  # stopped, yet a dose in effect
    ("programme", None),  # minimum rate without its programme
])
def test_inconsistent_parts_are_refused(impl, part, value):
    state = copy.deepcopy(STATE)
    state[part] = value
    state["checksum"] = impl.state_checksum(state)
    with pytest.raises(ConfigError):
        restore(impl, state)
