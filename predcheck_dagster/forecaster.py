"""The forecaster: train both families on the metrics store, register in MLflow, serve the champion.

Heavy imports (mlflow, xgboost, torch, pandas, sklearn) happen inside the functions that need them:
this module is imported by the sensor and the training assets, never by the step side.

Training, as the assets ``step_history`` -> ``forecaster_candidates`` -> ``champion_model`` run it:
    1. ``history_frame``: the finished step attempts of the store (checked by great-expectations).
    2. ``train_candidates``: rows from ``features.training_rows``; the newest ``HOLDOUT_FRACTION``
       of attempts (by start) is held out; XGBoost and the LSTM train on the attempts that ended
       before it and are judged on it, then refit on every row; each is logged as an MLflow run
       (parameters, holdout AUROC/AUPRC/Brier/ECE, PR and calibration plots) with the refit model, a
       models-from-code pyfunc (``mlflow_models/forecaster.py``).
    3. ``choose_champion``: the best candidate on the holdout is registered as a new version; the
       alias ``champion`` moves to it only when its holdout score beats the current champion's on
       the same later rows (AUPRC; Brier when the holdout has one class), and the decision says
       why. The candidate never saw those rows; the champion may have (it was refit on everything
       it had): the comparison leans towards keeping the champion.
"""

from __future__ import annotations

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
from predcheck_dagster.features import MODEL_INPUT_NAMES, training_rows
from predcheck_dagster.metrics_store import MetricsStore

LOG = logging.getLogger("predcheck.forecaster")
EXPERIMENT_NAME = "predcheck-forecaster"
MIN_TRAINING_ATTEMPTS = 8
HOLDOUT_FRACTION = 0.25
CHAMPION_ALIAS = "champion"
OUTPUT_COLUMNS = ("failure_probability", "overrun_probability", "remaining_s_p50", "remaining_s_p90",
                  "predicted_remaining_s")
FAMILY_REQUIREMENTS = {"xgboost": ("xgboost",), "lstm": ("torch",)}


# ---- the pyfunc served from the registry ----------------------------------------------------------
def make_pyfunc_class() -> type:
    """The pyfunc class; built on demand so importing this module does not import mlflow."""
    import mlflow.pyfunc

    class ForecasterPyfunc(mlflow.pyfunc.PythonModel):
        """One signature for both families: heavy work in ``load_context``, a light ``predict``.

        Input: a DataFrame with ``features.MODEL_INPUT_NAMES`` (NaN = unknown). Output:
        ``failure_probability``, ``overrun_probability``, ``remaining_s_p50``, ``remaining_s_p90``
        and ``predicted_remaining_s`` (= p50).
        """

        def load_context(self, context: Any) -> None:
            from predcheck_dagster.models import load_family

            self.forecaster = load_family(context.artifacts)

        def predict(self, context, model_input, params=None):  # noqa: ANN001 - MLflow reads the hints
            return forecast_frame(self.forecaster, model_input)

    return ForecasterPyfunc


def forecast_frame(forecaster: Any, frame: Any) -> Any:
    """A family's predictions in the served columns (a target it was not trained on is NaN)."""
    import pandas as pd

    return pd.DataFrame(forecast_matrix(forecaster, frame.to_numpy(dtype="float64"), tuple(frame.columns)))


def forecast_matrix(forecaster: Any, x: Any, columns: Sequence[str]) -> dict[str, Any]:
    """``forecast_frame`` on a matrix whose columns are ``columns``: each served column as an array."""
    import numpy as np

    out = forecaster.predict_matrix(x, tuple(columns))
    served = {c: out.get(c, np.full(len(x), np.nan)) for c in OUTPUT_COLUMNS}
    served["predicted_remaining_s"] = served["remaining_s_p50"]
    return served


# ---- heuristic fallback ---------------------------------------------------------------------------
_HEURISTIC_INPUTS = ("hist_fail_rate", "hist_duration_p90", "hist_duration_p50", "elapsed_s")


