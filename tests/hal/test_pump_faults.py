"""Fault matrix: each injected wire or device fault ends in a correct, typed outcome.

Faults come from :mod:`sim.faults` (the same spec strings as ``itb sim serve
--fault``). The invariant checked throughout: a delivery command is executed
by the pump at most once per call, whatever happens to its reply.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cython_ext.errors import CommunicationError, HalError
from hal.pump import CommandResult, Direction, Outcome, PumpAlarm, PumpState
from pump_backends import Backend, open_backend


def _executed(backend: Backend, prefix: str) -> int:
    assert backend.device is not None
    return sum(command.startswith(prefix) for _, command in backend.device.executed)


@pytest.mark.parametrize("link", ["inprocess", "pty"])
def test_lost_reply_after_run_is_uncertain_and_reconciling_never_runs_twice(link: str) -> None:
    with open_backend(link, faults=("lost-reply:match=RUN",), timeout_s=0.2) as backend:
        driver = backend.driver
        driver.set_rate(1_000_000)
        result = driver.start()
        assert result.outcome is Outcome.UNCERTAIN
        assert result.status is not None and result.status.state is PumpState.INFUSING
        assert result.dispensed is not None
        # Reconciling: the caller reads state and starts again only if needed; the driver refuses a second RUN.
        again = driver.start()
        assert again.outcome is Outcome.NOT_APPLIED and "already" in again.detail
        assert _executed(backend, "RUN") == 1


@pytest.mark.parametrize(("fault", "command"), [
    ("lost-reply:match=RAT\\d", "set_rate"),
    ("drop:match=RAT\\d", "set_rate"),
    ("lost-reply:match=VOL\\d", "set_target_volume"),
    ("lost-reply:match=DIR[IW]", "set_direction"),
])
def test_lost_reply_after_a_setting_is_resolved_by_read_back(fault: str, command: str) -> None:
    from hal.pump import Direction

    args = {"set_rate": (2_000_000,), "set_target_volume": (50_000,), "set_direction": (Direction.WITHDRAW,)}
    with open_backend("inprocess", faults=(fault,)) as backend:
        result = getattr(backend.driver, command)(*args[command])
        assert result.outcome is Outcome.APPLIED and "reply lost" in result.detail
        assert _executed(backend, {"set_rate": "RAT2", "set_target_volume": "VOL0.05",
                                   "set_direction": "DIRWDR"}[command]) == 1


def test_lost_reply_after_stop_is_resolved_by_status() -> None:
    with open_backend("inprocess", faults=("lost-reply:match=STP",)) as backend:
        backend.driver.set_rate(1_000_000)
        backend.driver.start()
        result = backend.driver.stop()
        assert result.applied and backend.device.state == "S"  # type: ignore[union-attr]


def test_lost_reply_after_dia_is_resolved_by_read_back() -> None:
    with open_backend("inprocess", faults=("lost-reply:match=DIA\\d",)) as backend:
        caps = backend.driver.configure(syringe_diameter_mm="26.59")
        assert caps.volume_resolution_nl == 1000
        assert backend.device.diameter_milli == 26_590  # type: ignore[union-attr]


@pytest.mark.parametrize("fault", ["junk:bytes=7,match=RAT", "dup:match=RAT", "dup:match=^0$"])
def test_junk_and_duplicated_replies_are_discarded(fault: str) -> None:
    with open_backend("inprocess", faults=(fault,)) as backend:
        assert backend.driver.set_rate(2_000_000).applied
        assert backend.driver.read_rate_nl_per_h() == 2_000_000
        assert backend.driver.read_status().state is PumpState.STOPPED
        assert _executed(backend, "RAT2") == 1


def test_delayed_reply_arrives_late_and_never_answers_the_next_request() -> None:
    with open_backend("inprocess", faults=("delay:s=2,match=DIS",)) as backend:
        driver = backend.driver
        first = driver.read_dispensed()  # first DIS reply held back; the bounded retry answers
        assert first.infused_nl == 0
        backend.wait(3)  # the held-back reply now arrives, unasked
        assert driver.read_rate_nl_per_h() == 10_000  # the late DIS reply must not answer RAT
        assert driver.stats.timeouts >= 1


def test_corrupted_safe_mode_replies_fail_the_crc_and_queries_retry() -> None:
    with open_backend("inprocess", faults=("corrupt:match=DIS,count=2",), safe_mode_timeout_s=30) as backend:
        assert backend.driver.read_dispensed().infused_nl == 0
        assert backend.driver.stats.frame_errors + backend.driver.stats.timeouts >= 1


def test_corrupted_reply_to_a_setting_never_leads_to_a_second_send() -> None:
    with open_backend("inprocess", faults=("corrupt:match=RAT\\d",), safe_mode_timeout_s=30) as backend:
        result = backend.driver.set_rate(2_000_000)
        assert result.outcome is Outcome.APPLIED
        assert _executed(backend, "RAT2") == 1


def test_random_byte_loss_in_basic_mode_never_double_executes() -> None:
    with open_backend("inprocess", faults=("drop:p=0.02",)) as backend:
        driver = backend.driver
        outcomes = []
        for rate in range(1_000_000, 1_020_000, 1_000):
            try:
                outcomes.append(driver.set_rate(rate).outcome)
            except CommunicationError:
                outcomes.append(None)
        assert Outcome.APPLIED in outcomes
        for rate in range(1_000, 1_020):
            assert _executed(backend, f"RAT{rate}UH") <= 1


def test_disconnect_during_run_is_uncertain_without_readings() -> None:
    with open_backend("pty", faults=("disconnect:match=RUN",), timeout_s=0.2) as backend:
        backend.driver.set_rate(1_000_000)
        result = backend.driver.start()
        assert result.outcome is Outcome.UNCERTAIN and result.status is None
        with pytest.raises(CommunicationError):
            backend.driver.read_status()


def test_stall_fault_on_run_surfaces_as_a_stall_alarm() -> None:
    with open_backend("inprocess", faults=("stall:match=RUN",)) as backend:
        backend.driver.set_rate(1_000_000)
        backend.driver.start()
        status = backend.driver.read_status()
        assert status.alarm is PumpAlarm.STALL and status.state is PumpState.STOPPED


def test_reset_between_read_and_set_swallows_the_set_which_is_sent_again_once() -> None:
    # The second RAT query (the first is at connect) is followed by a power cycle: the next packet, the set, gets A?R.
    with open_backend("inprocess", faults=("power-cycle:match=^0RAT$,after=2",)) as backend:
        result = backend.driver.set_rate(2_000_000)
        assert result.applied and "swallowed" in result.detail
        assert backend.driver.stats.resends_after_reset == 1
        assert _executed(backend, "RAT2") == 1


def test_power_cycle_at_a_time_is_seen_as_a_reset_alarm() -> None:
    with open_backend("inprocess", faults=("power-cycle:at=10",)) as backend:
        backend.driver.set_rate(1_000_000)
        backend.driver.start()
        backend.wait(11)
        status = backend.driver.read_status()
        assert status.alarm is PumpAlarm.RESET and status.state is PumpState.STOPPED


def test_safe_mode_watchdog_fires_when_heartbeats_are_lost_on_the_way_in() -> None:
    with open_backend("inprocess", safe_mode_timeout_s=5) as backend:
        driver = backend.driver
        driver.set_rate(1_000_000)
        driver.start()
        backend.wait(6)  # no heartbeat: the pump stops itself and says so unprompted
        alarms = driver.pending_alarms()
        status = driver.read_status()
        assert status.alarm is PumpAlarm.COMMS_TIMEOUT
        assert any(e.alarm is PumpAlarm.COMMS_TIMEOUT for e in alarms + driver.pending_alarms())


@pytest.mark.parametrize("fault", ["lost-reply:match=SAF10", "lost-reply:match=SAF0$"])
def test_lost_reply_to_a_mode_switch_is_resolved_by_probing_both_framings(fault: str) -> None:
    with open_backend("inprocess", faults=(fault,)) as backend:
        driver, device = backend.driver, backend.device
        assert device is not None
        driver.enter_safe_mode(10)
        assert driver.safe_mode and device.safe_mode
        driver.exit_safe_mode()
        assert not driver.safe_mode and not device.safe_mode


# -- the full matrix: every reply fault on every delivery command ---------------------------

_COMMANDS = {
    # name: (call, match regex for the command's own packet, device-state reader)
    "set_rate": (lambda d: d.set_rate(2_000_000), r"^0RAT\d", lambda dev: dev.phases[0].rate_nl_per_h),
    "set_target_volume": (lambda d: d.set_target_volume(50_000), r"^0VOL\d", lambda dev: dev.phases[0].volume_milli),
    "set_direction": (lambda d: d.set_direction(Direction.WITHDRAW), r"^0DIR[IW]", lambda dev: dev.phases[0].direction),
    "configure": (lambda d: d.configure(syringe_diameter_mm="26.59"), r"^0DIA\d", lambda dev: dev.diameter_milli),
    "start": (lambda d: d.start(), r"^0RUN", lambda dev: dev.state),
    "stop": (lambda d: d.stop(), r"^0STP", lambda dev: dev.state),
}
_REPLY_FAULTS = ("drop", "dup", "corrupt", "junk:bytes=4", "delay:s=2", "split:s=2", "lost-reply")


@pytest.mark.parametrize("safe", [False, True], ids=["basic", "safe"])
@pytest.mark.parametrize("fault", _REPLY_FAULTS)
@pytest.mark.parametrize("command", sorted(_COMMANDS))
def test_fault_matrix(command: str, fault: str, safe: bool) -> None:
    call, match, read_state = _COMMANDS[command]
    spec = f"{fault}{',' if ':' in fault else ':'}match={match}"
    with open_backend("inprocess", faults=(spec,), safe_mode_timeout_s=30 if safe else None) as backend:
        device, driver = backend.device, backend.driver
        assert device is not None
        if command == "stop":
            driver.set_rate(1_000_000)
            driver.start()
        before = read_state(device)
        executed_before = len(device.executed)
        try:
            result = call(driver)
        except HalError as exc:  # a typed outcome: nothing else may escape
            result = exc
        own = [c for _, c in list(device.executed)[executed_before:] if re.search(match, "0" + c)]
        assert len(own) <= (2 if command == "stop" else 1), f"{command} executed {own}"
        backend.wait(3)  # let held-back bytes arrive late; the next exchange must not be fooled by them
        assert driver.read_status().state is not None
        if isinstance(result, CommandResult) and command not in ("start", "stop"):
            if result.outcome is Outcome.APPLIED:
                assert read_state(device) != before
            elif result.outcome is Outcome.NOT_APPLIED:
                assert read_state(device) == before
        elif isinstance(result, CommandResult) and result.outcome is Outcome.APPLIED:
            assert read_state(device) == ("I" if command == "start" else "S")
        elif command == "configure" and not isinstance(result, HalError):
            assert device.diameter_milli == 26_590  # configure returned, so the diameter is verified


def test_trace_explains_a_resend_after_reset(tmp_path: Path) -> None:
    trace = tmp_path / "pump.trace"
    with open_backend("inprocess", faults=("power-cycle:match=^0RAT$,after=2",), trace_path=trace) as backend:
        assert backend.driver.set_rate(2_000_000).applied
    assert "A?R swallowed b'0RAT2000UH'" in trace.read_text(encoding="utf-8")
