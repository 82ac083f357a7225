"""Restart-proof history: a kernel restarted between every pair of steps decides as one that never was.

A Hypothesis state machine drives three kernels through the same random therapy: titration
steps up and down (with and without soft overrides), boluses, pump stops (a STOP fault
reaction or a pump found stopped, told to the kernel as a fact), minimum-rate spells,
discontinues, resumes and confirmed or unconfirmed caps changes, with time passing and the
pump delivering. Before every step the second and third kernels are restarted: snapshot,
JSON, restore into a new kernel (PER-02, SAFE-04). After every step:

- every kernel gave the same decision and holds the same state (a restart changes nothing,
  so no rule becomes looser); the twin is among them (differential);
- every history-rule code of the decision is exactly what the independent
  :class:`~tests.kernel.label_oracle.LabelOracle` computes from the raw history the machine
  keeps itself: TIT-01 (trailing-window cap), TIT-04 (interval), the label's first 24 h, the
  restart rule, BOL-01 (lockout, count), the bolus stacking rule, the caps-change confirmation;
- the physical rolling 24 h total never exceeds the cap (PRX-03).

The compiled-only machine repeats it with many more steps.
"""

from __future__ import annotations

import json

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cython_ext.units import MS_PER_DAY, MS_PER_H

from .conftest import COMPILED, TWIN, decision_key
from .label_oracle import CHECKED, LabelOracle

MIN = 60_000
CONC = 1000  # µg/mL: a rate of r nL/h is a daily dose of exactly 24 r ng
MIN_RATE = 2_000
SOFT = frozenset(COMPILED.SOFT_REASONS)


def caps_kwargs(origin, interval_h, lockout_h, max_boluses, threshold_h, start_dose, max_dose):
    return dict(
        max_dose_ng_per_day=max_dose, origin=origin, min_titration_interval_ms=interval_h * MS_PER_H,
        bolus_enabled=True, patient_bolus_enabled=True, max_bolus_ng=100_000, bolus_lockout_ms=lockout_h * MS_PER_H,
        max_boluses_per_day=max_boluses, minimum_rate_nl_per_h=MIN_RATE, restart_threshold_ms=threshold_h * MS_PER_H,
        titration_start_dose_ng_per_day=start_dose,
    )


def oracle_caps(caps) -> dict:
    """The limits the oracle reads, from the test's own keyword arguments (not the kernel's caps)."""
    keys = ("titration_cap_pct", "min_titration_interval_ms", "bolus_lockout_ms", "max_boluses_per_day",
            "restart_threshold_ms", "titration_start_dose_ng_per_day", "minimum_rate_nl_per_h", "max_dose_ng_per_day")
    return {k: getattr(caps, k) for k in keys}


