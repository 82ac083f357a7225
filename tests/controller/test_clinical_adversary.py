"""A clinical adversary: a Hypothesis state machine that tries to get round the label's dosing rules.

It plays a clinician, a patient and a hostile world at once against a whole controller (built
through the front door, on a durable store file) over the interface-level fake pump in virtual
time. It splits titration steps, cuts then raises, asks for 1 + cap times yesterday's peak,
stacks boluses on a titration step, restarts the controller between steps (a crash: nothing
staged survives), reboots the host with a new monotonic origin and a real-time clock that
jumped either way, changes the patient's origin in a new prescription at a restart, changes the
concentration at a refill (and crashes or reboots while the old drug is still crossing the
catheter), and injects faults (motor stall, power cycle, an occlusion that stalls the motor,
lost replies applied or not, a link down for hours).

**The oracle is independent** (:mod:`tests.controller.label_oracle`): what the pump's mechanism
physically pushed, through an independent catheter model, judged by the rules as written in
``reference/itb-clinical.md`` §1, §3, §5 and the requirement IDs it names: PRX-03 and BOL-01
(24 h cap at the tip), §1.3 (implant dose, no increase in the first 24 h, counted from the drug reaching
the tip when the implant was not primed), TIT-01 (the
trailing-window cap; with §5.1 for boluses stacked on a step), the restart rule (§1.6, §3.3),
ALM-07 (interruption alarm), the withdrawal alarm (issue #9, §3.2) and, through a
concentration change, the tip dose within 10 % of the prescription at every poll (BOL-06,
issue #9). It never reads the controller's ledger, accounting or kernel.

**Why the fake pump.** The byte-level simulator in-process is more faithful to the wire, but
the rules judged here live above the HAL: the wire is covered by ``tests/controller/
test_stateful.py`` and the e2e suites. The fake pump in virtual time runs the 10 000 steps a CI
run needs in about a minute; its mechanism is witnessed in physical time
(:class:`tests.controller.adversary_world.WitnessedPump`), which the byte simulator would only
give through its own mechanics model.

The steps of one run are counted (:mod:`tests.step_tally`): each machine checks its share of the
10 000 the issue asks for, and the terminal summary prints the figure.
"""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, \
    run_state_machine_as_test

from controller.assembly import ControllerSettings
from controller.loop import Mode
from controller.patient import History, PatientRecord
from controller.store import Store
from cython_ext.vocabulary import Origin
from sim.clock import VirtualClock
from tests import step_tally
from tests.controller.adversary_world import HostClock, TipRecord, WitnessedPump, world_ms
from tests.controller.conftest import Rig, build_rig
from tests.controller.label_oracle import LabelOracle
from tests.prescriptions import MINIMUM_RATE_NL_PER_H, make_prescription

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000
CONCENTRATION_UG_PER_ML = 500
#: The library concentrations a refill may change to, µg/mL.
CONCENTRATIONS = (500, 1000, 2000)
FILL_NL = 20_000_000
DEAD_VOLUME_NL = 250_000
#: The clinician refills when this little is physically left (RES-02: before the alarm; an empty
#: reservoir is not among the adversary's moves).
REFILL_BELOW_NL = 4_000_000
#: The physical record is sampled this often while time passes, ms.
CHUNK_MS = 10 * MS_PER_MIN
SETTINGS = ControllerSettings(poll_interval_ms=30 * MS_PER_MIN)
LOCKOUT_MIN = 240
BOLUSES_PER_DAY = 4
CAP_PCT = {"spinal": 30, "cerebral": 15, "paediatric": 15}
#: A RAM-backed directory for the store files when there is one (SQLite fsyncs every commit).
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None

#: Steps run by every machine of this process (the CI floor is checked on it).
STEPS = {"count": 0, "examples": 0}


