"""The accuracy report directory: ``report.html`` with PNG plots, ``summary.json``, ``samples.csv``.

``summary.json`` is an ``itb.accuracy/1`` document (the envelope of
:mod:`hil.output`, then ``result`` ("reported" or "refused"), ``limit_pct``,
``config``, ``pump``, ``balance``, ``started_utc``, ``tare_ug``, ``checks``,
``samples_taken``, ``pump_dispensed_nl``, ``stopped_early``, ``incomplete`` (the
operator stopped sampling early: the report is from what was measured), ``simulation``
(null when the pump and balance were real; else each simulated device's ``simulator``,
``version`` and ``settings``), and where the data allow ``balance_volume_nl``,
``pump_counter_vs_balance_pct``, ``analysis``; a refused run has ``refusal``).
``samples.csv`` is written row by row while the run is in progress (see
:mod:`hil.gravimetric.procedure`), and rewritten whole with the report. The plots are PNGs at print resolution; given a
limit, the trumpet curve shows it as a band.

The serial traces (``pump_trace.txt``, ``balance_trace.txt``) are written
into the same directory by the links while the run is in progress. A refused
run still gets its CSV, traces and a summary naming the reason, and no plots
or numbers that the data cannot support.
"""

from __future__ import annotations

import contextlib
import csv
import html
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hil.gravimetric.analysis import AccuracyAnalysis, InsufficientDataError
from hil.gravimetric.procedure import Measurement, RawSample, config_summary
from hil.output import REPORT_FILE, SUMMARY_FILE, write_summary

SAMPLES_FILE = "samples.csv"
STARTUP_PNG = "startup.png"
TRUMPET_PNG = "trumpet.png"
#: The serial traces the links write beside the report, with what each is.
TRACE_FILES = (("pump_trace.txt", "serial trace of the pump"), ("balance_trace.txt", "serial trace of the balance"))
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
    measurement: Measurement,
    analysis: AccuracyAnalysis | None,
    refusal: InsufficientDataError | None = None,
    *,
    limit_pct: float | None = None,
    simulation: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``summary.json`` content (kind ``itb.accuracy/1``, the envelope of :mod:`hil.output`).

    ``passed`` is true when a result was reported and, given a limit, the overall
    mean error A lies within it; ``error`` holds the refusal of a refused run.

    :param limit_pct: the pass limit on |A|, %, or None for no verdict beyond "reported".
    :param simulation: what was simulated (see the module docstring), or None for real devices.
    """
    from hil.cli import ExitStatus
    from hil.output import document, error_dict

    passed = refusal is None and analysis is not None and not measurement.interrupted
    if passed and limit_pct is not None:
        passed = abs(analysis.mean_error_pct) <= limit_pct
    data = document(
        "itb.accuracy/1",
        passed=passed,
        error=None if refusal is None else error_dict(refusal, ExitStatus.REFUSED_DATA),
        result="refused" if refusal is not None else "reported",
        limit_pct=limit_pct,
        config=config_summary(measurement.config),
        held_rate_nl_per_h=measurement.held_rate_nl_per_h,
        pump=asdict(measurement.pump_identity),
        balance=asdict(measurement.balance_identity),
        started_utc=measurement.started_utc,
        tare_ug=measurement.tare_ug,
        checks=[asdict(check) for check in measurement.checks],
        samples_taken=len(measurement.samples),
        pump_dispensed_nl=None if measurement.dispensed is None else measurement.dispensed.infused_nl,
        stopped_early=measurement.stopped_early,
        incomplete=measurement.interrupted,
        simulation=simulation,
    )
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


def csv_row(s: RawSample) -> tuple[Any, ...]:
    """One sample as its ``samples.csv`` row (the columns of :data:`CSV_COLUMNS`)."""
    return (
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


def write_samples_csv(path: Path, measurement: Measurement) -> None:
    """Write the raw, timestamped weights (one row per slot)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        writer.writerows(csv_row(s) for s in measurement.samples)


