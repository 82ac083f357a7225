"""Running a scenario: a simulated or real rig, the controller through its front door, the actions, the checks.

:class:`ScenarioRunner` takes a validated :class:`~hil.scenario.schema.Scenario` and
produces a :class:`~hil.report.RunRecord`:

1. the report directory is claimed (:func:`hil.rundir.claim`: an earlier run's journal is
   never deleted or overwritten);
2. an optional accuracy step (:mod:`hil.gravimetric.step`), before therapy;
3. the rig: a simulated NE-1000 (:func:`sim.rig.simulated_pump`, over a pty, TCP or
   in-process) or a pump's serial URL (a real pump, or ``itb sim serve``), opened through
   :func:`hal.open_pump`;
4. the controller, built by :func:`controller.assembly.build_controller` from the
   scenario's prescription and patient record on one durable store;
5. the timed actions (:data:`hil.scenario.actions.ACTIONS`), with the patient model fed
   from each poll; each action is journalled (``scenario.action``) before it runs;
6. the checks (:mod:`hil.scenario.checks`).

**Resuming** (``RunOptions(existing=Existing.RESUME)``, ``itb run --resume DIR``): the run
continues from its journal. Only a pump that outlived the dead controller can be resumed
against: a real pump, or ``itb sim serve`` in its own process (``--pump URL``, with
``pump_simulated`` and the same ``speed``). A simulated pump served inside ``itb run`` died
with it, so such a run is refused. The runner opens the pump, reads its syringe diameter
(a query), builds the controller on the same store and calls
:meth:`~controller.assembly.Controller.recover` before any command (DESIGN principle 7).
The report is rebuilt from the run log (:mod:`hil.scenario.runlog`) and covers the whole
run; each time the controller was down is a *gap* (``RunRecord.gaps``) with the volume
the pump counted meanwhile. An action the journal shows under way when the controller died
(a command, a bolus or a workflow result after its ``scenario.action`` entry) is not
repeated; one that had not reached the pump or the record runs again. Actions whose time
passed while the controller was down run late, with a note.

Every poll is also journalled as a reading (:meth:`~controller.journal.Journal.record_reading`,
group-committed: it commits with the next transaction, at the latest at the loop's checkpoint or
when :data:`~controller.journal.READINGS_PER_COMMIT` wait; a crash loses at most the readings
since the last commit, and the recovery, which reads the pump's counter, is the same).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import hal
from controller.assembly import Controller, ControllerSettings, build_controller
from controller.audit import SYSTEM_ACTOR
from controller.journal import CommandRecord, EntryKind, JournalEntry
from controller.loop import Mode, PollRecord
from controller.patient import History, PatientRecord
from controller.store import Store
from controller.therapy import WorkflowResult
from cython_ext.errors import ConfigError, DeviceError, ItbError
from cython_ext.units import MS_PER_H, NG_PER_UG
from hal.clock import Clock, SystemClock
from hal.pump import Direction
from hil.gravimetric.step import run_accuracy_step
from hil.output import software
from hil.report import AlarmEvent, DecisionEvent, PumpCommand, RunRecord, Sample
from hil.rundir import Existing, claim
from hil.scenario.actions import ACTIONS
from hil.scenario.checks import EXPECTATIONS, accuracy_check, implicit_checks, invariants
from hil.scenario.runlog import RUN_LOG_FILE, RunLog, read_run_log
from hil.scenario.schema import Scenario, load_scenario
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
#: The run's set-up, written once at its start and read by ``--resume``.
MANIFEST_FILE = "run.json"
#: The serial trace of the first controller session; later sessions add ``-2``, ``-3``...
TRACE_FILE = "serial-trace.txt"
#: Files that make a report directory hold a run (never deleted or overwritten).
DURABLE_FILES = (STORE_FILE, f"{STORE_FILE}-wal", MANIFEST_FILE, RUN_LOG_FILE)
#: Journal actions of the runner's own entries.
START_ACTION = "scenario.start"
ACTION_ACTION = "scenario.action"

log = logging.getLogger(__name__)

#: Units of the simulated mechanism's internal counter per nL (see :mod:`sim.newera.mechanics`).
_SIM_COUNTER_UNITS_PER_NL = 3_600_000_000_000


class TransitWatch:
    """What reached the catheter tip while a concentration change's old drug crossed it (issue #9).

    From each ``transit_start`` event until an hour after its ``transit_end``, the drug that left
    the tip is compared with the programme's dose (its rate at its concentration) in windows of
    at least :data:`WINDOW_MS`; polls with a bolus running restart the window. The result is kept
    in the run log, so a resumed run judges the whole run.

    :ivar ended: the ``transit_end`` payloads, in order.
    :ivar windows: windows compared so far.
    :ivar worst_pct: the largest relative error of a window, %, or None before the first.
    """

    #: Shortest comparison window, ms.
    WINDOW_MS = 30 * 60_000
    #: How long after a transit ends the tip is still watched, ms.
    TAIL_MS = MS_PER_H

    def __init__(self) -> None:
        self.ended: list[dict[str, Any]] = []
        self.windows = 0
        self.worst_pct: float | None = None
        self.running = False
        self._watch_until_ms: int | None = None
        self._tip_pg = self._prescribed_pg = self._window_ms = 0

    def on_event(self, event: str, payload: dict[str, Any], rel_ms: int) -> None:
        if event == "transit_start":
            self.running, self._watch_until_ms = True, None
            self._restart_window()
        elif event == "transit_end":
            self.running = False
            self.ended.append(payload)
            self._watch_until_ms = rel_ms + self.TAIL_MS

    def on_poll(self, rel_ms: int, interval_ms: int, tip_pg: int, prescribed_pg: int | None) -> float | None:
        """Add one poll; the relative error of the window it completes, %, or None."""
        if not self.running and (self._watch_until_ms is None or rel_ms > self._watch_until_ms):
            self._watch_until_ms = None
            return None
        if prescribed_pg is None:
            self._restart_window()
            return None
        self._tip_pg += tip_pg
        self._prescribed_pg += prescribed_pg
        self._window_ms += interval_ms
        if self._window_ms < self.WINDOW_MS or self._prescribed_pg <= 0:
            return None
        error = abs(self._tip_pg - self._prescribed_pg) * 100 / self._prescribed_pg
        self.add_window(error)
        self._restart_window()
        return error

    def add_window(self, error_pct: float) -> None:
        self.windows += 1
        self.worst_pct = error_pct if self.worst_pct is None else max(self.worst_pct, error_pct)

    def _restart_window(self) -> None:
        self._tip_pg = self._prescribed_pg = self._window_ms = 0


class PrescribedDose:
    """The prescription's dose that should have reached the patient, pg (``prescribed_at_tip_ug``).

    Integrated between marks (each poll, after each action, at a recovery) from the programme in force at
    the earlier mark: a flex or periodic programme by its own integral, else its basal rate at the
    reservoir's concentration (during a concentration transit that is the new drug's rate, whatever rate
    the pump holds to push the old drug out at the old dose). It runs from the implant to a discontinue,
    and on through fault stops and minimum rate: the prescription still asks for its dose then, which the
    patient did not get. It knows nothing of the catheter: it is the prescription's side of the tip.
    Boluses are added by the runner (their authorised doses, priming excepted: priming fills the catheter).

    :ivar pg: the dose so far, pg.
    """

    def __init__(self) -> None:
        self.pg = 0
        self._mark_ms: int | None = None
        self._programme: Any = None
        self._pg_per_h = 0

    def mark(self, loop: Any, now_ms: int) -> int:
        """Add the dose since the last mark, then take the programme in force now; returns what was added, pg.

        :param loop: the controller's loop (its mode, programme, basal rate and reservoir concentration).
        :param now_ms: controller time, ms.
        """
        added = 0
        if self._mark_ms is not None and now_ms > self._mark_ms:
            if self._programme is not None:
                added = self._programme.delivered_pg(self._mark_ms, now_ms)
            else:
                added = self._pg_per_h * (now_ms - self._mark_ms) // MS_PER_H
        self.pg += added
        self._mark_ms = now_ms if self._mark_ms is None else max(self._mark_ms, now_ms)
        in_force = loop.mode not in (Mode.IDLE, Mode.DISCONTINUED)
        self._programme = loop.programme if in_force else None
        self._pg_per_h = loop.basal_rate_nl_per_h * (loop.concentration_ug_per_ml or 0) if in_force else 0
        return added

    def restart_at(self, loop: Any, since_ms: int) -> None:
        """After a recovery: the programme recovered has been in force since ``since_ms`` (controller ms;
        nothing changes a programme while no controller runs)."""
        self._mark_ms = None
        self.mark(loop, since_ms)


@dataclass
class RunOptions:
    """How to run a scenario.

    :ivar link: simulator link (``pty``, ``inprocess``, ``tcp``) when no pump URL is given.
    :ivar pump_url: a pump's serial URL (a real pump, or ``itb sim serve`` with ``pump_simulated``);
        then the run is in real time, or scaled by ``speed`` for a simulator.
    :ivar speed: virtual seconds per wall second (None: virtual time, as fast as possible); with a
        pump URL only for ``pump_simulated``, and equal to the simulator's ``--speed``.
    :ivar report_dir: where the report, journal and serial trace go (None: no files kept).
    :ivar progress: called as ``progress(elapsed_ms, duration_ms)`` after each poll.
    :ivar balance_url: a real balance's serial URL, for the scenario's accuracy step on a real rig.
    :ivar safe_mode_timeout_s: run the pump in New Era Safe mode with this watchdog, s (1-255).
        The loop's poll heartbeats it; in real (or scaled) time a driver heartbeat thread also
        runs between polls. In virtual time the poll interval must be under half the watchdog.
    :ivar pace_baud: pace the simulated pump's bytes at this baud (pty and TCP links; the wire time of
        every exchange is then spent in real time, whatever the clock).
    :ivar pump_simulated: the pump at ``pump_url`` is ``itb sim serve`` (the report says so).
    :ivar baudrate: the pump's baud rate, bit/s.
    :ivar address: the pump's network address, 0-99.
    :ivar duration_ms: run for this long instead of the scenario's duration, ms; actions after
        it are skipped with a note, and so are expectations about them.
    :ivar existing: what to do if the report directory holds an earlier run (:class:`~hil.rundir.Existing`).
    :ivar on_ready: called with the record once the pump is connected and the controller is
        built (or recovered), before the first action (the CLI prints its banner there).
    :ivar clock_epoch: for scaled time, ``(utc, unix_s)`` of the run clock's monotonic zero:
        every controller session's clock runs at ``speed`` from it, wall and monotonic time alike,
        so a resumed run's gap is counted in scaled time, like the simulator's, and a resumed
        process is a restart, not a reboot.
    """

    link: str = "pty"
    pump_url: str | None = None
    speed: float | None = None
    report_dir: Path | None = None
    progress: Any = None
    safe_mode_timeout_s: int | None = None
    balance_url: str | None = None
    pace_baud: int | None = None
    pump_simulated: bool = False
    baudrate: int = 19200
    address: int = 0
    duration_ms: int | None = None
    existing: Existing = Existing.REFUSE
    on_ready: Any = None
    clock_epoch: tuple[str, float] | None = None


@dataclass
class _Replayed:
    """What the run log of a resumed run's earlier sessions says about where they stopped.

    :ivar last_alive_ms: the latest time any line shows the controller alive (a poll, an alarm, a
        decision, a transit window...), ms: when it stopped, as near as the log knows.
    :ivar last_sample_ms: the time of the last poll the log kept, ms (samples are group-flushed, so a
        kill may lose a few after it; see :mod:`hil.scenario.runlog`).
    :ivar last_total_nl: the ledger's counted volume at that poll, nL (the gap's count starts there).
    :ivar gaps_nl: the volume of earlier gaps, nL.
    """

    last_alive_ms: int = 0
    last_sample_ms: int = 0
    last_total_nl: int = 0
    gaps_nl: int = 0

    def seen(self, t_ms: int) -> None:
        self.last_alive_ms = max(self.last_alive_ms, t_ms)


@dataclass(frozen=True)
class _LoggedResult:
    """A workflow result read back from the run log (what expectations look at)."""

    allowed: bool
    reasons: tuple[str, ...]
    detail: str


def scenario_digest(scenario: Scenario) -> str:
    """SHA-256 of the scenario file and its prescription as run (``""`` when they are not files)."""
    digest = hashlib.sha256()
    for source in (scenario.source, scenario.prescription_source):
        path = Path(str(source))
        digest.update(path.read_bytes() if path.is_file() else str(source).encode())
    return digest.hexdigest()


def read_manifest(report_dir: Path) -> dict[str, Any]:
    """The set-up of the run in ``report_dir`` (``run.json``), for ``--resume``.

    :raises ConfigError: there is no readable manifest.
    """
    path = report_dir / MANIFEST_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError("--resume", str(report_dir), f"a report directory of itb run holding {MANIFEST_FILE}",
                          detail=str(exc)) from None


def resume_options(report_dir: Path, **overrides: Any) -> tuple[Scenario, RunOptions]:
    """The scenario and options of the run in ``report_dir``, to resume it.

    :param overrides: :class:`RunOptions` fields to change (``pump_url`` when the port was renamed,
        ``progress``, ``on_ready``); ``None`` values are ignored.
    :raises ConfigError: no manifest, or the scenario or its prescription changed since the run began.
    """
    manifest = read_manifest(report_dir)
    scenario = load_scenario(manifest["scenario_source"])
    if scenario_digest(scenario) != manifest["scenario_sha256"]:
        raise ConfigError("--resume", str(report_dir),
                          f"the scenario and prescription files as they were when the run began "
                          f"({manifest['scenario_source']} has changed)")
    fields = dict(manifest["options"])
    fields["clock_epoch"] = tuple(manifest["clock_epoch"]) if manifest.get("clock_epoch") else None
    fields.update({k: v for k, v in overrides.items() if v is not None})
    return scenario, RunOptions(report_dir=report_dir, existing=Existing.RESUME, **fields)


def _journal_entries(store: Store, action: str) -> list[JournalEntry]:
    return [e for e in store.entries(EntryKind.AUDIT) if e.action == action]


def _took_effect(store: Store, after_seq: int) -> bool:
    """Whether anything after journal entry ``after_seq`` shows an action reached the pump or the record."""
    for entry in store.entries():
        if entry.seq <= after_seq:
            continue
        if entry.kind in (EntryKind.COMMAND.value, EntryKind.PRESCRIPTION.value, EntryKind.PROGRAMME.value,
                          EntryKind.OVERRIDE.value):
            return True
        if entry.kind == EntryKind.AUDIT.value and entry.action.startswith("workflow."):
            return True
    return False


class ScenarioRunner:
    """Runs one scenario on a simulated or real pump and produces a :class:`~hil.report.RunRecord`.

    :param scenario: the validated scenario (it must name a prescription: the single source of therapy).
    :param options: where and how to run it.
    :raises ConfigError: the options do not fit the scenario or each other (nothing is opened).
    """

    def __init__(self, scenario: Scenario, options: RunOptions | None = None) -> None:
        self.scenario = scenario
        self.options = options = options or RunOptions()
        if scenario.prescription is None:
            raise ConfigError("scenario.prescription", None,
                              "a prescription file (the single source of drug, caps, boluses and titration policy)")
        if options.pump_simulated and options.pump_url is None:
            raise ConfigError("pump_simulated", True, "given only with a pump URL (itb sim serve's endpoint)")
        if options.pump_url is not None and not options.pump_simulated and options.speed not in (None, 1, 1.0):
            raise ConfigError("speed", options.speed, "1 with a real pump (--pump runs in real time)")
        if options.speed is not None and not 0 < options.speed <= MAX_SPEED:
            # Faster, and the few milliseconds of a programming exchange outlast the kernel's 60 s
            # decision age in scaled time; virtual time (no --speed) has no such limit.
            raise ConfigError("speed", options.speed, f"in (0, {MAX_SPEED}] (omit it for virtual time)")
        if options.pump_simulated and options.speed is None:
            raise ConfigError("speed", None, "the --speed that itb sim serve runs at (it serves in scaled real time)")
        if options.pump_url is None and options.link not in ("pty", "inprocess", "tcp"):
            raise ConfigError("link", options.link, "one of pty, inprocess, tcp")
        if options.existing is Existing.RESUME and (options.pump_url is None or options.report_dir is None):
            raise ConfigError("--resume", None if options.report_dir is None else str(options.report_dir),
                              "a run against a pump that outlived its controller (a real pump or itb sim serve, "
                              "--pump URL); a simulated pump served inside itb run died with it")
        if options.duration_ms is not None and (isinstance(options.duration_ms, bool)
                                                or not isinstance(options.duration_ms, int)
                                                or options.duration_ms <= 0):
            raise ConfigError("duration_ms", options.duration_ms, "an integer > 0 ms")
        if options.balance_url is not None and (scenario.accuracy is None or options.pump_url is None):
            raise ConfigError("balance_url", options.balance_url,
                              "given only with a real pump and a scenario that has an [accuracy] step")
        safe = options.safe_mode_timeout_s
        if safe is not None:
            if isinstance(safe, bool) or not isinstance(safe, int) or not 1 <= safe <= 255:
                raise ConfigError("safe_mode_timeout_s", safe, "an integer in [1, 255] s")
            virtual = options.pump_url is None and options.speed is None
            if virtual and scenario.settings.poll_interval_ms * 2 >= safe * 1000:
                raise ConfigError("safe_mode_timeout_s", safe,
                                  f"more than twice the poll interval ({scenario.settings.poll_interval_ms / 1000:g} s) "
                                  "in virtual time, where only polls feed the watchdog")
        #: How long this run lasts, ms (the scenario's, or the shortened one).
        self.duration_ms = options.duration_ms or scenario.settings.duration_ms
        rx = scenario.prescription
        #: The patient record, kept across simulated crashes (it is the clinic's, not the controller's).
        history = History(scenario.patient.history)
        prior = scenario.patient.prior_dose_ug_per_day
        self.patient_record = PatientRecord(rx.patient.patient_id, rx.patient.origin, history,
                                            prior_dose_ng_per_day=None if prior is None else prior * NG_PER_UG)
        self.controller: Controller
        self.t0_ms = 0
        self.t0_utc = ""
        self.log: RunLog | None = None
        #: The store's commit count when the run log was last flushed for a commit.
        self._log_flushed_at_write = 0

    # -- set-up -----------------------------------------------------------------------------------

    def _clock(self) -> Clock:
        speed = self.options.speed
        if self.options.pump_url is not None and not self.options.pump_simulated:
            return SystemClock()
        if speed is not None:
            epoch = self.options.clock_epoch
            if epoch is None:
                return ScaledClock(speed)
            # The epoch is the run clock's monotonic zero: this session's clock continues from it.
            elapsed_s = (time.time() - epoch[1]) * speed
            return ScaledClock(speed, start_utc=datetime.fromisoformat(epoch[0]) + timedelta(seconds=elapsed_s),
                               start_monotonic_ns=round(elapsed_s * 1e9))
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
            sc.prescription, self.patient_record, self.driver, self.clock, self.store,
            prescription_file=sc.prescription_file, settings=self._settings(),
            reason=f"scenario {sc.settings.name}: {sc.prescription_source}")
        self.controller.subscribe(on_poll=self._on_poll, on_event=self._on_event, on_result=self._on_result,
                                  on_alarm=self._on_alarm)

    def _log(self, kind: str, **fields: Any) -> None:
        if self.log is not None:
            self.log.write(kind, **fields)

    # -- callbacks ---------------------------------------------------------------------------------

    def _rel_ms(self) -> int:
        return self.controller.now_ms() - self.t0_ms

    def _feed_patient(self, rel_ms: int, interval_ms: int, tip_pg: int) -> None:
        start_s = max(self.patient.time_s, (rel_ms - interval_ms) / 1000)
        self.patient.infuse_intrathecal(tip_pg / 1e6, start_s, max(start_s, rel_ms / 1000))

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
        self._feed_patient(rel, poll.interval_ms, tip_pg)
        loop = self.controller.loop
        steady = loop.bolus is None and poll.mode == "running" and bool(conc)
        error = self.transit_watch.on_poll(
            rel, poll.interval_ms, tip_pg,
            loop.basal_rate_nl_per_h * conc * poll.interval_ms // MS_PER_H if steady else None)
        if error is not None:
            self._log("transit_window", t_ms=rel, error_pct=round(error, 3))
        delivered_pg = moved_nl * conc if conc else 0
        programmed_pg = poll.expected_nl * conc if conc else 0
        self.delivered_pg += delivered_pg
        self.programmed_pg += programmed_pg
        prescribed_tip_pg = self.prescribed_dose.mark(loop, poll.now_ms)
        sample = Sample(
            t_ms=rel, rate_nl_per_h=poll.rate_nl_per_h, dose_24h_ug=poll.dose_24h_ng / 1000,
            cap_ug_per_day=poll.cap_ng_per_day / 1000, reservoir_ml=poll.reservoir_nl / 1e6,
            ashworth=round(self.patient.ashworth(), 3), effect_ng_per_ml=round(self.patient.effect_ng_per_ml(), 2))
        self.record.samples.append(sample)
        total_nl = self.controller.loop.total_counted_nl
        if self.log is not None:
            self.log.sample(sample=dict(vars(sample)), interval_ms=poll.interval_ms, tip_pg=tip_pg,
                            delivered_pg=delivered_pg, programmed_pg=programmed_pg,
                            prescribed_tip_pg=prescribed_tip_pg, total_counted_nl=total_nl)
            if self.store.writes != self._log_flushed_at_write:
                # The journal committed: the run log's samples follow it now, not at the next group.
                self._log_flushed_at_write = self.store.writes
                self.log.flush()
        self.controller.store.record_reading(
            {"t_ms": rel, "status_known": poll.status_known, "mode": poll.mode, "rate_nl_per_h": poll.rate_nl_per_h,
             "delivered_nl": poll.delivered_nl, "total_counted_nl": total_nl, "dose_24h_ng": poll.dose_24h_ng,
             "reservoir_nl": poll.reservoir_nl}, durable=False)
        if poll.dose_24h_ng > poll.cap_ng_per_day:
            self._breach("cap", f"rolling 24 h {poll.dose_24h_ng} ng > cap {poll.cap_ng_per_day} ng at {rel} ms")
        if poll.status_known and poll.mode in ("running", "minimum_rate") \
                and self.controller.loop.committed_rate_nl_per_h == 0:
            self._breach("zero_flow", f"zero flow while {poll.mode} at {rel} ms")
        if self.options.progress is not None:
            self.options.progress(rel, self.duration_ms)

    def physical_solution(self, concentration_ug_per_ml: int) -> None:
        """The reservoir now really holds this drug (an implant fill, a completed refill)."""
        self.catheter.change_solution(concentration_ug_per_ml)

    def _on_event(self, event: str, payload: dict[str, Any]) -> None:
        if event in ("transit_start", "transit_end"):
            self.transit_watch.on_event(event, payload, self._rel_ms())
            self._log("transit", event=event, t_ms=self._rel_ms(), payload=payload)
        if event == "fault":
            self.faults.append(payload)
            self._log("fault", payload=payload)
        if event == "stopped" and self.controller.loop.mode.value == "running":
            self._breach("zero_flow", "stopped while running")

    def _decision(self, event: DecisionEvent) -> None:
        self.record.decisions.append(event)
        self._log("decision", **asdict(event))

    def _on_result(self, result: WorkflowResult) -> None:
        self._decision(DecisionEvent(self._rel_ms(), result.action, self._label, result.allowed,
                                     tuple(result.reasons), result.detail))
        if self._label:
            self.results_by_label[self._label] = result

    def _on_alarm(self, *, event: str, code: str, priority: str, actor: Any, detail: str = "") -> None:
        alarm = AlarmEvent(self._rel_ms(), event, code, priority, detail)
        self.record.alarms.append(alarm)
        self._log("alarm", **asdict(alarm))

    def _breach(self, name: str, detail: str) -> None:
        if name not in self.breaches:
            self.breaches[name] = detail
            self._log("breach", name=name, detail=detail)

    def _note(self, text: str) -> None:
        self.record.notes.append(text)
        self._log("note", text=text)

    # -- what actions use ----------------------------------------------------------------------------

    def patient_model_bolus(self, dose_ng: int) -> None:
        """A test dose given by lumbar puncture, now (the patient model only: no pump is involved)."""
        rel = self._rel_ms()
        self.patient.advance_to(max(self.patient.time_s, rel / 1000))
        self.patient.bolus(dose_ng)
        self._log("test_dose", t_ms=rel, dose_ng=dose_ng)

    def inject_fault(self, kind: str, *, clear: bool) -> None:
        """Inject (or clear) a device fault in the simulated pump; a pump behind a URL takes none."""
        if self.rig is None:
            self._decision(DecisionEvent(self._rel_ms(), "fault", self._label, False, ("NO_SIMULATOR",),
                                         f"{kind}: only a simulated pump served by itb run takes faults"))
            return
        device = self.rig.device
        if kind == "stall" and not clear:
            device.inject_stall()
        elif kind == "occlusion":
            device.set_occluded(not clear)
        elif kind == "power_cycle" and not clear:
            device.power_cycle()
        elif kind == "seize":
            device.seize_motor(not clear)  # the motor turns no more, and the pump does not notice (SAFE-05)
        self._decision(DecisionEvent(self._rel_ms(), "clear_fault" if clear else "fault", self._label, True, (),
                                     f"{kind} injected" if not clear else f"{kind} cleared"))

    def restart_controller(self) -> None:
        """Drop the controller without saving anything (a crash) and build a new one on the same store."""
        self.controller.detach()
        self._build_controller()
        found = self.controller.recover()
        self._decision(DecisionEvent(self._rel_ms(), "restart_controller", self._label, True, (),
                                     f"resumed: {found}"))

    # -- the run ---------------------------------------------------------------------------------------

    def _reset(self, record: RunRecord) -> None:
        sc = self.scenario
        self.record = record
        self.breaches: dict[str, str] = {}
        self.faults: list[dict[str, Any]] = []
        self.results_by_label: dict[str, Any] = {}
        self._label = ""
        self.delivered_pg = 0
        self.programmed_pg = 0
        self.prescribed_dose = PrescribedDose()
        self._last_actual_nl = 0
        self.tip_pg = 0
        #: The catheter as it physically is (simulated rigs): saline until drug is pushed through it; the
        #: patient model receives what leaves its tip, which knows nothing of the controller's accounting.
        self.catheter = PhysicalCatheter(sc.prescription.pump.dead_volume_nl)
        self.transit_watch = TransitWatch()
        self.rig: Any = None
        self.accuracy_outcome: Any = None
        params = PatientParameters.sampled(sc.settings.seed, variability_cv=float(sc.patient.variability_cv))
        self.patient = Patient(params)

    def _simulation(self) -> dict[str, Any] | None:
        """What was simulated, by what, with which settings (None: a real pump)."""
        sc, o = self.scenario, self.options
        if o.pump_url is not None:
            if not o.pump_simulated:
                return None
            pump = {"simulator": "itb sim serve", "version": "of the serving process",
                    "settings": {"url": o.pump_url, "speed": f"{o.speed:g}x real time"}}
        else:
            pump = {"simulator": f"sim.newera.Ne1000 ({self.rig.device.profile.name})",
                    "version": software()["version"],
                    "settings": {"link": o.link, "time": "virtual" if o.speed is None else f"{o.speed:g}x real time",
                                 "seed": sc.settings.seed, "faults": list(sc.pump.faults) or "none",
                                 "bias_pct": float(sc.pump.bias_pct), "noise_pct": float(sc.pump.noise_pct),
                                 "syringe_diameter_mm": str(sc.pump.syringe_diameter_mm),
                                 "syringe_volume_ml": SIM_SYRINGE_VOLUME_ML}}
        return {"pump": pump, "balance": None}

    def _open_rig(self, stack: contextlib.ExitStack, work: Path, record: RunRecord, trace: Path) -> None:
        """The pump (simulated, or the one at ``pump_url``) connected, and the store; configured unless resuming."""
        sc = self.scenario
        if self.options.pump_url is None:
            self.rig = stack.enter_context(simulated_pump(
                self.options.link, clock=self.clock, seed=sc.settings.seed, faults=sc.pump.faults,
                address=self.options.address,
                syringe_diameter_mm=str(sc.pump.syringe_diameter_mm), syringe_volume_ml=SIM_SYRINGE_VOLUME_ML,
                bias_pct=float(sc.pump.bias_pct), noise_pct=float(sc.pump.noise_pct),
                pace_baud=self.options.pace_baud))
            url = self.rig.url
            record.link = f"simulated NE-1000 over {self.options.link}"
        else:
            url = self.options.pump_url
            record.link = "simulated NE-1000 (itb sim serve)" if self.options.pump_simulated else "real pump"
        record.pump_url = url
        record.simulation = self._simulation()
        self.driver = hal.open_pump("ne1000", url, clock=self.clock, trace_path=trace,
                                    safe_mode_timeout_s=self.options.safe_mode_timeout_s,
                                    address=self.options.address, baudrate=self.options.baudrate)
        stack.callback(self.driver.close)
        if self.options.safe_mode_timeout_s is not None and (self.options.pump_url or self.options.speed):
            beat = getattr(self.driver, "start_heartbeat_thread", None)
            if callable(beat):
                beat()
        record.trace_file = trace.name
        if self.options.existing is Existing.RESUME:
            # Reconcile before any command: a query only; the pump keeps what it is doing.
            diameter = self.driver.read_diameter_mm()
            if diameter != Decimal(str(sc.pump.syringe_diameter_mm)):
                raise DeviceError(f"the pump's syringe diameter is {diameter} mm, the run's "
                                  f"{sc.pump.syringe_diameter_mm} mm: not the pump this run was on")
        else:
            self.driver.configure(syringe_diameter_mm=sc.pump.syringe_diameter_mm)
            self.driver.set_target_volume(0)
            self.driver.set_direction(Direction.INFUSE)
        self.store = Store(work / STORE_FILE, self.clock)
        stack.callback(self.store.close)

    def _write_manifest(self, work: Path) -> None:
        o = self.options
        epoch = o.clock_epoch
        if o.speed is not None and epoch is None:
            # The wall and real times of the clock's monotonic zero, for later sessions of the run.
            mono_s = self.clock.monotonic_ns() / 1e9
            epoch = ((self.clock.utc_now() - timedelta(seconds=mono_s)).isoformat(), time.time() - mono_s / o.speed)
        manifest = {
            "schema": "itb.run-manifest/1",
            "scenario_source": str(self.scenario.source),
            "scenario_sha256": scenario_digest(self.scenario),
            "options": {"link": o.link, "pump_url": o.pump_url, "speed": o.speed, "pump_simulated": o.pump_simulated,
                        "safe_mode_timeout_s": o.safe_mode_timeout_s, "baudrate": o.baudrate, "address": o.address,
                        "duration_ms": o.duration_ms},
            "clock_epoch": epoch,
        }
        part = work / (MANIFEST_FILE + ".part")
        part.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        os.replace(part, work / MANIFEST_FILE)

    def _trace_path(self, work: Path, resume: bool) -> Path:
        if not resume:
            return work / TRACE_FILE
        n = 2
        while (work / f"serial-trace-{n}.txt").exists():
            n += 1
        return work / f"serial-trace-{n}.txt"

    def _start(self, work: Path) -> int:
        """A new run: journal its start; the first action to run is 0."""
        self._build_controller()
        self.t0_ms = self.controller.now_ms()
        self.controller.store.append_audit(
            SYSTEM_ACTOR, START_ACTION, new={"t0_ms": self.t0_ms, "scenario": self.scenario.settings.name,
                                             "duration_ms": self.duration_ms}, reason=str(self.scenario.source))
        return 0

    def _resume(self, work: Path) -> int:
        """Continue the run in ``work`` from its journal; returns the index of the next action to run.

        The run log is read and replayed into the record before the controller recovers: the recovery
        raises this session's alarms (CONTROLLER_DEATH...) and logs them, and a replay after it took them
        for the dead session's (the gap then began at the restart, and each such alarm was reported twice).
        """
        store = self.store
        starts = _journal_entries(store, START_ACTION)
        if not starts:
            raise ConfigError("--resume", str(work), "a journal that holds a started scenario run")
        in_effect = store.last_prescription_record()
        if in_effect is None or in_effect["toml"] != self.scenario.prescription.to_toml():
            raise ConfigError("--resume", str(work), "the prescription the journal holds in effect")
        self.t0_ms = int(starts[-1].new["t0_ms"])
        self.t0_utc = starts[-1].utc
        earlier = self._replay_log(list(read_run_log(work / RUN_LOG_FILE)))
        self._build_controller()
        found = self.controller.recover()
        now = self._rel_ms()
        gap_nl = max(0, self.controller.loop.total_counted_nl - earlier.last_total_nl)
        conc = self.controller.loop.concentration_ug_per_ml
        self.delivered_pg += (earlier.gaps_nl + gap_nl) * conc
        self.programmed_pg += (earlier.gaps_nl + gap_nl) * conc
        gap = {"from_t_ms": earlier.last_alive_ms, "to_t_ms": now, "delivered_nl": gap_nl,
               "counted_from_t_ms": earlier.last_sample_ms}
        self.record.gaps.append(gap)
        self.prescribed_dose.restart_at(self.controller.loop, self.t0_ms + earlier.last_sample_ms)
        self._log("gap", **gap, prescribed_tip_pg=self.prescribed_dose.mark(self.controller.loop, self.t0_ms + now))
        self._decision(DecisionEvent(now, "resume_run", "", True, (), f"resumed from the journal: {found}"))
        markers = _journal_entries(store, ACTION_ACTION)
        if not markers:
            return 0
        last = markers[-1]
        index = int(last.new["index"])
        label = last.new.get("label") or last.new.get("do")
        if _took_effect(store, last.seq):
            self._note(f"action {index} ({label}) was the last begun before the controller stopped; the journal "
                       "shows it reached the pump or the record, so it is not repeated")
            return index + 1
        self._note(f"action {index} ({label}) had not reached the pump or the record when the controller "
                   "stopped; it runs again")
        return index

    def _replay_log(self, lines: list[dict[str, Any]]) -> _Replayed:
        """Rebuild the record from the earlier sessions' run-log ``lines`` (see :class:`_Replayed`)."""
        record = self.record
        replayed = _Replayed()
        for line in lines:
            kind = line.pop("type")
            if kind == "sample":
                sample = Sample(**line["sample"])
                record.samples.append(sample)
                self._feed_patient(sample.t_ms, line["interval_ms"], line["tip_pg"])
                self.delivered_pg += line["delivered_pg"]
                self.programmed_pg += line["programmed_pg"]
                self.prescribed_dose.pg += line.get("prescribed_tip_pg", 0)
                replayed.last_sample_ms = max(replayed.last_sample_ms, sample.t_ms)
                replayed.last_total_nl = line["total_counted_nl"]
                replayed.seen(sample.t_ms)
            elif kind == "alarm":
                record.alarms.append(AlarmEvent(**line))
                replayed.seen(line["t_ms"])
            elif kind == "decision":
                event = DecisionEvent(**{**line, "reasons": tuple(line["reasons"])})
                record.decisions.append(event)
                if event.label:
                    self.results_by_label[event.label] = _LoggedResult(event.allowed, event.reasons, event.detail)
                replayed.seen(event.t_ms)
            elif kind == "fault":
                self.faults.append(line["payload"])
            elif kind == "breach":
                self.breaches.setdefault(line["name"], line["detail"])
            elif kind == "transit":
                self.transit_watch.on_event(line["event"], line["payload"], line["t_ms"])
                replayed.seen(line["t_ms"])
            elif kind == "transit_window":
                self.transit_watch.add_window(line["error_pct"])
                replayed.seen(line["t_ms"])
            elif kind == "test_dose":
                self.patient.advance_to(max(self.patient.time_s, line["t_ms"] / 1000))
                self.patient.bolus(line["dose_ng"])
                replayed.seen(line["t_ms"])
            elif kind == "gap":
                self.prescribed_dose.pg += line.pop("prescribed_tip_pg", 0)
                record.gaps.append(line)
                replayed.gaps_nl += line["delivered_nl"]
                replayed.seen(line["to_t_ms"])
            elif kind == "note":
                record.notes.append(line["text"])
            elif kind == "segment":
                record.trace_files.append(line["trace_file"])
                if line["index"] == 0:
                    record.started_utc = line["utc"]
                replayed.seen(line["t_ms"])
        return replayed

    def run(self) -> RunRecord:
        """Run the scenario to its end (or resume it) and evaluate the checks.

        :raises ConfigError: the report directory holds an earlier run and the options do not say
            what to do with it, or a resume does not match the run it resumes.
        :raises HalError: the pump could not be opened or reconciled (nothing was left behind in a
            report directory this call created).
        """
        sc = self.scenario
        resume = self.options.existing is Existing.RESUME
        record = RunRecord(scenario=sc.settings.name, source=sc.source, description=sc.settings.description,
                           duration_ms=self.duration_ms)
        self._reset(record)
        self.clock = self._clock()
        record.started_utc = self.clock.utc_now().astimezone(timezone.utc).isoformat()
        wall0 = time.perf_counter()
        with contextlib.ExitStack() as stack:
            work = self.options.report_dir
            if work is None:
                work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="itb-run-")))
            created = not work.exists()
            try:
                archived = claim(work, DURABLE_FILES, self.options.existing, option="--report")
                if sc.accuracy is not None and not resume:
                    # Before therapy, while the pump's port is still free: the step opens pump and balance itself.
                    self.accuracy_outcome = run_accuracy_step(
                        sc.accuracy, report_dir=work / "accuracy", pump_url=self.options.pump_url,
                        balance_url=self.options.balance_url)
                trace = self._trace_path(work, resume)
                self._open_rig(stack, work, record, trace)
                if not resume:
                    self._write_manifest(work)
                self.log = RunLog(work / RUN_LOG_FILE)
                stack.callback(self.log.close)
                next_action = self._resume(work) if resume else self._start(work)
            except BaseException:
                stack.close()
                if created and self.options.report_dir is not None:
                    shutil.rmtree(work, ignore_errors=True)
                raise
            if archived is not None:
                self._note(f"an earlier run in this directory was moved to {archived.name}/")
            segment = len(record.trace_files)
            record.trace_files.append(trace.name)
            self._log("segment", index=segment, t_ms=self._rel_ms(), utc=record.started_utc if not segment
                      else self.clock.utc_now().isoformat(), trace_file=trace.name)
            if self.options.on_ready is not None:
                self.options.on_ready(record)
            try:
                self._run_actions(next_action)
            except ItbError as exc:
                log.debug("run aborted", exc_info=True)
                record.error = f"{type(exc).__name__}: {exc}"
            except KeyboardInterrupt:
                # The operator stopped the run: the pump keeps its last committed programme running.
                record.interrupted = True
                record.error = (f"interrupted by the operator at {self._rel_ms() / 86_400_000:.2f} days; "
                                "the pump keeps its last committed programme")
            record.reached_ms = min(self._rel_ms(), self.duration_ms)
            record.wall_s = time.perf_counter() - wall0
            self._finish(record)
            if self.options.report_dir is None:
                record.trace_file = ""
                record.trace_files = []
        return record

    def _run_actions(self, first: int) -> None:
        """The timed actions from index ``first`` (each journalled before it runs), then the rest of the run."""
        for index, action in enumerate(self.scenario.actions):
            if index < first:
                continue
            if action.at_ms > self.duration_ms:
                self._note(f"action {index} ({action.label or action.do}) at {action.at_ms / 86_400_000:.2f} days "
                           "is beyond the shortened end: skipped")
                continue
            late = self._rel_ms() - action.at_ms
            if late > 0 and self.record.gaps:
                self._note(f"action {index} ({action.label or action.do}) ran {late / 60_000:.0f} min late: "
                           "the controller was down at its time")
            self.controller.run_until(self.t0_ms + action.at_ms)
            self.controller.store.append_audit(SYSTEM_ACTOR, ACTION_ACTION,
                                               new={"index": index, "do": action.do, "label": action.label})
            self._label = action.label
            self.prescribed_dose.mark(self.controller.loop, self.controller.now_ms())
            ACTIONS[action.do](self, action)
            self.prescribed_dose.mark(self.controller.loop, self.controller.now_ms())
            self._label = ""
        self.controller.run_until(self.t0_ms + self.duration_ms)
        self.controller.poll()

    # -- evaluation ---------------------------------------------------------------------------------------

    def _finish(self, record: RunRecord) -> None:
        loop = self.controller.loop
        record.delivered_ug = self.delivered_pg / 1e6
        record.prescribed_ug = self.programmed_pg / 1e6
        record.delivered_at_tip_ug = self.tip_pg / 1e6 if self.rig is not None else None
        bolus_ng = sum(b.dose_ng for b in self.controller.store.boluses() if b.kind != "priming")
        record.prescribed_at_tip_ug = (self.prescribed_dose.pg + bolus_ng * 1000) / 1e6
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
        t0_utc = self.t0_utc if record.gaps else None
        record.commands = [_pump_command(c, self.t0_ms, t0_utc) for c in self.controller.store.commands()]
        record.low_reservoir_ml = self.scenario.prescription.pump.low_reservoir_alarm_nl / 1e6
        boluses = self.controller.store.boluses()
        record.boluses = [
            {"bolus_id": b.bolus_id, "kind": b.kind, "dose_ng": b.dose_ng, "volume_nl": b.volume_nl,
             "delivered_nl": b.delivered_nl, "status": b.status, "requested_t_ms": b.requested_ms - self.t0_ms,
             "detail": b.detail}
            for b in boluses
        ]
        record.implicit_checks.extend(implicit_checks(self, record))
        if self.accuracy_outcome is not None:
            record.accuracy_report = f"{self.accuracy_outcome.report_dir.name}/report.html"
            step = self.scenario.accuracy
            record.expectations.append(accuracy_check(step, self.accuracy_outcome))
        raised = {a.code for a in record.alarms if a.event == "raise"}
        skipped = {a.label for a in self.scenario.actions if a.at_ms > self.duration_ms and a.label}
        for exp in self.scenario.expectations:
            if exp.check in ("allowed", "denied") and exp.params["action"] in skipped:
                record.notes.append(f"expectation {exp.check} {exp.params['action']}: not evaluated, "
                                    "its action is beyond the shortened end")
                continue
            record.expectations.append(EXPECTATIONS[exp.check](self, exp.params, record, raised))


