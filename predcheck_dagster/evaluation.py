"""How good are failure probabilities: discrimination, calibration, and calibrators (pure: numpy + sklearn).

The forecaster is judged on AUROC, AUPRC, Brier and calibration (DESIGN.md §7). The calibrators
re-map a model's scores to probabilities that match observed failure rates; their fitted state is
a few JSON numbers (no pickles), so it can ride along in an MLflow model's artifacts or a manifest.

Binning: bin ``i`` of ``n_bins`` equal-width bins holds the probabilities ``p`` with
``floor(p * n_bins) == i``; ``p == 1`` falls in the last bin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, Self

import numpy as np

from predcheck_dagster.errors import EvaluationInputError

DEFAULT_BINS = 10
LOGIT_EPS = 1e-6  # probabilities are clipped to [eps, 1 - eps] before a logit
PLATT_C = 1e4  # inverse L2 strength: keeps the slope finite on separable data, negligible otherwise
SERIAL_VERSION = 1


def classification_metrics(labels: Sequence[int], probs: Sequence[float],
                           n_bins: int = DEFAULT_BINS) -> dict[str, float]:
    """AUROC, AUPRC, Brier score and expected calibration error of failure probabilities.

    Args:
        labels: 1 for a failed attempt, 0 for a success (bools accepted).
        probs: predicted probabilities of failure, in [0, 1], aligned with ``labels``.
        n_bins: equal-width bins for the ECE.

    Returns:
        ``auroc``, ``auprc`` (average precision), ``brier``, ``ece`` (bin-count-weighted mean of
        |mean predicted − observed rate| over equal-width bins), ``n``, ``positives`` and
        ``base_rate``, all floats.

    Guarantees:
        - ``auroc`` and ``auprc`` are NaN, not an exception, when only one class is present.
        - On empty input every rate is NaN and ``n`` / ``positives`` are 0.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, p = _checked(labels, probs)
    n, positives = len(y), int(y.sum())
    nan = float("nan")
    if n == 0:
        return {"auroc": nan, "auprc": nan, "brier": nan, "ece": nan, "n": 0.0, "positives": 0.0,
                "base_rate": nan}
    both_classes = 0 < positives < n
    return {
        "auroc": float(roc_auc_score(y, p)) if both_classes else nan,
        "auprc": float(average_precision_score(y, p)) if both_classes else nan,
        "brier": float(np.mean((p - y) ** 2)),
        "ece": expected_calibration_error(y, p, n_bins),
        "n": float(n),
        "positives": float(positives),
        "base_rate": positives / n,
    }


def expected_calibration_error(labels: Sequence[int], probs: Sequence[float], n_bins: int = DEFAULT_BINS) -> float:
    """ECE = Σ_b (n_b / N)·|mean predicted_b − observed rate_b| over equal-width bins; NaN on empty input."""
    y, p = _checked(labels, probs)
    if len(y) == 0:
        return float("nan")
    _, sum_p, sum_y = _bin_sums(y, p, n_bins)
    return float(np.abs(sum_p - sum_y).sum() / len(y))  # n_b/N · |Σp/n_b − Σy/n_b| = |Σp − Σy| / N


def calibration_table(labels: Sequence[int], probs: Sequence[float],
                      n_bins: int = DEFAULT_BINS) -> list[dict[str, float | int | None]]:
    """One row per equal-width bin: ``lo``, ``hi``, ``count``, ``mean_predicted``, ``observed_rate``.

    Every bin is listed, empty ones too; an empty bin has ``None`` for its mean and rate, so the
    table stays valid JSON.
    """
    y, p = _checked(labels, probs)
    counts, sum_p, sum_y = _bin_sums(y, p, n_bins)
    rows: list[dict[str, float | int | None]] = []
    for i in range(n_bins):
        count = int(counts[i])
        rows.append({
            "lo": i / n_bins,
            "hi": (i + 1) / n_bins,
            "count": count,
            "mean_predicted": float(sum_p[i] / count) if count else None,
            "observed_rate": float(sum_y[i] / count) if count else None,
        })
    return rows


class Calibrator(Protocol):
    """What both calibrators offer: fit on held-out scores, map scores, round-trip through JSON."""

    def fit(self, probs: Sequence[float], labels: Sequence[int]) -> Self: ...

    def transform(self, probs: Sequence[float]) -> np.ndarray: ...

    def to_dict(self) -> dict[str, Any]: ...


