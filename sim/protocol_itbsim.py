"""pyserial URL handler for ``itbsim://<id>``: an in-process simulated device.

pyserial finds this module because :mod:`sim.endpoints` appends ``"sim"`` to
``serial.protocol_handler_packages``; ``serial.serial_for_url("itbsim://sim1")``
then builds :class:`Serial` and binds it to the open
:class:`sim.endpoints.InProcessEndpoint` of that name.

Port settings (baud, parity, timeouts) are accepted and ignored: the device
answers synchronously inside :meth:`Serial.write`, and :meth:`Serial.read`
returns what is buffered without waiting.
"""

from __future__ import annotations

import urllib.parse

import serial
from serial.serialutil import PortNotOpenError, SerialBase, SerialException

from cython_ext.errors import StateError


def _modem_line(name: str, level: bool) -> property:
    """A modem input line that always reads ``level`` (the simulator models none)."""
    return property(lambda self: level, doc=f"{name} (always {level})")


class Serial(SerialBase):
    """A pyserial port backed by an in-process simulated device."""

    def open(self) -> None:
        """Bind to the endpoint named in the URL.

        :raises SerialException: when the URL is malformed or no endpoint has that name.
        """
        from sim.endpoints import InProcessEndpoint

        if self._port is None:
            raise SerialException("port must be configured before it can be used")
        if self.is_open:
            raise SerialException("port already open")
        parts = urllib.parse.urlsplit(self._port)
        if parts.scheme != "itbsim" or not parts.netloc:
            raise SerialException(f"expected a URL like itbsim://sim1, got {self._port!r}")
        try:
            self._endpoint = InProcessEndpoint.lookup(parts.netloc)
        except StateError as exc:
            raise SerialException(str(exc)) from exc
        self.is_open = True

    def close(self) -> None:
        """Unbind (idempotent)."""
        self.is_open = False

    def _reconfigure_port(self) -> None:
        """Port settings do not apply to an in-process device."""

    @property
    def in_waiting(self) -> int:
        """Bytes ready to read."""
        if not self.is_open:
            raise PortNotOpenError()
        return self._endpoint.host_in_waiting()

    def read(self, size: int = 1) -> bytes:
        """Up to ``size`` bytes that are ready; never waits (the device answers synchronously)."""
        if not self.is_open:
            raise PortNotOpenError()
        return self._endpoint.host_read(size)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Send bytes to the device, which answers into the read buffer at once."""
        if not self.is_open:
            raise PortNotOpenError()
        payload = data if type(data) is bytes else serial.to_bytes(data)
        self._endpoint.host_write(payload)
        return len(payload)

    def reset_input_buffer(self) -> None:
        """Drop unread bytes."""
        self._check_open()
        self._endpoint.host_reset_input()

    def reset_output_buffer(self) -> None:
        """Nothing is ever queued for output."""
        self._check_open()

    def flush(self) -> None:
        """Nothing is ever queued for output."""
        if not self.is_open:
            raise PortNotOpenError()

    def _check_open(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()

    # Modem lines: not modelled; reads report an idle, connected line.
    cts = _modem_line("Clear To Send", True)
    dsr = _modem_line("Data Set Ready", True)
    ri = _modem_line("Ring Indicator", False)
    cd = _modem_line("Carrier Detect", True)
