"""The forecaster: train XGBoost on the metrics store, register it in MLflow, serve the champion.

Heavy imports (mlflow, xgboost, pandas, sklearn) happen inside the functions that need them: this
module is imported by the sensor and the training asset, never by the step side.

The registered model is an MLflow pyfunc built *from code* (``mlflow_models/forecaster.py`` sets
``ForecasterPyfunc``); its artifacts are two XGBoost boosters in JSON (failure classifier and
remaining-time regressor) and the feature list.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from predcheck_dagster.errors import RegistryUnavailableError, TrainingDataError
from predcheck_dagster.features import FEATURE_NAMES, training_rows
from predcheck_dagster.metrics_store import MetricsStore

LOG = logging.getLogger("predcheck.forecaster")
EXPERIMENT_NAME = "predcheck-forecaster"
MIN_TRAINING_ATTEMPTS = 8
HOLDOUT_FRACTION = 0.25
CHAMPION_ALIAS = "champion"
XGB_PARAMS = {"n_estimators": 150, "max_depth": 4, "learning_rate": 0.1, "subsample": 0.9,
              "min_child_weight": 1.0, "n_jobs": 2, "tree_method": "hist"}


# ---- the pyfunc served from the registry ----------------------------------------------------------
def make_pyfunc_class() -> type:
    """The pyfunc class; built on demand so importing this module does not import mlflow."""
    import mlflow.pyfunc

    class ForecasterPyfunc(mlflow.pyfunc.PythonModel):
        """Heavy work in ``load_context`` (boosters), a light ``predict``."""

        def load_context(self, context: Any) -> None:
            import xgboost as xgb

            self.classifier = xgb.Booster()
            self.classifier.load_model(context.artifacts["classifier"])
            self.regressor = xgb.Booster()
            self.regressor.load_model(context.artifacts["regressor"])
            with open(context.artifacts["spec"]) as f:
                self.feature_names = json.load(f)["feature_names"]

        def predict(self, context, model_input, params=None):  # noqa: ANN001 - MLflow reads the hints
            import numpy as np
            import pandas as pd
            import xgboost as xgb

            x = np.asarray(model_input[self.feature_names], dtype=float)
            matrix = xgb.DMatrix(x, feature_names=list(self.feature_names), missing=np.nan)
            probability = self.classifier.predict(matrix)
            remaining = np.expm1(np.clip(self.regressor.predict(matrix), 0, 20))
            return pd.DataFrame({"failure_probability": probability, "predicted_remaining_s": remaining})

    return ForecasterPyfunc


# ---- heuristic fallback ---------------------------------------------------------------------------
def heuristic_predict(rows: Sequence[Mapping[str, float]]) -> list[tuple[float, float]]:
    """(failure probability, remaining seconds) from history alone: serves when no model does.

    Probability: the smoothed failure rate of the (job, step), raised when the attempt has run past
    its 90th-percentile duration. Remaining: the median duration minus elapsed, at least 10 % of it.
    """
    out = []
    for r in rows:
        p = r["hist_fail_rate"]
        p90 = r["hist_duration_p90"]
        if p90 == p90 and p90 > 0 and r["elapsed_s"] > p90:
            p = 1 - (1 - p) * 0.5
        p50 = r["hist_duration_p50"]
        remaining = max(p50 - r["elapsed_s"], 0.1 * p50) if p50 == p50 else math.nan
        out.append((min(max(p, 0.0), 1.0), remaining))
    return out


# ---- training -------------------------------------------------------------------------------------
@dataclass
class TrainingResult:
    run_id: str
    model_version: str | None
    promoted: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    n_attempts: int = 0
    n_rows: int = 0


def _classification_metrics(labels: Sequence[int], probs: Sequence[float]) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    metrics = {"brier": float(brier_score_loss(labels, probs))}
    if 0 < sum(labels) < len(labels):
        metrics["auroc"] = float(roc_auc_score(labels, probs))
        metrics["auprc"] = float(average_precision_score(labels, probs))
    return metrics


def _fit(rows: list[dict[str, float]], labels: list[int], remaining: list[float]) -> tuple[Any, Any]:
    import numpy as np
    import xgboost as xgb

    x = np.array([[r[n] for n in FEATURE_NAMES] for r in rows], dtype=float)
    classifier = xgb.XGBClassifier(objective="binary:logistic", eval_metric="logloss", **XGB_PARAMS)
    classifier.fit(x, np.array(labels))
    regressor = xgb.XGBRegressor(objective="reg:squarederror", **XGB_PARAMS)
    regressor.fit(x, np.log1p(np.array(remaining)))
    return classifier, regressor


def _predict_proba(classifier: Any, rows: list[dict[str, float]]) -> list[float]:
    import numpy as np

    x = np.array([[r[n] for n in FEATURE_NAMES] for r in rows], dtype=float)
    return [float(p) for p in classifier.predict_proba(x)[:, 1]]


def _ensure_experiment(client: Any, artifact_root: str) -> str:
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(EXPERIMENT_NAME, artifact_location=artifact_root)


def _probe_http(tracking_uri: str, timeout_s: float = 3.0) -> None:
    """Fail fast on an unreachable tracking server (MLflow's own client retries for minutes)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout_s):
            pass
    except (urllib.error.URLError, OSError) as e:
        raise RegistryUnavailableError(
            f"MLflow tracking server {tracking_uri!r} is unreachable ({e}). Start it (`mlflow server`) "
            "or fix the predcheck resource's `tracking_uri`.") from e


def _connect(tracking_uri: str) -> Any:
    import mlflow
    from mlflow.tracking import MlflowClient

    if tracking_uri.startswith(("http://", "https://")):
        _probe_http(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as e:  # noqa: BLE001 - any failure here means the registry is not usable
        raise RegistryUnavailableError(
            f"MLflow tracking/registry at {tracking_uri!r} is unreachable ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}). Start it or fix the predcheck resource's "
            "`tracking_uri`.") from e
    return client


def train_and_register(store: MetricsStore, tracking_uri: str, artifact_root: str, model_name: str,
                       model_code_path: str, log: Any = None) -> TrainingResult:
    """Train on the store's history, log to MLflow, register, and move ``champion`` if better.

    The newest ``HOLDOUT_FRACTION`` of attempts (by start time) is held out. A new version becomes
    champion when there is none, or when its AUPRC on that later, unseen period is at least the
    current champion's on the same rows.
    """
    import mlflow

    log = log or LOG
    attempts = [a for a in store.step_runs() if a["outcome"] in ("success", "failure", "crashed", "timeout")]
    if len(attempts) < MIN_TRAINING_ATTEMPTS:
        raise TrainingDataError(f"only {len(attempts)} finished step attempts in {store.url!r}; need "
                                f"{MIN_TRAINING_ATTEMPTS}: run the pipelines more (e.g. `predcheck demo --headless`).")
    rows, labels, times, remaining = training_rows(attempts, store.all_samples())
    if not 0 < sum(labels) < len(labels):
        raise TrainingDataError(f"the history in {store.url!r} has only one outcome "
                                f"({sum(labels)} failing rows of {len(labels)}): a forecaster needs both.")
    cut = sorted(times)[int(len(times) * (1 - HOLDOUT_FRACTION))]
    train_idx = [i for i, t in enumerate(times) if t < cut]
    test_idx = [i for i, t in enumerate(times) if t >= cut]
    pick = lambda seq, idx: [seq[i] for i in idx]  # noqa: E731
    if 0 < sum(pick(labels, train_idx)) < len(train_idx):
        classifier, _ = _fit(pick(rows, train_idx), pick(labels, train_idx), pick(remaining, train_idx))
        metrics = _classification_metrics(pick(labels, test_idx), _predict_proba(classifier, pick(rows, test_idx)))
    else:
        metrics = {}
    log.info(f"predcheck: training on {len(attempts)} attempts ({len(rows)} rows); holdout {metrics}")
    classifier, regressor = _fit(rows, labels, remaining)

    client = _connect(tracking_uri)
    experiment_id = _ensure_experiment(client, artifact_root)
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(experiment_id=experiment_id,
                                                                run_name=f"xgboost-{int(time.time())}") as run:
        paths = {"classifier": os.path.join(tmp, "classifier.json"),
                 "regressor": os.path.join(tmp, "regressor.json"), "spec": os.path.join(tmp, "spec.json")}
        classifier.get_booster().save_model(paths["classifier"])
        regressor.get_booster().save_model(paths["regressor"])
        with open(paths["spec"], "w") as f:
            json.dump({"feature_names": list(FEATURE_NAMES)}, f)
        mlflow.log_params({**XGB_PARAMS, "family": "xgboost", "n_attempts": len(attempts), "n_rows": len(rows),
                           "holdout_fraction": HOLDOUT_FRACTION})
        mlflow.log_metrics({f"holdout_{k}": v for k, v in metrics.items()})
        import pandas as pd

        example = pd.DataFrame([rows[0]])[list(FEATURE_NAMES)]
        model_info = mlflow.pyfunc.log_model(
            name="model", python_model=model_code_path, artifacts=paths, input_example=example,
            pip_requirements=_pip_requirements())
        run_id = run.info.run_id
    version = str(mlflow.register_model(model_info.model_uri, model_name).version)
    promoted, reason = _promotion_decision(client, model_name, rows, labels, test_idx, metrics)
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)
    client.update_model_version(model_name, version, description=reason)
    log.info(f"predcheck: registered {model_name} v{version}; {reason}")
    return TrainingResult(run_id=run_id, model_version=str(version), promoted=promoted, reason=reason,
                          metrics=metrics, n_attempts=len(attempts), n_rows=len(rows))


def _promotion_decision(client: Any, model_name: str, rows: list[dict[str, float]], labels: list[int],
                        test_idx: list[int], metrics: Mapping[str, float]) -> tuple[bool, str]:
    try:
        current = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except Exception:  # noqa: BLE001 - MLflow raises a generic error for a missing alias
        return True, "promoted to champion: no champion existed"
    new_auprc = metrics.get("auprc")
    if new_auprc is None:
        return False, f"kept champion v{current.version}: the holdout period has one class only"
    import mlflow
    import pandas as pd

    champion = mlflow.pyfunc.load_model(f"models:/{model_name}/{current.version}")
    test_rows = pd.DataFrame([rows[i] for i in test_idx])[list(FEATURE_NAMES)]
    probs = list(champion.predict(test_rows)["failure_probability"])
    old = _classification_metrics([labels[i] for i in test_idx], probs).get("auprc", 0.0)
    if new_auprc >= old:
        return True, f"promoted: holdout AUPRC {new_auprc:.3f} >= champion v{current.version}'s {old:.3f}"
    return False, f"not promoted: holdout AUPRC {new_auprc:.3f} < champion v{current.version}'s {old:.3f}"


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("mlflow", "xgboost", "pandas", "numpy")]


