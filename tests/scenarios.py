"""Scenario files for tests: one transferred patient, implanted once, and whatever a test adds.

Most end-to-end tests need the same opening (a ``[scenario]`` table naming a shipped
prescription, a patient transferred from another pump at 400 µg/day, and an
``implant`` action); :func:`implant_scenario` writes it, and a test appends its own
tables (expectations, faults, more actions) as TOML text.
"""

from __future__ import annotations


def _toml_value(value: str | int) -> str:
    """``"0.125"`` for a string (kept exact, as the scenario schema reads decimals), ``60`` for an int."""
    return f'"{value}"' if isinstance(value, str) else str(value)


def implant_scenario(
    name: str,
    duration_days: str | int,
    implant_at: str,
    *,
    poll_interval_min: int | None = None,
    label: str | None = None,
    extra: str = "",
    prescription: str = "spinal_simple_500.toml",
) -> str:
    """The text of a scenario that implants a transferred patient (prior dose 400 µg/day).

    :param duration_days: the run's length, days (a string for a decimal such as ``"0.125"``).
    :param implant_at: when the implant action runs, as the schema writes it (``"0d 00:30"``).
    :param poll_interval_min: the poll interval, minutes; None leaves the scenario's default.
    :param label: the implant action's label, if any.
    :param extra: TOML appended verbatim after the implant action.
    """
    poll = "" if poll_interval_min is None else f"poll_interval_min = {poll_interval_min}\n"
    implant_label = "" if label is None else f'label = "{label}"\n'
    return (
        f'\n[scenario]\nname = "{name}"\nduration_days = {_toml_value(duration_days)}\n{poll}'
        f'prescription = "{prescription}"\n\n'
        '[patient]\nhistory = "transferred"\nprior_dose_ug_per_day = 400\n\n'
        f'[[action]]\nat = "{implant_at}"\ndo = "implant"\n{implant_label}{extra}'
    )
