"""The gravimetric accuracy procedure: set-up checks, stabilisation, sampling, analysis, report.

One procedure serves the bench and CI. Time comes from the injected clock:
on the bench a :class:`~hal.clock.SystemClock` (the run takes its real two
hours); on a simulated rig a :class:`~sim.clock.VirtualClock` that the
sampler itself advances through ``clock.sleep``, so a 2 h run takes well
under a second of wall time.

Sequence (:func:`measure`)::

    identify pump and balance -> pump has no latched alarm -> configure syringe
    -> rate inside the pump's envelope -> infuse, continuous, set rate (read back)
    -> balance stable, optional tare -> clear dispensed -> start
    -> stabilisation -> sample every S for the duration (pump status each sample)
    -> stop (always, also on errors) -> read dispensed

Every sample is handed to ``on_sample`` as it arrives: :func:`run_accuracy` appends it
to ``samples.csv`` and flushes, so an interruption or a crash keeps every weighing.
SIGINT (Ctrl-C) during sampling ends it: the pump is stopped as at any end of the run
(the bench profile has no other policy: the test delivers water, not drug), the
report is written from what was measured and marked *incomplete*, and
:exc:`KeyboardInterrupt` goes on to the CLI (exit status 130).

Sampling uses the immediate weight (``SI`` / ``ESC P``): a continuous flow
never holds still, and the balance's stability flag is kept with each sample
for the analysis to judge. A reading that fails, or arrives more than
``late_tolerance_s`` after its slot, is a missing sample, never a guess.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hal.balance import BalanceDriver, BalanceIdentity, water_density_g_per_ml
from hal.clock import NS_PER_MS, NS_PER_S, Clock, SystemClock
from cython_ext.errors import CapabilityError, CommunicationError, ConfigError, DeviceError, StateError
from hal.pump import Direction, DispensedVolume, PumpDriver, PumpIdentity
from hil.gravimetric.analysis import (
    STANDARD_DURATION_S,
    STANDARD_INTERVAL_S,
    STANDARD_WINDOWS_MIN,
    AccuracyAnalysis,
    AnalysisOptions,
    AnalysisSettings,
    InsufficientDataError,
    RefusalReason,
    WeightSample,
    analyse,
)
from cython_ext.fields import is_finite_number, is_int


@dataclass(frozen=True)
class AccuracyConfig(AnalysisOptions):
    """Everything that defines one accuracy run; checked when built.

    :ivar rate_nl_per_h: set rate r, nL/h.
    :ivar syringe_diameter_mm: inner diameter of the syringe, mm.
    :ivar duration_s: sampling duration T, whole seconds, a multiple of ``interval_s``.
    :ivar interval_s: sampling interval S, whole seconds.
    :ivar stabilisation_s: delivery before sampling starts, s.
    :ivar water_temperature_c: water temperature, °C (sets the density).
    :ivar late_tolerance_s: a reading later than this after its slot counts as missing, s.
    :ivar tare: tare the balance before the pump starts.
    :ivar stable_timeout_s: how long the set-up check waits for a stable weight, s.

    and, keywords only, the :class:`~hil.gravimetric.analysis.AnalysisOptions` (windows,
    analysis start, refusal limits, evaporation, air buoyancy), handed on to the analysis.
    """

    rate_nl_per_h: int
    syringe_diameter_mm: float
    duration_s: int = STANDARD_DURATION_S
    interval_s: int = STANDARD_INTERVAL_S
    stabilisation_s: int = 0
    water_temperature_c: float = 20.0
    late_tolerance_s: float = 5.0
    tare: bool = True
    stable_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not is_int(self.rate_nl_per_h) or self.rate_nl_per_h <= 0:
            raise ConfigError("rate_nl_per_h", self.rate_nl_per_h, "an integer > 0 nL/h")
        if not is_finite_number(self.syringe_diameter_mm) or not 0.1 <= self.syringe_diameter_mm <= 50.0:
            raise ConfigError("syringe_diameter_mm", self.syringe_diameter_mm, "in [0.1, 50] mm")
        if not is_int(self.interval_s) or not 1 <= self.interval_s <= 3600:
            raise ConfigError("interval_s", self.interval_s, "an integer in [1, 3600] s")
        if not is_int(self.duration_s) or self.duration_s <= 0 or self.duration_s % self.interval_s:
            raise ConfigError("duration_s", self.duration_s, f"an integer > 0 s, a multiple of {self.interval_s} s")
        if not is_int(self.stabilisation_s) or self.stabilisation_s < 0:
            raise ConfigError("stabilisation_s", self.stabilisation_s, "an integer >= 0 s")
        if not is_finite_number(self.late_tolerance_s) or not 0 < self.late_tolerance_s <= self.interval_s:
            raise ConfigError("late_tolerance_s", self.late_tolerance_s, f"in (0, {self.interval_s}] s")
        if not is_finite_number(self.stable_timeout_s) or self.stable_timeout_s <= 0:
            raise ConfigError("stable_timeout_s", self.stable_timeout_s, "a number > 0 s")
        if not isinstance(self.tare, bool):
            raise ConfigError("tare", self.tare, "true or false")
        self.analysis_settings()  # checks the analysis fields and the density
        intervals = self.duration_s // self.interval_s
        start = intervals // 2 if self.analysis_start_s is None else self.analysis_start_s // self.interval_s
        smallest_window_s = min(self.windows_min) * 60
        if (intervals - start) * self.interval_s < smallest_window_s:
            # Refuse before anything moves: such a run could only end in a TOO_SHORT refusal.
            raise ConfigError(
                "duration_s",
                self.duration_s,
                f"long enough for an analysis period of at least {smallest_window_s} s "
                f"(the period starts at {start * self.interval_s} s)",
            )

    @property
    def density_g_per_ml(self) -> float:
        """Water density at :attr:`water_temperature_c`, g/mL."""
        return water_density_g_per_ml(self.water_temperature_c)

    def analysis_settings(self) -> AnalysisSettings:
        """The settings handed to :func:`~hil.gravimetric.analysis.analyse`."""
        return AnalysisSettings(
            rate_nl_per_h=self.rate_nl_per_h,
            interval_s=self.interval_s,
            density_g_per_ml=self.density_g_per_ml,
            **self.analysis_options(),
        )

    @property
    def sample_count(self) -> int:
        """Samples taken, including the baseline at time 0."""
        return self.duration_s // self.interval_s + 1


@dataclass(frozen=True)
class SetupCheck:
    """One set-up check and what it found."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class RawSample:
    """One sampling slot as it happened (the CSV row).

    :ivar index: slot number k (scheduled at k x S).
    :ivar scheduled_ms: slot time from the start of sampling, ms.
    :ivar received_ms: when the reading arrived, ms from the start of sampling, or None.
    :ivar utc: wall time of the slot (ISO 8601).
    :ivar mass_ug: the reading, µg, or None when missing.
    :ivar stable: the balance's stability flag.
    :ivar resolution_ug: the balance's last digit, µg (0 when missing).
    :ivar pump_state: the pump state read with the sample.
    :ivar note: why a sample is missing, or empty.
    """

    index: int
    scheduled_ms: int
    received_ms: int | None
    utc: str
    mass_ug: int | None
    stable: bool
    resolution_ug: int
    pump_state: str
    note: str = ""

    def weight_sample(self) -> WeightSample:
        """The sample as the analysis sees it."""
        return WeightSample(self.scheduled_ms, self.mass_ug, self.stable)


