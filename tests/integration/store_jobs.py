"""Jobs of the metrics store's integration tests: steps that only take time, profiled by predcheck.

A module of its own (no ``from __future__ import annotations``: Dagster reads the op signatures),
so that the multiprocess executor's step processes can import the jobs by module name.
"""

import os
import time

from dagster import Config, OpExecutionContext, in_process_executor, job, multiprocess_executor, op

import predcheck_dagster as pc

# The checkpointers of steps run in this process (in-process executor): the tests read how many
# samples each profiler took, the ground truth the store is compared with.
CHECKPOINTERS: list = []


class BusyConfig(Config):
    seconds: float = 8.0
    marker_dir: str = ""


def _busy(context: OpExecutionContext, config: BusyConfig, predcheck: pc.PredcheckResource) -> float:
    ck = predcheck.checkpointer(context)
    CHECKPOINTERS.append(ck)
    end = time.time() + config.seconds
    i = 0
    with ck.stage("work"):
        while time.time() < end:
            time.sleep(0.02)
            i += 1
            ck.progress(i)
    ended = time.time()
    if config.marker_dir:  # when the op's own code ended: the profiler's last sample comes after it
        with open(os.path.join(config.marker_dir, f"{context.op_handle.name}.end"), "w") as f:
            f.write(repr(ended))
    return ended


@op
def busy_a(context: OpExecutionContext, config: BusyConfig, predcheck: pc.PredcheckResource) -> float:
    return _busy(context, config, predcheck)


@op
def busy_b(context: OpExecutionContext, config: BusyConfig, predcheck: pc.PredcheckResource) -> float:
    return _busy(context, config, predcheck)


RESOURCES = {"predcheck": pc.PredcheckResource()}


@job(executor_def=multiprocess_executor.configured({"max_concurrent": 2}), resource_defs=RESOURCES,
     hooks=pc.predcheck_hooks)
def busy_parallel_job():
    busy_a()
    busy_b()


@job(executor_def=in_process_executor, resource_defs=RESOURCES, hooks=pc.predcheck_hooks)
def busy_in_process_job():
    busy_a()
    busy_b()
