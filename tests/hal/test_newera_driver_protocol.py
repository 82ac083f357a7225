"""NE-1000 driver against exact (sent, reply) byte scripts: every byte on the wire is pinned down.

A :class:`ScriptedLink` fails the test on any unexpected write and on unused
entries, so "nothing reached the wire" is proven by an empty script.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

import hal
from cython_ext.errors import CapabilityError, CommunicationError, ConfigError, DeviceError, StateError
from hal.newera.codec import ErrorCode
from hal.newera.driver import Ne1000Driver
from hal.newera.framing import encode_safe
from hal.pump import Direction, Outcome, PumpAlarm, PumpState, Sensor
from hal_links import ScriptedLink


def r(data: str) -> bytes:
    """A Basic-mode reply frame."""
    return b"\x02" + data.encode() + b"\x03"


def q(data: str) -> bytes:
    """A Basic-mode request."""
    return data.encode() + b"\r"


def connect_script(*, first: str = "00A?R", dia: str = "14.43", rat: str = "10UH", state: str = "S"
                   ) -> list[tuple[bytes, bytes | None]]:
    return [
        (q("0"), r(first)),
        (q("0"), r(f"00{state}")),
        (q("0DIA"), r(f"00{state}{dia}")),
        (q("0RAT"), r(f"00{state}{rat}")),
    ]


@pytest.fixture
def link() -> ScriptedLink:
    return ScriptedLink(connect_script())


@pytest.fixture
def pump(link: ScriptedLink) -> Iterator[Ne1000Driver]:
    driver = Ne1000Driver(link)
    driver.connect()
    assert not link.script
    yield driver
    driver.close()
    link.assert_done()


# -- connecting ----------------------------------------------------------------------


def test_connect_acknowledges_the_power_up_reset_with_a_status_query(link: ScriptedLink) -> None:
    driver = Ne1000Driver(link)
    status = driver.connect()
    assert status.state is PumpState.STOPPED
    (event,) = driver.pending_alarms()
    assert event.alarm is PumpAlarm.RESET and event.acknowledged and event.command == "0"
    assert driver.pending_alarms() == ()
    caps = driver.capabilities()
    assert caps.sensors == frozenset({Sensor.MOTOR_STALL, Sensor.DISPENSED_COUNTER})
    assert caps.volume_resolution_nl == 1000  # 14.43 mm counts in mL


def test_connect_finds_a_pump_left_in_safe_mode() -> None:
    link = ScriptedLink([
        (q("0"), None),  # Basic packets are ignored in Safe mode
        (encode_safe(b"0"), encode_safe(b"00A?R")),
        (encode_safe(b"0"), encode_safe(b"00S")),
        (encode_safe(b"0DIA"), encode_safe(b"00S4.699")),
        (encode_safe(b"0RAT"), encode_safe(b"00S1UH")),
        (encode_safe(b"0SAF0"), encode_safe(b"00S")),
        (q("0"), r("00S")),
        (q("0SAF"), r("00S0")),
    ])
    driver = Ne1000Driver(link)
    driver.connect()
    assert not driver.safe_mode
    assert driver.capabilities().volume_resolution_nl == 1  # 4.699 mm counts in µL
    link.assert_done()


def test_open_pump_on_a_silent_line_fails_and_closes_the_port() -> None:
    with pytest.raises(CommunicationError, match="no answer"):
        hal.open_pump("ne1000", "loop://", timeout_s=0.01)


def test_unknown_driver_option_is_a_config_error_before_opening() -> None:
    with pytest.raises(ConfigError) as info:
        Ne1000Driver.open("/dev/does-not-exist", retries=3)
    assert info.value.field == "options"


def test_repr_names_port_address_and_mode(link: ScriptedLink) -> None:
    driver = Ne1000Driver(link, address=0)
    assert repr(driver) == "Ne1000Driver(scripted://, address=0, basic)"
    driver.close()
    assert "closed" in repr(driver)


def _opened(**kwargs: object) -> object:
    """``hal.open_pump`` on a port that does not exist: a setting must be refused before the port is opened."""
    return hal.open_pump("ne1000", "/dev/does-not-exist", **kwargs)  # type: ignore[arg-type]


def _constructed(**kwargs: object) -> object:
    """The driver's constructor on an empty scripted link: nothing may be sent."""
    return Ne1000Driver(ScriptedLink(), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("build", "kwargs", "field"),
    [(_opened, {"address": 100}, "address"), (_opened, {"safe_mode_timeout_s": 0}, "safe_mode_timeout_s"),
     (_opened, {"safe_mode_timeout_s": 256}, "safe_mode_timeout_s"), (_opened, {"timeout_s": 0}, "timeout_s"),
     (_constructed, {"address": 100}, "address"), (_constructed, {"read_retries": 9}, "read_retries"),
     (_constructed, {"rate_tolerance_ppm": 0}, "rate_tolerance_ppm"), (_constructed, {"quiet_s": 0}, "quiet_s")],
)
def test_bad_settings_are_refused_by_field(build: Callable[..., object], kwargs: dict[str, object],
                                           field: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(**kwargs)
    assert info.value.field == field


# -- setting values -------------------------------------------------------------------


def test_set_rate_reads_before_sends_the_best_units_and_reads_back(pump: Ne1000Driver, link: ScriptedLink
                                                                   ) -> None:
    link.add(q("0RAT"), r("00S10UH"))
    link.add(q("0RAT41.67UH"), r("00S"))
    link.add(q("0RAT"), r("00S41.67UH"))
    result = pump.set_rate(41_667)
    assert result.outcome is Outcome.APPLIED and result.value == 41_670


def test_set_rate_while_running_keeps_the_running_units(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0"), r("00S"))
    link.add(q("0RUN"), r("00I"))
    assert pump.start().applied
    link.add(q("0RAT"), r("00I10UH"))
    link.add(q("0RAT2500UH"), r("00I"))  # 2.5 mL/h, but the pump runs in µL/h
    link.add(q("0RAT"), r("00I2500UH"))
    assert pump.set_rate(2_500_000).value == 2_500_000


def test_set_target_volume_and_direction_read_back(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0VOL"), r("00S0ML"))
    link.add(q("0VOL1.500"), r("00S"))
    link.add(q("0VOL"), r("00S1.5ML"))
    assert pump.set_target_volume(1_500_000).value == 1_500_000
    link.add(q("0DIR"), r("00SINF"))
    link.add(q("0DIRWDR"), r("00S"))
    link.add(q("0DIR"), r("00SWDR"))
    assert pump.set_direction(Direction.WITHDRAW).applied


def test_configure_sets_diameter_and_derives_the_envelope(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0DIA"), r("00S14.43"))
    link.add(q("0DIA26.59"), r("00S"))
    link.add(q("0DIA"), r("00S26.59"))
    caps = pump.configure(syringe_diameter_mm=26.59)
    assert round(caps.min_rate_nl_per_h, -1) == 23_350
    assert caps.volume_resolution_nl == 1000


def test_read_back_that_differs_is_uncertain_not_applied(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0RAT"), r("00S10UH"))
    link.add(q("0RAT41.67UH"), r("00S"))
    link.add(q("0RAT"), r("00S41.6UH"))
    result = pump.set_rate(41_667)
    assert result.outcome is Outcome.UNCERTAIN and result.value == 41_600


@pytest.mark.parametrize("error", ["?OOR", "?NA", "?"])
def test_error_reply_is_not_applied_and_nothing_is_retried(pump: Ne1000Driver, link: ScriptedLink, error: str
                                                            ) -> None:
    link.add(q("0RAT"), r("00S10UH"))
    link.add(q("0RAT41.67UH"), r(f"00S{error}"))
    result = pump.set_rate(41_667)
    assert result.outcome is Outcome.NOT_APPLIED and error in result.detail


# -- limits: a rejected command never reaches the wire ----------------------------------


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda p: p.set_rate(6_000), CapabilityError),  # below the 14.43 mm envelope (6.877 µL/h)
        (lambda p: p.set_rate(600_000_000), CapabilityError),  # above it
        (lambda p: p.set_rate(0), ConfigError),
        (lambda p: p.set_rate(-1), ConfigError),
        (lambda p: p.set_rate(41_667.0), ConfigError),
        (lambda p: p.set_rate(True), ConfigError),
        (lambda p: p.set_target_volume(400), CapabilityError),  # 0.0004 mL: below the mL resolution
        (lambda p: p.set_target_volume(-1), ConfigError),
        (lambda p: p.set_target_volume(20_000_000_000), CapabilityError),  # 20000 mL: 5 digits
        (lambda p: p.configure(syringe_diameter_mm=0.05), CapabilityError),
        (lambda p: p.configure(syringe_diameter_mm=50.001), CapabilityError),
        (lambda p: p.configure(syringe_diameter_mm="14.4321"), CapabilityError),  # needs 6 digits
        (lambda p: p.configure(syringe_diameter_mm=float("nan")), ConfigError),
        (lambda p: p.set_direction("INF"), ConfigError),
    ],
)
def test_rejected_commands_never_reach_the_wire(pump: Ne1000Driver, link: ScriptedLink, call: object,
                                                error: type[Exception]) -> None:
    sent = len(link.sent)
    with pytest.raises(error):
        call(pump)  # type: ignore[operator]
    assert len(link.sent) == sent


def test_unrepresentable_rate_in_running_units_is_refused_unsent(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0"), r("00S"))
    link.add(q("0RUN"), r("00I"))
    pump.start()
    link.add(q("0RAT"), r("00I10UH"))  # the read before sending finds it running in µL/h
    with pytest.raises(CapabilityError):
        pump.set_rate(12_345_000)  # 12345 µL/h needs 5 digits; units cannot change while running
    assert not any(sent.startswith(b"0RAT1") for sent in link.sent)


def test_represented_rate_outside_the_envelope_is_refused_unsent() -> None:
    # 26.59 mm: the minimum is 23350.3 nL/h; 23351 rounds to 23.35 µL/h, which is below it.
    link = ScriptedLink(connect_script(dia="26.59"))
    driver = Ne1000Driver(link)
    driver.connect()
    link.add(q("0RAT"), r("00S10UH"))
    with pytest.raises(CapabilityError, match="represented rate"):
        driver.set_rate(23_351)
    link.assert_done()


def test_rate_without_a_known_diameter_is_a_state_error() -> None:
    driver = Ne1000Driver(ScriptedLink())
    with pytest.raises(StateError):
        driver.set_rate(1000)


# -- the power-up reset alarm swallows one command ----------------------------------------


def test_reset_swallowed_set_rate_is_resent_once_after_read_back(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0RAT"), r("00S10UH"))
    link.add(q("0RAT41.67UH"), r("00A?R"))  # the pump reset between the two packets
    link.add(q("0RAT"), r("00S10UH"))  # not applied
    link.add(q("0RAT41.67UH"), r("00S"))
    link.add(q("0RAT"), r("00S41.67UH"))
    pump.pending_alarms()
    result = pump.set_rate(41_667)
    assert result.applied and "reset" in result.detail
    assert [e.alarm for e in pump.pending_alarms()] == [PumpAlarm.RESET]
    assert pump.stats.resends_after_reset == 1


def test_reset_swallowed_run_is_resent_only_after_status_shows_stopped(pump: Ne1000Driver, link: ScriptedLink
                                                                       ) -> None:
    link.add(q("0"), r("00S"))
    link.add(q("0RUN"), r("00A?R"))
    link.add(q("0"), r("00S"))
    link.add(q("0RUN"), r("00I"))
    result = pump.start()
    assert result.applied
    assert sum(sent == q("0RUN") for sent in link.sent) == 2


def test_second_reset_in_a_row_is_not_applied_not_resent_again(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0"), r("00S"))
    link.add(q("0RUN"), r("00A?R"))
    link.add(q("0"), r("00S"))
    link.add(q("0RUN"), r("00A?R"))
    link.add(q("0"), r("00S"))
    result = pump.start()
    assert result.outcome is Outcome.NOT_APPLIED
    assert result.status is not None and result.status.alarm is PumpAlarm.RESET


def test_alarm_reply_to_run_with_the_pump_running_is_uncertain_and_not_resent(pump: Ne1000Driver,
                                                                              link: ScriptedLink) -> None:
    link.add(q("0"), r("00S"))
    link.add(q("0RUN"), r("00A?R"))
    link.add(q("0"), r("00I"))
    assert pump.start().outcome is Outcome.UNCERTAIN


def test_start_with_a_latched_stall_reports_it_and_does_not_run(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0"), r("00A?S"))
    link.add(q("0"), r("00S"))
    result = pump.start()
    assert result.outcome is Outcome.NOT_APPLIED
    assert result.status is not None and result.status.alarm is PumpAlarm.STALL
    assert q("0RUN") not in link.sent


def test_stall_swallowing_a_set_is_not_applied_and_not_resent(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0VOL"), r("00S0ML"))
    link.add(q("0VOL1.500"), r("00A?S"))
    link.add(q("0VOL"), r("00S0ML"))
    result = pump.set_target_volume(1_500_000)
    assert result.outcome is Outcome.NOT_APPLIED and "STALL" in result.detail


# -- lost and late replies ---------------------------------------------------------------


def test_lost_reply_after_run_is_uncertain_with_readings_and_run_is_sent_once(pump: Ne1000Driver,
                                                                            link: ScriptedLink) -> None:
    link.add(q("0"), r("00S"))
    link.add(q("0RUN"), None)
    link.add(q("0"), r("00I"))
    link.add(q("0DIS"), r("00II0.005W0.000ML"))
    link.add(q("0DIS"), r("00II0.005W0.000ML"))  # a first reading is believed when a second agrees
    result = pump.start()
    assert result.outcome is Outcome.UNCERTAIN
    assert result.status is not None and result.status.state is PumpState.INFUSING
    assert result.dispensed is not None and result.dispensed.infused_nl == 5_000
    assert link.sent.count(q("0RUN")) == 1


def test_lost_reply_after_run_with_unreadable_pump_is_uncertain(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0"), r("00S"))
    link.add(q("0RUN"), None)
    link.add(q("0"), None, times=4)
    link.add(q("0DIS"), None, times=4)
    result = pump.start()
    assert result.outcome is Outcome.UNCERTAIN and result.status is None and result.dispensed is None
    assert link.sent.count(q("0RUN")) == 1


@pytest.mark.parametrize(("read_back", "outcome"), [
    ("41.67UH", Outcome.APPLIED), ("10UH", Outcome.NOT_APPLIED), ("41.77UH", Outcome.UNCERTAIN)])
def test_lost_reply_after_set_rate_is_resolved_by_read_back(pump: Ne1000Driver, link: ScriptedLink,
                                                            read_back: str, outcome: Outcome) -> None:
    link.add(q("0RAT"), r("00S10UH"))
    link.add(q("0RAT41.67UH"), None)
    link.add(q("0RAT"), r(f"00S{read_back}"))
    link.add(q("0"), r("00S"))
    result = pump.set_rate(41_667)
    assert result.outcome is outcome
    assert link.sent.count(q("0RAT41.67UH")) == 1


def test_lost_reply_and_failed_read_back_is_uncertain(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0RAT"), r("00S10UH"))
    link.add(q("0RAT41.67UH"), None)
    link.add(q("0RAT"), None, times=4)
    assert pump.set_rate(41_667).outcome is Outcome.UNCERTAIN


def test_unreadable_value_before_a_setting_means_nothing_is_sent(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0RAT"), None, times=4)
    with pytest.raises(CommunicationError):
        pump.set_rate(41_667)
    assert q("0RAT41.67UH") not in link.sent


def test_alarm_found_by_the_read_before_a_setting_is_reported(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0RAT"), r("00A?R"))
    link.add(q("0RAT"), r("00S10UH"))
    link.add(q("0RAT41.67UH"), r("00S"))
    link.add(q("0RAT"), r("00S41.67UH"))
    result = pump.set_rate(41_667)
    assert result.applied and "acknowledged RESET before sending" in result.detail
    assert result.status is not None and result.status.alarm is PumpAlarm.RESET
    assert link.sent.count(q("0RAT41.67UH")) == 1


def test_queries_retry_a_bounded_number_of_times(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0DIS"), None, times=4)
    with pytest.raises(CommunicationError):
        pump.read_dispensed()
    assert pump.stats.timeouts >= 4


def test_query_retries_after_bad_packet(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0DIS"), r("00S?COM"))
    link.add(q("0DIS"), r("00SI1.200W0.000ML"))
    link.add(q("0DIS"), r("00SI1.200W0.000ML"))
    assert pump.read_dispensed().infused_nl == 1_200_000


def test_unrecognised_query_is_asked_again_then_a_device_error(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0VER"), r("00S?"), times=4)
    with pytest.raises(DeviceError) as info:
        pump.identify()
    assert info.value.reply.error is ErrorCode.UNRECOGNISED


def test_query_garbled_into_an_unknown_command_succeeds_on_the_next_ask(pump: Ne1000Driver, link: ScriptedLink
                                                                       ) -> None:
    link.add(q("0VER"), r("00S?"))
    link.add(q("0VER"), r("00SNE1000V3.928"))
    assert pump.identify().model == "NE1000"


def test_out_of_range_query_error_is_raised_at_once(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0DIS"), r("00S?NA"))
    with pytest.raises(DeviceError) as info:
        pump.read_dispensed()
    assert info.value.reply.error is ErrorCode.NOT_APPLICABLE


def test_late_reply_to_another_query_is_never_taken_as_the_answer(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0DIS"), r("00S10UH") + r("00SI0.002W0.000ML"))
    link.add(q("0DIS"), r("00SI0.002W0.000ML"))
    assert pump.read_dispensed().infused_nl == 2_000
    assert pump.stats.unmatched_replies == 1


def test_stray_bytes_before_a_request_are_discarded(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.inject(b"\x00\xffjunk" + r("00I"))  # a stale "infusing" reply must not answer the next status
    link.add(q("0"), r("00S"))
    assert pump.read_status().state is PumpState.STOPPED
    assert pump.stats.stray_bytes == 11


def test_reply_from_another_address_is_ignored(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0"), r("01I") + b"\x01noise" + r("00S"))
    assert pump.read_status().state is PumpState.STOPPED
    assert pump.stats.foreign_replies == 1


def test_split_reply_is_reassembled(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0VER"), r("00SNE1000V3.928"))
    identity = pump.identify()
    assert (identity.model, identity.firmware, identity.address) == ("NE1000", "V3.928", 0)


# -- stopping ----------------------------------------------------------------------------


def test_stop_pauses_then_stops(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0STP"), r("00P"))
    link.add(q("0STP"), r("00S"))
    result = pump.stop()
    assert result.applied and result.status is not None and result.status.state is PumpState.STOPPED


def test_stop_when_already_stopped_sends_one_stp(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0STP"), r("00S"))
    assert pump.stop().applied


def test_stop_with_lost_reply_reads_status_before_the_second_stp(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0STP"), None)
    link.add(q("0"), r("00P"))
    link.add(q("0STP"), r("00S"))
    assert pump.stop().applied


def test_stop_with_lost_reply_and_pump_still_running_is_not_applied(pump: Ne1000Driver, link: ScriptedLink
                                                                    ) -> None:
    link.add(q("0STP"), None)
    link.add(q("0"), r("00I"))
    result = pump.stop()
    assert result.outcome is Outcome.NOT_APPLIED
    assert link.sent.count(q("0STP")) == 1


# -- counters ----------------------------------------------------------------------------


@pytest.mark.parametrize(("reply", "counters", "outcome"), [
    ("00S", "00SI0.000W0.000ML", Outcome.APPLIED),  # clears both and reads zero
    ("00S?NA", "00SI1.000W0.000ML", Outcome.NOT_APPLIED),  # refused: the counters still read what they did
], ids=["cleared", "refused"])
def test_clear_dispensed_clears_both_and_reads_the_counters_back(pump: Ne1000Driver, link: ScriptedLink, reply: str,
                                                                 counters: str, outcome: Outcome) -> None:
    link.add(q("0CLDINF"), r(reply))
    link.add(q("0CLDWDR"), r(reply))
    link.add(q("0DIS"), r(counters))
    link.add(q("0DIS"), r(counters))
    assert pump.clear_dispensed().outcome is outcome


# -- Safe mode ---------------------------------------------------------------------------


def test_enter_and_leave_safe_mode_bytes(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0SAF10"), r("00S"))
    link.add(encode_safe(b"0"), encode_safe(b"00S"))
    link.add(encode_safe(b"0SAF"), encode_safe(b"00S10"))
    pump.enter_safe_mode(10)
    assert pump.safe_mode
    link.add(encode_safe(b"0DIS"), encode_safe(b"00SI0.000W0.000ML"))  # the heartbeat: status and counters in one
    assert pump.heartbeat().state is PumpState.STOPPED
    link.add(encode_safe(b"0SAF0"), encode_safe(b"00S"))
    link.add(q("0"), r("00S"))
    # firmware without the SAF query (asked again, in case it was garbled): framing check stands
    link.add(q("0SAF"), r("00S?"), times=4)
    pump.exit_safe_mode()
    assert not pump.safe_mode


def _back_to_basic_at_close(link: ScriptedLink) -> None:
    """The exchanges of close() on a pump in Safe mode: SAF 0 (as a Safe packet), then the read-backs."""
    link.add(encode_safe(b"0SAF0"), encode_safe(b"00S"))
    link.add(q("0"), r("00S"))
    link.add(q("0SAF"), r("00S0"))


def _in_safe_mode_5s(pump: Ne1000Driver, link: ScriptedLink) -> None:
    """Enter Safe mode with a 5 s timeout: SAF 5 (as a Basic packet), then the Safe status and SAF read-backs."""
    link.add(q("0SAF5"), r("00S"))
    link.add(encode_safe(b"0"), encode_safe(b"00S"))
    link.add(encode_safe(b"0SAF"), encode_safe(b"00S5"))
    pump.enter_safe_mode(5)


def test_safe_timeout_read_back_mismatch_is_a_device_error(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0SAF10"), r("00S"))
    link.add(encode_safe(b"0"), encode_safe(b"00S"))
    link.add(encode_safe(b"0SAF"), encode_safe(b"00S20"))
    with pytest.raises(DeviceError, match="SAF read back 20"):
        pump.enter_safe_mode(10)
    _back_to_basic_at_close(link)


def test_unsolicited_safe_alarm_is_recorded_but_not_acknowledged(pump: Ne1000Driver, link: ScriptedLink) -> None:
    _in_safe_mode_5s(pump, link)
    pump.pending_alarms()
    link.inject(encode_safe(b"00A?S"))
    link.add(encode_safe(b"0"), encode_safe(b"00A?S"))  # the reply acknowledges it
    link.add(encode_safe(b"0"), encode_safe(b"00S"))
    status = pump.read_status()
    assert status.alarm is PumpAlarm.STALL
    assert [(e.alarm, e.acknowledged) for e in pump.pending_alarms()] == [
        (PumpAlarm.STALL, False), (PumpAlarm.STALL, True)]
    _back_to_basic_at_close(link)


def test_safe_mode_reply_with_bad_crc_is_not_accepted(pump: Ne1000Driver, link: ScriptedLink) -> None:
    _in_safe_mode_5s(pump, link)
    corrupt = bytearray(encode_safe(b"00I"))
    corrupt[-2] ^= 0xFF
    link.add(encode_safe(b"0"), bytes(corrupt) + encode_safe(b"00S"))
    assert pump.read_status().state is PumpState.STOPPED
    assert pump.stats.frame_errors >= 1
    _back_to_basic_at_close(link)


@pytest.mark.parametrize("timeout_s", [0, 256, 2.5, None])
def test_bad_safe_timeouts_are_rejected_unsent(pump: Ne1000Driver, link: ScriptedLink, timeout_s: object) -> None:
    sent = len(link.sent)
    with pytest.raises(ConfigError):
        pump.enter_safe_mode(timeout_s)  # type: ignore[arg-type]
    assert len(link.sent) == sent


# -- lifecycle ---------------------------------------------------------------------------


def test_close_is_idempotent_and_later_calls_raise(link: ScriptedLink) -> None:
    driver = Ne1000Driver(link)
    driver.connect()
    driver.close()
    driver.close()
    assert link.closed == 1
    with pytest.raises(StateError):
        driver.read_status()


def test_context_manager_closes() -> None:
    link = ScriptedLink(connect_script())
    with Ne1000Driver(link) as driver:
        driver.connect()
    assert link.closed == 1


class _CountingLink(ScriptedLink):
    """Answers every heartbeat (a ``DIS`` query) and signals after a number of writes."""

    def __init__(self, wanted: int) -> None:
        super().__init__()
        self.wanted = wanted
        self.reached = threading.Event()

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))
        self.rx += encode_safe(b"00SI0.000W0.000ML" if data == encode_safe(b"0DIS") else b"00S")
        if len(self.sent) >= self.wanted:
            self.reached.set()


def test_heartbeat_thread_feeds_the_watchdog_and_stops_on_close() -> None:
    link = _CountingLink(wanted=3)
    driver = Ne1000Driver(link)
    driver._safe = True  # as after enter_safe_mode; the thread only needs the framing
    driver.start_heartbeat_thread(interval_s=0.001)
    with pytest.raises(StateError):
        driver.start_heartbeat_thread(interval_s=0.001)
    assert link.reached.wait(timeout=10)
    driver.close()
    assert driver._heartbeat_thread is None
    closing = link.sent.index(encode_safe(b"0SAF0"))  # close() returns the pump to Basic mode, after the last beat
    assert closing >= 3 and all(sent == encode_safe(b"0DIS") for sent in link.sent[:closing])
    assert driver.heartbeat_errors == []


def test_lost_reply_after_purge_is_uncertain(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0"), r("00S"))
    link.add(q("0PUR"), None)
    link.add(q("0"), r("00X"))
    link.add(q("0DIS"), r("00XI0.100W0.000ML"))
    link.add(q("0DIS"), r("00XI0.100W0.000ML"))
    result = pump.purge()
    assert result.outcome is Outcome.UNCERTAIN and result.status.state is PumpState.PURGING  # type: ignore[union-attr]
    assert link.sent.count(q("0PUR")) == 1


class _RandomReplyLink(ScriptedLink):
    """Answers every request with the next of a list of arbitrary byte strings (then silence)."""

    def __init__(self, replies: list[bytes]) -> None:
        super().__init__()
        self.replies = list(replies)

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))
        if self.replies:
            self.rx += self.replies.pop(0)


_NOISE = st.lists(
    st.one_of(st.binary(max_size=20), st.sampled_from([r("00S"), r("00A?R"), r("00I?COM"), r("00S41.67UH"),
                                                       r("01S"), r("00SI1.000W0.000ML"), b"\x02", b"\x03"])),
    max_size=10,
)


@given(_NOISE, st.sampled_from(["read_status", "read_dispensed", "identify", "set_rate", "start", "stop"]))
def test_arbitrary_replies_only_ever_raise_typed_hal_errors(replies: list[bytes], call: str) -> None:
    link = ScriptedLink(connect_script())
    driver = Ne1000Driver(link)
    driver.connect()
    noisy = _RandomReplyLink(replies)
    driver._link = noisy  # swap in the noise after a clean connect
    args = (41_667,) if call == "set_rate" else ()
    try:
        result = getattr(driver, call)(*args)
    except (CommunicationError, DeviceError):
        return
    if call in ("set_rate", "start", "stop"):
        assert result.outcome in tuple(Outcome)
        run_sent = sum(sent in (q("0RUN"), q("0RAT41.67UH")) for sent in noisy.sent)
        assert run_sent <= 2
        if run_sent == 2:  # sent once more only after a reset alarm swallowed the first
            assert driver.stats.resends_after_reset == 1


def test_alarm_reply_with_data_to_a_query_is_used_and_recorded(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0VER"), r("00A?SNE1000V3.928"))
    assert pump.identify().model == "NE1000"
    assert [e.alarm for e in pump.pending_alarms()][-1] is PumpAlarm.STALL


def test_alarm_reply_with_foreign_data_to_a_query_is_asked_again(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0VER"), r("00A?S0.21MM"))
    link.add(q("0VER"), r("00SNE1000V3.928"))
    assert pump.identify().firmware == "V3.928"


class _BabblingLink(ScriptedLink):
    """A device that never stops talking (say, a streaming balance on the pump's port)."""

    def read(self, size: int = 1) -> bytes:
        return b"ST,GS,+0001.234 g\r\n"[:max(size, 1)]

    @property
    def in_waiting(self) -> int:
        return 4

    def write(self, data: bytes) -> None:
        self.sent.append(bytes(data))


def test_a_babbling_line_is_a_communication_error_not_a_hang() -> None:
    driver = Ne1000Driver(_BabblingLink(), read_retries=0)
    with pytest.raises(CommunicationError):
        driver.connect()
