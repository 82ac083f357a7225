"""The rules that hold over the patient's whole history, at each limit (minus one unit, at it, plus one).

Both implementations. At 1000 µg/mL a rate of r nL/h is a daily dose of exactly 24 r ng and a
bolus of v nL is v ng, so every boundary is exact in the request's own unit. Requirement IDs:
TIT-01 (trailing-window cap), TIT-04 (interval, soft), SAFE-01/02/03 (stops, minimum rate and
discontinues count as the low doses they were), BOL-01 (bolus rules, overdose naming),
PER-02 (the facts survive a restart), and the label's first 24 h and restart rule
(itb-clinical.md §1.3, §1.6, §3.3).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_DAY, MS_PER_H

T0 = 20 * MS_PER_DAY
SINCE = T0 - 10 * MS_PER_DAY  # a programme in effect long before T0
MIN = 60_000


def kernel(k, *, rate=10_000, since=SINCE, programme=True, **caps):
    """A 1000 µg/mL kernel with a continuous ``rate`` in effect since ``since`` (240 µg/day at 10 000 nL/h)."""
    kwargs = {"max_dose_ng_per_day": 2_000_000, "min_titration_interval_ms": 0, "max_bolus_ng": 100_000,
              "bolus_lockout_ms": MS_PER_H, "max_boluses_per_day": 8, "patient_bolus_enabled": True, **caps}
    p = k.Programme.continuous(rate, 1000) if programme else None
    return k.SafetyKernel(k.DEFAULT_LIBRARY[1000], k.make_caps(**kwargs), k.make_envelope(2_000, 1_000_000),
                          k.Ledger(), programme=p, programme_since_ms=since)


def decide(gate, request, now):
    before = gate.state_snapshot()
    d = gate.authorize(request, now)
    assert gate.state_snapshot() == before, "authorize() must not change state"
    return d


def act(gate, request, now):
    """Authorise and apply; the request must be allowed."""
    d = gate.authorize(request, now)
    assert d.allowed, d.reasons
    gate.apply(d, now)
    return d


def reasons(gate, request, now):
    return set(decide(gate, request, now).reasons)


ALL_SOFT = None  # filled per implementation: an override naming every soft code


def soft(k):
    return k.make_override(k.SOFT_REASONS, reason="clinician judgement", actor="dr-a/prescriber")


# -- TIT-01: the cap over the trailing window ---------------------------------------------------


@pytest.mark.parametrize(("rate", "refused"), [(10_399, False), (10_400, False), (10_401, True)])
def test_cap_is_over_the_lowest_dose_of_the_trailing_24h(impl, rate, refused):
    """TIT-01: after a cut to 192 µg/day, the ceiling is 1.3 x 192 = 249.6 µg/day (10 400 nL/h)."""
    gate = kernel(impl)
    act(gate, impl.request_rate_change(8_000), T0)
    got = reasons(gate, impl.request_rate_change(rate), T0 + MS_PER_H)
    assert ("TITRATION_CAP_EXCEEDED" in got) == refused
    assert got <= {"TITRATION_CAP_EXCEEDED"}


@pytest.mark.parametrize(("after_ms", "refused"), [(MS_PER_DAY - 1, True), (MS_PER_DAY, False), (MS_PER_DAY + 1, False)])
def test_a_low_dose_counts_until_24h_after_it_ended(impl, after_ms, refused):
    """TIT-01: the 192 µg/day dose ended at T1; it is the baseline until exactly T1 + 24 h."""
    gate = kernel(impl)
    act(gate, impl.request_rate_change(8_000), T0)
    t1 = T0 + 2 * MS_PER_H
    act(gate, impl.request_rate_change(10_400), t1)
    got = reasons(gate, impl.request_rate_change(13_520), t1 + after_ms)  # 1.3 x 10 400
    assert ("TITRATION_CAP_EXCEEDED" in got) == refused


@pytest.mark.parametrize("after_ms", [MS_PER_DAY - 1, MS_PER_DAY, MS_PER_DAY + 1])
def test_the_dose_in_effect_is_always_in_the_window(impl, after_ms):
    """TIT-01: 24 h after a cut to 192 µg/day the old 240 µg/day has left the window, never the cut."""
    gate = kernel(impl)
    act(gate, impl.request_rate_change(8_000), T0)
    assert gate.titration_baseline_ng(T0 + after_ms) == 192_000
    assert reasons(gate, impl.request_rate_change(13_000), T0 + after_ms) == {"TITRATION_CAP_EXCEEDED"}


def test_cut_then_raise_cannot_climb_above_the_cap(impl):
    """Issue #9 finding 1: +29 %, cut 20 % an hour later, next day 1.3 x the peak was allowed (+62 %)."""
    gate = kernel(impl)
    act(gate, impl.request_rate_change(12_900), T0)  # +29 %
    act(gate, impl.request_rate_change(10_320), T0 + MS_PER_H)  # -20 %
    next_day = T0 + MS_PER_DAY + 2 * MS_PER_H
    assert gate.titration_baseline_ng(next_day) == 10_320 * 24
    assert reasons(gate, impl.request_rate_change(16_770), next_day) == {"TITRATION_CAP_EXCEEDED"}
    assert decide(gate, impl.request_rate_change(13_416), next_day).allowed  # 1.3 x the dose in effect