def heuristic_predict(x: Any) -> tuple[list[float], list[float]]:
    """(failure probabilities, remaining seconds) of model input rows ``x`` (a matrix with
    ``MODEL_INPUT_NAMES`` columns) from history alone: serves when no model does.

    Probability: the smoothed failure rate of the (job, step), raised when the attempt has run past
    its 90th-percentile duration. Remaining: the median duration minus elapsed, at least 10 % of it.
    """
    import numpy as np

    p, p90, p50, elapsed = (x[:, MODEL_INPUT_NAMES.index(name)] for name in _HEURISTIC_INPUTS)
    with np.errstate(invalid="ignore"):
        p = np.where((p90 > 0) & (elapsed > p90), 1 - (1 - p) * 0.5, p)
        remaining = np.where(p50 == p50, np.maximum(p50 - elapsed, 0.1 * p50), np.nan)
    return np.clip(p, 0.0, 1.0).tolist(), remaining.tolist()


# ---- training -------------------------------------------------------------------------------------
@dataclass
class Candidate:
    """One trained family, logged to MLflow, with its scores on the holdout period."""

    family: str
    run_id: str
    model_uri: str
    metrics: dict[str, float]
    holdout_probabilities: list[float] = field(default_factory=list, repr=False)


@dataclass
class TrainingResult:
    run_id: str
    model_version: str | None
    promoted: bool
    reason: str
    metrics: dict[str, float] = field(default_factory=dict)
    n_attempts: int = 0
    n_rows: int = 0
    family: str = ""
    candidates: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainingSet:
    """The rows of the store's history, split into a training period and a later holdout."""

    data: Any  # models.TrainingData of the training period
    everything: Any  # models.TrainingData of every row (the registered model's refit)
    holdout_frame: Any
    holdout_failed: Any
    n_attempts: int
    n_rows: int
    holdout_from: float


def history_frame(store: MetricsStore) -> Any:
    """The finished step attempts of the store as a DataFrame (the ``step_history`` asset)."""
    import pandas as pd

    rows = [a for a in store.step_runs() if a["outcome"] in ("success", "failure", "crashed", "timeout")]
    return pd.DataFrame(rows, columns=None if rows else ["run_id", "job", "step_key", "started_at", "ended_at",
                                                         "duration_s", "outcome"])


def training_set(history: Any, samples: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]],
                 source: str = "the metrics store") -> TrainingSet:
    """Model rows of ``history``, the newest ``HOLDOUT_FRACTION`` of attempts held out."""
    import numpy as np
    import pandas as pd

    from predcheck_dagster.models import TrainingData

    # as the store returns them: unknown is None, not NaN (NaN is truthy: it would join the medians)
    attempts = history.astype(object).where(history.notna(), None).to_dict("records")
    if len(attempts) < MIN_TRAINING_ATTEMPTS:
        raise TrainingDataError(f"only {len(attempts)} finished step attempts in {source}; need "
                                f"{MIN_TRAINING_ATTEMPTS}: run the pipelines more (e.g. `predcheck demo --headless`).")
    t = training_rows(attempts, samples)
    failed = np.array(t.failed)
    starts, ends = np.array(t.started_at), np.array(t.ended_at)
    cut = float(np.quantile(np.array(sorted({a["started_at"] for a in attempts})), 1 - HOLDOUT_FRACTION))
    train, holdout = ends < cut, starts >= cut
    if not 0 < failed[train].sum() < train.sum():
        raise TrainingDataError(
            f"the history in {source} before {time.strftime('%Y-%m-%d %H:%M', time.gmtime(cut))} has "
            f"{int(failed[train].sum())} failing rows of {int(train.sum())}: a forecaster needs both outcomes "
            "in its training period; run the pipelines more.")
    frame = pd.DataFrame.from_records(t.rows).reindex(columns=list(MODEL_INPUT_NAMES))
    overran, remaining = np.array(t.overran), np.array(t.remaining_s)
    data = TrainingData(frame[train].reset_index(drop=True), {"failure": failed[train], "overrun": overran[train]},
                        starts[train], ends[train], remaining[train])
    everything = TrainingData(frame, {"failure": failed, "overrun": overran}, starts, ends, remaining)
    return TrainingSet(data, everything, frame[holdout].reset_index(drop=True), failed[holdout], len(attempts),
                       len(t.rows), cut)


