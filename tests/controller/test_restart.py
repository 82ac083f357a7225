"""Crash and restart at every durable write point (PER-01, PER-02, BOL-05, HAL-06).

A scripted day of therapy (implant with priming, a day of basal, a patient
bolus, its end) is run once to count the store's write points. Then, for each
write point, the same script runs with a crash injected just before that write
commits; a new controller is built on the same store file and the same pump,
recovers, and must: resume the 24 h accounting and the bolus lockout, never
send an interrupted bolus again, and leave the pump delivering basal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from controller.store import Store
from controller.loop import Mode
from hal.pump import PumpState
from sim.clock import VirtualClock
from sim.fake_pump import FakePump

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000
BASAL_NL_PER_H = 8333
BOLUS_NL = 50_000  # 25 µg at 500 µg/mL
PRIMING_NL = 250_000


class Crash(Exception):
    """Raised by the store hook to stop the controller mid-write, like a power cut."""


def script(rig: Any) -> None:
    """A day of therapy with one patient bolus; stops wherever the crash hits."""
    assert rig.therapy.implant(500, 20_000_000, dose_ng_per_day=100_000).allowed
    rig.advance(MS_PER_DAY)
    rig.therapy.configure_patient_bolus(25_000, 10 * MS_PER_MIN)
    rig.advance(MS_PER_H)
    rig.therapy.patient_bolus_request()
    rig.advance(5 * MS_PER_MIN)
    rig.advance(2 * MS_PER_H)


def new_rig(build: Any, path: Path) -> Any:
    """A controller over a fresh fake pump and a store at ``path``, on a new virtual clock."""
    clock = VirtualClock()
    return build(clock, FakePump(clock), Store(path, clock))


def crash_and_restart(rig: Any, build: Any, path: Path, clock: VirtualClock | None = None) -> Any:
    """The process dies (its store abandoned unflushed); a new one opens the same file and the same pump.

    :param clock: the new process's clock (default: the same one, as after a process restart).
    """
    rig.store.abandon()
    return build(clock or rig.clock, rig.pump, Store(path, rig.clock), recover=True)


def run_with_crash(tmp_path: Path, build: Any, crash_at: int | None) -> tuple[Any, Any, Any, bool]:
    """Run the script, crashing at write ``crash_at``; restart; return (rig after restart, pump, clock, crashed)."""
    path = tmp_path / f"store-{crash_at}.sqlite"
    clock = VirtualClock()
    pump = FakePump(clock)
    store = Store(path, clock)

    def hook(n: int) -> None:
        if n == crash_at:
            raise Crash(f"power cut before write {n}")

    store.before_write = hook
    crashed = False
    try:
        script(build(clock, pump, store))
    except Crash:
        crashed = True
    store.abandon()
    # The process is gone; a new one opens the same file and the same pump.
    reopened = Store(path, clock)
    again = build(clock, pump, reopened, recover=True)
    return again, pump, clock, crashed


def test_every_write_point(tmp_path: Path, rig_builder: Any) -> None:
    clock = VirtualClock()
    store = Store(tmp_path / "count.sqlite", clock)
    script(rig_builder(clock, FakePump(clock), store))
    total = store.writes
    store.close()
    assert total >= 8

    for crash_at in range(1, total + 1):
        rig, pump, _clock, crashed = run_with_crash(tmp_path, rig_builder, crash_at)
        assert crashed, f"write {crash_at} was never reached"
        where = f"crash before write {crash_at}"
        if rig.loop.mode is Mode.IDLE:
            # Crashed before the first therapy checkpoint: the new controller sends nothing.
            sent = len(pump.command_log)
            rig.advance(MS_PER_H)
            assert len(pump.command_log) == sent, where
            continue
        rig.advance(3 * MS_PER_H)
        # Never stopped, back on basal.
        assert pump.state is PumpState.INFUSING, where
        assert pump.rate_nl_per_h == BASAL_NL_PER_H, where
        # No bolus delivered twice: total volume is at most basal + priming + one patient bolus.
        elapsed_h = rig.loop.now_ms() / MS_PER_H
        ceiling = BASAL_NL_PER_H * elapsed_h + PRIMING_NL + BOLUS_NL + 2000
        assert pump.infused_nl <= ceiling, f"{where}: {pump.infused_nl} nL > {ceiling:.0f} nL"
        records = rig.store.boluses()
        assert all(b.status == "finished" for b in records), where
        patient = [b for b in records if b.kind == "patient"]
        assert len(patient) <= 1, where
        # 24 h accounting resumed from the store, not from zero.
        now = rig.loop.now_ms()
        if now >= MS_PER_DAY + 2 * MS_PER_H:
            assert rig.gate.total_24h_ng(now) >= 90_000, f"{where}: 24 h total {rig.gate.total_24h_ng(now)} ng"
        # The lockout survived: a bolus that may have started blocks another for 4 h.
        if patient and rig.loop.now_ms() - patient[0].requested_ms < 4 * MS_PER_H:
            rig.therapy.configure_patient_bolus(25_000, 10 * MS_PER_MIN)
            assert "BOLUS_LOCKOUT" in rig.therapy.patient_bolus_request().reasons, where
        rig.store.close()


def test_restart_without_crash_resumes_lockout_and_ledger(tmp_path: Path, rig_builder: Any) -> None:
    rig = new_rig(rig_builder, tmp_path / "clean.sqlite")
    pump = rig.pump
    script(rig)
    before = rig.gate.total_24h_ng(rig.loop.now_ms())
    again = crash_and_restart(rig, rig_builder, tmp_path / "clean.sqlite")
    assert again.loop.mode is Mode.RUNNING
    assert again.gate.total_24h_ng(again.loop.now_ms()) >= before - 1000
    assert again.therapy.patient_bolus is not None  # workflow state came back too
    assert again.therapy.patient_bolus_request().reasons == ("BOLUS_LOCKOUT",)
    sent = len(pump.command_log)
    again.advance(MS_PER_H)
    assert len(pump.command_log) == sent  # a restart emits no therapy change
    again.store.close()


def test_restart_with_no_state_sends_nothing(tmp_path: Path, rig_builder: Any) -> None:
    clock = VirtualClock()
    pump = FakePump(clock)
    pump.set_rate(8333)
    pump.start()
    log = len(pump.command_log)
    rig = rig_builder(clock, pump, Store(tmp_path / "empty.sqlite", clock), recover=True)
    assert rig.loop.mode is Mode.IDLE
    rig.advance(MS_PER_H)
    assert len(pump.command_log) == log
    assert pump.state is PumpState.INFUSING  # whatever it ran, it keeps running
    rig.store.close()


def test_restart_long_after_the_checkpoint_neither_double_counts_nor_forgets(tmp_path: Path, rig_builder: Any) -> None:
    rig = new_rig(rig_builder, tmp_path / "late.sqlite")
    pump = rig.pump
    assert rig.therapy.implant(500, 20_000_000, dose_ng_per_day=100_000).allowed  # primed catheter
    rig.advance(2 * MS_PER_DAY + 20 * MS_PER_H)  # the last checkpoint is long before the crash
    before = rig.gate.total_24h_ng(rig.loop.now_ms())
    again = crash_and_restart(rig, rig_builder, tmp_path / "late.sqlite")
    after = again.gate.total_24h_ng(again.loop.now_ms())
    assert abs(after - before) <= 5_000, (before, after)  # about one day's 100 µg, not two
    assert again.loop.total_counted_nl == pump.infused_nl
    again.store.close()


def test_restart_on_a_new_monotonic_origin_continues_controller_time(tmp_path: Path, rig_builder: Any) -> None:
    from datetime import timedelta

    rig = new_rig(rig_builder, tmp_path / "reboot.sqlite")
    clock, pump = rig.clock, rig.pump
    rig.therapy.implant(500, 20_000_000, dose_ng_per_day=100_000)
    rig.advance(MS_PER_DAY)
    rig.therapy.configure_patient_bolus(25_000, 10 * MS_PER_MIN)
    assert rig.therapy.patient_bolus_request().allowed
    saved_ms = rig.loop.now_ms()
    # The host rebooted: monotonic time starts again from zero, wall time moved on by 1 h.
    rebooted = VirtualClock(start_utc=clock.utc_now() + timedelta(hours=1))
    clock.advance(3600)
    again = crash_and_restart(rig, rig_builder, tmp_path / "reboot.sqlite", clock=rebooted)
    assert again.loop.now_ms() >= saved_ms + MS_PER_H - 1000
    again.therapy.configure_patient_bolus(25_000, 10 * MS_PER_MIN)
    assert again.therapy.patient_bolus_request().reasons == ("BOLUS_LOCKOUT",)  # lockouts survive the reboot
    again.store.close()


class _Stop(Exception):
    pass


def test_store_writes_are_all_or_nothing(tmp_path: Path) -> None:
    """A bolus record's completion and the resume point that goes with it commit together, or not at all."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from controller.store import BolusRecord

    @settings(max_examples=30)
    @given(bodies=st.lists(st.dictionaries(st.sampled_from("abc"), st.integers(-10, 10)), min_size=1, max_size=6),
           crash_at=st.integers(1, 12))
    def check(bodies: list[dict[str, int]], crash_at: int) -> None:
        path = tmp_path / "atomic.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        clock = VirtualClock()
        store = Store(path, clock)

        def hook(n: int) -> None:
            if n == crash_at:
                raise _Stop

        store.before_write = hook
        committed: dict[str, int] | None = None
        bolus_ids: list[str] = []
        finishes = 0
        try:
            for i, body in enumerate(bodies):
                store.add_bolus(BolusRecord(f"b{i}", "patient", 1, 1, "pending", i))
                bolus_ids.append(f"b{i}")
                with store.transaction():
                    store.finish_bolus(f"b{i}", i, 1, "complete")
                    store.save_resume_point(body)
                committed = body
                finishes += 1
        except _Stop:
            pass
        store.abandon()
        reopened = Store(path, clock)
        assert reopened.load_resume_point() == committed
        records = reopened.boluses()
        assert [r.bolus_id for r in records] == bolus_ids
        # A finished record always comes with its resume point, in one transaction.
        finished = [r for r in records if r.status == "finished"]
        assert len(finished) == finishes
        reopened.close()

    check()


