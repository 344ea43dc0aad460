"""Jobs the profiler tests run, importable by name so the multiprocess executor can rebuild them.

No ``from __future__ import annotations`` here: Dagster reads the ops' annotations at definition.
"""

import os
import signal
import time

from dagster import (
    DailyPartitionsDefinition,
    Definitions,
    OpExecutionContext,
    asset,
    define_asset_job,
    job,
    op,
)

import predcheck_dagster as pc

ROWS = 20_000
DEADLINE_TAG = "predcheck/deadline_s"


def burn(seconds: float) -> int:
    acc, end = 0, time.thread_time() + seconds
    while time.thread_time() < end:
        for _ in range(20_000):
            acc = (acc * 31 + 7) % 1_000_003
    return acc


@op(code_version="produce-v3")
def produce() -> list:
    return list(range(ROWS))


@op
def transform(context: OpExecutionContext, predcheck: pc.PredcheckResource, rows: list) -> int:
    ck = predcheck.checkpointer(context)
    with ck.stage("square"):
        burn(0.3)
        total = sum(r * r for r in rows)
    time.sleep(0.4)  # long enough for live samples at the tests' interval
    return total


@job
def profiled_job():
    transform(produce())


def failing_parse(value: str) -> int:
    return int(value)


@op
def parse_rows() -> int:
    return failing_parse(f"row-{time.time_ns()}")  # a different bad value every run: the same bug


@op
def divide_rows() -> float:
    return 1 / (len(str(time.time_ns())) - len(str(time.time_ns())))


@job
def failing_job():
    parse_rows()
    divide_rows()


@op(tags={DEADLINE_TAG: "0.3"})
def slow_but_fine() -> int:
    time.sleep(0.5)
    return 1


@op(tags={DEADLINE_TAG: "0.3"})
def slow_and_failing() -> int:
    time.sleep(0.5)
    raise RuntimeError("gave up")


@op(tags={DEADLINE_TAG: "100"})
def generous() -> int:
    time.sleep(0.5)
    return 2


@op
def inherits_the_run_deadline() -> int:
    time.sleep(0.5)
    return 3


@op
def quick() -> int:
    return 4


@job(tags={DEADLINE_TAG: "0.3"})
def deadline_job():
    slow_but_fine()
    slow_and_failing()
    generous()
    inherits_the_run_deadline()


@op(tags={DEADLINE_TAG: "0.3"})
def killed_past_its_deadline() -> int:
    time.sleep(0.6)
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


@job
def killed_job():
    killed_past_its_deadline()


@op
def sleepy(context: OpExecutionContext, predcheck: pc.PredcheckResource) -> int:
    predcheck.checkpointer(context)
    time.sleep(0.6)
    return 7


@job
def sleepy_job():
    sleepy()


daily = DailyPartitionsDefinition(start_date="2026-01-01")


@asset(partitions_def=daily, code_version="asset-v2")
def daily_rows(context) -> int:
    return len(context.partition_key)


daily_job = define_asset_job("daily_job", selection=[daily_rows], partitions_def=daily)


def instrumented(store_url: str | None = None, sample_interval_s: float = 0.1) -> Definitions:
    return pc.instrument(
        Definitions(jobs=[profiled_job, failing_job, deadline_job, killed_job, sleepy_job, daily_job],
                    assets=[daily_rows]),
        predcheck=pc.PredcheckResource(store_url=store_url, sample_interval_s=sample_interval_s), sensors=False)


# The multiprocess executor rebuilds these by name (ReconstructableJob.for_module); tests pass the
# store URL in run config.
defs = instrumented()
instrumented_profiled_job = defs.get_job_def("profiled_job")
instrumented_failing_job = defs.get_job_def("failing_job")
instrumented_killed_job = defs.get_job_def("killed_job")
