"""The controller's front door: one function builds the whole dosing firmware, nothing else wires it.

:func:`build_controller` takes a prescription, a patient record, a pump driver, a
clock and the durable store, and returns a :class:`Controller`: the safety kernel's
gate (caps from the prescription, rate envelope from the pump), the screening gate,
the alarm manager (journalled to the store), the control loop and the clinical
workflows, connected by constructor injection. The scenario runner, the tests and
any future tool build the controller here and drive it through the
:class:`Controller`'s methods; none of them constructs the parts.

Finding your way:

* where a **rate is decided**: the workflows of :class:`controller.therapy.Therapy` ask the
  kernel through :class:`controller.gate.KernelGate` (every delivery decision);
* where a **rate is sent**: :class:`controller.commands.CommandIssuer` (the only sender of
  delivery commands, journalled and verified), driven by :class:`controller.loop.ControlLoop`.

Units: times ms, doses ng/day, volumes nL, rates nL/h.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.alarms import AlarmManager
from controller.audit import SYSTEM_ACTOR, Actor, Role
from controller.gate import KernelGate, screening_gate
from controller.loop import ControlLoop, LoopConfig, PollRecord
from controller.patient import PatientRecord
from controller.prescription import Prescription, assess_change
from controller.store import Store
from controller.therapy import Therapy, WorkflowResult
from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_H, MS_PER_MIN, MS_PER_S
from hal.clock import Clock
from hal.pump import PumpDriver

__all__ = ["Controller", "ControllerSettings", "build_controller"]


@dataclass(frozen=True)
class ControllerSettings:
    """What a rig or clinic sets that a prescription does not say (units in names).

    :ivar poll_interval_ms: time between status polls, ms.
    :ivar drift_tolerance_ppm: allowed mismatch between commanded and counted volume, ppm.
    :ivar unconfirmed_alarm_ms: delivery unconfirmed this long raises THERAPY_STATUS_UNKNOWN, ms.
    :ivar refill_tolerance_pct: allowed mismatch between expected and removed volume at a refill, %.
    :ivar restart_titration_after_ms: an interruption longer than this restarts at the titration dose, ms.
    :ivar priming_duration_ms: how long the priming bolus after implant runs, ms.
    :ivar counter_clear_above_nl: clear the pump's dispensed counter when it passes this, nL (its
        display resolution coarsens as it grows).
    :ivar withdrawal_alarm_after_ms: the dose reaching the catheter tip below
        ``withdrawal_alarm_fraction_pct`` of the prescription for this long raises the high-priority
        WITHDRAWAL_RISK alarm, ms. Default 6 h: about four CSF half-lives (1.6 h, itb-clinical §6),
        well inside the 24-72 h over which the withdrawal syndrome builds (§3.2).
    :ivar withdrawal_alarm_fraction_pct: see ``withdrawal_alarm_after_ms``, % of the prescribed dose
        (default 50).
    """

    poll_interval_ms: int = 30 * MS_PER_MIN
    drift_tolerance_ppm: int = 50_000
    unconfirmed_alarm_ms: int = 2 * MS_PER_H
    refill_tolerance_pct: int = 20
    restart_titration_after_ms: int = 24 * MS_PER_H
    priming_duration_ms: int = 30 * MS_PER_MIN
    counter_clear_above_nl: int = 1_000_000
    withdrawal_alarm_after_ms: int = 6 * MS_PER_H
    withdrawal_alarm_fraction_pct: int = 50

    def __post_init__(self) -> None:
        if isinstance(self.counter_clear_above_nl, bool) or not isinstance(self.counter_clear_above_nl, int) \
                or self.counter_clear_above_nl <= 0:
            raise ConfigError("counter_clear_above_nl", self.counter_clear_above_nl, "an integer > 0 nL")
        for name in ("poll_interval_ms", "unconfirmed_alarm_ms", "priming_duration_ms", "withdrawal_alarm_after_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < MS_PER_S:
                raise ConfigError(name, value, f"an integer >= {MS_PER_S} ms")
        for name, high in (("drift_tolerance_ppm", 10_000_000), ("refill_tolerance_pct", 100),
                           ("withdrawal_alarm_fraction_pct", 100),
                           ("restart_titration_after_ms", 30 * 24 * MS_PER_H)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
                raise ConfigError(name, value, f"an integer in [0, {high}]")


def loop_config(prescription: Prescription, settings: ControllerSettings) -> LoopConfig:
    """The loop's parameters: thresholds from the prescription, timing from the settings."""
    rx = prescription
    return LoopConfig(
        poll_interval_ms=settings.poll_interval_ms,
        minimum_rate_nl_per_h=rx.rate_nl_per_h(rx.titration.minimum_rate_ng_per_day),
        drift_tolerance_ppm=settings.drift_tolerance_ppm,
        unconfirmed_alarm_ms=settings.unconfirmed_alarm_ms,
        low_reservoir_nl=rx.pump.low_reservoir_alarm_nl,
        low_reservoir_days=rx.pump.low_reservoir_alarm_days,
        empty_reservoir_nl=rx.pump.empty_threshold_nl,
        dead_volume_nl=rx.pump.dead_volume_nl,
        restart_titration_after_ms=settings.restart_titration_after_ms,
        reservoir_capacity_nl=rx.pump.pump_model.capacity_nl,
        counter_clear_above_nl=settings.counter_clear_above_nl,
        withdrawal_alarm_after_ms=settings.withdrawal_alarm_after_ms,
        withdrawal_alarm_fraction_pct=settings.withdrawal_alarm_fraction_pct,
    )