def test_deep_cut_lowers_the_baseline_for_24h(impl):
    """A confirmed decrease lowers the baseline for 24 h after it stops being in effect (issue #9: +205 %)."""
    gate = kernel(impl, decrease_confirm_pct=20)
    act(gate, impl.request_rate_change(4_000, override=soft(impl)), T0)  # -60 %, confirmed
    assert reasons(gate, impl.request_rate_change(10_000), T0 + MS_PER_DAY) == {"TITRATION_CAP_EXCEEDED"}
    assert decide(gate, impl.request_rate_change(5_200), T0 + MS_PER_DAY).allowed


def test_split_steps_cannot_get_round_the_cap(impl):
    """TIT-01: small steps inside one 24 h add up against the same baseline."""
    gate = kernel(impl)
    for i, rate in enumerate((11_000, 12_000, 12_900)):
        act(gate, impl.request_rate_change(rate), T0 + i * MS_PER_H)
    assert reasons(gate, impl.request_rate_change(13_100), T0 + 3 * MS_PER_H) == {"TITRATION_CAP_EXCEEDED"}


# -- SAFE-01/02/03: stops, minimum rate and discontinues are low doses ---------------------------


@pytest.mark.parametrize(("after_ms", "refused"), [(MS_PER_DAY - 1, True), (MS_PER_DAY, False)])
def test_a_stop_is_a_zero_dose_for_24h_after_the_resume(impl, after_ms, refused):
    gate = kernel(impl)
    gate.note_stopped(T0)
    resumed = T0 + MS_PER_H
    act(gate, impl.request_resume(10_000), resumed)
    got = reasons(gate, impl.request_rate_change(10_100), resumed + after_ms)
    assert ("TITRATION_CAP_EXCEEDED" in got) == refused


def test_minimum_rate_spell_is_its_dose_in_the_window(impl):
    gate = kernel(impl)
    act(gate, impl.request_minimum_rate(), T0)
    assert gate.interruption == (T0, 240_000, "minimum_rate")
    act(gate, impl.request_resume(10_000), T0 + MS_PER_H)
    assert gate.interruption is None
    assert gate.titration_baseline_ng(T0 + 2 * MS_PER_H) == 2_000 * 24
    assert reasons(gate, impl.request_rate_change(10_100), T0 + 2 * MS_PER_H) == {"TITRATION_CAP_EXCEEDED"}


def test_discontinue_keeps_the_history_and_restart_meets_the_restart_rule(impl):
    """A discontinue used to forget the history, so the restart was a fresh start (issue #9)."""
    gate = kernel(impl)
    auth = impl.make_override({"DISCONTINUE"}, reason="explant", actor="dr-a/prescriber")
    act(gate, impl.request_discontinue(auth, emergency=True), T0)
    assert gate.programme is None and gate.dose_history[-1] == (T0, 0)
    assert gate.interruption == (T0, 240_000, "discontinued")
    assert reasons(gate, impl.request_rate_change(10_001), T0 + MS_PER_H) == {"RESTART_OVERDOSE_RISK_ABOVE_PRIOR_DOSE"}
    assert decide(gate, impl.request_rate_change(10_000), T0 + MS_PER_H).allowed


