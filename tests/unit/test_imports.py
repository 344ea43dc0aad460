"""Import hygiene: the step side stays light, and the pure cores import no dagster."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("mlflow", "torch", "xgboost", "great_expectations", "pandas", "sklearn")
PURE_CORES = ("policy", "checkpoint_store", "features", "resume_plan", "outcome", "profiler")

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


def test_a_step_process_importing_an_instrumented_module_loads_no_store_or_checkpoint_code():
    """A step process imports the user's module, which calls pc.instrument: that alone must not
    load the checkpoint store (fsspec), the metrics store (SQLAlchemy) or psutil; a step loads
    them when it needs them (psutil never: the profiler reads /proc itself)."""
    statement = ("import predcheck_dagster as pc\nfrom dagster import Definitions, job, op\n"
                 "@op\ndef a(): return 1\n@job\ndef j(): a()\n"
                 "defs = pc.instrument(Definitions(jobs=[j]))")
    loaded = modules_after(statement, (*HEAVY, "fsspec", "sqlalchemy", "psutil", "predcheck_dagster.metrics_store",
                                       "predcheck_dagster.checkpoint_store", "predcheck_dagster.forecaster"))
    assert loaded == []


def test_a_profiled_step_at_run_time_imports_no_heavy_modules(tmp_path):
    """The hooks, the event listener, the profiler and a checkpointer with a named stage, on a real
    run: still none of the heavy modules, and no psutil."""
    statement = (
        "import os, tempfile\n"
        f"os.environ['DAGSTER_HOME'] = {str(tmp_path)!r}\n"
        "import predcheck_dagster as pc\n"
        "from dagster import Definitions, DagsterInstance, OpExecutionContext, job, op\n"
        "@op\ndef a(context: OpExecutionContext, predcheck: pc.PredcheckResource) -> int:\n"
        "    ck = predcheck.checkpointer(context)\n"
        "    with ck.stage('s'):\n"
        "        ck.checkpoint({'i': 1})\n"
        "    return 1\n"
        "@job\ndef j(): a()\n"
        "defs = pc.instrument(Definitions(jobs=[j]), sensors=False)\n"
        "with DagsterInstance.ephemeral() as instance:\n"
        "    assert defs.get_job_def('j').execute_in_process(instance=instance).success\n"
        "[row] = pc.PredcheckResource().metrics_store().step_runs()\n"
        "assert row['measured_by'] == 'profiler' and row['outcome'] == 'success', row\n"
    )
    assert modules_after(statement, (*HEAVY, "psutil")) == []


def test_pure_cores_do_not_import_dagster():
    imports = "\n".join(f"import predcheck_dagster.{m}" for m in PURE_CORES)
    assert modules_after(f"{BARE_PACKAGE}\n{imports}", ("dagster", "sqlalchemy", *HEAVY)) == []


def test_the_probe_sees_what_is_imported():
    """The checks above can fail: the same probe reports modules that are loaded."""
    assert modules_after(f"{BARE_PACKAGE}\nimport predcheck_dagster.policy, pandas", HEAVY) == ["pandas"]
    assert modules_after(f"{BARE_PACKAGE}\nimport predcheck_dagster.checkpointer", ("sqlalchemy",)) == \
        ["sqlalchemy"]
