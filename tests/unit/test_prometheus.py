"""The Prometheus exporter: gauges per in-flight step, served over HTTP in a registry of its own."""

from __future__ import annotations

import math
import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from predcheck_dagster import prometheus
from predcheck_dagster.prometheus import PrometheusExporter, exporter_on


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def step(run_id: str, **figures) -> dict:
    return {"job": "etl", "run_id": run_id, "step_key": "crunch", "rss_bytes": 2_000_000, "cpu_util": 0.75,
            "elapsed_s": 12.5, "failure_probability": 0.8, "predicted_remaining_s": 30.0,
            "checkpoints_requested": 1, "samples_dropped": 0, **figures}


def labels(run_id: str) -> tuple[tuple[str, str], ...]:
    return (("job", "etl"), ("run_id", run_id), ("step_key", "crunch"))


def test_gauges_are_scraped_and_finished_steps_disappear():
    port = free_port()
    exporter = exporter_on(port)
    assert exporter_on(port) is exporter  # one server per port and process

    exporter.publish([step("r1"), step("r2", predicted_remaining_s=math.nan, samples_dropped=7)],
                     tick_duration_s=0.042, spool_files=3)
    got = scrape(port)
    assert got[("predcheck_step_rss_bytes", labels("r1"))] == 2_000_000
    assert got[("predcheck_step_cpu_utilisation", labels("r1"))] == 0.75
    assert got[("predcheck_step_elapsed_seconds", labels("r1"))] == 12.5
    assert got[("predcheck_step_failure_probability", labels("r1"))] == 0.8
    assert got[("predcheck_step_predicted_remaining_seconds", labels("r1"))] == 30.0
    assert ("predcheck_step_predicted_remaining_seconds", labels("r2")) not in got  # unknown: no sample at all
    assert got[("predcheck_step_checkpoints_requested", labels("r1"))] == 1
    assert got[("predcheck_step_samples_dropped", labels("r2"))] == 7
    assert got[("predcheck_sensor_tick_duration_seconds", ())] == 0.042
    assert got[("predcheck_sensor_steps_scored", ())] == 2
    assert got[("predcheck_spool_files", ())] == 3
    assert got[("predcheck_sensor_last_tick_timestamp_seconds", ())] > 1.7e9

    exporter.publish([step("r2")], tick_duration_s=0.01)
    got = scrape(port)
    assert not [key for key in got if key[1] == labels("r1")]  # r1 ended: its series are gone
    assert got[("predcheck_step_predicted_remaining_seconds", labels("r2"))] == 30.0
    assert got[("predcheck_sensor_steps_scored", ())] == 1


def test_a_port_in_use_is_an_os_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="Address already in use"):
            exporter_on(port)
    assert ("127.0.0.1", port) not in prometheus._EXPORTERS  # a later tick tries again


def test_each_exporter_has_its_own_registry():
    a, b = PrometheusExporter(), PrometheusExporter()  # the process-wide default registry would refuse twice
    a.publish([step("r1")], 0.1)
    assert b.registry.get_sample_value("predcheck_sensor_steps_scored") == 0
    assert a.registry.get_sample_value("predcheck_step_rss_bytes", dict(labels("r1"))) == 2_000_000
