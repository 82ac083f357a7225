"""A refill at a new concentration: the old drug crossing the catheter, and the change's intent across a restart.

After a refill at another concentration the catheter's dead volume still holds the old drug, which
leaves the tip first (issue #9, itb-clinical §1.6). :class:`ConcentrationChange` owns that
*transit* (:class:`~controller.accounting.Transit`): while it is open the pump runs the
programme's rate scaled by new / old concentration (:meth:`ConcentrationChange.pump_rate`), on a
pump that holds programs as a two-phase program that ends the transit by itself
(:meth:`ConcentrationChange.program_for`); the end is read from the counter through the catheter
queue (:meth:`ConcentrationChange.check`), never from a clock alone, and never cut short.

It also owns the change's *intent* (:data:`CONCENTRATION_CHANGE_KEY` in the workflow state): what
a restart needs to complete a change the controller died inside (PRX-06, RES-04), re-decided by
the kernel (:meth:`ConcentrationChange.complete_at_restart`), or adopted when the pump is read
back running its transit program (:meth:`ConcentrationChange.adopt_program`).

The loop composes it (:class:`controller.loop.ControlLoop`) and keeps the entry point the
workflows call (``change_concentration``); what the loop itself must do when a transit ends (put
the new drug's rate in, checkpoint) comes back to it through ``on_end``. Rates in nL/h,
volumes in nL, times in ms of controller time, concentrations in µg/mL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from controller.accounting import Accounting, Transit
from controller.commands import CommandIssuer
from controller.gate import Gate, GateDecision
from controller.schedule import Schedule
from cython_ext import units
from cython_ext.errors import CapabilityError, ConfigError, HalError
from hal.pump import ProgramPhase, PumpDriver, PumpProgram, PumpState

__all__ = ["CONCENTRATION_CHANGE_KEY", "TRANSIT_SETTLE_MS", "ConcentrationChange"]

MS_PER_S = 1000
MS_PER_H = units.MS_PER_H

#: A concentration transit ends once the old drug left in the catheter is within a minute of flow
#: (or the counter's resolution, whichever is more).
TRANSIT_SETTLE_MS = units.MS_PER_MIN

#: ``therapy_state`` key of a concentration change handed to the pump but not yet applied
#: (:meth:`controller.loop.ControlLoop.change_concentration`); a restart completes it
#: (:meth:`controller.loop.ControlLoop.recover`).
CONCENTRATION_CHANGE_KEY = "concentration_change"


class ConcentrationChange:
    """The transit of the old drug after a refill at a new concentration, and the change's restart intent.

    :param pump: the pump driver (for the program format it holds and, at restart, its read-back).
    :param commands: the command issuer (counter reads, whether the pump holds programs, the held program).
    :param accounting: the catheter queue the old drug is counted through, and the refill record.
    :param gate: the kernel gate (a change re-decided at restart).
    :param schedule: the loop's timetable (the poll brought forward to the transit's end).
    :param emit: the loop's event sink, ``emit(event, **payload)``.
    :param now_ms: controller time now, ms.
    :param reconcile: reconcile the counter's reading (nL) into the ledger before the catheter is looked at.
    :param pushing_nl_per_h: the verified rate the pump is delivering now, nL/h (0 when stopped or uncertain).
    :param counter_resolution_nl: the pump counter's finest step, nL.
    :param on_end: called with ``send`` when a transit has ended (:meth:`end`): the loop puts the programme's
        rate for the new drug on the pump when ``send``, and checkpoints.
    """

    def __init__(self, pump: PumpDriver, commands: CommandIssuer, accounting: Accounting, gate: Gate,
                 schedule: Schedule, emit: Callable[..., None], *, now_ms: Callable[[], int],
                 reconcile: Callable[[int], Any], pushing_nl_per_h: Callable[[], int],
                 counter_resolution_nl: Callable[[], int], on_end: Callable[[bool], None]) -> None:
        self.pump = pump
        self.commands = commands
        self.accounting = accounting
        self.gate = gate
        self.schedule = schedule
        self._emit = emit
        self._now_ms = now_ms
        self._reconcile = reconcile
        self._pushing_nl_per_h = pushing_nl_per_h
        self._counter_resolution_nl = counter_resolution_nl
        self._on_end = on_end
        #: A concentration change whose old drug is still leaving the catheter tip, or None.
        self.transit: Transit | None = None

    # -- views -------------------------------------------------------------------------------------------

    def pump_rate(self, programme_rate_nl_per_h: int) -> int:
        """The pump's volume rate for a programme rate (at the reservoir's concentration), nL/h."""
        if self.transit is None:
            return programme_rate_nl_per_h
        return self.transit.pump_rate_nl_per_h(programme_rate_nl_per_h)

    def old_drug_nl(self) -> int:
        """The old drug still ahead of the new in the catheter, nL (0 outside a transit)."""
        if self.transit is None:
            return 0
        return self.accounting.catheter.volume_ahead_of_nl(self.transit.new_concentration_ug_per_ml)

    @contextlib.contextmanager
    def assuming(self, transit: Transit) -> Iterator[None]:
        """Judge with ``transit`` open for the duration (a change's forms, before it is committed); then none."""
        self.transit = transit
        try:
            yield
        finally:
            self.transit = None

    def program_for(self, transit: Transit, rate_nl_per_h: int) -> PumpProgram | None:
        """The program that ends a concentration transit by itself; None without programs.

        Phase 1 runs the transit rate for the old drug ahead in the catheter, phase 2 the new
        programme's rate, continuous: a controller that dies mid-transit leaves the new rate running
        once the old drug has left, not the transit rate. The loop still ends the transit from the
        counter (:meth:`check`) and sends the programme's rate then, which the pump already
        holds unless a flex step came in between.
        """
        old_nl = self.accounting.catheter.volume_ahead_of_nl(transit.new_concentration_ug_per_ml)
        if old_nl <= 0 or not self.commands.holds_programs():
            return None
        try:
            return self.pump.program_as_held(PumpProgram((ProgramPhase(transit.pump_rate_nl_per_h(rate_nl_per_h),
                                                                       old_nl), ProgramPhase(rate_nl_per_h))))
        except (CapabilityError, ConfigError, HalError):
            return None

    # -- the transit's end -----------------------------------------------------------------------------------

    def begin(self, transit: Transit) -> None:
        """The change is committed: ``transit`` is open (announced by :meth:`announce` once the reservoir holds
        the new drug)."""
        self.transit = transit

    def announce(self, rate_nl_per_h: int) -> None:
        """Announce the open transit (``transit_start``, with the pump's volume rate for the programme's
        ``rate_nl_per_h``, nL/h), then :meth:`check` it."""
        transit = self.transit
        self._emit("transit_start", old_concentration_ug_per_ml=transit.old_concentration_ug_per_ml,
                   new_concentration_ug_per_ml=transit.new_concentration_ug_per_ml,
                   old_drug_nl=self.accounting.catheter.volume_ahead_of_nl(transit.new_concentration_ug_per_ml),
                   rate_nl_per_h=transit.pump_rate_nl_per_h(rate_nl_per_h))
        self.check()

    def settle(self) -> bool:
        """Before a command computes a rate through :meth:`pump_rate`: read the counter, reconcile, and end a
        transit whose old drug has left the catheter (without sending: the caller is about to send its rate).

        The pump switches to the new drug's rate by itself at the end of its transit program; the loop learns
        it at its next poll. A command sent in between (a flex step, a flex programme, a bolus, a basal change,
        a restore) scaled by the still-open transit put the old drug's volume rate onto the new drug: twice the
        dose at the tip after 500 -> 1000 µg/mL, four times after 500 -> 2000 (issue #9). Every command path
        that scales by the transit calls this first, so none is left out.

        :return: False when a transit is open and the counter cannot be read now (the transit stays open and
            the caller goes on as before: the next poll ends it); True otherwise.
        """
        if self.transit is None:
            return True
        dispensed = self.commands.read_dispensed()
        if dispensed is None:
            return False
        self._reconcile(dispensed.infused_nl)
        left_nl = self.left_nl()
        if left_nl is not None:
            # The old drug has left (the pump's own phase 2 while no controller watched, or since the last
            # poll): the caller sends the programme's rate for the new drug, not the old drug's volume rate.
            self.end(left_nl, send=False)
        return True

    def check(self) -> None:
        """End the transit when the catheter holds only the new drug; until then poll when it should.

        The end is read from the counter through the catheter queue. It is taken once what is left of
        the old drug is within the counter's resolution or a minute of flow, whichever is more;
        otherwise the next poll is brought forward to when the remainder should have left the tip at
        the rate the pump runs, so the switch is late by at most about one counter step.
        """
        transit = self.transit
        if transit is None:
            return
        left_nl = self.left_nl()
        if left_nl is not None:
            self.end(left_nl)
            return
        left_nl = self.accounting.catheter.volume_ahead_of_nl(transit.new_concentration_ug_per_ml)
        rate = self._pushing_nl_per_h()
        if rate > 0:
            due = self._now_ms() + max(MS_PER_S, -(-left_nl * MS_PER_H // rate))
            self.schedule.next_poll_ms = min(self.schedule.next_poll_ms, due)

    def left_nl(self) -> int | None:
        """The old drug left in the catheter when the transit is over (within the counter's resolution or a
        minute of flow, from the last reconciliation), nL; None while it still has to leave (or no transit)."""
        if self.transit is None:
            return None
        left_nl = self.accounting.catheter.volume_ahead_of_nl(self.transit.new_concentration_ug_per_ml)
        settle_nl = max(self._counter_resolution_nl(), self._pushing_nl_per_h() * TRANSIT_SETTLE_MS // MS_PER_H)
        return left_nl if left_nl <= settle_nl else None

    def end(self, left_nl: int, *, send: bool = True) -> None:
        """End the transit (``transit_end``, with the ``left_nl`` nL of old drug still counted ahead); then
        ``on_end(send)``: with ``send`` the loop puts the programme's rate for the new drug on the pump (without,
        the caller is about to send a rate: the transit ends first so that rate is the new drug's)."""
        transit = self.transit
        self.transit = None
        self._emit("transit_end", old_concentration_ug_per_ml=transit.old_concentration_ug_per_ml,
                   new_concentration_ug_per_ml=transit.new_concentration_ug_per_ml, left_nl=left_nl,
                   hours=(self._now_ms() - transit.started_ms) / MS_PER_H)
        self._on_end(send)

    # -- durability and restart ------------------------------------------------------------------------------

    def snapshot(self) -> list[int] | None:
        """The open transit for the resume point: ``[old µg/mL, new µg/mL, started ms]``, or None."""
        if self.transit is None:
            return None
        return [self.transit.old_concentration_ug_per_ml, self.transit.new_concentration_ug_per_ml,
                self.transit.started_ms]

    def restore(self, saved: list[Any] | None) -> None:
        """Reopen the transit a resume point holds (:meth:`snapshot`), or none."""
        self.transit = None if saved is None else Transit(*(int(x) for x in saved))

    @staticmethod
    def intent(transit: Transit, *, fill_nl: int, fill_utc: datetime, rate_nl_per_h: int, decision: GateDecision,
               override: tuple[tuple[str, ...], str, str] | None, shape: dict[str, Any] | None,
               program: PumpProgram | None, from_minimum_rate: bool, from_confirmed_empty: bool) -> dict[str, Any]:
        """The change as a restart needs it (:data:`CONCENTRATION_CHANGE_KEY`, durable with the program's pending
        record): concentrations (µg/mL), fill (nL, at ``fill_utc``), start (ms), the programme's rate (nL/h),
        the transit plan (nL, ms), the signed overrides and programme shape the kernel's decision took, the mode
        it was made from, and the pump program (``[rate nL/h, volume nL]`` per phase)."""
        return {
            "old_ug_per_ml": transit.old_concentration_ug_per_ml, "new_ug_per_ml": transit.new_concentration_ug_per_ml,
            "fill_nl": fill_nl, "fill_utc": fill_utc.isoformat(), "started_ms": transit.started_ms,
            "rate_nl_per_h": rate_nl_per_h, "transit_volume_nl": decision.volume_nl,
            "transit_duration_ms": decision.duration_ms,
            "override": None if override is None else [list(override[0]), override[1], override[2]],
            "from_minimum_rate": from_minimum_rate,
            "from_confirmed_empty": from_confirmed_empty,
            "shape": None if not shape else {key: [list(row) for row in rows] for key, rows in shape.items()},
            "phases": None if program is None else [[p.rate_nl_per_h, p.volume_nl] for p in program.phases]}

    def complete_at_restart(self, change: dict[str, Any], now: int) -> GateDecision:
        """At restart: record the change's fill and have the kernel decide the change again, now; allowed, it is
        applied and its transit opened from ``now`` (the caller puts the decision's programme in effect).

        The refill record says the reservoir holds ``fill_nl`` of the new drug, so it is recorded first (what
        the pump pushed since goes into the catheter as the new drug).

        :param change: the intent (:meth:`intent`).
        :param now: controller time, ms.
        :return: the kernel's decision (refused: nothing but the fill is applied).
        """
        old, new = int(change["old_ug_per_ml"]), int(change["new_ug_per_ml"])
        self.accounting.record_fill(int(change["fill_nl"]), new, datetime.fromisoformat(change["fill_utc"]))
        rate = int(change["rate_nl_per_h"])
        signed = change.get("override")
        override = None if not signed else (tuple(str(c) for c in signed[0]), str(signed[1]), str(signed[2]))
        shape = {key: [tuple(int(x) for x in row) for row in rows] for key, rows in (change.get("shape") or {}).items()}
        decision = self.gate.authorize_concentration_change(new, rate, int(change["transit_volume_nl"]),
                                                            int(change["transit_duration_ms"]), now, override=override,
                                                            **shape)
        if decision.allowed:
            self.gate.apply(decision, now)
            self.transit = Transit(old, new, now)
        return decision

    def adopt_program(self, change: dict[str, Any], status: Any, sent_after: list[Any]) -> bool:
        """At restart: whether the pump runs the change's transit program (read back phase by phase); if so it is
        taken over as committed, its pending record resolved, the transit open from the change's own start, and
        nothing is sent.

        :param change: the intent (:meth:`intent`).
        :param status: the pump's status as read at restart, or None.
        :param sent_after: the unresolved rate commands of the journal (the change's program among them).
        """
        phases = change.get("phases")
        if not phases or status is None or status.alarm is not None or status.state is not PumpState.INFUSING:
            return False
        wanted = PumpProgram(tuple(ProgramPhase(int(r), int(v)) for r, v in phases))
        held = self.commands.call(lambda: self.pump.read_program(1, len(wanted.phases)))
        phase = self.commands.call(self.pump.read_phase)
        if held != wanted or phase is None or not 1 <= phase <= len(wanted.phases):
            return False
        self.transit = Transit(int(change["old_ug_per_ml"]), int(change["new_ug_per_ml"]), int(change["started_ms"]))
        self.commands.held_program = wanted
        self.commands.note_phase(phase)
        self.commands.committed_rate_nl_per_h = wanted.phases[phase - 1].rate_nl_per_h
        for record in sent_after:
            if record.kind == "program" and record.params.get("phases") == phases:
                self.commands.complete(record.command_id, "applied",
                                       {"detail": f"read back at restart: the pump runs it, phase {phase}"})
        return True

    def report_at_restart(self, change: dict[str, Any], outcome: str | None, refused: tuple[str, ...]) -> str:
        """Announce a concentration change the controller died inside (``concentration_change_at_restart``);
        returns the detail the loop raises UNFINISHED_SESSION with (RES-04).

        :param outcome: what the restart made of it: ``"completed"``, ``"running"``, ``"refused"`` or None.
        :param refused: the kernel's reasons when it refused the change at restart, else empty.
        """
        old, new = change["old_ug_per_ml"], change["new_ug_per_ml"]
        what = f"the refill's change {old} -> {new} µg/mL was not confirmed before the controller died"
        if refused:
            detail = (f"{what}; the kernel refuses it at restart ({','.join(refused)}): the reservoir holds "
                      f"{new} µg/mL, no programme for it is authorised (PRX-06), minimum rate")
        elif outcome == "running":
            detail = f"{what}; completed at restart: the pump runs its transit program (read back)"
        else:
            detail = f"{what}; completed at restart: its transit program is sent again, decided afresh"
        self._emit("concentration_change_at_restart", old_concentration_ug_per_ml=old,
                   new_concentration_ug_per_ml=new, outcome=outcome, detail=detail)
        return detail