@dataclass(frozen=True)
class Measurement:
    """What :func:`measure` recorded.

    :ivar config: the run's configuration.
    :ivar checks: set-up checks, in order.
    :ivar samples: one per slot.
    :ivar pump_identity: who the pump said it was.
    :ivar balance_identity: who the balance said it was.
    :ivar dispensed: the pump's own counter at the end, or None if it could not be read.
    :ivar started_utc: wall time at the first sample (ISO 8601).
    :ivar tare_ug: the tare stored before the run, µg.
    :ivar stopped_early: why sampling stopped before the end, or empty.
    :ivar interrupted: the operator stopped sampling (SIGINT): the run is incomplete.
    :ivar held_rate_nl_per_h: the rate the pump read back after it was set, nL/h (its number format
        may round the set rate), or None if it gave none.
    """

    config: AccuracyConfig
    checks: tuple[SetupCheck, ...]
    samples: tuple[RawSample, ...]
    pump_identity: PumpIdentity
    balance_identity: BalanceIdentity
    dispensed: DispensedVolume | None
    started_utc: str
    tare_ug: int
    stopped_early: str = ""
    interrupted: bool = False
    held_rate_nl_per_h: int | None = None

    def weight_samples(self) -> list[WeightSample]:
        """The series for the analysis."""
        return [sample.weight_sample() for sample in self.samples]


@dataclass(frozen=True)
class AccuracyResult:
    """A finished accuracy run: the measurement and its analysis.

    :ivar measurement: what was recorded.
    :ivar analysis: the flow series, trumpet curve and mean error.
    :ivar report_dir: where the report was written, or None.
    """

    measurement: Measurement
    analysis: AccuracyAnalysis
    report_dir: Path | None = None

    @property
    def mean_error_pct(self) -> float:
        """The overall mean error A, %."""
        return self.analysis.mean_error_pct


