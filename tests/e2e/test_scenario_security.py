"""The shipped ``security`` scenario (SEC-01, SEC-03): its expectations pass, and they fail when the rule breaks.

The rule is broken on purpose twice, in memory: a role table that lets the patient titrate,
and a store that forgets every nonce. Each time the scenario must fail on the expectation
that names the rule, so the scenario is a test that can fail.
"""

from __future__ import annotations

from types import MappingProxyType

import pytest

from controller import roles
from controller.audit import Role
from controller.store import Store
from hil.scenario import RunOptions, ScenarioRunner, load_scenario


def _failed() -> list[str]:
    record = ScenarioRunner(load_scenario("security"), RunOptions(link="inprocess")).run()
    assert record.error in (None, ""), record.error
    return [c.name for c in record.expectations + record.invariants if not c.passed]


def test_sec01_sec03_the_security_scenario_passes() -> None:
    assert _failed() == []


def test_sec01_a_patient_allowed_to_titrate_fails_the_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    lax = dict(roles.PERMISSIONS)
    lax["titrate"] = roles.Permission((Role.CLINICIAN, Role.PATIENT), confirmation=roles.Confirmation.REAUTHENTICATE,
                                      high_risk_when=("override_reason",))
    monkeypatch.setattr(roles, "PERMISSIONS", MappingProxyType(lax))
    failed = _failed()
    assert "patient-raise denied with ROLE_NOT_PERMITTED" in failed
    assert "clinician-raise allowed" in failed  # the patient's raise took the day's titration step


def test_sec03_a_store_that_forgets_nonces_fails_the_scenario(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Store, "nonce_used", lambda self, nonce: False)
    monkeypatch.setattr(Store, "use_nonce", lambda self, nonce, key_id, issued_utc: None)
    assert "replayed denied with REPLAYED_NONCE" in _failed()


_HEAD = """
[scenario]
name = "s"
duration_days = 2
prescription = "spinal_simple_500.toml"

[[action]]
at = "0d 09:00"
do = "implant"
"""


@pytest.mark.parametrize(("action", "field"), [
    ('do = "titrate"\nchange_pct = 10\nrole = "surgeon"', "action[1].role"),
    ('do = "titrate"\nchange_pct = 10\nsigned = "yes"', "action[1].signed"),
    ('do = "replay"\nof = "implant-label"', "action[1].of"),
])
def test_the_scenario_fields_who_acts_are_checked(action: str, field: str) -> None:
    from cython_ext.errors import ConfigError
    from hil.scenario import parse_scenario

    with pytest.raises(ConfigError) as info:
        parse_scenario(_HEAD + f'\n[[action]]\nat = "1d 09:00"\n{action}\n')
    assert info.value.field == field


def test_a_scenario_whose_prescription_is_unsigned_is_refused_at_the_front_door(tmp_path) -> None:
    from controller.signing import SignatureError
    from hil.scenario import parse_scenario
    from hil.scenario.schema import PRESCRIPTION_DIR

    (tmp_path / "rx.toml").write_bytes((PRESCRIPTION_DIR / "spinal_simple_500.toml").read_bytes())
    scenario = parse_scenario(_HEAD.replace("spinal_simple_500.toml", "rx.toml"), base_dir=tmp_path)
    with pytest.raises(SignatureError, match="UNSIGNED"):
        ScenarioRunner(scenario, RunOptions(link="inprocess")).run()
