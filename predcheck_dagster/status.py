"""What ``predcheck status`` shows: every in-flight step with the forecast sensor's latest verdict.

Read only: it reads the Dagster instance (which steps are in flight) and the metrics store (the
latest prediction per step, checkpoints, pending checkpoint requests). It never scores, tags or
requests anything itself; that is the forecast sensor's job.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

COLUMNS = ("RUN", "JOB", "STEP", "ELAPSED", "P_FAIL", "RISK", "REMAINING", "LAST CKPT", "SCORED")


@dataclass(frozen=True)
class StepStatus:
    """One in-flight step and its latest forecast (None where the sensor has not scored it)."""

    run_id: str
    job: str
    step_key: str
    elapsed_s: float
    failure_probability: float | None = None
    predicted_remaining_s: float | None = None
    served_by: str | None = None
    model_version: str | None = None
    scored_ago_s: float | None = None
    last_checkpoint_ago_s: float | None = None
    checkpoint_pending: bool = False

    def risk(self, threshold: float) -> str:
        if self.failure_probability is None:
            return "not scored"
        return "high" if self.failure_probability >= threshold else "low"

    def to_dict(self, threshold: float) -> dict[str, Any]:
        return {**asdict(self), "risk": self.risk(threshold)}


def in_flight_status(instance: Any, store: Any, now: float | None = None) -> list[StepStatus]:
    """Every step in progress in a started run of ``instance``, oldest first, with its latest forecast."""
    from predcheck_dagster.forecast_service import in_flight_steps

    now = time.time() if now is None else now
    steps = in_flight_steps(instance)
    last_checkpoints = store.last_checkpoint_times(run.run_id for run, _ in steps)
    latest = store.latest_predictions((run.run_id, stats.step_key) for run, stats in steps)
    out = []
    for run, stats in sorted(steps, key=lambda pair: pair[1].start_time):
        key = (run.run_id, stats.step_key)
        prediction = latest.get(key)
        last_checkpoint = last_checkpoints.get(key)
        out.append(StepStatus(
            run_id=run.run_id, job=run.job_name, step_key=stats.step_key, elapsed_s=now - stats.start_time,
            failure_probability=prediction["failure_probability"] if prediction else None,
            predicted_remaining_s=prediction["predicted_remaining_s"] if prediction else None,
            served_by=prediction["served_by"] if prediction else None,
            model_version=prediction["model_version"] if prediction else None,
            scored_ago_s=now - prediction["ts"] if prediction else None,
            last_checkpoint_ago_s=now - last_checkpoint if last_checkpoint is not None else None,
            checkpoint_pending=store.pending_request(run.run_id, stats.step_key) is not None))
    return out


def _seconds(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.0f}s{suffix}"


def render_table(rows: list[StepStatus], threshold: float) -> str:
    """A fixed-width table, one line per step, and a closing summary line."""
    cells = [COLUMNS]
    for r in rows:
        scorer = f" ({r.served_by}{' v' + r.model_version if r.model_version else ''})" if r.served_by else ""
        checkpoint = _seconds(r.last_checkpoint_ago_s, " ago") + (" (requested)" if r.checkpoint_pending else "")
        cells.append((r.run_id[:8], r.job, r.step_key, _seconds(r.elapsed_s),
                      "-" if r.failure_probability is None else f"{r.failure_probability:.2f}", r.risk(threshold),
                      _seconds(r.predicted_remaining_s), checkpoint, _seconds(r.scored_ago_s, " ago") + scorer))
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in cells]
    high = sum(r.risk(threshold) == "high" for r in rows)
    lines.append(f"{len(rows)} step(s) in flight, {high} at high risk (p_fail >= {threshold:g})")
    if any(r.failure_probability is None for r in rows):
        lines.append("not scored: the forecast sensor has not scored the step yet; is predcheck_forecast_sensor "
                     "running (Automation page of the Dagster UI, or `dagster dev`'s daemon)?")
    return "\n".join(lines)