def holdout_metrics(labels: Any, probabilities: Any) -> dict[str, float]:
    from predcheck_dagster.evaluation import classification_metrics

    return {k: v for k, v in classification_metrics(labels, probabilities).items() if v == v}


def train_candidates(tset: TrainingSet, tracking_uri: str, artifact_root: str, model_code_path: str,
                     families: Sequence[str] = ("xgboost", "lstm"), log: Any = None) -> list[Candidate]:
    """Train each family on the training period, log it to MLflow with its holdout scores and plots."""
    import mlflow
    import pandas as pd

    from predcheck_dagster.models import MIN_VALIDATION_ROWS, fit_family, is_small, needs_validation
    from predcheck_dagster.plots import plot_calibration, plot_pr_curves

    log = log or LOG
    client = _connect(tracking_uri)
    experiment_id = _ensure_experiment(client, artifact_root)
    candidates = []
    for family in families:
        if needs_validation(family) and is_small(tset.data):
            log.info(f"predcheck: {family} not trained: {len(tset.data.frame)} training rows are too few to hold "
                     f"out the {MIN_VALIDATION_ROWS} validation rows it needs")
            continue
        t0 = time.perf_counter()
        model = fit_family(family, tset.data, progress=log.info)
        train_s = time.perf_counter() - t0
        probabilities = forecast_frame(model, tset.holdout_frame)["failure_probability"].to_numpy()
        metrics = holdout_metrics(tset.holdout_failed, probabilities)
        log.info(f"predcheck: {family} trained in {train_s:.1f}s; holdout {metrics}")
        # judged on the holdout, it is then refit on every row, the newest included: the newest
        # attempts say most about the next ones (the registered version is this refit)
        model = fit_family(family, tset.everything, progress=log.info)
        with tempfile.TemporaryDirectory() as tmp, mlflow.start_run(
                experiment_id=experiment_id, run_name=f"{family}-{int(time.time())}") as run:
            artifacts = model.save(tmp)
            mlflow.log_params({"family": family, "n_attempts": tset.n_attempts, "n_rows": tset.n_rows,
                               "n_train_rows": len(tset.data.frame), "n_holdout_rows": len(tset.holdout_frame),
                               "holdout_fraction": HOLDOUT_FRACTION, "holdout_from": tset.holdout_from,
                               "refit_on_all_rows": True,
                               **{f"spec_{k}": v for k, v in model.spec.items()
                                  if k in ("trees", "params", "hidden", "targets")}})
            mlflow.log_metrics({**{f"holdout_{k}": v for k, v in metrics.items()}, "train_seconds": train_s})
            if 0 < tset.holdout_failed.sum() < len(tset.holdout_failed):
                for plot in (plot_pr_curves, plot_calibration):
                    path = plot(tset.holdout_failed, {family: probabilities}, os.path.join(tmp, f"{plot.__name__}.png"),
                                f"{family}: holdout period")
                    mlflow.log_artifact(path, artifact_path="plots")
            example = pd.DataFrame(tset.holdout_frame.head(1) if len(tset.holdout_frame) else tset.data.frame.head(1))
            info = mlflow.pyfunc.log_model(name="model", python_model=model_code_path, artifacts=artifacts,
                                           input_example=example, pip_requirements=_pip_requirements(family))
            candidates.append(Candidate(family, run.info.run_id, info.model_uri, metrics, list(probabilities)))
    return candidates


def _better(new: Mapping[str, float], old: Mapping[str, float]) -> tuple[bool, str]:
    """Is ``new`` better than ``old`` on the holdout? AUPRC when defined, else the Brier score."""
    if "auprc" in new and "auprc" in old:
        return new["auprc"] > old["auprc"], f"holdout AUPRC {new['auprc']:.3f} vs {old['auprc']:.3f}"
    return new["brier"] < old["brier"], f"holdout Brier {new['brier']:.4f} vs {old['brier']:.4f} (one class)"


