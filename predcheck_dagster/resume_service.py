"""One tick of the resume sensor: re-execute failed runs from failure, from their checkpoints.

For every recently failed run with a usable checkpoint of a failed step, the service builds a
``ResumePlan`` (checkpoint per step, the last prediction, adjustments), claims the parent run in
the metrics store (exactly one claim can succeed, whatever the number of ticks or daemons), and
launches a FROM_FAILURE re-execution whose run config carries the plan.

Launchers:
    - ``GraphQLLauncher``: through the webserver's GraphQL ``launchPipelineReexecution`` (what a
      sensor under ``dagster dev`` or in a deployment uses; DESIGN.md §6).
    - ``ExecuteJobLauncher``: ``execute_job(..., reexecution_options=from_failure)`` in this process
      (the headless demo and tests that drive ticks themselves).
"""

from __future__ import annotations

import copy
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.execution.stats import StepEventStatus
from dagster._core.storage.dagster_run import DagsterRun

from predcheck_dagster import features
from predcheck_dagster.checkpoint_store import CheckpointStore, Prediction
from predcheck_dagster.errors import RelaunchError, WebserverUnreachableError
from predcheck_dagster.metrics_store import MetricsStore
from predcheck_dagster.reconcile import reconcile_run, run_start
from predcheck_dagster.resource import PredcheckResource
from predcheck_dagster.resume_plan import ResumePlan, StepResumePlan, executor_tags, plan_adjustments

RESUMED_FROM_TAG = "predcheck/resumed_from"
RESUME_COUNT_TAG = "predcheck/resume_count"
RESUMED_BY_TAG = "predcheck/resumed_by"
RESUME_SKIPPED_TAG = "predcheck/resume_skipped"  # why a failed run will never be resumed
RECONCILED_TAG = "predcheck/reconciled"  # its crashed steps are recorded
MAX_RETRIES_TAG = "dagster/max_retries"
RETRY_NUMBER_TAG = "dagster/retry_number"
WILL_RETRY_TAG = "dagster/will_retry"
AUTO_RESUME_TAG = "predcheck/auto_resume"  # "false" on a run (or job) opts it out of resumes
LOOKBACK = timedelta(hours=24)
# Tags of a flagged run that describe that run only; the re-execution does not inherit them.
_RUN_SCOPED_PREFIXES = ("dagster/", "predcheck/", ".dagster/")

REEXECUTE_MUTATION = """
mutation PredcheckResume($executionParams: ExecutionParams!) {
  launchPipelineReexecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on PipelineNotFoundError { message }
    ... on RunConflict { message }
    ... on UnauthorizedError { message }
    ... on InvalidSubsetError { message }
    ... on ConflictingExecutionParamsError { message }
    ... on PresetNotFoundError { message }
    ... on NoModeProvidedError { message }
  }
}
"""


@dataclass(frozen=True)
class ResumeRequest:
    parent: DagsterRun
    plan: ResumePlan
    run_config: dict[str, Any]
    tags: dict[str, str]


class Launcher(Protocol):
    def launch(self, instance: DagsterInstance, request: ResumeRequest) -> str:
        """Launch the re-execution; return its run id."""


class GraphQLLauncher:
    """Launches re-executions through a Dagster webserver's GraphQL endpoint."""

    def __init__(self, webserver_url: str, timeout_s: float = 30.0) -> None:
        self.url = webserver_url.rstrip("/") + "/graphql"
        self.timeout_s = timeout_s

    def launch(self, instance: DagsterInstance, request: ResumeRequest) -> str:
        parent = request.parent
        origin = parent.remote_job_origin
        if origin is None:
            raise RelaunchError(f"run {parent.run_id!r} was not launched from a code location (no "
                                "origin), so the webserver cannot re-execute it; use ExecuteJobLauncher.")
        params = {
            "selector": {"repositoryLocationName": origin.repository_origin.code_location_origin.location_name,
                         "repositoryName": origin.repository_origin.repository_name,
                         "pipelineName": parent.job_name},
            "runConfigData": request.run_config,
            "executionMetadata": {"parentRunId": parent.run_id, "rootRunId": parent.root_run_id or parent.run_id,
                                  "tags": [{"key": k, "value": v} for k, v in request.tags.items()]},
        }
        body = json.dumps({"query": REEXECUTE_MUTATION, "variables": {"executionParams": params}}).encode()
        req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                payload = json.loads(resp.read())
        except (urllib.error.URLError, OSError) as e:
            raise WebserverUnreachableError(f"Dagster webserver at {self.url!r} is unreachable ({e}); start it "
                                "(`dagster dev`) or fix the predcheck resource's `webserver_url`.") from e
        result = (payload.get("data") or {}).get("launchPipelineReexecution") or {}
        if result.get("__typename") == "LaunchRunSuccess":
            return result["run"]["runId"]
        raise RelaunchError(f"re-execution of {parent.run_id!r} refused by {self.url!r}: "
                            f"{result or payload.get('errors')}")


