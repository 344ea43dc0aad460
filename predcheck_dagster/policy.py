"""Checkpoint policy math (pure: no dagster, no I/O).

Symbols follow DESIGN.md §8: ``mtbf_s`` (μ), ``cost_s`` (C, checkpoint cost), ``proactive_cost_s``
(C_p), ``restart_s`` (R), ``downtime_s`` (D), ``recall`` (r), ``precision`` (p). All times are in
seconds.
"""

from __future__ import annotations

import math

DEFAULT_MTBF_S = 3600.0  # one failure an hour: preemptible nodes, flaky services (DESIGN.md §1)
MIN_FAILURE_PROBABILITY = 1e-6
MAX_FAILURE_PROBABILITY = 1 - 1e-6


def young_period(cost_s: float, mtbf_s: float) -> float:
    """Young's first-order optimal checkpoint period T = sqrt(2 C μ) (Young, CACM 1974), seconds."""
    _require_positive(cost_s=cost_s, mtbf_s=mtbf_s)
    return math.sqrt(2.0 * cost_s * mtbf_s)


def daly_period(cost_s: float, mtbf_s: float) -> float:
    """Daly's higher-order optimal compute time between checkpoints (Daly, FGCS 2006), seconds.

    τ = sqrt(2δM)[1 + ⅓·sqrt(δ/2M) + (1/9)(δ/2M)] − δ for δ < 2M, else τ = M.
    Daly's worked examples: δ = 5 min gives τ ≈ 117, 57 and 9.1 min for M = 24 h, 6 h, 15 min.
    """
    _require_positive(cost_s=cost_s, mtbf_s=mtbf_s)
    if cost_s >= 2.0 * mtbf_s:
        return mtbf_s
    ratio = cost_s / (2.0 * mtbf_s)
    return math.sqrt(2.0 * cost_s * mtbf_s) * (1 + math.sqrt(ratio) / 3 + ratio / 9) - cost_s


def exact_waste(period_s: float, cost_s: float, mtbf_s: float, downtime_s: float = 0.0,
                restart_s: float = 0.0) -> float:
    """Fraction of time wasted with period T under exponential faults.

    waste = 1 − (T − C) / [(μ + D + R)(e^{T/μ} − 1)]   (DESIGN.md §8), dimensionless in [0, 1].
    """
    _require_positive(period_s=period_s, mtbf_s=mtbf_s)
    useful = (period_s - cost_s) / ((mtbf_s + downtime_s + restart_s) * math.expm1(period_s / mtbf_s))
    return min(1.0, max(0.0, 1.0 - useful))


def aupy_period(cost_s: float, mtbf_s: float, recall: float, proactive_cost_s: float,
                precision: float) -> float:
    """Optimal period when predictions are trusted (Aupy, Robert, Vivien, Zaidouni, JPDC 2014).

    T* = sqrt((2μC − r(C_p/p)²) / (1 − r)), seconds; falls back to Young when the radicand is not
    positive or r = 1 (a perfect recall makes periodic checkpoints unnecessary: returns μ).
    """
    _require_positive(cost_s=cost_s, mtbf_s=mtbf_s, precision=precision)
    if recall >= 1.0:
        return mtbf_s
    radicand = (2 * mtbf_s * cost_s - recall * (proactive_cost_s / precision) ** 2) / (1 - recall)
    if radicand <= 0:
        return young_period(cost_s, mtbf_s)
    return math.sqrt(radicand)


def aupy_waste(period_s: float, cost_s: float, mtbf_s: float, recall: float, proactive_cost_s: float,
               precision: float, downtime_s: float = 0.0, restart_s: float = 0.0) -> float:
    """First-order waste with prediction (Aupy et al. 2014), dimensionless.

    waste ≈ C/T + [(1 − r)T/2 + D + R + r·C_p/p] / μ.
    """
    _require_positive(period_s=period_s, mtbf_s=mtbf_s, precision=precision)
    return cost_s / period_s + ((1 - recall) * period_s / 2 + downtime_s + restart_s
                                + recall * proactive_cost_s / precision) / mtbf_s


def mtbf_from_probability(failure_probability: float, horizon_s: float) -> float:
    """Mean time between failures implied by probability p of failing within ``horizon_s``.

    Assumes a constant hazard λ over the horizon: p = 1 − e^{−λh}, so μ = 1/λ = −h / ln(1 − p).
    """
    _require_positive(horizon_s=horizon_s)
    p = min(MAX_FAILURE_PROBABILITY, max(MIN_FAILURE_PROBABILITY, failure_probability))
    return -horizon_s / math.log1p(-p)


def adaptive_interval(cost_s: float, failure_probability: float | None, horizon_s: float | None,
                      min_interval_s: float, max_interval_s: float,
                      default_mtbf_s: float = DEFAULT_MTBF_S) -> float:
    """Checkpoint interval for a step: Daly's period at the hazard the forecast implies, clamped.

    A low-risk step gets long intervals (it pays almost nothing); a high-risk one short intervals.
    Without a forecast, ``default_mtbf_s`` stands for the hazard.
    """
    if failure_probability is None or not horizon_s or horizon_s <= 0:
        mtbf_s = default_mtbf_s
    else:
        mtbf_s = mtbf_from_probability(failure_probability, horizon_s)
    period = daly_period(max(cost_s, 1e-4), mtbf_s)
    return min(max_interval_s, max(min_interval_s, period))


def expected_work_saved(failure_probability: float, work_since_checkpoint_s: float,
                        predicted_remaining_s: float | None = None) -> float:
    """Expected seconds of work a proactive checkpoint saves now (DESIGN.md §8 cost rule).

    If the step fails before its next periodic checkpoint, the work done since its last checkpoint
    is lost; a checkpoint now saves it with probability p. When the forecast says the step ends
    soon, the saving is capped by nothing: the lost work is what has been done, not what remains.
    ``predicted_remaining_s`` only scales the probability to the part of the horizon still ahead
    when it is known to be zero (a finished step loses nothing).
    """
    if predicted_remaining_s is not None and predicted_remaining_s <= 0:
        return 0.0
    return max(0.0, failure_probability) * max(0.0, work_since_checkpoint_s)


def should_request_checkpoint(failure_probability: float, work_since_checkpoint_s: float,
                              checkpoint_cost_s: float,
                              predicted_remaining_s: float | None = None) -> bool:
    """True when the expected work saved exceeds what a checkpoint costs (both in seconds)."""
    saved = expected_work_saved(failure_probability, work_since_checkpoint_s, predicted_remaining_s)
    return saved > checkpoint_cost_s


def _require_positive(**values: float) -> None:
    for name, value in values.items():
        if not value > 0:
            raise ValueError(f"{name} must be > 0, got {value!r}")
