"""The predcheck sensors of this code location: forecast and resume every 5 s, retrain on new history."""

import predcheck_dagster as pc
from predcheck_dagster.training import build_retrain_sensor

forecast_sensor = pc.build_forecast_sensor(minimum_interval_seconds=5)
resume_sensor = pc.build_resume_sensor(minimum_interval_seconds=5)

# retrain once 200 new step attempts have finished since the last training
retrain_sensor = build_retrain_sensor("train_forecaster")
