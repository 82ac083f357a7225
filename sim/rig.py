"""Stand up a simulated pump on a port in one line (tests, ``itb run``, the bench harness).

::

    clock = VirtualClock()
    with simulated_pump("pty", clock=clock, faults=["lost-reply:match=RUN"]) as rig:
        driver = hal.open_pump("ne1000", rig.url, clock=clock)
        ...
        clock.advance(60)                            # the pump delivers in virtual time
        rig.device.mechanics.actual_delivered_nl()   # what a balance would weigh
        rig.device.inject_stall()                    # device fault hooks
        rig.faults.add("disconnect:at=5")            # more faults while running
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from hal.clock import Clock
from cython_ext.errors import ConfigError
from sim.endpoints import Endpoint, InProcessEndpoint, PtyEndpoint, TcpEndpoint
from sim.faults import FaultSpec, FaultyDevice, parse_fault
from sim.newera import Ne1000

LINKS = ("pty", "tcp", "inprocess")


@dataclass
class SimulatedRig:
    """A running simulated pump.

    :ivar url: what a client passes to ``serial.serial_for_url`` (or ``hal.open_pump``).
    :ivar device: the simulated :class:`~sim.newera.Ne1000` (fault hooks, mechanics).
    :ivar endpoint: the endpoint serving it.
    :ivar faults: the fault layer between endpoint and pump, or None when no faults were asked for.
    """

    url: str
    device: Ne1000
    endpoint: Endpoint
    faults: FaultyDevice | None = None


@contextmanager
def simulated_pump(
    link: str = "pty",
    *,
    clock: Clock,
    address: int = 0,
    seed: int = 0,
    faults: Iterable[str | FaultSpec] = (),
    trace_path: str | os.PathLike[str] | None = None,
    pace_baud: int | None = None,
    port: int = 0,
    on_traffic: Callable[[str, bytes], None] | None = None,
    fault_layer: bool | None = None,
    **pump_kwargs: Any,
) -> Iterator[SimulatedRig]:
    """Serve a simulated NE-1000 on ``link`` for the duration of the ``with`` block.

    :param link: ``"pty"``, ``"tcp"`` or ``"inprocess"``.
    :param clock: the device clock (a :class:`~sim.clock.VirtualClock` in tests).
    :param address: pump network address, 0-99.
    :param seed: seed for delivery noise and for random faults.
    :param faults: fault spec strings (see :mod:`sim.faults`) or parsed specs.
    :param trace_path: write a timestamped byte trace here.
    :param pace_baud: emulate wire timing at this baud (pty and TCP only).
    :param port: TCP port for ``link="tcp"`` (0 picks a free one).
    :param on_traffic: called with (``"RX"``/``"TX"``, bytes) for every chunk (traffic log).
    :param fault_layer: put a :class:`~sim.faults.FaultyDevice` in front of the pump even
        without faults (to add some later with ``rig.faults.add``); None: only when faults are given.
    :param pump_kwargs: passed to :class:`~sim.newera.Ne1000` (``bias_pct``, ``noise_pct``,
        ``syringe_diameter_mm``, ``syringe_volume_ml``, ``safe_timeout_s``, ...).
    :raises ConfigError: for an unknown link or a bad fault spec.
    """
    if link not in LINKS:
        raise ConfigError("link", link, f"one of {', '.join(LINKS)}")
    specs = [parse_fault(f) if isinstance(f, str) else f for f in faults]
    device_clock = clock
    for spec in specs:
        if spec.kind == "drift":
            from sim.clock import DriftClock

            device_clock = DriftClock(device_clock, float(spec.params["ppm"]))
    pump = Ne1000(device_clock, address=address, seed=seed, **pump_kwargs)
    wrap = bool(specs) if fault_layer is None else fault_layer
    if specs and not wrap:
        raise ConfigError("fault_layer", fault_layer, "True or None when faults are given")
    wrapped = FaultyDevice(pump, specs, clock=clock, seed=seed) if wrap else None
    served = wrapped if wrapped is not None else pump
    endpoint: Endpoint
    if link == "pty":
        endpoint = PtyEndpoint(served, pace_baud=pace_baud, trace_path=trace_path, on_traffic=on_traffic)
    elif link == "tcp":
        endpoint = TcpEndpoint(served, port=port, pace_baud=pace_baud, trace_path=trace_path, on_traffic=on_traffic)
    else:
        if pace_baud is not None:
            raise ConfigError("pace_baud", pace_baud, "None for the in-process link (it has no wire)")
        endpoint = InProcessEndpoint(served, trace_path=trace_path, on_traffic=on_traffic)
    try:
        yield SimulatedRig(url=endpoint.url, device=pump, endpoint=endpoint, faults=wrapped)
    finally:
        endpoint.close()
