"""The NE-1000 heartbeat: one ``DIS`` exchange gives the status, and its counters start the next counter read.

Every reply carries the pump's status, so a poll (heartbeat, then :meth:`read_dispensed`) needs one
frame where it took two. The scripts below are the oracle: they hold exactly the bytes the manual's
exchanges need, and a frame more or less fails them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hal.newera.driver import Ne1000Driver
from hal.pump import DispensedVolume, PumpAlarm, PumpState
from hal_links import ScriptedLink
from sim.clock import VirtualClock
from test_newera_driver_protocol import connect_script, q, r


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def link() -> ScriptedLink:
    return ScriptedLink(connect_script(state="I"))


@pytest.fixture
def pump(link: ScriptedLink, clock: VirtualClock) -> Iterator[Ne1000Driver]:
    driver = Ne1000Driver(link, clock=clock)
    driver.connect()
    assert not link.script
    yield driver
    driver.close()
    link.assert_done()


def test_a_poll_is_one_dis_once_the_counter_has_a_baseline(pump: Ne1000Driver, link: ScriptedLink,
                                                           clock: VirtualClock) -> None:
    link.add(q("0DIS"), r("00SI1.000W0.000ML"))
    link.add(q("0DIS"), r("00SI1.000W0.000ML"))  # the first reading after connecting is read twice
    assert pump.heartbeat().state is PumpState.STOPPED
    assert pump.read_dispensed() == DispensedVolume(1_000_000, 0)
    assert not link.script
    clock.advance(3600)
    link.add(q("0DIS"), r("00SI1.000W0.000ML"))  # stopped, unchanged: predicted, so read once
    assert pump.heartbeat().state is PumpState.STOPPED
    assert pump.read_dispensed() == DispensedVolume(1_000_000, 0)


def test_the_heartbeat_acknowledges_a_latched_alarm_and_reports_it(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0DIS"), r("00A?S"))  # the alarm reply swallows the query: asked again
    link.add(q("0DIS"), r("00SI1.000W0.000ML"))
    status = pump.heartbeat()
    assert status.state is PumpState.STOPPED and status.alarm is PumpAlarm.STALL
    (event,) = [e for e in pump.pending_alarms() if e.alarm is PumpAlarm.STALL]
    assert event.acknowledged and event.command == "0DIS"
    link.add(q("0DIS"), r("00SI1.000W0.000ML"))
    assert pump.read_dispensed() == DispensedVolume(1_000_000, 0)


def test_the_heartbeats_counters_are_not_used_after_time_passed(pump: Ne1000Driver, link: ScriptedLink,
                                                                 clock: VirtualClock) -> None:
    link.add(q("0DIS"), r("00II1.000W0.000ML"))
    pump.heartbeat()
    clock.advance(1)
    link.add(q("0DIS"), r("00II1.000W0.000ML"))
    link.add(q("0DIS"), r("00II1.000W0.000ML"))
    assert pump.read_dispensed() == DispensedVolume(1_000_000, 0)


def test_the_heartbeats_counters_are_not_used_after_another_exchange(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0DIS"), r("00SI1.000W0.000ML"))
    pump.heartbeat()
    link.add(q("0"), r("00S"))
    pump.read_status()
    link.add(q("0DIS"), r("00SI1.000W0.000ML"))  # both read afresh: the first after connecting is read twice
    link.add(q("0DIS"), r("00SI1.000W0.000ML"))
    assert pump.read_dispensed() == DispensedVolume(1_000_000, 0)


def test_the_heartbeats_counters_are_used_once(pump: Ne1000Driver, link: ScriptedLink) -> None:
    link.add(q("0DIS"), r("00SI1.000W0.000ML"))
    link.add(q("0DIS"), r("00SI1.000W0.000ML"))
    pump.heartbeat()
    assert pump.read_dispensed() == DispensedVolume(1_000_000, 0)
    link.add(q("0DIS"), r("00SI1.000W0.000ML"))  # no heartbeat before this one: it reads for itself
    assert pump.read_dispensed() == DispensedVolume(1_000_000, 0)
