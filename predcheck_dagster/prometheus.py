"""Prometheus gauges of in-flight steps, served by the forecast sensor's process (opt-in).

Enabled by ``PredcheckResource.prometheus_port``. The endpoint lives in the process that evaluates
the forecast sensor, not in step processes: that process already reads every in-flight step from
the metrics store each tick, it lives as long as the deployment, and it is one target at one
known port. Step processes are short-lived and many per host (one per step under the
multiprocess executor): each would need a port of its own, a scraper would need to discover them,
and most would end between two scrapes. It also keeps ``prometheus_client`` off the step side.

Gauges (labels ``job``, ``run_id``, ``step_key`` for per-step ones), set at every tick; a step that
is no longer in flight loses its series:

    predcheck_step_rss_bytes                  RSS in the newest sample
    predcheck_step_cpu_utilisation            CPU seconds per second over the newest samples
    predcheck_step_elapsed_seconds            seconds since the step started
    predcheck_step_failure_probability        the forecast of this tick
    predcheck_step_predicted_remaining_seconds  the forecast of this tick (absent when unknown)
    predcheck_step_checkpoints_requested      checkpoint requests the sensor made to the step so far
    predcheck_step_samples_dropped            samples the step's profiler dropped (buffer full)
    predcheck_sensor_tick_duration_seconds    duration of the last forecast tick
    predcheck_sensor_steps_scored             in-flight steps scored by the last tick
    predcheck_sensor_last_tick_timestamp_seconds
    predcheck_spool_files                     spool files waiting on this host (flushed by the ticks)
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

LOG = logging.getLogger("predcheck.prometheus")
STEP_LABELS = ("job", "run_id", "step_key")
STEP_GAUGES = {  # gauge name -> (key in a step's figures, help text)
    "predcheck_step_rss_bytes": ("rss_bytes", "RSS of the step's process in its newest sample, bytes."),
    "predcheck_step_cpu_utilisation": ("cpu_util", "CPU seconds per wall second over the newest samples."),
    "predcheck_step_elapsed_seconds": ("elapsed_s", "Seconds since the step started."),
    "predcheck_step_failure_probability": ("failure_probability", "Forecast failure probability."),
    "predcheck_step_predicted_remaining_seconds": ("predicted_remaining_s", "Forecast remaining seconds."),
    "predcheck_step_checkpoints_requested": ("checkpoints_requested",
                                             "Checkpoint requests made to the step so far."),
    "predcheck_step_samples_dropped": ("samples_dropped", "Samples the step's profiler dropped (buffer full)."),
}

_EXPORTERS: dict[tuple[str, int], PrometheusExporter] = {}
_LOCK = threading.Lock()


class PrometheusExporter:
    """The gauges in a registry of their own (not the process-wide default one)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Gauge

        self.registry = CollectorRegistry(auto_describe=True)
        self.step_gauges = {name: Gauge(name, help_text, STEP_LABELS, registry=self.registry)
                            for name, (_, help_text) in STEP_GAUGES.items()}
        self.tick_duration = Gauge("predcheck_sensor_tick_duration_seconds", "Duration of the last forecast tick.",
                                   registry=self.registry)
        self.steps_scored = Gauge("predcheck_sensor_steps_scored", "In-flight steps scored by the last tick.",
                                  registry=self.registry)
        self.last_tick = Gauge("predcheck_sensor_last_tick_timestamp_seconds", "When the last tick ended (Unix s).",
                               registry=self.registry)
        self.spool_files = Gauge("predcheck_spool_files", "Spool files waiting on the sensor's host.",
                                 registry=self.registry)
        self._series: set[tuple[str, str, str]] = set()

    def publish(self, steps: Iterable[Mapping[str, Any]], tick_duration_s: float, spool_files: int = 0) -> None:
        """Set every gauge from one tick; forget the series of steps no longer in flight."""
        current = set()
        for step in steps:
            labels = (step["job"], step["run_id"], step["step_key"])
            current.add(labels)
            for name, (key, _) in STEP_GAUGES.items():
                value = step.get(key)
                gauge = self.step_gauges[name]
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    _remove(gauge, labels)
                else:
                    gauge.labels(*labels).set(value)
        for labels in self._series - current:
            for gauge in self.step_gauges.values():
                _remove(gauge, labels)
        self._series = current
        self.tick_duration.set(tick_duration_s)
        self.steps_scored.set(len(current))
        self.last_tick.set(time.time())
        self.spool_files.set(spool_files)


def _remove(gauge: Any, labels: tuple[str, str, str]) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass


def exporter_on(port: int, host: str = "127.0.0.1") -> PrometheusExporter:
    """The exporter serving ``http://{host}:{port}/metrics`` in this process, started on first use.

    Raises:
        OSError: the port cannot be bound (in use by another process, or a privileged port).
    """
    with _LOCK:
        exporter = _EXPORTERS.get((host, port))
        if exporter is None:
            from prometheus_client import start_http_server

            exporter = PrometheusExporter()
            start_http_server(port, addr=host, registry=exporter.registry)
            LOG.info("predcheck: Prometheus gauges at http://%s:%d/metrics", host, port)
            _EXPORTERS[(host, port)] = exporter
        return exporter