def test_stop_during_minimum_rate_continues_the_interruption(impl):
    gate = kernel(impl)
    act(gate, impl.request_minimum_rate(), T0)
    gate.note_stopped(T0 + MS_PER_H)
    assert gate.interruption == (T0, 240_000, "stopped")
    assert gate.dose_history[-2:] == [(T0, 48_000), (T0 + MS_PER_H, 0)]


def test_note_stopped_is_a_no_op_when_nothing_is_delivered(impl):
    fresh = kernel(impl, programme=False)
    fresh.note_stopped(T0)
    assert fresh.dose_history == [] and fresh.state_version == 0
    gate = kernel(impl)
    gate.note_stopped(T0)
    version = gate.state_version
    gate.note_stopped(T0 + MIN)
    assert gate.state_version == version and gate.interruption.since_ms == T0


# -- the label's first 24 h after implant (hard) ---------------------------------------------------


@pytest.mark.parametrize(("after_ms", "refused"), [(MS_PER_DAY - 1, True), (MS_PER_DAY, False), (MS_PER_DAY + 1, False)])
def test_no_increase_in_the_first_24h_whatever_the_override(impl, after_ms, refused):
    """itb-clinical.md §1.3. A TITRATION_INTERVAL override used to lift it (the only thing enforcing it)."""
    gate = kernel(impl, programme=False)
    act(gate, impl.request_rate_change(10_000), T0)
    assert gate.therapy_start_ms == T0
    for override in (None, soft(impl)):
        got = reasons(gate, impl.request_rate_change(11_000, override=override), T0 + after_ms)
        assert ("INCREASE_WITHIN_24H_OF_START" in got) == refused
    assert decide(gate, impl.request_rate_change(9_000), T0 + MS_PER_H).allowed  # a decrease is no increase


def test_hard_codes_cannot_be_named_in_an_override(impl):
    for code in ("INCREASE_WITHIN_24H_OF_START", "RESTART_OVERDOSE_RISK_ABOVE_PRIOR_DOSE",
                 "RESTART_OVERDOSE_RISK_ABOVE_START_DOSE", "BOLUS_OVERDOSE_RISK_TITRATION_STEP",
                 "BOLUS_OVERDOSE_RISK_24H_CAP", "TITRATION_CAP_EXCEEDED", "CAPS_CHANGE_NOT_CONFIRMED"):
        assert code not in impl.SOFT_REASONS
        with pytest.raises(ConfigError):
            impl.make_override({code}, reason="try", actor="dr")


def test_therapy_start_is_known_however_the_kernel_was_built(impl):
    assert kernel(impl).therapy_start_ms == SINCE  # built with a programme: the strict reading
    limits, caps, env = impl.DEFAULT_LIBRARY[1000], impl.make_caps(max_dose_ng_per_day=1_000_000), impl.make_envelope(2_000, 10**6)
    p = impl.Programme.continuous(10_000, 1000)
    assert impl.SafetyKernel(limits, caps, env, programme=p, programme_since_ms=T0, therapy_start_ms=SINCE).therapy_start_ms == SINCE
    with pytest.raises(ConfigError):
        impl.SafetyKernel(limits, caps, env, programme=p, programme_since_ms=T0, therapy_start_ms=T0 + 1)
    with pytest.raises(ConfigError):
        impl.SafetyKernel(limits, caps, env, therapy_start_ms=T0)
    fragile = kernel(impl, programme=False)
    act(fragile, impl.request_minimum_rate(), T0)  # a fragile patient starts at the minimum rate
    assert fragile.therapy_start_ms == T0 and fragile.interruption is None
    assert reasons(fragile, impl.request_rate_change(2_100), T0 + MS_PER_H) == {"INCREASE_WITHIN_24H_OF_START"}


# -- the restart rule (hard) ---------------------------------------------------------------------


