"""The event profiler on real runs: what each step attempt records, on SQLite and on PostgreSQL.

A real Dagster instance on a temporary DAGSTER_HOME; the multiprocess executor where the figures
depend on the step owning its process, the in-process executor where a test swaps in a failing part.
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path

import pytest
from dagster import DagsterInstance, execute_job
from dagster._core.definitions.reconstruct import ReconstructableJob

import predcheck_dagster as pc
from predcheck_dagster import profiler as profiler_module
from predcheck_dagster.reconcile import failure_errors, reconcile_run

from . import profiled_jobs

JOBS_MODULE = "tests.integration.profiled_jobs"
AUTOMATIC = ("dagster/load_inputs", "dagster/compute", "dagster/handle_outputs")


def _run_config(store_url: str, executor: str = "multiprocess", interval_s: float = 0.1) -> dict:
    return {"execution": {"config": {executor: {}}},
            "resources": {"predcheck": {"config": {"store_url": store_url, "sample_interval_s": interval_s}}}}


def _rows(store: pc.MetricsStore, run_id: str) -> dict[str, dict]:
    return {row["step_key"]: row for row in store.step_runs(run_id=run_id)}


def _warnings(instance: DagsterInstance, run_id: str) -> str:
    return "\n".join(e.user_message for e in instance.all_logs(run_id) if e.level == logging.WARNING)


@pytest.fixture
def multiprocess_env(monkeypatch):
    """Step processes import this checkout's package and the jobs module (spawned children)."""
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[2]))


# ---- item 1: what a real run records ----------------------------------------------------------
@pytest.mark.slow
def test_a_real_run_fills_every_profiler_column(backend, multiprocess_env) -> None:
    store = pc.MetricsStore(backend.store_url)
    with DagsterInstance.get() as instance:
        job = ReconstructableJob.for_module(JOBS_MODULE, "instrumented_profiled_job")
        with execute_job(job, instance=instance, run_config=_run_config(backend.store_url)) as result:
            assert result.success
            assert result.output_for_node("transform") == sum(r * r for r in range(profiled_jobs.ROWS))
    rows = _rows(store, result.run_id)
    assert set(rows) == {"produce", "transform"}
    for row in rows.values():
        assert row["outcome"] == "success" and row["measured_by"] == "profiler"
        assert row["executor"] == "multiprocess"
        assert row["host"] == socket.gethostname()
        assert row["attempt"] == 1
        assert row["cpu_user_s"] > 0 and row["cpu_system_s"] >= 0
        assert row["cpu_s"] == pytest.approx(row["cpu_user_s"] + row["cpu_system_s"])
        assert row["peak_rss_bytes"] >= row["mean_rss_bytes"] > 20 * 1024 * 1024
        assert row["write_bytes"] is not None and row["read_bytes"] is not None
        assert row["netns_recv_bytes"] is not None and row["netns_sent_bytes"] is not None
        assert row["net_bytes"] is None  # no per-process network counter exists
        assert row["samples_dropped"] == 0 and row["profiler_errors"] == 0
        assert row["error_class"] is None and row["error_fingerprint"] is None
        durations = json.loads(row["stage_durations"])
        automatic = sum(durations.get(name, 0.0) for name in AUTOMATIC)
        assert automatic == pytest.approx(row["duration_s"], abs=1e-3)  # the automatic stages tile the attempt
        assert durations["dagster/compute"] > 0 and durations["dagster/handle_outputs"] > 0

    assert rows["produce"]["code_version"] == "produce-v3"  # the op's declared code version
    assert "dagster/load_inputs" not in json.loads(rows["produce"]["stage_durations"])  # it has no inputs

    transform = rows["transform"]
    durations, profile = json.loads(transform["stage_durations"]), json.loads(transform["stage_profile"])
    assert durations["dagster/load_inputs"] > 0
    assert durations["dagster/compute"] >= durations["square"] + 0.35  # the named stage, then the sleep
    assert set(profile) == {*AUTOMATIC, "square"}
    assert profile["square"]["cpu_user_s"] >= 0.25  # burn(0.3) is CPU time of the step's process
    assert profile["dagster/compute"]["cpu_user_s"] >= profile["square"]["cpu_user_s"]
    assert transform["cpu_user_s"] >= profile["dagster/compute"]["cpu_user_s"]
    assert profile["square"]["peak_rss_bytes"] > 0
    samples = store.samples(result.run_id, "transform")
    assert len(samples) >= 3  # every 0.1 s over ~0.7 s, none dropped
    assert {s["stage"] for s in samples} & {"square", "dagster/compute"}


