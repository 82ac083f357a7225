"""Errors raised by the safety kernel.

``cython_ext`` imports nothing else of ours, so it cannot raise
``hal.errors.ConfigError`` itself. :class:`KernelConfigError` has the same shape
(``field``, ``value``, ``allowed``, same message) and is a :class:`ValueError`;
callers that want the project-wide error tree translate it at their boundary::

    except KernelConfigError as exc:
        raise ConfigError(exc.field, exc.value, exc.allowed, detail=exc.detail) from exc

Type errors (a float where an integer is required) raise :class:`TypeError`.
"""

from __future__ import annotations

from typing import Any


class KernelConfigError(ValueError):
    """Rejected kernel input; names the field (with its unit), the value and the allowed range.

    :param field: name of the offending field, unit in the name (``rate_nl_per_h``).
    :param value: the value that was given.
    :param allowed: the allowed range or set, as text (``"[0, 10000000] nL/h"``).
    :param detail: optional extra explanation.
    """

    def __init__(self, field: str, value: Any, allowed: str, *, detail: str = "") -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        self.detail = detail
        message = f"{field} (={value!r}) must be {allowed}"
        if detail:
            message = f"{message}: {detail}"
        super().__init__(message)

    def __reduce__(self):  # keep it picklable with its keyword argument
        return (_rebuild, (self.field, self.value, self.allowed, self.detail))


def _rebuild(field: str, value: Any, allowed: str, detail: str) -> KernelConfigError:
    return KernelConfigError(field, value, allowed, detail=detail)


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
    :raises KernelConfigError: if it lies outside the range.
    """
    value = require_int(field, value)
    if value < low or value > high:
        raise KernelConfigError(field, value, f"in [{low}, {high}] {unit}".rstrip())
    return value
