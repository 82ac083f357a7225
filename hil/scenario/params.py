"""The parameters of every scenario action and expectation, and how each is read.

:data:`ACTION_FIELDS` and :data:`EXPECT_FIELDS` map each ``do`` / ``check`` to its keys,
each key to a reader of the field kit (:mod:`cython_ext.fields`: ``read(value, field)``)
and a default (``...``: required; None: optional). Units are in every key; the value read
is in the integer units its name says (``_ms``, ``_nl``) or an exact :class:`~decimal.Decimal`.
Decimal quantities may be written as TOML numbers or as decimal strings (``"0.048"``).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from cython_ext import fields
from cython_ext.errors import ConfigError
from cython_ext.units import MS_PER_DAY, MS_PER_H, MS_PER_MIN, NL_PER_ML
from cython_ext.vocabulary import MAX_DEAD_VOLUME_NL, MAX_FLEX_STEPS, CatheterFill

_AT_RE = re.compile(r"\s*(\d{1,4})d\s+(\d{2}):(\d{2})\s*")
_AT_TEXT = "a time such as \"2d 09:30\""


def parse_at(value: Any, field: str) -> int:
    """``"<days>d <HH>:<MM>"`` after the scenario start, in ms.

    :raises ConfigError: anything else, or hours past 23 or minutes past 59.
    """
    match = _AT_RE.fullmatch(value) if isinstance(value, str) and len(value) <= 40 else None
    if match is None:
        raise ConfigError(field, fields.shown(value), _AT_TEXT)
    days, hours, minutes = (int(g) for g in match.groups())
    if hours > 23 or minutes > 59:
        raise ConfigError(field, value, "hours 00-23 and minutes 00-59")
    return days * MS_PER_DAY + hours * MS_PER_H + minutes * MS_PER_MIN


def dose_ug(value: Any, field: str) -> int:
    """A bolus or screening dose, whole µg."""
    return fields.integer(value, field, 1, 100_000, "ug")


def dose_ug_per_day(value: Any, field: str, low: int = 1) -> int:
    """A daily dose, whole µg/day."""
    return fields.integer(value, field, low, 100_000, "ug/day")


def percent(value: Any, field: str) -> Decimal:
    """A tolerance, exact %."""
    return fields.decimal(value, field, 0, 1000, "%", strings=True)


def concentration(value: Any, field: str) -> int:
    """A drug concentration, whole µg/mL."""
    return fields.integer(value, field, 1, 100_000, "ug/mL")


def ml_to_nl(value: Any, field: str) -> int:
    """A volume in mL, as nL."""
    return fields.scaled(value, field, NL_PER_ML, 0, 1000 * NL_PER_ML, "mL", strings=True)


def dead_volume_ml_to_nl(value: Any, field: str) -> int:
    """A catheter and tubing dead volume in mL (more than 0, at most 1 mL), as nL."""
    return fields.scaled(value, field, NL_PER_ML, 0, MAX_DEAD_VOLUME_NL, "mL", low_open=True, strings=True)


def whole_percent(value: Any, field: str, high: int) -> Decimal:
    """A percentage that must be a whole number in [0, ``high``] %, as an exact decimal."""
    number = fields.decimal(value, field, 0, high, "%", strings=True)
    if number != number.to_integral_value():
        raise ConfigError(field, fields.shown(value), f"a whole number in [0, {high}] %")
    return number


def min_to_ms(value: Any, field: str) -> int:
    """A duration in minutes (more than 0, at most a day), as ms."""
    return fields.scaled(value, field, MS_PER_MIN, 0, MS_PER_DAY, "min", low_open=True, strings=True)


def h_to_ms(value: Any, field: str) -> int:
    """A duration in hours (at most a year), as ms."""
    return fields.scaled(value, field, MS_PER_H, 0, 24 * 365 * MS_PER_H, "h", strings=True)


def count(value: Any, field: str) -> int:
    """A number of events."""
    return fields.integer(value, field, 0, 1000)


#: Device faults an action can inject at a time (wire faults go in ``[pump] faults``, see :mod:`sim.faults`).
FAULT_KINDS = ("stall", "occlusion", "power_cycle", "seize")
#: Controller modes ``mode_at_end`` may expect.
END_MODES = ("idle", "running", "minimum_rate", "stopped_fault", "discontinued", "procedure")


def fault_kind(value: Any, field: str) -> str:
    """One of :data:`FAULT_KINDS`."""
    return fields.choice(value, field, FAULT_KINDS)


def flex_steps(value: Any, field: str) -> tuple[tuple[int, int], ...]:
    """``[["00:00", 300], ["08:00", 450], ...]``: step start (time of day) and daily dose, as (ms, ng/day)."""
    allowed = f"1 to {MAX_FLEX_STEPS} [\"HH:MM\", dose_ug_per_day] pairs"
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_FLEX_STEPS:
        raise ConfigError(field, fields.shown(value), allowed)
    steps = []
    for index, item in enumerate(value):
        if not isinstance(item, list) or len(item) != 2:
            raise ConfigError(f"{field}[{index}]", fields.shown(item), "a [\"HH:MM\", dose_ug_per_day] pair")
        start = parse_at(f"0d {item[0]}" if isinstance(item[0], str) else item[0], f"{field}[{index}][0]")
        dose = dose_ug_per_day(item[1], f"{field}[{index}][1]")
        steps.append((start, dose * 1000))
    if steps[0][0] != 0 or any(b[0] <= a[0] for a, b in zip(steps, steps[1:])):
        raise ConfigError(field, fields.shown(value), "steps starting at \"00:00\" in increasing time order")
    return tuple(steps)


#: Every action and its parameters: name -> {key: (reader, default)}; ``...`` = required.
ACTION_FIELDS: dict[str, dict[str, tuple[Any, Any]]] = {
    "screening_dose": {
        "dose_ug": (dose_ug, ...),
        "adequate": (fields.boolean, ...),
        "effect_h": (lambda v, f: fields.decimal(v, f, 0, 48, "h", strings=True), Decimal(0)),
    },
    "implant": {
        "concentration_ug_per_ml": (concentration, None),  # required without a prescription; absent with one
        "fill_ml": (ml_to_nl, None),
        "dose_ug_per_day": (dose_ug_per_day, None),
        "prime": (fields.boolean, None),  # default: prime a saline catheter, never a drug-filled one
        "catheter": (lambda v, f: fields.choice(v, f, [c.value for c in CatheterFill]), CatheterFill.SALINE.value),
    },
    "titrate": {
        "dose_ug_per_day": (lambda v, f: dose_ug_per_day(v, f, low=0), None),
        "change_pct": (lambda v, f: fields.decimal(v, f, -100, 1000, "%", strings=True), None),
        "reason": (fields.text, "clinical response"),
        "override_reason": (fields.text, None),
    },
    "flex": {
        "steps": (flex_steps, ...),
        "override_reason": (fields.text, None),
    },
    "clinician_bolus": {
        "dose_ug": (dose_ug, ...),
        "duration_min": (min_to_ms, 10 * MS_PER_MIN),
    },
    "prime": {
        "duration_min": (min_to_ms, None),  # default: the first priming's rate for the saline left
    },
    "configure_patient_bolus": {
        "dose_ug": (dose_ug, None),  # required without a prescription; absent with one
        "duration_min": (min_to_ms, None),  # default 10 min without a prescription
    },
    "patient_bolus": {},
    "refill": {
        "removed_ml": (ml_to_nl, ...),
        "added_ml": (ml_to_nl, ...),
        "concentration_ug_per_ml": (concentration, ...),
        "lot": (fields.text, "unrecorded"),
        "acknowledge_mismatch": (fields.boolean, False),
        "complete": (fields.boolean, True),
    },
    "fault": {
        "kind": (fault_kind, ...),
        "count": (lambda v, f: fields.integer(v, f, 1, 100), 1),
    },
    "clear_fault": {
        "kind": (fault_kind, ...),
    },
    "acknowledge_alarms": {},
    "taper": {
        "target_dose_ug_per_day": (lambda v, f: dose_ug_per_day(v, f, low=0), ...),
        "authorised_by": (fields.person, ...),
    },
    "discontinue": {
        "authorised_by": (fields.person, None),
        "emergency": (fields.boolean, False),
    },
    "begin_procedure": {
        "kind": (lambda v, f: fields.choice(v, f, ("mri",)), "mri"),
        "authorised_by": (fields.person, ...),
        "expected_duration_min": (min_to_ms, ...),
        "zero_rate_required": (fields.boolean, None),  # default: the kind's labelling (an MRI: zero)
    },
    "end_procedure": {},
    "restart_controller": {},
    "replay": {
        "of": (fields.text, ...),
    },
}

#: Every expectation and its parameters, as :data:`ACTION_FIELDS`.
EXPECT_FIELDS: dict[str, dict[str, tuple[Any, Any]]] = {
    "dose_within": {"tolerance_pct": (percent, ...)},
    "alarm_raised": {"code": (fields.text, ...)},
    "alarm_not_raised": {"code": (fields.text, ...)},
    "denied": {"action": (fields.text, ...), "reason": (fields.text, None)},
    "allowed": {"action": (fields.text, ...)},
    "no_overdose": {},
    "no_severe_withdrawal": {},
    "ashworth_at_most": {"score": (lambda v, f: fields.decimal(v, f, 0, 4, strings=True), ...)},
    "boluses_delivered": {"kind": (fields.text, ...), "count": (count, ...)},
    "transits_hold_tip_dose": {"count": (count, ...), "tolerance_pct": (percent, ...)},
    "invariants_hold": {},
    "mode_at_end": {"mode": (lambda v, f: fields.choice(v, f, END_MODES), ...)},
}


def read_params(table: fields.Table, spec: dict[str, tuple[Any, Any]],
                skipped: tuple[str, ...] = ()) -> dict[str, Any]:
    """Every parameter of ``spec`` from ``table``: read, defaulted, or :data:`~cython_ext.fields.INVALID`.

    :param skipped: keys not read (a prescription sets them): they take their default.
    """
    return {key: default if key in skipped
            else table.get(key, reader, default=fields.REQUIRED if default is ... else default)
            for key, (reader, default) in spec.items()}