class IsotonicCalibrator:
    """Monotone, piecewise-linear re-mapping of scores (isotonic regression, pool-adjacent-violators).

    The fitted state is sklearn's thresholds (``x`` → ``y``); ``transform`` is ``np.interp`` over
    them, so scores outside the fitted range map to the end values (sklearn's ``out_of_bounds="clip"``).
    """

    method = "isotonic"

    def __init__(self, x: Sequence[float] | None = None, y: Sequence[float] | None = None) -> None:
        self.x = None if x is None else np.asarray(x, dtype=float)
        self.y = None if y is None else np.asarray(y, dtype=float)

    def fit(self, probs: Sequence[float], labels: Sequence[int]) -> Self:
        """Fit on held-out scores and their outcomes (both classes needed); returns self."""
        from sklearn.isotonic import IsotonicRegression

        y, p = _checked_for_fit(labels, probs, self.method)
        regression = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(p, y)
        self.x = np.asarray(regression.X_thresholds_, dtype=float)
        self.y = np.asarray(regression.y_thresholds_, dtype=float)
        return self

    def transform(self, probs: Sequence[float]) -> np.ndarray:
        """Calibrated probabilities for ``probs``."""
        if self.x is None or self.y is None:
            raise EvaluationInputError(f"{type(self).__name__} is not fitted: call fit() or from_dict() first")
        return np.interp(_checked_probs(probs), self.x, self.y)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: ``{"method": "isotonic", "version": 1, "x": [...], "y": [...]}``."""
        if self.x is None or self.y is None:
            raise EvaluationInputError(f"{type(self).__name__} is not fitted: nothing to serialise")
        return {"method": self.method, "version": SERIAL_VERSION, "x": self.x.tolist(), "y": self.y.tolist()}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> IsotonicCalibrator:
        """The calibrator that ``to_dict`` described; a malformed payload raises EvaluationInputError."""
        _check_header(payload, cls.method)
        x, y = _float_list(payload, "x"), _float_list(payload, "y")
        if len(x) != len(y) or not x:
            raise EvaluationInputError(
                f"isotonic calibrator payload has {len(x)} x and {len(y)} y thresholds: they must be equal and "
                "non-empty; re-serialise it with IsotonicCalibrator.to_dict()")
        if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
            raise EvaluationInputError("isotonic calibrator payload is not monotone: x and y must be non-decreasing")
        return cls(x, y)


class PlattCalibrator:
    """Platt scaling on the logit of the score: p' = σ(a·logit(p) + b) (Platt 1999).

    ``a`` (slope) and ``b`` (intercept) come from a logistic regression of the outcomes on
    ``logit(p)``; ``a = 1, b = 0`` is the identity.
    """

    method = "platt"

    def __init__(self, slope: float | None = None, intercept: float | None = None) -> None:
        self.slope = slope
        self.intercept = intercept

    def fit(self, probs: Sequence[float], labels: Sequence[int]) -> Self:
        """Fit on held-out scores and their outcomes (both classes needed); returns self."""
        from sklearn.linear_model import LogisticRegression

        y, p = _checked_for_fit(labels, probs, self.method)
        regression = LogisticRegression(C=PLATT_C).fit(_logit(p).reshape(-1, 1), y)
        self.slope = float(regression.coef_[0][0])
        self.intercept = float(regression.intercept_[0])
        return self

    def transform(self, probs: Sequence[float]) -> np.ndarray:
        """Calibrated probabilities for ``probs``."""
        if self.slope is None or self.intercept is None:
            raise EvaluationInputError(f"{type(self).__name__} is not fitted: call fit() or from_dict() first")
        z = self.slope * _logit(_checked_probs(probs)) + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable state: ``{"method": "platt", "version": 1, "slope": a, "intercept": b}``."""
        if self.slope is None or self.intercept is None:
            raise EvaluationInputError(f"{type(self).__name__} is not fitted: nothing to serialise")
        return {"method": self.method, "version": SERIAL_VERSION, "slope": self.slope, "intercept": self.intercept}

    @classmethod
    def from_dict(cls, payload: Mapping[str, Any]) -> PlattCalibrator:
        """The calibrator that ``to_dict`` described; a malformed payload raises EvaluationInputError."""
        _check_header(payload, cls.method)
        try:
            slope, intercept = float(payload["slope"]), float(payload["intercept"])
        except (KeyError, TypeError, ValueError) as e:
            raise EvaluationInputError(
                f"platt calibrator payload needs numeric 'slope' and 'intercept', got {dict(payload)!r}; "
                "re-serialise it with PlattCalibrator.to_dict()") from e
        if not (math.isfinite(slope) and math.isfinite(intercept)):
            raise EvaluationInputError(f"platt calibrator payload has non-finite parameters: {dict(payload)!r}")
        return cls(slope, intercept)


