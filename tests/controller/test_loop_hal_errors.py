"""Fail operational: no HAL error escapes the control loop (issue #4).

Each driver method the loop uses is made to raise each :class:`~cython_ext.errors.HalError`
subclass for a while; meanwhile the loop polls, a clinician titrates and a patient
asks for a bolus. Nothing may escape, the loop must keep polling, each error must
take its fault reaction with its alarm, and once the pump behaves again therapy
must be delivering.
"""

from __future__ import annotations

from typing import Any

import pytest

from controller.assembly import ControllerSettings
from controller.commands import fault_for_hal_error, is_link_error
from controller.faults import FaultCode, Reaction, reaction_for
from controller.loop import Mode
from cython_ext.errors import (
    CapabilityError,
    CommunicationError,
    ConnectError,
    DeviceError,
    HalError,
    HalUnavailableError,
    LinkTimeoutError,
    UncertainDeliveryError,
)
from hal.pump import PumpState
from tests.controller.conftest import MS_PER_H, MS_PER_MIN

HAL_ERRORS = (HalError, HalUnavailableError, ConnectError, CommunicationError, LinkTimeoutError, DeviceError,
              CapabilityError, UncertainDeliveryError)

#: Every driver method the loop calls, and whether it changes delivery.
METHODS = {
    "heartbeat": False,
    "read_status": False,
    "read_dispensed": False,
    "set_rate": True,
    "pause": True,
    "stage_program": True,
    "commit_program": True,
    "stop": True,
    "clear_dispensed": False,
    "acknowledge_alarm": False,
    "capabilities": False,
    "pending_alarms": False,
}


class _Raiser:
    """Replaces one pump method: raises ``error`` while ``active``, counting the raises."""

    def __init__(self, pump: Any, method: str, error: type[HalError]) -> None:
        self.pump, self.method, self.error = pump, method, error
        self.original = getattr(pump, method)
        self.active = True
        self.raised = 0
        setattr(pump, method, self)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.active:
            self.raised += 1
            raise self.error(f"injected on {self.method}")
        return self.original(*args, **kwargs)


def test_every_hal_error_maps_to_a_continue_reaction() -> None:
    for error in HAL_ERRORS:
        for delivery in (False, True):
            fault = fault_for_hal_error(error("x"), delivery_command=delivery)
            assert isinstance(fault, FaultCode)
            assert reaction_for(fault).reaction is Reaction.CONTINUE  # a HAL error never stops delivery
    assert fault_for_hal_error(DeviceError("x"), delivery_command=True) is FaultCode.PUMP_PROGRAM_REJECTED
    assert fault_for_hal_error(DeviceError("x")) is FaultCode.COMMS_TIMEOUT
    assert fault_for_hal_error(UncertainDeliveryError("x"), delivery_command=True) is FaultCode.UNCERTAIN_DELIVERY


@pytest.mark.parametrize("error", HAL_ERRORS, ids=lambda e: e.__name__)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_hal_error_never_escapes_the_loop(make_rig: Any, method: str, error: type[HalError]) -> None:
    # The counter is cleared often, so it is cleared while the error is injected.
    rig = make_rig(settings=ControllerSettings(poll_interval_ms=30 * MS_PER_MIN, counter_clear_above_nl=50_000))
    assert rig.therapy.implant(500, 20_000_000, dose_ng_per_day=100_000).allowed
    rig.advance(24 * MS_PER_H)
    rig.therapy.configure_patient_bolus(25_000, 10 * MS_PER_MIN)
    if method in ("stop", "commit_program", "stage_program", "pause", "acknowledge_alarm"):
        rig.pump.inject_stall()  # a STOP reaction, an acknowledgement and a restart are then due
    raiser = _Raiser(rig.pump, method, error)
    rig.advance(MS_PER_H)
    rig.therapy.titrate(110_000)
    rig.therapy.patient_bolus_request()
    rig.advance(MS_PER_H)
    rig.therapy.acknowledge_alarms()
    rig.advance(MS_PER_H)
    assert raiser.raised, f"{method} was never called while failing"
    polled_at = rig.loop.last_poll_ms
    assert rig.loop.now_ms() - polled_at <= rig.loop.config.poll_interval_ms  # the loop kept polling

    raised = rig.log.raised()
    if not is_link_error(error("x")):
        fault = fault_for_hal_error(error("x"), delivery_command=METHODS[method])
        assert reaction_for(fault).alarm.value in raised, (fault, raised)
    elif method in ("read_status", "read_dispensed"):
        assert "comms_degraded" in raised  # the pump could not be read: link alarm, programme kept
    elif method in ("set_rate", "pause", "stage_program", "commit_program"):
        assert raised & {"therapy_status_unknown", "pump_program_rejected"}

    raiser.active = False
    rig.advance(2 * MS_PER_H)
    rig.therapy.acknowledge_alarms()
    rig.advance(2 * MS_PER_H)
    assert rig.loop.mode in (Mode.RUNNING, Mode.MINIMUM_RATE), rig.loop.mode
    assert rig.pump.state is PumpState.INFUSING and rig.pump.rate_nl_per_h > 0  # fail operational
    assert rig.loop.committed_rate_nl_per_h == rig.pump.rate_nl_per_h


@pytest.mark.parametrize("error", HAL_ERRORS, ids=lambda e: e.__name__)
def test_hal_error_during_restart_recovery_never_escapes(running: Any, error: type[HalError]) -> None:
    running.pump.stop()  # recovery will find the pump stopped and must restart it
    raisers = [_Raiser(running.pump, m, error) for m in ("read_status", "set_rate")]
    again = running.restart()  # recover() runs here: nothing may escape
    assert raisers[0].raised  # the pump could not be read at restart
    for raiser in raisers:
        raiser.active = False
    again.advance(2 * MS_PER_H)
    assert again.loop.mode in (Mode.RUNNING, Mode.MINIMUM_RATE)
    assert again.pump.state is PumpState.INFUSING and again.pump.rate_nl_per_h > 0
