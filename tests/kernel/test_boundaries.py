"""Every kernel limit at minus one unit, exactly at it, and plus one unit; on both implementations.

Custom library entries with distinct numbers keep each limit's reason code isolated.
At 1000 µg/mL one nL holds exactly one ng, so bolus boundaries are exact in nL.
"""

from __future__ import annotations

import pytest

from cython_ext.units import MS_PER_DAY, MS_PER_H

from .conftest import make_gate

T0 = 10 * MS_PER_DAY  # a monotonic "now" well after start


def reasons_of(gate, request, now=T0):
    before = gate.ledger.snapshot(), gate.programme, gate.state_version, list(gate.dose_history)
    decision = gate.authorize(request, now)
    after = gate.ledger.snapshot(), gate.programme, gate.state_version, list(gate.dose_history)
    assert before == after, "authorize() must not change state"
    assert decision.allowed == (decision.reasons == ())
    return set(decision.reasons)


def custom_gate(k, *, rate_bounds=(4_000, 6_000, 30_000, 40_000), envelope=(2_000, 50_000, 1), programme_rate=None, **caps):
    limits = k.DEFAULT_LIBRARY[500]._replace(
        rate_nl_per_h=k.Bounds(*rate_bounds), dose_ng_per_day=k.Bounds(12_000, 24_000, 600_000, 700_000)
    ).validate()
    caps = k.make_caps(**{"max_dose_ng_per_day": 700_000, "minimum_rate_nl_per_h": rate_bounds[0], **caps})
    programme = None if programme_rate is None else k.Programme.continuous(programme_rate, 500)
    return k.SafetyKernel(limits, caps, k.make_envelope(*envelope), k.Ledger(), programme=programme)


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        (3_999, {"RATE_BELOW_HARD", "RATE_BELOW_MINIMUM_RATE"}),
        (4_000, {"RATE_BELOW_SOFT"}),
        (5_999, {"RATE_BELOW_SOFT"}),
        (6_000, set()),
        (30_000, set()),
        (30_001, {"RATE_ABOVE_SOFT"}),
        (40_000, {"RATE_ABOVE_SOFT"}),
        (40_001, {"RATE_ABOVE_HARD"}),
    ],
)
def test_rate_hard_and_soft_bounds(impl, rate, expected):
    gate = custom_gate(impl)
    assert reasons_of(gate, impl.request_rate_change(rate)) == expected


def test_soft_limit_needs_override_naming_it(impl):
    gate = custom_gate(impl)
    soft = impl.make_override({"RATE_ABOVE_SOFT"}, reason="tolerates higher flow", actor="dr-a/prescriber")
    other = impl.make_override({"DOSE_ABOVE_SOFT"}, reason="wrong code", actor="dr-a/prescriber")
    d = gate.authorize(impl.request_rate_change(30_001, override=soft), T0)
    assert d.allowed and d.overridden == ("RATE_ABOVE_SOFT",)
    assert not gate.authorize(impl.request_rate_change(30_001, override=other), T0).allowed
    # An override never lifts a hard limit.
    assert reasons_of(gate, impl.request_rate_change(40_001, override=soft)) == {"RATE_ABOVE_HARD"}


@pytest.mark.parametrize(
    ("rate", "expected"),
    [
        (6_990, {"RATE_BELOW_PUMP_MIN"}),
        (6_999, {"RATE_BELOW_PUMP_MIN", "RATE_NOT_PUMP_STEP"}),
        (7_000, set()),
        (7_001, {"RATE_NOT_PUMP_STEP"}),
        (20_000, set()),
        (20_001, {"RATE_ABOVE_PUMP_MAX", "RATE_NOT_PUMP_STEP"}),
        (20_010, {"RATE_ABOVE_PUMP_MAX"}),
    ],
)
def test_pump_envelope(impl, rate, expected):
    gate = custom_gate(impl, envelope=(7_000, 20_000, 10))
    assert reasons_of(gate, impl.request_rate_change(rate)) == expected


@pytest.mark.parametrize(("rate", "expected"), [(6_999, {"RATE_BELOW_MINIMUM_RATE"}), (7_000, set()), (7_001, set())])
def test_patient_minimum_rate(impl, rate, expected):
    gate = custom_gate(impl, minimum_rate_nl_per_h=7_000)
    assert reasons_of(gate, impl.request_rate_change(rate)) == expected


