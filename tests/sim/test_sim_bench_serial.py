"""``itb bench serial`` produces consistent figures (timing itself is not asserted here)."""

from __future__ import annotations

import argparse

import pytest

from hil.bench import serial as bench_serial
from hil.cmd_bench import BENCHMARKS


def test_registered() -> None:
    assert BENCHMARKS["serial"] == "hil.bench.serial"


def test_wire_time_arithmetic() -> None:
    assert bench_serial.wire_time_s(b"0\r", b"\x0200S\x03", 19200) == pytest.approx(70 / 19200)


def test_quick_run_reports_consistent_figures() -> None:
    figures = bench_serial.run(argparse.Namespace(quick=True, json=True))
    assert figures["repetitions"] == 50
    median_ms = figures["paced_19200_rtt_median_ms"]
    assert figures["paced_19200_ratio_to_wire_time"] == pytest.approx(
        median_ms / figures["paced_19200_wire_time_ms"], rel=1e-3
    )
    assert figures["paced_19200_within_target"] == (figures["paced_19200_ratio_to_wire_time"] <= 1.15)
    assert figures["driver_paced_19200_within_target"] == (figures["driver_paced_19200_ratio_to_wire_time"] <= 1.15)
    for key in ("unpaced_rtt", "unpaced_tcp_rtt", "paced_19200_rtt", "driver_paced_19200_rtt"):
        assert 0 < figures[f"{key}_median_ms"] <= figures[f"{key}_p95_ms"] <= figures[f"{key}_max_ms"]
