"""Whatever bytes arrive, the NE-1000 driver returns checked values or raises a HalError.

Two layers are fuzzed with generated and mutated replies:

* the codec: every reply parser, over tens of thousands of mutations of real
  replies per run; the only failure allowed is ``ReplyFormatError`` (a
  ``CommunicationError``), and what parses obeys the pump's number format;
* the driver on a simulated pump whose replies are mutated at random: every
  call returns or raises a ``HalError``, and no dispensed reading it returns
  runs ahead of what the mechanism really moved, or goes backwards.

Each Hypothesis example draws a seed and runs a batch of mutations from it, so
a run covers many cases in a few seconds and every failure replays from its seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cython_ext.errors import CommunicationError, HalError
from hal.newera import codec
from hal.newera.codec import ReplyFormatError, VolumeUnits
from hal.newera.driver import Ne1000Driver
from hal.newera.framing import ETX, STX
from hal.pump import DispensedVolume, Outcome, ProgramPhase, PumpProgram
from hal_links import DeviceLink, ScriptedLink
from sim.clock import VirtualClock
from sim.newera import Ne1000
from tests import reply_tally

CODEC_SUITE = "NE-1000 codec (mutated replies)"
DRIVER_SUITE = "NE-1000 driver on a garbled simulator"


def r(data: str) -> bytes:
    """A Basic-mode reply frame."""
    return b"\x02" + data.encode() + b"\x03"


def q(data: str) -> bytes:
    """A Basic-mode request."""
    return data.encode() + b"\r"


#: Replies a real pump sends (fixed number format), the seeds of the mutations.
CORPUS = [b"00S", b"00I", b"00A?R", b"00A?S", b"00S?OOR", b"00SI0.200W0.000ML", b"00II16.09W0.000UL",
          b"00SI12345W0.000UL", b"00S10.00MH", b"00I250.0UH", b"00S0.210MM", b"00S14.43", b"00S4.699",
          b"00S5.000ML", b"00SINF", b"00SWDR", b"00SNE1000V3.928", b"00S10", b"00S3", b"00SRAT", b"00SJMP5"]
_ALPHABET = b"0123456789.IWSPXTUA?RMLHNE" + bytes((STX, ETX, 0x0D, 0x00, 0xFF))


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random edits: flip a bit, insert, delete, duplicate a run, change a digit, truncate."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(6)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[at:at] = bytes((rng.choice(_ALPHABET),))
        elif op == 2 and out:
            del out[min(at, len(out) - 1)]
        elif op == 3 and out:
            end = min(len(out), at + rng.randint(1, 4))
            out[at:at] = out[at:end]
        elif op == 4:
            digits = [i for i, b in enumerate(out) if 0x30 <= b <= 0x39]
            if digits:
                out[rng.choice(digits)] = rng.choice(b"0123456789")
        else:
            del out[at:]
    return bytes(out)


_PARSERS: list[Callable[[str], object]] = [
    codec.parse_rate, codec.parse_dispensed, codec.parse_diameter, codec.parse_direction, codec.parse_version,
    codec.parse_phase_number, codec.parse_function, lambda d: codec.parse_volume(d, VolumeUnits.UL),
]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_codec_fuzz_only_ever_raises_reply_format_errors(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        data = mutate(rng.choice(CORPUS), rng)
        reply_tally.fed(CODEC_SUITE)
        try:
            reply = codec.parse_reply(data)
        except ReplyFormatError:
            continue
        assert 0 <= reply.address <= 99
        for parse in _PARSERS:
            try:
                value = parse(reply.data)
            except ReplyFormatError:
                continue
            if isinstance(value, tuple) and len(value) == 2 and all(isinstance(v, int) for v in value):
                assert all(v >= 0 for v in value)
            if isinstance(value, codec.WireRate):
                # At most 4 digits: never more than 9999 of the largest unit.
                assert 0 <= value.rate_nl_per_h <= 9999 * codec.RateUnits.ML_PER_MIN.nl_per_h


# -- counters: checked against the last reading and the rate ------------------------------------------


def connected(*exchanges: tuple[bytes, bytes | None], diameter: str = "14.43", rate: str = "30.00UH",
              state: str = "S") -> tuple[Ne1000Driver, ScriptedLink, VirtualClock]:
    clock = VirtualClock()
    link = ScriptedLink([(q("0"), r(f"00{state}")), (q("0"), r(f"00{state}")), (q("0DIA"), r(f"00S{diameter}")),
                         (q("0RAT"), r(f"00{state}{rate}")), *exchanges])
    driver = Ne1000Driver(link, clock=clock)
    driver.connect()
    return driver, link, clock


def test_a_change_the_physics_does_not_predict_is_read_twice_before_it_is_believed() -> None:
    driver, link, clock = connected((q("0DIS"), r("00SI0.000W0.000ML")), (q("0DIS"), r("00SI0.000W0.000ML")))
    driver.read_dispensed()
    clock.advance(60)  # stopped: nothing should move
    link.add(q("0DIS"), r("00SI0.003W0.000ML"))  # a garbled digit, within what the rate could allow
    link.add(q("0DIS"), r("00SI0.000W0.000ML"))
    assert driver.read_dispensed() == DispensedVolume(0, 0)
    link.assert_done()


def test_the_outside_fuzz_find_a_dis_reply_with_an_extra_digit_is_read_again_not_delivered() -> None:
    driver, link, clock = connected((q("0DIS"), r("00SI0.010W0.000ML")), (q("0DIS"), r("00SI0.010W0.000ML")))
    assert driver.read_dispensed() == DispensedVolume(10_000, 0)
    clock.advance(60)  # 0.5 uL at 30 uL/h
    link.add(q("0DIS"), r("00SI10.01W0.000ML"))  # one garbled digit: 10 mL in a minute
    link.add(q("0DIS"), r("00SI0.010W0.000ML"))
    assert driver.read_dispensed() == DispensedVolume(10_000, 0)
    assert driver.stats.implausible_readings == 1
    link.assert_done()


def test_a_garbled_last_digit_on_one_counter_does_not_freeze_the_other() -> None:
    # Found by the driver-plus-loop fuzz: a withdrawn counter garbled to 0.001 uL agreed, within the
    # display's last place, with the true 0.000 and became the baseline; every later reading then
    # "went back" on it and the driver returned that stale baseline for ever, while the pump infused.
    driver, link, clock = connected((q("0DIS"), r("00II294.7W0.000UL")), (q("0DIS"), r("00II294.7W0.001UL")),
                                    diameter="4.699", rate="12.50UH", state="I")
    assert driver.read_dispensed() == DispensedVolume(294_700, 1)
    for infused in ("295.7", "296.8"):
        clock.advance(300)  # 1.04 uL at 12.5 uL/h
        link.add(q("0DIS"), r(f"00II{infused}W0.000UL"), times=2)
        reading = driver.read_dispensed()
        assert reading == DispensedVolume(round(float(infused) * 1000), 1), "the infused counter froze"
    link.assert_done()


def test_two_readings_that_agree_on_a_jump_the_rate_cannot_make_are_never_returned() -> None:
    driver, link, clock = connected((q("0DIS"), r("00SI0.010W0.001ML")), (q("0DIS"), r("00SI0.010W0.001ML")))
    assert driver.read_dispensed() == DispensedVolume(10_000, 1_000)
    clock.advance(60)  # 0.5 uL at 30 uL/h
    # withdrawn a display step down, infused 10 mL up, twice alike: not a delivery
    link.add(q("0DIS"), r("00SI10.01W0.000ML"), times=4)
    with pytest.raises(CommunicationError) as info:
        driver.read_dispensed()
    assert info.value.error_code == "NE_IMPLAUSIBLE_COUNTER"
    link.add(q("0DIS"), r("00SI0.010W0.001ML"))
    assert driver.read_dispensed() == DispensedVolume(10_000, 1_000), "the jump became the baseline"
    link.assert_done()


def test_a_counter_that_goes_backwards_is_a_communication_error_and_never_returned() -> None:
    driver, link, clock = connected((q("0DIS"), r("00SI0.500W0.000ML")), (q("0DIS"), r("00SI0.500W0.000ML")))
    driver.read_dispensed()
    clock.advance(60)
    link.add(q("0DIS"), r("00SI0.200W0.000ML"), times=2)
    with pytest.raises(CommunicationError) as info:
        driver.read_dispensed()
    assert info.value.error_code == "NE_IMPLAUSIBLE_COUNTER"
    # Two readings agreed: reported once, and the next call starts from them.
    link.add(q("0DIS"), r("00SI0.200W0.000ML"))
    assert driver.read_dispensed() == DispensedVolume(200_000, 0)
    link.assert_done()


def test_a_first_reading_is_believed_only_when_a_second_agrees() -> None:
    driver, link, _ = connected((q("0DIS"), r("00SI9.999W0.000ML")), (q("0DIS"), r("00SI0.100W0.000ML")),
                                (q("0DIS"), r("00SI0.100W0.000ML")))
    assert driver.read_dispensed() == DispensedVolume(100_000, 0)
    link.assert_done()


def test_growth_the_rate_explains_is_accepted_at_once() -> None:
    driver, link, clock = connected((q("0DIS"), r("00SI0.000W0.000ML")), (q("0DIS"), r("00SI0.000W0.000ML")))
    driver.read_dispensed()
    clock.advance(3600)
    link.add(q("0"), r("00I"))
    assert driver.read_status().state.value == "infusing"
    link.add(q("0DIS"), r("00II0.030W0.000ML"))  # 30 uL in an hour at 30 uL/h
    assert driver.read_dispensed().infused_nl == 30_000


class _LosesPhaseDigit:
    """A simulated pump that, once ``active``, hears ``RUN1`` as ``RUN`` (a byte lost on the way in)."""

    def __init__(self, device: Ne1000) -> None:
        self.device, self.active = device, False

    def receive(self, data: bytes) -> bytes:
        return self.device.receive(data.replace(b"RUN1\r", b"RUN\r") if self.active else data)

    def poll(self) -> bytes:
        return self.device.poll()


def test_a_run_heard_without_its_phase_resumes_another_phase_and_is_not_a_started_program() -> None:
    # Found by the driver-plus-loop fuzz (seed 106): RUN without a phase resumes the paused phase, and the
    # pump answers it as running, so the program just staged was reported started while the pump ran phase 2.
    clock = VirtualClock()
    pump = Ne1000(clock, power_on_alarm=False, syringe_diameter_mm="4.699", syringe_volume_ml="10")
    line = _LosesPhaseDigit(pump)
    driver = Ne1000Driver(DeviceLink(line), clock=clock)
    driver.connect()
    assert driver.stage_program(PumpProgram((ProgramPhase(60_000, 1_000), ProgramPhase(30_000)))).applied
    assert driver.commit_program().applied
    clock.advance(120)  # 1 uL at 60 uL/h takes 60 s: the pump is in phase 2
    assert driver.read_phase() == 2
    assert driver.pause().applied
    assert driver.stage_program(PumpProgram((ProgramPhase(90_000, 2_000), ProgramPhase(30_000)))).applied
    line.active = True
    result = driver.commit_program()
    assert result.outcome is Outcome.NOT_APPLIED, result
    assert "phase 2" in result.detail
    assert pump.mechanics.rate_nl_per_h == 30_000  # the truth: the bolus phase never ran


def test_a_garbled_digit_that_looks_like_the_bolus_rate_is_read_again_when_the_basal_runs() -> None:
    # Found by the driver-plus-loop fuzz (seed 446): after a bolus program's bolus phase, the counter grows at
    # the basal rate, but a reading that grew at the bolus rate (one flipped bit: 14.23 -> 34.23 uL) was taken
    # as predicted by the physics, returned at once, and absorbed by the ledger.
    clock = VirtualClock()
    pump = Ne1000(clock, power_on_alarm=False, syringe_diameter_mm="4.699", syringe_volume_ml="10")
    flips = []

    def flip(sent: bytes, reply: bytes) -> bytes:
        if flips and sent == q("0DIS") and b"I14.23W" in reply:
            flips.pop()
            return reply.replace(b"I14.23W", b"I34.23W")
        return reply

    driver = Ne1000Driver(DeviceLink(pump, manipulator=flip), clock=clock)
    driver.connect()
    assert driver.stage_program(PumpProgram((ProgramPhase(260_000, 10_000), ProgramPhase(20_000)))).applied
    assert driver.commit_program().applied
    clock.advance(600)  # the 10 uL bolus took 138 s; the basal runs since
    assert driver.read_phase() == 2
    assert driver.read_dispensed() == DispensedVolume(12_560, 0)
    clock.advance(300)  # 1.67 uL at the basal; 21.7 uL at the bolus rate
    flips.append(True)
    assert driver.read_dispensed() == DispensedVolume(14_230, 0) == DispensedVolume(*pump.dispensed_nl())
    assert not flips, "the garbled reply was never sent"


def test_a_flipped_last_digit_in_the_second_reading_does_not_agree_with_the_first() -> None:
    # Found by the driver-plus-loop fuzz (seed 3424825176): while a bolus program may run, a counter that grew is
    # read twice; the second reply had one flipped bit in its last digit (796.0 -> 796.4 uL, four display steps),
    # which passed as agreeing with the first, was returned, and the next true reading sat below it by more than
    # the display's steps: the counter looked as if it went back, and the ledger counted all of it again.
    clock = VirtualClock()
    pump = Ne1000(clock, power_on_alarm=False, syringe_diameter_mm="4.699", syringe_volume_ml="1000")
    flips = []

    def flip(sent: bytes, reply: bytes) -> bytes:
        if sent == q("0DIS") and flips:
            if flips[-1] == "second" and b"I55.00W" in reply:
                flips.pop()
                return reply.replace(b"I55.00W", b"I55.04W")
            flips[-1] = "second"
        return reply

    driver = Ne1000Driver(DeviceLink(pump, manipulator=flip), clock=clock)
    driver.connect()
    assert driver.stage_program(PumpProgram((ProgramPhase(120_000, 50_000), ProgramPhase(20_000)))).applied
    assert driver.commit_program().applied
    clock.advance(1500)  # the 50 uL bolus phase took 1500 s
    assert driver.read_dispensed() == DispensedVolume(50_000, 0)
    clock.advance(900)  # 5 uL at the basal
    flips.append("first")
    assert driver.read_dispensed() == DispensedVolume(55_000, 0) == DispensedVolume(*pump.dispensed_nl())
    assert not flips, "the garbled reply was never sent"
    clock.advance(300)
    assert driver.read_dispensed() == DispensedVolume(56_660, 0)  # no counter that went back (56.666 uL shown)


# -- the driver on a pump whose replies are mutated at random ---------------------------------------


class _Garbler:
    """Mutates a fraction of the simulated pump's replies, deterministically from a seed."""

    def __init__(self, seed: int, fraction: float) -> None:
        self.rng = random.Random(seed)
        self.fraction = fraction
        self.active = False

    def __call__(self, sent: bytes, reply: bytes) -> bytes:
        if not self.active or not reply:
            return reply
        reply_tally.fed(DRIVER_SUITE)
        if self.rng.random() >= self.fraction:
            return reply
        if self.rng.random() < 0.2:
            return b""  # lost
        return mutate(reply, self.rng)


