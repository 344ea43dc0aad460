"""Record step attempts that ended without their hooks running (SIGKILL, the OOM killer).

Dagster still notices such a step: the multiprocess executor logs a STEP_FAILURE whose error is a
``ChildProcessCrashException``. The reconciler writes the missing ``step_runs`` row from that
event and the step's last live samples, labelled by the same rules as the hooks
(``predcheck_dagster.outcome``: the deadline rule, the error fingerprint). What only the step's
process knew (CPU split into user and system, per-stage figures, its host) stays NULL.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

from dagster import DagsterEventType, DagsterInstance
from dagster._core.execution.stats import StepEventStatus
from dagster._core.storage.dagster_run import DagsterRun

from predcheck_dagster.metrics_store import MetricsStore
from predcheck_dagster.outcome import deadline_from_tags, fingerprint_error_info, label_outcome

CRASH_ERRORS = frozenset({"ChildProcessCrashException"})


class StepError(NamedTuple):
    """A step's error as the event log has it."""

    cls_name: str | None
    message: str | None
    fingerprint: str | None


def failure_errors(instance: DagsterInstance, run_id: str) -> dict[str, StepError]:
    """step_key -> the error of the newest STEP_FAILURE of each step: the user's exception where
    Dagster wrapped one, else Dagster's own error (a crashed child process)."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_FAILURE, limit=1000).records
    errors: dict[str, StepError] = {}
    for record in records:
        event = record.event_log_entry.dagster_event
        data = event.step_failure_data if event else None
        if event and data and data.error:
            error = data.error.cause or data.error  # the user's exception, not Dagster's wrapper around it
            errors[event.step_key] = StepError(error.cls_name, error.message[:2000],
                                               fingerprint_error_info(error.cls_name, error.message, error.stack))
    return errors


def step_tags(instance: DagsterInstance, run: DagsterRun) -> dict[str, Mapping[str, str]]:
    """Each step's tags (its op's definition and invocation tags), from the run's execution plan."""
    if not run.execution_plan_snapshot_id:
        return {}
    snapshot = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    return {step.key: dict(step.tags or {}) for step in snapshot.steps}


def tags_of_step(tags: Mapping[str, Mapping[str, str]], step_key: str) -> Mapping[str, str] | None:
    """A step's tags; a mapped step (``op[key]``) has the tags of its unresolved step (``op[?]``)."""
    return tags.get(step_key) or tags.get(re.sub(r"\[[^\]]*\]$", "[?]", step_key))


def reconcile_run(instance: DagsterInstance, store: MetricsStore, run: DagsterRun) -> list[dict[str, Any]]:
    """Write a row for every ended step of ``run`` the hooks did not record; returns the rows."""
    written = []
    errors: dict[str, StepError] | None = None
    tags: dict[str, Mapping[str, str]] | None = None
    for stats in instance.get_run_step_stats(run.run_id):
        if stats.status not in (StepEventStatus.FAILURE, StepEventStatus.IN_PROGRESS):
            continue
        if store.has_step_run(run.run_id, stats.step_key):
            continue
        if errors is None:
            errors, tags = failure_errors(instance, run.run_id), step_tags(instance, run)
        error = errors.get(stats.step_key) or StepError("RunEnded", "the run ended while the step was in progress",
                                                        None)
        samples = store.samples(run.run_id, stats.step_key)
        last = samples[-1] if samples else {}
        started = stats.start_time or (samples[0]["ts"] if samples else run_start(instance, run.run_id))
        ended = stats.end_time or last.get("ts") or started
        crashed = error.cls_name in CRASH_ERRORS or stats.status == StepEventStatus.IN_PROGRESS
        row = {
            **event_log_row(run, stats.step_key, max(1, stats.attempts or 1), started, ended,
                            "crashed" if crashed else "failure", error, tags or {}),
            "cpu_s": last.get("cpu_s"), "peak_rss_bytes": max((s["rss_bytes"] or 0 for s in samples), default=None),
            "mean_rss_bytes": (int(sum(s["rss_bytes"] or 0 for s in samples) / len(samples)) if samples else None),
            "read_bytes": last.get("read_bytes"), "write_bytes": last.get("write_bytes"), "net_bytes": None,
            "input_bytes": last.get("input_bytes"), "output_bytes": None, "work_units": last.get("work_units"),
            "code_version": None,
        }
        if store.record_step_run(row):
            written.append(row)
    return written


def event_log_row(run: DagsterRun, step_key: str, attempt: int, started: float, ended: float, outcome: str,
                  error: StepError, tags: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """The ``step_runs`` columns the event log tells of a step attempt (``measured_by=event_log``):
    identity, times, the outcome labelled by the step's deadline, and the error."""
    deadline = deadline_from_tags(tags_of_step(tags, step_key), run.tags)
    return {
        "run_id": run.run_id, "root_run_id": run.root_run_id or run.run_id, "job": run.job_name,
        "step_key": step_key, "partition_key": run.tags.get("dagster/partition"), "attempt": attempt,
        "started_at": started, "ended_at": ended, "duration_s": max(0.0, ended - started),
        "outcome": label_outcome(outcome, ended - started, deadline), "deadline_s": deadline,
        "error_class": error.cls_name, "error_message": error.message, "error_fingerprint": error.fingerprint,
        "stage_durations": {}, "host": None, "measured_by": "event_log",
    }


def run_start(instance: DagsterInstance, run_id: str) -> float | None:
    """When the run started (when it was created, if it never started); None for an unknown run."""
    record = instance.get_run_record_by_id(run_id)
    if record is None:
        return None
    return record.start_time or record.create_timestamp.timestamp()

