"""``predcheck_hooks``: record every step attempt's figures when the step ends.

One hook for both outcomes (it reads the step's STEP_SUCCESS or STEP_FAILURE from the events it is
given), so a step logs one HOOK_COMPLETED event, not a completed and a skipped one.

A killed step (SIGKILL, the OOM killer) runs no hook: the reconciler records it from the event log.
Neither does an attempt that Dagster retries (``RetryRequested``, a ``RetryPolicy``: its event is
STEP_UP_FOR_RETRY, which fires no failure hook); ``predcheck import-history`` records those.

Guarantees:
    - A hook never raises: any problem (store unreachable, a bug of ours) becomes a warning in the
      step's log, and the step's outcome is what the user's code made it.
"""

import os
from collections.abc import Mapping, Sequence
from typing import Any

from dagster import DagsterEvent, DagsterEventType, HookContext, HookDefinition, HookExecutionResult

from predcheck_dagster.outcome import deadline_from_tags, fingerprint_exception, label_outcome
from predcheck_dagster.profiler import HOST, take_snapshot
from predcheck_dagster.resource import ACTIVE_STEPS, HOOK_NAME, STEP_IO_BYTES
from predcheck_dagster.step_events import STEP_PROFILERS

ERROR_MESSAGE_CHARS = 2000
# Executor definitions whose name already says how steps run; the others are named as defined.
EXECUTOR_NAMES = {"multiprocess": "multiprocess", "in_process": "in_process",
                  "execute_in_process_executor": "in_process"}


def _step_start_time(context: HookContext) -> float | None:
    records = context.instance.get_records_for_run(
        context.run_id, of_type=DagsterEventType.STEP_START, limit=1000).records
    starts = [r.event_log_entry.timestamp for r in records if r.event_log_entry.step_key == context.step_key]
    return max(starts) if starts else None


def _process_summary(started_at: float | None) -> dict[str, Any]:
    """Figures for a step the listener did not profile: its whole process since it started."""
    snap = take_snapshot()
    if started_at is None:  # a rare path: psutil only here
        import psutil

        started_at = psutil.Process(os.getpid()).create_time()
    return {"started_at": started_at, "ended_at": snap.wall, "duration_s": snap.wall - started_at,
            "cpu_s": snap.cpu_user_s + snap.cpu_system_s, "cpu_user_s": snap.cpu_user_s,
            "cpu_system_s": snap.cpu_system_s, "peak_rss_bytes": snap.hwm_bytes, "mean_rss_bytes": None,
            "read_bytes": snap.io[0] if snap.io else None, "write_bytes": snap.io[1] if snap.io else None,
            "netns_recv_bytes": None, "netns_sent_bytes": None, "stage_durations": {}, "stage_profile": {},
            "work_units": None, "host": HOST, "dropped_samples": None, "profiler_errors": None}


def error_class_name(exc: BaseException) -> str:
    """The exception's class name, or its nearest public ancestor's for a private class
    (numpy raises ``_ArrayMemoryError``, a ``MemoryError``; Dagster shows it as ``MemoryError``)."""
    return next((c.__name__ for c in type(exc).__mro__ if not c.__name__.startswith("_")), type(exc).__name__)


def executor_name(job_executor: str | None, run_config: Mapping[str, Any] | None) -> str | None:
    """How the step ran: ``multiprocess``, ``in_process``, or the executor definition's name
    (``celery``, ``k8s``...). ``multi_or_in_process_executor`` is resolved from the run config."""
    if job_executor is None:
        return None
    if job_executor == "multi_or_in_process_executor":
        chosen = ((run_config or {}).get("execution") or {}).get("config") or {}
        return "in_process" if "in_process" in chosen else "multiprocess"  # multiprocess is its default
    return EXECUTOR_NAMES.get(job_executor, job_executor)


def _declared_code_version(step_context: Any) -> str | None:
    """The code version declared on the step's op or assets (``code_version=``), if any."""
    versions = sorted({o.code_version for o in step_context.op_def.output_defs if o.code_version})
    return ",".join(versions) or None


