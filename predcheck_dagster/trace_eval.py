"""Judge the forecaster on real execution traces: ``predcheck trace-eval`` (pure: no dagster).

A trace (Google 2011 job events, any SWF log, FlowBench runs; see ``traces``) becomes attempts;
``features.history_rows`` builds each attempt's row at its start from what had *ended* before it;
both model families train on the period before ``--split-at`` (rows whose attempt ended before
it) and are scored on the attempts that *started* after it, next to the baselines:

    - last outcome: did the pipeline's previous attempt fail (``fail``) / overrun (``overrun``);
    - smoothed per-pipeline rate: Beta(1, 4)-smoothed failure rate of the last 20 attempts
      (``fail``), the overrun rate of the last 20 attempts (``overrun``);
    - Tsafrir (``overrun`` only): the mean of the user's last two runtimes against the requested
      time (Tsafrir, Etsion & Feitelson, IEEE TPDS 2007), as ``min(1, mean / requested)``.

Reported for each: AUROC, AUPRC, Brier score and expected calibration error, overall and on the
subset "first failure after a success" (attempts whose pipeline's previous attempt ended well:
repeats are easy, this subset is not).

Labels: ``fail`` = the attempt ended in failure (``failure`` or ``crashed``; a cancellation is
not a failure); ``overrun`` = ran >= 0.99 x its requested time, or, where no time was requested,
> 1.5 x the pipeline's median successful duration before it (``features.overran``); attempts
whose overrun cannot be told are left out.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from predcheck_dagster import features
from predcheck_dagster.errors import ConfigError
from predcheck_dagster.evaluation import classification_metrics
from predcheck_dagster.models import FAMILIES, TrainingData, fit_family

LABELS = ("fail", "overrun")
BASELINES = {"fail": ("last_outcome", "smoothed_rate"), "overrun": ("last_outcome", "smoothed_rate", "tsafrir")}
SUBSET = "first_failure_after_success"
_SPLIT = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([smhd]?)\s*$")
_UNIT = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass
class Split:
    """Where training ends: a time in the trace's clock, or a fraction of attempts by start."""

    at: float | None = None
    fraction: float | None = None

    @classmethod
    def parse(cls, text: str) -> Split:
        """``0.75`` (a fraction), ``17d`` / ``36h`` / ``1468800`` (trace time, seconds by default)."""
        m = _SPLIT.match(str(text))
        if not m:
            raise ConfigError(f"--split-at {text!r} is neither a fraction (0.75) nor a trace time "
                              "(1468800, 17d, 36h): pass one of those.")
        value, unit = float(m.group(1)), m.group(2)
        if not unit and 0 < value < 1:
            return cls(fraction=value)
        return cls(at=value * _UNIT[unit])

    def time_in(self, starts: np.ndarray) -> float:
        if self.at is not None:
            return self.at
        return float(np.sort(starts)[int(len(starts) * self.fraction)])


def attempts_of(frame: Any) -> list[dict[str, Any]]:
    """History-frame rows as attempts for ``features`` (static ``x_*`` attributes kept)."""
    statics = [c for c in frame.columns if c.startswith("x_")]
    cols = ["pipeline", "group", "started_at", "ended_at", "duration_s", "outcome", "requested_s", *statics]
    return [dict(zip(cols, values)) for values in zip(*(frame[c].tolist() for c in cols))]


def build_rows(attempts: Sequence[dict[str, Any]], progress: Callable[[int], None] | None = None) -> Any:
    """The model input of every attempt at its start, as a float32 DataFrame aligned with ``attempts``.

    Rows go straight into one preallocated array (a dict per row for 670k Google jobs would take
    gigabytes).
    """
    import pandas as pd

    statics = sorted({k for a in attempts[:1] for k in a if k.startswith("x_")})
    names = [*features.MODEL_INPUT_NAMES, *statics]
    matrix = np.full((len(attempts), len(names)), np.nan, dtype=np.float32)

    def sink(i: int, row: dict[str, float]) -> None:
        matrix[i] = [row.get(name, np.nan) for name in names]

    features.history_rows(attempts, progress=progress, sink=sink)
    return pd.DataFrame(matrix, columns=names, copy=False)


def labels_of(label: str, attempts: Sequence[dict[str, Any]], rows: Any) -> np.ndarray:
    """1.0 / 0.0 per attempt, NaN where the label cannot be told."""
    if label == "fail":
        return np.array([float(a["outcome"] in features.FAILED_OUTCOMES) for a in attempts])
    medians = rows["hist_duration_p50"].to_numpy()
    return np.array([features.overran(a, m) for a, m in zip(attempts, medians)])


def baseline_scores(label: str, rows: Any, base_rate: float) -> dict[str, np.ndarray]:
    """The baselines' probabilities (unknown history -> the training base rate)."""
    fill = lambda a: np.where(np.isnan(a), base_rate, a)  # noqa: E731
    if label == "fail":
        return {"last_outcome": fill(rows["last_failed"].to_numpy()),
                "smoothed_rate": rows["hist_fail_rate"].to_numpy()}
    return {"last_outcome": fill(rows["last_overran"].to_numpy()),
            "smoothed_rate": fill(rows["hist_overrun_rate"].to_numpy()),
            "tsafrir": fill(np.minimum(rows["group_tsafrir_ratio"].to_numpy(), 1.0))}


