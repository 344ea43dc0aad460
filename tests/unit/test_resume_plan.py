"""The resume plan: run-config round trip and the adjustments a resumed step applies."""

from __future__ import annotations

import pytest

from predcheck_dagster.checkpoint_store import Prediction
from predcheck_dagster.resume_plan import Adjustments, ResumePlan, StepResumePlan, executor_tags, plan_adjustments

GB = 1024 ** 3

PREDICTION = Prediction(
    failure_probability=0.91, predicted_remaining_s=120.0, bottleneck_stages=["transform", "load"],
    resource_projection={"peak_rss_bytes": 3 * GB, "cpu_s": 80.5, "time_to_limit_s": None},
    model_uri="models:/predcheck-forecaster@champion", model_version="4",
)


def test_plan_round_trips_through_run_config():
    plan = ResumePlan(parent_run_id="parent-1", steps=(
        StepResumePlan(step_key="crunch", checkpoint_id="etl/root-1/crunch/ckpt-000003", prediction=PREDICTION,
                       adjustments=Adjustments(batch_size_factor=0.5, memory_request_bytes=int(4.5 * GB),
                                               priority=1),
                       error_class="MemoryError"),
        StepResumePlan(step_key="load", checkpoint_id="etl/root-1/load/ckpt-000001"),
    ))
    config = plan.to_config()

    assert ResumePlan.from_config(config) == plan
    assert config["parent_run_id"] == "parent-1"
    assert config["steps"][0] == {
        "step_key": "crunch", "checkpoint_id": "etl/root-1/crunch/ckpt-000003", "error_class": "MemoryError",
        "failure_probability": 0.91, "predicted_remaining_s": 120.0, "bottleneck_stages": ["transform", "load"],
        "peak_rss_bytes": 3 * GB, "cpu_s": 80.5, "time_to_limit_s": None,
        "model_uri": "models:/predcheck-forecaster@champion", "model_version": "4",
        "batch_size_factor": 0.5, "memory_request_bytes": int(4.5 * GB), "priority": 1,
    }
    assert config["steps"][1]["failure_probability"] is None
    assert config["steps"][1]["bottleneck_stages"] == []
    assert ResumePlan.from_config(config).for_step("load").prediction is None


def test_for_step_and_empty_config():
    plan = ResumePlan(parent_run_id="p", steps=(StepResumePlan("a", "j/r/a/ckpt-000001"),))
    assert plan.for_step("a").checkpoint_id == "j/r/a/ckpt-000001"
    assert plan.for_step("b") is None
    assert ResumePlan.from_config(None) is None
    assert ResumePlan.from_config({}) is None
    assert ResumePlan.from_config({"parent_run_id": "p"}) == ResumePlan(parent_run_id="p")


def test_from_config_fills_defaults_for_missing_adjustments():
    plan = ResumePlan.from_config({"parent_run_id": "p", "steps": [
        {"step_key": "a", "checkpoint_id": "j/r/a/ckpt-000001", "batch_size_factor": None, "priority": None}]})
    assert plan.steps[0].adjustments == Adjustments()


def test_memory_error_halves_the_batch_and_asks_for_more_memory():
    adj = plan_adjustments("MemoryError", peak_rss_bytes=2 * GB, prediction=None)
    assert adj == Adjustments(batch_size_factor=0.5, memory_request_bytes=3 * GB, priority=0)
    assert plan_adjustments("OutOfMemoryError", 1000, None).memory_request_bytes == 1500


def test_memory_error_without_a_measured_peak_still_halves_the_batch():
    assert plan_adjustments("MemoryError", None, None) == Adjustments(batch_size_factor=0.5)


def test_a_crash_well_above_the_usual_peak_counts_as_out_of_memory():
    """A step the OOM killer took: Dagster names the failure after the executor, not the memory
    (the multiprocess executor's ChildProcessCrashException, celery's RunEnded), and a preempted
    node's SIGKILL looks the same. The footprint tells them apart."""
    for error_class in ("ChildProcessCrashException", "RunEnded"):
        oom = plan_adjustments(error_class, peak_rss_bytes=int(2.8 * GB), prediction=PREDICTION, crashed=True,
                               usual_peak_rss_bytes=1 * GB)
        assert oom.batch_size_factor == 0.5
        assert oom.memory_request_bytes == int(int(2.8 * GB) * 1.5)
        preempted = plan_adjustments(error_class, peak_rss_bytes=int(1.1 * GB), prediction=PREDICTION, crashed=True,
                                     usual_peak_rss_bytes=1 * GB)
        assert preempted.batch_size_factor == 1.0 and preempted.memory_request_bytes is None
        # no successful attempt to compare with: nothing to go on
        assert plan_adjustments(error_class, int(2.8 * GB), PREDICTION, crashed=True).batch_size_factor == 1.0
        # the same class and footprint from a step that failed in Python: not a kill
        raised = plan_adjustments(error_class, peak_rss_bytes=int(2.8 * GB), prediction=PREDICTION,
                                  usual_peak_rss_bytes=1 * GB)
        assert raised.batch_size_factor == 1.0


def test_other_errors_change_nothing_but_priority():
    assert plan_adjustments("ValueError", 5 * GB, None) == Adjustments()
    assert plan_adjustments(None, None, None) == Adjustments()
    assert plan_adjustments("ValueError", 5 * GB, PREDICTION).priority == 1
    unlikely = Prediction(failure_probability=0.2, predicted_remaining_s=None)
    assert plan_adjustments("ValueError", 5 * GB, unlikely).priority == 0


@pytest.mark.parametrize(("factor", "batch", "minimum", "expected"), [
    (1.0, 100, 1, 100), (0.5, 100, 1, 50), (0.5, 3, 1, 1), (0.5, 1, 1, 1), (0.25, 10, 4, 4), (0.5, 101, 1, 50),
])
def test_scale_batch(factor, batch, minimum, expected):
    assert Adjustments(batch_size_factor=factor).scale_batch(batch, minimum=minimum) == expected


def _plan(*adjustments: Adjustments) -> ResumePlan:
    return ResumePlan(parent_run_id="p", steps=tuple(
        StepResumePlan(step_key=f"s{i}", checkpoint_id=f"c{i}", adjustments=a) for i, a in enumerate(adjustments)))


def test_executor_tags_carry_priority_to_the_run_coordinator_and_to_celery():
    assert executor_tags(_plan(Adjustments(priority=1), Adjustments())) == {
        "dagster/priority": "1", "dagster-celery/run_priority": "1"}
    assert executor_tags(_plan(Adjustments()), celery_queue="big-nodes") == {}


def test_executor_tags_carry_the_largest_memory_request_and_the_celery_queue():
    plan = _plan(Adjustments(memory_request_bytes=GB), Adjustments(memory_request_bytes=3 * GB + 1))
    assert executor_tags(plan) == {
        "dagster-k8s/config": '{"container_config": {"resources": {"requests": {"memory": "3073Mi"}}}}'}
    assert executor_tags(plan, celery_queue="big-nodes")["dagster-celery/queue"] == "big-nodes"