def test_alarm_events_survive_a_crash_straight_after_them(tmp_path: Path, rig_builder: Any) -> None:
    """ALM-06, PER-05: every raise, clear and acknowledgement is in the journal before the process can die with it.
    A clear staged for the next commit (up to the 72 h checkpoint) was lost with a crash, so the restarted controller
    held the stall as still active (and swallowed the next stall's raise)."""
    path = tmp_path / "alarms.sqlite"
    rig = new_rig(rig_builder, path)
    assert rig.therapy.implant(500, 20_000_000, dose_ng_per_day=100_000).allowed
    rig.advance(MS_PER_H)
    before = len(rig.store.alarm_events())
    rig.pump.inject_stall()
    rig.advance(rig.loop.config.poll_interval_ms)  # the poll that finds the stall raises its alarms
    assert rig.therapy.resume().allowed  # the clinician restarts the pump
    rig.advance(rig.loop.config.poll_interval_ms)  # and the poll that confirms delivery clears them
    raised = [code for code in ("motor_stall", "therapy_interrupted") if ("raise", code) in rig.store.alarm_events()]
    rig.store.abandon()  # the process dies straight after that poll: nothing staged survives
    reopened = Store(path, rig.clock)
    events = reopened.alarm_events()[before:]
    assert raised, "the stall raised nothing"
    for code in raised:
        assert [e for e in events if e[1] == code] == [("raise", code), ("clear", code)], (code, events)
    reopened.close()
