"""Differential tests: compiled kernel and twin agree on random limits, ledgers, programmes and requests.

(The stateful machine in ``test_stateful.py`` compares them along request
sequences; this file varies the library entry, caps, envelope and ledger
contents freely, including non-default bounds.)
"""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cython_ext.units import MS_PER_DAY, MS_PER_H

from .conftest import COMPILED, TWIN, decision_key, limits_strategy, periodic_strategy, steps_strategy

MIN = 60_000
NOW = 9 * MS_PER_DAY + 7 * MIN + 12_345  # deliberately not minute-aligned
#: The latest start from which ``later_ms`` (up to 2 days) still reaches MAX_TIME_MS, the end of
#: the documented range of now_ms, where the projected windows end past it (also not minute-aligned).
TOP = COMPILED.MAX_TIME_MS - 2 * MS_PER_DAY
#: How long after the start ``now`` is: any time within 2 days, or (often) within the last
#: minute of them, so that from TOP it lands in MAX_TIME_MS's partial last minute, ms.
LATER_MS = st.integers(0, 2 * MS_PER_DAY) | st.integers(2 * MS_PER_DAY - MIN, 2 * MS_PER_DAY)


@st.composite
def world(draw):
    start = draw(st.sampled_from([NOW, TOP]))
    limits = draw(limits_strategy(COMPILED))
    rb = limits.rate_nl_per_h
    caps_kwargs = dict(
        max_dose_ng_per_day=draw(st.integers(1, limits.dose_ng_per_day.upper_hard)),
        origin=draw(st.sampled_from(["spinal", "cerebral", "paediatric"])),
        min_titration_interval_ms=draw(st.sampled_from([0, MS_PER_H, MS_PER_DAY])),
        decrease_confirm_pct=draw(st.integers(0, 60)),
        bolus_enabled=draw(st.booleans()),
        patient_bolus_enabled=draw(st.booleans()),
        max_bolus_ng=draw(st.integers(limits.bolus_ng.lower_hard, limits.bolus_ng.upper_hard)),
        bolus_lockout_ms=draw(st.integers(limits.bolus_lockout_ms.lower_hard, limits.bolus_lockout_ms.upper_soft)),
        max_boluses_per_day=draw(st.integers(limits.boluses_per_day.lower_hard, limits.boluses_per_day.upper_hard)),
        minimum_rate_nl_per_h=draw(st.integers(max(1, rb.lower_hard), rb.upper_hard)),
        max_priming_volume_nl=draw(st.integers(0, 400_000)),
    )
    env_min = draw(st.integers(1, 10_000))
    envelope = (env_min, draw(st.integers(env_min, 1_200_000)), draw(st.sampled_from([1, 1, 10, 100])))
    programme = draw(st.none() | st.tuples(steps_strategy(max_steps=13), periodic_strategy(), st.integers(0, 10**9)))
    since = draw(st.integers(start - 3 * MS_PER_DAY, start))
    records = draw(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 10**10), st.integers(0, 1439)), max_size=25))
    commits = draw(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 10**9)), max_size=3))
    starts = draw(st.lists(st.tuples(st.sampled_from([2, 3, 5, 6]), st.integers(0, 30 * 3600_000)), max_size=5))
    return limits, caps_kwargs, envelope, programme, since, records, commits, starts, start


def build(k, w):
    limits, caps_kwargs, envelope, programme, since, records, commits, starts, start = w
    caps = k.make_caps(**caps_kwargs)
    p = None if programme is None else k.Programme(programme[0], limits.concentration_ug_per_ml, periodic_boluses=programme[1], anchor_ms=programme[2])
    gate = k.SafetyKernel(limits, caps, k.make_envelope(*envelope), k.Ledger(), programme=p, programme_since_ms=since)
    for kind, mass, age in sorted(records, key=lambda r: -r[2]):
        gate.ledger.record(kind, mass, start - age * MIN)
    for kind, mass in commits:
        gate.ledger.commit(kind, mass)
    at = start - MS_PER_DAY - MS_PER_H
    for kind, gap in starts:
        at = min(start, at + gap)
        gate.ledger.record_bolus_start(kind, at)
    return gate


