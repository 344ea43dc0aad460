"""Record step attempts that ended without their hooks running (SIGKILL, the OOM killer).

Dagster still notices such a step: the multiprocess executor logs a STEP_FAILURE whose error is a
``ChildProcessCrashException``. The reconciler writes the missing ``step_runs`` row from that
event and the step's last live samples.
"""

from __future__ import annotations

import socket
from typing import Any

from dagster import DagsterEventType, DagsterInstance
from dagster._core.execution.stats import StepEventStatus
from dagster._core.storage.dagster_run import DagsterRun

from predcheck_dagster.metrics_store import MetricsStore

CRASH_ERRORS = frozenset({"ChildProcessCrashException"})
DEADLINE_TAG = "predcheck/deadline_s"


def failure_errors(instance: DagsterInstance, run_id: str) -> dict[str, tuple[str, str]]:
    """step_key -> (error class, message) of the newest STEP_FAILURE of each step: the user's
    exception where Dagster wrapped one, else Dagster's own error (a crashed child process)."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_FAILURE, limit=1000).records
    errors: dict[str, tuple[str, str]] = {}
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.step_failure_data if event else None
        if event and data and data.error:
            error = data.error.cause or data.error  # the user's exception, not Dagster's wrapper around it
            errors[event.step_key] = (error.cls_name, error.message[:2000])
    return errors


def reconcile_run(instance: DagsterInstance, store: MetricsStore, run: DagsterRun) -> list[dict[str, Any]]:
    """Write a row for every ended step of ``run`` the hooks did not record; returns the rows."""
    written = []
    errors: dict[str, tuple[str, str]] | None = None
    for stats in instance.get_run_step_stats(run.run_id):
        if stats.status not in (StepEventStatus.FAILURE, StepEventStatus.IN_PROGRESS):
            continue
        if store.has_step_run(run.run_id, stats.step_key):
            continue
        if errors is None:
            errors = failure_errors(instance, run.run_id)
        error_class, message = errors.get(stats.step_key, ("RunEnded", "the run ended while the step was in progress"))
        samples = store.samples(run.run_id, stats.step_key)
        last = samples[-1] if samples else {}
        started = stats.start_time or (samples[0]["ts"] if samples else run_start(instance, run.run_id))
        ended = stats.end_time or last.get("ts") or started
        deadline = _float(run.tags.get(DEADLINE_TAG))
        outcome = "timeout" if deadline and ended - started >= deadline else (
            "crashed" if error_class in CRASH_ERRORS or stats.status == StepEventStatus.IN_PROGRESS else "failure")
        row = {
            "run_id": run.run_id, "root_run_id": run.root_run_id or run.run_id, "job": run.job_name,
            "step_key": stats.step_key, "partition_key": run.tags.get("dagster/partition"),
            "attempt": max(1, stats.attempts or 1), "started_at": started, "ended_at": ended,
            "duration_s": max(0.0, ended - started), "outcome": outcome, "error_class": error_class,
            "error_message": message, "stage_durations": {}, "cpu_s": last.get("cpu_s"),
            "peak_rss_bytes": max((s["rss_bytes"] or 0 for s in samples), default=None),
            "mean_rss_bytes": (int(sum(s["rss_bytes"] or 0 for s in samples) / len(samples)) if samples else None),
            "read_bytes": last.get("read_bytes"), "write_bytes": last.get("write_bytes"), "net_bytes": None,
            "input_bytes": last.get("input_bytes"), "output_bytes": None, "work_units": last.get("work_units"),
            "code_version": None, "host": socket.gethostname(), "measured_by": "event_log",
        }
        if store.record_step_run(row):
            written.append(row)
    return written


def run_start(instance: DagsterInstance, run_id: str) -> float | None:
    """When the run started (when it was created, if it never started); None for an unknown run."""
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return None
    return record.start_time or record.create_timestamp.timestamp()


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None
