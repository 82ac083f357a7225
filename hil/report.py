"""Run reports: ``summary.json``, PNG plots and ``report.html`` in one directory.

The scenario runner fills a :class:`RunRecord` as it goes; :func:`write_report`
turns it into files. Plots use matplotlib's Agg backend (no display needed).
The summary is plain JSON with units in every key, so CI can read it without
this package.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000

#: Files every report directory holds (the serial trace is added when one was recorded).
REPORT_FILES = ("report.html", "summary.json", "rate.png", "dose24.png", "reservoir.png", "alarms.png", "patient.png")


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
    """

    t_ms: int
    event: str
    code: str
    priority: str
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
class CheckResult:
    """One expectation or invariant, evaluated."""

    name: str
    passed: bool
    detail: str = ""


@dataclass
class RunRecord:
    """Everything a report shows about one run."""

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
    expectations: list[CheckResult] = field(default_factory=list)
    invariants: list[CheckResult] = field(default_factory=list)
    delivered_ug: float = 0.0
    prescribed_ug: float = 0.0
    delivered_by_kind_ug: dict[str, float] = field(default_factory=dict)
    pump_dispensed_ml: float = 0.0
    patient: dict[str, Any] = field(default_factory=dict)
    reservoir: dict[str, Any] = field(default_factory=dict)
    boluses: list[dict[str, Any]] = field(default_factory=list)
    trace_file: str = ""
    error: str = ""

    @property
    def passed(self) -> bool:
        """True if every expectation and invariant held and the run did not abort."""
        return not self.error and all(c.passed for c in (*self.expectations, *self.invariants))

    @property
    def dose_error_pct(self) -> float | None:
        """Delivered versus prescribed, %, or None when nothing was prescribed."""
        if self.prescribed_ug <= 0:
            return None
        return 100.0 * (self.delivered_ug - self.prescribed_ug) / self.prescribed_ug

    def summary(self) -> dict[str, Any]:
        """The JSON-ready summary (what ``summary.json`` holds)."""
        raised = sorted({a.code for a in self.alarms if a.event == "raise"})
        denials = [asdict(d) for d in self.decisions if not d.allowed]
        for d in denials:
            d["reasons"] = list(d["reasons"])
        return {
            "scenario": self.scenario,
            "source": self.source,
            "passed": self.passed,
            "error": self.error,
            "link": self.link,
            "pump_url": self.pump_url,
            "started_utc": self.started_utc,
            "duration_days": self.duration_ms / MS_PER_DAY,
            "wall_s": round(self.wall_s, 3),
            "virtual_to_wall_ratio": round(self.duration_ms / 1000 / self.wall_s, 1) if self.wall_s > 0 else None,
            "delivered_ug": round(self.delivered_ug, 3),
            "prescribed_ug": round(self.prescribed_ug, 3),
            "dose_error_pct": None if self.dose_error_pct is None else round(self.dose_error_pct, 3),
            "delivered_by_kind_ug": {k: round(v, 3) for k, v in sorted(self.delivered_by_kind_ug.items())},
            "pump_dispensed_ml": round(self.pump_dispensed_ml, 6),
            "alarms_raised": raised,
            "alarm_events": len(self.alarms),
            "decisions": len(self.decisions),
            "denials": denials,
            "expectations": [asdict(c) for c in self.expectations],
            "invariants": [asdict(c) for c in self.invariants],
            "patient": self.patient,
            "reservoir_at_end": self.reservoir,
            "boluses": self.boluses,
            "samples": len(self.samples),
            "trace_file": self.trace_file,
        }


def _plots(record: RunRecord, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    days = [s.t_ms / MS_PER_DAY for s in record.samples]

    def figure(name: str, title: str, ylabel: str, series: list[tuple[str, list[float], str]]) -> None:
        fig, ax = plt.subplots(figsize=(9, 3.2), dpi=90)
        for label, values, style in series:
            ax.step(days, values, style, where="post", label=label, linewidth=1.2)
        ax.set_title(title)
        ax.set_xlabel("time, days")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        if len(series) > 1:
            ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name)
        plt.close(fig)

    figure("rate.png", "Pump rate", "rate, µL/h", [("rate", [s.rate_nl_per_h / 1000 for s in record.samples], "-")])
    figure(
        "dose24.png",
        "Rolling 24 h dose against the cap",
        "dose, µg per 24 h",
        [
            ("delivered + committed, rolling 24 h", [s.dose_24h_ug for s in record.samples], "-"),
            ("cap", [s.cap_ug_per_day for s in record.samples], "r--"),
        ],
    )
    figure("reservoir.png", "Predicted reservoir volume", "volume, mL",
           [("reservoir", [s.reservoir_ml for s in record.samples], "-")])
    figure("patient.png", "Patient: Modified Ashworth score", "MAS (0-4)",
           [("Ashworth", [s.ashworth for s in record.samples], "-")])

    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=90)
    codes = sorted({a.code for a in record.alarms})
    colours = {"HIGH": "red", "MEDIUM": "orange", "LOW": "steelblue"}
    for a in record.alarms:
        if a.event != "raise":
            continue
        ax.scatter([a.t_ms / MS_PER_DAY], [codes.index(a.code)], color=colours.get(a.priority, "grey"), s=18)
    ax.set_yticks(range(len(codes)))
    ax.set_yticklabels(codes, fontsize=7)
    ax.set_title("Alarms raised (red high, orange medium, blue low)")
    ax.set_xlabel("time, days")
    if days:
        ax.set_xlim(0, max(days[-1], record.duration_ms / MS_PER_DAY))
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "alarms.png")
    plt.close(fig)


