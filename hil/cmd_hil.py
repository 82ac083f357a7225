"""``itb hil``: bench commands.

- ``itb hil accuracy``: the gravimetric accuracy test (start-up graph, trumpet curve, mean error);
- ``itb hil blank``: a no-flow blank run that measures evaporation for the profile;
- ``itb hil balance``: identify a balance and print a few readings (wiring check).

::

    itb hil accuracy --pump /dev/ttyUSB0 --balance /dev/ttyUSB1 --rate 0.5mL/h --syringe bd-10ml
    itb hil accuracy --pump sim --balance sim:mtsics --rate 1.2mL/h --syringe 14.5mm --bias-pct 3

``--pump sim`` with ``--balance sim:mtsics`` (or ``sim:sbi``) stands up a
simulated pump and balance in virtual time: a 2 h run takes seconds. With
real devices the run takes its real duration. Settings come from the command
line, then the ``--profile`` file, then the standard method (S = 30 s,
T = 120 min). Exit status (:class:`hil.cli.ExitStatus`): 0 reported (and within
``--limit-pct`` or the profile's ``[test] limit_pct``, if given), 1 outside the
limit, 2 usage, 3 refused (the data cannot support a result), 4 a device error,
130 interrupted: every weighing so far is in ``samples.csv`` (written as each
arrives) and the report is marked incomplete.

A report directory that holds an earlier run's ``samples.csv`` is refused unless
``--new-run`` moves the old files to a dated ``previous-*`` subfolder (:mod:`hil.rundir`).
``summary.json`` and ``report.html`` say when the pump and balance were simulated,
with the simulator's settings.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cython_ext import fields
from hal.balance import WATER_TEMPERATURE_RANGE_C
from hil.gravimetric.profile import parse_duration_s, parse_rate_request, parse_syringe_mm
from sim.faults import parse_fault
from hil.cli_options import add_action, add_command_group, add_json_flag

SIM_PUMP = "sim"
SIM_BALANCE_PREFIX = "sim:"


def _unit_arg(parse: Any, name: str) -> Any:
    """An argparse ``type=`` for a value with its unit (``0.5mL/h``, ``120min``), checked and kept as typed."""
    return fields.checked_arg(lambda text: parse(text, field_name=name), keep_text=True)


def _add_balance_port(parser: argparse.ArgumentParser) -> None:
    """Add ``--balance`` and ``--balance-driver``: which balance, and how to speak to it."""
    parser.add_argument("--balance", metavar="URL", help="balance serial URL, or 'sim:mtsics' / 'sim:sbi'")
    parser.add_argument("--balance-driver", metavar="NAME", help="balance driver name: mtsics or sbi")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``itb hil`` and its subcommands to the ``itb`` parser."""
    hil_sub = add_command_group(subparsers, "hil", "bench commands (gravimetric accuracy test)",
                                "Bench commands for a real or simulated pump-and-balance rig.", "HIL_COMMAND")
    accuracy = add_action(
        hil_sub, "accuracy", _accuracy, "gravimetric delivery accuracy: start-up graph, trumpet curve, mean error",
        "Run the IEC 60601-2-24 style gravimetric accuracy test. Use '--pump sim --balance sim:mtsics' "
        "for a simulated rig in virtual time.",
    )
    accuracy.add_argument("--pump", metavar="URL", help="pump serial URL, or 'sim'")
    accuracy.add_argument("--balance", metavar="URL", help="balance serial URL, or 'sim:mtsics' / 'sim:sbi'")
    accuracy.add_argument("--rate", metavar="R", type=_unit_arg(parse_rate_request, "--rate"),
                          help="set rate with unit, e.g. 0.5mL/h, 20uL/h, 0.1mL/day (any digits: set as the nearest "
                               "whole nL/h, and the rounding is printed)")
    accuracy.add_argument("--syringe", metavar="SPEC", type=_unit_arg(parse_syringe_mm, "--syringe"),
                          help="syringe preset (bd-10ml...) or inner diameter (14.57mm)")
    accuracy.add_argument("--duration", metavar="T", type=_unit_arg(parse_duration_s, "--duration"),
                          help="sampling duration, e.g. 120min (default 120min)")
    accuracy.add_argument("--interval", metavar="S", type=_unit_arg(parse_duration_s, "--interval"),
                          help="sampling interval, e.g. 30s (default 30s)")
    accuracy.add_argument("--stabilise", metavar="T", type=_unit_arg(parse_duration_s, "--stabilise"),
                          help="delivery before sampling, e.g. 60min (default 0)")
    accuracy.add_argument("--water-temp", metavar="C",
                          type=fields.float_arg("--water-temp", *WATER_TEMPERATURE_RANGE_C, "°C"),
                          help="water temperature, °C (default 20)")
    accuracy.add_argument("--report", metavar="DIR", help="write report.html, summary.json, samples.csv, traces here")
    accuracy.add_argument("--profile", metavar="FILE", help="bench profile (TOML): ports, syringe, water, defaults")
    accuracy.add_argument("--pump-driver", metavar="NAME", help="pump driver name (default ne1000)")
    accuracy.add_argument("--balance-driver", metavar="NAME", help="balance driver name: mtsics or sbi")
    accuracy.add_argument("--max-unstable", metavar="FRACTION",
                          type=fields.float_arg("--max-unstable", 0, 1), default=0.2,
                          help="refuse above this share of unstable readings (default 0.2)")
    accuracy.add_argument("--max-missing", metavar="FRACTION",
                          type=fields.float_arg("--max-missing", 0, 1), default=0.0,
                          help="refuse above this share of missing samples (default 0)")
    sim = accuracy.add_argument_group("simulated rig (only with --pump sim)")
    sim.add_argument("--bias-pct", type=fields.float_arg("--bias-pct", -50, 50, "%"), default=None,
                     help="systematic pump delivery error, %% (default 0)")
    sim.add_argument("--noise-pct", type=fields.float_arg("--noise-pct", 0, 20, "%"), default=None,
                     help="random pump delivery noise, %% (default 0)")
    sim.add_argument("--balance-noise-ug", type=fields.float_arg("--balance-noise-ug", 0, 10**6, "ug"), default=None,
                     help="balance reading noise SD, µg (default 5)")
    sim.add_argument("--balance-resolution-ug", type=fields.int_arg("--balance-resolution-ug", 1, 10**6, "ug"),
                     default=None,
                     help="balance readability, µg, a power of ten (default 10)")
    sim.add_argument("--seed", type=fields.int_arg("--seed", *fields.SEED_RANGE), default=None,
                     help="seed of all simulated noise (default 0)")
    sim.add_argument("--link", choices=("inprocess", "pty"), default=None,
                     help="how the simulated devices connect (default inprocess)")
    sim.add_argument("--fault", metavar="SPEC", action="append", default=[],
                     type=fields.checked_arg(parse_fault, keep_text=True),
                     help="pump fault (sim.faults spec, e.g. stall:at=3000); repeatable")
    accuracy.add_argument("--limit-pct", metavar="PCT", default=None,
                          type=fields.float_arg("--limit-pct", 0, 100, "%", low_open=True),
                          help="pass limit on |mean error A|, %% (default: the profile's [test] limit_pct, or none)")
    accuracy.add_argument("--new-run", action="store_true",
                          help="the report directory holds an earlier run: move it to a dated previous-* subfolder")
    add_json_flag(accuracy, "print the summary as JSON")

    blank = add_action(
        hil_sub, "blank", _blank, "no-flow blank run: measure evaporation and drift for the profile",
        "Sample the balance with nothing delivered and fit a line; the loss rate goes into the "
        "profile as [water] evaporation_ug_per_h. Use '--balance sim:mtsics' to try it on a simulated balance.",
    )
    _add_balance_port(blank)
    blank.add_argument("--duration", metavar="T", type=_unit_arg(parse_duration_s, "--duration"), default="60min",
                       help="length of the blank run (default 60min)")
    blank.add_argument("--interval", metavar="S", type=_unit_arg(parse_duration_s, "--interval"), default="30s",
                       help="sampling interval (default 30s)")
    blank.add_argument("--profile", metavar="FILE", help="bench profile (TOML) naming the balance port")
    blank.add_argument("--sim-evaporation-ug-per-h", default=None,
                       type=fields.float_arg("--sim-evaporation-ug-per-h", 0, 10**6, "ug/h"),
                       help="simulated balance only: evaporation to simulate, µg/h (default 0)")
    add_json_flag(blank, "print the result as JSON")

    check = add_action(hil_sub, "balance", _balance_check, "check a balance: identify it and print a few readings",
                       "Identify the balance and print immediate readings, to check wiring and serial settings.")
    _add_balance_port(check)
    check.add_argument("--readings", type=fields.int_arg("--readings", 1, 1000), default=3,
                       help="how many immediate readings to print (default 3)")
    check.add_argument("--profile", metavar="FILE", help="bench profile (TOML) naming the balance port")


