"""The forecaster as a Dagster asset: train on the metrics store, register in MLflow, promote."""


from dagster import AssetExecutionContext, AssetsDefinition, MaterializeResult, MetadataValue, asset

from predcheck_dagster.resource import (
    DEFAULT_MODEL_NAME,
    PredcheckResource,
    default_artifact_root,
    default_tracking_uri,
)


def build_forecaster_asset(model_code_path: str, model_name: str = DEFAULT_MODEL_NAME,
                           group_name: str = "predcheck") -> AssetsDefinition:
    """An asset that trains the XGBoost forecaster and moves the ``champion`` alias when it is better.

    Args:
        model_code_path: the models-from-code file that sets the pyfunc (``mlflow_models/forecaster.py``).
    """

    @asset(name="forecaster_model", group_name=group_name, compute_kind="xgboost",
           description="XGBoost failure/remaining-time forecaster trained on step_runs and step_samples, "
           "registered in MLflow; alias `champion` moves only when it beats the current one on the "
           "newest, held-out period.")
    def _forecaster_model(context: AssetExecutionContext, predcheck: PredcheckResource) -> MaterializeResult:
        from predcheck_dagster.forecaster import train_and_register

        result = train_and_register(predcheck.metrics_store(context.instance),
                                    predcheck.tracking_uri or default_tracking_uri(),
                                    default_artifact_root(), model_name, model_code_path, log=context.log)
        return MaterializeResult(metadata={
            "model_version": result.model_version, "promoted": result.promoted,
            "decision": MetadataValue.text(result.reason), "mlflow_run_id": result.run_id,
            "n_attempts": result.n_attempts, "n_rows": result.n_rows,
            **{f"holdout_{k}": round(v, 4) for k, v in result.metrics.items()}})

    return _forecaster_model