class ExecuteJobLauncher:
    """Re-executes in this process with ``execute_job`` (synchronous)."""

    def __init__(self, recon_repo: Any) -> None:
        self.recon_repo = recon_repo

    def launch(self, instance: DagsterInstance, request: ResumeRequest) -> str:
        from dagster import ReexecutionOptions, execute_job

        job = self.recon_repo.get_reconstructable_job(request.parent.job_name)
        options = ReexecutionOptions.from_failure(request.parent.run_id, instance)
        result = execute_job(job, instance=instance, run_config=request.run_config, tags=request.tags,
                             reexecution_options=options)
        return result.run_id


@dataclass
class ResumeReport:
    launched: dict[str, str] = field(default_factory=dict)  # parent run id -> new run id
    lines: list[str] = field(default_factory=list)
    reconciled: int = 0

    def message(self) -> str:
        head = f"resumed {len(self.launched)} run(s); reconciled {self.reconciled} crashed step(s)"
        return "\n".join([head, *self.lines])


def plan_resume(instance: DagsterInstance, store: MetricsStore, checkpoints: CheckpointStore, run: DagsterRun,
                predcheck: PredcheckResource, now: float | None = None) -> tuple[ResumeRequest | None, str]:
    """The resume request for a failed run, or None and why not."""
    if run.tags.get(AUTO_RESUME_TAG, "true").lower() == "false":
        return None, f"opted out ({AUTO_RESUME_TAG}=false)"
    resume_count = int(run.tags.get(RESUME_COUNT_TAG, "0") or 0)
    if resume_count >= predcheck.max_resumes:
        return None, f"already resumed {resume_count} time(s) (max_resumes={predcheck.max_resumes})"
    root = run.root_run_id or run.run_id
    root_started = run_start(instance, root)
    if root_started is not None and (now or time.time()) - root_started > predcheck.resume_deadline_s:
        return None, (f"past the resume deadline: root run {root[:8]} started more than "
                      f"{predcheck.resume_deadline_s:.0f} s ago (resume_deadline_s)")
    plan = build_plan(instance, store, checkpoints, run)
    if plan is None:
        return None, "no failed step has a checkpoint"
    run_config = copy.deepcopy(dict(run.run_config or {}))
    resources = run_config.setdefault("resources", {})
    predcheck_cfg = resources.setdefault("predcheck", {}).setdefault("config", {})
    predcheck_cfg["resume"] = plan.to_config()
    tags = {k: v for k, v in run.tags.items() if not k.startswith(_RUN_SCOPED_PREFIXES)}
    tags.update({RESUMED_FROM_TAG: ",".join(s.checkpoint_id for s in plan.steps),
                 RESUME_COUNT_TAG: str(resume_count + 1), "dagster/is_resume_retry": "true",
                 "dagster/parent_run_id": run.run_id, "dagster/root_run_id": root,
                 **executor_tags(plan, predcheck.resume_celery_queue)})
    return ResumeRequest(parent=run, plan=plan, run_config=run_config, tags=tags), "ok"


def build_plan(instance: DagsterInstance, store: MetricsStore, checkpoints: CheckpointStore,
               run: DagsterRun) -> ResumePlan | None:
    """The plan for the failed steps of ``run`` that have a checkpoint, or None if none has."""
    root = run.root_run_id or run.run_id
    failed = [s.step_key for s in instance.get_run_step_stats(run.run_id)
              if s.status in (StepEventStatus.FAILURE, StepEventStatus.IN_PROGRESS)]
    attempts = {r["step_key"]: r for r in store.step_runs(run_id=run.run_id)}
    predictions: dict[str, Prediction] = {}
    for row in store.predictions(run_id=run.run_id):
        predictions[row["step_key"]] = Prediction(
            failure_probability=row["failure_probability"], predicted_remaining_s=row["predicted_remaining_s"],
            model_uri=row["model_uri"], model_version=row["model_version"])
    steps = []
    for step_key in failed:
        manifests = checkpoints.list(checkpoints.step_stream(run.job_name, root, step_key))
        if not manifests:
            continue
        latest = manifests[-1]
        attempt = attempts.get(step_key, {})
        steps.append((step_key, latest, attempt, latest.prediction or predictions.get(step_key)))
    # a step killed without its hooks (its row reconciled from the event log, whatever its outcome
    # label) is judged against its usual footprint: only those need their history
    killed = {key for key, _, attempt, _ in steps if attempt.get("measured_by") == "event_log"}
    histories = store.step_histories([(run.job_name, key) for key in killed], features.PIPELINE_WINDOW) \
        if killed else {}
    plans = [StepResumePlan(
        step_key=step_key, checkpoint_id=latest.checkpoint_id, prediction=prediction,
        error_class=attempt.get("error_class"),
        adjustments=plan_adjustments(
            attempt.get("error_class"), attempt.get("peak_rss_bytes"), prediction, crashed=step_key in killed,
            usual_peak_rss_bytes=_usual_peak_rss(histories.get((run.job_name, step_key), []))))
        for step_key, latest, attempt, prediction in steps]
    return ResumePlan(parent_run_id=run.run_id, steps=tuple(plans)) if plans else None


