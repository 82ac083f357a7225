"""One way to stand up "a connected NE-1000 driver" per backend, for the shared behaviour suite.

Backends:

* ``nullmodem``: the driver on an in-memory link straight to the simulated firmware;
* ``inprocess``, ``pty``, ``tcp``: ``hal.open_pump`` on a URL served by
  :func:`sim.rig.simulated_pump` (the same bytes a real port would carry);
* ``hardware``: ``hal.open_pump`` on a real pump (opt-in, marked ``hil``), named by
  ``ITB_HIL_PUMP=<url>`` or by the ``[pump]`` table of ``pytest --hil-env bench.toml``.
  The suite sets the pump's syringe diameter (``ITB_HIL_PUMP_DIAMETER_MM``, the
  profile's ``[syringe] spec = "NN.NNmm"``, or 14.43 mm) and runs it at up to
  1 mL/h for a few seconds: load a syringe of water and a waste line first.
"""

from __future__ import annotations

import os
import time
import tomllib
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


def _bench_profile(hil_env: str | None) -> dict[str, Any]:
    if not hil_env:
        return {}
    with open(hil_env, "rb") as file:
        return tomllib.load(file)


def hardware_pump_settings(hil_env: str | None = None) -> dict[str, Any]:
    """The real pump's ``url``/``baudrate``/``address``: ``ITB_HIL_PUMP`` wins over the bench profile's ``[pump]``."""
    settings = {k: v for k, v in _bench_profile(hil_env).get("pump", {}).items() if k in ("url", "baudrate", "address")}
    if os.environ.get("ITB_HIL_PUMP"):
        settings["url"] = os.environ["ITB_HIL_PUMP"]
    return settings


def bench_diameter_mm(hil_env: str | None = None) -> str:
    """Syringe diameter for the suite, mm: ``ITB_HIL_PUMP_DIAMETER_MM``, else a bench profile
    ``[syringe] spec = "NN.NNmm"``, else 14.43."""
    if os.environ.get("ITB_HIL_PUMP_DIAMETER_MM"):
        return os.environ["ITB_HIL_PUMP_DIAMETER_MM"]
    spec = str(_bench_profile(hil_env).get("syringe", {}).get("spec", ""))
    return spec[:-2] if spec.endswith("mm") else DIAMETER_MM


@dataclass
class Backend:
    """A connected driver, the simulated device behind it (None on hardware) and the clock."""

    name: str
    driver: Ne1000Driver
    device: Ne1000 | None
    clock: Clock
    rig: Any = None
    diameter_mm: str = DIAMETER_MM

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
                 hil_env: str | None = None,
                 timeout_s: float = 0.5, safe_mode_timeout_s: int | None = None,
                 **pump_kwargs: Any) -> Iterator[Backend]:
    """Open a connected driver on backend ``name``; closes everything on exit."""
    pump_kwargs.setdefault("syringe_diameter_mm", DIAMETER_MM)
    with ExitStack() as stack:
        if name == "hardware":
            bench = hardware_pump_settings(hil_env)
            if "url" not in bench:
                pytest.skip("set ITB_HIL_PUMP=<url> or give --hil-env with a [pump] url to use a real pump")
            clock: Clock = SystemClock()
            driver = hal.open_pump("ne1000", bench["url"], clock=clock, timeout_s=timeout_s, trace_path=trace_path,
                                   safe_mode_timeout_s=safe_mode_timeout_s, baudrate=bench.get("baudrate", 19200),
                                   address=bench.get("address", 0))
            stack.callback(driver.close)
            diameter_mm = bench_diameter_mm(hil_env)
            driver.configure(syringe_diameter_mm=diameter_mm)
            yield Backend(name, driver, None, clock, diameter_mm=diameter_mm)  # type: ignore[arg-type]
            return
        clock = VirtualClock()
        if name == "nullmodem":
            assert not faults, "faults need a rig backend"
            device = Ne1000(clock, **pump_kwargs)
            driver = Ne1000Driver(DeviceLink(device), clock=clock)
            stack.callback(driver.close)
            driver.connect(safe_mode_timeout_s=safe_mode_timeout_s)
            yield Backend(name, driver, device, clock, diameter_mm=str(pump_kwargs["syringe_diameter_mm"]))
            return
        from sim.rig import simulated_pump

        rig = stack.enter_context(simulated_pump(name, clock=clock, faults=faults, **pump_kwargs))
        driver = hal.open_pump("ne1000", rig.url, clock=clock, timeout_s=timeout_s, trace_path=trace_path,
                               safe_mode_timeout_s=safe_mode_timeout_s)
        stack.callback(driver.close)
        yield Backend(name, driver, rig.device, clock, rig,  # type: ignore[arg-type]
                      diameter_mm=str(pump_kwargs["syringe_diameter_mm"]))


class NoiseSwitch:
    """A byte device that passes traffic to a clean pump until :attr:`noisy` is set, then through faults."""

    def __init__(self, clean: Any, noisy: Any) -> None:
        self.clean = clean
        self.faulty = noisy
        self.noisy = False

    @property
    def _active(self) -> Any:
        return self.faulty if self.noisy else self.clean

    def receive(self, data: bytes) -> bytes:
        """Pass host bytes to the active path."""
        return self._active.receive(data)

    def poll(self) -> bytes:
        """Unsolicited bytes from the active path."""
        return self._active.poll()


@contextmanager
def open_noisy_inprocess(noise: tuple[str, ...], *, seed: int = 0, safe_mode_timeout_s: int | None = None,
                         **pump_kwargs: Any) -> Iterator[Backend]:
    """A driver on ``itbsim://`` that connects over a clean line, after which ``noise`` faults apply."""
    from sim.endpoints import InProcessEndpoint
    from sim.faults import FaultyDevice

    pump_kwargs.setdefault("syringe_diameter_mm", DIAMETER_MM)
    clock = VirtualClock()
    pump = Ne1000(clock, seed=seed, **pump_kwargs)
    switch = NoiseSwitch(pump, FaultyDevice(pump, list(noise), clock=clock, seed=seed))
    with ExitStack() as stack:
        endpoint = stack.enter_context(InProcessEndpoint(switch))
        driver = hal.open_pump("ne1000", endpoint.url, clock=clock, safe_mode_timeout_s=safe_mode_timeout_s)
        stack.callback(driver.close)
        switch.noisy = True
        yield Backend("inprocess-noisy", driver, pump, clock, diameter_mm=str(pump_kwargs["syringe_diameter_mm"]))
