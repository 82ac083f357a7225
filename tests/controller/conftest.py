"""Fixtures for controller-logic tests: a controller over the interface-level fake pump, in virtual time.

The kernel is the one the selector gives: the compiled module, or the
pure-Python twin when ``ITB_PURE_PYTHON=1`` asks for it (a checkout without a
C compiler can still check the workflows that way, on purpose). Without either,
the import fails loudly: the compiled core is never silently replaced.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from controller.alarms import AlarmManager
from controller.assembly import Controller, ControllerSettings, build_controller
from controller.gate import KernelGate
from controller.loop import ControlLoop
from controller.patient import History, PatientRecord
from controller.prescription import Prescription
from controller.store import Store
from controller.therapy import Therapy
from sim.clock import VirtualClock
from sim.fake_pump import FakePump
from tests.prescriptions import make_prescription, signed_file

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000


def kernel_module() -> Any:
    """The selected kernel: compiled, or the twin only when ``ITB_PURE_PYTHON=1``."""
    from cython_ext import kernel

    return kernel


class AlarmLog:
    """Keeps the alarm events a controller journals, in memory, for assertions."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def record_alarm(self, **event: Any) -> None:
        self.events.append(event)

    def raised(self) -> set[str]:
        return {e["code"] for e in self.events if e["event"] == "raise"}


@dataclass
class Rig:
    """A controller, built through the front door, its fake pump and everything around it."""

    clock: VirtualClock
    pump: FakePump
    controller: Controller
    log: AlarmLog
    store: Store
    events: list[tuple[str, dict[str, Any]]]
    prescription: Prescription
    settings: ControllerSettings

    gate: KernelGate = field(init=False)
    alarms: AlarmManager = field(init=False)
    loop: ControlLoop = field(init=False)
    therapy: Therapy = field(init=False)

    def __post_init__(self) -> None:
        """The controller's parts (fixed for its life) under their own names."""
        parts = self.controller
        self.gate, self.alarms, self.loop, self.therapy = parts.gate, parts.alarms, parts.loop, parts.therapy

    def advance(self, ms: int) -> None:
        """Run the loop for ``ms`` of virtual time."""
        self.controller.run_until(self.controller.now_ms() + ms)

    def restart(self, pump: FakePump | None = None) -> Rig:
        """A new controller on the same store and pump, after a crash (nothing saved on the way out)."""
        self.controller.detach()
        return build_rig(self.clock, pump or self.pump, self.store, recover=True, prescription=self.prescription,
                         settings=self.settings, patient=self.controller.patient)


def programs_sent(pump: FakePump) -> int:
    """How many ``program`` commands the fake pump was sent (its command log, not the controller's record)."""
    return sum(1 for command, _ in pump.command_log if command == "program")


def build_rig(clock: VirtualClock, pump: FakePump, store: Store, *, recover: bool = False,
              settings: ControllerSettings | None = None, prescription: Prescription | None = None,
              patient: PatientRecord | None = None, origin_change_reason: str = "", **rx: Any) -> Rig:
    """A controller through :func:`controller.assembly.build_controller` over ``pump`` and ``store``.

    :param rx: keyword arguments of :func:`tests.prescriptions.make_prescription` (when no
        ``prescription`` is given).
    """
    prescription = prescription or make_prescription(**rx)
    settings = settings or ControllerSettings(poll_interval_ms=30 * MS_PER_MIN)
    # A transferred patient documented at the prescription's cap: any test dose can start therapy.
    patient = patient or PatientRecord(prescription.patient.patient_id, prescription.patient.origin,
                                       History.TRANSFERRED, prior_dose_ng_per_day=prescription.titration.max_dose_ng_per_day)
    controller = build_controller(prescription, patient, pump, clock, store, settings=settings,
                                  kernel_module=kernel_module(), prescription_file=signed_file(prescription),
                                  origin_change_reason=origin_change_reason)
    log = AlarmLog()
    events: list[tuple[str, dict[str, Any]]] = []
    controller.subscribe(on_event=lambda e, p: events.append((e, p)), on_alarm=log.record_alarm)
    if recover:
        controller.recover()
    return Rig(clock, pump, controller, log, store, events, prescription, settings)


@pytest.fixture
def rig_builder() -> Any:
    """The :func:`build_rig` function itself (for tests that manage clock, pump and store)."""
    return build_rig


@pytest.fixture
def make_rig() -> Any:
    """Factory: ``make_rig(settings=None, **rx)`` builds a fresh controller over a fake pump."""
    stores: list[Store] = []

    def make(settings: ControllerSettings | None = None, **rx: Any) -> Rig:
        clock = VirtualClock()
        store = Store(":memory:", clock)
        stores.append(store)
        return build_rig(clock, FakePump(clock), store, settings=settings, **rx)

    yield make
    for store in stores:
        store.close()


@pytest.fixture
def rig() -> Rig:
    """A fresh controller over a fake pump at virtual time zero (not implanted yet)."""
    clock = VirtualClock()
    store = Store(":memory:", clock)
    yield build_rig(clock, FakePump(clock), store)
    store.close()


@pytest.fixture
def screened() -> Rig:
    """A fresh controller for a patient to be screened (no test dose given yet), not implanted."""
    clock = VirtualClock()
    store = Store(":memory:", clock)
    rx = make_prescription()
    yield build_rig(clock, FakePump(clock), store, prescription=rx,
                    patient=PatientRecord(rx.patient.patient_id, rx.patient.origin, History.SCREENED))
    store.close()


@pytest.fixture
def running(rig: Rig) -> Rig:
    """A controller one day after implant: 100 µg/day at 500 µg/mL, 20 mL filled, catheter primed."""
    result = rig.therapy.implant(500, 20_000_000, dose_ng_per_day=100_000)
    assert result.allowed, result
    rig.advance(MS_PER_DAY)
    return rig