class _AlarmJournal:
    """Where the alarm manager records events: every listener (a report), then the store.

    Events are staged in the store and commit with its next transaction (every command's
    pending record, every acknowledged workflow, the periodic resume point): annunciation never
    waits for the disk, and a storage failure surfaces where durability is needed, as
    JOURNAL_WRITE_FAILURE, instead of stopping an alarm.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self.listeners: list[Callable[..., None]] = []

    def record_alarm(self, *, event: str, code: str, priority: str, actor: Actor, detail: str = "") -> None:
        for listener in self.listeners:
            listener(event=event, code=code, priority=priority, actor=actor, detail=detail)
        self.store.record_alarm(event=event, code=code, priority=priority, actor=actor, detail=detail, durable=False)


def _journal_int_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """Keep only values the journal stores exactly (no floats)."""
    return {k: v for k, v in payload.items() if v is None or isinstance(v, (bool, int, str, list))}


@dataclass
class Controller:
    """The dosing firmware for one patient and one pump, assembled by :func:`build_controller`.

    Drive it with :meth:`run_until` (virtual or real time) and its workflow methods; watch it
    with :meth:`subscribe`. Every workflow returns a :class:`~controller.therapy.WorkflowResult`
    whose reason codes are the kernel's and the workflow's.

    :ivar prescription: the prescription in effect.
    :ivar patient: the patient record.
    :ivar store: the durable store (journal, resume point, bolus records).
    :ivar gate: the safety kernel's gate.
    :ivar alarms: the alarm manager.
    :ivar loop: the control loop (owns the pump).
    :ivar therapy: the clinical workflows.
    """

    prescription: Prescription
    patient: PatientRecord
    store: Store
    gate: KernelGate
    alarms: AlarmManager
    loop: ControlLoop
    therapy: Therapy
    _alarm_journal: _AlarmJournal = field(repr=False)

    # -- time and observation ------------------------------------------------------------------------

    def now_ms(self) -> int:
        """Controller time, ms."""
        return self.loop.now_ms()

    def run_until(self, t_ms: int) -> None:
        """Handle every event due up to controller time ``t_ms``, sleeping on the clock in between."""
        self.loop.run_until(t_ms)

    def poll(self) -> PollRecord:
        """One status poll now."""
        return self.loop.poll()

    def subscribe(self, *, on_poll: Callable[[PollRecord], None] | None = None,
                  on_event: Callable[[str, dict[str, Any]], None] | None = None,
                  on_result: Callable[[WorkflowResult], None] | None = None,
                  on_alarm: Callable[..., None] | None = None) -> None:
        """Watch the controller: each poll, each therapy event, each workflow result, each alarm event."""
        if on_poll is not None:
            self.loop.observers.append(on_poll)
        if on_event is not None:
            self.loop.event_sinks.append(on_event)
        if on_result is not None:
            self.therapy.sinks.append(on_result)
        if on_alarm is not None:
            self._alarm_journal.listeners.append(on_alarm)

    def detach(self) -> None:
        """Drop every subscriber (before the controller is abandoned, as in a simulated crash)."""
        self.loop.observers.clear()
        self.loop.event_sinks.clear()
        self.therapy.sinks.clear()
        self._alarm_journal.listeners.clear()

    def recover(self) -> dict[str, Any]:
        """Resume from the store after a restart, before any command (see :meth:`ControlLoop.recover`)."""
        found = self.loop.recover()
        self.therapy.restore_state()
        return found

    # -- workflows from the prescription ---------------------------------------------------------------

    def implant(self, *, prime: bool = True, anchor_ms: int = 0) -> WorkflowResult:
        """Fill the pump with the prescription's drug and volume and start the prescribed programme.

        A simple programme starts its dose; a flex or periodic-bolus programme starts its whole day
        (authorised at once), anchored at controller time ``anchor_ms`` (its midnight).

        :param prime: run a priming bolus of the dead volume.
        """
        rx = self.prescription
        if rx.programme.mode.value in ("flex", "periodic"):
            steps = [(step.start_min * MS_PER_MIN, step.dose_ng_per_day) for step in rx.programme.steps]
            return self.therapy.implant(rx.concentration_ug_per_ml, rx.pump.reservoir_volume_nl, flex_steps=steps,
                                        anchor_ms=anchor_ms, prime=prime,
                                        periodic_boluses=list(rx.kernel_periodic_boluses()) or None)
        return self.therapy.implant(rx.concentration_ug_per_ml, rx.pump.reservoir_volume_nl,
                                    dose_ng_per_day=rx.programme.steps[0].dose_ng_per_day, prime=prime)

    def configure_patient_bolus(self) -> WorkflowResult:
        """Activate the prescription's patient bolus (size and duration; lockout and count are the kernel's)."""
        pb = self.prescription.patient_bolus
        return self.therapy.configure_patient_bolus(pb.dose_ng, pb.duration_ms)

    # -- durability ------------------------------------------------------------------------------------------

    def _journal_event(self, event: str, payload: dict[str, Any]) -> None:
        if event == "counter_cleared":
            return  # routine housekeeping; not a therapy event
        if event == "program" and payload.get("result") == "committed" and not payload.get("uncertain"):
            # A verified rate the journal can replay from the authorised programme (flex steps, bolus ends);
            # the therapy events around it are journalled. Failures and uncertain outcomes always are.
            return
        self.store.append_audit(SYSTEM_ACTOR, f"loop.{event}", new=_journal_int_payload(payload), durable=False)

    def _journal_result(self, result: WorkflowResult) -> None:
        """Journal a workflow's outcome: durably when it changed something (it is acknowledged now)."""
        self.loop.commands.durably("journal workflow", lambda: self.store.append_audit(
            SYSTEM_ACTOR, f"workflow.{result.action}", new={"allowed": result.allowed, "reasons": list(result.reasons)},
            reason=result.detail, outcome="done" if result.allowed else "denied", durable=result.allowed))


