"""The two forecaster families behind one interface: XGBoost and an LSTM (torch).

Both read the same model input (``features.MODEL_INPUT_NAMES`` plus any static ``x_*`` columns,
NaN for unknown: a pandas DataFrame to ``predict``, or a matrix and its column names to
``predict_matrix``, the sensor's way) and return the same columns:

    ``<target>_probability`` for each binary target trained (``failure``, ``overrun``), calibrated
    on the newest part of the training period (isotonic regression, Platt scaling on small sets);
    ``remaining_s_p50`` and ``remaining_s_p90`` (quantiles of the remaining seconds) when a
    remaining time was given.

Training holds out the newest ``VALIDATION_FRACTION`` of the training period (by start time, and
only rows that ended before it): it picks the number of trees / epochs (early stopping) and fits
the calibration, so nothing is tuned on data the caller evaluates on.

Saved as plain files (XGBoost JSON, a torch ``state_dict`` loaded with ``weights_only=True``, JSON
for the rest): no pickles. Heavy imports (xgboost, torch) happen inside the functions.
"""

from __future__ import annotations

import functools
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from predcheck_dagster.evaluation import Calibrator, IsotonicCalibrator, PlattCalibrator, calibrator_from_dict
from predcheck_dagster.features import (
    FEATURE_NAMES,
    LIVE_SEQ_FIELDS,
    LIVE_SEQUENCE_NAMES,
    SCORED_SAMPLES,
    SEQ_FIELDS,
    SEQ_LEN,
    SEQUENCE_NAMES,
)

FAMILIES = ("xgboost", "lstm")
TARGETS = ("failure", "overrun")
QUANTILES = (0.5, 0.9)
VALIDATION_FRACTION = 0.2
ISOTONIC_MIN_CLASS = 50  # fewer positives or negatives than this in validation: Platt scaling
MIN_VALIDATION_ROWS = 200  # fewer: the LSTM is not trained (nothing to stop it on)
# XGBoost trains the full feature set, early-stopped and calibrated, from this many validation rows;
# below it, a fixed size on the compact feature set, uncalibrated (a Dagster history of a few
# hundred attempts has ~9 rows per attempt, one per sampled moment)
MIN_XGB_VALIDATION_ROWS = 2000
MIN_VALIDATION_POSITIVES = 10
# On a history too small to validate on (a few dozen attempts), every attempt's history features
# are unique: with a row per sample of each attempt they identify the attempt, and trees memorise
# them instead of learning from the live samples. Such a history trains on a compact set: the
# pipeline's own failure rate, last outcomes and durations, and the live features.
SMALL_HISTORY_FEATURES = (
    "hist_n", "hist_fail_rate", "last_failed", "consecutive_failures", "log_since_last_failure_s",
    "hist_duration_p50", "hist_duration_p90", "hist_peak_rss_p50", "elapsed_s", "elapsed_ratio", "log_rss",
    "rss_ratio", "rss_slope_ratio", "cpu_util", "work_rate_ratio", "input_ratio", "n_samples")
XGB_PARAMS = {"max_depth": 4, "learning_rate": 0.05, "subsample": 0.8, "colsample_bytree": 0.8,
              "min_child_weight": 5.0, "tree_method": "hist", "nthread": 2}
XGB_MAX_TREES = 1500
XGB_EARLY_STOP = 100
XGB_SMALL_TREES = 150  # trees without a validation set,
XGB_SMALL_PARAMS = {"learning_rate": 0.1, "min_child_weight": 1.0, "subsample": 0.9, "colsample_bytree": 1.0}
LSTM_HIDDEN = 32
LSTM_EPOCHS = 12
LSTM_PATIENCE = 3
LSTM_SMALL_STEPS = 400  # optimiser steps without a validation set (a small history is one batch an epoch)
LSTM_BATCH = 1024
LSTM_LR = 2e-3
Progress = Callable[[str], None]


# ---- calibration ----------------------------------------------------------------------------------
def _calibration(scores: np.ndarray, labels: np.ndarray) -> Calibrator | None:
    """A calibration fitted on held-out rows: isotonic with enough of both classes, Platt below that
    (isotonic regression overfits small sets: Niculescu-Mizil & Caruana, ICML 2005); None (identity)
    when the rows hold one class only."""
    positives = int(np.sum(labels))
    if len(scores) == 0 or not 0 < positives < len(labels):
        return None
    if min(positives, len(labels) - positives) >= ISOTONIC_MIN_CLASS:
        return IsotonicCalibrator().fit(scores, labels)
    return PlattCalibrator().fit(scores, labels)


