"""One cohort patient on the full controller over the simulated pump: the cohort's differential check.

:func:`run_on_controller` runs a patient of the population under a policy as
``itb run`` runs a scenario: a simulated NE-1000 (:func:`sim.rig.simulated_pump`,
in-process or over a pty), the HAL driver, the controller built by
:func:`controller.assembly.build_controller` on a durable store, polling in
virtual time, and the scalar patient model (:class:`sim.patient.Patient`) fed with
what reached the catheter tip at each poll. Each daily visit starts by
interrogating the pump (a poll), so the patient model has had everything the pump
pushed before the clinician looks. Then the same policy
(:meth:`~hil.cohort.policy.TitrationPolicy.choose`) asks the same workflows
(:func:`hil.cohort.engine.ask`). Its decisions should equal the cohort's for the
same patient (``tests/cohort/test_differential.py``); it runs about 20 patient-days
a second, so it checks a handful of patients, not a cohort.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

import hal
from controller.assembly import ControllerSettings, build_controller
from controller.loop import PollRecord
from controller.prescription import Prescription
from controller.signing import SignedFile
from controller.store import Store
from controller.therapy import WorkflowResult
from cython_ext.units import H_PER_DAY, MS_PER_DAY, MS_PER_H
from hal.pump import Direction
from hil.cohort.engine import Decision, ask, decisions, screened_record
from hil.cohort.policy import TitrationPolicy
from hil.cohort.run import SYRINGE_DIAMETER_MM
from sim.clock import VirtualClock
from sim.patient import Patient, PatientParameters
from sim.rig import simulated_pump

#: Syringe of the simulated mechanism, mL: large, so it never runs dry (as ``itb run``).
SYRINGE_VOLUME_ML = "1000"


def run_on_controller(parameters: PatientParameters, prescription: Prescription, prescription_file: SignedFile,
                      policy: TitrationPolicy, days: int, *, link: str = "inprocess") -> list[Decision]:
    """Run one patient for ``days`` under ``policy`` on the full controller; return its decisions.

    :param parameters: the patient.
    :param prescription: the prescription of the patient's origin.
    :param prescription_file: its signed file (the controller's front door verifies it).
    :param policy: the titration policy.
    :param days: days to run.
    :param link: how the simulated pump is served (``inprocess``, ``pty``, ``tcp``).
    :return: every workflow result, times in ms from the start (the cohort's time axis).
    """
    rx = prescription
    clock = VirtualClock()
    patient = Patient(parameters)
    results: list[tuple[int, WorkflowResult]] = []
    with tempfile.TemporaryDirectory(prefix="itb-cohort-reference-") as work, \
            simulated_pump(link, clock=clock, syringe_diameter_mm=str(SYRINGE_DIAMETER_MM),
                           syringe_volume_ml=SYRINGE_VOLUME_ML) as rig:
        driver = hal.open_pump("ne1000", rig.url, clock=clock)
        store = Store(Path(work) / "journal.sqlite", clock)
        try:
            driver.configure(syringe_diameter_mm=SYRINGE_DIAMETER_MM)
            driver.set_target_volume(0)
            driver.set_direction(Direction.INFUSE)
            controller = build_controller(rx, screened_record(rx), driver, clock, store,
                                          prescription_file=prescription_file, settings=ControllerSettings(),
                                          reason="cohort reference")
            t0 = -(-controller.now_ms() // MS_PER_DAY) * MS_PER_DAY  # a whole day: the ledger's minutes align

            def on_poll(poll: PollRecord) -> None:
                end_s = (poll.now_ms - t0) / 1000
                start_s = max(patient.time_s, end_s - poll.interval_ms / 1000)
                if end_s >= start_s >= 0:
                    patient.receive_intrathecal(poll.delivered_pg / 1e6, start_s, end_s)

            controller.subscribe(on_poll=on_poll,
                                 on_result=lambda result: results.append((controller.now_ms() - t0, result)))
            controller.run_until(t0)
            next_increase_h = 0.0
            for day in range(days):
                hour = day * H_PER_DAY + policy.decision_hour
                controller.run_until(t0 + hour * MS_PER_H)
                if day > 0:
                    controller.poll()  # the visit interrogates the pump: the patient has had all it pushed
                state = patient.advance_to(max(patient.time_s, hour * MS_PER_H / 1000))
                if day == 0:
                    controller.implant(prime=True)
                    next_increase_h = policy.next_increase_h(hour, True)
                    continue
                asks = {k: bool(v[0]) for k, v in policy.choose(
                    np.array([state.ashworth]), np.array([state.overdose > 0]), np.array([next_increase_h <= hour]),
                    np.array([controller.loop.reservoir_nl()])).items()}
                before = controller.therapy.prescribed_dose_ng_per_day
                ask(controller.therapy, rx, policy,
                    refill_removed_nl=controller.loop.reservoir_nl() if asks["refill"] else None,
                    decrease=asks["decrease"], increase=asks["increase"], bolus=asks["bolus"])
                if asks["increase"] and not asks["decrease"]:
                    next_increase_h = policy.next_increase_h(
                        hour, controller.therapy.prescribed_dose_ng_per_day > before)
            controller.run_until(t0 + days * MS_PER_DAY)
        finally:
            store.close()
            driver.close()
    return decisions(results)
