"""Golden byte vectors: the simulated Cubis MSE225S answers every SBI command as the Sartorius manuals say.

The expected bytes are written out by hand from the manuals' position tables,
never produced by our codec. Sources:

- [LE] Sartorius LE series p.52 and FB p.66: the 16-character line, sign in 1,
  value in 3-10 with leading zeros as spaces, unit in 12-14, CR LF
  (``+   1255.7 g  ``, reference §3.2);
- [EN] Entris II interface description p.3: 22 characters with a 6-character
  ID code (``N     +    123.56 g  ``), special codes ``Stat`` + ``High``/``Low``,
  errors ``Stat     ERR ###    ``;
- [CO] Combics 1 p.98: ID codes, ``Ser.no`` for the serial number;
- [MSE] Cubis MSE operating instructions, SBI commands table (reference §3.2, S36):
  only ``ESC P``/``ESC p_`` and ``ESC x1_``..``x3_`` answer; the others are silent.
"""

from __future__ import annotations

import pytest

from sim.balance import create_balance
from sim.balance.sbi import SbiBalance
from sim.clock import VirtualClock

ESC = b"\x1b"


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


def balance(clock: VirtualClock, **options: object) -> SbiBalance:
    # A 5 kg x 0.1 g balance, so that the manual's example weights fit.
    device = create_balance("sbi", clock, lambda: 0, resolution_ug=100_000, capacity_ug=5_000_000_000, **options)
    assert isinstance(device, SbiBalance)
    return device


def settle(device: SbiBalance, clock: VirtualClock) -> None:
    clock.advance(10)
    device.pan.read()
    clock.advance(1)


def test_the_reference_line_byte_for_byte(clock: VirtualClock) -> None:
    device = balance(clock)
    device.pan.add_load(1_255_700_000)
    settle(device, clock)
    # [LE]: + * * * 1 2 5 5 . 7 * g * * CR LF
    assert device.receive(ESC + b"P\r\n") == bytes.fromhex("2B 20 20 20 31 32 35 35 2E 37 20 67 20 20 0D 0A")
    assert device.receive(ESC + b"p_") == b"+   1255.7 g  \r\n"


def test_an_unstable_line_has_no_unit(clock: VirtualClock) -> None:
    device = balance(clock)
    device.pan.add_load(1_255_700_000)
    # [LE]/[MSE]: "positions 12-14: unit symbol or space"; no unit until stable.
    assert device.receive(ESC + b"P") == b"+   1255.7    \r\n"


def test_id_codes_make_22_character_lines(clock: VirtualClock) -> None:
    device = balance(clock, id_codes=True)
    device.pan.add_load(123_500_000)
    settle(device, clock)
    # [EN]: I I I I I I + * D D D D D D D D * U U U CR LF, example "N" + "+ 123.56 g".
    assert device.receive(ESC + b"P") == b"N     +    123.5 g  \r\n"
    device.pan.add_load(-125_000_000)
    settle(device, clock)
    assert device.receive(ESC + b"P") == b"N     -      1.5 g  \r\n"


@pytest.mark.parametrize(
    ("id_codes", "over", "under"),
    [
        # [EN] special codes: Stat in 1-4, High/Low from position 13 (7 of the 16-character body).
        (True, b"Stat        High    \r\n", b"Stat        Low     \r\n"),
        (False, b"      High    \r\n", b"      Low     \r\n"),
    ],
)
def test_overload_and_underload_are_special_codes(clock: VirtualClock, id_codes: bool, over: bytes, under: bytes) -> None:
    device = balance(clock, id_codes=id_codes)
    device.pan.add_load(device.pan.settings.capacity_ug + 1_000_000)
    assert device.receive(ESC + b"P") == over
    device.pan.add_load(-2 * device.pan.settings.capacity_ug - 2_000_000)
    assert device.receive(ESC + b"P") == under


def test_identification(clock: VirtualClock) -> None:
    device = balance(clock)
    assert device.receive(ESC + b"x1_") == b"MSE225S       \r\n"
    # [CO]: the serial number is a labelled line, ID code "Ser.no".
    assert device.receive(ESC + b"x2_\r\n") == b"Ser.no    0031204567\r\n"
    assert device.receive(ESC + b"x3_") == b"00-51-03      \r\n"


@pytest.mark.parametrize(
    "code", [b"T", b"U", b"V", b"S", b"K", b"L", b"M", b"N", b"O", b"R", b"Q", b"Z", b"W", b"f0_", b"f5_", b"s3_", b"m1_"]
)
def test_control_commands_are_silent(clock: VirtualClock, code: bytes) -> None:
    # [MSE]: control commands act on the balance and send nothing back.
    assert balance(clock).receive(ESC + code + b"\r\n") == b""


def test_tare_zero_and_restart_act_on_the_display(clock: VirtualClock) -> None:
    device = balance(clock)
    device.pan.add_load(20_000_000)
    settle(device, clock)
    device.receive(ESC + b"U")  # tare
    settle(device, clock)
    assert device.receive(ESC + b"P") == b"+      0.0 g  \r\n"
    device.pan.add_load(5_000_000)
    settle(device, clock)
    assert device.receive(ESC + b"P") == b"+      5.0 g  \r\n"
    device.receive(ESC + b"S")  # restart: zeroes as at power-on, the tare is gone
    settle(device, clock)
    assert device.receive(ESC + b"P") == b"+      0.0 g  \r\n"
    assert device.pan.tare_ug == 0
    device.receive(ESC + b"O")
    assert device.keys_blocked
    device.receive(ESC + b"R")
    assert not device.keys_blocked
    device.receive(ESC + b"N")
    assert device.filter == "N"
