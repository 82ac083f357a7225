"""New Era codec: golden strings from the manual, the number format, and properties of every encoder/parser."""

from __future__ import annotations

import binascii
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from cython_ext.errors import CapabilityError, CommunicationError, ConfigError
from hal.newera import codec
from hal.newera.codec import AlarmType, Command, ErrorCode, Prompt, RateUnits, Reply, ReplyFormatError, Request
from hal.newera.codec import VolumeUnits, WireDirection
from hal.newera.framing import Frame, FrameKind, ReplyDeframer

# -- golden vectors ---------------------------------------------------------------

# Reply strings from the reference §1.2 and §1.5 (bburan/new-era test vectors).
GOLDEN_REPLIES = [
    (b"00S", Reply(0, Prompt.STOPPED)),
    (b"00P0.21MM", Reply(0, Prompt.PAUSED, data="0.21MM")),
    (b"00IWDR", Reply(0, Prompt.INFUSING, data="WDR")),
    (b"00P?", Reply(0, Prompt.PAUSED, error=ErrorCode.UNRECOGNISED)),
    (b"00P?COM", Reply(0, Prompt.PAUSED, error=ErrorCode.BAD_PACKET)),
    (b"00A?S", Reply(0, None, alarm=AlarmType.STALL)),
    (b"00S?NA", Reply(0, Prompt.STOPPED, error=ErrorCode.NOT_APPLICABLE)),
    (b"00S?OOR", Reply(0, Prompt.STOPPED, error=ErrorCode.OUT_OF_RANGE)),
    (b"00I?IGN", Reply(0, Prompt.INFUSING, error=ErrorCode.IGNORED)),
    (b"07A?R", Reply(7, None, alarm=AlarmType.RESET)),
    (b"00A?T", Reply(0, None, alarm=AlarmType.COMMS_TIMEOUT)),
    (b"00A?E", Reply(0, None, alarm=AlarmType.PROGRAM_ERROR)),
    (b"00A?O", Reply(0, None, alarm=AlarmType.OUT_OF_RANGE)),
    (b"00X", Reply(0, Prompt.PURGING)),
    (b"00W", Reply(0, Prompt.WITHDRAWING)),
    (b"00T", Reply(0, Prompt.TIMED_PAUSE)),
    (b"00U", Reply(0, Prompt.USER_WAIT)),
]


@pytest.mark.parametrize(("data", "reply"), GOLDEN_REPLIES)
def test_golden_replies_decode(data: bytes, reply: Reply) -> None:
    assert codec.parse_reply(data) == reply
    assert reply.encode_data() == data


def test_stall_alarm_wire_bytes_from_the_manual() -> None:
    frames = ReplyDeframer().feed(bytes.fromhex("02 30 30 41 3F 53 03"))
    assert frames == [Frame(FrameKind.BASIC, b"00A?S")]
    assert codec.parse_reply(b"00A?S").alarm is AlarmType.STALL


def test_golden_requests() -> None:
    rate = codec.RateSetting("5.000", RateUnits.ML_PER_H, 5_000_000)
    assert codec.set_rate_request(0, rate).encode(safe=False) == bytes.fromhex("30 52 41 54 35 2E 30 30 30 4D 48 0D")
    assert codec.safe_mode_request(0, 0).encode(safe=True) == bytes.fromhex("02 09 30 53 41 46 30 59 AD 03")
    assert codec.safe_mode_request(0, 10).encode(safe=True) == bytes.fromhex("02 0A 30 53 41 46 31 30 63 BE 03")
    assert codec.query(0, Command.VER).encode(safe=True) == bytes.fromhex("02 08 30 56 45 52 48 09 03")
    assert codec.status_request(0).encode(safe=False) == b"0\r"
    assert Request(0, Command.RESET).data() == b"*RESET"


