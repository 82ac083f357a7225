"""Fuzz the ``itb`` argument parsing and the fault-spec parser (issue #15).

Every option that takes a number, a quantity with its unit or a fault spec is fed the
same odd texts. Each either parses to a value inside the documented range (the table
below, written from the README's limits, not from the code) or is argparse's usage error,
exit status 2, naming the option; nothing else escapes. A fault spec that parses is then
run on a simulated pump in virtual time, where ``delay:s=1e308`` used to crash the thread.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cython_ext.errors import ConfigError
from hil.cli import build_parser
from hil.gravimetric.profile import parse_duration_s, parse_rate_request, parse_syringe_mm
from sim.clock import VirtualClock
from sim.faults import KINDS, FaultyDevice, parse_fault
from sim.newera import Ne1000
from tests.fuzz.inputs import FED, ODD_NUMBERS, ODD_STRINGS

PARSER = build_parser()
NS_PER_S = 1_000_000_000


def number_in(low: float, high: float, *, whole: bool = False, low_open: bool = False) -> Callable[[Any], bool]:
    """A check that a parsed value is a finite number (an int if ``whole``) in the range."""

    def check(value: Any) -> bool:
        if whole and (isinstance(value, bool) or not isinstance(value, int)):
            return False
        above = value > low if low_open else value >= low
        return isinstance(value, (int, float)) and math.isfinite(value) and above and value <= high

    return check


def decimal_in(low: str, high: str, *, low_open: bool = False) -> Callable[[Any], bool]:
    """A check that a value kept as text is a plain decimal in the range."""

    def check(value: Any) -> bool:
        number = Decimal(value.strip())
        return number.is_finite() and (number > Decimal(low) if low_open else number >= Decimal(low)) and (
            number <= Decimal(high))

    return check


def reads_with(parse: Callable[..., Any]) -> Callable[[Any], bool]:
    """A check that a value kept as text is one its reader accepts (it raises otherwise)."""
    return lambda value: parse(value) is not None


#: Every option that takes a number, a quantity or a fault spec: (argv before it, option, check).
OPTIONS: list[tuple[list[str], str, Callable[[Any], bool]]] = [
    (["run"], "--speed", number_in(0, 1000, low_open=True)),
    (["run"], "--safe-mode", number_in(1, 255, whole=True)),
    (["run"], "--days", number_in(0, 3650, low_open=True)),
    (["sim", "serve"], "--address", number_in(0, 99, whole=True)),
    (["sim", "serve"], "--baud", lambda v: v in (19200, 9600, 2400, 1200, 300)),
    (["sim", "serve"], "--safe-timeout", number_in(0, 255, whole=True)),
    (["sim", "serve"], "--speed", number_in(0, 100_000, low_open=True)),
    (["sim", "serve"], "--seed", number_in(0, 2**32 - 1, whole=True)),
    (["sim", "serve"], "--bias-pct", number_in(-50, 50)),
    (["sim", "serve"], "--noise-pct", number_in(0, 20)),
    (["sim", "serve"], "--diameter-mm", decimal_in("0.1", "50")),
    (["sim", "serve"], "--syringe-ml", decimal_in("0", "1000", low_open=True)),
    (["sim", "serve"], "--fill-ml", decimal_in("0", "1000")),
    (["sim", "serve"], "--dose-step-nl", number_in(0, 10**9, whole=True)),
    (["sim", "serve"], "--fault", reads_with(parse_fault)),
    (["hil", "accuracy"], "--rate", reads_with(parse_rate_request)),
    (["hil", "accuracy"], "--syringe", reads_with(parse_syringe_mm)),
    (["hil", "accuracy"], "--duration", reads_with(parse_duration_s)),
    (["hil", "accuracy"], "--interval", reads_with(parse_duration_s)),
    (["hil", "accuracy"], "--stabilise", reads_with(parse_duration_s)),
    (["hil", "accuracy"], "--water-temp", number_in(0, 40)),
    (["hil", "accuracy"], "--max-unstable", number_in(0, 1)),
    (["hil", "accuracy"], "--max-missing", number_in(0, 1)),
    (["hil", "accuracy"], "--bias-pct", number_in(-50, 50)),
    (["hil", "accuracy"], "--noise-pct", number_in(0, 20)),
    (["hil", "accuracy"], "--balance-noise-ug", number_in(0, 10**6)),
    (["hil", "accuracy"], "--balance-resolution-ug", number_in(1, 10**6, whole=True)),
    (["hil", "accuracy"], "--seed", number_in(0, 2**32 - 1, whole=True)),
    (["hil", "accuracy"], "--fault", reads_with(parse_fault)),
    (["hil", "accuracy"], "--limit-pct", number_in(0, 100, low_open=True)),
    (["hil", "blank"], "--duration", reads_with(parse_duration_s)),
    (["hil", "blank"], "--interval", reads_with(parse_duration_s)),
    (["hil", "blank"], "--sim-evaporation-ug-per-h", number_in(0, 10**6)),
    (["hil", "balance"], "--readings", number_in(1, 1000, whole=True)),
    (["run"], "--baud", number_in(50, 4_000_000, whole=True)),
    (["run"], "--address", number_in(0, 99, whole=True)),
    (["trace", "replay", "t.txt"], "--seed", number_in(0, 2**32 - 1, whole=True)),
    (["trace", "replay", "t.txt"], "--bias-pct", number_in(-50, 50)),
    (["trace", "replay", "t.txt"], "--syringe-ml", decimal_in("0", "1000", low_open=True)),
    (["trace", "replay", "t.txt"], "--diameter-mm", decimal_in("0.1", "50")),
    (["prescription", "check", "rx.toml"], "--fill-date", lambda v: isinstance(v, date)),
]

_FAULT_KEYS = ["p", "dir", "bytes", "s", "at_byte", "clear", "off", "ppm", "at", "after", "match", "count", "x"]
#: Fault specs: known and unknown kinds with known and unknown keys and odd values.
fault_specs = st.builds(
    lambda kind, pairs: kind + (":" + ",".join(f"{k}={v}" for k, v in pairs) if pairs else ""),
    st.one_of(st.sampled_from(KINDS), st.sampled_from(["", "STALL", "explode", " stall "])),
    st.lists(st.tuples(st.sampled_from(_FAULT_KEYS), st.one_of(st.sampled_from(ODD_NUMBERS),
                                                                st.sampled_from(["rx", "tx", "RUN", "(", ".*", ""]))),
             max_size=4),
)
#: Argument texts: odd numbers and strings, numbers near every bound, unicode digits, fault specs.
texts = st.one_of(
    st.sampled_from(ODD_NUMBERS),
    st.sampled_from([s for s in ODD_STRINGS if "\x00" not in s]),
    st.integers(-(2**40), 2**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["٣", "１", " 5 ", "+5", "5.", ".5", "1e-400", "2026-01-05", "2026-02-30", "0.5mL/h", "99h"]),
    fault_specs,
    st.text(max_size=12).filter(lambda t: "\x00" not in t),
)
#: 120 texts, each given to all 41 options: 4920 inputs to the parser.
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def parse(argv: list[str]) -> Any:
    """``itb`` argv parsed, or the usage error's exit status and message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return PARSER.parse_args(argv)
    except SystemExit as exit_:
        return exit_.code, err.getvalue()


