"""The physical catheter: what actually leaves its tip, from the volume the mechanism really pushed.

The pump's tubing and the catheter hold a dead volume of fluid. Fluid leaves the tip in the
order it entered at the pump end, so after ``V`` nL have been pushed in total, the fluid at the
tip is the fluid that entered when ``V - dead_volume`` had been pushed. :class:`PhysicalCatheter`
keeps the positions (cumulative pushed volume) at which the solution entering the catheter
changed, and integrates the concentration over the stretch of positions that leaves the tip.

This is the simulator's truth, for the patient model and for tests: it knows nothing of the
controller, and uses positions rather than the controller's queue of segments, so a test can
check the controller's accounting against it. Units: volumes nL, concentrations µg/mL, drug pg
(1 nL at 1 µg/mL is exactly 1 pg).
"""

from __future__ import annotations

from cython_ext.errors import ConfigError


class PhysicalCatheter:
    """Fluid through a dead volume, first in, first out.

    :param dead_volume_nl: catheter and pump tubing volume, nL (>= 0).
    :param concentration_ug_per_ml: what fills it at the start (0: saline, an unprimed catheter).
    """

    def __init__(self, dead_volume_nl: int, concentration_ug_per_ml: int = 0) -> None:
        for name, value in (("dead_volume_nl", dead_volume_nl), ("concentration_ug_per_ml", concentration_ug_per_ml)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(name, value, "an integer >= 0")
        self.dead_volume_nl = dead_volume_nl
        #: Total volume pushed in at the pump end so far, nL.
        self.pushed_nl = 0
        #: (entry position nL, concentration µg/mL): fluid that entered at or after the position has the
        #: concentration, until the next change. The fluid filling the catheter at the start entered at
        #: positions ``-dead_volume_nl`` to 0.
        self._changes: list[tuple[int, int]] = [(-dead_volume_nl, concentration_ug_per_ml)]

    def fill(self, concentration_ug_per_ml: int) -> None:
        """The whole dead volume now holds this solution (a catheter filled with drug by the surgeon, or kept
        full of drug from a replaced pump); what enters at the pump end from now on is the same."""
        _check_concentration(concentration_ug_per_ml)
        self._changes = [(self.pushed_nl - self.dead_volume_nl, concentration_ug_per_ml)]

    def change_solution(self, concentration_ug_per_ml: int) -> None:
        """From now on, the fluid entering at the pump end has this concentration (a refill)."""
        _check_concentration(concentration_ug_per_ml)
        if self._changes[-1][0] == self.pushed_nl:
            self._changes[-1] = (self.pushed_nl, concentration_ug_per_ml)
        else:
            self._changes.append((self.pushed_nl, concentration_ug_per_ml))

    def concentration_at_tip(self) -> int:
        """The concentration of the fluid leaving the tip now, µg/mL."""
        return self._concentration_entered_at(self.pushed_nl - self.dead_volume_nl)

    def _concentration_entered_at(self, position_nl: int) -> int:
        current = self._changes[0][1]
        for start, concentration in self._changes:
            if start > position_nl:
                break
            current = concentration
        return current

    def push(self, volume_nl: int) -> int:
        """Push ``volume_nl`` in at the pump end; return the drug that leaves the tip meanwhile, pg."""
        if isinstance(volume_nl, bool) or not isinstance(volume_nl, int) or volume_nl < 0:
            raise ConfigError("volume_nl", volume_nl, "an integer >= 0 nL")
        leaving_from = self.pushed_nl - self.dead_volume_nl
        leaving_to = leaving_from + volume_nl
        drug_pg = 0
        for i, (start, concentration) in enumerate(self._changes):
            end = self._changes[i + 1][0] if i + 1 < len(self._changes) else leaving_to
            low, high = max(start, leaving_from), min(end, leaving_to)
            if high > low:
                drug_pg += (high - low) * concentration
        self.pushed_nl += volume_nl
        # Changes whose fluid has wholly left the tip are history.
        tip = self.pushed_nl - self.dead_volume_nl
        while len(self._changes) > 1 and self._changes[1][0] <= tip:
            self._changes.pop(0)
        return drug_pg


def _check_concentration(concentration_ug_per_ml: int) -> None:
    """:raises ConfigError: for a concentration that is not an integer >= 0 µg/mL."""
    if isinstance(concentration_ug_per_ml, bool) or not isinstance(concentration_ug_per_ml, int) \
            or concentration_ug_per_ml < 0:
        raise ConfigError("concentration_ug_per_ml", concentration_ug_per_ml, "an integer >= 0 µg/mL")
