"""The in-step checkpointer: restore, checkpoint when due or asked, time stages.

It holds no dagster import: the resource builds it from the op context, so it is tested without
Dagster and stays cheap on the step's hot path (``maybe_checkpoint`` does two float comparisons
when nothing is due).

Guarantees:
    - ``maybe_checkpoint`` never raises for a metrics-store problem: a request it cannot poll is a
      request it does not see; the periodic interval still applies.
    - ``checkpoint`` raises only if the checkpoint itself cannot be written (the step decides).
    - ``restore`` refuses a checkpoint of another job, step or code version with a clear error and
      falls back past a corrupt one to the previous good checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from predcheck_dagster import policy
from predcheck_dagster.checkpoint_store import CheckpointStore, Manifest, Prediction
from predcheck_dagster.errors import CheckpointCorruptError
from predcheck_dagster.metrics_store import MetricsStore
from predcheck_dagster.profiler import StepProfiler
from predcheck_dagster.resume_plan import StepResumePlan

LOG = logging.getLogger("predcheck.checkpointer")
_NEVER = float("inf")
POLL_BACKOFF_S = 30.0
RESTORE_STAGE = "restore"


@dataclass(frozen=True)
class StepIdentity:
    job: str
    run_id: str
    root_run_id: str
    step_key: str
    attempt: int = 1
    partition_key: str | None = None
    code_version: str | None = None


@dataclass(frozen=True)
class CheckpointSettings:
    """How often to checkpoint and to poll for requests (seconds)."""

    poll_interval_s: float = 1.0
    fixed_interval_s: float | None = None
    min_interval_s: float = 1.0
    max_interval_s: float = 600.0
    default_mtbf_s: float = policy.DEFAULT_MTBF_S


class Checkpointer:
    """Checkpoint a step's state through ``store``; see the module docstring for guarantees."""

    def __init__(self, identity: StepIdentity, store: CheckpointStore, metrics: MetricsStore | None,
                 profiler: StepProfiler, settings: CheckpointSettings | None = None,
                 plan: StepResumePlan | None = None, log: Any = None) -> None:
        self.identity = identity
        self.store = store
        self.metrics = metrics
        self.profiler = profiler
        self.settings = settings or CheckpointSettings()
        self.plan = plan
        self.log = log or LOG
        self.stream = store.step_stream(identity.job, identity.root_run_id, identity.step_key)
        self.restored_from: Manifest | None = None
        self.restore_s: float | None = None
        self.written: list[Manifest] = []
        self.prediction: Prediction | None = plan.prediction if plan else None
        self._request: dict[str, Any] | None = None
        self._cost_s = self._past_cost()
        self._poll_warned = False
        now = time.monotonic()
        self._last_checkpoint_t = now
        self._next_poll = now if metrics is not None else _NEVER
        # Without a measured cost C for this step, the first checkpoint comes early and measures it.
        first_due = self._interval() if self._cost_s is not None or self.settings.fixed_interval_s is not None \
            else self.settings.min_interval_s
        self._next_due = now + first_due

    def _past_cost(self) -> float | None:
        """Mean write time of this step's recent checkpoints (C), from the metrics store, if any."""
        if self.metrics is None:
            return None
        try:
            cost = self.metrics.mean_checkpoint_cost(self.identity.job, self.identity.step_key, default=-1.0)
        except Exception:  # noqa: BLE001 - an unreachable store only costs the early first checkpoint
            return None
        return cost if cost >= 0 else None

    # ---- restore ------------------------------------------------------------------------------
    def restore(self, default: Any = None) -> Any:
        """The state of the checkpoint named by the resume plan, else this step's newest good one
        in the run group, else ``default``."""
        started = time.perf_counter()
        found = None
        with self.profiler.stage(RESTORE_STAGE):
            if self.plan is not None and self.plan.checkpoint_id:
                try:
                    found = self.store.read_for_resume(self.plan.checkpoint_id, job=self.identity.job,
                                                       step_key=self.identity.step_key,
                                                       code_version=self.identity.code_version)
                except (CheckpointCorruptError, FileNotFoundError) as e:
                    self.log.warning(f"predcheck: {e} Falling back to the newest good checkpoint.")
            if found is None:
                found = self.store.latest(self.stream)
        self.restore_s = time.perf_counter() - started
        if found is None:
            return default
        self.restored_from, state = found
        self._last_checkpoint_t = time.monotonic()
        self.log.info(f"predcheck: restored {self.restored_from.checkpoint_id!r} "
                      f"({self.restored_from.nbytes} bytes in {self.restore_s:.3f} s)")
        return state

    # ---- stages and progress ------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A named stage: its wall time, CPU (user, system), disk I/O and peak RSS go to
        ``step_runs.stage_durations``/``stage_profile``, and samples taken in it name it. A stage
        boundary costs about 20 µs: wrap units of work of a millisecond or more."""
        with self.profiler.stage(name):
            yield

    def progress(self, work_units: float) -> None:
        """Report how many units of work the step has completed (shown in samples and checkpoints)."""
        self.profiler.work_units = work_units

    # ---- checkpointing ------------------------------------------------------------------------
    def maybe_checkpoint(self, state: Any, work_units: float | None = None) -> Manifest | None:
        """Checkpoint ``state`` if a request from the sensor is pending or the interval is due."""
        if work_units is not None:
            self.profiler.work_units = work_units
        now = time.monotonic()
        if now < self._next_due and now < self._next_poll:
            return None
        if now >= self._next_poll:
            self._poll(now)
        if self._request is not None:
            return self.checkpoint(state, kind="preemptive")
        if now >= self._next_due:
            return self.checkpoint(state, kind="periodic")
        return None

    def checkpoint(self, state: Any, kind: str = "periodic") -> Manifest:
        """Persist ``state`` now (atomically; the previous checkpoint survives a crash here)."""
        ident = self.identity
        manifest = self.store.write(
            state, stream=self.stream, job=ident.job, run_id=ident.run_id, root_run_id=ident.root_run_id,
            step_key=ident.step_key, kind=kind, code_version=ident.code_version, prediction=self.prediction)
        self.written.append(manifest)
        self._cost_s = manifest.write_s if self._cost_s is None else 0.7 * self._cost_s + 0.3 * manifest.write_s
        now = time.monotonic()
        self._last_checkpoint_t = now
        self._next_due = now + self._interval()
        request, self._request = self._request, None
        if self.metrics is not None:
            try:
                self.metrics.record_checkpoint({
                    "checkpoint_id": manifest.checkpoint_id, "run_id": ident.run_id,
                    "root_run_id": ident.root_run_id, "job": ident.job, "step_key": ident.step_key,
                    "seq": manifest.seq, "kind": kind, "created_at": manifest.created_at,
                    "nbytes": manifest.nbytes, "write_s": manifest.write_s,
                    "work_units": self.profiler.work_units,
                    "prediction": manifest.prediction.to_dict() if manifest.prediction else None})
                if request is not None:
                    self.metrics.honor_request(request["id"], manifest.checkpoint_id)
            except Exception as e:  # noqa: BLE001 - bookkeeping must not fail the step
                self.log.warning(f"predcheck: checkpoint {manifest.checkpoint_id!r} committed but not "
                                 f"indexed in the metrics store: {e}")
        return manifest

    def _interval(self) -> float:
        s = self.settings
        if s.fixed_interval_s is not None:
            return s.fixed_interval_s
        p = self.prediction
        horizon = (p.predicted_remaining_s if p else None) or None
        return policy.adaptive_interval(self._cost_s or 0.0, p.failure_probability if p else None, horizon,
                                        s.min_interval_s, s.max_interval_s, s.default_mtbf_s)

    def _poll(self, now: float) -> None:
        self._next_poll = now + self.settings.poll_interval_s
        try:
            request = self.metrics.pending_request(self.identity.run_id, self.identity.step_key)
        except Exception as e:  # noqa: BLE001 - an unreachable store must not fail the step
            # Back off, so a store that times out does not stall the step at every poll.
            self._next_poll = now + max(self.settings.poll_interval_s, POLL_BACKOFF_S)
            if not self._poll_warned:
                self.log.warning(f"predcheck: cannot poll checkpoint requests ({e}); periodic "
                                 f"checkpoints continue; next poll in {POLL_BACKOFF_S:.0f} s.")
                self._poll_warned = True
            return
        if request is not None:
            self._request = request
            prediction = Prediction.from_dict(request.get("prediction"))
            if prediction is not None:
                self.prediction = prediction
                self._next_due = self._last_checkpoint_t + self._interval()

    def close(self) -> dict[str, Any]:
        """Stop the profiler and return the attempt's summary figures."""
        summary = self.profiler.stop()
        summary["checkpoints_written"] = len(self.written)
        return summary
