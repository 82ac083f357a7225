"""The clinical vocabulary: one spelling, defined once, for every layer.

What a delivery is (:class:`DeliveryKind`), where a patient's spasticity comes
from (:class:`Origin`) and the cap that follows from it, the shape limits of a
programme, and the kernel's machine-readable reason codes (:class:`Reason`).
The safety kernel, the controller, the simulators and the reports all use
these names; nothing else defines them.

Sources: itb-clinical.md §1.4 (titration caps by origin), §4 (flex schedules:
SynchroMed II allows up to 13 rate steps a day). Every number is a placeholder
awaiting clinical sign-off.
"""

from __future__ import annotations

import enum

from cython_ext.errors import ConfigError

__all__ = [
    "DeliveryKind",
    "N_KINDS",
    "BOLUS_KINDS",
    "COUNTED_BOLUS_KINDS",
    "Origin",
    "CatheterFill",
    "TITRATION_CAP_PCT_BY_ORIGIN",
    "MAX_DEAD_VOLUME_NL",
    "MAX_FLEX_STEPS",
    "MAX_PERIODIC_BOLUSES",
    "Reason",
    "ALL_REASONS",
    "SOFT_REASONS",
    "DISCONTINUE_AUTHORISATION",
    "CAPS_CHANGE_CONFIRMATION",
    "PROCEDURE_AUTHORISATION",
]


class DeliveryKind(enum.IntEnum):
    """What drug was delivered as. Every kind counts towards the rolling 24 h totals.

    The integer is the kernel ledger's index; :attr:`label` is the name that
    journals, reports and scenario files use.
    """

    BASAL = 0
    FLEX = 1
    BOLUS_CLINICIAN = 2
    BOLUS_PATIENT = 3
    BOLUS_PERIODIC = 4
    PRIMING = 5
    BRIDGE = 6
    MINIMUM_RATE = 7

    @property
    def label(self) -> str:
        """The external name (``"basal"``, ``"clinician"``, ``"minimum_rate"``...)."""
        return _LABELS[self]

    @property
    def is_bolus(self) -> bool:
        """True for a kind a bolus request may name (clinician, patient, priming, bridge)."""
        return self in BOLUS_KINDS

    @classmethod
    def from_label(cls, label: str) -> DeliveryKind:
        """The kind whose :attr:`label` is ``label``.

        :raises ConfigError: for any other text.
        """
        try:
            return _BY_LABEL[label]
        except (KeyError, TypeError):
            raise ConfigError("kind", label, f"one of {sorted(_BY_LABEL)}") from None


_LABELS = {
    DeliveryKind.BASAL: "basal",
    DeliveryKind.FLEX: "flex",
    DeliveryKind.BOLUS_CLINICIAN: "clinician",
    DeliveryKind.BOLUS_PATIENT: "patient",
    DeliveryKind.BOLUS_PERIODIC: "periodic",
    DeliveryKind.PRIMING: "priming",
    DeliveryKind.BRIDGE: "bridge",
    DeliveryKind.MINIMUM_RATE: "minimum_rate",
}
_BY_LABEL = {label: kind for kind, label in _LABELS.items()}

#: Number of delivery kinds (length of every per-kind array).
N_KINDS = len(DeliveryKind)
#: Bolus kinds a bolus request may name.
BOLUS_KINDS = (DeliveryKind.BOLUS_CLINICIAN, DeliveryKind.BOLUS_PATIENT, DeliveryKind.PRIMING, DeliveryKind.BRIDGE)
#: Bolus kinds limited by size, lockout and count (priming and bridge are limited by volume).
COUNTED_BOLUS_KINDS = (DeliveryKind.BOLUS_CLINICIAN, DeliveryKind.BOLUS_PATIENT)


class Origin(enum.Enum):
    """Origin of the spasticity; selects the titration cap."""

    SPINAL = "spinal"
    CEREBRAL = "cerebral"
    PAEDIATRIC = "paediatric"

    @property
    def titration_cap_pct(self) -> int:
        """Largest daily-dose increase per 24 h for this origin, % (itb-clinical §1.4)."""
        return TITRATION_CAP_PCT_BY_ORIGIN[self]


