"""A long step killed by SIGKILL at ~70 % under the multiprocess executor resumes from its checkpoint.

Runs on a real Dagster instance and metrics store, first on SQLite, then on PostgreSQL.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, execute_job

from predcheck_dagster.resource import PredcheckResource
from predcheck_dagster.resume_service import ExecuteJobLauncher, resume_tick

pytestmark = pytest.mark.slow

UNITS = 40
UNIT_S = 0.05
INTERVAL_S = 0.25
KILL_FRACTION = 0.7


def _run_config(store_url: str, preempt: float | None) -> dict:
    return {
        "ops": {"prepare_input": {"config": {"seed": 3, "units": UNITS}},
                "preemptible_crunch": {"config": {"unit_s": UNIT_S, "spot_preemption": False,
                                                  "preempt_at_fraction": preempt}}},
        "resources": {"predcheck": {"config": {"store_url": store_url, "checkpoint_interval_s": INTERVAL_S,
                                               "sample_interval_s": 0.2}}},
    }


def _output_metadata(instance: DagsterInstance, run_id: str, step_key: str) -> dict:
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.STEP_OUTPUT).records
    for record in records:
        if record.event_log_entry.step_key == step_key:
            metadata = record.event_log_entry.dagster_event.step_output_data.metadata
            return {k: v.value for k, v in metadata.items()}
    raise AssertionError(f"no output of {step_key} in {run_id}")


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_sigkilled_step_resumes_from_its_last_checkpoint(backend, location) -> None:
    recon, _module = location
    with DagsterInstance.get() as instance:
        job = recon.get_reconstructable_job("preemptible_job")
        predcheck = PredcheckResource(store_url=backend.store_url)
        store = predcheck.metrics_store()

        with execute_job(job, instance=instance, run_config=_run_config(backend.store_url, None)) as reference:
            assert reference.success
            expected = reference.output_for_node("publish")

        killed = execute_job(job, instance=instance, run_config=_run_config(backend.store_url, KILL_FRACTION))
        assert not killed.success
        parent = instance.get_run_by_id(killed.run_id)
        assert parent.status == DagsterRunStatus.FAILURE
        kill_unit = int(UNITS * KILL_FRACTION)

        written = [c for c in store.checkpoints(run_id=killed.run_id) if c["step_key"] == "preemptible_crunch"]
        assert written, "the killed step wrote no checkpoint before it died"
        units_per_interval = max(math.ceil(INTERVAL_S / UNIT_S),
                                 *(b["work_units"] - a["work_units"] for a, b in zip(written, written[1:])))
        checkpoint_root = Path(os.environ["DAGSTER_HOME"]) / "predcheck" / "checkpoints"
        root = f"preemptible_job/{killed.run_id}"
        before = _files(checkpoint_root)
        assert before == {
            f"{root}/prepare_input/outputs/result/ckpt-000001/payload.json",
            f"{root}/prepare_input/outputs/result/ckpt-000001/manifest.json",
            *(f"{root}/preemptible_crunch/ckpt-{seq:06d}/{name}" for seq in
              range(len(written) - 2, len(written) + 1) for name in ("payload.json", "manifest.json")),
        } | {f for f in before if not f.startswith(root)}  # the reference run's own files

        report = resume_tick(instance, predcheck, ExecuteJobLauncher(recon))
        assert killed.run_id in report.launched, report.message()
        resumed = instance.get_run_by_id(report.launched[killed.run_id])
        assert resumed.status == DagsterRunStatus.SUCCESS
        assert resumed.parent_run_id == killed.run_id and resumed.root_run_id == killed.run_id
        assert resumed.tags["predcheck/resumed_from"] == written[-1]["checkpoint_id"]
        assert resumed.tags["predcheck/resume_count"] == "1"
        # killed at its usual footprint (the reference run's peak): a preemption, not out of memory
        [plan] = resumed.run_config["resources"]["predcheck"]["config"]["resume"]["steps"]
        assert plan["error_class"] == "ChildProcessCrashException"
        assert plan["batch_size_factor"] == 1.0 and plan["memory_request_bytes"] is None

        metadata = _output_metadata(instance, resumed.run_id, "preemptible_crunch")
        restored_at = metadata["restored_at_unit"]
        assert 0 < restored_at <= kill_unit
        assert kill_unit - restored_at <= units_per_interval, (kill_unit, restored_at, units_per_interval)
        assert metadata["units_executed"] == UNITS - restored_at

        outputs = _output_metadata(instance, resumed.run_id, "publish")
        assert outputs["acc"] == expected["acc"]

        attempts = {(r["run_id"], r["step_key"]): r for r in store.step_runs(job="preemptible_job")}
        crashed = attempts[(killed.run_id, "preemptible_crunch")]
        assert crashed["outcome"] == "crashed"
        assert crashed["error_class"] == "ChildProcessCrashException"
        assert crashed["measured_by"] == "event_log"
        assert attempts[(resumed.run_id, "preemptible_crunch")]["outcome"] == "success"
        assert (resumed.run_id, "prepare_input") not in attempts  # from failure: the upstream step is not redone

        after = _files(checkpoint_root)
        new_files = after - before
        resumed_outputs = {f"preemptible_job/{resumed.run_id}/{step}/outputs/result/ckpt-000001/{name}"
                           for step in ("preemptible_crunch", "publish") for name in ("payload.json", "manifest.json")}
        assert resumed_outputs <= new_files
        own = {f for f in after if f.startswith(f"{root}/preemptible_crunch/")}
        assert len(own) == 2 * 3  # retention keeps the newest 3 good checkpoints of the stream

        # exactly once: a second tick does not resume the same failed run again
        again = resume_tick(instance, predcheck, ExecuteJobLauncher(recon))
        assert killed.run_id not in again.launched
