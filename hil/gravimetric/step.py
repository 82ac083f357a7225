"""An accuracy step inside a scenario file.

A scenario may carry one ``[accuracy]`` table. The runner then measures the
pump's delivery accuracy gravimetrically (the IEC 60601-2-24 method of
:mod:`hil.gravimetric`) and checks the overall mean error against a limit::

    [accuracy]
    rate = "1.2mL/h"                 # set rate, with its unit
    syringe = "14.5mm"               # preset name or inner diameter
    duration = "120min"              # sampling duration (default 120min)
    interval = "30s"                 # sampling interval (default 30s)
    max_abs_mean_error_pct = 5.0     # the check: |mean error A| <= this, %
    balance = "mtsics"               # simulated balance kind: "mtsics" or "sbi"
    bias_pct = 0.0                   # simulated rig only: injected pump bias, %
    seed = 0                         # simulated rig only: noise seed

On a simulated rig the step runs on its own simulated pump and balance, in
virtual time. Against real devices it needs the bench's pump and balance URLs.
A run whose data cannot support a result (:class:`InsufficientDataError`) fails
the step with the refusal's reason: a refusal is never a number.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cython_ext import fields
from cython_ext.errors import ConfigError
from hil.gravimetric.analysis import InsufficientDataError
from hil.gravimetric.profile import parse_duration_s, parse_rate_nl_per_h, parse_syringe_mm

BALANCE_KINDS = ("mtsics", "sbi")


@dataclass(frozen=True)
class AccuracyStep:
    """One accuracy measurement and its pass limit.

    :ivar rate_nl_per_h: set rate, nL/h.
    :ivar syringe_diameter_mm: syringe inner diameter, mm.
    :ivar duration_s: sampling duration, s.
    :ivar interval_s: sampling interval, s.
    :ivar max_abs_mean_error_pct: the step passes when |mean error A| <= this, %.
    :ivar balance_kind: simulated balance protocol (``"mtsics"`` or ``"sbi"``).
    :ivar bias_pct: pump bias injected on a simulated rig, %.
    :ivar seed: noise seed of a simulated rig.
    """

    rate_nl_per_h: int
    syringe_diameter_mm: float
    duration_s: int = 7200
    interval_s: int = 30
    max_abs_mean_error_pct: float = 5.0
    balance_kind: str = "mtsics"
    bias_pct: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class AccuracyStepOutcome:
    """What an accuracy step found.

    :ivar passed: the mean error was measured and lies within the limit.
    :ivar mean_error_pct: the overall mean error A, %, or None when the run was refused.
    :ivar detail: one line for the summary table.
    :ivar report_dir: where the accuracy report (HTML, PNGs, CSV, traces) was written.
    """

    passed: bool
    mean_error_pct: float | None
    detail: str
    report_dir: Path


def read_accuracy_step(t: fields.Table) -> Any:
    """Read an ``[accuracy]`` table through the field kit, recording every problem in its document.

    :param t: the table (of a scenario file, say).
    :return: the step, or :data:`~cython_ext.fields.INVALID` (the problems are recorded).
    """
    defaults = AccuracyStep(rate_nl_per_h=0, syringe_diameter_mm=0.0)
    step = t.doc.run(
        AccuracyStep,
        rate_nl_per_h=t.get("rate", lambda v, f: parse_rate_nl_per_h(v, field_name=f)),
        syringe_diameter_mm=t.get("syringe", lambda v, f: parse_syringe_mm(v, field_name=f)),
        duration_s=t.get("duration", lambda v, f: parse_duration_s(v, field_name=f), default=defaults.duration_s),
        interval_s=t.get("interval", lambda v, f: parse_duration_s(v, field_name=f), default=defaults.interval_s),
        max_abs_mean_error_pct=t.get("max_abs_mean_error_pct", _percent, 0, 100, low_open=True,
                                     default=defaults.max_abs_mean_error_pct),
        balance_kind=t.get("balance", fields.choice, BALANCE_KINDS, default=defaults.balance_kind),
        bias_pct=t.get("bias_pct", _percent, -50, 50, default=defaults.bias_pct),
        seed=t.get("seed", fields.integer, *fields.SEED_RANGE, default=defaults.seed),
    )
    t.done()
    return step


def _percent(value: Any, field: str, low: int, high: int, *, low_open: bool = False) -> float:
    return float(fields.decimal(value, field, low, high, "%", low_open=low_open))


def parse_accuracy_step(table: Any, *, field: str = "accuracy") -> AccuracyStep:
    """Check an ``[accuracy]`` table given as a mapping and build the step.

    :param table: the parsed TOML table.
    :param field: the table's name, for error messages.
    :raises ~cython_ext.fields.FileErrors: every unknown key, missing or bad value (each naming the
        field, the value and the allowed range).
    """
    doc = fields.Document.of(table, path=field)
    step = read_accuracy_step(doc.root)
    doc.finish()
    return step


def run_accuracy_step(
    step: AccuracyStep,
    *,
    report_dir: str | Path,
    pump_url: str | None = None,
    balance_url: str | None = None,
) -> AccuracyStepOutcome:
    """Run the step and judge it.

    With no URLs the step stands up its own simulated pump and balance and runs
    in virtual time. With URLs it drives real devices in real time; a simulated
    bias then makes no sense and is refused.

    :param step: the parsed step.
    :param report_dir: where to write the accuracy report.
    :param pump_url: serial URL of a real pump, or None for a simulated rig.
    :param balance_url: serial URL of a real balance (required with ``pump_url``).
    :raises ConfigError: inconsistent URLs, or a bad setting; nothing is started.
    """
    from hil.gravimetric.procedure import run_accuracy

    if (pump_url is None) != (balance_url is None):
        raise ConfigError("accuracy.balance_url", balance_url, "given together with the pump URL, or both omitted")
    if pump_url is not None and step.bias_pct != 0.0:
        raise ConfigError("accuracy.bias_pct", step.bias_pct, "0 with real devices (bias is a simulator setting)")
    report_dir = Path(report_dir)
    settings = {"duration_s": step.duration_s, "interval_s": step.interval_s}
    try:
        if pump_url is None:
            from hil.gravimetric.simrig import RigSettings, run_simulated_accuracy

            result = run_simulated_accuracy(
                RigSettings(step.balance_kind, seed=step.seed, bias_pct=step.bias_pct),
                step.rate_nl_per_h,
                syringe_diameter_mm=step.syringe_diameter_mm,
                report_dir=report_dir,
                **settings,
            )
        else:
            assert balance_url is not None
            result = run_accuracy(
                pump_url,
                balance_url,
                step.rate_nl_per_h,
                syringe_diameter_mm=step.syringe_diameter_mm,
                balance_driver=step.balance_kind,
                report_dir=report_dir,
                **settings,
            )
    except InsufficientDataError as exc:
        return AccuracyStepOutcome(False, None, f"refused: {exc}", report_dir)
    error = result.mean_error_pct
    passed = abs(error) <= step.max_abs_mean_error_pct
    detail = f"mean error {error:+.3f} % (limit ±{step.max_abs_mean_error_pct:g} %)"
    return AccuracyStepOutcome(passed, error, detail, report_dir)
