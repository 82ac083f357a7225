"""The byte-device protocol every simulated device implements.

A simulated device is a bytes-in, bytes-out state machine driven by an
injected :class:`~hal.clock.Clock`. It knows nothing about ptys, sockets or
threads: an endpoint (:mod:`sim.endpoints`) moves bytes between a transport and
the device, and calls :meth:`ByteDevice.poll` often enough for unsolicited
output (Safe-mode alarm packets, streamed balance readings) to leave on time::

    host --bytes--> endpoint --receive(data)--> device
    host <--bytes-- endpoint <--returned bytes-- device
                    endpoint --poll()---------> device   (unsolicited, due now)

Calls into one device are serialised by the endpoint that owns it; devices
that are also driven from test code (fault hooks) guard their own state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol, runtime_checkable

from cython_ext.errors import ConfigError


@runtime_checkable
class ByteDeviceProtocol(Protocol):
    """The structural protocol (what :mod:`sim.endpoints` needs from a device)."""

    def receive(self, data: bytes) -> bytes:
        """Consume ``data`` from the host, at the device clock's now; return the bytes to send."""

    def poll(self) -> bytes:
        """Return unsolicited bytes that are due now (possibly empty)."""


class ByteDevice(ABC):
    """Base class for simulated devices, with the optional hooks endpoints use.

    Subclasses implement :meth:`receive` and :meth:`poll`; the other hooks have
    safe defaults.
    """

    @abstractmethod
    def receive(self, data: bytes) -> bytes:
        """Consume ``data`` sent by the host, at the device clock's current time.

        :param data: raw bytes exactly as they arrived (any chunking).
        :return: the bytes the device sends in answer (possibly empty).
        """

    @abstractmethod
    def poll(self) -> bytes:
        """Advance internal time to now and return unsolicited bytes that are due.

        :return: bytes to send now without a request (possibly empty).
        """

    def next_poll_ns(self) -> int | None:
        """Device-clock time of the next internal event worth a :meth:`poll`, ns, or None.

        Endpoints poll at least every few milliseconds anyway; this hint only
        lets them poll sooner.
        """
        return None

    def wants_disconnect(self) -> bool:
        """True when the link should vanish (a scripted unplug): the endpoint then closes it."""
        return False


def device_wants_disconnect(device: object) -> bool:
    """``device.wants_disconnect()`` for devices that offer it, else False."""
    hook = getattr(device, "wants_disconnect", None)
    return bool(hook()) if callable(hook) else False


class DeviceBus(ByteDevice):
    """Several devices sharing one line, like New Era pumps daisy-chained on one port.

    Every device hears every byte; their answers are concatenated in bus order
    (addressed protocols keep all but one silent). Hooks that address one
    device (fault injection) are reached through :attr:`devices`.

    :param devices: the devices on the line, at least one.
    """

    def __init__(self, devices: list[ByteDeviceProtocol] | tuple[ByteDeviceProtocol, ...]) -> None:
        if not devices:
            raise ConfigError("devices", devices, "at least one device")
        self.devices = tuple(devices)

    def receive(self, data: bytes) -> bytes:
        """Give ``data`` to every device; return their answers in bus order."""
        return b"".join(device.receive(data) for device in self.devices)

    def poll(self) -> bytes:
        """Unsolicited bytes of every device, in bus order."""
        return b"".join(device.poll() for device in self.devices)

    def next_poll_ns(self) -> int | None:
        """The earliest event hint of any device."""
        hints = [hook() for hook in (getattr(d, "next_poll_ns", None) for d in self.devices) if callable(hook)]
        times = [t for t in hints if t is not None]
        return min(times) if times else None

    def wants_disconnect(self) -> bool:
        """True when any device scripts an unplug (the line is shared)."""
        return any(device_wants_disconnect(d) for d in self.devices)
