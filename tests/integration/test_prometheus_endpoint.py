"""The forecast sensor serves Prometheus gauges of in-flight steps when prometheus_port is set: scrape
them over HTTP while a real step runs, and see them go when it ends."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

import pytest
from dagster import DagsterInstance, build_sensor_context, execute_job, reconstructable
from dagster._core.execution.stats import StepEventStatus
from prometheus_client.parser import text_string_to_metric_families

import predcheck_dagster as pc

from . import store_jobs

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[str, list]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def tick(instance: DagsterInstance, predcheck: pc.PredcheckResource) -> str:
    with build_sensor_context(instance=instance, resources={"predcheck": predcheck}) as context:
        return pc.build_forecast_sensor()(context).skip_message


def test_prometheus_gauges_of_an_in_flight_step(dagster_home, tmp_path):
    port = free_port()
    store_url = f"sqlite:///{tmp_path}/metrics.db"
    predcheck = pc.PredcheckResource(store_url=store_url, tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
                                     prometheus_port=port, webserver_url=None)
    run_config = {"ops": {"busy_a": {"config": {"seconds": 6.0}}, "busy_b": {"config": {"seconds": 0.1}}},
                  "resources": {"predcheck": {"config": {"store_url": store_url, "sample_interval_s": 0.2}}}}
    with DagsterInstance.get() as instance:
        holder: dict = {}
        runner = threading.Thread(target=lambda: holder.update(result=execute_job(
            reconstructable(store_jobs.busy_in_process_job), instance=instance, run_config=run_config)))
        runner.start()
        try:
            run_id = None
            deadline = time.time() + 60
            while run_id is None and time.time() < deadline:
                for run in instance.get_runs():
                    if any(s.step_key == "busy_a" and s.status == StepEventStatus.IN_PROGRESS
                           for s in instance.get_run_step_stats(run.run_id)):
                        run_id = run.run_id
                time.sleep(0.1)
            assert run_id, "busy_a never started"
            time.sleep(1.5)  # a few samples
            message = tick(instance, predcheck)
            assert "scored 1 in-flight step(s)" in message
            families = scrape(port)
        finally:
            runner.join(timeout=120)
        assert holder["result"].success
        after = scrape(port) if tick(instance, predcheck) is not None else {}

    labels = {"job": "busy_in_process_job", "run_id": run_id, "step_key": "busy_a"}
    value = {name: next(s.value for s in samples if s.labels == labels)
             for name, samples in families.items() if name.startswith("predcheck_step_")
             and any(s.labels == labels for s in samples)}
    assert value["predcheck_step_rss_bytes"] > 10_000_000  # a Python process with Dagster loaded
    assert 0.0 <= value["predcheck_step_cpu_utilisation"] < 2.5
    assert 1.0 < value["predcheck_step_elapsed_seconds"] < 30
    assert 0.0 <= value["predcheck_step_failure_probability"] <= 1.0
    assert value["predcheck_step_checkpoints_requested"] >= 0
    assert value["predcheck_step_samples_dropped"] == 0
    assert families["predcheck_sensor_tick_duration_seconds"][0].value > 0
    assert families["predcheck_sensor_steps_scored"][0].value == 1

    assert not [s for name, samples in after.items() if name.startswith("predcheck_step_") for s in samples]
    assert after["predcheck_sensor_steps_scored"][0].value == 0


def test_a_port_that_cannot_be_bound_is_reported_in_the_tick(dagster_home, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        predcheck = pc.PredcheckResource(store_url=f"sqlite:///{tmp_path}/metrics.db", webserver_url=None,
                                         prometheus_port=port)
        with DagsterInstance.get() as instance:
            message = tick(instance, predcheck)  # the tick itself succeeds
    assert f"Prometheus endpoint 127.0.0.1:{port} not served ([Errno 98] Address already in use)" in message
