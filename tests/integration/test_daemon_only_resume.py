"""A deployment where only the daemon runs (no webserver): Dagster's run-retries daemon
re-executes the failed run from failure, and the re-executed step rebuilds its resume plan from
the store: it restores its checkpoint and adapts (half the batch) without a plan in run config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus

import predcheck_dagster as pc
from predcheck_dagster.resume_service import resume_tick

from .webserver import stop_process_group, wait_until

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def test_run_retries_daemon_resumes_with_a_plan_rebuilt_from_the_store(dagster_home: Path, tmp_path: Path) -> None:
    (dagster_home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n"
        "run_retries:\n  enabled: true\n")
    store_url = f"sqlite:///{tmp_path}/metrics.db"
    config = tmp_path / "run.yaml"
    config.write_text(json.dumps({"ops": {"memory_hungry_transform": {"config": {"batch_size": 12}}},
                                  "resources": {"predcheck": {"config": {"store_url": store_url}}}}))
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home)}
    DagsterInstance.get().dispose()  # create the SQLite storage now, not in a race of daemon and launcher
    with open(tmp_path / "daemon.log", "w") as log:
        daemon = subprocess.Popen([str(bin_dir / "dagster-daemon"), "run", "-w", str(ROOT / "workspace.yaml")],
                                  cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        launch = subprocess.run([str(bin_dir / "dagster"), "job", "launch", "-w", str(ROOT / "workspace.yaml"),
                        "-j", "memory_job", "-c", str(config), "--tags",
                        json.dumps({"dagster/max_retries": "1", "dagster/retry_strategy": "FROM_FAILURE"})],
                       cwd=ROOT, env=env, check=False, capture_output=True, text=True, timeout=120)
        assert launch.returncode == 0, launch.stderr[-2000:]
        with DagsterInstance.get() as instance:
            parent = wait_until(lambda: next((r for r in instance.get_runs() if r.is_finished), None), 120, "the run")
            assert parent.status == DagsterRunStatus.FAILURE

            # our resume sensor leaves it to the daemon, and says so
            report = resume_tick(instance, pc.PredcheckResource(store_url=store_url, webserver_url=None), None)
            assert not report.launched
            assert "left to Dagster's run-retries daemon" in report.message()

            child = wait_until(lambda: next((r for r in instance.get_runs() if r.parent_run_id == parent.run_id), None),
                          120, "the daemon's retry")
            child = wait_until(lambda: (c := instance.get_run_by_id(child.run_id)).is_finished and c, 120, "the retry")
            assert child.status == DagsterRunStatus.SUCCESS
            assert "resume" not in child.run_config["resources"]["predcheck"]["config"]  # no plan in run config
            logs = "\n".join(e.user_message for e in instance.all_logs(child.run_id))
            assert "resume plan: batch size 12 -> 6" in logs
            assert f"restored 'memory_job/{parent.run_id}/memory_hungry_transform/ckpt-" in logs
            records = instance.get_records_for_run(child.run_id, of_type=DagsterEventType.STEP_OUTPUT).records
            assert records[0].event_log_entry.dagster_event.step_output_data.metadata["batch_size"].value == 6
    finally:
        stop_process_group(daemon)