@pytest.mark.parametrize(("rate", "expected"), [(29_999, set()), (30_000, set()), (30_001, {"DOSE_ABOVE_PRESCRIPTION_CAP"})])
def test_prescription_daily_cap(impl, rate, expected):
    # 500 µg/mL: 1 nL/h is 12 ng/day, so 30 000 nL/h is exactly 360 000 ng/day.
    gate = custom_gate(impl, rate_bounds=(2_000, 2_000, 40_000, 50_000), max_dose_ng_per_day=360_000)
    got = reasons_of(gate, impl.request_rate_change(rate))
    assert got - {"DOSE_CAP_24H"} == expected
    assert ("DOSE_CAP_24H" in got) == bool(expected)  # the rolling projection agrees


@pytest.mark.parametrize(
    ("rate", "expected"),
    [(999, {"DOSE_BELOW_HARD"}), (1_000, {"DOSE_BELOW_SOFT"}), (1_999, {"DOSE_BELOW_SOFT"}), (2_000, set()),
     (50_000, set()), (50_001, {"DOSE_ABOVE_SOFT"}), (58_333, {"DOSE_ABOVE_SOFT"}),
     (58_334, {"DOSE_ABOVE_HARD", "DOSE_ABOVE_PRESCRIPTION_CAP", "DOSE_CAP_24H"})],
)
def test_dose_hard_and_soft_bounds(impl, rate, expected):
    # Dose bounds 12 000 / 24 000 / 600 000 / 700 000 ng/day; 12 ng/day per nL/h.
    gate = custom_gate(impl, rate_bounds=(500, 500, 100_000, 100_000), envelope=(500, 100_000, 1), minimum_rate_nl_per_h=500)
    assert reasons_of(gate, impl.request_rate_change(rate)) == expected


@pytest.mark.parametrize(
    ("rate", "expected"),
    [(12_999, set()), (13_000, set()), (13_001, {"TITRATION_CAP_EXCEEDED"})],
)
def test_titration_cap_spinal_30_pct(impl, rate, expected):
    gate = custom_gate(impl, programme_rate=10_000)  # 120 000 ng/day since t=0; +30 % = 156 000
    assert reasons_of(gate, impl.request_rate_change(rate)) == expected


def test_titration_cap_is_cumulative_over_24h(impl):
    gate = custom_gate(impl, programme_rate=10_000, min_titration_interval_ms=0)
    now = T0
    for rate in (11_000, 12_000, 13_000):
        d = gate.authorize(impl.request_rate_change(rate), now)
        assert d.allowed, d.reasons
        gate.apply(d, now)
        now += MS_PER_H
    # Three small steps used up the 30 %: one more nL/h is refused until 24 h after the first.
    assert reasons_of(gate, impl.request_rate_change(13_001), now) == {"TITRATION_CAP_EXCEEDED"}
    assert reasons_of(gate, impl.request_rate_change(13_001), T0 + MS_PER_DAY - 1) == {"TITRATION_CAP_EXCEEDED"}
    assert reasons_of(gate, impl.request_rate_change(14_300), T0 + MS_PER_DAY) == set()  # 24 h after: base 11 000


@pytest.mark.parametrize(("delta_ms", "expected"), [(MS_PER_DAY - 1, {"TITRATION_INTERVAL"}), (MS_PER_DAY, set()), (MS_PER_DAY + 1, set())])
def test_titration_interval(impl, delta_ms, expected):
    gate = custom_gate(impl, programme_rate=10_000)
    d = gate.authorize(impl.request_rate_change(11_000), T0)
    gate.apply(d, T0)
    assert reasons_of(gate, impl.request_rate_change(11_500), T0 + delta_ms) == expected
    override = impl.make_override({"TITRATION_INTERVAL"}, reason="inpatient, observed", actor="dr-a/prescriber")
    assert gate.authorize(impl.request_rate_change(11_500, override=override), T0 + delta_ms).allowed


@pytest.mark.parametrize(("rate", "expected"), [(8_001, set()), (8_000, set()), (7_999, {"DECREASE_NEEDS_CONFIRMATION"})])
def test_large_decrease_needs_confirmation(impl, rate, expected):
    gate = custom_gate(impl, programme_rate=10_000)  # 20 % of 120 000 ng/day
    assert reasons_of(gate, impl.request_rate_change(rate)) == expected