SampleCallback = Callable[[RawSample, int], None]


def measure(
    pump: PumpDriver,
    balance: BalanceDriver,
    config: AccuracyConfig,
    *,
    clock: Clock,
    on_sample: SampleCallback | None = None,
) -> Measurement:
    """Run the set-up checks and take the samples. The pump is always stopped at the end.

    :param pump: an open pump driver.
    :param balance: an open balance driver.
    :param config: the run's configuration.
    :param clock: time source; a virtual clock is advanced by the sampler.
    :param on_sample: called with each sample and the total slot count (progress display).
    :raises StateError: the pump has a latched alarm before the run.
    :raises CapabilityError: the rate is outside the pump's envelope for this syringe.
    :raises DeviceError: the pump refused a set-up command, or the balance is out of range.
    :raises InsufficientDataError: the pump stopped delivering during sampling
        (``PUMP_NOT_DELIVERING``); the samples so far are on the exception as ``measurement``.

    A SIGINT during sampling does not escape: the measurement comes back with
    ``interrupted`` set and the samples taken so far.
    """
    checks: list[SetupCheck] = []
    pump_identity = pump.identify()
    checks.append(SetupCheck("pump identity", True, f"{pump_identity.model} {pump_identity.firmware}"))
    balance_identity = balance.identify()
    checks.append(
        SetupCheck("balance identity", True, f"{balance_identity.model} s/n {balance_identity.serial_number}")
    )
    status = pump.read_status()
    if status.alarm is not None:
        raise StateError(f"the pump has a latched alarm ({status.alarm.value}); clear it on the pump first")
    checks.append(SetupCheck("pump alarm-free", True, f"state {status.state.value}"))
    capabilities = pump.configure(syringe_diameter_mm=config.syringe_diameter_mm)
    if not capabilities.min_rate_nl_per_h <= config.rate_nl_per_h <= capabilities.max_rate_nl_per_h:
        raise CapabilityError(
            f"rate_nl_per_h (={config.rate_nl_per_h}) must be in [{capabilities.min_rate_nl_per_h}, "
            f"{capabilities.max_rate_nl_per_h}] nL/h for a {config.syringe_diameter_mm} mm syringe"
        )
    checks.append(
        SetupCheck(
            "rate within pump envelope",
            True,
            f"{config.rate_nl_per_h} nL/h in [{capabilities.min_rate_nl_per_h}, {capabilities.max_rate_nl_per_h}]",
        )
    )
    for result in (pump.set_direction(Direction.INFUSE), pump.set_target_volume(0)):
        if not result.applied:
            raise DeviceError(f"pump did not apply {result.command}: {result.outcome.value} {result.detail}")
    rate_result = pump.set_rate(config.rate_nl_per_h)
    if not rate_result.applied:
        raise DeviceError(f"pump did not apply set_rate: {rate_result.outcome.value} {rate_result.detail}")
    held = rate_result.value
    if held is not None and held != config.rate_nl_per_h:
        change_pct = (held - config.rate_nl_per_h) * 100 / config.rate_nl_per_h
        checks.append(SetupCheck("rate read back", True, f"{held} nL/h ({change_pct:+.3f} % "
                                 f"from the {config.rate_nl_per_h} nL/h set: the pump's number format)"))
    else:
        checks.append(SetupCheck("rate read back", True, f"{held} nL/h"))
    initial = balance.read_stable(timeout_s=config.stable_timeout_s)
    checks.append(SetupCheck("balance stable", True, f"{initial.mass_ug} µg, last digit {initial.resolution_ug} µg"))
    tare_ug = 0
    if config.tare:
        tare_ug = balance.tare()
        settled = balance.read_stable(timeout_s=config.stable_timeout_s)
        checks.append(SetupCheck("balance tared", True, f"tare {tare_ug} µg, then {settled.mass_ug} µg stable"))
    pump.clear_dispensed()
    samples: list[RawSample] = []
    stopped_early = ""
    started_utc = ""
    dispensed: DispensedVolume | None = None
    interrupted = False
    try:
        # Inside the try: a start whose reply was lost may have started the pump, and must be stopped.
        start_result = pump.start()
        if not start_result.applied:
            raise DeviceError(f"pump did not start: {start_result.outcome.value} {start_result.detail}")
        checks.append(SetupCheck("pump started", True, "infusing"))
        if config.stabilisation_s:
            clock.sleep(config.stabilisation_s)
        origin_ns = clock.monotonic_ns()
        started_utc = clock.utc_now().isoformat()
        total = config.sample_count
        try:
            for index in range(total):
                slot_ns = origin_ns + index * config.interval_s * NS_PER_S
                wait_ns = slot_ns - clock.monotonic_ns()
                if wait_ns > 0:
                    clock.sleep(wait_ns / NS_PER_S)
                sample = _take_sample(index, slot_ns, origin_ns, pump, balance, config, clock)
                samples.append(sample)
                if on_sample is not None:
                    on_sample(sample, total)
                if sample.pump_state not in ("infusing", "purging", "?"):
                    stopped_early = f"pump {sample.pump_state} at {sample.scheduled_ms / 1000:g} s"
                    break
        except KeyboardInterrupt:
            interrupted = True
            elapsed_s = (clock.monotonic_ns() - origin_ns) / NS_PER_S
            stopped_early = f"interrupted by the operator at {elapsed_s:g} s of sampling"
    finally:
        pump.stop()
        try:
            dispensed = pump.read_dispensed()
        except (CommunicationError, DeviceError):
            dispensed = None
    measurement = Measurement(
        config=config,
        checks=tuple(checks),
        samples=tuple(samples),
        pump_identity=pump_identity,
        balance_identity=balance_identity,
        dispensed=dispensed,
        started_utc=started_utc,
        tare_ug=tare_ug,
        stopped_early=stopped_early,
        interrupted=interrupted,
        held_rate_nl_per_h=held,
    )
    if stopped_early and not interrupted:
        error = InsufficientDataError(RefusalReason.PUMP_NOT_DELIVERING, stopped_early)
        error.measurement = measurement  # type: ignore[attr-defined]
        raise error
    return measurement


