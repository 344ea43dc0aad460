"""The forecaster as Dagster assets: step_history -> (checks) -> forecaster_candidates -> champion_model.

``step_history`` reads the finished step attempts of the metrics store; blocking
great-expectations checks on it (``data_checks``) stop training on bad data in the same run;
``forecaster_candidates`` trains XGBoost and the LSTM and logs each to MLflow;
``champion_model`` registers the best and moves the alias ``champion`` only when it beats the
current champion on the later, held-out period. ``build_retrain_sensor`` launches the training
job when enough new history has accumulated since the last ``step_history`` materialisation.
"""

from collections.abc import Sequence
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    DefaultSensorStatus,
    MaterializeResult,
    MetadataValue,
    Output,
    RunRequest,
    SensorEvaluationContext,
    SkipReason,
    asset,
    sensor,
)

from predcheck_dagster.data_checks import build_step_history_checks
from predcheck_dagster.metrics_store import redact_url
from predcheck_dagster.resource import (
    DEFAULT_MODEL_NAME,
    PredcheckResource,
    default_artifact_root,
    default_tracking_uri,
)

STEP_HISTORY = "step_history"
CANDIDATES = "forecaster_candidates"
CHAMPION = "champion_model"
RETRAIN_SENSOR_NAME = "predcheck_retrain_sensor"
DEFAULT_RETRAIN_AFTER = 200  # new finished step attempts since the last training


def _metrics_table(candidates: Sequence[dict[str, Any]]) -> str:
    names = ("auroc", "auprc", "brier", "ece")
    lines = ["| family | " + " | ".join(f"holdout {n}" for n in names) + " | MLflow run |",
             "|---|" + "---|" * (len(names) + 1)]
    for c in candidates:
        cells = [f"{c[f'holdout_{n}']:.3f}" if f"holdout_{n}" in c else "n/a" for n in names]
        lines.append(f"| {c['family']} | " + " | ".join(cells) + f" | `{c['run_id']}` |")
    return "\n".join(lines)


def _holdout_plots(labels: Any, candidates: Sequence[Any]) -> str | None:
    """The candidates' PR curves and calibration on the holdout period, as markdown with the PNGs
    inline (the Dagster UI shows them in the materialization's metadata); None with one class."""
    import base64
    import os
    import tempfile

    from predcheck_dagster.plots import plot_calibration, plot_pr_curves

    if not candidates or not 0 < labels.sum() < len(labels):
        return None
    scores = {c.family: c.holdout_probabilities for c in candidates}
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        for plot in (plot_pr_curves, plot_calibration):
            path = plot(labels, scores, os.path.join(tmp, f"{plot.__name__}.png"), "candidates on the holdout period")
            with open(path, "rb") as f:
                parts.append(f"![{plot.__name__}](data:image/png;base64,{base64.b64encode(f.read()).decode()})")
    return "\n\n".join(parts)