def test_program_command_byte_vectors() -> None:
    """The Pumping Program commands as the manual spells them (spaces dropped), in Basic and Safe framing.

    The Safe frames' CRC is computed here with ``binascii.crc_hqx`` (CRC-16/XMODEM, reference §1.4),
    independently of the framing module.
    """
    phase = codec.PhaseFunction
    basic = {
        codec.select_phase_request(0, 2): "30 50 48 4E 32 0D",  # 0PHN2
        codec.set_function_request(0, phase.RATE): "30 46 55 4E 52 41 54 0D",  # 0FUNRAT
        codec.set_function_request(0, phase.STOP): "30 46 55 4E 53 54 50 0D",  # 0FUNSTP
        codec.set_function_request(0, phase.JUMP, 1): "30 46 55 4E 4A 4D 50 31 0D",  # 0FUNJMP1
        codec.set_function_request(12, phase.JUMP, 41): "31 32 46 55 4E 4A 4D 50 34 31 0D",  # 12FUNJMP41
        codec.run_request(0, 3): "30 52 55 4E 33 0D",  # 0RUN3
        codec.query(0, Command.PHN): "30 50 48 4E 0D",  # 0PHN
        codec.query(0, Command.FUN): "30 46 55 4E 0D",  # 0FUN
        codec.stop_request(0): "30 53 54 50 0D",  # 0STP: the first pauses
    }
    for request, wire in basic.items():
        assert request.encode(safe=False) == bytes.fromhex(wire), request
        data = bytes.fromhex(wire)[:-1]
        crc = binascii.crc_hqx(data, 0)
        assert request.encode(safe=True) == bytes([0x02, len(data) + 4]) + data + crc.to_bytes(2, "big") + b"\x03"
    assert codec.parse_function("JMP5") == "JMP5"


@pytest.mark.parametrize(("function", "target"), [("JUMP", None), ("RATE", 2), ("JUMP", 0), ("JUMP", 42)])
def test_set_function_request_takes_a_target_phase_for_jmp_only(function: str, target: int | None) -> None:
    with pytest.raises(ConfigError):
        codec.set_function_request(0, codec.PhaseFunction[function], target)


def test_safe_golden_replies_decode() -> None:
    frames = ReplyDeframer(safe=True).feed(bytes.fromhex("02 07 30 30 53 AA A6 03 02 09 30 30 41 3F 54 05 40 03"))
    replies = [codec.parse_reply(f.data) for f in frames if isinstance(f, Frame)]
    assert replies == [Reply(0, Prompt.STOPPED), Reply(0, None, alarm=AlarmType.COMMS_TIMEOUT)]


@pytest.mark.parametrize(
    "data",
    [b"", b"0", b"00", b"00A?", b"00A?Z", b"00Q", b"00S?XYZ", b"AB", b"00S\x07", "00S\u00e9".encode(), b"\xff\xfe",
     b"123S"],
)
def test_malformed_replies_raise_reply_format_error(data: bytes) -> None:
    with pytest.raises(ReplyFormatError):
        codec.parse_reply(data)


def test_reply_format_error_is_a_communication_error() -> None:
    assert issubclass(ReplyFormatError, CommunicationError)


# -- reply payloads ----------------------------------------------------------------


def test_payload_parsers() -> None:
    assert codec.parse_rate("0.21MM").rate_nl_per_h == 12_600_000
    assert codec.parse_rate("23.35UH").rate_nl_per_h == 23_350
    assert codec.parse_dispensed("I1.234W0.005UL") == (1234, 5)
    assert codec.parse_dispensed("I12.00W0.000ML") == (12_000_000, 0)
    assert codec.parse_volume("5.5", VolumeUnits.ML) == 5_500_000
    assert codec.parse_volume("5.5UL", VolumeUnits.ML) == 5_500
    assert codec.parse_diameter("26.59") == Decimal("26.59")
    assert codec.parse_direction("WDR") is WireDirection.WITHDRAW
    assert codec.parse_version("NE1000V3.928") == ("NE1000", "V3.928")
    assert codec.parse_version("NE1000X2V3.930") == ("NE1000", "X2V3.930")