@pytest.mark.slow
def test_the_same_failing_op_has_the_same_fingerprint_in_two_runs(backend, multiprocess_env) -> None:
    store = pc.MetricsStore(backend.store_url)
    runs = []
    with DagsterInstance.get() as instance:
        job = ReconstructableJob.for_module(JOBS_MODULE, "instrumented_failing_job")
        for _ in range(2):
            with execute_job(job, instance=instance, run_config=_run_config(backend.store_url)) as result:
                assert not result.success
                runs.append(result.run_id)
        from_event_log = failure_errors(instance, runs[0])
    first, second = _rows(store, runs[0]), _rows(store, runs[1])
    for step, error_class in (("parse_rows", "ValueError"), ("divide_rows", "ZeroDivisionError")):
        assert first[step]["outcome"] == second[step]["outcome"] == "failure"
        assert first[step]["error_class"] == error_class
        assert first[step]["error_message"] != second[step]["error_message"] or step == "divide_rows"
        assert first[step]["error_fingerprint"] == second[step]["error_fingerprint"]
        # the reconciler and the history import compute the same fingerprint from the event log
        assert from_event_log[step].fingerprint == first[step]["error_fingerprint"]
    assert first["parse_rows"]["error_fingerprint"] != first["divide_rows"]["error_fingerprint"]