_CALLS: list[Callable[[Ne1000Driver], object]] = [
    lambda d: d.read_status(), lambda d: d.read_dispensed(), lambda d: d.read_dispensed(),
    lambda d: d.read_rate_nl_per_h(), lambda d: d.set_rate(30_000 + 1000 * random.Random(0).randrange(5)),
    lambda d: d.start(), lambda d: d.stop(), lambda d: d.read_phase(), lambda d: d.identify(),
    lambda d: d.set_target_volume(0), lambda d: d.read_direction(),
    lambda d: d.stage_program(PumpProgram((ProgramPhase(60_000, 2_000), ProgramPhase(30_000)))),
    lambda d: d.commit_program() if d.staged_program else d.read_status(),
]


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_driver_fuzz_raises_only_hal_errors_and_returns_no_implausible_counter(seed: int) -> None:
    clock = VirtualClock()
    pump = Ne1000(clock, power_on_alarm=False, syringe_diameter_mm="14.43", syringe_volume_ml="10")
    garbler = _Garbler(seed, fraction=0.3)
    driver = Ne1000Driver(DeviceLink(pump, manipulator=garbler), clock=clock, read_retries=1)
    driver.connect()
    garbler.active = True
    rng = random.Random(seed)
    returned: list[int] = []
    for _ in range(40):
        clock.advance(rng.choice((0, 1, 30, 600)))
        call = rng.choice(_CALLS)
        try:
            value = call(driver)
        except HalError:
            continue
        if isinstance(value, DispensedVolume):
            true_nl = pump.dispensed_nl()[0]
            step_nl = 10_000  # the coarsest display step below 100 mL counts in mL
            assert value.infused_nl <= true_nl + step_nl, "a counter ahead of what the mechanism moved"
            assert not returned or value.infused_nl >= returned[-1], "a counter that went backwards"
            returned.append(value.infused_nl)
    driver.close()


@pytest.mark.parametrize("suite", [CODEC_SUITE, DRIVER_SUITE])
def test_each_fuzz_above_fed_its_share_of_replies(suite: str) -> None:
    # Runs after the fuzz tests of this module (pytest keeps definition order).
    if reply_tally.TALLY.counts[suite] == 0:
        pytest.skip("the fuzz test did not run in this session (selected alone)")
    reply_tally.TALLY.check_share(suite)
