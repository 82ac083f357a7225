"""Cohort reports: ``summary.json``, ``patients.csv``, ``report.html`` and its distribution plots.

``summary.json`` (kind ``itb.cohort/1``) is the envelope of :mod:`hil.output`, then
``population`` (file, size, seed, share of each origin), ``policy_file``, ``days``,
``where`` (``local``, ``processes:N`` or the Dask scheduler), ``wall_s``,
``patients_file`` and ``policies``: for each policy, its ``name``, ``patients``,
``reached_target`` and ``reached_target_pct``, the distributions (``n``, ``mean``,
``p5``, ``p25``, ``median``, ``p75``, ``p95``; null without data) of
``days_to_target``, ``dose_at_target_ug_per_day``, ``final_dose_ug_per_day`` and
``refill_interval_days``, the ``overdose``, ``withdrawal`` and ``severe_withdrawal``
flags (``patients`` with any, ``patient_days``), ``refusals_by_reason`` (reason
code -> count, each refused workflow counting once per code), ``refusals_by_action``
and ``refills``.

``patients.csv`` has one row per patient and policy (:data:`CSV_COLUMNS`); lists are
``;``-separated, refusal reasons as ``CODE:count``.
"""

from __future__ import annotations

import csv
import html
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from hil.cohort.engine import PatientOutcome
from hil.cohort.run import CohortResult
from hil.output import REPORT_FILE, SUMMARY_FILE, write_summary
from hil.report import PRINT_DPI, html_cell, html_links, html_page, html_pairs, html_table

PATIENTS_FILE = "patients.csv"
#: The distribution plots, with their alt text.
PLOTS: tuple[tuple[str, str], ...] = (
    ("days_to_target.png", "days to target tone, by policy (cumulative share of patients)"),
    ("dose_at_target.png", "daily dose at target tone, by policy"),
    ("refusals.png", "refused requests by reason code, by policy"),
    ("refill_intervals.png", "refill intervals, by policy"),
)
#: Patient parameters written to ``patients.csv`` (the rest are in the population file).
PARAMETER_COLUMNS = ("weight_kg", "csf_volume_ml", "csf_clearance_ml_per_h", "ec50_ng_per_ml",
                     "sedation_threshold_ng_per_ml", "plasma_half_life_h")
CSV_COLUMNS = ("patient", "policy", "origin", *PARAMETER_COLUMNS, "days_to_target", "dose_at_target_ug_per_day",
               "final_dose_ug_per_day", "final_ashworth", "overdose_days", "withdrawal_days",
               "severe_withdrawal_days", "peak_overdose", "peak_withdrawal", "increases", "decreases", "boluses",
               "refusals", "refusal_reasons", "refills", "refill_intervals_days", "delivered_ug")
_PLOT_SIZE_IN = (8.0, 3.4)


def distribution(values: list[float]) -> dict[str, Any]:
    """``n``, ``mean`` and the 5th, 25th, 50th, 75th and 95th percentiles (null when empty)."""
    if not values:
        return {"n": 0, "mean": None, "p5": None, "p25": None, "median": None, "p75": None, "p95": None}
    a = np.asarray(values, dtype=float)
    p5, p25, p50, p75, p95 = (round(float(v), 3) for v in np.percentile(a, [5, 25, 50, 75, 95]))
    return {"n": len(values), "mean": round(float(a.mean()), 3), "p5": p5, "p25": p25, "median": p50, "p75": p75,
            "p95": p95}


def refusal_reasons(outcome: PatientOutcome) -> Counter[str]:
    """Reason codes of the patient's refused workflows, each refusal counting once per code."""
    return Counter(code for d in outcome.decisions if not d.allowed for code in d.reasons)


