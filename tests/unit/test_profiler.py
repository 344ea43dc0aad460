"""The step profiler: per-stage figures from the OS, a sampler that never fails or stalls the step."""

from __future__ import annotations

import os
import threading
import time

import pytest

from predcheck_dagster import profiler as profiler_module
from predcheck_dagster.profiler import COMPUTE, HANDLE_OUTPUTS, LOAD_INPUTS, PROC, StepProfiler

MB = 1024 * 1024
SUMMARY_KEYS = {"started_at", "ended_at", "duration_s", "cpu_s", "cpu_user_s", "cpu_system_s", "peak_rss_bytes",
                "mean_rss_bytes", "read_bytes", "write_bytes", "netns_recv_bytes", "netns_sent_bytes",
                "stage_durations", "stage_profile", "work_units", "host", "dropped_samples", "profiler_errors"}
SAMPLE_KEYS = {"run_id", "step_key", "ts", "elapsed_s", "cpu_s", "rss_bytes", "read_bytes", "write_bytes",
               "stage", "work_units", "input_bytes", "dropped_samples"}
STAGE_KEYS = {"wall_s", "cpu_user_s", "cpu_system_s", "read_bytes", "write_bytes", "peak_rss_bytes"}


def seconds(value: float):
    """Equal to within 10 µs: differences of epoch timestamps (~1.8e9 s) carry about 1e-7 s of noise."""
    return pytest.approx(value, abs=1e-5)


