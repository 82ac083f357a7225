"""``itb run oral-vs-intrathecal``: the same virtual patient on oral baclofen and on intrathecal baclofen.

The case of the review behind this project [ERTZGAARD17], shown on our own firmware:

* **the oral arm** (model only, :mod:`sim.oral`): the labelled titration, 5 mg three
  times a day rising by 5 mg every 3 days to 20 mg three times a day (at most 80 mg/day
  is allowed), then that dose to the end;
* **the intrathecal arm** (the real controller over the simulated pump, as ``itb run``
  runs any scenario): a screening test dose of 50 µg that works, and a day later the
  implant at the post-screening starting dose of
  ``hil/cohorts/policies/rx_spinal.toml`` (100 µg/day), then daily titrations of at most the
  spinal cap (30 %/24 h) up to the dose whose steady state gives the oral
  maintenance's tone reduction (:func:`sim.oral.equivalent_intrathecal_dose_ug_per_day`).

Both arms are the patient ``PatientParameters.sampled(seed, variability_cv)`` that the
scenario runner uses (the reference adult by default). The report puts side by side,
over the last day: the daily dose (about 1/100 intrathecally [MEDSCAPE-ITB]), the CSF
and plasma levels (plasma about 100x lower intrathecally [DRUGLIB-DESC]), the tone and
the side-effect proxy of the plasma-driven brain level. The run passes when both ratios
lie within :data:`ABOUT_1_IN_100` (a factor of 3 either side of 1/100: the literature
gives one significant figure) and the intrathecal arm's own checks and invariants hold.

Files: ``report.html`` (the side-by-side table and the plots), ``summary.json``
(``itb.comparison/1``), ``timeseries.csv`` (both arms, hourly) and ``intrathecal/``,
the intrathecal arm's full run report. ``summary.json`` also gives the closed-form
steady states of :func:`sim.oral.compare_routes` (``steady_state``): those hold after
months, once chronic tolerance has built, so their tone is higher than the run's last
day; their ratios are the run's to a few per cent.
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cython_ext.errors import ConfigError
from cython_ext.units import H_PER_DAY, UG_PER_MG
from hil.output import write_summary
from hil.report import PRINT_DPI, RunRecord, html_cell, html_links, html_page, html_pairs, html_table, write_report
from hil.scenario import RunOptions, ScenarioRunner, parse_scenario
from sim.oral import LABELLED_TITRATION, OralStep, compare_routes, equivalent_intrathecal_dose_ug_per_day, \
    simulate_regimen
from sim.patient import Patient, PatientParameters, PatientState

#: The built-in run's name (``itb run oral-vs-intrathecal``).
RUN_NAME = "oral-vs-intrathecal"
#: Length of both arms, days: the labelled titration (12 days), then a steady fortnight.
DAYS = 28
#: Band of "about 1/100" for the dose and plasma ratios: a factor of 3 either side.
ABOUT_1_IN_100 = (1 / 300, 1 / 33)
#: The intrathecal arm's prescription (starting dose, caps), beside the cohort files.
PRESCRIPTION = Path(__file__).resolve().parent / "cohorts" / "policies" / "rx_spinal.toml"
#: Hour of the daily visit: the screening test dose on day 0, the implant on day 1, then titrations.
VISIT_HOUR = 9
#: The screening test dose the intrathecal arm's patient responds to, µg (the label's first), and how
#: long its effect lasts, h (under 8 h: the start may be twice it, itb-clinical §1.3).
SCREENING_DOSE_UG = 50
SCREENING_EFFECT_H = 6
_PLOT_SIZE_IN = (10.0, 2.6)


@dataclass(frozen=True)
class Arm:
    """One arm over the run, hourly, and its figures over the last day.

    :ivar name: ``oral`` or ``intrathecal``.
    :ivar t_h: sample times, h from the start.
    :ivar dose_ug_per_day: the daily dose prescribed at each sample, µg/day.
    :ivar csf_ng_per_ml: lumbar CSF level, ng/mL.
    :ivar plasma_ng_per_ml: plasma level, ng/mL.
    :ivar ashworth: Modified Ashworth score.
    :ivar side_effects: side-effect proxy (share of patients with dose-limiting side effects).
    """

    name: str
    t_h: list[float]
    dose_ug_per_day: list[float]
    csf_ng_per_ml: list[float]
    plasma_ng_per_ml: list[float]
    ashworth: list[float]
    side_effects: list[float]

    def last_day(self) -> dict[str, float]:
        """Means over the last 24 h of the run (units as the series)."""
        end = self.t_h[-1]
        keep = [i for i, t in enumerate(self.t_h) if t > end - H_PER_DAY]

        def mean(series: list[float]) -> float:
            return float(np.mean([series[i] for i in keep]))

        return {"dose_ug_per_day": mean(self.dose_ug_per_day), "csf_ng_per_ml": mean(self.csf_ng_per_ml),
                "plasma_ng_per_ml": mean(self.plasma_ng_per_ml), "ashworth": mean(self.ashworth),
                "side_effects": mean(self.side_effects)}


def _series(name: str, samples: list[tuple[float, float, PatientState]]) -> Arm:
    return Arm(name, [t for t, _, _ in samples], [d for _, d, _ in samples],
               [s.csf_ng_per_ml for _, _, s in samples], [s.plasma_ng_per_ml for _, _, s in samples],
               [s.ashworth for _, _, s in samples], [s.side_effects for _, _, s in samples])


def oral_regimen(days: int) -> tuple[OralStep, ...]:
    """The labelled titration, then its last step to the end of ``days`` (at least the titration)."""
    titration_days = sum(step.days for step in LABELLED_TITRATION)
    if days <= titration_days:
        raise ConfigError("days", days, f"> {titration_days} (the labelled titration, then a maintenance)")
    last = LABELLED_TITRATION[-1]
    return (*LABELLED_TITRATION, OralStep(days - titration_days, last.dose_mg, last.times_per_day))


def oral_arm(parameters: PatientParameters, days: int) -> Arm:
    """The oral arm, sampled hourly (the patient model alone: tablets are not a pump's business)."""
    steps = oral_regimen(days)
    patient = Patient(parameters)
    states = simulate_regimen(patient, steps, sample_h=1.0)
    daily = [step.daily_dose_mg * UG_PER_MG for step in steps for _ in range(step.days * H_PER_DAY)]
    return _series("oral", [(i + 1.0, daily[i], s) for i, s in enumerate(states)])


def titration_doses_ug_per_day(start_ug: int, target_ug: int, cap_pct: int) -> list[int]:
    """Daily doses from ``start_ug`` to ``target_ug``, each at most ``cap_pct`` % above the one before."""
    doses = []
    dose = start_ug
    while dose < target_ug:
        dose = min(target_ug, dose * (100 + cap_pct) // 100)
        doses.append(dose)
    return doses


def intrathecal_scenario(target_ug_per_day: int, days: int, *, seed: int, variability_cv: float) -> Any:
    """The intrathecal arm as a scenario: a screening test dose, implant, daily titrations to ``target_ug_per_day``.

    The patient responds to the first test dose (:data:`SCREENING_DOSE_UG` by lumbar puncture, an
    effect of :data:`SCREENING_EFFECT_H`), so the controller's record allows the prescription's start
    at twice it (itb-clinical §1.3); the implant follows a day later.
    """
    from controller.prescription import load_prescription

    rx = load_prescription(PRESCRIPTION)
    start = rx.programme.steps[0].dose_ng_per_day // 1000
    # One under the cap: the pump's rates are rounded down, so a step of exactly the cap can go over it.
    doses = titration_doses_ug_per_day(start, target_ug_per_day, rx.titration.max_increase_pct - 1)
    if len(doses) + 2 >= days:
        raise ConfigError("days", days, f"> {len(doses) + 2} (screening, then the intrathecal titration to "
                          f"{target_ug_per_day} µg/day)")
    lines = [
        "[scenario]", f'name = "{RUN_NAME}: intrathecal arm"',
        f'description = "Implant at {start} ug/day, then daily titrations to {target_ug_per_day} ug/day, the dose '
        f'whose steady state matches the tone reduction of the oral maintenance."',
        f"duration_days = {days}", f"seed = {seed}", f'prescription = "{PRESCRIPTION.name}"',
        "[patient]", f'variability_cv = "{variability_cv}"',
        "[[action]]", f'at = "0d {VISIT_HOUR:02d}:00"', 'do = "screening_dose"', f"dose_ug = {SCREENING_DOSE_UG}",
        "adequate = true", f"effect_h = {SCREENING_EFFECT_H}",
        "[[action]]", f'at = "1d {VISIT_HOUR:02d}:00"', 'do = "implant"',
    ]
    for day, dose in enumerate(doses, start=2):
        lines += ["[[action]]", f'at = "{day}d {VISIT_HOUR:02d}:00"', 'do = "titrate"', f"dose_ug_per_day = {dose}",
                  'reason = "towards the oral-equivalent dose"']
    lines += ["[[expect]]", 'check = "no_overdose"', "[[expect]]", 'check = "no_severe_withdrawal"']
    return parse_scenario("\n".join(lines) + "\n", source=f"<built-in {RUN_NAME}>", base_dir=PRESCRIPTION.parent)


@dataclass
class Comparison:
    """Both arms and what was concluded.

    :ivar parameters: the patient.
    :ivar oral: the oral arm.
    :ivar intrathecal: the intrathecal arm.
    :ivar target_ug_per_day: the intrathecal dose of equal tone reduction, µg/day.
    :ivar record: the intrathecal arm's run record.
    :ivar closed_form: :func:`sim.oral.compare_routes` for the maintenance step (the steady states).
    """

    parameters: PatientParameters
    oral: Arm
    intrathecal: Arm
    target_ug_per_day: float
    record: RunRecord
    closed_form: Any

    def ratios(self) -> dict[str, float]:
        """Intrathecal over oral, over the last day: ``dose``, ``plasma``, ``csf``, ``side_effects``."""
        o, i = self.oral.last_day(), self.intrathecal.last_day()
        return {"dose": i["dose_ug_per_day"] / o["dose_ug_per_day"],
                "plasma": i["plasma_ng_per_ml"] / o["plasma_ng_per_ml"],
                "csf": i["csf_ng_per_ml"] / o["csf_ng_per_ml"],
                "side_effects": i["side_effects"] / o["side_effects"] if o["side_effects"] else math.nan}

    def checks(self) -> dict[str, bool]:
        """The verdicts: each ratio in its band, and the intrathecal arm's checks and invariants."""
        low, high = ABOUT_1_IN_100
        r = self.ratios()
        return {"dose_ratio_about_1_in_100": low <= r["dose"] <= high,
                "plasma_ratio_about_1_in_100": low <= r["plasma"] <= high,
                "intrathecal_arm_passed": self.record.passed}

    @property
    def passed(self) -> bool:
        """Whether every check held."""
        return all(self.checks().values())


def run_comparison(*, days: int = DAYS, seed: int = 0, variability_cv: float = 0.0, link: str = "pty",
                   report_dir: Path | None = None, progress: Any = None) -> Comparison:
    """Run both arms for ``days``.

    :param days: length of both arms, days (more than the labelled titration's 12).
    :param seed: the patient's seed (and the simulated pump's).
    :param variability_cv: the patient's variability (0: the reference adult).
    :param link: how the simulated pump is served (``pty``, ``inprocess``, ``tcp``).
    :param report_dir: where the intrathecal arm's run keeps its journal and trace.
    :param progress: ``progress(elapsed_ms, duration_ms)`` of the intrathecal arm.
    """
    parameters = PatientParameters.sampled(seed, variability_cv=variability_cv)
    steps = oral_regimen(days)
    oral = oral_arm(parameters, days)
    target = equivalent_intrathecal_dose_ug_per_day(parameters, steps[-1])
    scenario = intrathecal_scenario(round(target), days, seed=seed, variability_cv=variability_cv)
    samples: list[tuple[float, float, PatientState]] = []
    runner: ScenarioRunner

    def sample(elapsed_ms: int, duration_ms: int) -> None:
        state = runner.patient.state()
        dose = runner.controller.therapy.prescribed_dose_ng_per_day / 1000
        samples.append((elapsed_ms / 3_600_000, dose, state))
        if progress is not None:
            progress(elapsed_ms, duration_ms)

    runner = ScenarioRunner(scenario, RunOptions(link=link, report_dir=report_dir, progress=sample))
    record = runner.run()
    hourly = [s for s in samples if abs(s[0] - round(s[0])) < 1e-9]
    return Comparison(parameters, oral, _series("intrathecal", hourly), target, record,
                      compare_routes(parameters, steps[-1]))


# -- the report --------------------------------------------------------------------------------------------


def summary(c: Comparison) -> dict[str, Any]:
    """The ``summary.json`` document (``itb.comparison/1``)."""
    from hil.output import document

    error = None if not c.record.error else {"message": c.record.error}
    closed = c.closed_form
    return document(
        "itb.comparison/1", passed=c.passed, error=error, run=RUN_NAME, days=c.oral.t_h[-1] / H_PER_DAY,
        patient=asdict(c.parameters), intrathecal_target_ug_per_day=round(c.target_ug_per_day, 3),
        oral_last_day=c.oral.last_day(), intrathecal_last_day=c.intrathecal.last_day(),
        ratios={k: round(v, 6) for k, v in c.ratios().items()}, band=list(ABOUT_1_IN_100), checks=c.checks(),
        steady_state={"dose_ratio": closed.dose_ratio, "plasma_ratio": closed.plasma_ratio,
                      "oral": asdict(closed.oral), "intrathecal": asdict(closed.intrathecal)},
        intrathecal_report="intrathecal/report.html",
    )


def _plots(c: Comparison, out: Path) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    panels = [
        ("dose.png", "daily dose, µg/day (log)", "dose_ug_per_day", True),
        ("csf.png", "lumbar CSF level, ng/mL (log)", "csf_ng_per_ml", True),
        ("plasma.png", "plasma level, ng/mL (log)", "plasma_ng_per_ml", True),
        ("tone.png", "Modified Ashworth score", "ashworth", False),
        ("side_effects.png", "side-effect proxy (share of patients)", "side_effects", False),
    ]
    for name, label, key, log in panels:
        fig = Figure(figsize=_PLOT_SIZE_IN, dpi=PRINT_DPI)
        axes = fig.add_subplot()
        for arm, colour in ((c.oral, "#cf222e"), (c.intrathecal, "#2f81f7")):
            values = np.asarray(getattr(arm, key), dtype=float)
            axes.plot(np.asarray(arm.t_h) / H_PER_DAY, np.maximum(values, 1e-6) if log else values, color=colour,
                      label=arm.name, linewidth=1)
        if log:
            axes.set_yscale("log")
        axes.set_title(label, loc="left")
        axes.set_xlabel("days")
        axes.grid(True, alpha=0.3)
        axes.legend(loc="best", fontsize="small")
        fig.tight_layout()
        fig.savefig(out / name)
    return [(name, label) for name, label, _, _ in panels]


def _html(c: Comparison, plots: list[tuple[str, str]]) -> str:
    o, i, r = c.oral.last_day(), c.intrathecal.last_day(), c.ratios()
    rows = [
        ("Daily dose, µg/day", o["dose_ug_per_day"], i["dose_ug_per_day"], r["dose"]),
        ("Lumbar CSF level, ng/mL", o["csf_ng_per_ml"], i["csf_ng_per_ml"], r["csf"]),
        ("Plasma level, ng/mL", o["plasma_ng_per_ml"], i["plasma_ng_per_ml"], r["plasma"]),
        ("Modified Ashworth score", o["ashworth"], i["ashworth"], None),
        ("Side-effect proxy", o["side_effects"], i["side_effects"], r["side_effects"]),
    ]
    table = html_table(["Over the last day", "Oral", "Intrathecal", "Intrathecal / oral"], [
        [html_cell(label), html_cell(f"{a:.4g}", "num"), html_cell(f"{b:.4g}", "num"),
         html_cell("" if ratio is None else f"1/{1 / ratio:.0f}" if ratio else "0", "num")]
        for label, a, b, ratio in rows], "arms")
    low, high = ABOUT_1_IN_100
    checks = [[html_cell(name.replace("_", " ")), html_cell("held", "ok") if ok else html_cell("FAILED", "bad")]
              for name, ok in c.checks().items()]
    body = [
        "<p>The same virtual patient on the labelled oral titration (model only) and on intrathecal baclofen "
        "(the controller over the simulated pump), at the intrathecal dose whose steady state gives the oral "
        "maintenance's tone reduction.</p>",
        html_pairs([("Oral regimen", " then ".join(f"{s.dose_mg:g} mg x{s.times_per_day} for {s.days} d"
                                                    for s in oral_regimen(round(c.oral.t_h[-1] / H_PER_DAY)))),
                    ("Intrathecal target", f"{c.target_ug_per_day:.1f} µg/day"),
                    ("Band of 'about 1/100'", f"1/{1 / low:.0f} to 1/{1 / high:.0f}")], "overview"),
        "<h2>Side by side</h2>" + table,
        "<h2>Checks</h2>" + html_table(["Check", "Result"], checks, "checks"),
        "<b>Files</b>" + html_links([("summary.json", "summary (JSON, itb.comparison/1)"),
                                     ("timeseries.csv", "both arms, hourly"),
                                     ("intrathecal/report.html", "the intrathecal arm's run report")]),
        "<h2>Both arms</h2><div class='plots'>",
        *[f"<img src='{name}' alt='{label}'>" for name, label in plots],
        "</div>",
    ]
    verdict = "PASSED" if c.passed else "FAILED"
    return html_page(f"itb run {RUN_NAME}", f"itb run {RUN_NAME}", verdict, body)


def write_comparison(c: Comparison, directory: str | Path) -> Path:
    """Write the comparison's files (and the intrathecal arm's run report) into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    write_report(c.record, out / "intrathecal")
    write_summary(out, summary(c))
    with (out / "timeseries.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arm", "t_h", "dose_ug_per_day", "csf_ng_per_ml", "plasma_ng_per_ml", "ashworth",
                         "side_effects"])
        for arm in (c.oral, c.intrathecal):
            for row in zip(arm.t_h, arm.dose_ug_per_day, arm.csf_ng_per_ml, arm.plasma_ng_per_ml, arm.ashworth,
                           arm.side_effects):
                writer.writerow([arm.name, *(f"{v:.6g}" for v in row)])
    plots = _plots(c, out)
    page = out / "report.html"
    page.write_text(_html(c, plots), encoding="utf-8")
    return page


def main(args: argparse.Namespace) -> int:
    """``itb run oral-vs-intrathecal``: run both arms, write the report; 0 if every check held."""
    from rich.console import Console

    if getattr(args, "pump", None):
        raise ConfigError("--pump", args.pump, f"absent: {RUN_NAME} runs on the simulated pump")
    days = DAYS if getattr(args, "days", None) is None else args.days
    if days != int(days):
        raise ConfigError("--days", days, "whole days")
    console = Console()
    console.print(f"[bold]itb run[/bold] {RUN_NAME}: oral (model) and intrathecal (simulated NE-1000 over "
                  f"{args.link}), {int(days)} days")
    report = Path(args.report or "itb-report")
    comparison = run_comparison(days=int(days), link=args.link, report_dir=report / "intrathecal")
    page = write_comparison(comparison, report)
    r = comparison.ratios()
    console.print(f"intrathecal / oral: dose 1/{1 / r['dose']:.0f}, plasma 1/{1 / r['plasma']:.0f}; report: {page}")
    console.print("[green]PASSED[/green]" if comparison.passed else "[red]FAILED[/red]")
    return 0 if comparison.passed else 1
