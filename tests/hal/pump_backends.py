"""One way to stand up "a connected NE-1000 driver" per backend, for the shared behaviour suite.

Backends:

* ``nullmodem``: the driver on an in-memory link straight to the simulated firmware;
* ``inprocess``, ``pty``, ``tcp``: ``hal.open_pump`` on a URL served by
  :func:`sim.rig.simulated_pump` (the same bytes a real port would carry);
* ``hardware``: ``hal.open_pump`` on ``ITB_HIL_PUMP`` (a real pump; opt-in, marked ``hil``).
  The suite sets the pump's syringe diameter to ``ITB_HIL_PUMP_DIAMETER_MM``
  (default 14.43 mm) and runs it at up to 1 mL/h for a few seconds: load a
  syringe of water and a waste line before running it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import hal
from hal.clock import Clock, SystemClock
from hal.newera.driver import Ne1000Driver
from hal_links import DeviceLink
from sim.clock import VirtualClock
from sim.newera import Ne1000

SIM_BACKENDS = ("nullmodem", "inprocess", "pty", "tcp")
ALL_BACKENDS = (*SIM_BACKENDS, "hardware")
#: Syringe used by the suite: 14.43 mm (a 10 mL syringe), volumes in mL.
DIAMETER_MM = "14.43"


def bench_diameter_mm() -> str:
    """Syringe diameter for the suite: ``ITB_HIL_PUMP_DIAMETER_MM`` on the bench, else 14.43 mm."""
    return os.environ.get("ITB_HIL_PUMP_DIAMETER_MM", DIAMETER_MM)


@dataclass
class Backend:
    """A connected driver, the simulated device behind it (None on hardware) and the clock."""

    name: str
    driver: Ne1000Driver
    device: Ne1000 | None
    clock: Clock
    rig: Any = None

    @property
    def simulated(self) -> bool:
        """True unless a real pump answers."""
        return self.device is not None

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass on the pump: virtual time in simulation, real time on hardware."""
        if isinstance(self.clock, VirtualClock):
            self.clock.advance(seconds)
        else:
            time.sleep(seconds)


@contextmanager
def open_backend(name: str, *, faults: tuple[str, ...] = (), trace_path: Path | None = None,
                 timeout_s: float = 0.5, safe_mode_timeout_s: int | None = None,
                 **pump_kwargs: Any) -> Iterator[Backend]:
    """Open a connected driver on backend ``name``; closes everything on exit."""
    pump_kwargs.setdefault("syringe_diameter_mm", DIAMETER_MM)
    with ExitStack() as stack:
        if name == "hardware":
            url = os.environ.get("ITB_HIL_PUMP")
            if not url:
                pytest.skip("set ITB_HIL_PUMP=<url> to run the suite on a real pump")
            clock: Clock = SystemClock()
            driver = hal.open_pump("ne1000", url, clock=clock, timeout_s=timeout_s, trace_path=trace_path,
                                   safe_mode_timeout_s=safe_mode_timeout_s)
            stack.callback(driver.close)
            driver.configure(syringe_diameter_mm=bench_diameter_mm())
            yield Backend(name, driver, None, clock)  # type: ignore[arg-type]
            return
        clock = VirtualClock()
        if name == "nullmodem":
            assert not faults, "faults need a rig backend"
            device = Ne1000(clock, **pump_kwargs)
            driver = Ne1000Driver(DeviceLink(device), clock=clock)
            stack.callback(driver.close)
            driver.connect(safe_mode_timeout_s=safe_mode_timeout_s)
            yield Backend(name, driver, device, clock)
            return
        from sim.rig import simulated_pump

        rig = stack.enter_context(simulated_pump(name, clock=clock, faults=faults, **pump_kwargs))
        driver = hal.open_pump("ne1000", rig.url, clock=clock, timeout_s=timeout_s, trace_path=trace_path,
                               safe_mode_timeout_s=safe_mode_timeout_s)
        stack.callback(driver.close)
        yield Backend(name, driver, rig.device, clock, rig)  # type: ignore[arg-type]
