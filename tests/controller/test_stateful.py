"""Stateful property test: random clinical actions, faults and time steps against the byte-level simulator.

The controller runs over the real NE-1000 driver talking to the simulated pump
through the in-process endpoint, in virtual time. After every step:

* the rolling 24 h total (delivered + committed) never exceeds the cap;
* flow is never zero without an authorised discontinue, a STOP reaction or an authorised procedure's zero-rate
  hold (SAFE-03, SAFE-05);
* the ledger matches the pump's own dispensed volume within tolerance;
* no bolus is delivered twice (unique records, none over its volume);
* every injected fault produced its alarm once the loop has polled;
* past T_resume after a procedure's end its restart is verified or PROCEDURE_RESUME_FAILED is raised (SAFE-05);
* every therapy-changing command on the wire (rate, start, stop) had a durable pending
  journal record when the pump received it, and every record has an outcome after the step.

Some runs also lose the reply to one rate command on the wire (``lost-reply``).
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import hal
from controller.assembly import ControllerSettings, build_controller
from controller.loop import Mode
from controller.patient import History, PatientRecord
from controller.store import Store
from hal.pump import Direction
from sim.clock import VirtualClock
from sim.rig import simulated_pump
from tests.e2e.test_command_journal import WireJournalTap
from tests.prescriptions import make_prescription, signed_file

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
NS_PER_H = 3_600_000_000_000
POLL_MS = 30 * MS_PER_MIN


def _kernel() -> Any:
    """The selected kernel: compiled, or the twin only when ``ITB_PURE_PYTHON=1``."""
    from cython_ext import kernel

    return kernel


class _Alarms:
    def __init__(self) -> None:
        self.raised: set[str] = set()

    def record_alarm(self, **event: Any) -> None:
        if event["event"] == "raise":
            self.raised.add(event["code"])


class ControllerMachine(RuleBasedStateMachine):
    """The controller and the simulated pump under random use."""

    @initialize(seed=st.integers(0, 1000), lost_after=st.none() | st.integers(2, 40))
    def start(self, seed: int, lost_after: int | None) -> None:
        self.stack = contextlib.ExitStack()
        self.clock = VirtualClock()
        faults = [] if lost_after is None else [f"lost-reply:match=RAT,after={lost_after}"]
        work = Path(self.stack.enter_context(tempfile.TemporaryDirectory(prefix="itb-stateful-")))
        self.tap = WireJournalTap(work / "journal.sqlite")
        self.rig = self.stack.enter_context(simulated_pump(
            "inprocess", clock=self.clock, seed=seed, faults=faults, syringe_diameter_mm="4.699",
            syringe_volume_ml="1000", occlusion_delay_s=60.0, on_traffic=self.tap))
        self.driver = hal.open_pump("ne1000", self.rig.url, clock=self.clock)
        self.stack.callback(self.driver.close)
        self.driver.configure(syringe_diameter_mm="4.699")
        self.driver.set_target_volume(0)
        self.driver.set_direction(Direction.INFUSE)
        self.store = Store(work / "journal.sqlite", self.clock)
        self.stack.callback(self.store.close)
        rx = make_prescription(dose_ug_per_day=150, max_dose_ug_per_day=400, lockout_min=180)
        patient = PatientRecord(rx.patient.patient_id, rx.patient.origin, History.TRANSFERRED,
                                prior_dose_ng_per_day=150_000)
        self.controller = build_controller(rx, patient, self.driver,
                                           self.clock, self.store, settings=ControllerSettings(poll_interval_ms=POLL_MS),
                                           kernel_module=_kernel(), prescription_file=signed_file(rx))
        self.log = _Alarms()
        self.controller.subscribe(on_event=self._event, on_alarm=self.log.record_alarm)
        self.gate, self.loop, self.therapy = self.controller.gate, self.controller.loop, self.controller.therapy
        self.journal = self.store
        self.stopped_by_reaction: list[str] = []
        self.procedure_holds: list[dict[str, Any]] = []
        result = self.therapy.implant(500, 20_000_000, dose_ng_per_day=150_000)
        assert result.allowed, result
        self.pending_faults: list[str] = []
        self.expected_alarms: set[str] = set()

    def _event(self, event: str, payload: dict[str, Any]) -> None:
        if event == "stopped":
            self.stopped_by_reaction.append(payload["fault"])
        if event == "procedure_hold":
            self.procedure_holds.append(payload)

    def teardown(self) -> None:
        stack = getattr(self, "stack", None)
        if stack is not None:
            stack.close()

    # -- rules ---------------------------------------------------------------------------------------

    @rule(hours=st.integers(1, 12))
    def advance(self, hours: int) -> None:
        self.loop.run_until(self.loop.now_ms() + hours * MS_PER_H)
        self.loop.poll()
        self.expected_alarms |= {f for f in self.pending_faults}
        self.pending_faults.clear()

    @rule(pct=st.integers(-30, 40))
    def titrate(self, pct: int) -> None:
        current = self.therapy.prescribed_dose_ng_per_day or 150_000
        self.therapy.titrate(max(30_000, current * (100 + pct) // 100), override_reason=None)

    @rule(dose_ug=st.integers(5, 60))
    def clinician_bolus(self, dose_ug: int) -> None:
        self.therapy.clinician_bolus(dose_ug * 1000, 10 * MS_PER_MIN)

    @rule()
    def patient_bolus(self) -> None:
        if self.therapy.patient_bolus is None:
            self.therapy.configure_patient_bolus(20_000, 10 * MS_PER_MIN)
        self.therapy.patient_bolus_request()

    @precondition(lambda self: self.loop.mode is Mode.RUNNING and not self.pending_faults)
    @rule(kind=st.sampled_from(["stall", "power_cycle", "occlusion"]))
    def fault(self, kind: str) -> None:
        device = self.rig.device
        if kind == "stall":
            device.inject_stall()
            self.pending_faults.append("motor_stall")
        elif kind == "power_cycle":
            device.power_cycle()
            self.pending_faults.append("pump_reset")
        else:
            device.set_occluded(True)
            self.clock.advance(120)  # pushing against the block stalls the motor after occlusion_delay_s
            self.pending_faults.append("motor_stall")

    @rule(minutes=st.integers(10, 120), zero=st.booleans())
    def begin_procedure(self, minutes: int, zero: bool) -> None:
        """SAFE-05: an MRI, held at zero (authorised) or at the minimum rate."""
        self.therapy.begin_procedure("mri", authorised_by="dr.radiology", expected_duration_ms=minutes * MS_PER_MIN,
                                     zero_rate_required=zero)

    @rule()
    def end_procedure(self) -> None:
        self.therapy.end_procedure()

    @rule(held_min=st.integers(10, 90), zero=st.booleans(), seized=st.booleans())
    def whole_procedure(self, held_min: int, zero: bool, seized: bool) -> None:
        """SAFE-05: an MRI from start to end, the motor seized by it or not (the invariants judge what follows)."""
        if self.therapy.begin_procedure("mri", authorised_by="dr.radiology", expected_duration_ms=held_min * MS_PER_MIN,
                                        zero_rate_required=zero).allowed:
            self.loop.run_until(self.loop.now_ms() + held_min * MS_PER_MIN)
            self.rig.device.seize_motor(seized)
            self.therapy.end_procedure()

    @rule(seized=st.booleans())
    def seize_motor(self, seized: bool) -> None:
        """SAFE-05: the motor seizes silently (the pump reports infusing, nothing moves), or turns again."""
        self.rig.device.seize_motor(seized)

    @rule()
    def clear_occlusion(self) -> None:
        self.rig.device.set_occluded(False)

    @rule()
    def acknowledge(self) -> None:
        if not self.rig.device.occluded:
            self.therapy.acknowledge_alarms()

    # -- invariants -----------------------------------------------------------------------------------

    @invariant()
    def within_the_cap(self) -> None:
        if hasattr(self, "loop"):
            now = self.loop.now_ms()
            assert self.gate.total_24h_ng(now) <= self.gate.cap_ng_per_day()

    @invariant()
    def flow_never_zero_without_authority(self) -> None:
        if not hasattr(self, "loop") or self.pending_faults:
            return
        delivering = self.rig.device.state in ("I", "X")
        if self.loop.mode in (Mode.RUNNING, Mode.MINIMUM_RATE):
            assert delivering or self.rig.device.alarm is not None
        elif self.loop.mode is Mode.PROCEDURE:
            # Only an authorised zero-rate procedure holds the pump stopped, and it is stopped.
            procedure = self.therapy.procedure
            assert procedure is not None and procedure["zero_rate"] and procedure["authorised_by"]
            assert self.procedure_holds and not delivering
        else:
            assert self.loop.mode is Mode.STOPPED_FAULT and self.stopped_by_reaction

    @invariant()
    def restart_verified_or_alarmed_by_t_resume(self) -> None:
        """SAFE-05: past T_resume after a procedure's end, its restart is verified (the procedure is closed) or
        PROCEDURE_RESUME_FAILED has been raised."""
        procedure = self.therapy.procedure if hasattr(self, "therapy") else None
        if procedure is not None and procedure["phase"] == "resuming" and self.loop.now_ms() > procedure["deadline_ms"]:
            assert "procedure_resume_failed" in self.log.raised, procedure

    @invariant()
    def ledger_matches_pump(self) -> None:
        if not hasattr(self, "loop"):
            return
        pump_nl = self.rig.device.mechanics.infused_scaled // NS_PER_H
        counted = self.loop.total_counted_nl
        # The pump may have moved since the last poll; the ledger never counts more than it moved.
        rate = self.loop.committed_rate_nl_per_h or 0
        since_poll = rate * (self.loop.now_ms() - self.loop.last_poll_ms) // MS_PER_H
        assert counted <= pump_nl + 2000
        assert pump_nl - counted <= since_poll + 20_000 + pump_nl // 200

    @invariant()
    def no_bolus_twice(self) -> None:
        if not hasattr(self, "store"):
            return
        records = self.store.boluses()
        assert len({b.bolus_id for b in records}) == len(records)
        for b in records:
            assert b.delivered_nl is None or b.delivered_nl <= b.volume_nl + 1000

    @invariant()
    def every_command_journalled(self) -> None:
        if not hasattr(self, "journal"):
            return
        assert not self.tap.uncovered, self.tap.uncovered
        # Pending only while a command is on its way: after a step each has an outcome
        # (uncertain ones wait for the next verified rate or status read).
        assert all(c.status != "pending" for c in self.journal.unresolved_commands())

    @invariant()
    def faults_produce_alarms(self) -> None:
        if hasattr(self, "log"):
            assert self.expected_alarms <= self.log.raised | {"therapy_interrupted"}


TestController = ControllerMachine.TestCase
TestController.settings = settings(max_examples=40, stateful_step_count=12, deadline=None,
                                   suppress_health_check=[HealthCheck.too_slow])
