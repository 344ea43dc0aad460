"""The MLflow registry over HTTP: a real ``mlflow server`` process, as in a deployment where the
sensor's daemon and the trainer reach the registry through a tracking server.

Training logs the candidate and uploads its artifacts through the server, the champion alias and
the version's reason are read back over HTTP, the sensor's scorer loads the champion through the
server; once the server is gone, scoring falls back to the heuristic and says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from predcheck_dagster import forecaster
from predcheck_dagster.features import feature_row
from predcheck_dagster.metrics_store import MetricsStore

from .test_forecaster_mlflow import MODEL_CODE, _synthetic_history
from .webserver import running_mlflow_server

pytestmark = pytest.mark.slow


def test_registry_over_http_against_an_mlflow_server(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    store = MetricsStore(f"sqlite:///{tmp_path}/metrics.db")
    _synthetic_history(store)
    history = store.step_runs()
    row = feature_row(history, history[-1]["ended_at"] + 10, [], 0.0)
    name, uri = "http-forecaster", "models:/http-forecaster@champion"
    forecaster._MODEL_CACHE.clear()
    forecaster._RESOLVED.clear()
    with running_mlflow_server(tmp_path) as url:
        result = forecaster.train_and_register(store, url, "mlflow-artifacts:/predcheck", name, MODEL_CODE)
        assert result.promoted and result.model_version == "1"

        client = MlflowClient(tracking_uri=url, registry_uri=url)
        champion = client.get_model_version_by_alias(name, "champion")
        assert champion.version == "1" and champion.description == result.reason
        run = client.get_run(result.run_id)
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # uploaded through the server
        assert {a.path for a in client.list_artifacts(result.run_id, "plots")} == {
            "plots/plot_pr_curves.png", "plots/plot_calibration.png"}
        assert any((tmp_path / "artifacts").rglob("MLmodel"))  # where the server stored them

        served = forecaster.score([row], url, uri)
        assert served.served_by == "model" and served.model_version == "1", served.note
        assert 0.0 <= served.failure_probability[0] <= 1.0

    forecaster._MODEL_CACHE.clear()  # a new sensor process: nothing cached, the server is gone
    forecaster._RESOLVED.clear()
    fallback = forecaster.score([row], url, uri)
    assert fallback.served_by == "heuristic"
    assert f"MLflow tracking server {url!r} is unreachable" in fallback.note