@contextlib.contextmanager
def _figure(path: Path, title: str, x_label: str, y_label: str, legend_loc: str) -> Iterator[Any]:
    """A print-resolution 8 x 3.6 in figure whose axes the body draws on; labelled, gridded and saved to ``path``."""
    # The Agg canvas is attached explicitly: no global backend switch, no display needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from hil.report import PRINT_DPI

    figure = Figure(figsize=(8, 3.6), dpi=PRINT_DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    yield axes
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(title, loc="left")
    axes.grid(True, alpha=0.3)
    axes.legend(loc=legend_loc, fontsize="small")
    figure.tight_layout()
    figure.savefig(path)


def _plots(out_dir: Path, analysis: AccuracyAnalysis, limit_pct: float | None) -> None:
    rate = analysis.settings.rate_ml_per_h
    with _figure(out_dir / STARTUP_PNG, "Start-up graph", "time since the start of sampling, min", "flow, mL/h",
                 "lower right") as axes:
        times_min = [f.elapsed_s / 60 for f in analysis.flows if f.flow_ml_per_h is not None]
        flows = [f.flow_ml_per_h for f in analysis.flows if f.flow_ml_per_h is not None]
        axes.plot(times_min, flows, drawstyle="steps-pre", linewidth=0.8, label="flow Q_i")
        axes.axhline(rate, color="black", linestyle="--", linewidth=0.8, label=f"set rate r = {rate:g} mL/h")
        axes.axvspan(analysis.analysis_start_s / 60, max(times_min, default=0), color="#d0d7de", alpha=0.35,
                     label="analysis period")
    with _figure(out_dir / TRUMPET_PNG, "Trumpet curve", "observation window P, min", "error, %", "best") as axes:
        windows = [t.window_min for t in analysis.trumpet]
        if limit_pct is not None:
            axes.axhspan(-limit_pct, limit_pct, color="#1a7f37", alpha=0.12, label=f"limit on A: ±{limit_pct:g} %")
            for edge in (-limit_pct, limit_pct):
                axes.axhline(edge, color="#1a7f37", linewidth=0.8)
        axes.plot(windows, [t.max_error_pct for t in analysis.trumpet], marker="o", label="Ep(max)")
        axes.plot(windows, [t.min_error_pct for t in analysis.trumpet], marker="o", label="Ep(min)")
        axes.axhline(analysis.mean_error_pct, color="black", linestyle="--", linewidth=0.8,
                     label=f"mean error A = {analysis.mean_error_pct:+.2f} %")
        axes.axhline(0.0, color="grey", linewidth=0.5)
        axes.set_xticks(windows)


def _ml(nl: Any) -> str:
    return "n/a" if nl is None else f"{nl / 1_000_000:.6f} mL"


def _image(name: str, alt: str) -> str:
    return f"<div class='plots narrow'><img src='{name}' alt='{alt}'></div>"


def _verdict(data: dict[str, Any]) -> str:
    if data["incomplete"]:
        return "INCOMPLETE"
    if data["result"] == "refused":
        return "REFUSED"
    if data["limit_pct"] is None:
        return "REPORTED"
    return "PASSED" if data["passed"] else "FAILED"


def _html(data: dict[str, Any], checks: list[Any], with_plots: bool, out_dir: Path) -> str:
    from hil.output import software_line
    from hil.report import fmt_utc, html_cell, html_checks, html_links, html_page, html_pairs, html_table

    esc = html.escape
    config = data["config"]
    pump, balance = data["pump"], data["balance"]
    body: list[str] = []
    if data["simulation"]:
        from hil.report import simulation_text

        body.append(f"<p class='warn' id='simulated'>{esc(simulation_text(data['simulation']))}. "
                    "These figures are not measurements of a real device.</p>")
    if data["incomplete"]:
        body.append(f"<p class='bad' id='incomplete'>INCOMPLETE: {esc(data['stopped_early'])}; "
                    f"{data['samples_taken']} of {config['duration_s'] // config['interval_s'] + 1} samples. "
                    "The figures below are from what was measured.</p>")
    if "refusal" in data:
        refusal = data["refusal"]
        body.append(f"<p class='bad' id='refusal'>No result: {esc(refusal['reason'].replace('_', ' '))}. "
                    f"{esc(refusal['detail'])}</p>")
    rows: list[tuple[str, Any]] = []
    if "analysis" in data:
        analysis = data["analysis"]
        rows += [
            ("Overall mean error A", f"{analysis['mean_error_pct']:+.3f} %"),
            ("Limit on |A|", "none given" if data["limit_pct"] is None else f"{data['limit_pct']:g} %"),
            ("Mean flow over the analysis period", f"{analysis['mean_flow_ml_per_h']:.6f} mL/h"),
            ("Analysis period",
             f"from {analysis['analysis_start_s'] / 60:g} min, {analysis['analysis_flows']} intervals"),
            ("Samples (missing, unstable)",
             f"{analysis['samples']} ({analysis['missing_samples']}, {analysis['unstable_samples']})"),
        ]
    rows += [
        ("Set rate r", f"{config['rate_nl_per_h'] / 1_000_000:g} mL/h"),
        ("Syringe inner diameter", f"{config['syringe_diameter_mm']} mm"),
        ("Sampling interval S", f"{config['interval_s']} s"),
        ("Sampling duration T", f"{config['duration_s'] / 60:g} min"),
        ("Delivery before sampling", f"{config['stabilisation_s'] / 60:g} min"),
        ("Water", f"{config['water_temperature_c']} °C, density {config['density_g_per_ml']:.6f} g/mL"),
        ("Started", fmt_utc(data["started_utc"])),
        ("Pump", f"{pump['model']} firmware {pump['firmware']}"),
        ("Balance", f"{balance['model']} s/n {balance['serial_number']}"),
        ("Pump's dispensed counter", _ml(data["pump_dispensed_nl"])),
        ("Weighed volume", _ml(data.get("balance_volume_nl"))),
    ]
    if "pump_counter_vs_balance_pct" in data:
        rows.append(("Pump counter against the balance", f"{data['pump_counter_vs_balance_pct']:+.3f} %"))
    rows.append(("Software", software_line()))
    body.append("<div class='cols'><div>" + html_pairs(rows, "overview") + "</div>")
    links = [(SAMPLES_FILE, "raw weights (CSV, one row per sample)"), (SUMMARY_FILE, "summary (JSON, itb.accuracy/1)")]
    links += [(name, what) for name, what in TRACE_FILES if (out_dir / name).is_file()]
    body.append("<div><b>Files</b>" + html_links(links) + "</div></div>")
    if with_plots:
        body.append(f"<h2>Trumpet curve</h2>{_image(TRUMPET_PNG, 'trumpet curve')}")
        trumpet = [
            [html_cell(point["window_min"], "num"), html_cell(point["p"], "num"), html_cell(point["m"], "num"),
             html_cell(point["windows_used"], "num"), html_cell(f"{point['max_error_pct']:+.3f}", "num"),
             html_cell(f"{point['min_error_pct']:+.3f}", "num")]
            for point in data["analysis"]["trumpet"]
        ]
        body.append(html_table(["Window P, min", "Flows per window p", "Windows m", "Windows used",
                                "Ep(max), %", "Ep(min), %"], trumpet, "trumpet"))
        body.extend(f"<p><i>{esc(note)}</i></p>" for note in data["analysis"]["notes"])
        body.append(f"<h2>Start-up graph</h2>{_image(STARTUP_PNG, 'start-up graph')}")
    body.append("<h2>Set-up checks</h2>" + html_checks(checks, "checks"))
    title = "Gravimetric accuracy"
    return html_page(title, f"{title} (IEC 60601-2-24 method)", _verdict(data), body)


def write_report(out_dir: Path, measurement: Measurement, analysis: AccuracyAnalysis | None,
                 data: dict[str, Any]) -> dict[str, Any]:
    """Write the report files of one run into ``out_dir`` (created if needed).

    :param out_dir: the report directory.
    :param measurement: the recorded run.
    :param analysis: the analysis, or None for a refused run.
    :param data: the run's :func:`summary` (its ``limit_pct`` also draws the band on the trumpet curve).
    :return: ``data``, as written to ``summary.json``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    write_samples_csv(out_dir / SAMPLES_FILE, measurement)
    write_summary(out_dir, data)
    if analysis is not None:
        _plots(out_dir, analysis, data["limit_pct"])
    page = _html(data, list(measurement.checks), analysis is not None, out_dir)
    (out_dir / REPORT_FILE).write_text(page, encoding="utf-8")
    return data
