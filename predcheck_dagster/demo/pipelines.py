"""Demo pipelines that fail for real, each for a reason the profiler can see.

- ``preemptible_job``: a long step on a "spot node". The longer the step (more ``units``), the
  likelier the node is preempted; preemption is a real SIGKILL of the step's worker process.
- ``memory_job``: a step whose memory climbs with its batch size under a hard address-space cap
  (``resource.setrlimit``); too large a batch raises a real MemoryError. Resumed with the plan's
  ``batch_size_factor``, it fits.
- ``api_job``: a step calling a local HTTP service that degrades intermittently; when degraded,
  requests are slow and fail, and the step gives up after its retries.

Each long step checkpoints through ``PredcheckResource.checkpointer``, so predcheck can resume it.
"""


import contextlib
import json
import os
import random
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from dagster import Config, In, OpExecutionContext, Out, job, multiprocess_executor, op

from predcheck_dagster.instrument import IO_MANAGER_KEY
from predcheck_dagster.resource import PredcheckResource

MB = 1024 * 1024
EXECUTOR = multiprocess_executor.configured({"max_concurrent": 2})
SPOT_SAFE_UNITS = 45  # a step of at most this many units finishes before the spot node is reclaimed
SPOT_DOOMED_UNITS = 60  # from this size on, the node is reclaimed (95 %) before the step ends


def crunch_unit(acc: int, i: int) -> int:
    """One deterministic unit of work (so a resumed result can be checked against an uninterrupted one)."""
    for j in range(200):
        acc = (acc * 31 + i * i + j) % 1_000_000_007
    return acc


class PrepareConfig(Config):
    seed: int = 1
    units: int = 40


@op(out=Out(io_manager_key=IO_MANAGER_KEY))
def prepare_input(config: PrepareConfig) -> dict:
    """The upstream step: one work item per unit. Its output is stored by the checkpoint IO manager
    (so the downstream step's input size is visible to the profiler) and reloaded on resume."""
    return {"seed": config.seed, "items": [config.seed * 1_000_003 + i for i in range(config.units)]}


class CrunchConfig(Config):
    unit_s: float = 0.05
    preempt_at_fraction: float | None = None
    spot_preemption: bool = True


def spot_preemption_point(units: int, run_id: str) -> float | None:
    """Where (fraction of the work) the spot node is preempted, or None: risk grows with length."""
    rng = random.Random(run_id)
    risk = 0.95 * min(1.0, max(0.0, (units - SPOT_SAFE_UNITS) / (SPOT_DOOMED_UNITS - SPOT_SAFE_UNITS)))
    return rng.uniform(0.6, 0.9) if rng.random() < risk else None


@op(ins={"prepared": In()}, out=Out(io_manager_key=IO_MANAGER_KEY))
def preemptible_crunch(context: OpExecutionContext, config: CrunchConfig, predcheck: PredcheckResource,
                       prepared: dict) -> dict:
    """A long step whose worker may be SIGKILLed partway (never in a resumed run)."""
    units = len(prepared["items"])
    ck = predcheck.checkpointer(context)
    state = ck.restore(default={"next_unit": 0, "acc": prepared["seed"]})
    restored_at = state["next_unit"]
    fraction = config.preempt_at_fraction
    if fraction is None and config.spot_preemption:
        fraction = spot_preemption_point(units, context.run_id)
    kill_unit = int(units * fraction) if fraction is not None and context.run.parent_run_id is None else None
    with ck.stage("crunch"):
        for i in range(state["next_unit"], units):
            if i == kill_unit:
                context.log.warning(f"spot node preempted at unit {i}/{units}: SIGKILL")
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(config.unit_s)
            state = {"next_unit": i + 1, "acc": crunch_unit(state["acc"], prepared["items"][i])}
            ck.maybe_checkpoint(state, work_units=i + 1)
    context.add_output_metadata({"restored_at_unit": restored_at, "units_executed": units - restored_at,
                                 "restored_from": ck.restored_from.checkpoint_id if ck.restored_from else "",
                                 "checkpoints_written": len(ck.written)})
    return {"acc": state["acc"], "units": units}


