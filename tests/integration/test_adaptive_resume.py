"""A step that runs out of memory at batch size N resumes from its checkpoint with a smaller batch
and finishes; the resume respects the deadline and leaves canceled runs alone."""

from __future__ import annotations

import json

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, execute_job

import predcheck_dagster as pc
from predcheck_dagster.resume_service import ExecuteJobLauncher, resume_tick

pytestmark = pytest.mark.slow


def _step_logs(instance: DagsterInstance, run_id: str) -> str:
    return "\n".join(e.user_message for e in instance.all_logs(run_id))


def _out_of_memory_run(recon, instance: DagsterInstance, store_url: str):
    """A memory_job run at batch size 12: its first batch fits and is checkpointed, the second does not."""
    run_config = {"ops": {"memory_hungry_transform": {"config": {"batch_size": 12}}},
                  "resources": {"predcheck": {"config": {"store_url": store_url}}}}
    failed = execute_job(recon.get_reconstructable_job("memory_job"), instance=instance, run_config=run_config)
    assert not failed.success
    return failed


def test_out_of_memory_step_resumes_with_a_smaller_batch(dagster_home, tmp_path, location) -> None:
    recon, _ = location
    store_url = f"sqlite:///{tmp_path}/metrics.db"
    with DagsterInstance.get() as instance:
        failed = _out_of_memory_run(recon, instance, store_url)
        [failure] = [e for e in failed.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
        assert failure.step_failure_data.error.cause.cls_name == "MemoryError"  # numpy's _ArrayMemoryError

        predcheck = pc.PredcheckResource(store_url=store_url)
        report = resume_tick(instance, predcheck, ExecuteJobLauncher(recon))
        resumed = instance.get_run_by_id(report.launched[failed.run_id])
        assert resumed.status == DagsterRunStatus.SUCCESS

        step = resumed.run_config["resources"]["predcheck"]["config"]["resume"]["steps"][0]
        assert step["error_class"] == "MemoryError"
        assert step["batch_size_factor"] == 0.5
        assert step["memory_request_bytes"] > 0
        k8s = json.loads(resumed.tags["dagster-k8s/config"])
        assert k8s["container_config"]["resources"]["requests"]["memory"].endswith("Mi")
        assert "resume plan: batch size 12 -> 6" in _step_logs(instance, resumed.run_id)

        records = instance.get_records_for_run(resumed.run_id, of_type=DagsterEventType.STEP_OUTPUT).records
        metadata = records[0].event_log_entry.dagster_event.step_output_data.metadata
        assert metadata["batch_size"].value == 6 and metadata["rows"].value == 24
        rows_restored = predcheck.checkpoint_store().read(resumed.tags["predcheck/resumed_from"])[1]["rows_done"]
        assert rows_restored == 12  # the first batch was not redone


def test_no_resume_past_the_deadline_and_the_decision_is_kept(dagster_home, tmp_path, location) -> None:
    recon, _ = location
    store_url = f"sqlite:///{tmp_path}/metrics.db"
    with DagsterInstance.get() as instance:
        failed = _out_of_memory_run(recon, instance, store_url)
        late = pc.PredcheckResource(store_url=store_url, resume_deadline_s=0.0)
        report = resume_tick(instance, late, ExecuteJobLauncher(recon))
        assert not report.launched and report.reconciled == 0  # the hook recorded the MemoryError itself
        assert "past the resume deadline" in report.message()
        tags = instance.get_run_by_id(failed.run_id).tags
        assert tags["predcheck/resume_skipped"].startswith("past the resume deadline: root run")
        assert tags["predcheck/reconciled"] == "true"
        # the decision is final: a later tick does not look at the run again, whatever its config
        again = resume_tick(instance, pc.PredcheckResource(store_url=store_url), ExecuteJobLauncher(recon))
        assert not again.launched and failed.run_id[:8] not in again.message()


def test_canceled_runs_are_left_alone(dagster_home, tmp_path, location) -> None:
    recon, module = location
    store_url = f"sqlite:///{tmp_path}/metrics.db"
    predcheck = pc.PredcheckResource(store_url=store_url)
    with DagsterInstance.get() as instance:
        job_def = module.defs.get_job_def("preemptible_job")
        run = instance.create_run_for_job(job_def=job_def, run_config={})
        store = predcheck.checkpoint_store()
        store.write({"next_unit": 5, "acc": 1}, stream=store.step_stream("preemptible_job", run.run_id,
                                                                          "preemptible_crunch"),
                    job="preemptible_job", run_id=run.run_id, root_run_id=run.run_id,
                    step_key="preemptible_crunch", kind="periodic")
        instance.report_run_canceled(run, "stopped by a user")
        assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.CANCELED
        report = resume_tick(instance, predcheck, ExecuteJobLauncher(recon))
        assert not report.launched
        assert predcheck.metrics_store().resumes() == []
