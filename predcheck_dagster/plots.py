"""Report figures for the forecaster: PR curves, reliability diagrams, waste per checkpoint policy.

matplotlib is imported inside each function (it costs ~0.3 s) and used through its object API
(``Figure`` + the Agg canvas), never ``pyplot``: no global backend switch, no figure registry to
leak, safe in a Dagster step or a sensor thread. Each function writes one PNG and returns its path.

Guarantees:
    - A figure is written to a temporary name and moved into place: a reader never sees half a PNG.
    - One-class label sets (no failures, or only failures) are drawn without raising; the figure
      says why a curve is missing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from predcheck_dagster.errors import EvaluationInputError
from predcheck_dagster.evaluation import DEFAULT_BINS, calibration_table, classification_metrics

FIGSIZE = (6.4, 4.8)
DPI = 110


def plot_pr_curves(labels: Sequence[int], scores: Mapping[str, Sequence[float]], path: str | os.PathLike[str],
                   title: str = "Precision-recall") -> str:
    """One precision-recall curve per model or baseline, its average precision in the legend.

    The horizontal line at the base rate (fraction of failed attempts) is what a random score gets.

    Args:
        labels: 1 for a failed attempt, 0 for a success.
        scores: name -> failure probabilities (or any score where higher means riskier), aligned with labels.
        path: where to write the PNG; parent folders are created.

    Returns:
        ``str(path)``.
    """
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(labels, dtype=float).ravel()
    checked = _checked_scores(scores)
    metrics = {name: classification_metrics(y, s) for name, s in checked.items()}
    fig, ax = _figure()
    positives = int(y.sum())
    if 0 < positives < len(y):
        for name, s in checked.items():
            precision, recall, _ = precision_recall_curve(y, s)
            ax.step(recall, precision, where="post", label=f"{name} (AP {metrics[name]['auprc']:.3f})")
        base_rate = positives / len(y)
        ax.axhline(base_rate, color="grey", linestyle="--", linewidth=1, label=f"base rate {base_rate:.3f}")
        ax.legend(loc="upper right", fontsize="small")
    else:
        _note(ax, f"{len(y)} attempts, {positives} failures: one class only, precision-recall undefined")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall (failures caught)", ylabel="precision (flags that failed)",
           title=title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_calibration(labels: Sequence[int], scores: Mapping[str, Sequence[float]], path: str | os.PathLike[str],
                     title: str = "Calibration", n_bins: int = DEFAULT_BINS) -> str:
    """Reliability diagram (observed failure rate per predicted-probability bin) over a histogram of the scores.

    Each model's expected calibration error is in the legend; a perfectly calibrated model lies on
    the diagonal. The same equal-width bins as ``evaluation.calibration_table``.

    Returns:
        ``str(path)``.
    """
    y = np.asarray(labels, dtype=float).ravel()
    checked = _checked_scores(scores)
    fig, (top, bottom) = _figure(rows=2)
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfectly calibrated")
    edges = np.linspace(0, 1, n_bins + 1)
    for name, s in checked.items():
        table = [row for row in calibration_table(y, s, n_bins) if row["count"]]
        ece = classification_metrics(y, s, n_bins)["ece"]
        line, = top.plot([row["mean_predicted"] for row in table], [row["observed_rate"] for row in table],
                         marker="o", label=f"{name} (ECE {ece:.3f})")
        bottom.hist(s, bins=edges, histtype="step", linewidth=1.5, color=line.get_color(), label=name)
    positives = int(y.sum())
    if len(y) and positives in (0, len(y)):
        _note(top, f"one class only ({positives} of {len(y)} failed): every observed rate is {int(positives > 0)}")
    top.set(xlim=(0, 1), ylim=(-0.02, 1.02), ylabel="observed failure rate", title=title)
    top.legend(loc="upper left", fontsize="small")
    top.grid(alpha=0.3)
    bottom.set(xlim=(0, 1), xlabel="predicted failure probability", ylabel="attempts")
    bottom.grid(alpha=0.3)
    return _save(fig, path)


def plot_waste_by_policy(waste: Mapping[str, float], path: str | os.PathLike[str],
                         title: str = "Wasted work by checkpoint policy") -> str:
    """Bar chart: seconds of lost plus checkpoint work per checkpoint policy, in the mapping's order.

    Args:
        waste: policy name -> wasted seconds (re-done work after failures + time spent checkpointing).

    Returns:
        ``str(path)``.
    """
    if not waste:
        raise EvaluationInputError("plot_waste_by_policy got no policies: pass {policy name: wasted seconds}")
    values = np.asarray([float(v) for v in waste.values()])
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise EvaluationInputError(f"wasted seconds must be finite and >= 0, got {dict(waste)!r}")
    names = list(waste)
    fig, ax = _figure(height=max(2.5, 0.55 * len(names) + 1.5))
    positions = np.arange(len(names))[::-1]  # first policy on top
    bars = ax.barh(positions, values, color=[f"C{i % 10}" for i in range(len(names))])
    ax.bar_label(bars, labels=[_seconds(v) for v in values], padding=3, fontsize="small")
    ax.set_yticks(positions, labels=names)
    ax.set(xlabel="wasted seconds (lost work + checkpoint cost)", title=title)
    ax.set_xlim(0, max(values.max(), 1.0) * 1.15)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def _figure(rows: int = 1, height: float | None = None) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    if rows == 1:
        fig = Figure(figsize=(FIGSIZE[0], height or FIGSIZE[1]), dpi=DPI, layout="constrained")
        return fig, fig.subplots()
    fig = Figure(figsize=(FIGSIZE[0], FIGSIZE[1] * 1.3), dpi=DPI, layout="constrained")
    return fig, fig.subplots(rows, 1, sharex=True, height_ratios=[3, 1])


def _save(fig: Any, path: str | os.PathLike[str]) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    target = Path(path)
    if target.exists() and not target.is_file():  # os.replace would swap out a directory entry such as a device
        raise EvaluationInputError(f"cannot write a figure to {str(target)!r}: it exists and is not a regular file; "
                                   "pass a path for a new or existing .png file")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    FigureCanvasAgg(fig).print_png(str(partial))
    os.replace(partial, target)
    return str(target)


def _checked_scores(scores: Mapping[str, Sequence[float]]) -> dict[str, np.ndarray]:
    if not scores:
        raise EvaluationInputError("no scores to plot: pass {model or baseline name: probabilities}")
    return {name: np.asarray(s, dtype=float).ravel() for name, s in scores.items()}


def _note(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize="small", wrap=True,
            bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.8})


def _seconds(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.1f} h"
    if value >= 60:
        return f"{value / 60:.1f} min"
    return f"{value:.1f} s"
