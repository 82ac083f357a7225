"""Run reports: ``report.html``, PNG plots, ``summary.json`` and ``timeseries.csv`` in one directory.

The scenario runner fills a :class:`RunRecord` as it goes; :func:`write_report`
turns it into files. Matplotlib is imported only here, inside
:func:`write_report`, and draws on its Agg canvas (no display needed).

The plots share one time axis: every PNG has the same size, the same margins
and the same time range, so they stack on the page as one chart, and each is
still a figure of its own to attach to a bug report. They are written at
:data:`PRINT_DPI`.

``summary.json`` (kind ``itb.run/1``) is the envelope of :mod:`hil.output`
(``schema``, ``software``, ``passed``, ``error``: null, or ``{"message"}`` when
the run was aborted), then, with units in every key and times as ``t_ms`` since
the scenario start:

- ``scenario``, ``source``, ``description``, ``link``, ``pump_url``, ``started_utc``,
  ``duration_days``, ``wall_s``, ``virtual_to_wall_ratio``;
- ``delivered_ug`` (what the pump's mechanism really moved, at the reservoir's concentration),
  ``prescribed_ug`` (what the programme commanded), ``dose_error_pct`` (their difference),
  ``delivered_at_tip_ug`` (the drug that really left the catheter tip: simulated physics, null with a
  real pump), ``delivered_by_kind_ug`` (the controller's own reconciliation at the tip, by kind),
  ``pump_dispensed_ml``;
- ``alarms_raised`` (codes), ``alarm_events`` (every raise, clear and acknowledgement:
  ``t_ms``, ``event``, ``code``, ``priority``, ``detail``) and ``alarm_periods`` (each
  raise to its clear: ``code``, ``priority``, ``raised_t_ms``, ``cleared_t_ms``,
  ``acknowledged_t_ms``, ``duration_ms``; null where it had not happened by the end);
- ``decisions`` (every clinical action: ``t_ms``, ``action``, ``label``, ``allowed``,
  ``reasons``, ``detail``) and ``denials`` (those not allowed);
- ``pump_commands`` (``t_ms``, ``command``, ``outcome``, ``rate_nl_per_h``, ``volume_nl``,
  ``command_id``, ``detail``);
- ``reached_days`` (scenario time actually reached), ``interrupted``, ``simulation`` (null when
  every device was real; else ``pump`` and ``balance``: ``simulator``, ``version``, ``settings``),
  ``controller_gaps`` (``from_t_ms``, ``to_t_ms``, ``delivered_nl``: the controller was down and
  the run resumed from its journal), ``notes``;
- ``expectations``, ``invariants`` and ``implicit_checks`` (``name``, ``passed``, ``detail``);
- ``patient``, ``reservoir_at_end``, ``low_reservoir_ml``, ``boluses``;
- ``samples`` (how many rows ``timeseries.csv`` holds), ``timeseries_file``, ``trace_file``,
  ``trace_files`` (one per controller session),
  ``accuracy_report``.

``timeseries.csv`` has one row per control-loop poll, its columns the fields of :class:`Sample`.
"""

from __future__ import annotations

import csv
import html
from dataclasses import asdict, astuple, dataclass, field, fields
from pathlib import Path
from typing import Any

from cython_ext.units import MS_PER_DAY, MS_PER_H, MS_PER_MIN
from hil.output import REPORT_FILE, SUMMARY_FILE, write_summary

#: Resolution of every PNG, dots per inch (print quality).
PRINT_DPI = 300
#: Size of every time-axis plot, inches; the margins are fixed too, so the plots line up.
PLOT_SIZE_IN = (10.0, 2.6)
_MARGINS = {"left": 0.15, "right": 0.82, "top": 0.86, "bottom": 0.2}

TIMESERIES_FILE = "timeseries.csv"
#: The runner's journal, linked from the page when it is there.
JOURNAL_FILE = "journal.sqlite"
#: The time-axis plots, top to bottom, with their alt text.
PLOTS: tuple[tuple[str, str], ...] = (
    ("dose24.png", "rolling 24 h dose against the cap, with boluses, refills and faults"),
    ("rate.png", "pump rate"),
    ("reservoir.png", "predicted reservoir volume against the low-reservoir threshold"),
    ("alarms.png", "alarm bars"),
    ("patient.png", "patient model: Modified Ashworth score"),
)
#: Files every report directory holds (the serial trace and journal are added by the runner).
REPORT_FILES = (REPORT_FILE, SUMMARY_FILE, TIMESERIES_FILE, *(name for name, _ in PLOTS))

