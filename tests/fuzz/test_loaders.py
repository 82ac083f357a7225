"""Fuzz the loaders (issue #15): whatever the bytes, a valid object or a ConfigError naming a field.

Three sources, derandomized (the ``ci`` Hypothesis profile) so every CI run feeds the same
inputs: documents generated from known and random keys with odd values, the shipped files
edited byte by byte and value by value, and random bytes. Every problem must be a
:class:`~cython_ext.fields.FieldError` with a field, an allowed range and a one-line
message, at a line of the file. Nothing can hang: the loaders bound every input by
:data:`~cython_ext.fields.DEFAULT_LIMITS` before parsing it, and ``test_limits.py`` bounds
the work an input at those limits costs, so no timeout is needed to say so.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.prescription import Prescription, library_from, parse_prescription
from cython_ext.errors import ConfigError
from cython_ext.fields import FieldError, FileErrors
from hil.gravimetric.profile import BenchProfile, parse_profile
from hil.scenario.schema import SCENARIO_DIR, Scenario, parse_scenario
from sim.population import Population, parse_population
from tests.fuzz.inputs import FED, SHIPPED_BYTES, Edit, apply, documents, recipes, write_toml

LIBRARY = library_from(importlib.import_module("cython_ext._kernel_py").DEFAULT_LIBRARY)

#: Each loader, and the type of what it returns for a valid file.
LOADERS: dict[str, tuple[Callable[[bytes], Any], type]] = {
    "prescription": (lambda data: parse_prescription(data, library=LIBRARY, source="fuzz.toml"), Prescription),
    "scenario": (lambda data: parse_scenario(data, source="fuzz.toml", base_dir=SCENARIO_DIR), Scenario),
    "profile": (lambda data: parse_profile(data, source="fuzz.toml"), BenchProfile),
    "population": (lambda data: parse_population(data, source="fuzz.toml"), Population),
}
#: Hypothesis examples per test. Each generated document and random input goes to all four
#: loaders, and each edit recipe is applied to every shipped file of its kind, so a run feeds
#: 4 x 500 + 4 x 400 + 9 x 250 (prescriptions) + 8 x 150 (scenarios) + 1 x 300 (the profile)
#: + 1 x 300 (the population) = 7650 inputs to the loaders.
GENERATED, RANDOM = 500, 400
MUTATED = {"prescription": 250, "scenario": 150, "profile": 300, "population": 300}


def fuzz(examples: int) -> settings:
    """The fuzz settings: the profile's (derandomized), ``examples`` examples, no health check on size or speed."""
    return settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def load(kind: str, data: bytes) -> Any:
    """Run one loader; return its object, or the ConfigError after checking that it is well formed."""
    parse, returns = LOADERS[kind]
    FED[f"the {kind} loader"] += 1
    try:
        result = parse(data)
    except ConfigError as exc:
        assert_well_formed(exc, data)
        return exc
    assert isinstance(result, returns)
    return result


def assert_well_formed(exc: ConfigError, data: bytes) -> None:
    """Every problem names a field and what is allowed, in one printable line, at a line the file has."""
    assert isinstance(exc, FileErrors), f"{type(exc).__name__}: {exc}"
    assert exc.errors
    lines = data.count(b"\n") + 1
    for problem in exc.errors:
        assert isinstance(problem, FieldError)
        assert problem.field and isinstance(problem.field, str)
        assert problem.allowed
        text = problem.one_line()
        assert text.isprintable() and len(text) < 1500, text
        if problem.source == "fuzz.toml" and problem.line is not None:
            assert 1 <= problem.line <= lines, text
    assert str(exc).split("\n")[0] == exc.errors[0].one_line()


@fuzz(GENERATED)
@given(doc=documents)
def test_generated_documents_load_or_fail_with_a_named_field(doc: dict[str, Any]) -> None:
    data = write_toml(doc)[0].encode("utf-8", "surrogatepass")
    for kind in LOADERS:
        load(kind, data)


@fuzz(RANDOM)
@given(data=st.one_of(st.binary(max_size=300), st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_random_bytes_fail_with_a_named_field(data: bytes) -> None:
    for kind in LOADERS:
        result = load(kind, data)
        assert isinstance(result, ConfigError) or kind == "profile"  # an empty profile is a valid one


def _edited_files_test(kind: str) -> Callable[..., None]:
    @fuzz(MUTATED[kind])
    @given(recipe=recipes)
    def test(recipe: list[Edit]) -> None:
        for original in SHIPPED_BYTES[kind]:
            load(kind, apply(recipe, original))

    test.__doc__ = f"Every shipped {kind} file, edited by the same recipe, loads or fails with a named field."
    return test


test_edited_prescriptions_load_or_fail_with_a_named_field = _edited_files_test("prescription")
test_edited_scenarios_load_or_fail_with_a_named_field = _edited_files_test("scenario")
test_edited_profiles_load_or_fail_with_a_named_field = _edited_files_test("profile")
test_edited_populations_load_or_fail_with_a_named_field = _edited_files_test("population")