def requests(k, conc, rate, steps, volume, duration, kind, soft_codes, new_conc, bridge):
    override = k.make_override(soft_codes, reason="differential", actor="test") if soft_codes else None
    auth = k.make_override({"DISCONTINUE"}, reason="differential", actor="test")
    return [
        k.request_rate_change(rate, override=override),
        k.request_programme_change(k.Programme(steps, conc), override=override),
        k.request_bolus(kind, volume, duration, override=override),
        k.request_concentration_change(k.Programme(steps, new_conc), None if bridge is None else k.BridgePlan(bridge, MS_PER_H), override=override),
        k.request_discontinue(auth if soft_codes else None, emergency=bool(volume % 2)),
        k.request_minimum_rate(),
        # SAFE-05: a procedure's zero-rate hold, authorised or not.
        k.request_procedure_stop(k.make_override({"PROCEDURE"}, reason="differential", actor="test")
                                 if soft_codes else None),
    ]


@settings(max_examples=60)
@given(
    world(),
    st.integers(0, 1_200_000),
    steps_strategy(max_steps=4, rates=st.integers(0, 100_000)),
    st.integers(1, 400_000),
    st.integers(1, 4 * MS_PER_H),
    st.sampled_from([2, 3, 5, 6]),
    st.sets(st.sampled_from(sorted(COMPILED.SOFT_REASONS))),
    st.sampled_from([50, 500, 1000, 2000, 700]),
    st.none() | st.integers(1, 300_000),
    LATER_MS,
)
def test_decisions_agree(w, rate, steps, volume, duration, kind, soft_codes, new_conc, bridge, later_ms):
    try:
        gates = [build(k, w) for k in (COMPILED, TWIN)]
    except ValueError:
        assume(False)  # caps outside this random library's hard bounds: rejected by both, see below
    conc = w[0].concentration_ug_per_ml
    now = w[-1] + later_ms
    per_impl = []
    for k, gate in zip((COMPILED, TWIN), gates):
        before = gate.state_snapshot(), gate.state_version
        decisions = [gate.authorize(r, now) for r in requests(k, conc, rate, steps, volume, duration, kind, soft_codes, new_conc, bridge)]
        assert (gate.state_snapshot(), gate.state_version) == before  # authorize is pure
        per_impl.append([decision_key(d) for d in decisions])
        assert gate.headroom_pg(now) >= 0
    assert per_impl[0] == per_impl[1]
    assert gates[0].headroom_pg(now) == gates[1].headroom_pg(now)
    assert gates[0].tighten_running_bolus(volume, now, step_nl=10) == gates[1].tighten_running_bolus(volume, now, step_nl=10)
    assert gates[0].ledger.snapshot() == gates[1].ledger.snapshot()
    if gates[0].daily_dose_ng > 0:
        target = gates[0].daily_dose_ng * 2
        plans = []
        for gate in gates:
            try:
                plans.append(gate.plan_titration(target, now))
            except ValueError as exc:  # a dose too small to step in whole ng: both must say so
                plans.append(("error", exc.field))
        assert plans[0] == plans[1]


@settings(max_examples=40)
@given(world())
def test_construction_errors_agree(w):
    outcomes = []
    for k in (COMPILED, TWIN):
        try:
            build(k, w)
            outcomes.append(None)
        except ValueError as exc:
            outcomes.append((type(exc).__name__, getattr(exc, "field", None)))
    assert outcomes[0] == outcomes[1]


@pytest.mark.parametrize("before_end_ms", [MS_PER_DAY + 2 * MIN, MS_PER_H, COMPILED.MAX_TIME_MS % MIN, COMPILED.MAX_TIME_MS % MIN - 1, 1, 0])
def test_decisions_agree_up_to_the_end_of_the_time_range(before_end_ms):
    """now_ms may be anything up to MAX_TIME_MS; the projected windows then end past it (and in its
    partial last minute, start past it)."""
    from .conftest import make_gate

    now = COMPILED.MAX_TIME_MS - before_end_ms
    steps = [(0, 8 * MS_PER_H, 16_000), (8 * MS_PER_H, 16 * MS_PER_H, 17_000)]
    per_impl = []
    for k in (COMPILED, TWIN):
        gate = make_gate(k, programme_rate=16_000, since_ms=now - MS_PER_H)
        decided = [gate.authorize(r, now) for r in requests(k, 500, 18_000, steps, 20_000, MS_PER_H, 2, {"RATE_ABOVE_SOFT"}, 1000, 20_000)]
        per_impl.append([decision_key(d) for d in decided] + [gate.headroom_pg(now), gate.projected_excess_pg(now, None, 10**6)])
    assert per_impl[0] == per_impl[1]