@pytest.mark.parametrize(("rate", "refused"), [(9_999, False), (10_000, False), (10_001, True)])
def test_short_interruption_resumes_at_most_the_prior_dose(impl, rate, refused):
    gate = kernel(impl, restart_threshold_ms=6 * MS_PER_H)
    gate.note_stopped(T0)
    for request in (impl.request_resume(rate), impl.request_rate_change(rate, override=soft(impl))):
        got = reasons(gate, request, T0 + MS_PER_H)
        assert got == ({"RESTART_OVERDOSE_RISK_ABOVE_PRIOR_DOSE"} if refused else set())


@pytest.mark.parametrize(("after_ms", "ceiling_rate"), [(6 * MS_PER_H - 1, 10_000), (6 * MS_PER_H, 5_000), (6 * MS_PER_H + 1, 5_000)])
def test_interruption_threshold(impl, after_ms, ceiling_rate):
    """Shorter than the threshold: the prior 240 µg/day; at it and longer: the 120 µg/day start dose."""
    gate = kernel(impl, restart_threshold_ms=6 * MS_PER_H, titration_start_dose_ng_per_day=120_000)
    gate.note_stopped(T0)
    assert decide(gate, impl.request_resume(ceiling_rate), T0 + after_ms).allowed
    code = "RESTART_OVERDOSE_RISK_ABOVE_PRIOR_DOSE" if ceiling_rate == 10_000 else "RESTART_OVERDOSE_RISK_ABOVE_START_DOSE"
    assert reasons(gate, impl.request_resume(ceiling_rate + 1), T0 + after_ms) == {code}


def test_default_threshold_is_24h(impl):
    assert impl.DEFAULT_RESTART_THRESHOLD_MS == MS_PER_DAY == impl.make_caps(max_dose_ng_per_day=1).restart_threshold_ms


@pytest.mark.parametrize(("rate", "refused"), [(1_999, False), (2_000, False), (2_001, True)])
def test_long_interruption_without_a_start_dose_restarts_at_the_minimum_rate_dose(impl, rate, refused):
    gate = kernel(impl, minimum_rate_nl_per_h=2_000)
    gate.note_stopped(T0)
    got = reasons(gate, impl.request_resume(rate), T0 + 2 * MS_PER_DAY) - {"RATE_BELOW_HARD", "RATE_BELOW_PUMP_MIN", "RATE_BELOW_MINIMUM_RATE"}
    assert got == ({"RESTART_OVERDOSE_RISK_ABOVE_START_DOSE"} if refused else set())


def test_long_interruption_never_restarts_above_the_prior_dose(impl):
    gate = kernel(impl, titration_start_dose_ng_per_day=300_000)  # above the prior 240 µg/day
    gate.note_stopped(T0)
    assert reasons(gate, impl.request_resume(10_001), T0 + 2 * MS_PER_DAY) == {"RESTART_OVERDOSE_RISK_ABOVE_PRIOR_DOSE"}


def test_after_a_long_restart_climb_only_up_the_titration_cap(impl):
    gate = kernel(impl, titration_start_dose_ng_per_day=120_000)
    gate.note_stopped(T0)
    resumed = T0 + 2 * MS_PER_DAY
    act(gate, impl.request_resume(5_000), resumed)
    later = resumed + MS_PER_DAY
    assert reasons(gate, impl.request_rate_change(6_501), later) == {"TITRATION_CAP_EXCEEDED"}
    assert decide(gate, impl.request_rate_change(6_500), later).allowed


def test_resume_needs_an_interruption(impl):
    gate = kernel(impl)
    assert reasons(gate, impl.request_resume(10_000), T0) == {"RESUME_WITHOUT_INTERRUPTION"}
    with pytest.raises(ConfigError):
        impl.request_resume()
    with pytest.raises(ConfigError):
        impl.request_resume(10_000, programme=impl.Programme.continuous(10_000, 1000))


