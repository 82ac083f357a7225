"""The bench profile (one strict TOML file) and the unit-bearing strings of ``itb hil accuracy``.

A profile describes the bench once: ports and serial settings, the syringe,
the water, and the test defaults. Unknown tables or keys are rejected with a
:class:`~cython_ext.errors.ConfigError` naming the dotted key; nothing is applied
from a file that fails. Example (``hil/profiles/bench.example.toml``)::

    [pump]
    url = "/dev/ttyUSB0"
    driver = "ne1000"
    baudrate = 19200
    address = 0

    [balance]
    url = "/dev/ttyUSB1"
    driver = "mtsics"
    baudrate = 9600
    bytesize = 8
    parity = "N"
    stopbits = 1

    [syringe]
    spec = "bd-10ml"          # a preset, or an inner diameter such as "14.57mm"

    [water]
    temperature_c = 21.5
    evaporation_ug_per_h = 0.0
    air_buoyancy_correction = true

    [test]
    rate = "0.5mL/h"
    duration = "120min"
    interval = "30s"
    stabilisation = "0min"
    limit_pct = 5.0           # pass limit on |mean error A|, %

Strings with units are exact decimals (no float rounding); conversions go
through :mod:`cython_ext.units`, the project's one conversion module.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from cython_ext.errors import ConfigError
from cython_ext.units import NL_PER_ML, NL_PER_UL, decimal_to_units

#: Inner diameters of common plastic syringes, mm (check against the syringe in use).
SYRINGE_PRESETS_MM: dict[str, float] = {
    "bd-1ml": 4.78,
    "bd-3ml": 8.66,
    "bd-5ml": 12.06,
    "bd-10ml": 14.50,
    "bd-20ml": 19.13,
    "bd-30ml": 21.69,
    "bd-60ml": 26.59,
}
#: Rate units accepted, in nL/h per unit (``mL/day`` is also accepted: 24 h per day).
RATE_UNITS_NL_PER_H: dict[str, int] = {
    "nl/h": 1,
    "ul/h": NL_PER_UL,
    "µl/h": NL_PER_UL,
    "ml/h": NL_PER_ML,
}
#: Duration units accepted, in seconds per unit.
DURATION_UNITS_S: dict[str, int] = {"s": 1, "min": 60, "h": 3600}

_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-zµ/]+)\s*$")


def _split(field_name: str, text: object, allowed: str) -> tuple[str, str]:
    if not isinstance(text, str):
        raise ConfigError(field_name, text, allowed)
    match = _QUANTITY.match(text)
    if match is None:
        raise ConfigError(field_name, text, allowed)
    return match.group(1), match.group(2).lower()


def parse_rate_nl_per_h(text: object, *, field_name: str = "rate") -> int:
    """``"0.5mL/h"``, ``"20uL/h"``, ``"750nL/h"`` or ``"0.25mL/day"`` -> nL/h, exactly.

    :raises ConfigError: no unit, an unknown unit, zero, or digits finer than 1 nL/h.
    """
    allowed = "a positive rate with a unit: nL/h, uL/h, mL/h or mL/day (e.g. '0.5mL/h')"
    number, unit = _split(field_name, text, allowed)
    if unit not in RATE_UNITS_NL_PER_H and unit != "ml/day":
        raise ConfigError(field_name, text, allowed)
    try:
        if unit == "ml/day":
            nl_per_day = decimal_to_units(number, NL_PER_ML, field=field_name)
            if nl_per_day % 24:
                raise ConfigError(field_name, text, "a whole number of nL/h", detail="mL/day / 24 must be exact")
            rate = nl_per_day // 24
        else:
            rate = decimal_to_units(number, RATE_UNITS_NL_PER_H[unit], field=field_name)
    except ConfigError as exc:
        raise ConfigError(field_name, text, "a whole number of nL/h", detail=exc.detail) from exc
    if rate <= 0:
        raise ConfigError(field_name, text, allowed)
    return rate


def parse_duration_s(text: object, *, field_name: str = "duration") -> int:
    """``"120min"``, ``"30s"``, ``"2h"`` -> whole seconds, exactly.

    :raises ConfigError: no unit, an unknown unit, or not a whole number of seconds.
    """
    allowed = "a duration with a unit: s, min or h (e.g. '120min'), a whole number of seconds"
    number, unit = _split(field_name, text, allowed)
    scale = DURATION_UNITS_S.get(unit)
    if scale is None:
        raise ConfigError(field_name, text, allowed)
    try:
        return decimal_to_units(number, scale, field=field_name)
    except ConfigError as exc:
        raise ConfigError(field_name, text, allowed, detail=exc.detail) from exc


def parse_syringe_mm(text: object, *, field_name: str = "syringe") -> float:
    """A preset name (``"bd-10ml"``) or an inner diameter (``"14.57mm"``) -> diameter in mm.

    :raises ConfigError: unknown preset, or a diameter outside [0.1, 50] mm.
    """
    allowed = f"a preset ({', '.join(SYRINGE_PRESETS_MM)}) or an inner diameter such as '14.57mm' in [0.1, 50] mm"
    if isinstance(text, str) and text.strip().lower() in SYRINGE_PRESETS_MM:
        return SYRINGE_PRESETS_MM[text.strip().lower()]
    number, unit = _split(field_name, text, allowed)
    if unit != "mm":
        raise ConfigError(field_name, text, allowed)
    try:
        value = Decimal(number)
    except InvalidOperation:
        raise ConfigError(field_name, text, allowed) from None
    if not Decimal("0.1") <= value <= Decimal("50"):
        raise ConfigError(field_name, text, allowed)
    return float(value)


@dataclass(frozen=True)
class PortSettings:
    """One device on the bench: URL, driver name and serial settings (None: the driver's default)."""

    url: str = ""
    driver: str = ""
    baudrate: int | None = None
    bytesize: int | None = None
    parity: str | None = None
    stopbits: int | None = None
    address: int | None = None

    def open_options(self) -> dict[str, Any]:
        """Keyword arguments for the open function (only the settings given)."""
        names = ("baudrate", "bytesize", "parity", "stopbits", "address")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}


