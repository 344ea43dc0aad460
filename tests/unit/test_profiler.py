"""The step profiler: never fails the step, bounds its buffer, times stages."""

from __future__ import annotations

import time

import pytest

from predcheck_dagster import profiler as profiler_module
from predcheck_dagster.profiler import StepProfiler

SUMMARY_KEYS = {"started_at", "duration_s", "cpu_s", "peak_rss_bytes", "mean_rss_bytes", "read_bytes",
                "write_bytes", "stage_durations", "work_units", "host", "dropped_samples"}
SAMPLE_KEYS = {"run_id", "step_key", "ts", "elapsed_s", "cpu_s", "rss_bytes", "read_bytes", "write_bytes",
               "stage", "work_units", "input_bytes", "dropped_samples"}


def wait_until(condition, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_a_failing_sink_never_raises_into_the_step():
    calls: list[int] = []

    def broken_sink(batch):
        calls.append(len(batch))
        raise ConnectionError("metrics store down")

    profiler = StepProfiler("run-1", "crunch", sink=broken_sink, interval_s=0.01).start()
    assert wait_until(lambda: len(calls) >= 3)
    summary = profiler.stop()

    assert profiler.sink_errors >= 3
    assert calls == sorted(calls)  # failed batches stay buffered and are retried with the next sample
    assert SUMMARY_KEYS == set(summary)


def test_a_full_buffer_drops_and_counts_samples(monkeypatch):
    monkeypatch.setattr(profiler_module, "MAX_BUFFERED_SAMPLES", 3)
    batches: list[int] = []

    def broken_sink(batch):
        batches.append(len(batch))
        raise OSError("disk full")

    profiler = StepProfiler("run-1", "crunch", sink=broken_sink, interval_s=0.005).start()
    assert wait_until(lambda: profiler.dropped_samples >= 3)
    summary = profiler.stop()

    assert summary["dropped_samples"] == profiler.dropped_samples >= 3
    assert max(batches) == 3


def test_samples_reach_the_sink_with_the_store_columns():
    batches: list[list[dict]] = []
    profiler = StepProfiler("run-1", "crunch", sink=batches.append, interval_s=0.01).start()
    profiler.work_units = 5.0
    with profiler.stage("load"):
        assert wait_until(lambda: sum(len(b) for b in batches) >= 2)
    summary = profiler.stop()

    samples = [s for b in batches for s in b]
    assert all(set(s) == SAMPLE_KEYS for s in samples)
    assert {s["run_id"] for s in samples} == {"run-1"}
    assert any(s["stage"] == "load" for s in samples)
    assert [s["elapsed_s"] for s in samples] == sorted(s["elapsed_s"] for s in samples)
    assert all(s["rss_bytes"] > 0 for s in samples)
    assert summary["mean_rss_bytes"] > 0
    assert summary["dropped_samples"] == 0


def test_samples_reach_a_real_metrics_store(metrics):
    profiler = StepProfiler("run-1", "crunch", sink=metrics.add_samples, interval_s=0.01).start()
    assert wait_until(lambda: len(metrics.samples("run-1", "crunch")) >= 2)
    profiler.stop()
    assert profiler.sink_errors == 0


def test_stage_durations_accumulate_and_nest():
    profiler = StepProfiler("run-1", "crunch", sink=None, interval_s=0)
    for _ in range(2):
        with profiler.stage("transform"):
            time.sleep(0.02)
    with profiler.stage("outer"):
        with profiler.stage("inner"):
            assert profiler.current_stage == "inner"
        assert profiler.current_stage == "outer"
    assert profiler.current_stage is None
    with pytest.raises(RuntimeError, match="^boom$"), profiler.stage("failing"):
        raise RuntimeError("boom")

    assert profiler.stage_durations["transform"] >= 0.04
    assert set(profiler.stage_durations) == {"transform", "outer", "inner", "failing"}
    assert profiler.stage_durations["outer"] >= profiler.stage_durations["inner"]


def test_stop_without_any_sample_returns_the_summary():
    profiler = StepProfiler("run-1", "crunch", sink=None, interval_s=0)
    profiler.work_units = 2.0
    summary = profiler.stop()
    assert set(summary) == SUMMARY_KEYS
    assert summary["work_units"] == 2.0
    assert summary["duration_s"] >= 0 and summary["cpu_s"] >= 0
    assert summary["peak_rss_bytes"] > 10 * 1024 * 1024  # ru_maxrss is KiB on Linux: converted to bytes
    again = profiler.stop()  # stopping twice is harmless
    assert set(again) == SUMMARY_KEYS
    assert (again["started_at"], again["work_units"]) == (summary["started_at"], 2.0)
