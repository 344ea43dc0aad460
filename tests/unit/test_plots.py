"""Report figures: each writes a real PNG, also for one-class label sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from predcheck_dagster.errors import EvaluationInputError
from predcheck_dagster.plots import plot_calibration, plot_pr_curves, plot_waste_by_policy

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MIN_BYTES = 5_000


def assert_png(written: str, expected: Path) -> None:
    assert written == str(expected)
    data = expected.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > MIN_BYTES
    assert not list(expected.parent.glob(".*.partial"))  # the temporary name was moved into place


@pytest.fixture
def scored():
    rng = np.random.default_rng(0)
    labels = (rng.uniform(size=400) < 0.2).astype(int)
    model = np.clip(0.15 + 0.5 * labels + rng.normal(0, 0.2, 400), 0, 1)
    baseline = np.full(400, labels.mean())
    return labels, {"xgboost": model, "per-pipeline rate": baseline}


def test_pr_curves_png(tmp_path, scored):
    labels, scores = scored
    assert_png(plot_pr_curves(labels, scores, tmp_path / "figs" / "pr.png", "PR: fail"), tmp_path / "figs" / "pr.png")


def test_calibration_png(tmp_path, scored):
    labels, scores = scored
    assert_png(plot_calibration(labels, scores, tmp_path / "cal.png", "Calibration: fail"), tmp_path / "cal.png")


def test_waste_by_policy_png(tmp_path):
    waste = {"none": 5400.0, "young": 1260.0, "daly": 1190.5, "predictive (aupy)": 610.0}
    assert_png(plot_waste_by_policy(waste, tmp_path / "waste.png", "Waste, 30 days"), tmp_path / "waste.png")


@pytest.mark.parametrize("only", [0, 1])
def test_one_class_labels_are_drawn_without_raising(tmp_path, only):
    labels = [only] * 50
    scores = {"model": np.linspace(0, 1, 50), "constant": [0.3] * 50}
    assert_png(plot_pr_curves(labels, scores, tmp_path / "pr.png", "PR"), tmp_path / "pr.png")
    assert_png(plot_calibration(labels, scores, tmp_path / "cal.png", "Cal"), tmp_path / "cal.png")


def test_an_existing_figure_is_replaced(tmp_path, scored):
    labels, scores = scored
    target = tmp_path / "pr.png"
    target.write_bytes(b"old")
    plot_pr_curves(labels, scores, target, "PR")
    assert target.read_bytes()[:8] == PNG_MAGIC


def test_bad_input_is_refused_with_a_clear_message(tmp_path):
    with pytest.raises(EvaluationInputError, match=r"2 labels but 3 probabilities"):
        plot_pr_curves([0, 1], {"m": [0.1, 0.2, 0.3]}, tmp_path / "pr.png", "PR")
    with pytest.raises(EvaluationInputError, match=r"no scores to plot"):
        plot_calibration([0, 1], {}, tmp_path / "cal.png", "Cal")
    with pytest.raises(EvaluationInputError, match=r"got no policies"):
        plot_waste_by_policy({}, tmp_path / "w.png", "W")
    with pytest.raises(EvaluationInputError, match=r"finite and >= 0, got \{'young': -1\.0\}"):
        plot_waste_by_policy({"young": -1.0}, tmp_path / "w.png", "W")
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_path_that_is_not_a_regular_file_is_refused(tmp_path):
    (tmp_path / "figs").mkdir()
    with pytest.raises(EvaluationInputError, match=r"figs': it exists and is not a regular file"):
        plot_waste_by_policy({"young": 1.0}, tmp_path / "figs", "W")
    assert (tmp_path / "figs").is_dir() and not list(tmp_path.glob(".*.partial"))


def test_matplotlib_is_imported_lazily_and_pyplot_never(tmp_path):
    import subprocess
    import sys

    code = ("import sys, predcheck_dagster.plots as p; before = 'matplotlib' in sys.modules; "
            "p.plot_waste_by_policy({'a': 1.0}, sys.argv[1], 't'); "
            "print(before, 'matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "w.png")], capture_output=True, text=True,
                         timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]