def _take_sample(
    index: int,
    slot_ns: int,
    origin_ns: int,
    pump: PumpDriver,
    balance: BalanceDriver,
    config: AccuracyConfig,
    clock: Clock,
) -> RawSample:
    scheduled_ms = (slot_ns - origin_ns) // NS_PER_MS
    utc = clock.utc_now().isoformat()
    try:
        reading = balance.read_immediate()
    except (CommunicationError, DeviceError) as exc:
        reading = None
        note = f"balance: {exc}"
    else:
        note = ""
    try:
        status = pump.read_status()
        pump_state = status.alarm.value if status.alarm is not None else status.state.value
    except (CommunicationError, DeviceError):
        pump_state = "?"
    if reading is None:
        return RawSample(index, scheduled_ms, None, utc, None, False, 0, pump_state, note)
    received_ms = (reading.monotonic_ns - origin_ns) // NS_PER_MS
    if reading.monotonic_ns - slot_ns > config.late_tolerance_s * NS_PER_S:
        return RawSample(
            index, scheduled_ms, received_ms, utc, None, reading.stable, reading.resolution_ug, pump_state,
            f"late by {(reading.monotonic_ns - slot_ns) / NS_PER_S:.3f} s",
        )
    return RawSample(
        index, scheduled_ms, received_ms, utc, reading.mass_ug, reading.stable, reading.resolution_ug, pump_state
    )