class CatheterFill(enum.Enum):
    """What the catheter's dead volume holds when therapy starts at implant (itb-clinical §1.3, §5.3).

    ``SALINE``: a new catheter. The priming bolus must push the saline out before the basal dose
    reaches the tip. ``DRUG``: a catheter kept from a replaced pump, or filled with drug by the
    surgeon; it holds the reservoir's drug to the tip, and a priming bolus would push a whole dead
    volume of drug into the patient.
    """

    SALINE = "saline"
    DRUG = "drug"


#: Titration cap per origin, % per 24 h (itb-clinical.md §1.4: spinal 10-30 %, cerebral and paediatric 5-15 %).
TITRATION_CAP_PCT_BY_ORIGIN = {Origin.SPINAL: 30, Origin.CEREBRAL: 15, Origin.PAEDIATRIC: 15}

#: Most rate steps in one programme day (SynchroMed II: up to 13 rate changes a day).
MAX_FLEX_STEPS = 13
#: Most periodic boluses in one programme day (as many as a day has flex steps).
MAX_PERIODIC_BOLUSES = 13
#: Largest catheter and pump-tubing dead volume a prescription or scenario may state, nL (1 mL; itb-clinical §5.3:
#: 0.0026 mL/cm of implanted catheter, 0.1-0.5 mL with the tubing). The smallest is more than 0: an implanted
#: catheter always holds drug, and the priming and the concentration transit (BOL-06) are derived from it.
MAX_DEAD_VOLUME_NL = 1_000_000


class Reason:
    """Machine-readable reason codes carried by the kernel's decisions.

    The members of :data:`SOFT_REASONS` may be lifted by an override naming
    them; every other code is a hard stop. Codes are only ever added, at the
    end, never renamed. A code containing ``OVERDOSE_RISK`` marks a refusal by
    an overdose-risk rule (the restart rule, a bolus over the rolling 24 h cap
    or stacked on a titration step); ``cython_ext/kernel.pyi`` gives each
    rule and its source.
    """

    NO_PROGRAMME = "NO_PROGRAMME"
    SCREENING_ONLY = "SCREENING_ONLY"
    CLOCK_BEHIND_LEDGER = "CLOCK_BEHIND_LEDGER"
    CONCENTRATION_NOT_IN_LIBRARY = "CONCENTRATION_NOT_IN_LIBRARY"
    CONCENTRATION_CHANGED = "CONCENTRATION_CHANGED"
    CONCENTRATION_UNCHANGED = "CONCENTRATION_UNCHANGED"
    BRIDGE_PLAN_MISSING = "BRIDGE_PLAN_MISSING"
    DOSE_BELOW_HARD = "DOSE_BELOW_HARD"
    DOSE_BELOW_SOFT = "DOSE_BELOW_SOFT"
    DOSE_ABOVE_SOFT = "DOSE_ABOVE_SOFT"
    DOSE_ABOVE_HARD = "DOSE_ABOVE_HARD"
    DOSE_ABOVE_PRESCRIPTION_CAP = "DOSE_ABOVE_PRESCRIPTION_CAP"
    RATE_ZERO = "RATE_ZERO"
    RATE_BELOW_HARD = "RATE_BELOW_HARD"
    RATE_BELOW_SOFT = "RATE_BELOW_SOFT"
    RATE_ABOVE_SOFT = "RATE_ABOVE_SOFT"
    RATE_ABOVE_HARD = "RATE_ABOVE_HARD"
    RATE_BELOW_PUMP_MIN = "RATE_BELOW_PUMP_MIN"
    RATE_ABOVE_PUMP_MAX = "RATE_ABOVE_PUMP_MAX"
    RATE_NOT_PUMP_STEP = "RATE_NOT_PUMP_STEP"
    RATE_BELOW_MINIMUM_RATE = "RATE_BELOW_MINIMUM_RATE"
    TITRATION_CAP_EXCEEDED = "TITRATION_CAP_EXCEEDED"
    TITRATION_INTERVAL = "TITRATION_INTERVAL"
    DECREASE_NEEDS_CONFIRMATION = "DECREASE_NEEDS_CONFIRMATION"
    BOLUS_DISABLED = "BOLUS_DISABLED"
    BOLUS_BELOW_HARD = "BOLUS_BELOW_HARD"
    BOLUS_BELOW_SOFT = "BOLUS_BELOW_SOFT"
    BOLUS_ABOVE_SOFT = "BOLUS_ABOVE_SOFT"
    BOLUS_ABOVE_HARD = "BOLUS_ABOVE_HARD"
    BOLUS_ABOVE_PRESCRIPTION_MAX = "BOLUS_ABOVE_PRESCRIPTION_MAX"
    BOLUS_LOCKOUT = "BOLUS_LOCKOUT"
    BOLUS_COUNT = "BOLUS_COUNT"
    BOLUS_RATE_ABOVE_PUMP_MAX = "BOLUS_RATE_ABOVE_PUMP_MAX"
    PRIMING_VOLUME_ABOVE_MAX = "PRIMING_VOLUME_ABOVE_MAX"
    DOSE_CAP_24H = "DOSE_CAP_24H"
    DISCONTINUE_NOT_AUTHORISED = "DISCONTINUE_NOT_AUTHORISED"
    TAPER_INCOMPLETE = "TAPER_INCOMPLETE"
    MINIMUM_RATE_ABOVE_CURRENT = "MINIMUM_RATE_ABOVE_CURRENT"
    CONCENTRATION_BELOW_HARD = "CONCENTRATION_BELOW_HARD"
    CONCENTRATION_BELOW_SOFT = "CONCENTRATION_BELOW_SOFT"
    CONCENTRATION_ABOVE_SOFT = "CONCENTRATION_ABOVE_SOFT"
    CONCENTRATION_ABOVE_HARD = "CONCENTRATION_ABOVE_HARD"
    INCREASE_WITHIN_24H_OF_START = "INCREASE_WITHIN_24H_OF_START"
    RESUME_WITHOUT_INTERRUPTION = "RESUME_WITHOUT_INTERRUPTION"
    RESTART_OVERDOSE_RISK_ABOVE_PRIOR_DOSE = "RESTART_OVERDOSE_RISK_ABOVE_PRIOR_DOSE"
    RESTART_OVERDOSE_RISK_ABOVE_START_DOSE = "RESTART_OVERDOSE_RISK_ABOVE_START_DOSE"
    BOLUS_OVERDOSE_RISK_24H_CAP = "BOLUS_OVERDOSE_RISK_24H_CAP"
    BOLUS_OVERDOSE_RISK_TITRATION_STEP = "BOLUS_OVERDOSE_RISK_TITRATION_STEP"
    CAPS_CHANGE_NOT_CONFIRMED = "CAPS_CHANGE_NOT_CONFIRMED"
    TRANSIT_DOSE_ABOVE_PROGRAMME = "TRANSIT_DOSE_ABOVE_PROGRAMME"
    PROCEDURE_NOT_AUTHORISED = "PROCEDURE_NOT_AUTHORISED"


