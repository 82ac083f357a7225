"""Fuzz: whatever bytes a balance sends, the MT-SICS and SBI drivers return a checked value or raise a HalError.

Each Hypothesis example draws a random generator and runs
:data:`OPERATIONS_PER_EXAMPLE` driver operations (identify, immediate and
stable reads, zero, tare, a short stream), each against a link that answers
every write with the next of a few generated replies: golden replies of the real
devices mutated (bytes flipped, inserted, deleted, cut, duplicated, spliced),
replies built from the protocol's own tokens, and raw bytes. Nothing but a
:class:`~cython_ext.errors.HalError` may escape, and a returned reading must
be plausible and must show digits that one of the delivered lines carried (the
oracle is the bytes, not our decoder). Every reply fed to a driver counts as a
case; :data:`CASES` is checked at the end of the module, and each counts to
the run's figure in :mod:`tests.reply_tally`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cython_ext.errors import HalError
from hal.balance import MASS_UNIT_UG, BalanceDriver, BalanceIdentity, BalanceReading
from hal.mtsics.driver import MtSicsDriver
from hal.sartorius.driver import SbiDriver
from sim.clock import VirtualClock
from tests import reply_tally

#: The suite names in :data:`tests.reply_tally.SHARES`.
SUITES = {"mtsics": "MT-SICS driver", "sbi": "SBI driver"}

MTSICS_GOLDEN = [
    b"S S     100.00 g\r\n", b"S D      12.34567 g\r\n", b"S I\r\n", b"S +\r\n", b"S -\r\n",
    b"Z A\r\n", b"Z I\r\n", b"T S    25.00000 g\r\n", b"TA A    0.00000 g\r\n", b"ES\r\n", b"ET\r\n", b"EL\r\n",
    b'I2 A "XPE205 Excellence Plus 220.00000 g"\r\n', b'I3 A "2.20 10.28.0.493.142"\r\n',
    b'I4 A "B123456789"\r\n', b'I0 B 0 "I0"\r\n', b"M28 A 1 22.5\r\n", b"D R\r\n",
]  # fmt: skip
SBI_GOLDEN = [
    b"+   1255.7 g  \r\n", b"-     12.3    \r\n", b"N     +    123.5 g  \r\n", b"      High    \r\n",
    b"Stat        Low     \r\n", b"   ERR 101    \r\n", b"Stat     ERR 007    \r\n", b"Stat        Cal.Ext.\r\n",
    b"MSE225S       \r\n", b"Ser.no    0031204567\r\n", b"00-51-03      \r\n", b"G#    -      0.5 mg \r\n",
]  # fmt: skip
MTSICS_TOKENS = [b"S", b"SI", b"Z", b"T", b"TA", b"I2", b"I4", b"ES", b"A", b"B", b"D", b"I", b"+", b"-", b"L",
                 b"100.00", b"-0.001", b"1e5", b"99999999999999999", b".", b"g", b"mg", b"kg", b"lb", b'"', b'"x y"']  # fmt: skip
SBI_TOKENS = [b"+", b"-", b"N", b"G#", b"Stat", b"High", b"Low", b"ERR", b"Err", b"101", b"1255.7", b"0.00012",
              b"99999999999", b".", b"g", b"mg", b"H", b"LL", b"Ser.no", b"\x1b", b"\x00"]  # fmt: skip

_NUMBER = re.compile(rb"\d*\.?\d+|\d+\.")
#: Replies fed to a driver, per protocol (the cases of this suite).
CASES = {"mtsics": 0, "sbi": 0}
#: Hypothesis examples per protocol, and driver operations run in each.
EXAMPLES = 300
OPERATIONS_PER_EXAMPLE = 60


def mutate(reply: bytes, rnd: random.Random) -> bytes:
    """Apply up to four byte-level mutations chosen by ``rnd``."""
    data = bytearray(reply)
    for _ in range(rnd.randint(0, 4)):
        kind, at = rnd.randint(0, 5), rnd.randint(0, len(data))
        if kind == 0 and data:
            data[at % len(data)] ^= 1 << rnd.randint(0, 7)  # flip one bit
        elif kind == 1:
            data.insert(at, rnd.randint(0, 255))  # insert any byte
        elif kind == 2 and data:
            del data[at % len(data)]  # delete one
        elif kind == 3:
            del data[at:]  # cut short (a lost tail)
        elif kind == 4:
            data[at:at] = data[at : at + rnd.randint(1, 16)]  # duplicate a run
        else:
            data[at:at] = b"\r\n"  # a line end in the middle
    return bytes(data)


def reply(rnd: random.Random, golden: list[bytes], tokens: list[bytes]) -> bytes:
    """One reply: a golden one mutated (most often), two spliced, one built from tokens, or raw bytes."""
    shape = rnd.randint(0, 5)
    if shape <= 2:
        return mutate(rnd.choice(golden), rnd)
    if shape == 3:
        cut = rnd.randint(0, 30)
        return rnd.choice(golden)[:cut] + rnd.choice(golden)[cut:]
    if shape == 4:
        parts = [rnd.choice(tokens) for _ in range(rnd.randint(1, 6))]
        return b" " * rnd.randint(0, 12) + b" ".join(parts) + rnd.choice([b"\r\n", b"\n", b"", b"\r"])
    return bytes(rnd.randint(0, 255) for _ in range(rnd.randint(0, 70))) + b"\n"


class FuzzLink:
    """Answers every write with the next reply; silent once they are used up (a timeout)."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = list(answers)
        self.pending = bytearray()
        self.delivered: list[bytes] = []
        self.timeout_s = 1.0

    def write(self, data: bytes) -> None:
        if self.answers:
            answer = self.answers.pop(0)
            self.delivered.append(answer)
            self.pending += answer

    def read_until(self, terminator: bytes, size: int | None = None) -> bytes:
        index = self.pending.find(terminator)
        if index < 0:
            data, self.pending = bytes(self.pending), bytearray()
            return data
        data = bytes(self.pending[: index + len(terminator)])
        del self.pending[: index + len(terminator)]
        return data

    def reset_input(self) -> None:
        """Stale bytes stay: a late reply is the hard case."""

    def close(self) -> None:
        """Nothing to release."""