def run_accuracy(
    pump_url: str,
    balance_url: str,
    rate_nl_per_h: int,
    *,
    syringe_diameter_mm: float,
    clock: Clock | None = None,
    pump_driver: str = "ne1000",
    balance_driver: str = "mtsics",
    pump_options: dict[str, Any] | None = None,
    balance_options: dict[str, Any] | None = None,
    report_dir: str | Path | None = None,
    on_sample: SampleCallback | None = None,
    limit_pct: float | None = None,
    simulation: dict[str, Any] | None = None,
    **config_fields: Any,
) -> AccuracyResult:
    """Open a pump and a balance by URL, run the accuracy test and (optionally) write the report.

    This is the entry point for scenario files. On a refusal the raw CSV,
    traces and a ``summary.json`` naming the reason are still written, and the
    :class:`InsufficientDataError` is raised: a refusal is never a number.

    :param pump_url: serial URL of the pump.
    :param balance_url: serial URL of the balance.
    :param rate_nl_per_h: set rate, nL/h.
    :param syringe_diameter_mm: syringe inner diameter, mm.
    :param clock: the clock (system clock by default; a VirtualClock for simulated rigs).
    :param pump_driver: pump registry name.
    :param balance_driver: balance registry name (``"mtsics"`` or ``"sbi"``).
    :param pump_options: extra keywords for :func:`hal.open_pump` (``baudrate``, ``address``...).
    :param balance_options: extra keywords for :func:`hal.balance.open_balance` (``baudrate``, ``parity``...).
    :param report_dir: write ``report.html``, ``summary.json``, ``samples.csv`` and traces here.
    :param on_sample: progress callback.
    :param limit_pct: the pass limit on |mean error A|, %, for the report's verdict.
    :param simulation: what was simulated (for the report), or None for real devices.
    :param config_fields: other :class:`AccuracyConfig` fields (``duration_s``, ``interval_s``...).
    :raises ConfigError: a bad setting (nothing is opened).
    :raises InsufficientDataError: the data cannot support a result.
    :raises KeyboardInterrupt: SIGINT during sampling, after the pump was stopped and the
        report (marked incomplete) was written.
    :return: the result.
    """
    import hal
    from hal.balance import open_balance
    from hil.gravimetric import report

    config = AccuracyConfig(rate_nl_per_h=rate_nl_per_h, syringe_diameter_mm=syringe_diameter_mm, **config_fields)
    clock = clock or SystemClock()
    out_dir = Path(report_dir) if report_dir is not None else None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    pump_trace = str(out_dir / "pump_trace.txt") if out_dir is not None else None
    balance_trace = str(out_dir / "balance_trace.txt") if out_dir is not None else None
    measurement: Measurement | None = None

    def write(done: Measurement, analysis: AccuracyAnalysis | None, refusal: InsufficientDataError | None) -> None:
        """The report of ``done``, when there is a report directory."""
        if out_dir is not None:
            data = report.summary(done, analysis, refusal, limit_pct=limit_pct, simulation=simulation)
            report.write_report(out_dir, done, analysis, data)

    with contextlib.ExitStack() as stack:
        pump = stack.enter_context(
            hal.open_pump(pump_driver, pump_url, clock=clock, trace_path=pump_trace, **(pump_options or {})))
        balance = stack.enter_context(open_balance(
            balance_driver, balance_url, clock=clock, trace_path=balance_trace, **(balance_options or {})))
        stream = on_sample
        if out_dir is not None:
            stream = stack.enter_context(_streamed_csv(out_dir / report.SAMPLES_FILE, on_sample))
        try:
            measurement = measure(pump, balance, config, clock=clock, on_sample=stream)
        except InsufficientDataError as exc:
            partial = getattr(exc, "measurement", None)
            if partial is not None:
                write(partial, None, exc)
            raise
    try:
        analysis: AccuracyAnalysis | None = analyse(measurement.weight_samples(), config.analysis_settings())
    except InsufficientDataError as exc:
        write(measurement, None, exc)
        if measurement.interrupted:
            raise KeyboardInterrupt from exc
        raise
    write(measurement, analysis, None)
    if measurement.interrupted:
        raise KeyboardInterrupt
    return AccuracyResult(measurement, analysis, out_dir)


@contextlib.contextmanager
def _streamed_csv(path: Path, then: SampleCallback | None) -> Iterator[SampleCallback]:
    """A sample callback that appends each sample to ``samples.csv`` and flushes, then calls ``then``."""
    from hil.gravimetric.report import CSV_COLUMNS, csv_row

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        handle.flush()

        def write(sample: RawSample, total: int) -> None:
            writer.writerow(csv_row(sample))
            handle.flush()
            if then is not None:
                then(sample, total)

        yield write


#: The order of the ``config`` keys in ``summary.json`` (the procedure's fields and the analysis options, interleaved).
CONFIG_SUMMARY_KEYS = (
    "rate_nl_per_h", "syringe_diameter_mm", "duration_s", "interval_s", "stabilisation_s", "water_temperature_c",
    "evaporation_ug_per_h", "air_buoyancy_correction", "windows_min", "analysis_start_s", "max_unstable_fraction",
    "max_missing_fraction", "backwards_tolerance_ug", "late_tolerance_s", "tare", "stable_timeout_s",
)


def config_summary(config: AccuracyConfig) -> dict[str, Any]:
    """The configuration as JSON-ready data (with the density used), in :data:`CONFIG_SUMMARY_KEYS` order."""
    values = asdict(config)
    data = {name: values.pop(name) for name in CONFIG_SUMMARY_KEYS if name in values}
    data.update(values)
    data["windows_min"] = list(config.windows_min)
    data["density_g_per_ml"] = config.density_g_per_ml
    return data


__all__ = [
    "AccuracyConfig",
    "AccuracyResult",
    "Measurement",
    "RawSample",
    "SetupCheck",
    "config_summary",
    "measure",
    "run_accuracy",
]
