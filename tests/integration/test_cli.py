"""The ``predcheck checkpoints`` commands on a real checkpoint store."""

import json
from pathlib import Path

from click.testing import CliRunner

import predcheck_dagster as pc
from predcheck_dagster.cli import main


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
