"""What a run is judged on: the safety invariants, the implicit checks, and the scenario's expectations.

:func:`invariants` are checked on every run whether or not the scenario asks.
:func:`implicit_checks` judge the run on what happened even when the scenario
expects nothing: therapy started (the pump held a verified non-zero rate at some
poll), no programme was refused (every ``implant`` and ``flex`` decision allowed),
and a dose above zero reached the catheter tip. A scenario waives one only by
expecting the opposite outright (a ``denied`` expectation on that action, or
``mode_at_end`` ``idle``); the waiver is named in the check's detail, so the
verdict always lists what it applied. One more, never waived, is added when an
``implant`` was refused: "a refused implant is alarmed" holds only if the
controller raised ``implant_not_done`` (the patient receives no intrathecal
therapy, issue #9); a run that did not expect the refusal fails "therapy
started" as well. Each expectation of a scenario file is
evaluated by its entry in :data:`EXPECTATIONS` (one table from ``check`` name to
evaluator; a test checks it covers the schema).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from hil.report import CheckResult, RunRecord

if TYPE_CHECKING:
    from hil.scenario.runner import ScenarioRunner

#: Relative tolerance of the ledger-versus-pump-counter invariant, ppm, and its floor, nL.
COUNTER_MATCH_PPM = 5_000
COUNTER_MATCH_FLOOR_NL = 20_000


def invariants(run: ScenarioRunner, record: RunRecord, pump_counted_nl: int | None) -> list[CheckResult]:
    """The safety invariants, from what the run observed.

    :param pump_counted_nl: the simulated mechanism's own counter, nL (None with a real pump).
    """
    loop = run.controller.loop
    out = [
        CheckResult("rolling 24 h dose never above the cap", "cap" not in run.breaches,
                    run.breaches.get("cap", "checked at every poll")),
        CheckResult("flow never zero without an authorised discontinue or STOP reaction",
                    "zero_flow" not in run.breaches and not loop.breaches,
                    run.breaches.get("zero_flow", "; ".join(loop.breaches) or "checked at every poll")),
    ]
    if pump_counted_nl is not None:
        diff = abs(pump_counted_nl - loop.total_counted_nl)
        limit = max(COUNTER_MATCH_FLOOR_NL, pump_counted_nl * COUNTER_MATCH_PPM // 1_000_000)
        out.append(CheckResult("ledger matches the pump's dispensed volume", diff <= limit,
                               f"ledger {loop.total_counted_nl} nL, pump {pump_counted_nl} nL, "
                               f"difference {diff} nL (limit {limit} nL)"))
    boluses = run.controller.store.boluses()
    ids = [b.bolus_id for b in boluses]
    running_id = None if loop.bolus is None else loop.bolus.bolus_id
    twice = [b for b in boluses if b.delivered_nl is not None and b.delivered_nl > b.volume_nl + 1000]
    unfinished = [b for b in boluses if b.status != "finished" and b.bolus_id != running_id]
    pending = [c for c in run.controller.store.pending_boluses() if c.command_id != running_id]
    out.append(CheckResult("no bolus delivered twice",
                           len(ids) == len(set(ids)) and not twice and not unfinished and not pending,
                           f"{len(boluses)} boluses; over-delivered {len(twice)}; left open {len(unfinished)}; "
                           f"unresolved in the journal {len(pending)}"))
    raised = {a.code for a in record.alarms if a.event == "raise"}
    missing = sorted({f["alarm"] for f in run.faults} - raised)
    out.append(CheckResult("every fault produced its alarm", not missing,
                           f"{len(run.faults)} faults" + (f"; missing {missing}" if missing else "")))
    return out


#: Workflow actions that put a programme in effect (their refusal fails the run unless expected).
PROGRAMME_ACTIONS = ("implant", "flex")


def implicit_checks(run: ScenarioRunner, record: RunRecord) -> list[CheckResult]:
    """The checks every run gets, from what happened (see the module docstring)."""
    expected_denied = {e.params["action"] for e in run.scenario.expectations if e.check == "denied"}
    expects_idle = any(e.check == "mode_at_end" and e.params["mode"] == "idle" for e in run.scenario.expectations)
    programmes = [d for d in record.decisions if d.action in PROGRAMME_ACTIONS]
    refused = [d for d in programmes if not d.allowed and d.label not in expected_denied]
    waived_refusals = [d for d in programmes if not d.allowed and d.label in expected_denied]
    waive_start = expects_idle or (bool(waived_refusals) and not any(d.allowed for d in programmes))
    waiver = "; waived: the scenario expects " + ("the controller to end idle" if expects_idle else
                                                  "its programme to be refused")
    started = [s for s in record.samples if s.rate_nl_per_h > 0]
    start_detail = (f"first verified rate {started[0].rate_nl_per_h} nL/h at {started[0].t_ms} ms" if started
                    else "the pump never held a verified rate above zero")
    refusal_detail = "; ".join(f"{d.action} {d.label} refused at {d.t_ms} ms: {', '.join(d.reasons) or d.detail}"
                               for d in refused)
    if waived_refusals:
        refusal_detail = "; ".join(filter(None, [refusal_detail, "expected refusals: " + ", ".join(
            d.label for d in waived_refusals)]))
    checks = [
        CheckResult("therapy started", bool(started) or waive_start,
                    start_detail + (waiver if waive_start and not started else "")),
        CheckResult("no programme refused", not refused,
                    refusal_detail or f"{len(programmes)} programme decisions, all allowed"),
        CheckResult("dose delivered above zero", record.delivered_ug > 0 or waive_start,
                    f"{record.delivered_ug:.1f} µg at the catheter tip"
                    + (waiver if waive_start and record.delivered_ug <= 0 else "")),
    ]
    refused_implants = [d for d in programmes if d.action == "implant" and not d.allowed]
    if refused_implants:
        # Not waivable: a refused implant leaves the patient with no intrathecal therapy, and the controller
        # must say so (issue #9). Whether the run passes otherwise is the other checks' business.
        alarmed = any(a.event == "raise" and a.code == "implant_not_done" for a in record.alarms)
        last = refused_implants[-1]
        checks.append(CheckResult(
            "a refused implant is alarmed", alarmed,
            f"implant {last.label} refused ({', '.join(last.reasons) or last.detail}): "
            + ("alarm implant_not_done raised" if alarmed else "no implant_not_done alarm was raised")))
    return checks


def accuracy_check(step: Any, outcome: Any) -> CheckResult:
    """The scenario's accuracy step verdict as one of the run's checks."""
    return CheckResult(f"accuracy step: mean error within ±{step.max_abs_mean_error_pct:g} %", outcome.passed,
                       f"{outcome.detail}; report in {outcome.report_dir.name}/")


Evaluator = Callable[["ScenarioRunner", Mapping[str, Any], RunRecord, set[str]], CheckResult]


def _dose_within(run: ScenarioRunner, p: Mapping[str, Any], record: RunRecord, raised: set[str]) -> CheckResult:
    err = record.dose_error_pct
    ok = err is not None and abs(err) <= float(p["tolerance_pct"])
    return CheckResult(f"delivered dose within {p['tolerance_pct']} % of programmed", ok,
                       f"delivered {record.delivered_ug:.1f} µg, programmed {record.prescribed_ug:.1f} µg"
                       + ("" if err is None else f" ({err:+.2f} %)"))


def _alarm_raised(run: ScenarioRunner, p: Mapping[str, Any], record: RunRecord, raised: set[str]) -> CheckResult:
    return CheckResult(f"alarm {p['code']} raised", p["code"] in raised, "raised" if p["code"] in raised else "not raised")


def _alarm_not_raised(run: ScenarioRunner, p: Mapping[str, Any], record: RunRecord, raised: set[str]) -> CheckResult:
    return CheckResult(f"alarm {p['code']} not raised", p["code"] not in raised,
                       "raised" if p["code"] in raised else "not raised")


def _allowed(run: ScenarioRunner, p: Mapping[str, Any], record: RunRecord, raised: set[str]) -> CheckResult:
    result = run.results_by_label.get(p["action"])
    if result is None:
        return CheckResult(f"{p['action']} allowed", False, "the action produced no decision")
    return CheckResult(f"{p['action']} allowed", result.allowed, result.detail or ",".join(result.reasons))


def _denied(run: ScenarioRunner, p: Mapping[str, Any], record: RunRecord, raised: set[str]) -> CheckResult:
    result = run.results_by_label.get(p["action"])
    if result is None:
        return CheckResult(f"{p['action']} denied", False, "the action produced no decision")
    ok = not result.allowed and (p["reason"] is None or p["reason"] in result.reasons)
    return CheckResult(f"{p['action']} denied" + (f" with {p['reason']}" if p["reason"] else ""), ok,
                       ",".join(result.reasons) or "allowed")


def _no_overdose(run: ScenarioRunner, p: Mapping[str, Any], record: RunRecord, raised: set[str]) -> CheckResult:
    peak = run.patient.peak_overdose
    return CheckResult("patient never overdosed", peak.value == 0, f"peak {peak.name}")


def _no_severe_withdrawal(run: ScenarioRunner, p: Mapping[str, Any], record: RunRecord,
                          raised: set[str]) -> CheckResult:
    peak = run.patient.peak_withdrawal
    return CheckResult("patient never in severe withdrawal", peak.value < 2, f"peak {peak.name}")


def _ashworth_at_most(run: ScenarioRunner, p: Mapping[str, Any], record: RunRecord, raised: set[str]) -> CheckResult:
    final = run.patient.state().ashworth
    return CheckResult(f"final Ashworth at most {p['score']}", final <= float(p["score"]), f"{final:.2f}")


def _boluses_delivered(run: ScenarioRunner, p: Mapping[str, Any], record: RunRecord, raised: set[str]) -> CheckResult:
    n = sum(1 for b in run.controller.store.boluses() if b.kind == p["kind"] and b.status == "finished"
            and not b.detail.startswith("not started"))
    return CheckResult(f"{p['count']} {p['kind']} boluses delivered", n == p["count"], f"{n} delivered")


def _transits_hold_tip_dose(run: ScenarioRunner, p: Mapping[str, Any], record: RunRecord,
                            raised: set[str]) -> CheckResult:
    """Every concentration change's old drug crossed the catheter at the prescribed tip dose.

    Judged by :class:`hil.scenario.runner.TransitWatch` from what left the physical catheter's tip
    (the simulated mechanism's own volume), in windows of at least half an hour from each change
    until an hour after its transit ended; with a real pump, from the controller's accounting.
    """
    watch = run.transit_watch
    done = len(watch.ended)
    worst = watch.worst_pct
    ok = done == p["count"] and not watch.running and watch.windows > 0 \
        and worst is not None and worst <= float(p["tolerance_pct"])
    detail = (f"{done} transits ended ({'one still crossing; ' if watch.running else ''}"
              f"{watch.windows} windows checked); worst tip-dose error "
              + ("none" if worst is None else f"{worst:.1f} %")
              + (" at the physical catheter's tip" if run.rig is not None else " by the controller's accounting"))
    return CheckResult(f"{p['count']} transits held the tip dose within {p['tolerance_pct']} %", ok, detail)


def _mode_at_end(run: ScenarioRunner, p: Mapping[str, Any], record: RunRecord, raised: set[str]) -> CheckResult:
    mode = run.controller.loop.mode.value
    return CheckResult(f"controller ends in mode {p['mode']}", mode == p["mode"], mode)


def _invariants_hold(run: ScenarioRunner, p: Mapping[str, Any], record: RunRecord, raised: set[str]) -> CheckResult:
    return CheckResult("all safety invariants hold", all(i.passed for i in record.invariants), "see the invariants table")


#: Every expectation's evaluator, by its ``check`` name.
EXPECTATIONS: Mapping[str, Evaluator] = MappingProxyType({
    "dose_within": _dose_within,
    "alarm_raised": _alarm_raised,
    "alarm_not_raised": _alarm_not_raised,
    "denied": _denied,
    "allowed": _allowed,
    "no_overdose": _no_overdose,
    "no_severe_withdrawal": _no_severe_withdrawal,
    "ashworth_at_most": _ashworth_at_most,
    "boluses_delivered": _boluses_delivered,
    "transits_hold_tip_dose": _transits_hold_tip_dose,
    "mode_at_end": _mode_at_end,
    "invariants_hold": _invariants_hold,
})
