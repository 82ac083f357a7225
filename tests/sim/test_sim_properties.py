"""Property-based and stateful tests of the simulated NE-1000 and its mechanics."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from hal.newera.framing import CR, STX, Frame, FrameKind, ReplyDeframer, encode_safe
from sim.clock import VirtualClock
from sim.newera import Ne1000
from sim.newera.deframer import PumpDeframer
from sim.newera.mechanics import INFUSE, NS_PER_H, Mechanics
from sim.newera.wire_numbers import format_milli, parse_milli


def _snapshot(pump: Ne1000) -> tuple[object, ...]:
    return (
        pump.state,
        pump.address,
        pump.safe_timeout_s,
        pump.diameter_milli,
        pump.volume_units,
        [(p.function, p.rate_milli, p.rate_units, p.volume_milli, p.direction) for p in pump.phases],
        dict(pump.flags),
        len(pump.executed),
    )


@given(st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\x02", b"")), max_size=8))
def test_noise_without_cr_or_stx_never_answers_or_changes_state(chunks: list[bytes]) -> None:
    pump = Ne1000(VirtualClock(), power_on_alarm=False)
    before = _snapshot(pump)
    for chunk in chunks:
        assert pump.receive(chunk) == b""
    assert _snapshot(pump) == before


@given(st.lists(st.binary(max_size=60), max_size=6), st.booleans())
def test_random_bytes_never_crash_and_execute_only_complete_packets(chunks: list[bytes], safe_mode: bool) -> None:
    clock = VirtualClock()
    pump = Ne1000(clock, power_on_alarm=False, safe_timeout_s=5 if safe_mode else 0)
    reference = PumpDeframer()
    packets = 0
    for chunk in chunks:
        for index in range(len(chunk)):
            was_safe = pump.safe_mode
            packets += sum(
                isinstance(item, Frame)
                for item in reference.feed(chunk[index : index + 1], clock.monotonic_s(), safe_mode=was_safe)
            )
            pump.receive(chunk[index : index + 1])
        clock.advance(0.1)
    assert len(pump.executed) <= packets


@given(st.lists(st.sampled_from([b"0", b"0VER", b"0RAT", b"0DIS", b"0XYZ", b"0RUN", b"0STP"]), max_size=10))
def test_every_basic_reply_is_one_complete_frame(commands: list[bytes]) -> None:
    pump = Ne1000(VirtualClock())
    for command in commands:
        frames = ReplyDeframer().feed(pump.receive(command + bytes((CR,))))
        assert len(frames) == 1 and isinstance(frames[0], Frame)
        assert frames[0].data[:2] == b"00"


@given(st.lists(st.sampled_from([b"0", b"0VER", b"0RAT", b"0DIS", b"0XYZ", b"0RUN", b"0STP"]), max_size=10))
def test_every_safe_reply_is_one_valid_safe_frame(commands: list[bytes]) -> None:
    pump = Ne1000(VirtualClock(), safe_timeout_s=30, power_on_alarm=False)
    for command in commands:
        frames = ReplyDeframer(safe=True).feed(pump.receive(encode_safe(command)))
        assert len(frames) == 1 and isinstance(frames[0], Frame)


_SEGMENTS = st.lists(
    st.tuples(st.integers(0, 5_000_000), st.integers(1, 10**12)),  # (rate nL/h, duration ns)
    min_size=1,
    max_size=12,
)


@given(_SEGMENTS, st.lists(st.integers(0, 10**12), max_size=6))
def test_commanded_volume_is_exact_whatever_the_read_pattern(
    segments: list[tuple[int, int]], reads: list[int]
) -> None:
    clock = VirtualClock()
    mech = Mechanics(clock, syringe_volume_nl=10**15)
    exact = Fraction(0)
    t = 0
    read_times = sorted(reads)
    for rate, duration in segments:
        mech.integrate_to(t)
        mech.set_motion(rate, INFUSE)
        for r in [r for r in read_times if t < r < t + duration]:
            mech.integrate_to(r)
        t += duration
        exact += Fraction(rate * duration, NS_PER_H)
    mech.integrate_to(t)
    assert mech.infused_scaled == exact * NS_PER_H


@given(st.integers(0, 2**32), st.lists(st.integers(1, 3600), min_size=2, max_size=8))
def test_actual_volume_does_not_depend_on_when_it_is_read(seed: int, read_gaps_s: list[int]) -> None:
    def run(read: bool) -> int:
        clock = VirtualClock()
        mech = Mechanics(clock, syringe_volume_nl=10**12, bias_pct=3.0, noise_pct=5.0, seed=seed)
        mech.set_motion(250_000, INFUSE)
        last = 0
        for gap in read_gaps_s:
            clock.advance(gap)
            mech.integrate_to(clock.monotonic_ns())
            if read:
                value = mech.actual_delivered_nl()
                assert value >= last, "delivery never runs backwards while infusing"
                last = value
        return mech.actual_delivered_nl()

    assert run(read=True) == run(read=False)


def test_bias_scales_actual_but_not_commanded_volume() -> None:
    clock = VirtualClock()
    pump = Ne1000(clock, power_on_alarm=False, bias_pct=-2.0)
    pump.receive(b"0RAT1000UH\r")
    pump.receive(b"0RUN\r")
    clock.advance(3600)
    assert pump.dispensed_nl() == (1_000_000, 0)
    assert pump.mechanics.actual_delivered_nl() == 980_000


def test_noise_is_seeded() -> None:
    def actual(seed: int) -> int:
        clock = VirtualClock()
        pump = Ne1000(clock, power_on_alarm=False, noise_pct=4.0, seed=seed)
        pump.receive(b"0RAT1000UH\r")
        pump.receive(b"0RUN\r")
        clock.advance(1800)
        return pump.mechanics.actual_delivered_nl()

    assert actual(1) == actual(1)
    assert actual(1) != actual(2)
    assert abs(actual(3) - 500_000) < 500_000 * 0.02, "noise averages out over many chunks"


class PumpModel(RuleBasedStateMachine):
    """The simulated pump against a small model of RAT/VOL/RUN/STP, power cycles and time.

    Modelled rules: a latched alarm answers the next command instead of running
    it; a rate set while pumping is volatile (a power loss restores the stored one);
    without PF a power loss stops the program.
    """

    safe_timeout_s = 0

    @initialize()
    def setup(self) -> None:
        self.clock = VirtualClock()
        self.pump = Ne1000(
            self.clock,
            power_on_alarm=False,
            syringe_volume_ml="1000",
            syringe_diameter_mm="14",
            safe_timeout_s=self.safe_timeout_s,
        )
        self.rate_nl_per_h = 10_000  # the firmware default, 10 uL/h
        self.stored_rate_nl_per_h = 10_000
        self.target_nl = 0
        self.state = "S"
        self.alarm: str | None = None
        self.moved_in_phase = Fraction(0)
        self.infused = Fraction(0)

    def _send(self, text: str) -> str:
        reply = self.pump.receive(text.encode() + b"\r")
        return reply[1:-1].decode()

    def _pass_time(self, seconds: int) -> None:
        self.clock.advance(seconds)

    def _latched(self, text: str) -> bool:
        """Send ``text``; if an alarm is latched, check it answers and swallows the command."""
        if self.alarm is None:
            return False
        assert self._send(text) == f"00A?{self.alarm}"
        self.alarm = None
        return True

    def _took_setting(self, text: str) -> bool:
        """Send the setting ``text``: False if a latched alarm swallowed it, else check it is answered
        with the pump's state and return True."""
        if self._latched(text):
            return False
        assert self._send(text) == f"00{self.state}"
        return True

    @rule(rate_uh=st.integers(7, 9999))
    def set_rate(self, rate_uh: int) -> None:
        if not self._took_setting(f"0RAT{rate_uh}UH"):
            return
        self.rate_nl_per_h = rate_uh * 1000
        if self.state != "I":
            self.stored_rate_nl_per_h = self.rate_nl_per_h

    @precondition(lambda self: self.state in ("S", "P"))
    @rule(volume_ul=st.integers(0, 50))
    def set_volume(self, volume_ul: int) -> None:
        if self._took_setting(f"0VOL{volume_ul}"):
            self.target_nl = volume_ul * 1000

    @rule()
    def run(self) -> None:
        if self._latched("0RUN"):
            return
        if self.state == "S":
            self.moved_in_phase = Fraction(0)
        if self.state == "P" and self.target_nl and self.moved_in_phase >= self.target_nl:
            # Resuming a phase whose volume (set while paused) is already dispensed ends it at once.
            self.state, self.moved_in_phase = "S", Fraction(0)
        elif self.state in ("S", "P"):
            self.state = "I"
        assert self._send("0RUN") == f"00{self.state}"

    @rule()
    def stop(self) -> None:
        if self._latched("0STP"):
            return
        self.state = {"I": "P", "P": "S", "S": "S"}[self.state]
        if self.state == "S":
            self.moved_in_phase = Fraction(0)
        assert self._send("0STP") == f"00{self.state}"

    @rule()
    def power_cycle(self) -> None:
        self.pump.power_cycle()
        self.alarm = "R"
        self.rate_nl_per_h = self.stored_rate_nl_per_h
        if self.state == "I":
            self.state = "S"
            self.moved_in_phase = Fraction(0)

    @rule(seconds=st.integers(0, 20_000))
    def wait(self, seconds: int) -> None:
        self._pass_time(seconds)
        if self.state != "I":
            return
        moved = Fraction(self.rate_nl_per_h * seconds, 3600)
        if self.target_nl and self.moved_in_phase + moved >= self.target_nl:
            moved = self.target_nl - self.moved_in_phase
            self.state = "S"
            self.moved_in_phase = Fraction(0)
        else:
            self.moved_in_phase += moved
        self.infused += moved

    @invariant()
    def status_and_counter_match(self) -> None:
        if not hasattr(self, "pump"):
            return
        assert self.pump.dispensed_nl()[0] == int(self.infused)
        if self.alarm is None:
            assert self._send("0") == f"00{self.state}"
            assert self._send("0RAT") == f"00{self.state}{format_milli(self.rate_nl_per_h)}UH"


