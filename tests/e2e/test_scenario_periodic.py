"""Programmes with periodic boluses: the kernel authorises basal and boluses as one programme.

The loop wakes at each periodic bolus start and end and commands the programme's rate
there; the bolus part is recorded in the ledger as BOLUS_PERIODIC and the 24 h total counts
everything; a restart keeps the programme; a programme over the 24 h cap is refused whole.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.accounting import periodic_extra_nl_per_h
from controller.loop import Mode
from cython_ext.errors import ConfigError
from programme_rig import MS_PER_DAY, MS_PER_H, MS_PER_MIN, ProgrammeController
from programme_rig import assert_delivers_programme_daily_total, run_shipped

PERIODIC_KIND = 4  # the kernel's DeliveryKind.BOLUS_PERIODIC

#: 200 µg/day at 1000 µg/mL is 8333 nL/h (rounded down).
BASAL_STEPS = [(0, 200_000)]
BASAL_NL_PER_H = 8333
#: 25 µg over 30 min at 08:00 and at 20:00: 25 000 nL in half an hour is 50 000 nL/h on top of the basal.
BOLUSES = [(8 * MS_PER_H, 30 * MS_PER_MIN, 50_000), (20 * MS_PER_H, 30 * MS_PER_MIN, 50_000)]


class _Controller(ProgrammeController):
    """The shared programme controller, implanting the basal and periodic boluses of this module by default."""

    def implant(self, steps: list[tuple[int, int]] = BASAL_STEPS,
                boluses: list[tuple[int, int, int]] = BOLUSES) -> Any:
        return self.therapy.implant(1000, 40_000_000, flex_steps=steps, periodic_boluses=boluses, catheter="drug")


@pytest.fixture
def controller() -> Any:
    c = _Controller()
    yield c
    c.close()


def _day_volume_nl(basal_nl_per_h: int, boluses: list[tuple[int, int, int]]) -> int:
    return basal_nl_per_h * 24 + sum(duration * rate // MS_PER_H for _, duration, rate in boluses)


# -- delivery -----------------------------------------------------------------------------------------


def test_a_day_delivers_the_programme_daily_total_with_the_boluses_as_periodic(controller: Any) -> None:
    result = controller.implant()
    assert result.allowed, result
    programme = controller.loop.programme
    assert programme is not None and len(programme.periodic_boluses) == 2
    assert controller.therapy.prescribed_dose_ng_per_day == programme.daily_total_ng()
    start = controller.counter_nl()
    controller.loop.run_until(3 * MS_PER_DAY)  # the catheter dead volume fills on the first day
    delivered_nl = controller.counter_nl() - start
    assert abs(delivered_nl - 3 * programme.daily_total_nl()) <= 6
    assert programme.daily_total_nl() == _day_volume_nl(BASAL_NL_PER_H, BOLUSES)
    now = controller.loop.now_ms()
    ledger = controller.gate.kernel.ledger
    # The last 24 h at the tip: the programme's whole day, its boluses recorded as periodic.
    assert abs(controller.gate.total_24h_ng(now) - programme.daily_total_ng()) <= programme.daily_total_ng() // 100
    assert abs(ledger.delivered_24h_pg(now, PERIODIC_KIND) - 50_000_000) <= 500_000  # 50 µg, pg
    assert controller.loop.delivered_pg_by_kind.get("periodic", 0) > 0
    assert controller.loop.mode is Mode.RUNNING


def test_rate_during_each_bolus_window_is_basal_plus_bolus(controller: Any) -> None:
    assert controller.implant().allowed
    for start, duration, extra in BOLUSES:
        controller.loop.run_until(start - MS_PER_MIN)
        assert controller.pump.rate_nl_per_h == BASAL_NL_PER_H
        controller.loop.run_until(start + MS_PER_MIN)
        assert controller.pump.rate_nl_per_h == BASAL_NL_PER_H + extra
        controller.loop.run_until(start + duration - MS_PER_MIN)
        assert controller.pump.rate_nl_per_h == BASAL_NL_PER_H + extra
        controller.loop.run_until(start + duration + MS_PER_MIN)
        assert controller.pump.rate_nl_per_h == BASAL_NL_PER_H


_bolus_sets = st.lists(
    st.tuples(st.integers(0, 11), st.sampled_from([10, 20, 30, 45, 60]), st.integers(1_000, 50_000)),
    min_size=1, max_size=4, unique_by=lambda b: b[0],
)


@settings(max_examples=15)
@given(_bolus_sets)
def test_any_allowed_periodic_programme_runs_each_window_at_its_rate_and_its_daily_volume(
        raw: list[tuple[int, int, int]]) -> None:
    """Starts on even hours and at most an hour each: windows never overlap nor touch."""
    boluses = sorted((2 * hour * MS_PER_H, minutes * MS_PER_MIN, rate) for hour, minutes, rate in raw)
    c = _Controller(max_dose_ng_per_day=1_000_000)
    try:
        result = c.implant(boluses=boluses)
        assert result.allowed, result
        start_counter = c.counter_nl()
        for start, duration, extra in boluses:
            c.loop.run_until(start + duration // 2)
            assert c.pump.rate_nl_per_h == BASAL_NL_PER_H + extra
            assert periodic_extra_nl_per_h(c.loop.programme, c.loop.now_ms()) == extra
            c.loop.run_until(start + duration)
            assert c.pump.rate_nl_per_h == BASAL_NL_PER_H
        c.loop.run_until(MS_PER_DAY)
        delivered_nl = c.counter_nl() - start_counter
        assert abs(delivered_nl - _day_volume_nl(BASAL_NL_PER_H, boluses)) <= 2 * len(boluses) + 2
    finally:
        c.close()


# -- restart ----------------------------------------------------------------------------------------------


def test_restart_mid_bolus_keeps_the_programme_and_never_double_delivers(controller: Any) -> None:
    assert controller.implant().allowed
    start = controller.counter_nl()
    controller.loop.run_until(8 * MS_PER_H + 10 * MS_PER_MIN)  # 10 minutes into the 08:00 bolus
    assert controller.pump.rate_nl_per_h == BASAL_NL_PER_H + 50_000
    again = _Controller(after=controller)
    assert again.loop.programme is not None
    assert tuple(map(tuple, again.loop.programme.periodic_boluses)) == tuple(BOLUSES)
    assert again.gate.kernel.programme.periodic_boluses == controller.gate.kernel.programme.periodic_boluses
    assert controller.pump.rate_nl_per_h == BASAL_NL_PER_H + 50_000  # the bolus goes on, it does not restart
    again.loop.run_until(8 * MS_PER_H + 31 * MS_PER_MIN)
    assert controller.pump.rate_nl_per_h == BASAL_NL_PER_H
    again.loop.run_until(20 * MS_PER_H + 15 * MS_PER_MIN)
    assert controller.pump.rate_nl_per_h == BASAL_NL_PER_H + 50_000
    again.loop.run_until(MS_PER_DAY)
    delivered_nl = controller.counter_nl() - start
    assert abs(delivered_nl - _day_volume_nl(BASAL_NL_PER_H, BOLUSES)) <= 6
    again.loop.run_until(3 * MS_PER_DAY)
    now = again.loop.now_ms()
    daily_ng = again.loop.programme.daily_total_ng()
    assert abs(again.gate.total_24h_ng(now) - daily_ng) <= daily_ng // 100
    again.close()


# -- refusals -----------------------------------------------------------------------------------------


def test_a_programme_over_the_24h_cap_is_refused_whole(controller: Any) -> None:
    steps = [(0, 300_000)]  # 300 µg/day basal alone is inside the 400 µg/day cap
    boluses = [(8 * MS_PER_H, 30 * MS_PER_MIN, 150_000), (20 * MS_PER_H, 30 * MS_PER_MIN, 150_000)]  # +150 µg
    result = controller.implant(steps, boluses)
    assert not result.allowed
    assert controller.loop.mode is Mode.IDLE and controller.loop.programme is None
    assert controller.gate.kernel.programme is None
    assert controller.pump.rate_nl_per_h == 0
    assert controller.gate.total_24h_ng(controller.loop.now_ms()) == 0
    assert controller.implant(steps, []).allowed  # the same basal without the boluses is allowed


def test_periodic_boluses_without_a_basal_programme_are_rejected_and_nothing_changes(controller: Any) -> None:
    with pytest.raises(ConfigError) as info:
        controller.therapy.implant(1000, 40_000_000, dose_ng_per_day=200_000, periodic_boluses=BOLUSES, catheter="drug")
    assert info.value.field == "periodic_boluses"
    assert controller.loop.mode is Mode.IDLE and controller.pump.rate_nl_per_h == 0


def test_a_bad_periodic_bolus_is_rejected_and_nothing_changes(controller: Any) -> None:
    with pytest.raises(ConfigError):
        controller.implant(boluses=[(8 * MS_PER_H, 0, 50_000)])  # no duration
    assert controller.loop.mode is Mode.IDLE and controller.loop.programme is None
    assert controller.pump.rate_nl_per_h == 0


# -- the shipped periodic scenario ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def periodic_run() -> Any:
    return run_shipped("periodic")


def test_periodic_scenario_delivers_the_programme_daily_total(periodic_run: Any) -> None:
    assert_delivers_programme_daily_total(*periodic_run, kinds={"basal", "periodic"})
    assert periodic_run[1].delivered_by_kind_ug.get("periodic", 0) > 0


def test_reservoir_forecast_uses_the_programme_day_not_the_bolus_rate(periodic_run: Any) -> None:
    """Regression: extrapolating a periodic bolus's rate to a whole day raised a false low-reservoir alarm."""
    _, record = periodic_run
    assert record.reservoir["days_to_low_alarm"] > 30
    assert "reservoir_low" not in {a.code for a in record.alarms if a.event == "raise"}