CALIBRATORS: dict[str, type[IsotonicCalibrator] | type[PlattCalibrator]] = {
    IsotonicCalibrator.method: IsotonicCalibrator,
    PlattCalibrator.method: PlattCalibrator,
}


def calibrator_from_dict(payload: Mapping[str, Any]) -> IsotonicCalibrator | PlattCalibrator:
    """Either calibrator from its ``to_dict()`` payload, chosen by ``payload["method"]``."""
    method = payload.get("method") if isinstance(payload, Mapping) else None
    if method not in CALIBRATORS:
        raise EvaluationInputError(
            f"unknown calibrator method {method!r}: expected one of {sorted(CALIBRATORS)}")
    return CALIBRATORS[method].from_dict(payload)


def _checked(labels: Sequence[int], probs: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Labels as 0/1 floats and probabilities as floats in [0, 1], of equal length."""
    y = np.asarray(labels, dtype=float).ravel()
    p = _checked_probs(probs)
    if len(y) != len(p):
        raise EvaluationInputError(f"{len(y)} labels but {len(p)} probabilities: pass one probability per label")
    if not np.all((y == 0) | (y == 1)):
        bad = sorted({float(v) for v in y[(y != 0) & (y != 1)]})[:5]
        raise EvaluationInputError(f"labels must be 0 or 1 (1 = failed attempt), got {bad!r}")
    return y, p


def _checked_probs(probs: Sequence[float]) -> np.ndarray:
    p = np.asarray(probs, dtype=float).ravel()
    if not np.all((p >= 0) & (p <= 1)):  # also false for NaN
        bad = [float(v) for v in p[~((p >= 0) & (p <= 1))][:5]]
        raise EvaluationInputError(f"probabilities must lie in [0, 1], got {bad!r}")
    return p


def _checked_for_fit(labels: Sequence[int], probs: Sequence[float], method: str) -> tuple[np.ndarray, np.ndarray]:
    y, p = _checked(labels, probs)
    positives = int(y.sum())
    if positives == 0 or positives == len(y):
        raise EvaluationInputError(
            f"{method} calibration needs both outcomes in its held-out labels, got {len(y)} labels with "
            f"{positives} failures; hold out a period that contains failures and successes")
    return y, p


def _bin_sums(y: np.ndarray, p: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-bin count, sum of probabilities and sum of labels."""
    if n_bins < 1:
        raise EvaluationInputError(f"n_bins must be at least 1, got {n_bins!r}")
    index = np.minimum((p * n_bins).astype(int), n_bins - 1)
    return (np.bincount(index, minlength=n_bins), np.bincount(index, weights=p, minlength=n_bins),
            np.bincount(index, weights=y, minlength=n_bins))


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, LOGIT_EPS, 1.0 - LOGIT_EPS)
    return np.log(q) - np.log1p(-q)


def _check_header(payload: Mapping[str, Any], method: str) -> None:
    if not isinstance(payload, Mapping) or payload.get("method") != method:
        got = payload.get("method") if isinstance(payload, Mapping) else type(payload).__name__
        raise EvaluationInputError(
            f"expected a calibrator payload with method {method!r}, got {got!r}; use calibrator_from_dict()")
    if payload.get("version") != SERIAL_VERSION:
        raise EvaluationInputError(
            f"{method} calibrator payload has version {payload.get('version')!r}, this predcheck reads "
            f"version {SERIAL_VERSION}; re-fit the calibrator")


def _float_list(payload: Mapping[str, Any], key: str) -> list[float]:
    try:
        values = [float(v) for v in payload[key]]
    except (KeyError, TypeError, ValueError) as e:
        raise EvaluationInputError(f"calibrator payload needs a list of numbers under {key!r}") from e
    if not all(math.isfinite(v) for v in values):
        raise EvaluationInputError(f"calibrator payload has non-finite values under {key!r}")
    return values