def _calibrated(calibration: Calibrator | None, scores: np.ndarray) -> np.ndarray:
    return np.clip(scores, 0.0, 1.0) if calibration is None else calibration.transform(np.clip(scores, 0.0, 1.0))


def _calibrations_to_json(calibrations: Mapping[str, Calibrator | None]) -> dict[str, Any]:
    return {t: (c.to_dict() if c is not None else None) for t, c in calibrations.items()}


def _calibrations_from_json(payload: Mapping[str, Any]) -> dict[str, Calibrator | None]:
    return {t: (calibrator_from_dict(c) if c is not None else None) for t, c in payload.items()}


def _split_validation(times: np.ndarray, ends: np.ndarray,
                      min_rows: int = MIN_VALIDATION_ROWS) -> tuple[np.ndarray, np.ndarray | None]:
    """Indices (fit, validation): validation is the newest 20 % by start; fit rows ended before it.

    With fewer than ``MIN_VALIDATION_ROWS`` validation rows, early stopping and calibration would
    fit noise: (every row, None), and the families train a fixed size, uncalibrated.
    """
    cut = np.quantile(times, 1 - VALIDATION_FRACTION)
    fit = np.flatnonzero(ends < cut)
    val = np.flatnonzero(times >= cut)
    if len(fit) == 0 or len(val) < min_rows:
        return np.arange(len(times)), None
    return fit, val


def is_small(data: TrainingData) -> bool:
    """Too little history to hold out a validation set: fixed-size, uncalibrated training."""
    return _split_validation(data.times, data.ends)[1] is None


def needs_validation(family: str) -> bool:
    """The LSTM overfits a history it cannot validate on (it then scores every new attempt alike);
    it is only trained where early stopping can stop it."""
    return family == "lstm"


def _enough(labels: np.ndarray) -> bool:
    """Enough of both classes to early-stop on and calibrate with."""
    positives = int(np.sum(labels))
    return min(positives, len(labels) - positives) >= MIN_VALIDATION_POSITIVES


def _input_names(frame: Any, small: bool = False) -> list[str]:
    """The flat inputs; on a small history the compact ``SMALL_HISTORY_FEATURES``."""
    statics = sorted(c for c in frame.columns if c.startswith("x_"))
    return [*(SMALL_HISTORY_FEATURES if small else FEATURE_NAMES), *statics]


@dataclass
class TrainingData:
    """Model input rows and what happened: binary targets (NaN = unknown), remaining seconds."""

    frame: Any  # pandas DataFrame with MODEL_INPUT_NAMES (+ x_* columns)
    targets: dict[str, np.ndarray]
    times: np.ndarray  # start of each row's attempt (seconds)
    ends: np.ndarray  # end of each row's attempt: labels are known from then on
    remaining_s: np.ndarray | None = None


class Forecaster:
    """What both families provide."""

    family: str
    spec: dict[str, Any]

    def predict(self, frame: Any) -> Any:
        """A DataFrame of model inputs -> a DataFrame of the output columns."""
        import pandas as pd

        return pd.DataFrame(self.predict_matrix(frame.to_numpy(dtype=np.float64), tuple(frame.columns)))

    def predict_matrix(self, x: np.ndarray, columns: Sequence[str]) -> dict[str, np.ndarray]:
        """Model inputs as a matrix whose columns are ``columns`` -> each output column as an
        array (the sensor's way: no DataFrame per tick)."""
        raise NotImplementedError  # pragma: no cover - interface

    def save(self, directory: str) -> dict[str, str]:  # pragma: no cover - interface
        raise NotImplementedError


def _outputs(probabilities: Mapping[str, np.ndarray], quantiles: np.ndarray | None, n: int) -> dict[str, np.ndarray]:
    out = {f"{t}_probability": probabilities[t] for t in TARGETS if t in probabilities}
    if quantiles is not None:
        out["remaining_s_p50"] = quantiles[:, 0]
        out["remaining_s_p90"] = np.maximum(quantiles[:, 1], quantiles[:, 0])
    else:
        out["remaining_s_p50"] = out["remaining_s_p90"] = np.full(n, np.nan)
    return out