def policy_summary(name: str, outcomes: list[PatientOutcome]) -> dict[str, Any]:
    """The figures of one policy (see the module docstring)."""
    reached = [o for o in outcomes if o.days_to_target is not None]
    reasons: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    for o in outcomes:
        reasons += refusal_reasons(o)
        actions.update(d.action for d in o.decisions if not d.allowed)

    def flags(attr: str) -> dict[str, int]:
        return {"patients": sum(1 for o in outcomes if getattr(o, attr) > 0),
                "patient_days": sum(getattr(o, attr) for o in outcomes)}

    return {
        "name": name,
        "patients": len(outcomes),
        "reached_target": len(reached),
        "reached_target_pct": round(100 * len(reached) / len(outcomes), 2) if outcomes else None,
        "days_to_target": distribution([float(o.days_to_target) for o in reached if o.days_to_target is not None]),
        "dose_at_target_ug_per_day": distribution([o.dose_at_target_ug_per_day for o in reached
                                                   if o.dose_at_target_ug_per_day is not None]),
        "final_dose_ug_per_day": distribution([o.final_dose_ug_per_day for o in outcomes]),
        "overdose": flags("overdose_days"),
        "withdrawal": flags("withdrawal_days"),
        "severe_withdrawal": flags("severe_withdrawal_days"),
        "refusals_by_reason": dict(sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))),
        "refusals_by_action": dict(sorted(actions.items())),
        "refills": sum(len(o.refill_days) for o in outcomes),
        "refill_interval_days": distribution([d for o in outcomes for d in o.refill_intervals_days]),
    }


def by_policy(result: CohortResult) -> dict[str, list[PatientOutcome]]:
    """The outcomes of each policy, in file order."""
    out: dict[str, list[PatientOutcome]] = {p.name: [] for p in result.protocol.policies}
    for outcome in result.outcomes:
        out[outcome.policy].append(outcome)
    return out


def summary(result: CohortResult, *, wall_s: float, population_source: str) -> dict[str, Any]:
    """The ``summary.json`` document."""
    from hil.output import document

    origins = Counter(str(o) for o in result.sample.origins)
    return document(
        "itb.cohort/1", passed=True,
        population={"file": population_source, "size": result.sample.size, "seed": result.population.seed,
                    "origins": {k: round(v / result.sample.size, 4) for k, v in sorted(origins.items())}},
        policy_file=result.protocol.source, days=result.days, where=result.where, wall_s=round(wall_s, 3),
        patients_file=PATIENTS_FILE,
        policies=[policy_summary(name, outcomes) for name, outcomes in by_policy(result).items()],
    )


def _joined(values: list[Any]) -> str:
    return ";".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def write_patients(result: CohortResult, path: Path) -> None:
    """One row per patient and policy (:data:`CSV_COLUMNS`)."""
    params = result.sample.parameters
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for o in result.outcomes:
            reasons = refusal_reasons(o)
            writer.writerow([
                o.patient, o.policy, o.origin, *(f"{params[name][o.patient]:.6g}" for name in PARAMETER_COLUMNS),
                "" if o.days_to_target is None else o.days_to_target,
                "" if o.dose_at_target_ug_per_day is None else f"{o.dose_at_target_ug_per_day:g}",
                f"{o.final_dose_ug_per_day:g}", f"{o.final_ashworth:.3f}", o.overdose_days, o.withdrawal_days,
                o.severe_withdrawal_days, o.peak_overdose, o.peak_withdrawal, o.increases, o.decreases, o.boluses,
                o.refusals, ";".join(f"{k}:{v}" for k, v in sorted(reasons.items())), len(o.refill_days),
                _joined([round(d, 3) for d in o.refill_intervals_days]), f"{o.delivered_ug:.3f}",
            ])


