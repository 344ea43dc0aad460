"""The ``predcheck`` command line: every command's help, exit codes and errors, and the
``checkpoints``, ``status`` and ``train`` commands on real stores and instances."""

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import predcheck_dagster as pc
from predcheck_dagster.cli import main

ROOT = Path(__file__).resolve().parents[2]
MODEL_CODE = str(ROOT / "mlflow_models" / "forecaster.py")


def _store_with_checkpoints(root: Path) -> tuple[pc.CheckpointStore, str]:
    store = pc.CheckpointStore(str(root), retention=10)
    stream = store.step_stream("etl", "root1", "load")
    prediction = pc.Prediction(failure_probability=0.8, predicted_remaining_s=12.0)
    for i in range(4):
        store.write({"i": i}, stream=stream, job="etl", run_id="root1", root_run_id="root1", step_key="load",
                    kind="preemptive" if i == 3 else "periodic", prediction=prediction if i == 3 else None)
    return store, stream


def test_list_show_and_gc(tmp_path: Path, dagster_home: Path) -> None:
    root = tmp_path / "ckpts"
    store, stream = _store_with_checkpoints(root)
    (root / "etl/root1/load/ckpt-000002/payload.json").write_text('{"i": 99}')  # tampered
    runner = CliRunner()

    listed = runner.invoke(main, ["checkpoints", "list", "--root", str(root)])
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines()[0].startswith("etl/root1/load/ckpt-000001  periodic")
    assert "etl/root1/load/ckpt-000004  preemptive" in listed.output and "p_fail=0.80" in listed.output

    shown = runner.invoke(main, ["checkpoints", "show", "etl/root1/load/ckpt-000004", "--root", str(root)])
    assert shown.exit_code == 0 and json.loads(shown.output)["prediction"]["failure_probability"] == 0.8

    refused = runner.invoke(main, ["checkpoints", "show", "etl/root1/load/ckpt-000002", "--root", str(root)])
    assert refused.exit_code == 1
    assert "payload fails its sha256 check (tampered or torn)" in refused.output

    gc = runner.invoke(main, ["checkpoints", "gc", "--keep", "1", "--root", str(root)])
    assert gc.exit_code == 0 and gc.output.strip() == "removed 3 checkpoint(s)"
    assert [m.seq for m in store.list(stream)] == [4]

    bad = runner.invoke(main, ["checkpoints", "show", "../../etc/passwd", "--root", str(root)])
    assert bad.exit_code == 1 and "is malformed" in bad.output


# ---- every command: --help, exit codes, errors that say what to do --------------------------------
def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, command in sorted(group.commands.items()):
        out.append(((*path, name), command))
        if isinstance(command, click.Group):
            out.extend(_commands(command, (*path, name)))
    return out


def test_every_command_has_help_and_documents_every_option() -> None:
    commands = _commands(main)
    assert {" ".join(p) for p, _ in commands} >= {
        "status", "train", "trace-eval", "import-history", "checkpoints", "checkpoints list", "checkpoints show",
        "checkpoints gc", "demo", "store", "store migrate", "store flush", "store compact"}
    for path, command in [((), main), *commands]:
        result = CliRunner().invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert result.output.startswith(f"Usage: main {' '.join(path)}".rstrip()), result.output
        assert (command.help or "").strip(), f"`predcheck {' '.join(path)}` has no help text"
        undocumented = [p.name for p in command.params if isinstance(p, click.Option) and not p.help]
        assert not undocumented, f"`predcheck {' '.join(path)}` options without help: {undocumented}"


def test_the_installed_entry_point_answers_version_and_usage_errors() -> None:
    predcheck = str(Path(sys.executable).parent / "predcheck")
    version = subprocess.run([predcheck, "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.strip() == f"predcheck, version {pc_version()}"
    unknown = subprocess.run([predcheck, "stauts"], capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "No such command 'stauts'" in unknown.stderr


def pc_version() -> str:
    from importlib.metadata import version

    return version("predcheck-dagster")


@pytest.mark.parametrize("command", [["status"], ["import-history"]])
def test_commands_on_an_instance_need_dagster_home_and_say_so(command: list[str], monkeypatch) -> None:
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 2
    assert "DAGSTER_HOME is not set: point it at the instance" in result.output


def test_status_on_a_missing_home_and_on_an_idle_instance(dagster_home: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "nowhere"))
    missing = CliRunner().invoke(main, ["status"])
    assert missing.exit_code == 2
    assert f"DAGSTER_HOME {str(tmp_path / 'nowhere')!r} is not a directory" in missing.output

    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    idle = CliRunner().invoke(main, ["status", "--store-url", f"sqlite:///{tmp_path}/metrics.db"])
    assert idle.exit_code == 0, idle.output
    assert idle.output == f"no step in flight in the instance at {dagster_home}\n"

    bad = CliRunner().invoke(main, ["status", "--risk-threshold", "1.5"])
    assert bad.exit_code == 2 and "1.5 is not in the range 0.0<=x<=1.0" in bad.output


def test_status_on_an_unreachable_store_fails_with_the_reason(dagster_home: Path) -> None:
    url = "postgresql+psycopg2://predcheck@127.0.0.1:9/nothing"  # nothing listens on port 9
    result = CliRunner().invoke(main, ["status", "--store-url", url])
    assert result.exit_code == 1
    assert result.output.startswith(f"Error: metrics store {url!r} is unreachable or not writable (")
    assert "Check that the database is running and the URL (predcheck resource `store_url`) is right." in result.output


def test_checkpoints_list_on_an_empty_root_says_so(tmp_path: Path, dagster_home: Path) -> None:
    result = CliRunner().invoke(main, ["checkpoints", "list", "--root", str(tmp_path / "empty")])
    assert result.exit_code == 0
    assert result.stdout == ""  # nothing for a script to parse
    assert f"no checkpoints under {str(tmp_path / 'empty')!r}" in result.stderr


def test_train_on_too_little_history_says_what_to_do(tmp_path: Path, dagster_home: Path) -> None:
    store_url = f"sqlite:///{tmp_path}/metrics.db"
    result = CliRunner().invoke(main, ["train", "--store-url", store_url, "--tracking-uri",
                                       f"sqlite:///{tmp_path}/mlflow.db", "--model-code", MODEL_CODE])
    assert result.exit_code == 1
    assert (f"only 0 finished step attempts in {store_url!r}; need 8: run the pipelines more "
            "(e.g. `predcheck demo --headless`)") in result.output


@pytest.mark.slow
def test_train_reports_progress_on_stderr_and_the_decision_as_json(tmp_path: Path, dagster_home: Path) -> None:
    from predcheck_dagster.metrics_store import MetricsStore

    from .test_forecaster_mlflow import _synthetic_history

    store_url = f"sqlite:///{tmp_path}/metrics.db"
    _synthetic_history(MetricsStore(store_url))
    result = CliRunner().invoke(main, ["train", "--store-url", store_url, "--tracking-uri",
                                       f"sqlite:///{tmp_path}/mlflow.db", "--model-code", MODEL_CODE])
    assert result.exit_code == 0, result.output
    decision = json.loads(result.stdout)  # stdout holds the decision only
    assert decision["model_version"] == "1" and decision["promoted"] is True
    assert decision["reason"] == "promoted xgboost v1: no champion existed"
    progress = result.stderr.splitlines()
    assert any(line.startswith("xgboost failure: ") and " trees on " in line for line in progress), progress
    assert "predcheck: registered predcheck-forecaster v1; promoted xgboost v1: no champion existed" in progress
