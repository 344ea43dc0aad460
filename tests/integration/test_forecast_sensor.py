"""The forecast sensor on a real instance: scores an in-flight step, tags the run, and the step
honours the checkpoint request with the prediction in the manifest."""

from __future__ import annotations

import threading
import time

import pytest
from dagster import DagsterInstance, build_sensor_context, execute_job
from dagster._core.execution.stats import StepEventStatus

import predcheck_dagster as pc

pytestmark = pytest.mark.slow


def _seed_failing_history(store: pc.MetricsStore, n: int = 12, failures: int = 9) -> None:
    now = time.time() - 3600
    for i in range(n):
        failed = i < failures
        store.record_step_run({
            "run_id": f"history-{i}", "root_run_id": f"history-{i}", "job": "preemptible_job",
            "step_key": "preemptible_crunch", "attempt": 1, "started_at": now + i * 10,
            "ended_at": now + i * 10 + 5, "duration_s": 5.0, "outcome": "crashed" if failed else "success",
            "error_class": "ChildProcessCrashException" if failed else None, "measured_by": "event_log"})


def _wait_in_progress(instance: DagsterInstance, run_holder: dict, step_key: str, timeout_s: float = 60) -> str:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        runs = instance.get_runs()
        for run in runs:
            if run.job_name == "preemptible_job":
                for stats in instance.get_run_step_stats(run.run_id):
                    if stats.step_key == step_key and stats.status == StepEventStatus.IN_PROGRESS:
                        return run.run_id
        if "result" in run_holder:
            raise AssertionError("the run ended before its step was seen in progress")
        time.sleep(0.2)
    raise AssertionError("step never started")


def test_forecast_sensor_flags_run_and_step_checkpoints_with_prediction(dagster_home, tmp_path, location) -> None:
    recon, _ = location
    store_url = f"sqlite:///{tmp_path}/metrics.db"
    predcheck = pc.PredcheckResource(store_url=store_url, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    store = predcheck.metrics_store()
    _seed_failing_history(store)
    run_config = {
        "ops": {"prepare_input": {"config": {"units": 160}},
                "preemptible_crunch": {"config": {"unit_s": 0.05, "spot_preemption": False}}},
        "resources": {"predcheck": {"config": {"store_url": store_url, "poll_interval_s": 0.2,
                                               "sample_interval_s": 0.5}}},
    }
    # the sensor's process has ticked before: MLflow's SQLite backend is created (seconds, once)
    from predcheck_dagster.features import feature_row
    from predcheck_dagster.forecaster import score

    assert score([feature_row([], time.time(), [], 0.0)], predcheck.tracking_uri,
                 predcheck.model_uri).served_by == "heuristic"
    with DagsterInstance.get() as instance:
        holder: dict = {}
        thread = threading.Thread(target=lambda: holder.update(result=execute_job(
            recon.get_reconstructable_job("preemptible_job"), instance=instance, run_config=run_config)))
        thread.start()
        try:
            run_id = _wait_in_progress(instance, holder, "preemptible_crunch")
            time.sleep(1.5)  # some work since the step started: a checkpoint is now worth its cost
            sensor = pc.build_forecast_sensor()
            with build_sensor_context(instance=instance, resources={"predcheck": predcheck}) as context:
                skip = sensor(context)
            message = skip.skip_message
            assert "scored 1 in-flight step(s) and 0 queued step(s)" in message
            assert "heuristic" in message  # no model registered in this MLflow: the fallback served, and says so
            assert "checkpoint (p×work > C)" in message

            tags = instance.get_run_by_id(run_id).tags
            assert tags["predcheck/risk"] == "high"
            assert float(tags["predcheck/failure_probability"]) == pytest.approx(10 / 16, abs=0.01)
            assert tags["predcheck/checkpoint_requested"] == "preemptible_crunch"
            [row] = store.predictions(run_id=run_id)
            assert row["served_by"] == "heuristic" and row["decision"] == "checkpoint"

            deadline = time.time() + 30
            honored = []
            while time.time() < deadline and not honored:
                honored = [r for r in store.checkpoint_requests(run_id) if r["honored_at"]]
                time.sleep(0.2)
            assert honored, "the step did not honour the checkpoint request"
            manifest = predcheck.checkpoint_store().read_manifest(honored[0]["checkpoint_id"])
            assert manifest.kind == "preemptive"
            assert manifest.prediction.failure_probability == pytest.approx(row["failure_probability"])
            assert manifest.prediction.resource_projection["peak_rss_bytes"] > 0
        finally:
            thread.join(timeout=120)
        assert holder["result"].success
