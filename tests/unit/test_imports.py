"""Import hygiene: the step side stays light, and the pure cores import no dagster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("mlflow", "torch", "xgboost", "great_expectations", "pandas", "sklearn")
PURE_CORES = ("policy", "checkpoint_store", "features", "resume_plan")

# Load submodules without running predcheck_dagster/__init__.py (which wires the dagster-facing
# parts), so only the submodules' own imports count.
BARE_PACKAGE = (
    "import sys, types; pkg = types.ModuleType('predcheck_dagster'); "
    f"pkg.__path__ = [{str(REPO / 'predcheck_dagster')!r}]; sys.modules['predcheck_dagster'] = pkg"
)


def modules_after(statement: str, watched: tuple[str, ...]) -> list[str]:
    """Which of ``watched`` a fresh interpreter has loaded after running ``statement``."""
    code = f"{statement}\nimport json, sys\nprint(json.dumps([m for m in {watched!r} if m in sys.modules]))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_step_side_does_not_import_heavy_modules():
    loaded = modules_after("import predcheck_dagster, predcheck_dagster.demo.pipelines", (*HEAVY, "dagster"))
    assert loaded == ["dagster"]  # the demo pipelines are dagster code; nothing heavier may come along


def test_pure_cores_do_not_import_dagster():
    imports = "\n".join(f"import predcheck_dagster.{m}" for m in PURE_CORES)
    assert modules_after(f"{BARE_PACKAGE}\n{imports}", ("dagster", "sqlalchemy", *HEAVY)) == []


def test_the_probe_sees_what_is_imported():
    """The checks above can fail: the same probe reports modules that are loaded."""
    assert modules_after(f"{BARE_PACKAGE}\nimport predcheck_dagster.policy, pandas", HEAVY) == ["pandas"]
    assert modules_after(f"{BARE_PACKAGE}\nimport predcheck_dagster.checkpointer", ("sqlalchemy",)) == \
        ["sqlalchemy"]
