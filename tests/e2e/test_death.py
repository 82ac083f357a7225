"""Controller death: whatever instant the controller dies at, the pump alone stays bounded and keeps delivering.

A day and a half of therapy (implant with priming, basal, a clinician bolus, a patient bolus, a
refill) runs on the simulated NE-1000 (its real bytes, in-process, virtual time) through the real
driver. The controller is killed

* at every durable write point (``Store.before_write`` raises, like a power cut), and
* at instants drawn from a seeded generator (the loop simply never runs again),

then the simulated pump runs on alone for 24 h of virtual time. The oracle is the simulator, not
our ledger: what its mechanism pushed, through the physical catheter model
(:class:`sim.catheter.PhysicalCatheter`, the drug that leaves the tip, as the patient model gets
it). Asserted:

* no trailing 24 h window of tip dose passes the prescription's cap (windows that span the death
  use the poll sample at or before their start: an upper bound);
* once delivery has begun, the pump never stops delivering unless its own alarm stopped it;
* a new controller on the same store and pump recovers: everything it has reconciled since implant
  equals the pump's own counter exactly, no bolus is left open, none counted above its volume.

The scripts: the basic day and a half above; a flex day (80 / 150 / 100 µg/day) with deaths at and
1 s around every step boundary and at every durable write within a minute of one; and Safe mode
(255 s watchdog), where the pump's own watchdog alarm is the only stop allowed and is measured. A
death inside a programming stop (after the pause, after staging, after ``RUN``) is tested on its own:
the pump is left paused, and the restart resumes it within its recovery, with THERAPY_INTERRUPTED.

The worst case over the matrix (mL from the mechanism and µg at the tip in any 24 h window after
death) is printed; ``-s`` shows it. Before boluses were pump programs, a death 5 min into the
50 µg clinician bolus left the bolus rate running: about 5.0 mL and 2 500 µg in the next 24 h
(measured with the program path and the orphan check switched off).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import hal
from controller.prescription import Prescription
from controller.store import Store
from hal.pump import Direction
from sim.catheter import PhysicalCatheter
from sim.clock import VirtualClock
from sim.patient import OverdoseLevel, Patient
from sim.rig import simulated_pump
from controller.assembly import ControllerSettings
from tests.controller.conftest import Rig, build_rig
from tests.prescriptions import make_prescription

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000
CONCENTRATION = 500
CAP_UG = 300
DEAD_VOLUME_NL = 250_000
#: Sampling step of the pump running alone, ms.
ORPHAN_STEP_MS = 10 * MS_PER_MIN
#: Random death instants sampled per run of the matrix (seeded).
RANDOM_DEATHS = 6


class Death(Exception):
    """Raised by the store hook: the controller process is gone from here on."""


@dataclass
class Truth:
    """What the simulated mechanism pushed, sampled: (device time ms, tip dose so far pg, mechanism nL)."""

    catheter: PhysicalCatheter = field(default_factory=lambda: PhysicalCatheter(DEAD_VOLUME_NL))
    samples: list[tuple[int, int, int]] = field(default_factory=list)
    tip_pg: int = 0
    last_nl: int = 0
    #: (device time ms, mechanism nL) now; set by :func:`run_until_death` for events that must sample first.
    probe: Callable[[], tuple[int, int]] | None = None

    def sample(self, t_ms: int, pushed_nl: int) -> None:
        moved, self.last_nl = pushed_nl - self.last_nl, pushed_nl
        self.tip_pg += self.catheter.push(max(0, moved))
        self.samples.append((t_ms, self.tip_pg, pushed_nl))

    def fill(self, concentration_ug_per_ml: int) -> None:
        """The reservoir now holds this drug: what was pushed until now entered the catheter as the old one."""
        if self.probe is not None:
            self.sample(*self.probe())
        self.catheter.change_solution(concentration_ug_per_ml)

    def tip_pg_between(self, start_ms: int, end_ms: int) -> int:
        """Drug that left the tip between the samples at or before ``start_ms`` and ``end_ms``, pg."""
        def at(t: int) -> int:
            return max((s for s in self.samples if s[0] <= t), default=(0, 0, 0))[1]
        return at(end_ms) - at(start_ms)

    def worst_window(self, from_ms: int) -> tuple[int, int]:
        """Largest (tip pg, mechanism nL) in a 24 h window ending at a sample from ``from_ms`` on (upper bounds)."""
        worst_pg = worst_nl = 0
        for t, pg, nl in self.samples:
            if t < from_ms:
                continue
            start = max((s for s in self.samples if s[0] <= t - MS_PER_DAY), default=(0, 0, 0))
            worst_pg, worst_nl = max(worst_pg, pg - start[1]), max(worst_nl, nl - start[2])
        return worst_pg, worst_nl


@contextmanager
def death_rig(tmp_path: Path, name: str, link: str = "inprocess", safe_mode_timeout_s: int | None = None
              ) -> Iterator[tuple[Any, Any, Path, VirtualClock]]:
    """The simulated NE-1000 (Basic mode unless a watchdog is given), the real driver over it and a store
    file path, on one virtual clock."""
    clock = VirtualClock()
    with simulated_pump(link, clock=clock, syringe_diameter_mm="4.699", syringe_volume_ml="1000") as sim:
        driver = hal.open_pump("ne1000", sim.url, clock=clock, safe_mode_timeout_s=safe_mode_timeout_s)
        try:
            driver.configure(syringe_diameter_mm="4.699")
            driver.set_target_volume(0)
            driver.set_direction(Direction.INFUSE)
            yield sim, driver, tmp_path / f"{name}.sqlite", clock
        finally:
            driver.close()


PRESCRIPTION = make_prescription(concentration=CONCENTRATION, dose_ug_per_day=100, max_dose_ug_per_day=CAP_UG)
#: The flex day (controller time of day from its anchor at 0, dose ng/day): a low night, a high day, an evening.
FLEX_STEPS = [(0, 80_000), (8 * MS_PER_H, 150_000), (20 * MS_PER_H, 100_000)]


@dataclass(frozen=True)
class Scenario:
    """One therapy script of the matrix: its events (controller time ms, what, action), end and rig settings."""

    name: str
    events: Callable[[Truth], list[tuple[int, str, Callable[[Rig], Any]]]]
    end_ms: int
    settings: ControllerSettings | None = None
    safe_mode_timeout_s: int | None = None
    prescription: Prescription = PRESCRIPTION
    #: The prescription's 24 h cap, µg.
    cap_ug: int = CAP_UG


def _implant(truth: Truth, concentration: int = CONCENTRATION, **kwargs: Any) -> Callable[[Rig], None]:
    def implant(rig: Rig) -> None:
        truth.fill(concentration)  # the reservoir is filled with drug
        assert rig.therapy.implant(concentration, 20_000_000, **kwargs).allowed

    return implant


def events(truth: Truth) -> list[tuple[int, str, Callable[[Rig], Any]]]:
    """The therapy script: (controller time ms, what, action)."""
    def refill(rig: Rig) -> None:
        left = rig.loop.reservoir_nl()
        assert rig.therapy.refill(removed_nl=left, added_nl=20_000_000, concentration_ug_per_ml=CONCENTRATION,
                                  lot="L2").allowed

    return [
        (MS_PER_H, "implant and priming", _implant(truth, dose_ng_per_day=100_000)),
        (MS_PER_DAY + 2 * MS_PER_H, "clinician bolus", lambda rig: rig.therapy.clinician_bolus(50_000, 30 * MS_PER_MIN)),
        (MS_PER_DAY + 8 * MS_PER_H, "patient bolus", lambda rig: (rig.therapy.configure_patient_bolus(
            25_000, 10 * MS_PER_MIN), rig.therapy.patient_bolus_request())),
        (MS_PER_DAY + 12 * MS_PER_H, "refill", refill),
    ]


SCRIPT_END_MS = MS_PER_DAY + 14 * MS_PER_H
BASIC = Scenario("basic", events, SCRIPT_END_MS)


def flex_events(truth: Truth) -> list[tuple[int, str, Callable[[Rig], Any]]]:
    """A flex day from implant on, and a clinician bolus that the 08:00 step of day 2 ends halfway."""
    return [
        (MS_PER_H, "implant a flex day", _implant(truth, flex_steps=FLEX_STEPS, anchor_ms=0)),
        (MS_PER_DAY + 8 * MS_PER_H - 15 * MS_PER_MIN, "clinician bolus across the step",
         lambda rig: rig.therapy.clinician_bolus(50_000, 30 * MS_PER_MIN)),
    ]


FLEX = Scenario("flex", flex_events, 2 * MS_PER_DAY + MS_PER_H)
#: The flex boundaries the script crosses (controller time, ms), where the loop sends the next step's rate.
FLEX_BOUNDARIES = [day * MS_PER_DAY + start for day in range(3) for start, _dose in FLEX_STEPS
                   if MS_PER_H < day * MS_PER_DAY + start < FLEX.end_ms]


def safe_events(truth: Truth) -> list[tuple[int, str, Callable[[Rig], Any]]]:
    """Safe mode (255 s watchdog, polls every minute feed it): implant with priming, a clinician bolus."""
    return [
        (MS_PER_H, "implant and priming", _implant(truth, dose_ng_per_day=100_000)),
        (3 * MS_PER_H, "clinician bolus", lambda rig: rig.therapy.clinician_bolus(50_000, 30 * MS_PER_MIN)),
    ]


SAFE = Scenario("safe", safe_events, 5 * MS_PER_H, settings=ControllerSettings(poll_interval_ms=MS_PER_MIN),
                safe_mode_timeout_s=255)


def run_until_death(rig: Rig, sim: Any, truth: Truth, die_at_ms: int | None, scenario: Scenario = BASIC) -> int:
    """Run the script until the store hook kills the controller, or until ``die_at_ms``; the death time, ms."""
    truth.probe = lambda: (rig.clock.monotonic_ms(), sim.device.mechanics.actual_delivered_nl())
    rig.controller.subscribe(on_poll=lambda _poll: truth.sample(*truth.probe()))
    end = scenario.end_ms if die_at_ms is None else die_at_ms
    try:
        for at, _what, action in scenario.events(truth):
            if at > end:
                break
            rig.advance(at - rig.controller.now_ms())
            action(rig)
        rig.advance(max(0, end - rig.controller.now_ms()))
    except Death:
        pass
    return rig.clock.monotonic_ms()


def orphan_day(sim: Any, clock: VirtualClock, truth: Truth, alarm_stops: list[int] | None = None) -> list[str]:
    """The pump alone for 24 h; returns every moment it was not delivering without an alarm of its own.

    ``alarm_stops`` collects the moments it stood still under an alarm of its own (a Safe-mode watchdog).
    """
    stops = []
    for _ in range(MS_PER_DAY // ORPHAN_STEP_MS):
        clock.advance(ORPHAN_STEP_MS / 1000)
        sim.device.poll()
        truth.sample(clock.monotonic_ms(), sim.device.mechanics.actual_delivered_nl())
        still = sim.device.state != "I" or sim.device.mechanics.rate_nl_per_h <= 0
        if still and sim.device.alarm is None:
            stops.append(f"{clock.monotonic_ms()} ms: state {sim.device.state}")
        elif still and alarm_stops is not None:
            alarm_stops.append(clock.monotonic_ms())
    return stops


def one_death(tmp_path: Path, name: str, *, crash_at: int | None = None, die_at_ms: int | None = None,
              scenario: Scenario = BASIC) -> dict[str, Any]:
    """Kill the controller once, let the pump run alone 24 h, restart; the figures for the matrix."""
    truth = Truth()
    with death_rig(tmp_path, name, safe_mode_timeout_s=scenario.safe_mode_timeout_s) as (sim, driver, path, clock):
        store = Store(path, clock)
        rig = build_rig(clock, driver, store, prescription=scenario.prescription, settings=scenario.settings)
        base = store.writes  # building the controller writes too; the script's writes are counted from here
        killed: list[int] = []

        def hook(n: int) -> None:
            if crash_at is not None and n == base + crash_at:
                killed.append(n)
                raise Death(f"killed before write {n}")

        store.before_write = hook
        died_ms = run_until_death(rig, sim, truth, die_at_ms, scenario)
        assert crash_at is None or killed, f"write {crash_at} of the script was never reached"
        rig.controller.detach()
        store.abandon()
        started = sim.device.mechanics.actual_delivered_nl() > 0 or sim.device.state == "I"
        alarm_stops: list[int] = []
        truth.sample(*truth.probe())  # the instant of death
        at_death_pg = truth.tip_pg
        # Before the first start there is no flow to drop.
        stops = orphan_day(sim, clock, truth, alarm_stops) if started else []
        alone_ug = (truth.tip_pg - at_death_pg) / 1e6
        worst_pg, worst_nl = truth.worst_window(died_ms)
        again = build_rig(clock, driver, Store(path, clock), prescription=scenario.prescription,
                          settings=scenario.settings, recover=True)
        if again.loop.bolus is not None:
            # Back while the pump is still in a bolus program's bolus phase: it carries on; the pump ends it.
            assert again.loop.bolus_program is not None, f"{name}: a bolus left running that the pump does not end"
            again.advance(MS_PER_H)
            assert again.loop.bolus is None, f"{name}: the bolus program did not end"
            again.loop.poll()
        counter_nl = driver.read_dispensed().infused_nl
        reconciled = again.loop.total_counted_nl  # every nL since implant, before and after the death
        over_nl = [(b.delivered_nl - b.volume_nl, b.volume_nl) for b in again.store.boluses()
                   if b.delivered_nl > b.volume_nl]
        open_boluses = [b.bolus_id for b in again.store.boluses() if b.status != "finished"]
        again.store.close()
    return {"name": name, "died_ms": died_ms, "stops": stops, "worst_ug": worst_pg / 1e6, "worst_ml": worst_nl / 1e6,
            "counter_nl": counter_nl, "reconciled_nl": reconciled, "open_boluses": open_boluses, "over_nl": over_nl,
            "therapy_started": started, "alarm_stopped_after_ms": alarm_stops[0] - died_ms if alarm_stops else None,
            "alone_ug": alone_ug, "cap_ug": scenario.cap_ug}


def write_points(tmp_path: Path, scenario: Scenario = BASIC) -> int:
    """How many durable writes the whole script makes (a run without death)."""
    with death_rig(tmp_path, f"count-{scenario.name}", safe_mode_timeout_s=scenario.safe_mode_timeout_s) as (
            sim, driver, path, clock):
        store = Store(path, clock)
        rig = build_rig(clock, driver, store, prescription=scenario.prescription, settings=scenario.settings)
        base = store.writes
        run_until_death(rig, sim, Truth(), None, scenario)
        total = store.writes - base
        store.close()
    return total


def check(result: dict[str, Any]) -> None:
    where = f"{result['name']} (died at {result['died_ms']} ms)"
    assert result["worst_ug"] <= result["cap_ug"], f"{where}: {result['worst_ug']:.1f} µg in 24 h > cap {result['cap_ug']} µg"
    assert not result["stops"], f"{where}: the pump stopped on its own: {result['stops'][:3]}"
    assert result["reconciled_nl"] == result["counter_nl"], f"{where}: reconciled {result['reconciled_nl']} nL"
    assert not result["open_boluses"], where
    # No bolus counted above its authorised volume beyond one display step of the counter it is read
    # from (4 digits: at most a thousandth of the reading); the program itself holds no more than authorised.
    step_nl = max(1, result["counter_nl"] // 1000)
    assert all(over <= step_nl for over, _volume in result["over_nl"]), f"{where}: {result['over_nl']}"


def report(results: list[dict[str, Any]]) -> None:
    worst = max(results, key=lambda r: r["worst_ug"])
    print(f"\ncontroller-death matrix: {len(results)} deaths; worst 24 h after a death: "
          f"{worst['worst_ml']:.3f} mL from the mechanism, {worst['worst_ug']:.1f} µg at the tip "
          f"({worst['name']}, cap {worst['cap_ug']} µg)")
    stopped = [r["alarm_stopped_after_ms"] for r in results if r["alarm_stopped_after_ms"] is not None]
    if stopped:
        print(f"  stopped by the pump's own alarm after {len(stopped)} of them, "
              f"{min(stopped) / 1000:.0f}-{max(stopped) / 1000:.0f} s after the death (sampled every "
              f"{ORPHAN_STEP_MS // MS_PER_MIN} min)")


def death_matrix(tmp_path: Path, scenario: Scenario, *, instants: Iterable[int] = (),
                 writes: Iterable[int] = ()) -> list[dict[str, Any]]:
    """One death at each instant (controller time, ms) and at each durable write (numbered from the
    script's start) of ``scenario``; every result checked (:func:`check`), the matrix reported, the
    results returned for the test's own checks."""
    results = [one_death(tmp_path, f"{scenario.name}-instant-{t}", die_at_ms=t, scenario=scenario) for t in instants]
    results += [one_death(tmp_path, f"{scenario.name}-write-{n}", crash_at=n, scenario=scenario) for n in writes]
    for result in results:
        check(result)
    report(results)
    return results


def test_death_at_every_durable_write_point(tmp_path: Path) -> None:
    total = write_points(tmp_path)
    assert total >= 10
    death_matrix(tmp_path, BASIC, writes=range(1, total + 1))


def test_death_at_seeded_random_instants(tmp_path: Path) -> None:
    rng = random.Random(10)
    instants = sorted(rng.randrange(MS_PER_H, SCRIPT_END_MS) for _ in range(RANDOM_DEATHS))
    # And the instants the issue names: 1 s and 5 min into the clinician bolus, 1 s into the patient bolus.
    instants += [MS_PER_DAY + 2 * MS_PER_H + 1000, MS_PER_DAY + 2 * MS_PER_H + 5 * MS_PER_MIN,
                 MS_PER_DAY + 8 * MS_PER_H + 1000]
    death_matrix(tmp_path, BASIC, instants=instants)


def write_times(tmp_path: Path, scenario: Scenario) -> list[tuple[int, int]]:
    """(write number counted from the script's start, controller time ms) of every durable write (no death)."""
    with death_rig(tmp_path, f"times-{scenario.name}", safe_mode_timeout_s=scenario.safe_mode_timeout_s) as (
            sim, driver, path, clock):
        store = Store(path, clock)
        rig = build_rig(clock, driver, store, prescription=scenario.prescription, settings=scenario.settings)
        base = store.writes
        times: list[tuple[int, int]] = []
        store.before_write = lambda n: times.append((n - base, rig.controller.now_ms()))
        run_until_death(rig, sim, Truth(), None, scenario)
        store.close()
    return times


def test_death_at_and_around_every_flex_boundary(tmp_path: Path) -> None:
    """Issue #10: a flex day (80 / 150 / 100 µg/day), and a clinician bolus that the 08:00 step of day 2 ends.

    Deaths 1 s before, at and 1 s after every boundary the script crosses, and at every durable write
    within a minute of one (the step's pending record, its outcome, the bolus's end). Left alone, the pump
    holds the rate in force at the death (the loop, not the pump, moves the steps): within the cap by the
    orphan check, never stopping; the restart reconciles the counter exactly and puts the step in force back."""
    instants = sorted({b + d for b in FLEX_BOUNDARIES for d in (-1000, 0, 1000)})
    near = sorted({n for n, t in write_times(tmp_path, FLEX) if any(abs(t - b) <= MS_PER_MIN for b in FLEX_BOUNDARIES)})
    assert near, "no durable write near a boundary: the matrix would test nothing there"
    death_matrix(tmp_path, FLEX, instants=instants, writes=near)


#: A short high step: the day is 105 µg, but the 2 h step's rate is 600 µg/day, twice the 300 µg cap.
SPIKE_STEPS = [(0, 60_000), (10 * MS_PER_H, 600_000), (12 * MS_PER_H, 60_000)]


def spike_events(truth: Truth) -> list[tuple[int, str, Callable[[Rig], Any]]]:
    return [(MS_PER_H, "implant a flex day with a short high step", _implant(truth, flex_steps=SPIKE_STEPS, anchor_ms=0))]


SPIKE = Scenario("spike", spike_events, MS_PER_DAY + 13 * MS_PER_H)


def test_death_inside_a_short_high_flex_step_leaves_the_pump_to_end_the_step_by_itself(tmp_path: Path) -> None:
    """Issue #10: a flex step whose rate alone, held 24 h, would pass the cap (600 µg/day for 2 h of a 105 µg day).

    Before, the step was a plain rate: a controller that died inside it left 600 µg/day running, 608 µg
    in the next 24 h against the 300 µg cap (measured). Now the orphan check refuses the plain rate and
    the step goes as a program that returns to the next step by itself: deaths inside the step (day 1 and
    day 2, 1 s after it began, in its middle, 1 s before its end) and at every durable write around it
    stay within the cap."""
    starts = [10 * MS_PER_H, MS_PER_DAY + 10 * MS_PER_H]
    instants = [s + d for s in starts for d in (1000, MS_PER_H, 2 * MS_PER_H - 1000)]
    near = sorted({n for n, t in write_times(tmp_path, SPIKE) if any(s - MS_PER_MIN <= t <= s + 2 * MS_PER_H
                                                                       for s in starts)})
    death_matrix(tmp_path, SPIKE, instants=instants, writes=near)


def test_death_matrix_in_safe_mode_stops_only_by_the_watchdog(tmp_path: Path) -> None:
    """Safe mode (255 s watchdog, the documented decision: therapy runs in Basic mode, see the README's bench
    section). Deaths at every durable write and at instants (priming, 1 s and 10 min into a clinician
    bolus, basal): the pump's own watchdog (``A?T``) stops it within 255 s + one sample step every time,
    and never anything else; the dose after the death is only less than in Basic mode. The stop is the
    withdrawal hazard that keeps therapy in Basic mode; the restart resumes it."""
    total = write_points(tmp_path, SAFE)
    instants = [MS_PER_H + 10 * MS_PER_MIN, 3 * MS_PER_H + 1000, 3 * MS_PER_H + 10 * MS_PER_MIN, 4 * MS_PER_H]
    for result in death_matrix(tmp_path, SAFE, instants=instants, writes=range(1, total + 1)):
        if result["therapy_started"]:
            assert result["alarm_stopped_after_ms"] is not None, result["name"]
            assert result["alarm_stopped_after_ms"] <= 255_000 + ORPHAN_STEP_MS, result


#: A refill that changes the concentration, a day after the implant (controller time, ms).
REFILL_CHANGE_MS = MS_PER_DAY + 2 * MS_PER_H
#: Prescribed basal dose in the transit scripts, µg/day (the prescription's).
TRANSIT_DOSE_UG = 100
#: The tip dose over the 24 h a dead controller leaves the pump alone, within this of the prescription, %
#: (itb-clinical §5.3: no spike, no dip at the tip across a concentration change).
TRANSIT_TIP_TOLERANCE_PCT = 10


def transit_hours(old: int, new: int) -> float:
    """How long the old drug takes to leave the primed catheter at the transit rate, h.

    The transit holds the dose at the tip, so the old drug moves at the old volume rate:
    dead volume / (dose / old concentration). Independent of the controller's own arithmetic."""
    old_rate_nl_per_h = TRANSIT_DOSE_UG * 1_000_000 / old / 24  # µg/day over µg/mL → nL/h
    return DEAD_VOLUME_NL / old_rate_nl_per_h


def transit_scenario(old: int, new: int) -> Scenario:
    """Implant at ``old`` µg/mL with priming, then a refill to ``new`` µg/mL: a transit through the catheter."""
    def transit_events(truth: Truth) -> list[tuple[int, str, Callable[[Rig], Any]]]:
        def refill_new_drug(rig: Rig) -> None:
            truth.fill(new)  # the reservoir holds the new drug from this instant on
            left = rig.loop.reservoir_nl()
            assert rig.therapy.refill(removed_nl=left, added_nl=20_000_000, concentration_ug_per_ml=new,
                                      lot="L2").allowed
            assert rig.loop.transit is not None, "a concentration change without a transit"

        return [(MS_PER_H, "implant and priming", _implant(truth, old, dose_ng_per_day=TRANSIT_DOSE_UG * 1000)),
                (REFILL_CHANGE_MS, f"refill {old} -> {new} µg/mL", refill_new_drug)]

    end_ms = REFILL_CHANGE_MS + int((transit_hours(old, new) + 2) * MS_PER_H)
    # Priming the 0.25 mL catheter at 1000 µg/mL is 250 µg on top of the basal: a cap that admits it.
    cap_ug = CAP_UG if old * DEAD_VOLUME_NL // 1_000_000 + TRANSIT_DOSE_UG <= CAP_UG else 600
    prescription = make_prescription(concentration=old, dose_ug_per_day=TRANSIT_DOSE_UG, max_dose_ug_per_day=cap_ug)
    return Scenario(f"transit-{old}-{new}", transit_events, end_ms, prescription=prescription, cap_ug=cap_ug)


@pytest.mark.parametrize(("old", "new"), [(500, 2000), (1000, 500)], ids=["increase-x4", "decrease-x2"])
def test_death_during_a_concentration_transit_leaves_the_tip_dose_as_prescribed(
        tmp_path: Path, old: int, new: int) -> None:
    """Issue #10 (a bridge, now the concentration transit of issue #9): a refill changes the concentration and
    the old drug still fills the catheter. The transit is a two-phase pump program (the old volume rate for
    exactly the old drug ahead, then the new programme's rate, continuous), so a controller that dies at
    any instant of it (1 s in, 1 h in, halfway, 1 h before and 1 h after the old drug has left) or at any
    durable write of the refill or of the transit's end leaves the pump to switch by itself.

    Oracle: the physical catheter fed by the simulated mechanism. Over the 24 h the pump then runs alone,
    the drug that leaves the tip is the prescribed 100 µg ± 10 % (after an increase ×4, a stale transit
    rate would give 400 µg; after a decrease ×2, 50 µg), never above the cap, and never a stop."""
    scenario = transit_scenario(old, new)
    hours = transit_hours(old, new)
    transit_end_ms = REFILL_CHANGE_MS + int(hours * MS_PER_H)
    instants = [REFILL_CHANGE_MS + 1000, REFILL_CHANGE_MS + MS_PER_H, REFILL_CHANGE_MS + int(hours / 2 * MS_PER_H),
                transit_end_ms - MS_PER_H, transit_end_ms + MS_PER_H]
    times = write_times(tmp_path, scenario)
    at_refill = {n for n, t in times if abs(t - REFILL_CHANGE_MS) <= MS_PER_MIN}
    at_end = {n for n, t in times if abs(t - transit_end_ms) <= 30 * MS_PER_MIN}
    assert at_refill and at_end, "no durable write at the refill or the transit's end: nothing tested there"
    near = sorted(at_refill | at_end)
    results = death_matrix(tmp_path, scenario, instants=instants, writes=near)
    low, high = (TRANSIT_DOSE_UG * (100 + sign * TRANSIT_TIP_TOLERANCE_PCT) / 100 for sign in (-1, 1))
    for result in results:
        if result["died_ms"] >= REFILL_CHANGE_MS:
            assert low <= result["alone_ug"] <= high, \
                f"{result['name']}: {result['alone_ug']:.1f} µg left the tip in the 24 h alone, not {low}-{high}"
    print(f"  tip dose in the 24 h alone after a death in the transit: "
          f"{min(r['alone_ug'] for r in results if r['died_ms'] >= REFILL_CHANGE_MS):.1f}-"
          f"{max(r['alone_ug'] for r in results if r['died_ms'] >= REFILL_CHANGE_MS):.1f} µg "
          f"(prescribed {TRANSIT_DOSE_UG} µg/day, {old} -> {new} µg/mL)")


#: A periodic-bolus programme on a 100 µg/day basal: 25 µg over 30 min at 08:00 and at 20:00 (500 µg/mL:
#: 50 µL in 30 min, 100 000 nL/h on top of the basal), 150 µg in 24 h.
PERIODIC_EDGES_MS = [8 * MS_PER_H, 20 * MS_PER_H]
PERIODIC_BOLUSES = [(start, 30 * MS_PER_MIN, 100_000) for start in PERIODIC_EDGES_MS]


def periodic_events(truth: Truth) -> list[tuple[int, str, Callable[[Rig], Any]]]:
    return [(MS_PER_H, "implant a periodic-bolus programme",
             _implant(truth, flex_steps=[(0, 100_000)], anchor_ms=0, periodic_boluses=PERIODIC_BOLUSES))]


PERIODIC = Scenario("periodic", periodic_events, 2 * MS_PER_DAY + MS_PER_H)


def test_death_at_and_around_every_periodic_bolus_edge(tmp_path: Path) -> None:
    """Issue #10: a periodic-bolus day. Each bolus goes as a program that returns to the basal by itself,
    so deaths 1 s before, at, 1 s after, halfway through and 1 s before the end of every periodic bolus the
    script crosses, and at every durable write within a minute of an edge, leave at most the bolus in
    progress: the 24 h after stays within the cap, the pump never stops, the restart reconciles exactly."""
    starts = [day * MS_PER_DAY + edge for day in range(2) for edge in PERIODIC_EDGES_MS]
    starts = [s for s in starts if MS_PER_H < s < PERIODIC.end_ms]
    instants = sorted({s + d for s in starts for d in (-1000, 0, 1000, 15 * MS_PER_MIN, 30 * MS_PER_MIN - 1000)})
    near = sorted({n for n, t in write_times(tmp_path, PERIODIC)
                   if any(abs(t - s) <= MS_PER_MIN or abs(t - s - 30 * MS_PER_MIN) <= MS_PER_MIN for s in starts)})
    assert near, "no durable write near a periodic edge: the matrix would test nothing there"
    death_matrix(tmp_path, PERIODIC, instants=instants, writes=near)


def test_death_inside_a_programming_stop_leaves_the_pump_paused_until_a_restart_resumes_it(tmp_path: Path) -> None:
    """The one window the pump cannot cover: it takes phase edits only while paused, so a controller that dies
    between the pause and ``RUN`` leaves it paused (the residual risk; the window is a few exchanges long).
    The restart finds it paused, resumes the basal, and never gives the bolus it was writing."""
    truth = Truth()
    with death_rig(tmp_path, "programming") as (sim, driver, path, clock):
        store = Store(path, clock)
        rig = build_rig(clock, driver, store, prescription=PRESCRIPTION)
        run_until_death(rig, sim, truth, MS_PER_DAY)

        def die(*_args: Any) -> Any:
            raise Death("killed between the pause and RUN")

        driver.commit_program = die  # type: ignore[method-assign]
        with pytest.raises(Death):
            rig.therapy.clinician_bolus(50_000, 30 * MS_PER_MIN)
        rig.controller.detach()
        store.abandon()
        del driver.commit_program  # the next controller's driver is whole again
        before_nl = sim.device.mechanics.actual_delivered_nl()
        clock.advance(3600)
        sim.device.poll()
        assert sim.device.state == "P" and sim.device.mechanics.actual_delivered_nl() == before_nl
        again = build_rig(clock, driver, Store(path, clock), prescription=PRESCRIPTION, recover=True)
        again.advance(MS_PER_H)
        assert sim.device.state == "I" and sim.device.mechanics.rate_nl_per_h == 8333
        clinician = [b for b in again.store.boluses() if b.kind == "clinician"]
        assert [b.status for b in clinician] == ["finished"] and clinician[0].delivered_nl == 0
        assert {"controller_death", "unexplained_stop"} <= {e[1]["fault"] for e in again.events if e[0] == "fault"}
        again.store.close()


@pytest.mark.parametrize("exchange", ["pause", "stage", "run"])
def test_a_restart_after_a_death_inside_a_programming_stop_resumes_at_once_with_an_alarm(
        tmp_path: Path, exchange: str) -> None:
    """Issue #10, §3.2 (stopping is not a safe state), decision: the NE-1000 takes phase edits only while paused,
    so a controller that dies after the pause and before ``RUN`` leaves the pump paused. No command can
    prevent that; what the design guarantees is that the *restart* finds it before anything else (the
    pump's state, the unresolved program command), raises THERAPY_INTERRUPTED (a stop, high priority:
    someone must look) with the controller-death record, and resumes the last verified basal within
    its own recovery, before any poll interval. A death just after ``RUN`` leaves the new program running
    (its orphan schedule was judged before it was sent) and the restart puts the basal back.

    ``exchange``: the controller dies after the pause (``pause``), after staging every phase
    (``stage``) or after sending ``RUN`` without reading its reply (``run``).
    """
    truth = Truth()
    with death_rig(tmp_path, f"programming-{exchange}") as (sim, driver, path, clock):
        store = Store(path, clock)
        rig = build_rig(clock, driver, store, prescription=PRESCRIPTION)
        run_until_death(rig, sim, truth, MS_PER_DAY)
        real_stage, real_commit = driver.stage_program, driver.commit_program

        def stage(*args: Any, **kwargs: Any) -> Any:
            if exchange == "pause":
                raise Death("killed after the pause")
            return real_stage(*args, **kwargs)

        def commit(*args: Any, **kwargs: Any) -> Any:
            if exchange == "run":
                real_commit(*args, **kwargs)
            raise Death(f"killed after {exchange}")

        driver.stage_program, driver.commit_program = stage, commit  # type: ignore[method-assign]
        with pytest.raises(Death):
            rig.therapy.clinician_bolus(50_000, 30 * MS_PER_MIN)
        rig.controller.detach()
        store.abandon()
        del driver.stage_program, driver.commit_program  # the next controller's driver is whole again
        clock.advance(600)  # ten minutes until the supervisor has the controller back
        sim.device.poll()
        assert sim.device.state == ("I" if exchange == "run" else "P")
        again = build_rig(clock, driver, Store(path, clock), prescription=PRESCRIPTION, recover=True)
        # Within the recovery itself: infusing the basal again, and said loudly.
        sim.device.poll()
        assert sim.device.state == "I" and sim.device.mechanics.rate_nl_per_h == 8333
        faults = {e[1]["fault"] for e in again.events if e[0] == "fault"}
        assert "controller_death" in faults and "controller_death" in again.log.raised()  # the alarm, by name
        if exchange != "run":
            assert "unexplained_stop" in faults and "therapy_interrupted" in again.log.raised()
            stop = next(e[1]["detail"] for e in again.events if e[0] == "fault" and e[1]["fault"] == "unexplained_stop")
            assert "died inside the programming stop" in stop and "bolus_clinician" in stop, stop
        clinician = [b for b in again.store.boluses() if b.kind == "clinician"]
        assert [b.status for b in clinician] == ["finished"]
        assert clinician[0].delivered_nl <= clinician[0].volume_nl + max(1, driver.read_dispensed().infused_nl // 1000)
        again.controller.detach()
        again.store.abandon()
        assert orphan_day(sim, clock, truth) == []  # and left alone again, it keeps delivering
        assert truth.worst_window(MS_PER_DAY)[0] <= CAP_UG * 10**6


def test_over_a_pty_a_bolus_then_a_kill_then_24_h_alone_never_overdoses_the_patient(tmp_path: Path) -> None:
    """The real pty path: the controller dies 1 s into a 50 µg clinician bolus; the patient model, fed what
    left the catheter tip, shows no overdose over the next 24 h (the bolus ends by the pump's own program).
    With the old rate-path bolus the same test ends in respiratory depression."""
    truth = Truth()
    with death_rig(tmp_path, "pty", link="pty") as (sim, driver, path, clock):
        rig = build_rig(clock, driver, Store(path, clock), prescription=PRESCRIPTION)
        run_until_death(rig, sim, truth, MS_PER_DAY + 2 * MS_PER_H + 1000)
        assert rig.loop.bolus is not None, "the bolus runs when the controller dies"
        rig.controller.detach()
        rig.store.abandon()
        assert orphan_day(sim, clock, truth) == []
    patient = Patient()
    last_t = last_pg = 0
    for t, pg, _nl in truth.samples:
        patient.receive_intrathecal((pg - last_pg) / 1e6, last_t / 1000, t / 1000)
        last_t, last_pg = t, pg
    assert patient.peak_overdose is OverdoseLevel.NONE, patient.peak_overdose
    assert truth.worst_window(MS_PER_DAY)[0] <= CAP_UG * 10**6


def test_in_safe_mode_a_dead_controller_is_a_stop_at_the_watchdog_which_is_why_therapy_runs_in_basic_mode(
        tmp_path: Path) -> None:
    """The withdrawal trap, shown: with the longest watchdog (255 s) the pump alarms ``A?T`` and stops
    4 min 15 s after the controller dies, and stays stopped until a restart, which resumes the basal.
    The bench section of the README gives the trade-off (CRC framing against this stop)."""
    truth = Truth()
    settings = ControllerSettings(poll_interval_ms=MS_PER_MIN)  # polls feed the watchdog in virtual time
    with death_rig(tmp_path, "safe", safe_mode_timeout_s=255) as (sim, driver, path, clock):
        rig = build_rig(clock, driver, Store(path, clock), prescription=PRESCRIPTION, settings=settings)
        run_until_death(rig, sim, truth, 3 * MS_PER_H)
        assert sim.device.state == "I" and sim.device.alarm is None
        rig.controller.detach()
        rig.store.abandon()
        clock.advance(254)
        sim.device.poll()
        assert sim.device.state == "I"
        clock.advance(2)
        sim.device.poll()
        assert sim.device.alarm == "T" and sim.device.state == "S"  # the pump's own watchdog stopped it
        clock.advance(3600)
        again = build_rig(clock, driver, Store(path, clock), prescription=PRESCRIPTION, settings=settings,
                          recover=True)
        again.advance(10 * MS_PER_MIN)
        assert sim.device.state == "I" and sim.device.mechanics.rate_nl_per_h == 8333
        again.store.close()
