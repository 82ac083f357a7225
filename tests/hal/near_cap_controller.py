"""A controller on the real NE-1000 driver over a simulated pump, with a basal dose near its daily cap.

Built through the front door (:func:`controller.assembly.build_controller`) with an in-memory
store: the set-up of the driver-plus-loop fuzz (``test_driver_loop_fuzz.py``) and of the
findings it made that are pinned on their own (``test_failed_bolus_end_restore.py``).
"""

from __future__ import annotations

import contextlib

import hal
from controller.assembly import Controller, ControllerSettings, build_controller
from controller.patient import History, PatientRecord
from controller.store import Store
from hal.pump import Direction
from sim.clock import VirtualClock
from tests.prescriptions import make_prescription, signed_file

CONCENTRATION_UG_PER_ML = 500
CAP_UG_PER_DAY = 300
DOSE_UG_PER_DAY = 240
#: The syringe both the simulated pump and the driver are set up with, mm.
SYRINGE_DIAMETER_MM = "4.699"


def near_cap_controller(stack: contextlib.ExitStack, pump_url: str, clock: VirtualClock, *,
                        poll_interval_ms: int) -> Controller:
    """Connect the driver (syringe, no target volume, infusing) and build the controller; ``stack`` closes both.

    :param pump_url: serial URL of the simulated pump.
    :param poll_interval_ms: the controller's poll interval, ms.
    """
    driver = hal.open_pump("ne1000", pump_url, clock=clock)
    stack.callback(driver.close)
    driver.configure(syringe_diameter_mm=SYRINGE_DIAMETER_MM)
    driver.set_target_volume(0)
    driver.set_direction(Direction.INFUSE)
    store = stack.enter_context(Store(":memory:", clock))
    # A basal dose near the cap (and a short catheter, so priming leaves room): boluses meet the cap.
    rx = make_prescription(concentration=CONCENTRATION_UG_PER_ML, dose_ug_per_day=DOSE_UG_PER_DAY,
                           max_dose_ug_per_day=CAP_UG_PER_DAY, lockout_min=180, boluses_per_day=4,
                           dead_volume_ml="0.05")
    patient = PatientRecord(rx.patient.patient_id, rx.patient.origin, History.TRANSFERRED,
                            prior_dose_ng_per_day=DOSE_UG_PER_DAY * 1000)
    return build_controller(rx, patient, driver, clock, store, prescription_file=signed_file(rx),
                            settings=ControllerSettings(poll_interval_ms=poll_interval_ms))