@functools.lru_cache(maxsize=64)
def _column_index(columns: tuple[str, ...], names: tuple[str, ...]) -> np.ndarray:
    position = {c: i for i, c in enumerate(columns)}
    return np.array([position.get(name, -1) for name in names], dtype=np.int64)


def _take(x: np.ndarray, columns: Sequence[str], names: Sequence[str], dtype: Any = np.float64) -> np.ndarray:
    """The ``names`` columns of ``x`` (whose columns are ``columns``) in that order, NaN where absent."""
    index = _column_index(tuple(columns), tuple(names))
    out = np.ascontiguousarray(x[:, np.maximum(index, 0)], dtype=dtype)
    out[:, index < 0] = np.nan
    return out


# ---- XGBoost ----------------------------------------------------------------------------------
class XGBoostForecaster(Forecaster):
    """Gradient-boosted trees on the flat features; one booster per target, one for the quantiles."""

    family = "xgboost"

    def __init__(self, spec: dict[str, Any], boosters: dict[str, Any],
                 calibrations: dict[str, Calibrator | None]):
        self.spec, self.boosters, self.calibrations = spec, boosters, calibrations

    @classmethod
    def fit(cls, data: TrainingData, progress: Progress | None = None) -> XGBoostForecaster:
        import xgboost as xgb

        fit_idx, val_idx = _split_validation(data.times, data.ends, MIN_XGB_VALIDATION_ROWS)
        names = _input_names(data.frame, small=val_idx is None)
        x = data.frame.reindex(columns=names).to_numpy(dtype=np.float32)
        boosters, calibrations, best = {}, {}, {}
        for target, labels in data.targets.items():
            known = ~np.isnan(labels)
            f = fit_idx[known[fit_idx]]
            v = val_idx[known[val_idx]] if val_idx is not None else None
            if v is not None and not _enough(labels[v]):
                f, v = np.flatnonzero(known), None
            if len(np.unique(labels[f])) < 2:
                continue
            t0 = time.perf_counter()
            params = {**XGB_PARAMS, "objective": "binary:logistic", "eval_metric": "aucpr"}
            dfit = xgb.DMatrix(x[f], label=labels[f], feature_names=names, missing=np.nan)
            if v is None:
                boosters[target] = xgb.train({**params, **XGB_SMALL_PARAMS}, dfit, XGB_SMALL_TREES)
                calibrations[target], best[target] = None, XGB_SMALL_TREES
            else:
                dval = xgb.DMatrix(x[v], label=labels[v], feature_names=names, missing=np.nan)
                booster = xgb.train(params, dfit, XGB_MAX_TREES, evals=[(dval, "validation")],
                                    early_stopping_rounds=XGB_EARLY_STOP, verbose_eval=False)
                rounds = (0, booster.best_iteration + 1)
                boosters[target] = booster[: rounds[1]]
                calibrations[target] = _calibration(booster.predict(dval, iteration_range=rounds), labels[v])
                best[target] = rounds[1]
            if progress:
                how = "early-stopped, calibrated" if v is not None else "fixed size, uncalibrated: small history"
                progress(f"xgboost {target}: {best[target]} trees on {len(f)} rows ({how}) "
                         f"in {time.perf_counter() - t0:.1f}s")
        if data.remaining_s is not None:
            params = {**XGB_PARAMS, "objective": "reg:quantileerror", "quantile_alpha": np.array(QUANTILES)}
            dfit = xgb.DMatrix(x[fit_idx], label=np.log1p(data.remaining_s[fit_idx]), feature_names=names,
                               missing=np.nan)
            if val_idx is None:
                boosters["remaining"] = xgb.train({**params, **XGB_SMALL_PARAMS}, dfit, XGB_SMALL_TREES)
            else:
                dval = xgb.DMatrix(x[val_idx], label=np.log1p(data.remaining_s[val_idx]), feature_names=names,
                                   missing=np.nan)
                booster = xgb.train(params, dfit, XGB_MAX_TREES // 3, evals=[(dval, "validation")],
                                    early_stopping_rounds=XGB_EARLY_STOP, verbose_eval=False)
                boosters["remaining"] = booster[: booster.best_iteration + 1]
        spec = {"family": cls.family, "input_names": names, "targets": sorted(k for k in boosters if k != "remaining"),
                "trees": best, "params": {k: v for k, v in XGB_PARAMS.items()}}
        return cls(spec, boosters, calibrations)

    def predict_matrix(self, x: np.ndarray, columns: Sequence[str]) -> dict[str, np.ndarray]:
        x = _take(x, columns, self.spec["input_names"], np.float32)
        if not len(x):
            return _outputs({t: np.zeros(0) for t in self.spec["targets"]}, None, 0)
        # in place: no DMatrix copy (NaN is "missing" by default)
        probabilities = {t: _calibrated(self.calibrations[t], self.boosters[t].inplace_predict(x))
                         for t in self.spec["targets"]}
        quantiles = None
        if "remaining" in self.boosters:
            quantiles = np.expm1(np.clip(self.boosters["remaining"].inplace_predict(x).reshape(len(x), -1), 0, 20))
        return _outputs(probabilities, quantiles, len(x))

    def save(self, directory: str) -> dict[str, str]:
        artifacts = {}
        for name, booster in self.boosters.items():
            path = os.path.join(directory, f"xgb_{name}.json")
            booster.save_model(path)
            artifacts[f"xgb_{name}"] = path
        artifacts["spec"] = _write_json(directory, "spec.json", {
            **self.spec, "calibrations": _calibrations_to_json(self.calibrations)})
        return artifacts

    @classmethod
    def load(cls, artifacts: Mapping[str, str]) -> XGBoostForecaster:
        import xgboost as xgb

        spec = _read_json(artifacts["spec"])
        boosters = {}
        for key, path in artifacts.items():
            if key.startswith("xgb_"):
                boosters[key[4:]] = xgb.Booster()
                boosters[key[4:]].load_model(path)
        calibrations = _calibrations_from_json(spec.pop("calibrations"))
        return cls(spec, boosters, calibrations)


