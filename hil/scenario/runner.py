"""Running a scenario: a simulated or real rig, the controller through its front door, the actions, the checks.

:class:`ScenarioRunner` takes a validated :class:`~hil.scenario.schema.Scenario` and
produces a :class:`~hil.report.RunRecord`:

1. an optional accuracy step (:mod:`hil.gravimetric.step`), before therapy;
2. the rig: a simulated NE-1000 (:func:`sim.rig.simulated_pump`, over a pty, TCP or
   in-process) or a real pump's serial URL, opened through :func:`hal.open_pump`;
3. the controller, built by :func:`controller.assembly.build_controller` from the
   scenario's prescription and patient record on one durable store;
4. the timed actions (:data:`hil.scenario.actions.ACTIONS`), with the patient model fed
   from each poll;
5. the checks (:mod:`hil.scenario.checks`).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass
from datetime import timezone
from pathlib import Path
from typing import Any

import hal
from controller.assembly import Controller, ControllerSettings, build_controller
from controller.journal import CommandRecord
from controller.loop import PollRecord
from controller.patient import PatientRecord
from controller.store import Store
from controller.therapy import WorkflowResult
from cython_ext.errors import ConfigError, ItbError
from hal.clock import Clock, SystemClock
from hal.pump import Direction
from hil.gravimetric.step import run_accuracy_step
from hil.report import AlarmEvent, DecisionEvent, PumpCommand, RunRecord, Sample
from hil.scenario.actions import ACTIONS
from hil.scenario.checks import EXPECTATIONS, accuracy_check, invariants
from hil.scenario.schema import Scenario
from sim.catheter import PhysicalCatheter
from sim.clock import ScaledClock, VirtualClock
from sim.patient import Patient, PatientParameters
from sim.rig import simulated_pump

#: Syringe volume of the simulated mechanism, mL: large, so the simulated syringe never runs dry;
#: the implanted reservoir is the controller's prediction, as on a real implant.
SIM_SYRINGE_VOLUME_ML = "1000"

#: Largest ``--speed`` for scaled real time (virtual seconds per wall second).
MAX_SPEED = 1000

#: The run's durable store, in the report directory.
STORE_FILE = "journal.sqlite"

#: Units of the simulated mechanism's internal counter per nL (see :mod:`sim.newera.mechanics`).
_SIM_COUNTER_UNITS_PER_NL = 3_600_000_000_000


@dataclass
class RunOptions:
    """How to run a scenario.

    :ivar link: simulator link (``pty``, ``inprocess``, ``tcp``) when no real pump is given.
    :ivar pump_url: a real pump's serial URL; then the run is in real time.
    :ivar speed: virtual seconds per wall second for a simulated pump (None: as fast as possible);
        must be 1 with a real pump.
    :ivar report_dir: where the report, journal and serial trace go (None: no files kept).
    :ivar progress: called as ``progress(elapsed_ms, duration_ms)`` after each poll.
    :ivar balance_url: a real balance's serial URL, for the scenario's accuracy step on a real rig.
    :ivar safe_mode_timeout_s: run the pump in New Era Safe mode with this watchdog, s (1-255).
        The loop's poll heartbeats it; in real (or scaled) time a driver heartbeat thread also
        runs between polls. In virtual time the poll interval must be under half the watchdog.
    :ivar pace_baud: pace the simulated pump's bytes at this baud (pty and TCP links; the wire time of
        every exchange is then spent in real time, whatever the clock).
    """

    link: str = "pty"
    pump_url: str | None = None
    speed: float | None = None
    report_dir: Path | None = None
    progress: Any = None
    safe_mode_timeout_s: int | None = None
    balance_url: str | None = None
    pace_baud: int | None = None


class ScenarioRunner:
    """Runs one scenario on a simulated or real pump and produces a :class:`~hil.report.RunRecord`.

    :param scenario: the validated scenario (it must name a prescription: the single source of therapy).
    :param options: where and how to run it.
    """

    def __init__(self, scenario: Scenario, options: RunOptions | None = None) -> None:
        self.scenario = scenario
        self.options = options or RunOptions()
        if scenario.prescription is None:
            raise ConfigError("scenario.prescription", None,
                              "a prescription file (the single source of drug, caps, boluses and titration policy)")
        if self.options.pump_url is not None and self.options.speed not in (None, 1, 1.0):
            raise ConfigError("speed", self.options.speed, "1 with a real pump (--pump runs in real time)")
        if self.options.speed is not None and not 0 < self.options.speed <= MAX_SPEED:
            # Faster, and the few milliseconds of a programming exchange outlast the kernel's 60 s
            # decision age in scaled time; virtual time (no --speed) has no such limit.
            raise ConfigError("speed", self.options.speed, f"in (0, {MAX_SPEED}] (omit it for virtual time)")
        if self.options.pump_url is None and self.options.link not in ("pty", "inprocess", "tcp"):
            raise ConfigError("link", self.options.link, "one of pty, inprocess, tcp")
        safe = self.options.safe_mode_timeout_s
        if safe is not None:
            if isinstance(safe, bool) or not isinstance(safe, int) or not 1 <= safe <= 255:
                raise ConfigError("safe_mode_timeout_s", safe, "an integer in [1, 255] s")
            virtual = self.options.pump_url is None and self.options.speed is None
            if virtual and scenario.settings.poll_interval_ms * 2 >= safe * 1000:
                raise ConfigError("safe_mode_timeout_s", safe,
                                  f"more than twice the poll interval ({scenario.settings.poll_interval_ms / 1000:g} s) "
                                  "in virtual time, where only polls feed the watchdog")
        rx = scenario.prescription
        #: The patient record, kept across simulated crashes (it is the clinic's, not the controller's).
        self.patient_record = PatientRecord(rx.patient.patient_id, rx.patient.origin)
        self.controller: Controller
        self.t0_ms = 0

    # -- set-up -----------------------------------------------------------------------------------

    def _clock(self) -> Clock:
        if self.options.pump_url is not None:
            return SystemClock()
        if self.options.speed is not None:
            return ScaledClock(self.options.speed)
        return VirtualClock()

    def _settings(self) -> ControllerSettings:
        t = self.scenario.therapy
        return ControllerSettings(
            poll_interval_ms=self.scenario.settings.poll_interval_ms,
            drift_tolerance_ppm=int(t.drift_tolerance_pct * 10_000),
            unconfirmed_alarm_ms=t.unconfirmed_alarm_ms,
            refill_tolerance_pct=int(t.refill_tolerance_pct),
            restart_titration_after_ms=t.restart_titration_after_ms,
        )

    def _build_controller(self) -> None:
        """The controller through its front door, on the run's store (also after a simulated crash)."""
        sc = self.scenario
        self.controller = build_controller(
            sc.prescription, self.patient_record, self.driver, self.clock, self.store, settings=self._settings(),
            reason=f"scenario {sc.settings.name}: {sc.prescription_source}")
        self.controller.subscribe(on_poll=self._on_poll, on_event=self._on_event, on_result=self._on_result,
                                  on_alarm=self._on_alarm)

    # -- callbacks ---------------------------------------------------------------------------------

    def _rel_ms(self) -> int:
        return self.controller.now_ms() - self.t0_ms

    def _on_poll(self, poll: PollRecord) -> None:
        rel = poll.now_ms - self.t0_ms
        conc = self.controller.loop.concentration_ug_per_ml
        moved_nl = poll.delivered_nl
        tip_pg = poll.delivered_pg
        if self.rig is not None:
            # The simulator's truth: the volume its mechanism moved, through the physical catheter.
            total = self.rig.device.mechanics.actual_delivered_nl()
            moved_nl, self._last_actual_nl = total - self._last_actual_nl, total
            tip_pg = self.catheter.push(max(0, moved_nl))
            self.tip_pg += tip_pg
        start_s = max(self.patient.time_s, (rel - poll.interval_ms) / 1000)
        state = self.patient.receive_intrathecal(tip_pg / 1e6, start_s, max(start_s, rel / 1000))
        if conc:
            self.delivered_pg += moved_nl * conc
            self.programmed_pg += poll.expected_nl * conc
        self.record.samples.append(Sample(
            t_ms=rel, rate_nl_per_h=poll.rate_nl_per_h, dose_24h_ug=poll.dose_24h_ng / 1000,
            cap_ug_per_day=poll.cap_ng_per_day / 1000, reservoir_ml=poll.reservoir_nl / 1e6,
            ashworth=round(state.ashworth, 3), effect_ng_per_ml=round(state.effect_ng_per_ml, 2)))
        if poll.dose_24h_ng > poll.cap_ng_per_day:
            self._breach("cap", f"rolling 24 h {poll.dose_24h_ng} ng > cap {poll.cap_ng_per_day} ng at {rel} ms")
        if poll.status_known and poll.mode in ("running", "minimum_rate") \
                and self.controller.loop.committed_rate_nl_per_h == 0:
            self._breach("zero_flow", f"zero flow while {poll.mode} at {rel} ms")
        if self.options.progress is not None:
            self.options.progress(rel, self.scenario.settings.duration_ms)

    def physical_solution(self, concentration_ug_per_ml: int) -> None:
        """The reservoir now really holds this drug (an implant fill, a completed refill)."""
        self.catheter.change_solution(concentration_ug_per_ml)

    def _on_event(self, event: str, payload: dict[str, Any]) -> None:
        if event == "fault":
            self.faults.append(payload)
        if event == "stopped" and self.controller.loop.mode.value == "running":
            self._breach("zero_flow", "stopped while running")

    def _on_result(self, result: WorkflowResult) -> None:
        self.record.decisions.append(DecisionEvent(self._rel_ms(), result.action, self._label, result.allowed,
                                                   tuple(result.reasons), result.detail))
        if self._label:
            self.results_by_label[self._label] = result

    def _on_alarm(self, *, event: str, code: str, priority: str, actor: Any, detail: str = "") -> None:
        self.record.alarms.append(AlarmEvent(self._rel_ms(), event, code, priority, detail))

    def _breach(self, name: str, detail: str) -> None:
        self.breaches.setdefault(name, detail)

    # -- what actions use ----------------------------------------------------------------------------

    def patient_model_bolus(self, dose_ng: int) -> None:
        """A test dose given by lumbar puncture, now (the patient model only: no pump is involved)."""
        self.patient.advance_to(max(self.patient.time_s, self._rel_ms() / 1000))
        self.patient.bolus(dose_ng)

    def inject_fault(self, kind: str, *, clear: bool) -> None:
        """Inject (or clear) a device fault in the simulated pump; a real pump takes none."""
        if self.rig is None:
            self.record.decisions.append(DecisionEvent(self._rel_ms(), "fault", self._label, False,
                                                       ("NO_SIMULATOR",), f"{kind}: only a simulated pump takes faults"))
            return
        device = self.rig.device
        if kind == "stall" and not clear:
            device.inject_stall()
        elif kind == "occlusion":
            device.set_occluded(not clear)
        elif kind == "power_cycle" and not clear:
            device.power_cycle()
        self.record.decisions.append(DecisionEvent(self._rel_ms(), "clear_fault" if clear else "fault",
                                                   self._label, True, (),
                                                   f"{kind} injected" if not clear else f"{kind} cleared"))

    def restart_controller(self) -> None:
        """Drop the controller without saving anything (a crash) and build a new one on the same store."""
        self.controller.detach()
        self._build_controller()
        found = self.controller.recover()
        self.record.decisions.append(DecisionEvent(self._rel_ms(), "restart_controller", self._label, True, (),
                                                   f"resumed: {found}"))

    # -- the run ---------------------------------------------------------------------------------------

    def _reset(self, record: RunRecord) -> None:
        sc = self.scenario
        self.record = record
        self.breaches: dict[str, str] = {}
        self.faults: list[dict[str, Any]] = []
        self.results_by_label: dict[str, WorkflowResult] = {}
        self._label = ""
        self.delivered_pg = 0
        self.programmed_pg = 0
        self._last_actual_nl = 0
        self.tip_pg = 0
        #: The catheter as it physically is (simulated rigs): saline until drug is pushed through it; the
        #: patient model receives what leaves its tip, which knows nothing of the controller's accounting.
        self.catheter = PhysicalCatheter(sc.prescription.pump.dead_volume_nl)
        self.rig: Any = None
        self.accuracy_outcome: Any = None
        params = PatientParameters.sampled(sc.settings.seed, variability_cv=float(sc.patient.variability_cv))
        self.patient = Patient(params)

    def _open_rig(self, stack: contextlib.ExitStack, work: Path, record: RunRecord) -> None:
        """The pump (simulated, or the real one at ``pump_url``), connected and configured, and the store."""
        sc = self.scenario
        trace = work / "serial-trace.txt"
        if self.options.pump_url is None:
            self.rig = stack.enter_context(simulated_pump(
                self.options.link, clock=self.clock, seed=sc.settings.seed, faults=sc.pump.faults,
                syringe_diameter_mm=str(sc.pump.syringe_diameter_mm), syringe_volume_ml=SIM_SYRINGE_VOLUME_ML,
                bias_pct=float(sc.pump.bias_pct), noise_pct=float(sc.pump.noise_pct),
                pace_baud=self.options.pace_baud))
            url = self.rig.url
            record.link = f"simulated NE-1000 over {self.options.link}"
        else:
            url = self.options.pump_url
            record.link = "real pump"
        record.pump_url = url
        self.driver = hal.open_pump("ne1000", url, clock=self.clock, trace_path=trace,
                                    safe_mode_timeout_s=self.options.safe_mode_timeout_s)
        stack.callback(self.driver.close)
        if self.options.safe_mode_timeout_s is not None and (self.options.pump_url or self.options.speed):
            beat = getattr(self.driver, "start_heartbeat_thread", None)
            if callable(beat):
                beat()
        record.trace_file = trace.name
        self.driver.configure(syringe_diameter_mm=sc.pump.syringe_diameter_mm)
        self.driver.set_target_volume(0)
        self.driver.set_direction(Direction.INFUSE)
        self.store = Store(work / STORE_FILE, self.clock)
        stack.callback(self.store.close)

    def run(self) -> RunRecord:
        """Run the scenario to its end and evaluate expectations and invariants."""
        sc = self.scenario
        record = RunRecord(scenario=sc.settings.name, source=sc.source, description=sc.settings.description,
                           duration_ms=sc.settings.duration_ms)
        self._reset(record)
        self.clock = self._clock()
        record.started_utc = self.clock.utc_now().astimezone(timezone.utc).isoformat()
        wall0 = time.perf_counter()
        with contextlib.ExitStack() as stack:
            work = self.options.report_dir
            if work is None:
                work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="itb-run-")))
            work.mkdir(parents=True, exist_ok=True)
            for stale in (STORE_FILE, "checkpoint.sqlite"):
                for suffix in ("", "-wal", "-shm"):
                    (work / (stale + suffix)).unlink(missing_ok=True)
            if self.options.balance_url is not None and (sc.accuracy is None or self.options.pump_url is None):
                raise ConfigError("balance_url", self.options.balance_url,
                                  "given only with a real pump and a scenario that has an [accuracy] step")
            if sc.accuracy is not None:
                # Before therapy, while the pump's port is still free: the step opens pump and balance itself.
                self.accuracy_outcome = run_accuracy_step(
                    sc.accuracy, report_dir=work / "accuracy", pump_url=self.options.pump_url,
                    balance_url=self.options.balance_url)
            self._open_rig(stack, work, record)
            self._build_controller()
            self.t0_ms = self.controller.now_ms()
            try:
                for action in sc.actions:
                    self.controller.run_until(self.t0_ms + action.at_ms)
                    self._label = action.label
                    ACTIONS[action.do](self, action.params)
                    self._label = ""
                self.controller.run_until(self.t0_ms + sc.settings.duration_ms)
                self.controller.poll()
            except ItbError as exc:
                record.error = f"{type(exc).__name__}: {exc}"
            except KeyboardInterrupt:
                # The operator stopped the run: the pump keeps its last committed programme running.
                record.error = "interrupted by the operator; the pump keeps its last committed programme"
            record.wall_s = time.perf_counter() - wall0
            self._finish(record)
            if self.options.report_dir is None:
                record.trace_file = ""
        return record

    # -- evaluation ---------------------------------------------------------------------------------------

    def _finish(self, record: RunRecord) -> None:
        loop = self.controller.loop
        record.delivered_ug = self.delivered_pg / 1e6
        record.prescribed_ug = self.programmed_pg / 1e6
        record.delivered_at_tip_ug = self.tip_pg / 1e6 if self.rig is not None else None
        record.delivered_by_kind_ug = {k: v / 1e6 for k, v in loop.delivered_pg_by_kind.items()}
        state = self.patient.state()
        record.patient = {
            "ashworth_final": round(state.ashworth, 3),
            "effect_ng_per_ml_final": round(state.effect_ng_per_ml, 2),
            "peak_overdose": self.patient.peak_overdose.name,
            "peak_withdrawal": self.patient.peak_withdrawal.name,
        }
        fc = loop.forecast()
        record.reservoir = {
            "remaining_ml": round(loop.reservoir_nl() / 1e6, 4),
            "concentration_ug_per_ml": loop.concentration_ug_per_ml,
            "days_to_low_alarm": None if fc is None else round(float(fc.days_to_low_alarm), 2),
            "low_alarm_utc": None if fc is None else fc.low_alarm_utc.isoformat(),
            "refill_due_utc": None if fc is None else fc.refill_due_utc.isoformat(),
        }
        pump_counted_nl = None
        if self.rig is not None:
            pump_counted_nl = self.rig.device.mechanics.infused_scaled // _SIM_COUNTER_UNITS_PER_NL
            record.pump_dispensed_ml = pump_counted_nl / 1e6
        else:
            record.pump_dispensed_ml = loop.total_counted_nl / 1e6
        record.invariants.extend(invariants(self, record, pump_counted_nl))
        record.commands = [_pump_command(c, self.t0_ms) for c in self.controller.store.commands()]
        record.low_reservoir_ml = self.scenario.prescription.pump.low_reservoir_alarm_nl / 1e6
        boluses = self.controller.store.boluses()
        record.boluses = [
            {"bolus_id": b.bolus_id, "kind": b.kind, "dose_ng": b.dose_ng, "volume_nl": b.volume_nl,
             "delivered_nl": b.delivered_nl, "status": b.status, "requested_t_ms": b.requested_ms - self.t0_ms,
             "detail": b.detail}
            for b in boluses
        ]
        if self.accuracy_outcome is not None:
            record.accuracy_report = f"{self.accuracy_outcome.report_dir.name}/report.html"
            step = self.scenario.accuracy
            record.expectations.append(accuracy_check(step, self.accuracy_outcome))
        raised = {a.code for a in record.alarms if a.event == "raise"}
        for exp in self.scenario.expectations:
            record.expectations.append(EXPECTATIONS[exp.check](self, exp.params, record, raised))


def _pump_command(command: CommandRecord, t0_ms: int) -> PumpCommand:
    """A journalled command as the report shows it."""
    detail = command.detail if isinstance(command.detail, dict) else {}
    text = detail.get("detail") or ("" if command.detail is None or detail else str(command.detail))
    return PumpCommand(t_ms=command.pending_monotonic_ns // 1_000_000 - t0_ms, command=command.kind,
                       outcome=command.status, rate_nl_per_h=command.params.get("rate_nl_per_h"),
                       volume_nl=command.params.get("volume_nl"), command_id=command.command_id,
                       detail=str(text or command.params.get("cause", "")))


def run_scenario(scenario: Scenario, options: RunOptions | None = None) -> RunRecord:
    """Run ``scenario`` and return its :class:`~hil.report.RunRecord` (see :class:`ScenarioRunner`)."""
    return ScenarioRunner(scenario, options).run()

