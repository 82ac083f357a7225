"""The bench profile is strict, and the unit-bearing CLI strings convert exactly."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, localcontext
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hil
from cython_ext.errors import ConfigError
from cython_ext.fields import FileErrors
from hil.gravimetric.profile import (
    SYRINGE_PRESETS_MM,
    BenchProfile,
    load_profile,
    parse_duration_s,
    parse_profile,
    parse_rate_nl_per_h,
    parse_rate_request,
    parse_syringe_mm,
)

EXAMPLE = Path(hil.__file__).parent / "profiles" / "bench.example.toml"


def test_the_shipped_example_profile_loads() -> None:
    profile = load_profile(EXAMPLE)
    assert profile.pump.url == "/dev/ttyUSB0"
    assert profile.pump.open_options() == {"baudrate": 19200, "address": 0}
    assert profile.balance.open_options() == {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1}
    assert profile.syringe_diameter_mm == SYRINGE_PRESETS_MM["bd-10ml"]
    assert profile.rate_nl_per_h == 500_000
    assert (profile.duration_s, profile.interval_s, profile.stabilisation_s) == (7200, 30, 0)
    assert profile.water_temperature_c == 21.5
    assert profile.air_buoyancy_correction is True


def test_an_empty_profile_gives_nothing() -> None:
    assert parse_profile("") == BenchProfile()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("[pumps]\nurl = 'x'\n", "pumps"),
        ("[pump]\nport = 'x'\n", "pump.port"),
        ("[balance]\nbaudrate = '9600'\n", "balance.baudrate"),
        ("[balance]\nparity = 'X'\n", "balance.parity"),
        ("[water]\ntemperature = 20\n", "water.temperature"),
        ("[water]\nair_buoyancy_correction = 1\n", "water.air_buoyancy_correction"),
        ("[water]\nevaporation_ug_per_h = -1\n", "water.evaporation_ug_per_h"),
        ("[test]\nrate = 0.5\n", "test.rate"),
        ("[test]\nduration = '2 days'\n", "test.duration"),
        ("[syringe]\nspec = 'huge'\n", "syringe.spec"),
        ("pump = 3\n", "pump"),
        ("[pump\n", "profile"),
    ],
)
def test_unknown_keys_and_bad_values_are_rejected_by_name(text: str, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_profile(text)
    assert caught.value.field == field


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("0.5mL/h", 500_000),
        ("1.2 mL/h", 1_200_000),
        ("20uL/h", 20_000),
        ("20µL/h", 20_000),
        ("750nL/h", 750),
        ("0.24mL/day", 10_000),
    ],
)
def test_rates_convert_exactly(text: str, rate: int) -> None:
    assert parse_rate_nl_per_h(text) == rate


@pytest.mark.parametrize("text", ["1", "0mL/h", "0.0000001mL/h", "1L/h", "-1mL/h", "0.25mL/day", 1.0, None])
def test_bad_rates_are_rejected_not_rounded(text: object) -> None:
    with pytest.raises(ConfigError):
        parse_rate_nl_per_h(text)


#: nL/h per unit, written out again for the oracle (not the module's table).
ORACLE_NL_PER_H = {"nL/h": Decimal(1), "uL/h": Decimal(1000), "mL/h": Decimal(1_000_000),
                   "mL/day": Decimal(1_000_000) / Decimal(24)}


@given(digits=st.decimals(min_value="0.001", max_value="9999", places=7, allow_nan=False, allow_infinity=False),
       unit=st.sampled_from(sorted(ORACLE_NL_PER_H)))
def test_a_command_line_rate_is_set_as_the_nearest_whole_nl_per_h(digits: Decimal, unit: str) -> None:
    """Any digits are accepted on the command line; the rate set is the typed one rounded half up, and said so."""
    text = f"{digits}{unit}"
    with localcontext() as ctx:
        ctx.prec = 60
        exact = digits * ORACLE_NL_PER_H[unit]
        expected = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    if not 0 < expected <= 10_000_000_000:
        with pytest.raises(ConfigError) as caught:
            parse_rate_request(text, field_name="--rate")
        assert caught.value.field == "--rate"
        return
    request = parse_rate_request(text, field_name="--rate")
    assert request.nl_per_h == expected
    assert abs(Decimal(request.nl_per_h) - exact) <= Decimal("0.5")
    if request.nl_per_h == exact:
        assert "set as" not in request.describe()
    else:
        assert f"set as {expected} nL/h" in request.describe() and "%" in request.describe()


def test_a_command_line_rate_reports_its_rounding() -> None:
    request = parse_rate_request("0.1mL/day", field_name="--rate")
    assert request.nl_per_h == 4167
    assert request.describe() == "0.1mL/day = 4166.667 nL/h, set as 4167 nL/h (+0.008 %, the nearest whole nL/h)"
    assert parse_rate_request("0.24mL/day").describe() == "0.24mL/day = 10000 nL/h"
    for bad in ("0.4nL/h", "1L/h", "5", "-1mL/h", 1.0):
        with pytest.raises(ConfigError):
            parse_rate_request(bad, field_name="--rate")


def test_durations_and_syringes() -> None:
    assert parse_duration_s("120min") == 7200
    assert parse_duration_s("30s") == 30
    assert parse_duration_s("1.5h") == 5400
    for bad in ("30", "0.5s", "3 days"):
        with pytest.raises(ConfigError):
            parse_duration_s(bad)
    assert parse_syringe_mm("BD-10mL") == 14.5
    assert parse_syringe_mm("14.57mm") == 14.57
    for bad in ("0.05mm", "51mm", "14.57", "bd-2ml"):
        with pytest.raises(ConfigError):
            parse_syringe_mm(bad)


_scalars = st.one_of(
    st.integers(min_value=-10**6, max_value=10**6),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzµ/.0123456789 -", max_size=12),
)
_tables = st.dictionaries(
    st.sampled_from(["pump", "balance", "syringe", "water", "test", "extra"]),
    st.dictionaries(
        st.sampled_from(["url", "driver", "baudrate", "parity", "spec", "temperature_c", "rate", "duration", "x"]),
        _scalars,
        max_size=4,
    ),
    max_size=4,
)


def _toml(tables: dict[str, dict[str, object]]) -> str:
    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return f'"{v}"'  # the alphabet has no quotes or backslashes
        return repr(v)

    return "".join(
        f"[{name}]\n" + "".join(f"{key} = {value(v)}\n" for key, v in content.items()) for name, content in tables.items()
    )


@given(_tables)
def test_any_profile_either_loads_or_is_rejected_with_config_error(tables: dict[str, dict[str, object]]) -> None:
    try:
        profile = parse_profile(_toml(tables))
    except ConfigError as exc:
        assert exc.field
    else:
        assert isinstance(profile, BenchProfile)


@given(st.text(max_size=200))
def test_any_text_either_loads_or_is_rejected_with_config_error(text: str) -> None:
    try:
        parse_profile(text)
    except ConfigError:
        pass


def test_every_problem_of_a_profile_is_reported_with_its_line() -> None:
    text = "[pump]\nbaudrate = 0\naddress = 100\n[water]\ntemperature_c = 99\n[test]\nrate = '99999mL/h'\n"
    with pytest.raises(FileErrors) as excinfo:
        parse_profile(text, source="bench.toml")
    assert [(e.field, e.line) for e in excinfo.value.errors] == [
        ("pump.baudrate", 2), ("pump.address", 3), ("water.temperature_c", 5), ("test.rate", 7)]
    assert all(e.one_line().startswith(f"bench.toml:{e.line}: ") for e in excinfo.value.errors)


@pytest.mark.parametrize(
    "data",
    [b"[pump]\nurl = '\xff'\n", b"x = " + b"[" * 5000, b"[water]\ntemperature_c = 1e999999\n", b"#" * 2_000_000],
    ids=["not UTF-8", "deep", "huge number", "too large"],
)
def test_bad_bytes_are_config_errors(data: bytes) -> None:
    with pytest.raises(ConfigError) as excinfo:
        parse_profile(data)
    assert excinfo.value.field and excinfo.value.allowed


@pytest.mark.parametrize("text", ["1" * 30 + "mL/h", "1e999999mL/h", "99999mL/h", "0.5 mL/hh", "1_0mL/h", "٣mL/h"])
def test_rates_are_bounded_plain_decimals(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_rate_nl_per_h(text)


@pytest.mark.parametrize("text", ["31days", "999999999h", "1e9s", "45d"])
def test_durations_are_bounded(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration_s(text)
