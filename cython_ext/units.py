"""Unit conversions: the one module where fixed-point units meet the outside world.

Every quantity inside the kernel and the controller is an integer in a fixed unit:

==================  ===========  ==========================================
quantity            unit         name suffix
==================  ===========  ==========================================
time                millisecond  ``_ms``
mass                nanogram     ``_ng`` (picogram ``_pg`` inside the ledger)
volume              nanolitre    ``_nl``
concentration       µg/mL        ``_ug_per_ml`` (numerically ng/µL = pg/nL)
dose rate           ng/day       ``_ng_per_day``
volume rate         nL/h         ``_nl_per_h``
==================  ===========  ==========================================

The key identity: 1 nL of a 1 µg/mL solution holds exactly 1 pg, so
``mass_pg = volume_nl * concentration_ug_per_ml`` with no rounding at all. The
ledger therefore counts picograms, and only conversions to coarser units round.

Rounding is always explicit. Each helper takes ``rounding``: ``"down"`` (floor),
``"up"`` (ceiling) or ``"exact"`` (raise :class:`ConfigError` if a
remainder would be lost). Defaults are the *conservative* direction for dosing:
amounts that will be delivered (volumes, rates) round down; amounts that are
counted against a cap (masses, doses) round up.

Floats are rejected with :class:`TypeError` everywhere; use exact decimal strings
with :func:`decimal_to_units` (``decimal_to_units("0.048", NL_PER_ML) == 48000``).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from cython_ext.errors import ConfigError, require_int

__all__ = [
    "MS_PER_S",
    "MS_PER_MIN",
    "MS_PER_H",
    "MS_PER_DAY",
    "H_PER_DAY",
    "PG_PER_NG",
    "NG_PER_UG",
    "UG_PER_MG",
    "NL_PER_UL",
    "NL_PER_ML",
    "ROUNDINGS",
    "div_round",
    "mass_pg_for_volume",
    "mass_ng_for_volume",
    "volume_nl_for_mass",
    "rate_nl_per_h_for_dose",
    "dose_ng_per_day_for_rate",
    "volume_nl_for_rate",
    "rate_nl_per_h_for_ml_per_day",
    "decimal_to_units",
    "units_to_decimal",
    "describe_volume_nl",
    "describe_rate_nl_per_h",
]

#: Milliseconds per second.
MS_PER_S = 1_000
#: Milliseconds per minute.
MS_PER_MIN = 60_000
#: Milliseconds per hour.
MS_PER_H = 3_600_000
#: Milliseconds per day (24 h of monotonic time).
MS_PER_DAY = 86_400_000
#: Hours per day.
H_PER_DAY = 24
#: Picograms per nanogram.
PG_PER_NG = 1_000
#: Nanograms per microgram.
NG_PER_UG = 1_000
#: Micrograms per milligram.
UG_PER_MG = 1_000
#: Nanolitres per microlitre.
NL_PER_UL = 1_000
#: Nanolitres per millilitre.
NL_PER_ML = 1_000_000

#: Accepted values of every ``rounding`` parameter.
ROUNDINGS = ("down", "up", "exact")


def div_round(numerator: int, denominator: int, rounding: str, *, field: str = "value") -> int:
    """Divide two non-negative integers with an explicit rounding rule.

    :param numerator: dividend, >= 0.
    :param denominator: divisor, > 0.
    :param rounding: ``"down"``, ``"up"`` or ``"exact"``.
    :param field: name used in the error when ``rounding="exact"`` would lose a remainder.
    :return: the quotient.
    :raises ConfigError: on a bad ``rounding``, or a remainder with ``"exact"``.
    """
    quotient, remainder = divmod(numerator, denominator)
    if rounding == "down":
        return quotient
    if rounding == "up":
        return quotient + (1 if remainder else 0)
    if rounding == "exact":
        if remainder:
            raise ConfigError(
                field, numerator, f"a multiple of {denominator}", detail="conversion would lose a remainder"
            )
        return quotient
    raise ConfigError("rounding", rounding, f"one of {ROUNDINGS}")


def _nonneg(field: str, value: object) -> int:
    value = require_int(field, value)
    if value < 0:
        raise ConfigError(field, value, ">= 0")
    return value


def _positive(field: str, value: object) -> int:
    value = require_int(field, value)
    if value <= 0:
        raise ConfigError(field, value, "> 0")
    return value


def mass_pg_for_volume(volume_nl: int, concentration_ug_per_ml: int) -> int:
    """Mass of drug in a volume, in picograms; exact (1 nL at 1 µg/mL is 1 pg).

    :param volume_nl: volume in nL, >= 0.
    :param concentration_ug_per_ml: concentration in µg/mL, > 0.
    :return: mass in pg.
    """
    return _nonneg("volume_nl", volume_nl) * _positive("concentration_ug_per_ml", concentration_ug_per_ml)


def mass_ng_for_volume(volume_nl: int, concentration_ug_per_ml: int, *, rounding: str = "up") -> int:
    """Mass of drug in a volume, in nanograms.

    :param volume_nl: volume in nL, >= 0.
    :param concentration_ug_per_ml: concentration in µg/mL, > 0.
    :param rounding: default ``"up"`` (a mass counted against a cap is never under-stated).
    :return: mass in ng.
    """
    return div_round(mass_pg_for_volume(volume_nl, concentration_ug_per_ml), PG_PER_NG, rounding, field="mass_pg")


def volume_nl_for_mass(mass_ng: int, concentration_ug_per_ml: int, *, rounding: str = "down") -> int:
    """Volume that holds a mass of drug.

    :param mass_ng: mass in ng, >= 0.
    :param concentration_ug_per_ml: concentration in µg/mL, > 0.
    :param rounding: default ``"down"`` (never deliver more than asked for).
    :return: volume in nL.
    """
    mass_pg = _nonneg("mass_ng", mass_ng) * PG_PER_NG
    conc = _positive("concentration_ug_per_ml", concentration_ug_per_ml)
    return div_round(mass_pg, conc, rounding, field="mass_pg")


def rate_nl_per_h_for_dose(dose_ng_per_day: int, concentration_ug_per_ml: int, *, rounding: str = "down") -> int:
    """Volume rate that delivers a daily dose: ``dose / concentration / 24``.

    Example: 400 µg/day at 2000 µg/mL is 0.2 mL/day, i.e. 8333 nL/h rounded down.

    :param dose_ng_per_day: daily dose in ng/day, >= 0.
    :param concentration_ug_per_ml: concentration in µg/mL, > 0.
    :param rounding: default ``"down"`` (never deliver more than prescribed).
    :return: rate in nL/h.
    """
    numerator = _nonneg("dose_ng_per_day", dose_ng_per_day) * PG_PER_NG
    conc = _positive("concentration_ug_per_ml", concentration_ug_per_ml)
    return div_round(numerator, conc * H_PER_DAY, rounding, field="dose_pg_per_day")


def dose_ng_per_day_for_rate(rate_nl_per_h: int, concentration_ug_per_ml: int, *, rounding: str = "up") -> int:
    """Daily dose delivered by a constant volume rate: ``rate * 24 * concentration``.

    :param rate_nl_per_h: rate in nL/h, >= 0.
    :param concentration_ug_per_ml: concentration in µg/mL, > 0.
    :param rounding: default ``"up"`` (a dose counted against a cap is never under-stated).
    :return: dose in ng/day.
    """
    mass_pg = _nonneg("rate_nl_per_h", rate_nl_per_h) * H_PER_DAY * _positive(
        "concentration_ug_per_ml", concentration_ug_per_ml
    )
    return div_round(mass_pg, PG_PER_NG, rounding, field="dose_pg_per_day")


def volume_nl_for_rate(rate_nl_per_h: int, duration_ms: int, *, rounding: str = "down") -> int:
    """Volume delivered by a constant rate over a duration.

    :param rate_nl_per_h: rate in nL/h, >= 0.
    :param duration_ms: duration in ms, >= 0.
    :param rounding: default ``"down"``.
    :return: volume in nL.
    """
    numerator = _nonneg("rate_nl_per_h", rate_nl_per_h) * _nonneg("duration_ms", duration_ms)
    return div_round(numerator, MS_PER_H, rounding, field="volume_nl_ms_per_h")


def rate_nl_per_h_for_ml_per_day(volume_ml_per_day: str | Decimal, *, rounding: str = "down") -> int:
    """Volume rate for a flow given as an exact decimal in mL/day (``"0.048"`` -> 2000 nL/h).

    :param volume_ml_per_day: exact decimal string or :class:`~decimal.Decimal`, in mL/day.
    :param rounding: default ``"down"``.
    :return: rate in nL/h.
    """
    nl_per_day = decimal_to_units(volume_ml_per_day, NL_PER_ML, field="volume_ml_per_day")
    if nl_per_day < 0:
        raise ConfigError("volume_ml_per_day", volume_ml_per_day, ">= 0")
    return div_round(nl_per_day, H_PER_DAY, rounding, field="volume_nl_per_day")


def decimal_to_units(text_or_decimal: str | Decimal | int, scale: int, *, field: str = "value") -> int:
    """Convert an exact decimal to integer fixed-point units, refusing to lose digits.

    ``decimal_to_units("0.048", NL_PER_ML) == 48000`` (mL -> nL);
    ``decimal_to_units("0.0000001", NL_PER_ML)`` raises, since it is not a whole nL.

    :param text_or_decimal: a decimal string (``"12.5"``), a :class:`~decimal.Decimal` or an int.
    :param scale: units per input unit (a positive int, e.g. :data:`NL_PER_ML`).
    :param field: name used in errors.
    :return: the value times ``scale``, as an int.
    :raises TypeError: for floats (binary fractions are not exact decimals) and other types.
    :raises ConfigError: for malformed text, NaN/infinity, or digits below one unit.
    """
    scale = _positive("scale", scale)
    if isinstance(text_or_decimal, bool) or isinstance(text_or_decimal, float):
        raise TypeError(f"{field} must be an exact decimal string or Decimal, not {type(text_or_decimal).__name__}")
    if isinstance(text_or_decimal, int):
        return text_or_decimal * scale
    if isinstance(text_or_decimal, str):
        try:
            value = Decimal(text_or_decimal.strip())
        except InvalidOperation:
            raise ConfigError(field, text_or_decimal, "a decimal number such as '0.048'") from None
    elif isinstance(text_or_decimal, Decimal):
        value = text_or_decimal
    else:
        raise TypeError(f"{field} must be an exact decimal string or Decimal, not {type(text_or_decimal).__name__}")
    if not value.is_finite():
        raise ConfigError(field, text_or_decimal, "a finite decimal number")
    scaled = value * scale
    if scaled != scaled.to_integral_value():
        raise ConfigError(
            field, text_or_decimal, f"a multiple of 1/{scale}", detail="value has more digits than the unit holds"
        )
    return int(scaled)


def units_to_decimal(value: int, scale: int) -> Decimal:
    """Exact inverse of :func:`decimal_to_units`, for display (``units_to_decimal(48000, NL_PER_ML)`` is 0.048).

    :param value: integer amount in fixed-point units.
    :param scale: units per output unit, > 0.
    :return: an exact :class:`~decimal.Decimal`.
    """
    value = require_int("value", value)
    scale = _positive("scale", scale)
    return Decimal(value) / Decimal(scale)


def describe_volume_nl(volume_nl: int) -> str:
    """A volume for people: ``"250 µL"`` below 1 mL, ``"6.5945 mL"`` from 1 mL (exact, no rounding).

    :param volume_nl: volume, nL.
    """
    volume_nl = require_int("volume_nl", volume_nl)
    if abs(volume_nl) < NL_PER_ML:
        return f"{units_to_decimal(volume_nl, NL_PER_UL).normalize():f} µL"
    return f"{units_to_decimal(volume_nl, NL_PER_ML).normalize():f} mL"


def describe_rate_nl_per_h(rate_nl_per_h: int) -> str:
    """A volume rate for people: ``"12.5 µL/h"`` (exact, no rounding).

    :param rate_nl_per_h: rate, nL/h.
    """
    rate_nl_per_h = require_int("rate_nl_per_h", rate_nl_per_h)
    return f"{units_to_decimal(rate_nl_per_h, NL_PER_UL).normalize():f} µL/h"
