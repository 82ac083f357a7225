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
    """Render thousandths the way the pump answers a query.

    At most 4 significant digits (3 decimals at most), truncated towards zero,
    trailing zeros dropped (``0.21``, ``26.59``, ``5``). Values of 10000 and
    more, which the display cannot show, are printed as whole numbers.

    :param value_milli: a non-negative value in thousandths.
    """
    if value_milli < 0:
        raise ValueError(f"value_milli (={value_milli}) must be >= 0")
    whole = value_milli // 1000
    int_digits = len(str(whole)) if whole else 1
    decimals = max(0, min(MAX_DECIMALS, MAX_DIGITS - int_digits))
    if decimals == 0:
        return str(whole)
    frac = (value_milli % 1000) // (10 ** (MAX_DECIMALS - decimals))
    text = f"{whole}.{frac:0{decimals}d}".rstrip("0").rstrip(".")
    return text
