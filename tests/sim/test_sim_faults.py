"""Fault specs and the fault layer, in virtual time (no endpoint needed)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cython_ext.errors import ConfigError
from hal.newera.framing import encode_safe
from sim.clock import DriftClock, VirtualClock
from sim.faults import FaultyDevice, parse_fault
from sim.newera import Ne1000
from sim.rig import simulated_pump


def faulty(clock: VirtualClock, *specs: str, seed: int = 0, **pump_kwargs: object) -> tuple[FaultyDevice, Ne1000]:
    pump_kwargs.setdefault("power_on_alarm", False)
    pump = Ne1000(clock, **pump_kwargs)  # type: ignore[arg-type]
    return FaultyDevice(pump, list(specs), clock=clock, seed=seed), pump


def test_parse_examples() -> None:
    spec = parse_fault("lost-reply:match=RUN,after=2,count=3")
    assert (spec.kind, spec.match, spec.after, spec.count) == ("lost-reply", "RUN", 2, 3)
    spec = parse_fault("power-cycle:at=60,off=5")
    assert (spec.at_s, spec.params["off"]) == (60.0, "5")
    spec = parse_fault("corrupt:p=0.01,dir=rx")
    assert (spec.probability, spec.direction) == (0.01, "rx")
    assert parse_fault("stall").after == 1, "no trigger means the first command"
    assert parse_fault("drift:ppm=-250").params["ppm"] == "-250"


@pytest.mark.parametrize(
    "text",
    [
        "explode",
        "drop:p=2",
        "drop:p=0.1,after=3",
        "delay:at=5",
        "stall:at=-1",
        "stall:at=1,after=2",
        "lost-reply:p=0.5",
        "split:colour=red",
        "drop:p=0.1,dir=sideways",
        "drop:dir=rx",
        "drift",
        "drift:ppm=1e9",
        "stall:at",
        "stall:match=(",
        "stall:at=1,at=2",
        "delay:s=-1",
    ],
)
def test_bad_specs_are_rejected(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_fault(text)


def test_lost_reply_executes_the_command(clock: VirtualClock) -> None:
    device, pump = faulty(clock, "lost-reply:match=RUN")
    assert device.receive(b"0RUN\r") == b""
    assert pump.state == "I"
    assert device.receive(b"0\r") == b"\x0200I\x03"
    assert device.receive(b"0STP\r0RUN\r") == b"\x0200P\x03\x0200I\x03", "count=1: only the first RUN"


def test_after_counts_matching_commands_only(clock: VirtualClock) -> None:
    device, _ = faulty(clock, "drop:match=VER,after=2,count=2")
    replies = [device.receive(cmd) for cmd in (b"0VER\r", b"0\r", b"0VER\r", b"0VER\r", b"0VER\r")]
    assert [bool(r) for r in replies] == [True, True, False, False, True]


def test_delay_releases_the_reply_later(clock: VirtualClock) -> None:
    device, _ = faulty(clock, "delay:s=2,match=VER")
    assert device.receive(b"0VER\r") == b""
    clock.advance(1.9)
    assert device.poll() == b""
    assert device.next_poll_ns() == 2_000_000_000
    clock.advance(0.2)
    assert device.poll() == b"\x0200SNE1000V3.928\x03"


def test_split_sends_the_rest_later(clock: VirtualClock) -> None:
    device, _ = faulty(clock, "split:at_byte=3,s=0.1")
    assert device.receive(b"0VER\r") == b"\x0200"
    clock.advance(0.1)
    assert device.poll() == b"SNE1000V3.928\x03"


def test_dup_corrupt_junk_on_a_reply(clock: VirtualClock) -> None:
    device, _ = faulty(clock, "dup:match=^0$", "corrupt:match=VER", "junk:match=DIS,bytes=4", seed=7)
    assert device.receive(b"0\r") == b"\x0200S\x03" * 2
    corrupted = device.receive(b"0VER\r")
    good = b"\x0200SNE1000V3.928\x03"
    assert len(corrupted) == len(good)
    assert sum(bin(a ^ b).count("1") for a, b in zip(corrupted, good)) == 1
    junked = device.receive(b"0DIS\r")
    assert len(junked) == 4 + len(b"\x0200SI0.000W0.000UL\x03") and junked.endswith(b"\x0200SI0.000W0.000UL\x03")


@given(st.integers(0, 1000))
def test_probabilistic_faults_are_seeded(seed: int) -> None:
    def run() -> bytes:
        clock = VirtualClock()
        device, _ = faulty(clock, "drop:p=0.2", "corrupt:p=0.1,dir=rx", seed=seed)
        return b"".join(device.receive(b"0VER\r") for _ in range(5))

    assert run() == run()


def test_rx_drop_all_bytes_means_nothing_executes(clock: VirtualClock) -> None:
    device, pump = faulty(clock, "drop:p=1,dir=rx")
    assert device.receive(b"0RUN\r") == b""
    assert pump.state == "S"


def test_scheduled_stall_occlusion_and_power_cycle(clock: VirtualClock) -> None:
    device, pump = faulty(clock, "stall:at=10", "occlusion:at=20,clear=5", "power-cycle:at=40,off=5")
    device.receive(b"0RAT600UH\r0RUN\r")
    clock.advance(10)
    assert device.receive(b"0\r") == b"\x0200A?S\x03"
    device.receive(b"0RUN\r")
    clock.advance(10.2)
    device.poll()
    assert pump.occluded
    clock.advance(1)
    assert device.receive(b"0\r") == b"\x0200A?S\x03", "occluded infusion stalls"
    clock.advance(5)
    device.poll()
    assert not pump.occluded
    device.receive(b"0RUN\r")
    clock.advance(14)
    device.poll()
    assert not pump.powered
    assert device.receive(b"0\r") == b""
    clock.advance(5)
    device.poll()
    assert pump.powered
    assert device.receive(b"0\r") == b"\x0200A?R\x03"
    assert [what for _, _, what in device.log] == ["stall", "occlusion", "clear", "power-cycle", "restore"]


def test_device_fault_after_nth_command(clock: VirtualClock) -> None:
    device, pump = faulty(clock, "stall:match=RUN,after=2")
    device.receive(b"0RUN\r")
    device.receive(b"0STP\r")
    assert device.receive(b"0RUN\r") == b"\x0200I\x03", "the reply goes out, then the motor stalls"
    assert pump.alarm == "S"


def test_safe_mode_commands_are_matched(clock: VirtualClock) -> None:
    device, pump = faulty(clock, "lost-reply:match=RUN", safe_timeout_s=10)
    assert device.receive(encode_safe(b"0RUN")) == b""
    assert pump.state == "I"


def test_disconnect_at_time(clock: VirtualClock) -> None:
    device, _ = faulty(clock, "disconnect:at=3")
    assert not device.wants_disconnect()
    clock.advance(3)
    assert device.poll() == b""
    assert device.wants_disconnect()
    assert device.receive(b"0\r") == b""


def test_drift_fault_gives_the_pump_a_drifting_clock(clock: VirtualClock) -> None:
    with simulated_pump("inprocess", clock=clock, faults=["drift:ppm=1000"], power_on_alarm=False) as rig:
        assert isinstance(rig.device.clock, DriftClock)
        rig.device.receive(b"0RAT3600UH\r0RUN\r")
        clock.advance(1000)
        assert rig.device.dispensed_nl() == (1_001_000, 0), "the pump's second is 0.1 % short"


def test_drift_clock_arithmetic() -> None:
    base = VirtualClock()
    slow = DriftClock(base, -500)
    base.advance(2000)
    assert slow.monotonic_ns() == 2000 * 10**9 - 10**9
    with pytest.raises(ValueError):
        DriftClock(base, 10**6)


def test_faults_can_be_added_while_running(clock: VirtualClock) -> None:
    device, pump = faulty(clock)
    device.receive(b"0RUN\r")
    clock.advance(100)
    device.add("stall:at=5")
    device.add("lost-reply:match=DIS")
    clock.advance(4.9)
    assert device.receive(b"0\r") == b"\x0200I\x03"
    clock.advance(0.1)
    assert device.receive(b"0DIS\r") == b"", "the stall happened, and this reply was lost"
    assert device.receive(b"0\r") == b"\x0200S\x03", "the lost reply carried the alarm acknowledgement"
    with pytest.raises(ConfigError):
        device.add("explode")


def test_rx_gap_makes_the_pump_discard_a_safe_packet(clock: VirtualClock) -> None:
    device, pump = faulty(clock, "gap:p=1,dir=rx,s=0.6", safe_timeout_s=30)
    frame = encode_safe(b"0RUN")
    assert device.receive(frame) == b"", "one byte goes, then the line pauses"
    replies = b""
    for _ in range(len(frame)):
        clock.advance(0.6)
        replies += device.poll()  # one more byte after every pause: each gap exceeds 0.5 s
    assert pump.state == "S", "a packet with 0.6 s gaps must not run"
    assert b"00I" not in replies


def test_tx_gap_delivers_the_rest_later(clock: VirtualClock) -> None:
    device, _ = faulty(clock, "gap:p=0.3,s=0.2", seed=3)
    first = device.receive(b"0VER\r")
    rest = b""
    for _ in range(40):
        clock.advance(0.2)
        rest += device.poll()
    assert first + rest == b"\x0200SNE1000V3.928\x03"
    assert any("gap of 0.2 s" in what for _, _, what in device.log)


def test_gap_needs_a_probability() -> None:
    with pytest.raises(ConfigError):
        parse_fault("gap:s=1")


@given(
    st.lists(
        st.tuples(st.sampled_from([b"0\r", b"0RUN\r", b"0STP\r", b"0DIS\r", b"0VER\r", b"0RAT50UH\r", b"0SAF9\r"]),
                  st.integers(0, 20)),
        max_size=12,
    ),
    st.integers(1, 7),
)
def test_an_empty_fault_layer_is_transparent(script: list[tuple[bytes, int]], chunk: int) -> None:
    bare_clock, wrapped_clock = VirtualClock(), VirtualClock()
    bare = Ne1000(bare_clock)
    wrapped, _ = faulty(wrapped_clock, power_on_alarm=True)
    for command, wait_s in script:
        expected = bare.receive(command) + bare.poll()
        got = b"".join(wrapped.receive(command[i : i + chunk]) for i in range(0, len(command), chunk))
        assert got + wrapped.poll() == expected
        bare_clock.advance(wait_s)
        wrapped_clock.advance(wait_s)