def test_programmes_of_either_implementation_are_accepted():
    from .conftest import make_gate

    steps = [(0, 8 * MS_PER_H, 16_000), (8 * MS_PER_H, 16 * MS_PER_H, 17_000)]
    for k in (COMPILED, TWIN):
        gate = make_gate(k, programme_rate=16_000)
        own = gate.authorize(k.request_programme_change(k.Programme(steps, 500)), NOW)
        other_impl = TWIN if k is COMPILED else COMPILED
        foreign = gate.authorize(k.request_programme_change(other_impl.Programme(steps, 500)), NOW)
        assert decision_key(own) == decision_key(foreign)
        assert own.allowed


def test_compiled_kernel_needs_compiled_ledger():
    with pytest.raises(ValueError):
        COMPILED.SafetyKernel(COMPILED.DEFAULT_LIBRARY[500], COMPILED.make_caps(max_dose_ng_per_day=100_000), COMPILED.make_envelope(2_000, 10_000), TWIN.Ledger())


# -- the history rules: random histories, every request kind -----------------------------------


@st.composite
def history(draw):
    """A random therapy: the caps, then a sequence of requests and facts (applied when allowed)."""
    caps = dict(
        max_dose_ng_per_day=draw(st.sampled_from([300_000, 1_000_000, 2_000_000])),
        origin=draw(st.sampled_from(["spinal", "cerebral", "paediatric"])),
        min_titration_interval_ms=draw(st.sampled_from([0, MS_PER_H, MS_PER_DAY])),
        patient_bolus_enabled=True, max_bolus_ng=100_000, bolus_lockout_ms=draw(st.sampled_from([MS_PER_H, 3 * MS_PER_H])),
        max_boluses_per_day=draw(st.integers(1, 8)), titration_start_dose_ng_per_day=draw(st.sampled_from([0, 50_000, 200_000])),
        restart_threshold_ms=draw(st.sampled_from([0, MS_PER_H, MS_PER_DAY])),
    )
    op = st.one_of(
        st.tuples(st.just("rate"), st.integers(1_500, 30_000)),
        st.tuples(st.just("resume"), st.integers(1_500, 30_000)),
        st.tuples(st.just("stop"), st.integers(0, 120)),
        st.tuples(st.just("minimum_rate"), st.just(0)),
        st.tuples(st.just("discontinue"), st.booleans()),
        st.tuples(st.just("procedure"), st.booleans()),
        st.tuples(st.just("bolus"), st.integers(1_000, 80_000)),
        st.tuples(st.just("caps"), st.sampled_from(["spinal", "cerebral", "paediatric"])),
    )
    steps = draw(st.lists(st.tuples(op, st.integers(0, 30 * 60)), min_size=1, max_size=14))
    # From NOW, or ending at TOP (so that later_ms can reach MAX_TIME_MS).
    start = draw(st.sampled_from([NOW, TOP - sum(gap for _op, gap in steps) * MIN]))
    return caps, draw(st.integers(2_000, 20_000)), steps, start


def live(k, caps_kwargs, start_rate, steps, start):
    """Run a history on one implementation; return the kernel, the time reached and every decision."""
    caps = k.make_caps(**caps_kwargs)
    gate = k.SafetyKernel(k.DEFAULT_LIBRARY[1000], caps, k.make_envelope(2_000, 1_000_000), k.Ledger())
    now = start
    out = []

    def decide(request):
        d = gate.authorize(request, now)
        out.append(decision_key(d))
        if d.allowed:
            gate.apply(d, now)
            if d.kind == k.RequestKind.BOLUS:
                gate.ledger.record(d.bolus_kind, d.mass_pg, now)
                gate.ledger.release(d.bolus_kind, d.mass_pg)

    decide(k.request_rate_change(start_rate))
    auth = k.make_override({"DISCONTINUE"}, reason="differential", actor="test")
    confirm = k.make_override({"CAPS_CHANGE"}, reason="differential", actor="test")
    procedure = k.make_override({"PROCEDURE"}, reason="differential", actor="test")
    for (what, arg), gap_min in steps:
        if gate.programme is not None:
            for m in range(0, gap_min, 30):
                gate.ledger.record(0, gate.programme.delivered_pg(now + m * MIN, now + (m + 30) * MIN), now + m * MIN)
        now += gap_min * MIN
        if what == "rate":
            decide(k.request_rate_change(arg))
        elif what == "resume":
            decide(k.request_resume(arg))
        elif what == "stop":
            gate.note_stopped(max(gate.newest_event_ms or 0, now - arg * MIN))
            out.append(("stopped", gate.state_version))
        elif what == "minimum_rate":
            decide(k.request_minimum_rate())
        elif what == "discontinue":
            decide(k.request_discontinue(auth, emergency=arg))
        elif what == "procedure":
            decide(k.request_procedure_stop(procedure if arg else None))
        elif what == "bolus":
            decide(k.request_bolus(k.DeliveryKind.BOLUS_CLINICIAN, arg, 10 * MIN))
        else:
            decide(k.request_caps_change(k.make_caps(**dict(caps_kwargs, origin=arg)), confirmation=confirm))
    return gate, now, out


