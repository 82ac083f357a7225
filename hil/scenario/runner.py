"""Running a scenario: a simulated or real rig, the controller, the timed actions, the checks.

:class:`ScenarioRunner` takes a validated :class:`~hil.scenario.schema.Scenario`
and produces a :class:`~hil.report.RunRecord`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cython_ext.errors import ConfigError, ItbError
from cython_ext.units import MS_PER_H, MS_PER_MIN
from hil.scenario.schema import (
    Action,
    EXPECT_FIELDS,
    Expectation,
    Scenario,
)

#: Syringe volume of the simulated mechanism, mL: large, so the simulated syringe never runs dry;
#: the implanted reservoir is the controller's prediction, as on a real implant.
SIM_SYRINGE_VOLUME_ML = "1000"

#: Largest ``--speed`` for scaled real time (virtual seconds per wall second).
MAX_SPEED = 1000

#: Relative tolerance of the ledger-versus-pump-counter invariant, ppm, and its floor, nL.
COUNTER_MATCH_PPM = 5_000
COUNTER_MATCH_FLOOR_NL = 20_000


@dataclass
class RunOptions:
    """How to run a scenario.

    :ivar link: simulator link (``pty``, ``inprocess``, ``tcp``) when no real pump is given.
    :ivar pump_url: a real pump's serial URL; then the run is in real time.
    :ivar speed: virtual seconds per wall second for a simulated pump (None: as fast as possible);
        must be 1 with a real pump.
    :ivar report_dir: where the report, journal, checkpoint and serial trace go (None: no files kept).
    :ivar progress: called as ``progress(elapsed_ms, duration_ms)`` after each poll.
    :ivar balance_url: a real balance's serial URL, for the scenario's accuracy step on a real rig.
    :ivar safe_mode_timeout_s: run the pump in New Era Safe mode with this watchdog, s (1-255).
        The loop's poll heartbeats it; in real (or scaled) time a driver heartbeat thread also
        runs between polls. In virtual time the poll interval must be under half the watchdog.
    """

    link: str = "pty"
    pump_url: str | None = None
    speed: float | None = None
    report_dir: Path | None = None
    progress: Any = None
    safe_mode_timeout_s: int | None = None
    balance_url: str | None = None


class _AlarmTee:
    """Journal adapter for the alarm manager: writes to the journal and keeps a copy for the report."""

    def __init__(self, journal: Any, record: Any, clock_ms: Any) -> None:
        self.journal = journal
        self.record = record
        self.clock_ms = clock_ms

    def record_alarm(self, *, event: str, code: str, priority: str, actor: Any, detail: str = "") -> None:
        from hil.report import AlarmEvent

        self.record.alarms.append(AlarmEvent(self.clock_ms(), event, code, priority, detail))
        if self.journal is not None:
            self.journal.record_alarm(event=event, code=code, priority=priority, actor=actor, detail=detail)


def _jsonable_ints(payload: dict[str, Any]) -> dict[str, Any]:
    """Keep only values the journal stores exactly (no floats)."""
    return {k: v for k, v in payload.items() if v is None or isinstance(v, (bool, int, str, list))}


class ScenarioRunner:
    """Runs one scenario on a simulated or real pump and produces a :class:`~hil.report.RunRecord`.

    :param scenario: the validated scenario.
    :param options: where and how to run it.
    """

    def __init__(self, scenario: Scenario, options: RunOptions | None = None) -> None:
        self.scenario = scenario
        self.options = options or RunOptions()
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

    # -- set-up -----------------------------------------------------------------------------------

    def _clock(self) -> Any:
        from hal.clock import SystemClock
        from sim.clock import ScaledClock, VirtualClock

        if self.options.pump_url is not None:
            return SystemClock()
        if self.options.speed is not None:
            return ScaledClock(self.options.speed)
        return VirtualClock()

    def _gate(self, concentration: int, envelope: Any) -> Any:
        from controller.gate import KernelGate

        t = self.scenario.therapy
        if self.scenario.prescription is not None:
            # The prescription is the single source of the caps.
            return KernelGate(concentration, self.scenario.prescription.kernel_caps_kwargs(),
                              min_rate_nl_per_h=envelope.min_rate_nl_per_h, max_rate_nl_per_h=envelope.max_rate_nl_per_h)
        caps = dict(
            max_dose_ng_per_day=t.max_dose_ug_per_day * 1000,
            origin=self.scenario.patient.origin,
            bolus_enabled=True,
            patient_bolus_enabled=t.patient_bolus_enabled,
            max_bolus_ng=t.max_bolus_ug * 1000,
            bolus_lockout_ms=t.bolus_lockout_ms,
            max_boluses_per_day=t.max_boluses_per_day,
            minimum_rate_nl_per_h=t.minimum_rate_nl_per_h,
            max_priming_volume_nl=max(300_000, t.dead_volume_nl),
        )
        return KernelGate(concentration, caps, min_rate_nl_per_h=envelope.min_rate_nl_per_h,
                          max_rate_nl_per_h=envelope.max_rate_nl_per_h)

    def _loop_config(self) -> Any:
        from controller.loop import LoopConfig

        t = self.scenario.therapy
        return LoopConfig(
            poll_interval_ms=self.scenario.settings.poll_interval_ms,
            minimum_rate_nl_per_h=t.minimum_rate_nl_per_h,
            drift_tolerance_ppm=int(t.drift_tolerance_pct * 10_000),
            unconfirmed_alarm_ms=t.unconfirmed_alarm_ms,
            low_reservoir_nl=t.low_reservoir_nl,
            low_reservoir_days=t.low_reservoir_days,
            empty_reservoir_nl=t.empty_reservoir_nl,
            dead_volume_nl=t.dead_volume_nl,
            restart_titration_after_ms=t.restart_titration_after_ms,
            reservoir_capacity_nl=self.scenario.pump.reservoir_capacity_nl,
        )

    def _build_controller(self) -> None:
        from controller.alarms import AlarmManager
        from controller.loop import ControlLoop
        from controller.therapy import Therapy

        gate = self._gate(self._concentration, self._caps)
        self.alarms = AlarmManager(self.clock, self._tee)
        self.loop = ControlLoop(self.driver, self.clock, gate, self.alarms, self.store, self._loop_config())
        self.loop.journal = self.journal
        self.therapy = Therapy(self.loop, gate, dead_volume_nl=self.scenario.therapy.dead_volume_nl,
                               reservoir_capacity_nl=self.scenario.pump.reservoir_capacity_nl,
                               refill_tolerance_pct=int(self.scenario.therapy.refill_tolerance_pct),
                               restart_titration_after_ms=self.scenario.therapy.restart_titration_after_ms)
        from controller.gate import screening_gate

        self.therapy.screening_gate = getattr(self, "_screening_gate", None) or screening_gate()
        self._screening_gate = self.therapy.screening_gate
        self.gate = gate
        self.loop.observers.append(self._on_poll)
        self.loop.event_sinks.append(self._on_event)
        self.therapy.sinks.append(self._on_result)

    # -- callbacks ---------------------------------------------------------------------------------

    def _rel_ms(self) -> int:
        return self.loop.now_ms() - self.t0_ms if hasattr(self, "loop") else 0

    def _on_poll(self, poll: Any) -> None:
        from hil.report import Sample

        rel = poll.now_ms - self.t0_ms
        hours = poll.interval_ms / MS_PER_H
        if hours > 0:
            self.patient.set_infusion(poll.delivered_pg / 1000 / hours)
        state = self.patient.advance_to(max(self.patient.time_s, rel / 1000))
        conc = self.loop.concentration_ug_per_ml
        actual_nl = poll.delivered_nl
        if self.rig is not None:
            total = self.rig.device.mechanics.actual_delivered_nl()
            actual_nl, self._last_actual_nl = total - self._last_actual_nl, total
        if conc:
            self.delivered_pg += actual_nl * conc
            self.programmed_pg += poll.expected_nl * conc
        self.record.samples.append(Sample(
            t_ms=rel, rate_nl_per_h=poll.rate_nl_per_h, dose_24h_ug=poll.dose_24h_ng / 1000,
            cap_ug_per_day=poll.cap_ng_per_day / 1000, reservoir_ml=poll.reservoir_nl / 1e6,
            ashworth=round(state.ashworth, 3), effect_ng_per_ml=round(state.effect_ng_per_ml, 2)))
        if poll.dose_24h_ng > poll.cap_ng_per_day:
            self._breach("cap", f"rolling 24 h {poll.dose_24h_ng} ng > cap {poll.cap_ng_per_day} ng at {rel} ms")
        if poll.status_known and poll.mode in ("running", "minimum_rate") and self.loop.committed_rate_nl_per_h == 0:
            self._breach("zero_flow", f"zero flow while {poll.mode} at {rel} ms")
        if self.options.progress is not None:
            self.options.progress(rel, self.scenario.settings.duration_ms)

    def _on_event(self, event: str, payload: dict[str, Any]) -> None:
        from controller.audit import SYSTEM_ACTOR

        if event == "fault":
            self.faults.append(payload)
        if event == "counter_cleared":
            return  # routine housekeeping; not a therapy event
        if event == "program" and payload.get("result") == "committed" and not payload.get("uncertain"):
            # A verified rate the journal can replay from the authorised programme (flex steps, bolus ends);
            # the therapy events around it are journalled. Failures and uncertain outcomes always are.
            return
        if event == "stopped" and self.loop.mode.value == "running":
            self._breach("zero_flow", "stopped while running")
        if self.journal is not None:
            self.journal.append_audit(SYSTEM_ACTOR, f"loop.{event}", new=_jsonable_ints(payload))

    def _on_result(self, result: Any) -> None:
        from controller.audit import Actor, Role
        from hil.report import DecisionEvent

        self.record.decisions.append(DecisionEvent(self._rel_ms(), result.action, self._label, result.allowed,
                                                   tuple(result.reasons), result.detail))
        if self._label:
            self.results_by_label[self._label] = result
        if self.journal is not None:
            self.journal.append_audit(Actor("scenario", Role.CLINICIAN), f"workflow.{result.action}",
                                      new={"allowed": result.allowed, "reasons": list(result.reasons),
                                           "label": self._label},
                                      reason=result.detail, outcome="done" if result.allowed else "denied")

    def _breach(self, name: str, detail: str) -> None:
        self.breaches.setdefault(name, detail)

    # -- actions ---------------------------------------------------------------------------------------

    def _do(self, action: Action) -> None:
        p = action.params
        th = self.therapy
        self._label = action.label
        do = action.do
        if do == "screening_dose":
            result = th.screening_dose(p["dose_ug"], adequate=p["adequate"], effect_ms=int(p["effect_h"] * MS_PER_H))
            if result.allowed:
                self.patient.advance_to(max(self.patient.time_s, self._rel_ms() / 1000))
                self.patient.bolus(p["dose_ug"] * 1000)
        elif do == "implant":
            rx = self.scenario.prescription
            if rx is not None and rx.programme.mode.value in ("flex", "periodic"):
                steps = [(step.start_min * MS_PER_MIN, step.dose_ng_per_day) for step in rx.programme.steps]
                periodic = list(rx.kernel_periodic_boluses()) or None
                th.implant(rx.concentration_ug_per_ml, rx.pump.reservoir_volume_nl, flex_steps=steps,
                           anchor_ms=self.t0_ms, prime=p["prime"], periodic_boluses=periodic)
            elif rx is not None:
                th.implant(rx.concentration_ug_per_ml, rx.pump.reservoir_volume_nl,
                           dose_ng_per_day=rx.programme.steps[0].dose_ng_per_day, prime=p["prime"])
            else:
                dose = None if p["dose_ug_per_day"] is None else p["dose_ug_per_day"] * 1000
                th.implant(p["concentration_ug_per_ml"], p["fill_ml"], dose_ng_per_day=dose, prime=p["prime"])
        elif do == "titrate":
            if p["dose_ug_per_day"] is not None:
                target = p["dose_ug_per_day"] * 1000
            else:
                current = th.prescribed_dose_ng_per_day
                target = int(current * (100 + p["change_pct"]) / 100)
            th.titrate(target, reason=p["reason"], override_reason=p["override_reason"])
        elif do == "flex":
            th.set_flex(list(p["steps"]), anchor_ms=self.t0_ms, override_reason=p["override_reason"])
        elif do == "clinician_bolus":
            th.clinician_bolus(p["dose_ug"] * 1000, p["duration_min"])
        elif do == "configure_patient_bolus":
            rx = self.scenario.prescription
            if rx is not None:
                th.configure_patient_bolus(rx.patient_bolus.dose_ng, rx.patient_bolus.duration_ms)
            else:
                th.configure_patient_bolus(p["dose_ug"] * 1000, p["duration_min"])
        elif do == "patient_bolus":
            th.patient_bolus_request()
        elif do == "refill":
            th.refill(removed_nl=p["removed_ml"], added_nl=p["added_ml"],
                      concentration_ug_per_ml=p["concentration_ug_per_ml"], lot=p["lot"],
                      acknowledge_mismatch=p["acknowledge_mismatch"], complete=p["complete"])
        elif do == "fault":
            self._inject(p["kind"], clear=False)
        elif do == "clear_fault":
            self._inject(p["kind"], clear=True)
        elif do == "acknowledge_alarms":
            th.acknowledge_alarms()
        elif do == "taper":
            th.taper(p["target_dose_ug_per_day"] * 1000, authorised_by=p["authorised_by"])
        elif do == "discontinue":
            th.discontinue(authorised_by=p["authorised_by"], emergency=p["emergency"])
        elif do == "restart_controller":
            self._restart()
        self._label = ""

    def _inject(self, kind: str, *, clear: bool) -> None:
        from hil.report import DecisionEvent

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
                                                   self._label, True, (), f"{kind} injected" if not clear else f"{kind} cleared"))

    def _restart(self) -> None:
        """Drop the controller without saving anything (a crash) and start a new one from the store."""
        from hil.report import DecisionEvent

        self.loop.observers.clear()
        self.loop.event_sinks.clear()
        self._build_controller()
        found = self.loop.recover()
        self.therapy.restore_state()
        self.record.decisions.append(DecisionEvent(self._rel_ms(), "restart_controller", self._label, True, (),
                                                   f"resumed: {found}"))

    # -- the run ---------------------------------------------------------------------------------------

    def run(self) -> Any:
        """Run the scenario to its end and evaluate expectations and invariants."""
        import contextlib
        import tempfile
        import time
        from datetime import timezone

        import hal
        from controller.checkpoint import CheckpointStore
        from controller.journal import Journal
        from hal.pump import Direction
        from hil.report import RunRecord
        from sim.patient import Patient, PatientParameters
        from sim.rig import simulated_pump

        sc = self.scenario
        self.record = record = RunRecord(scenario=sc.settings.name, source=sc.source, description=sc.settings.description,
                                         duration_ms=sc.settings.duration_ms)
        self.breaches: dict[str, str] = {}
        self.faults: list[dict[str, Any]] = []
        self.results_by_label: dict[str, Any] = {}
        self._label = ""
        self.delivered_pg = 0
        self.programmed_pg = 0
        self._last_actual_nl = 0
        self.rig = None
        self.journal = None
        self.accuracy_outcome = None
        params = PatientParameters.sampled(sc.settings.seed, variability_cv=float(sc.patient.variability_cv))
        self.patient = Patient(params)
        implant = next((a for a in sc.actions if a.do == "implant"), None)
        if sc.prescription is not None:
            self._concentration = sc.prescription.concentration_ug_per_ml
        else:
            self._concentration = implant.params["concentration_ug_per_ml"] if implant else 500
        self.clock = self._clock()
        record.started_utc = self.clock.utc_now().astimezone(timezone.utc).isoformat()
        wall0 = time.perf_counter()
        with contextlib.ExitStack() as stack:
            work = self.options.report_dir
            if work is None:
                work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="itb-run-")))
            work.mkdir(parents=True, exist_ok=True)
            trace = work / "serial-trace.txt"
            for stale in ("journal.sqlite", "checkpoint.sqlite"):
                for suffix in ("", "-wal", "-shm"):
                    (work / (stale + suffix)).unlink(missing_ok=True)
            if self.options.balance_url is not None and (sc.accuracy is None or self.options.pump_url is None):
                raise ConfigError("balance_url", self.options.balance_url,
                                  "given only with a real pump and a scenario that has an [accuracy] step")
            if sc.accuracy is not None:
                # Before therapy, while the pump's port is still free: the step opens pump and balance itself.
                from hil.gravimetric.step import run_accuracy_step

                self.accuracy_outcome = run_accuracy_step(
                    sc.accuracy, report_dir=work / "accuracy", pump_url=self.options.pump_url,
                    balance_url=self.options.balance_url)
            if self.options.pump_url is None:
                self.rig = stack.enter_context(simulated_pump(
                    self.options.link, clock=self.clock, seed=sc.settings.seed, faults=sc.pump.faults,
                    syringe_diameter_mm=str(sc.pump.syringe_diameter_mm), syringe_volume_ml=SIM_SYRINGE_VOLUME_ML,
                    bias_pct=float(sc.pump.bias_pct), noise_pct=float(sc.pump.noise_pct)))
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
            self._caps = self.driver.configure(syringe_diameter_mm=sc.pump.syringe_diameter_mm)
            self.driver.set_target_volume(0)
            self.driver.set_direction(Direction.INFUSE)
            self.journal = Journal(work / "journal.sqlite", self.clock)
            stack.callback(self.journal.close)
            self.store = CheckpointStore(work / "checkpoint.sqlite")
            stack.callback(self.store.close)
            self._tee = _AlarmTee(self.journal, record, lambda: self._rel_ms())
            if sc.prescription is not None:
                from controller.audit import Actor, Role
                from controller.prescription import assess_change

                # The prescription in effect, with its soft-limit overrides, before any therapy.
                self.journal.record_prescription(sc.prescription, Actor(sc.prescription.prescriber, Role.PRESCRIBER),
                                                 assessment=assess_change(None, sc.prescription),
                                                 reason=f"scenario {sc.settings.name}: {sc.prescription_source}")
            self._build_controller()
            self.t0_ms = self.loop.now_ms()
            try:
                for action in sc.actions:
                    self.loop.run_until(self.t0_ms + action.at_ms)
                    self._do(action)
                self.loop.run_until(self.t0_ms + sc.settings.duration_ms)
                self.loop.poll()
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

    def _finish(self, record: Any) -> None:
        from hil.report import CheckResult

        record.delivered_ug = self.delivered_pg / 1e6
        record.prescribed_ug = self.programmed_pg / 1e6
        record.delivered_by_kind_ug = {k: v / 1e6 for k, v in self.loop.delivered_pg_by_kind.items()}
        state = self.patient.state()
        record.patient = {
            "ashworth_final": round(state.ashworth, 3),
            "effect_ng_per_ml_final": round(state.effect_ng_per_ml, 2),
            "peak_overdose": self.patient.peak_overdose.name,
            "peak_withdrawal": self.patient.peak_withdrawal.name,
        }
        fc = self.loop.forecast()
        record.reservoir = {
            "remaining_ml": round(self.loop.reservoir_nl() / 1e6, 4),
            "concentration_ug_per_ml": self.loop.concentration_ug_per_ml,
            "days_to_low_alarm": None if fc is None else round(float(fc.days_to_low_alarm), 2),
            "low_alarm_utc": None if fc is None else fc.low_alarm_utc.isoformat(),
            "refill_due_utc": None if fc is None else fc.refill_due_utc.isoformat(),
        }
        pump_counted_nl = None
        if self.rig is not None:
            pump_counted_nl = self.rig.device.mechanics.infused_scaled // 3_600_000_000_000
            record.pump_dispensed_ml = pump_counted_nl / 1e6
        else:
            record.pump_dispensed_ml = self.loop.total_counted_nl / 1e6
        inv = record.invariants
        inv.append(CheckResult("rolling 24 h dose never above the cap", "cap" not in self.breaches,
                               self.breaches.get("cap", "checked at every poll")))
        inv.append(CheckResult("flow never zero without an authorised discontinue or STOP reaction",
                               "zero_flow" not in self.breaches and not self.loop.breaches,
                               self.breaches.get("zero_flow", "; ".join(self.loop.breaches) or "checked at every poll")))
        if pump_counted_nl is not None:
            diff = abs(pump_counted_nl - self.loop.total_counted_nl)
            limit = max(COUNTER_MATCH_FLOOR_NL, pump_counted_nl * COUNTER_MATCH_PPM // 1_000_000)
            inv.append(CheckResult("ledger matches the pump's dispensed volume", diff <= limit,
                                   f"ledger {self.loop.total_counted_nl} nL, pump {pump_counted_nl} nL, "
                                   f"difference {diff} nL (limit {limit} nL)"))
        boluses = self.store.boluses()
        record.boluses = [
            {"bolus_id": b.bolus_id, "kind": b.kind, "dose_ng": b.dose_ng, "volume_nl": b.volume_nl,
             "delivered_nl": b.delivered_nl, "status": b.status, "requested_t_ms": b.requested_ms - self.t0_ms,
             "detail": b.detail}
            for b in boluses
        ]
        ids = [b.bolus_id for b in boluses]
        twice = [b for b in boluses if b.delivered_nl is not None and b.delivered_nl > b.volume_nl + 1000]
        unfinished = [b for b in boluses if b.status != "finished" and (self.loop.bolus is None
                                                                       or self.loop.bolus.bolus_id != b.bolus_id)]
        running_id = None if self.loop.bolus is None else self.loop.bolus.bolus_id
        pending = [c for c in self.journal.pending_boluses() if c.command_id != running_id]
        inv.append(CheckResult("no bolus delivered twice",
                               len(ids) == len(set(ids)) and not twice and not unfinished and not pending,
                               f"{len(boluses)} boluses; over-delivered {len(twice)}; left open {len(unfinished)}; "
                               f"unresolved in the journal {len(pending)}"))
        raised = {a.code for a in record.alarms if a.event == "raise"}
        missing = sorted({f["alarm"] for f in self.faults} - raised)
        inv.append(CheckResult("every fault produced its alarm", not missing,
                               f"{len(self.faults)} faults" + (f"; missing {missing}" if missing else "")))
        if self.accuracy_outcome is not None:
            step = self.scenario.accuracy
            record.expectations.append(CheckResult(
                f"accuracy step: mean error within ±{step.max_abs_mean_error_pct:g} %", self.accuracy_outcome.passed,
                f"{self.accuracy_outcome.detail}; report in {self.accuracy_outcome.report_dir.name}/"))
        for exp in self.scenario.expectations:
            record.expectations.append(self._expect(exp, record, raised, boluses))

    def _expect(self, exp: Expectation, record: Any, raised: set[str], boluses: list[Any]) -> Any:
        from hil.report import CheckResult

        p = exp.params
        c = exp.check
        if c == "dose_within":
            err = record.dose_error_pct
            ok = err is not None and abs(err) <= float(p["tolerance_pct"])
            return CheckResult(f"delivered dose within {p['tolerance_pct']} % of programmed", ok,
                               f"delivered {record.delivered_ug:.1f} µg, programmed {record.prescribed_ug:.1f} µg"
                               + ("" if err is None else f" ({err:+.2f} %)"))
        if c == "alarm_raised":
            return CheckResult(f"alarm {p['code']} raised", p["code"] in raised, "raised" if p["code"] in raised else "not raised")
        if c == "alarm_not_raised":
            return CheckResult(f"alarm {p['code']} not raised", p["code"] not in raised,
                               "raised" if p["code"] in raised else "not raised")
        if c in ("denied", "allowed"):
            result = self.results_by_label.get(p["action"])
            if result is None:
                return CheckResult(f"{p['action']} {c}", False, "the action produced no decision")
            if c == "allowed":
                return CheckResult(f"{p['action']} allowed", result.allowed, result.detail or ",".join(result.reasons))
            ok = not result.allowed and (p["reason"] is None or p["reason"] in result.reasons)
            return CheckResult(f"{p['action']} denied" + (f" with {p['reason']}" if p["reason"] else ""), ok,
                               ",".join(result.reasons) or "allowed")
        if c == "no_overdose":
            peak = self.patient.peak_overdose
            return CheckResult("patient never overdosed", peak.value == 0, f"peak {peak.name}")
        if c == "no_severe_withdrawal":
            peak = self.patient.peak_withdrawal
            return CheckResult("patient never in severe withdrawal", peak.value < 2, f"peak {peak.name}")
        if c == "ashworth_at_most":
            final = self.patient.state().ashworth
            return CheckResult(f"final Ashworth at most {p['score']}", final <= float(p["score"]), f"{final:.2f}")
        if c == "boluses_delivered":
            n = sum(1 for b in boluses if b.kind == p["kind"] and b.status == "finished"
                    and not b.detail.startswith("not started"))
            return CheckResult(f"{p['count']} {p['kind']} boluses delivered", n == p["count"], f"{n} delivered")
        if c == "mode_at_end":
            mode = self.loop.mode.value
            return CheckResult(f"controller ends in mode {p['mode']}", mode == p["mode"], mode)
        if c == "invariants_hold":
            ok = all(i.passed for i in record.invariants)
            return CheckResult("all safety invariants hold", ok, "see the invariants table")
        raise ConfigError("expect.check", c, f"one of {tuple(EXPECT_FIELDS)}")


def run_scenario(scenario: Scenario, options: RunOptions | None = None) -> Any:
    """Run ``scenario`` and return its :class:`~hil.report.RunRecord` (see :class:`ScenarioRunner`)."""
    return ScenarioRunner(scenario, options).run()