@dataclass(frozen=True)
class BenchProfile:
    """A validated bench profile. Empty strings / None mean "not given"."""

    pump: PortSettings = field(default_factory=PortSettings)
    balance: PortSettings = field(default_factory=PortSettings)
    syringe_diameter_mm: float | None = None
    water_temperature_c: float | None = None
    evaporation_ug_per_h: float | None = None
    air_buoyancy_correction: bool | None = None
    rate_nl_per_h: int | None = None
    duration_s: int | None = None
    interval_s: int | None = None
    stabilisation_s: int | None = None
    limit_pct: float | None = None


_PORT_KEYS = {
    "pump": {"url": str, "driver": str, "baudrate": int, "address": int},
    "balance": {"url": str, "driver": str, "baudrate": int, "bytesize": int, "parity": str, "stopbits": int},
}
_TABLES = {"pump", "balance", "syringe", "water", "test"}
_SCALAR_KEYS = {
    "syringe": {"spec"},
    "water": {"temperature_c", "evaporation_ug_per_h", "air_buoyancy_correction"},
    "test": {"rate", "duration", "interval", "stabilisation", "limit_pct"},
}


def parse_profile(text: str, *, source: str = "profile") -> BenchProfile:
    """Parse and validate profile TOML.

    :param text: the TOML text.
    :param source: name used in error messages.
    :raises ConfigError: malformed TOML, an unknown table or key, or a bad value.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "(file)", "valid TOML", detail=str(exc)) from exc
    for table, content in data.items():
        if table not in _TABLES:
            raise ConfigError(table, content, f"one of the tables {sorted(_TABLES)}")
        if not isinstance(content, dict):
            raise ConfigError(table, content, "a table")
    ports: dict[str, PortSettings] = {}
    for role, keys in _PORT_KEYS.items():
        content = data.get(role, {})
        values: dict[str, Any] = {}
        for key, value in content.items():
            expected = keys.get(key)
            if expected is None:
                raise ConfigError(f"{role}.{key}", value, f"one of the keys {sorted(keys)}")
            if isinstance(value, bool) or not isinstance(value, expected):
                raise ConfigError(f"{role}.{key}", value, f"a {expected.__name__}")
            values[key] = value
        if "parity" in values and values["parity"] not in ("N", "E", "O", "M", "S"):
            raise ConfigError(f"{role}.parity", values["parity"], "one of N, E, O, M, S")
        ports[role] = PortSettings(**values)
    for table, keys in _SCALAR_KEYS.items():
        for key, value in data.get(table, {}).items():
            if key not in keys:
                raise ConfigError(f"{table}.{key}", value, f"one of the keys {sorted(keys)}")
    syringe = data.get("syringe", {}).get("spec")
    water = data.get("water", {})
    test = data.get("test", {})
    temperature = water.get("temperature_c")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature)
    ):
        raise ConfigError("water.temperature_c", temperature, "a number in °C")
    evaporation = water.get("evaporation_ug_per_h")
    if evaporation is not None and (
        isinstance(evaporation, bool)
        or not isinstance(evaporation, (int, float))
        or not math.isfinite(evaporation)
        or evaporation < 0
    ):
        raise ConfigError("water.evaporation_ug_per_h", evaporation, "a number >= 0 µg/h")
    limit = test.get("limit_pct")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))
                              or not math.isfinite(limit) or not limit > 0):
        raise ConfigError("test.limit_pct", limit, "a number > 0 %")
    buoyancy = water.get("air_buoyancy_correction")
    if buoyancy is not None and not isinstance(buoyancy, bool):
        raise ConfigError("water.air_buoyancy_correction", buoyancy, "true or false")
    return BenchProfile(
        pump=ports["pump"],
        balance=ports["balance"],
        syringe_diameter_mm=None if syringe is None else parse_syringe_mm(syringe, field_name="syringe.spec"),
        water_temperature_c=None if temperature is None else float(temperature),
        evaporation_ug_per_h=None if evaporation is None else float(evaporation),
        air_buoyancy_correction=buoyancy,
        rate_nl_per_h=None if "rate" not in test else parse_rate_nl_per_h(test["rate"], field_name="test.rate"),
        duration_s=None
        if "duration" not in test
        else parse_duration_s(test["duration"], field_name="test.duration"),
        interval_s=None
        if "interval" not in test
        else parse_duration_s(test["interval"], field_name="test.interval"),
        stabilisation_s=None
        if "stabilisation" not in test
        else parse_duration_s(test["stabilisation"], field_name="test.stabilisation"),
        limit_pct=None if limit is None else float(limit),
    )


def load_profile(path: str | Path) -> BenchProfile:
    """Read and validate a profile file.

    :raises ConfigError: unreadable file or invalid content.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("profile", str(path), "a readable TOML file", detail=str(exc)) from exc
    return parse_profile(text, source=str(path))
