"""``PredcheckResource``: the typed configuration every predcheck part reads, and the step's entry.

Inside an op::

    @op
    def crunch(context, predcheck: PredcheckResource):
        ck = predcheck.checkpointer(context)
        state = ck.restore(default={"i": 0})
        ...
        ck.maybe_checkpoint(state)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from dagster import Config, ConfigurableResource, InitResourceContext
from pydantic import Field

from predcheck_dagster import policy

if TYPE_CHECKING:  # imported where used: a step that never checkpoints needs neither fsspec nor SQLAlchemy
    from predcheck_dagster.checkpoint_store import CheckpointStore
    from predcheck_dagster.checkpointer import Checkpointer, CheckpointSettings
    from predcheck_dagster.metrics_store import MetricsStore
    from predcheck_dagster.profiler import StepProfiler
    from predcheck_dagster.resume_plan import ResumePlan

DEFAULT_MODEL_NAME = "predcheck-forecaster"
DEFAULT_MODEL_URI = f"models:/{DEFAULT_MODEL_NAME}@champion"
DEFAULT_WEBSERVER_URL = "http://127.0.0.1:3000"

HOOK_NAME = "predcheck_hook"
# Steps of this process that hold a checkpointer, by (run_id, step_key): the hooks close them.
ACTIVE_STEPS: dict[tuple[str, str], Checkpointer] = {}
# Bytes read and written by the IO manager per (run_id, step_key), for the hooks' record.
STEP_IO_BYTES: dict[tuple[str, str], dict[str, int]] = {}


def predcheck_home() -> str:
    """Where embedded defaults live: ``$DAGSTER_HOME/predcheck`` (``./.dagster_home`` if unset)."""
    home = os.environ.get("DAGSTER_HOME") or os.path.abspath(".dagster_home")
    return os.path.join(home, "predcheck")


def default_store_url() -> str:
    return f"sqlite:///{os.path.join(predcheck_home(), 'metrics.db')}"


def default_spool_dir() -> str:
    return os.path.join(predcheck_home(), "spool")


def instance_store_url(instance: Any) -> str | None:
    """The PostgreSQL URL of a Dagster instance whose run (or event log) storage is dagster-postgres,
    with the psycopg2 driver (the store's bulk writes use it); None for any other storage.

    dagster-postgres resolves its ``postgres_url`` or ``postgres_db`` config (host, port, db_name,
    username, password, params, scheme) into one URL; predcheck keeps its own tables in that database.
    """
    from sqlalchemy.engine.url import make_url

    for storage in (getattr(instance, "run_storage", None), getattr(instance, "event_log_storage", None)):
        url = getattr(storage, "postgres_url", None)
        if isinstance(url, str) and url:
            parsed = make_url(url)
            if parsed.get_backend_name() == "postgresql":
                return parsed.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return None


def default_checkpoint_root() -> str:
    return os.path.join(predcheck_home(), "checkpoints")


def default_tracking_uri() -> str:
    return f"sqlite:///{os.path.join(predcheck_home(), 'mlflow.db')}"


def default_artifact_root() -> str:
    return "file://" + os.path.join(predcheck_home(), "mlartifacts")


class StepResumeConfig(Config):
    """One failed step in a resume plan (see ``ResumePlan``)."""

    step_key: str = Field(description="The step to resume.")
    checkpoint_id: str = Field(description="Checkpoint to restore, as listed by `predcheck checkpoints list`.")
    error_class: str | None = Field(default=None, description="Why the parent attempt failed.")
    failure_probability: float | None = Field(default=None, description="Forecast failure probability.")
    predicted_remaining_s: float | None = Field(default=None, description="Forecast remaining seconds.")
    bottleneck_stages: list[str] = Field(default=[], description="Stages that dominated the parent attempt.")
    peak_rss_bytes: int | None = Field(default=None, description="Projected/observed peak RSS, bytes.")
    cpu_s: float | None = Field(default=None, description="Projected CPU seconds.")
    time_to_limit_s: float | None = Field(default=None, description="Projected seconds to the deadline.")
    model_uri: str | None = Field(default=None, description="Model that made the forecast.")
    model_version: str | None = Field(default=None, description="Its registry version.")
    batch_size_factor: float = Field(default=1.0, description="Multiply the step's batch size by this.")
    memory_request_bytes: int | None = Field(default=None, description="Memory to request, bytes.")
    priority: int = Field(default=0, description="Relative priority of the resumed step.")


class ResumePlanConfig(Config):
    """Run config written by the resume sensor into a re-executed run."""

    parent_run_id: str = Field(description="The failed run this run resumes.")
    steps: list[StepResumeConfig] = Field(default=[], description="Per failed step: checkpoint and plan.")


class PredcheckResource(ConfigurableResource):
    """Where predcheck keeps its data and how it decides; every default is embedded and overridable."""

    store_url: str | None = Field(
        default=None, description="SQLAlchemy URL of the metrics store (PostgreSQL: "
        "postgresql+psycopg2://user@host:5432/db). Default: the Dagster instance's own PostgreSQL "
        "database when its run or event log storage is dagster-postgres (predcheck adds its tables "
        "there), else SQLite at $DAGSTER_HOME/predcheck/metrics.db.")
    spool_dir: str | None = Field(
        default=None, description="Local directory where steps spool samples and step records while "
        "the metrics store is unreachable; they are flushed when it answers again. Default: "
        "$DAGSTER_HOME/predcheck/spool. Must be on the step's own host (file locks).")
    checkpoint_root: str | None = Field(
        default=None, description="fsspec URL under which checkpoints are written (local path, "
        "memory://, s3://...). Default: $DAGSTER_HOME/predcheck/checkpoints.")
    storage_options: dict[str, str] = Field(
        default={}, description="fsspec storage options of checkpoint_root, e.g. {endpoint_url: "
        "http://127.0.0.1:9000} for an S3-compatible server. Credentials come from the environment "
        "(AWS_* variables, instance roles), never from here.")
    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI. Default: SQLite at $DAGSTER_HOME/predcheck/mlflow.db.")
    model_uri: str = Field(default=DEFAULT_MODEL_URI, description="Registered forecaster to score with.")
    webserver_url: str | None = Field(
        default=DEFAULT_WEBSERVER_URL, description="Dagster webserver base URL the resume sensor launches "
        "re-executions through (GraphQL). Default: dagster dev's http://127.0.0.1:3000. None disables "
        "automatic resumes.")
    risk_threshold: float = Field(default=0.5, description="Failure probability above which a run is "
                                  "tagged predcheck/risk=high.")
    sample_interval_s: float = Field(default=5.0, description="Seconds between live samples of a step "
                                     "(step_samples); 0 takes none.")
    measure_stage_peak_rss: bool = Field(
        default=True, description="Measure each stage's peak RSS by resetting the kernel's peak-RSS mark "
        "(VmHWM, via /proc/self/clear_refs) at every stage boundary. Turn off if your ops read "
        "getrusage().ru_maxrss or VmHWM themselves; step_runs.peak_rss_bytes is then the process's "
        "lifetime peak.")
    poll_interval_s: float = Field(default=1.0, description="Seconds between a step's polls for "
                                   "checkpoint requests.")
    checkpoint_interval_s: float | None = Field(
        default=None, description="Fixed seconds between periodic checkpoints; unset = adaptive "
        "(Daly's period at the forecast hazard, clamped to min/max).")
    min_checkpoint_interval_s: float = Field(default=1.0, description="Lower clamp of the adaptive interval.")
    max_checkpoint_interval_s: float = Field(default=600.0, description="Upper clamp of the adaptive interval.")
    default_mtbf_s: float = Field(default=policy.DEFAULT_MTBF_S, description="MTBF assumed without a forecast.")
    retention: int = Field(default=3, description="Good checkpoints kept per step stream.")
    allow_pickle: bool = Field(default=False, description="Allow pickle for state no safe serializer handles.")
    max_resumes: int = Field(default=3, description="At most this many automatic resumes per root run.")
    resume_deadline_s: float = Field(default=24 * 3600.0, description="No automatic resume once this many "
                                     "seconds have passed since the root run started (the time limit).")
    resume_celery_queue: str | None = Field(default=None, description="Celery queue for resumes that "
                                            "ran out of memory (run tag dagster-celery/queue, which "
                                            "dagster-celery's CeleryRunLauncher routes by).")
    code_version: str | None = Field(default=None, description="Code version recorded in manifests; a "
                                     "checkpoint of another code version is refused on resume.")
    compact_older_than_s: float | None = Field(
        default=None, description="When set, the resume sensor compacts the metrics store once an hour: "
        "samples of steps that ended more than this many seconds ago are downsampled to one per "
        "compact_keep_every_s (at most 20 s of work per tick). Unset: never (use `predcheck store compact`).")
    compact_keep_every_s: float = Field(
        default=60.0, description="Downsampling period of compaction, seconds; 0 deletes those samples.")
    prometheus_port: int | None = Field(
        default=None, description="When set, the forecast sensor's process serves Prometheus gauges of "
        "in-flight steps on this port (/metrics). Unset: off.")
    prometheus_host: str = Field(
        default="127.0.0.1", description="Address the Prometheus endpoint binds; 0.0.0.0 for a scraper "
        "on another host.")
    resume: ResumePlanConfig | None = Field(default=None, description="Set by the resume sensor.")

    # ---- lifecycle: profile every step of the run in this process ------------------------------
    def setup_for_execution(self, context: InitResourceContext) -> None:
        """Profile each step of the run from its own events (see ``step_events``); never raises."""
        try:
            if context.instance is not None and context.dagster_run is not None:
                from predcheck_dagster.step_events import listen

                run_id = context.dagster_run.run_id
                instance = context.instance
                listen(instance, run_id, lambda step_key: self.step_profiler(run_id, step_key, instance=instance))
        except Exception as e:  # noqa: BLE001 - without the listener the hooks measure the process
            context.log.warning(f"predcheck: steps of this run are not profiled: {type(e).__name__}: {e}")

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        try:
            if context.instance is not None and context.dagster_run is not None:
                from predcheck_dagster.step_events import unlisten

                unlisten(context.instance, context.dagster_run.run_id)
        except Exception:  # noqa: BLE001, S110 - nothing left to measure
            pass

    # ---- factories (cheap, no I/O) ------------------------------------------------------------
    def metrics_store(self, instance: Any | None = None) -> MetricsStore:
        """The metrics store: ``store_url``; else ``instance``'s dagster-postgres database; else the
        embedded SQLite. Pass the Dagster instance wherever one is at hand (steps, hooks, sensors)."""
        from predcheck_dagster.metrics_store import MetricsStore

        return MetricsStore(self._store_url(instance), spool_dir=self.spool_dir or default_spool_dir())

    def _store_url(self, instance: Any | None = None) -> str:
        url = self.store_url or (instance_store_url(instance) if instance is not None else None)
        return url or default_store_url()

    def step_profiler(self, run_id: str, step_key: str, interval_s: float | None = None,
                      instance: Any | None = None) -> StepProfiler:
        """The profiler of one step attempt (not started), its samples going to the metrics store of
        ``metrics_store(instance)`` through ``write_samples``: spooled when the store is unreachable."""
        from predcheck_dagster.profiler import StepProfiler

        url, spool_dir = self._store_url(instance), self.spool_dir or default_spool_dir()
        stores: list[MetricsStore] = []

        def write_samples(rows: Any) -> None:  # the store module loads in the writer thread, if ever
            if not stores:
                from predcheck_dagster.metrics_store import MetricsStore

                stores.append(MetricsStore(url, spool_dir=spool_dir))
            stores[0].write_samples(rows)

        return StepProfiler(run_id, step_key, sink=write_samples,
                            interval_s=self.sample_interval_s if interval_s is None else interval_s,
                            reset_peak=self.measure_stage_peak_rss)

    def checkpoint_store(self) -> CheckpointStore:
        from predcheck_dagster.checkpoint_store import CheckpointStore

        return CheckpointStore(self.checkpoint_root or default_checkpoint_root(), retention=self.retention,
                               allow_pickle=self.allow_pickle, storage_options=self.storage_options)

    def resume_plan(self) -> ResumePlan | None:
        from predcheck_dagster.resume_plan import ResumePlan

        return ResumePlan.from_config(self.resume.model_dump() if self.resume else None)

    def checkpoint_settings(self) -> CheckpointSettings:
        from predcheck_dagster.checkpointer import CheckpointSettings

        return CheckpointSettings(
            poll_interval_s=self.poll_interval_s, fixed_interval_s=self.checkpoint_interval_s,
            min_interval_s=self.min_checkpoint_interval_s, max_interval_s=self.max_checkpoint_interval_s,
            default_mtbf_s=self.default_mtbf_s)

    # ---- the step's entry ---------------------------------------------------------------------
    def checkpointer(self, context: Any) -> Checkpointer:
        """The checkpointer of the step ``context`` runs (one per step attempt and process)."""
        from predcheck_dagster.checkpointer import Checkpointer, StepIdentity
        from predcheck_dagster.step_events import STEP_PROFILERS

        step = context.get_step_execution_context()
        run = context.run
        identity = StepIdentity(
            job=context.job_name, run_id=context.run_id, root_run_id=run.root_run_id or run.run_id,
            step_key=step.step.key, attempt=context.retry_number + 1,
            partition_key=context.partition_key if context.has_partition_key else None,
            code_version=self.code_version)
        key = (identity.run_id, identity.step_key)
        existing = ACTIVE_STEPS.get(key)
        if existing is not None:
            return existing
        metrics = self.metrics_store(context.instance)
        hooked = any(h.name == HOOK_NAME for h in step.job_def.get_all_hooks_for_handle(step.node_handle))
        if not hooked:
            context.log.warning("predcheck: this step has no predcheck_hooks, so its attempts are not recorded; "
                                "add them with pc.instrument(defs) or job.with_hooks(pc.predcheck_hooks).")
        profiler = STEP_PROFILERS.get(key)  # started at STEP_START by the run's event listener
        if profiler is None:  # no listener (e.g. a direct invocation): profile from here
            # without the hooks, nothing would stop a sampler thread at the end of the step
            profiler = self.step_profiler(identity.run_id, identity.step_key,
                                          interval_s=None if hooked else 0.0, instance=context.instance).start()
            if hooked:
                STEP_PROFILERS[key] = profiler
        profiler.computing()
        profiler.input_bytes = STEP_IO_BYTES.get(key, {}).get("input")  # inputs load before compute
        plan = self.resume_plan()
        if plan is None and run.parent_run_id:
            plan = self._plan_for_retry(context)
        checkpointer = Checkpointer(identity, self.checkpoint_store(), metrics, profiler,
                                    settings=self.checkpoint_settings(),
                                    plan=plan.for_step(identity.step_key) if plan else None, log=context.log)
        if hooked:
            ACTIVE_STEPS[key] = checkpointer
        return checkpointer

    def _plan_for_retry(self, context: Any) -> ResumePlan | None:
        """A from-failure re-execution launched without a plan (run-retries daemon, UI): rebuild it."""
        from predcheck_dagster.resume_service import plan_for_retry

        try:
            return plan_for_retry(context.instance, self, context.run)
        except Exception as e:  # noqa: BLE001 - without a plan the step still restores its checkpoint
            context.log.warning(f"predcheck: could not rebuild the resume plan from the store: {e}")
            return None