#: Every reason code, in the fixed order in which decisions list them.
ALL_REASONS: tuple[str, ...] = tuple(v for k, v in vars(Reason).items() if k.isupper())
#: Reason codes an :class:`Override` may lift (soft limits, the titration interval, large decreases).
SOFT_REASONS: frozenset[str] = frozenset(
    {
        Reason.DOSE_BELOW_SOFT,
        Reason.DOSE_ABOVE_SOFT,
        Reason.RATE_BELOW_SOFT,
        Reason.RATE_ABOVE_SOFT,
        Reason.BOLUS_BELOW_SOFT,
        Reason.BOLUS_ABOVE_SOFT,
        Reason.CONCENTRATION_BELOW_SOFT,
        Reason.CONCENTRATION_ABOVE_SOFT,
        Reason.TITRATION_INTERVAL,
        Reason.DECREASE_NEEDS_CONFIRMATION,
    }
)
#: The code an :class:`Override` must name to authorise a discontinue.
DISCONTINUE_AUTHORISATION = "DISCONTINUE"
#: The code an :class:`Override` must name to confirm a change of the prescription caps.
CAPS_CHANGE_CONFIRMATION = "CAPS_CHANGE"
#: The code an :class:`Override` must name to authorise a procedure's zero-rate hold (SAFE-05: an MRI under a pump
#: labelling that requires the pump emptied and programmed to zero first).
PROCEDURE_AUTHORISATION = "PROCEDURE"
