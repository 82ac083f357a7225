"""Published New Era clients from PyPI, run unchanged against ``itb sim serve`` over a pty.

Three clients were found on PyPI (the search tools and the package list):
``nesp-lib`` 2.0.0 (Basic and Safe mode, NE-500/1000 family), ``new-era``
2.2.3 (written for the NE-9000 peristaltic pump, same protocol) and
``labmcp-new-era`` 0.1.2 (Basic mode; its driver over the ``labmcp`` serial
transport, which the balance clients already bring). Each test runs the
client's documented operations and checks the results against the client's
own answers and against the simulated pump's state (the control plane).

Where a client is wrong by the NE-1000 manual, the test shows it and the
simulator is not bent to it:

* nesp-lib, ``Pump(port, safe_mode_timeout_s=n)`` on a pump with its power-up
  ``A?R`` latched sends ``SAF n`` and waits for a Safe-framed reply; the pump
  does not execute a command its alarm reply swallows, stays in Basic mode and
  answers ``A?R`` in Basic framing, which nesp-lib reads as the length byte
  ``0x30`` and then blocks (its port has no timeout). Entering Safe mode after
  connecting (the ``safe_mode_timeout_s`` setter) works.
* new-era, ``set_volume(v, unit)`` sends value and units in one ``VOL`` command;
  the NE-1000 takes them as two (``VOL ML``, ``VOL v``) and answers ``?``.
  ``set_diameter`` sends the NE-9000's tubing fraction (``DIA 3/16``): ``?``.
  Its ounce units (``OZ``, ``OM``, ``OS``) do not exist on a syringe pump.
  Its ``address`` getter sends ``0*ADR``: an address and ``*`` together, which
  the manual's grammar (``[<address> | *]``) does not allow; the pump reads it
  as a network burst and answers only the status part, so the getter fails
  parsing an empty reply.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest

nesp_lib = pytest.importorskip("nesp_lib")
peristaltic_pump = pytest.importorskip("new_era.peristaltic_pump")
labmcp_transports = pytest.importorskip("labmcp.transports")
labmcp_new_era = pytest.importorskip("labmcp_new_era.driver")

#: A client that waits forever for a reply (nesp-lib's port has no timeout) must not hang CI.
pytestmark = pytest.mark.timeout(60)

Served = Any  # tests/interop/conftest.py: Served (a running itb sim serve and its control plane)
Serve = Callable[..., AbstractContextManager[Served]]


def wait_until_stopped(sim: Served, deadline_s: float = 20.0) -> dict[str, object]:
    """Poll the control plane until the pump has stopped (an event wait, bounded)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        state = sim.control("state")
        if state["state"] == "S":
            return state
        time.sleep(0.02)
    raise AssertionError("the simulated pump did not stop")


def nesp_session(pump: object, sim: Served) -> None:
    """nesp-lib's documented operations: syringe, direction, volume, rate, run to the volume, counters."""
    assert (pump.model_number, pump.firmware_version, pump.firmware_upgrade) == (1000, (3, 928), 0)
    pump.syringe_diameter_mm = 26.59
    assert pump.syringe_diameter_mm == 26.59
    pump.pumping_direction = nesp_lib.PumpingDirection.INFUSE
    assert pump.pumping_direction is nesp_lib.PumpingDirection.INFUSE
    pump.pumping_volume_ml = 0.05  # sent as VOL UL, VOL 50
    assert pump.pumping_volume_ml == pytest.approx(0.05)
    pump.pumping_rate_ml_per_min = 10.0  # sent as RAT 600 MH
    assert pump.pumping_rate_ml_per_min == pytest.approx(10.0)
    pump.volume_infused_clear()
    pump.volume_withdrawn_clear()
    assert pump.status is nesp_lib.Status.STOPPED
    pump.run()  # waits while running: 0.05 mL at 10 mL/min is 0.3 s
    assert pump.status is nesp_lib.Status.STOPPED
    assert pump.volume_infused_ml == pytest.approx(0.05)
    assert pump.volume_withdrawn_ml == 0.0
    assert sim.control("state")["infused_nl"] == 50_000


