"""Both forecaster families: learn a real signal, calibrate on held-out rows, round-trip through files."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from predcheck_dagster.features import MODEL_INPUT_NAMES
from predcheck_dagster.models import (
    LSTMForecaster,
    TrainingData,
    XGBoostForecaster,
    fit_family,
    load_family,
)


def synthetic(n: int = 3000, seed: int = 0) -> tuple[TrainingData, pd.DataFrame, np.ndarray]:
    """Failures follow a failed previous run and a long time past the usual duration."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(np.nan, index=range(n), columns=list(MODEL_INPUT_NAMES), dtype=float)
    last_failed = (rng.random(n) < 0.2).astype(float)
    elapsed_ratio = rng.exponential(1.0, n)
    frame["last_failed"] = last_failed
    frame["seq0_failed"] = last_failed
    frame["elapsed_ratio"] = elapsed_ratio
    frame["hist_fail_rate"] = rng.random(n) * 0.3
    logit = -3.0 + 3.0 * last_failed + 1.5 * (elapsed_ratio > 2)
    failed = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    starts = np.arange(n, dtype=float) * 10
    cut = int(n * 0.75)
    data = TrainingData(frame.iloc[:cut].reset_index(drop=True), {"failure": failed[:cut]}, starts[:cut],
                        starts[:cut] + 5, remaining_s=rng.exponential(30, cut))
    return data, frame.iloc[cut:].reset_index(drop=True), failed[cut:]


@pytest.mark.parametrize("family", ["xgboost", "lstm"])
def test_family_learns_calibrates_and_round_trips(family, tmp_path):
    from sklearn.metrics import roc_auc_score

    data, test_frame, test_labels = synthetic()
    model = fit_family(family, data)
    out = model.predict(test_frame)
    assert list(out.columns) == ["failure_probability", "remaining_s_p50", "remaining_s_p90"]
    p = out["failure_probability"].to_numpy()
    assert ((p >= 0) & (p <= 1)).all()
    assert roc_auc_score(test_labels, p) > 0.75
    # calibrated on the newest part of the training period: the mean forecast is near the failure rate
    assert abs(p.mean() - test_labels.mean()) < 0.05
    assert (out["remaining_s_p90"] >= out["remaining_s_p50"]).all()

    artifacts = model.save(str(tmp_path))
    with open(artifacts["spec"]) as f:
        spec = json.load(f)
    assert spec["family"] == family and spec["targets"] == ["failure"]
    assert all(os.path.exists(path) for path in artifacts.values())
    loaded = load_family(artifacts)
    assert type(loaded) is (XGBoostForecaster if family == "xgboost" else LSTMForecaster)
    np.testing.assert_allclose(loaded.predict(test_frame).to_numpy(), out.to_numpy(), rtol=1e-5, atol=1e-6)


def test_lstm_weights_load_without_unpickling_code(tmp_path):
    """The saved network is a plain state_dict: torch.load(weights_only=True) reads it."""
    import torch

    data, _, _ = synthetic(600)
    artifacts = LSTMForecaster.fit(data).save(str(tmp_path))
    state = torch.load(artifacts["lstm_state"], weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_unknown_target_rows_are_left_out_and_unknown_family_is_refused():
    data, test_frame, _ = synthetic(1200)
    overrun = np.where(np.arange(len(data.times)) % 3 == 0, np.nan, data.targets["failure"])
    data.targets["overrun"] = overrun
    out = fit_family("xgboost", data).predict(test_frame)
    assert {"failure_probability", "overrun_probability"} <= set(out.columns)
    with pytest.raises(ValueError, match=r"unknown model family 'gbm': choose one of \('xgboost', 'lstm'\)"):
        fit_family("gbm", data)
