"""One tick of the forecast sensor: score every in-flight step, flag risky runs, ask for checkpoints.

Decision per step (DESIGN.md §8 cost rule): request a proactive checkpoint when the run is risky
(failure probability ≥ the threshold) and the expected work saved, p × seconds since the step's
last checkpoint, exceeds the measured cost C of this step's checkpoints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.execution.stats import StepEventStatus

from predcheck_dagster import features, policy
from predcheck_dagster.checkpoint_store import Prediction
from predcheck_dagster.features import (
    FEATURE_NAMES,
    HISTORY_INPUT_NAMES,
    LIVE_INPUT_NAMES,
    MODEL_INPUT_NAMES,
    SAMPLE_BLOCK_FIELDS,
    SCORED_SAMPLES,
    USUAL_NAMES,
    SampleBlock,
    bottleneck_stages,
)
from predcheck_dagster.outcome import DEADLINE_TAG, parse_deadline
from predcheck_dagster.resource import PredcheckResource, default_tracking_uri

TAG = "predcheck/"
MAX_RUNS_PER_TICK = 500
DEFAULT_CHECKPOINT_COST_S = 0.05
# History features of an attempt are fixed when it starts (only attempts that ended before count):
# computed once per attempt and kept across ticks, bounded.
HISTORY_CACHE_SIZE = 20_000
_HISTORY_CACHE: dict[tuple[str, str, float], tuple[dict[str, float], np.ndarray]] = {}
# What a tick reads of each sample: the features' fields, the stage (always) and the drop count
# (Prometheus). Fewer columns: less to transfer and parse for 12,000 samples per tick.
SAMPLE_FIELDS = (*SAMPLE_BLOCK_FIELDS, "dropped_samples")
# where the cached history part and the live part go in the model input
_HISTORY_COLUMNS = np.array([MODEL_INPUT_NAMES.index(n) for n in HISTORY_INPUT_NAMES])
_LIVE_COLUMNS = np.array([MODEL_INPUT_NAMES.index(n) for n in LIVE_INPUT_NAMES])
_FEATURE_COLUMNS = np.array([MODEL_INPUT_NAMES.index(n) for n in FEATURE_NAMES])
_CPU_UTIL_COLUMN = MODEL_INPUT_NAMES.index("cpu_util")


@dataclass
class ModelInputs:
    """What the model scores, one row per step: in-flight steps first, then queued ones."""

    x: np.ndarray  # (n, len(MODEL_INPUT_NAMES)) float64, NaN = unknown
    samples: SampleBlock  # each step's newest samples (none for a queued step)
    histories: dict[tuple[str, str], list[dict[str, Any]]]  # (job, step) -> its last attempts

    def features(self, i: int) -> dict[str, float | None]:
        """Row ``i``'s flat features (recorded with its prediction; None = unknown)."""
        return {name: (None if v != v else v) for name, v in zip(FEATURE_NAMES, self.x[i, _FEATURE_COLUMNS].tolist())}

    def cpu_util(self, i: int) -> float:
        return float(self.x[i, _CPU_UTIL_COLUMN])


def model_inputs(store: Any, in_flight: list[tuple[Any, str, float]], queued: list[tuple[Any, str]],
                 now: float) -> ModelInputs:
    """The model input of each in-flight (run, step, start) at ``now`` and of each queued (run, step).

    History features come from the cache (fixed when an attempt starts), the live features from
    one ``features.live_matrix`` pass over the samples the store returns as arrays.
    """
    scored = [*in_flight, *((run, key, now) for run, key in queued)]
    histories = store.step_histories({(run.job_name, key) for run, key, _ in scored}, 2 * features.PIPELINE_WINDOW)
    block = store.recent_sample_block([(run.run_id, key) for run, key, _ in in_flight], per_step=SCORED_SAMPLES,
                                      fields=SAMPLE_FIELDS).with_empty_rows(len(queued))
    history = np.stack([vector for _, vector in _history_entries(store, scored, histories)]) if scored else \
        np.zeros((0, len(HISTORY_INPUT_NAMES) + len(USUAL_NAMES)))
    elapsed = [now - start for _, _, start in in_flight] + [0.0] * len(queued)
    x = np.empty((len(scored), len(MODEL_INPUT_NAMES)))
    x[:, _HISTORY_COLUMNS] = history[:, :len(HISTORY_INPUT_NAMES)]
    x[:, _LIVE_COLUMNS] = features.live_matrix(block, elapsed, history[:, len(HISTORY_INPUT_NAMES):])
    return ModelInputs(x, block, histories)


