"""Bad input gets a clear error and loses nothing; our problems never fail the user's step."""


from pathlib import Path

import pytest
from dagster import DagsterEventType, Definitions, OpExecutionContext, job, op

import predcheck_dagster as pc

UNREACHABLE_PG = "postgresql+psycopg2://nobody@127.0.0.1:9/none"


@op
def counter(context: OpExecutionContext, predcheck: pc.PredcheckResource) -> int:
    ck = predcheck.checkpointer(context)
    state = ck.restore(default={"i": 0})
    with ck.stage("count"):
        while state["i"] < 5:
            state = {"i": state["i"] + 1}
            ck.checkpoint(state)
    return state["i"]


@job
def counting_job():
    counter()


def _defs() -> Definitions:
    return pc.instrument(Definitions(jobs=[counting_job]), sensors=False)



def _run_warnings(instance, run_id: str) -> str:
    import logging

    return "\n".join(e.user_message for e in instance.all_logs(run_id) if e.level == logging.WARNING)


def test_unreachable_metrics_store_leaves_the_step_result_unchanged(instance) -> None:
    defs = _defs()
    result = defs.get_job_def("counting_job").execute_in_process(
        instance=instance, run_config={"resources": {"predcheck": {"config": {"store_url": UNREACHABLE_PG}}}})
    assert result.success
    assert result.output_for_node("counter") == 5
    logs = _run_warnings(instance, result.run_id)
    assert "committed but not indexed in the metrics store" in logs
    # the attempt is not lost: it waits in the local spool until the store answers again
    assert "predcheck: metrics store unreachable: step 'counter' recorded in the local spool" in logs
    assert "metrics store 'postgresql+psycopg2://nobody@127.0.0.1:9/none' is unreachable" in logs


def test_resume_plan_naming_another_jobs_checkpoint_is_refused_by_name(instance, dagster_home: Path) -> None:
    store = pc.CheckpointStore(str(dagster_home / "predcheck" / "checkpoints"))
    foreign = store.write({"i": 3}, stream=store.step_stream("other_job", "root1", "counter"), job="other_job",
                          run_id="root1", root_run_id="root1", step_key="counter", kind="periodic")
    plan = {"parent_run_id": "root1", "steps": [{"step_key": "counter", "checkpoint_id": foreign.checkpoint_id}]}
    result = _defs().get_job_def("counting_job").execute_in_process(
        instance=instance, raise_on_error=False,
        run_config={"resources": {"predcheck": {"config": {"resume": plan}}}})
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.error.cause.message
    assert "CheckpointMismatchError" in failure.step_failure_data.error.cause.cls_name
    assert f"checkpoint {foreign.checkpoint_id!r} belongs to job 'other_job'" in message
    assert "fix the resume plan's checkpoint_id or drop it" in message
    assert store.read(foreign.checkpoint_id)[1] == {"i": 3}  # nothing lost


def test_missing_checkpoint_in_plan_falls_back_with_a_warning(instance) -> None:
    plan = {"parent_run_id": "gone", "steps": [{"step_key": "counter",
                                                "checkpoint_id": "counting_job/gone/counter/ckpt-000009"}]}
    result = _defs().get_job_def("counting_job").execute_in_process(
        instance=instance, run_config={"resources": {"predcheck": {"config": {"resume": plan}}}})
    assert result.success and result.output_for_node("counter") == 5
    logs = _run_warnings(instance, result.run_id)
    assert "checkpoint 'counting_job/gone/counter/ckpt-000009' has no committed manifest" in logs
    assert "Falling back to the newest good checkpoint" in logs


def test_malformed_config_is_refused_before_the_run_starts(instance) -> None:
    from dagster import DagsterInvalidConfigError

    with pytest.raises(DagsterInvalidConfigError, match="risk_threshold"):
        _defs().get_job_def("counting_job").execute_in_process(
            instance=instance, run_config={"resources": {"predcheck": {"config": {"risk_threshold": "high"}}}})


def test_a_step_without_the_hooks_is_not_recorded_and_is_told_why(instance) -> None:
    import threading

    from predcheck_dagster.resource import ACTIVE_STEPS
    from predcheck_dagster.step_events import STEP_PROFILERS

    plain = Definitions(jobs=[counting_job], resources={"predcheck": pc.PredcheckResource(sample_interval_s=0.01)})
    before = {t.name for t in threading.enumerate()}
    result = plain.get_job_def("counting_job").execute_in_process(instance=instance)
    assert result.success and result.output_for_node("counter") == 5
    assert "this step has no predcheck_hooks, so its attempts are not recorded" in _run_warnings(
        instance, result.run_id)
    # the step's own STEP_SUCCESS stopped its sampler; the run's end released its profiler
    assert not any(name.startswith("predcheck-sampler") for name in {t.name for t in threading.enumerate()} - before)
    assert (result.run_id, "counter") not in ACTIVE_STEPS and (result.run_id, "counter") not in STEP_PROFILERS
    assert pc.PredcheckResource().metrics_store().step_runs(run_id=result.run_id) == []
