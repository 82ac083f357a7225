"""The NE-1000 ``<float>`` number format, as exact thousandths (no binary floats).

The manual's format is at most 4 digits plus one decimal point, with at most 3
digits after the point: ``0.001``, ``9999`` and ``12.34`` are valid,
``12.3456``, ``1e-05`` and ``10000`` are not. The simulator keeps every such
number as an integer count of thousandths ("milli"), so ``12.34`` is ``12340``.
"""

from __future__ import annotations

import re

_NUMBER_RE = re.compile(r"^(\d*)(?:\.(\d*))?$")

#: Largest number the format can carry, in thousandths (9999).
MAX_MILLI = 9_999_000
MAX_DIGITS = 4
MAX_DECIMALS = 3


def parse_milli(text: str) -> int | None:
    """Parse a wire ``<float>`` into thousandths.

    :param text: normalised command text (digits and at most one point).
    :return: the value in thousandths, or None if ``text`` is not a valid ``<float>``.
    """
    match = _NUMBER_RE.match(text)
    if match is None:
        return None
    whole, frac = match.group(1), match.group(2) or ""
    if not whole and not frac:
        return None
    if len(frac) > MAX_DECIMALS or len(whole.lstrip("0")) + len(frac) > MAX_DIGITS:
        return None
    if len(whole) + len(frac) > MAX_DIGITS and whole.strip("0"):
        return None
    return int(whole or "0") * 1000 + int((frac + "000")[:3])


def format_milli(value_milli: int) -> str:
    """Render thousandths the way the pump answers a query: 4 significant digits, fixed by magnitude.

    Below 10 three decimals (``0.000``, ``4.699``), below 100 two (``16.09``,
    ``10.00``), below 1000 one (``100.0``), below 10000 none but the point
    (``1000.``); the value is truncated towards zero, never rounded up. A
    counter of 10000 units or more, which 4 digits cannot show, is printed as a
    whole number. The rule follows the manual's number format ("4 digits plus 1
    decimal point", at most 3 after it) and captured replies such as
    ``I0.200W0.000ML``, ``I16.09W0.000ML`` and ``10.00MH``; the point after 4
    whole digits is what published clients parse (nesp-lib requires a point) [I].

    :param value_milli: a non-negative value in thousandths.
    """
    if value_milli < 0:
        raise ValueError(f"value_milli (={value_milli}) must be >= 0")
    whole = value_milli // 1000
    decimals = max(0, MAX_DIGITS - len(str(whole))) if whole < 10**MAX_DIGITS else 0
    decimals = min(decimals, MAX_DECIMALS)
    if decimals == 0:
        return f"{whole}." if whole < 10**MAX_DIGITS else str(whole)
    frac = (value_milli % 1000) // (10 ** (MAX_DECIMALS - decimals))
    return f"{whole}.{frac:0{decimals}d}"
