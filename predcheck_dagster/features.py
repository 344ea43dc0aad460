"""Features of a step attempt, the same for training and live scoring (pure: numpy only).

A row describes one step attempt at one moment of its life: what its (job, step) history said
before it started, and what its live samples show so far.

Guarantees:
    - History features use only attempts that *ended* before the scored attempt started.
    - ``feature_row`` is the one function both the trainer and the sensor call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

FAILED_OUTCOMES = frozenset({"failure", "crashed", "timeout"})
PRIOR_FAILURES, PRIOR_ATTEMPTS = 1.0, 4.0  # Beta prior of the smoothed failure rate
HISTORY_WINDOW = 20
LIVE_WINDOW = 6
# The sensor scores a step from its newest samples only (MetricsStore.recent_samples, per_step=12),
# so the sample count is capped at that many, in training as at scoring time.
SCORED_SAMPLES = 12

FEATURE_NAMES: tuple[str, ...] = (
    "hist_n", "hist_fail_rate", "last_failed", "consecutive_failures", "log_since_last_failure_s",
    "hist_duration_p50", "hist_duration_p90", "hist_peak_rss_p50",
    "elapsed_s", "elapsed_ratio", "log_rss", "rss_ratio", "rss_slope_ratio", "cpu_util",
    "work_rate_ratio", "input_ratio", "n_samples",
)


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def history_features(history: Sequence[Mapping[str, Any]], started_at: float) -> dict[str, float]:
    """Features of the (job, step) history before ``started_at``; ``history`` is sorted by end time."""
    past = [h for h in history if h["ended_at"] < started_at][-HISTORY_WINDOW:]
    failed = [h["outcome"] in FAILED_OUTCOMES for h in past]
    consecutive = 0
    for f in reversed(failed):
        if not f:
            break
        consecutive += 1
    last_failure = max((h["ended_at"] for h, f in zip(past, failed) if f), default=None)
    ok = [h for h, f in zip(past, failed) if not f]
    durations = [h["duration_s"] for h in ok if h.get("duration_s") is not None]
    rss = [h["peak_rss_bytes"] for h in ok if h.get("peak_rss_bytes")]
    rates = [h["work_units"] / h["duration_s"] for h in ok
             if h.get("work_units") and h.get("duration_s")]
    inputs = [h["input_bytes"] for h in past if h.get("input_bytes")]
    return {
        "hist_n": float(len(past)),
        "hist_fail_rate": (sum(failed) + PRIOR_FAILURES) / (len(past) + PRIOR_ATTEMPTS),
        "last_failed": float(failed[-1]) if failed else math.nan,
        "consecutive_failures": float(consecutive),
        "log_since_last_failure_s": math.log1p(started_at - last_failure) if last_failure else math.nan,
        "hist_duration_p50": _quantile(durations, 0.5),
        "hist_duration_p90": _quantile(durations, 0.9),
        "hist_peak_rss_p50": _quantile(rss, 0.5),
        "_hist_work_rate": _quantile(rates, 0.5),
        "_hist_input_bytes": _quantile(inputs, 0.5),
    }


def live_features(samples: Sequence[Mapping[str, Any]], elapsed_s: float,
                  hist: Mapping[str, float]) -> dict[str, float]:
    """Features of the attempt's samples so far (oldest first) at ``elapsed_s`` seconds in."""
    recent = list(samples)[-LIVE_WINDOW:]
    p50 = hist.get("hist_duration_p50", math.nan)
    rss_p50 = hist.get("hist_peak_rss_p50", math.nan)
    rss = recent[-1]["rss_bytes"] if recent and recent[-1].get("rss_bytes") else math.nan
    slope = cpu_util = work_rate = math.nan
    if len(recent) >= 2:
        a, b = recent[0], recent[-1]
        dt = b["elapsed_s"] - a["elapsed_s"]
        if dt > 0:
            if a.get("rss_bytes") and b.get("rss_bytes"):
                slope = (b["rss_bytes"] - a["rss_bytes"]) / dt
            if a.get("cpu_s") is not None and b.get("cpu_s") is not None:
                cpu_util = (b["cpu_s"] - a["cpu_s"]) / dt
            if a.get("work_units") is not None and b.get("work_units") is not None:
                work_rate = (b["work_units"] - a["work_units"]) / dt
    hist_rate = hist.get("_hist_work_rate", math.nan)
    hist_input = hist.get("_hist_input_bytes", math.nan)
    input_bytes = next((s["input_bytes"] for s in reversed(recent) if s.get("input_bytes")), None)
    return {
        "elapsed_s": elapsed_s,
        "elapsed_ratio": elapsed_s / p50 if p50 and p50 > 0 else math.nan,
        "log_rss": math.log(rss) if rss and rss > 0 else math.nan,
        "rss_ratio": rss / rss_p50 if rss_p50 and rss_p50 > 0 else math.nan,
        # RSS growth per second, relative to the step's typical peak: a step that will double its
        # usual footprint within a few seconds is heading for its memory cap.
        "rss_slope_ratio": slope / rss_p50 if rss_p50 and rss_p50 > 0 else math.nan,
        "cpu_util": cpu_util,
        "work_rate_ratio": work_rate / hist_rate if hist_rate and hist_rate > 0 else math.nan,
        # input size relative to the step's usual input (from the checkpoint IO manager)
        "input_ratio": input_bytes / hist_input if input_bytes and hist_input and hist_input > 0 else math.nan,
        "n_samples": float(min(len(samples), SCORED_SAMPLES)),
    }


