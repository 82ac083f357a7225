"""Drivers registered by name and imported lazily.

Each table maps a driver name to ``(module, class)``. Nothing is imported
until :func:`resolve` is asked for that name, so ``import hal`` never fails
because one driver (or its optional dependency) is broken; the failure
surfaces as :class:`~cython_ext.errors.HalUnavailableError` when, and only when, that
driver is wanted.

To add a driver, add one line to the table of its role.
"""

from __future__ import annotations

import importlib

from cython_ext.errors import ConfigError, HalUnavailableError

#: Pump drivers: name -> (module, class). Each class implements :class:`hal.pump.PumpDriver`.
PUMP_DRIVERS: dict[str, tuple[str, str]] = {
    "ne1000": ("hal.newera.driver", "Ne1000Driver"),
}

#: Balance drivers: name -> (module, class). Each class implements ``hal.balance.BalanceDriver``.
BALANCE_DRIVERS: dict[str, tuple[str, str]] = {
    "mtsics": ("hal.mtsics.driver", "MtSicsDriver"),
    "sbi": ("hal.sartorius.driver", "SbiDriver"),
}

#: Role name -> its table.
KINDS: dict[str, dict[str, tuple[str, str]]] = {
    "pump": PUMP_DRIVERS,
    "balance": BALANCE_DRIVERS,
}


def names(kind: str) -> tuple[str, ...]:
    """Registered driver names for ``kind`` (``"pump"`` or ``"balance"``), sorted.

    :raises ConfigError: ``kind`` is not a known role.
    """
    if kind not in KINDS:
        raise ConfigError("kind", kind, f"one of {tuple(KINDS)}")
    return tuple(sorted(KINDS[kind]))


def resolve(kind: str, name: str) -> type:
    """Import and return the driver class registered as ``name`` for role ``kind``.

    :param kind: ``"pump"`` or ``"balance"``.
    :param name: the registered driver name (``"ne1000"``).
    :return: the driver class.
    :raises ConfigError: ``kind`` is not a known role.
    :raises HalUnavailableError: the name is not registered, or its module or
        class cannot be loaded (the cause is chained).
    """
    table = KINDS.get(kind)
    if table is None:
        raise ConfigError("kind", kind, f"one of {tuple(KINDS)}")
    entry = table.get(name)
    if entry is None:
        raise HalUnavailableError(
            f"no {kind} driver named {name!r}; registered: {', '.join(sorted(table)) or '(none)'}",
            error_code="HAL_UNKNOWN_DRIVER",
        )
    module_name, class_name = entry
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure means "this driver is unavailable"
        raise HalUnavailableError(
            f"{kind} driver {name!r} cannot be loaded from {module_name}: {exc}",
            error_code="HAL_IMPORT_FAILED",
        ) from exc
    try:
        return getattr(module, class_name)
    except AttributeError as exc:
        raise HalUnavailableError(
            f"{kind} driver {name!r}: {module_name} has no class {class_name}",
            error_code="HAL_IMPORT_FAILED",
        ) from exc