def _pump_command(command: CommandRecord, t0_ms: int, t0_utc: str | None) -> PumpCommand:
    """A journalled command as the report shows it.

    :param t0_utc: the scenario start's UTC time, for a resumed run: the journal's monotonic times
        restart with each controller process, its UTC times do not.
    """
    detail = command.detail if isinstance(command.detail, dict) else {}
    text = detail.get("detail") or ("" if command.detail is None or detail else str(command.detail))
    if t0_utc is None:
        t_ms = command.pending_monotonic_ns // 1_000_000 - t0_ms
    else:
        elapsed = datetime.fromisoformat(command.pending_utc) - datetime.fromisoformat(t0_utc)
        t_ms = round(elapsed.total_seconds() * 1000)
    return PumpCommand(t_ms=t_ms, command=command.kind,
                       outcome=command.status, rate_nl_per_h=command.params.get("rate_nl_per_h"),
                       volume_nl=command.params.get("volume_nl"), command_id=command.command_id,
                       detail=str(text or command.params.get("cause", "")))


def run_scenario(scenario: Scenario, options: RunOptions | None = None) -> RunRecord:
    """Run ``scenario`` and return its :class:`~hil.report.RunRecord` (see :class:`ScenarioRunner`)."""
    return ScenarioRunner(scenario, options).run()
