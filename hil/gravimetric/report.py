"""The accuracy report directory: ``report.html`` with PNG plots, ``summary.json``, ``samples.csv``.

The serial traces (``pump_trace.txt``, ``balance_trace.txt``) are written
into the same directory by the links while the run is in progress. A refused
run still gets its CSV, traces and a summary naming the reason, and no plots
or numbers that the data cannot support.
"""

from __future__ import annotations

import csv
import html
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hil.gravimetric.analysis import AccuracyAnalysis, InsufficientDataError
from hil.gravimetric.procedure import Measurement, config_summary

SUMMARY_FILE = "summary.json"
SAMPLES_FILE = "samples.csv"
REPORT_FILE = "report.html"
STARTUP_PNG = "startup.png"
TRUMPET_PNG = "trumpet.png"
CSV_COLUMNS = (
    "index",
    "scheduled_s",
    "received_s",
    "utc",
    "mass_ug",
    "stable",
    "resolution_ug",
    "pump_state",
    "note",
)


def summary(
    measurement: Measurement, analysis: AccuracyAnalysis | None, refusal: InsufficientDataError | None = None
) -> dict[str, Any]:
    """The ``summary.json`` content."""
    data: dict[str, Any] = {
        "result": "refused" if refusal is not None else "reported",
        "config": config_summary(measurement.config),
        "pump": asdict(measurement.pump_identity),
        "balance": asdict(measurement.balance_identity),
        "started_utc": measurement.started_utc,
        "tare_ug": measurement.tare_ug,
        "checks": [asdict(check) for check in measurement.checks],
        "samples_taken": len(measurement.samples),
        "pump_dispensed_nl": None if measurement.dispensed is None else measurement.dispensed.infused_nl,
        "stopped_early": measurement.stopped_early,
    }
    present = [sample.mass_ug for sample in measurement.samples if sample.mass_ug is not None]
    if measurement.config.tare and present and measurement.dispensed is not None:
        # Tared before the start: the last reading is everything delivered since (to within one interval).
        balance_nl = round(present[-1] / measurement.config.density_g_per_ml)
        data["balance_volume_nl"] = balance_nl
        if balance_nl > 0:
            data["pump_counter_vs_balance_pct"] = 100.0 * (measurement.dispensed.infused_nl - balance_nl) / balance_nl
    if refusal is not None:
        data["refusal"] = {"reason": refusal.reason.value, "code": refusal.error_code, "detail": refusal.detail}
    if analysis is not None:
        data["analysis"] = analysis.to_dict()
    return data