PumpModel.TestCase.settings = settings(max_examples=60, stateful_step_count=25)
test_pump_model = PumpModel.TestCase


class SafePumpModel(PumpModel):
    """The same model in Safe mode: framed packets, unprompted alarms, heartbeats within the watchdog."""

    safe_timeout_s = 200

    def _send(self, text: str) -> str:
        frames = ReplyDeframer(safe=True).feed(self.pump.receive(encode_safe(text.encode())))
        assert frames and all(isinstance(f, Frame) for f in frames), frames
        # An unprompted alarm packet may precede the reply; the reply is the last packet.
        return frames[-1].data.decode()  # type: ignore[union-attr]

    def _pass_time(self, seconds: int) -> None:
        while seconds > 0:
            step = min(seconds, 150)
            self.clock.advance(step)
            seconds -= step
            if self.alarm is None:
                self.pump.receive(encode_safe(b"0"))  # heartbeat: any valid packet restarts the watchdog
            else:
                self.pump.poll()


SafePumpModel.TestCase.settings = settings(max_examples=40, stateful_step_count=25)
test_safe_pump_model = SafePumpModel.TestCase


def test_pump_deframer_starts_a_safe_packet_at_every_stx_in_safe_mode() -> None:
    deframer = PumpDeframer()
    frame = encode_safe(b"0VER")
    items = deframer.feed(b"junk\r" + frame, 0.0, safe_mode=True)
    assert items == [Frame(FrameKind.BASIC, b"junk"), Frame(FrameKind.SAFE, b"0VER")]  # the firmware drops the first
    assert deframer.feed(b"ju" + frame, 0.0, safe_mode=True) == [Frame(FrameKind.SAFE, b"0VER")]
    items = deframer.feed(b"0VER\r", 0.0, safe_mode=False)
    assert [i.data for i in items if isinstance(i, Frame)] == [b"0VER"]
    assert deframer.feed(bytes((STX, 2)), 0.0, safe_mode=True)[0].reason == "length"  # type: ignore[union-attr]