def build_controller(prescription: Prescription, patient: PatientRecord, pump: PumpDriver, clock: Clock,
                     store: Store, *, settings: ControllerSettings | None = None, kernel_module: Any = None,
                     reason: str = "") -> Controller:
    """Build the whole controller. The only place its parts are wired.

    The prescription is put in effect in the journal (with its soft-limit overrides) before any
    therapy, unless the store already holds it as the one in effect (a restart). To resume after a
    crash, build on the same store and call :meth:`Controller.recover` before anything else.

    :param prescription: the validated prescription (the single source of drug, caps, boluses,
        titration policy and reservoir).
    :param patient: the patient record (screening or documented prior dose).
    :param pump: the pump driver, connected and configured (its rate envelope bounds the kernel).
    :param clock: the injected clock.
    :param store: the durable store.
    :param settings: rig and clinic timing (default :class:`ControllerSettings`).
    :param kernel_module: a kernel implementation module (default: the selected one; tests use it to
        run the twin).
    :param reason: why this prescription is put in effect (journalled).
    :raises ConfigError: if the patient record does not belong to the prescription, or any part
        refuses its configuration.
    """
    settings = settings or ControllerSettings()
    rx = prescription
    if patient.patient_id != rx.patient.patient_id or patient.origin is not rx.patient.origin:
        raise ConfigError("patient", f"{patient.patient_id} ({patient.origin.value})",
                          f"the prescription's patient {rx.patient.patient_id} ({rx.patient.origin.value})")
    caps = pump.capabilities()
    caps_kwargs = {**rx.kernel_caps_kwargs(), "restart_threshold_ms": settings.restart_titration_after_ms}
    gate = KernelGate(rx.concentration_ug_per_ml, caps_kwargs, min_rate_nl_per_h=caps.min_rate_nl_per_h,
                      max_rate_nl_per_h=caps.max_rate_nl_per_h, kernel_module=kernel_module)
    alarm_journal = _AlarmJournal(store)
    alarms = AlarmManager(clock, alarm_journal)
    config = loop_config(rx, settings)
    loop = ControlLoop(pump, clock, gate, alarms, store, config)
    therapy = Therapy(loop, gate, patient, dead_volume_nl=config.dead_volume_nl,
                      reservoir_capacity_nl=config.reservoir_capacity_nl,
                      refill_tolerance_pct=settings.refill_tolerance_pct,
                      restart_titration_after_ms=settings.restart_titration_after_ms,
                      priming_duration_ms=settings.priming_duration_ms)
    therapy.screening_gate = screening_gate(kernel_module=kernel_module)
    therapy.replay_screening()
    controller = Controller(rx, patient, store, gate, alarms, loop, therapy, alarm_journal)
    in_effect = store.last_prescription_record()
    if in_effect is None or in_effect["toml"] != rx.to_toml():
        previous = None if in_effect is None else store.last_prescription()
        store.record_prescription(rx, Actor(rx.prescriber, Role.PRESCRIBER),
                                  assessment=assess_change(previous, rx), reason=reason)
    loop.event_sinks.append(controller._journal_event)
    therapy.sinks.append(controller._journal_result)
    return controller
