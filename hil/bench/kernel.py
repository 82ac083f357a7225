"""``itb bench kernel``: how long one ``SafetyKernel.authorize`` takes, compiled and twin.

The workload and its timing live in :mod:`controller.benchmarks` (only the
controller imports the kernel); this module runs it for the CLI.
Targets: compiled median < 2 µs and >= 20x faster than the twin.
"""

from __future__ import annotations

import argparse

from controller.benchmarks import kernel_figures


def run(args: argparse.Namespace) -> dict:
    """Benchmark entry point (``itb bench kernel [--quick] [--json]``)."""
    return kernel_figures(quick=bool(getattr(args, "quick", False)))