def test_resume_of_a_whole_programme(impl):
    gate = kernel(impl)
    gate.note_stopped(T0)
    flex = impl.Programme([(0, 12 * MS_PER_H, 9_000), (12 * MS_PER_H, 12 * MS_PER_H, 11_000)], 1000)
    higher = impl.Programme([(0, 12 * MS_PER_H, 9_000), (12 * MS_PER_H, 12 * MS_PER_H, 11_002)], 1000)
    act(gate, impl.request_resume(programme=flex), T0 + MS_PER_H)
    assert gate.programme == flex and gate.interruption is None
    gate.note_stopped(T0 + 2 * MS_PER_H)
    assert reasons(gate, impl.request_resume(programme=higher), T0 + 3 * MS_PER_H) == {"RESTART_OVERDOSE_RISK_ABOVE_PRIOR_DOSE"}


def test_a_resume_is_not_a_titration_step(impl):
    gate = kernel(impl, min_titration_interval_ms=MS_PER_DAY)
    gate.note_stopped(T0)
    act(gate, impl.request_resume(10_000), T0 + MS_PER_H)
    assert gate.last_increase_ms == SINCE and gate.last_step_ms is None


# -- BOL-01: a bolus stacked on a titration step ---------------------------------------------------


@pytest.mark.parametrize(("volume", "refused"), [(23_999, False), (24_000, False), (24_001, True)])
def test_bolus_stacked_on_a_step_counts_against_the_titration_cap(impl, volume, refused):
    """240 -> 288 µg/day; ceiling 1.3 x 240 = 312: 24 µg of room for boluses in the next 24 h."""
    gate = kernel(impl)
    act(gate, impl.request_rate_change(12_000), T0)
    got = reasons(gate, impl.request_bolus(impl.DeliveryKind.BOLUS_CLINICIAN, volume, 10 * MIN), T0 + MS_PER_H)
    assert got - {"BOLUS_ABOVE_SOFT"} == ({"BOLUS_OVERDOSE_RISK_TITRATION_STEP"} if refused else set())


@pytest.mark.parametrize(("after_ms", "refused"), [(MS_PER_DAY - 1, True), (MS_PER_DAY, False)])
def test_stacking_window_is_24h_after_the_step(impl, after_ms, refused):
    gate = kernel(impl)
    act(gate, impl.request_rate_change(12_000), T0)
    got = reasons(gate, impl.request_bolus(impl.DeliveryKind.BOLUS_PATIENT, 30_000, 10 * MIN), T0 + after_ms)
    assert ("BOLUS_OVERDOSE_RISK_TITRATION_STEP" in got) == refused


def test_every_bolus_in_the_window_counts_towards_the_stack(impl):
    gate = kernel(impl)
    act(gate, impl.request_rate_change(12_000), T0)
    d = act(gate, impl.request_bolus(impl.DeliveryKind.BOLUS_PATIENT, 14_000, 10 * MIN), T0 + MS_PER_H)
    gate.ledger.record(d.bolus_kind, d.mass_pg, T0 + MS_PER_H)
    gate.ledger.release(d.bolus_kind, d.mass_pg)
    t = T0 + 3 * MS_PER_H
    assert decide(gate, impl.request_bolus(impl.DeliveryKind.BOLUS_CLINICIAN, 10_000, 10 * MIN), t).allowed
    assert "BOLUS_OVERDOSE_RISK_TITRATION_STEP" in reasons(gate, impl.request_bolus(impl.DeliveryKind.BOLUS_CLINICIAN, 10_001, 10 * MIN), t)


def test_no_stacking_rule_without_a_step(impl):
    """A stable patient's bolus is bounded by the bolus limits and the 24 h cap, not the titration cap."""
    gate = kernel(impl)
    assert decide(gate, impl.request_bolus(impl.DeliveryKind.BOLUS_PATIENT, 75_000, 10 * MIN), T0).allowed


def test_bolus_over_the_24h_cap_names_the_overdose_risk_for_every_kind(impl):
    gate = kernel(impl, max_dose_ng_per_day=250_000, max_priming_volume_nl=300_000)
    for kind in (impl.DeliveryKind.BOLUS_CLINICIAN, impl.DeliveryKind.PRIMING):
        got = reasons(gate, impl.request_bolus(kind, 10_001, 10 * MIN), T0)
        assert {"DOSE_CAP_24H", "BOLUS_OVERDOSE_RISK_24H_CAP"} <= got


# -- a caps change mid-therapy -----------------------------------------------------------------------