OPERATIONS: dict[str, Callable[[BalanceDriver], Any]] = {
    "identify": lambda d: d.identify(),
    "read_immediate": lambda d: d.read_immediate(),
    "read_stable": lambda d: d.read_stable(timeout_s=2.0),
    "zero": lambda d: d.zero(),
    "tare": lambda d: d.tare(),
    "stream": lambda d: list(d.stream(max_readings=3)),
}
DRIVERS: dict[str, tuple[type[BalanceDriver], list[bytes], list[bytes]]] = {
    "mtsics": (MtSicsDriver, MTSICS_GOLDEN, MTSICS_TOKENS),
    "sbi": (SbiDriver, SBI_GOLDEN, SBI_TOKENS),
}


def check_reading(reading: BalanceReading, delivered: list[bytes]) -> None:
    assert type(reading.mass_ug) is int and type(reading.resolution_ug) is int and type(reading.stable) is bool
    assert reading.unit in MASS_UNIT_UG
    scale = MASS_UNIT_UG[reading.unit]
    assert scale % reading.resolution_ug == 0 and str(reading.resolution_ug).rstrip("0") == "1"
    magnitude = Decimal(abs(reading.mass_ug)) / scale
    sent = {abs(Decimal(number.decode())) for line in delivered for number in _NUMBER.findall(line)}
    assert magnitude in sent, f"{magnitude} {reading.unit} was never sent: {delivered!r}"


def check_result(result: Any, delivered: list[bytes]) -> None:
    if isinstance(result, BalanceReading):
        check_reading(result, delivered)
    elif isinstance(result, list):
        assert all(isinstance(r, BalanceReading) for r in result)
        for reading in result:
            check_reading(reading, delivered)
    elif isinstance(result, BalanceIdentity):
        assert all(isinstance(getattr(result, name), str) for name in ("model", "serial_number", "firmware", "capacity"))
    else:
        assert result is None or type(result) is int


def make_test(kind: str) -> Callable[..., None]:
    driver_cls, golden, tokens = DRIVERS[kind]

    @settings(max_examples=EXAMPLES)
    @given(seed=st.integers(min_value=0, max_value=2**64 - 1))
    def test(seed: int) -> None:
        rnd = random.Random(seed)  # a plain generator: Hypothesis's own would record every draw, 100x slower
        for _ in range(OPERATIONS_PER_EXAMPLE):
            operation = rnd.choice(sorted(OPERATIONS))
            link = FuzzLink([reply(rnd, golden, tokens) for _ in range(rnd.randint(1, 6))])
            driver = driver_cls(link, clock=VirtualClock())
            try:
                result = OPERATIONS[operation](driver)
            except HalError:
                result = None
            finally:
                CASES[kind] += len(link.delivered)
                reply_tally.fed(SUITES[kind], len(link.delivered))
            check_result(result, link.delivered)

    return test


test_mtsics_driver_survives_any_reply = make_test("mtsics")
test_sbi_driver_survives_any_reply = make_test("sbi")


@pytest.mark.parametrize("kind", sorted(DRIVERS))
def test_tens_of_thousands_of_replies_were_fed(kind: str) -> None:
    # Runs after the fuzz tests of this module (pytest keeps definition order).
    if CASES[kind] == 0:
        pytest.skip("the fuzz tests did not run in this session (selected alone)")
    assert CASES[kind] >= 10_000, CASES
    reply_tally.TALLY.check_share(SUITES[kind])