def subset_mask(label: str, rows: Any) -> np.ndarray:
    """Attempts whose pipeline's previous attempt ended well (did not fail / did not overrun)."""
    previous = rows["last_failed" if label == "fail" else "last_overran"].to_numpy()
    return previous == 0.0


def evaluate(frame: Any, label: str, split: Split, families: Sequence[str] = FAMILIES,
             log: Callable[[str], None] = print, progress: bool = True) -> dict[str, Any]:
    """Train before the split, score after it; the results as a JSON-ready dict."""
    if label not in LABELS:
        raise ConfigError(f"--label {label!r}: choose one of {LABELS}")
    for family in families:
        if family not in FAMILIES:
            raise ConfigError(f"model family {family!r}: choose from {FAMILIES}")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    attempts = attempts_of(frame)
    bar = _bar(len(attempts), "features", progress)
    rows = build_rows(attempts, progress=lambda n: bar.update(n - bar.n))
    bar.update(len(attempts) - bar.n)
    bar.close()
    timings["features_s"] = time.perf_counter() - t0
    y = labels_of(label, attempts, rows)
    starts, ends = frame["started_at"].to_numpy(float), frame["ended_at"].to_numpy(float)
    cut = split.time_in(starts)
    known = ~np.isnan(y)
    train = known & (ends < cut)
    test = known & (starts >= cut)
    if not train.any() or not test.any():
        raise ConfigError(f"--split-at leaves {int(train.sum())} training and {int(test.sum())} test attempts "
                          f"(split at {cut:.0f}s; trace spans {starts.min():.0f}s..{ends.max():.0f}s): move it.")
    base_rate = float(np.mean(y[train]))
    log(f"{int(train.sum())} training attempts (base rate {base_rate:.4f}), {int(test.sum())} test attempts "
        f"(base rate {float(np.mean(y[test])):.4f}); split at {cut:.0f}s")
    train_rows, test_rows = rows[train].reset_index(drop=True), rows[test].reset_index(drop=True)
    data = TrainingData(train_rows, {"failure" if label == "fail" else "overrun": y[train]},
                        starts[train], ends[train])
    target = "failure" if label == "fail" else "overrun"
    scores = baseline_scores(label, test_rows, base_rate)
    for family in families:
        t1 = time.perf_counter()
        model = fit_family(family, data, progress=log)
        timings[f"train_{family}_s"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        scores[family] = model.predict(test_rows)[f"{target}_probability"].to_numpy()
        timings[f"score_{family}_s"] = time.perf_counter() - t1
    y_test = y[test]
    subset = subset_mask(label, test_rows)
    results = {name: {"overall": classification_metrics(y_test, s),
                      SUBSET: classification_metrics(y_test[subset], s[subset])} for name, s in scores.items()}
    timings["total_s"] = time.perf_counter() - t0
    return {"label": label, "split_at_s": cut, "n_train": int(train.sum()), "n_test": int(test.sum()),
            "train_base_rate": base_rate, "test_base_rate": float(np.mean(y_test)),
            "n_subset": int(subset.sum()), "models": list(families), "results": results, "timings": timings,
            "_scores": scores, "_labels": y_test, "_subset": subset}


def table(result: dict[str, Any]) -> str:
    """The results as a plain-text table (one line per model and baseline)."""
    head = f"{'model':16s} {'AUROC':>7s} {'AUPRC':>7s} {'Brier':>7s} {'ECE':>7s} | first failure after a success: " \
           f"{'AUROC':>7s} {'AUPRC':>7s}"
    lines = [head, "-" * len(head)]
    fmt = lambda v: "    n/a" if v is None or v != v else f"{v:7.3f}"  # noqa: E731
    for name, r in result["results"].items():
        o, s = r["overall"], r[SUBSET]
        lines.append(f"{name:16s} {fmt(o['auroc'])} {fmt(o['auprc'])} {fmt(o['brier'])} {fmt(o['ece'])} | "
                     f"{'':31s}{fmt(s['auroc'])} {fmt(s['auprc'])}")
    return "\n".join(lines)


def write_outputs(result: dict[str, Any], output: str, meta: dict[str, Any]) -> list[str]:
    """The JSON results at ``output``, PR and calibration plots beside it; the paths written."""
    from predcheck_dagster.plots import plot_calibration, plot_pr_curves

    public = {k: v for k, v in result.items() if not k.startswith("_")}
    payload = json.loads(json.dumps({**meta, **public}, default=_jsonable), parse_constant=lambda _: None)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output, "w") as f:
        json.dump(payload, f, indent=2, allow_nan=False)
    stem = os.path.splitext(output)[0]
    title = f"{meta.get('format', '')} {result['label']} (test period)"
    return [output, plot_pr_curves(result["_labels"], result["_scores"], f"{stem}_pr.png", title),
            plot_calibration(result["_labels"], result["_scores"], f"{stem}_calibration.png", title)]


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return None if isinstance(v, np.floating) and math.isnan(v) else v.item()
    raise TypeError(type(v))


def _bar(total: int, what: str, progress: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=what, unit="attempt", file=sys.stderr, disable=None if progress else True,
                mininterval=1.0)
