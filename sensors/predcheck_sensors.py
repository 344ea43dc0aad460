"""The predcheck sensors of this code location, ticking every 5 s."""

import predcheck_dagster as pc

forecast_sensor = pc.build_forecast_sensor(minimum_interval_seconds=5)
resume_sensor = pc.build_resume_sensor(minimum_interval_seconds=5)
