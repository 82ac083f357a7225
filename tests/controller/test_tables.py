"""``controller.tables.one_row_each``: one row per code, checked when the table is built."""

from __future__ import annotations

import enum

import pytest

from controller.tables import one_row_each
from cython_ext.errors import ConfigError


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Other(enum.Enum):
    BLUE = "blue"


def test_rows_are_keyed_by_their_code_in_the_order_given_and_read_only() -> None:
    table = one_row_each(Colour, lambda row: row[0], [(Colour.GREEN, 2), (Colour.RED, 1)])
    assert list(table.items()) == [(Colour.GREEN, (Colour.GREEN, 2)), (Colour.RED, (Colour.RED, 1))]
    with pytest.raises(TypeError):
        table[Colour.RED] = (Colour.RED, 3)  # type: ignore[index]


@pytest.mark.parametrize(
    ("rows", "value", "allowed"),
    [
        ([(Colour.RED, 1), (Colour.RED, 2), (Colour.GREEN, 3)], "red", "exactly one row per code: this code has two"),
        ([(Colour.RED, 1)], ["green"], "a row for every code: these have none"),
        ([(Colour.RED, 1), (Other.BLUE, 2)], Other.BLUE, "a member of Colour"),
    ],
    ids=["repeated", "missing", "foreign"],
)
def test_a_repeated_missing_or_foreign_code_is_refused(rows: list[tuple[enum.Enum, int]], value: object,
                                                       allowed: str) -> None:
    with pytest.raises(ConfigError) as caught:
        one_row_each(Colour, lambda row: row[0], rows)
    assert (caught.value.value, caught.value.allowed) == (value, allowed)
