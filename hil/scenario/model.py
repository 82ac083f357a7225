"""The scenario model: the validated tables, actions and expectations of one scenario file.

Everything here is built by :func:`hil.scenario.schema.parse_scenario` and already valid;
:class:`Scenario` is what :class:`~hil.scenario.runner.ScenarioRunner` runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Mapping

from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_DAY, MS_PER_H, MS_PER_MIN


@dataclass(frozen=True)
class ScenarioSettings:
    """The ``[scenario]`` table.

    :ivar name: short name (used in reports).
    :ivar description: one paragraph for the report.
    :ivar duration_ms: virtual length of the run, ms.
    :ivar poll_interval_ms: time between status polls, ms.
    :ivar seed: seed for every random choice of the run (patient, pump noise, faults).
    """

    name: str
    description: str = ""
    duration_ms: int = MS_PER_DAY
    poll_interval_ms: int = 30 * MS_PER_MIN
    seed: int = 0


@dataclass(frozen=True)
class PatientSettings:
    """The ``[patient]`` table.

    :ivar origin: spasticity origin: spinal, cerebral or paediatric (sets the titration cap).
    :ivar variability_cv: inter-patient variability of the PK/PD model (0 = reference patient).
    :ivar history: how the patient comes to the implant: ``screened`` (the scenario's
        ``screening_dose`` actions make the record) or ``transferred`` (a pump replacement).
    :ivar prior_dose_ug_per_day: a transferred patient's documented dose on the replaced pump, µg/day.
    """

    origin: str = "spinal"
    variability_cv: Decimal = Decimal(0)
    history: str = "screened"
    prior_dose_ug_per_day: int | None = None


@dataclass(frozen=True)
class PumpSettings:
    """The ``[pump]`` table: the mechanism and its reservoir.

    :ivar reservoir_capacity_nl: largest volume the reservoir holds, nL.
    :ivar syringe_diameter_mm: inside diameter of the syringe that stands in for the reservoir, mm.
    :ivar bias_pct: systematic delivery error of the simulated mechanism, %.
    :ivar noise_pct: random delivery error of the simulated mechanism, %.
    :ivar faults: wire and device fault specs for the simulator (``sim.faults`` syntax).
    """

    reservoir_capacity_nl: int = 20_000_000
    syringe_diameter_mm: Decimal = Decimal("4.699")
    bias_pct: Decimal = Decimal(0)
    noise_pct: Decimal = Decimal(0)
    faults: tuple[str, ...] = ()


@dataclass(frozen=True)
class TherapySettings:
    """The ``[therapy]`` table: the clinician-configured safety parameters.

    :ivar max_dose_ug_per_day: prescription cap on the rolling 24 h dose, µg/day.
    :ivar minimum_rate_nl_per_h: minimum-rate mode rate, nL/h (0.048 mL/day = 2000 nL/h).
    :ivar low_reservoir_nl: low-reservoir alarm volume, nL.
    :ivar low_reservoir_days: low-reservoir alarm on days to the alarm volume, days.
    :ivar empty_reservoir_nl: volume at which the reservoir counts as empty, nL.
    :ivar dead_volume_nl: catheter and pump dead volume, nL.
    :ivar refill_tolerance_pct: allowed mismatch between expected and removed volume at refill, %.
    :ivar drift_tolerance_pct: allowed mismatch between the ledger and the pump counter, %.
    :ivar unconfirmed_alarm_ms: delivery unconfirmed for this long raises the therapy-interruption alarm, ms.
    :ivar restart_titration_after_ms: an interruption longer than this restarts at the titration dose, ms.
    :ivar max_bolus_ug: largest clinician or patient bolus, µg.
    :ivar bolus_lockout_ms: minimum time between bolus starts, ms.
    :ivar max_boluses_per_day: most clinician and patient boluses in any 24 h.
    :ivar patient_bolus_enabled: whether patient-activated boluses are prescribed.
    :ivar bolus_enabled: whether boluses are prescribed at all.
    :ivar titration_cap_pct: largest titration increase per 24 h, % (None: the origin's cap).
    :ivar min_titration_interval_ms: minimum time between titration steps, ms.
    :ivar decrease_confirm_pct: a decrease larger than this needs confirmation, %.

    With a prescription file, everything here except the refill and drift tolerances, the
    unconfirmed-delivery time and the restart-at-titration-dose time comes from the prescription.
    """

    max_dose_ug_per_day: int = 1000
    minimum_rate_nl_per_h: int = 2000
    low_reservoir_nl: int = 2_000_000
    low_reservoir_days: int = 7
    empty_reservoir_nl: int = 500_000
    dead_volume_nl: int = 250_000
    refill_tolerance_pct: Decimal = Decimal(20)
    drift_tolerance_pct: Decimal = Decimal(5)
    unconfirmed_alarm_ms: int = 2 * MS_PER_H
    restart_titration_after_ms: int = 24 * MS_PER_H
    max_bolus_ug: int = 50
    bolus_lockout_ms: int = 4 * MS_PER_H
    max_boluses_per_day: int = 4
    patient_bolus_enabled: bool = True
    bolus_enabled: bool = True
    titration_cap_pct: int | None = None
    min_titration_interval_ms: int = 24 * MS_PER_H
    decrease_confirm_pct: int = 20


def frozen(mapping: Mapping[str, Any]) -> Mapping[str, Any]:
    """A read-only copy of ``mapping`` (the parameters of an action or expectation)."""
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class Action:
    """One timed action.

    :ivar at_ms: when, ms after the scenario start.
    :ivar do: what (one of :data:`hil.scenario.params.ACTION_FIELDS`).
    :ivar params: the validated parameters, units in their names.
    :ivar label: name used by expectations to refer to this action.
    :ivar index: position in the file (ties at the same time run in file order).
    :ivar role: the role it is asked under ("" for the action's usual role).
    :ivar actor: who asks ("" for the role's name).
    :ivar signed: sent as a signed command with the role's development key.
    """

    at_ms: int
    do: str
    params: Mapping[str, Any] = field(default_factory=lambda: frozen({}))
    label: str = ""
    index: int = 0
    role: str = ""
    actor: str = ""
    signed: bool = False


@dataclass(frozen=True)
class Expectation:
    """One check made after the run.

    :ivar check: which (one of :data:`hil.scenario.params.EXPECT_FIELDS`).
    :ivar params: the validated parameters.
    """

    check: str
    params: Mapping[str, Any] = field(default_factory=lambda: frozen({}))


@dataclass(frozen=True)
class Scenario:
    """A whole validated scenario file."""

    settings: ScenarioSettings
    patient: PatientSettings
    pump: PumpSettings
    therapy: TherapySettings
    actions: tuple[Action, ...]
    expectations: tuple[Expectation, ...]
    source: str = "<built-in>"
    #: The prescription (:class:`controller.prescription.Prescription`) the therapy follows, or None.
    prescription: Any = None
    #: Where it was loaded from ("" without one).
    prescription_source: str = ""
    #: A gravimetric accuracy step (:class:`hil.gravimetric.step.AccuracyStep`) run before therapy, or None.
    accuracy: Any = None
    #: The prescription's file with its signature (:class:`controller.signing.SignedFile`), or None.
    prescription_file: Any = None

    def with_duration(self, duration_ms: int) -> Scenario:
        """The same scenario run for ``duration_ms`` (actions after the end are dropped)."""
        if duration_ms <= 0:
            raise ConfigError("duration_ms", duration_ms, "> 0")
        settings = ScenarioSettings(
            name=self.settings.name,
            description=self.settings.description,
            duration_ms=duration_ms,
            poll_interval_ms=self.settings.poll_interval_ms,
            seed=self.settings.seed,
        )
        actions = tuple(a for a in self.actions if a.at_ms <= duration_ms)
        return Scenario(settings, self.patient, self.pump, self.therapy, actions, self.expectations, self.source,
                        self.prescription, self.prescription_source, self.accuracy, self.prescription_file)