def build_forecaster_assets(model_code_path: str, model_name: str = DEFAULT_MODEL_NAME,
                            group_name: str = "predcheck",
                            families: Sequence[str] = ("xgboost", "lstm")) -> list[Any]:
    """The training assets and the blocking checks on their input.

    Args:
        model_code_path: the models-from-code file that sets the pyfunc (``mlflow_models/forecaster.py``).
        model_name: the registered model whose alias ``champion`` the sensor serves.
        families: model families to train as candidates.
    """

    @asset(name=STEP_HISTORY, group_name=group_name, compute_kind="sql",
           description="Finished step attempts of the predcheck metrics store: the forecaster's training data.")
    def step_history(context: AssetExecutionContext, predcheck: PredcheckResource) -> Output:
        from predcheck_dagster.forecaster import history_frame

        store = predcheck.metrics_store(context.instance)
        frame = history_frame(store)
        failed = frame["outcome"].isin(["failure", "crashed", "timeout"]) if len(frame) else frame["outcome"]
        return Output(frame, metadata={
            "attempts": len(frame), "failure_rate": round(float(failed.mean()), 4) if len(frame) else 0.0,
            "jobs": int(frame["job"].nunique()) if len(frame) else 0,
            "steps": int(frame[["job", "step_key"]].drop_duplicates().shape[0]) if len(frame) else 0,
            "store": redact_url(store.url)})

    @asset(name=CANDIDATES, group_name=group_name, compute_kind="mlflow",
           description="XGBoost and LSTM forecasters trained on all but the newest 25 % of the step history, "
           "each logged as an MLflow run with holdout AUROC/AUPRC/Brier/ECE and PR and calibration plots.")
    def forecaster_candidates(context: AssetExecutionContext, predcheck: PredcheckResource,
                              step_history) -> Output:
        from predcheck_dagster.forecaster import train_candidates, training_set

        store = predcheck.metrics_store(context.instance)
        tset = training_set(step_history, store.all_samples(), redact_url(store.url))
        context.log.info(f"training {', '.join(families)} on {len(tset.data.frame)} rows; "
                         f"holdout {len(tset.holdout_frame)} rows")
        candidates = train_candidates(tset, predcheck.tracking_uri or default_tracking_uri(), default_artifact_root(),
                                      model_code_path, families, log=context.log)
        summary = [{"family": c.family, "run_id": c.run_id, "model_uri": c.model_uri,
                    **{f"holdout_{k}": v for k, v in c.metrics.items()}} for c in candidates]
        plots = _holdout_plots(tset.holdout_failed, candidates)
        return Output({"candidates": candidates, "training_set": tset}, metadata={
            "candidates": MetadataValue.md(_metrics_table(summary)),
            **({"holdout_plots": MetadataValue.md(plots)} if plots else {}),
            "train_rows": len(tset.data.frame), "holdout_rows": len(tset.holdout_frame),
            **{f"{c.family}_mlflow_run_id": c.run_id for c in candidates}})

    @asset(name=CHAMPION, group_name=group_name, compute_kind="mlflow",
           description="Registers the best candidate in the MLflow registry; the alias `champion` moves to it "
           "only when it beats the current champion on the newest, held-out period.")
    def champion_model(context: AssetExecutionContext, predcheck: PredcheckResource,
                       forecaster_candidates) -> MaterializeResult:
        from predcheck_dagster.forecaster import choose_champion

        result = choose_champion(forecaster_candidates["candidates"], forecaster_candidates["training_set"],
                                 predcheck.tracking_uri or default_tracking_uri(), model_name, log=context.log)
        return MaterializeResult(metadata={
            "model_name": model_name, "model_version": result.model_version, "family": result.family,
            "promoted": result.promoted, "decision": MetadataValue.text(result.reason),
            "mlflow_run_id": result.run_id, **{f"holdout_{k}": round(v, 4) for k, v in result.metrics.items()}})

    checks = build_step_history_checks(step_history)
    return [step_history, *checks, forecaster_candidates, champion_model]


def build_retrain_sensor(job_name: str, retrain_after: int = DEFAULT_RETRAIN_AFTER,
                         minimum_interval_seconds: int = 600,
                         default_status: DefaultSensorStatus = DefaultSensorStatus.RUNNING):
    """A sensor that launches ``job_name`` when ``retrain_after`` new finished attempts have accumulated.

    "New" counts attempts in the metrics store beyond the ``attempts`` recorded by the latest
    ``step_history`` materialisation (0 when it never ran), so it needs no cursor of its own.
    """

    @sensor(name=RETRAIN_SENSOR_NAME, job_name=job_name, minimum_interval_seconds=minimum_interval_seconds,
            default_status=default_status,
            description=f"predcheck: retrain the forecaster once {retrain_after} new step attempts have finished.")
    def _retrain_sensor(context: SensorEvaluationContext, predcheck: PredcheckResource):
        finished = predcheck.metrics_store(context.instance).count_finished_attempts()
        event = context.instance.get_latest_materialization_event(AssetKey(STEP_HISTORY))
        trained_on = 0
        if event is not None and event.asset_materialization is not None:
            value = event.asset_materialization.metadata.get("attempts")
            trained_on = int(value.value) if value is not None else 0
        new = finished - trained_on
        if new < retrain_after:
            return SkipReason(f"{new} new finished step attempts since the last training "
                              f"({trained_on}); retraining at {retrain_after}")
        return RunRequest(run_key=f"retrain-{finished}",
                          tags={"predcheck/retrain_reason": f"{new} new attempts since {trained_on}"})

    return _retrain_sensor
