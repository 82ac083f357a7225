"""Reservoir and refill arithmetic (itb-clinical section 5; RES-01..06, BOL-06).

The implanted reservoir is not measured: its volume is *predicted* as the
volume filled minus the sum of volumes delivered (RES-01). From the predicted
volume and the programmed daily volume ``Q`` this module derives when the
low-reservoir alarm falls, when the reservoir is empty, and when to refill:

* low alarm on either trigger (RES-02): volume <= ``V_low``, or days to empty <= ``D_low``;
* days to the volume trigger: ``(V - V_low) / Q`` (40 mL, 0.2 mL/day, 2 mL -> 190 days);
* refill date: ``min(low-alarm date - margin (3..5 days), fill date + 180 days)``.

At a refill it checks the volume drawn out against the prediction
(:func:`check_refill`, RES-03: a large gap suggests a pocket fill, a leak or a
delivery fault and needs a clinician's acknowledgement), and it plans the
transit of the old drug at a concentration change and the priming bolus (BOL-06).

All volumes are integer nL, masses ng, times ms; day counts are exact
:class:`~fractions.Fraction` values. Nothing here has side effects.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

from controller.alarms import AlarmCode
from cython_ext import units
from cython_ext.errors import ConfigError

#: Longest interval between refills, days (commercial recommendation, itb-clinical section 5.1).
MAX_REFILL_INTERVAL_DAYS = 180
#: Allowed margin between the refill date and the low-reservoir alarm date, days.
REFILL_MARGIN_DAYS_RANGE = (3, 5)
#: Default margin, days: the earliest (most cautious) end of the range.
DEFAULT_REFILL_MARGIN_DAYS = 5
#: Longest forecast, days; a smaller daily volume than this allows is not a real programme.
MAX_FORECAST_DAYS = 36_500
#: Default refill tolerance: drawn-out volume within this percentage of the prediction ([78STEPS]).
DEFAULT_REFILL_TOLERANCE_PCT = 20
#: Default absolute floor of the refill tolerance, nL (syringe reading error; an assumption to be approved).
DEFAULT_REFILL_TOLERANCE_FLOOR_NL = 200_000


def _int(name: str, value: object, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, value, f"an integer >= {low}")
    if value < low:
        raise ConfigError(name, value, f">= {low}")
    return value


def _aware(name: str, value: object) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ConfigError(name, value, "a timezone-aware datetime")
    return value


def _days(value: Fraction) -> timedelta:
    """An exact day count as a timedelta, to the whole millisecond (rounded down)."""
    return timedelta(milliseconds=int(value * units.MS_PER_DAY))


@dataclass(frozen=True)
class ReservoirSettings:
    """Thresholds of one reservoir (from the prescription's ``[pump]`` table).

    :param capacity_nl: reservoir capacity, nL.
    :param low_alarm_nl: low-reservoir alarm by volume, nL.
    :param low_alarm_days: low-reservoir alarm by days to empty, days.
    :param empty_threshold_nl: volume at which the reservoir counts as empty, nL.
    :raises ConfigError: unless 0 <= empty < low < capacity and days >= 0.
    """

    capacity_nl: int
    low_alarm_nl: int
    low_alarm_days: int
    empty_threshold_nl: int

    def __post_init__(self) -> None:
        _int("capacity_nl", self.capacity_nl, 1)
        _int("low_alarm_nl", self.low_alarm_nl, 0)
        _int("low_alarm_days", self.low_alarm_days, 0)
        _int("empty_threshold_nl", self.empty_threshold_nl, 0)
        if not self.empty_threshold_nl < self.low_alarm_nl < self.capacity_nl:
            raise ConfigError(
                "low_alarm_nl",
                self.low_alarm_nl,
                f"between empty_threshold_nl ({self.empty_threshold_nl}) and capacity_nl ({self.capacity_nl}), exclusive",
            )

    @classmethod
    def from_pump_spec(cls, pump: object) -> ReservoirSettings:
        """Settings from a :class:`controller.prescription.PumpSpec` (capacity = the prescribed reservoir volume)."""
        return cls(
            capacity_nl=pump.reservoir_volume_nl,  # type: ignore[attr-defined]
            low_alarm_nl=pump.low_reservoir_alarm_nl,  # type: ignore[attr-defined]
            low_alarm_days=pump.low_reservoir_alarm_days,  # type: ignore[attr-defined]
            empty_threshold_nl=pump.empty_threshold_nl,  # type: ignore[attr-defined]
        )


@dataclass(frozen=True)
class ReservoirState:
    """The predicted reservoir: what was filled, when, and what has been delivered since.

    :param filled_nl: volume in the reservoir after the last fill, nL.
    :param delivered_nl: sum of volumes delivered since the fill, nL.
    :param fill_utc: when it was filled (timezone-aware).
    """

    filled_nl: int
    delivered_nl: int
    fill_utc: datetime

    def __post_init__(self) -> None:
        _int("filled_nl", self.filled_nl, 0)
        _int("delivered_nl", self.delivered_nl, 0)
        _aware("fill_utc", self.fill_utc)

    @property
    def remaining_nl(self) -> int:
        """Predicted volume left, nL: filled - delivered, never negative (RES-01)."""
        return max(0, self.filled_nl - self.delivered_nl)

    @property
    def overdrawn_nl(self) -> int:
        """How far deliveries exceed the fill, nL (non-zero means the prediction is wrong)."""
        return max(0, self.delivered_nl - self.filled_nl)

    def after_delivery(self, volume_nl: int) -> ReservoirState:
        """The state after ``volume_nl`` more was delivered.

        :param volume_nl: delivered volume, nL, >= 0.
        :raises ConfigError: for a negative or non-integer volume.
        """
        return ReservoirState(self.filled_nl, self.delivered_nl + _int("volume_nl", volume_nl), self.fill_utc)


@dataclass(frozen=True)
class ReservoirForecast:
    """When the reservoir alarms, empties and should be refilled, at one moment.

    :param remaining_nl: predicted volume left, nL.
    :param daily_volume_nl: programmed volume per day used for the forecast, nL.
    :param days_to_low_alarm: days until the first low-alarm trigger (0 if already low).
    :param low_alarm_utc: when the low alarm falls.
    :param days_to_empty_threshold: days until the empty threshold (0 if already there).
    :param days_to_empty: days until nothing is left (remaining / Q).
    :param refill_due_utc: recommended refill date.
    :param low_triggers: which low triggers hold now: ``"volume"``, ``"days"`` (RES-02).
    :param empty: True at or below the empty threshold (RES-05).
    :param refill_due: True once the refill date has come.
    """

    remaining_nl: int
    daily_volume_nl: int
    days_to_low_alarm: Fraction
    low_alarm_utc: datetime
    days_to_empty_threshold: Fraction
    days_to_empty: Fraction
    refill_due_utc: datetime
    low_triggers: tuple[str, ...]
    empty: bool
    refill_due: bool = False

    @property
    def low(self) -> bool:
        """True when either low-reservoir trigger holds."""
        return bool(self.low_triggers)

    @property
    def alarm(self) -> AlarmCode | None:
        """The reservoir alarm that applies now, escalating toward empty (RES-02, RES-05):
        :attr:`AlarmCode.RESERVOIR_EMPTY` (high), :attr:`AlarmCode.RESERVOIR_LOW` (medium),
        :attr:`AlarmCode.REFILL_DUE` (low), or None."""
        if self.empty:
            return AlarmCode.RESERVOIR_EMPTY
        if self.low:
            return AlarmCode.RESERVOIR_LOW
        if self.refill_due:
            return AlarmCode.REFILL_DUE
        return None


def daily_volume_nl(dose_ng_per_day: int, concentration_ug_per_ml: int) -> int:
    """Volume per day that carries a daily dose: ``Q = D / C``, nL/day (rounded up, so forecasts
    never over-state how long the reservoir lasts). 400 µg/day at 2000 µg/mL is 0.2 mL/day.

    :raises ConfigError: for a negative dose or a non-positive concentration.
    """
    _int("dose_ng_per_day", dose_ng_per_day, 0)
    _int("concentration_ug_per_ml", concentration_ug_per_ml, 1)
    return units.div_round(dose_ng_per_day * units.PG_PER_NG, concentration_ug_per_ml, "up")


def minimum_dose_ng_per_day(min_rate_nl_per_h: int, concentration_ug_per_ml: int) -> int:
    """The daily dose the pump's minimum rate delivers: ``D_min = Q_min * C``, ng/day.

    With the SynchroMed II minimum of 0.048 mL/day: 96 µg/day at 2000 µg/mL, 24 µg/day at 500.

    :raises ConfigError: for a non-positive rate or concentration.
    """
    _int("min_rate_nl_per_h", min_rate_nl_per_h, 1)
    _int("concentration_ug_per_ml", concentration_ug_per_ml, 1)
    return units.dose_ng_per_day_for_rate(min_rate_nl_per_h, concentration_ug_per_ml)


def days_until(volume_nl: int, daily_volume_nl: int) -> Fraction:
    """Exact days for ``daily_volume_nl`` per day to use up ``volume_nl`` (0 if nothing to use).

    :param volume_nl: volume to use up, nL (negative counts as 0).
    :param daily_volume_nl: volume used per day, nL, > 0.
    :raises ConfigError: if ``daily_volume_nl`` is not a positive integer.
    """
    _int("daily_volume_nl", daily_volume_nl, 1)
    return Fraction(max(0, volume_nl), daily_volume_nl)


def low_triggers(remaining_nl: int, daily_volume_nl: int, settings: ReservoirSettings) -> tuple[str, ...]:
    """The low-reservoir triggers that hold (RES-02): ``"volume"`` if remaining <= V_low,
    ``"days"`` if days to empty <= D_low."""
    found = []
    if remaining_nl <= settings.low_alarm_nl:
        found.append("volume")
    if days_until(remaining_nl, daily_volume_nl) <= settings.low_alarm_days:
        found.append("days")
    return tuple(found)


def forecast(
    state: ReservoirState,
    daily_volume_nl: int,
    settings: ReservoirSettings,
    now_utc: datetime,
    *,
    refill_margin_days: int = DEFAULT_REFILL_MARGIN_DAYS,
) -> ReservoirForecast:
    """Forecast the low alarm, empty and refill dates from the predicted state.

    :param state: the predicted reservoir.
    :param daily_volume_nl: programmed volume per day, nL, > 0 (use the worst case with patient boluses).
    :param settings: the reservoir thresholds.
    :param now_utc: the moment of the forecast (timezone-aware).
    :param refill_margin_days: days between the refill date and the alarm date, 3..5.
    :raises ConfigError: for a non-positive daily volume or a margin outside 3..5 days.
    """
    _int("daily_volume_nl", daily_volume_nl, 1)
    low_margin, high_margin = REFILL_MARGIN_DAYS_RANGE
    if isinstance(refill_margin_days, bool) or not isinstance(refill_margin_days, int) or not (
        low_margin <= refill_margin_days <= high_margin
    ):
        raise ConfigError("refill_margin_days", refill_margin_days, f"an integer in [{low_margin}, {high_margin}] days")
    _aware("now_utc", now_utc)
    remaining = state.remaining_nl
    to_empty = days_until(remaining, daily_volume_nl)
    if to_empty > MAX_FORECAST_DAYS:
        raise ConfigError(
            "daily_volume_nl",
            daily_volume_nl,
            f">= {-(-remaining // MAX_FORECAST_DAYS)} nL/day (the forecast must end within {MAX_FORECAST_DAYS} days)",
        )
    by_volume = days_until(remaining - settings.low_alarm_nl, daily_volume_nl)
    by_days = max(Fraction(0), to_empty - settings.low_alarm_days)
    to_low = min(by_volume, by_days)
    low_alarm_utc = now_utc + _days(to_low)
    refill_due = min(
        low_alarm_utc - timedelta(days=refill_margin_days),
        state.fill_utc + timedelta(days=MAX_REFILL_INTERVAL_DAYS),
    )
    return ReservoirForecast(
        remaining_nl=remaining,
        daily_volume_nl=daily_volume_nl,
        days_to_low_alarm=to_low,
        low_alarm_utc=low_alarm_utc,
        days_to_empty_threshold=days_until(remaining - settings.empty_threshold_nl, daily_volume_nl),
        days_to_empty=to_empty,
        refill_due_utc=refill_due,
        low_triggers=low_triggers(remaining, daily_volume_nl, settings),
        empty=remaining <= settings.empty_threshold_nl,
        refill_due=refill_due <= now_utc,
    )


@dataclass(frozen=True)
class AlarmLevels:
    """The reservoir volumes at which :func:`forecast`'s alarms fall, for one daily volume.

    A poll compares the remaining volume with these integers instead of forecasting: for any
    remaining volume ``r`` (with a forecast possible, ``r <= forecast_limit_nl``),
    ``r <= low_nl`` exactly when the forecast is :attr:`~ReservoirForecast.low`, and
    ``r <= refill_nl`` exactly when its refill date (by the low-alarm date) has come. The refill
    date can also come by the longest refill interval, which is a matter of time, not volume.

    :ivar low_nl: low alarm at or below this, nL.
    :ivar refill_nl: refill due (by the low-alarm date) at or below this, nL.
    :ivar forecast_limit_nl: above this the reservoir lasts beyond the forecast horizon, nL.
    """

    low_nl: int
    refill_nl: int
    forecast_limit_nl: int


def alarm_levels(daily_volume_nl: int, settings: ReservoirSettings, *,
                 refill_margin_days: int = DEFAULT_REFILL_MARGIN_DAYS) -> AlarmLevels:
    """The volumes at which the low alarm and the refill date fall, at ``daily_volume_nl`` per day.

    Derived from :func:`forecast`'s exact arithmetic, its rounding included: the low-alarm date is
    ``now + to_low`` rounded down to the millisecond, so the refill date (``margin`` days before it)
    has come when ``to_low x MS_PER_DAY < margin x MS_PER_DAY + 1``.

    :raises ConfigError: for a non-positive daily volume.
    """
    _int("daily_volume_nl", daily_volume_nl, 1)
    d, day = daily_volume_nl, units.MS_PER_DAY
    low = max(settings.low_alarm_nl, settings.low_alarm_days * d)
    # to_low = min((r - V_low) / d, r / d - D_low), each floored at 0; "< margin days + 1 ms" per day.
    slack = -(-(refill_margin_days * day + 1) * d // day) - 1
    refill = max(settings.low_alarm_nl + slack, settings.low_alarm_days * d + slack)
    return AlarmLevels(low, refill, MAX_FORECAST_DAYS * d)


# ---------------------------------------------------------------------------------------------------
# refill


@dataclass(frozen=True)
class RefillRecord:
    """What was done at a refill (RES-03).

    :param volume_removed_nl: volume drawn out of the reservoir, nL.
    :param volume_added_nl: volume injected, nL.
    :param concentration_ug_per_ml: concentration of the new drug, µg/mL.
    :param lot: the drug lot number.
    :param refill_utc: when (timezone-aware).
    """

    volume_removed_nl: int
    volume_added_nl: int
    concentration_ug_per_ml: int
    lot: str
    refill_utc: datetime

    def __post_init__(self) -> None:
        _int("volume_removed_nl", self.volume_removed_nl, 0)
        _int("volume_added_nl", self.volume_added_nl, 1)
        _int("concentration_ug_per_ml", self.concentration_ug_per_ml, 1)
        if not isinstance(self.lot, str) or not self.lot.strip():
            raise ConfigError("lot", self.lot, "a non-empty lot number")
        _aware("refill_utc", self.refill_utc)


@dataclass(frozen=True)
class RefillCheck:
    """The verdict on a refill.

    :param expected_removed_nl: the predicted volume in the reservoir before the refill, nL.
    :param removed_nl: the volume actually drawn out, nL.
    :param difference_nl: removed - expected, nL (negative: less came out than predicted).
    :param tolerance_nl: the allowed absolute difference, nL.
    :param within_tolerance: True if ``abs(difference_nl) <= tolerance_nl``.
    :param concentration_changed: True if the new concentration differs from the prescribed one (PRX-06).
    :param new_state: the reservoir prediction after the refill.
    :param finding: a sentence for the clinician ("" when within tolerance).
    """

    expected_removed_nl: int
    removed_nl: int
    difference_nl: int
    tolerance_nl: int
    within_tolerance: bool
    concentration_changed: bool
    new_state: ReservoirState
    finding: str

    @property
    def requires_acknowledgement(self) -> bool:
        """True when a clinician must acknowledge the discrepancy before therapy programming continues."""
        return not self.within_tolerance

    @property
    def alarm(self) -> AlarmCode | None:
        """The alarm to raise, if any (:attr:`AlarmCode.REFILL_DISCREPANCY`)."""
        return None if self.within_tolerance else AlarmCode.REFILL_DISCREPANCY


def check_refill(
    predicted: ReservoirState,
    record: RefillRecord,
    *,
    capacity_nl: int,
    prescribed_concentration_ug_per_ml: int,
    tolerance_pct: int = DEFAULT_REFILL_TOLERANCE_PCT,
    tolerance_floor_nl: int = DEFAULT_REFILL_TOLERANCE_FLOOR_NL,
) -> RefillCheck:
    """Compare a refill with the prediction (RES-03) and give the reservoir state after it.

    Less drawn out than predicted suggests over-delivery, a leak, or that the
    previous fill went into the pocket instead of the reservoir (pocket fill);
    more suggests under-delivery (stall, occlusion: withdrawal risk). Either way
    beyond tolerance needs a clinician's acknowledgement.

    :param predicted: the predicted reservoir just before the refill.
    :param record: the refill.
    :param capacity_nl: the reservoir capacity, nL (the added volume may not exceed it, RES-06).
    :param prescribed_concentration_ug_per_ml: the concentration of the prescription in effect.
    :param tolerance_pct: allowed difference as a percentage of the prediction, 0..100.
    :param tolerance_floor_nl: smallest allowed absolute difference, nL.
    :raises ConfigError: if the added volume exceeds the capacity or the tolerance is out of range.
    """
    _int("capacity_nl", capacity_nl, 1)
    if record.volume_added_nl > capacity_nl:
        raise ConfigError("volume_added_nl", record.volume_added_nl, f"<= capacity_nl ({capacity_nl})")
    if isinstance(tolerance_pct, bool) or not isinstance(tolerance_pct, int) or not 0 <= tolerance_pct <= 100:
        raise ConfigError("tolerance_pct", tolerance_pct, "an integer in [0, 100] %")
    _int("tolerance_floor_nl", tolerance_floor_nl, 0)
    expected = predicted.remaining_nl
    difference = record.volume_removed_nl - expected
    tolerance = max(tolerance_floor_nl, expected * tolerance_pct // 100)
    within = abs(difference) <= tolerance
    if within:
        finding = ""
    elif difference < 0:
        finding = (
            f"{units.describe_volume_nl(-difference)} less was drawn out than predicted ({units.describe_volume_nl(expected)}): "
            "possible pocket fill at the "
            "previous refill, leak, or over-delivery. Check the patient for overdose; a clinician must acknowledge."
        )
    else:
        finding = (
            f"{units.describe_volume_nl(difference)} more was drawn out than predicted ({units.describe_volume_nl(expected)}): "
            "the pump may be under-delivering "
            "(stall, occlusion, catheter fault). Check the patient for withdrawal; a clinician must acknowledge."
        )
    return RefillCheck(
        expected_removed_nl=expected,
        removed_nl=record.volume_removed_nl,
        difference_nl=difference,
        tolerance_nl=tolerance,
        within_tolerance=within,
        concentration_changed=record.concentration_ug_per_ml != prescribed_concentration_ug_per_ml,
        new_state=ReservoirState(record.volume_added_nl, 0, record.refill_utc),
        finding=finding,
    )


# ---------------------------------------------------------------------------------------------------
# concentration-change transit and priming bolus (BOL-06; itb-clinical section 5.3)


def transit_delay_ms(dead_volume_nl: int, rate_nl_per_h: int) -> int:
    """Time for fluid entering the dead volume to reach the catheter tip at a rate, ms (rounded up).

    Example: 0.25 mL at 0.2 mL/day (8333 nL/h) takes about 1.25 days.

    :raises ConfigError: for a negative volume or a non-positive rate.
    """
    _int("dead_volume_nl", dead_volume_nl, 0)
    _int("rate_nl_per_h", rate_nl_per_h, 1)
    return units.div_round(dead_volume_nl * units.MS_PER_H, rate_nl_per_h, "up")


def transit_rate_nl_per_h(programme_rate_nl_per_h: int, old_concentration_ug_per_ml: int,
                          new_concentration_ug_per_ml: int) -> int:
    """The pump rate while the old drug crosses the catheter, nL/h.

    The programme's rate (at the new concentration) scaled by new / old: the volume rate that
    gives the programme's dose with the old drug at the tip. Rounded down, never more than
    prescribed. Example: 0.2 mL/day at 2000 µg/mL after 500 µg/mL runs 0.8 mL/day.
    """
    _int("programme_rate_nl_per_h", programme_rate_nl_per_h, 0)
    _int("old_concentration_ug_per_ml", old_concentration_ug_per_ml, 1)
    _int("new_concentration_ug_per_ml", new_concentration_ug_per_ml, 1)
    return programme_rate_nl_per_h * new_concentration_ug_per_ml // old_concentration_ug_per_ml


@dataclass(frozen=True)
class TransitPlan:
    """How a concentration change crosses the dead volume without under- or overdose (BOL-06).

    The dead volume still holds the old solution, which reaches the tip first. Pushing it at the
    rate the *old* concentration needs for the prescribed dose (:func:`transit_rate_nl_per_h`)
    keeps the patient on that dose; once it has left the tip, the new rate takes over. Nothing is
    delivered on top of the programme: the transit is the programme, at another volume rate.

    :param volume_nl: volume of old drug to push through (the dead volume), nL.
    :param rate_nl_per_h: the transit rate, nL/h.
    :param duration_ms: how long the transit lasts at that rate, ms (however long: never cut short).
    :param mass_ng: old drug reaching the patient during the transit, ng (part of the programme's dose).
    :param new_rate_nl_per_h: the rate after the transit (new concentration), nL/h.
    :param untransited_dose_ratio: the fraction of the dose the patient would get while the old drug
        crosses at the new rate (old / new concentration: 1/4 for 500 -> 2000 µg/mL, 4 for 2000 -> 500).
    """

    volume_nl: int
    rate_nl_per_h: int
    duration_ms: int
    mass_ng: int
    new_rate_nl_per_h: int
    untransited_dose_ratio: Fraction


def plan_transit(
    dead_volume_nl: int, old_concentration_ug_per_ml: int, new_concentration_ug_per_ml: int, dose_ng_per_day: int
) -> TransitPlan:
    """Plan the transit of the old drug for a refill that changes the concentration (BOL-06).

    Example: 0.25 mL dead volume, 500 -> 2000 µg/mL, 400 µg/day: 0.8 mL/day for 7.5 h
    (125 µg of the old drug), then 0.2 mL/day.

    :param dead_volume_nl: pump tubing + catheter volume, nL, > 0.
    :param old_concentration_ug_per_ml: concentration filling the dead volume, µg/mL.
    :param new_concentration_ug_per_ml: concentration now in the reservoir, µg/mL (must differ).
    :param dose_ng_per_day: the prescribed daily dose, ng/day, > 0.
    :raises ConfigError: for equal concentrations (no transit) or non-positive inputs, or a dose
        too small for a non-zero rate.
    """
    _int("dead_volume_nl", dead_volume_nl, 1)
    _int("old_concentration_ug_per_ml", old_concentration_ug_per_ml, 1)
    _int("new_concentration_ug_per_ml", new_concentration_ug_per_ml, 1)
    _int("dose_ng_per_day", dose_ng_per_day, 1)
    if old_concentration_ug_per_ml == new_concentration_ug_per_ml:
        raise ConfigError(
            "new_concentration_ug_per_ml",
            new_concentration_ug_per_ml,
            f"different from old_concentration_ug_per_ml ({old_concentration_ug_per_ml}) for a concentration change",
        )
    new_rate = units.rate_nl_per_h_for_dose(dose_ng_per_day, new_concentration_ug_per_ml)
    rate = transit_rate_nl_per_h(new_rate, old_concentration_ug_per_ml, new_concentration_ug_per_ml)
    if new_rate <= 0 or rate <= 0:
        raise ConfigError("dose_ng_per_day", dose_ng_per_day, "large enough for a non-zero rate at both concentrations")
    return TransitPlan(
        volume_nl=dead_volume_nl,
        rate_nl_per_h=rate,
        duration_ms=transit_delay_ms(dead_volume_nl, rate),
        mass_ng=units.mass_ng_for_volume(dead_volume_nl, old_concentration_ug_per_ml),
        new_rate_nl_per_h=new_rate,
        untransited_dose_ratio=Fraction(old_concentration_ug_per_ml, new_concentration_ug_per_ml),
    )


@dataclass(frozen=True)
class PrimingBolusPlan:
    """A priming bolus: fill the dead volume with drug so it reaches the catheter tip.

    Priming runs fast and mixes; some drug may reach the CSF before it ends, so
    the whole drug content of the primed volume counts toward the 24 h cap.

    :param volume_nl: volume to push, nL.
    :param rate_nl_per_h: priming rate, nL/h.
    :param duration_ms: how long it runs, ms.
    :param worst_case_mass_ng: drug that could reach the patient, ng (counted toward the cap).
    """

    volume_nl: int
    rate_nl_per_h: int
    duration_ms: int
    worst_case_mass_ng: int


def plan_priming_bolus(
    volume_nl: int, concentration_ug_per_ml: int, rate_nl_per_h: int, *, max_rate_nl_per_h: int
) -> PrimingBolusPlan:
    """Plan a priming bolus (BOL-06).

    :param volume_nl: dead volume to fill, nL, > 0.
    :param concentration_ug_per_ml: drug concentration, µg/mL.
    :param rate_nl_per_h: priming rate, nL/h, in (0, ``max_rate_nl_per_h``].
    :param max_rate_nl_per_h: the pump's maximum rate, nL/h.
    :raises ConfigError: for non-positive inputs or a rate above the pump maximum.
    """
    _int("volume_nl", volume_nl, 1)
    _int("concentration_ug_per_ml", concentration_ug_per_ml, 1)
    _int("max_rate_nl_per_h", max_rate_nl_per_h, 1)
    _int("rate_nl_per_h", rate_nl_per_h, 1)
    if rate_nl_per_h > max_rate_nl_per_h:
        raise ConfigError("rate_nl_per_h", rate_nl_per_h, f"in [1, {max_rate_nl_per_h}] nL/h")
    return PrimingBolusPlan(
        volume_nl=volume_nl,
        rate_nl_per_h=rate_nl_per_h,
        duration_ms=transit_delay_ms(volume_nl, rate_nl_per_h),
        worst_case_mass_ng=units.mass_ng_for_volume(volume_nl, concentration_ug_per_ml),
    )
