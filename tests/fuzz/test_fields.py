"""The field kit (:mod:`cython_ext.fields`): its scan against the standard parser and an independent
writer's line numbers, its number policy, its readers and its one-line errors."""

from __future__ import annotations

import argparse
import tomllib
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from cython_ext import fields
from cython_ext.errors import ConfigError
from cython_ext.fields import DEFAULT_LIMITS, FieldError, FileErrors, load_toml
from tests.fuzz.inputs import FED, documents, write_toml

#: Number literals the policy refuses, whatever the field (the oracle: written by hand).
REFUSED_LITERALS = {"0x10", "0o17", "0b101", "1_6", "1_000.5", "-0", "-0.0"}


def dotted(place: tuple[str | int, ...]) -> str:
    """A writer's place as the kit names it: ``("action", 2, "at")`` -> ``action[2].at``."""
    name = ""
    for part in place:
        name = f"{name}[{part}]" if isinstance(part, int) else (f"{name}.{fields.key_name(part)}" if name
                                                                else fields.key_name(part))
    return name


def literals(value: Any) -> set[str]:
    """Every raw literal written in a generated value."""
    if isinstance(value, dict):
        return set().union(*(literals(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(literals(v) for v in value)) if value else set()
    return {value.text} if hasattr(value, "text") else set()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents)
def test_the_scan_agrees_with_tomllib_and_the_writers_lines(doc: dict[str, Any]) -> None:
    FED["the field kit's scan"] += 1
    text, where = write_toml(doc)
    try:
        expected = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError:
        with pytest.raises(FileErrors):
            load_toml(text, document="doc")
        return
    try:
        loaded = load_toml(text, document="doc")
    except FileErrors as exc:
        assert all("at most" in e.allowed for e in exc.errors), str(exc)  # only a limit refuses a TOML file
        return
    assert {e.value for e in loaded.errors} == literals(doc) & REFUSED_LITERALS
    assert all(e.detail for e in loaded.errors)
    assert repr(loaded.root.raw) == repr(expected)  # repr: NaN is not equal to itself
    for place, line in where.items():
        assert loaded.line_of(dotted(place)) == line, (dotted(place), text)


@pytest.mark.parametrize(
    ("text", "field", "line"),
    [
        ('a = """\nx = 1\n"""\nb = 2\n', "b", 4),
        ("a = '''it's'''\nb = 2\n", "b", 2),
        ('a = """ends with "" quotes"""""\nb = 2\n', "b", 2),
        ('a = "\\"[" # not a table\r\n[t]\r\nb = 2\r\n', "t.b", 3),
        ("a = [\n  1,  # one\n  2,\n]\nb = {c.d = 3, e = [4, {f = 5}]}\n", "b.e[1].f", 5),
        ('"q.k".x = 1\n', '"q.k".x', 1),
        ("d = 1979-05-27 07:32:00\n[[a]]\n[[a.b]]\n[[a]]\n[[a.b]]\nx = 1\n", "a[1].b[0].x", 6),
        ("[a]\n[[a.b]]\n[a.b.c]\nx = 1\n", "a.b[0].c.x", 4),
        ("a = {}\n\n\n  b   =   'x'   # spaced\n", "b", 4),
    ],
)
def test_the_scan_finds_the_line_of_every_key(text: str, field: str, line: int) -> None:
    assert load_toml(text, document="doc").line_of(field) == line


@pytest.mark.parametrize("literal", sorted(REFUSED_LITERALS | {"+0", "-0e5", "-0.0e-3"}))
def test_number_forms_that_mislead_are_refused_anywhere_in_a_file(literal: str) -> None:
    text = f"[t]\nvalues = [1, {literal}]\n"
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        pytest.skip("not TOML at all")
    doc = load_toml(text, document="doc")
    if literal == "+0":
        assert not doc.failed  # a plus sign on zero misleads no one
        return
    with pytest.raises(FileErrors) as excinfo:
        doc.finish()
    assert excinfo.value.field == "t.values[1]" and excinfo.value.errors[0].line == 2


@pytest.mark.parametrize(
    ("value", "ok"),
    [(16, True), (Decimal("16.0"), False), (16.0, False), (True, False), ("16", False), (Decimal("1e999999"), False)],
)
def test_an_integer_field_takes_only_an_integer(value: Any, ok: bool) -> None:
    if ok:
        assert fields.integer(value, "n", 0, 20) == 16
        return
    with pytest.raises(ConfigError) as excinfo:
        fields.integer(value, "n", 0, 20)
    assert excinfo.value.field == "n" and "an integer in [0, 20]" in excinfo.value.allowed
    if isinstance(value, (Decimal, float)) and value == 16:
        assert "without a decimal point" in excinfo.value.detail


@pytest.mark.parametrize(
    ("value", "scaled"),
    [(Decimal("0.25"), 250_000), (20, 20_000_000), (Decimal("0.000001"), 1), ("0.5", 500_000), (0.048, 48_000)],
)
def test_scaled_values_are_exact(value: Any, scaled: int) -> None:
    assert fields.scaled(value, "v_ml", 1_000_000, 0, 40_000_000, "mL", strings=True) == scaled


@pytest.mark.parametrize(
    "value",
    [Decimal("1e999999"), Decimal("-1e999999"), Decimal("1e-1999999"), Decimal("0.0000001"), Decimal("NaN"),
     Decimal("Infinity"), Decimal("-0"), float("nan"), float("inf"), "1_0", "0x10", "nan", "1e999999", True, None,
     [], {}],
)
def test_scaling_never_overflows_underflows_or_rounds(value: Any) -> None:
    """Regression (issue #15): ``1e999999`` raised decimal.Overflow; ``1e-1999999`` must not become 0."""
    with pytest.raises(ConfigError) as excinfo:
        fields.scaled(value, "v_ml", 1_000_000, 0, 40_000_000, "mL", strings=True)
    assert excinfo.value.field == "v_ml" and excinfo.value.allowed


@pytest.mark.parametrize(
    ("reader", "value", "ok"),
    [
        (fields.identifier, "RX-0001", True),
        (fields.identifier, "P_2.a", True),
        (fields.identifier, "\u0420X-0001", False),  # Cyrillic Er, looks like P/R
        (fields.identifier, "RX 0001", False),
        (fields.identifier, "患者-1", False),
        (fields.identifier, "RX-🙂", False),
        (fields.identifier, "RX-0001-", False),
        (fields.identifier, "Ｒ", False),  # fullwidth
        (fields.identifier, "x" * 65, False),
        (fields.person, "dr.jones", True),
        (fields.person, "J. O'Brien", True),
        (fields.person, "dr.j\u043enes", False),  # Cyrillic o
        (fields.person, "M\u00fcller", False),
        (fields.person, "a  b", False),
        (fields.person, "dr.\u200bjones", False),
        (fields.text, "Three weeks, 500 -> 2000 µg/mL", True),
        (fields.text, "a\u202eb", False),  # a bidirectional override
        (fields.text, "a\nb", False),
        (fields.text, " padded", False),
        (fields.text, "", False),
        (fields.text, "x" * 201, False),
    ],
)
def test_identity_text_is_a_documented_character_set(reader: Any, value: str, ok: bool) -> None:
    if ok:
        assert reader(value, "f") == value
    else:
        with pytest.raises(ConfigError):
            reader(value, "f")


_deep: Any = 1
for _ in range(3000):
    _deep = [_deep]


@pytest.mark.parametrize("value", [10**5000, "x" * 10**6, _deep, {"k" * 1000: list(range(10**4))}, Decimal("1e999999"),
                                   "a\nb\u2028c", b"\xff" * 1000, None],
                         ids=["huge int", "long string", "deep list", "big table", "huge decimal", "line breaks",
                              "bytes", "none"])
def test_an_error_shows_any_value_in_one_bounded_line(value: Any) -> None:
    error = FieldError("f", value, "allowed", source="f.toml", line=3)
    text = error.one_line()
    assert text.isprintable() and len(text) < 300 and text.startswith("f.toml:3: f (=")
    assert error.to_dict()["line"] == 3


def test_a_field_with_unprintable_characters_is_escaped() -> None:
    error = FieldError("a\x1fb", 1, "allowed")
    assert error.field == "a\\x1fb" and error.one_line().isprintable()


@pytest.mark.parametrize(
    ("make", "text", "value"),
    [
        (lambda: fields.int_arg("--n", 0, 99), "42", 42),
        (lambda: fields.int_arg("--n", 0, 99), " 7 ", 7),
        (lambda: fields.float_arg("--x", 0, 10, low_open=True), "2.5", 2.5),
        (lambda: fields.float_arg("--x", -5, 5), "-0.5", -0.5),
        (lambda: fields.decimal_arg("--d", "0.1", 50, "mm"), "8.585", "8.585"),
    ],
)
def test_argument_types_accept_plain_numbers_in_range(make: Any, text: str, value: Any) -> None:
    assert make()(text) == value


@pytest.mark.parametrize(
    ("make", "text"),
    [(lambda: fields.int_arg("--n", 0, 99), bad) for bad in ("100", "-1", "1_0", "0x10", "4.0", "٣", "", "1e2")]
    + [(lambda: fields.float_arg("--x", 0, 10, low_open=True), bad)
       for bad in ("0", "nan", "inf", "1e999", "1e-999999", "-0", "1_0", "10.1", "ten")]
    + [(lambda: fields.decimal_arg("--d", "0.1", 50, "mm"), bad) for bad in ("0.05", "51", "nan", "8,5")],
)
def test_argument_types_refuse_anything_else_as_a_usage_error(make: Any, text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="must be"):
        make()(text)


def test_a_table_reports_every_problem_it_reads() -> None:
    doc = load_toml('[t]\na = -1\nb = "x"\nc = true\nextra = 1\n', document="doc", source="f.toml")
    t = doc.root.table("t")
    assert t.get("a", fields.integer, 0, 9) is fields.INVALID
    assert t.get("b", fields.integer, 0, 9) is fields.INVALID
    assert t.get("c", fields.boolean) is True
    assert t.get("missing", fields.integer, 0, 9) is fields.INVALID
    t.done()
    assert doc.run(lambda a: a, fields.INVALID) is fields.INVALID, "a check on a failed value does not run"
    with pytest.raises(FileErrors) as excinfo:
        doc.finish()
    assert [(e.field, e.line) for e in excinfo.value.errors] == [
        ("t.missing", 1), ("t.a", 2), ("t.b", 3), ("t.extra", 5)]
    assert excinfo.value.errors[0].one_line() == "f.toml:1: t.missing (=None) must be present (required key is missing)"


def test_limits_are_documented_defaults() -> None:
    assert DEFAULT_LIMITS.file_bytes == 1_048_576 and DEFAULT_LIMITS.depth == 16
    assert fields.MAX_TEXT_CHARS == 200 and fields.MAX_IDENTIFIER_CHARS == 64


def test_a_refused_number_does_not_hide_the_other_problems_of_its_file() -> None:
    doc = load_toml("[t]\na = 0x10\nb = 1e999999\nc = [1, 1_0]\n", document="doc")
    t = doc.root.table("t")
    assert t.get("a", fields.integer, 0, 99) is fields.INVALID  # 16, but refused as written
    assert t.get("b", fields.decimal, 0, 99) is fields.INVALID
    assert t.get("c") is fields.INVALID
    t.done()
    with pytest.raises(FileErrors) as excinfo:
        doc.finish()
    assert [e.field for e in excinfo.value.errors] == ["t.a", "t.b", "t.c[1]"]


# -- settings given from Python (not files): is_int and is_finite_number ---------------------------

#: Written by hand: (value, is_int, is_finite_number).
PYTHON_VALUES = [
    (0, True, True), (-7, True, True), (10**300, True, True), (True, False, False), (False, False, False),
    (1.5, False, True), (-0.0, False, True), (1e308, False, True), (float("nan"), False, False),
    (float("inf"), False, False), (float("-inf"), False, False), (10**400, True, False), (-(10**400), True, False),
    (Decimal("1.5"), False, False), ("1", False, False), (None, False, False),
]


@pytest.mark.parametrize(("value", "integer", "number"), PYTHON_VALUES)
def test_python_integer_and_number_settings(value: Any, integer: bool, number: bool) -> None:
    assert fields.is_int(value) is integer
    assert fields.is_finite_number(value) is number