# ---- serving --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scores:
    failure_probability: list[float]
    predicted_remaining_s: list[float]
    served_by: str  # model | heuristic
    model_uri: str | None
    model_version: str | None
    note: str = ""


_MODEL_CACHE: dict[tuple[str, str, str], Any] = {}
_CACHE_LOCK = threading.Lock()


def _resolve_version(client: Any, model_uri: str) -> tuple[str, str]:
    """(name, version) of a ``models:/name@alias`` or ``models:/name/version`` URI."""
    if not model_uri.startswith("models:/"):
        raise ValueError(f"model_uri {model_uri!r} must look like models:/<name>@<alias> or models:/<name>/<version>")
    rest = model_uri[len("models:/"):]
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, str(client.get_model_version_by_alias(name, alias).version)
    name, version = rest.rsplit("/", 1)
    return name, version


def _cached_model(client: Any, tracking_uri: str, model_uri: str) -> tuple[Any, str]:
    """The model ``model_uri`` resolves to now, loaded once per process per version."""
    import mlflow

    name, version = _resolve_version(client, model_uri)
    key = (tracking_uri, name, version)
    with _CACHE_LOCK:
        model = _MODEL_CACHE.get(key)
        if model is None:
            model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
            _MODEL_CACHE[key] = model
    return model, version


