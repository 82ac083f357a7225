"""The project's one error tree, on the floor so that every layer raises and catches the same types.

::

    ItbError
     +-- ConfigError (also ValueError)        bad input: names field, value, allowed range
     +-- StateError                           operation not valid in the current state
     +-- HalError
          +-- HalUnavailableError             a driver could not be loaded
          +-- ConnectError                    the port could not be opened
          +-- CommunicationError              garbled, missing or unexpected bytes
          |    +-- LinkTimeoutError (also TimeoutError)
          +-- DeviceError                     the device answered with an error or alarm
          +-- CapabilityError (also ValueError)  value outside what the device can represent
          +-- UncertainDeliveryError          a delivery command may or may not have taken effect

The safety kernel raises :class:`ConfigError` itself, so no layer translates
kernel errors. Type errors (a float where an integer fixed-point value is
required) raise :class:`TypeError`.

Device-reported alarms and errors are *data*: codecs decode them into reply
objects, and only a driver or the controller decides to raise
:class:`DeviceError`. :class:`UncertainDeliveryError` is never a failure to
retry blindly: the only allowed next step is to read status and reconcile.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ItbError",
    "ConfigError",
    "StateError",
    "HalError",
    "HalUnavailableError",
    "ConnectError",
    "CommunicationError",
    "LinkTimeoutError",
    "DeviceError",
    "CapabilityError",
    "UncertainDeliveryError",
    "require_int",
    "require_range",
]


class ItbError(Exception):
    """Root of every error raised by itb-fil.

    :param message: human-readable description.
    :param error_code: optional machine-readable code (for journals and reports).
    """

    def __init__(self, message: str, *, error_code: str | None = None) -> None:
        super().__init__(message)
        self.error_code = error_code

    def __reduce__(self):  # keyword-only arguments survive pickling (Dask, multiprocessing)
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type, args: tuple, state: dict[str, Any]) -> ItbError:
    error = Exception.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class ConfigError(ItbError, ValueError):
    """Rejected input. The message names the field, the value and the allowed range.

    :param field: dotted name of the offending field, with its unit in the name.
    :param value: the value that was given.
    :param allowed: the allowed range or set, as text (``"[0.048, 24] mL/day"``).
    :param detail: optional extra explanation.
    """

    def __init__(
        self,
        field: str,
        value: Any,
        allowed: str,
        *,
        detail: str = "",
        error_code: str | None = None,
    ) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        self.detail = detail
        super().__init__(self.message(), error_code=error_code or "CONFIG")

    def message(self) -> str:
        """``FIELD (=VALUE) must be ALLOWED[: DETAIL]``."""
        text = f"{self.field} (={self.value!r}) must be {self.allowed}"
        return f"{text}: {self.detail}" if self.detail else text


class StateError(ItbError):
    """The operation is not valid in the current state (closed link, latched fault...)."""


class HalError(ItbError):
    """Any failure in the hardware abstraction layer."""


class HalUnavailableError(HalError):
    """A driver named in the registry could not be imported or found."""


class ConnectError(HalError):
    """The port could not be opened (missing device, busy, refused)."""


class CommunicationError(HalError):
    """Bytes were garbled, missing or did not answer the request."""


class LinkTimeoutError(CommunicationError, TimeoutError):
    """No complete reply arrived within the timeout."""


class DeviceError(HalError):
    """The device answered, and the answer was an error or an alarm.

    :param reply: the decoded reply object from the codec, kept as data.
    """

    def __init__(self, message: str, *, reply: Any = None, error_code: str | None = None) -> None:
        super().__init__(message, error_code=error_code)
        self.reply = reply


class CapabilityError(HalError, ValueError):
    """A value lies outside what the device can represent or deliver; nothing was sent."""


class UncertainDeliveryError(HalError):
    """A delivery-changing command may or may not have taken effect.

    Never retry the command. Read status and the dispensed counter, reconcile,
    and only then decide.
    """


def require_int(field: str, value: Any) -> int:
    """Return ``value`` if it is an ``int`` (not ``bool``); raise :class:`TypeError` otherwise.

    :param field: name used in the message.
    :param value: the candidate value.
    :raises TypeError: for floats, ``bool``, ``Decimal``, strings and anything else.
    """
    if type(value) is not int:
        if isinstance(value, int) and not isinstance(value, bool):
            return int(value)
        raise TypeError(f"{field} must be an int in fixed-point units, got {type(value).__name__} {value!r}")
    return value


def require_range(field: str, value: Any, low: int, high: int, unit: str) -> int:
    """Return ``value`` if it is an int within ``[low, high]``.

    :raises TypeError: if ``value`` is not an int.
    :raises ConfigError: if it lies outside the range.
    """
    value = require_int(field, value)
    if value < low or value > high:
        raise ConfigError(field, value, f"in [{low}, {high}] {unit}".rstrip())
    return value