def _accuracy(args: argparse.Namespace) -> int:
    import json

    from cython_ext.errors import ConfigError
    from hil.cli import ExitStatus
    from hil.gravimetric.procedure import run_accuracy
    from hil.gravimetric.report import SAMPLES_FILE, summary
    from hil.rundir import Existing, claim
    from hil.gravimetric.profile import (
        BenchProfile,
        load_profile,
        parse_duration_s,
        parse_rate_request,
        parse_syringe_mm,
    )

    profile = load_profile(args.profile) if args.profile else BenchProfile()
    limit_pct = args.limit_pct if args.limit_pct is not None else profile.limit_pct
    if limit_pct is not None and not limit_pct > 0:
        raise ConfigError("--limit-pct", limit_pct, "a number > 0 %")
    pump_url = args.pump or profile.pump.url
    balance_url = args.balance or profile.balance.url
    if not pump_url:
        raise ConfigError("--pump", pump_url, "a serial URL or 'sim' (or [pump] url in the profile)")
    if not balance_url:
        raise ConfigError("--balance", balance_url, "a serial URL or 'sim:mtsics'/'sim:sbi' (or [balance] url)")
    requested = parse_rate_request(args.rate, field_name="--rate") if args.rate else None
    rate = requested.nl_per_h if requested is not None else profile.rate_nl_per_h
    if rate is None:
        raise ConfigError("--rate", None, "a rate with unit such as 0.5mL/h (or [test] rate in the profile)")
    syringe_mm = parse_syringe_mm(args.syringe, field_name="--syringe") if args.syringe else profile.syringe_diameter_mm
    if syringe_mm is None:
        raise ConfigError("--syringe", None, "a preset or diameter such as 14.57mm (or [syringe] spec)")
    fields: dict[str, Any] = {
        "max_unstable_fraction": args.max_unstable,
        "max_missing_fraction": args.max_missing,
    }
    for name, arg, from_profile in (
        ("duration_s", args.duration, profile.duration_s),
        ("interval_s", args.interval, profile.interval_s),
        ("stabilisation_s", args.stabilise, profile.stabilisation_s),
    ):
        value = parse_duration_s(arg, field_name=f"--{name[:-2]}") if arg else from_profile
        if value is not None:
            fields[name] = value
    temperature = args.water_temp if args.water_temp is not None else profile.water_temperature_c
    if temperature is not None:
        fields["water_temperature_c"] = temperature
    if profile.evaporation_ug_per_h is not None:
        fields["evaporation_ug_per_h"] = profile.evaporation_ug_per_h
    if profile.air_buoyancy_correction is not None:
        fields["air_buoyancy_correction"] = profile.air_buoyancy_correction

    simulated_pump = pump_url == SIM_PUMP
    simulated_balance = balance_url.startswith(SIM_BALANCE_PREFIX)
    if simulated_pump != simulated_balance:
        raise ConfigError(
            "--balance", balance_url, "'sim:mtsics' or 'sim:sbi' exactly when --pump is 'sim' (both or neither)"
        )

    sim_only = {
        "--bias-pct": args.bias_pct,
        "--noise-pct": args.noise_pct,
        "--balance-noise-ug": args.balance_noise_ug,
        "--balance-resolution-ug": args.balance_resolution_ug,
        "--seed": args.seed,
        "--link": args.link,
        "--fault": args.fault or None,
    }
    if not simulated_pump:
        for option, value in sim_only.items():
            if value is not None:
                raise ConfigError(option, value, "given only with --pump sim (it sets up the simulated rig)")

    def progress(sample: Any, total: int) -> None:
        """Print every tenth sample of a real-time run to stderr."""
        if not simulated_pump and (sample.index % 10 == 0 or sample.index == total - 1):
            mass = "missing" if sample.mass_ug is None else f"{sample.mass_ug} µg"
            print(f"sample {sample.index + 1}/{total}: {mass}", file=sys.stderr, flush=True)

    if args.report:
        from pathlib import Path

        claim(Path(args.report), (SAMPLES_FILE,), Existing.NEW_RUN if args.new_run else Existing.REFUSE,
              option="--report")
    simulation = None
    if simulated_pump:
        from hil.gravimetric.simrig import RigSettings, run_simulated_accuracy
        from hil.output import software

        rig = RigSettings(
            balance_url[len(SIM_BALANCE_PREFIX):],
            link=args.link or "inprocess",
            seed=args.seed or 0,
            bias_pct=args.bias_pct or 0.0,
            noise_pct=args.noise_pct or 0.0,
            faults=tuple(args.fault),
            balance_options={
                "noise_ug": 5.0 if args.balance_noise_ug is None else args.balance_noise_ug,
                "resolution_ug": 10 if args.balance_resolution_ug is None else args.balance_resolution_ug,
            },
        )
        simulation = rig.description(software()["version"])
        # The simulated water takes the run's temperature, evaporation and air (simrig.water_options).
        result = run_simulated_accuracy(
            rig,
            rate,
            syringe_diameter_mm=syringe_mm,
            report_dir=args.report,
            limit_pct=limit_pct,
            simulation=simulation,
            **fields,
        )
    else:
        result = run_accuracy(
            pump_url,
            balance_url,
            rate,
            syringe_diameter_mm=syringe_mm,
            pump_driver=args.pump_driver or profile.pump.driver or "ne1000",
            balance_driver=args.balance_driver or profile.balance.driver or "mtsics",
            pump_options=profile.pump.open_options(),
            balance_options=profile.balance.open_options(),
            report_dir=args.report,
            on_sample=progress,
            limit_pct=limit_pct,
            **fields,
        )
    analysis = result.analysis
    document = summary(result.measurement, analysis, limit_pct=limit_pct, simulation=simulation)
    if requested is not None and requested.exact_nl_per_h != requested.nl_per_h and args.json:
        print(f"itb: --rate {requested.describe()}", file=sys.stderr)  # stdout is the summary document only
    if args.json:
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        if requested is not None and requested.exact_nl_per_h != requested.nl_per_h:
            print(f"rate: {requested.describe()}")
        held = result.measurement.held_rate_nl_per_h
        if held is not None and held != rate:
            print(f"rate: the pump holds {held} nL/h ({(held - rate) * 100 / rate:+.3f} % from the {rate} nL/h set)")
        print(f"mean error A: {analysis.mean_error_pct:+.3f} %  (mean flow {analysis.mean_flow_ml_per_h:.6f} mL/h, "
              f"set {analysis.settings.rate_ml_per_h:.6f} mL/h)")
        for point in analysis.trumpet:
            print(f"  {point.window_min:>3} min window: max {point.max_error_pct:+.3f} %  min {point.min_error_pct:+.3f} %")
        if limit_pct is not None:
            verdict = "within" if document["passed"] else "OUTSIDE"
            print(f"mean error {verdict} the limit of ±{limit_pct:g} %")
        if result.report_dir is not None:
            print(f"report: {result.report_dir / 'report.html'}")
    return int(ExitStatus.OK if document["passed"] else ExitStatus.CHECK_FAILED)