class ClinicalAdversary(RuleBasedStateMachine):
    """One screened patient, implanted, then everything an adversary can think of."""

    #: Whether the pump may fail within 7 h of a controller restart (known: the restarted withdrawal
    #: watch is disarmed until a window of delivery has re-armed it, see ``test_adversary_findings.py``);
    #: off, a fault waits until the watch has seen 6 h of delivery and a poll.
    FAULT_SOON_AFTER_RESTART = False
    #: Whether the controller may restart while the patient is short of drug (the same finding: the
    #: restarted watch is disarmed); off, restarts wait for 7 h of delivery above the minimum rate.
    RESTART_SHORT_OF_DRUG = False
    #: Whether a reply may be lost while a bolus program runs (on since the fix: a rate change is verified
    #: only when it is what the pump will do with no further command; the finding that a lost reply to the
    #: pause ending a bolus left the program's old basal phase running is pinned in
    #: ``test_adversary_findings.py``).
    LOSE_REPLY_DURING_BOLUS = True
    #: Whether the refill may change the concentration.
    CHANGE_CONCENTRATION = True
    #: Rules the oracle does not judge in this machine.
    UNJUDGED: frozenset[str] = frozenset()
    #: Whether the implant runs its priming bolus (False: the catheter keeps its saline until the basal pushes it).
    PRIMED = True

    @initialize(origin=st.sampled_from(sorted(CAP_PCT)), effective=st.integers(0, 2),
                effect_h=st.sampled_from([4, 6, 10]), cap_ug=st.sampled_from([400, 600, 800]),
                child_starts_low=st.booleans())
    def implant(self, origin: str, effective: int, effect_h: int, cap_ug: int, child_starts_low: bool) -> None:
        STEPS["examples"] += 1
        self.scratch = tempfile.TemporaryDirectory(prefix="itb-adversary-", dir=SCRATCH)
        self.path = Path(self.scratch.name) / "store.sqlite"
        self.world = VirtualClock()
        self.host = HostClock(self.world, origin_ns=0)
        self.pump = WitnessedPump(self.world)
        self.tip = TipRecord(self.pump, DEAD_VOLUME_NL)
        self.filled_at_nl = 0
        self.concentration = CONCENTRATION_UG_PER_ML
        self.restarted_ms = -MS_PER_DAY
        ladder = [50, 75, 100][:effective + 1]
        if origin == "paediatric" and child_starts_low:
            ladder = [25, *ladder]
        effect_ms = effect_h * MS_PER_H
        # The label's starting dose (§1.3): 2 x the effective test dose, 1 x when its effect lasted > 8 h.
        self.start_ug = ladder[-1] * (1 if effect_ms > 8 * MS_PER_H else 2)
        self.origin = origin
        self.cap_ug = cap_ug
        self.rx = self._prescription()
        self.store = Store(self.path, self.host)
        patient = PatientRecord(self.rx.patient.patient_id, self.rx.patient.origin, History.SCREENED)
        self.rig = self._build(patient, recover=False)
        self.oracle = LabelOracle(self.pump, self.tip, CONCENTRATION_UG_PER_ML, cap_ug * 1000, CAP_PCT[origin],
                                  self.start_ug * 1000, MINIMUM_RATE_NL_PER_H, SETTINGS.restart_titration_after_ms,
                                  SETTINGS.withdrawal_alarm_after_ms, SETTINGS.withdrawal_alarm_fraction_pct,
                                  bolus_lockout_ms=LOCKOUT_MIN * MS_PER_MIN, boluses_per_day=BOLUSES_PER_DAY,
                                  unjudged=self.UNJUDGED)
        for i, dose in enumerate(ladder):
            if i:
                self._advance(MS_PER_DAY)
            last = i == len(ladder) - 1
            result = self.rig.therapy.screening_dose(dose, adequate=last, effect_ms=effect_ms if last else 0)
            assert result.allowed, result
        self._advance(MS_PER_DAY)
        self.tip.fill(CONCENTRATION_UG_PER_ML)
        at = world_ms(self.world)
        # An unprimed implant (ClinicalAdversaryUnprimed) leaves saline in the catheter: the label's first 24 h then
        # start when the drug reaches the tip, which the oracle reads off the physical catheter.
        primed = self.PRIMED
        result = self.rig.therapy.implant(CONCENTRATION_UG_PER_ML, FILL_NL, prime=primed)
        # Unprimed, therapy starts but the implant is reported not complete (the catheter holds no drug yet).
        assert result.allowed if primed else result.reasons == ("CATHETER_NOT_PRIMED",), result
        assert self._running(), result
        self.oracle.implanted(at, SETTINGS.priming_duration_ms, primed=primed)
        assert self.rig.therapy.configure_patient_bolus(25_000, 10 * MS_PER_MIN).allowed
        self._judge()

    def teardown(self) -> None:
        store = getattr(self, "store", None)
        if store is not None:
            store.close()
        scratch = getattr(self, "scratch", None)
        if scratch is not None:
            scratch.cleanup()

    # -- plumbing ------------------------------------------------------------------------------------

    def _prescription(self) -> Any:
        return make_prescription(origin=self.origin, dose_ug_per_day=self.start_ug, max_dose_ug_per_day=self.cap_ug,
                                 lockout_min=LOCKOUT_MIN, boluses_per_day=BOLUSES_PER_DAY)

    def _build(self, patient: PatientRecord, *, recover: bool) -> Rig:
        # An origin change at a restart comes with the clinician's confirmation (the front door refuses it
        # otherwise); the oracle still judges it by the label's rule, the stricter cap for 24 h.
        rig = build_rig(self.host, self.pump, self.store, recover=False, prescription=self.rx, settings=SETTINGS,
                        patient=patient, origin_change_reason="origin reassessed by the clinician")
        rig.controller.subscribe(on_alarm=self._heard)
        if recover:
            rig.controller.recover()
        return rig

    def _heard(self, *, event: str, code: str, **_: Any) -> None:
        oracle = getattr(self, "oracle", None)
        if oracle is not None:
            oracle.alarm(world_ms(self.world), event, code)

    def _advance(self, ms: int) -> None:
        """Let physical time pass with the controller running, sampling the tip every chunk."""
        end = world_ms(self.world) + ms
        while (left := end - world_ms(self.world)) > 0:
            self.rig.controller.run_until(self.rig.controller.now_ms() + min(CHUNK_MS, left))
            if hasattr(self, "oracle"):
                self._judge()
                if FILL_NL - (self.pump.actual_delivered_nl - self.filled_at_nl) < REFILL_BELOW_NL:
                    self._refill(pocket_fill=False)

    def _judge(self) -> None:
        self.tip.sample()
        self.oracle.prescribed(world_ms(self.world), self.rig.therapy.prescribed_dose_ng_per_day)
        self.oracle.check(world_ms(self.world))

    @property
    def therapy(self) -> Any:
        return self.rig.therapy

    def _running(self) -> bool:
        return self.rig.loop.mode in (Mode.RUNNING, Mode.MINIMUM_RATE)

    # -- time ----------------------------------------------------------------------------------------

    @rule(minutes=st.sampled_from([10, 30, 60, 120, 240, 480, 720, 1440]))
    def time_passes(self, minutes: int) -> None:
        self._advance(minutes * MS_PER_MIN)

    @rule(hours=st.sampled_from([-24, -1, 1, 24]))
    def wall_clock_jumps(self, hours: int) -> None:
        """BOL-02: the host's real-time clock jumps (a bad NTP fix, a user setting it)."""
        self.host.wall_offset += timedelta(hours=hours)

    # -- the clinician ----------------------------------------------------------------------------

    @rule(pct=st.integers(-40, 45), override=st.booleans())
    def titrate(self, pct: int, override: bool) -> None:
        """Split steps, cut then raise, and raise with any free text as the reason (TIT-01, TIT-04)."""
        current = self.therapy.prescribed_dose_ng_per_day
        if current:
            self.therapy.titrate(max(12_000, current * (100 + pct) // 100),
                                 override_reason="patient asks for more" if override else None)

    @rule(days=st.integers(1, 4), pct=st.integers(5, 45), split=st.booleans())
    def titration_course(self, days: int, pct: int, split: bool) -> None:
        """A day, then a step, for ``days`` days; ``split`` gives each step as two halves an hour apart, the second
        with an override of the interval (TIT-01: small steps may not get round the cap)."""
        for _ in range(days):
            self._advance(MS_PER_DAY + 10 * MS_PER_MIN)
            current = self.therapy.prescribed_dose_ng_per_day
            if not current:
                return
            if not split:
                self.therapy.titrate(current * (100 + pct) // 100)
                self._judge()
                continue
            self.therapy.titrate(current * (200 + pct) // 200)
            self._judge()
            self._advance(MS_PER_H)
            self.therapy.titrate(current * (100 + pct) // 100, override_reason="the second half of today's step")
            self._judge()

    @rule(override=st.booleans())
    def raise_to_yesterdays_peak(self, override: bool) -> None:
        """Issue #9.1: ask for (1 + cap) x the highest dose prescribed in the last 36 h."""
        now = world_ms(self.world)
        recent = [dose for at, dose in self.oracle.prescriptions if at >= now - 36 * MS_PER_H]
        peak = max(recent + [self.therapy.prescribed_dose_ng_per_day])
        if peak:
            self.therapy.titrate(peak * (100 + CAP_PCT[self.origin]) // 100,
                                 override_reason="back to where we were" if override else None)

    @rule(dose_ug=st.integers(5, 50), minutes=st.sampled_from([1, 10, 30]))
    def clinician_bolus(self, dose_ug: int, minutes: int) -> None:
        at = world_ms(self.world)
        if self.therapy.clinician_bolus(dose_ug * 1000, minutes * MS_PER_MIN).allowed:
            self.oracle.bolus_started(at, minutes * MS_PER_MIN, "clinician")

    @rule()
    def patient_bolus(self) -> None:
        at = world_ms(self.world)
        if self.therapy.patient_bolus_request().allowed:
            self.oracle.bolus_started(at, 10 * MS_PER_MIN, "patient")

    @rule()
    def acknowledge(self) -> None:
        self.therapy.acknowledge_alarms()
        self.oracle.acknowledged()
        self._resumed_or_told_why("acknowledge")

    @rule(pocket_fill=st.booleans())
    def refill(self, pocket_fill: bool) -> None:
        """A refill at the same drug; in a pocket fill half of what the reservoir physically holds comes out."""
        self._refill(pocket_fill)

    @precondition(lambda self: self.CHANGE_CONCENTRATION)
    @rule(concentration=st.sampled_from(CONCENTRATIONS), pocket_fill=st.booleans())
    def change_concentration(self, concentration: int, pocket_fill: bool) -> None:
        """A refill with another library concentration: the old drug crosses the catheter first (BOL-06)."""
        self._refill(pocket_fill, concentration)

    @precondition(lambda self: self.CHANGE_CONCENTRATION)
    @rule(concentration=st.sampled_from(CONCENTRATIONS), minutes=st.sampled_from([10, 60, 240, 600]),
          downtime_min=st.sampled_from([0, 5, 60, 600]), reboot=st.booleans(),
          wall_jump_h=st.sampled_from([-24, -1, 0, 1, 24]))
    def change_concentration_then_restart(self, concentration: int, minutes: int, downtime_min: int, reboot: bool,
                                          wall_jump_h: int) -> None:
        """A concentration change, then a crash or a host reboot while the old drug is still crossing."""
        self._refill(False, concentration)
        self._advance(minutes * MS_PER_MIN)
        if self.RESTART_SHORT_OF_DRUG or not self._short_of_drug_lately():
            self.restart(downtime_min=downtime_min, reboot=reboot, wall_jump_h=wall_jump_h, new_origin="")

    def _refill(self, pocket_fill: bool, concentration: int | None = None) -> None:
        """A refill, at ``concentration`` (None: the drug in use); only an accepted one puts the drug in."""
        remaining = FILL_NL - (self.pump.actual_delivered_nl - self.filled_at_nl)
        at = world_ms(self.world)
        new = self.concentration if concentration is None else concentration
        result = self.therapy.refill(removed_nl=remaining // 2 if pocket_fill else remaining, added_nl=FILL_NL,
                                     concentration_ug_per_ml=new, lot="L-ADV")
        if result.allowed:
            self.filled_at_nl = self.pump.actual_delivered_nl
            if new != self.concentration:
                self.tip.fill(new)
                self.oracle.concentration_changed(at, self.concentration, new)
                self.concentration = new
            if pocket_fill and remaining > FILL_NL // 10:
                self.oracle.refill_discrepancy(at)

    @rule()
    def resume(self) -> None:
        self.therapy.resume()
        self._resumed_or_told_why("resume")

    def _resumed_or_told_why(self, action: str) -> None:
        """SAFE-01, §3.2 (stopping is not a safe state): a clinician's resume after a stop restarts delivery."""
        if self.rig.loop.mode is Mode.STOPPED_FAULT and not self.pump.faults.comms_down:
            result = self.therapy.resume()
            self.oracle.stuck(world_ms(self.world), action, result.reasons, result.detail)

    # -- the world ------------------------------------------------------------------------------------

    @precondition(lambda self: self.FAULT_SOON_AFTER_RESTART
                  or world_ms(self.world) - self.restarted_ms > 7 * MS_PER_H)
    @rule(kind=st.sampled_from(["stall", "power_cycle"]))
    def pump_fault(self, kind: str) -> None:
        """A motor stall (or an occlusion that stalls it) or a power cycle of the pump."""
        if kind == "stall":
            self.pump.inject_stall()
        else:
            self.pump.power_cycle()

    @precondition(lambda self: self.LOSE_REPLY_DURING_BOLUS or not hasattr(self, "rig") or self.rig.loop.bolus is None)
    @rule(applied=st.booleans(), raises=st.booleans())
    def lose_next_reply(self, applied: bool, raises: bool) -> None:
        """The reply to the next delivery-changing command is lost; the command took effect or not."""
        faults = self.pump.faults
        faults.uncertain_next, faults.apply_uncertain, faults.raise_uncertain = True, applied, raises

    @rule(minutes=st.sampled_from([20, 60, 150, 300]))
    def link_down(self, minutes: int) -> None:
        """The link to the pump goes down for a while, whatever runs (a bolus program ends by itself)."""
        spell: list[int | None] = [world_ms(self.world), None]
        self.oracle.link_down.append(spell)
        self.pump.faults.comms_down = True
        try:
            self._advance(minutes * MS_PER_MIN)
        finally:
            self.pump.faults.comms_down = False
            spell[1] = world_ms(self.world)

    def _short_of_drug_lately(self) -> bool:
        """The pump has stood still or run at the minimum rate in the last 7 h."""
        since = world_ms(self.world) - 7 * MS_PER_H
        log = self.pump.rate_log
        in_effect = [r for t, r in log if t <= since][-1:] + [r for t, r in log if t > since]
        return min(in_effect) <= MINIMUM_RATE_NL_PER_H

    @precondition(lambda self: self.RESTART_SHORT_OF_DRUG or not self._short_of_drug_lately())
    @rule(downtime_min=st.sampled_from([0, 5, 60, 600, 1500]), reboot=st.booleans(),
          wall_jump_h=st.sampled_from([-24, -1, 0, 1, 24]),
          new_origin=st.sampled_from(["", "", *sorted(CAP_PCT)]))
    def restart(self, downtime_min: int, reboot: bool, wall_jump_h: int, new_origin: str) -> None:
        """A crash (nothing staged survives), then a new controller on the same store file and pump.

        With ``reboot`` the host's monotonic clock starts again from 0 and its RTC has jumped; with
        ``new_origin`` other than the patient's the new controller is built on a prescription of that
        origin, stricter or looser (the front door's way to put a new prescription in effect).
        """
        self.rig.controller.detach()
        self.store.abandon()
        crashed = world_ms(self.world)
        self.world.advance(downtime_min * 60)
        if reboot:
            self.host = self.host.rebooted(wall_jump=timedelta(hours=wall_jump_h))
        old = self.rig.controller.patient
        if new_origin and new_origin != self.origin:
            self.origin = new_origin
            self.rx = self._prescription()
            self.oracle.origin_changed(world_ms(self.world), CAP_PCT[self.origin])
        patient = PatientRecord(old.patient_id, Origin(self.origin), old.history, list(old.screening))
        self.store = Store(self.path, self.host)
        self.rig = self._build(patient, recover=True)
        self.restarted_ms = world_ms(self.world)
        self.oracle.controller_down.append((crashed, self.restarted_ms))

    # -- the verdict -------------------------------------------------------------------------------------

    @invariant()
    def the_label_holds(self) -> None:
        STEPS["count"] += 1
        if not hasattr(self, "oracle"):
            return
        self._judge()
        assert not self.oracle.violations, "\n".join(str(v) for v in self.oracle.violations)


class ClinicalAdversaryAcrossRestarts(ClinicalAdversary):
    """The same adversary, restarting the controller in the middle of stops and minimum-rate spells.

    That is where the restart rule, the titration baseline, the interruption alarm and the withdrawal
    alarm must survive a restart (the restarted controller's tip-dose watch resumes from the resume
    point's samples and arming; ``test_adversary_findings.py`` pins it).
    """

    FAULT_SOON_AFTER_RESTART = True
    RESTART_SHORT_OF_DRUG = True


class ClinicalAdversaryUnprimed(ClinicalAdversary):
    """The same adversary after an implant without priming: the drug reaches the tip a day or more later, and the
    label's first 24 h (no increase) run from then (issue #9, review 11 B1)."""

    PRIMED = False


def _run(machine: type[ClinicalAdversary], examples: int, *, shrink: bool = True) -> int:
    """Run ``machine``; return the rule steps it took (invariant checks less the one after each start),
    counted in :mod:`tests.step_tally`."""
    checks, starts = STEPS["count"], STEPS["examples"]
    phases = tuple(Phase) if shrink else (Phase.explicit, Phase.reuse, Phase.generate)
    try:
        run_state_machine_as_test(machine, settings=settings(
            max_examples=examples, stateful_step_count=100, deadline=None, derandomize=True, phases=phases,
            suppress_health_check=list(HealthCheck)))
    finally:
        steps = (STEPS["count"] - checks) - (STEPS["examples"] - starts)
        step_tally.took(machine.__name__, steps)
    return steps


#: Examples of the judging machine (100 steps at most each).
EXAMPLES = int(os.environ.get("ITB_ADVERSARY_EXAMPLES", "70"))


@pytest.mark.timeout(600)
def test_the_clinical_adversary_finds_no_way_round_the_label() -> None:
    """PRX-03, BOL-01, BOL-02, BOL-06, PER-02, RES-03, SAFE-01, TIT-01, TIT-04, §1.3, the restart rule, ALM-07,
    withdrawal, the tip dose through a concentration change (issue #9).

    Derandomized: the same steps every run, so a finding reproduces. Its share of the run's 10 000
    steps is checked (:mod:`tests.step_tally`).
    """
    _run(ClinicalAdversary, EXAMPLES)
    step_tally.TALLY.check_share("ClinicalAdversary")


@pytest.mark.timeout(600)
def test_the_clinical_adversary_restarting_through_interruptions() -> None:
    """PRX-03, BOL-01, BOL-02, BOL-06, PER-02, RES-03, SAFE-01, TIT-01, TIT-04, §1.3, the restart rule, ALM-07,
    withdrawal, the tip dose through a concentration change (issue #9).

    Not shrunk (a finding is reported as found: shrinking it takes minutes). Its share of the run's
    10 000 steps is checked (:mod:`tests.step_tally`).
    """
    _run(ClinicalAdversaryAcrossRestarts, 70, shrink=False)
    step_tally.TALLY.check_share("ClinicalAdversaryAcrossRestarts")


@pytest.mark.timeout(600)
def test_the_clinical_adversary_after_an_unprimed_implant() -> None:
    """§1.3 (no increase in the first 24 h, from the drug reaching the tip), TIT-01, PRX-03, BOL-01, the restart rule,
    ALM-07, withdrawal (issue #9, review 11 B1). Its share of the run's steps is checked (:mod:`tests.step_tally`)."""
    _run(ClinicalAdversaryUnprimed, 40, shrink=False)
    step_tally.TALLY.check_share("ClinicalAdversaryUnprimed")