@op(ins={"crunched": In()}, out=Out(io_manager_key=IO_MANAGER_KEY))
def publish(context: OpExecutionContext, crunched: dict) -> dict:
    context.add_output_metadata({"acc": crunched["acc"]})
    return crunched


@job(executor_def=EXECUTOR, description="A long step on a spot node: longer runs get preempted (SIGKILL).")
def preemptible_job():
    publish(preemptible_crunch(prepare_input()))


class MemoryConfig(Config):
    total_rows: int = 24
    batch_size: int = 4
    row_mb: int = 4
    memory_cap_mb: int = 56
    row_s: float = 0.05


@contextlib.contextmanager
def address_space_cap(extra_bytes: int) -> Iterator[None]:
    """Cap this process's address space at its current size + ``extra_bytes`` (a hard memory cap)."""
    import resource

    import psutil

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = psutil.Process().memory_info().vms + extra_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def row_bytes(row_mb: int, rows_done: int, total_rows: int) -> int:
    """Rows grow as the data skews: a row late in the input is up to twice the size of an early one."""
    return int(row_mb * MB * (1 + rows_done / total_rows))


@op
def memory_hungry_transform(context: OpExecutionContext, config: MemoryConfig, predcheck: PredcheckResource) -> dict:
    """Holds a whole batch in memory while transforming it, under a hard cap; checkpoints per batch.

    Memory per batch is ``batch_size`` rows of growing size: a batch size that fits early in the
    input can exceed the cap later (a real MemoryError). A resume plan halves the batch size.
    """
    import numpy as np

    ck = predcheck.checkpointer(context)
    state = ck.restore(default={"rows_done": 0, "checksum": 0.0})
    batch_size = ck.plan.adjustments.scale_batch(config.batch_size) if ck.plan else config.batch_size
    if batch_size != config.batch_size:
        context.log.info(f"resume plan: batch size {config.batch_size} -> {batch_size}")
    with address_space_cap(config.memory_cap_mb * MB):
        while state["rows_done"] < config.total_rows:
            rows = min(batch_size, config.total_rows - state["rows_done"])
            size = row_bytes(config.row_mb, state["rows_done"], config.total_rows)
            with ck.stage("load_batch"):
                held = []
                for _ in range(rows):
                    held.append(np.ones(size // 8))
                    time.sleep(config.row_s)
            with ck.stage("transform"):
                checksum = state["checksum"] + float(sum(float(a[:1000].sum()) for a in held))
            del held
            state = {"rows_done": state["rows_done"] + rows, "checksum": checksum}
            ck.progress(state["rows_done"])
            ck.checkpoint(state)
    context.add_output_metadata({"batch_size": batch_size, "rows": config.total_rows})
    return state


@job(executor_def=EXECUTOR, description="Memory grows with the batch size under a hard cap: big batches die.")
def memory_job():
    memory_hungry_transform()


class ApiConfig(Config):
    base_url: str = "http://127.0.0.1:8765"
    requests: int = 20
    units_per_request: int = 2000
    max_retries: int = 2
    backoff_s: float = 0.2


class ServiceUnavailableError(RuntimeError):
    """The demo service kept failing after all retries."""


def call_service(url: str, max_retries: int, backoff_s: float) -> dict:
    last: Exception | None = None
    for attempt in range(max_retries + 1):
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError) as e:
            last = e
            time.sleep(backoff_s * (2 ** attempt))
    raise ServiceUnavailableError(f"{url!r} failed {max_retries + 1} times; last error: {last}")


@op
def call_flaky_api(context: OpExecutionContext, config: ApiConfig, predcheck: PredcheckResource) -> dict:
    ck = predcheck.checkpointer(context)
    state = ck.restore(default={"done": 0, "total": 0})
    with ck.stage("http"):
        for i in range(state["done"], config.requests):
            body = call_service(f"{config.base_url}/work?units={config.units_per_request}",
                                config.max_retries, config.backoff_s)
            state = {"done": i + 1, "total": (state["total"] + body["result"]) % 1_000_003}
            ck.maybe_checkpoint(state, work_units=i + 1)
    return state


@job(executor_def=EXECUTOR, description="Calls a local HTTP service that degrades intermittently.")
def api_job():
    call_flaky_api()


DEMO_JOBS = [preemptible_job, memory_job, api_job]
