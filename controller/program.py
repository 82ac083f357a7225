"""What the pump does if the controller vanishes: the orphan schedule of every delivery command, and its check.

Every command the controller sends leaves the pump with something it will go on doing
with no further command. That is the command's **orphan schedule**: a rate for a
duration, then another, ending in a rate held until someone stops it. A rate command
leaves that rate, continuous; a pump program (:class:`hal.pump.PumpProgram`, the bolus
program "bolus rate for exactly the bolus volume, then basal, continuous") leaves its
phases in order. :func:`orphan_of_program` derives it from the program *as the pump
holds it* (:meth:`hal.pump.PumpDriver.program_as_held`), with no I/O.

:func:`orphan_refusals` is the kernel's judgement of a schedule before the command is
sent, by the kernel's own projection (``SafetyKernel.projected_excess_pg``, in both
kernel implementations: it walks every trailing 24 h window from now on, over the
ledger, what is committed, a programme's basal and an extra mass placed at now):

* the continuous rate it ends in is the projected programme, from now;
* everything the earlier phases deliver above that rate is extra mass placed at
  *now*, so it is inside every window the projection checks (conservative: later
  windows would hold less of it);
* that extra must fit the headroom, every phase must be at or above the minimum rate
  in force, and the schedule must never stop by itself.

A command whose orphan schedule fails is refused before any byte is sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cython_ext import units
from hal.pump import PumpProgram

__all__ = ["ORPHAN_BELOW_MINIMUM", "ORPHAN_OVER_CAP", "ORPHAN_STOPS", "OrphanSchedule", "orphan_of_phases",
           "orphan_of_program", "orphan_of_rate", "orphan_refusals", "tip_extra_pg"]

#: Refusal: the schedule would hold a rate below the minimum rate in force.
ORPHAN_BELOW_MINIMUM = "ORPHAN_BELOW_MINIMUM_RATE"
#: Refusal: some trailing 24 h window of the schedule, with what the ledger holds, would pass the cap.
ORPHAN_OVER_CAP = "ORPHAN_OVER_CAP"
#: Refusal: the pump would stop by itself (a program that ends with a volume).
ORPHAN_STOPS = "ORPHAN_STOPS"


@dataclass(frozen=True)
class OrphanSchedule:
    """What the pump does with no further command, in order.

    :ivar phases: ``(rate_nl_per_h, volume_nl)`` pairs; every phase but the last has a volume.
    :ivar continuous_nl_per_h: the rate held after the last phase with a volume, until stopped,
        nL/h; 0 when the pump stops by itself.
    """

    phases: tuple[tuple[int, int], ...]
    continuous_nl_per_h: int

    def duration_ms(self) -> int:
        """How long the phases with a volume last before the continuous rate, ms (rounded up)."""
        return sum(-(-volume * units.MS_PER_H // rate) for rate, volume in self.phases)

    def volume_nl(self, elapsed_ms: int) -> int:
        """Volume the pump delivers over the first ``elapsed_ms`` of the schedule, nL (rounded down)."""
        delivered, left_ms = 0, elapsed_ms
        for rate, volume in self.phases:
            phase_ms = -(-volume * units.MS_PER_H // rate)
            if left_ms < phase_ms:
                return delivered + min(volume, rate * left_ms // units.MS_PER_H)
            delivered, left_ms = delivered + volume, left_ms - phase_ms
        return delivered + self.continuous_nl_per_h * left_ms // units.MS_PER_H


    def least_time_ms(self, volume_nl: int) -> int:
        """The least time the schedule needs to deliver ``volume_nl``, ms (rounded up; all of it if it stops short)."""
        elapsed, left = 0, volume_nl
        for rate, volume in self.phases:
            if left <= volume:
                return elapsed + -(-left * units.MS_PER_H // rate)
            elapsed, left = elapsed + -(-volume * units.MS_PER_H // rate), left - volume
        if self.continuous_nl_per_h <= 0:
            return elapsed
        return elapsed + -(-left * units.MS_PER_H // self.continuous_nl_per_h)


def orphan_of_rate(rate_nl_per_h: int) -> OrphanSchedule:
    """A rate command's orphan schedule: the rate, continuous."""
    return OrphanSchedule((), rate_nl_per_h)


def orphan_of_phases(phases: list[list[int]]) -> OrphanSchedule:
    """The orphan schedule of a program journalled as ``[[rate_nl_per_h, volume_nl], ...]`` (last: continuous)."""
    return OrphanSchedule(tuple((int(r), int(v)) for r, v in phases[:-1]), int(phases[-1][0]))


