"""Golden byte vectors: every command the simulated XPE205 implements, answered as the MT-SICS manual says.

The expected bytes are written out here by hand from the manuals' reply
formats, never produced by our codec. Sources (the reference manual is
Mettler Toledo 11780711, *MT-SICS Reference Manual, Excellence balances*):

- [RM] 11780711 §4.1 (level 0) and §4.2 (level 1), reply tables of each command;
- [AT] MT AT balances operating instructions p.87: ``S`` -> ``S S     100.00 g``
  (reference §3.1, S28), the weight right-aligned in a 10-character field;
- [OH] Ohaus 7000-series MT-SICS chapter p.103 and p.112 (an MT-SICS level 0
  implementation that quotes the same manual): ``I0 B 0 "I0"`` list lines, and
  "only fully implemented levels are listed" in ``I1``.
"""

from __future__ import annotations

import pytest

from sim.balance import create_balance
from sim.balance.mtsics import IMPLEMENTED_COMMANDS, MtSicsBalance
from sim.clock import VirtualClock


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def balance(clock: VirtualClock) -> MtSicsBalance:
    device = create_balance("mtsics", clock, lambda: 0)
    assert isinstance(device, MtSicsBalance)
    return device


def load(balance: MtSicsBalance, clock: VirtualClock, grams: int) -> None:
    """Put ``grams`` on the pan and let it settle."""
    balance.pan.add_load(grams * 1_000_000)
    clock.advance(10)
    balance.pan.read()
    clock.advance(1)


@pytest.mark.parametrize(
    ("command", "reply"),
    [
        # [RM] §4.1 I1: levels fully implemented, then the version of levels 0..3 ([OH] p.103).
        (b"I1\r\n", b'I1 A "01" "2.20" "2.20" "1.00" ""\r\n'),
        # [RM] §4.1 I2: type, line and capacity with unit in one quoted field.
        (b"I2\r\n", b'I2 A "XPE205 Excellence Plus 220.00000 g"\r\n'),
        # [RM] §4.1 I3: software version and type definition number.
        (b"I3\r\n", b'I3 A "2.20 10.28.0.493.142"\r\n'),
        (b"I4\r\n", b'I4 A "B123456789"\r\n'),
        # [RM] §4.1 I5: software material number.
        (b"I5\r\n", b'I5 A "11671158C"\r\n'),
        # [AT] p.87 / [RM] §4.1 S and SI on a stable, empty pan.
        (b"S\r\n", b"S S    0.00000 g\r\n"),
        (b"SI\r\n", b"S S    0.00000 g\r\n"),
        # [RM] §4.1 Z: zero setting performed; ZI: performed under stable conditions.
        (b"Z\r\n", b"Z A\r\n"),
        (b"ZI\r\n", b"ZI S\r\n"),
        # [RM] §4.1 @: reset, answered with the serial number.
        (b"@\r\n", b'I4 A "B123456789"\r\n'),
        # [RM] §4.2 D: the text appears on the display; DW: the weight display is back.
        (b'D "HELLO"\r\n', b"D A\r\n"),
        (b"DW\r\n", b"DW A\r\n"),
        # [RM] §4.2 K: key mode 1-4.
        (b"K 3\r\n", b"K A\r\n"),
        (b"K 9\r\n", b"K L\r\n"),
        # [RM] §4.2 T, TI, TA, TAC on an empty pan.
        (b"T\r\n", b"T S    0.00000 g\r\n"),
        (b"TI\r\n", b"TI S    0.00000 g\r\n"),
        (b"TA\r\n", b"TA A    0.00000 g\r\n"),
        (b"TAC\r\n", b"TAC A\r\n"),
        # [RM] §4.3 I10 balance ID, I11 type, M28 temperature (sensor 1, °C), WS doors.
        (b"I10\r\n", b'I10 A "Balance 1"\r\n'),
        (b"I11\r\n", b'I11 A "XPE205"\r\n'),
        (b"M28\r\n", b"M28 A 1 20.0\r\n"),
        (b"WS\r\n", b"WS A 0\r\n"),
        # [RM] §3.2.3 general errors: unknown, lower-case and over-long commands.
        (b"XYZ\r\n", b"ES\r\n"),
        (b"si\r\n", b"ES\r\n"),
        (b"S 1\r\n", b"ES\r\n"),
        (b"X" * 200 + b"\r\n", b"ET\r\n"),
    ],
)
def test_each_command_answers_as_the_manual_says(balance: MtSicsBalance, command: bytes, reply: bytes) -> None:
    assert balance.receive(command) == reply


