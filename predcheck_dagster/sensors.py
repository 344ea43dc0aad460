"""Sensor factories: the forecast sensor and the resume sensor.

Both take the ``predcheck`` resource by injection and put their reasoning in the tick's message,
so the Dagster UI's sensor page explains every decision.
"""


from dagster import DefaultSensorStatus, SensorEvaluationContext, SkipReason, sensor

from predcheck_dagster.resource import PredcheckResource

FORECAST_SENSOR_NAME = "predcheck_forecast_sensor"
RESUME_SENSOR_NAME = "predcheck_resume_sensor"


def build_forecast_sensor(name: str = FORECAST_SENSOR_NAME, minimum_interval_seconds: int = 5,
                          default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING):
    """A sensor that scores every in-flight step each tick, tags risky runs and requests checkpoints."""

    @sensor(name=name, minimum_interval_seconds=minimum_interval_seconds, default_status=default_status,
            description="predcheck: forecast failures of in-flight steps; tag risky runs "
            "(predcheck/...) and ask their steps for a checkpoint.")
    def _forecast_sensor(context: SensorEvaluationContext, predcheck: PredcheckResource) -> SkipReason:
        from predcheck_dagster.forecast_service import forecast_tick

        report = forecast_tick(context.instance, predcheck)
        context.log.info(report.message())
        return SkipReason(report.message())

    return _forecast_sensor


def build_resume_sensor(name: str = RESUME_SENSOR_NAME, minimum_interval_seconds: int = 5,
                        default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING):
    """A sensor that re-executes failed runs FROM_FAILURE from their checkpoints, with the plan."""

    @sensor(name=name, minimum_interval_seconds=minimum_interval_seconds, default_status=default_status,
            description="predcheck: reconcile crashed steps and resume failed runs from their "
            "checkpoints (re-execution from failure, with the resume plan as run config).")
    def _resume_sensor(context: SensorEvaluationContext, predcheck: PredcheckResource) -> SkipReason:
        from predcheck_dagster.resume_service import launcher_for, resume_tick

        report = resume_tick(context.instance, predcheck, launcher_for(predcheck))
        context.log.info(report.message())
        return SkipReason(report.message())

    return _resume_sensor
