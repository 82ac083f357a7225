"""A controller death anywhere in a concentration-change refill, then 24 h on the rebooted controller (issue #9).

PER-01/PER-02 (durable before done; a restart resumes from durable state and reconciles with the pump),
RES-03/RES-04 (the refill's concentration and fill recorded; a session killed at any step leaves the last
committed programme, never a half-applied one) and PRX-06 (a concentration change re-derives the rate; no
rate runs while the pump's concentration and the refill record disagree). The controller is killed before every durable write of the refill
and after every delivery command the pump accepted, with the reservoir already holding the new drug; a new
process opens the same store file against the same fake pump, which kept running. The oracle is physical:
the pump's pushed volume (``actual_delivered_nl``) through :class:`sim.catheter.PhysicalCatheter`, never the
kernel's ledger. Where nothing of the refill was durable and nothing reached the pump, the refill did not
happen and the clinician, who got no confirmation, repeats it. Every kill point is also rebooted after the
pump ran alone for 10 h (into its transit program's second phase), and after a pump power cycle; a change
refused (and said so) is not completed by a restart, and one the kernel refuses at the restart leaves
minimum rate with programming blocked.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.alarms import AlarmCode
from controller.gate import GateDecision, KernelGate
from controller.loop import Mode
from controller.store import Store
from sim.clock import VirtualClock
from sim.fake_pump import FakePump
from tests.controller.conftest import MS_PER_DAY, build_rig
from tests.controller.test_transit import HIGH_CAP, STEP_MS, TipOracle, assert_tip_dose_holds

DOSE_UG_PER_DAY = 400
CAP_UG_PER_DAY = 2000
#: Pump calls that change what it delivers.
DELIVERY_CALLS = ("pause", "stop", "start", "set_rate", "stage_program", "commit_program")


class Death(BaseException):
    """The controller process is gone from here on (not an ``Exception``: nothing in the controller catches it)."""


def _implanted(path: Path, old: int) -> tuple[Any, TipOracle]:
    clock = VirtualClock()
    rig = build_rig(clock, FakePump(clock), Store(path, clock), concentration=old, dose_ug_per_day=DOSE_UG_PER_DAY,
                    dead_volume_ml="0.25", max_dose_ug_per_day=CAP_UG_PER_DAY, extra=HIGH_CAP)
    oracle = TipOracle(rig, rig.prescription.pump.dead_volume_nl)
    oracle.fill(old)
    assert rig.therapy.implant(old, 20_000_000, dose_ng_per_day=DOSE_UG_PER_DAY * 1000).allowed
    for _ in range(2 * MS_PER_DAY // STEP_MS):
        oracle.step(STEP_MS)
    return rig, oracle


def _refill(rig: Any, new: int) -> Any:
    return rig.therapy.refill(removed_nl=rig.loop.reservoir_nl(), added_nl=20_000_000,
                              concentration_ug_per_ml=new, lot="T1")


def _kill_points(tmp_path: Path, old: int, new: int) -> tuple[int, int]:
    """(durable writes, accepted delivery calls) of one uninterrupted refill."""
    rig, oracle = _implanted(tmp_path / "count.sqlite", old)
    writes = rig.store.writes
    calls = _die(rig.pump, 0)
    oracle.fill(new)
    assert _refill(rig, new).allowed
    return rig.store.writes - writes, calls[0]


def _die(pump: FakePump, after_calls: int) -> list[int]:
    """Make ``pump`` kill the controller right after its ``after_calls``-th accepted delivery command (0: never).

    :return: a one-item list counting the delivery calls made so far.
    """
    seen = [0]
    for name in DELIVERY_CALLS:
        call = getattr(pump, name)

        def wrapped(*args: Any, _call: Any = call, **kwargs: Any) -> Any:
            result = _call(*args, **kwargs)
            seen[0] += 1
            if seen[0] == after_calls:
                raise Death(f"killed after delivery command {after_calls}")
            return result

        setattr(pump, name, wrapped)
    return seen


def _undie(pump: FakePump) -> None:
    for name in DELIVERY_CALLS:
        pump.__dict__.pop(name, None)


def die_inside_refill(rig: Any, pump: FakePump, after_calls: int, concentration_ug_per_ml: int, lot: str) -> int:
    """A refill to ``concentration_ug_per_ml`` (a full 20 mL) during which the controller dies right after the pump's
    ``after_calls``-th accepted delivery command; the process is gone (store abandoned, observers detached).

    :return: how many delivery calls the refill had made when it died.
    """
    calls = _die(pump, after_calls)
    with pytest.raises(Death):
        rig.therapy.refill(removed_nl=0, added_nl=20_000_000, concentration_ug_per_ml=concentration_ug_per_ml, lot=lot)
    _undie(pump)
    rig.store.abandon()
    rig.controller.detach()
    return calls[0]


def reboot(rig: Any, clock: Any, pump: FakePump, path: Path) -> Any:
    """A new controller on the same store file, pump, prescription, settings and patient, recovered."""
    return build_rig(clock, pump, Store(path, clock), recover=True, prescription=rig.prescription,
                     settings=rig.settings, patient=rig.controller.patient)


def _killed_and_rebooted(tmp_path: Path, old: int, new: int, kind: str, n: int, downtime_ms: int,
                         before_reboot: Callable[[FakePump], None] | None = None) -> tuple[Any, TipOracle, int, bool]:
    """Kill a refill at ``kind`` ``n``, let the pump run alone for ``downtime_ms``, call ``before_reboot`` with the
    pump, boot a new controller.

    :return: (the rebooted rig, its oracle, the pump's command-log length before the refill, whether any
        command of the refill reached the pump).
    """
    path = tmp_path / f"{old}-{new}-{kind}-{n}-{downtime_ms}.sqlite"
    rig, oracle = _implanted(path, old)
    pump, clock = rig.pump, rig.clock
    base = rig.store.writes
    sent_before = len(pump.command_log)
    if kind == "write":
        def hook(k: int, _n: int = n, _base: int = base) -> None:
            if k == _base + _n:
                raise Death(f"killed before write {_n}")
        rig.store.before_write = hook
    else:
        _die(pump, n)
    oracle.fill(new)
    with pytest.raises(Death):
        _refill(rig, new)
    _undie(pump)
    rig.store.abandon()
    rig.controller.detach()
    for _ in range(downtime_ms // STEP_MS):
        clock.advance(STEP_MS / 1000)
        oracle.steps.append((oracle.steps[-1][0] + STEP_MS, oracle._flush()))
    if before_reboot is not None:
        before_reboot(pump)
    again = build_rig(clock, pump, Store(path, clock), recover=True, prescription=rig.prescription,
                      settings=rig.settings, patient=rig.controller.patient)
    oracle.rig = again
    return again, oracle, sent_before, len(pump.command_log) > sent_before


#: Downtimes between the death and the reboot, ms: none, and long enough for the pump's transit program to
#: reach its second phase by itself (0.25 mL of old drug at 0.8 mL/day: 7.5 h).
DOWNTIMES_MS = (0, 10 * 3_600_000)


@pytest.mark.parametrize("downtime_ms", DOWNTIMES_MS)
@pytest.mark.parametrize("old,new", [(500, 2000), (2000, 500)])
def test_a_death_anywhere_in_a_concentration_change_refill_never_misdoses_the_tip(tmp_path: Path, old: int,
                                                                                new: int, downtime_ms: int) -> None:
    writes, calls = _kill_points(tmp_path, old, new)
    assert writes >= 1 and calls >= 1
    failures: list[str] = []
    points = [("write", n) for n in range(1, writes + 1)] + [("call", n) for n in range(1, calls + 1)]
    for kind, n in points:
        where = f"{old} -> {new} µg/mL, killed at {kind} {n}, {downtime_ms / 3_600_000:g} h down"
        again, oracle, sent_before, reached_pump = _killed_and_rebooted(tmp_path, old, new, kind, n, downtime_ms)
        pump = again.pump
        if again.loop.concentration_ug_per_ml == old and not reached_pump:
            # Nothing of the refill survived and the pump never saw it: the clinician repeats it. Not after a
            # downtime: the pump then ran the old programme on the new drug while nothing knew of the refill,
            # beyond any controller's reach (the refill session is the only record of the new drug).
            if downtime_ms:
                again.store.close()
                continue
            oracle.fill(new)
            assert _refill(again, new).allowed, where
        elif again.loop.concentration_ug_per_ml != new or again.gate.concentration_ug_per_ml != new:
            failures.append(f"{where}: the controller runs {again.loop.concentration_ug_per_ml} µg/mL (kernel "
                            f"{again.gate.concentration_ug_per_ml}) with {new} µg/mL in the reservoir")
        elif kind == "call" and not again.alarms.is_active(AlarmCode.UNFINISHED_SESSION):
            # Killed inside the programming: the change was completed by the restart, not confirmed (RES-04).
            failures.append(f"{where}: the change completed at restart without an UNFINISHED_SESSION alarm")
        try:
            assert_tip_dose_holds(again, oracle, DOSE_UG_PER_DAY, CAP_UG_PER_DAY, again.loop.now_ms() + 3 * MS_PER_DAY)
        except AssertionError as failure:
            failures.append(f"{where}: {str(failure).splitlines()[0]} (concentration after reboot "
                            f"{again.loop.concentration_ug_per_ml}, pump {pump.command_log[sent_before:]})")
        again.store.close()
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("old,new", [(500, 2000), (2000, 500)])
def test_a_pump_power_cycle_after_a_death_in_the_refill_gives_the_new_drug_s_minimum_rate(tmp_path: Path, old: int,
                                                                                          new: int) -> None:
    """After the transit program was accepted, the controller dies and the pump loses power: the restart
    completes the change (the kernel at the new concentration) and takes PUMP_RESET's minimum rate."""
    again, oracle, _sent, _reached = _killed_and_rebooted(tmp_path, old, new, "call", 3, 0, FakePump.power_cycle)
    assert again.loop.concentration_ug_per_ml == new and again.gate.concentration_ug_per_ml == new
    assert again.loop.mode is Mode.MINIMUM_RATE and again.pump.rate_nl_per_h == again.loop.config.minimum_rate_nl_per_h
    assert again.alarms.is_active(AlarmCode.UNFINISHED_SESSION) and again.alarms.is_active(AlarmCode.PUMP_RESET)
    for _ in range(MS_PER_DAY // STEP_MS):
        oracle.step(STEP_MS)
        assert oracle.last_24h_pg() <= CAP_UG_PER_DAY * 1_000_000
    again.store.close()


@pytest.mark.parametrize("old,new", [(500, 2000), (2000, 500)])
def test_a_restart_after_a_refused_concentration_change_keeps_the_old_drug(tmp_path: Path, old: int, new: int) -> None:
    """The pause's reply is lost, so the change is refused (PUMP_NOT_VERIFIED) and the clinician keeps the old
    drug in; a restart must not complete the change it found started (the clinical adversary: 1/4 of the dose
    after 500 -> 2000 µg/mL once it did)."""
    rig, _oracle = _implanted(tmp_path / "refused.sqlite", old)
    faults = rig.pump.faults
    faults.uncertain_next, faults.apply_uncertain, faults.raise_uncertain = True, False, False
    assert not _refill(rig, new).allowed
    again = rig.restart()
    assert again.loop.concentration_ug_per_ml == old and again.gate.concentration_ug_per_ml == old
    assert again.loop.transit is None and not again.alarms.is_active(AlarmCode.UNFINISHED_SESSION)
    again.store.close()


@pytest.mark.parametrize("old,new", [(500, 2000), (2000, 500)])
def test_a_change_the_kernel_refuses_at_restart_leaves_minimum_rate_and_blocks_programming(
        tmp_path: Path, old: int, new: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the transit program's RUN; at the reboot the kernel refuses the change (a stand-in for a
    stricter prescription or a lost history): minimum rate, a high-priority alarm naming PRX-06, and no
    programme for either drug until the concentrations agree (a resume would judge the new drug as the old)."""
    def refuse_from_now(_pump: FakePump) -> None:
        monkeypatch.setattr(KernelGate, "authorize_concentration_change",
                            lambda self, *args, **kwargs: GateDecision.denied("TEST_REFUSAL"))

    again, oracle, _sent, _reached = _killed_and_rebooted(tmp_path, old, new, "call", 3, 0, refuse_from_now)
    assert again.loop.mode is Mode.MINIMUM_RATE and again.pump.rate_nl_per_h == again.loop.config.minimum_rate_nl_per_h
    assert again.loop.concentration_ug_per_ml == new and again.gate.concentration_ug_per_ml == old
    held = [a for a in again.alarms.active() if a.code is AlarmCode.UNFINISHED_SESSION]
    assert held and "PRX-06" in held[0].detail and "TEST_REFUSAL" in held[0].detail
    resumed = again.therapy.resume()
    assert not resumed.allowed, resumed
    if new > old:  # the kernel, judging the new drug as the old, would let the programme through
        assert "CONCENTRATION_MISMATCH" in resumed.reasons, resumed
    assert again.pump.rate_nl_per_h == again.loop.config.minimum_rate_nl_per_h
    for _ in range(MS_PER_DAY // STEP_MS):
        oracle.step(STEP_MS)
        assert oracle.last_24h_pg() <= CAP_UG_PER_DAY * 1_000_000
    again.store.close()


@pytest.mark.parametrize("old,new", [(500, 2000), (2000, 500)])
def test_a_change_refused_at_a_restart_that_cannot_read_the_pump_ends_at_minimum_rate(
        tmp_path: Path, old: int, new: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """RES-04, PRX-06, SAFE-01, ALM-07: killed after the transit program's RUN, rebooted with the pump unreadable and
    the kernel refusing the change. Nothing can be commanded: the comms-lost alarms are raised (therapy status
    unknown, then the unconfirmed-delivery timeout) with UNFINISHED_SESSION naming PRX-06, and no command is sent.
    The first poll that reads the pump again enters the minimum rate, before anything else is put back: the old
    programme never runs on the new drug. The physical tip dose never passes the cap."""
    def refuse_and_cut(pump: FakePump) -> None:
        monkeypatch.setattr(KernelGate, "authorize_concentration_change",
                            lambda self, *args, **kwargs: GateDecision.denied("TEST_REFUSAL"))
        pump.faults.comms_down = True

    again, oracle, _sent, _reached = _killed_and_rebooted(tmp_path, old, new, "call", 3, 0, refuse_and_cut)
    assert again.alarms.is_active(AlarmCode.THERAPY_STATUS_UNKNOWN)
    held = [a for a in again.alarms.active() if a.code is AlarmCode.UNFINISHED_SESSION]
    assert held and "PRX-06" in held[0].detail and "TEST_REFUSAL" in held[0].detail
    sent = len(again.pump.command_log)
    for _ in range(6):  # three hours unreadable: the unconfirmed-delivery alarm, nothing sent
        oracle.step(STEP_MS)
    assert len(again.pump.command_log) == sent
    assert "therapy_status_unknown" in again.log.raised()
    again.pump.faults.comms_down = False
    oracle.step(STEP_MS)
    assert again.loop.mode is Mode.MINIMUM_RATE, again.loop.mode
    assert again.pump.rate_nl_per_h == again.loop.config.minimum_rate_nl_per_h
    assert again.loop.concentration_ug_per_ml == new and again.gate.concentration_ug_per_ml == old
    for _ in range(MS_PER_DAY // STEP_MS):
        oracle.step(STEP_MS)
        assert again.pump.rate_nl_per_h == again.loop.config.minimum_rate_nl_per_h
        assert oracle.last_24h_pg() <= CAP_UG_PER_DAY * 1_000_000
    again.store.close()