def _plots(result: CohortResult, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    groups = by_policy(result)

    def figure(title: str, xlabel: str, ylabel: str) -> tuple[Any, Any]:
        fig = Figure(figsize=_PLOT_SIZE_IN, dpi=PRINT_DPI)
        axes = fig.add_subplot()
        axes.set_title(title, loc="left")
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        axes.grid(True, alpha=0.3)
        return fig, axes

    fig, axes = figure("Days to target tone", "days from implant", "patients at target, %")
    for name, outcomes in groups.items():
        days = np.sort([o.days_to_target for o in outcomes if o.days_to_target is not None])
        if len(days):
            axes.step(np.concatenate([[0], days]), 100 * np.arange(len(days) + 1) / len(outcomes), where="post",
                      label=name)
    axes.set_xlim(0, result.days)
    axes.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(out / PLOTS[0][0])

    fig, axes = figure("Daily dose at target tone", "µg/day", "patients")
    doses = {n: [o.dose_at_target_ug_per_day for o in g if o.dose_at_target_ug_per_day is not None]
             for n, g in groups.items()}
    if any(doses.values()):
        axes.hist([v for v in doses.values()], bins=30, label=list(doses), histtype="step")
        axes.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(out / PLOTS[1][0])

    fig, axes = figure("Refused requests by reason code", "refusals", "")
    totals: Counter[str] = Counter()
    per = {n: sum((refusal_reasons(o) for o in g), Counter()) for n, g in groups.items()}
    for counts in per.values():
        totals += counts
    codes = [c for c, _ in totals.most_common(12)]
    height = 0.8 / max(1, len(per))
    for k, (name, counts) in enumerate(per.items()):
        axes.barh(np.arange(len(codes)) + k * height, [counts.get(c, 0) for c in codes], height=height, label=name)
    axes.set_yticks(np.arange(len(codes)) + 0.4 - height / 2, codes, fontsize="x-small")
    if codes:
        axes.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    fig.savefig(out / PLOTS[2][0])

    fig, axes = figure("Refill intervals", "days", "refills")
    intervals = {n: [d for o in g for d in o.refill_intervals_days] for n, g in groups.items()}
    if any(intervals.values()):
        axes.hist([v for v in intervals.values()], bins=30, label=list(intervals), histtype="step")
        axes.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(out / PLOTS[3][0])


def _fmt(d: dict[str, Any], unit: str = "") -> str:
    if not d["n"]:
        return "n/a"
    return f"median {d['median']:g}{unit} (p5 {d['p5']:g}, p95 {d['p95']:g}; n = {d['n']})"


def _html(data: dict[str, Any]) -> str:
    from hil.output import software_line

    pop = data["population"]
    body = [html_pairs([
        ("Population", f"{pop['size']} patients from {pop['file']} (seed {pop['seed']})"),
        ("Origins", ", ".join(f"{k} {100 * v:.1f} %" for k, v in pop["origins"].items())),
        ("Policy file", data["policy_file"]),
        ("Days per patient", data["days"]),
        ("Ran on", data["where"]),
        ("Wall time", f"{data['wall_s']:.1f} s"),
        ("Software", software_line()),
    ], "overview"), "<b>Files</b>" + html_links([(PATIENTS_FILE, "one row per patient and policy (CSV)"),
                                                 (SUMMARY_FILE, "summary (JSON, itb.cohort/1)")])]
    rows = []
    for p in data["policies"]:
        rows.append([html_cell(p["name"]), html_cell(p["patients"], "num"),
                     html_cell(f"{p['reached_target']} ({p['reached_target_pct']:g} %)", "num"),
                     html_cell(_fmt(p["days_to_target"], " d")), html_cell(_fmt(p["dose_at_target_ug_per_day"])),
                     html_cell(f"{p['overdose']['patients']} / {p['overdose']['patient_days']}", "num"),
                     html_cell(f"{p['withdrawal']['patients']} / {p['withdrawal']['patient_days']}", "num"),
                     html_cell(_fmt(p["refill_interval_days"], " d"))])
    body.append("<h2>Policies</h2>" + html_table(
        ["Policy", "Patients", "Reached target", "Days to target", "Dose at target, µg/day",
         "Overdose: patients / days", "Withdrawal: patients / days", "Refill interval"], rows, "policies"))
    refusal_rows = [[html_cell(p["name"]), html_cell(code), html_cell(count, "num")]
                    for p in data["policies"] for code, count in p["refusals_by_reason"].items()]
    body.append("<h2>Refusals by reason code</h2>" + html_table(["Policy", "Reason code", "Refusals"],
                                                                 refusal_rows, "refusals"))
    body.append("<h2>Distributions</h2><div class='plots narrow'>")
    body += [f"<img src='{name}' alt='{html.escape(alt)}'>" for name, alt in PLOTS]
    body.append("</div>")
    return html_page("itb cohort", "itb cohort: in-silico titration", "REPORTED", body)


def write_report(result: CohortResult, directory: str | Path, *, wall_s: float, population_source: str) -> Path:
    """Write ``summary.json``, ``patients.csv``, the plots and ``report.html`` into ``directory``.

    :return: the path of ``report.html``.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    data = summary(result, wall_s=wall_s, population_source=population_source)
    write_summary(out, data)
    write_patients(result, out / PATIENTS_FILE)
    _plots(result, out)
    page = out / REPORT_FILE
    page.write_text(_html(data), encoding="utf-8")
    return page
