"""``instrument(defs)``: add predcheck to existing Definitions in one call."""

from __future__ import annotations

from dagster import Definitions, JobDefinition
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster_shared.record import copy as copy_record

from predcheck_dagster.hooks import predcheck_hooks
from predcheck_dagster.io_manager import CheckpointIOManager
from predcheck_dagster.resource import PredcheckResource
from predcheck_dagster.sensors import build_forecast_sensor, build_resume_sensor

RESOURCE_KEY = "predcheck"
IO_MANAGER_KEY = "predcheck_io_manager"


def instrument(defs: Definitions, predcheck: PredcheckResource | None = None,
               io_manager: CheckpointIOManager | None = None, sensors: bool = True,
               forecast_interval_s: int = 5, resume_interval_s: int = 5) -> Definitions:
    """Return ``defs`` with predcheck's hooks on every job, its resource and IO manager, and sensors.

    The user's own ``io_manager`` is left alone; the checkpoint IO manager is added under
    ``predcheck_io_manager`` for outputs that opt in (``Out(io_manager_key="predcheck_io_manager")``).
    """
    jobs = [_with_hooks(job) for job in (defs.jobs or [])]
    resources = {RESOURCE_KEY: predcheck or PredcheckResource(),
                 IO_MANAGER_KEY: io_manager or CheckpointIOManager(), **dict(defs.resources or {})}
    extra_sensors = [build_forecast_sensor(minimum_interval_seconds=forecast_interval_s),
                     build_resume_sensor(minimum_interval_seconds=resume_interval_s)] if sensors else []
    return Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, schedules=defs.schedules,
        sensors=[*(defs.sensors or []), *extra_sensors], jobs=jobs, resources=resources,
        executor=defs.executor, loggers=defs.loggers, metadata=defs.metadata)


def _with_hooks(job: JobDefinition | UnresolvedAssetJobDefinition):
    if isinstance(job, JobDefinition):
        return job.with_hooks(predcheck_hooks)
    if isinstance(job, UnresolvedAssetJobDefinition):
        return copy_record(job, hooks=set(job.hooks or ()) | predcheck_hooks)
    return job
