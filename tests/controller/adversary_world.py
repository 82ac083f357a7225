"""The physical world around a controller under test: time, the pump's mechanism, the catheter tip.

The clinical adversary (:mod:`tests.controller.test_clinical_adversary`) judges the controller by
what the patient physically receives, never by the controller's ledger or accounting. This module
is that physics, written apart from the controller:

* :class:`HostClock`: the controller host's clock over the one physical time of the world. A
  reboot gives it a new monotonic origin; its real-time clock can jump either way.
* :class:`WitnessedPump`: the interface-level fake pump, which also writes down, in physical time,
  every change of what its mechanism does (the rate it pushes, or 0 when it stands still).
* :class:`TipRecord`: the volume the mechanism really pushed, through an independent catheter
  (:class:`sim.catheter.PhysicalCatheter`), as drug leaving the tip per sampled stretch of time.

Units: times ms (physical), volumes nL, rates nL/h, concentrations µg/mL, drug pg.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from datetime import datetime, timedelta

from hal.clock import Clock
from hal.pump import CommandResult, PumpState
from sim.catheter import PhysicalCatheter
from sim.clock import VirtualClock
from sim.fake_pump import FakePump

NS_PER_MS = 1_000_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000


def world_ms(world: VirtualClock) -> int:
    """Physical time, ms."""
    return world.monotonic_ns() // NS_PER_MS


class HostClock(Clock):
    """The controller host's clock: physical time seen from a monotonic origin, and a settable RTC.

    :param world: the physical time (the pump's clock).
    :param origin_ns: physical time at which this host's monotonic clock read 0 (its boot), ns.
    :param wall_offset: how far the host's real-time clock is from true UTC.
    """

    def __init__(self, world: VirtualClock, *, origin_ns: int, wall_offset: timedelta = timedelta(0)) -> None:
        self.world = world
        self.origin_ns = origin_ns
        self.wall_offset = wall_offset

    def monotonic_ns(self) -> int:
        """Time since this host booted, ns."""
        return self.world.monotonic_ns() - self.origin_ns

    def utc_now(self) -> datetime:
        """What the host's real-time clock says (true UTC plus its offset)."""
        return self.world.utc_now() + self.wall_offset

    def sleep(self, seconds: float) -> None:
        """Virtual time: physical time moves on."""
        self.world.sleep(seconds)

    def rebooted(self, *, wall_jump: timedelta = timedelta(0)) -> HostClock:
        """The same host after a reboot now: monotonic time starts again from 0, the RTC jumps by ``wall_jump``."""
        return HostClock(self.world, origin_ns=self.world.monotonic_ns(), wall_offset=self.wall_offset + wall_jump)


class WitnessedPump(FakePump):
    """:class:`sim.fake_pump.FakePump` whose mechanism's every change is written down in physical time.

    :ivar rate_log: ``(physical ms, nL/h pushed from then on)``: the rate while infusing, 0 while
        standing still; one entry per change.
    """

    def __init__(self, world: VirtualClock, **kwargs: int) -> None:
        super().__init__(world, **kwargs)
        self._world = world
        self.rate_log: list[tuple[int, int]] = [(world_ms(world), 0)]

    def pushing_nl_per_h(self) -> int:
        """What the mechanism pushes now, nL/h (0 when stopped)."""
        return self._rate_nl_per_h if self._state is PumpState.INFUSING else 0

    def witness(self) -> None:
        """Write down the mechanism's state now if it changed."""
        self._integrate()
        rate = self.pushing_nl_per_h()
        if rate != self.rate_log[-1][1]:
            self.rate_log.append((world_ms(self._world), rate))

    def _phase_entered(self, at_ns: int) -> None:
        """The pump's own program moved to its next phase (a bolus phase ended): at that physical time."""
        rate = self.pushing_nl_per_h()
        if rate != self.rate_log[-1][1]:
            self.rate_log.append((at_ns // 1_000_000, rate))

    def _change(self, command: str, value: int | None, action) -> CommandResult:  # type: ignore[no-untyped-def]
        try:
            return super()._change(command, value, action)
        finally:
            self.witness()

    def inject_stall(self) -> None:
        super().inject_stall()
        self.witness()

    def power_cycle(self) -> None:
        super().power_cycle()
        self.witness()


class TipRecord:
    """Drug leaving the catheter tip, from the volume the pump physically pushed.

    :param pump: the witnessed pump.
    :param dead_volume_nl: catheter and pump tubing volume, nL (it holds saline before priming).
    """

    def __init__(self, pump: WitnessedPump, dead_volume_nl: int) -> None:
        self.pump = pump
        self.catheter = PhysicalCatheter(dead_volume_nl, 0)
        self._pushed_nl = pump.actual_delivered_nl
        self._since_ms = world_ms(pump._world)
        #: Start and end of each sampled stretch, ms, in order and back to back.
        self.starts: list[int] = []
        self.ends: list[int] = []
        # Running totals after each stretch: drug pushed at the pump end, and drug that left the tip, pg.
        self._pushed_sum: list[int] = [0]
        self._tip_sum: list[int] = [0]
        self.concentration_ug_per_ml = 0
        #: (position nL, concentration µg/mL): fluid pushed in from that total pushed volume on has it.
        self._fills: list[tuple[int, int]] = [(-dead_volume_nl, 0)]
        #: ``(physical ms, old, new)``: when the fluid leaving the tip changed concentration (a fill's
        #: front reached the tip), in time order.
        self.boundaries: list[tuple[int, int, int]] = []

    def fill(self, concentration_ug_per_ml: int) -> None:
        """The reservoir now holds this drug: fluid entering the catheter from now has it."""
        self.sample()
        self.concentration_ug_per_ml = concentration_ug_per_ml
        self.catheter.change_solution(concentration_ug_per_ml)
        if concentration_ug_per_ml != self._fills[-1][1]:
            self._fills.append((self.catheter.pushed_nl, concentration_ug_per_ml))

    def sample(self) -> None:
        """Close the stretch since the last sample: what was pushed and what left the tip."""
        now = world_ms(self.pump._world)
        pushed = self.pump.actual_delivered_nl
        volume = pushed - self._pushed_nl
        self.pump.witness()
        if now == self._since_ms and volume == 0:
            return
        before = self.catheter.pushed_nl
        tip = self.catheter.push(volume)
        dead = self.catheter.dead_volume_nl
        for (_, old), (position, new) in zip(self._fills, self._fills[1:]):
            if before < position + dead <= before + volume:
                self.boundaries.append((self._front_ms(position + dead - before, self._since_ms, now), old, new))
        self.starts.append(self._since_ms)
        self.ends.append(now)
        self._pushed_sum.append(self._pushed_sum[-1] + volume * self.concentration_ug_per_ml)
        self._tip_sum.append(self._tip_sum[-1] + tip)
        self._pushed_nl, self._since_ms = pushed, now

    def _front_ms(self, volume_nl: int, start_ms: int, end_ms: int) -> int:
        """When, in ``[start_ms, end_ms]``, the mechanism had pushed ``volume_nl`` since ``start_ms`` (from its rate log)."""
        log = self.pump.rate_log
        rate = 0
        for at, r in log:
            if at > start_ms:
                break
            rate = r
        t, left, moving = start_ms, volume_nl, start_ms
        for at, r in [(a, r) for a, r in log if start_ms < a < end_ms] + [(end_ms, 0)]:
            if rate and left * MS_PER_H <= rate * (at - t):
                return t + -(-left * MS_PER_H // rate)
            left -= rate * (at - t) // MS_PER_H
            if rate and at > t:
                moving = at
            t, rate = at, r
        return moving  # short by the rounding of the log's whole milliseconds: when the mechanism last moved

    def concentration_at_tip_ms(self, t_ms: int) -> int:
        """The concentration of the fluid leaving the tip at ``t_ms`` (within the sampled record), µg/mL."""
        current = self._fills[0][1]
        for at, _old, new in self.boundaries:
            if at > t_ms:
                break
            current = new
        return current

    @property
    def drug_changes(self) -> int:
        """How many fills put one drug after another (not after the saline of an unprimed catheter)."""
        return sum(1 for (_, old), _new in zip(self._fills, self._fills[1:]) if old)

    @property
    def first_ms(self) -> int | None:
        """Start of the first stretch, ms (None before any)."""
        return self.starts[0] if self.starts else None

    @property
    def last_ms(self) -> int | None:
        """End of the last stretch, ms (None before any)."""
        return self.ends[-1] if self.ends else None

    def _within(self, sums: list[int], start_ms: int, end_ms: int) -> int:
        first = bisect_left(self.starts, start_ms)
        last = bisect_right(self.ends, end_ms)
        return sums[last] - sums[first] if last > first else 0

    def tip_pg_within(self, start_ms: int, end_ms: int) -> int:
        """Drug that left the tip in stretches lying wholly inside ``[start_ms, end_ms]``, pg (a lower bound)."""
        return self._within(self._tip_sum, start_ms, end_ms)

    def tip_pg_touching(self, start_ms: int, end_ms: int) -> int:
        """Drug that left the tip in stretches overlapping ``[start_ms, end_ms]``, pg (an upper bound)."""
        first = bisect_right(self.ends, start_ms)
        last = bisect_left(self.starts, end_ms)
        return self._tip_sum[last] - self._tip_sum[first] if last > first else 0

    def pushed_pg_within(self, start_ms: int, end_ms: int) -> int:
        """Drug pushed at the pump end in stretches wholly inside the interval, pg (a lower bound)."""
        return self._within(self._pushed_sum, start_ms, end_ms)
