"""``itb hil accuracy`` end to end on simulated rigs in virtual time, and the procedure's refusals.

Noise bound of the mean error. A = 100 (Qbar - r)/r uses the weights at the
start and end of the analysis hour, so its random error comes from two
readings: each has the balance noise (SD ``sigma``) and the display rounding
(uniform over one digit, SD ``res/sqrt(12)``). Relative to the mass M
delivered in the hour, its standard deviation is::

    sd(A) = 100 * sqrt(2) * sqrt(sigma**2 + res**2/12) / M      [percentage points]

and pump delivery noise (SD ``n`` % per 1000 nL chunk, V nL in the hour)
adds ``n / sqrt(V / 1000)``. The tests allow 6 standard deviations.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cython_ext.errors import CapabilityError, ConfigError
from hil.cli import main
from hil.gravimetric.analysis import InsufficientDataError, RefusalReason
from hil.gravimetric.procedure import run_accuracy
from hil.gravimetric.simrig import RigSettings, simulated_accuracy_rig

DENSITY_20C = 0.998207


def mean_error_bound_pct(rate_nl_per_h: int, bias_pct: float, *, sigma_ug: float, res_ug: int, pump_noise_pct: float = 0.0) -> float:
    mass_ug = rate_nl_per_h * (1 + bias_pct / 100) * DENSITY_20C
    balance_sd = 100 * math.sqrt(2) * math.sqrt(sigma_ug**2 + res_ug**2 / 12) / mass_ug
    pump_sd = pump_noise_pct / math.sqrt(rate_nl_per_h / 1000)
    return 6 * math.hypot(balance_sd, pump_sd)


def test_cli_reports_the_injected_bias_and_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report"
    status = main(
        [
            "hil", "accuracy", "--pump", "sim", "--balance", "sim:mtsics", "--rate", "1.2mL/h",
            "--syringe", "14.5mm", "--bias-pct", "3", "--balance-noise-ug", "5", "--report", str(report), "--json",
        ]
    )
    assert status == 0
    summary = json.loads(capsys.readouterr().out)
    analysis = summary["analysis"]
    bound = mean_error_bound_pct(1_200_000, 3.0, sigma_ug=5.0, res_ug=10)
    assert abs(analysis["mean_error_pct"] - 3.0) <= bound
    assert analysis["samples"] == 241
    assert [point["window_min"] for point in analysis["trumpet"]] == [2, 5, 11, 19, 31]
    assert [point["m"] for point in analysis["trumpet"]] == [117, 111, 99, 83, 59]
    for point in analysis["trumpet"]:
        assert point["min_error_pct"] <= analysis["mean_error_pct"] + 1e-9
        assert point["max_error_pct"] >= analysis["mean_error_pct"] - 1e-9
    for name in ("report.html", "summary.json", "samples.csv", "startup.png", "trumpet.png", "pump_trace.txt", "balance_trace.txt"):
        assert (report / name).stat().st_size > 0, name
    assert (report / "startup.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((report / "summary.json").read_text())["result"] == "reported"
    # The pump counts what it was told to deliver; the balance weighs 3 % more.
    assert summary["pump_counter_vs_balance_pct"] == pytest.approx(100 * (1 / 1.03 - 1), abs=0.05)
    assert len((report / "samples.csv").read_text().splitlines()) == 242
    assert "mean error A" in (report / "report.html").read_text()


def test_sbi_rig_with_pump_noise_over_a_pty(tmp_path: Path) -> None:
    with simulated_accuracy_rig(
        RigSettings("sbi", link="pty", seed=4, bias_pct=-2.0, noise_pct=1.0, balance_options={"noise_ug": 5.0})
    ) as rig:
        result = run_accuracy(
            rig.pump_url,
            rig.balance_url,
            600_000,
            syringe_diameter_mm=14.5,
            clock=rig.clock,
            balance_driver="sbi",
            duration_s=1800,
        )
    # A 30 min run: the analysis period is the second 15 minutes (450 000 nL).
    bound = mean_error_bound_pct(600_000 // 4, -2.0, sigma_ug=5.0, res_ug=10, pump_noise_pct=1.0)
    assert result.analysis.analysis_start_s == 900
    assert abs(result.mean_error_pct + 2.0) <= bound
    assert [t.window_min for t in result.analysis.trumpet] == [2, 5, 11]


def test_unstable_balance_is_refused_not_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with simulated_accuracy_rig(RigSettings("mtsics", balance_options={"disturbances_s": ((600.0, 3000.0),)})) as rig:
        with pytest.raises(InsufficientDataError) as caught:
            run_accuracy(
                rig.pump_url, rig.balance_url, 1_200_000, syringe_diameter_mm=14.5, clock=rig.clock,
                report_dir=tmp_path,
            )
    assert caught.value.reason is RefusalReason.UNSTABLE_READINGS
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["result"] == "refused"
    assert summary["refusal"]["reason"] == "unstable_readings"
    assert "analysis" not in summary
    assert not (tmp_path / "trumpet.png").exists()
    assert (tmp_path / "samples.csv").exists()


def test_balance_that_went_backwards_is_refused() -> None:
    with simulated_accuracy_rig(RigSettings("mtsics")) as rig:

        def remove_water(sample: object, total: int) -> None:
            if getattr(sample, "index") == 100:
                rig.balance.pan.add_load(-300_000)  # someone lifted 0.3 g off the pan

        with pytest.raises(InsufficientDataError) as caught:
            run_accuracy(
                rig.pump_url, rig.balance_url, 1_200_000, syringe_diameter_mm=14.5, clock=rig.clock,
                on_sample=remove_water, max_unstable_fraction=1.0,
            )
    assert caught.value.reason is RefusalReason.MASS_DECREASED


def test_pump_stall_stops_sampling_and_refuses() -> None:
    with simulated_accuracy_rig(RigSettings("mtsics")) as rig:

        def stall(sample: object, total: int) -> None:
            if getattr(sample, "index") == 50:
                rig.pump.inject_stall()

        with pytest.raises(InsufficientDataError) as caught:
            run_accuracy(
                rig.pump_url, rig.balance_url, 1_200_000, syringe_diameter_mm=14.5, clock=rig.clock, on_sample=stall
            )
    assert caught.value.reason is RefusalReason.PUMP_NOT_DELIVERING
    assert len(caught.value.measurement.samples) == 52  # type: ignore[attr-defined]


def test_rate_outside_the_pump_envelope_is_refused_before_the_pump_moves() -> None:
    with simulated_accuracy_rig(RigSettings("mtsics")) as rig:
        with pytest.raises(CapabilityError):
            run_accuracy(rig.pump_url, rig.balance_url, 1_000, syringe_diameter_mm=14.5, clock=rig.clock)
        assert rig.pump.mechanics.actual_delivered_nl() == 0


def test_bad_configuration_is_rejected_before_anything_opens() -> None:
    with pytest.raises(ConfigError) as caught:
        run_accuracy("/dev/does-not-exist", "/dev/nor-this", 1_200_000, syringe_diameter_mm=14.5, duration_s=100)
    assert caught.value.field == "duration_s"


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--pump", "sim", "--balance", "/dev/ttyUSB1", "--rate", "1mL/h", "--syringe", "14.5mm"], "--balance"),
        (["--pump", "sim", "--balance", "sim:mtsics", "--rate", "1", "--syringe", "14.5mm"], "--rate"),
        (["--pump", "sim", "--balance", "sim:mtsics", "--rate", "1mL/h", "--syringe", "60mm"], "--syringe"),
        (["--pump", "sim", "--balance", "sim:mtsics", "--rate", "1mL/h", "--syringe", "bd-10ml", "--duration", "2 fortnights"], "--duration"),
        (["--pump", "sim", "--balance", "sim:mtsics", "--rate", "1mL/h", "--syringe", "bd-10ml", "--balance-resolution-ug", "3"], "resolution_ug"),
        (["--pump", "/dev/nonesuch0", "--balance", "/dev/nonesuch1", "--rate", "1mL/h", "--syringe", "bd-10ml", "--bias-pct", "3"], "--bias-pct"),
    ],
)
def test_cli_rejects_bad_arguments(argv: list[str], field: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        status = main(["hil", "accuracy", *argv])
    except SystemExit as usage_error:  # an argument's type= check: argparse's usage error, exit 2
        status = usage_error.code
    assert status == 2
    assert field in capsys.readouterr().err


def test_a_run_too_short_for_any_window_is_rejected_before_it_starts(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            "hil", "accuracy", "--pump", "sim", "--balance", "sim:sbi", "--rate", "1.2mL/h",
            "--syringe", "14.5mm", "--duration", "3min",
        ]
    )
    assert status == 2
    assert "duration_s" in capsys.readouterr().err


def test_failed_readings_are_missing_samples_never_guesses() -> None:
    import hal
    from hal.balance import open_balance
    from cython_ext.errors import LinkTimeoutError
    from hil.gravimetric.analysis import analyse
    from hil.gravimetric.procedure import AccuracyConfig, measure

    config = AccuracyConfig(rate_nl_per_h=1_200_000, syringe_diameter_mm=14.5, duration_s=1200, max_missing_fraction=0.05)
    with simulated_accuracy_rig(RigSettings("mtsics")) as rig:
        with hal.open_pump("ne1000", rig.pump_url, clock=rig.clock) as pump, open_balance(
            "mtsics", rig.balance_url, clock=rig.clock
        ) as balance:
            real_read = balance._read_immediate
            calls = {"n": 0}

            def flaky() -> object:
                calls["n"] += 1
                if calls["n"] in (10, 30):
                    raise LinkTimeoutError("balance sent no complete line")
                return real_read()

            balance._read_immediate = flaky  # type: ignore[method-assign]
            measurement = measure(pump, balance, config, clock=rig.clock)
    missing = [s for s in measurement.samples if s.mass_ug is None]
    assert [s.index for s in missing] == [9, 29]
    assert all("balance" in s.note for s in missing)
    result = analyse(measurement.weight_samples(), config.analysis_settings())
    assert result.missing_samples == 2
    # Sample 29 lies in the analysis period (from 600 s): the two flows touching it are absent.
    assert sum(1 for f in result.analysis_flows if f.flow_ml_per_h is None) == 2
    with pytest.raises(InsufficientDataError) as caught:
        analyse(measurement.weight_samples(), AccuracyConfig(rate_nl_per_h=1_200_000, syringe_diameter_mm=14.5, duration_s=1200).analysis_settings())
    assert caught.value.reason is RefusalReason.MISSING_SAMPLES


def test_an_uncertain_start_still_ends_with_the_pump_stopped() -> None:
    import hal
    from hal.balance import open_balance
    from cython_ext.errors import UncertainDeliveryError
    from hal.pump import PumpState
    from hil.gravimetric.procedure import AccuracyConfig, measure

    config = AccuracyConfig(rate_nl_per_h=1_200_000, syringe_diameter_mm=14.5, duration_s=600)
    with simulated_accuracy_rig(RigSettings("mtsics")) as rig:
        with hal.open_pump("ne1000", rig.pump_url, clock=rig.clock) as pump, open_balance(
            "mtsics", rig.balance_url, clock=rig.clock
        ) as balance:
            real_start = pump.start

            def start_then_lose_the_reply() -> object:
                real_start()
                raise UncertainDeliveryError("start: reply lost")

            pump.start = start_then_lose_the_reply  # type: ignore[method-assign]
            with pytest.raises(UncertainDeliveryError):
                measure(pump, balance, config, clock=rig.clock)
            assert pump.read_status().state is PumpState.STOPPED


def test_cli_pump_fault_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(
        [
            "hil", "accuracy", "--pump", "sim", "--balance", "sim:mtsics", "--rate", "1.2mL/h",
            "--syringe", "14.5mm", "--fault", "stall:at=3000", "--json",
        ]
    )
    assert status == 3
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["schema"] == "itb.error/1" and document["error"]["exit_status"] == 3
    assert document["error"]["type"] == "InsufficientDataError"
    assert "pump_not_delivering" in document["error"]["message"]
    assert "stall at 3000 s" in captured.err


def accuracy_args(report: Path, *extra: str) -> list[str]:
    return ["hil", "accuracy", "--pump", "sim", "--balance", "sim:mtsics", "--rate", "1.2mL/h", "--syringe", "14.5mm",
            "--bias-pct", "3", "--report", str(report), *extra]


def test_the_limit_sets_the_verdict_and_the_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(accuracy_args(tmp_path / "wide", "--limit-pct", "5", "--json")) == 0
    wide = json.loads(capsys.readouterr().out)
    assert wide["passed"] is True and wide["limit_pct"] == 5
    assert main(accuracy_args(tmp_path / "tight", "--limit-pct", "1", "--json")) == 1  # a 3 % bias is outside ±1 %
    tight = json.loads(capsys.readouterr().out)
    assert tight["passed"] is False and tight == json.loads((tmp_path / "tight" / "summary.json").read_text())
    assert "FAILED" in (tmp_path / "tight" / "report.html").read_text()
    profile = tmp_path / "bench.toml"
    profile.write_text("[test]\nlimit_pct = 1.0\n")
    assert main(accuracy_args(tmp_path / "profile", "--profile", str(profile))) == 1


def test_simulated_devices_are_named_in_the_report(tmp_path: Path) -> None:
    assert main(accuracy_args(tmp_path / "r", "--seed", "4")) == 0
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["simulation"]["pump"]["settings"]["bias_pct"] == 3.0
    assert summary["simulation"]["pump"]["settings"]["seed"] == 4
    assert summary["simulation"]["balance"]["settings"] == {"noise_ug": 5.0, "resolution_ug": 10}
    assert "SIMULATED" in (tmp_path / "r" / "report.html").read_text()


def test_an_earlier_run_is_moved_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "r"
    assert main(accuracy_args(report)) == 0
    first = (report / "samples.csv").read_bytes()
    assert main(accuracy_args(report)) == 2
    assert "--new-run" in capsys.readouterr().err
    assert (report / "samples.csv").read_bytes() == first
    assert main(accuracy_args(report, "--new-run")) == 0
    (archived,) = report.glob("previous-*")
    assert (archived / "samples.csv").read_bytes() == first


def test_sigint_keeps_every_weighing_and_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A SIGINT at the 150th balance reading (the handler raises KeyboardInterrupt there, as Ctrl-C does)."""
    from hal.mtsics.driver import MtSicsDriver as MtSicsBalance

    report = tmp_path / "r"
    read = MtSicsBalance.read_immediate
    calls = []

    def interrupted_read(self: MtSicsBalance) -> object:
        calls.append(1)
        if len(calls) == 150:
            rows = (report / "samples.csv").read_text().splitlines()
            assert len(rows) == 1 + 149  # every sample so far is on disk before the next is taken
            raise KeyboardInterrupt
        return read(self)

    monkeypatch.setattr(MtSicsBalance, "read_immediate", interrupted_read)
    assert main(accuracy_args(report)) == 130
    rows = (report / "samples.csv").read_text().splitlines()
    assert len(rows) == 1 + 149
    summary = json.loads((report / "summary.json").read_text())
    assert summary["incomplete"] is True and summary["passed"] is False
    assert summary["samples_taken"] == 149 and "interrupted by the operator" in summary["stopped_early"]
    assert summary["analysis"]["samples"] == 149  # analysed from what was measured
    assert "INCOMPLETE" in (report / "report.html").read_text()
    assert "pump_trace.txt" in {p.name for p in report.iterdir()}
    assert "53 54 50" in (report / "pump_trace.txt").read_text()  # STP went over the wire after the interruption