#: How each delivery kind reads in a report.
KIND_LABELS = {
    "basal": "Basal",
    "flex": "Flex programme",
    "clinician": "Clinician bolus",
    "patient": "Patient bolus",
    "periodic": "Periodic bolus",
    "priming": "Priming bolus",
    "bridge": "Bridge bolus (refill)",
    "minimum_rate": "Minimum rate",
}
#: IEC 60601-1-8 colours of the alarm priorities.
PRIORITY_COLOURS = {"HIGH": "#d1242f", "MEDIUM": "#e3a008", "LOW": "#2f81f7"}
#: How a pump command's outcome reads, and its style.
OUTCOMES = {"applied": ("applied", "ok"), "not_applied": ("not applied", "bad"), "uncertain": ("UNCERTAIN", "warn")}


@dataclass(frozen=True)
class Sample:
    """One point of the time series, taken at each control-loop poll.

    :ivar t_ms: time since the scenario start, ms.
    :ivar rate_nl_per_h: rate the pump holds, nL/h.
    :ivar dose_24h_ug: rolling 24 h delivered dose from the ledger, µg.
    :ivar cap_ug_per_day: the daily cap in force, µg/day.
    :ivar reservoir_ml: predicted reservoir volume, mL.
    :ivar ashworth: patient's Modified Ashworth score.
    :ivar effect_ng_per_ml: patient's effect-site concentration, ng/mL.
    """

    t_ms: int
    rate_nl_per_h: int
    dose_24h_ug: float
    cap_ug_per_day: float
    reservoir_ml: float
    ashworth: float
    effect_ng_per_ml: float


@dataclass(frozen=True)
class AlarmEvent:
    """An alarm raise, clear or acknowledgement as it happened.

    :ivar t_ms: time since the scenario start, ms.
    :ivar event: ``raise``, ``clear`` or ``acknowledge``.
    :ivar code: the alarm code (``motor_stall``...).
    :ivar priority: ``HIGH``, ``MEDIUM`` or ``LOW``.
    :ivar detail: why.
    """

    t_ms: int
    event: str
    code: str
    priority: str
    detail: str = ""


@dataclass(frozen=True)
class AlarmPeriod:
    """One alarm from its raise to its clear.

    :ivar code: the alarm code.
    :ivar priority: ``HIGH``, ``MEDIUM`` or ``LOW``.
    :ivar raised_t_ms: when it was raised, ms since the scenario start.
    :ivar cleared_t_ms: when it cleared, ms, or None if it was still active at the end.
    :ivar acknowledged_t_ms: when it was first acknowledged, ms, or None.
    :ivar duration_ms: raised to cleared, ms, or None if still active.
    :ivar detail: why it was raised.
    """

    code: str
    priority: str
    raised_t_ms: int
    cleared_t_ms: int | None
    acknowledged_t_ms: int | None
    duration_ms: int | None
    detail: str = ""


@dataclass(frozen=True)
class DecisionEvent:
    """A clinical action and what the controller decided.

    :ivar t_ms: time since the scenario start, ms.
    :ivar action: the action kind (``titrate``, ``patient_bolus``...).
    :ivar label: the scenario label, if any.
    :ivar allowed: whether it was carried out.
    :ivar reasons: machine-readable reason codes (kernel codes, workflow codes).
    :ivar detail: human-readable summary.
    """

    t_ms: int
    action: str
    label: str
    allowed: bool
    reasons: tuple[str, ...] = ()
    detail: str = ""


@dataclass(frozen=True)
class PumpCommand:
    """A command sent to the pump and what it did.

    :ivar t_ms: time it was sent, ms since the scenario start.
    :ivar command: the driver's name for it (``set_rate``, ``start``, ``stop``, ``set_volume``...).
    :ivar outcome: ``applied``, ``not_applied`` or ``uncertain`` (as the journal records it).
    :ivar rate_nl_per_h: the rate asked for, nL/h, for a rate command.
    :ivar volume_nl: the volume asked for, nL, for a volume command.
    :ivar command_id: the journal's ID of the command, if it was journalled.
    :ivar detail: what was read back or why it was not applied.
    """

    t_ms: int
    command: str
    outcome: str
    rate_nl_per_h: int | None = None
    volume_nl: int | None = None
    command_id: str = ""
    detail: str = ""


@dataclass(frozen=True)
class CheckResult:
    """One expectation or invariant, evaluated."""

    name: str
    passed: bool
    detail: str = ""


