"""NE-1000 firmware in Basic mode, byte for byte (pump-protocols §1.2, §1.3, §1.5)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sim_helpers import ask, body, send

from cython_ext.errors import ConfigError
from sim.clock import VirtualClock
from sim.newera import COMMANDS, NE1000_X2_V3_928, DeviceProfile, Ne1000
from sim.newera.wire_numbers import format_milli, parse_milli

# -- power-up, status, normalisation, addressing -------------------------------------------


def test_first_command_after_power_up_gets_reset_alarm_and_is_not_executed(
    make_pump: Callable[..., Ne1000],
) -> None:
    pump = make_pump(power_on_alarm=True)
    assert ask(pump, "0RAT5UH") == b"\x0200A?R\x03"
    assert body(pump, "0RAT") == "00S10.00UH", "the command answered with A?R must not run"
    assert body(pump, "0RAT5UH") == "00S"
    assert body(pump, "0RAT") == "00S5.000UH"


def test_status_query_forms(pump: Ne1000) -> None:
    assert ask(pump, "0") == b"\x0200S\x03"
    assert ask(pump, "") == b"\x0200S\x03"


def test_manual_request_bytes_set_the_rate(pump: Ne1000) -> None:
    # 0RAT5.000MH\r = 30 52 41 54 35 2E 30 30 30 4D 48 0D, answered by status only.
    request = bytes.fromhex("30 52 41 54 35 2E 30 30 30 4D 48 0D")
    assert pump.receive(request) == bytes.fromhex("02 30 30 53 03")
    assert body(pump, "0RAT") == "00S5.000MH"


def test_input_is_normalised(pump: Ne1000) -> None:
    assert ask(pump, "0 rat 5 mh") == b"\x0200S\x03"
    assert body(pump, " 0\tr a\x01t ") == "00S5.000MH"
    assert body(pump, "0 dir wdr") == "00S"
    assert body(pump, "0dir") == "00SWDR"


@pytest.mark.parametrize("address", [0, 7, 42, 99])
def test_reply_carries_two_digit_address(make_pump: Callable[..., Ne1000], address: int) -> None:
    pump = make_pump(address=address)
    assert body(pump, f"{address}") == f"{address:02d}S"
    assert body(pump, f"{address:02d}VER") == f"{address:02d}SNE1000V3.928"


def test_other_addresses_stay_silent(make_pump: Callable[..., Ne1000]) -> None:
    pump = make_pump(address=3)
    assert ask(pump, "0RAT5UH") == b""
    assert ask(pump, "4") == b""
    assert ask(pump, "13VER") == b""
    assert body(pump, "3RAT") == "03S10.00UH", "a command for another pump must not change this one"


def test_command_without_address_is_accepted(make_pump: Callable[..., Ne1000]) -> None:
    pump = make_pump(address=5)
    assert body(pump, "VER") == "05SNE1000V3.928"


def test_unknown_commands_get_question_mark(pump: Ne1000) -> None:
    assert ask(pump, "0XYZ") == b"\x0200S?\x03"
    assert ask(pump, "0RATE") == b"\x0200S?\x03"
    assert ask(pump, "0FUN JMP") == b"\x0200S?\x03", "JMP needs its phase number"
    assert ask(pump, "0RAT C 5 UH") == b"\x0200S?\x03", "RAT C is later firmware's; the NE-1000 lacks it"
    assert ask(pump, "0RAT I 5 UH") == b"\x0200S?\x03"
    assert ask(pump, "0ADR") == b"\x0200S?\x03", "ADR is a system command (needs '*')"


def test_prompt_comes_before_data_in_error_replies(pump: Ne1000) -> None:
    ask(pump, "0RUN")
    assert body(pump, "0XYZ") == "00I?"


# -- VER, DIA and the unit rule -------------------------------------------------------------


def test_version(pump: Ne1000) -> None:
    assert ask(pump, "0VER") == b"\x0200SNE1000V3.928\x03"


@pytest.mark.parametrize(
    ("diameter", "units"),
    [("14.00", "UL"), ("14", "UL"), ("13.99", "UL"), ("14.01", "ML"), ("26.59", "ML"), ("0.1", "UL")],
)
def test_diameter_selects_volume_units_at_14_mm(pump: Ne1000, diameter: str, units: str) -> None:
    assert body(pump, f"0DIA{diameter}") == "00S"
    assert body(pump, "0VOL").endswith(units)
    assert body(pump, "0DIS") == f"00SI0.000W0.000{units}"


def test_diameter_query_and_range(pump: Ne1000) -> None:
    assert body(pump, "0DIA26.59") == "00S"
    assert body(pump, "0DIA") == "00S26.59"
    assert body(pump, "0DIA50.01") == "00S?OOR"
    assert body(pump, "0DIA0.099") == "00S?OOR"
    assert body(pump, "0DIA12.3456") == "00S?", "more than 3 decimals is not a <float>"
    assert body(pump, "0DIA") == "00S26.59", "a rejected value changes nothing"


def test_diameter_cannot_change_while_pumping(pump: Ne1000) -> None:
    send(pump, "0RUN")
    assert body(pump, "0DIA10") == "00I?NA"
    assert body(pump, "0DIA") == "00I8.585"


# -- RAT and the rate envelope --------------------------------------------------------------


@pytest.mark.parametrize(
    ("diameter", "rate", "accepted"),
    [
        ("26.59", "23.34UH", False),
        ("26.59", "23.36UH", True),
        ("26.59", "28.32MM", True),
        ("26.59", "28.33MM", False),
        ("4.699", "0.729UH", False),
        ("4.699", "0.730UH", True),
        ("4.699", "0.884MM", True),
        ("4.699", "0.885MM", False),
        ("26.59", "0UH", False),
    ],
)
def test_rate_envelope_edges(pump: Ne1000, diameter: str, rate: str, accepted: bool) -> None:
    assert body(pump, f"0DIA{diameter}") == "00S"
    assert body(pump, f"0RAT{rate}") == ("00S" if accepted else "00S?OOR")


def test_rate_units_round_trip(pump: Ne1000) -> None:
    send(pump, "0DIA26.59")
    for rate, shown in (("0.21MM", "0.210MM"), ("250UH", "250.0UH"), ("1.5MH", "1.500MH"), ("99.9UM", "99.90UM")):
        assert body(pump, f"0RAT{rate}") == "00S"
        assert body(pump, "0RAT") == f"00S{shown}"


def test_rate_without_units_keeps_units(pump: Ne1000) -> None:
    send(pump, "0RAT20UH")
    assert body(pump, "0RAT30") == "00S"
    assert body(pump, "0RAT") == "00S30.00UH"


def test_rate_change_while_running_keeps_running_but_units_are_fixed(pump: Ne1000, clock: VirtualClock) -> None:
    send(pump, "0RAT100UH")
    assert body(pump, "0RUN") == "00I"
    clock.advance(36)  # 1 uL at 100 uL/h
    assert body(pump, "0RAT200UH") == "00I"
    assert body(pump, "0RAT0.1MH") == "00I?NA", "units cannot change while pumping"
    clock.advance(18)  # 1 uL at 200 uL/h
    assert pump.dispensed_nl() == (2000, 0)
    assert body(pump, "0RAT") == "00I200.0UH"


def test_rejected_rate_while_running_leaves_motion(pump: Ne1000, clock: VirtualClock) -> None:
    send(pump, "0RAT100UH", "0RUN")
    assert body(pump, "0RAT9999UH") == "00I"  # within 8.585 mm envelope
    assert body(pump, "0RAT1UH") == "00I?OOR"
    assert body(pump, "0RAT") == "00I9999.UH"


# -- VOL, DIR, RUN, STP, PUR, DIS, CLD ------------------------------------------------------


def test_target_volume_stops_the_pump_exactly(pump: Ne1000, clock: VirtualClock) -> None:
    send(pump, "0RAT60UH", "0VOL1")
    assert body(pump, "0RUN") == "00I"
    clock.advance(59.999)
    assert body(pump, "0") == "00I"
    clock.advance(0.002)
    assert body(pump, "0") == "00S"
    assert body(pump, "0DIS") == "00SI1.000W0.000UL"
    assert pump.dispensed_nl() == (1000, 0)
    clock.advance(3600)
    assert pump.dispensed_nl() == (1000, 0), "nothing moves after the target"


def test_withdrawing_a_full_syringe_stalls_at_once(pump: Ne1000) -> None:
    send(pump, "0DIRWDR", "0RUN")
    assert ask(pump, "0") == b"\x0200A?S\x03"


def test_direction_while_pumping_needs_volume_zero(pump: Ne1000, clock: VirtualClock) -> None:
    send(pump, "0RAT60UH", "0RUN")
    clock.advance(60)
    assert body(pump, "0DIRWDR") == "00W", "VOL 0 pumps continuously, so DIR may change"
    assert body(pump, "0DIR") == "00WWDR"
    clock.advance(30)
    assert pump.dispensed_nl() == (1000, 500)
    assert body(pump, "0DIRSTK") == "00W?NA"
    send(pump, "0STP", "0STP", "0VOL5", "0RUN")
    assert body(pump, "0DIRINF") == "00W?NA"


def test_paused_query_reply_has_the_fixed_number_format(pump: Ne1000) -> None:
    # bburan's unit-test vector is b"\x0200P0.21MM\x03", written by hand; captures from real pumps
    # (I0.200W0.000ML, I16.09W0.000ML, 10.00MH) show 4 significant digits, so 0.21 mL/min reads 0.210.
    send(pump, "0DIA26.59", "0RAT0.21MM", "0RUN", "0STP")
    assert ask(pump, "0RAT") == b"\x0200P0.210MM\x03"


def test_withdrawing_dir_reply(make_pump: Callable[..., Ne1000]) -> None:
    pump = make_pump(fill_ml="1")  # room to withdraw: a full syringe would stall at once
    send(pump, "0DIRWDR", "0RUN")
    assert ask(pump, "0DIR") == b"\x0200WWDR\x03"
    send(pump, "0STP", "0STP", "0DIRINF", "0RUN")
    assert ask(pump, "0DIR") == b"\x0200IINF\x03"


def test_stop_pauses_then_stops_and_run_resumes(pump: Ne1000, clock: VirtualClock) -> None:
    send(pump, "0RAT60UH", "0VOL2")
    assert body(pump, "0RUN") == "00I"
    clock.advance(60)
    assert body(pump, "0STP") == "00P"
    clock.advance(600)
    assert pump.dispensed_nl() == (1000, 0), "a paused pump does not move"
    assert body(pump, "0RUN") == "00I"
    clock.advance(60)
    assert body(pump, "0") == "00S", "resuming continues the phase: 2 uL in total"
    assert pump.dispensed_nl() == (2000, 0)
    send(pump, "0RUN")
    clock.advance(30)
    assert body(pump, "0STP") == "00P"
    assert body(pump, "0STP") == "00S"
    assert body(pump, "0STP") == "00S", "STP while stopped is harmless"
    send(pump, "0RUN")
    clock.advance(120)
    assert pump.dispensed_nl() == (4500, 0), "after a full stop RUN restarts the phase volume"


def test_purge_runs_at_maximum_rate_until_stopped(pump: Ne1000, clock: VirtualClock) -> None:
    assert body(pump, "0PUR") == "00X"
    clock.advance(1)
    inf_nl, _ = pump.dispensed_nl()
    assert inf_nl > 1000
    assert body(pump, "0PUR") == "00X?NA"
    assert body(pump, "0STP") == "00S"


def test_dispensed_and_clear(pump: Ne1000, clock: VirtualClock) -> None:
    send(pump, "0DIA26.59", "0RAT1MM", "0RUN")
    clock.advance(90)
    assert body(pump, "0DIS") == "00II1.500W0.000ML"
    send(pump, "0STP")
    assert body(pump, "0CLD INF") == "00P"
    assert body(pump, "0DIS") == "00PI0.000W0.000ML"
    assert body(pump, "0CLD") == "00P?"
    assert body(pump, "0CLD WDR") == "00P"


def test_counter_display_is_truncated_to_four_digits(pump: Ne1000, clock: VirtualClock) -> None:
    send(pump, "0RAT7UM", "0RUN")
    clock.advance(100)  # 11.666... uL
    assert body(pump, "0DIS") == "00II11.66W0.000UL"


def test_run_from_phase_and_program_of_two_rate_phases(pump: Ne1000, clock: VirtualClock) -> None:
    send(pump, "0RAT60UH", "0VOL1")
    assert body(pump, "0PHN2") == "00S"
    assert body(pump, "0FUN") == "00SSTP"
    assert body(pump, "0FUNRAT") == "00S"
    assert body(pump, "0RAT120UH") == "00S"
    assert body(pump, "0VOL1") == "00S"
    assert body(pump, "0PHN") == "00S2"
    send(pump, "0RUN")
    clock.advance(60 + 30)
    assert body(pump, "0") == "00S", "phase 1 then phase 2, then the STP phase 3"
    assert pump.dispensed_nl() == (2000, 0)
    assert body(pump, "0RUN2") == "00I"
    clock.advance(30)
    assert body(pump, "0") == "00S"
    assert body(pump, "0PHN42") == "00S?OOR"
    assert body(pump, "0RUN42") == "00S?OOR"


def test_run_with_out_of_range_phase_raises_program_alarm(pump: Ne1000) -> None:
    send(pump, "0RAT3UH")
    body(pump, "0DIA26.59")  # 3 uL/h is below this syringe's envelope
    assert ask(pump, "0RUN") == b"\x0200A?O\x03"
    assert body(pump, "0") == "00S"


# -- settings: SAF, AL, PF, BUZ, BP, LOC, TRG, *ADR, *RESET --------------------------------


@pytest.mark.parametrize("name", ["AL", "PF", "BP", "LOC", "DIN", "ROM", "LN", "LOC P"])
def test_flag_commands(pump: Ne1000, name: str) -> None:
    assert body(pump, f"0{name}1") == "00S"
    assert body(pump, f"0{name}") == "00S1"
    assert body(pump, f"0{name}0") == "00S"
    assert body(pump, f"0{name}") == "00S0"
    assert body(pump, f"0{name}2") == "00S?OOR"
    assert body(pump, f"0{name}X") == "00S?"


def test_buzzer(pump: Ne1000) -> None:
    assert body(pump, "0BUZ1 5") == "00S"
    assert body(pump, "0BUZ") == "00S1"
    assert pump.buzzer == (1, 5)
    assert body(pump, "0BUZ0") == "00S"
    assert body(pump, "0BUZ3") == "00S?OOR"


def test_trigger_mode(pump: Ne1000) -> None:
    for mode in ("FT", "FH", "F2", "LE", "ST", "T2"):
        assert body(pump, f"0TRG {mode}") == "00S"
        assert body(pump, "0TRG") == f"00S{mode}"
    assert body(pump, "0TRGQQ") == "00S?"


def test_saf_query_and_range(pump: Ne1000) -> None:
    assert body(pump, "0SAF") == "00S0"
    assert body(pump, "0SAF256") == "00S?OOR"
    assert not pump.safe_mode


def test_system_address_command_works_whatever_the_address(make_pump: Callable[..., Ne1000]) -> None:
    pump = make_pump(address=12)
    assert body(pump, "*ADR 3") == "03S"
    assert pump.address == 3
    assert ask(pump, "12") == b""
    assert body(pump, "3") == "03S"
    assert body(pump, "*ADR 3 B 9600") == "03S"
    assert pump.baud == 9600
    assert body(pump, "*ADR3B14400") == "03S?OOR"
    assert body(pump, "*ADR100") == "03S?OOR"
    assert body(pump, "*ADR") == "03S3"


def test_master_reset(make_pump: Callable[..., Ne1000]) -> None:
    pump = make_pump(address=4)
    send(pump, "4RAT50UH", "4SAF0")
    assert body(pump, "*RESET") == "00S"
    assert pump.address == 0
    assert body(pump, "0RAT") == "00S10.00UH"


# -- alarms ---------------------------------------------------------------------------------


def test_stall_alarm_bytes_and_acknowledgement(pump: Ne1000) -> None:
    send(pump, "0RUN")
    pump.inject_stall()
    assert ask(pump, "0RUN") == b"\x0200A?S\x03", "the alarm answers the next command, which does not run"
    assert body(pump, "0") == "00S"
    assert body(pump, "0RUN") == "00I"


def test_end_of_travel_stalls(make_pump: Callable[..., Ne1000], clock: VirtualClock) -> None:
    pump = make_pump(syringe_volume_ml="1", fill_ml="0.01")  # 10 uL left
    send(pump, "0RAT600UH", "0RUN")
    clock.advance(59.9)
    assert body(pump, "0") == "00I"
    clock.advance(0.2)
    assert ask(pump, "0") == b"\x0200A?S\x03"
    assert pump.dispensed_nl() == (10_000, 0)
    assert pump.mechanics.contents_nl() == 0


def test_occlusion_stalls_after_delay(pump: Ne1000, clock: VirtualClock) -> None:
    send(pump, "0RAT600UH")
    pump.set_occluded(True)
    send(pump, "0RUN")
    clock.advance(0.4)
    assert body(pump, "0") == "00I"
    clock.advance(0.2)
    assert ask(pump, "0") == b"\x0200A?S\x03"
    pump.set_occluded(False)
    assert body(pump, "0RUN") == "00I"
    clock.advance(10)
    assert body(pump, "0") == "00I"


def test_power_cycle_latches_reset_and_stops_without_pf(pump: Ne1000, clock: VirtualClock) -> None:
    send(pump, "0RUN")
    pump.power_loss()
    assert ask(pump, "0") == b"", "an unpowered pump is silent"
    clock.advance(60)
    pump.power_restore()
    assert ask(pump, "0") == b"\x0200A?R\x03"
    assert body(pump, "0") == "00S"


def test_power_cycle_resumes_with_pf(pump: Ne1000, clock: VirtualClock) -> None:
    send(pump, "0PF1", "0RAT60UH", "0RUN")
    clock.advance(60)
    pump.power_loss()
    clock.advance(600)
    pump.power_restore()
    clock.advance(60)
    assert ask(pump, "0") == b"\x0200A?R\x03"
    assert body(pump, "0") == "00I"
    assert pump.dispensed_nl() == (2000, 0), "no motion while unpowered"


# -- the command table and number format ---------------------------------------------------


def test_command_table_names_every_required_command() -> None:
    names = {c.name for c in COMMANDS}
    required = {"VER", "DIA", "RAT", "VOL", "DIR", "RUN", "STP", "PUR", "DIS", "CLD", "SAF", "ADR", "AL", "PF"}
    assert required | {"BUZ", "PHN", "FUN", "RESET"} <= names


@pytest.mark.parametrize(
    ("text", "milli"),
    [("0.001", 1), ("9999", 9_999_000), ("12.34", 12_340), ("5", 5000), (".5", 500), ("0012", 12_000)],
)
def test_valid_numbers(text: str, milli: int) -> None:
    assert parse_milli(text) == milli


@pytest.mark.parametrize("text", ["12.3456", "1e-05", "10000", "", ".", "1.2.3", "-1", "12345.6"])
def test_invalid_numbers(text: str) -> None:
    assert parse_milli(text) is None


@pytest.mark.parametrize(
    ("milli", "text"), [(210, "0.210"), (5000, "5.000"), (26_590, "26.59"), (1, "0.001"), (12_345_678, "12345"), (0, "0.000"),
                         (100_000, "100.0"), (1_000_000, "1000."), (9_999_999, "9999."), (99_999, "99.99")]
)
def test_number_rendering(milli: int, text: str) -> None:
    assert format_milli(milli) == text


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"address": 100}, "address"),
        ({"syringe_diameter_mm": "60"}, "syringe_diameter_mm"),
        ({"syringe_diameter_mm": "1.23456"}, "syringe_diameter_mm"),
        ({"syringe_volume_ml": "0"}, "syringe_volume_ml"),
        ({"fill_ml": "4"}, "fill_ml"),
        ({"safe_timeout_s": 300}, "safe_timeout_s"),
        ({"bad_packet_reply": "loud"}, "bad_packet_reply"),
        ({"bias_pct": 80.0}, "bias_pct"),
        ({"noise_pct": -1.0}, "noise_pct"),
    ],
)
def test_bad_configuration_is_rejected(clock: VirtualClock, kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        Ne1000(clock, **kwargs)  # type: ignore[arg-type]
    assert excinfo.value.field == field


def test_rate_change_while_pumping_is_volatile(pump: Ne1000, clock: VirtualClock) -> None:
    send(pump, "0PF1", "0RAT100UH", "0RUN", "0RAT200UH")
    pump.power_cycle()
    assert ask(pump, "0") == b"\x0200A?R\x03"
    assert body(pump, "0RAT") == "00I100.0UH", "power loss restores the rate stored before pumping"
    send(pump, "0STP", "0RAT300UH")
    pump.power_cycle()
    ask(pump, "0")
    assert body(pump, "0RAT") == "00P300.0UH", "a rate set while paused is stored"


def test_network_burst_runs_only_this_pumps_part(make_pump: Callable[..., Ne1000]) -> None:
    pump = make_pump(address=1)
    assert ask(pump, "0 rat 100 uh * 1 rat 250 uh * 2 rat 300 uh *") == b"\x0201S\x03"
    assert body(pump, "1RAT") == "01S250.0UH"
    assert ask(pump, "0RAT100UH*2RAT300UH*") == b""
    assert ask(pump, "12RAT100UH*") == b"", "burst addresses are single digits"


def test_x2_profile_has_340_phases_and_its_version(clock: VirtualClock) -> None:
    pump = Ne1000(clock, power_on_alarm=False, profile=NE1000_X2_V3_928)
    assert body(pump, "0VER") == "00SNE1000X2V3.928"
    assert body(pump, "0PHN340") == "00S"
    assert body(pump, "0PHN341") == "00S?OOR"
    base = Ne1000(clock, power_on_alarm=False)
    assert body(base, "0PHN41") == "00S"
    assert body(base, "0PHN100") == "00S?OOR"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"phase_count": 0}, "phase_count"),
        ({"diameter_min_milli": 60_000}, "diameter_min_milli"),
        ({"min_speed_cm_per_h": 0.0}, "min_speed_cm_per_h"),
        ({"baud_rates": (9600,)}, "baud_rates"),
    ],
)
def test_bad_profiles_are_rejected(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        DeviceProfile(name="bad", version_reply="X", **kwargs)  # type: ignore[arg-type]
    assert excinfo.value.field == field


def test_profile_must_be_a_profile(clock: VirtualClock) -> None:
    with pytest.raises(ConfigError):
        Ne1000(clock, profile="ne1000")  # type: ignore[arg-type]


def test_manual_reply_vectors_while_paused(pump: Ne1000) -> None:
    send(pump, "0RUN", "0STP")
    assert ask(pump, "0XYZ") == b"\x0200P?\x03"
    assert pump.receive(b"0RAT\xff\r") == b"\x0200P?COM\x03"
    assert ask(pump, "0") == b"\x0200P\x03"


def test_invalid_packet_does_not_acknowledge_an_alarm(pump: Ne1000) -> None:
    pump.inject_stall()
    assert pump.receive(b"0\x80\r") == b"\x0200A?S?COM\x03"
    assert ask(pump, "0") == b"\x0200A?S\x03"
    assert ask(pump, "0") == b"\x0200S\x03"


def test_an_event_made_due_at_the_instant_the_pump_was_last_polled_is_still_handled(
    make_pump: Callable[..., Ne1000], clock: VirtualClock,
) -> None:
    """The firmware searches for due events once per instant; a change at that instant searches again."""
    pump = make_pump(occlusion_delay_s=0)
    assert body(pump, "0RAT60UH") == "00S" and body(pump, "0RUN") == "00I"
    clock.advance_ns(60 * 10**9)
    assert pump.poll() == b"" and body(pump, "0DIS") == "00II1.000W0.000UL" and pump.poll() == b""
    pump.set_occluded(True)  # a stall due now, at the instant already searched
    assert ask(pump, "0DIS") == b"\x0200A?S\x03" and body(pump, "0") == "00S"
    assert body(pump, "0RAT60UH") == "00S" and body(pump, "0VOL0.5") == "00S"
    pump.set_occluded(False)
    assert body(pump, "0RUN") == "00I"
    clock.advance_ns(30 * 10**9)  # the 0.5 µL target is reached at exactly this instant
    assert pump.poll() == b"" and body(pump, "0") == "00S"
