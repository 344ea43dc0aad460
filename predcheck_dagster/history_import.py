"""Backfill ``step_runs`` from an existing Dagster instance's event log (``predcheck import-history``).

A team with months of runs gets a forecaster on day one: every finished step attempt of every
finished run becomes a row (start, end, outcome, error class, attempt number, retries), measured
by the event log (no CPU or memory figures exist for the past), labelled by the same rules as the
hooks (deadline, error fingerprint). Attempts already recorded (by the hooks or an earlier
import) are left alone, so the import can be re-run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.execution.stats import StepEventStatus
from dagster._core.storage.dagster_run import DagsterRun

from predcheck_dagster.metrics_store import MetricsStore
from predcheck_dagster.reconcile import CRASH_ERRORS, StepError, event_log_row, failure_errors, step_tags

FINISHED = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE]
PAGE = 200


@dataclass
class ImportReport:
    runs: int = 0
    attempts: int = 0
    skipped: int = 0


def finished_runs(instance: DagsterInstance, since: datetime | None = None) -> Iterator[DagsterRun]:
    """Every finished run, newest first, page by page."""
    cursor = None
    while True:
        runs = instance.get_runs(filters=RunsFilter(statuses=FINISHED, created_after=since), cursor=cursor,
                                 limit=PAGE)
        yield from runs
        if len(runs) < PAGE:
            return
        cursor = runs[-1].run_id


def attempt_rows(instance: DagsterInstance, run: DagsterRun) -> list[dict[str, Any]]:
    """One row per finished step attempt of ``run``; retried attempts are failures."""
    rows = []
    errors: dict[str, StepError] | None = None
    tags: dict[str, Mapping[str, str]] | None = None
    for stats in instance.get_run_step_stats(run.run_id):
        if stats.status not in (StepEventStatus.SUCCESS, StepEventStatus.FAILURE):
            continue
        markers = [m for m in (stats.attempts_list or []) if m.start_time] or [None]
        for number, marker in enumerate(markers, start=1):
            started = (marker.start_time if marker else None) or stats.start_time
            ended = (marker.end_time if marker else None) or stats.end_time
            if not started or not ended:
                continue
            last = number == len(markers)
            error = StepError(None, None, None)
            outcome = "success"
            if not last or stats.status == StepEventStatus.FAILURE:
                outcome = "failure"
                if last:
                    if errors is None:
                        errors = failure_errors(instance, run.run_id)
                    error = errors.get(stats.step_key) or error
                    if error.cls_name in CRASH_ERRORS:
                        outcome = "crashed"
                else:
                    error = StepError("RetryRequested", None, None)
            if tags is None:
                tags = step_tags(instance, run)
            rows.append(event_log_row(run, stats.step_key, number, started, ended, outcome, error, tags))
    return rows


def import_history(instance: DagsterInstance, store: MetricsStore, since: datetime | None = None,
                   progress: Callable[[int], None] | None = None) -> ImportReport:
    """Write every finished, not yet recorded step attempt of the instance into ``store``."""
    report = ImportReport()
    for run in finished_runs(instance, since):
        report.runs += 1
        for row in attempt_rows(instance, run):
            if store.record_step_run(row):
                report.attempts += 1
            else:
                report.skipped += 1
        if progress is not None:
            progress(1)
    return report
