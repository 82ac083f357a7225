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

from cython_ext.errors import ConfigError
from cython_ext.vocabulary import Origin


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
    :ivar prior_dose_ng_per_day: the documented dose of the replaced pump, ng/day (transferred patients).
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
            if isinstance(dose, bool) or not isinstance(dose, int) or dose <= 0:
                raise ConfigError("patient.prior_dose_ng_per_day", dose, "an integer > 0 ng/day for a transferred patient")
        elif self.prior_dose_ng_per_day is not None:
            raise ConfigError("patient.prior_dose_ng_per_day", self.prior_dose_ng_per_day,
                              "absent for a screened patient")
