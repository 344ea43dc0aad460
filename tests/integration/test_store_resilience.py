"""Nothing is lost when the metrics store goes away: real Dagster runs record to a private PostgreSQL
cluster that is restarted mid-run, or down from the start; the spool keeps the records and a
sensor tick (or the next successful write) flushes them, once.

The Dagster instance itself stays on SQLite (only the metrics store goes down), and the cluster is
a throwaway one (``pg_cluster.py``): the shared server on 127.0.0.1:5432 is never touched.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from pathlib import Path

import pytest
from dagster import DagsterInstance, build_sensor_context, execute_job, reconstructable

import predcheck_dagster as pc
from predcheck_dagster import metrics_store as metrics_store_module

from . import store_jobs
from .pg_cluster import PrivateCluster, unavailable_reason

# never skipped: CI has the PostgreSQL binaries; a machine without them fails with the reason
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
SAMPLE_INTERVAL_S = 0.1
MAX_GAP_S = 1.5  # samples come every 0.1 s; an outage lost would leave a hole of its length (4 s)


@pytest.fixture(scope="module")
def cluster():
    reason = unavailable_reason()
    if reason is not None:
        pytest.fail(f"no private PostgreSQL cluster for the restart tests: {reason}")
    made = PrivateCluster()
    made.start()
    yield made
    for engine in metrics_store_module._ENGINES.values():
        engine.dispose()
    made.destroy()


@pytest.fixture
def store_url(cluster) -> str:
    if not _running(cluster):
        cluster.start()
    url = cluster.create_database(f"metrics_{uuid.uuid4().hex[:8]}")
    yield url
    engine = metrics_store_module._ENGINES.pop(url, None)
    if engine is not None:
        engine.dispose()
    metrics_store_module._MIGRATED.discard(url)


def _running(cluster: PrivateCluster) -> bool:
    return (cluster.data / "postmaster.pid").exists()


def _run_config(store_url: str, seconds: float, marker_dir: Path) -> dict:
    busy = {"config": {"seconds": seconds, "marker_dir": str(marker_dir)}}
    return {"ops": {"busy_a": busy, "busy_b": busy},
            "resources": {"predcheck": {"config": {"store_url": store_url, "sample_interval_s": SAMPLE_INTERVAL_S,
                                                   "webserver_url": None}}}}


def _sensor_tick(instance: DagsterInstance, predcheck: pc.PredcheckResource) -> str:
    """One tick of the resume sensor (no launcher): it flushes the spool before anything else."""
    sensor = pc.build_resume_sensor()
    with build_sensor_context(instance=instance, resources={"predcheck": predcheck}) as context:
        return sensor(context).skip_message or ""


def _spool_files(home: Path) -> list[Path]:
    return sorted((home / "predcheck" / "spool").rglob("*.jsonl"))


def _spooled(home: Path) -> dict[str, int]:
    counts = {"samples": 0, "step_run": 0}
    for path in _spool_files(home):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            counts[record["kind"]] += len(record["rows"])
    return counts


def _assert_continuous(store: pc.MetricsStore, run_id: str, step_key: str, started_at: float, op_end: float) -> int:
    """The step's samples cover it from start to end without a hole: none was lost."""
    ts = [s["ts"] for s in store.samples(run_id, step_key)]
    assert ts, f"no samples of {step_key}"
    assert ts[0] - started_at < MAX_GAP_S
    gaps = [b - a for a, b in zip(ts, ts[1:])]
    assert max(gaps) < MAX_GAP_S, f"{step_key}: a {max(gaps):.1f} s hole in the samples"
    # the tail is there too: the profiler's last sample (its final one is stamped at the step's end
    # event, which can come a few ms before the op's own clock reading) leaves no hole at the end
    assert op_end - ts[-1] < MAX_GAP_S
    return len(ts)


