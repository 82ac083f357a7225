"""The fuzz suite counts its inputs (:data:`tests.fuzz.inputs.FED`) and says how many it fed."""

from __future__ import annotations

import pytest

from tests.fuzz.inputs import FED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FED:
        parts = ", ".join(f"{count} to {what}" for what, count in sorted(FED.items()))
        terminalreporter.write_line(f"fuzz: {sum(FED.values())} inputs ({parts})")
