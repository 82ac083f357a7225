"""Fixtures for controller-logic tests: a controller over the interface-level fake pump, in virtual time.

The kernel is the one the selector gives: the compiled module, or the
pure-Python twin when ``ITB_PURE_PYTHON=1`` asks for it (a checkout without a
C compiler can still check the workflows that way, on purpose). Without either,
the import fails loudly: the compiled core is never silently replaced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from controller.alarms import AlarmManager
from controller.checkpoint import CheckpointStore
from controller.gate import KernelGate, screening_gate
from controller.loop import ControlLoop, LoopConfig
from controller.therapy import Therapy
from sim.clock import VirtualClock
from sim.fake_pump import FakePump

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000


def kernel_module() -> Any:
    """The selected kernel: compiled, or the twin only when ``ITB_PURE_PYTHON=1``."""
    from cython_ext import kernel

    return kernel


class AlarmLog:
    """A journal stand-in that keeps alarm events in memory."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def record_alarm(self, **event: Any) -> None:
        self.events.append(event)

    def raised(self) -> set[str]:
        return {e["code"] for e in self.events if e["event"] == "raise"}


def caps_kwargs(**overrides: Any) -> dict[str, Any]:
    caps = dict(
        max_dose_ng_per_day=1_000_000,
        origin="spinal",
        bolus_enabled=True,
        patient_bolus_enabled=True,
        max_bolus_ng=50_000,
        bolus_lockout_ms=4 * MS_PER_H,
        max_boluses_per_day=4,
        minimum_rate_nl_per_h=2000,
        max_priming_volume_nl=300_000,
    )
    caps.update(overrides)
    return caps


@dataclass
class Rig:
    """A controller, its fake pump and everything around it."""

    clock: VirtualClock
    pump: FakePump
    gate: KernelGate
    alarms: AlarmManager
    log: AlarmLog
    store: CheckpointStore
    loop: ControlLoop
    therapy: Therapy
    events: list[tuple[str, dict[str, Any]]]

    def advance(self, ms: int) -> None:
        """Run the loop for ``ms`` of virtual time."""
        self.loop.run_until(self.loop.now_ms() + ms)

    def restart(self, pump: FakePump | None = None) -> Rig:
        """A new controller on the same store and pump, after a crash (nothing saved on the way out)."""
        return build_rig(self.clock, pump or self.pump, self.store, recover=True)


def build_rig(clock: VirtualClock, pump: FakePump, store: CheckpointStore, *, recover: bool = False,
              config: LoopConfig | None = None, concentration: int = 500, **caps: Any) -> Rig:
    gate = KernelGate(concentration, caps_kwargs(**caps), min_rate_nl_per_h=500, max_rate_nl_per_h=5_000_000,
                      kernel_module=kernel_module())
    log = AlarmLog()
    alarms = AlarmManager(clock, log)
    loop = ControlLoop(pump, clock, gate, alarms, store, config or LoopConfig(poll_interval_ms=30 * MS_PER_MIN))
    therapy = Therapy(loop, gate, dead_volume_nl=250_000, reservoir_capacity_nl=20_000_000)
    therapy.screening_gate = screening_gate(kernel_module=kernel_module())
    events: list[tuple[str, dict[str, Any]]] = []
    loop.event_sinks.append(lambda e, p: events.append((e, p)))
    if recover:
        loop.recover()
        therapy.restore_state()
    return Rig(clock, pump, gate, alarms, log, store, loop, therapy, events)


@pytest.fixture
def rig_builder() -> Any:
    """The :func:`build_rig` function itself (for tests that manage clock, pump and store)."""
    return build_rig


@pytest.fixture
def make_rig() -> Any:
    """Factory: ``make_rig(config=None, **caps)`` builds a fresh controller over a fake pump."""
    stores: list[CheckpointStore] = []

    def make(config: LoopConfig | None = None, **caps: Any) -> Rig:
        clock = VirtualClock()
        store = CheckpointStore(":memory:")
        stores.append(store)
        return build_rig(clock, FakePump(clock), store, config=config, **caps)

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def rig() -> Rig:
    """A fresh controller over a fake pump at virtual time zero (not implanted yet)."""
    clock = VirtualClock()
    store = CheckpointStore(":memory:")
    yield build_rig(clock, FakePump(clock), store)
    store.close()


@pytest.fixture
def running(rig: Rig) -> Rig:
    """A controller one day after implant: 100 µg/day at 500 µg/mL, 20 mL filled, catheter primed."""
    result = rig.therapy.implant(500, 20_000_000, dose_ng_per_day=100_000)
    assert result.allowed, result
    rig.advance(MS_PER_DAY)
    return rig