@pytest.mark.parametrize(
    ("parser", "data"),
    [
        (codec.parse_rate, "0.21"),
        (codec.parse_rate, "MM"),
        (codec.parse_rate, "1e3UH"),
        (codec.parse_dispensed, "I1W2"),
        (codec.parse_dispensed, "0.21MM"),
        (codec.parse_direction, "REV"),
        (codec.parse_version, "PHD ULTRA 3.0.5"),
        (codec.parse_diameter, "-1"),
        (codec.parse_rate, "0.0001UH"),  # finer than 1 nL/h
    ],
)
def test_payload_parsers_reject_other_shapes(parser: object, data: str) -> None:
    with pytest.raises(ReplyFormatError):
        parser(data)  # type: ignore[operator]


# -- number format -------------------------------------------------------------------


@pytest.mark.parametrize(("value", "text"), [("0.001", "0.001"), ("9999", "9999"), ("12.34", "12.34"),
                                             ("9.999", "9.999"), ("0", "0"), ("14.430", "14.43"), ("5", "5")])
def test_format_number_accepts_the_manuals_examples(value: str, text: str) -> None:
    assert codec.format_number(Decimal(value)) == text


@pytest.mark.parametrize("value", ["12.3456", "0.00001", "10000", "-1", "12.345", "0.0005"])
def test_format_number_rejects_unrepresentable_values(value: str) -> None:
    with pytest.raises(CapabilityError):
        codec.format_number(Decimal(value))


_WIRE_NUMBER = st.one_of(
    st.integers(0, 9999).map(Fraction),
    st.integers(0, 9999).map(lambda n: Fraction(n, 10)),
    st.integers(0, 9999).map(lambda n: Fraction(n, 100)),
    st.integers(0, 9999).map(lambda n: Fraction(n, 1000)),
)


@given(_WIRE_NUMBER)
def test_format_then_parse_is_identity_on_wire_numbers(value: Fraction) -> None:
    text = codec.format_number(value)
    assert sum(c.isdigit() for c in text) <= codec.MAX_DIGITS
    assert Fraction(codec.parse_scaled(text, 1000), 1000) == value


@given(st.fractions(min_value=0, max_value=10_500, max_denominator=10**6))
def test_nearest_number_is_a_valid_wire_number_closest_at_its_resolution(value: Fraction) -> None:
    found = codec.nearest_number(value)
    if value >= Fraction(99995, 10):
        assume(found is None or found[1] >= 9999)
    if found is None:
        assert value >= Fraction(99995, 10)
        return
    text, represented = found
    assert Fraction(codec.parse_scaled(text, 1000), 1000) == represented
    assert codec.format_number(represented)  # valid in the strict format
    decimals = len(text.split(".")[1]) if "." in text else 0
    assert abs(represented - value) <= Fraction(1, 2 * 10**decimals)


# -- rate and volume choice --------------------------------------------------------


@given(st.integers(1, 600_000_000_000), st.integers(1, 10_000))
def test_encode_rate_stays_within_tolerance_or_refuses(rate_nl_per_h: int, tolerance_ppm: int) -> None:
    try:
        setting = codec.encode_rate(rate_nl_per_h, tolerance_ppm=tolerance_ppm)
    except CapabilityError:
        return
    wire = codec.parse_rate(setting.argument)
    assert wire.rate_nl_per_h == setting.rate_nl_per_h
    assert codec.relative_error_ppm(rate_nl_per_h, setting.rate_nl_per_h) <= tolerance_ppm
    assert len(setting.text.replace(".", "")) <= codec.MAX_DIGITS


@given(st.integers(1, 599_940_000_000))
def test_every_rate_from_1_nl_per_h_to_the_format_limit_fits_in_half_a_permille(rate_nl_per_h: int) -> None:
    # Four significant digits in the best unit: the worst rounding error is 1/2000 of the value.
    setting = codec.encode_rate(rate_nl_per_h, tolerance_ppm=500)
    assert setting.rate_nl_per_h > 0


