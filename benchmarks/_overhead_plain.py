"""The job of benchmarks/profiler_overhead.py without predcheck: a chain of ops, 0.2 s of work each,
each passing its output to the next (through Dagster's default IO manager).

Its own code location (``defs``), so a plain step process imports only Dagster and this file, as
in a project without predcheck. No ``from __future__ import annotations``: Dagster reads them.
"""

import os
import time

from dagster import Definitions, job, op

OPS = int(os.environ.get("PREDCHECK_BENCH_OPS", "30"))
WORK_S = 0.2


@op
def first() -> int:
    time.sleep(WORK_S)  # the step's work: waiting on I/O, the common case
    return 0


def _make_op(i: int):
    @op(name=f"step_{i:02d}")
    def step(x: int) -> int:
        time.sleep(WORK_S)
        return x + 1

    return step


STEPS = [_make_op(i) for i in range(1, OPS)]


@job
def chain():
    value = first()
    for step in STEPS:
        value = step(value)


defs = Definitions(jobs=[chain])