# ---- LSTM -------------------------------------------------------------------------------------
def _standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x - mean) / std with NaN -> 0, plus a 0/1 'was unknown' indicator per column."""
    missing = np.isnan(x)
    z = np.where(missing, 0.0, (x - mean) / std)
    return np.concatenate([np.clip(z, -10, 10), missing.astype(np.float32)], axis=-1).astype(np.float32)


def _lstm_arrays(x: np.ndarray, columns: Sequence[str], names: Sequence[str]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    flat = _take(x, columns, names)
    # newest-first columns -> (rows, time oldest first, fields)
    seq = _take(x, columns, SEQUENCE_NAMES).reshape(len(x), SEQ_LEN, len(SEQ_FIELDS))[:, ::-1, :]
    live = _take(x, columns, LIVE_SEQUENCE_NAMES).reshape(len(x), SCORED_SAMPLES, len(LIVE_SEQ_FIELDS))[:, ::-1, :]
    return flat, seq, live


def _stats(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import warnings

    axes = tuple(range(a.ndim - 1))
    with warnings.catch_warnings():  # a column never known (live samples of a trace) -> mean 0, std 1
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(a, axis=axes)
        std = np.nanstd(a, axis=axes)
    mean = np.where(np.isnan(mean), 0.0, mean)
    std = np.where(np.isnan(std) | (std < 1e-6), 1.0, std)
    return mean, std


def build_lstm_network(n_flat: int, n_targets: int, n_quantiles: int) -> Any:
    """An LSTM over past executions, a GRU over live samples, an MLP over the flat features."""
    import torch
    from torch import nn

    class ForecastNetwork(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.history = nn.LSTM(2 * len(SEQ_FIELDS), LSTM_HIDDEN, batch_first=True)
            self.live = nn.GRU(2 * len(LIVE_SEQ_FIELDS), LSTM_HIDDEN // 2, batch_first=True)
            self.flat = nn.Sequential(nn.Linear(2 * n_flat, 64), nn.ReLU())
            joined = LSTM_HIDDEN + LSTM_HIDDEN // 2 + 64
            self.head = nn.Sequential(nn.Linear(joined, 64), nn.ReLU(), nn.Linear(64, n_targets + n_quantiles))

        def forward(self, flat: torch.Tensor, seq: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
            _, (h, _) = self.history(seq)
            _, g = self.live(live)
            return self.head(torch.cat([h[-1], g[-1], self.flat(flat)], dim=1))

    return ForecastNetwork()


class LSTMForecaster(Forecaster):
    """A small recurrent network: the pipeline's last executions and the step's live samples."""

    family = "lstm"

    def __init__(self, spec: dict[str, Any], network: Any, calibrations: dict[str, Calibrator | None]):
        self.spec, self.network, self.calibrations = spec, network, calibrations
        self._norm = {k: np.asarray(v) for k, v in spec["normalisation"].items()}

    def _tensors(self, x: np.ndarray, columns: Sequence[str]) -> tuple[Any, Any, Any]:
        import torch

        flat, seq, live = _lstm_arrays(x, columns, self.spec["input_names"])
        n = self._norm
        return (torch.from_numpy(_standardise(flat, n["flat_mean"], n["flat_std"])),
                torch.from_numpy(_standardise(seq, n["seq_mean"], n["seq_std"])),
                torch.from_numpy(_standardise(live, n["live_mean"], n["live_std"])))

    def _raw(self, x: np.ndarray, columns: Sequence[str], batch: int = 8192) -> np.ndarray:
        import torch

        self.network.eval()
        flat, seq, live = self._tensors(x, columns)
        outs = []
        with torch.inference_mode():
            for i in range(0, len(flat), batch):
                outs.append(self.network(flat[i:i + batch], seq[i:i + batch], live[i:i + batch]).numpy())
        width = len(self.spec["targets"]) + (len(QUANTILES) if self.spec["quantiles"] else 0)
        return np.concatenate(outs) if outs else np.zeros((0, width), dtype=np.float32)

    @classmethod
    def fit(cls, data: TrainingData, progress: Progress | None = None, seed: int = 0) -> LSTMForecaster:
        import torch

        torch.manual_seed(seed)
        torch.set_num_threads(min(2, os.cpu_count() or 1))
        rng = np.random.default_rng(seed)
        names = _input_names(data.frame)
        targets = [t for t in TARGETS if t in data.targets
                   and len(np.unique(data.targets[t][~np.isnan(data.targets[t])])) == 2]
        columns = [*names, *SEQUENCE_NAMES, *LIVE_SEQUENCE_NAMES]
        x = data.frame.reindex(columns=columns).to_numpy(dtype=np.float64)
        flat, seq, live = _lstm_arrays(x, columns, names)
        norm = {}
        norm["flat_mean"], norm["flat_std"] = _stats(flat)
        norm["seq_mean"], norm["seq_std"] = _stats(seq)
        norm["live_mean"], norm["live_std"] = _stats(live)
        spec = {"family": cls.family, "input_names": names, "targets": targets,
                "quantiles": data.remaining_s is not None, "hidden": LSTM_HIDDEN,
                "normalisation": {k: v.tolist() for k, v in norm.items()}}
        model = cls(spec, build_lstm_network(len(names), len(targets), len(QUANTILES) if spec["quantiles"] else 0), {})
        del flat, seq, live
        tensors = model._tensors(x, columns)
        labels = np.stack([data.targets[t] for t in targets], axis=1).astype(np.float32)
        y = torch.from_numpy(np.nan_to_num(labels, nan=0.0))
        known = torch.from_numpy(~np.isnan(labels))
        rem = torch.from_numpy(np.log1p(data.remaining_s).astype(np.float32)) if spec["quantiles"] else None
        fit_idx, val_idx = _split_validation(data.times, data.ends)
        if val_idx is not None and not all(_enough(labels[val_idx, k][~np.isnan(labels[val_idx, k])])
                                           for k in range(len(targets))):
            fit_idx, val_idx = np.arange(len(data.times)), None
        positives = np.nansum(labels[fit_idx], axis=0)
        counts = (~np.isnan(labels[fit_idx])).sum(axis=0)
        # positives are rare (1-30 %): weigh them up to half the loss, calibration undoes the shift
        # (without a validation set there is no calibration: no weighting either)
        weight = np.clip((counts - positives) / np.maximum(positives, 1), 1, 50) ** 0.5 if val_idx is not None else 1.0
        pos_weight = torch.tensor(np.broadcast_to(weight, (len(targets),)).copy(), dtype=torch.float32)
        optimiser = torch.optim.Adam(model.network.parameters(), lr=LSTM_LR)
        bce = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight, reduction="none")
        q = torch.tensor(QUANTILES, dtype=torch.float32)

        def loss_of(idx: np.ndarray) -> torch.Tensor:
            out = model.network(*(t[idx] for t in tensors))
            logits = out[:, : len(targets)]
            mask = known[idx]
            loss = (bce(logits, y[idx]) * mask).sum() / mask.sum().clamp(min=1)
            if rem is not None:
                err = rem[idx, None] - out[:, len(targets):]
                loss = loss + torch.maximum(q * err, (q - 1) * err).mean()
            return loss

        best, best_state, stale = math.inf, None, 0
        epochs = LSTM_EPOCHS if val_idx is not None else math.ceil(
            LSTM_SMALL_STEPS / math.ceil(len(fit_idx) / LSTM_BATCH))
        for epoch in range(epochs):
            t0 = time.perf_counter()
            model.network.train()
            order = rng.permutation(fit_idx)
            for i in range(0, len(order), LSTM_BATCH):
                optimiser.zero_grad()
                loss_of(order[i:i + LSTM_BATCH]).backward()
                optimiser.step()
            if val_idx is None:
                continue
            model.network.eval()
            with torch.inference_mode():
                val = float(np.mean([loss_of(val_idx[i:i + 8192]).item() for i in range(0, len(val_idx), 8192)]))
            if progress:
                progress(f"lstm epoch {epoch + 1}/{epochs}: validation loss {val:.4f} "
                         f"({time.perf_counter() - t0:.1f}s)")
            if val < best - 1e-4:
                best, stale = val, 0
                best_state = {k: v.detach().clone() for k, v in model.network.state_dict().items()}
            else:
                stale += 1
                if stale >= LSTM_PATIENCE:
                    break
        if val_idx is None:
            if progress:
                progress(f"lstm: {epochs} epochs on {len(fit_idx)} rows (fixed size, uncalibrated: small history)")
            model.calibrations = {t: None for t in targets}
            return model
        if best_state is not None:
            model.network.load_state_dict(best_state)
        raw = model._raw(x[val_idx], columns)
        for k, t in enumerate(targets):
            v = ~np.isnan(labels[val_idx, k])
            model.calibrations[t] = _calibration(_sigmoid(raw[v, k]), labels[val_idx, k][v])
        return model

    def predict_matrix(self, x: np.ndarray, columns: Sequence[str]) -> dict[str, np.ndarray]:
        raw = self._raw(x, columns)
        targets = self.spec["targets"]
        probabilities = {t: _calibrated(self.calibrations[t], _sigmoid(raw[:, k])) for k, t in enumerate(targets)}
        quantiles = np.expm1(np.clip(raw[:, len(targets):], 0, 20)) if self.spec["quantiles"] else None
        return _outputs(probabilities, quantiles, len(x))

    def save(self, directory: str) -> dict[str, str]:
        import torch

        path = os.path.join(directory, "lstm_state.pt")
        torch.save(self.network.state_dict(), path)
        return {"lstm_state": path, "spec": _write_json(directory, "spec.json", {
            **self.spec, "calibrations": _calibrations_to_json(self.calibrations)})}

    @classmethod
    def load(cls, artifacts: Mapping[str, str]) -> LSTMForecaster:
        import torch

        spec = _read_json(artifacts["spec"])
        calibrations = _calibrations_from_json(spec.pop("calibrations"))
        network = build_lstm_network(len(spec["input_names"]), len(spec["targets"]),
                                     len(QUANTILES) if spec["quantiles"] else 0)
        network.load_state_dict(torch.load(artifacts["lstm_state"], weights_only=True))
        network.eval()
        return cls(spec, network, calibrations)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))


def _write_json(directory: str, name: str, payload: Mapping[str, Any]) -> str:
    path = os.path.join(directory, name)
    with open(path, "w") as f:
        json.dump(payload, f)
    return path


def _read_json(path: str) -> dict[str, Any]:
    with open(path) as f:
        return json.load(f)


def fit_family(family: str, data: TrainingData, progress: Progress | None = None) -> Forecaster:
    """Train one family: ``xgboost`` or ``lstm``."""
    if family == "xgboost":
        return XGBoostForecaster.fit(data, progress)
    if family == "lstm":
        return LSTMForecaster.fit(data, progress)
    raise ValueError(f"unknown model family {family!r}: choose one of {FAMILIES}")


def load_family(artifacts: Mapping[str, str]) -> Forecaster:
    """Load a saved forecaster of either family from its artifact paths (``spec`` names the family)."""
    family = _read_json(artifacts["spec"])["family"]
    return XGBoostForecaster.load(artifacts) if family == "xgboost" else LSTMForecaster.load(artifacts)
