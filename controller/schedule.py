"""When the loop wakes: status polls, the end of a bolus, programme boundaries and scheduled actions.

:class:`Schedule` owns the poll timing, the cursor over the programme's boundaries
(flex steps, periodic bolus starts and ends) and the queue of scheduled actions (a
taper's steps). :meth:`Schedule.next_wake` is the earliest of them; between wakes the
loop sleeps on the injected clock, so virtual time jumps straight to the next event.
Times are controller times in ms.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any


class Schedule:
    """The loop's timetable.

    :param poll_interval_ms: time between status polls, ms.
    """

    def __init__(self, poll_interval_ms: int) -> None:
        self.poll_interval_ms = poll_interval_ms
        #: Controller time of the next status poll, ms.
        self.next_poll_ms = 0
        #: Controller time of the last status poll, ms (the ledger is reconciled up to here).
        self.last_poll_ms = 0
        #: Boundaries of the programme are looked for after this time, ms.
        self.boundary_from_ms = 0
        self._actions: list[tuple[int, int, Callable[[], None], str]] = []
        self._seq = itertools.count()

    def add(self, at_ms: int, action: Callable[[], None], name: str) -> None:
        """Run ``action`` at ``at_ms`` (actions due at the same time run in the order added)."""
        self._actions.append((at_ms, next(self._seq), action, name))
        self._actions.sort(key=lambda item: (item[0], item[1]))

    def cancel(self, name: str) -> int:
        """Cancel the actions called ``name``; returns how many were cancelled."""
        before = len(self._actions)
        self._actions = [a for a in self._actions if a[3] != name]
        return before - len(self._actions)

    def names(self) -> list[str]:
        """Names of the pending actions, in order."""
        return [a[3] for a in self._actions]

    def pop_due(self, now_ms: int) -> Callable[[], None] | None:
        """The next action due at or before ``now_ms`` (removed from the queue), or None."""
        if self._actions and self._actions[0][0] <= now_ms:
            return self._actions.pop(0)[2]
        return None

    def next_boundary(self, programme: Any) -> int | None:
        """The programme's next boundary after :attr:`boundary_from_ms`, or None without a programme."""
        return None if programme is None else programme.next_boundary(self.boundary_from_ms)

    def next_wake(self, *, bolus_end_ms: int | None, boundary_ms: int | None) -> int:
        """The earliest time the loop has something to do, ms."""
        wake = self.next_poll_ms
        if bolus_end_ms is not None and bolus_end_ms < wake:
            wake = bolus_end_ms
        if self._actions and self._actions[0][0] < wake:
            wake = self._actions[0][0]
        if boundary_ms is not None and boundary_ms < wake:
            wake = boundary_ms
        return wake