@given(st.integers(1, 10_000_000))
def test_representable_rates_are_encoded_exactly(milli: int) -> None:
    rate_nl_per_h = milli  # thousandths of a µL/h are whole nL/h
    assume(len(str(milli).rstrip("0")) <= 4 and milli < 10_000_000)
    setting = codec.encode_rate(rate_nl_per_h, tolerance_ppm=1)
    assert setting.rate_nl_per_h == rate_nl_per_h


def test_encode_rate_keeps_resolution_for_typical_itb_rates() -> None:
    # 500 µg/day of 500 µg/mL = 41.667 µL/h: µL/h keeps 4 digits, mL/h would keep 2.
    assert codec.encode_rate(41_667).argument == "41.67UH"
    assert codec.encode_rate(5_000_000, units=RateUnits.ML_PER_H).argument == "5.000MH"


def test_encode_rate_with_forced_units_refuses_what_they_cannot_hold() -> None:
    with pytest.raises(CapabilityError):
        codec.encode_rate(10_000_000, units=RateUnits.UL_PER_H)  # 10000 µL/h needs 5 digits
    with pytest.raises(CapabilityError):
        codec.encode_rate(100, units=RateUnits.ML_PER_MIN)


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "10"])
def test_encode_rate_rejects_non_positive_or_non_int(bad: object) -> None:
    with pytest.raises(ConfigError):
        codec.encode_rate(bad)  # type: ignore[arg-type]


@given(st.integers(0, 20_000_000_000), st.sampled_from(list(VolumeUnits)))
def test_encode_volume_round_trips_or_refuses(volume_nl: int, units: VolumeUnits) -> None:
    try:
        setting = codec.encode_volume(volume_nl, units)
    except CapabilityError:
        assert volume_nl > 0
        return
    assert codec.parse_volume(setting.text, units) == setting.volume_nl
    if volume_nl:
        assert codec.relative_error_ppm(volume_nl, setting.volume_nl) <= codec.DEFAULT_TOLERANCE_PPM
    else:
        assert setting.volume_nl == 0


def test_encode_volume_refuses_sub_resolution_volumes() -> None:
    with pytest.raises(CapabilityError):
        codec.encode_volume(400, VolumeUnits.ML)  # 0.0004 mL rounds to 0
    with pytest.raises(ConfigError):
        codec.encode_volume(-1, VolumeUnits.UL)


# -- geometry ----------------------------------------------------------------------


def test_rate_envelope_matches_the_reference_worked_examples() -> None:
    low, high = codec.syringe_rate_envelope_nl_per_h(Decimal("26.59"))
    assert round(low / 1000, 2) == 23.35  # µL/h
    assert round(high / 60 / 1_000_000, 2) == 28.32  # mL/min
    low, high = codec.syringe_rate_envelope_nl_per_h(Decimal("4.699"))
    assert round(low / 1000, 2) == 0.73
    assert round(high / 60 / 1_000_000, 2) == 0.88


def test_volume_units_follow_the_14_mm_rule() -> None:
    assert codec.volume_units_for_diameter(Decimal("14.00")) is VolumeUnits.UL
    assert codec.volume_units_for_diameter(Decimal("14.01")) is VolumeUnits.ML


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "abc", None, True, [1]])
def test_to_decimal_rejects_non_numbers(value: object) -> None:
    with pytest.raises(ConfigError):
        codec.to_decimal(value, "syringe_diameter_mm")


def test_to_decimal_takes_floats_by_their_shortest_repr() -> None:
    assert codec.to_decimal(14.43, "x") == Decimal("14.43")


# -- requests ------------------------------------------------------------------------


@pytest.mark.parametrize("address", [-1, 100, 1.0, True, "0"])
def test_request_rejects_bad_addresses(address: object) -> None:
    with pytest.raises(ConfigError):
        Request(address, Command.RAT)  # type: ignore[arg-type]


def test_request_rejects_argument_text_outside_the_wire_alphabet() -> None:
    with pytest.raises(ConfigError):
        Request(0, Command.RAT, "5 MH")
    with pytest.raises(ConfigError):
        Request(0, Command.STATUS, "5")


