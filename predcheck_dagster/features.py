"""Features of an attempt, the same for training and live scoring (pure: numpy, no dagster).

An *attempt* is one execution of a recurring unit: a Dagster step (pipeline ``job:step``, group
``job``) or a job of a real trace (pipeline ``user:program``, group ``user``). It is a mapping with
``pipeline``, ``group``, ``started_at``, ``ended_at``, ``duration_s``, ``outcome`` and optionally
``requested_s`` (a deadline or requested runtime), ``input_bytes``, ``peak_rss_bytes``,
``work_units`` and static ``x_*`` attributes known when it was submitted.

A row describes one attempt at one moment of its life: what the histories of its pipeline, its
group and the whole system said before it started, the calendar, and what its live samples show.

Guarantees:
    - History features use only attempts that *ended* strictly before the scored attempt started.
    - Every history feature reads a bounded window (the last ``PIPELINE_WINDOW`` attempts of the
      pipeline, the last ``GROUP_WINDOW`` of the group, the last hour), so live scoring from a
      store query of those windows gives exactly the row the training sweep built. (Whether a past
      attempt overran without a requested time is judged against the median before it: give the
      live path twice the pipeline window.)
    - ``HistoryIndex`` is the one code path: ``history_rows`` (training, a sweep over attempts in
      time order) and ``feature_row`` (the sensor) both feed it and read ``HistoryIndex.features``.
    - ``live_matrix`` is the one code path of the live features: the sensor calls it once for
      every step in flight (a ``SampleBlock`` straight from the store), the trainer for one moment
      of one attempt at a time.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FAILED_OUTCOMES = frozenset({"failure", "crashed", "timeout"})
FINISHED_OUTCOMES = FAILED_OUTCOMES | {"success", "canceled"}
PRIOR_FAILURES, PRIOR_ATTEMPTS = 1.0, 4.0  # Beta prior of the smoothed failure rate
PIPELINE_WINDOW = 20
GROUP_WINDOW = 50
RECENT_S = 3600.0  # "the last hour" of burst and incident counters
EW_ALPHA = 0.3  # weight of the newest attempt in the exponentially weighted failure rate
OVERRUN_TOLERANCE = 0.99  # overran: duration >= 0.99 x requested (the Parallel Workloads Archive rule)
OVERRUN_FACTOR = 1.5  # without a requested time: duration > 1.5 x the pipeline's median success
SEQ_LEN = 8  # past attempts the sequence model sees, newest first
SEQ_FIELDS = ("failed", "canceled", "log_duration", "log_age", "overran")
LIVE_WINDOW = 6
# The sensor scores a step from its newest samples only (MetricsStore.recent_samples, per_step=12),
# so the sample count is capped at that many, in training as at scoring time.
SCORED_SAMPLES = 12
LIVE_SEQ_FIELDS = ("elapsed_frac", "rss_ratio", "cpu_util")
# The numeric sample fields the live features read (and the stage): the sensor fetches only these,
# and what it shows, per step.
SAMPLE_BLOCK_FIELDS = ("elapsed_s", "cpu_s", "rss_bytes", "work_units", "input_bytes")

HISTORY_FEATURES: tuple[str, ...] = (
    # the pipeline's own history
    "hist_n", "hist_fail_rate", "hist_ew_fail", "last_failed", "last2_failed", "last3_failed", "last_canceled",
    "consecutive_failures", "log_since_last_failure_s", "log_since_last_end_s", "last_log_duration",
    "last_failure_log_duration", "hist_duration_p50", "hist_duration_p90", "duration_trend",
    "hist_overrun_rate", "last_overran", "requested_ratio", "tsafrir_ratio", "last_duration_ratio",
    "hist_peak_rss_p50", "rss_trend",
    # its group's (the job's, the user's) and the whole system's
    "group_n", "group_fail_rate", "group_overrun_rate", "group_tsafrir_ratio", "group_last_duration_ratio",
    "group_same_request_n", "group_same_request_overrun_rate",
    "group_failures_1h", "group_consecutive_failures", "group_log_since_last_failure_s", "global_failures_1h",
    # load and calendar
    "pipeline_inflight", "pipeline_starts_1h", "group_starts_1h", "hour_of_day", "day_of_week",
)
LIVE_FEATURES: tuple[str, ...] = (
    "elapsed_s", "elapsed_ratio", "log_rss", "rss_ratio", "rss_slope_ratio", "cpu_util",
    "work_rate_ratio", "input_ratio", "n_samples", "stage_rank", "stage_elapsed_s",
)
FEATURE_NAMES: tuple[str, ...] = HISTORY_FEATURES + LIVE_FEATURES
SEQUENCE_NAMES: tuple[str, ...] = tuple(f"seq{i}_{f}" for i in range(SEQ_LEN) for f in SEQ_FIELDS)
LIVE_SEQUENCE_NAMES: tuple[str, ...] = tuple(f"live{j}_{f}" for j in range(SCORED_SAMPLES) for f in LIVE_SEQ_FIELDS)
# The one model signature: flat features for every family, sequences for the sequence model.
MODEL_INPUT_NAMES: tuple[str, ...] = FEATURE_NAMES + SEQUENCE_NAMES + LIVE_SEQUENCE_NAMES
# Fixed when an attempt starts (history) / changing while it runs (live): the sensor keeps the first
# per attempt across ticks and computes the second every tick.
HISTORY_INPUT_NAMES: tuple[str, ...] = HISTORY_FEATURES + SEQUENCE_NAMES
LIVE_INPUT_NAMES: tuple[str, ...] = LIVE_FEATURES + LIVE_SEQUENCE_NAMES
# What the live features compare with: the attempt's usual duration, peak RSS, work rate, input size
USUAL_NAMES = ("hist_duration_p50", "hist_peak_rss_p50", "_work_rate", "_input_bytes")
NAN = math.nan


def is_failed(outcome: str) -> bool:
    return outcome in FAILED_OUTCOMES


def quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return NAN
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _trailing_true(flags: Sequence[bool]) -> int:
    """How many of the last flags are true in a row (consecutive failures)."""
    n = 0
    for flag in reversed(flags):
        if not flag:
            break
        n += 1
    return n


def _log1p_age(now: float, then: float | None) -> float:
    return math.log1p(max(0.0, now - then)) if then is not None else NAN


def overran(attempt: Mapping[str, Any], median_success_s: float = NAN) -> float:
    """1.0 if the attempt overran, 0.0 if not, NaN if it cannot be told.

    With a requested runtime (a deadline, SWF's req_time): duration >= 0.99 x requested. Without
    one: duration > 1.5 x the pipeline's median successful duration before it.
    """
    requested = attempt.get("requested_s")
    if requested is not None and requested == requested and requested > 0:
        return float(attempt["duration_s"] >= OVERRUN_TOLERANCE * requested)
    if median_success_s == median_success_s and median_success_s > 0:
        return float(attempt["duration_s"] > OVERRUN_FACTOR * median_success_s)
    return NAN


class _Window:
    """The newest ``size`` ended attempts of one pipeline or group, plus the last-hour counters."""

    __slots__ = ("attempts", "overran", "failure_ends", "starts", "inflight")

    def __init__(self, size: int) -> None:
        self.attempts: deque[Mapping[str, Any]] = deque(maxlen=size)
        # did each of them overrun, judged when it ended (requested time, else 1.5 x the median then)
        self.overran: deque[float] = deque(maxlen=size)
        self.failure_ends: deque[float] = deque()
        self.starts: deque[float] = deque()
        self.inflight = 0

    @staticmethod
    def _trim(times: deque[float], since: float) -> int:
        while times and times[0] < since:
            times.popleft()
        return len(times)


class HistoryIndex:
    """What was known at a moment: ended attempts per pipeline and group, starts, failures.

    Feed it in time order: ``start(a)`` when an attempt starts, ``end(a)`` when it ends (an attempt
    that ``end``s without a ``start`` is simply history). ``features(a, at)`` reads it.
    """

    def __init__(self) -> None:
        self.pipelines: dict[str, _Window] = {}
        self.groups: dict[str, _Window] = {}
        self.failure_ends: deque[float] = deque()

    def _windows(self, attempt: Mapping[str, Any]) -> tuple[_Window, _Window]:
        p = self.pipelines.get(attempt["pipeline"])
        if p is None:
            p = self.pipelines[attempt["pipeline"]] = _Window(PIPELINE_WINDOW)
        g = self.groups.get(attempt["group"])
        if g is None:
            g = self.groups[attempt["group"]] = _Window(GROUP_WINDOW)
        return p, g

    def start(self, attempt: Mapping[str, Any]) -> None:
        p, g = self._windows(attempt)
        p.inflight += 1
        p.starts.append(attempt["started_at"])
        g.starts.append(attempt["started_at"])

    def end(self, attempt: Mapping[str, Any], started: bool = True) -> None:
        p, g = self._windows(attempt)
        if started:
            p.inflight = max(0, p.inflight - 1)
        p.overran.append(overran(attempt, quantile([h["duration_s"] for h in p.attempts
                                                    if h["outcome"] == "success"], 0.5)))
        p.attempts.append(attempt)
        g.attempts.append(attempt)
        if is_failed(attempt["outcome"]):
            p.failure_ends.append(attempt["ended_at"])
            g.failure_ends.append(attempt["ended_at"])
            self.failure_ends.append(attempt["ended_at"])

    def features(self, attempt: Mapping[str, Any], at: float) -> dict[str, float]:
        """History, group, system and calendar features of ``attempt`` as known at ``at``."""
        p, g = self._windows(attempt)
        past = list(p.attempts)
        failed = [is_failed(h["outcome"]) for h in past]
        consecutive = _trailing_true(failed)
        ew = NAN
        for f in failed:
            ew = float(f) if ew != ew else (1 - EW_ALPHA) * ew + EW_ALPHA * f
        last_failure = next((h for h, f in zip(reversed(past), reversed(failed)) if f), None)
        ok = [h for h, f in zip(past, failed) if not f and h["outcome"] == "success"]
        durations = [h["duration_s"] for h in ok]
        p50 = quantile(durations, 0.5)
        rss = [h["peak_rss_bytes"] for h in ok if h.get("peak_rss_bytes")]
        rss_p50 = quantile(rss, 0.5)
        over_all = list(p.overran)
        over = [o for o in over_all if o == o]
        requested = attempt.get("requested_s")
        requested = requested if requested is not None and requested == requested and requested > 0 else None
        last_two = [h["duration_s"] for h in past[-2:]]

        g_past = list(g.attempts)
        g_failed = [is_failed(h["outcome"]) for h in g_past]
        g_consecutive = _trailing_true(g_failed)
        g_over = [o for o in (overran(h) for h in g_past) if o == o]
        g_last_two = [h["duration_s"] for h in g_past[-2:]]
        # the group's past attempts that asked for the same time: did they hit that limit?
        same = [overran(h) for h in g_past if requested and h.get("requested_s") == requested]
        g_last_failure = next((h["ended_at"] for h, f in zip(reversed(g_past), reversed(g_failed)) if f), None)
        since = at - RECENT_S
        calendar = time.gmtime(at) if at > 0 else None
        last = past[-1] if past else None
        return {
            "hist_n": float(len(past)),
            "hist_fail_rate": (sum(failed) + PRIOR_FAILURES) / (len(past) + PRIOR_ATTEMPTS),
            "hist_ew_fail": ew,
            "last_failed": float(failed[-1]) if failed else NAN,
            "last2_failed": float(failed[-2]) if len(failed) >= 2 else NAN,
            "last3_failed": float(failed[-3]) if len(failed) >= 3 else NAN,
            "last_canceled": float(last["outcome"] == "canceled") if last else NAN,
            "consecutive_failures": float(consecutive),
            "log_since_last_failure_s": _log1p_age(at, last_failure["ended_at"] if last_failure else None),
            "log_since_last_end_s": _log1p_age(at, last["ended_at"] if last else None),
            "last_log_duration": math.log1p(last["duration_s"]) if last else NAN,
            "last_failure_log_duration": math.log1p(last_failure["duration_s"]) if last_failure else NAN,
            "hist_duration_p50": p50,
            "hist_duration_p90": quantile(durations, 0.9),
            "duration_trend": math.log((durations[-1] + 1) / (p50 + 1)) if durations else NAN,
            "hist_overrun_rate": sum(over) / len(over) if over else NAN,
            "last_overran": over_all[-1] if over_all else NAN,
            "requested_ratio": requested / p50 if requested and p50 == p50 and p50 > 0 else NAN,
            # Tsafrir, Etsion & Feitelson (2007): the mean of the last two runtimes predicts the next
            "tsafrir_ratio": (sum(last_two) / len(last_two)) / requested if requested and last_two else NAN,
            "last_duration_ratio": last["duration_s"] / requested if requested and last else NAN,
            "hist_peak_rss_p50": rss_p50,
            "rss_trend": rss[-1] / rss_p50 if rss and rss_p50 > 0 else NAN,
            "group_n": float(len(g_past)),
            "group_fail_rate": (sum(g_failed) + PRIOR_FAILURES) / (len(g_past) + PRIOR_ATTEMPTS),
            "group_overrun_rate": sum(g_over) / len(g_over) if g_over else NAN,
            # Tsafrir et al. predict from the *user's* last two jobs: the group's, here
            "group_tsafrir_ratio": (sum(g_last_two) / len(g_last_two)) / requested if requested and g_last_two else NAN,
            "group_last_duration_ratio": g_last_two[-1] / requested if requested and g_last_two else NAN,
            "group_same_request_n": float(len(same)),
            "group_same_request_overrun_rate": sum(same) / len(same) if same else NAN,
            "group_failures_1h": float(_Window._trim(g.failure_ends, since)),
            "group_consecutive_failures": float(g_consecutive),
            "group_log_since_last_failure_s": _log1p_age(at, g_last_failure),
            "global_failures_1h": float(_Window._trim(self.failure_ends, since)),
            "pipeline_inflight": float(p.inflight),
            "pipeline_starts_1h": float(_Window._trim(p.starts, since)),
            "group_starts_1h": float(_Window._trim(g.starts, since)),
            "hour_of_day": float(calendar.tm_hour) if calendar else NAN,
            "day_of_week": float(calendar.tm_wday) if calendar else NAN,
        }

    def sequence(self, attempt: Mapping[str, Any], at: float) -> dict[str, float]:
        """The pipeline's last ``SEQ_LEN`` attempts, newest first, as ``seq{i}_{field}`` (NaN = none)."""
        p, _ = self._windows(attempt)
        past = list(p.attempts)[-SEQ_LEN:][::-1]
        flags = list(p.overran)[-SEQ_LEN:][::-1]
        out: dict[str, float] = {}
        for i in range(SEQ_LEN):
            h = past[i] if i < len(past) else None
            out[f"seq{i}_failed"] = float(is_failed(h["outcome"])) if h else NAN
            out[f"seq{i}_canceled"] = float(h["outcome"] == "canceled") if h else NAN
            out[f"seq{i}_log_duration"] = math.log1p(h["duration_s"]) if h else NAN
            out[f"seq{i}_log_age"] = _log1p_age(at, h["ended_at"]) if h else NAN
            out[f"seq{i}_overran"] = flags[i] if h else NAN
        return out


@dataclass
class SampleBlock:
    """The newest samples of several attempts as arrays, the live features' input.

    Row ``i`` holds attempt ``i``'s newest ``width`` samples right-aligned: column ``width - 1``
    is the newest, and missing samples (and missing values: NULL in the store) are NaN. Stages are
    coded per block: ``stage_codes`` 0 = no stage, ``c`` = ``stage_names[c - 1]``.
    """

    values: np.ndarray  # (n, width, len(fields)) float64
    stage_codes: np.ndarray  # (n, width) int32
    counts: np.ndarray  # (n,) samples present, at most width
    stage_names: list[str] = field(default_factory=list)
    fields: tuple[str, ...] = SAMPLE_BLOCK_FIELDS

    @classmethod
    def empty(cls, n: int, width: int = SCORED_SAMPLES, fields: tuple[str, ...] = SAMPLE_BLOCK_FIELDS) -> SampleBlock:
        return cls(np.full((n, width, len(fields)), np.nan), np.zeros((n, width), np.int32),
                   np.zeros(n, np.int64), [], fields)

    @classmethod
    def of(cls, sample_lists: Sequence[Sequence[Mapping[str, Any]]], width: int = SCORED_SAMPLES,
           fields: tuple[str, ...] = SAMPLE_BLOCK_FIELDS) -> SampleBlock:
        """A block of sample dicts (each list oldest first; only its newest ``width`` count)."""
        block = cls.empty(len(sample_lists), width, fields)
        codes: dict[str, int] = {}
        for i, samples in enumerate(sample_lists):
            newest = list(samples)[-width:]
            block.counts[i] = len(newest)
            for j, s in enumerate(newest, start=width - len(newest)):
                block.values[i, j] = [np.nan if s.get(f) is None else s[f] for f in fields]
                stage = s.get("stage")
                if stage:
                    block.stage_codes[i, j] = codes.setdefault(stage, len(codes) + 1)
        block.stage_names = list(codes)
        return block

    def column(self, name: str) -> np.ndarray:
        """(n, width) values of one field."""
        return self.values[:, :, self.fields.index(name)]

    def samples(self, i: int) -> list[dict[str, Any]]:
        """Attempt ``i``'s samples as dicts, oldest first (None for a missing value)."""
        width = self.values.shape[1]
        return [self._sample(i, j) for j in range(width - int(self.counts[i]), width)]

    def ends(self, i: int) -> list[dict[str, Any]]:
        """Attempt ``i``'s oldest and newest samples as dicts (one if it has one, none if none)."""
        width, n = self.values.shape[1], int(self.counts[i])
        return [self._sample(i, j) for j in sorted({width - n, width - 1})] if n else []

    def _sample(self, i: int, j: int) -> dict[str, Any]:
        s: dict[str, Any] = {f: (None if v != v else v) for f, v in zip(self.fields, self.values[i, j].tolist())}
        code = int(self.stage_codes[i, j])
        s["stage"] = self.stage_names[code - 1] if code else None
        return s

    def with_empty_rows(self, n: int) -> SampleBlock:
        """This block followed by ``n`` attempts without samples (queued steps)."""
        more = SampleBlock.empty(n, self.values.shape[1], self.fields)
        return SampleBlock(np.concatenate([self.values, more.values]),
                           np.concatenate([self.stage_codes, more.stage_codes]),
                           np.concatenate([self.counts, more.counts]), self.stage_names, self.fields)


def live_matrix(block: SampleBlock, elapsed_s: Sequence[float] | np.ndarray, usual: np.ndarray) -> np.ndarray:
    """``LIVE_INPUT_NAMES`` of every attempt of ``block`` at ``elapsed_s`` seconds into it.

    ``usual``: (n, len(USUAL_NAMES)) what the attempt's history says is usual (its duration and
    peak RSS medians, work rate and input size). One vectorised pass for all attempts: the sensor
    scores a thousand steps with it, the trainer one moment of one attempt.
    """
    n, width = block.counts.shape[0], block.values.shape[1]
    if width != SCORED_SAMPLES:
        raise ValueError(f"live features read the newest {SCORED_SAMPLES} samples; the block holds {width}")
    elapsed = np.asarray(elapsed_s, dtype=np.float64)
    p50, rss_p50, hist_rate, hist_input = (usual[:, k] for k in range(len(USUAL_NAMES)))
    el, cpu, rss, work, inp = (block.column(f) for f in SAMPLE_BLOCK_FIELDS)
    counts = block.counts
    rows = np.arange(n)
    newest = width - 1
    # the newest LIVE_WINDOW samples: rates and slopes between the oldest and the newest of them
    window_start = width - np.minimum(counts, LIVE_WINDOW)
    first = np.minimum(window_start, newest)
    columns = np.arange(width)
    in_window = columns[None, :] >= window_start[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        rss_now = np.where(rss[:, newest] > 0, rss[:, newest], np.nan)
        dt = el[rows, newest] - el[rows, first]
        moved = (counts >= 2) & (dt > 0)
        slope = np.where(moved & (rss[rows, first] > 0) & (rss_now > 0), (rss_now - rss[rows, first]) / dt, np.nan)
        cpu_util = np.where(moved, (cpu[:, newest] - cpu[rows, first]) / dt, np.nan)
        work_rate = np.where(moved, (work[:, newest] - work[rows, first]) / dt, np.nan)
        # the newest input size in the window
        has_input = in_window & (inp > 0)
        last_input = newest - np.argmax(has_input[:, ::-1], axis=1)
        input_bytes = np.where(has_input.any(axis=1), inp[rows, last_input], np.nan)
        # stages: runs of one stage among the samples (a sample without a stage does not break a run)
        codes = block.stage_codes
        seen = np.maximum.accumulate(np.where(codes > 0, columns[None, :], -1), axis=1)
        before = np.concatenate([np.full((n, 1), -1), seen[:, :-1]], axis=1)
        previous = np.where(before >= 0, codes[rows[:, None], np.maximum(before, 0)], 0)
        stage_rank = ((codes > 0) & (codes != previous)).sum(axis=1).astype(np.float64)
        current = np.where(seen[:, newest] >= 0, codes[rows, np.maximum(seen[:, newest], 0)], 0)
        entered = np.argmax(codes == current[:, None], axis=1)  # the first sample in the current stage
        stage_start = np.where(current > 0, el[rows, entered], np.nan)
        live = np.column_stack([
            elapsed,
            np.where(p50 > 0, elapsed / p50, np.nan),
            np.where(rss_now > 0, np.log(rss_now), np.nan),
            np.where(rss_p50 > 0, rss_now / rss_p50, np.nan),
            # RSS growth per second, relative to the step's typical peak: a step that will double its
            # usual footprint within a few seconds is heading for its memory cap
            np.where(rss_p50 > 0, slope / rss_p50, np.nan),
            cpu_util,
            np.where(hist_rate > 0, work_rate / hist_rate, np.nan),
            # input size relative to the step's usual input (from the checkpoint IO manager)
            np.where(hist_input > 0, input_bytes / hist_input, np.nan),
            np.minimum(counts, SCORED_SAMPLES).astype(np.float64),
            # which of the stages seen in the scored samples the step is in, and for how long
            np.where(stage_rank > 0, stage_rank, np.nan),
            np.where(stage_start == stage_start, np.maximum(0.0, elapsed - stage_start), np.nan),
        ])
        # the sequence, newest sample first: elapsed and RSS against the usual, CPU use since the one before
        el_new, rss_new, cpu_new = el[:, ::-1], rss[:, ::-1], cpu[:, ::-1]
        el_old = np.concatenate([el_new[:, 1:], np.full((n, 1), np.nan)], axis=1)
        cpu_old = np.concatenate([cpu_new[:, 1:], np.full((n, 1), np.nan)], axis=1)
        step = el_new - el_old
        sequence = np.stack([
            np.where((p50 > 0)[:, None], el_new / p50[:, None], np.nan),
            np.where((rss_new > 0) & (rss_p50 > 0)[:, None], rss_new / rss_p50[:, None], np.nan),
            np.where(step > 0, (cpu_new - cpu_old) / step, np.nan),
        ], axis=2).reshape(n, SCORED_SAMPLES * len(LIVE_SEQ_FIELDS))
    return np.concatenate([live, sequence], axis=1)


def usual_of(hist: Mapping[str, float]) -> list[float]:
    """The ``USUAL_NAMES`` of a history row (NaN where unknown)."""
    return [hist.get(name, NAN) for name in USUAL_NAMES]


def live_row(samples: Sequence[Mapping[str, Any]], elapsed_s: float, hist: Mapping[str, float]) -> dict[str, float]:
    """``LIVE_INPUT_NAMES`` of one attempt's samples so far (oldest first) at ``elapsed_s``."""
    values = live_matrix(SampleBlock.of([samples]), [elapsed_s], np.array([usual_of(hist)], dtype=np.float64))
    return dict(zip(LIVE_INPUT_NAMES, values[0].tolist()))


def live_features(samples: Sequence[Mapping[str, Any]], elapsed_s: float,
                  hist: Mapping[str, float]) -> dict[str, float]:
    """``LIVE_FEATURES`` of the attempt's samples so far (oldest first) at ``elapsed_s`` seconds in."""
    row = live_row(samples, elapsed_s, hist)
    return {name: row[name] for name in LIVE_FEATURES}


def usual(index: HistoryIndex, attempt: Mapping[str, Any]) -> dict[str, float]:
    """The pipeline's usual work rate and input size (successful attempts of its window)."""
    p, _ = index._windows(attempt)
    ok = [h for h in p.attempts if h["outcome"] == "success"]
    rates = [h["work_units"] / h["duration_s"] for h in ok if h.get("work_units") and h.get("duration_s")]
    inputs = [h["input_bytes"] for h in p.attempts if h.get("input_bytes")]
    return {"_work_rate": quantile(rates, 0.5), "_input_bytes": quantile(inputs, 0.5)}


def row_from_index(index: HistoryIndex, attempt: Mapping[str, Any], samples: Sequence[Mapping[str, Any]],
                   elapsed_s: float, sequences: bool = True) -> dict[str, float]:
    """The model input of ``attempt`` at ``elapsed_s`` seconds after it started."""
    hist, usual_values, sequence = history_parts(index, attempt, sequences)
    return _assemble(hist, live_row(samples, elapsed_s, dict(zip(USUAL_NAMES, usual_values))), attempt, sequence)


def history_parts(index: HistoryIndex, attempt: Mapping[str, Any], sequences: bool = True
                  ) -> tuple[dict[str, float], list[float], dict[str, float] | None]:
    """What is fixed when ``attempt`` starts: its history features, the ``USUAL_NAMES`` the live
    features compare with, and (``sequences``) its pipeline's sequence of past attempts."""
    at = attempt["started_at"]
    hist = index.features(attempt, at)
    return hist, usual_of({**hist, **usual(index, attempt)}), index.sequence(attempt, at) if sequences else None


def _assemble(hist: dict[str, float], live: Mapping[str, float], attempt: Mapping[str, Any],
              sequence: Mapping[str, float] | None) -> dict[str, float]:
    """A model row: history, live features, static ``x_*`` attributes, then the sequences."""
    row = hist
    for name in LIVE_FEATURES:
        row[name] = live[name]
    for name, value in attempt.items():
        if name.startswith("x_"):
            row[name] = float(value) if value is not None else NAN
    if sequence is not None:
        row.update(sequence)
        for name in LIVE_SEQUENCE_NAMES:
            row[name] = live[name]
    return row


def index_of(history: Iterable[Mapping[str, Any]], before: float,
             inflight: Iterable[Mapping[str, Any]] = ()) -> HistoryIndex:
    """A HistoryIndex as of ``before``: attempts that ended strictly before it are history; those of
    ``history`` that started by then but ended later, and ``inflight``, count as running."""
    index = HistoryIndex()
    events: list[tuple[float, int, int, Mapping[str, Any]]] = []
    for i, h in enumerate(history):
        if h["ended_at"] < before:
            events.append((h["started_at"], 0, i, h))
            events.append((h["ended_at"], 1, i, h))
        elif h["started_at"] <= before:
            events.append((h["started_at"], 0, i, h))
    for i, h in enumerate(inflight):
        if h["started_at"] <= before:
            events.append((h["started_at"], 0, -1 - i, h))
    for _, kind, _, h in sorted(events, key=lambda e: (e[0], e[1], e[2])):
        index.start(h) if kind == 0 else index.end(h)
    return index


def feature_row(history: Sequence[Mapping[str, Any]], started_at: float, samples: Sequence[Mapping[str, Any]],
                elapsed_s: float, attempt: Mapping[str, Any] | None = None,
                inflight: Sequence[Mapping[str, Any]] = ()) -> dict[str, float]:
    """The live path: the row of an attempt that started at ``started_at`` given ``history``.

    ``history`` holds attempts (or metrics-store ``step_runs`` rows) of the pipeline and its group,
    at least their windows and the last hour; ``attempt`` names the scored attempt's pipeline and
    group (default: those of the newest history entry, or a fresh pipeline); ``inflight`` are
    attempts running now, the scored one included, for the burst counters.
    """
    history = [h if "pipeline" in h else step_attempt(h) for h in history]  # metrics-store rows too
    if attempt is None:
        last = history[-1] if history else {"pipeline": "?", "group": "?"}
        attempt = {"pipeline": last["pipeline"], "group": last["group"], "started_at": started_at}
    attempt = {**attempt, "started_at": started_at}
    running = list(inflight) or [attempt]
    return row_from_index(index_of(history, started_at, running), attempt, samples, elapsed_s)


def history_rows(attempts: Sequence[Mapping[str, Any]], sequences: bool = True, progress: Any = None,
                 sink: Any = None) -> list[dict[str, float]]:
    """The training path: each attempt's row at its start, from everything that ended before it.

    One sweep in time order (starts before ends at equal times, so an attempt that ended exactly
    when another started is not history for it). Returns rows aligned with ``attempts``, or, with
    ``sink(i, row)``, hands each row over instead of keeping it (large traces).
    """
    order = sorted(range(len(attempts)), key=lambda i: (attempts[i]["started_at"], i))
    ends: list[tuple[float, int]] = []
    index = HistoryIndex()
    rows: list[dict[str, float] | None] = [] if sink else [None] * len(attempts)
    batch = _LiveBatch(sink or rows.__setitem__)
    for n, i in enumerate(order):
        a = attempts[i]
        while ends and ends[0][0] < a["started_at"]:
            _, j = heapq.heappop(ends)
            index.end(attempts[j])
        index.start(a)
        batch.add(i, history_parts(index, a, sequences), a, (), 0.0)
        heapq.heappush(ends, (a["ended_at"], i))
        if progress is not None and n % 10_000 == 0:
            progress(n)
    batch.flush()
    return rows  # type: ignore[return-value]


class _LiveBatch:
    """Rows waiting for their live features, which ``live_matrix`` computes for a batch at once
    (per row it would cost more than the history features)."""

    def __init__(self, done: Callable[[int, dict[str, float]], Any], size: int = 4096) -> None:
        self.done, self.size = done, size
        self.pending: list[tuple[int, dict[str, float], Mapping[str, Any], dict[str, float] | None]] = []
        self.samples: list[Sequence[Mapping[str, Any]]] = []
        self.elapsed: list[float] = []
        self.usual: list[list[float]] = []

    def add(self, key: int, known: tuple[dict[str, float], list[float], dict[str, float] | None],
            attempt: Mapping[str, Any], samples: Sequence[Mapping[str, Any]], elapsed_s: float) -> None:
        """Queue the row of ``attempt`` at ``elapsed_s``; ``known``: ``history_parts`` at its start."""
        hist, usual_values, sequence = known
        self.pending.append((key, dict(hist), attempt, sequence))
        self.samples.append(samples)
        self.elapsed.append(elapsed_s)
        self.usual.append(usual_values)
        if len(self.pending) >= self.size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        live = live_matrix(SampleBlock.of(self.samples), self.elapsed, np.array(self.usual, dtype=np.float64))
        for (key, hist, attempt, sequence), values in zip(self.pending, live.tolist(), strict=True):
            self.done(key, _assemble(hist, dict(zip(LIVE_INPUT_NAMES, values)), attempt, sequence))
        self.pending, self.samples, self.elapsed, self.usual = [], [], [], []


@dataclass
class TrainingRows:
    """Rows of Dagster step attempts and what happened to each attempt."""

    rows: list[dict[str, float]] = field(default_factory=list)
    failed: list[float] = field(default_factory=list)  # 1.0 = the attempt failed
    overran: list[float] = field(default_factory=list)  # 1.0 / 0.0, NaN = cannot be told
    started_at: list[float] = field(default_factory=list)
    ended_at: list[float] = field(default_factory=list)
    remaining_s: list[float] = field(default_factory=list)


def training_rows(attempts: Sequence[Mapping[str, Any]],
                  samples_by_attempt: Mapping[tuple[str, str], Sequence[Mapping[str, Any]]],
                  points_per_attempt: int = 8) -> TrainingRows:
    """Dagster step attempts (``step_runs`` rows) -> model rows and their labels.

    Each finished attempt contributes a row at its start and at up to ``points_per_attempt`` of its
    samples, each built only from what was known at that moment.
    """
    attempts = [step_attempt(a) for a in attempts if a["outcome"] in FINISHED_OUTCOMES]
    order = sorted(range(len(attempts)), key=lambda i: (attempts[i]["started_at"], i))
    ends: list[tuple[float, int]] = []
    index = HistoryIndex()
    out = TrainingRows()
    batch = _LiveBatch(out.rows.__setitem__)
    for i in order:
        a = attempts[i]
        while ends and ends[0][0] < a["started_at"]:
            index.end(attempts[heapq.heappop(ends)[1]])
        index.start(a)
        heapq.heappush(ends, (a["ended_at"], i))
        samples = list(samples_by_attempt.get((a["run_id"], a["step_key"]), ()))
        stride = max(1, math.ceil(len(samples) / points_per_attempt))
        moments = [(0, 0.0)] + [(k + 1, samples[k]["elapsed_s"]) for k in range(0, len(samples), stride)]
        known = history_parts(index, a)  # the same for every moment: the index holds still
        for n_seen, elapsed in moments:
            out.rows.append({})  # filled when the batch's live features are computed
            batch.add(len(out.rows) - 1, known, a, samples[:n_seen], elapsed)
            out.failed.append(float(is_failed(a["outcome"])))
            out.overran.append(overran(a, known[0]["hist_duration_p50"]))
            out.started_at.append(a["started_at"])
            out.ended_at.append(a["ended_at"])
            out.remaining_s.append(max(0.0, a["duration_s"] - elapsed))
    batch.flush()
    return out


def step_attempt(row: Mapping[str, Any]) -> dict[str, Any]:
    """A metrics-store ``step_runs`` row as an attempt: pipeline ``job:step``, group ``job``."""
    return {**row, "pipeline": f"{row['job']}:{row['step_key']}", "group": row["job"]}


COMPUTE_STAGE = "dagster/compute"


def bottleneck_stages(stage_durations: Mapping[str, float], top: int = 2) -> list[str]:
    """The stages that took most of the time, longest first. Named stages run inside
    ``dagster/compute``, so it competes only when the op names none."""
    named = any(not name.startswith("dagster/") for name in stage_durations)
    candidates = {k: v for k, v in stage_durations.items() if not (named and k == COMPUTE_STAGE)}
    return [name for name, _ in sorted(candidates.items(), key=lambda kv: -kv[1])[:top]]
