"""The ``itb`` pytest plugin, as a bench engineer's own repository uses it (run by ``pytester``).

Each test writes a test file into a fresh directory and runs pytest on it in a subprocess,
so the plugin is found through its ``pytest11`` entry point exactly as in another repository.
"""

from __future__ import annotations

import pytest

from controller.signing import DEVELOPMENT_DIR
from hil import cli

pytest_plugins = ("pytester",)

USERS_TESTS = '''
import hal
from hal.balance import open_balance


def test_the_pump_answers_on_its_port(itb_ne1000, itb_clock):
    with hal.open_pump("ne1000", itb_ne1000.url, clock=itb_clock) as pump:
        assert pump.identify().model.startswith("NE")


def test_the_balance_weighs_what_the_pump_delivers(itb_pump, itb_balance, itb_clock):
    url, _device = itb_balance
    with open_balance("mtsics", url, clock=itb_clock) as balance:
        before = balance.read_immediate().mass_ug
        itb_pump.set_rate(1_000_000)
        itb_pump.start()
        itb_clock.advance(3600)
        after = balance.read_immediate().mass_ug
    assert 900_000 < after - before < 1_100_000  # 1 mL of water in an hour, in ug


def test_a_day_of_therapy_through_the_front_door(itb_controller):
    result = itb_controller.implant()
    assert result.allowed, result.reasons
    itb_controller.run_until(itb_controller.now_ms() + 86_400_000)
    assert itb_controller.loop.total_counted_nl > 500_000
    assert itb_controller.store.verify().ok
'''


@pytest.mark.parametrize("link", ["pty", "tcp"])
def test_users_tests_get_a_simulated_rig_and_a_controller(pytester: pytest.Pytester, link: str) -> None:
    pytester.makepyfile(test_users_rig=USERS_TESTS)
    result = pytester.runpytest_subprocess("--itb-link", link, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)


def test_a_users_own_prescription_is_used(pytester: pytest.Pytester) -> None:
    from hil.pytest_plugin import DEFAULT_PRESCRIPTION

    rx = pytester.path / "mine.toml"
    rx.write_text(DEFAULT_PRESCRIPTION.read_text().replace("dose_ug_per_day = 400", "dose_ug_per_day = 300"))
    # A prescription is loaded only with its clinician's signature (SEC-04): here the development clinician's.
    assert cli.main(["prescription", "sign", str(rx), "--key",
                     str(DEVELOPMENT_DIR / "signers" / "clinician.key")]) == 0
    pytester.makepyfile(test_mine='''
def test_it_is_mine(itb_controller):
    assert itb_controller.prescription.programme.steps[0].dose_ng_per_day == 300_000
''')
    pytester.runpytest_subprocess("--itb-prescription", str(rx), "-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_the_options_are_listed_in_help(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["*itb-fil firmware-in-the-loop fixtures*", "*--itb-link*"])