def caps_for(k, **kwargs):
    return k.make_caps(**{"max_dose_ng_per_day": 2_000_000, "min_titration_interval_ms": 0, "max_bolus_ng": 100_000,
                          "bolus_lockout_ms": MS_PER_H, "max_boluses_per_day": 8, "patient_bolus_enabled": True, **kwargs})


def confirm(k):
    return k.make_override({"CAPS_CHANGE"}, reason="origin re-assessed", actor="dr-a/prescriber")


def test_caps_change_needs_a_confirmation_and_records_it(impl):
    gate = kernel(impl, origin="cerebral")
    new = caps_for(impl, origin="spinal")
    assert reasons(gate, impl.request_caps_change(new, confirmation=None), T0) == {"CAPS_CHANGE_NOT_CONFIRMED"}
    d = act(gate, impl.request_caps_change(new, confirmation=confirm(impl)), T0)
    assert d.overridden == ("CAPS_CHANGE",) and d.request.override.reason == "origin re-assessed"
    assert gate.caps == new


@pytest.mark.parametrize(("after_ms", "refused"), [(MS_PER_DAY - 1, True), (MS_PER_DAY, False)])
def test_origin_change_keeps_the_stricter_titration_cap_for_24h(impl, after_ms, refused):
    """Cerebral (15 %) to spinal (30 %): +20 % is refused until 24 h after the change (issue #9)."""
    gate = kernel(impl, origin="cerebral")
    act(gate, impl.request_caps_change(caps_for(impl, origin="spinal"), confirmation=confirm(impl)), T0)
    got = reasons(gate, impl.request_rate_change(12_000), T0 + after_ms)
    assert ("TITRATION_CAP_EXCEEDED" in got) == refused
    assert gate.effective_caps(T0 + after_ms).titration_cap_pct == (15 if refused else 30)


def test_caps_change_tightening_takes_effect_at_once(impl):
    gate = kernel(impl, bolus_lockout_ms=MS_PER_H)
    act(gate, impl.request_bolus(impl.DeliveryKind.BOLUS_PATIENT, 10_000, 10 * MIN), T0)
    act(gate, impl.request_caps_change(caps_for(impl, bolus_lockout_ms=4 * MS_PER_H), confirmation=confirm(impl)), T0 + MIN)
    assert "BOLUS_LOCKOUT" in reasons(gate, impl.request_bolus(impl.DeliveryKind.BOLUS_PATIENT, 10_000, 10 * MIN), T0 + 2 * MS_PER_H)


def test_second_change_within_24h_keeps_the_strictest(impl):
    gate = kernel(impl, origin="cerebral", bolus_lockout_ms=4 * MS_PER_H)
    act(gate, impl.request_caps_change(caps_for(impl, origin="spinal", bolus_lockout_ms=4 * MS_PER_H), confirmation=confirm(impl)), T0)
    act(gate, impl.request_caps_change(caps_for(impl, origin="spinal", bolus_lockout_ms=MS_PER_H), confirmation=confirm(impl)), T0 + MS_PER_H)
    held = gate.effective_caps(T0 + MS_PER_H + MS_PER_DAY - 1)
    assert (held.titration_cap_pct, held.bolus_lockout_ms) == (15, 4 * MS_PER_H)
    assert gate.effective_caps(T0 + MS_PER_H + MS_PER_DAY) == gate.caps


def test_caps_change_must_fit_the_programme_in_effect(impl):
    gate = kernel(impl)  # 240 µg/day at 10 000 nL/h
    got = reasons(gate, impl.request_caps_change(caps_for(impl, max_dose_ng_per_day=239_999, minimum_rate_nl_per_h=10_001),
                                                 confirmation=confirm(impl)), T0)
    assert got == {"DOSE_ABOVE_PRESCRIPTION_CAP", "RATE_BELOW_MINIMUM_RATE"}
    with pytest.raises(ConfigError):  # outside the library's hard bounds: bad input, not a decision
        gate.authorize(impl.request_caps_change(caps_for(impl, max_dose_ng_per_day=2_003_001), confirmation=confirm(impl)), T0)
    with pytest.raises(ConfigError):
        impl.request_caps_change(caps_for(impl)._replace(titration_cap_pct=31), confirmation=confirm(impl))


