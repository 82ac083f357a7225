"""A controller over the interface-level fake pump at 1000 µg/mL, for the flex and periodic programme tests.

Built through the controller's front door on an in-memory store, in virtual time. The kernel is
the selected one (compiled, or the twin only with ``ITB_PURE_PYTHON=1``). The shipped
programme scenarios run through :func:`run_shipped` and share one daily-total check.
"""

from __future__ import annotations

from typing import Any

from controller.assembly import ControllerSettings, build_controller
from controller.patient import History, PatientRecord
from controller.store import Store
from hil.scenario import RunOptions, ScenarioRunner, load_scenario
from sim.clock import VirtualClock
from sim.fake_pump import FakePump
from tests.prescriptions import make_prescription, signed_file

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000


def run_shipped(name: str) -> tuple[Any, Any]:
    """(scenario, run record) of the shipped scenario ``name``, run in process."""
    scenario = load_scenario(name)
    return scenario, ScenarioRunner(scenario, RunOptions(link="inprocess")).run()


def assert_delivers_programme_daily_total(scenario: Any, record: Any, kinds: set[str]) -> None:
    """Delivered and prescribed µg each within 1 % of the programme's daily total times the whole days run.

    :param kinds: the delivery kinds the run may have delivered as (nothing else was).
    """
    days = scenario.settings.duration_ms // MS_PER_DAY
    programmed_ug = scenario.prescription.programme.daily_total_ng() * days / 1000
    assert abs(record.delivered_ug - programmed_ug) <= programmed_ug / 100
    assert abs(record.prescribed_ug - programmed_ug) <= programmed_ug / 100
    assert set(record.delivered_by_kind_ug) <= kinds


class ProgrammeController:
    """A cerebral-origin controller at 1000 µg/mL, not implanted.

    :param max_dose_ng_per_day: the prescription's daily cap, ng/day.
    :param after: a controller that "crashed": reuse its clock, pump and store and recover (a restart).
    """

    def __init__(self, max_dose_ng_per_day: int = 400_000, *, after: ProgrammeController | None = None) -> None:
        self.clock = VirtualClock() if after is None else after.clock
        self.pump = FakePump(self.clock) if after is None else after.pump
        self.store = Store(":memory:", self.clock) if after is None else after.store
        rx = make_prescription(concentration=1000, origin="cerebral", dose_ug_per_day=200,
                               max_dose_ug_per_day=max_dose_ng_per_day // 1000, patient_bolus=False,
                               boluses_per_day=2, model="synchromed-ii-40", reservoir_ml=40)
        if after is not None:
            after.controller.detach()
        patient = PatientRecord(rx.patient.patient_id, rx.patient.origin, History.TRANSFERRED,
                                prior_dose_ng_per_day=rx.titration.max_dose_ng_per_day)
        self.controller = build_controller(rx, patient, self.pump,
                                           self.clock, self.store, prescription_file=signed_file(rx),
                                           settings=ControllerSettings(poll_interval_ms=30 * MS_PER_MIN))
        self.gate, self.loop, self.therapy = self.controller.gate, self.controller.loop, self.controller.therapy
        if after is not None:  # a restart after a crash: the same pump and store, nothing saved on the way out
            self.controller.recover()

    def counter_nl(self) -> int:
        """The fake pump's infused counter, nL."""
        return self.pump.read_dispensed().infused_nl

    def close(self) -> None:
        self.store.close()