def _usual_peak_rss(history: list[dict[str, Any]]) -> float | None:
    """The median peak RSS of a step's successful attempts (``hist_peak_rss_p50``), None without one."""
    peaks = [h["peak_rss_bytes"] for h in history if h["outcome"] == "success" and h.get("peak_rss_bytes")]
    return features.quantile(peaks, 0.5) if peaks else None


def plan_for_retry(instance: DagsterInstance, predcheck: PredcheckResource, run: DagsterRun) -> ResumePlan | None:
    """The plan of a re-execution launched without one in its run config (by Dagster's run-retries
    daemon, or by hand from the UI): rebuilt from the store, after reconciling the parent run."""
    parent = instance.get_run_by_id(run.parent_run_id) if run.parent_run_id else None
    if parent is None:
        return None
    store = predcheck.metrics_store(instance)
    if RECONCILED_TAG not in parent.tags:  # the resume sensor may not have looked at it yet
        reconcile_run(instance, store, parent)
    return build_plan(instance, store, predcheck.checkpoint_store(), parent)


def left_to_run_retries(instance: DagsterInstance, run: DagsterRun) -> bool:
    """True when Dagster's run-retries daemon will re-execute ``run`` itself.

    The daemon marks its decision with ``dagster/will_retry``; before it has, a run with retries
    left (``dagster/max_retries`` above ``dagster/retry_number``) is left to it for this tick.
    """
    if not instance.run_retries_enabled:
        return False
    decided = run.tags.get(WILL_RETRY_TAG)
    if decided is not None:
        return decided.lower() == "true"
    try:
        return int(run.tags.get(MAX_RETRIES_TAG, "0")) > int(run.tags.get(RETRY_NUMBER_TAG, "0"))
    except ValueError:
        return False

def resume_tick(instance: DagsterInstance, predcheck: PredcheckResource, launcher: Launcher | None,
                lookback: timedelta = LOOKBACK) -> ResumeReport:
    """Reconcile crashed steps of recently failed runs and resume those that can be."""
    from predcheck_dagster.store_maintenance import compact_if_due, flush_spool

    report = ResumeReport()
    store = predcheck.metrics_store(instance)
    flushed = flush_spool(store)  # before reconciling: a spooled hook record beats a rebuilt one
    if flushed:
        report.lines.append(flushed)
    checkpoints = predcheck.checkpoint_store()
    since = datetime.now(UTC) - lookback
    runs = instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.FAILURE], updated_after=since), limit=200)
    for run in runs:
        if RESUMED_BY_TAG in run.tags or RESUME_SKIPPED_TAG in run.tags:
            continue  # decided on an earlier tick: each failed run costs a full look once
        if RECONCILED_TAG not in run.tags:
            report.reconciled += len(reconcile_run(instance, store, run))
            instance.add_run_tags(run.run_id, {RECONCILED_TAG: "true"})
        if left_to_run_retries(instance, run):
            report.lines.append(f"{run.run_id[:8]}: left to Dagster's run-retries daemon ({MAX_RETRIES_TAG}); "
                                "the re-executed step rebuilds its plan from the store")
            continue
        request, why = plan_resume(instance, store, checkpoints, run, predcheck)
        if request is None:  # every reason plan_resume gives is final for this run
            instance.add_run_tags(run.run_id, {RESUME_SKIPPED_TAG: why})
            report.lines.append(f"{run.run_id[:8]} ({run.job_name}): not resumed: {why}")
            continue
        if launcher is None:
            report.lines.append(f"{run.run_id[:8]}: resumable, but no launcher: set the predcheck "
                                "resource's `webserver_url`")
            continue
        if not store.claim_resume(run.run_id, run.root_run_id or run.run_id, run.job_name):
            continue  # another tick or daemon owns this resume
        try:
            new_run_id = launcher.launch(instance, request)
        except WebserverUnreachableError as e:  # nothing was launched: a later tick retries
            store.release_resume(run.run_id)
            report.lines.append(f"{run.run_id[:8]}: resume postponed: {e}")
            continue
        except Exception as e:  # noqa: BLE001 - recorded, shown in the tick, and not retried blindly
            store.finish_resume(run.run_id, "failed", detail=f"{type(e).__name__}: {e}", plan=request.plan.to_config())
            report.lines.append(f"{run.run_id[:8]}: resume failed: {e}")
            continue
        store.finish_resume(run.run_id, "launched", new_run_id=new_run_id, plan=request.plan.to_config())
        instance.add_run_tags(run.run_id, {RESUMED_BY_TAG: new_run_id})
        report.launched[run.run_id] = new_run_id
        report.lines.append(f"{run.run_id[:8]} -> {new_run_id[:8]} from {request.tags[RESUMED_FROM_TAG]}")
    compacted = compact_if_due(store, predcheck.compact_older_than_s, predcheck.compact_keep_every_s)
    if compacted:
        report.lines.append(compacted)
    return report


def launcher_for(predcheck: PredcheckResource) -> Launcher | None:
    return GraphQLLauncher(predcheck.webserver_url) if predcheck.webserver_url else None
