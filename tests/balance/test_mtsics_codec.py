"""MT-SICS codec: golden strings, typed replies for every status, fuzzing, round trips."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cython_ext.errors import ConfigError
from hal.mtsics import codec
from hal.mtsics.codec import (
    ErrorReply,
    GeneralError,
    InfoReply,
    MalformedLine,
    ReplyStatus,
    StatusReply,
    WeightReply,
)
from tests.balance.chunking import fed_whole_and_in_chunks


@pytest.mark.parametrize(
    ("command", "params", "wire"),
    [
        ("S", (), b"S\r\n"),
        ("SI", (), b"SI\r\n"),
        ("SIR", (), b"SIR\r\n"),
        ("Z", (), b"Z\r\n"),
        ("T", (), b"T\r\n"),
        ("@", (), b"@\r\n"),
        ("I4", (), b"I4\r\n"),
        ("M21", ("0", "0"), b"M21 0 0\r\n"),
    ],
)
def test_commands_encode_to_golden_bytes(command: str, params: tuple[str, ...], wire: bytes) -> None:
    assert codec.encode_command(command, *params) == wire


@pytest.mark.parametrize("bad", ["si", "", "S I", "S\r", "TOOLONGCMD"])
def test_malformed_commands_are_refused_before_encoding(bad: str) -> None:
    with pytest.raises(ConfigError):
        codec.encode_command(bad)


def test_parameters_with_spaces_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        codec.encode_command("M21", "0 0")
    assert caught.value.field == "params[0]"


@pytest.mark.parametrize(
    ("wire", "reply"),
    [
        (b"S S     100.00 g\r\n", WeightReply("S", True, 100_000_000, 10_000, "g")),
        (b"S D      12.34567 g\r\n", WeightReply("S", False, 12_345_670, 10, "g")),
        (b"S S   -0.00120 g\r\n", WeightReply("S", True, -1_200, 10, "g")),
        (b"S S 1234.5 mg\r\n", WeightReply("S", True, 1_234_500, 100, "mg")),
        (b"T S    25.00000 g\r\n", WeightReply("T", True, 25_000_000, 10, "g")),
        (b"TA A    25.00000 g\r\n", WeightReply("TA", True, 25_000_000, 10, "g")),
        (b"S I\r\n", StatusReply("S", ReplyStatus.NOT_EXECUTABLE)),
        (b"S +\r\n", StatusReply("S", ReplyStatus.OVERLOAD)),
        (b"S -\r\n", StatusReply("S", ReplyStatus.UNDERLOAD)),
        (b"Z A\r\n", StatusReply("Z", ReplyStatus.EXECUTED)),
        (b"Z I\r\n", StatusReply("Z", ReplyStatus.NOT_EXECUTABLE)),
        (b"T L\r\n", StatusReply("T", ReplyStatus.LOGIC)),
        (b'I4 A "B123456789"\r\n', InfoReply("I4", ("B123456789",))),
        (b'I2 A "XPE205 220.00000 g"\r\n', InfoReply("I2", ("XPE205 220.00000 g",))),
        (b'I1 A "01" "2.20" "2.20" "" ""\r\n', InfoReply("I1", ("01", "2.20", "2.20", "", ""))),
        (b"ES\r\n", ErrorReply(GeneralError.SYNTAX)),
        (b"ET\r\n", ErrorReply(GeneralError.TRANSMISSION)),
        (b"EL\r\n", ErrorReply(GeneralError.LOGIC)),
    ],
)
def test_golden_replies_decode_by_fields(wire: bytes, reply: object) -> None:
    assert codec.decode_reply(wire) == reply


@pytest.mark.parametrize(
    "wire",
    [
        b"",
        b"S\r\n",
        b"S X 1.0 g\r\n",
        b"S S 1.0\r\n",
        b"S S 1.0 lb\r\n",
        b"S S abc g\r\n",
        b"S S 0.0000001 g\r\n",  # finer than 1 µg: refused, not rounded
        b"S I extra\r\n",
        b'I4 A "B123\r\n',
        b'I4 A B"123"\r\n',
        b'"I4" A "B123"\r\n',
        b"s s 1.0 g\r\n",
        b"S S " + b"9" * 40 + b" g\r\n",
    ],
)
def test_anything_else_is_a_malformed_reply(wire: bytes) -> None:
    assert isinstance(codec.decode_reply(wire), MalformedLine)


def test_field_width_does_not_matter() -> None:
    narrow = codec.decode_reply(b"S S 1.00000 g\r\n")
    wide = codec.decode_reply(b"S S               1.00000 g\r\n")
    assert narrow == wide


@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_decoder(data: bytes) -> None:
    reply = codec.decode_reply(data)
    assert isinstance(reply, (WeightReply, StatusReply, InfoReply, ErrorReply, MalformedLine))


@given(st.binary(max_size=600), st.integers(min_value=1, max_value=17))
def test_the_deframer_gives_the_same_lines_whatever_the_chunking(data: bytes, chunk: int) -> None:
    whole, pieces = fed_whole_and_in_chunks(codec.LineDeframer, data, chunk)
    assert pieces == whole
    assert all(len(line) <= codec.MAX_LINE_BYTES + 1 for line in whole)


@given(
    command=st.sampled_from(["S", "T", "TI"]),
    stable=st.booleans(),
    steps=st.integers(min_value=-10**9, max_value=10**9),
    unit_decimals=st.sampled_from([("g", 5), ("g", 2), ("g", 0), ("mg", 3), ("mg", 1), ("kg", 6)]),
    width=st.integers(min_value=0, max_value=14),
)
def test_weight_replies_round_trip(command: str, stable: bool, steps: int, unit_decimals: tuple[str, int], width: int) -> None:
    unit, decimals = unit_decimals
    resolution_ug = codec.MASS_UNIT_UG[unit] // 10**decimals
    mass_ug = steps * resolution_ug
    wire = codec.encode_weight_reply(command, stable=stable, mass_ug=mass_ug, unit=unit, decimals=decimals, width=width)
    assert codec.decode_reply(wire) == WeightReply(command, stable, mass_ug, resolution_ug, unit)


@given(st.lists(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126, exclude_characters='"'), max_size=12), min_size=1, max_size=4))
def test_info_replies_round_trip(fields: list[str]) -> None:
    assert codec.decode_reply(codec.encode_info_reply("I2", *fields)) == InfoReply("I2", tuple(fields))


def test_status_and_error_replies_round_trip() -> None:
    for status in (ReplyStatus.EXECUTED, ReplyStatus.NOT_EXECUTABLE, ReplyStatus.OVERLOAD, ReplyStatus.UNDERLOAD):
        assert codec.decode_reply(codec.encode_status_reply("Z", status)) == StatusReply("Z", status)
    for error in GeneralError:
        assert codec.decode_reply(codec.encode_error_reply(error)) == ErrorReply(error)


def test_a_mass_the_digits_cannot_show_is_refused_not_rounded() -> None:
    with pytest.raises(ConfigError):
        codec.encode_weight_reply("S", stable=True, mass_ug=12_345, unit="g", decimals=2)