def step_facts(context: HookContext, fallback_code_version: str | None) -> dict[str, Any]:
    """What Dagster knows about the step: run lineage, partition, attempt, tags, executor, code version.

    Reads the step's execution context (``HookContext._step_execution_context``, Dagster 1.13)
    rather than querying the instance; without it, the run is read from the instance.
    """
    step_context = getattr(context, "_step_execution_context", None)
    if step_context is None:
        run = context.instance.get_run_by_id(context.run_id)
        return {"run": run, "partition_key": run.tags.get("dagster/partition") if run else None, "attempt": None,
                "op_tags": dict(context.op.tags or {}), "executor": None, "code_version": fallback_code_version}
    run = step_context.dagster_run
    partition = None
    try:
        if step_context.has_partition_key:
            partition = step_context.partition_key
    except Exception:  # noqa: BLE001 - a partition range or an unusual partitioning: the run tag
        partition = run.tags.get("dagster/partition")
    return {
        "run": run, "partition_key": partition, "attempt": step_context.previous_attempt_count + 1,
        "op_tags": dict(step_context.step.tags or {}),
        "executor": executor_name(step_context.job_def.executor_def.name, run.run_config),
        "code_version": fallback_code_version or _declared_code_version(step_context),
    }


def record_attempt(context: HookContext, outcome: str) -> None:
    """Write one ``step_runs`` row for the attempt that just ended; warn, never raise."""
    try:
        resource = context.resources.predcheck
        key = (context.run_id, context.step_key)
        checkpointer = ACTIVE_STEPS.pop(key, None)
        profiler = STEP_PROFILERS.pop(key, None)
        if checkpointer is not None:  # the step's own profiler (the listener's, or one it started)
            profiler = checkpointer.profiler
        if profiler is not None:
            summary, measured_by = profiler.stop(), "profiler"
        else:
            summary, measured_by = _process_summary(_step_start_time(context)), "process"
        io_bytes = STEP_IO_BYTES.pop(key, {})
        facts = step_facts(context, resource.code_version)
        run = facts["run"]
        store = resource.metrics_store(context.instance)
        # Dagster's retry state (previous_attempt_count) when the step context is there; the store may
        # be down, and then the record goes to the spool with the right number anyway.
        attempt = facts["attempt"] or 1 + store.attempts_recorded(context.run_id, context.step_key)
        exc = context.op_exception
        deadline = deadline_from_tags(facts["op_tags"], run.tags if run else None)
        duration = summary["ended_at"] - summary["started_at"]
        written = store.write_step_run({
            "run_id": context.run_id, "root_run_id": (run.root_run_id if run else None) or context.run_id,
            "job": context.job_name, "step_key": context.step_key, "partition_key": facts["partition_key"],
            "attempt": attempt, "started_at": summary["started_at"], "ended_at": summary["ended_at"],
            "duration_s": duration, "outcome": label_outcome(outcome, duration, deadline), "deadline_s": deadline,
            "error_class": error_class_name(exc) if exc is not None else None,
            "error_message": str(exc)[:ERROR_MESSAGE_CHARS] if exc is not None else None,
            "error_fingerprint": fingerprint_exception(exc) if exc is not None else None,
            "stage_durations": summary["stage_durations"], "stage_profile": summary["stage_profile"],
            "cpu_s": summary["cpu_s"], "cpu_user_s": summary["cpu_user_s"], "cpu_system_s": summary["cpu_system_s"],
            "peak_rss_bytes": summary["peak_rss_bytes"], "mean_rss_bytes": summary["mean_rss_bytes"],
            "read_bytes": summary["read_bytes"], "write_bytes": summary["write_bytes"], "net_bytes": None,
            "netns_recv_bytes": summary["netns_recv_bytes"], "netns_sent_bytes": summary["netns_sent_bytes"],
            "input_bytes": io_bytes.get("input"), "output_bytes": io_bytes.get("output"),
            "work_units": summary["work_units"], "code_version": facts["code_version"],
            "executor": facts["executor"], "host": summary["host"], "measured_by": measured_by,
            "samples_dropped": summary["dropped_samples"], "profiler_errors": summary["profiler_errors"],
        })
        if written == "spooled":
            context.log.warning(f"predcheck: metrics store unreachable: step {context.step_key!r} recorded in the "
                                f"local spool ({store.spool.directory if store.spool else ''}); it is written to "
                                "the store when that answers again.")
    except Exception as e:  # noqa: BLE001 - profiling must never fail the user's step
        context.log.warning(f"predcheck: step {context.step_key!r} not recorded: {type(e).__name__}: {e}")


def _on_step_end(context: HookContext, event_list: Sequence[DagsterEvent]) -> HookExecutionResult:
    outcome = next(("success" if e.is_step_success else "failure" for e in event_list
                    if e.is_step_success or e.is_step_failure), None)
    if outcome is not None:
        record_attempt(context, outcome)
    return HookExecutionResult(hook_name=HOOK_NAME, is_skipped=outcome is None)


predcheck_hook = HookDefinition(name=HOOK_NAME, hook_fn=_on_step_end, required_resource_keys={"predcheck"})
predcheck_hooks = {predcheck_hook}