def wait_until(condition, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def burn(seconds: float) -> int:
    acc, end = 0, time.thread_time() + seconds
    while time.thread_time() < end:  # the clock read is a system call: read it rarely
        for _ in range(20_000):
            acc = (acc * 31 + 7) % 1_000_003
    return acc


# ---- live samples -----------------------------------------------------------------------------
def test_a_failing_sink_never_raises_and_every_unstored_sample_is_counted():
    calls: list[int] = []

    def broken_sink(batch):
        calls.append(len(batch))
        raise ConnectionError("metrics store down")

    profiler = StepProfiler("run-1", "crunch", sink=broken_sink, interval_s=0.01).start()
    assert wait_until(lambda: len(calls) >= 3)
    summary = profiler.stop()

    assert profiler.sink_errors >= 3 and summary["profiler_errors"] >= 3
    assert calls[:3] == sorted(calls[:3])  # failed batches stay buffered and are retried with newer samples
    assert SUMMARY_KEYS == set(summary)
    assert profiler.samples_stored == 0
    assert summary["dropped_samples"] == profiler.samples_taken >= 3  # nothing was stored: all counted


def test_a_full_buffer_drops_and_counts_the_oldest_samples(monkeypatch):
    monkeypatch.setattr(profiler_module, "MAX_BUFFERED_SAMPLES", 3)
    batches: list[list[float]] = []

    def broken_sink(batch):
        batches.append([s["ts"] for s in batch])
        raise OSError("disk full")

    profiler = StepProfiler("run-1", "crunch", sink=broken_sink, interval_s=0.005).start()
    assert wait_until(lambda: profiler.dropped_samples >= 3)
    summary = profiler.stop()

    assert max(len(b) for b in batches) == 3
    assert all(b == sorted(b) for b in batches)
    assert summary["dropped_samples"] == profiler.samples_taken  # dropped while full, or unstored at the end


def test_a_blocking_sink_neither_stops_sampling_nor_stalls_the_step():
    release = threading.Event()
    entered = threading.Event()

    def hung_sink(batch):
        entered.set()
        release.wait(30)  # a database that stopped answering

    profiler = StepProfiler("run-1", "crunch", sink=hung_sink, interval_s=0.01, flush_timeout_s=0.2).start()
    try:
        assert entered.wait(3)
        taken = profiler.samples_taken
        assert wait_until(lambda: profiler.samples_taken >= taken + 5)  # still sampling while the sink hangs
        started = time.monotonic()
        summary = profiler.stop()
        assert time.monotonic() - started < 2.0  # bounded by flush_timeout_s, not by the sink
        assert profiler.samples_stored == 0
        assert summary["dropped_samples"] == profiler.samples_taken
    finally:
        release.set()


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
    assert summary["dropped_samples"] == 0 and profiler.samples_stored == profiler.samples_taken


def test_samples_reach_a_real_metrics_store(metrics):
    profiler = StepProfiler("run-1", "crunch", sink=metrics.add_samples, interval_s=0.01).start()
    assert wait_until(lambda: len(metrics.samples("run-1", "crunch")) >= 2)
    summary = profiler.stop()
    assert profiler.sink_errors == 0 and summary["dropped_samples"] == 0
    assert len(metrics.samples("run-1", "crunch")) == profiler.samples_taken


# ---- stages -----------------------------------------------------------------------------------
def test_stage_durations_accumulate_and_nest():
    profiler = StepProfiler("run-1", "crunch", sink=None, interval_s=0)
    for _ in range(2):
        with profiler.stage("transform"):
            time.sleep(0.02)
    with profiler.stage("outer"):
        with profiler.stage("inner"):
            assert profiler.current_stage == "inner"
        assert profiler.current_stage == "outer"
    assert profiler.current_stage == COMPUTE
    with pytest.raises(RuntimeError, match="^boom$"), profiler.stage("failing"):
        raise RuntimeError("boom")

    durations = profiler.stage_durations
    assert durations["transform"] >= 0.04
    assert {"transform", "outer", "inner", "failing"} <= set(durations)
    assert durations["outer"] >= durations["inner"]


def test_each_stage_gets_its_own_cpu_user_and_system_time():
    profiler = StepProfiler("run-1", "crunch", sink=None, interval_s=0).start()
    with profiler.stage("burn"):
        burn(0.15)
    with profiler.stage("syscalls"), open("/dev/zero", "rb", buffering=0) as zero:
        end = time.thread_time() + 0.15
        while time.thread_time() < end:  # the kernel zero-fills: system time
            zero.read(4 * MB)
    with profiler.stage("sleep"):
        time.sleep(0.15)
    summary = profiler.stop()

    stages = summary["stage_profile"]
    assert all(set(figures) == STAGE_KEYS for figures in stages.values())
    assert 0.12 <= stages["burn"]["cpu_user_s"] <= stages["burn"]["wall_s"] + 0.02
    assert stages["sleep"]["cpu_user_s"] + stages["sleep"]["cpu_system_s"] < 0.05 < stages["sleep"]["wall_s"]
    assert stages["syscalls"]["cpu_system_s"] > 0.05
    assert summary["cpu_user_s"] >= stages["burn"]["cpu_user_s"]
    assert summary["cpu_s"] == pytest.approx(summary["cpu_user_s"] + summary["cpu_system_s"])


def test_each_stage_gets_its_own_disk_writes(tmp_path):
    profiler = StepProfiler("run-1", "crunch", sink=None, interval_s=0).start()
    with profiler.stage("write"), open(tmp_path / "blob", "wb") as f:
        f.write(os.urandom(4 * MB))
        f.flush()
        os.fsync(f.fileno())
    with profiler.stage("idle"):
        time.sleep(0.01)
    summary = profiler.stop()

    stages = summary["stage_profile"]
    assert stages["write"]["write_bytes"] >= 4 * MB
    assert stages["idle"]["write_bytes"] < MB
    assert summary["write_bytes"] >= 4 * MB


def test_each_stage_gets_its_own_peak_rss():
    assert PROC.reset_peak(), "the kernel refuses to reset the peak-RSS mark (/proc/self/clear_refs, Linux >= 4.0)"
    profiler = StepProfiler("run-1", "crunch", sink=None, interval_s=0).start()
    with profiler.stage("allocate"):
        block = bytearray(120 * MB)  # zero-filled: every page touched
        del block
    with profiler.stage("small"):
        small = bytearray(MB)
        del small
    summary = profiler.stop()

    stages = summary["stage_profile"]
    assert stages["allocate"]["peak_rss_bytes"] >= stages["small"]["peak_rss_bytes"] + 100 * MB
    assert summary["peak_rss_bytes"] == stages["allocate"]["peak_rss_bytes"]


def test_without_peak_resets_stages_get_no_peak_and_the_attempt_the_process_peak():
    profiler = StepProfiler("run-1", "crunch", sink=None, interval_s=0, reset_peak=False).start()
    with profiler.stage("small"):
        pass
    summary = profiler.stop()
    assert summary["stage_profile"]["small"]["peak_rss_bytes"] is None
    assert summary["peak_rss_bytes"] >= PROC.memory()[0]  # the lifetime peak is at least today's RSS


def test_automatic_stages_follow_the_step_events():
    t0 = time.time()
    profiler = StepProfiler("run-1", "crunch", sink=None, interval_s=0).start(at=t0)  # STEP_START
    profiler.inputs_loaded(t0 + 0.10)  # LOADED_INPUT
    profiler.inputs_loaded(t0 + 0.20, type_checked=True)  # STEP_INPUT
    profiler.output_started(t0 + 0.50)  # STEP_OUTPUT
    profiler.output_handled(t0 + 0.60)  # HANDLED_OUTPUT
    profiler.end(t0 + 0.70)  # STEP_SUCCESS
    summary = profiler.stop()

    assert summary["stage_durations"] == {LOAD_INPUTS: seconds(0.2), COMPUTE: seconds(0.4),
                                          HANDLE_OUTPUTS: seconds(0.1)}
    assert (summary["started_at"], summary["ended_at"]) == (t0, t0 + 0.70)
    assert summary["duration_s"] == seconds(0.7)


def test_a_named_stage_counts_inside_compute():
    t0 = time.time()
    profiler = StepProfiler("run-1", "crunch", sink=None, interval_s=0).start(at=t0)
    with profiler.stage("transform"):
        burn(0.05)
    summary = profiler.stop()
    stages = summary["stage_profile"]
    assert LOAD_INPUTS not in stages  # no inputs
    assert stages[COMPUTE]["wall_s"] >= stages["transform"]["wall_s"] > 0
    assert stages[COMPUTE]["cpu_user_s"] >= stages["transform"]["cpu_user_s"] > 0.03


def test_a_failure_while_loading_inputs_counts_as_loading():
    t0 = time.time()
    profiler = StepProfiler("run-1", "crunch", sink=None, interval_s=0).start(at=t0)
    profiler.inputs_loaded(t0 + 0.1)  # LOADED_INPUT of the first input
    profiler.end(t0 + 0.3)  # STEP_FAILURE while loading the second
    assert profiler.stop()["stage_durations"] == {LOAD_INPUTS: seconds(0.3)}


def test_a_failure_after_the_inputs_were_checked_counts_as_compute():
    t0 = time.time()
    profiler = StepProfiler("run-1", "crunch", sink=None, interval_s=0).start(at=t0)
    profiler.inputs_loaded(t0 + 0.1)  # LOADED_INPUT
    profiler.inputs_loaded(t0 + 0.2, type_checked=True)  # STEP_INPUT
    profiler.end(t0 + 0.5)  # STEP_FAILURE raised by the op
    assert profiler.stop()["stage_durations"] == {LOAD_INPUTS: seconds(0.2), COMPUTE: seconds(0.3)}


# ---- failures inside the profiler -------------------------------------------------------------
def test_a_profiler_that_raises_internally_leaves_the_code_alone(monkeypatch):
    def broken_snapshot(wall=None):
        raise OSError("/proc is gone")

    profiler = StepProfiler("run-1", "crunch", sink=None, interval_s=0.01).start()
    monkeypatch.setattr(profiler_module, "take_snapshot", broken_snapshot)
    with profiler.stage("work"):
        value = sum(range(1000))
    profiler.output_started()
    profiler.end()
    summary = profiler.stop()
    assert value == 499500
    assert summary["profiler_errors"] >= 2
    assert set(summary) == SUMMARY_KEYS


def test_stop_without_any_sample_returns_the_summary():
    profiler = StepProfiler("run-1", "crunch", sink=None, interval_s=0)
    profiler.work_units = 2.0
    summary = profiler.stop()
    assert set(summary) == SUMMARY_KEYS
    assert summary["work_units"] == 2.0
    assert summary["duration_s"] >= 0 and summary["cpu_s"] >= 0
    assert summary["peak_rss_bytes"] > 10 * MB
    again = profiler.stop()  # stopping twice is harmless
    assert again == summary


def test_the_network_figures_are_the_namespace_counters():
    with open("/proc/self/net/dev") as f:
        lines = f.read().splitlines()[2:]
    recv, sent = PROC.netns()
    interfaces = {line.split(":")[0].strip(): line.split(":")[1].split() for line in lines}
    interfaces.pop("lo", None)
    assert recv >= sum(int(v[0]) for v in interfaces.values())  # counters only grow
    assert sent >= sum(int(v[8]) for v in interfaces.values())


def test_both_threads_start_with_the_attempt_and_exit_when_it_is_recorded():
    """Threads started later would reserve their stacks under limits the op sets (RLIMIT_AS)."""
    batches: list[list[dict]] = []
    profiler = StepProfiler("run-1", "threads", sink=batches.append, interval_s=60).start()
    names = {t.name for t in threading.enumerate()}
    assert {"predcheck-sampler-threads", "predcheck-writer-threads"} <= names  # before any sample
    profiler.stop()
    assert wait_until(lambda: not {"predcheck-sampler-threads", "predcheck-writer-threads"}
                      & {t.name for t in threading.enumerate()})
    assert batches == []  # a step shorter than the interval writes no sample


def test_release_ends_an_unrecorded_attempt_without_waiting():
    release = threading.Event()
    profiler = StepProfiler("run-1", "released", sink=lambda batch: release.wait(30), interval_s=0.01).start()
    assert wait_until(lambda: profiler.samples_taken >= 1)
    started = time.monotonic()
    profiler.release()
    assert time.monotonic() - started < 0.5  # the hung sink is not waited for
    release.set()
    assert wait_until(lambda: "predcheck-writer-released" not in {t.name for t in threading.enumerate()})
