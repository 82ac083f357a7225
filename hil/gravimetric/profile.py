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

The file is read through the one field kit (:mod:`cython_ext.fields`): bounded
input, every problem of the file reported at once with its line. Strings with units
are exact decimals (no float rounding), each bounded (:data:`MAX_RATE_NL_PER_H`,
:data:`MAX_DURATION_S`); conversions go through :mod:`cython_ext.units`, the
project's one conversion module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from cython_ext import fields
from cython_ext.errors import ConfigError
from cython_ext.units import NL_PER_ML, NL_PER_UL, decimal_to_units
from hal.balance import WATER_TEMPERATURE_RANGE_C

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
#: Largest rate accepted, nL/h (10 L/h: far above any syringe pump).
MAX_RATE_NL_PER_H = 10_000 * NL_PER_ML
#: Longest duration accepted, s (30 days).
MAX_DURATION_S = 30 * 86_400
#: Largest evaporation rate accepted, µg/h (1 g/h).
MAX_EVAPORATION_UG_PER_H = 1_000_000

_QUANTITY = re.compile(r"\s*([0-9]{1,20}(?:\.[0-9]{1,20})?)\s*([A-Za-zµ/]{1,8})\s*")


def _split(field_name: str, text: object, allowed: str) -> tuple[str, str]:
    match = _QUANTITY.fullmatch(text) if isinstance(text, str) and len(text) <= 64 else None
    if match is None:
        raise ConfigError(field_name, fields.shown(text), allowed)
    return match.group(1), match.group(2).lower()


def parse_rate_nl_per_h(text: object, *, field_name: str = "rate") -> int:
    """``"0.5mL/h"``, ``"20uL/h"``, ``"750nL/h"`` or ``"0.25mL/day"`` -> nL/h, exactly.

    :raises ConfigError: no unit, an unknown unit, zero, or digits finer than 1 nL/h.
    """
    allowed = ("a positive rate with a unit: nL/h, uL/h, mL/h or mL/day (e.g. '0.5mL/h'), "
               f"at most {MAX_RATE_NL_PER_H // NL_PER_ML} mL/h")
    number, unit = _split(field_name, text, allowed)
    if unit not in RATE_UNITS_NL_PER_H and unit != "ml/day":
        raise ConfigError(field_name, fields.shown(text), allowed)
    try:
        if unit == "ml/day":
            nl_per_day = decimal_to_units(number, NL_PER_ML, field=field_name)
            if nl_per_day % 24:
                raise ConfigError(field_name, text, "a whole number of nL/h", detail="mL/day / 24 must be exact")
            rate = nl_per_day // 24
        else:
            rate = decimal_to_units(number, RATE_UNITS_NL_PER_H[unit], field=field_name)
    except ConfigError as exc:
        raise ConfigError(field_name, fields.shown(text), "a whole number of nL/h", detail=exc.detail) from None
    if not 0 < rate <= MAX_RATE_NL_PER_H:
        raise ConfigError(field_name, fields.shown(text), allowed)
    return rate


@dataclass(frozen=True)
class RateRequest:
    """A rate as typed, and the whole nL/h it is set as.

    :ivar text: what was typed (``"0.1mL/day"``).
    :ivar exact_nl_per_h: its exact value, nL/h.
    :ivar nl_per_h: the nearest whole nL/h (halves away from zero), the rate sent to the pump.
    """

    text: str
    exact_nl_per_h: Fraction
    nl_per_h: int

    @property
    def rounding_pct(self) -> float:
        """How far the set rate is from the typed one, % of the typed one (0 when exact)."""
        return float((self.nl_per_h - self.exact_nl_per_h) * 100 / self.exact_nl_per_h)

    def describe(self) -> str:
        """``"0.1mL/day = 4166.667 nL/h, set as 4167 nL/h (+0.008 %)"``, or just the rate when exact."""
        if self.exact_nl_per_h == self.nl_per_h:
            return f"{self.text} = {self.nl_per_h} nL/h"
        return (f"{self.text} = {float(self.exact_nl_per_h):.3f} nL/h, set as {self.nl_per_h} nL/h "
                f"({self.rounding_pct:+.3f} %, the nearest whole nL/h)")


def parse_rate_request(text: object, *, field_name: str = "rate") -> RateRequest:
    """Any positive rate with a unit (nL/h, uL/h, mL/h, mL/day), to the nearest whole nL/h.

    Unlike :func:`parse_rate_nl_per_h` (files: exact or refused), a command-line rate may have
    any number of digits; the rounding is reported by :meth:`RateRequest.describe`.

    :raises ConfigError: no unit, an unknown unit, or a rate that rounds to 0 or above the maximum.
    """
    allowed = ("a positive rate with a unit: nL/h, uL/h, mL/h or mL/day (e.g. '0.5mL/h'), "
               f"at least 0.5 nL/h and at most {MAX_RATE_NL_PER_H // NL_PER_ML} mL/h")
    number, unit = _split(field_name, text, allowed)
    if unit not in RATE_UNITS_NL_PER_H and unit != "ml/day":
        raise ConfigError(field_name, fields.shown(text), allowed)
    exact = Fraction(number) * (Fraction(NL_PER_ML, 24) if unit == "ml/day" else RATE_UNITS_NL_PER_H[unit])
    rounded = int(exact + Fraction(1, 2))  # exact > 0: floor(x + 1/2) rounds halves up
    if not 0 < rounded <= MAX_RATE_NL_PER_H:
        raise ConfigError(field_name, fields.shown(text), allowed)
    return RateRequest(str(text).strip(), exact, rounded)