def warm_model(tracking_uri: str, model_uri: str) -> str | None:
    """Load the model into this process's cache ahead of the first tick; its version or None."""
    try:
        return _cached_model(_connect(tracking_uri), tracking_uri, model_uri)[1]
    except Exception as e:  # noqa: BLE001 - warming is best effort; the tick reports the real error
        LOG.warning("predcheck: could not warm %r: %s", model_uri, e)
        return None


def score(rows: Sequence[Mapping[str, float]], tracking_uri: str, model_uri: str) -> Scores:
    """Score feature rows with the registered model (cached per version), else the heuristic."""
    if not rows:
        return Scores([], [], "none", None, None)
    try:
        import pandas as pd

        model, version = _cached_model(_connect(tracking_uri), tracking_uri, model_uri)
        frame = pd.DataFrame(list(rows))[list(FEATURE_NAMES)]
        out = model.predict(frame)
        return Scores([float(p) for p in out["failure_probability"]],
                      [float(r) for r in out["predicted_remaining_s"]], "model", model_uri, version)
    except Exception as e:  # noqa: BLE001 - any registry/model failure falls back, and says so
        first_line = str(e).splitlines()[0] if str(e) else ""
        note = f"model {model_uri!r} unavailable ({type(e).__name__}: {first_line}); heuristic served"
        pairs = heuristic_predict(rows)
        return Scores([p for p, _ in pairs], [r for _, r in pairs], "heuristic", None, None, note)
