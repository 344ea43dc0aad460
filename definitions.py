"""The shipped code location: the demo pipelines, instrumented with predcheck.

Loaded by ``dagster dev -w workspace.yaml`` with this folder as working directory.
"""

import os

from dagster import Definitions, define_asset_job

import predcheck_dagster as pc
from assets.forecaster import forecaster_model
from io_managers.checkpoints import checkpoint_io_manager
from predcheck_dagster.demo.pipelines import DEMO_JOBS
from sensors.predcheck_sensors import forecast_sensor, resume_sensor

predcheck = pc.PredcheckResource(
    store_url=os.environ.get("PREDCHECK_STORE_URL"),
    tracking_uri=os.environ.get("PREDCHECK_TRACKING_URI"),
    checkpoint_root=os.environ.get("PREDCHECK_CHECKPOINT_ROOT"),
    webserver_url=os.environ.get("PREDCHECK_WEBSERVER_URL", pc.resource.DEFAULT_WEBSERVER_URL),
    sample_interval_s=0.5,
)

train_forecaster_job = define_asset_job("train_forecaster", selection=[forecaster_model])

defs = pc.instrument(
    Definitions(jobs=[*DEMO_JOBS, train_forecaster_job], assets=[forecaster_model],
                sensors=[forecast_sensor, resume_sensor]),
    predcheck=predcheck, io_manager=checkpoint_io_manager, sensors=False,
)
