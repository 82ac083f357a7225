"""Opt-in hardware tests: the balance driver suite and a short accuracy run on a real bench.

Skipped unless ``pytest --hil-env bench.toml`` (a bench profile, see
``hil/profiles/bench.example.toml``) or ``ITB_HIL_*`` variables are given:
``ITB_HIL_BALANCE_URL``, ``ITB_HIL_BALANCE_DRIVER`` (mtsics/sbi),
``ITB_HIL_PUMP_URL``, ``ITB_HIL_SYRINGE`` (e.g. ``bd-10ml``) and
``ITB_HIL_RATE`` (e.g. ``1mL/h``). A test whose device is not named skips
itself. The accuracy run lasts ``ITB_HIL_DURATION`` (default 10min) of real
time and delivers water into the beaker on the balance.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from hal.balance import BalanceDriver, open_balance
from hil.gravimetric.profile import (
    BenchProfile,
    load_profile,
    parse_duration_s,
    parse_rate_nl_per_h,
    parse_syringe_mm,
)

pytestmark = pytest.mark.hil


@pytest.fixture(scope="module")
def profile(pytestconfig: pytest.Config) -> BenchProfile:
    path = pytestconfig.getoption("--hil-env")
    return load_profile(path) if path else BenchProfile()


def _setting(env: str, from_profile: object) -> object:
    return os.environ.get(env) or from_profile


@pytest.fixture
def balance(profile: BenchProfile) -> Iterator[BalanceDriver]:
    url = _setting("ITB_HIL_BALANCE_URL", profile.balance.url)
    if not url:
        pytest.skip("no balance on this bench (ITB_HIL_BALANCE_URL or [balance] url)")
    driver = str(_setting("ITB_HIL_BALANCE_DRIVER", profile.balance.driver) or "mtsics")
    with open_balance(driver, str(url), **profile.balance.open_options()) as opened:
        yield opened


def test_balance_identifies(balance: BalanceDriver) -> None:
    identity = balance.identify()
    assert identity.model or identity.serial_number


def test_balance_reads_stable_and_immediate(balance: BalanceDriver) -> None:
    stable = balance.read_stable(timeout_s=30)
    assert stable.stable
    assert stable.resolution_ug >= 1
    immediate = balance.read_immediate()
    assert abs(immediate.mass_ug - stable.mass_ug) < 1_000_000  # nothing added or removed in between


def test_balance_streams(balance: BalanceDriver) -> None:
    readings = list(balance.stream(max_readings=3))
    assert len(readings) == 3
    assert balance.read_immediate() is not None  # commands work again after the stream


def test_short_accuracy_run(profile: BenchProfile, tmp_path_factory: pytest.TempPathFactory) -> None:
    from hil.gravimetric.procedure import run_accuracy

    pump_url = _setting("ITB_HIL_PUMP_URL", profile.pump.url)
    balance_url = _setting("ITB_HIL_BALANCE_URL", profile.balance.url)
    if not pump_url or not balance_url:
        pytest.skip("needs both a pump and a balance")
    syringe = os.environ.get("ITB_HIL_SYRINGE")
    diameter = parse_syringe_mm(syringe) if syringe else profile.syringe_diameter_mm
    rate_text = os.environ.get("ITB_HIL_RATE")
    rate = parse_rate_nl_per_h(rate_text) if rate_text else profile.rate_nl_per_h
    if diameter is None or rate is None:
        pytest.skip("needs a syringe and a rate (ITB_HIL_SYRINGE/ITB_HIL_RATE or the profile)")
    duration = parse_duration_s(os.environ.get("ITB_HIL_DURATION", "10min"))
    report_dir = tmp_path_factory.mktemp("accuracy")
    result = run_accuracy(
        str(pump_url),
        str(balance_url),
        rate,
        syringe_diameter_mm=diameter,
        pump_driver=profile.pump.driver or "ne1000",
        balance_driver=str(_setting("ITB_HIL_BALANCE_DRIVER", profile.balance.driver) or "mtsics"),
        pump_options=profile.pump.open_options(),
        balance_options=profile.balance.open_options(),
        report_dir=report_dir,
        duration_s=duration,
        water_temperature_c=profile.water_temperature_c or 20.0,
    )
    print(f"mean error {result.mean_error_pct:+.3f} %; report in {report_dir}")
    assert (report_dir / "report.html").exists()