# ---- item 3: deadlines -------------------------------------------------------------------------
def test_steps_past_their_deadline_are_timeouts_whatever_their_end(backend, instance) -> None:
    defs = profiled_jobs.instrumented(backend.store_url)
    result = defs.get_job_def("deadline_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    assert result.output_for_node("slow_but_fine") == 1  # the run is Dagster's; only our label changes
    rows = _rows(pc.MetricsStore(backend.store_url), result.run_id)
    assert {k: (r["outcome"], r["deadline_s"]) for k, r in rows.items()} == {
        "slow_but_fine": ("timeout", 0.3),  # finished late
        "slow_and_failing": ("timeout", 0.3),  # failed late: still a timeout, error kept
        "generous": ("success", 100.0),  # the op's tag wins over the run's 0.3 s
        "inherits_the_run_deadline": ("timeout", 0.3),  # no op tag: the run's
    }
    assert rows["slow_and_failing"]["error_class"] == "RuntimeError"
    assert rows["slow_and_failing"]["error_fingerprint"] is not None


@pytest.mark.slow
def test_a_step_killed_past_its_op_deadline_is_reconciled_as_a_timeout(backend, multiprocess_env) -> None:
    store = pc.MetricsStore(backend.store_url)
    with DagsterInstance.get() as instance:
        job = ReconstructableJob.for_module(JOBS_MODULE, "instrumented_killed_job")
        with execute_job(job, instance=instance, run_config=_run_config(backend.store_url)) as result:
            assert not result.success
        assert _rows(store, result.run_id) == {}  # SIGKILL: no hook ran
        [row] = reconcile_run(instance, store, instance.get_run_by_id(result.run_id))
    assert (row["outcome"], row["deadline_s"], row["error_class"]) == (
        "timeout", 0.3, "ChildProcessCrashException")
    assert row["error_fingerprint"] is not None


# ---- partitions and asset code versions --------------------------------------------------------
def test_a_partitioned_asset_records_its_partition_and_code_version(backend, instance) -> None:
    defs = profiled_jobs.instrumented(backend.store_url)
    result = defs.get_job_def("daily_job").execute_in_process(instance=instance, partition_key="2026-01-02")
    assert result.success
    [row] = _rows(pc.MetricsStore(backend.store_url), result.run_id).values()
    assert (row["step_key"], row["partition_key"], row["code_version"]) == ("daily_rows", "2026-01-02", "asset-v2")
    assert row["executor"] == "in_process"


# ---- item 2: dropped samples are counted -------------------------------------------------------
def test_samples_the_store_refuses_are_counted_on_the_step_row(backend, instance, monkeypatch) -> None:
    def refuse(self, rows):
        raise ConnectionResetError("the samples table is locked")

    monkeypatch.setattr(pc.MetricsStore, "add_samples", refuse)
    defs = profiled_jobs.instrumented(backend.store_url, sample_interval_s=0.05)
    result = defs.get_job_def("sleepy_job").execute_in_process(instance=instance)
    assert result.success and result.output_for_node("sleepy") == 7
    [row] = _rows(pc.MetricsStore(backend.store_url), result.run_id).values()
    assert row["samples_dropped"] >= 5  # ~0.6 s at 0.05 s, none stored
    assert row["profiler_errors"] >= 1
    assert pc.MetricsStore(backend.store_url).samples(result.run_id, "sleepy") == []


def test_a_store_that_hangs_on_samples_delays_the_step_by_at_most_the_flush_timeout(backend, instance,
                                                                                    monkeypatch) -> None:
    import threading
    import time

    release = threading.Event()

    def hang(self, rows):
        release.wait(60)  # a database that stopped answering

    monkeypatch.setattr(pc.MetricsStore, "add_samples", hang)
    defs = profiled_jobs.instrumented(backend.store_url, sample_interval_s=0.05)
    try:
        started = time.monotonic()
        result = defs.get_job_def("sleepy_job").execute_in_process(instance=instance)
        elapsed = time.monotonic() - started
    finally:
        release.set()
    assert result.success and result.output_for_node("sleepy") == 7
    assert elapsed < 0.6 + profiler_module.FLUSH_TIMEOUT_S + 5.0  # the op sleeps 0.6 s; Dagster's own cost
    [row] = _rows(pc.MetricsStore(backend.store_url), result.run_id).values()
    assert row["samples_dropped"] >= 5  # taken while the store hung, never confirmed stored
    assert row["duration_s"] < 0.6 + 1.0  # the step itself was not held up


# ---- item 4: a profiler that fails leaves the step's result unchanged ---------------------------
UNREACHABLE_STORE = "postgresql+psycopg2://nobody@127.0.0.1:9/none"


@pytest.mark.slow
def test_an_unreachable_store_leaves_multiprocess_steps_unchanged(dagster_home, multiprocess_env) -> None:
    with DagsterInstance.get() as instance:
        job = ReconstructableJob.for_module(JOBS_MODULE, "instrumented_profiled_job")
        with execute_job(job, instance=instance, run_config=_run_config(UNREACHABLE_STORE)) as result:
            assert result.success
            assert result.output_for_node("transform") == sum(r * r for r in range(profiled_jobs.ROWS))
        warnings = _warnings(instance, result.run_id)
    # the attempt is not lost: it waits, with the profiler's columns, in the local spool
    assert "predcheck: metrics store unreachable: step 'transform' recorded in the local spool" in warnings
    spool = pc.PredcheckResource(store_url=UNREACHABLE_STORE).metrics_store().spool
    spooled = [row for path in spool.files() for line in Path(path).read_text().splitlines()
               for row in json.loads(line)["rows"] if json.loads(line)["kind"] == "step_run"]
    [transform] = [r for r in spooled if r["run_id"] == result.run_id and r["step_key"] == "transform"]
    assert transform["executor"] == "multiprocess" and transform["attempt"] == 1
    assert transform["cpu_user_s"] is not None and "dagster/compute" in json.loads(transform["stage_profile"])


def test_a_sampler_and_a_ledger_that_raise_leave_the_step_unchanged(dagster_home, instance, monkeypatch) -> None:
    def broken_snapshot(wall=None):
        raise OSError("/proc went away")

    monkeypatch.setattr(profiler_module, "take_snapshot", broken_snapshot)
    defs = profiled_jobs.instrumented(f"sqlite:///{dagster_home}/m.db", sample_interval_s=0.02)
    result = defs.get_job_def("profiled_job").execute_in_process(instance=instance)
    assert result.success
    assert result.output_for_node("transform") == sum(r * r for r in range(profiled_jobs.ROWS))
    rows = _rows(pc.MetricsStore(f"sqlite:///{dagster_home}/m.db"), result.run_id)
    assert {k: r["outcome"] for k, r in rows.items()} == {"produce": "success", "transform": "success"}
    assert rows["transform"]["profiler_errors"] > 0  # what broke is counted, not hidden


def test_a_hook_that_raises_leaves_the_step_and_its_own_error_unchanged(dagster_home, instance, monkeypatch) -> None:
    from predcheck_dagster import hooks

    def broken_facts(*args, **kwargs):
        raise RuntimeError("bug in predcheck")

    monkeypatch.setattr(hooks, "step_facts", broken_facts)
    defs = profiled_jobs.instrumented(f"sqlite:///{dagster_home}/m.db")
    ok = defs.get_job_def("profiled_job").execute_in_process(instance=instance)
    assert ok.success and ok.output_for_node("transform") == sum(r * r for r in range(profiled_jobs.ROWS))
    assert "predcheck: step 'transform' not recorded: RuntimeError: bug in predcheck" in _warnings(instance, ok.run_id)

    failed = defs.get_job_def("failing_job").execute_in_process(instance=instance, raise_on_error=False)
    assert not failed.success
    errors = failure_errors(instance, failed.run_id)
    assert (errors["parse_rows"].cls_name, errors["divide_rows"].cls_name) == ("ValueError", "ZeroDivisionError")


def test_without_the_listener_the_hooks_measure_what_they_can(dagster_home, instance, monkeypatch) -> None:
    from predcheck_dagster import step_events

    def refuse(*args, **kwargs):
        raise RuntimeError("no listener today")

    monkeypatch.setattr(step_events, "listen", refuse)
    url = f"sqlite:///{dagster_home}/m.db"
    result = profiled_jobs.instrumented(url).get_job_def("profiled_job").execute_in_process(instance=instance)
    assert result.success
    assert "steps of this run are not profiled: RuntimeError: no listener today" in _warnings(instance, result.run_id)
    rows = _rows(pc.MetricsStore(url), result.run_id)
    # produce: the whole process since it started; transform: from its checkpointer call on
    assert (rows["produce"]["measured_by"], rows["transform"]["measured_by"]) == ("process", "profiler")
    assert rows["produce"]["cpu_user_s"] > 0 and rows["produce"]["stage_durations"] == "{}"
    assert "square" in json.loads(rows["transform"]["stage_durations"])
    assert all(r["outcome"] == "success" and r["ended_at"] >= r["started_at"] for r in rows.values())
