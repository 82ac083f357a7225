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

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hal.pump import PumpDriver

__all__ = ["open_pump"]


def open_pump(name: str, url: str, **settings: Any) -> PumpDriver:
    """Open the pump driver registered as ``name`` on serial ``url`` and connect to the pump.

    Connecting acknowledges a power-up reset alarm with a status query (which
    changes nothing), identifies the pump and, if asked, enters Safe mode.

    :param name: registry name (``"ne1000"``); see :data:`hal.registry.PUMP_DRIVERS`.
    :param url: serial device or pyserial URL.
    :param settings: the driver's own ``open`` settings, checked there (for ``ne1000`` see
        :meth:`hal.newera.driver.Ne1000Driver.open`: ``address``, ``baudrate``, ``timeout_s``,
        ``safe_mode_timeout_s`` for Safe mode with its communications watchdog, ``trace_path``,
        ``clock``).
    :return: a connected driver; close it (or use ``with``).
    :raises HalUnavailableError: no such driver, or it cannot be loaded.
    :raises ConfigError: a setting is out of range or unknown; nothing was opened.
    :raises ConnectError: the port could not be opened.
    :raises CommunicationError: the pump did not answer.
    """
    from hal.registry import resolve

    return resolve("pump", name).open(url, **settings)