def parse_duration_s(text: object, *, field_name: str = "duration") -> int:
    """``"120min"``, ``"30s"``, ``"2h"`` -> whole seconds, exactly.

    :raises ConfigError: no unit, an unknown unit, or not a whole number of seconds.
    """
    allowed = (f"a duration with a unit: s, min or h (e.g. '120min'), a whole number of seconds, "
               f"at most {MAX_DURATION_S // 86_400} days")
    number, unit = _split(field_name, text, allowed)
    scale = DURATION_UNITS_S.get(unit)
    if scale is None:
        raise ConfigError(field_name, fields.shown(text), allowed)
    try:
        seconds = decimal_to_units(number, scale, field=field_name)
    except ConfigError as exc:
        raise ConfigError(field_name, fields.shown(text), allowed, detail=exc.detail) from None
    if seconds > MAX_DURATION_S:
        raise ConfigError(field_name, fields.shown(text), allowed)
    return seconds


def parse_syringe_mm(text: object, *, field_name: str = "syringe") -> float:
    """A preset name (``"bd-10ml"``) or an inner diameter (``"14.57mm"``) -> diameter in mm.

    :raises ConfigError: unknown preset, or a diameter outside [0.1, 50] mm.
    """
    allowed = f"a preset ({', '.join(SYRINGE_PRESETS_MM)}) or an inner diameter such as '14.57mm' in [0.1, 50] mm"
    if isinstance(text, str) and text.strip().lower() in SYRINGE_PRESETS_MM:
        return SYRINGE_PRESETS_MM[text.strip().lower()]
    number, unit = _split(field_name, text, allowed)
    if unit != "mm" or not Decimal("0.1") <= Decimal(number) <= Decimal("50"):
        raise ConfigError(field_name, fields.shown(text), allowed)
    return float(Decimal(number))


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


#: Baud rates a port may be set to.
BAUD_RANGE = (50, 4_000_000)
#: Device addresses a pump may have.
ADDRESS_RANGE = (0, 99)
#: Serial settings each port may give, and how each is read.
_PORT_SETTINGS: dict[str, tuple[Any, ...]] = {
    "url": (fields.text,),
    "driver": (fields.identifier,),
    "baudrate": (fields.integer, *BAUD_RANGE, "baud"),
    "address": (fields.integer, *ADDRESS_RANGE),
    "bytesize": (fields.integer, 5, 8, "bits"),
    "parity": (fields.choice, ("N", "E", "O", "M", "S")),
    "stopbits": (fields.integer, 1, 2),
}
_PORT_KEYS = {
    "pump": ("url", "driver", "baudrate", "address"),
    "balance": ("url", "driver", "baudrate", "bytesize", "parity", "stopbits"),
}
#: What a profile is called in whole-file problems.
DOCUMENT = "profile"


def _port(t: Any, keys: tuple[str, ...]) -> Any:
    if t is fields.INVALID:
        return t
    values = {key: t.get(key, *_PORT_SETTINGS[key], default=None) for key in keys}
    t.done()
    return t.doc.run(lambda **given: PortSettings(**{k: v for k, v in given.items() if v is not None}), **values)


def _number(value: Any, field: str, low: Any, high: Any, unit: str) -> float:
    return float(fields.decimal(value, field, low, high, unit))


def _limit_pct(value: Any, field: str) -> float:
    return float(fields.decimal(value, field, 0, 100, "%", low_open=True))


def _unit_string(parse: Any) -> Any:
    return lambda value, field: parse(value, field_name=field)


def parse_profile(text: str | bytes, *, source: str = "<string>") -> BenchProfile:
    """Parse and validate profile TOML.

    :param text: the TOML text (bytes are decoded as strict UTF-8).
    :param source: where it came from, for messages.
    :raises ~cython_ext.fields.FileErrors: malformed TOML, and every unknown table or key and
        bad value of the file.
    """
    doc = fields.load_toml(text, document=DOCUMENT, source=source)
    top = doc.root
    ports = {role: _port(top.table(role, default={}), keys) for role, keys in _PORT_KEYS.items()}
    syringe = top.table("syringe", default={})
    water = top.table("water", default={})
    test = top.table("test", default={})
    top.done()
    values: dict[str, Any] = {}
    if syringe is not fields.INVALID:
        values["syringe_diameter_mm"] = syringe.get("spec", _unit_string(parse_syringe_mm), default=None)
        syringe.done()
    if water is not fields.INVALID:
        values["water_temperature_c"] = water.get("temperature_c", _number, *WATER_TEMPERATURE_RANGE_C, "°C",
                                                  default=None)
        values["evaporation_ug_per_h"] = water.get("evaporation_ug_per_h", _number, 0, MAX_EVAPORATION_UG_PER_H,
                                                   "µg/h", default=None)
        values["air_buoyancy_correction"] = water.get("air_buoyancy_correction", fields.boolean, default=None)
        water.done()
    if test is not fields.INVALID:
        values["rate_nl_per_h"] = test.get("rate", _unit_string(parse_rate_nl_per_h), default=None)
        for key in ("duration", "interval", "stabilisation"):
            values[f"{key}_s"] = test.get(key, _unit_string(parse_duration_s), default=None)
        values["limit_pct"] = test.get("limit_pct", _limit_pct, default=None)
        test.done()
    profile = doc.run(lambda **given: BenchProfile(**given), pump=ports["pump"], balance=ports["balance"], **values)
    doc.finish()
    return profile


def load_profile(path: str | Path) -> BenchProfile:
    """Read and validate a profile file.

    :raises ConfigError: unreadable file or invalid content.
    """
    return parse_profile(fields.read_file(path, document=DOCUMENT), source=str(path))
