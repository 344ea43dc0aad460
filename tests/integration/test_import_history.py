"""`predcheck import-history` backfills step_runs from an instance with real past runs, including a
retried step and a step killed by SIGKILL, and is idempotent."""

from pathlib import Path

import pytest
from click.testing import CliRunner
from dagster import DagsterInstance, OpExecutionContext, RetryPolicy, execute_job, job, op

import predcheck_dagster as pc
from predcheck_dagster.cli import main

pytestmark = pytest.mark.slow


@op(retry_policy=RetryPolicy(max_retries=1))
def flaky_once(context: OpExecutionContext) -> int:
    if context.retry_number == 0:
        raise RuntimeError("transient")
    return 1


@op
def always_fails() -> None:
    raise ValueError("bad input")


@job
def history_job():
    flaky_once()
    always_fails()


def test_import_history_backfills_attempts_and_is_idempotent(dagster_home: Path, tmp_path: Path, location) -> None:
    recon, _ = location
    store_url = f"sqlite:///{tmp_path}/imported.db"
    with DagsterInstance.get() as instance:
        history_job.execute_in_process(instance=instance, raise_on_error=False)
        killed = execute_job(recon.get_reconstructable_job("preemptible_job"), instance=instance, run_config={
            "ops": {"prepare_input": {"config": {"units": 20}},
                    "preemptible_crunch": {"config": {"unit_s": 0.02, "spot_preemption": False,
                                                      "preempt_at_fraction": 0.5}}},
            "resources": {"predcheck": {"config": {"store_url": f"sqlite:///{tmp_path}/live.db"}}}})
        assert not killed.success

    runner = CliRunner()
    first = runner.invoke(main, ["import-history", "--store-url", store_url])
    assert first.exit_code == 0, first.output
    assert "from 2 run(s); 0 already recorded" in first.output

    rows = {(r["step_key"], r["attempt"]): r for r in pc.MetricsStore(store_url).step_runs()}
    retried, failed = rows[("flaky_once", 1)], rows[("always_fails", 1)]
    assert (retried["outcome"], retried["error_class"]) == ("failure", "RetryRequested")
    assert rows[("flaky_once", 2)]["outcome"] == "success"
    assert (failed["outcome"], failed["error_class"], failed["error_message"]) == (
        "failure", "ValueError", "ValueError: bad input\n")
    crashed = rows[("preemptible_crunch", 1)]
    assert crashed["outcome"] == "crashed" and crashed["error_class"] == "ChildProcessCrashException"
    assert rows[("prepare_input", 1)]["outcome"] == "success"
    assert all(r["measured_by"] == "event_log" and r["duration_s"] >= 0 for r in rows.values())

    again = runner.invoke(main, ["import-history", "--store-url", store_url])
    assert again.exit_code == 0
    assert f"imported 0 step attempt(s) from 2 run(s); {len(rows)} already recorded" in again.output