def test_delivery_classification() -> None:
    assert codec.run_request(0).changes_delivery
    assert codec.stop_request(0).changes_delivery
    assert not codec.query(0, Command.RAT).changes_delivery
    assert codec.set_rate_request(0, codec.encode_rate(1000)).changes_delivery
    assert not codec.status_request(0).changes_delivery
    with pytest.raises(ConfigError):
        codec.query(0, Command.RUN)


@pytest.mark.parametrize("timeout_s", [-1, 256, 1.5, None])
def test_safe_mode_request_range(timeout_s: object) -> None:
    with pytest.raises(ConfigError):
        codec.safe_mode_request(0, timeout_s)  # type: ignore[arg-type]


def test_clear_dispensed_only_for_infuse_or_withdraw() -> None:
    assert codec.clear_dispensed_request(3, WireDirection.INFUSE).data() == b"3CLDINF"
    with pytest.raises(ConfigError):
        codec.clear_dispensed_request(3, WireDirection.REVERSE)


# -- robustness ----------------------------------------------------------------------

_REPLIES = st.builds(
    Reply,
    address=st.integers(0, 99),
    prompt=st.sampled_from(list(Prompt)),
    error=st.none() | st.sampled_from(list(ErrorCode)),
    data=st.sampled_from(["", "0.21MM", "I1.200W0.000UL", "NE1000V3.928", "INF", "26.59"]),
).filter(lambda r: r.error is None or r.data == "")


@given(_REPLIES)
def test_reply_encode_parse_round_trip(reply: Reply) -> None:
    assert codec.parse_reply(reply.encode_data()) == reply


@given(st.binary(max_size=64))
def test_random_bytes_never_crash_the_reply_parser(data: bytes) -> None:
    try:
        reply = codec.parse_reply(data)
    except ReplyFormatError:
        return
    assert 0 <= reply.address <= 99
    assert (reply.prompt is None) != (reply.alarm is None)


@given(st.lists(st.binary(max_size=24), max_size=12), st.booleans())
def test_random_streams_through_deframer_and_parser_never_crash(chunks: list[bytes], safe: bool) -> None:
    deframer = ReplyDeframer(safe=safe)
    for chunk in chunks:
        for item in deframer.feed(chunk):
            if isinstance(item, Frame):
                try:
                    codec.parse_reply(item.data)
                except ReplyFormatError:
                    pass


@given(st.integers(100, 50_000))
def test_driver_envelope_never_claims_more_than_the_simulated_mechanism(diameter_milli: int) -> None:
    from sim.newera import rate_envelope_nl_per_h

    diameter_mm = Decimal(diameter_milli) / 1000
    low, high = codec.syringe_rate_envelope_nl_per_h(diameter_mm)
    sim_low, sim_high = rate_envelope_nl_per_h(float(diameter_mm))
    assert sim_low <= low <= high <= sim_high
    assert low - sim_low < 1 and sim_high - high < 1


@given(st.integers(100, 49_999))
def test_envelope_grows_with_the_diameter(diameter_milli: int) -> None:
    small = codec.syringe_rate_envelope_nl_per_h(Decimal(diameter_milli) / 1000)
    large = codec.syringe_rate_envelope_nl_per_h(Decimal(diameter_milli + 1) / 1000)
    assert small[0] <= large[0] and small[1] <= large[1]


@given(st.integers(1, 599_940_000_000))
def test_every_rate_the_codec_writes_is_read_identically_by_the_simulated_firmware(rate_nl_per_h: int) -> None:
    from sim.newera.firmware import RATE_UNIT_NL_PER_H_PER_MILLI
    from sim.newera.wire_numbers import parse_milli

    setting = codec.encode_rate(rate_nl_per_h)
    milli = parse_milli(setting.text)
    assert milli is not None
    assert milli * RATE_UNIT_NL_PER_H_PER_MILLI[setting.units.value] == setting.rate_nl_per_h
