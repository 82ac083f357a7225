"""Mechanics and event timing of the simulated NE-1000."""

from __future__ import annotations

import threading

import pytest
from sim_helpers import body, send

from cython_ext.errors import ConfigError
from hal.newera.framing import encode_safe
from sim.clock import VirtualClock
from sim.newera import Mechanics, Ne1000
from sim.newera.mechanics import INFUSE, NS_PER_H, WITHDRAW


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"syringe_volume_nl": 0}, "syringe_volume_nl"),
        ({"syringe_volume_nl": 1000, "fill_nl": 1001}, "fill_nl"),
        ({"syringe_volume_nl": 1000, "bias_pct": float("nan")}, "bias_pct"),
        ({"syringe_volume_nl": 1000, "noise_pct": 25.0}, "noise_pct"),
        ({"syringe_volume_nl": 1000, "noise_chunk_nl": 0}, "noise_chunk_nl"),
    ],
)
def test_bad_mechanics_settings(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as excinfo:
        Mechanics(VirtualClock(), **kwargs)  # type: ignore[arg-type]
    assert excinfo.value.field == field


def test_withdrawal_takes_liquid_back_and_fills_the_syringe() -> None:
    clock = VirtualClock()
    mech = Mechanics(clock, syringe_volume_nl=10_000, fill_nl=5_000)
    mech.set_motion(3_600_000, INFUSE)  # 1 uL/s
    mech.integrate_to(2 * 10**9)
    mech.set_motion(3_600_000, WITHDRAW)
    mech.integrate_to(3 * 10**9)
    assert mech.actual_delivered_nl() == 1000
    assert mech.contents_nl() == 4000
    assert mech.travel_left_scaled() == 6000 * NS_PER_H
    assert mech.plunger_travel_mm(diameter_mm=10.0) == pytest.approx(6.0 / (3.14159265 * 25.0), rel=1e-6)


def test_next_poll_reports_the_next_event(clock: VirtualClock) -> None:
    pump = Ne1000(clock, power_on_alarm=False, safe_timeout_s=0)
    assert pump.next_poll_ns() is None
    send(pump, "0RAT3600UH", "0VOL2", "0RUN")
    assert pump.next_poll_ns() == 2 * 10**9, "2 uL at 1 uL/s"
    assert pump.receive(b"0SAF1\r") == encode_safe(b"00I")
    assert pump.next_poll_ns() == 1 * 10**9, "the watchdog comes first"


def test_refill_only_while_still(clock: VirtualClock) -> None:
    pump = Ne1000(clock, power_on_alarm=False)
    pump.refill("1.25")
    assert pump.mechanics.contents_nl() == 1_250_000
    with pytest.raises(ConfigError):
        pump.refill("4")
    send(pump, "0RUN")
    with pytest.raises(ConfigError):
        pump.refill("1")


def test_balance_reads_from_another_thread_see_consistent_volume(clock: VirtualClock) -> None:
    pump = Ne1000(clock, power_on_alarm=False, noise_pct=2.0, seed=5)
    send(pump, "0RAT3600UH", "0RUN")
    readings: list[int] = []
    done = threading.Event()

    def balance() -> None:
        while not done.is_set():
            readings.append(pump.mechanics.actual_delivered_nl())

    reader = threading.Thread(target=balance)
    reader.start()
    try:
        for _ in range(200):
            clock.advance(0.5)
            send(pump, "0")
    finally:
        done.set()
        reader.join()
    assert readings == sorted(readings), "volume never goes backwards while infusing"


def test_motor_steps_make_delivery_pulsatile(clock: VirtualClock) -> None:
    pump = Ne1000(clock, power_on_alarm=False, dose_step_nl=50)
    body(pump, "0RAT36UH")  # 10 nL/s: one 50 nL step every 5 s
    send(pump, "0RUN")
    seen = []
    for _ in range(12):
        clock.advance(1)
        seen.append(pump.mechanics.actual_delivered_nl())
    assert seen == [0, 0, 0, 0, 50, 50, 50, 50, 50, 100, 100, 100]
    assert pump.dispensed_nl() == (120, 0), "the pump's own counter is not stepped"
    with pytest.raises(ConfigError):
        Ne1000(clock, dose_step_nl=-1)
