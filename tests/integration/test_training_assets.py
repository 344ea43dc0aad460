"""The training assets on a real instance: step_history -> great-expectations checks ->
forecaster_candidates -> champion_model, registering in a real MLflow; bad history blocks
training in the same run; the retrain sensor asks for training when enough new history arrived."""

from __future__ import annotations

from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, RunRequest, SkipReason, build_sensor_context, materialize

import predcheck_dagster as pc
from predcheck_dagster.training import build_forecaster_assets, build_retrain_sensor

from .test_forecaster_mlflow import MODEL_CODE, _synthetic_history

pytestmark = pytest.mark.slow


def _resource(tmp_path: Path) -> pc.PredcheckResource:
    return pc.PredcheckResource(store_url=f"sqlite:///{tmp_path}/metrics.db",
                                tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")


def test_training_assets_register_a_champion_with_the_decision_as_metadata(dagster_home, tmp_path) -> None:
    predcheck = _resource(tmp_path)
    _synthetic_history(predcheck.metrics_store())
    # one family keeps this test short; both families are trained in test_forecaster_mlflow
    assets = build_forecaster_assets(MODEL_CODE, model_name="asset-forecaster", families=("xgboost",))
    with DagsterInstance.get() as instance:
        result = materialize(assets, instance=instance, resources={"predcheck": predcheck})
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert sorted(c.check_name for c in checks) == ["history_label_rate", "history_not_null", "history_ranges",
                                                        "history_timestamp_order"]
        assert all(c.passed for c in checks)
        history = instance.get_latest_materialization_event(AssetKey("step_history")).asset_materialization
        assert history.metadata["attempts"].value == 80
        champion = instance.get_latest_materialization_event(AssetKey("champion_model")).asset_materialization
        assert champion.metadata["promoted"].value is True
        assert champion.metadata["decision"].value == "promoted xgboost v1: no champion existed"
        candidates = instance.get_latest_materialization_event(
            AssetKey("forecaster_candidates")).asset_materialization
        assert "| xgboost |" in candidates.metadata["candidates"].value
        plots = candidates.metadata["holdout_plots"].value  # shown in the UI with the materialization
        assert plots.count("](data:image/png;base64,") == 2

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=predcheck.tracking_uri, registry_uri=predcheck.tracking_uri)
    version = client.get_model_version_by_alias("asset-forecaster", "champion")
    assert str(version.version) == "1" and version.tags["family"] == "xgboost"


def test_bad_history_fails_its_check_and_blocks_training(dagster_home, tmp_path) -> None:
    predcheck = _resource(tmp_path)
    store = predcheck.metrics_store()
    for i in range(12):  # only successes: nothing to learn a failure from
        store.record_step_run({"run_id": f"r{i}", "root_run_id": f"r{i}", "job": "j", "step_key": "s",
                               "attempt": 1, "started_at": 1_700_000_000.0 + i, "ended_at": 1_700_000_000.5 + i,
                               "duration_s": 0.5, "outcome": "success"})
    assets = build_forecaster_assets(MODEL_CODE, model_name="blocked-forecaster", families=("xgboost",))
    with DagsterInstance.get() as instance:
        result = materialize(assets, instance=instance, resources={"predcheck": predcheck}, raise_on_error=False)
        assert not result.success
        failed = [c for c in result.get_asset_check_evaluations() if not c.passed]
        assert [c.check_name for c in failed] == ["history_label_rate"]
        assert instance.get_latest_materialization_event(AssetKey("step_history")) is not None
        for blocked in ("forecaster_candidates", "champion_model"):
            assert instance.get_latest_materialization_event(AssetKey(blocked)) is None, blocked
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=predcheck.tracking_uri, registry_uri=predcheck.tracking_uri)
    assert client.search_registered_models() == []


def test_retrain_sensor_waits_for_enough_new_history(dagster_home, tmp_path) -> None:
    predcheck = _resource(tmp_path)
    store = predcheck.metrics_store()
    _synthetic_history(store, n=30)
    sensor = build_retrain_sensor("train_forecaster", retrain_after=25)
    with DagsterInstance.get() as instance:
        # never trained: 30 attempts >= 25
        with build_sensor_context(instance=instance, resources={"predcheck": predcheck}) as context:
            request = sensor(context)
        assert isinstance(request, RunRequest) and request.run_key == "retrain-30"
        # a training just ran on those 30 attempts: nothing new yet
        from dagster import AssetMaterialization

        instance.report_runless_asset_event(AssetMaterialization("step_history", metadata={"attempts": 30}))
        with build_sensor_context(instance=instance, resources={"predcheck": predcheck}) as context:
            skip = sensor(context)
        assert isinstance(skip, SkipReason)
        assert skip.skip_message == "0 new finished step attempts since the last training (30); retraining at 25"
