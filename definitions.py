"""The shipped code location: the demo pipelines, instrumented with predcheck.

Loaded by ``dagster dev -w workspace.yaml`` with this folder as working directory.
"""

import os

from dagster import AssetSelection, Definitions, define_asset_job

import predcheck_dagster as pc
from assets.forecaster import forecaster_assets
from io_managers.checkpoints import checkpoint_io_manager
from predcheck_dagster.demo.pipelines import DEMO_JOBS
from sensors.predcheck_sensors import forecast_sensor, resume_sensor, retrain_sensor

predcheck = pc.PredcheckResource(
    store_url=os.environ.get("PREDCHECK_STORE_URL"),
    tracking_uri=os.environ.get("PREDCHECK_TRACKING_URI"),
    checkpoint_root=os.environ.get("PREDCHECK_CHECKPOINT_ROOT"),
    webserver_url=os.environ.get("PREDCHECK_WEBSERVER_URL", pc.resource.DEFAULT_WEBSERVER_URL),
    sample_interval_s=0.5,
)

# the history, its blocking great-expectations checks, both candidate families and the champion gate
train_forecaster_job = define_asset_job("train_forecaster", selection=AssetSelection.groups("predcheck"))

defs = pc.instrument(
    Definitions(jobs=[*DEMO_JOBS, train_forecaster_job], assets=forecaster_assets,
                sensors=[forecast_sensor, resume_sensor, retrain_sensor]),
    predcheck=predcheck, io_manager=checkpoint_io_manager, sensors=False,
)
