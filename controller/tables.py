"""Frozen lookup tables with one row for every member of an enumeration.

The alarm table (ALM-01) and the fault-reaction table (SAFE-01) each promise exactly one
row per code. :func:`one_row_each` keeps that promise when the module is imported: a code
with no row, or with two, raises there instead of one row silently replacing the other.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import TypeVar

from cython_ext.errors import ConfigError

Code = TypeVar("Code", bound=enum.Enum)
Row = TypeVar("Row")


def one_row_each(codes: type[Code], code_of: Callable[[Row], Code], rows: Iterable[Row]) -> Mapping[Code, Row]:
    """The rows keyed by their code, read-only, in the order given.

    :param codes: the enumeration every row's code belongs to.
    :param code_of: a row's code.
    :param rows: the table's rows.
    :return: a read-only mapping from each member of ``codes`` to its one row.
    :raises ConfigError: if a row's code is not a member of ``codes``, or a member has no row or more than one.
    """
    table: dict[Code, Row] = {}
    for row in rows:
        code = code_of(row)
        if not isinstance(code, codes):
            raise ConfigError(f"{codes.__name__} row", code, f"a member of {codes.__name__}")
        if code in table:
            raise ConfigError(f"{codes.__name__} row", code.value, "exactly one row per code: this code has two")
        table[code] = row
    missing = [code.value for code in codes if code not in table]
    if missing:
        raise ConfigError(f"{codes.__name__} rows", missing, "a row for every code: these have none")
    return MappingProxyType(table)