def test_i0_lists_every_implemented_command_with_its_level(balance: MtSicsBalance) -> None:
    # [OH] p.112 / [RM] §4.1 I0: one "I0 B <level> "<command>"" line per command, the last with status A.
    lines = balance.receive(b"I0\r\n").split(b"\r\n")[:-1]
    assert lines[0] == b'I0 B 0 "I0"'
    assert lines[11] == b'I0 B 0 "@"'
    assert lines[12] == b'I0 B 1 "D"'
    assert lines[-1] == b'I0 A 2 "WS"'
    assert all(line.startswith(b"I0 B ") for line in lines[:-1])
    listed = [(int(line.split()[2]), line.split()[3].strip(b'"').decode()) for line in lines]
    assert listed == list(IMPLEMENTED_COMMANDS)


def test_every_listed_command_is_answered_and_nothing_else_is(balance: MtSicsBalance, clock: VirtualClock) -> None:
    params = {"D": b' "X"', "K": b" 1", "SR": b"", "TA": b"", "I10": b"", "WS": b""}
    for _, name in IMPLEMENTED_COMMANDS:
        reply = balance.receive(name.encode() + params.get(name, b"") + b"\r\n")
        assert reply and not reply.startswith((b"ES", b"ET", b"EL")), name
        balance.receive(b"@\r\n")
        clock.advance(5)  # zero, tare and doors start a settling period
    for unknown in (b"C3", b"SIU", b"M01", b"P100", b"PWR"):
        assert balance.receive(unknown + b"\r\n") == b"ES\r\n"


def test_weights_and_tare_with_a_load(balance: MtSicsBalance, clock: VirtualClock) -> None:
    load(balance, clock, 100)
    # [AT] p.87: "S S     100.00 g"; here with the XPE205's five decimals.
    assert balance.receive(b"S\r\n") == b"S S  100.00000 g\r\n"
    # [RM] §4.2 T: "T S <tare> <unit>", the tare now stored.
    assert balance.receive(b"T\r\n") == b"T S  100.00000 g\r\n"
    clock.advance(5)
    assert balance.receive(b"TA\r\n") == b"TA A  100.00000 g\r\n"
    assert balance.receive(b"SI\r\n") == b"S S    0.00000 g\r\n"
    assert balance.receive(b"TAC\r\n") == b"TAC A\r\n"
    assert balance.receive(b"SI\r\n") == b"S S  100.00000 g\r\n"


#: Conversations whose every step is a command and its reply, one flat table of ``(conversation, command, reply)``
#: rows, each conversation played in order on a fresh balance.
CONVERSATIONS: tuple[tuple[str, bytes, bytes], ...] = (
    # [RM] §4.2 TA <value> <unit>: the preset tare, rounded to the readability (10 µg here); a refused preset
    # (negative, another unit, above capacity, not a number, no unit) changes nothing.
    ("preset tare", b"TA 10.0 g\r\n", b"TA A   10.00000 g\r\n"),
    ("preset tare", b"TA 52.187344 g\r\n", b"TA A   52.18734 g\r\n"),
    ("preset tare", b"TA 2500 mg\r\n", b"TA A    2.50000 g\r\n"),
    ("preset tare", b"SI\r\n", b"S S   -2.50000 g\r\n"),
    ("preset tare", b"TA -1 g\r\n", b"TA L\r\n"),
    ("preset tare", b"TA 1 lb\r\n", b"TA L\r\n"),
    ("preset tare", b"TA 999 g\r\n", b"TA L\r\n"),
    ("preset tare", b"TA abc g\r\n", b"TA L\r\n"),
    ("preset tare", b"TA 1\r\n", b"TA L\r\n"),
    ("preset tare", b"TA\r\n", b"TA A    2.50000 g\r\n"),
    # [RM] §4.3 I10: the balance ID, set and read back; over 20 characters or unquoted is refused.
    ("balance id", b'I10 "My Balance"\r\n', b"I10 A\r\n"),
    ("balance id", b"I10\r\n", b'I10 A "My Balance"\r\n'),
    ("balance id", b'I10 "' + b"x" * 21 + b'"\r\n', b"I10 L\r\n"),
    ("balance id", b"I10 unquoted\r\n", b"I10 L\r\n"),
    # [RM] §4.3 WS: the doors, opened and read back; moving doors disturb the pan; door 5 does not exist.
    ("doors", b"WS 1\r\n", b"WS A\r\n"),
    ("doors", b"WS\r\n", b"WS A 1\r\n"),
    ("doors", b"SI\r\n", b"S D    0.00000 g\r\n"),
    ("doors", b"WS 5\r\n", b"WS L\r\n"),
)


@pytest.mark.parametrize("conversation", sorted({row[0] for row in CONVERSATIONS}))
def test_each_conversation_goes_as_the_manual_says(balance: MtSicsBalance, conversation: str) -> None:
    for step, (name, command, reply) in enumerate(CONVERSATIONS):
        if name == conversation:
            assert balance.receive(command) == reply, f"row {step}: {command!r}"