@dataclass
class RunRecord:
    """Everything a report shows about one run.

    :ivar commands: every pump command with its outcome, in order.
    :ivar low_reservoir_ml: the volume at which the low-reservoir alarm falls, mL (a threshold line).
    :ivar accuracy_report: the accuracy step's ``report.html``, relative to the report directory.
    :ivar simulation: what was simulated, with the simulator's version and settings
        (``{"pump": {...}, "balance": {...} or None}``), or None when every device was real.
    :ivar reached_ms: scenario time actually reached, ms (less than ``duration_ms`` when interrupted).
    :ivar interrupted: the operator stopped the run (SIGINT) before its end.
    :ivar gaps: each time the controller was down and the run was resumed from its journal:
        ``from_t_ms``, ``to_t_ms``, ``delivered_nl`` (counted by the pump meanwhile).
    :ivar implicit_checks: what every run is judged on even without expectations
        (:func:`hil.scenario.checks.implicit_checks`).
    :ivar notes: what the run skipped or changed, and why (actions beyond a shortened end...).
    :ivar trace_files: every serial trace of the run, one per controller session, in order.
    """

    scenario: str
    source: str
    description: str = ""
    link: str = ""
    pump_url: str = ""
    duration_ms: int = 0
    wall_s: float = 0.0
    started_utc: str = ""
    samples: list[Sample] = field(default_factory=list)
    alarms: list[AlarmEvent] = field(default_factory=list)
    decisions: list[DecisionEvent] = field(default_factory=list)
    commands: list[PumpCommand] = field(default_factory=list)
    expectations: list[CheckResult] = field(default_factory=list)
    invariants: list[CheckResult] = field(default_factory=list)
    delivered_ug: float = 0.0
    prescribed_ug: float = 0.0
    delivered_at_tip_ug: float | None = None
    delivered_by_kind_ug: dict[str, float] = field(default_factory=dict)
    pump_dispensed_ml: float = 0.0
    patient: dict[str, Any] = field(default_factory=dict)
    reservoir: dict[str, Any] = field(default_factory=dict)
    low_reservoir_ml: float | None = None
    boluses: list[dict[str, Any]] = field(default_factory=list)
    trace_file: str = ""
    accuracy_report: str = ""
    error: str = ""
    simulation: dict[str, Any] | None = None
    reached_ms: int | None = None
    interrupted: bool = False
    gaps: list[dict[str, Any]] = field(default_factory=list)
    implicit_checks: list[CheckResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    trace_files: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True if every expectation, invariant and implicit check held and the run did not abort."""
        return not self.error and all(c.passed for c in self.checks())

    def checks(self) -> list[CheckResult]:
        """Every check the verdict rests on: invariants, implicit checks, expectations."""
        return [*self.invariants, *self.implicit_checks, *self.expectations]

    @property
    def dose_error_pct(self) -> float | None:
        """Delivered versus prescribed, %, or None when nothing was prescribed."""
        if self.prescribed_ug <= 0:
            return None
        return 100.0 * (self.delivered_ug - self.prescribed_ug) / self.prescribed_ug

    def alarm_periods(self) -> list[AlarmPeriod]:
        """Each alarm from its raise to its clear, in the order they were raised."""
        periods: list[dict[str, Any]] = []
        open_by_code: dict[str, dict[str, Any]] = {}
        for a in self.alarms:
            current = open_by_code.get(a.code)
            if a.event == "raise" and current is None:
                current = {"code": a.code, "priority": a.priority, "raised_t_ms": a.t_ms, "cleared_t_ms": None,
                           "acknowledged_t_ms": None, "detail": a.detail}
                open_by_code[a.code] = current
                periods.append(current)
            elif a.event == "acknowledge" and current is not None and current["acknowledged_t_ms"] is None:
                current["acknowledged_t_ms"] = a.t_ms
            elif a.event == "clear" and current is not None:
                current["cleared_t_ms"] = a.t_ms
                del open_by_code[a.code]
        return [
            AlarmPeriod(**p, duration_ms=None if p["cleared_t_ms"] is None else p["cleared_t_ms"] - p["raised_t_ms"])
            for p in periods
        ]

    def summary(self) -> dict[str, Any]:
        """The JSON-ready summary (what ``summary.json`` holds; the shape is in the module docstring)."""
        from hil.output import document

        decisions = [_decision_dict(d) for d in self.decisions]
        return document(
            "itb.run/1",
            passed=self.passed,
            error={"message": self.error} if self.error else None,
            scenario=self.scenario,
            source=self.source,
            description=self.description,
            link=self.link,
            pump_url=self.pump_url,
            started_utc=self.started_utc,
            duration_days=self.duration_ms / MS_PER_DAY,
            reached_days=(self.duration_ms if self.reached_ms is None else self.reached_ms) / MS_PER_DAY,
            interrupted=self.interrupted,
            simulation=self.simulation,
            controller_gaps=self.gaps,
            wall_s=round(self.wall_s, 3),
            virtual_to_wall_ratio=round(self.duration_ms / 1000 / self.wall_s, 1) if self.wall_s > 0 else None,
            delivered_ug=round(self.delivered_ug, 3),
            prescribed_ug=round(self.prescribed_ug, 3),
            delivered_at_tip_ug=None if self.delivered_at_tip_ug is None else round(self.delivered_at_tip_ug, 3),
            dose_error_pct=None if self.dose_error_pct is None else round(self.dose_error_pct, 3),
            delivered_by_kind_ug={k: round(v, 3) for k, v in sorted(self.delivered_by_kind_ug.items())},
            pump_dispensed_ml=round(self.pump_dispensed_ml, 6),
            alarms_raised=sorted({a.code for a in self.alarms if a.event == "raise"}),
            alarm_events=[asdict(a) for a in self.alarms],
            alarm_periods=[asdict(p) for p in self.alarm_periods()],
            decisions=decisions,
            denials=[d for d in decisions if not d["allowed"]],
            pump_commands=[asdict(c) for c in self.commands],
            expectations=[asdict(c) for c in self.expectations],
            invariants=[asdict(c) for c in self.invariants],
            implicit_checks=[asdict(c) for c in self.implicit_checks],
            notes=self.notes,
            patient=self.patient,
            reservoir_at_end=self.reservoir,
            low_reservoir_ml=self.low_reservoir_ml,
            boluses=self.boluses,
            samples=len(self.samples),
            timeseries_file=TIMESERIES_FILE,
            trace_file=self.trace_file,
            trace_files=self.trace_files or ([self.trace_file] if self.trace_file else []),
            accuracy_report=self.accuracy_report,
        )


def _decision_dict(d: DecisionEvent) -> dict[str, Any]:
    data = asdict(d)
    data["reasons"] = list(d.reasons)
    return data


# -- plots ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TimeAxis:
    """The one time axis every plot uses: the unit, its scale and the range."""

    unit: str
    ms_per_unit: int
    end: float

    @classmethod
    def of(cls, record: RunRecord) -> _TimeAxis:
        end_ms = max([record.duration_ms, *(s.t_ms for s in record.samples[-1:])])
        if end_ms >= 2 * MS_PER_DAY:
            return cls("days", MS_PER_DAY, end_ms / MS_PER_DAY)
        return cls("hours", MS_PER_H, max(end_ms, MS_PER_H) / MS_PER_H)

    def at(self, t_ms: int) -> float:
        return t_ms / self.ms_per_unit


def _events(record: RunRecord) -> dict[str, list[tuple[int, str]]]:
    """Boluses, refills and faults to mark on the dose plot: ``(t_ms, label)`` by class."""
    return {
        "bolus": [(b["requested_t_ms"], KIND_LABELS.get(b["kind"], b["kind"])) for b in record.boluses],
        "refill": [(d.t_ms, d.label or "refill") for d in record.decisions if d.action == "refill" and d.allowed],
        "fault": [(d.t_ms, d.detail or d.label) for d in record.decisions if d.action == "fault" and d.allowed],
    }


def _plots(record: RunRecord, out: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    axis = _TimeAxis.of(record)
    t = [axis.at(s.t_ms) for s in record.samples]
    events = _events(record)

    def new_axes(title: str, ylabel: str) -> tuple[Figure, Any]:
        figure = Figure(figsize=PLOT_SIZE_IN, dpi=PRINT_DPI)
        FigureCanvasAgg(figure)
        figure.subplots_adjust(**_MARGINS)
        ax = figure.add_subplot()
        ax.set_title(title, fontsize=10, loc="left")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_xlabel(f"time since the scenario start, {axis.unit}", fontsize=8)
        ax.set_xlim(0, axis.end)
        ax.tick_params(labelsize=7)
        ax.grid(True, alpha=0.3)
        for t_ms, _ in events["refill"]:
            ax.axvline(axis.at(t_ms), color="#1a7f37", linestyle="--", linewidth=0.9)
        for t_ms, _ in events["fault"]:
            ax.axvline(axis.at(t_ms), color="#8250df", linestyle=":", linewidth=1.0)
        return figure, ax

    def save(figure: Figure, ax: Any, name: str, extra: list[Any] = ()) -> None:
        handles, labels = ax.get_legend_handles_labels()
        marks = [
            (Line2D([], [], color="#1a7f37", linestyle="--"), "refill") if events["refill"] else None,
            (Line2D([], [], color="#8250df", linestyle=":"), "fault injected") if events["fault"] else None,
        ]
        for mark in [*extra, *(m for m in marks if m)]:
            handles.append(mark[0])
            labels.append(mark[1])
        if handles:
            ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, frameon=False)
        figure.savefig(out / name)

    figure, ax = new_axes("Rolling 24 h dose against the daily cap", "dose, µg/day")
    ax.step(t, [s.dose_24h_ug for s in record.samples], where="post", linewidth=1.2, label="delivered + committed")
    ax.step(t, [s.cap_ug_per_day for s in record.samples], where="post", color="#d1242f", linestyle="--",
            linewidth=1.0, label="daily cap")
    ax.set_ylim(bottom=0)
    bolus_x = [axis.at(t_ms) for t_ms, _ in events["bolus"]]
    if bolus_x:
        ax.plot(bolus_x, [1.0] * len(bolus_x), linestyle="none", marker="v", color="#0550ae", markersize=5,
                transform=ax.get_xaxis_transform(), clip_on=False, label="bolus requested")
    save(figure, ax, "dose24.png")

    figure, ax = new_axes("Pump rate (log scale above 1 µL/h)", "rate, µL/h")
    ax.step(t, [s.rate_nl_per_h / 1000 for s in record.samples], where="post", linewidth=1.0, label="rate held")
    # Boluses run a hundred times faster than basal: a log scale keeps both readable.
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylim(bottom=0)
    top = max([1.0, *(s.rate_nl_per_h / 1000 for s in record.samples)])
    ticks = [0, *(10.0**k for k in range(0, len(str(int(top))) + 1))]
    ax.set_yticks(ticks, [f"{tick:g}" for tick in ticks])
    ax.minorticks_off()
    save(figure, ax, "rate.png")

    figure, ax = new_axes("Predicted reservoir volume", "volume, mL")
    ax.step(t, [s.reservoir_ml for s in record.samples], where="post", linewidth=1.2, label="reservoir")
    if record.low_reservoir_ml is not None:
        ax.axhline(record.low_reservoir_ml, color="#e3a008", linestyle="--", linewidth=1.0,
                   label=f"low-reservoir alarm ({record.low_reservoir_ml:g} mL)")
    ax.set_ylim(bottom=0)
    save(figure, ax, "reservoir.png")

    figure, ax = new_axes("Alarms, raised to cleared", "")
    periods = record.alarm_periods()
    codes = list(dict.fromkeys(p.code for p in periods))
    for p in periods:
        start = axis.at(p.raised_t_ms)
        end = axis.end if p.cleared_t_ms is None else axis.at(p.cleared_t_ms)
        # A bar narrower than a pixel would vanish: every alarm stays visible.
        width = max(end - start, axis.end / 400)
        ax.broken_barh([(start, width)], (codes.index(p.code) - 0.35, 0.7),
                       facecolors=PRIORITY_COLOURS.get(p.priority, "grey"),
                       hatch="//" if p.cleared_t_ms is None else None, edgecolor="black", linewidth=0.3)
    ax.set_yticks(range(len(codes)))
    ax.set_yticklabels([human(c) for c in codes], fontsize=7)
    ax.set_ylim(len(codes) - 0.5 if codes else 0.5, -0.5)
    ax.grid(True, axis="x", alpha=0.3)
    ax.grid(False, axis="y")
    priorities = [(Line2D([], [], color=c, linewidth=6), f"{p.lower()} priority") for p, c in PRIORITY_COLOURS.items()]
    save(figure, ax, "alarms.png", priorities)

    figure, ax = new_axes("Patient model: Modified Ashworth score", "MAS (0 to 4)")
    ax.step(t, [s.ashworth for s in record.samples], where="post", linewidth=1.2, label="Ashworth")
    ax.set_ylim(0, 4.2)
    save(figure, ax, "patient.png")


def write_timeseries(record: RunRecord, path: Path) -> None:
    """Write one row per poll to ``path``, its columns the fields of :class:`Sample`."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([f.name for f in fields(Sample)])
        writer.writerows(astuple(s) for s in record.samples)


# -- the page -----------------------------------------------------------------------------------------


def human(name: str) -> str:
    """A key as a reader sees it: ``motor_stall`` -> ``Motor stall``."""
    text = name.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def fmt_t(t_ms: int) -> str:
    """A time since the scenario start as the scenario files write it: ``3d 09:05``."""
    day, rest = divmod(t_ms, MS_PER_DAY)
    hours, rest = divmod(rest, MS_PER_H)
    return f"{day}d {hours:02d}:{rest // MS_PER_MIN:02d}"


def fmt_duration(ms: int) -> str:
    """A duration to the minute: ``2 d 3 h 5 min``, ``45 min``, ``< 1 min``."""
    minutes = ms // MS_PER_MIN
    if minutes == 0:
        return "< 1 min"
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    return " ".join(p for p in parts if p)


def fmt_utc(iso: str | None) -> str:
    """An ISO-8601 UTC time to the minute, as a reader wants it: ``2026-03-26 19:36 UTC``."""
    if not iso:
        return "n/a"
    from datetime import datetime, timezone

    return datetime.fromisoformat(iso).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def html_cell(value: Any, cls: str = "") -> str:
    """One ``<td>``, its text escaped; ``cls`` is a class of :data:`PAGE_STYLE` (``ok``, ``bad``, ``num``...)."""
    text = html.escape(str(value))
    return f"<td class='{cls}'>{text}</td>" if cls else f"<td>{text}</td>"


def html_table(headers: list[str], rows: list[list[str]], table_id: str) -> str:
    """A table with a header row; ``rows`` hold :func:`html_cell` cells. An empty table says ``none``."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(f"<tr>{''.join(row)}</tr>" for row in rows)
    if not rows:
        body = f"<tr><td colspan='{len(headers)}' class='none'>none recorded</td></tr>"
    return f"<table id='{table_id}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_pairs(rows: list[tuple[str, Any]], table_id: str) -> str:
    """A two-column table of labels (with units) and values."""
    body = "".join(f"<tr><th>{html.escape(k)}</th>{html_cell(v)}</tr>" for k, v in rows)
    return f"<table id='{table_id}' class='pairs'><tbody>{body}</tbody></table>"


def html_links(links: list[tuple[str, str]]) -> str:
    """A list of links to files of the report directory: ``(relative path, what it is)``."""
    items = "".join(f"<li><a href='{html.escape(name)}'>{html.escape(name)}</a>: {html.escape(what)}</li>"
                    for name, what in links)
    return f"<ul id='files'>{items}</ul>"


def html_page(title: str, heading: str, verdict: str, body: list[str]) -> str:
    """A whole page: ``verdict`` (``PASSED``, ``FAILED``, ``REFUSED``...) is shown as a badge after ``heading``."""
    esc = html.escape
    badge = {"PASSED": "passed", "FAILED": "failed", "REFUSED": "failed"}.get(verdict, "neutral")
    return "\n".join([
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{esc(title)}: {esc(verdict)}</title><style>{PAGE_STYLE}</style></head><body>",
        f"<h1>{esc(heading)} <span class='verdict {badge}'>{esc(verdict)}</span></h1>",
        *body,
        "</body></html>",
    ])


def _optional(value: Any, fmt: str = "{}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _overview(record: RunRecord) -> list[tuple[str, Any]]:
    from hil.output import software_line

    error = record.dose_error_pct
    reached = record.duration_ms if record.reached_ms is None else record.reached_ms
    duration = f"{record.duration_ms / MS_PER_DAY:.2f} days"
    if reached != record.duration_ms:
        duration = f"{reached / MS_PER_DAY:.2f} of {duration}" + (" (interrupted)" if record.interrupted else "")
    return [
        ("Scenario", f"{record.scenario} ({record.source})"),
        ("Pump", f"{record.link}: {record.pump_url}" if record.pump_url else record.link),
        ("Simulated", simulation_text(record.simulation)),
        ("Started", fmt_utc(record.started_utc)),
        ("Virtual duration", duration),
        ("Wall time", f"{record.wall_s:.2f} s"),
        ("Dose delivered", f"{record.delivered_ug:.1f} µg"),
        ("Dose programmed", f"{record.prescribed_ug:.1f} µg"),
        ("Delivered against programmed", "n/a" if error is None else f"{error:+.2f} %"),
        ("Reached the patient (catheter tip, simulated physics)",
         "n/a (a real pump: only the controller's reconciliation is known)" if record.delivered_at_tip_ug is None
         else f"{record.delivered_at_tip_ug:.1f} µg"),
        ("Pump's dispensed counter", f"{record.pump_dispensed_ml:.4f} mL"),
        ("Software", software_line()),
    ]


def simulation_text(simulation: dict[str, Any] | None) -> str:
    """One plain sentence saying which devices were simulated, by what, with which settings."""
    if not simulation:
        return "nothing: real devices"
    parts = []
    for role in ("pump", "balance"):
        sim = simulation.get(role)
        if sim:
            settings = ", ".join(f"{k} {v}" for k, v in sim.get("settings", {}).items())
            parts.append(f"the {role} ({sim['simulator']} {sim['version']}; {settings})")
    return "SIMULATED: " + " and ".join(parts) if parts else "nothing: real devices"


def _reservoir_rows(reservoir: dict[str, Any]) -> list[tuple[str, Any]]:
    return [
        ("Remaining volume", _optional(reservoir.get("remaining_ml"), "{} mL")),
        ("Concentration", _optional(reservoir.get("concentration_ug_per_ml"), "{} µg/mL")),
        ("Low-reservoir alarm in", _optional(reservoir.get("days_to_low_alarm"), "{} days")),
        ("Low-reservoir alarm expected", fmt_utc(reservoir.get("low_alarm_utc"))),
        ("Refill due", fmt_utc(reservoir.get("refill_due_utc"))),
    ]


def _patient_rows(patient: dict[str, Any]) -> list[tuple[str, Any]]:
    def grade(value: Any) -> str:
        return "n/a" if value is None else human(str(value).lower())

    return [
        ("Modified Ashworth score at the end", _optional(patient.get("ashworth_final"), "{} (0 to 4)")),
        ("Effect-site concentration at the end", _optional(patient.get("effect_ng_per_ml_final"), "{} ng/mL")),
        ("Worst overdose grade", grade(patient.get("peak_overdose"))),
        ("Worst withdrawal grade", grade(patient.get("peak_withdrawal"))),
    ]


def _command_value(c: PumpCommand) -> str:
    if c.rate_nl_per_h is not None:
        return f"{c.rate_nl_per_h / 1000:.3f} µL/h"
    if c.volume_nl is not None:
        return f"{c.volume_nl / 1_000_000:.4f} mL"
    return ""


def html_checks(checks: list[Any], table_id: str) -> str:
    """A table of checks (anything with ``name``, ``passed`` and ``detail``), failures marked."""
    rows = [[html_cell(c.name[:1].upper() + c.name[1:]),
             html_cell("pass", "ok") if c.passed else html_cell("FAIL", "bad"), html_cell(c.detail)] for c in checks]
    return html_table(["Check", "Result", "Detail"], rows, table_id)


def _links(record: RunRecord, out: Path) -> list[tuple[str, str]]:
    """(file, what it is) for every file of the report directory a reader may want."""
    links = [(SUMMARY_FILE, "summary (JSON, itb.run/1)"), (TIMESERIES_FILE, "time series (CSV, one row per poll)")]
    traces = record.trace_files or ([record.trace_file] if record.trace_file else [])
    for i, name in enumerate(traces):
        session = f" (controller session {i + 1})" if len(traces) > 1 else ""
        links.append((name, f"serial trace of every byte to and from the pump{session}"))
    if (out / JOURNAL_FILE).is_file():
        links.append((JOURNAL_FILE, "controller journal (SQLite; check it with itb journal verify)"))
    if record.accuracy_report:
        links.append((record.accuracy_report, "gravimetric accuracy sub-report"))
    return links


PAGE_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;color:#1f2328}"
    "h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #d0d7de}"
    "table{border-collapse:collapse;margin:.6em 0;font-size:.88em}"
    "td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}"
    "th{background:#f6f8fa}.pairs th{width:16em}.num{text-align:right;font-variant-numeric:tabular-nums}"
    ".t{white-space:nowrap;font-variant-numeric:tabular-nums}"
    ".ok{color:#1a7f37}.bad{color:#cf222e;font-weight:bold}.warn{color:#9a6700;font-weight:bold}.none{color:#656d76}"
    ".verdict{padding:.1em .5em;border-radius:.3em;color:white;background:#656d76}"
    ".passed{background:#1a7f37}.failed{background:#cf222e}"
    ".plots img{display:block;width:100%;margin:0}.plots.narrow img{max-width:820px}"
    ".cols{display:flex;gap:2em;flex-wrap:wrap;align-items:flex-start}"
    "@media print{body{max-width:none}h2{break-after:avoid}table,img{break-inside:avoid}}"
)


def _html(record: RunRecord, out: Path) -> str:
    esc = html.escape
    body = [f"<p>{esc(record.description)}</p>"]
    if record.simulation:
        body.append(f"<p class='warn' id='simulated'>{esc(simulation_text(record.simulation))}. "
                    "These figures are not measurements of a real device.</p>")
    if record.error:
        body.append(f"<p class='bad' id='error'>Run aborted: {esc(record.error)}</p>")
    body += [f"<p class='warn' id='gap-{i}'>Controller down from {fmt_t(g['from_t_ms'])} to {fmt_t(g['to_t_ms'])} "
             f"({fmt_duration(g['to_t_ms'] - g['from_t_ms'])}); resumed from its journal; the pump counted "
             f"{g['delivered_nl'] / 1000:.1f} µL meanwhile.</p>" for i, g in enumerate(record.gaps)]
    body += [f"<p id='note-{i}'><i>{esc(note)}</i></p>" for i, note in enumerate(record.notes)]
    failed = [c for c in record.checks() if not c.passed]
    total = len(record.checks())
    body.append(f"<p id='checks-line'><b>Checks:</b> {total - len(failed)} passed, {len(failed)} failed.</p>")
    if failed:
        body.append("<h2>Failed checks</h2>" + html_checks(failed, "failed"))
    body.append("<div class='cols'><div>" + html_pairs(_overview(record), "overview") + "</div>")
    body.append("<div><b>Files</b>" + html_links(_links(record, out)) + "</div></div>")

    body.append("<h2>Timeline</h2><div class='plots'>")
    body += [f"<img src='{name}' alt='{esc(alt)}'>" for name, alt in PLOTS]
    body.append("</div>")

    alarm_rows = [
        [html_cell(human(p.code)), html_cell(p.priority.lower(), "bad" if p.priority == "HIGH" else ""),
         html_cell(fmt_t(p.raised_t_ms), "t"),
         html_cell("active at the end", "warn") if p.cleared_t_ms is None else html_cell(fmt_t(p.cleared_t_ms), "t"),
         html_cell("" if p.acknowledged_t_ms is None else fmt_t(p.acknowledged_t_ms), "t"),
         html_cell("n/a" if p.duration_ms is None else fmt_duration(p.duration_ms), "num t"), html_cell(p.detail)]
        for p in record.alarm_periods()
    ]
    body.append("<h2>Alarms</h2>" + html_table(
        ["Alarm", "Priority", "Raised", "Cleared", "Acknowledged", "Duration", "Why"], alarm_rows, "alarms"))

    command_rows = []
    for c in record.commands:
        word, cls = OUTCOMES.get(c.outcome, (c.outcome, "warn"))
        command_rows.append([html_cell(fmt_t(c.t_ms), "t"), html_cell(human(c.command)),
                             html_cell(_command_value(c), "num t"), html_cell(word, cls), html_cell(c.detail)])
    body.append("<h2>Pump commands</h2>" + html_table(["Time", "Command", "Value", "Outcome", "Detail"],
                                                      command_rows, "commands"))

    total_ug = sum(record.delivered_by_kind_ug.values())
    kinds = [
        [html_cell(KIND_LABELS.get(k, human(k))), html_cell(f"{v:.1f}", "num"),
         html_cell(f"{100 * v / total_ug:.1f}" if total_ug > 0 else "n/a", "num")]
        for k, v in sorted(record.delivered_by_kind_ug.items(), key=lambda kv: -kv[1])
    ]
    body.append("<div class='cols'><div><h2>Dose at the catheter tip</h2>"
                + html_table(["Delivered as", "Dose, µg", "Share, %"], kinds, "kinds") + "</div>")
    body.append("<div><h2>Reservoir at the end</h2>" + html_pairs(_reservoir_rows(record.reservoir), "reservoir")
                + "</div>")
    body.append("<div><h2>Patient model</h2>" + html_pairs(_patient_rows(record.patient), "patient") + "</div></div>")

    decision_rows = [
        [html_cell(fmt_t(d.t_ms), "t"), html_cell(human(d.action)), html_cell(d.label),
         html_cell("done", "ok") if d.allowed else html_cell("denied", "bad"), html_cell(", ".join(d.reasons)),
         html_cell(d.detail)]
        for d in record.decisions
    ]
    body.append("<h2>Clinical actions and decisions</h2>" + html_table(
        ["Time", "Action", "Label", "Result", "Reasons", "Detail"], decision_rows, "decisions"))

    bolus_rows = []
    for b in record.boluses:
        delivered = b.get("delivered_nl")
        share = "n/a" if delivered is None or not b["volume_nl"] else f"{100 * delivered / b['volume_nl']:.1f}"
        bolus_rows.append([
            html_cell(fmt_t(b["requested_t_ms"]), "t"), html_cell(KIND_LABELS.get(b["kind"], human(b["kind"]))),
            html_cell(f"{b['dose_ng'] / 1000:g}", "num"), html_cell(f"{b['volume_nl'] / 1000:.1f}", "num"),
            html_cell("n/a" if delivered is None else f"{delivered / 1000:.1f}", "num"), html_cell(share, "num"),
            html_cell(human(b["status"])), html_cell(b["detail"])])
    body.append("<h2>Boluses</h2>" + html_table(
        ["Requested", "Kind", "Dose, µg", "Volume, µL", "Delivered, µL", "Delivered, %", "Status", "Detail"],
        bolus_rows, "boluses"))

    body.append("<h2>Safety invariants</h2>" + html_checks(record.invariants, "invariants"))
    body.append("<h2>Implicit checks</h2>" + html_checks(record.implicit_checks, "implicit"))
    body.append("<h2>Expectations</h2>" + html_checks(record.expectations, "expectations"))
    verdict = "PASSED" if record.passed else "FAILED"
    return html_page(f"itb run: {record.scenario}", f"itb run: {record.scenario}", verdict, body)


def write_report(record: RunRecord, directory: str | Path) -> Path:
    """Write ``summary.json``, ``timeseries.csv``, the PNG plots and ``report.html`` into ``directory``.

    :param record: the finished run.
    :param directory: created if missing; existing report files are overwritten.
    :return: the path of ``report.html``.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    write_summary(out, record.summary())
    write_timeseries(record, out / TIMESERIES_FILE)
    _plots(record, out)
    page = out / REPORT_FILE
    page.write_text(_html(record, out), encoding="utf-8")
    return page