def test_zero_only_through_discontinue(impl):
    gate = custom_gate(impl, programme_rate=10_000)
    assert "RATE_ZERO" in reasons_of(gate, impl.request_rate_change(0))
    assert reasons_of(gate, impl.request_discontinue(None)) == {"DISCONTINUE_NOT_AUTHORISED", "TAPER_INCOMPLETE"}
    auth = impl.make_override({"DISCONTINUE"}, reason="pump explant", actor="dr-a/prescriber")
    assert reasons_of(gate, impl.request_discontinue(auth)) == {"TAPER_INCOMPLETE"}
    d = gate.authorize(impl.request_discontinue(auth, emergency=True), T0)
    assert d.allowed and d.rate_nl_per_h == 0 and d.overridden == ("DISCONTINUE",)
    gate.apply(d, T0)
    assert gate.programme is None and gate.daily_dose_ng == 0


def test_taper_ends_at_minimum_rate(impl):
    gate = custom_gate(impl, programme_rate=4_000, minimum_rate_nl_per_h=4_000, rate_bounds=(2_000, 2_000, 30_000, 40_000))
    auth = impl.make_override({"DISCONTINUE"}, reason="end of taper", actor="dr-a/prescriber")
    assert reasons_of(gate, impl.request_discontinue(auth)) == set()


def test_minimum_rate_mode(impl):
    gate = custom_gate(impl, programme_rate=10_000, minimum_rate_nl_per_h=6_000)
    d = gate.authorize(impl.request_minimum_rate(), T0)
    assert d.allowed and d.rate_nl_per_h == 6_000
    gate.apply(d, T0)
    assert gate.programme.rate_at(T0) == 6_000
    low = custom_gate(impl, programme_rate=6_000, minimum_rate_nl_per_h=6_000)
    assert reasons_of(low, impl.request_minimum_rate()) == set()


# -- boluses (1000 µg/mL: 1 nL = 1 ng) ------------------------------------------------------


def bolus_gate(impl, **caps):
    caps = {"max_bolus_ng": 100_000, "bolus_lockout_ms": 4 * MS_PER_H, "max_boluses_per_day": 2, "patient_bolus_enabled": True, **caps}
    return make_gate(impl, concentration=1000, programme_rate=4_000, max_dose_ng_per_day=600_000, **caps)


def bolus(impl, volume_nl, kind=None, duration_ms=10 * 60_000):
    return impl.request_bolus(impl.DeliveryKind.BOLUS_PATIENT if kind is None else kind, volume_nl, duration_ms)


@pytest.mark.parametrize(
    ("volume", "expected"),
    [(999, {"BOLUS_BELOW_HARD"}), (1_000, {"BOLUS_BELOW_SOFT"}), (9_999, {"BOLUS_BELOW_SOFT"}), (10_000, set()),
     (75_000, set()), (75_001, {"BOLUS_ABOVE_SOFT"}), (100_000, {"BOLUS_ABOVE_SOFT"}),
     (100_001, {"BOLUS_ABOVE_HARD", "BOLUS_ABOVE_PRESCRIPTION_MAX"})],
)
def test_bolus_size(impl, volume, expected):
    assert reasons_of(bolus_gate(impl), bolus(impl, volume)) == expected


@pytest.mark.parametrize(("volume", "expected"), [(49_999, set()), (50_000, set()), (50_001, {"BOLUS_ABOVE_PRESCRIPTION_MAX"})])
def test_bolus_prescription_max(impl, volume, expected):
    assert reasons_of(bolus_gate(impl, max_bolus_ng=50_000), bolus(impl, volume)) == expected


@pytest.mark.parametrize(("delta_ms", "expected"), [(4 * MS_PER_H - 1, {"BOLUS_LOCKOUT"}), (4 * MS_PER_H, set()), (4 * MS_PER_H + 1, set())])
def test_bolus_lockout(impl, delta_ms, expected):
    gate = bolus_gate(impl)
    d = gate.authorize(bolus(impl, 20_000), T0)
    gate.apply(d, T0)
    # Clinician and patient boluses share the lockout.
    assert reasons_of(gate, bolus(impl, 20_000, impl.DeliveryKind.BOLUS_CLINICIAN), T0 + delta_ms) == expected