@dataclass
class TickReport:
    scored: int = 0
    queued_scored: int = 0
    flagged: list[str] = field(default_factory=list)
    requested: list[str] = field(default_factory=list)
    served_by: str = "none"
    model_version: str | None = None
    duration_s: float = 0.0
    lines: list[str] = field(default_factory=list)
    # per in-flight step: job, run_id, step_key and the figures the Prometheus gauges show (their
    # checkpoint request counts are read when the gauges are published)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def message(self) -> str:
        head = (f"scored {self.scored} in-flight step(s) and {self.queued_scored} queued step(s) in "
                f"{self.duration_s * 1000:.0f} ms with "
                f"{self.served_by}{' v' + self.model_version if self.model_version else ''}; "
                f"flagged {len(self.flagged)} run(s), requested {len(self.requested)} checkpoint(s)")
        return "\n".join([head, *self.lines])


def in_flight_steps(instance: DagsterInstance) -> list[tuple[Any, Any]]:
    """(run, step stats) of every step in progress in a started run."""
    runs = instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED]), limit=MAX_RUNS_PER_TICK)
    out = []
    for run in runs:
        for stats in instance.get_run_step_stats(run.run_id):
            if stats.status == StepEventStatus.IN_PROGRESS and stats.start_time and not stats.end_time:
                out.append((run, stats))
    return out


def queued_steps(instance: DagsterInstance) -> list[tuple[Any, str]]:
    """(run, step key) of every step a queued run will execute."""
    runs = instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.QUEUED]), limit=MAX_RUNS_PER_TICK)
    out = []
    for run in runs:
        snapshot = (instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
                    if run.execution_plan_snapshot_id else None)
        for step_key in (snapshot.step_keys_to_execute if snapshot else []):
            out.append((run, step_key))
    return out


