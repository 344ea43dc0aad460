"""`predcheck demo --headless` closes the whole loop on real Dagster, MLflow and fsspec storage:
seeded history with real failures, a trained and registered champion, a run flagged by the
forecast sensor that checkpoints before its SIGKILL, and resumes that finish from checkpoints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_headless_demo_closes_the_loop(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDCHECK_")}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "predcheck"), "demo", "--headless", "--quick", "--home", str(home)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    (tmp_path / "demo.log").write_text(proc.stdout + proc.stderr)
    summary = proc.stdout[proc.stdout.index("predcheck demo summary"):]
    assert proc.returncode == 0, summary
    assert "loop closed           yes" in summary

    figures = dict(re.findall(r"^  ([a-z ]+?)\s{2,}(.+)$", summary, flags=re.M))
    assert int(figures["runs flagged risky"]) >= 1
    assert re.match(r"\d+ \(([1-9]\d*) preemptive\)", figures["checkpoints written"])
    resumes, succeeded = map(int, re.match(r"(\d+) \((\d+) succeeded\)", figures["resumes"]).groups())
    assert resumes == succeeded >= 2
    assert float(figures["units of work saved"]) > 0
    assert figures["champion model"] == "v1"

    # the embedded defaults all live under DAGSTER_HOME/predcheck
    assert {p.name for p in (home / "predcheck").iterdir()} >= {"metrics.db", "mlflow.db", "mlartifacts", "checkpoints"}


def test_headless_demo_outside_a_project_says_what_to_do(tmp_path: Path) -> None:
    proc = subprocess.run([str(Path(sys.executable).parent / "predcheck"), "demo", "--headless"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert ("workspace file 'workspace.yaml' not found: run from the project folder or pass --workspace PATH"
            in proc.stderr)