def orphan_of_program(program: PumpProgram) -> OrphanSchedule:
    """A (non-repeating) pump program's orphan schedule: its phases, then its continuous last rate or a stop.

    :raises ValueError: a repeating program (a day loop has no single continuous rate to end in).
    """
    if program.repeats:
        raise ValueError("a repeating program has no orphan schedule of this form")
    timed = program.phases if not program.ends_continuous else program.phases[:-1]
    last = program.phases[-1].rate_nl_per_h if program.ends_continuous else 0
    return OrphanSchedule(tuple((p.rate_nl_per_h, p.volume_nl) for p in timed), last)


def tip_extra_pg(schedule: OrphanSchedule, catheter: tuple[tuple[int, int], ...] | list[list[int]],
                 reservoir_ug_per_ml: int) -> int:
    """Drug the schedule brings out of the catheter tip above its continuous rate at the reservoir's drug, pg.

    What leaves the tip is the catheter's contents first (``catheter``: ``(volume nL, concentration
    µg/mL)`` segments, tip first), then the reservoir's drug. The schedule is cut into pieces of one
    pump rate and one solution at the tip; each piece's tip mass above what the continuous rate would
    bring out of the tip meanwhile at the reservoir's drug (``continuous rate × piece time ×
    reservoir concentration``, rounded down) is extra, and deficits never offset it. Within a piece the
    excess grows linearly, so the sum bounds the excess at every instant: placed at now, it is inside
    every window. Catheter drug left for the continuous rate to push out counts where it is stronger
    than the reservoir's. Used during a concentration change, where the pump-end view (every phase at
    the stronger drug) would refuse a transit that holds the tip dose exactly.
    """
    queue = [[int(v), int(c)] for v, c in catheter if v > 0]
    end = schedule.continuous_nl_per_h
    extra = 0
    for rate, volume in schedule.phases:
        left = volume
        while left:
            take, concentration = (min(left, queue[0][0]), queue[0][1]) if queue else (left, reservoir_ug_per_ml)
            extra += max(0, take * concentration - end * take // rate * reservoir_ug_per_ml)
            left -= take
            if queue:
                queue[0][0] -= take
                if queue[0][0] == 0:
                    queue.pop(0)
    extra += sum(volume * (concentration - reservoir_ug_per_ml) for volume, concentration in queue
                 if concentration > reservoir_ug_per_ml)
    return extra


def orphan_refusals(kernel_module: Any, kernel: Any, schedule: OrphanSchedule, now_ms: int, *,
                    concentration_ug_per_ml: int | None = None,
                    catheter: tuple[tuple[int, int], ...] | list[list[int]] | None = None) -> tuple[str, ...]:
    """Why ``schedule`` may not be left running (empty: it may), judged by the kernel's projection.

    :param kernel_module: the kernel implementation module (``Programme``).
    :param kernel: its ``SafetyKernel`` (ledger, caps, concentration).
    :param schedule: the orphan schedule of the command about to be sent.
    :param now_ms: controller time, ms.
    :param concentration_ug_per_ml: the drug the reservoir will hold (a concentration change not yet
        applied to the kernel), µg/mL; default the kernel's. The continuous rate is projected at it; the
        earlier phases' extra at the higher of it and the kernel's (the catheter may still hold either).
    :param catheter: what the catheter holds, ``(volume nL, concentration µg/mL)`` tip first, when the
        caller knows it (a concentration change or its transit): the extra is then the drug that
        leaves the tip (:func:`tip_extra_pg`) instead of every phase at the stronger drug.
    """
    reasons = []
    end = schedule.continuous_nl_per_h
    if end <= 0:
        reasons.append(ORPHAN_STOPS)
    minimum = kernel.effective_caps(now_ms).minimum_rate_nl_per_h
    if any(rate < minimum for rate, _ in schedule.phases) or 0 < end < minimum:
        reasons.append(ORPHAN_BELOW_MINIMUM)
    held = kernel.limits.concentration_ug_per_ml
    reservoir = held if concentration_ug_per_ml is None else concentration_ug_per_ml
    extra_nl = sum(max(0, volume - end * -(-volume * units.MS_PER_H // rate) // units.MS_PER_H)
                   for rate, volume in schedule.phases)
    programme = kernel_module.Programme.continuous(end, reservoir, anchor_ms=now_ms) if end > 0 else None
    extra_pg = (units.mass_pg_for_volume(extra_nl, max(held, reservoir)) if catheter is None
                else tip_extra_pg(schedule, catheter, reservoir))
    if kernel.projected_excess_pg(now_ms, programme, extra_pg) > 0:
        reasons.append(ORPHAN_OVER_CAP)
    return tuple(reasons)
