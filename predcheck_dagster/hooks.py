"""``predcheck_hooks``: record every step attempt's figures when the step ends.

A killed step (SIGKILL, the OOM killer) runs no hook: the reconciler records it from the event log.

Guarantees:
    - A hook never raises: any problem (store unreachable, a bug of ours) becomes a warning in the
      step's log, and the step's outcome is what the user's code made it.
"""


import os
import socket
import time
from typing import Any

import psutil
from dagster import DagsterEventType, HookContext, failure_hook, success_hook

from predcheck_dagster.profiler import peak_rss_bytes
from predcheck_dagster.resource import ACTIVE_STEPS, FAILURE_HOOK_NAME, STEP_IO_BYTES, SUCCESS_HOOK_NAME

ERROR_MESSAGE_CHARS = 2000


def _step_start_time(context: HookContext) -> float | None:
    records = context.instance.get_records_for_run(
        context.run_id, of_type=DagsterEventType.STEP_START, limit=1000).records
    starts = [r.event_log_entry.timestamp for r in records if r.event_log_entry.step_key == context.step_key]
    return max(starts) if starts else None


def _process_summary(started_at: float | None) -> dict[str, Any]:
    """Figures for a step without a checkpointer: the step's process, from the OS."""
    proc = psutil.Process(os.getpid())
    cpu = proc.cpu_times()
    try:
        io = proc.io_counters()
        read_bytes, write_bytes = io.read_bytes, io.write_bytes
    except (psutil.Error, AttributeError):
        read_bytes = write_bytes = None
    now = time.time()
    started = started_at or proc.create_time()
    return {"started_at": started, "duration_s": now - started, "cpu_s": cpu.user + cpu.system,
            "peak_rss_bytes": peak_rss_bytes(), "mean_rss_bytes": None, "read_bytes": read_bytes,
            "write_bytes": write_bytes, "stage_durations": {}, "work_units": None,
            "host": socket.gethostname()}


def _attempt_number(context: HookContext, store: Any) -> int:
    """This attempt's number (1 + Dagster's count of earlier attempts), without the store if possible:
    the store may be down, and then the record goes to the spool with the right number."""
    step_context = getattr(context, "_step_execution_context", None)  # no public accessor in 1.13
    if step_context is not None:
        return step_context.previous_attempt_count + 1
    return 1 + store.attempts_recorded(context.run_id, context.step_key)


def error_class_name(exc: BaseException) -> str:
    """The exception's class name, or its nearest public ancestor's for a private class
    (numpy raises ``_ArrayMemoryError``, a ``MemoryError``; Dagster shows it as ``MemoryError``)."""
    return next((c.__name__ for c in type(exc).__mro__ if not c.__name__.startswith("_")), type(exc).__name__)


def record_attempt(context: HookContext, outcome: str) -> None:
    """Write one ``step_runs`` row for the attempt that just ended; warn, never raise."""
    try:
        resource = context.resources.predcheck
        key = (context.run_id, context.step_key)
        checkpointer = ACTIVE_STEPS.pop(key, None)
        if checkpointer is not None:
            summary = checkpointer.close()
            measured_by, attempt = "profiler", checkpointer.identity.attempt
        else:
            summary = _process_summary(_step_start_time(context))
            measured_by, attempt = "process", None
        io_bytes = STEP_IO_BYTES.pop(key, {})
        run = context.instance.get_run_by_id(context.run_id)
        store = resource.metrics_store(context.instance)
        if attempt is None:
            attempt = _attempt_number(context, store)
        exc = context.op_exception
        ended = time.time()
        written = store.write_step_run({
            "run_id": context.run_id, "root_run_id": (run.root_run_id if run else None) or context.run_id,
            "job": context.job_name, "step_key": context.step_key,
            "partition_key": (run.tags.get("dagster/partition") if run else None), "attempt": attempt,
            "started_at": summary["started_at"], "ended_at": ended,
            "duration_s": ended - summary["started_at"], "outcome": outcome,
            "error_class": error_class_name(exc) if exc is not None else None,
            "error_message": str(exc)[:ERROR_MESSAGE_CHARS] if exc is not None else None,
            "stage_durations": summary["stage_durations"], "cpu_s": summary["cpu_s"],
            "peak_rss_bytes": summary["peak_rss_bytes"], "mean_rss_bytes": summary["mean_rss_bytes"],
            "read_bytes": summary["read_bytes"], "write_bytes": summary["write_bytes"],
            "net_bytes": None, "input_bytes": io_bytes.get("input"), "output_bytes": io_bytes.get("output"),
            "work_units": summary["work_units"], "code_version": resource.code_version,
            "host": summary["host"] or socket.gethostname(), "measured_by": measured_by,
        })
        if written == "spooled":
            context.log.warning(f"predcheck: metrics store unreachable: step {context.step_key!r} recorded in the "
                                f"local spool ({store.spool.directory if store.spool else ''}); it is written to "
                                "the store when that answers again.")
    except Exception as e:  # noqa: BLE001 - profiling must never fail the user's step
        context.log.warning(f"predcheck: step {context.step_key!r} not recorded: {type(e).__name__}: {e}")


@success_hook(name=SUCCESS_HOOK_NAME, required_resource_keys={"predcheck"})
def predcheck_success_hook(context: HookContext) -> None:
    record_attempt(context, "success")


@failure_hook(name=FAILURE_HOOK_NAME, required_resource_keys={"predcheck"})
def predcheck_failure_hook(context: HookContext) -> None:
    record_attempt(context, "failure")


predcheck_hooks = {predcheck_success_hook, predcheck_failure_hook}
