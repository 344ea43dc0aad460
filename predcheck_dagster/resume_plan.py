"""The resume plan handed to a re-executed run, and how a step adapts to it (pure: no dagster).

A plan says, per failed step, which checkpoint to restore, what the forecaster predicted, and the
adjustments to apply (smaller batches after running out of memory, a larger memory request, a
higher priority for the bottleneck stage).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from predcheck_dagster.checkpoint_store import Prediction

MEMORY_ERRORS = frozenset({"MemoryError", "OutOfMemoryError"})
MEMORY_HEADROOM = 1.5
# A step killed without its hooks (SIGKILL: the OOM killer, or a preempted node, which look the same
# to Dagster) counts as out of memory when it died holding this many times its usual peak RSS.
CRASH_OOM_FACTOR = 1.5


@dataclass(frozen=True)
class Adjustments:
    """What a resumed step should change. ``batch_size_factor`` multiplies the step's batch size."""

    batch_size_factor: float = 1.0
    memory_request_bytes: int | None = None
    priority: int = 0

    def scale_batch(self, batch_size: int, minimum: int = 1) -> int:
        """Apply ``batch_size_factor`` to ``batch_size`` (rounded down, at least ``minimum``)."""
        return max(minimum, int(math.floor(batch_size * self.batch_size_factor)))


@dataclass(frozen=True)
class StepResumePlan:
    step_key: str
    checkpoint_id: str
    prediction: Prediction | None = None
    adjustments: Adjustments = field(default_factory=Adjustments)
    error_class: str | None = None


@dataclass(frozen=True)
class ResumePlan:
    parent_run_id: str
    steps: tuple[StepResumePlan, ...] = ()

    def for_step(self, step_key: str) -> StepResumePlan | None:
        return next((s for s in self.steps if s.step_key == step_key), None)

    def to_config(self) -> dict[str, Any]:
        """The plan as the predcheck resource's ``resume`` run config."""
        steps = []
        for s in self.steps:
            p = s.prediction
            proj = (p.resource_projection if p else {}) or {}
            steps.append({
                "step_key": s.step_key, "checkpoint_id": s.checkpoint_id, "error_class": s.error_class,
                "failure_probability": p.failure_probability if p else None,
                "predicted_remaining_s": p.predicted_remaining_s if p else None,
                "bottleneck_stages": list(p.bottleneck_stages) if p else [],
                "peak_rss_bytes": _int_or_none(proj.get("peak_rss_bytes")),
                "cpu_s": proj.get("cpu_s"), "time_to_limit_s": proj.get("time_to_limit_s"),
                "model_uri": p.model_uri if p else None, "model_version": p.model_version if p else None,
                **asdict(s.adjustments),
            })
        return {"parent_run_id": self.parent_run_id, "steps": steps}

    @classmethod
    def from_config(cls, config: Mapping[str, Any] | None) -> ResumePlan | None:
        if not config:
            return None
        steps = []
        for s in config.get("steps") or []:
            prediction = None
            if s.get("failure_probability") is not None:
                prediction = Prediction(
                    failure_probability=float(s["failure_probability"]),
                    predicted_remaining_s=s.get("predicted_remaining_s"),
                    bottleneck_stages=list(s.get("bottleneck_stages") or []),
                    resource_projection={"peak_rss_bytes": s.get("peak_rss_bytes"), "cpu_s": s.get("cpu_s"),
                                         "time_to_limit_s": s.get("time_to_limit_s")},
                    model_uri=s.get("model_uri"), model_version=s.get("model_version"))
            steps.append(StepResumePlan(
                step_key=s["step_key"], checkpoint_id=s["checkpoint_id"], prediction=prediction,
                error_class=s.get("error_class"),
                adjustments=Adjustments(batch_size_factor=float(s.get("batch_size_factor") or 1.0),
                                        memory_request_bytes=s.get("memory_request_bytes"),
                                        priority=int(s.get("priority") or 0))))
        return cls(parent_run_id=config["parent_run_id"], steps=tuple(steps))


def plan_adjustments(error_class: str | None, peak_rss_bytes: int | None,
                     prediction: Prediction | None, crashed: bool = False,
                     usual_peak_rss_bytes: float | None = None) -> Adjustments:
    """Adjustments for a step that failed with ``error_class`` at ``peak_rss_bytes``.

    ``crashed``: it died without its hooks, whatever class Dagster gave the failure
    (``ChildProcessCrashException`` under the multiprocess executor, ``RunEnded`` under celery).
    ``usual_peak_rss_bytes``: the median peak RSS of the step's successful attempts.

    Out of memory (a MemoryError, or a crash at ``CRASH_OOM_FACTOR`` × the usual peak or more; a
    crash at the usual footprint is a preemption, and changes nothing): halve the batch and ask for
    1.5× the peak. A step the forecaster flagged as very likely to fail gets priority 1.
    """
    killed_swollen = bool(crashed and peak_rss_bytes and usual_peak_rss_bytes
                          and peak_rss_bytes >= CRASH_OOM_FACTOR * usual_peak_rss_bytes)
    memory_bound = error_class in MEMORY_ERRORS or killed_swollen
    return Adjustments(
        batch_size_factor=0.5 if memory_bound else 1.0,
        memory_request_bytes=int(peak_rss_bytes * MEMORY_HEADROOM) if memory_bound and peak_rss_bytes else None,
        priority=1 if prediction and prediction.failure_probability >= 0.5 else 0,
    )


def executor_tags(plan: ResumePlan, celery_queue: str | None = None) -> dict[str, str]:
    """Run tags through which executors apply a plan's resource adjustments.

    - ``dagster/priority``: the queued run coordinator launches higher priorities first.
    - ``dagster-celery/run_priority``: the same priority for dagster-celery; its ``celery_executor``
      adds it to each step task's priority (a RabbitMQ queue honours message priorities only if it
      was declared with ``x-max-priority``, as dagster-celery's default ``dagster`` queue is).
    - ``dagster-k8s/config``: the k8s run launcher requests the memory the plan asks for (the
      largest over the plan's steps) for the run's pod. The ``k8s_job_executor`` reads step pods'
      config from op tags, not from this run tag.
    - ``dagster-celery/queue``: a memory-bound resume goes to ``celery_queue`` (e.g. workers on
      big nodes) when one is named. dagster-celery's ``CeleryRunLauncher`` routes the run by this
      tag; the ``celery_executor`` routes steps by op tags and ``task_default_queue`` only.
    """
    tags: dict[str, str] = {}
    priority = max((s.adjustments.priority for s in plan.steps), default=0)
    if priority:
        tags["dagster/priority"] = str(priority)
        tags["dagster-celery/run_priority"] = str(priority)
    memory = max((s.adjustments.memory_request_bytes or 0 for s in plan.steps), default=0)
    if memory:
        mib = math.ceil(memory / (1024 * 1024))
        tags["dagster-k8s/config"] = json.dumps(
            {"container_config": {"resources": {"requests": {"memory": f"{mib}Mi"}}}}, sort_keys=True)
        if celery_queue:
            tags["dagster-celery/queue"] = celery_queue
    return tags


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
