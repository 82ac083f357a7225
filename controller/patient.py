"""The patient record the controller starts from: who the patient is and how therapy may begin.

A patient comes to an implant in one of two ways (itb-clinical §1.2, §1.3):

* **screened**: test doses by lumbar puncture (50, then 75, then 100 µg, each after an
  inadequate one), each with its response and how long the effect lasted;
* **transferred**: a pump replacement, with the documented dose the old pump delivered.

The record is built by :func:`controller.assembly.build_controller`'s caller (a scenario,
a bench tool) and grows as screening doses are given
(:meth:`controller.therapy.Therapy.screening_dose`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from controller.prescription.library import default_library
from cython_ext.errors import ConfigError
from cython_ext.vocabulary import Origin


def max_prior_dose_ng_per_day() -> int:
    """The largest documented prior dose a transferred patient's record accepts, ng/day.

    The drug library's hard maximum daily dose (the highest over its entries; 2003 µg/day for
    intrathecal baclofen, the highest daily dose reported, itb-clinical §1.5): the same bound every
    prescription's dose and cap are held to, so a record cannot carry a dose no programme could.
    """
    return max(entry.dose_ng_per_day.upper_hard for entry in default_library().values())


class History(enum.Enum):
    """How the patient comes to therapy."""

    SCREENED = "screened"
    TRANSFERRED = "transferred"


@dataclass
class ScreeningDose:
    """One screening test dose as given.

    :ivar at_ms: controller time it was given, ms.
    :ivar dose_ug: the test dose, µg.
    :ivar adequate: whether the response was adequate.
    :ivar effect_ms: how long the effect lasted, ms.
    """

    at_ms: int
    dose_ug: int
    adequate: bool
    effect_ms: int


@dataclass
class PatientRecord:
    """The patient as the controller knows them.

    :ivar patient_id: the patient's identifier (as on the prescription).
    :ivar origin: origin of the spasticity (selects the titration cap).
    :ivar history: screened or transferred.
    :ivar screening: the screening doses given so far, in order (screened patients).
    :ivar prior_dose_ng_per_day: the documented dose of the replaced pump, ng/day (transferred patients;
        at most :func:`max_prior_dose_ng_per_day`).
    """

    patient_id: str
    origin: Origin
    history: History = History.SCREENED
    screening: list[ScreeningDose] = field(default_factory=list)
    prior_dose_ng_per_day: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.origin, Origin):
            raise ConfigError("patient.origin", self.origin, f"one of {[o.value for o in Origin]}")
        if self.history is History.TRANSFERRED:
            dose = self.prior_dose_ng_per_day
            high = max_prior_dose_ng_per_day()
            if isinstance(dose, bool) or not isinstance(dose, int) or not 0 < dose <= high:
                raise ConfigError("patient.prior_dose_ng_per_day", dose,
                                  f"an integer in (0, {high}] ng/day for a transferred patient (the drug "
                                  "library's hard maximum daily dose)")
        elif self.prior_dose_ng_per_day is not None:
            raise ConfigError("patient.prior_dose_ng_per_day", self.prior_dose_ng_per_day,
                              "absent for a screened patient")