@settings(max_examples=40, deadline=None)
@given(history(), st.integers(1_500, 30_000), st.integers(1_000, 80_000), LATER_MS)
def test_history_rules_agree(h, rate, volume, later_ms):
    caps_kwargs, start_rate, steps, start = h
    lived = [live(k, caps_kwargs, start_rate, steps, start) for k in (COMPILED, TWIN)]
    assert lived[0][2] == lived[1][2]
    assert lived[0][0].state_snapshot() == lived[1][0].state_snapshot()
    now = max(lived[0][1], lived[0][0].newest_event_ms or 0) + later_ms
    per_impl = []
    for k, (gate, _now, _out) in zip((COMPILED, TWIN), lived):
        flex = k.Programme([(0, 12 * MS_PER_H, rate), (12 * MS_PER_H, 12 * MS_PER_H, max(2_000, rate // 2))], 1000)
        requests = [
            k.request_rate_change(rate), k.request_resume(rate), k.request_resume(programme=flex),
            k.request_programme_change(flex), k.request_minimum_rate(),
            k.request_bolus(k.DeliveryKind.BOLUS_PATIENT, volume, 10 * MIN),
            k.request_bolus(k.DeliveryKind.BOLUS_CLINICIAN, volume, 10 * MIN),
            k.request_caps_change(k.make_caps(**dict(caps_kwargs, origin="spinal")), confirmation=None),
            k.request_concentration_change(k.Programme.continuous(max(2_000, rate // 2), 2000), k.BridgePlan(20_000, MS_PER_H)),
            k.request_procedure_stop(k.make_override({"PROCEDURE"}, reason="differential", actor="test")),
        ]
        per_impl.append([decision_key(gate.authorize(r, now)) for r in requests] + [
            gate.titration_baseline_ng(now), gate.effective_caps(now), gate.headroom_pg(now),
            gate.cap_pg(now_ms=now), gate.newest_event_ms,
        ])
    assert per_impl[0] == per_impl[1]


@settings(max_examples=30)
@given(world(), st.none() | steps_strategy(max_steps=4, rates=st.integers(1, 100_000)), st.integers(0, 10**10),
       LATER_MS)
def test_projected_excess_agrees_and_matches_a_brute_force_window_walk(w, steps, extra_pg, later_ms):
    try:
        gates = [build(k, w) for k in (COMPILED, TWIN)]
    except ValueError:
        assume(False)
    conc = w[0].concentration_ug_per_ml
    now = w[-1] + later_ms
    excess = [gate.projected_excess_pg(now, None if steps is None else k.Programme(steps, conc, anchor_ms=now),
                                       extra_pg) for k, gate in zip((COMPILED, TWIN), gates)]
    assert excess[0] == excess[1]
    # The oracle: every trailing window ending in minutes m0 .. m0+1440, summed from the ledger's buckets,
    # the commitments, the programme's basal from now and the extra mass (in every window but the last,
    # which holds nothing from before now's minute). Near MAX_TIME_MS the windows end past it, where
    # the public integral refuses: the basal depends only on times relative to the anchor, so the
    # oracle integrates its programme a whole number of days earlier.
    gate = gates[1]
    shift = 3 * MS_PER_DAY
    programme = None if steps is None else TWIN.Programme(steps, conc, anchor_ms=now - shift)
    cap = gate.cap_pg(now_ms=now)
    m0 = now // MIN
    worst = None
    for k in range(1441):
        inside = sum(gate.ledger.bucket_totals(m0 + k - 1439, m0)) if k < 1440 else 0
        basal = 0 if programme is None else programme.delivered_pg((now if k < 1440 else (m0 + 1) * MIN) - shift,
                                                                      (m0 + k + 1) * MIN - shift)
        total = inside + gate.ledger.committed_pg() + basal + (extra_pg if k < 1440 else 0) - cap
        worst = total if worst is None else max(worst, total)
    assert excess[1] == worst