def _fmt_t(t_ms: int) -> str:
    day, rest = divmod(t_ms, MS_PER_DAY)
    hours, rest = divmod(rest, MS_PER_H)
    return f"{day}d {hours:02d}:{rest // 60000:02d}"


def _html(record: RunRecord) -> str:
    esc = html.escape
    verdict = "PASSED" if record.passed else "FAILED"
    colour = "#1a7f37" if record.passed else "#cf222e"
    s = record.summary()
    rows = [
        ("Scenario", f"{esc(record.scenario)} ({esc(record.source)})"),
        ("Pump", f"{esc(record.link)} {esc(record.pump_url)}"),
        ("Virtual duration", f"{record.duration_ms / MS_PER_DAY:.2f} days"),
        ("Wall time", f"{record.wall_s:.2f} s"),
        ("Delivered", f"{record.delivered_ug:.1f} µg"),
        ("Prescribed", f"{record.prescribed_ug:.1f} µg"),
        ("Dose error", "n/a" if s["dose_error_pct"] is None else f"{s['dose_error_pct']:+.2f} %"),
        ("Pump dispensed", f"{record.pump_dispensed_ml:.4f} mL"),
    ]
    for key, value in record.reservoir.items():
        rows.append((f"Reservoir at end: {esc(key)}", esc(str(value))))
    for key, value in record.patient.items():
        rows.append((f"Patient: {esc(key)}", esc(str(value))))
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>itb run: {esc(record.scenario)}</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1000px}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:90%}"
        "th{background:#f3f3f3}.ok{color:#1a7f37}.bad{color:#cf222e;font-weight:bold}</style></head><body>",
        f"<h1>itb run: {esc(record.scenario)} <span style='color:{colour}'>{verdict}</span></h1>",
        f"<p>{esc(record.description)}</p>",
    ]
    if record.error:
        parts.append(f"<p class='bad'>Run aborted: {esc(record.error)}</p>")
    parts.append("<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>")
    if record.delivered_by_kind_ug:
        parts.append("<h2>Delivered by kind</h2><table><tr><th>kind</th><th>µg</th></tr>")
        parts += [f"<tr><td>{esc(k)}</td><td>{v:.2f}</td></tr>" for k, v in sorted(record.delivered_by_kind_ug.items())]
        parts.append("</table>")
    for title, checks in (("Expectations", record.expectations), ("Safety invariants", record.invariants)):
        parts.append(f"<h2>{title}</h2><table><tr><th>check</th><th>result</th><th>detail</th></tr>")
        for c in checks:
            cls, word = ("ok", "pass") if c.passed else ("bad", "FAIL")
            parts.append(f"<tr><td>{esc(c.name)}</td><td class='{cls}'>{word}</td><td>{esc(c.detail)}</td></tr>")
        parts.append("</table>")
    parts.append("<h2>Plots</h2>")
    for name in ("rate.png", "dose24.png", "reservoir.png", "alarms.png", "patient.png"):
        parts.append(f"<p><img src='{name}' alt='{name}' style='max-width:100%'></p>")
    parts.append("<h2>Decisions</h2><table><tr><th>time</th><th>action</th><th>label</th>"
                 "<th>result</th><th>reasons</th><th>detail</th></tr>")
    for d in record.decisions:
        cls, word = ("ok", "done") if d.allowed else ("bad", "denied")
        parts.append(
            f"<tr><td>{_fmt_t(d.t_ms)}</td><td>{esc(d.action)}</td><td>{esc(d.label)}</td>"
            f"<td class='{cls}'>{word}</td><td>{esc(', '.join(d.reasons))}</td><td>{esc(d.detail)}</td></tr>"
        )
    parts.append("</table><h2>Boluses</h2><table><tr><th>requested</th><th>kind</th><th>dose, µg</th>"
                 "<th>volume, nL</th><th>delivered, nL</th><th>status</th><th>detail</th></tr>")
    for b in record.boluses:
        parts.append(
            f"<tr><td>{_fmt_t(b['requested_t_ms'])}</td><td>{esc(b['kind'])}</td><td>{b['dose_ng'] / 1000:g}</td>"
            f"<td>{b['volume_nl']}</td><td>{b['delivered_nl']}</td><td>{esc(b['status'])}</td>"
            f"<td>{esc(b['detail'])}</td></tr>"
        )
    parts.append("</table><h2>Alarm events</h2><table><tr><th>time</th><th>event</th><th>code</th>"
                 "<th>priority</th><th>detail</th></tr>")
    for a in record.alarms:
        parts.append(
            f"<tr><td>{_fmt_t(a.t_ms)}</td><td>{esc(a.event)}</td><td>{esc(a.code)}</td>"
            f"<td>{esc(a.priority)}</td><td>{esc(a.detail)}</td></tr>"
        )
    parts.append("</table>")
    if record.trace_file:
        parts.append(f"<p>Serial trace: <a href='{esc(record.trace_file)}'>{esc(record.trace_file)}</a></p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(record: RunRecord, directory: str | Path) -> Path:
    """Write ``summary.json``, the PNG plots and ``report.html`` into ``directory``.

    :param record: the finished run.
    :param directory: created if missing; existing report files are overwritten.
    :return: the path of ``report.html``.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(record.summary(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _plots(record, out)
    page = out / "report.html"
    page.write_text(_html(record), encoding="utf-8")
    return page