_COMMAND_WORDS = st.sampled_from(
    ["", "VER", "RAT", "RAT50UH", "RAT1MM", "VOL", "VOL2", "DIR", "DIRREV", "RUN", "STP", "PUR", "DIS", "CLDINF",
     "DIA", "DIA20", "PHN2", "FUNRAT", "AL1", "XYZ", "RATZ"]
)


@given(st.lists(st.tuples(_COMMAND_WORDS, st.integers(0, 120)), max_size=15))
def test_safe_mode_answers_the_same_data_as_basic_mode(script: list[tuple[str, int]]) -> None:
    """Framing and unprompted alarm packets are the only differences (the watchdog is far away here)."""
    basic_clock, safe_clock = VirtualClock(), VirtualClock()
    basic = Ne1000(basic_clock, power_on_alarm=False)
    safe = Ne1000(safe_clock, power_on_alarm=False, safe_timeout_s=255)
    for word, wait_s in script:
        assert basic.poll() == b""
        for unprompted in ReplyDeframer(safe=True).feed(safe.poll()):
            assert isinstance(unprompted, Frame) and unprompted.data.startswith(b"00A?")
        basic_reply = ReplyDeframer().feed(basic.receive(b"0" + word.encode() + b"\r"))
        safe_reply = ReplyDeframer(safe=True).feed(safe.receive(encode_safe(b"0" + word.encode())))
        assert [f.data for f in basic_reply] == [f.data for f in safe_reply]  # type: ignore[union-attr]
        basic_clock.advance(wait_s)
        safe_clock.advance(wait_s)


@given(st.integers(0, 9_999_000))
def test_rendered_numbers_parse_back_to_at_most_the_value(value_milli: int) -> None:
    text = format_milli(value_milli)
    parsed = parse_milli(text)
    assert parsed is not None, text
    assert parsed <= value_milli, "display truncates, never rounds up"
    digits = len(str(value_milli // 1000)) if value_milli >= 1000 else 1
    assert value_milli - parsed < 10 ** max(0, digits - 1), "at most the last shown digit is lost"
