"""Hardware abstraction layer: device role interfaces, wire codecs and drivers.

``hal`` imports only the floor's value modules (``cython_ext.errors``,
``cython_ext.units``, the clinical vocabulary). It holds what the layers above it
share: the injected :class:`~hal.clock.Clock`, the pump role interface (:mod:`hal.pump`), the serial transport
(:mod:`hal.transport`), the driver registry (:mod:`hal.registry`) and one
I/O-free codec per wire protocol.

Open a pump by registry name::

    with hal.open_pump("ne1000", "socket://127.0.0.1:4001") as pump:
        pump.configure(syringe_diameter_mm=14.43)
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hal.transport import DEFAULT_TIMEOUT_S

if TYPE_CHECKING:
    from hal.clock import Clock
    from hal.pump import PumpDriver

__all__ = ["open_pump"]


def open_pump(
    name: str,
    url: str,
    *,
    address: int = 0,
    baudrate: int = 19200,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    safe_mode_timeout_s: int | None = None,
    trace_path: str | Path | None = None,
    clock: Clock | None = None,
) -> PumpDriver:
    """Open the pump driver registered as ``name`` on serial ``url`` and connect to the pump.

    Connecting acknowledges a power-up reset alarm with a status query (which
    changes nothing), identifies the pump and, if asked, enters Safe mode.

    :param name: registry name (``"ne1000"``); see :data:`hal.registry.PUMP_DRIVERS`.
    :param url: serial device or pyserial URL.
    :param address: the pump's bus address, 0-99.
    :param baudrate: bits per second, as set on the pump.
    :param timeout_s: reply timeout, seconds.
    :param safe_mode_timeout_s: if given (1-255 s), switch the pump to Safe mode
        with this communications watchdog; the caller must then call
        ``heartbeat()`` more often than this.
    :param trace_path: write every byte sent and received to this file.
    :param clock: injected clock (system clock by default).
    :return: a connected driver; close it (or use ``with``).
    :raises HalUnavailableError: no such driver, or it cannot be loaded.
    :raises ConfigError: a setting is out of range; nothing was opened.
    :raises ConnectError: the port could not be opened.
    :raises CommunicationError: the pump did not answer.
    """
    from hal.registry import resolve

    driver_class = resolve("pump", name)
    return driver_class.open(
        url,
        address=address,
        baudrate=baudrate,
        timeout_s=timeout_s,
        safe_mode_timeout_s=safe_mode_timeout_s,
        trace_path=trace_path,
        clock=clock,
    )
