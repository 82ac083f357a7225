"""The simulated NE-1000's Pumping Program, '*' commands, I/O commands and number format, byte for byte.

Sources: reference/pump-protocols.md §1 (command set, phases 1-41, the manual's
number format) and the NE-1000 manual's Pumping Program chapter; the program
shapes below follow its worked examples (a dose then a rate change; a repeated
dispense with timed pauses; a loop). The physics oracle is the volume each
phase commands, not the pump's own counter.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sim_helpers import ask, body, send

from hal.newera import codec
from hal.newera.framing import encode_safe
from sim.clock import VirtualClock
from sim.newera import Ne1000
from sim.newera.wire_numbers import format_milli


def program(pump: Ne1000, *phases: tuple[str, ...]) -> None:
    """Write phases 1..n: each is (function, then optional RAT/VOL/DIR commands)."""
    for number, (function, *settings_) in enumerate(phases, start=1):
        assert body(pump, f"0PHN{number}") == "00S"
        assert body(pump, f"0FUN{function}") == "00S", function
        for setting in settings_:
            assert body(pump, f"0{setting}") == "00S", setting


# -- number format: the manual's 4 significant digits, pinned by byte vectors ----------------------

#: (thousandths of the unit, the text a real pump sends). Captured replies: I0.200W0.000ML,
#: I1.000W0.000ML, I16.09W0.000ML, 10.00MH, 14.53ML, 11.99 (DIA).
FIXED_NUMBERS = [(0, "0.000"), (200, "0.200"), (1000, "1.000"), (16_090, "16.09"), (10_000, "10.00"),
                 (14_530, "14.53"), (11_990, "11.99"), (100_000, "100.0"), (999_900, "999.9"), (1_000_000, "1000."),
                 (9_999_000, "9999.")]


@pytest.mark.parametrize(("milli", "text"), FIXED_NUMBERS)
def test_simulator_and_driver_agree_on_the_fixed_number_format(milli: int, text: str) -> None:
    assert format_milli(milli) == text
    assert codec.parse_scaled(text, 1000) == milli  # the driver reads the pump's text back exactly


def test_query_replies_carry_the_fixed_format(make_pump: Callable[..., Ne1000], clock: VirtualClock) -> None:
    pump = make_pump(syringe_diameter_mm="26.59", power_on_alarm=False)
    assert ask(pump, "0DIS") == b"\x0200SI0.000W0.000ML\x03"
    assert ask(pump, "0RAT10MM") == b"\x0200S\x03"
    assert ask(pump, "0RAT") == b"\x0200S10.00MM\x03"
    assert ask(pump, "0DIA") == b"\x0200S26.59\x03"
    assert ask(pump, "0VOL") == b"\x0200S0.000ML\x03"
    send(pump, "0RUN")
    clock.advance(6)  # 1 mL at 10 mL/min
    assert ask(pump, "0DIS") == b"\x0200II1.000W0.000ML\x03"


# -- '*': address and Safe mode bypassed ------------------------------------------------------------


def test_star_commands_reach_every_address(make_pump: Callable[..., Ne1000]) -> None:
    pump = make_pump(address=7, power_on_alarm=False)
    assert ask(pump, "*RUN") == b"\x0207I\x03"
    assert ask(pump, "*STP") == b"\x0207P\x03"
    assert ask(pump, "*STP") == b"\x0207S\x03"
    assert ask(pump, "0RUN") == b"", "an addressed command for another pump stays silent"


def test_star_commands_bypass_safe_mode(make_pump: Callable[..., Ne1000]) -> None:
    pump = make_pump(safe_timeout_s=10, power_on_alarm=False)
    assert ask(pump, "0RUN") == b"", "a Basic packet is ignored in Safe mode"
    assert ask(pump, "*RUN") == encode_safe(b"00I"), "a '*' command is not, and is answered in Safe framing"
    assert pump.state == "I"


# -- the documented commands that were missing ----------------------------------------------------------


def test_ttl_inputs(pump: Ne1000) -> None:
    assert body(pump, "0IN2") == "00S1", "an open TTL input reads high"
    pump.ttl_inputs[3] = 0
    assert body(pump, "0IN3") == "00S0"
    assert body(pump, "0IN9") == "00S?OOR"


# -- the Pumping Program ---------------------------------------------------------------------------------


def test_dose_then_continuous_basal_runs_by_itself(pump: Ne1000, clock: VirtualClock) -> None:
    # Phase 1: the bolus rate for exactly the bolus volume; phase 2: the basal rate, continuous.
    program(pump, ("RAT", "RAT600UH", "VOL5", "DIRINF"), ("RAT", "RAT30UH", "VOL0", "DIRINF"))
    assert body(pump, "0RUN") == "00I"
    assert body(pump, "0PHN") == "00I1"
    clock.advance(30)  # 5 uL at 600 uL/h
    assert body(pump, "0PHN") == "00I2"
    assert body(pump, "0RAT") == "00I30.00UH"
    clock.advance(3600)
    assert pump.dispensed_nl() == (5_000 + 30_000, 0)
    assert body(pump, "0") == "00I", "the basal phase runs until stopped"


def test_repeated_dose_with_timed_pauses_and_a_loop(pump: Ne1000, clock: VirtualClock) -> None:
    program(pump, ("LPS",), ("RAT", "RAT3600UH", "VOL2"), ("PAS10",), ("LOP2",), ("STP",))
    assert body(pump, "0RUN") == "00I"
    clock.advance(2)
    assert body(pump, "0") == "00T", "a timed pause phase"
    clock.advance(10)
    assert body(pump, "0") == "00I", "looped back"
    clock.advance(12 * 2)
    assert body(pump, "0") == "00S", "three doses (the first and two repeats), then STP"
    assert pump.dispensed_nl() == (6_000, 0)


def test_increment_and_jump_phases(pump: Ne1000, clock: VirtualClock) -> None:
    program(pump, ("RAT", "RAT360UH", "VOL1"), ("INC", "RAT360UH", "VOL2"), ("JMP5",), ("RAT", "RAT60UH"), ("BEP",),
            ("OUT1",), ("STP",))
    assert body(pump, "0RUN") == "00I"
    clock.advance(10)  # 1 uL at 360 uL/h
    assert body(pump, "0PHN") == "00I2"
    assert pump.mechanics.rate_nl_per_h == 720_000, "INC: the previous rate plus this phase's"
    clock.advance(10)  # 2 uL at 720 uL/h
    assert body(pump, "0") == "00S", "JMP 5 skipped phase 4; BEP, OUT 1, STP"
    assert (pump.beeps, pump.ttl_output) == (1, 1)
    assert pump.dispensed_nl() == (3_000, 0)


def test_if_phase_follows_the_trigger_input(pump: Ne1000, clock: VirtualClock) -> None:
    program(pump, ("IF3",), ("STP",), ("RAT", "RAT3600UH", "VOL1"), ("STP",))
    assert body(pump, "0RUN") == "00S", "input high: no jump, phase 2 stops"
    pump.ttl_inputs[2] = 0
    assert body(pump, "0RUN") == "00I", "input low: jump to phase 3"


def test_a_program_that_loops_without_pumping_is_a_program_error(pump: Ne1000) -> None:
    program(pump, ("JMP2",), ("JMP1",))
    assert ask(pump, "0RUN") == b"\x0200A?E\x03"
    assert body(pump, "0") == "00S"


def test_decrement_below_zero_is_out_of_range(pump: Ne1000) -> None:
    program(pump, ("RAT", "RAT60UH", "VOL1"), ("DEC", "RAT120UH", "VOL1"))
    send(pump, "0RUN")
    pump.clock.advance(60)  # type: ignore[attr-defined]
    assert ask(pump, "0") == b"\x0200A?O\x03"


def test_stop_pauses_a_timed_pause_and_run_resumes_it(pump: Ne1000, clock: VirtualClock) -> None:
    program(pump, ("PAS5",), ("RAT", "RAT3600UH", "VOL1"))
    assert body(pump, "0RUN") == "00T"
    assert body(pump, "0STP") == "00P"
    assert body(pump, "0PHN") == "00P1"
    assert body(pump, "0RUN") == "00T"
    clock.advance(5)
    assert body(pump, "0") == "00I"


_PHASES = st.lists(st.tuples(st.integers(60, 7200), st.integers(1, 20)), min_size=1, max_size=6)


@settings(max_examples=25, deadline=None)
@given(_PHASES)
def test_each_rate_phase_delivers_exactly_its_volume(phases: list[tuple[int, int]]) -> None:
    clock = VirtualClock()
    pump = Ne1000(clock, power_on_alarm=False)
    program(pump, *(("RAT", f"RAT{rate}UH", f"VOL{volume}") for rate, volume in phases))
    send(pump, "0RUN")
    total_s = sum(volume * 3600 / rate for rate, volume in phases)
    clock.advance(total_s + 1)
    assert body(pump, "0") == "00S"
    assert pump.dispensed_nl() == (sum(volume for _, volume in phases) * 1000, 0)