class RestartMachine(RuleBasedStateMachine):
    """A steady kernel, and kernels restarted from their snapshots before every step."""

    IMPLS = (COMPILED, COMPILED, TWIN)

    @initialize(
        start_rate=st.integers(4_000, 20_000),
        origin=st.sampled_from(["spinal", "cerebral", "paediatric"]),
        interval_h=st.sampled_from([0, 6, 24]),
        lockout_h=st.integers(1, 6),
        max_boluses=st.integers(1, 6),
        threshold_h=st.sampled_from([1, 6, 24]),
        start_dose=st.sampled_from([0, 60_000, 150_000]),
        settled=st.booleans(),
        max_dose=st.sampled_from([500_000, 1_500_000]),
    )
    def setup(self, start_rate, origin, interval_h, lockout_h, max_boluses, threshold_h, start_dose, settled, max_dose):
        self.now = 3 * MS_PER_DAY + 17 * MIN
        self.max_dose = max_dose
        kwargs = caps_kwargs(origin, interval_h, lockout_h, max_boluses, threshold_h, start_dose, self.max_dose)
        self.kernels = [
            k.SafetyKernel(k.DEFAULT_LIBRARY[CONC], k.make_caps(**kwargs), k.make_envelope(MIN_RATE, 1_000_000), k.Ledger())
            for k in self.IMPLS
        ]
        self.oracle = LabelOracle(caps=oracle_caps(COMPILED.make_caps(**kwargs)), concentration_ug_per_ml=CONC)
        self.pump_rate = 0  # what the pump physically delivers, nL/h
        self.programme_rate = None  # the last authorised continuous rate, nL/h
        self.carry = 0
        self.delivered: list[tuple[int, int]] = []  # (minute, pg) physically delivered
        self.rate_change(start_rate, False)
        assert self.oracle.doses, "the start is allowed"
        if settled:
            self.advance(30 * 60)  # past the first 24 h after the start

    # -- helpers ---------------------------------------------------------------------------

    def restart(self):
        """Snapshot, JSON, restore: every kernel but the first is a new one from here on."""
        for i in range(1, len(self.kernels)):
            gate = self.kernels[i]
            state = json.loads(json.dumps(gate.state_snapshot()))
            again = self.IMPLS[i].SafetyKernel.from_snapshot(state, None, gate.envelope)
            assert again.state_snapshot() == state
            self.kernels[i] = again

    def decide(self, make_request, expected: set[str] | None):
        self.restart()
        decisions = [gate.authorize(make_request(k), self.now) for k, gate in zip(self.IMPLS, self.kernels)]
        keys = [decision_key(d) for d in decisions]
        assert all(key == keys[0] for key in keys), "a restarted kernel decided otherwise"
        d = decisions[0]
        if expected is not None:
            assert {c for c in d.reasons if c in CHECKED} == expected, (d.reasons, expected)
        if d.allowed:
            for gate, decision in zip(self.kernels, decisions):
                gate.apply(decision, self.now)
        return d

    @property
    def newest(self) -> int:
        return max(self.oracle.events)

    # -- rules -----------------------------------------------------------------------------

    @rule(minutes=st.integers(1, 1_800))
    def advance(self, minutes):
        """Time passes; the pump delivers what it physically runs, recorded every 15 minutes (in
        the last minute of each stretch: never earlier than it happened)."""
        self.restart()
        kind = COMPILED.DeliveryKind.MINIMUM_RATE if self.pump_rate == MIN_RATE else COMPILED.DeliveryKind.BASAL
        for m in range(0, minutes, 15):
            stretch = min(15, minutes - m)
            t = self.now + (m + stretch - 1) * MIN
            self.carry += self.pump_rate * stretch * MIN * CONC
            whole, self.carry = divmod(self.carry, MS_PER_H)
            if whole:
                self.delivered.append((t // MIN, whole))
                for gate in self.kernels:
                    gate.ledger.record(int(kind), whole, t)
        self.now += minutes * MIN

    @rule(rate=st.integers(2_000, 40_000), soft=st.booleans())
    def rate_change(self, rate, soft):
        """Any rate change: a titration step, a decrease, or (while interrupted) a resume."""
        lifted = SOFT if soft else frozenset()
        expected = self.oracle.rate_request(self.now, rate * 24, resume_kind=False, soft_lifted=lifted)

        def make(k):
            override = k.make_override(SOFT, reason="test", actor="dr/prescriber") if soft else None
            return k.request_rate_change(rate, override=override)

        if self.decide(make, expected).allowed:
            self._delivering(rate)

    @rule(pct=st.integers(60, 140), soft=st.booleans())
    def titrate(self, pct, soft):
        """A step near the current rate: the usual clinical request."""
        self.rate_change(max(1_000, (self.programme_rate or 10_000) * pct // 100), soft)

    @rule(pct=st.integers(40, 130), explicit=st.booleans())
    def resume(self, pct, explicit):
        """Resume near the dose before the interruption, as its own request or as a rate change."""
        before = self.oracle.interruption[1] if self.oracle.interruption else (self.oracle.programme_dose or 240_000)
        rate = max(1_000, before // 24 * pct // 100)
        if not explicit:
            return self.rate_change(rate, False)
        expected = self.oracle.rate_request(self.now, rate * 24, resume_kind=True, soft_lifted=frozenset())
        if self.decide(lambda k: k.request_resume(rate), expected).allowed:
            self._delivering(rate)

    def _delivering(self, rate):
        oracle = self.oracle
        dose = rate * 24
        if oracle.interruption is not None:
            kind = "resume"
        elif oracle.programme_dose is None:
            kind = "start"
        else:
            kind = "step" if dose > oracle.programme_dose else "same"
        oracle.dose_taken_effect(self.now, dose, kind=kind)
        oracle.programme_dose = dose
        self.pump_rate = self.programme_rate = rate

    @rule(cause=st.sampled_from(["stop", "stop", "minimum_rate", "discontinue", "procedure"]),
          ago_min=st.integers(0, 180), emergency=st.booleans())
    def interrupt(self, cause, ago_min, emergency):
        """A STOP fault reaction or a pump found stopped (a fact, told with its earliest time), a
        minimum-rate spell, an authorised discontinue, or an authorised procedure's zero-rate hold (SAFE-05: to the
        label's rules a stop, resumed only by the restart rule)."""
        if cause == "procedure":
            def hold(k):
                return k.request_procedure_stop(k.make_override({"PROCEDURE"}, reason="MRI", actor="dr"))

            if self.decide(hold, None).allowed:
                if self.oracle.doses[-1][1] != 0:
                    self.oracle.dose_taken_effect(self.now, 0, kind="stop")
                self.pump_rate = 0
            return
        if cause == "stop":
            self.restart()
            at = max(self.newest, self.now - ago_min * MIN)
            for gate in self.kernels:
                gate.note_stopped(at)
            if self.oracle.doses[-1][1] != 0:
                self.oracle.dose_taken_effect(at, 0, kind="stop")
            self.pump_rate = 0
        elif cause == "minimum_rate":
            if self.decide(lambda k: k.request_minimum_rate(), set()).allowed:
                self.oracle.dose_taken_effect(self.now, MIN_RATE * 24, kind="minimum_rate")
                self.oracle.programme_dose = MIN_RATE * 24
                self.pump_rate = self.programme_rate = MIN_RATE
        else:
            def make(k):
                return k.request_discontinue(k.make_override({"DISCONTINUE"}, reason="test", actor="dr"), emergency=emergency)

            if self.decide(make, set()).allowed:
                self.oracle.dose_taken_effect(self.now, 0, kind="discontinue")
                self.oracle.programme_dose = None
                self.pump_rate = 0
                self.programme_rate = None

    @rule(pct=st.sampled_from([105, 115, 125, 130]) | st.integers(101, 135), kind=st.sampled_from([2, 3]),
          volume=st.sampled_from([10_000, 30_000, 60_000]) | st.integers(1_000, 60_000))
    def step_then_bolus(self, pct, kind, volume):
        """The adversary's stack: a titration step, then a bolus on top of it."""
        self.titrate(pct, False)
        self.bolus(kind, volume, False)

    @rule(kind=st.sampled_from([2, 3]), volume=st.integers(1_000, 60_000), soft=st.booleans())
    def bolus(self, kind, volume, soft):
        """A clinician or patient bolus, delivered at once when allowed."""
        mass = volume * CONC
        expected = self.oracle.bolus_request(self.now, mass)

        def make(k):
            override = k.make_override(SOFT, reason="test", actor="dr") if soft else None
            return k.request_bolus(kind, volume, 10 * MIN, override=override)

        d = self.decide(make, expected)
        if d.allowed:
            for gate in self.kernels:
                gate.ledger.record(kind, mass, self.now)
                gate.ledger.release(kind, mass)
            self.delivered.append((self.now // MIN, mass))
            self.oracle.bolus_given(self.now, mass)

    @rule(origin=st.sampled_from(["spinal", "cerebral", "paediatric"]), interval_h=st.sampled_from([0, 6, 24]),
          lockout_h=st.integers(1, 6), max_boluses=st.integers(1, 6), threshold_h=st.sampled_from([1, 6, 24]),
          start_dose=st.sampled_from([0, 60_000, 150_000]), confirmed=st.booleans())
    def caps_change(self, origin, interval_h, lockout_h, max_boluses, threshold_h, start_dose, confirmed):
        """A new prescription (an origin change, say): loosened limits hold 24 h; it needs a confirmation."""
        kwargs = caps_kwargs(origin, interval_h, lockout_h, max_boluses, threshold_h, start_dose, self.max_dose)

        def make(k):
            confirmation = k.make_override({"CAPS_CHANGE"}, reason="origin re-assessed", actor="dr/prescriber") if confirmed else None
            return k.request_caps_change(k.make_caps(**kwargs), confirmation=confirmation)

        if self.decide(make, set() if confirmed else {"CAPS_CHANGE_NOT_CONFIRMED"}).allowed:
            self.oracle.caps_changed(self.now, oracle_caps(COMPILED.make_caps(**kwargs)))

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def restarted_kernels_hold_the_same_state(self):
        states = [gate.state_snapshot() for gate in self.kernels]
        assert all(state == states[0] for state in states)

    @invariant()
    def physical_rolling_total_within_cap(self):
        m0 = self.now // MIN
        assert sum(pg for minute, pg in self.delivered if m0 - 1440 < minute <= m0) <= self.max_dose * 1000


RestartMachine.TestCase.settings = settings(max_examples=20, stateful_step_count=30, deadline=None)
TestRestartedKernels = RestartMachine.TestCase


class CompiledRestartMachine(RestartMachine):
    """The same machine on the compiled kernel alone (steady and restarted), for a longer search."""

    IMPLS = (COMPILED, COMPILED)


CompiledRestartMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=50, deadline=None)
TestCompiledRestartedKernels = CompiledRestartMachine.TestCase
