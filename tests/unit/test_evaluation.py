"""Forecaster evaluation (DESIGN.md §7): metrics, calibration table, isotonic and Platt calibrators."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from predcheck_dagster.errors import EvaluationInputError, PredcheckError
from predcheck_dagster.evaluation import (
    IsotonicCalibrator,
    PlattCalibrator,
    calibration_table,
    calibrator_from_dict,
    classification_metrics,
    expected_calibration_error,
)


def overconfident_scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True failure probabilities, outcomes drawn from them, and a score that is far too confident."""
    rng = np.random.default_rng(seed)
    true_p = rng.uniform(0.02, 0.98, n)
    labels = (rng.uniform(size=n) < true_p).astype(int)
    logit = np.log(true_p / (1 - true_p))
    score = 1 / (1 + np.exp(-(3.0 * logit - 1.0)))  # steeper and shifted: badly calibrated, same ranking
    return true_p, labels, score


# ---- metrics ----------------------------------------------------------------------------------
def test_metrics_of_a_small_hand_computed_case():
    labels = [0, 0, 1, 1]
    probs = [0.1, 0.4, 0.35, 0.8]
    m = classification_metrics(labels, probs, n_bins=10)
    assert m["auroc"] == pytest.approx(0.75)  # 3 of the 4 (pos, neg) pairs are ordered right
    assert m["auprc"] == pytest.approx((1.0 + 2 / 3) / 2)  # precision 1 at 0.8, 2/3 at 0.35
    assert m["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    # bins: 0.1 -> 1, 0.4 -> 4, 0.35 -> 3, 0.8 -> 8; each alone: ECE = mean |p - y|
    assert m["ece"] == pytest.approx((0.1 + 0.4 + 0.65 + 0.2) / 4)
    assert (m["n"], m["positives"], m["base_rate"]) == (4.0, 2.0, 0.5)
    assert all(isinstance(v, float) for v in m.values())


def test_ece_weights_bins_by_their_count():
    # bin 2 (three at 0.25, one failure) is off by 0.25 - 1/3; bin 9 (one at 0.95, a failure) by 0.05
    labels, probs = [1, 0, 0, 1], [0.25, 0.25, 0.25, 0.95]
    expected = 3 / 4 * abs(0.25 - 1 / 3) + 1 / 4 * abs(0.95 - 1)
    assert expected_calibration_error(labels, probs) == pytest.approx(expected)
    assert classification_metrics(labels, probs)["ece"] == pytest.approx(expected)


def test_a_perfectly_calibrated_score_has_near_zero_ece():
    true_p, labels, _ = overconfident_scores(20_000, seed=1)
    assert classification_metrics(labels, true_p)["ece"] < 0.02


@pytest.mark.parametrize("only", [0, 1])
def test_one_class_gives_nan_ranking_metrics_without_raising(only):
    m = classification_metrics([only] * 5, [0.1, 0.2, 0.3, 0.9, 1.0])
    assert math.isnan(m["auroc"]) and math.isnan(m["auprc"])
    assert math.isfinite(m["brier"]) and math.isfinite(m["ece"])
    assert m["base_rate"] == float(only)


def test_empty_input_gives_nan_rates_and_zero_counts():
    m = classification_metrics([], [])
    assert m["n"] == 0.0 and m["positives"] == 0.0
    assert all(math.isnan(m[k]) for k in ("auroc", "auprc", "brier", "ece", "base_rate"))


@pytest.mark.parametrize(
    ("labels", "probs", "match"),
    [
        ([0, 1], [0.5], r"2 labels but 1 probabilities"),
        ([0, 2], [0.5, 0.5], r"labels must be 0 or 1.*2\.0"),
        ([0, 1], [0.5, 1.5], r"probabilities must lie in \[0, 1\], got \[1\.5\]"),
        ([0, 1], [0.5, float("nan")], r"probabilities must lie in \[0, 1\], got \[nan\]"),
    ],
)
def test_misaligned_or_out_of_range_input_is_refused(labels, probs, match):
    with pytest.raises(EvaluationInputError, match=match) as info:
        classification_metrics(labels, probs)
    assert isinstance(info.value, PredcheckError) and isinstance(info.value, ValueError)


# ---- calibration table ------------------------------------------------------------------------
def test_calibration_table_lists_every_bin_with_counts_means_and_rates():
    labels = [0, 1, 1, 0, 1]
    probs = [0.05, 0.15, 0.12, 0.55, 1.0]
    table = calibration_table(labels, probs, n_bins=4)
    assert [(r["lo"], r["hi"]) for r in table] == [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]
    assert [r["count"] for r in table] == [3, 0, 1, 1]
    assert table[0]["mean_predicted"] == pytest.approx((0.05 + 0.15 + 0.12) / 3)
    assert table[0]["observed_rate"] == pytest.approx(2 / 3)
    assert table[1]["mean_predicted"] is None and table[1]["observed_rate"] is None  # empty bin
    assert table[3] == {"lo": 0.75, "hi": 1.0, "count": 1, "mean_predicted": 1.0, "observed_rate": 1.0}
    json.dumps(table, allow_nan=False)  # valid JSON: no NaN for the empty bin


def test_calibration_table_agrees_with_the_ece():
    _, labels, score = overconfident_scores(2000, seed=2)
    table = calibration_table(labels, score)
    ece = sum(r["count"] * abs(r["mean_predicted"] - r["observed_rate"]) for r in table if r["count"]) / 2000
    assert ece == pytest.approx(classification_metrics(labels, score)["ece"])
    assert sum(r["count"] for r in table) == 2000


# ---- calibrators ------------------------------------------------------------------------------
@pytest.mark.parametrize("calibrator_class", [IsotonicCalibrator, PlattCalibrator])
def test_calibration_on_held_out_data_lowers_the_ece(calibrator_class):
    _, labels, score = overconfident_scores(6000, seed=3)
    fit_part, test_part = slice(0, 3000), slice(3000, None)
    calibrator = calibrator_class().fit(score[fit_part], labels[fit_part])
    before = classification_metrics(labels[test_part], score[test_part])
    after = classification_metrics(labels[test_part], calibrator.transform(score[test_part]))
    assert before["ece"] > 0.1  # the score really is miscalibrated
    assert after["ece"] < 0.04
    assert after["ece"] < before["ece"] / 3
    assert after["brier"] < before["brier"]
    assert after["auroc"] == pytest.approx(before["auroc"], abs=0.01)  # a monotone map keeps the ranking


@pytest.mark.parametrize("calibrator_class", [IsotonicCalibrator, PlattCalibrator])
def test_a_calibrator_round_trips_through_json(calibrator_class):
    _, labels, score = overconfident_scores(1000, seed=4)
    fitted = calibrator_class().fit(score, labels)
    payload = json.loads(json.dumps(fitted.to_dict(), allow_nan=False))
    grid = np.linspace(0, 1, 101)
    for restored in (calibrator_class.from_dict(payload), calibrator_from_dict(payload)):
        assert type(restored) is calibrator_class
        np.testing.assert_array_equal(restored.transform(grid), fitted.transform(grid))
    out = fitted.transform(grid)
    assert np.all((out >= 0) & (out <= 1)) and np.all(np.diff(out) >= 0)


def test_isotonic_thresholds_are_applied_with_interp_and_clip_outside_the_fitted_range():
    calibrator = IsotonicCalibrator.from_dict({"method": "isotonic", "version": 1, "x": [0.2, 0.6], "y": [0.1, 0.5]})
    np.testing.assert_allclose(calibrator.transform([0.0, 0.2, 0.4, 0.6, 1.0]), [0.1, 0.1, 0.3, 0.5, 0.5])


def test_platt_identity_parameters_leave_scores_unchanged_and_fit_recovers_a_known_map():
    identity = PlattCalibrator.from_dict({"method": "platt", "version": 1, "slope": 1.0, "intercept": 0.0})
    np.testing.assert_allclose(identity.transform([0.1, 0.5, 0.9]), [0.1, 0.5, 0.9])
    _, labels, score = overconfident_scores(20_000, seed=5)
    fitted = PlattCalibrator().fit(score, labels)  # score = σ(3·logit(p) − 1), so p = σ((logit(score) + 1) / 3)
    assert fitted.slope == pytest.approx(1 / 3, abs=0.03)
    assert fitted.intercept == pytest.approx(1 / 3, abs=0.05)


@pytest.mark.parametrize("calibrator_class", [IsotonicCalibrator, PlattCalibrator])
def test_calibrators_refuse_one_class_and_use_before_fit(calibrator_class):
    with pytest.raises(EvaluationInputError, match=r"needs both outcomes .* 4 labels with 0 failures"):
        calibrator_class().fit([0.1, 0.2, 0.3, 0.4], [0, 0, 0, 0])
    with pytest.raises(EvaluationInputError, match=r"is not fitted: call fit\(\) or from_dict\(\) first"):
        calibrator_class().transform([0.5])
    with pytest.raises(EvaluationInputError, match=r"is not fitted: nothing to serialise"):
        calibrator_class().to_dict()


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ({"method": "platt", "version": 1, "slope": 1.0}, r"needs numeric 'slope' and 'intercept'"),
        ({"method": "platt", "version": 2, "slope": 1.0, "intercept": 0.0}, r"version 2, this predcheck reads"),
        ({"method": "isotonic", "version": 1, "x": [0.1, 0.2], "y": [0.5]}, r"2 x and 1 y thresholds"),
        ({"method": "isotonic", "version": 1, "x": [0.2, 0.1], "y": [0.1, 0.5]}, r"is not monotone"),
        ({"method": "beta", "version": 1}, r"unknown calibrator method 'beta'"),
        ({"version": 1}, r"unknown calibrator method None"),
    ],
)
def test_malformed_payloads_are_refused_with_a_clear_message(payload, match):
    with pytest.raises(EvaluationInputError, match=match):
        calibrator_from_dict(payload)


def test_a_payload_of_the_other_method_is_refused_by_from_dict():
    with pytest.raises(EvaluationInputError, match=r"with method 'isotonic', got 'platt'"):
        IsotonicCalibrator.from_dict({"method": "platt", "version": 1, "slope": 1.0, "intercept": 0.0})