def write_samples_csv(path: Path, measurement: Measurement) -> None:
    """Write the raw, timestamped weights (one row per slot)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for s in measurement.samples:
            writer.writerow(
                (
                    s.index,
                    f"{s.scheduled_ms / 1000:.3f}",
                    "" if s.received_ms is None else f"{s.received_ms / 1000:.3f}",
                    s.utc,
                    "" if s.mass_ug is None else s.mass_ug,
                    int(s.stable),
                    s.resolution_ug,
                    s.pump_state,
                    s.note,
                )
            )


def _plots(out_dir: Path, analysis: AccuracyAnalysis) -> None:
    # The Agg canvas is attached explicitly: no global backend switch, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rate = analysis.settings.rate_ml_per_h
    figure = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    times_min = [f.elapsed_s / 60 for f in analysis.flows if f.flow_ml_per_h is not None]
    flows = [f.flow_ml_per_h for f in analysis.flows if f.flow_ml_per_h is not None]
    axes.plot(times_min, flows, drawstyle="steps-pre", linewidth=0.8, label="flow Q_i")
    axes.axhline(rate, color="black", linestyle="--", linewidth=0.8, label="set rate r")
    axes.axvline(analysis.analysis_start_s / 60, color="grey", linestyle=":", linewidth=0.8, label="analysis period")
    axes.set_xlabel("time (min)")
    axes.set_ylabel("flow (mL/h)")
    axes.set_title("Start-up graph")
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    figure.savefig(out_dir / STARTUP_PNG)

    figure = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    windows = [t.window_min for t in analysis.trumpet]
    axes.plot(windows, [t.max_error_pct for t in analysis.trumpet], marker="o", label="Ep(max)")
    axes.plot(windows, [t.min_error_pct for t in analysis.trumpet], marker="o", label="Ep(min)")
    axes.axhline(analysis.mean_error_pct, color="black", linestyle="--", linewidth=0.8, label="mean error A")
    axes.axhline(0.0, color="grey", linewidth=0.5)
    axes.set_xlabel("observation window (min)")
    axes.set_ylabel("error (%)")
    axes.set_title("Trumpet curve")
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    figure.savefig(out_dir / TRUMPET_PNG)


def _html(data: dict[str, Any], with_plots: bool) -> str:
    esc = html.escape
    config = data["config"]
    rows = [
        f"<p><b>Result:</b> {esc(data['result'])}</p>",
        f"<p>Set rate {config['rate_nl_per_h']} nL/h, syringe {config['syringe_diameter_mm']} mm, "
        f"S = {config['interval_s']} s, T = {config['duration_s']} s, water {config['water_temperature_c']} °C "
        f"(d = {config['density_g_per_ml']:.6f} g/mL). Started {esc(data['started_utc'])}.</p>",
        f"<p>Pump {esc(data['pump']['model'])} {esc(data['pump']['firmware'])}; balance "
        f"{esc(data['balance']['model'])} s/n {esc(data['balance']['serial_number'])}.</p>",
        f"<p>Pump's own dispensed counter: {data['pump_dispensed_nl']} nL; weighed: "
        f"{data.get('balance_volume_nl', 'n/a')} nL.</p>",
        "<h2>Set-up checks</h2><ul>",
        *(f"<li>{esc(c['name'])}: {esc(c['detail'])}</li>" for c in data["checks"]),
        "</ul>",
    ]
    if "refusal" in data:
        refusal = data["refusal"]
        rows.append(f"<h2>Refused: {esc(refusal['reason'])}</h2><p>{esc(refusal['detail'])}</p>")
    if "analysis" in data:
        analysis = data["analysis"]
        rows.append(
            f"<h2>Overall mean error A = {analysis['mean_error_pct']:+.3f} %</h2>"
            f"<p>Mean flow {analysis['mean_flow_ml_per_h']:.6f} mL/h over the period from "
            f"{analysis['analysis_start_s']} s ({analysis['analysis_flows']} intervals); samples "
            f"{analysis['samples']}, missing {analysis['missing_samples']}, unstable {analysis['unstable_samples']}.</p>"
        )
        rows.append(
            "<table border='1' cellpadding='4'><tr><th>P (min)</th><th>p</th><th>m</th><th>used</th>"
            "<th>Ep(max) %</th><th>Ep(min) %</th></tr>"
        )
        for point in analysis["trumpet"]:
            rows.append(
                f"<tr><td>{point['window_min']}</td><td>{point['p']}</td><td>{point['m']}</td>"
                f"<td>{point['windows_used']}</td><td>{point['max_error_pct']:+.3f}</td>"
                f"<td>{point['min_error_pct']:+.3f}</td></tr>"
            )
        rows.append("</table>")
        rows.extend(f"<p><i>{esc(note)}</i></p>" for note in analysis["notes"])
    if with_plots:
        rows.append(f"<h2>Start-up graph</h2><img src='{STARTUP_PNG}' alt='start-up graph'>")
        rows.append(f"<h2>Trumpet curve</h2><img src='{TRUMPET_PNG}' alt='trumpet curve'>")
    rows.append(
        f"<p>Raw weights: <a href='{SAMPLES_FILE}'>{SAMPLES_FILE}</a>; summary: "
        f"<a href='{SUMMARY_FILE}'>{SUMMARY_FILE}</a>; serial traces: pump_trace.txt, balance_trace.txt.</p>"
    )
    body = "\n".join(rows)
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>Gravimetric accuracy report</title></head>\n"
        f"<body><h1>Gravimetric accuracy (IEC 60601-2-24 method)</h1>\n{body}\n</body></html>\n"
    )


def write_report(
    out_dir: Path,
    measurement: Measurement,
    analysis: AccuracyAnalysis | None,
    *,
    refusal: InsufficientDataError | None = None,
) -> dict[str, Any]:
    """Write the report files into ``out_dir`` (created if needed).

    :param out_dir: the report directory.
    :param measurement: the recorded run.
    :param analysis: the analysis, or None for a refused run.
    :param refusal: why the run was refused, if it was.
    :return: the summary written to ``summary.json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    data = summary(measurement, analysis, refusal)
    write_samples_csv(out_dir / SAMPLES_FILE, measurement)
    (out_dir / SUMMARY_FILE).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if analysis is not None:
        _plots(out_dir, analysis)
    (out_dir / REPORT_FILE).write_text(_html(data, analysis is not None), encoding="utf-8")
    return data