@FUZZ
@given(text=texts)
def test_every_number_and_fault_argument_is_in_range_or_a_usage_error(text: str) -> None:
    for before, option, in_range in OPTIONS:
        FED["the itb argument parser"] += 1
        outcome = parse([*before, f"{option}={text}"])
        if isinstance(outcome, tuple):
            status, message = outcome
            assert status == 2 and f"argument {option}" in message, message
            continue
        value = getattr(outcome, option.lstrip("-").replace("-", "_"))
        value = value[0] if isinstance(value, list) else value
        assert in_range(value), f"{option}={text!r} parsed to {value!r}"


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=st.one_of(fault_specs, st.text(max_size=40)))
def test_a_fault_spec_is_refused_or_runs_without_harm(spec: str) -> None:
    FED["the fault-spec parser"] += 1
    try:
        parsed = parse_fault(spec)
    except ConfigError as exc:
        assert exc.field and exc.allowed
        return
    clock = VirtualClock()
    device = FaultyDevice(Ne1000(clock, power_on_alarm=False), [parsed], clock=clock, seed=1)
    for command in (b"0VER\r", b"0RAT3600UH\r", b"0RUN\r", b"0\r"):
        device.receive(command)
        clock.advance_ns(NS_PER_S)
        device.poll()
    due = device.next_poll_ns()
    assert due is None or isinstance(due, int)


@pytest.mark.parametrize("spec", ["delay:s=1e308", "stall:at=1e308", "split:s=inf", "occlusion:clear=1e999",
                                  "power-cycle:at=1,off=1e400", "gap:p=0.5,s=1e308", "junk:bytes=1e9"])
def test_absurd_fault_values_are_refused_before_any_thread_starts(spec: str) -> None:
    """Regression (issue #15): ``delay:s=1e308`` passed the parser and crashed the simulator thread."""
    with pytest.raises(ConfigError) as excinfo:
        parse_fault(spec)
    assert "must be" in str(excinfo.value)