def test_nothing_is_lost_across_a_postgres_restart_in_the_middle_of_a_run(cluster, store_url, dagster_home,
                                                                          tmp_path, monkeypatch):
    """Multiprocess executor, two steps of 12 s in parallel; the store is stopped 3 s in and started
    again 4 s later."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the step processes import this worktree's library
    predcheck = pc.PredcheckResource(store_url=store_url, webserver_url=None)
    store = predcheck.metrics_store()
    store.migrate()
    seen_in_outage: dict[str, int] = {}
    with DagsterInstance.get() as instance:
        holder: dict = {}
        runner = threading.Thread(target=lambda: holder.update(result=execute_job(
            reconstructable(store_jobs.busy_parallel_job), instance=instance,
            run_config=_run_config(store_url, 12.0, tmp_path))))
        runner.start()
        try:
            deadline = time.time() + 60
            while time.time() < deadline and len(store.all_samples()) < 2:  # both steps are writing samples
                time.sleep(0.2)
            assert len(store.all_samples()) == 2, "the steps never started recording"
            cluster.stop()
            time.sleep(2.5)
            seen_in_outage = _spooled(dagster_home)  # the steps keep recording: into the spool
            time.sleep(1.5)
            cluster.start()
        finally:
            runner.join(timeout=180)
        result = holder["result"]
        assert result.success
        run_id = result.run_id

        assert seen_in_outage["samples"] > 0, "nothing was spooled while the store was down"
        message = _sensor_tick(instance, predcheck)  # flushes what the step processes could not
        metrics_store_module._DOWN.clear()

    assert _spool_files(dagster_home) == [], message
    runs = {r["step_key"]: r for r in store.step_runs(run_id=run_id)}
    assert sorted(runs) == ["busy_a", "busy_b"]
    assert {(r["attempt"], r["outcome"], r["measured_by"]) for r in runs.values()} == {(1, "success", "profiler")}
    for step_key, run in runs.items():
        op_end = float((tmp_path / f"{step_key}.end").read_text())
        n = _assert_continuous(store, run_id, step_key, run["started_at"], op_end)
        assert n >= 12.0 / SAMPLE_INTERVAL_S * 0.5
    assert store.flush_spool().files == 0


def test_in_process_run_across_a_restart_stores_exactly_the_samples_taken(cluster, store_url, dagster_home,
                                                                          tmp_path, caplog):
    """In-process executor: the profilers are in this process, so the count of samples each one took
    is known exactly and compared with the rows stored."""
    caplog.set_level(logging.WARNING, logger="predcheck.metrics_store")
    store_jobs.CHECKPOINTERS.clear()
    predcheck = pc.PredcheckResource(store_url=store_url, webserver_url=None)
    store = predcheck.metrics_store()
    store.migrate()
    with DagsterInstance.get() as instance:
        holder: dict = {}
        runner = threading.Thread(target=lambda: holder.update(result=execute_job(
            reconstructable(store_jobs.busy_in_process_job), instance=instance,
            run_config=_run_config(store_url, 5.0, tmp_path))))
        runner.start()
        try:
            deadline = time.time() + 60
            while time.time() < deadline and not store.all_samples():
                time.sleep(0.1)
            cluster.stop()
            time.sleep(4.0)  # busy_a ends (its hook runs) while the store is down
            cluster.start()
        finally:
            runner.join(timeout=120)
        assert holder["result"].success
        run_id = holder["result"].run_id
        _sensor_tick(instance, predcheck)
        metrics_store_module._DOWN.clear()

    taken = {ck.identity.step_key: ck.profiler for ck in store_jobs.CHECKPOINTERS}
    assert sorted(taken) == ["busy_a", "busy_b"]
    for step_key, profiler in taken.items():
        assert profiler.dropped_samples == 0
        stored = store.samples(run_id, step_key)
        taken_n = profiler.samples_taken
        assert len(stored) == taken_n, f"{step_key}: {taken_n} samples taken, {len(stored)} stored"
    assert sorted(r["step_key"] for r in store.step_runs(run_id=run_id)) == ["busy_a", "busy_b"]
    assert _spool_files(dagster_home) == []
    assert any("Meanwhile step records are spooled" in r.getMessage() for r in caplog.records)


def test_a_store_down_from_the_start_spools_everything_and_a_tick_flushes_it(cluster, store_url, dagster_home,
                                                                             tmp_path):
    store_jobs.CHECKPOINTERS.clear()
    predcheck = pc.PredcheckResource(store_url=store_url, webserver_url=None)
    store = predcheck.metrics_store()
    cluster.stop()
    try:
        with DagsterInstance.get() as instance:
            t0 = time.perf_counter()
            result = execute_job(reconstructable(store_jobs.busy_in_process_job), instance=instance,
                                 run_config=_run_config(store_url, 1.0, tmp_path))
            elapsed = time.perf_counter() - t0
            assert result.success  # the user's steps are unaffected
            assert elapsed < 30
            warnings = [e.message for e in instance.all_logs(result.run_id)
                        if e.message and "recorded in the local spool" in e.message]
            assert len(warnings) == 2  # one per step, from the hook
            taken = sum(ck.profiler.samples_taken for ck in store_jobs.CHECKPOINTERS)
            assert _spooled(dagster_home) == {"samples": taken, "step_run": 2}
            assert (dagster_home / "predcheck" / "spool").exists()
            store_label = next((dagster_home / "predcheck" / "spool").rglob("STORE")).read_text().strip()
            assert store_label == store_url

            cluster.start()
            metrics_store_module._DOWN.clear()  # as if STORE_RETRY_S had passed
            message = _sensor_tick(instance, predcheck)
    finally:
        if not _running(cluster):
            cluster.start()
    assert f"spool: flushed 1 file(s) (2 step run(s), {taken} sample(s)); 0 file(s) left" in message
    assert _spool_files(dagster_home) == []
    assert sorted(r["step_key"] for r in store.step_runs(run_id=result.run_id)) == ["busy_a", "busy_b"]
    assert sum(len(v) for v in store.all_samples().values()) == taken
