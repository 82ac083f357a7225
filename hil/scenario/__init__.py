"""Scenario files and their runner.

- :mod:`hil.scenario.schema` -- reading a scenario file (through :mod:`cython_ext.fields`), loading;
- :mod:`hil.scenario.model` -- the validated tables, actions and expectations;
- :mod:`hil.scenario.params` -- every action's and expectation's parameters and their readers;
- :mod:`hil.scenario.prescribed` -- the scenario's prescription file and what it sets;
- :mod:`hil.scenario.runner` -- :class:`ScenarioRunner`: a rig, the controller through its
  front door, the timed actions and the checks.
"""

from hil.scenario.runner import RunOptions, ScenarioRunner, run_scenario
from hil.scenario.schema import (
    DEFAULT_SCENARIO,
    PRESCRIPTION_DIR,
    SCENARIO_DIR,
    Scenario,
    load_scenario,
    parse_scenario,
    shipped_scenarios,
)

__all__ = [
    "DEFAULT_SCENARIO",
    "PRESCRIPTION_DIR",
    "SCENARIO_DIR",
    "RunOptions",
    "Scenario",
    "ScenarioRunner",
    "load_scenario",
    "parse_scenario",
    "run_scenario",
    "shipped_scenarios",
]