def test_dynamic_replies(balance: MtSicsBalance, clock: VirtualClock) -> None:
    balance.pan.disturb(5)
    # [RM] §4.1 SI: "S D" for a dynamic weight; ZI: "ZI D" re-zero under non-stable conditions;
    # [RM] §4.2 TI: "TI D <tare> <unit>".
    assert balance.receive(b"SI\r\n") == b"S D    0.00000 g\r\n"
    assert balance.receive(b"TI\r\n") == b"TI D    0.00000 g\r\n"
    assert balance.receive(b"ZI\r\n") == b"ZI D\r\n"


@pytest.mark.parametrize(("command", "reply_id"), [(b"S", b"S"), (b"Z", b"Z"), (b"T", b"T")])
def test_s_z_and_t_wait_for_stability_up_to_the_timeout(
    balance: MtSicsBalance, clock: VirtualClock, command: bytes, reply_id: bytes
) -> None:
    # [RM] §4.1/§4.2: "I: not executable (... timeout as stability was not reached)".
    balance.pan.disturb(60)
    assert balance.receive(command + b"\r\n") == b""
    assert balance.waiting
    clock.advance(9.9)
    assert balance.poll() == b""
    clock.advance(0.1)
    assert balance.poll() == reply_id + b" I\r\n"
    assert not balance.waiting


def test_a_waiting_zero_answers_when_the_pan_settles_and_queued_commands_follow(
    balance: MtSicsBalance, clock: VirtualClock
) -> None:
    balance.pan.disturb(3)
    assert balance.receive(b"Z\r\nI4\r\nSI\r\n") == b""  # executed one at a time, in order
    clock.advance(3)
    # The zero itself starts a settling period: the SI queued behind it reads dynamic.
    assert balance.poll() == b'Z A\r\nI4 A "B123456789"\r\nS D    0.00000 g\r\n'


def test_reset_cancels_a_waiting_command_and_clears_tare_and_display(balance: MtSicsBalance, clock: VirtualClock) -> None:
    assert balance.receive(b"TA 1 g\r\n") == b"TA A    1.00000 g\r\n"
    assert balance.receive(b'D "RUNNING"\r\n') == b"D A\r\n"
    balance.pan.disturb(60)
    assert balance.receive(b"S\r\n") == b""
    # [RM] §4.1 @: pending commands are cancelled, the tare memory is cleared.
    assert balance.receive(b"@\r\n") == b'I4 A "B123456789"\r\n'
    clock.advance(60)
    assert balance.poll() == b""
    assert balance.receive(b"TA\r\n") == b"TA A    0.00000 g\r\n"
    assert balance.display_text is None


def test_overload_and_underload(balance: MtSicsBalance) -> None:
    balance.pan.add_load(balance.pan.settings.capacity_ug + 1_000_000)
    for command, reply in ((b"S", b"S +"), (b"SI", b"S +"), (b"Z", b"Z +"), (b"ZI", b"ZI +"), (b"T", b"T +"), (b"TI", b"TI +")):
        assert balance.receive(command + b"\r\n") == reply + b"\r\n"
    balance.pan.add_load(-2 * balance.pan.settings.capacity_ug)
    assert balance.receive(b"S\r\n") == b"S -\r\n"


def test_display_text(balance: MtSicsBalance) -> None:
    # [RM] §4.2 D: "D R" when the text is longer than the display can show; D "" clears it.
    assert balance.receive(b'D "' + b"A" * 25 + b'"\r\n') == b"D R\r\n"
    assert balance.display_text == "A" * 20
    assert balance.receive(b'D ""\r\n') == b"D A\r\n"
    assert balance.receive(b"D HELLO\r\n") == b"D L\r\n"
    assert balance.receive(b"D\r\n") == b"ES\r\n"


def test_send_on_change(balance: MtSicsBalance, clock: VirtualClock) -> None:
    # [RM] §4.2 SR <preset> <unit>: a stable value, then "S D" once the weight moved by the
    # preset, then "S S" when it is stable again.
    assert balance.receive(b"SR 1.00000 g\r\n") == b"S S    0.00000 g\r\n"
    assert balance.poll() == b""
    balance.pan.add_load(500_000)
    clock.advance(0.1)
    assert balance.poll() == b"", "0.5 g is less than the preset"
    balance.pan.add_load(1_000_000)
    clock.advance(0.1)
    assert balance.poll() == b"S D    1.50000 g\r\n"
    assert balance.poll() == b""
    clock.advance(5)
    balance.pan.read()
    clock.advance(1)
    assert balance.poll() == b"S S    1.50000 g\r\n"
    assert balance.receive(b"SI\r\n") == b"S S    1.50000 g\r\n"  # another command ends SR
    balance.pan.add_load(5_000_000)
    clock.advance(10)
    assert balance.poll() == b""
    assert balance.receive(b"SR 0 g\r\n") == b"S L\r\n"
    assert balance.receive(b"SR 1 lb\r\n") == b"S L\r\n"
