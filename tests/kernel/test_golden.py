"""Golden vectors: a scripted day of therapy, decided by both kernels, against recorded answers.

The differential tests prove the two implementations agree with each other; these
vectors pin what both decide, so a change in behaviour shows up as a reviewed
diff of ``golden_decisions.json``. Regenerate deliberately with
``ITB_REGEN_GOLDEN=1 python -m pytest tests/kernel/test_golden.py`` and review
the diff like code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cython_ext.units import MS_PER_DAY, MS_PER_H

GOLDEN = Path(__file__).with_name("golden_decisions.json")
MIN = 60_000


def script(k) -> list[dict]:
    """A fixed sequence: start, deliver, titrate, boluses near the cap, refill, taper, stop, then a
    resume, a pump found stopped, a restart after a long interruption and a confirmed origin change."""
    caps = k.make_caps(
        max_dose_ng_per_day=300_000, origin="cerebral", patient_bolus_enabled=True,
        max_bolus_ng=50_000, bolus_lockout_ms=3 * MS_PER_H, max_boluses_per_day=3, minimum_rate_nl_per_h=2_000,
    )
    gate = k.SafetyKernel(k.DEFAULT_LIBRARY[500], caps, k.make_envelope(2_000, 1_000_000, 10), k.Ledger())
    now = 2 * MS_PER_DAY + 7 * MIN + 500
    carry = 0
    out: list[dict] = []

    def advance(minutes):
        nonlocal now, carry
        for _ in range(minutes):
            if gate.programme is not None:
                carry += gate.programme.volume_numerator(now, now + MIN) * gate.programme.concentration_ug_per_ml
                whole, carry = divmod(carry, MS_PER_H)
                gate.ledger.record(k.DeliveryKind.BASAL, whole, now)
            now += MIN

    def decide(label, request, *, apply=True, deliver=True):
        d = gate.authorize(request, now)
        out.append({
            "label": label, "at_ms": now, "allowed": d.allowed, "reasons": list(d.reasons),
            "overridden": list(d.overridden), "rate_nl_per_h": d.rate_nl_per_h, "mass_pg": d.mass_pg,
            "daily_dose_ng": d.daily_dose_ng, "headroom_pg": gate.headroom_pg(now),
            "total_24h_pg": gate.ledger.total_24h_pg(now),
        })
        if d.allowed and apply:
            gate.apply(d, now)
            if deliver and d.bolus_kind >= 0:
                gate.ledger.record(d.bolus_kind, d.mass_pg, now)
                gate.ledger.release(d.bolus_kind, d.mass_pg)

    soft = k.make_override({"TITRATION_INTERVAL", "DECREASE_NEEDS_CONFIRMATION"}, reason="inpatient", actor="dr-b/prescriber")
    decide("start 192 ug/day", k.request_rate_change(16_000))
    advance(6 * 60)
    decide("raise +10 % too soon", k.request_rate_change(17_600))
    decide("raise +10 % with override", k.request_rate_change(17_600, override=soft))
    advance(24 * 60)
    decide("raise +20 %: above the cerebral 15 % cap", k.request_rate_change(21_120))
    decide("raise +15 %", k.request_rate_change(18_400))
    advance(24 * 60)
    flex = k.Programme([(0, 8 * MS_PER_H, 18_000), (8 * MS_PER_H, 8 * MS_PER_H, 22_000), (16 * MS_PER_H, 8 * MS_PER_H, 20_000)], 500,
                       periodic_boluses=[(12 * MS_PER_H, 30 * MIN, 40_000)], anchor_ms=2 * MS_PER_DAY)
    decide("flex programme", k.request_programme_change(flex))
    decide("patient bolus stacked on the flex step", k.request_bolus(k.DeliveryKind.BOLUS_PATIENT, 50_000, 10 * MIN))
    advance(24 * 60)
    decide("patient bolus 25 ug", k.request_bolus(k.DeliveryKind.BOLUS_PATIENT, 50_000, 10 * MIN))
    advance(60)
    decide("patient bolus in lockout", k.request_bolus(k.DeliveryKind.BOLUS_PATIENT, 50_000, 10 * MIN))
    advance(3 * 60)
    decide("clinician bolus 25 ug", k.request_bolus(k.DeliveryKind.BOLUS_CLINICIAN, 50_000, 30 * MIN))
    advance(3 * 60)
    decide("patient bolus 25 ug: count or cap", k.request_bolus(k.DeliveryKind.BOLUS_PATIENT, 50_000, 10 * MIN))
    decide("zero rate", k.request_rate_change(0))
    decide("minimum-rate mode (not applied)", k.request_minimum_rate(), apply=False)
    advance(24 * 60)
    new = k.Programme.continuous(5_000, 2000, anchor_ms=2 * MS_PER_DAY)
    decide("refill to 2000 ug/mL without bridge", k.request_concentration_change(new, None))
    decide("refill to 2000 ug/mL with bridge", k.request_concentration_change(new, k.BridgePlan(20_000, MS_PER_H)))
    advance(48 * 60)
    decide("taper -20 %", k.request_rate_change(4_000, override=soft))
    auth = k.make_override({"DISCONTINUE"}, reason="explant", actor="dr-b/prescriber")
    decide("discontinue before the taper ends", k.request_discontinue(auth))
    decide("emergency discontinue", k.request_discontinue(auth, emergency=True))
    advance(60)
    decide("resume above the prior dose", k.request_resume(5_000))
    decide("resume at the prior dose after 1 h", k.request_resume(4_000))
    decide("raise the day the zero dose is in the window", k.request_rate_change(4_400, override=soft))
    advance(6 * 60)
    gate.note_stopped(now - 30 * MIN)
    out.append({"label": "pump found stopped, 30 min ago", "at_ms": now - 30 * MIN, "interruption": list(gate.interruption)})
    advance(25 * 60)
    decide("resume after a 25 h interruption at the prior dose", k.request_resume(4_000))
    decide("resume at the minimum-rate dose (no start dose in the caps)", k.request_resume(2_000))
    decide("bolus before the caps change", k.request_bolus(k.DeliveryKind.BOLUS_PATIENT, 5_000, 10 * MIN))
    spinal = k.make_caps(
        max_dose_ng_per_day=300_000, origin="spinal", patient_bolus_enabled=True, max_bolus_ng=50_000,
        bolus_lockout_ms=MS_PER_H, max_boluses_per_day=3, minimum_rate_nl_per_h=2_000,
    )
    advance(2 * 60)
    decide("origin change without confirmation", k.request_caps_change(spinal, confirmation=None))
    confirm = k.make_override({"CAPS_CHANGE"}, reason="origin re-assessed: spinal", actor="dr-b/prescriber")
    decide("origin change confirmed", k.request_caps_change(spinal, confirmation=confirm))
    decide("bolus 2 h after the last: the old 3 h lockout holds", k.request_bolus(k.DeliveryKind.BOLUS_PATIENT, 5_000, 10 * MIN))
    advance(23 * 60)
    decide("+25 % while the cerebral cap holds", k.request_rate_change(2_500))
    advance(60)
    decide("+25 % under the spinal cap", k.request_rate_change(2_500))
    state = gate.state_snapshot()
    ledger = state.pop("ledger")
    del state["checksum"]  # covers the whole ledger; the summary below pins it readably
    state["ledger_summary"] = {
        "latest_minute": ledger["latest_minute"],
        "buckets": len(ledger["buckets"]),
        "sum_pg": sum(sum(b[1]) for b in ledger["buckets"]),
        "committed_pg": ledger["committed_pg"],
        "bolus_starts": ledger["bolus_starts"],
    }
    out.append({"label": "final state", "state": state})
    return out


@pytest.mark.parametrize("implementation", ["compiled", "python"])
def test_golden_vectors(implementation):
    from cython_ext import kernel

    got = json.loads(json.dumps(script(kernel.load(implementation))))
    if os.environ.get("ITB_REGEN_GOLDEN") == "1":
        GOLDEN.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    expected = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert [e["label"] for e in got] == [e["label"] for e in expected]
    for g, e in zip(got, expected):
        assert g == e, g["label"]