def forecast_tick(instance: DagsterInstance, predcheck: PredcheckResource, now: float | None = None) -> TickReport:
    """Score every in-flight step and queued run; record, tag and request; say why."""
    from predcheck_dagster.forecaster import score
    from predcheck_dagster.store_maintenance import flush_spool

    t0 = time.perf_counter()
    now = now or time.time()
    report = TickReport()
    store = predcheck.metrics_store(instance)
    flushed = flush_spool(store)  # samples spooled during an outage, before they are scored
    if flushed:
        report.lines.append(flushed)
    steps = in_flight_steps(instance)
    queued = queued_steps(instance)
    if not steps and not queued:
        report.duration_s = time.perf_counter() - t0
        return report
    inputs = model_inputs(store, [(run, s.step_key, s.start_time) for run, s in steps], queued, now)
    scores = score(inputs.x, predcheck.tracking_uri or default_tracking_uri(), predcheck.model_uri)
    report.served_by, report.model_version = scores.served_by, scores.model_version
    if scores.note:
        report.lines.append(scores.note)
    last_checkpoint = store.last_checkpoint_times(run.run_id for run, _ in steps)
    decided_at = time.time()  # scoring can take a while (a cold model load): steps kept checkpointing
    costs: dict[tuple[str, str], float] = {}
    stage_totals: dict[tuple[str, str], dict[str, float]] = {}
    prediction_rows: list[dict[str, Any]] = []
    new_tags: dict[str, dict[str, str]] = {}
    for i, (run, stats) in enumerate(steps):
        p, remaining = scores.failure_probability[i], _known(scores.predicted_remaining_s[i])
        key = (run.job_name, stats.step_key)
        if key not in costs:  # C: this step's recent checkpoints, whichever runs wrote them
            costs[key] = store.mean_checkpoint_cost(*key, DEFAULT_CHECKPOINT_COST_S)
        cost = costs[key]
        work_since = max(0.0, decided_at - last_checkpoint.get((run.run_id, stats.step_key), stats.start_time))
        risky = p >= predcheck.risk_threshold
        request = risky and policy.should_request_checkpoint(p, work_since, cost, remaining)
        if key not in stage_totals:  # the step's recent attempts: the same for all its runs this tick
            stage_totals[key] = _stage_totals(inputs.histories[key])
        ends = inputs.samples.ends(i)  # the projections read the oldest and the newest sample only
        cpu_util = inputs.cpu_util(i)
        prediction = _prediction(run, stats, cpu_util, p, remaining, stage_totals[key], ends, scores, now)
        reason = (f"{run.run_id[:8]}/{stats.step_key}: p_fail={p:.2f} remaining={_fmt(remaining)} "
                  f"elapsed={now - stats.start_time:.0f}s work_since_ckpt={work_since:.1f}s C={cost:.3f}s -> "
                  + ("checkpoint (p×work > C)" if request else "high risk, checkpoint not worth it yet"
                     if risky else "low risk"))
        report.lines.append(reason)
        prediction_rows.append(_prediction_row(now, run, stats.step_key, scores, p, remaining,
                                               now - stats.start_time, "checkpoint" if request else "none",
                                               reason, inputs.features(i)))
        tags = {f"{TAG}failure_probability": f"{p:.3f}", f"{TAG}risk": "high" if risky else "low",
                f"{TAG}predicted_remaining_s": _fmt(remaining)}
        if prediction.bottleneck_stages:
            tags[f"{TAG}bottleneck_stage"] = prediction.bottleneck_stages[0]
        if risky:
            report.flagged.append(run.run_id)
        requested_now = request and store.request_checkpoint(run.run_id, stats.step_key, prediction.to_dict())
        if requested_now:
            tags[f"{TAG}checkpoint_requested"] = stats.step_key
            report.requested.append(f"{run.run_id}/{stats.step_key}")
        new_tags.setdefault(run.run_id, {}).update(tags)
        last_sample = (ends or [{}])[-1]
        report.steps.append({
            "job": run.job_name, "run_id": run.run_id, "step_key": stats.step_key,
            "rss_bytes": last_sample.get("rss_bytes"), "cpu_util": cpu_util,
            "elapsed_s": now - stats.start_time, "failure_probability": p, "predicted_remaining_s": remaining,
            "samples_dropped": last_sample.get("dropped_samples") or 0})
    run_risk: dict[str, float] = {}
    for j, (run, step_key) in enumerate(queued, start=len(steps)):
        p, remaining = scores.failure_probability[j], _known(scores.predicted_remaining_s[j])
        run_risk[run.run_id] = 1 - (1 - run_risk.get(run.run_id, 0.0)) * (1 - p)
        prediction_rows.append(_prediction_row(now, run, step_key, scores, p, remaining, None, "queued",
                                               f"{run.run_id[:8]}/{step_key} (queued): p_fail={p:.2f}",
                                               inputs.features(j)))
    for run_id, p in run_risk.items():
        risky = p >= predcheck.risk_threshold
        report.lines.append(f"{run_id[:8]} (queued): p_fail(any step)={p:.2f} -> {'high' if risky else 'low'} risk")
        new_tags[run_id] = {f"{TAG}failure_probability": f"{p:.3f}", f"{TAG}risk": "high" if risky else "low"}
        if risky:
            report.flagged.append(run_id)
    runs = {run.run_id: run for run, _ in [*steps, *queued]}
    for run_id, tags in new_tags.items():
        if any(runs[run_id].tags.get(k) != v for k, v in tags.items()):
            instance.add_run_tags(run_id, tags)
    store.add_predictions(prediction_rows)
    report.scored = len(steps)
    report.queued_scored = len(queued)
    report.duration_s = time.perf_counter() - t0
    return report


