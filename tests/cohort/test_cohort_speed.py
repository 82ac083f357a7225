"""The cohort's speed: how ``itb bench cohort`` times it, and what a chunk does not spend time on.

``itb bench cohort`` on a virtual stopwatch (the runs are fakes). Oracle: the rule the bench states,
worked by hand. (a) runs once; (b) runs ``BASELINE_RUNS`` times and its fastest run is the baseline,
which is never slower than one run of it: the ratio can only come out higher than with one run. Then a worker's imports and the garbage collector during a chunk.
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import pytest

from hil.bench import cohort as bench


class _Stopwatch:
    """``time.perf_counter`` for the bench module: it moves only when a fake run says so, s."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def perf_counter(self) -> float:
        return self.now_s


@pytest.fixture()
def stopwatch(monkeypatch: pytest.MonkeyPatch) -> _Stopwatch:
    watch = _Stopwatch()
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=watch.perf_counter))
    return watch


def _fake_runs(monkeypatch: pytest.MonkeyPatch, watch: _Stopwatch, cohort_s: float,
               baseline_s: list[float]) -> list[tuple]:
    calls: list[tuple] = []
    walls = iter(baseline_s)

    def run_cohort(population, protocol, *, days, workers):
        calls.append(("cohort", population.size, days, workers))
        watch.now_s += cohort_s
        return SimpleNamespace(outcomes=())

    def time_plant_baseline(patients, days, *, seed, implementation):
        calls.append(("baseline", patients, days, implementation))
        wall = next(walls)
        watch.now_s += wall
        return SimpleNamespace(wall_s=wall)

    monkeypatch.setattr(bench, "run_cohort", run_cohort)
    monkeypatch.setattr(bench, "time_plant_baseline", time_plant_baseline)
    return calls


def test_the_baseline_is_the_fastest_of_its_runs_after_the_cohort(monkeypatch, stopwatch) -> None:
    calls = _fake_runs(monkeypatch, stopwatch, 18.0, [9.0, 6.0, 7.5])
    figures = bench.run(argparse.Namespace(quick=True))
    assert bench.BASELINE_RUNS == 3
    assert calls == [("cohort", bench.QUICK_PATIENTS, bench.QUICK_DAYS, bench.WORKERS)] + \
        [("baseline", bench.QUICK_PATIENTS, bench.QUICK_DAYS, "numpy")] * 3
    assert figures["plant_only_numpy_wall_s_each"] == [9.0, 6.0, 7.5]
    assert figures["plant_only_numpy_wall_s"] == 6.0 and figures["plant_only_numpy_rule"] == "fastest run"
    assert figures["cohort_wall_s"] == 18.0
    assert figures["cohort_over_plant_only"] == 3.0  # 18 / 6: the first run alone would have said 2.0
    assert figures["ratio_within_target"] is True


def test_a_lucky_baseline_run_fails_a_cohort_that_one_slow_run_would_pass(monkeypatch, stopwatch) -> None:
    _fake_runs(monkeypatch, stopwatch, 18.0, [8.0, 8.5, 5.9])
    figures = bench.run(argparse.Namespace(quick=True))
    assert figures["cohort_over_plant_only"] == pytest.approx(18.0 / 5.9, abs=0.005)
    assert figures["ratio_within_target"] is False


def test_a_chunk_worker_imports_no_scipy() -> None:
    """What a worker process imports to run a chunk leaves SciPy out (its special functions alone took
    about 0.5 s to import in every spawned worker); only drawing a population needs it."""
    import subprocess
    import sys

    code = ("import sys, hil.cohort.engine, hil.cohort.run; "
            "print(sorted(m for m in sys.modules if m == 'scipy' or m.startswith('scipy.')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("enabled", [True, False])
def test_a_chunk_runs_without_automatic_gc_passes_and_restores_the_collector(enabled, monkeypatch, protocol,
                                                                            small_population) -> None:
    import dataclasses
    import gc

    from hil.cohort import engine
    from hil.cohort.run import chunk_specs

    spec = chunk_specs(dataclasses.replace(small_population, size=40).sample(), protocol, 2)[0]
    inside = [False]
    passes_inside = []
    run = engine._run_chunk

    def spy(spec):
        inside[0] = True
        try:
            return run(spec)
        finally:
            inside[0] = False

    def callback(phase, info):
        if phase == "start" and inside[0]:
            passes_inside.append(info["generation"])

    monkeypatch.setattr(engine, "_run_chunk", spy)
    was = gc.isenabled()
    (gc.enable if enabled else gc.disable)()
    gc.callbacks.append(callback)
    try:
        outcomes = engine.run_chunk(spec)
        assert gc.isenabled() is enabled
    finally:
        gc.callbacks.remove(callback)
        (gc.enable if was else gc.disable)()
    assert len(outcomes) == 40 and passes_inside == []


#: Top-level packages whose objects a cohort chunk must free by reference counting alone.
OUR_PACKAGES = frozenset({"controller", "cython_ext", "hal", "hil", "sim"})


def test_a_chunk_leaves_no_cyclic_garbage(protocol, small_population) -> None:
    """Run without the collector, a chunk must not leave its patients for it: after the run, a collection
    finds none of the project's objects (each patient's objects are freed by reference counting as the
    chunk returns)."""
    import dataclasses
    import gc

    from hil.cohort import engine
    from hil.cohort.run import chunk_specs

    spec = chunk_specs(dataclasses.replace(small_population, size=12).sample(), protocol, 20)[0]
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    flags = gc.get_debug()
    try:
        outcomes = engine._run_chunk(spec)
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        # Only the project's own objects: a thread that an earlier test left running (a Dask cluster's
        # event loop) may leave garbage of its own while the chunk runs.
        ours = [o for o in gc.garbage if type(o).__module__.split(".")[0] in OUR_PACKAGES]
        kinds = sorted({f"{type(o).__module__}.{type(o).__qualname__}" for o in ours})
    finally:
        gc.set_debug(flags)
        gc.garbage.clear()
        (gc.enable if was else gc.disable)()
    assert len(outcomes) == 12 and sum(len(o.decisions) for o in outcomes) > 12
    assert not ours, f"{len(ours)} of the project's objects left for the collector, of types {kinds}"