@given(st.tuples(*[st.sampled_from(["spinal", "cerebral", "paediatric"])] * 2),
       st.tuples(*[st.integers(0, 100_000)] * 2), st.tuples(*[st.integers(0, 6 * MS_PER_H)] * 2),
       st.tuples(*[st.booleans()] * 2), st.tuples(*[st.integers(0, 7 * MS_PER_DAY)] * 2))
def test_stricter_caps_is_never_looser_than_either(origins, doses, lockouts, flags, thresholds):
    from .conftest import COMPILED as k

    a, b = (k.make_caps(max_dose_ng_per_day=100_000, origin=o, titration_start_dose_ng_per_day=d, bolus_lockout_ms=lo,
                        patient_bolus_enabled=f, restart_threshold_ms=t)
            for o, d, lo, f, t in zip(origins, doses, lockouts, flags, thresholds))
    m = k.stricter_caps(a, b)
    assert k.caps_from_dict(k.caps_to_dict(m)) == m  # valid caps
    assert m.titration_cap_pct == min(a.titration_cap_pct, b.titration_cap_pct) and m.origin == b.origin
    assert m.bolus_lockout_ms == max(a.bolus_lockout_ms, b.bolus_lockout_ms)
    assert m.patient_bolus_enabled == (a.patient_bolus_enabled and b.patient_bolus_enabled)
    assert m.titration_start_dose_ng_per_day == min(doses) and m.restart_threshold_ms == min(thresholds)


def test_new_caps_fields_are_validated(impl):
    with pytest.raises(ConfigError):
        impl.make_caps(max_dose_ng_per_day=100_000, titration_start_dose_ng_per_day=100_001)
    with pytest.raises(ConfigError):
        impl.make_caps(max_dose_ng_per_day=100_000, restart_threshold_ms=7 * MS_PER_DAY + 1)
    with pytest.raises(TypeError):
        impl.make_caps(max_dose_ng_per_day=100_000, restart_threshold_ms=1.5)


# -- time never goes back ---------------------------------------------------------------------------


def test_time_before_the_newest_event_is_refused(impl):
    gate = kernel(impl)
    act(gate, impl.request_rate_change(9_000), T0)
    assert gate.newest_event_ms == T0
    assert reasons(gate, impl.request_rate_change(9_000), T0 - 1) == {"CLOCK_BEHIND_LEDGER"}
    with pytest.raises(ConfigError):
        gate.note_stopped(T0 - 1)
    d = decide(gate, impl.request_rate_change(8_000), T0)
    gate.note_stopped(T0 + MS_PER_H)
    with pytest.raises(ConfigError):  # an old decision applied after a newer fact: refused, nothing changes
        gate.apply(d, T0 + MS_PER_H - 1)
    act(gate, impl.request_resume(9_000), T0 + 2 * MS_PER_H)
    act(gate, impl.request_bolus(impl.DeliveryKind.BOLUS_PATIENT, 10_000, 10 * MIN), T0 + 3 * MS_PER_H)
    assert gate.newest_event_ms == T0 + 3 * MS_PER_H
    assert reasons(gate, impl.request_minimum_rate(), T0 + 3 * MS_PER_H - 1) == {"CLOCK_BEHIND_LEDGER"}


def test_upward_plan_waits_for_the_low_doses_to_leave_the_window(impl):
    gate = kernel(impl, min_titration_interval_ms=MS_PER_DAY)
    act(gate, impl.request_rate_change(8_000), T0)
    act(gate, impl.request_rate_change(9_000), T0 + MS_PER_DAY)
    steps = gate.plan_titration(400_000, T0 + MS_PER_DAY + MS_PER_H)
    assert steps[0].at_ms == T0 + 2 * MS_PER_DAY  # the 192 µg/day dose ended at T0 + 24 h
    for step in steps[:3]:
        rate = step.dose_ng_per_day // 24
        assert reasons(gate, impl.request_rate_change(rate), step.at_ms - 1) & {"TITRATION_CAP_EXCEEDED", "TITRATION_INTERVAL"}
        act(gate, impl.request_rate_change(rate), step.at_ms)
