"""Stateful tests: random request sequences against both kernels at once.

One machine drives the compiled kernel and the twin side by side through the
same requests, deliveries and clock, and checks after every step that

- both gave the same decision and hold the same state (differential);
- no rolling 24 h total ever exceeds the cap (PRX-03), counting everything
  delivered: basal, flex, boluses, bridge and minimum-rate delivery;
- every accepted programme respects the hard limits and the pump envelope,
  and every accepted bolus the bolus limits (PRX-01, BOL-01).

Delivery follows the authorised programme minute by minute with the fractional
picograms carried, never lost; boluses are delivered at once and their
commitment released.
"""

from __future__ import annotations

import json

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from cython_ext.units import MS_PER_DAY, MS_PER_H

from .conftest import COMPILED, TWIN, decision_key, steps_strategy

MIN = 60_000
IMPLS = (COMPILED, TWIN)


class DualKernelMachine(RuleBasedStateMachine):
    """Both implementations, one scenario."""

    @initialize(
        conc=st.sampled_from([500, 1000, 2000]),
        max_dose=st.integers(60_000, 900_000),
        start_rate=st.none() | st.integers(2_000, 20_000),
        origin=st.sampled_from(["spinal", "cerebral"]),
        interval_h=st.sampled_from([0, 6, 24]),
    )
    def setup(self, conc, max_dose, start_rate, origin, interval_h):
        self.now = 3 * MS_PER_DAY
        self.gates = []
        self.carry = [0, 0]
        self.last_decisions = None
        for k in IMPLS:
            caps = k.make_caps(
                max_dose_ng_per_day=max_dose,
                origin=origin,
                min_titration_interval_ms=interval_h * MS_PER_H,
                patient_bolus_enabled=True,
                max_bolus_ng=100_000,
                bolus_lockout_ms=MS_PER_H,
                max_boluses_per_day=4,
                minimum_rate_nl_per_h=2_000,
            )
            gate = k.SafetyKernel(k.DEFAULT_LIBRARY[conc], caps, k.make_envelope(2_000, 1_000_000), k.Ledger())
            self.gates.append(gate)
        if start_rate is not None:
            self._decide(lambda k: k.request_rate_change(start_rate))

    # -- helpers ---------------------------------------------------------------------------

    def _decide(self, make_request):
        decisions = [gate.authorize(make_request(k), self.now) for k, gate in zip(IMPLS, self.gates)]
        assert decision_key(decisions[0]) == decision_key(decisions[1])
        self.last_decisions = decisions
        if decisions[0].allowed:
            for k, gate, d in zip(IMPLS, self.gates, decisions):
                self._check_hard_limits(k, gate, d)
                gate.apply(d, self.now)
                if d.kind in (k.RequestKind.BOLUS, k.RequestKind.CONCENTRATION_CHANGE):
                    gate.ledger.record(d.bolus_kind, d.mass_pg, self.now)
                    gate.ledger.release(d.bolus_kind, d.mass_pg)
        return decisions[0]

    def _check_hard_limits(self, k, gate, d):
        limits = gate.limits
        if d.kind == k.RequestKind.CONCENTRATION_CHANGE:
            limits = gate.library[d.programme.concentration_ug_per_ml]
        if d.programme is not None or d.kind == k.RequestKind.RATE_CHANGE:
            rates = [r for _s, r in d.programme.segments] if d.programme is not None else [d.rate_nl_per_h]
            for r in rates:
                assert limits.rate_nl_per_h.lower_hard <= r <= limits.rate_nl_per_h.upper_hard
                assert gate.envelope.min_rate_nl_per_h <= r <= gate.envelope.max_rate_nl_per_h
                assert r >= gate.caps.minimum_rate_nl_per_h
            assert limits.dose_ng_per_day.lower_hard <= d.daily_dose_ng <= limits.dose_ng_per_day.upper_hard
            assert d.daily_dose_ng <= gate.caps.max_dose_ng_per_day
        if d.kind == k.RequestKind.BOLUS and d.bolus_kind in (2, 3):
            mass_ng = -(-d.mass_pg // 1000)
            assert limits.bolus_ng.lower_hard <= mass_ng <= min(limits.bolus_ng.upper_hard, gate.caps.max_bolus_ng)

    # -- rules -----------------------------------------------------------------------------

    @rule(minutes=st.integers(1, 600))
    def advance(self, minutes):
        """Time passes; the pump delivers the programme in effect, minute by minute."""
        for i, (k, gate) in enumerate(zip(IMPLS, self.gates)):
            for m in range(minutes):
                t = self.now + m * MIN
                if gate.programme is None:
                    continue
                self.carry[i] += gate.programme.volume_numerator(t, t + MIN) * gate.programme.concentration_ug_per_ml
                whole_pg, self.carry[i] = divmod(self.carry[i], MS_PER_H)
                kind = k.DeliveryKind.FLEX if len(gate.programme.segments) > 1 else k.DeliveryKind.BASAL
                gate.ledger.record(kind, whole_pg, t)
        self.now += minutes * MIN

    @rule(rate=st.integers(0, 40_000), soft=st.booleans())
    def rate_change(self, rate, soft):
        def make(k):
            override = k.make_override(k.SOFT_REASONS, reason="test", actor="dr/prescriber") if soft else None
            return k.request_rate_change(rate, override=override)

        self._decide(make)

    @precondition(lambda self: self.gates[0].programme is not None)
    @rule(pct=st.integers(70, 135))
    def titrate(self, pct):
        """A step near the current rate: the usual clinical request, often allowed."""
        rate = max(1, self.gates[0].programme.max_rate_nl_per_h * pct // 100)
        self._decide(lambda k: k.request_rate_change(rate))

    @rule(steps=steps_strategy(max_steps=5, rates=st.integers(1_500, 30_000)))
    def programme_change(self, steps):
        self._decide(lambda k: k.request_programme_change(k.Programme(steps, self.gates[0].limits.concentration_ug_per_ml)))

    @rule(kind=st.sampled_from([2, 3, 5]), volume=st.integers(1, 150_000), duration_min=st.integers(1, 120), soft=st.booleans())
    def bolus(self, kind, volume, duration_min, soft):
        def make(k):
            override = k.make_override({"BOLUS_ABOVE_SOFT", "BOLUS_BELOW_SOFT"}, reason="test", actor="dr") if soft else None
            return k.request_bolus(kind, volume, duration_min * MIN, override=override)

        self._decide(make)

    @precondition(lambda self: self.gates[0].programme is not None)
    @rule(new_conc=st.sampled_from([500, 1000, 2000]), bridge=st.none() | st.integers(1_000, 60_000))
    def concentration_change(self, new_conc, bridge):
        old = self.gates[0].programme

        def make(k):
            steps = [(s, d, max(2_000, r * old.concentration_ug_per_ml // new_conc)) for s, d, r in old.steps]
            plan = None if bridge is None else k.BridgePlan(bridge, MS_PER_H)
            return k.request_concentration_change(k.Programme(steps, new_conc), plan)

        self._decide(make)

    @rule()
    def minimum_rate(self):
        self._decide(lambda k: k.request_minimum_rate())

    @rule(emergency=st.booleans(), authorised=st.booleans())
    def discontinue(self, emergency, authorised):
        def make(k):
            auth = k.make_override({"DISCONTINUE"}, reason="test", actor="dr") if authorised else None
            return k.request_discontinue(auth, emergency=emergency)

        self._decide(make)

    @rule()
    def restart(self):
        """The controller restarts: each kernel is rebuilt from its JSON state snapshot (PER-02)."""
        rebuilt = []
        for k, gate in zip(IMPLS, self.gates):
            state = json.loads(json.dumps(gate.state_snapshot()))
            again = k.SafetyKernel.from_snapshot(state, gate.caps, gate.envelope)
            assert again.state_snapshot() == gate.state_snapshot()
            rebuilt.append(again)
        self.gates = rebuilt

    # -- invariants ------------------------------------------------------------------------

    @invariant()
    def same_state(self):
        c, t = self.gates
        assert c.ledger.snapshot() == t.ledger.snapshot()
        assert c.state_snapshot() == t.state_snapshot()
        assert (c.programme is None) == (t.programme is None)
        assert c.programme is None or c.programme.key() == t.programme.key()
        assert list(c.dose_history) == list(t.dose_history)
        assert (c.last_increase_ms, c.state_version, c.limits) == (t.last_increase_ms, t.state_version, t.limits)

    @invariant()
    def rolling_total_within_cap(self):
        for gate in self.gates:
            cap_pg = min(gate.caps.max_dose_ng_per_day, gate.limits.dose_ng_per_day.upper_hard) * 1000
            assert gate.ledger.total_24h_pg(self.now) <= cap_pg

    @invariant()
    def programme_within_hard_limits(self):
        for gate in self.gates:
            if gate.programme is not None:
                assert gate.programme.daily_total_ng() <= gate.caps.max_dose_ng_per_day
                assert gate.programme.max_rate_nl_per_h <= gate.envelope.max_rate_nl_per_h


DualKernelMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=25, deadline=None)
TestDualKernel = DualKernelMachine.TestCase


class CompiledOnlyMachine(DualKernelMachine):
    """The same machine on the compiled kernel alone, for a longer, cheaper search."""

    def _decide(self, make_request):
        gate = self.gates[0]
        d = gate.authorize(make_request(COMPILED), self.now)
        if d.allowed:
            self._check_hard_limits(COMPILED, gate, d)
            gate.apply(d, self.now)
            if d.kind in (COMPILED.RequestKind.BOLUS, COMPILED.RequestKind.CONCENTRATION_CHANGE):
                gate.ledger.record(d.bolus_kind, d.mass_pg, self.now)
                gate.ledger.release(d.bolus_kind, d.mass_pg)
        return d

    @invariant()
    def same_state(self):
        pass


CompiledOnlyMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestCompiledKernel = CompiledOnlyMachine.TestCase