def test_nesp_lib_in_basic_mode(sim_serve: Serve) -> None:
    with sim_serve() as sim:
        port = nesp_lib.Port(sim.url, baud_rate=19200)
        try:
            pump = nesp_lib.Pump(port)  # SAF0 as a Safe packet; the reply comes in Basic framing
            assert pump.safe_mode_timeout_s == 0
            nesp_session(pump, sim)
        finally:
            port.close()


def test_nesp_lib_in_safe_mode(sim_serve: Serve) -> None:
    with sim_serve() as sim:
        port = nesp_lib.Port(sim.url, baud_rate=19200)
        try:
            pump = nesp_lib.Pump(port)  # acknowledges the power-up alarm in Basic mode
            pump.safe_mode_timeout_s = 10  # SAF10 as a Safe packet, answered in Safe framing
            assert sim.control("state")["safe_timeout_s"] == 10
            assert pump.safe_mode_timeout_s == 10
            nesp_session(pump, sim)
            pump.safe_mode_timeout_s = 0  # back to Basic mode, its heartbeat thread stops
            assert sim.control("state")["safe_timeout_s"] == 0
            assert pump.status is nesp_lib.Status.STOPPED
        finally:
            port.close()


def test_new_era_in_basic_mode(sim_serve: Serve) -> None:
    with sim_serve("--diameter-mm", "26.59") as sim:
        pump = peristaltic_pump.PeristalticPump(sim.url, baudrate=19200)  # AL 1 (swallowed by A?R), STP, TRG LE, VER
        try:
            assert pump.get_trigger() == ("rising", "falling")
            pump.set_rate(10, "ml/min")
            assert pump.get_rate() == pytest.approx(10.0)
            pump.set_volume_unit("ml")
            pump.set_volume(0.05)
            assert pump.get_volume() == pytest.approx(0.05)
            pump.set_direction("dispense")
            assert pump.get_direction() == "dispense"
            pump.reset_volume()
            assert pump.get_status() == "pumping program stopped"
            pump.start()
            wait_until_stopped(sim)
            assert pump.get_dispensed() == pytest.approx(0.05)
            assert pump.get_withdrawn() == 0.0
            assert pump.get_TTL() is True, "IN 2: an open trigger input reads high"
            with pytest.raises(peristaltic_pump.NewEraPumpCommError):
                pump.set_volume(0.05, "ml")  # one command for value and units: '?' (see the module docstring)
        finally:
            pump.disconnect()


def test_labmcp_new_era_in_basic_mode(sim_serve: Serve) -> None:
    with sim_serve() as sim:
        # The transport settings its MCP server uses for an NE-1000 (19200 8N1, CR out, ETX in).
        transport = labmcp_transports.open_transport(f"serial://{sim.url}", baudrate=19200,
                                                     read_termination="\x03", write_termination="\r")
        pump = labmcp_new_era.NewEraPump(transport)
        try:
            assert pump.identify()["model"] == "NE-1000" and pump.identify()["firmware"] == "3.928"
            assert pump.set_diameter(26.59) == "26.59"
            assert pump.diameter_mm() == 26.59
            pump.clear_dispensed()
            # Phase 1 = RATE for the volume, phase 2 = STOP, then RUN: the pump stops by itself.
            plan = pump.start_pumping("INF", volume_ml=0.05, rate_ml_min=10.0)
            assert (plan.rate_text, plan.volume_text) == ("10.00MM", "0.050ML")
            state = wait_until_stopped(sim)
            assert state["infused_nl"] == 50_000
            assert pump.dispensed() == (0.05, 0.0, "ML")
            assert pump.rate() == (10.0, "MM") and pump.volume() == (0.05, "ML") and pump.direction() == "INF"
            assert pump.stop().prompt == "S"
        finally:
            pump.close()
