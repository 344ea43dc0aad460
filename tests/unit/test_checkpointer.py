"""The in-step Checkpointer with a real CheckpointStore, MetricsStore (SQLite) and StepProfiler."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest

from predcheck_dagster import policy
from predcheck_dagster.checkpoint_store import CheckpointStore, Prediction
from predcheck_dagster.checkpointer import Checkpointer, CheckpointSettings, StepIdentity
from predcheck_dagster.errors import CheckpointMismatchError
from predcheck_dagster.metrics_store import MetricsStore
from predcheck_dagster.profiler import StepProfiler
from predcheck_dagster.resume_plan import StepResumePlan

from .store_urls import UNREACHABLE_STORE_URL

RUN, STEP, JOB = "run-1", "crunch", "etl"
IDENTITY = StepIdentity(job=JOB, run_id=RUN, root_run_id=RUN, step_key=STEP, code_version="v1")
PREDICTION = Prediction(failure_probability=0.95, predicted_remaining_s=30.0, bottleneck_stages=["work"],
                        resource_projection={"peak_rss_bytes": 1e9, "cpu_s": None, "time_to_limit_s": None},
                        model_uri="models:/predcheck-forecaster@champion", model_version="3")


@pytest.fixture
def checkpoint_store(tmp_path) -> CheckpointStore:
    return CheckpointStore(str(tmp_path / "checkpoints"))


@pytest.fixture
def profilers() -> Iterator[list[StepProfiler]]:
    started: list[StepProfiler] = []
    yield started
    for profiler in started:
        profiler.stop()


@pytest.fixture
def make_checkpointer(checkpoint_store, metrics, profilers):
    def make(settings: CheckpointSettings, identity: StepIdentity = IDENTITY, plan: StepResumePlan | None = None,
             metrics_store: MetricsStore | None = metrics) -> Checkpointer:
        sink = metrics_store.add_samples if metrics_store is not None else None
        profiler = StepProfiler(identity.run_id, identity.step_key, sink=sink, interval_s=0.05).start()
        profilers.append(profiler)
        return Checkpointer(identity, checkpoint_store, metrics_store, profiler, settings, plan=plan)
    return make


def test_nothing_is_written_when_nothing_is_due(make_checkpointer, checkpoint_store):
    ck = make_checkpointer(CheckpointSettings(poll_interval_s=60.0, fixed_interval_s=60.0))
    assert [ck.maybe_checkpoint({"i": i}) for i in range(50)] == [None] * 50
    assert ck.written == []
    assert checkpoint_store.streams() == []


def test_a_periodic_checkpoint_is_written_when_the_interval_has_elapsed(make_checkpointer, checkpoint_store,
                                                                        metrics):
    ck = make_checkpointer(CheckpointSettings(poll_interval_s=60.0, fixed_interval_s=0.5))
    assert ck.maybe_checkpoint({"i": 0}) is None
    time.sleep(0.55)

    manifest = ck.maybe_checkpoint({"i": 1}, work_units=1.0)

    assert manifest is not None
    assert (manifest.kind, manifest.seq, manifest.code_version, manifest.prediction) == ("periodic", 1, "v1", None)
    assert checkpoint_store.latest(ck.stream)[1] == {"i": 1}
    assert ck.maybe_checkpoint({"i": 2}) is None  # the interval restarts after a checkpoint
    (indexed,) = metrics.checkpoints(run_id=RUN)
    assert (indexed["checkpoint_id"], indexed["kind"], indexed["work_units"]) == (manifest.checkpoint_id,
                                                                                  "periodic", 1.0)
    assert indexed["write_s"] == pytest.approx(manifest.write_s)


def test_a_pending_request_is_honoured_at_the_next_poll(make_checkpointer, checkpoint_store, metrics):
    ck = make_checkpointer(CheckpointSettings(poll_interval_s=0.5, fixed_interval_s=3600.0))
    assert ck.maybe_checkpoint({"i": 0}) is None  # first poll: nothing asked yet
    assert metrics.request_checkpoint(RUN, STEP, PREDICTION.to_dict())
    assert ck.maybe_checkpoint({"i": 1}) is None  # not polled again yet
    time.sleep(0.55)

    manifest = ck.maybe_checkpoint({"i": 2})

    assert manifest is not None and manifest.kind == "preemptive"
    assert manifest.prediction == PREDICTION
    assert checkpoint_store.read_manifest(manifest.checkpoint_id).prediction == PREDICTION
    assert checkpoint_store.latest(ck.stream)[1] == {"i": 2}
    (request,) = metrics.checkpoint_requests(run_id=RUN)
    assert request["checkpoint_id"] == manifest.checkpoint_id
    assert request["honored_at"] is not None
    assert metrics.pending_request(RUN, STEP) is None
    time.sleep(0.55)
    assert ck.maybe_checkpoint({"i": 3}) is None  # honoured requests are not taken twice
    assert metrics.checkpoints(run_id=RUN)[0]["kind"] == "preemptive"


def test_restore_returns_the_default_when_there_is_no_checkpoint(make_checkpointer):
    ck = make_checkpointer(CheckpointSettings())
    default = {"i": 0}
    assert ck.restore(default=default) is default
    assert ck.restored_from is None
    assert ck.restore_s is not None and 0 < ck.profiler.stage_durations["restore"] <= ck.restore_s + 0.01


def test_restore_returns_the_newest_state(make_checkpointer):
    first = make_checkpointer(CheckpointSettings())
    first.checkpoint({"i": 1})
    newest = first.checkpoint({"i": 2})
    # the retried attempt of the same step (same root run) finds the state
    retry = make_checkpointer(CheckpointSettings(),
                              identity=StepIdentity(job=JOB, run_id="run-2", root_run_id=RUN, step_key=STEP))
    assert retry.restore(default={"i": 0}) == {"i": 2}
    assert retry.restored_from == newest


def test_restore_follows_the_plan(make_checkpointer):
    ck = make_checkpointer(CheckpointSettings())
    older = ck.checkpoint({"i": 1})
    ck.checkpoint({"i": 2})
    plan = StepResumePlan(step_key=STEP, checkpoint_id=older.checkpoint_id, prediction=PREDICTION)
    resumed = make_checkpointer(CheckpointSettings(), plan=plan)
    assert resumed.restore() == {"i": 1}
    assert resumed.prediction == PREDICTION


def test_restore_refuses_a_plan_naming_another_steps_checkpoint(make_checkpointer):
    other = make_checkpointer(CheckpointSettings(), identity=StepIdentity(JOB, RUN, RUN, "load"))
    foreign = other.checkpoint({"rows": 10})
    plan = StepResumePlan(step_key=STEP, checkpoint_id=foreign.checkpoint_id)
    ck = make_checkpointer(CheckpointSettings(), plan=plan)

    with pytest.raises(CheckpointMismatchError,
                       match=rf"checkpoint '{foreign.checkpoint_id}' belongs to job 'etl' step 'load', "
                             r"not to job 'etl' step 'crunch'"):
        ck.restore(default={})


def test_restore_falls_back_when_the_planned_checkpoint_is_gone(make_checkpointer, caplog):
    ck = make_checkpointer(CheckpointSettings())
    ck.checkpoint({"i": 1})
    plan = StepResumePlan(step_key=STEP, checkpoint_id=f"{JOB}/{RUN}/{STEP}/ckpt-000099")
    resumed = make_checkpointer(CheckpointSettings(), plan=plan)
    with caplog.at_level(logging.WARNING, logger="predcheck.checkpointer"):
        assert resumed.restore() == {"i": 1}
    assert "ckpt-000099' has no committed manifest" in caplog.text
    assert "Falling back to the newest good checkpoint" in caplog.text


def test_an_unreachable_metrics_store_does_not_fail_the_step(make_checkpointer, checkpoint_store, caplog):
    unreachable = MetricsStore(UNREACHABLE_STORE_URL)
    ck = make_checkpointer(CheckpointSettings(poll_interval_s=0.0, fixed_interval_s=0.5),
                           metrics_store=unreachable)
    with caplog.at_level(logging.WARNING, logger="predcheck.checkpointer"):
        assert ck.maybe_checkpoint({"i": 0}) is None
        time.sleep(0.55)
        manifest = ck.maybe_checkpoint({"i": 1})
    assert manifest is not None and manifest.kind == "periodic"
    assert checkpoint_store.latest(ck.stream)[1] == {"i": 1}
    assert "cannot poll checkpoint requests" in caplog.text
    assert caplog.text.count("cannot poll checkpoint requests") == 1  # warned once, not on every poll
    assert ck._next_poll - time.monotonic() > 25  # backed off: a store that times out must not stall the step
    assert "committed but not indexed in the metrics store" in caplog.text


def test_adaptive_interval_shortens_after_a_high_risk_request(make_checkpointer, metrics):
    ck = make_checkpointer(CheckpointSettings(poll_interval_s=0.0, min_interval_s=0.2, max_interval_s=600.0))
    assert ck.maybe_checkpoint({"i": 0}) is None
    assert ck._cost_s is None  # no checkpoint of this step measured yet: the first one comes early
    assert ck._next_due - ck._last_checkpoint_t == pytest.approx(0.2)
    time.sleep(0.25)
    first = ck.maybe_checkpoint({"i": 0})
    assert first.kind == "periodic" and ck._cost_s == first.write_s
    # no forecast: Daly's period at the default MTBF for the measured cost C
    assert ck._interval() == pytest.approx(max(0.2, policy.daly_period(first.write_s, policy.DEFAULT_MTBF_S)))
    metrics.request_checkpoint(RUN, STEP, {"failure_probability": 0.99, "predicted_remaining_s": 5.0})
    assert ck.maybe_checkpoint({"i": 1}).kind == "preemptive"
    assert ck._interval() == 0.2  # very likely to fail soon: clamped at the minimum


def test_close_reports_the_checkpoints_written(make_checkpointer):
    ck = make_checkpointer(CheckpointSettings())
    with ck.stage("work"):
        ck.checkpoint({"i": 1})
    ck.progress(3.0)
    summary = ck.close()
    assert summary["checkpoints_written"] == 1
    assert summary["work_units"] == 3.0
    assert "work" in summary["stage_durations"]