def test_bolus_count_per_24h(impl):
    gate = bolus_gate(impl, bolus_lockout_ms=MS_PER_H)
    for i in range(2):
        d = gate.authorize(bolus(impl, 20_000), T0 + i * MS_PER_H)
        assert d.allowed, d.reasons
        gate.apply(d, T0 + i * MS_PER_H)
    assert reasons_of(gate, bolus(impl, 20_000), T0 + 2 * MS_PER_H) == {"BOLUS_COUNT"}
    assert reasons_of(gate, bolus(impl, 20_000), T0 + MS_PER_DAY - 1) == {"BOLUS_COUNT"}
    assert reasons_of(gate, bolus(impl, 20_000), T0 + MS_PER_DAY) == set()


def test_bolus_disabled_and_screening(impl):
    assert reasons_of(bolus_gate(impl, patient_bolus_enabled=False), bolus(impl, 20_000)) == {"BOLUS_DISABLED"}
    screening = make_gate(impl, concentration=50, programme_rate=None, max_dose_ng_per_day=200_000, bolus_lockout_ms=MS_PER_DAY)
    two_hours = 2 * MS_PER_H  # 1 mL needs at least 1 h at the 1 mL/h pump maximum
    assert reasons_of(screening, bolus(impl, 1_000_000, impl.DeliveryKind.BOLUS_CLINICIAN, two_hours)) == set()  # 50 µg
    assert reasons_of(screening, bolus(impl, 1_000_000, None, two_hours)) == {"BOLUS_DISABLED"}
    assert "SCREENING_ONLY" in reasons_of(screening, impl.request_rate_change(4_000))


@pytest.mark.parametrize(("extra_nl", "allowed"), [(-1, True), (0, True), (1, False)])
def test_bolus_projected_24h_cap_includes_basal(impl, extra_nl, allowed):
    # Basal 14 000 nL/h at 1000 µg/mL = 336 000 ng/day; cap 400 000: headroom exactly 64 000 ng.
    gate = make_gate(impl, concentration=1000, programme_rate=14_000, max_dose_ng_per_day=400_000, max_bolus_ng=100_000)
    assert gate.headroom_pg(T0) == 64_000_000
    got = reasons_of(gate, bolus(impl, 64_000 + extra_nl, impl.DeliveryKind.BOLUS_CLINICIAN))
    assert ("DOSE_CAP_24H" not in got) == allowed
    # A bolus refused by the 24 h cap names the overdose risk (BOL-01, PRX-04).
    assert ("BOLUS_OVERDOSE_RISK_24H_CAP" in got) == (not allowed)
    assert got - {"DOSE_CAP_24H", "BOLUS_OVERDOSE_RISK_24H_CAP", "BOLUS_ABOVE_SOFT"} == set()


def test_priming_volume_limit_and_pump_rate(impl):
    gate = bolus_gate(impl, max_priming_volume_nl=250_000)
    priming = impl.DeliveryKind.PRIMING
    assert "PRIMING_VOLUME_ABOVE_MAX" not in reasons_of(gate, bolus(impl, 250_000, priming))
    assert "PRIMING_VOLUME_ABOVE_MAX" in reasons_of(gate, bolus(impl, 250_001, priming))
    # 996 000 nL/h of headroom above basal 4 000: 166 000 nL in 10 min is exactly at it.
    assert "BOLUS_RATE_ABOVE_PUMP_MAX" not in reasons_of(gate, bolus(impl, 166_000, priming))
    assert "BOLUS_RATE_ABOVE_PUMP_MAX" in reasons_of(gate, bolus(impl, 166_001, priming))


def test_concentration_change_needs_bridge(impl):
    gate = make_gate(impl, concentration=500, programme_rate=16_000)  # 192 µg/day
    new = impl.Programme.continuous(4_000, 2000)  # 192 µg/day at 2000 µg/mL
    assert reasons_of(gate, impl.request_concentration_change(new, None)) == {"BRIDGE_PLAN_MISSING"}
    assert "CONCENTRATION_CHANGED" in reasons_of(gate, impl.request_programme_change(new))
    assert "CONCENTRATION_NOT_IN_LIBRARY" in reasons_of(gate, impl.request_concentration_change(impl.Programme.continuous(4_000, 700), impl.BridgePlan(250_000, MS_PER_H)))
    # 0.25 mL of 500 µg/mL pushed at the old rate (16 µL/h) takes 15.625 h: exactly the dose at the tip.
    transit_ms = 250_000 * MS_PER_H // 16_000
    d = gate.authorize(impl.request_concentration_change(new, impl.BridgePlan(250_000, transit_ms)), T0)
    assert d.allowed, d.reasons
    assert d.mass_pg == 0  # the transit is part of the programme's dose, not on top of it
    gate.apply(d, T0)
    assert gate.limits.concentration_ug_per_ml == 2000
    assert gate.ledger.committed_pg(impl.DeliveryKind.BRIDGE) == 0