def feature_row(history: Sequence[Mapping[str, Any]], started_at: float,
                samples: Sequence[Mapping[str, Any]], elapsed_s: float) -> dict[str, float]:
    """The model's input for one attempt at one moment (keys in FEATURE_NAMES order)."""
    hist = history_features(history, started_at)
    row = {**hist, **live_features(samples, elapsed_s, hist)}
    return {name: float(row[name]) for name in FEATURE_NAMES}


def training_rows(attempts: Sequence[Mapping[str, Any]],
                  samples_by_attempt: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]],
                  points_per_attempt: int = 8) -> tuple[list[dict[str, float]], list[int], list[float], list[float]]:
    """Rows, labels (1 = the attempt failed), the attempt start times, and remaining seconds.

    Each attempt contributes a row at its start and at up to ``points_per_attempt`` of its samples,
    each built only from what was known at that moment.
    """
    by_step: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for a in sorted(attempts, key=lambda a: a["ended_at"]):
        by_step.setdefault((a["job"], a["step_key"]), []).append(a)
    rows, labels, times, remaining = [], [], [], []
    for a in attempts:
        if a["outcome"] not in FAILED_OUTCOMES and a["outcome"] != "success":
            continue
        history = by_step[(a["job"], a["step_key"])]
        samples = list(samples_by_attempt.get((a["run_id"], a["step_key"]), ()))
        label = int(a["outcome"] in FAILED_OUTCOMES)
        stride = max(1, math.ceil(len(samples) / points_per_attempt))
        moments = [(0, 0.0)] + [(i + 1, samples[i]["elapsed_s"]) for i in range(0, len(samples), stride)]
        for n_seen, elapsed in moments:
            rows.append(feature_row(history, a["started_at"], samples[:n_seen], elapsed))
            labels.append(label)
            times.append(a["started_at"])
            remaining.append(max(0.0, a["duration_s"] - elapsed))
    return rows, labels, times, remaining


COMPUTE_STAGE = "dagster/compute"


def bottleneck_stages(stage_durations: Mapping[str, float], top: int = 2) -> list[str]:
    """The stages that took most of the time, longest first. Named stages run inside
    ``dagster/compute``, so it competes only when the op names none."""
    named = any(not name.startswith("dagster/") for name in stage_durations)
    candidates = {k: v for k, v in stage_durations.items() if not (named and k == COMPUTE_STAGE)}
    return [name for name, _ in sorted(candidates.items(), key=lambda kv: -kv[1])[:top]]