def _clearly_better(new: Mapping[str, float], reference: Mapping[str, float]) -> bool:
    """Does ``new`` beat ``reference`` on the holdout by more than the holdout can resolve?

    Two standard errors of an AUPRC estimated from ``positives`` failures,
    ``2 * sqrt(auprc * (1 - auprc) / positives)``: on a small history (the demo's 14 held-out
    failures: 0.27) the reference family stays, on a large one (1,500: 0.02) the better one wins.
    """
    if "auprc" not in new or "auprc" not in reference:
        return _better(new, reference)[0]
    a, n = reference["auprc"], max(reference.get("positives", 1.0), 1.0)
    return new["auprc"] - a > 2 * math.sqrt(max(a * (1 - a), 1e-6) / n)


def choose_champion(candidates: Sequence[Candidate], tset: TrainingSet, tracking_uri: str, model_name: str,
                    log: Any = None) -> TrainingResult:
    """Register the best candidate; move ``champion`` only when it beats the current one on the holdout.

    The first candidate is the reference; another replaces it only when it is clearly better on
    the holdout (``_clearly_better``), not by the luck of a few held-out rows.
    """
    import mlflow

    log = log or LOG
    if not candidates:
        raise TrainingDataError("no forecaster candidate was trained: nothing to register.")
    best = candidates[0]  # the reference family (XGBoost first by default)
    for c in candidates[1:]:
        if _clearly_better(c.metrics, best.metrics):
            best = c
    client = _connect(tracking_uri)
    version = str(mlflow.register_model(best.model_uri, model_name).version)
    client.set_model_version_tag(model_name, version, "family", best.family)
    try:
        current = client.get_model_version_by_alias(model_name, CHAMPION_ALIAS)
    except Exception:  # noqa: BLE001 - MLflow raises a generic error for a missing alias
        current = None
    if current is None:
        promoted, reason = True, f"promoted {best.family} v{version}: no champion existed"
    else:
        champion = mlflow.pyfunc.load_model(f"models:/{model_name}/{current.version}")
        old = holdout_metrics(tset.holdout_failed,
                              champion.predict(tset.holdout_frame)["failure_probability"].to_numpy())
        promoted, comparison = _better(best.metrics, old)
        reason = (f"promoted {best.family} v{version}: {comparison} of champion v{current.version}" if promoted
                  else f"kept champion v{current.version}: candidate {best.family} v{version} {comparison}")
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)
    client.update_model_version(model_name, version, description=reason)
    log.info(f"predcheck: registered {model_name} v{version}; {reason}")
    return TrainingResult(run_id=best.run_id, model_version=version, promoted=promoted, reason=reason,
                          metrics=best.metrics, n_attempts=tset.n_attempts, n_rows=tset.n_rows, family=best.family,
                          candidates=[{"family": c.family, "run_id": c.run_id, "model_uri": c.model_uri,
                                       **{f"holdout_{k}": v for k, v in c.metrics.items()}} for c in candidates])


def train_and_register(store: MetricsStore, tracking_uri: str, artifact_root: str, model_name: str,
                       model_code_path: str, log: Any = None,
                       families: Sequence[str] = ("xgboost", "lstm")) -> TrainingResult:
    """The three training steps in one call (the CLI's ``predcheck train``, tests, benchmarks)."""
    tset = training_set(history_frame(store), store.all_samples(), repr(store.url))
    candidates = train_candidates(tset, tracking_uri, artifact_root, model_code_path, families, log)
    return choose_champion(candidates, tset, tracking_uri, model_name, log)


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


def _pip_requirements(family: str) -> list[str]:
    from importlib.metadata import version

    names = ("mlflow", "pandas", "numpy", "scikit-learn", *FAMILY_REQUIREMENTS[family])
    return [f"{name}=={version(name)}" for name in names]


# ---- serving --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scores:
    failure_probability: list[float]
    predicted_remaining_s: list[float]
    served_by: str  # model | heuristic
    model_uri: str | None
    model_version: str | None
    note: str = ""
    overrun_probability: list[float] = field(default_factory=list)  # empty when the heuristic served
    remaining_s_p90: list[float] = field(default_factory=list)


