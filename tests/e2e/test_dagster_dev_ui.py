"""End to end under ``dagster dev`` (webserver + daemon), driven through GraphQL and a real browser.

The story of issue #6, with nothing in process: the shipped code location's sensors run in the
daemon. Three short ``preemptible_job`` runs die first (history: this step tends to crash). A long
run is then launched; the forecast sensor scores its step, tags the run ``predcheck/risk=high``
and asks for a checkpoint; the step commits a preemptive checkpoint; then its worker process is
SIGKILLed (a preempted spot node). The resume sensor re-executes the run from failure through the
webserver's GraphQL API; the resumed step restores the checkpoint and the run succeeds with the
same result as an uninterrupted run. Finally headless Chromium loads both runs' pages and finds the
tags and the checkpoint metadata rendered; the screenshots stay in ``test-artifacts/e2e-ui/``.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from predcheck_dagster.checkpoint_store import CheckpointStore
from predcheck_dagster.demo.pipelines import crunch_unit
from predcheck_dagster.status import COLUMNS
from tests.integration.webserver import graphql

from .browser import artifact_dir, chromium_page
from .dagster_dev import (
    SET_NUX_SEEN,
    launch_run,
    metadata,
    processes_of,
    run_events,
    run_info,
    running_dagster_dev,
    sensor_statuses,
    wait_for,
)

pytestmark = pytest.mark.slow

JOB, STEP = "preemptible_job", "preemptible_crunch"
SEED_RUNS = 3
UNITS, UNIT_S, SEED = 300, 0.1, 7  # 30 s of work: the sensor flags it long before the end
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}


def crunch_config(units: int, unit_s: float, seed: int, preempt_at: float | None = None) -> dict:
    return {"ops": {"prepare_input": {"config": {"seed": seed, "units": units}},
                    STEP: {"config": {"unit_s": unit_s, "spot_preemption": False, "preempt_at_fraction": preempt_at}}}}


def uninterrupted_result(units: int, seed: int) -> int:
    acc = seed
    for i in range(units):
        acc = crunch_unit(acc, seed * 1_000_003 + i)
    return acc


def test_dagster_dev_flags_checkpoints_resumes_and_shows_it_in_the_ui(tmp_path: Path, capsys) -> None:
    t_start = time.monotonic()
    marks: dict[str, float] = {}
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    artifacts = artifact_dir("e2e-ui")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREDCHECK_")}  # every default embedded in home
    checkpoints = CheckpointStore(str(home / "predcheck" / "checkpoints"))

    with running_dagster_dev(home, artifacts / "dagster-dev.log", env) as url:
        marks["dagster dev up"] = time.monotonic()
        # the shipped definitions start both predcheck sensors (default_status RUNNING): no startSensor needed
        statuses = sensor_statuses(url)
        assert statuses["predcheck_forecast_sensor"] == "RUNNING", statuses
        assert statuses["predcheck_resume_sensor"] == "RUNNING", statuses
        assert graphql(url, SET_NUX_SEEN)["data"]["setNuxSeen"] is True  # no "join the community" modal on top

        # 1. history: short runs whose step is killed; opted out of resumes
        opt_out = {"predcheck/auto_resume": "false"}
        seeds = [launch_run(url, JOB, crunch_config(20, 0.05, seed=i, preempt_at=0.5), opt_out)
                 for i in range(SEED_RUNS)]

        def seeds_settled():
            runs = [run_info(url, r) for r in seeds]
            return all("predcheck/resume_skipped" in r["tags"] for r in runs) and runs

        for run in wait_for(seeds_settled, 180, "the resume sensor to reconcile the seed runs"):
            assert run["status"] == "FAILURE"
            assert run["tags"]["predcheck/resume_skipped"] == "opted out (predcheck/auto_resume=false)"
        marks["history seeded"] = time.monotonic()

        # 2. the risky run: flagged and asked for a checkpoint by the forecast sensor, which the step commits
        parent_id = launch_run(url, JOB, crunch_config(UNITS, UNIT_S, SEED))
        stream = checkpoints.step_stream(JOB, parent_id, STEP)

        def preemptive_checkpoint():
            run = run_info(url, parent_id)
            if run["status"] in FINISHED:
                raise AssertionError(f"run {parent_id} ended {run['status']} before a preemptive checkpoint; "
                                     f"tags {run['tags']}")
            committed = [m for m in checkpoints.list(stream) if m.kind == "preemptive"]
            return (run["tags"].get("predcheck/checkpoint_requested") == STEP and committed
                    and (run, committed[0]))

        flagged, preemptive = wait_for(preemptive_checkpoint, 120, "a requested, committed preemptive checkpoint")
        assert flagged["tags"]["predcheck/risk"] == "high"
        p_fail = float(flagged["tags"]["predcheck/failure_probability"])
        assert p_fail >= 0.5
        assert preemptive.prediction is not None and preemptive.prediction.failure_probability >= 0.5
        marks["flagged and checkpointed"] = time.monotonic()

        # `predcheck status` on the live instance: the step in flight, at high risk, checkpointed
        status = subprocess.run([str(Path(sys.executable).parent / "predcheck"), "status"], capture_output=True,
                                text=True, timeout=120, env={**env, "DAGSTER_HOME": str(home)})
        assert status.returncode == 0, status.stderr
        header, *lines = status.stdout.splitlines()
        assert re.split(r"\s{2,}", header) == list(COLUMNS)
        row = next(re.split(r"\s{2,}", line) for line in lines if line.startswith(parent_id[:8]))
        assert row[1:3] == [JOB, STEP] and row[5] == "high" and float(row[4]) >= 0.5, status.stdout
        assert " ago" in row[7] and row[8].endswith("ago (heuristic)"), status.stdout
        assert lines[-1].startswith("1 step(s) in flight, 1 at high risk"), status.stdout

        # 3. the spot node goes: SIGKILL the step's worker process (its pid is in the run's own events)
        started = next(e for e in run_events(url, parent_id)
                       if e["__typename"] == "StepWorkerStartedEvent" and e["stepKey"] == STEP)
        worker = psutil.Process(int(metadata(started)["pid"]))
        assert worker in processes_of(home)  # our step worker, not a recycled pid
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
        last = checkpoints.list(stream)[-1]  # the newest committed checkpoint when the step died
        _, state = checkpoints.read(last.checkpoint_id)  # now: retention drops it once the resumed step writes

        # 4. the resume sensor re-executes from failure; the resumed run succeeds
        parent = wait_for(lambda: (r := run_info(url, parent_id))["tags"].get("predcheck/resumed_by") and r,
                          120, "the resume sensor to resume the killed run")
        assert parent["status"] == "FAILURE"
        child_id = parent["tags"]["predcheck/resumed_by"]
        child = wait_for(lambda: (r := run_info(url, child_id))["status"] in FINISHED and r, 180, "the resumed run")
        marks["resumed run finished"] = time.monotonic()
        assert child["status"] == "SUCCESS"
        assert (child["parentRunId"], child["rootRunId"]) == (parent_id, parent_id)
        assert child["tags"]["dagster/parent_run_id"] == parent_id
        assert child["tags"]["dagster/root_run_id"] == parent_id
        assert child["tags"]["predcheck/resumed_from"] == last.checkpoint_id
        assert child["tags"]["predcheck/resume_count"] == "1"

        events = run_events(url, child_id)
        steps_started = {e["stepKey"] for e in events if e["__typename"] == "ExecutionStepStartEvent"}
        assert steps_started == {STEP, "publish"}  # from failure: prepare_input is not re-run
        crunch_out = next(metadata(e) for e in events
                          if e["__typename"] == "ExecutionStepOutputEvent" and e["stepKey"] == STEP)
        assert crunch_out["restored_from"] == last.checkpoint_id
        assert crunch_out["restored_at_unit"] == state["next_unit"] > 0
        assert crunch_out["units_executed"] == UNITS - state["next_unit"]
        published = next(metadata(e) for e in events
                         if e["__typename"] == "ExecutionStepOutputEvent" and e["stepKey"] == "publish")
        assert published["acc"] == uninterrupted_result(UNITS, SEED)  # the resumed result is the right one
        stored_output = next(metadata(e)["checkpoint_id"] for e in events
                             if e["__typename"] == "HandledOutputEvent" and e["stepKey"] == STEP)

        # 5. the UI: both run pages render the predcheck tags and the checkpoint metadata
        with chromium_page() as page:
            page.goto(f"{url}/runs/{child_id}")
            page.get_by_text("RUN_SUCCESS").first.wait_for()
            page.get_by_placeholder("Filter").fill(f"step:{STEP}")  # the resumed step's events only
            page.keyboard.press("Enter")
            page.get_by_text(f"predcheck: restored '{last.checkpoint_id}'").first.wait_for()
            # its output metadata: where it resumed from (a cell holding just the id), how far, what it stored
            page.get_by_text(last.checkpoint_id, exact=True).first.wait_for()
            for label in ("restored_from", "restored_at_unit", "units_executed"):
                page.get_by_text(label, exact=True).first.wait_for()
            page.get_by_text(stored_output, exact=True).first.wait_for()
            page.screenshot(path=artifacts / "resumed-run.png", animations="disabled")
            child_tags = _tags_dialog(page, artifacts / "resumed-run-tags.png")
            assert f"predcheck/resumed_from: {last.checkpoint_id}" in child_tags
            assert "predcheck/resume_count: 1" in child_tags
            assert f"parent_run_id: {parent_id}" in child_tags and f"root_run_id: {parent_id}" in child_tags

            page.goto(f"{url}/runs/{parent_id}")
            page.get_by_text("RUN_FAILURE").first.wait_for()
            parent_tags = _tags_dialog(page, artifacts / "killed-run-tags.png")
            parent = run_info(url, parent_id)
            for key in ("predcheck/risk", "predcheck/failure_probability", "predcheck/checkpoint_requested",
                        "predcheck/resumed_by"):
                assert f"{key}: {parent['tags'][key]}" in parent_tags, parent_tags
        marks["pages checked"] = time.monotonic()

    assert not processes_of(home), "dagster dev left processes behind"
    with capsys.disabled():
        phases, previous = [], t_start
        for name, at in marks.items():
            phases.append(f"{name} +{at - previous:.0f} s")
            previous = at
        print(f"\n[e2e-ui] {time.monotonic() - t_start:.0f} s in all: {', '.join(phases)}")
        print(f"[e2e-ui] screenshots and the dagster dev log: {artifacts}/")


def _tags_dialog(page, screenshot: Path) -> str:
    """Open the run's "View tags and config" dialog, screenshot it, close it; return its text."""
    page.get_by_role("button", name="View tags and config").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Tags", exact=True).wait_for()
    text = dialog.inner_text()
    page.screenshot(path=screenshot, animations="disabled")
    dialog.get_by_role("button", name="OK").click()
    dialog.wait_for(state="hidden")
    return text
