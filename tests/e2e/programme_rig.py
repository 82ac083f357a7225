"""A controller over the interface-level fake pump at 1000 µg/mL, for the flex and periodic programme tests.

Virtual time, an in-memory checkpoint store, alarms kept nowhere. The kernel is
the selected one (compiled, or the twin only with ``ITB_PURE_PYTHON=1``).
"""

from __future__ import annotations

from typing import Any

from controller.alarms import AlarmManager
from controller.checkpoint import CheckpointStore
from controller.gate import KernelGate
from controller.loop import ControlLoop, LoopConfig
from controller.therapy import Therapy
from sim.clock import VirtualClock
from sim.fake_pump import FakePump

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000


class _AlarmSink:
    def record_alarm(self, **event: Any) -> None:
        pass


class ProgrammeController:
    """A cerebral-origin controller at 1000 µg/mL, not implanted.

    :param max_dose_ng_per_day: the prescription's daily cap, ng/day.
    :param after: a controller that "crashed": reuse its clock, pump and store and recover (a restart).
    """

    def __init__(self, max_dose_ng_per_day: int = 400_000, *, after: ProgrammeController | None = None) -> None:
        self.clock = VirtualClock() if after is None else after.clock
        self.pump = FakePump(self.clock) if after is None else after.pump
        self.store = CheckpointStore(":memory:") if after is None else after.store
        caps = dict(max_dose_ng_per_day=max_dose_ng_per_day, origin="cerebral", bolus_enabled=True,
                    patient_bolus_enabled=False, max_bolus_ng=50_000, bolus_lockout_ms=4 * MS_PER_H,
                    max_boluses_per_day=2, minimum_rate_nl_per_h=2000, max_priming_volume_nl=300_000)
        self.gate = KernelGate(1000, caps, min_rate_nl_per_h=500, max_rate_nl_per_h=5_000_000)
        self.loop = ControlLoop(self.pump, self.clock, self.gate, AlarmManager(self.clock, _AlarmSink()), self.store,
                                LoopConfig(poll_interval_ms=30 * MS_PER_MIN, minimum_rate_nl_per_h=2000))
        self.therapy = Therapy(self.loop, self.gate, dead_volume_nl=250_000, reservoir_capacity_nl=40_000_000)
        if after is not None:  # a restart after a crash: the same pump and store, nothing saved on the way out
            self.loop.recover()
            self.therapy.restore_state()

    def counter_nl(self) -> int:
        """The fake pump's infused counter, nL."""
        return self.pump.read_dispensed().infused_nl

    def close(self) -> None:
        self.store.close()
