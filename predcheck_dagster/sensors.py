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
        if predcheck.prometheus_port is not None:
            _publish(predcheck, report, context.instance)
        context.log.info(report.message())
        return SkipReason(report.message())

    return _forecast_sensor


def _publish(predcheck: PredcheckResource, report, instance) -> None:
    """Set the Prometheus gauges from a tick; a port that cannot be bound is a line in the tick, not a failure."""
    from predcheck_dagster.prometheus import exporter_on

    try:
        exporter = exporter_on(predcheck.prometheus_port, predcheck.prometheus_host)
    except ImportError as e:
        report.lines.append(f"Prometheus endpoint not served: {e}; install predcheck-dagster[prometheus] "
                            "(prometheus-client) in the code location's environment")
        return
    except OSError as e:
        report.lines.append(f"Prometheus endpoint {predcheck.prometheus_host}:{predcheck.prometheus_port} not "
                            f"served ({e}); fix the predcheck resource's prometheus_port or free the port")
        return
    store = predcheck.metrics_store(instance)
    # requests so far, this tick's included: counted here, so a tick without the gauges never asks
    counts = store.checkpoint_request_counts({step["run_id"] for step in report.steps})
    steps = [{**step, "checkpoints_requested": counts.get((step["run_id"], step["step_key"]), 0)}
             for step in report.steps]
    spool = store.spool
    exporter.publish(steps, report.duration_s, len(spool.files()) if spool else 0)


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
