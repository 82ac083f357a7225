"""Sartorius SBI codec: the reference's 16-byte line, ID codes, range and error lines, fuzzing, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cython_ext.errors import ConfigError
from hal.sartorius import codec
from hal.sartorius.codec import ErrorLine, MalformedLine, RangeLine, StatusLine, WeightLine
from tests.balance.chunking import fed_whole_and_in_chunks

#: The reference's example output line, byte for byte.
REFERENCE_LINE = bytes.fromhex("2B 20 20 20 31 32 35 35 2E 37 20 67 20 20 0D 0A")


def test_reference_line_encodes_byte_for_byte() -> None:
    wire = codec.encode_weight_line(1_255_700_000, unit="g", decimals=1, stable=True)
    assert wire == REFERENCE_LINE
    assert len(wire) == 16


def test_reference_line_decodes() -> None:
    assert codec.decode_weight_line(REFERENCE_LINE) == WeightLine(1_255_700_000, True, 100_000, "g")


@pytest.mark.parametrize(
    ("code", "wire"),
    [
        ("P", b"\x1bP\r\n"),
        ("T", b"\x1bT\r\n"),
        ("U", b"\x1bU\r\n"),
        ("V", b"\x1bV\r\n"),
        ("x1_", b"\x1bx1_\r\n"),
        ("x2_", b"\x1bx2_\r\n"),
        ("s3_", b"\x1bs3_\r\n"),
        ("p_", b"\x1bp_\r\n"),
    ],
)
def test_commands_encode_to_golden_bytes(code: str, wire: bytes) -> None:
    assert codec.encode_command(code) == wire
    assert codec.encode_command(code, crlf=False) == wire[:-2]


@pytest.mark.parametrize("bad", ["p", "PP", "x1234_", "X1_", "x1", "1_", ""])
def test_malformed_commands_are_refused(bad: str) -> None:
    with pytest.raises(ConfigError):
        codec.encode_command(bad)


@pytest.mark.parametrize(
    ("wire", "line"),
    [
        (b"-     12.3 g  \r\n", WeightLine(-12_300_000, True, 100_000, "g")),
        (b"+     12.3    \r\n", WeightLine(12_300_000, False, 100_000, "g")),
        (b"    0.00012 g  \r\n", WeightLine(120, True, 10, "g")),
        (b"+  1234.5 mg \r\n", WeightLine(1_234_500, True, 100, "mg")),
        (b"N     +   1255.7 g  \r\n", WeightLine(1_255_700_000, True, 100_000, "g", "N")),
        (b"G#    -      0.5 g  \r\n", WeightLine(-500_000, True, 100_000, "g", "G#")),
        # Entris II interface description p.3: special and error codes, 22 characters.
        (b"Stat        High    \r\n", RangeLine(overload=True)),
        (b"Stat        Low     \r\n", RangeLine(overload=False)),
        (b"Stat     ERR 101    \r\n", ErrorLine(101)),
        (b"Stat     APP.ERR    \r\n", StatusLine("APP.ERR")),
        (b"Stat        Cal.Ext.\r\n", StatusLine("Cal.Ext.")),
        # The same in 16 characters (positions 7 and 4 of the body).
        (b"      High    \r\n", RangeLine(overload=True)),
        (b"      Low     \r\n", RangeLine(overload=False)),
        (b"   ERR 101    \r\n", ErrorLine(101)),
        # FB manual p.66 / Master series p.79: H, HH, L, LL status codes of older models.
        (b"      HH      \r\n", RangeLine(overload=True)),
        (b"Stat        LL      \r\n", RangeLine(overload=False)),
        (b"      C       \r\n", StatusLine("C")),
        # Combics 1 p.98: "Stat*****Err**##****" with a two-digit code.
        (b"Stat     Err  12    \r\n", ErrorLine(12)),
    ],
)
def test_lines_decode_by_fields(wire: bytes, line: object) -> None:
    assert codec.decode_weight_line(wire) == line


def test_unstable_lines_use_the_unit_the_driver_knows() -> None:
    assert codec.decode_weight_line(b"+  1234.5    \r\n", unstable_unit="mg") == WeightLine(1_234_500, False, 100, "mg")


@pytest.mark.parametrize(
    "wire",
    [b"", b"\r\n", b"+ - 1.0 g\r\n", b"+ +1.0 g\r\n", b"ID X + 1.0 g\r\n", b"+ 1.0 g extra\r\n", b"hello\r\n", b"+ 1.0 lb\r\n"],
)
def test_anything_else_is_malformed(wire: bytes) -> None:
    assert isinstance(codec.decode_weight_line(wire), MalformedLine)


@given(st.binary(max_size=200))
def test_random_bytes_never_crash_the_decoders(data: bytes) -> None:
    assert isinstance(codec.decode_weight_line(data), (WeightLine, RangeLine, ErrorLine, StatusLine, MalformedLine))
    assert isinstance(codec.decode_text_line(data), str)


@given(
    steps=st.integers(min_value=-9_999_999, max_value=9_999_999),
    unit_decimals=st.sampled_from([("g", 5), ("g", 1), ("g", 0), ("mg", 2)]),
    stable=st.booleans(),
    id_code=st.one_of(st.none(), st.sampled_from(["N", "G#", "T", "ID1234"])),
)
def test_weight_lines_round_trip(steps: int, unit_decimals: tuple[str, int], stable: bool, id_code: str | None) -> None:
    unit, decimals = unit_decimals
    resolution_ug = codec.MASS_UNIT_UG[unit] // 10**decimals
    mass_ug = steps * resolution_ug
    try:
        wire = codec.encode_weight_line(mass_ug, unit=unit, decimals=decimals, stable=stable, id_code=id_code)
    except ConfigError:
        return  # does not fit the 8-character field; the emulator prints overload instead
    assert len(wire) == (22 if id_code else 16)
    assert codec.decode_weight_line(wire, unstable_unit=unit) == WeightLine(
        mass_ug, stable, resolution_ug, unit, id_code or ""
    )


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=7))
def test_command_deframer_is_chunking_independent(data: bytes, chunk: int) -> None:
    whole, pieces = fed_whole_and_in_chunks(codec.CommandDeframer, data, chunk)
    assert pieces == whole
    for code in whole:
        codec.encode_command(code)  # every code found is a well-formed command


def test_command_deframer_finds_commands_among_noise() -> None:
    stream = b"\r\n\x1bP\x1bx1_\r\n\x00\x1bx\x1bT" + b"garbage\x1b" + b"x12_"
    assert codec.CommandDeframer().feed(stream) == ["P", "x1_", "T", "x12_"]


@pytest.mark.parametrize(
    ("wire", "manual"),
    [
        # Entris II p.3, special codes: "Stat" in 1-4, the code from position 13 (7 of the body).
        (codec.encode_range_line(overload=True, id_codes=True), b"Stat        High    \r\n"),
        (codec.encode_range_line(overload=False, id_codes=True), b"Stat        Low     \r\n"),
        (codec.encode_range_line(overload=True), b"      High    \r\n"),
        (codec.encode_range_line(overload=False), b"      Low     \r\n"),
        # Entris II p.3, error codes: "Stat*****ERR*###****".
        (codec.encode_error_line(7, id_codes=True), b"Stat     ERR 007    \r\n"),
        (codec.encode_error_line(101), b"   ERR 101    \r\n"),
        # Combics 1 p.98, ID code "Ser.no": the serial number of the weighing instrument.
        (codec.encode_serial_line("0031204567"), b"Ser.no    0031204567\r\n"),
    ],
)
def test_special_lines_encode_as_the_manuals_show(wire: bytes, manual: bytes) -> None:
    assert wire == manual
    assert len(wire) in (16, 22)


def test_range_and_error_lines_round_trip() -> None:
    assert codec.decode_weight_line(codec.encode_range_line(overload=True)) == RangeLine(True)
    assert codec.decode_weight_line(codec.encode_range_line(overload=False, id_codes=True)) == RangeLine(False)
    assert codec.decode_weight_line(codec.encode_error_line(7)) == ErrorLine(7)
    assert codec.decode_text_line(codec.encode_text_line("MSE225S")) == "MSE225S"
    assert codec.decode_text_line(codec.encode_serial_line("0031204567")) == "0031204567"