def test_concentration_transit_may_not_push_the_old_drug_faster_than_the_dose(impl):
    """The transit's tip dose, volume x old concentration / duration, is at most 1 % above the new dose."""
    new = impl.Programme.continuous(4_000, 2000)  # 192 µg/day = 192e6 pg/day
    dose_pg_per_day = 4_000 * 24 * 2000
    # Shortest duration with 250 000 nL x 500 µg/mL x day <= 1.01 x dose x duration, by hand:
    shortest = -(-(250_000 * 500 * MS_PER_DAY * 100) // (dose_pg_per_day * 101))
    gate = make_gate(impl, concentration=500, programme_rate=16_000)
    assert reasons_of(gate, impl.request_concentration_change(new, impl.BridgePlan(250_000, shortest))) == set()
    assert reasons_of(gate, impl.request_concentration_change(new, impl.BridgePlan(250_000, shortest - 1))) == {
        "TRANSIT_DOSE_ABOVE_PROGRAMME"}
    # A transit slower than the pump can go, or longer than the pump's slowest, is refused by rate.
    fast = impl.BridgePlan(250_000, 250_000 * MS_PER_H // gate.envelope.max_rate_nl_per_h - 1)
    assert "RATE_ABOVE_PUMP_MAX" in reasons_of(gate, impl.request_concentration_change(new, fast))
    # Weeks-long transits (low doses, large dead volumes) are planned in full, never cut at 24 h.
    slow = impl.request_concentration_change(impl.Programme.continuous(20, 2000), impl.BridgePlan(500_000, 300 * MS_PER_DAY))
    assert "TRANSIT_DOSE_ABOVE_PROGRAMME" not in reasons_of(gate, slow)
    with pytest.raises(ValueError):
        impl.request_concentration_change(new, impl.BridgePlan(250_000, 367 * MS_PER_DAY))


def test_apply_refuses_denied_decisions_and_freshness_is_checked_before(impl):
    gate = bolus_gate(impl)
    denied = gate.authorize(bolus(impl, 500_000), T0)
    with pytest.raises(ValueError):
        gate.apply(denied, T0)
    ok = gate.authorize(bolus(impl, 20_000), T0)
    other = gate.authorize(bolus(impl, 20_000), T0)
    with pytest.raises(ValueError):
        gate.apply(ok, T0 - 1)
    assert gate.state_version == 0 and gate.ledger.committed_pg() == 0
    assert gate.is_fresh(ok, T0 + 60_000) and not gate.is_fresh(ok, T0 + 60_001)
    gate.apply(ok, T0 + 60_000)
    assert gate.ledger.committed_pg() == 20_000 * 1000
    # The state moved on: a decision made before must be re-authorised before the pump is commanded.
    assert not gate.is_fresh(other, T0 + 60_000)
    assert "BOLUS_LOCKOUT" in gate.authorize(other.request, T0 + 60_000).reasons
    # An executed decision is recorded however late; the recording is all or nothing.
    late = bolus_gate(impl)
    d = late.authorize(bolus(impl, 20_000), T0)
    late.apply(d, T0 + MS_PER_DAY)
    assert late.ledger.last_bolus_ms() == T0 + MS_PER_DAY
    late.ledger.record_bolus_start(impl.DeliveryKind.PRIMING, T0 + 2 * MS_PER_DAY)
    before = late.ledger.snapshot()
    with pytest.raises(ValueError):
        late.apply(d, T0 + MS_PER_DAY + 1)  # bolus start before the newest one
    assert late.ledger.snapshot() == before


def test_directly_built_requests_are_checked(impl):
    gate = bolus_gate(impl)
    good = bolus(impl, 20_000, impl.DeliveryKind.PRIMING)
    for bad in (good._replace(volume_nl=-5), good._replace(volume_nl=10**30), good._replace(bolus_kind=0),
                good._replace(duration_ms=2.5), impl.request_rate_change(5)._replace(rate_nl_per_h=-1),
                good._replace(kind=99), good._replace(override="please")):
        with pytest.raises((ValueError, TypeError)):
            gate.authorize(bad, T0)


def test_clock_behind_ledger_is_denied(impl):
    gate = bolus_gate(impl)
    gate.ledger.record(impl.DeliveryKind.BASAL, 1_000, T0 + 120_000)
    assert reasons_of(gate, bolus(impl, 20_000), T0) == {"CLOCK_BEHIND_LEDGER"}


def test_float_time_rejected(impl):
    gate = bolus_gate(impl)
    with pytest.raises(TypeError):
        gate.authorize(bolus(impl, 20_000), float(T0))


def test_state_snapshot_restart_keeps_titration_and_lockout(impl):
    import json

    gate = bolus_gate(impl, min_titration_interval_ms=MS_PER_DAY)
    b = gate.authorize(bolus(impl, 20_000), T0)
    gate.apply(b, T0)
    d = gate.authorize(impl.request_rate_change(4_400), T0)
    gate.apply(d, T0)
    state = json.loads(json.dumps(gate.state_snapshot()))
    again = impl.SafetyKernel.from_snapshot(state, gate.caps, gate.envelope)
    # 108 µg/day + the 20 µg bolus of the step's day is above 1.3 x 96: a step on a step counts the bolus (TIT-01, §5.1).
    assert reasons_of(again, impl.request_rate_change(4_500), T0 + MS_PER_H) == {"TITRATION_INTERVAL",
                                                                                 "TITRATION_CAP_EXCEEDED"}
    # PER-02: the lockout survives, and so does the step the bolus would stack on (BOL-01).
    assert reasons_of(again, bolus(impl, 20_000), T0 + MS_PER_H) == {"BOLUS_LOCKOUT", "BOLUS_OVERDOSE_RISK_TITRATION_STEP"}
    assert again.dose_history == gate.dose_history and again.last_increase_ms == T0
    bad = dict(state, dose_history=[])
    with pytest.raises(ValueError):
        impl.SafetyKernel.from_snapshot(bad, gate.caps, gate.envelope)


@pytest.mark.parametrize(
    ("record", "expected"),
    [(1_899, {"CONCENTRATION_BELOW_HARD"}), (1_900, {"CONCENTRATION_BELOW_SOFT"}), (1_959, {"CONCENTRATION_BELOW_SOFT"}),
     (1_960, set()), (2_000, set()), (2_040, set()), (2_041, {"CONCENTRATION_ABOVE_SOFT"}), (2_100, {"CONCENTRATION_ABOVE_SOFT"}),
     (2_101, {"CONCENTRATION_ABOVE_HARD"}), (None, set())],
)
def test_refill_record_concentration_bounds(impl, record, expected):
    # 2000 µg/mL entry: hard ±5 % = [1900, 2100], soft ±2 % = [1960, 2040] (PRX-06).
    gate = make_gate(impl, concentration=500, programme_rate=16_000)
    new = impl.Programme.continuous(4_000, 2000)
    request = impl.request_concentration_change(new, impl.BridgePlan(20_000, 20_000 * MS_PER_H // 16_000), record_concentration_ug_per_ml=record)
    assert reasons_of(gate, request) == expected


def test_running_bolus_cut_at_the_cap(impl):
    # Basal 14 000 nL/h at 1000 µg/mL = 336 µg/day; cap 400 µg: 64 µg of headroom.
    gate = make_gate(impl, concentration=1000, programme_rate=14_000, max_dose_ng_per_day=400_000, max_bolus_ng=100_000)
    clinician = impl.DeliveryKind.BOLUS_CLINICIAN
    d = gate.authorize(bolus(impl, 60_000, clinician, MS_PER_H), T0)
    assert d.allowed
    gate.apply(d, T0)
    untouched = gate.tighten_running_bolus(60_000, T0)
    assert untouched.value == 60_000 and untouched.steps == ()
    # Meanwhile 10 µg of priming was delivered: the projection is 6 µg over the cap.
    gate.ledger.record(impl.DeliveryKind.PRIMING, 10_000 * 1000, T0)
    cut = gate.tighten_running_bolus(60_000, T0, step_nl=7)
    assert cut.value == 53_998  # 54 000 at the headroom, then down to a multiple of the 7 nL step
    assert [s.name for s in cut.steps] == ["cap_headroom", "pump_step"]
    gate.ledger.release(clinician, (60_000 - cut.value) * 1000)
    assert gate.headroom_pg(T0) == 2 * 1000
    again = gate.tighten_running_bolus(cut.value, T0, step_nl=7)
    assert again.value == cut.value and again.steps == ()  # idempotent