_MODEL_CACHE: dict[tuple[str, str, str], Any] = {}
_CACHE_LOCK = threading.Lock()
_RESOLVED: dict[tuple[str, str], tuple[str, str, float]] = {}  # (tracking, uri) -> (name, version, until)
ALIAS_TTL_S = 30.0


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


def _cached_model(tracking_uri: str, model_uri: str) -> tuple[Any, str]:
    """The model ``model_uri`` resolves to, loaded once per process per version.

    An alias is resolved again at most every ``ALIAS_TTL_S`` seconds: a newly promoted champion
    is served within that time, and a tick does not pay a registry round trip.
    """
    import mlflow

    now = time.monotonic()
    resolved = _RESOLVED.get((tracking_uri, model_uri))
    if resolved is None or resolved[2] < now:
        name, version = _resolve_version(_connect(tracking_uri), model_uri)
        _RESOLVED[(tracking_uri, model_uri)] = (name, version, now + ALIAS_TTL_S)
    else:
        name, version = resolved[0], resolved[1]
    key = (tracking_uri, name, version)
    with _CACHE_LOCK:
        model = _MODEL_CACHE.get(key)
        if model is None:
            model = mlflow.pyfunc.load_model(f"models:/{name}/{version}")
            _MODEL_CACHE[key] = model
    return model, version


def _predict(model: Any, x: Any) -> dict[str, Any]:
    """The served columns for model input ``x`` (``MODEL_INPUT_NAMES`` columns): straight through
    our pyfunc's forecaster on the matrix (no DataFrame, no per-call schema enforcement), else the
    generic pyfunc ``predict`` on a DataFrame."""
    inner = getattr(model, "unwrap_python_model", lambda: None)()
    if inner is not None and hasattr(inner, "forecaster"):
        return forecast_matrix(inner.forecaster, x, MODEL_INPUT_NAMES)
    import pandas as pd

    out = model.predict(pd.DataFrame(x.astype("float32"), columns=list(MODEL_INPUT_NAMES)))
    return {c: out[c].to_numpy() for c in out.columns}


def warm_model(tracking_uri: str, model_uri: str) -> str | None:
    """Load the model into this process's cache ahead of the first tick; its version or None."""
    try:
        return _cached_model(tracking_uri, model_uri)[1]
    except Exception as e:  # noqa: BLE001 - warming is best effort; the tick reports the real error
        LOG.warning("predcheck: could not warm %r: %s", model_uri, e)
        return None


def score(inputs: Any, tracking_uri: str, model_uri: str) -> Scores:
    """Score model inputs with the registered model (cached per version), else the heuristic.

    ``inputs``: a matrix with ``MODEL_INPUT_NAMES`` columns (the sensor's), or feature rows.
    """
    import numpy as np

    x = inputs if isinstance(inputs, np.ndarray) else input_matrix(inputs)
    if not len(x):
        return Scores([], [], "none", None, None)
    try:
        model, version = _cached_model(tracking_uri, model_uri)
        out = _predict(model, x)
        column = lambda name: out[name].tolist() if name in out else []  # noqa: E731
        return Scores(column("failure_probability"), column("predicted_remaining_s"), "model", model_uri, version,
                      overrun_probability=column("overrun_probability"), remaining_s_p90=column("remaining_s_p90"))
    except Exception as e:  # noqa: BLE001 - any registry/model failure falls back, and says so
        first_line = str(e).splitlines()[0] if str(e) else ""
        note = f"model {model_uri!r} unavailable ({type(e).__name__}: {first_line}); heuristic served"
        probabilities, remaining = heuristic_predict(x)
        return Scores(probabilities, remaining, "heuristic", None, None, note)


def input_matrix(rows: Sequence[Mapping[str, float]]) -> Any:
    """Feature rows (dicts) as the model input matrix (NaN where a row lacks a name)."""
    import numpy as np

    return np.array([[row.get(name, math.nan) for name in MODEL_INPUT_NAMES] for row in rows],
                    dtype=np.float64).reshape(len(rows), len(MODEL_INPUT_NAMES))
