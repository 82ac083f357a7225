"""SAFE-05, SAFE-03: a guided procedure's zero-rate hold is a kernel decision of its own, authorised, and delivery comes
back only under the restart rule.

The oracle is the label's restart rule written out by hand (itb-clinical §1.6 [JP-LBL], §3.3): after an interruption
shorter than the threshold, at most the dose in effect before it; after a longer one, at most the titration-phase
starting dose. Each check runs on both implementations (the ``impl`` fixture).
"""

from __future__ import annotations

import pytest

from cython_ext.units import MS_PER_DAY, MS_PER_H

T0 = 3 * MS_PER_DAY
RATE_NL_PER_H = 8_333  # 100 µg/day at 500 µg/mL (rounded down: 99 996 ng/day)
START_DOSE_NG_PER_DAY = 60_000


def _running(impl):
    caps = impl.make_caps(max_dose_ng_per_day=400_000, titration_start_dose_ng_per_day=START_DOSE_NG_PER_DAY)
    kernel = impl.SafetyKernel(impl.library_entry(500), caps, impl.make_envelope(100, 10_000_000, 1), impl.Ledger())
    decision = kernel.authorize(impl.request_rate_change(RATE_NL_PER_H), T0)
    kernel.apply(decision, T0)
    return kernel


def _authorisation(impl):
    return impl.make_override({impl.PROCEDURE_AUTHORISATION}, reason="MRI (Prometra labelling: zero first)",
                              actor="dr-radiology")


def test_the_hold_needs_its_authorisation_and_a_programme(impl) -> None:
    fresh = impl.SafetyKernel(impl.library_entry(500), impl.make_caps(max_dose_ng_per_day=400_000),
                              impl.make_envelope(100, 10_000_000, 1), impl.Ledger())
    assert set(fresh.authorize(impl.request_procedure_stop(_authorisation(impl)), T0).reasons) == {"NO_PROGRAMME"}
    kernel = _running(impl)
    refused = kernel.authorize(impl.request_procedure_stop(None), T0 + MS_PER_H)
    assert not refused.allowed and refused.reasons == ("PROCEDURE_NOT_AUTHORISED",)
    # A discontinue's authorisation is not a procedure's, and no soft override lifts it.
    other = impl.make_override({impl.DISCONTINUE_AUTHORISATION, "TITRATION_INTERVAL"}, reason="x", actor="dr")
    assert kernel.authorize(impl.request_procedure_stop(other), T0 + MS_PER_H).reasons == ("PROCEDURE_NOT_AUTHORISED",)
    allowed = kernel.authorize(impl.request_procedure_stop(_authorisation(impl)), T0 + MS_PER_H)
    assert allowed.allowed and allowed.overridden == ("PROCEDURE",) and allowed.rate_nl_per_h == 0
    assert allowed.daily_dose_ng == 0


@pytest.mark.parametrize("held_h, ceiling_ng_per_day", [(1, 99_996), (23, 99_996), (24, START_DOSE_NG_PER_DAY),
                                                         (30, START_DOSE_NG_PER_DAY)])
def test_after_the_hold_delivery_comes_back_only_by_the_restart_rule(impl, held_h, ceiling_ng_per_day) -> None:
    kernel = _running(impl)
    at = T0 + 2 * MS_PER_DAY
    kernel.apply(kernel.authorize(impl.request_procedure_stop(_authorisation(impl)), at), at)
    assert kernel.interruption.cause == "procedure" and kernel.interruption.since_ms == at
    assert kernel.dose_in_effect_ng(at) == 0
    assert kernel.daily_dose_ng == 99_996  # the programme stays the projection's basal, as for a stop
    later = at + held_h * MS_PER_H
    above = impl.request_resume(RATE_NL_PER_H + 100)
    assert not kernel.authorize(above, later).allowed
    # A plain rate change while held is decided as a resume too: no path back skips the rule.
    assert any("RESTART_OVERDOSE_RISK" in r for r in kernel.authorize(impl.request_rate_change(RATE_NL_PER_H + 100),
                                                                      later).reasons)
    rate = ceiling_ng_per_day // 12  # at 500 µg/mL a rate of r nL/h is 12 r ng/day
    ok = kernel.authorize(impl.request_resume(rate), later)
    assert ok.allowed, ok.reasons
    over = kernel.authorize(impl.request_resume(rate + 1), later)
    assert not over.allowed


def test_the_hold_survives_a_snapshot_and_both_kernels_agree(compiled, twin) -> None:
    snapshots = []
    for impl in (compiled, twin):
        kernel = _running(impl)
        kernel.apply(kernel.authorize(impl.request_procedure_stop(_authorisation(impl)), T0 + MS_PER_H), T0 + MS_PER_H)
        snap = kernel.state_snapshot()
        restored = impl.SafetyKernel.from_snapshot(snap, None, impl.make_envelope(100, 10_000_000, 1))
        assert restored.interruption == kernel.interruption
        assert restored.authorize(impl.request_resume(RATE_NL_PER_H), T0 + 2 * MS_PER_H).allowed
        snapshots.append(snap)
    assert snapshots[0] == snapshots[1]
