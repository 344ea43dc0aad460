"""The README's "Add predcheck to an existing project" snippet runs as printed."""

import re
from pathlib import Path

from dagster import Definitions

import predcheck_dagster as pc

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Add predcheck to an existing project"


def _python_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index(SECTION):]
    section = section[: section.index("\n## ", len(SECTION))]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_opens_with_the_two_commands() -> None:
    head = README.read_text().splitlines()[:15]
    assert any(line.startswith("make demo") for line in head)
    assert any(line.startswith("make test") for line in head)


def test_instrument_snippet_runs_and_records_steps(dagster_home, instance) -> None:
    blocks = _python_blocks()
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - the README is ours
    defs = namespace["defs"]
    assert isinstance(defs, Definitions)
    assert {s.name for s in defs.sensors} >= {"predcheck_forecast_sensor", "predcheck_resume_sensor"}
    job = defs.get_job_def("nightly")
    assert pc.predcheck_hooks <= set(job.hook_defs)

    result = job.execute_in_process(instance=instance)
    assert result.success
    store = pc.PredcheckResource().metrics_store()
    [row] = store.step_runs(job="nightly")
    assert row["outcome"] == "success" and row["measured_by"] == "profiler"

    for block in blocks[1:]:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    assert isinstance(namespace["defs"], Definitions)


def test_configuration_reference_is_generated_from_the_current_config() -> None:
    import subprocess
    import sys

    root = README.parent
    generated = subprocess.run([sys.executable, str(root / "docs" / "gen_config_reference.py")], cwd=root,
                               capture_output=True, text=True, check=True).stdout
    assert generated == (root / "docs" / "configuration.md").read_text(), (
        "docs/configuration.md is stale: run .venv/bin/python docs/gen_config_reference.py > docs/configuration.md")
