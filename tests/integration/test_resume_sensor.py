"""The resume sensor, evaluated on a real instance, re-executes a run launched through a real
webserver FROM_FAILURE via GraphQL, exactly once even when two ticks race."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, build_sensor_context

import predcheck_dagster as pc
from predcheck_dagster.errors import RelaunchError
from predcheck_dagster.resume_service import GraphQLLauncher, ResumeRequest, resume_tick

from .webserver import LAUNCH, graphql, running_webserver, wait_for_run

pytestmark = pytest.mark.slow


def test_resume_sensor_reexecutes_through_graphql_exactly_once(dagster_home: Path, tmp_path: Path) -> None:
    (dagster_home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\n")
    store_url = f"sqlite:///{tmp_path}/metrics.db"
    with running_webserver(dagster_home, tmp_path / "webserver.log") as url, DagsterInstance.get() as instance:
        run_config = {
            "ops": {"prepare_input": {"config": {"units": 40}},
                    "preemptible_crunch": {"config": {"unit_s": 0.05, "spot_preemption": False,
                                                      "preempt_at_fraction": 0.7}}},
            "resources": {"predcheck": {"config": {"store_url": store_url, "checkpoint_interval_s": 0.25}}},
        }
        launched = graphql(url, LAUNCH, {"executionParams": {
            "selector": {"repositoryLocationName": "predcheck_demo", "repositoryName": "__repository__",
                         "pipelineName": "preemptible_job"},
            "runConfigData": run_config}})["data"]["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        parent_id = launched["run"]["runId"]
        parent = wait_for_run(instance, parent_id, timeout_s=120)
        assert parent.status == DagsterRunStatus.FAILURE

        predcheck = pc.PredcheckResource(store_url=store_url, webserver_url=url)
        sensor = pc.build_resume_sensor()
        messages: list[str] = []

        def tick() -> None:
            with build_sensor_context(instance=instance, resources={"predcheck": predcheck}) as context:
                messages.append(sensor(context).skip_message)

        racers = [threading.Thread(target=tick) for _ in range(2)]
        for t in racers:
            t.start()
        for t in racers:
            t.join()
        resumes = predcheck.metrics_store().resumes(root_run_id=parent_id)
        assert len(resumes) == 1 and resumes[0]["status"] == "launched", (messages, resumes)
        assert sum("resumed 1 run(s)" in m for m in messages) == 1, messages

        child = wait_for_run(instance, resumes[0]["new_run_id"], timeout_s=120)
        assert child.status == DagsterRunStatus.SUCCESS
        assert child.parent_run_id == parent_id and child.root_run_id == parent_id
        assert child.tags["dagster/parent_run_id"] == parent_id
        assert child.tags["predcheck/resumed_from"].startswith(f"preemptible_job/{parent_id}/preemptible_crunch/ckpt-")
        assert child.run_config["resources"]["predcheck"]["config"]["resume"]["parent_run_id"] == parent_id
        step_keys = {r.event_log_entry.step_key for r in instance.get_records_for_run(
            child.run_id, of_type=DagsterEventType.STEP_START).records}
        assert step_keys == {"preemptible_crunch", "publish"}  # from failure: prepare_input is not re-run
        assert instance.get_run_by_id(parent_id).tags["predcheck/resumed_by"] == child.run_id

        again = resume_tick(instance, predcheck, GraphQLLauncher(url))
        assert not again.launched


def test_graphql_launcher_names_an_unreachable_webserver(instance) -> None:
    from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
    from dagster._core.storage.dagster_run import DagsterRun

    origin = RemoteJobOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("loc"), "__repository__"), "job")
    run = DagsterRun(job_name="job", run_id="r1", remote_job_origin=origin)
    request = ResumeRequest(parent=run, plan=pc.ResumePlan(parent_run_id="r1"), run_config={}, tags={})
    expected = r"webserver at 'http://127.0.0.1:9/graphql' is unreachable .*`webserver_url`"
    with pytest.raises(RelaunchError, match=expected):
        GraphQLLauncher("http://127.0.0.1:9").launch(instance, request)
