"""The drug library as the prescription checks see it: a view of the kernel's ``DrugLimits`` entries."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cython_ext.errors import ConfigError


@dataclass(frozen=True)
class LibraryBounds:
    """Hard and soft limits of one quantity in one drug-library entry (internal units).

    :raises ConfigError: unless ``0 <= lower_hard <= lower_soft <= upper_soft <= upper_hard`` (VAL-03).
    """

    lower_hard: int
    lower_soft: int
    upper_soft: int
    upper_hard: int

    def __post_init__(self) -> None:
        if not 0 <= self.lower_hard <= self.lower_soft <= self.upper_soft <= self.upper_hard:
            raise ConfigError(
                "library.bounds",
                (self.lower_hard, self.lower_soft, self.upper_soft, self.upper_hard),
                "ordered 0 <= lower_hard <= lower_soft <= upper_soft <= upper_hard",
            )


@dataclass(frozen=True)
class LibraryEntry:
    """What the prescription checks need from one drug-library entry (a view of the kernel's ``DrugLimits``).

    :param code: entry code.
    :param concentration_ug_per_ml: the labelled concentration, µg/mL.
    :param screening_only: True for the screening concentration (not for pump programmes).
    :param dose_ng_per_day: bounds of the daily dose, ng/day.
    :param bolus_ng: bounds of a single bolus, ng.
    :param bolus_lockout_ms: bounds of the bolus lockout, ms (None if the library has none).
    :param boluses_per_day: bounds of boluses per day (None if the library has none).
    :param rate_nl_per_h: bounds of any programmed rate, nL/h (None if the library has none).
    """

    code: str
    concentration_ug_per_ml: int
    screening_only: bool
    dose_ng_per_day: LibraryBounds
    bolus_ng: LibraryBounds
    bolus_lockout_ms: LibraryBounds | None = None
    boluses_per_day: LibraryBounds | None = None
    rate_nl_per_h: LibraryBounds | None = None


def _bounds(obj: Any) -> LibraryBounds:
    return LibraryBounds(int(obj.lower_hard), int(obj.lower_soft), int(obj.upper_soft), int(obj.upper_hard))


def _entry_from_kernel(limits: Any) -> LibraryEntry:
    def optional(name: str) -> LibraryBounds | None:
        value = getattr(limits, name, None)
        return _bounds(value) if value is not None and hasattr(value, "upper_hard") else None

    return LibraryEntry(
        code=str(limits.code),
        concentration_ug_per_ml=int(limits.concentration_ug_per_ml),
        screening_only=bool(limits.screening_only),
        dose_ng_per_day=_bounds(limits.dose_ng_per_day),
        bolus_ng=_bounds(limits.bolus_ng),
        bolus_lockout_ms=optional("bolus_lockout_ms"),
        boluses_per_day=optional("boluses_per_day"),
        rate_nl_per_h=optional("rate_nl_per_h"),
    )


def library_from(drug_limits: Mapping[Any, Any] | Sequence[Any]) -> Mapping[str, LibraryEntry]:
    """A prescription library from kernel ``DrugLimits`` entries (a mapping's values, or a sequence).

    :param drug_limits: e.g. ``kernel.DEFAULT_LIBRARY``.
    :return: entries keyed by their code.
    """
    entries = drug_limits.values() if isinstance(drug_limits, Mapping) else drug_limits
    return MappingProxyType({e.code: _entry_from_kernel(e) for e in entries})



@functools.cache
def default_library() -> Mapping[str, LibraryEntry]:
    """The kernel's drug library (``DEFAULT_LIBRARY``), keyed by entry code (built once: it is immutable).

    :raises ImportError: if the safety kernel is not built (see ``cython_ext``); the
        library is never silently taken from elsewhere.
    """
    # Deferred: the kernel selector raises ImportError without the compiled core, and a file
    # can still be parsed against an explicit library (the twin's, in tests) without it.
    from cython_ext import kernel

    return library_from(kernel.DEFAULT_LIBRARY)
