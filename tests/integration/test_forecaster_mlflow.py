"""The forecaster trains on a real metrics store, registers in a real MLflow (SQLite backend),
promotes ``champion`` only when it is at least as good on the held-out later period, and the
sensor's scorer serves it from a per-process cache, falling back to the heuristic when the
registry is unreachable."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from predcheck_dagster.features import MODEL_INPUT_NAMES, feature_row
from predcheck_dagster.forecaster import _MODEL_CACHE, score, train_and_register
from predcheck_dagster.metrics_store import MetricsStore

ROOT = Path(__file__).resolve().parents[2]
MODEL_CODE = str(ROOT / "mlflow_models" / "forecaster.py")
MB = 1024 * 1024


def _synthetic_history(store: MetricsStore, n: int = 80, seed: int = 0) -> None:
    """Attempts of one step whose failures follow big inputs (as the demo's preemptible step)."""
    rng = random.Random(seed)
    t = 1_700_000_000.0
    for i in range(n):
        big = rng.random() < 0.35
        input_bytes = rng.randint(300, 500) if big else rng.randint(80, 200)
        failed = big and rng.random() < 0.9
        duration = input_bytes / 100
        run_id = f"run-{i}"
        samples = [{"run_id": run_id, "step_key": "crunch", "ts": t + k * 0.5, "elapsed_s": k * 0.5,
                    "cpu_s": k * 0.05, "rss_bytes": 100 * MB + k * MB, "work_units": k * 10.0,
                    "input_bytes": input_bytes, "stage": "crunch"} for k in range(int(duration / 0.5))]
        store.add_samples(samples)
        store.record_step_run({
            "run_id": run_id, "root_run_id": run_id, "job": "etl", "step_key": "crunch", "attempt": 1,
            "started_at": t, "ended_at": t + duration, "duration_s": duration,
            "outcome": "crashed" if failed else "success", "input_bytes": None if failed else input_bytes,
            "peak_rss_bytes": 120 * MB, "work_units": duration * 20, "measured_by": "profiler"})
        t += duration + 5


def test_train_register_promote_and_serve(tmp_path: Path) -> None:
    store = MetricsStore(f"sqlite:///{tmp_path}/metrics.db")
    _synthetic_history(store)
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    artifacts = (tmp_path / "artifacts").as_uri()

    first = train_and_register(store, tracking, artifacts, "test-forecaster", MODEL_CODE)
    assert first.model_version == "1" and first.promoted
    assert first.reason == f"promoted {first.family} v1: no champion existed"
    assert first.metrics["auroc"] > 0.8
    # 80 attempts are too few to hold out a validation set: the LSTM is not trained (it would
    # overfit), XGBoost trains its compact, fixed-size form; see test_lstm_candidate_... below
    assert [c["family"] for c in first.candidates] == ["xgboost"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    for candidate in first.candidates:
        run = client.get_run(candidate["run_id"])
        assert run.data.params["family"] == candidate["family"]
        assert {"holdout_auroc", "holdout_auprc", "holdout_brier", "holdout_ece"} <= set(run.data.metrics)
        plots = {a.path for a in client.list_artifacts(candidate["run_id"], "plots")}
        assert plots == {"plots/plot_pr_curves.png", "plots/plot_calibration.png"}

    history = store.step_runs(job="etl", step_key="crunch")
    started = history[-1]["ended_at"] + 10
    sample = lambda k, size: {"elapsed_s": k * 0.5, "cpu_s": k * 0.05, "rss_bytes": 100 * MB + k * MB,  # noqa: E731
                              "work_units": k * 10.0, "input_bytes": size}
    risky = feature_row(history, started, [sample(k, 450) for k in range(2)], 0.5)
    safe = feature_row(history, started, [sample(k, 120) for k in range(2)], 0.5)
    scores = score([risky, safe], tracking, "models:/test-forecaster@champion")
    assert scores.served_by == "model" and scores.model_version == "1"
    # half a second in, only the input size tells them apart: the big one is the risky one
    assert scores.failure_probability[0] > 0.5
    assert scores.failure_probability[0] > scores.failure_probability[1] + 0.1
    assert all(r >= 0 for r in scores.predicted_remaining_s)
    assert any(key[1:] == ("test-forecaster", "1") for key in _MODEL_CACHE)  # loaded once, cached by version

    # each family, served through the same pyfunc signature, ranks the risky row first
    import mlflow.pyfunc
    import pandas as pd

    frame = pd.DataFrame([risky, safe])[list(MODEL_INPUT_NAMES)]
    # the sensor's path (the matrix straight into the cached forecaster) serves what MLflow's generic
    # pyfunc predict (a DataFrame, its schema enforced) serves
    served = mlflow.pyfunc.load_model(f"models:/test-forecaster/{scores.model_version}").predict(frame)
    assert scores.failure_probability == pytest.approx(served["failure_probability"].tolist(), rel=1e-5)
    assert scores.predicted_remaining_s == pytest.approx(served["predicted_remaining_s"].tolist(), rel=1e-5)
    for candidate in first.candidates:
        out = mlflow.pyfunc.load_model(candidate["model_uri"]).predict(frame)
        assert list(out.columns) == ["failure_probability", "overrun_probability", "remaining_s_p50",
                                     "remaining_s_p90", "predicted_remaining_s"]
        assert out["failure_probability"][0] > out["failure_probability"][1] + 0.1, candidate["family"]
        assert (out["remaining_s_p90"] >= out["remaining_s_p50"]).all()

    second = train_and_register(store, tracking, artifacts, "test-forecaster", MODEL_CODE)
    assert second.model_version == "2"
    # the same data: the candidate can tie the champion, never beat it by chance alone
    assert second.reason.startswith("promoted" if second.promoted else "kept champion v1: candidate")
    assert "holdout AUPRC" in second.reason

    champion = client.get_model_version_by_alias("test-forecaster", "champion")
    assert str(champion.version) == ("2" if second.promoted else "1")
    assert client.get_model_version("test-forecaster", "2").description == second.reason
    assert set(risky) == set(MODEL_INPUT_NAMES)


def test_unreachable_registry_falls_back_to_the_heuristic_and_says_so(tmp_path: Path) -> None:
    store = MetricsStore(f"sqlite:///{tmp_path}/metrics.db")
    _synthetic_history(store, n=10)
    history = store.step_runs()
    row = feature_row(history, history[-1]["ended_at"] + 1, [], 0.0)
    scores = score([row], "http://127.0.0.1:9", "models:/test-forecaster@champion")
    assert scores.served_by == "heuristic" and scores.model_version is None
    assert "MLflow tracking server 'http://127.0.0.1:9' is unreachable" in scores.note
    assert scores.failure_probability[0] == pytest.approx(row["hist_fail_rate"])


def test_training_refuses_history_with_one_outcome(tmp_path: Path) -> None:
    from predcheck_dagster.errors import TrainingDataError

    store = MetricsStore(f"sqlite:///{tmp_path}/metrics.db")
    for i in range(10):
        store.record_step_run({"run_id": f"r{i}", "root_run_id": f"r{i}", "job": "j", "step_key": "s",
                               "attempt": 1, "started_at": i, "ended_at": i + 0.5, "duration_s": 0.5,
                               "outcome": "success"})
    with pytest.raises(TrainingDataError, match=r"has 0 failing rows of \d+: a forecaster needs both outcomes"):
        train_and_register(store, f"sqlite:///{tmp_path}/mlflow.db", tmp_path.as_uri(), "m", MODEL_CODE)


def test_lstm_candidate_is_logged_and_served_through_the_same_pyfunc(tmp_path: Path) -> None:
    """With enough history to validate on, the LSTM trains, is logged with its plots, and serves
    the same columns through the same models-from-code pyfunc as XGBoost."""
    import mlflow.pyfunc
    import numpy as np

    from predcheck_dagster.forecaster import TrainingSet, forecast_matrix, train_candidates
    from tests.unit.test_models import synthetic

    data, holdout, labels = synthetic(3000)
    tset = TrainingSet(data, data, holdout, labels, n_attempts=3000, n_rows=3000, holdout_from=0.0)
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    (candidate,) = train_candidates(tset, tracking, (tmp_path / "artifacts").as_uri(), MODEL_CODE, families=("lstm",))
    assert candidate.family == "lstm" and candidate.metrics["auroc"] > 0.75
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking)
    assert {a.path for a in client.list_artifacts(candidate.run_id, "plots")} == {
        "plots/plot_pr_curves.png", "plots/plot_calibration.png"}
    model = mlflow.pyfunc.load_model(candidate.model_uri)
    out = model.predict(holdout[list(MODEL_INPUT_NAMES)])
    fast = forecast_matrix(model.unwrap_python_model().forecaster, holdout[list(MODEL_INPUT_NAMES)].to_numpy(),
                           MODEL_INPUT_NAMES)  # the sensor's path: no DataFrame
    np.testing.assert_allclose(fast["failure_probability"], out["failure_probability"].to_numpy(), rtol=1e-5)
    assert list(out.columns) == ["failure_probability", "overrun_probability", "remaining_s_p50",
                                 "remaining_s_p90", "predicted_remaining_s"]
    np.testing.assert_allclose(out["failure_probability"].to_numpy(), candidate.holdout_probabilities, atol=0.05)
