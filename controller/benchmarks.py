"""Measurement workloads over the controller's own parts, for ``itb bench``.

:func:`accounting_replay_s` -- the kernel-and-accounting-only loop over a run's polls, the floor
that ``itb bench run`` compares the full loop with.

Only ``controller`` may import the safety kernel (DESIGN: one gate), so the
workloads that time the kernel live here and ``hil.bench`` only runs them and
reports the figures.

:func:`kernel_figures` -- how long one ``SafetyKernel.authorize`` takes, compiled
and twin. Workload: a ledger holding a full 24 h at one-minute resolution
(1440 records of basal delivery), a 13-step flex schedule plus two periodic
boluses, and a rotating mix of requests: rate changes up and down (some allowed,
some denied by the titration cap or the confirmation rule) and boluses (patient
and clinician, some denied by size). The cap leaves normal headroom, which is
the usual case; a second figure puts the same patient 0.5 % under the cap, where
every bolus needs the exact minute-by-minute scan.

Each sample times a batch of calls with ``time.perf_counter_ns`` after a
warm-up and divides by the batch size; the median over samples is reported.
Targets: compiled median < 2 µs and >= 20x faster than the twin.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any

from controller.accounting import Accounting
from controller.gate import KernelGate
from cython_ext import kernel
from cython_ext.units import MS_PER_DAY, MS_PER_H

CONCENTRATION_UG_PER_ML = 500
MINUTE_MS = 60_000
NOW_MS = 30 * MS_PER_DAY + 17 * MINUTE_MS
TARGET_MEDIAN_NS = 2_000
TARGET_SPEEDUP = 20.0


def flex_steps() -> list[tuple[int, int, int]]:
    """13 steps covering 24 h, alternating around 16 uL/h (about 190 ug/day at 500 ug/mL)."""
    cuts = [0, 90, 180, 300, 420, 480, 600, 720, 840, 960, 1080, 1200, 1320, 1440]
    rates = [14_000, 15_000, 16_000, 17_000, 18_000, 16_000, 15_000, 14_000, 16_000, 17_000, 16_000, 15_000, 14_000]
    return [(a * MINUTE_MS, (b - a) * MINUTE_MS, r) for a, b, r in zip(cuts, cuts[1:], rates)]


def build_gate(k, *, max_dose_ng_per_day: int):
    """A kernel with a full 24 h ledger and the 13-step programme in effect for a week."""
    programme = k.Programme(
        flex_steps(),
        CONCENTRATION_UG_PER_ML,
        periodic_boluses=[(8 * MS_PER_H, 30 * MINUTE_MS, 20_000), (20 * MS_PER_H, 30 * MINUTE_MS, 20_000)],
    )
    caps = k.make_caps(
        max_dose_ng_per_day=max_dose_ng_per_day,
        patient_bolus_enabled=True,
        max_bolus_ng=60_000,
        bolus_lockout_ms=2 * MS_PER_H,
        max_boluses_per_day=4,
    )
    gate = k.SafetyKernel(
        k.DEFAULT_LIBRARY[CONCENTRATION_UG_PER_ML],
        caps,
        k.make_envelope(2_000, 1_000_000),
        k.Ledger(),
        programme=programme,
        programme_since_ms=NOW_MS - 7 * MS_PER_DAY,
    )
    start = NOW_MS - MS_PER_DAY + MINUTE_MS
    carry = 0
    for minute in range(1440):
        t = start + minute * MINUTE_MS
        carry += programme.volume_numerator(t, t + MINUTE_MS) * CONCENTRATION_UG_PER_ML
        whole_pg, carry = divmod(carry, MS_PER_H)
        gate.ledger.record(k.DeliveryKind.FLEX, whole_pg, t)
    return gate, programme


def request_mix(k) -> list:
    """Rate changes and boluses in a fixed rotation (about half of each)."""
    bolus = k.request_bolus
    return [
        k.request_rate_change(17_000),
        bolus(k.DeliveryKind.BOLUS_PATIENT, 40_000, 10 * MINUTE_MS),
        k.request_rate_change(15_000),
        bolus(k.DeliveryKind.BOLUS_CLINICIAN, 60_000, 15 * MINUTE_MS),
        k.request_rate_change(25_000),  # denied: titration cap
        bolus(k.DeliveryKind.BOLUS_PATIENT, 300_000, 10 * MINUTE_MS),  # denied: size
        k.request_rate_change(9_000),  # denied: needs confirmation
        bolus(k.DeliveryKind.BOLUS_PATIENT, 20_000, 5 * MINUTE_MS),
    ]


def time_authorize(gate, requests: list, *, samples: int, batch: int, warmup: int) -> list[float]:
    """Per-call time of ``authorize`` over ``samples`` batches, ns."""
    authorize = gate.authorize
    n = len(requests)
    for i in range(warmup):
        authorize(requests[i % n], NOW_MS)
    out = []
    for s in range(samples):
        chunk = [requests[(s * batch + i) % n] for i in range(batch)]
        start = time.perf_counter_ns()
        for request in chunk:
            authorize(request, NOW_MS)
        out.append((time.perf_counter_ns() - start) / batch)
    return out


def kernel_figures(*, quick: bool = False) -> dict:
    """Measure the kernel and return the figures (see the module docstring).

    :param quick: fewer samples (a smoke run, not a measurement).
    """
    compiled = kernel.load("compiled")
    twin = kernel.load("python")
    figures: dict[str, object] = {}
    daily_ng = None
    for name, k, samples, batch in (
        ("compiled", compiled, 30 if quick else 300, 200),
        ("python", twin, 3 if quick else 20, 8),
    ):
        gate, programme = build_gate(k, max_dose_ng_per_day=400_000)
        daily_ng = programme.daily_total_ng()
        requests = request_mix(k)
        allowed = sum(gate.authorize(r, NOW_MS).allowed for r in requests)
        times = time_authorize(gate, requests, samples=samples, batch=batch, warmup=batch)
        figures[f"authorize_ns_median_{name}"] = round(statistics.median(times), 1)
        figures[f"authorize_ns_min_{name}"] = round(min(times), 1)
        figures[f"samples_{name}"] = f"{samples} x {batch} calls"
        figures["requests_allowed_of_mix"] = f"{allowed} of {len(requests)}"
        near, _ = build_gate(k, max_dose_ng_per_day=daily_ng * 1005 // 1000)
        near_requests = [r for r in request_mix(k) if r.kind == k.RequestKind.BOLUS]
        near_times = time_authorize(near, near_requests, samples=max(3, samples // 10), batch=max(2, batch // 4), warmup=2)
        figures[f"authorize_ns_median_{name}_near_cap"] = round(statistics.median(near_times), 1)
    speedup = figures["authorize_ns_median_python"] / figures["authorize_ns_median_compiled"]
    figures.update(
        {
            "speedup": round(speedup, 1),
            "speedup_near_cap": round(
                figures["authorize_ns_median_python_near_cap"] / figures["authorize_ns_median_compiled_near_cap"], 1
            ),
            "target_median_ns": TARGET_MEDIAN_NS,
            "target_speedup": TARGET_SPEEDUP,
            "meets_targets": figures["authorize_ns_median_compiled"] < TARGET_MEDIAN_NS and speedup >= TARGET_SPEEDUP,
            "workload_ledger": "1440 one-minute records (full 24 h)",
            "workload_programme": "13 flex steps + 2 periodic boluses, 500 ug/mL",
            "workload_daily_dose_ng": daily_ng,
            "workload_cap_ng_per_day": 400_000,
            "workload_near_cap": "same patient, cap 0.5 % above the daily dose, boluses only (exact scan)",
            "workload_requests": "rotation of 4 rate changes and 4 boluses",
            "quick": quick,
            "python": platform.python_version(),
            "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        }
    )
    return figures


def accounting_replay_s(prescription: Any, polls: list[tuple[int, int]]) -> float:
    """The kernel-and-accounting-only loop: wall time to account ``polls`` without pump, wire or store, s.

    For each poll, in order, what the full loop does besides talking to the pump and writing
    the store: accrue the commanded volume by kind, reconcile a counter that moved by exactly
    that volume into the kernel ledger (through the catheter dead-volume queue), and read the
    rolling 24 h total and the cap. This is the floor the full in-process loop is compared with.

    :param prescription: the prescription the run used (drug, caps, dead volume).
    :param polls: ``(controller time ms, rate the pump held nL/h)`` of every poll of a run.
    """
    rx = prescription
    conc = rx.concentration_ug_per_ml
    gate = KernelGate(conc, rx.kernel_caps_kwargs(), min_rate_nl_per_h=1, max_rate_nl_per_h=10_000_000)
    accounting = Accounting(gate, lambda *args, **kwargs: None)
    accounting.concentration_ug_per_ml = conc
    accounting.catheter.fill(rx.pump.dead_volume_nl, conc)
    if not polls:
        return 0.0
    start_ms = polls[0][0]
    accounting.accrual_ms = start_ms
    accounting.last_counter_nl = 0
    counter_scaled = 0  # nL x ms/h: the counter moves exactly by what was commanded
    previous_ms, previous_rate = start_ms, polls[0][1]
    began = time.perf_counter()
    for now_ms, rate in polls[1:]:
        accounting.accrue(now_ms, previous_rate, bolus=None, running=True, minimum_rate=False, programme=None)
        counter_scaled += previous_rate * (now_ms - previous_ms)
        accounting.reconcile(counter_scaled // MS_PER_H, now_ms, previous_ms, None)
        gate.total_24h_ng(now_ms)
        gate.cap_ng_per_day()
        previous_ms, previous_rate = now_ms, rate
    return time.perf_counter() - began