def _history_entries(store: Any, scored: list[tuple[Any, str, float]],
                     histories: dict[tuple[str, str], list[dict[str, Any]]]
                     ) -> list[tuple[dict[str, float], np.ndarray]]:
    """Per (run, step, start): its history, group, calendar and sequence features, as a row and as
    an array of its ``HISTORY_INPUT_NAMES`` then ``USUAL_NAMES`` (what the live features compare
    with); cached per attempt.

    The same ``HistoryIndex`` the trainer sweeps, built from the store's windows: the step's last
    attempts, its job's last attempts and those of the last hour, every failure of the last hour,
    and the attempts in flight now.
    """
    missing = [(run, key, start) for run, key, start in scored if (run.run_id, key, start) not in _HISTORY_CACHE]
    if missing:
        earliest = min(start for _, _, start in missing) - features.RECENT_S
        jobs = store.job_histories({run.job_name for run, _, _ in missing}, features.GROUP_WINDOW, earliest)
        failures = store.failures_since(earliest)
        inflight = [{"pipeline": f"{run.job_name}:{key}", "group": run.job_name, "started_at": start}
                    for run, key, start in scored]
        for run, key, start in missing:
            known = {r["id"]: r for r in [*histories.get((run.job_name, key), []), *jobs, *failures]}
            history = [features.step_attempt(r) for r in sorted(known.values(), key=lambda r: (r["ended_at"], r["id"]))]
            attempt = {"pipeline": f"{run.job_name}:{key}", "group": run.job_name, "started_at": start}
            index = features.index_of(history, start, [a for a in inflight if a["started_at"] <= start])
            row, usual, sequence = features.history_parts(index, attempt)
            row.update(sequence)
            row.update(zip(USUAL_NAMES, usual))
            vector = np.array([row[name] for name in HISTORY_INPUT_NAMES] + usual, dtype=np.float64)
            if len(_HISTORY_CACHE) >= HISTORY_CACHE_SIZE:
                _HISTORY_CACHE.pop(next(iter(_HISTORY_CACHE)))
            _HISTORY_CACHE[(run.run_id, key, start)] = (row, vector)
    return [_HISTORY_CACHE[(run.run_id, key, start)] for run, key, start in scored]


def _known(value: float) -> float | None:
    return None if value != value else value


def _prediction_row(now: float, run: Any, step_key: str, scores: Any, p: float, remaining: float | None,
                    elapsed: float | None, decision: str, reason: str,
                    features: dict[str, float | None]) -> dict[str, Any]:
    return {"ts": now, "run_id": run.run_id, "step_key": step_key, "job": run.job_name,
            "served_by": scores.served_by, "model_uri": scores.model_uri, "model_version": scores.model_version,
            "failure_probability": p, "predicted_remaining_s": remaining, "elapsed_s": elapsed,
            "decision": decision, "reason": reason, "features": features}


def _stage_totals(history: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per stage over a step's last 5 attempts."""
    import json

    totals: dict[str, float] = {}
    for h in history[-5:]:
        for stage, seconds in json.loads(h["stage_durations"] or "{}").items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    return totals


def _prediction(run: Any, stats: Any, cpu_util: float, p: float, remaining: float | None,
                stage_totals: dict[str, float], samples: list[dict[str, Any]], scores: Any, now: float) -> Prediction:
    """The prediction attached to checkpoints: probability, remaining time, bottlenecks, projections.

    ``stage_totals``: seconds per stage of the step's recent attempts; ``samples``: the attempt's
    oldest and newest scored samples.
    """
    if not stage_totals and samples and samples[-1].get("stage"):
        stage_totals = {samples[-1]["stage"]: 1.0}
    elapsed = now - stats.start_time
    rss = samples[-1]["rss_bytes"] if samples and samples[-1].get("rss_bytes") else None
    slope = None
    if len(samples) >= 2 and samples[-1]["elapsed_s"] > samples[0]["elapsed_s"] and rss and samples[0].get("rss_bytes"):
        slope = (rss - samples[0]["rss_bytes"]) / (samples[-1]["elapsed_s"] - samples[0]["elapsed_s"])
    horizon = remaining or 0.0
    peak = max(rss, rss + slope * horizon) if rss is not None and slope is not None else rss
    deadline = parse_deadline(run.tags.get(DEADLINE_TAG))  # the hooks' rule: a bad tag is no deadline
    return Prediction(
        failure_probability=p, predicted_remaining_s=remaining,
        bottleneck_stages=bottleneck_stages(stage_totals),
        resource_projection={
            "peak_rss_bytes": int(peak) if peak else None,
            "cpu_s": (cpu_util * (elapsed + horizon)) if cpu_util == cpu_util and cpu_util is not None else None,
            "time_to_limit_s": (deadline - elapsed) if deadline is not None else None},
        model_uri=scores.model_uri, model_version=scores.model_version)


def _fmt(seconds: float | None) -> str:
    return "unknown" if seconds is None or seconds != seconds else f"{seconds:.0f}"