def _balance_target(args: argparse.Namespace) -> tuple[str, str, dict[str, Any]]:
    """(url, driver, open options) for the balance from the arguments and the profile."""
    from cython_ext.errors import ConfigError
    from hil.gravimetric.profile import BenchProfile, load_profile

    profile = load_profile(args.profile) if args.profile else BenchProfile()
    url = args.balance or profile.balance.url
    if not url:
        raise ConfigError("--balance", url, "a serial URL or 'sim:mtsics'/'sim:sbi' (or [balance] url)")
    if url.startswith(SIM_BALANCE_PREFIX):
        return url, url[len(SIM_BALANCE_PREFIX):], {}
    return url, args.balance_driver or profile.balance.driver or "mtsics", profile.balance.open_options()


def _blank(args: argparse.Namespace) -> int:
    import json

    from cython_ext.errors import ConfigError
    from hil.gravimetric.blank import run_blank
    from hil.gravimetric.profile import parse_duration_s

    url, driver, options = _balance_target(args)
    if args.sim_evaporation_ug_per_h is not None and not url.startswith(SIM_BALANCE_PREFIX):
        raise ConfigError("--sim-evaporation-ug-per-h", args.sim_evaporation_ug_per_h, "given only with a sim: balance")
    duration_s = parse_duration_s(args.duration, field_name="--duration")
    interval_s = parse_duration_s(args.interval, field_name="--interval")
    if url.startswith(SIM_BALANCE_PREFIX):
        from hil.gravimetric.simrig import simulated_balance

        sim_options = {
            "evaporation_ug_per_h": args.sim_evaporation_ug_per_h or 0.0,
            "noise_ug": 5.0,
            "resolution_ug": 1,
        }
        with simulated_balance(driver, balance_options=sim_options) as (sim_url, _device, clock):
            result = run_blank(
                sim_url, duration_s=duration_s, interval_s=interval_s, balance_driver=driver, clock=clock
            )
    else:
        result = run_blank(
            url, duration_s=duration_s, interval_s=interval_s, balance_driver=driver, balance_options=options
        )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, sort_keys=True))
    else:
        print(f"slope {result.slope_ug_per_h:+.1f} µg/h over {result.duration_s:g} s ({result.samples} readings, "
              f"residual SD {result.residual_sd_ug:.1f} µg)")
        if result.loss_ug_per_h >= 0:
            print(f"profile: [water] evaporation_ug_per_h = {result.loss_ug_per_h:.1f}")
        else:
            print("the reading rose: this is drift, not evaporation; no evaporation correction applies")
    return 0


def _balance_check(args: argparse.Namespace) -> int:
    from hal.balance import open_balance
    from cython_ext.errors import ConfigError

    if isinstance(args.readings, bool) or args.readings < 1:
        raise ConfigError("--readings", args.readings, "an integer >= 1")
    url, driver, options = _balance_target(args)
    if url.startswith(SIM_BALANCE_PREFIX):
        from hil.gravimetric.simrig import simulated_balance

        with simulated_balance(driver) as (sim_url, _device, clock):
            with open_balance(driver, sim_url, clock=clock) as balance:
                _print_balance(balance, args.readings)
    else:
        with open_balance(driver, url, **options) as balance:
            _print_balance(balance, args.readings)
    return 0


def _print_balance(balance: Any, count: int) -> None:
    identity = balance.identify()
    print(f"{balance.name}: model {identity.model or '?'}, s/n {identity.serial_number or '?'}, "
          f"firmware {identity.firmware or '?'} {identity.capacity}".rstrip())
    for _ in range(count):
        reading = balance.read_immediate()
        flag = "stable" if reading.stable else "dynamic"
        print(f"  {reading.mass_ug} µg ({flag}, last digit {reading.resolution_ug} µg, shown in {reading.unit})")
