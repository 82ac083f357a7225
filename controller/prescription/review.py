"""Reviewing a prescription before it takes effect: soft-limit breaches (PRX-02) and tenfold changes (VAL-02)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from controller.prescription import library as drug_library
from controller.prescription.library import LibraryBounds, LibraryEntry
from controller.prescription.model import Prescription, ProgrammeMode, SoftLimitOverride
from cython_ext import fields, units
from cython_ext.errors import ConfigError

#: A value at least this many times, or at most 1/this of, the current one needs confirmation (VAL-02).
MAGNITUDE_FACTOR = 10


def file_value(field: str, internal: int) -> Decimal:
    """A value in internal units shown in the unit its dotted file ``field`` names.

    ``file_value("programme.dose_ug_per_day", 400_000) == Decimal("400")``;
    ``file_value("patient_bolus.lockout_min", 14_400_000) == Decimal("240")``.

    :param field: dotted file path (its last part carries the unit).
    :param internal: the value in ng, ng/day, nL, ms or plain count.
    :return: the exact value in the file's unit.
    """
    name = field.rsplit(".", 1)[-1]
    if name.endswith(("_ug", "_ug_per_day")):
        scale = units.NG_PER_UG
    elif name.endswith("_ml"):
        scale = units.NL_PER_ML
    elif name.endswith("_min"):
        scale = units.MS_PER_MIN
    elif name.endswith("_h"):
        scale = units.MS_PER_H
    else:
        scale = 1
    return units.units_to_decimal(internal, scale).normalize() + 0


@dataclass(frozen=True)
class SoftLimitBreach:
    """A value outside the drug library's soft limits (inside its hard limits).

    :param field: dotted file path of the value to change (or override).
    :param value: the value, internal units of ``quantity``.
    :param bound: ``"lower_soft"`` or ``"upper_soft"``.
    :param limit: the soft limit, same units.
    :param overridden_by: the matching override, if the prescription has one.
    :param quantity: the library quantity (``dose_ng_per_day``, ``bolus_ng``, ``rate_nl_per_h``,
        ``bolus_lockout_ms``, ``boluses_per_day``).
    """

    field: str
    value: int
    bound: str
    limit: int
    overridden_by: SoftLimitOverride | None = None
    quantity: str = "dose_ng_per_day"

    @property
    def kernel_reason(self) -> str | None:
        """The safety kernel's reason code for this breach (``DOSE_ABOVE_SOFT``...), or None where the
        kernel has no soft limit of its own (lockout, boluses per day)."""
        side = "ABOVE" if self.bound == "upper_soft" else "BELOW"
        prefix = {"dose_ng_per_day": "DOSE", "bolus_ng": "BOLUS", "rate_nl_per_h": "RATE"}.get(self.quantity)
        return f"{prefix}_{side}_SOFT" if prefix else None

    def value_text(self) -> str:
        """The value in display units (``1200 ug/day``, ``169784 nL/h``)."""
        return _quantity_text(self.quantity, self.value)

    def limit_text(self) -> str:
        """The soft limit in display units."""
        return _quantity_text(self.quantity, self.limit)


_QUANTITY_UNITS: Mapping[str, tuple[int, str]] = MappingProxyType(
    {
        "dose_ng_per_day": (units.NG_PER_UG, "ug/day"),
        "bolus_ng": (units.NG_PER_UG, "ug"),
        "rate_nl_per_h": (1, "nL/h"),
        "bolus_lockout_ms": (units.MS_PER_MIN, "min"),
        "boluses_per_day": (1, "per day"),
    }
)


def _quantity_text(quantity: str, internal: int) -> str:
    scale, unit = _QUANTITY_UNITS.get(quantity, (1, ""))
    return f"{units.units_to_decimal(internal, scale).normalize() + 0:f} {unit}".rstrip()


def _soft_checked_values(p: Prescription) -> Iterator[tuple[str, int, str]]:
    """(dotted field, value, library quantity) for every value with soft limits."""
    if p.programme.mode is ProgrammeMode.FLEX:
        for i, s in enumerate(p.programme.steps):
            yield f"programme.steps[{i}].dose_ug_per_day", s.dose_ng_per_day, "dose_ng_per_day"
    else:
        yield "programme.dose_ug_per_day", p.programme.steps[0].dose_ng_per_day, "dose_ng_per_day"
    if p.programme.mode is not ProgrammeMode.SIMPLE:
        yield "programme.daily_total_ug", p.programme.daily_total_ng(), "dose_ng_per_day"
    basal_rate = p.rate_nl_per_h(p.programme.steps[0].dose_ng_per_day)
    for i, (b, triple) in enumerate(zip(p.programme.periodic_boluses, p.kernel_periodic_boluses(), strict=True)):
        yield f"programme.periodic_boluses[{i}].dose_ug", b.dose_ng, "bolus_ng"
        yield f"programme.periodic_boluses[{i}].duration_min", basal_rate + triple[2], "rate_nl_per_h"
    if p.clinician_bolus.enabled:
        yield "clinician_bolus.max_dose_ug", p.clinician_bolus.max_dose_ng, "bolus_ng"
        yield "clinician_bolus.lockout_min", p.clinician_bolus.lockout_ms, "bolus_lockout_ms"
        yield "clinician_bolus.max_per_day", p.clinician_bolus.max_per_day, "boluses_per_day"
    if p.patient_bolus.enabled:
        yield "patient_bolus.dose_ug", p.patient_bolus.dose_ng, "bolus_ng"
        yield "patient_bolus.lockout_min", p.patient_bolus.lockout_ms, "bolus_lockout_ms"
        yield "patient_bolus.max_per_day", p.patient_bolus.max_per_day, "boluses_per_day"
    yield "titration.max_dose_ug_per_day", p.titration.max_dose_ng_per_day, "dose_ng_per_day"


def soft_limit_breaches(
    p: Prescription, library: Mapping[str, LibraryEntry] | None = None
) -> tuple[SoftLimitBreach, ...]:
    """Every value of ``p`` outside its library soft limits, each with its override if any.

    :param p: the prescription.
    :param library: drug library; defaults to the kernel's ``DEFAULT_LIBRARY``.
    """
    lib = drug_library.default_library() if library is None else library
    entry = lib[p.drug.library_code]
    overrides = {o.field: o for o in p.soft_limit_overrides}
    found = []
    for dotted, value, quantity in _soft_checked_values(p):
        bounds: LibraryBounds | None = getattr(entry, quantity)
        if bounds is None:
            continue
        if value < bounds.lower_soft:
            found.append(
                SoftLimitBreach(dotted, value, "lower_soft", bounds.lower_soft, overrides.get(dotted), quantity)
            )
        elif value > bounds.upper_soft:
            found.append(
                SoftLimitBreach(dotted, value, "upper_soft", bounds.upper_soft, overrides.get(dotted), quantity)
            )
    return tuple(found)


@dataclass(frozen=True)
class MagnitudeChange:
    """A value changed by a factor of :data:`MAGNITUDE_FACTOR` or more, either way (VAL-02).

    :param field: dotted file path of the value.
    :param old: current value, internal units.
    :param new: proposed value, internal units.
    """

    field: str
    old: int
    new: int


def is_magnitude_change(old: int, new: int) -> bool:
    """True if ``new`` is at least 10x, or at most a tenth of, ``old`` (exact integer arithmetic).

    A change from zero to non-zero counts; zero to zero does not.
    """
    if old == new:
        return False
    if old <= 0 or new <= 0:
        return True
    return new >= MAGNITUDE_FACTOR * old or new * MAGNITUDE_FACTOR <= old


def magnitude_changes(current: Prescription, new: Prescription) -> tuple[MagnitudeChange, ...]:
    """Every numeric field present in both prescriptions whose value changed tenfold or more."""
    old_fields = current.numeric_fields()
    return tuple(
        MagnitudeChange(name, old_fields[name], value)
        for name, value in new.numeric_fields().items()
        if name in old_fields and is_magnitude_change(old_fields[name], value)
    )


@dataclass(frozen=True)
class ChangeAssessment:
    """What a prescription change needs before it may take effect.

    :param current: the prescription in effect (None for the first one).
    :param new: the proposed prescription.
    :param magnitude_changes: tenfold changes (each needs confirmation, VAL-02).
    :param soft_limit_breaches: soft-limit breaches of ``new`` (each needs an override, PRX-02).
    :param confirmed_magnitude_fields: fields whose tenfold change was confirmed.
    """

    current: Prescription | None
    new: Prescription
    magnitude_changes: tuple[MagnitudeChange, ...]
    soft_limit_breaches: tuple[SoftLimitBreach, ...]
    confirmed_magnitude_fields: frozenset[str] = frozenset()

    @property
    def unconfirmed_magnitude_changes(self) -> tuple[MagnitudeChange, ...]:
        """Tenfold changes nobody has confirmed."""
        return tuple(c for c in self.magnitude_changes if c.field not in self.confirmed_magnitude_fields)

    @property
    def unoverridden_breaches(self) -> tuple[SoftLimitBreach, ...]:
        """Soft-limit breaches without an override."""
        return tuple(b for b in self.soft_limit_breaches if b.overridden_by is None)

    @property
    def acceptable(self) -> bool:
        """True when every tenfold change is confirmed and every soft-limit breach overridden."""
        return not self.unconfirmed_magnitude_changes and not self.unoverridden_breaches

    def kernel_override_kwargs(self) -> dict[str, Any] | None:
        """Keyword arguments for the kernel's ``make_override`` lifting exactly the soft limits this
        prescription overrides (``codes``, ``reason``, ``actor``), or None if it overrides none
        the kernel knows. Journal the overrides before using it (PRX-02)."""
        overridden = [b for b in self.soft_limit_breaches if b.overridden_by is not None and b.kernel_reason]
        if not overridden:
            return None
        return {
            "codes": frozenset(b.kernel_reason for b in overridden),
            "reason": "; ".join(sorted({f"{b.field}: {b.overridden_by.reason}" for b in overridden})),  # type: ignore[union-attr]
            "actor": ", ".join(sorted({b.overridden_by.prescriber for b in overridden})),  # type: ignore[union-attr]
        }

    def require_acceptable(self) -> None:
        """Raise for the first unconfirmed tenfold change or unoverridden soft-limit breach.

        :raises ConfigError: naming the field, the value and what it needs.
        """
        for change in self.unconfirmed_magnitude_changes:
            raise ConfigError(
                change.field,
                fields.plain(f"{file_value(change.field, change.new):f}"),
                f"less than {MAGNITUDE_FACTOR}x and more than 1/{MAGNITUDE_FACTOR} of the current "
                f"{file_value(change.field, change.old):f}, or confirmed",
                detail="tenfold change needs magnitude confirmation (VAL-02)",
                error_code="MAGNITUDE_UNCONFIRMED",
            )
        for breach in self.unoverridden_breaches:
            op = ">=" if breach.bound == "lower_soft" else "<="
            raise ConfigError(
                breach.field,
                fields.plain(breach.value_text()),
                f"{op} {breach.limit_text()} (soft limit) or overridden with a reason by a prescriber",
                detail="soft-limit breach needs an override (PRX-02)",
                error_code="SOFT_LIMIT_NOT_OVERRIDDEN",
            )


def assess_change(
    current: Prescription | None,
    new: Prescription,
    *,
    confirmed_magnitude_fields: frozenset[str] | set[str] = frozenset(),
    library: Mapping[str, LibraryEntry] | None = None,
) -> ChangeAssessment:
    """Check a proposed prescription against the one in effect.

    :param current: the prescription in effect, or None for the first prescription.
    :param new: the proposed prescription.
    :param confirmed_magnitude_fields: dotted fields whose tenfold change the user confirmed.
    :param library: drug library; defaults to the kernel's ``DEFAULT_LIBRARY``.
    :return: the assessment; call :meth:`ChangeAssessment.require_acceptable` before applying.
    """
    changes = magnitude_changes(current, new) if current is not None else ()
    return ChangeAssessment(
        current=current,
        new=new,
        magnitude_changes=changes,
        soft_limit_breaches=soft_limit_breaches(new, library),
        confirmed_magnitude_fields=frozenset(confirmed_magnitude_fields),
    )

