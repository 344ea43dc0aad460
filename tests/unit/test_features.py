"""Features of an attempt: history before it started, live samples, and train/serve parity."""

from __future__ import annotations

import inspect
import math
from types import SimpleNamespace

import pytest

from predcheck_dagster import features
from predcheck_dagster.features import (
    FEATURE_NAMES,
    MODEL_INPUT_NAMES,
    PIPELINE_WINDOW,
    SEQ_LEN,
    bottleneck_stages,
    feature_row,
    history_rows,
    live_features,
    overran,
    training_rows,
)
from predcheck_dagster.metrics_store import MetricsStore

MB = 1024 * 1024
T0 = 1_700_000_000.0


def attempt(run_id: str, started: float, ended: float, outcome: str = "success", job: str = "etl",
            step_key: str = "crunch", **extra) -> dict:
    return {"run_id": run_id, "root_run_id": run_id, "job": job, "step_key": step_key, "attempt": 1,
            "started_at": started, "ended_at": ended, "duration_s": ended - started, "outcome": outcome,
            "pipeline": f"{job}:{step_key}", "group": job, **extra}


def sample(run_id: str, elapsed: float, rss: float, cpu: float, work: float | None = None,
           input_bytes: int | None = None, stage: str = "work") -> dict:
    return {"run_id": run_id, "step_key": "crunch", "ts": T0 + 10_000 + elapsed, "elapsed_s": elapsed,
            "cpu_s": cpu, "rss_bytes": int(rss), "read_bytes": 0, "write_bytes": 0, "stage": stage,
            "work_units": work, "input_bytes": input_bytes}


def by_end(attempts):
    return sorted(attempts, key=lambda a: a["ended_at"])


def history_features(history, started_at, **scored):
    """The history part of the row of an etl:crunch attempt starting at ``started_at``."""
    row = feature_row(history, started_at, [], 0.0, attempt=scored or None)
    return {k: row[k] for k in features.HISTORY_FEATURES}


def same(a: dict[str, float], b: dict[str, float]) -> bool:
    """Equal rows, NaN equal to NaN."""
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a)


# ---- history ----------------------------------------------------------------------------------
def test_history_uses_only_attempts_that_ended_before_the_scored_attempt_started():
    early_failure = attempt("a", T0, T0 + 50, "failure")
    # started before the scored attempt but ended after it started: unknown at scoring time
    late_failure = attempt("b", T0 + 10, T0 + 400, "failure")
    # ended exactly when the scored attempt started: not strictly before, excluded
    simultaneous = attempt("c", T0 + 20, T0 + 200, "crashed")
    started = T0 + 200

    hist = history_features(by_end([early_failure, late_failure, simultaneous]), started)

    assert hist["hist_n"] == 1.0
    assert hist["hist_fail_rate"] == pytest.approx((1 + 1) / (1 + 4))
    assert hist["consecutive_failures"] == 1.0
    assert hist["log_since_last_failure_s"] == pytest.approx(math.log1p(150.0))
    assert hist["global_failures_1h"] == 1.0
    full = feature_row(by_end([early_failure, late_failure, simultaneous]), started, [], 0.0)
    load = ("pipeline_inflight", "pipeline_starts_1h", "group_starts_1h")
    history_only = feature_row([early_failure], started, [], 0.0)
    assert same({k: v for k, v in full.items() if k not in load}, {k: v for k, v in history_only.items()
                                                                    if k not in load})
    # the two unfinished ones were running when it started
    assert (full["pipeline_inflight"], full["pipeline_starts_1h"]) == (3.0, 4.0)
    assert (history_only["pipeline_inflight"], history_only["pipeline_starts_1h"]) == (1.0, 2.0)
    # scored after it ended, the late failure does count
    assert feature_row(by_end([early_failure, late_failure]), T0 + 500, [], 0.0)["hist_n"] == 2.0


def test_smoothed_and_weighted_failure_rates():
    assert history_features([], T0)["hist_fail_rate"] == pytest.approx(0.25)
    assert history_features([], T0)["hist_n"] == 0.0
    assert math.isnan(history_features([], T0)["last_failed"])
    assert math.isnan(history_features([], T0)["hist_ew_fail"])
    outcomes = ["success", "failure", "success", "success", "timeout", "success"]
    history = [attempt(f"r{i}", T0 + i * 100, T0 + i * 100 + 50, o) for i, o in enumerate(outcomes)]
    hist = history_features(history, T0 + 10_000)
    assert hist["hist_n"] == 6.0
    assert hist["hist_fail_rate"] == pytest.approx((2 + 1) / (6 + 4))
    ew = 0.0
    for o in outcomes[1:]:
        ew = 0.7 * ew + 0.3 * (o != "success")
    assert hist["hist_ew_fail"] == pytest.approx(ew)
    assert (hist["last_failed"], hist["last2_failed"], hist["last3_failed"]) == (0.0, 1.0, 0.0)
    assert hist["consecutive_failures"] == 0.0


def test_consecutive_failures_count_every_failed_outcome_from_the_end():
    outcomes = ["failure", "success", "failure", "crashed", "timeout"]
    history = [attempt(f"r{i}", T0 + i * 100, T0 + i * 100 + 50, o) for i, o in enumerate(outcomes)]
    hist = history_features(history, T0 + 1000)
    assert hist["consecutive_failures"] == 3.0
    assert hist["last_failed"] == 1.0
    assert hist["log_since_last_failure_s"] == pytest.approx(math.log1p(T0 + 1000 - (T0 + 450)))
    assert hist["last_failure_log_duration"] == pytest.approx(math.log1p(50))


def test_history_window_keeps_the_most_recent_attempts():
    history = [attempt(f"old{i}", T0 + i, T0 + i + 0.5, "failure") for i in range(10)]
    history += [attempt(f"new{i}", T0 + 100 + i, T0 + 100 + i + 0.5) for i in range(PIPELINE_WINDOW)]
    hist = history_features(history, T0 + 10_000)
    assert hist["hist_n"] == float(PIPELINE_WINDOW)
    assert hist["hist_fail_rate"] == pytest.approx(1 / (PIPELINE_WINDOW + 4))
    assert math.isnan(hist["log_since_last_failure_s"])
    # the group (the job) remembers further back, the last hour's counters only the last hour
    assert hist["group_n"] == 30.0 and hist["group_fail_rate"] == pytest.approx(11 / 34)
    assert hist["group_failures_1h"] == 0.0 and hist["global_failures_1h"] == 0.0


def test_duration_and_rss_quantiles_come_from_successful_attempts():
    history = [attempt(f"r{i}", T0 + i * 100, T0 + i * 100 + d, "success", peak_rss_bytes=rss)
               for i, (d, rss) in enumerate([(10, 100 * MB), (20, 300 * MB), (30, 200 * MB), (40, 400 * MB)])]
    history.append(attempt("oom", T0 + 900, T0 + 999, "failure", peak_rss_bytes=4000 * MB))
    hist = history_features(history, T0 + 2000)
    assert hist["hist_duration_p50"] == pytest.approx(25.0)
    assert hist["hist_duration_p90"] == pytest.approx(37.0)
    assert hist["hist_peak_rss_p50"] == pytest.approx(250 * MB)
    assert hist["rss_trend"] == pytest.approx(400 / 250)
    assert hist["duration_trend"] == pytest.approx(math.log(41 / 26))


def test_group_burst_and_calendar_features():
    other_step = [attempt(f"o{i}", T0 + i * 60, T0 + i * 60 + 30, "failure", step_key="load") for i in range(3)]
    other_job = [attempt("x", T0, T0 + 100, "failure", job="other")]
    started = T0 + 400
    row = feature_row(by_end(other_step + other_job), started, [], 0.0,
                      attempt={"pipeline": "etl:crunch", "group": "etl"})
    assert row["hist_n"] == 0.0  # nothing of etl:crunch itself
    assert row["group_n"] == 3.0 and row["group_consecutive_failures"] == 3.0
    assert row["group_failures_1h"] == 3.0 and row["global_failures_1h"] == 4.0
    assert row["group_log_since_last_failure_s"] == pytest.approx(math.log1p(400 - 150))
    assert row["group_starts_1h"] == 4.0  # three loads and the scored attempt itself
    assert row["pipeline_inflight"] == 1.0
    # T0 = 2023-11-14 22:13:20 UTC, a Tuesday
    assert (row["hour_of_day"], row["day_of_week"]) == (22.0, 1.0)
    # an hour later, the failures have aged out of the counters
    later = feature_row(by_end(other_step + other_job), T0 + 4000, [], 0.0,
                        attempt={"pipeline": "etl:crunch", "group": "etl"})
    assert later["group_failures_1h"] == 0.0 and later["global_failures_1h"] == 0.0


def test_overrun_with_and_without_a_requested_time():
    assert overran({"duration_s": 99.0, "requested_s": 100.0}) == 1.0
    assert overran({"duration_s": 98.0, "requested_s": 100.0}) == 0.0
    assert overran({"duration_s": 31.0}, 20.0) == 1.0
    assert overran({"duration_s": 29.0}, 20.0) == 0.0
    assert math.isnan(overran({"duration_s": 29.0}))
    history = [attempt(f"r{i}", T0 + i * 100, T0 + i * 100 + d, requested_s=60.0) for i, d in enumerate([30, 60, 59.5])]
    row = history_features(by_end(history), T0 + 1000, requested_s=60.0, pipeline="etl:crunch", group="etl")
    assert row["hist_overrun_rate"] == pytest.approx(2 / 3) and row["last_overran"] == 1.0
    assert row["tsafrir_ratio"] == pytest.approx((60 + 59.5) / 2 / 60)
    assert row["group_same_request_n"] == 3.0 and row["group_same_request_overrun_rate"] == pytest.approx(2 / 3)
    # without a requested time, each past attempt is judged against the median success before it
    plain = [attempt(f"q{i}", T0 + i * 100, T0 + i * 100 + d) for i, d in enumerate([10, 10, 10, 20, 12])]
    row = feature_row(by_end(plain), T0 + 1000, [], 0.0)
    assert row["seq1_overran"] == 1.0 and row["seq0_overran"] == 0.0 and math.isnan(row["seq4_overran"])
    assert row["hist_overrun_rate"] == pytest.approx(1 / 4) and row["last_overran"] == 0.0


def test_sequence_of_past_attempts_newest_first():
    history = [attempt("a", T0, T0 + 10, "success"), attempt("b", T0 + 20, T0 + 50, "failure"),
               attempt("c", T0 + 60, T0 + 70, "canceled")]
    row = feature_row(history, T0 + 100, [], 0.0)
    assert (row["seq0_canceled"], row["seq1_failed"], row["seq2_failed"]) == (1.0, 1.0, 0.0)
    assert row["seq1_log_duration"] == pytest.approx(math.log1p(30))
    assert row["seq0_log_age"] == pytest.approx(math.log1p(30))
    assert all(math.isnan(row[f"seq{i}_failed"]) for i in range(3, SEQ_LEN))
    assert set(MODEL_INPUT_NAMES) <= set(row)


# ---- live -------------------------------------------------------------------------------------
def test_live_features_from_samples():
    hist = {"hist_duration_p50": 100.0, "hist_peak_rss_p50": 200 * MB, "_work_rate": 4.0,
            "_input_bytes": 1000.0}
    # 10 samples one second apart; only the newest LIVE_WINDOW (6) count for slopes and rates
    samples = [sample("r", float(t), rss=100 * MB + t * 10 * MB, cpu=0.5 * t, work=2.0 * t, input_bytes=3000)
               for t in range(10)]
    samples[0]["rss_bytes"] = 1  # outside the window: must not influence the slope
    live = live_features(samples, 9.5, hist)
    assert live["elapsed_s"] == 9.5
    assert live["elapsed_ratio"] == pytest.approx(0.095)
    assert live["log_rss"] == pytest.approx(math.log(190 * MB))
    assert live["rss_ratio"] == pytest.approx(190 / 200)
    assert live["rss_slope_ratio"] == pytest.approx(10 / 200)
    assert live["cpu_util"] == pytest.approx(0.5)
    assert live["work_rate_ratio"] == pytest.approx(2.0 / 4.0)
    assert live["input_ratio"] == pytest.approx(3.0)
    assert live["n_samples"] == 10.0
    assert live["stage_rank"] == 1.0 and live["stage_elapsed_s"] == pytest.approx(9.5)


def test_live_features_without_samples_or_history_are_nan():
    live = live_features([], 3.0, {})
    assert live["elapsed_s"] == 3.0
    assert live["n_samples"] == 0.0
    for name in ("elapsed_ratio", "log_rss", "rss_ratio", "rss_slope_ratio", "cpu_util", "work_rate_ratio",
                 "input_ratio"):
        assert math.isnan(live[name]), name
    one = live_features([sample("r", 1.0, 50 * MB, 0.2)], 1.0, {"hist_peak_rss_p50": 100 * MB})
    assert one["rss_ratio"] == pytest.approx(0.5)
    assert math.isnan(one["rss_slope_ratio"]) and math.isnan(one["cpu_util"])


def reference_live(samples: list[dict], elapsed_s: float, hist: dict) -> dict[str, float]:
    """The live features written one sample at a time, as plainly as possible: the oracle the
    vectorised ``live_matrix`` must agree with."""
    nan = math.nan
    scored = samples[-features.SCORED_SAMPLES:]
    recent = scored[-features.LIVE_WINDOW:]
    p50, rss_p50 = hist.get("hist_duration_p50", nan), hist.get("hist_peak_rss_p50", nan)
    hist_rate, hist_input = hist.get("_work_rate", nan), hist.get("_input_bytes", nan)
    rss = recent[-1]["rss_bytes"] if recent and recent[-1].get("rss_bytes") else nan
    slope = cpu_util = work_rate = nan
    if len(recent) >= 2:
        a, b = recent[0], recent[-1]
        dt = b["elapsed_s"] - a["elapsed_s"]
        if dt > 0:
            if a.get("rss_bytes") and b.get("rss_bytes"):
                slope = (b["rss_bytes"] - a["rss_bytes"]) / dt
            if a.get("cpu_s") is not None and b.get("cpu_s") is not None:
                cpu_util = (b["cpu_s"] - a["cpu_s"]) / dt
            if a.get("work_units") is not None and b.get("work_units") is not None:
                work_rate = (b["work_units"] - a["work_units"]) / dt
    input_bytes = next((s["input_bytes"] for s in reversed(recent) if s.get("input_bytes")), None)
    stages: list[str] = []
    for s in scored:
        if s.get("stage") and (not stages or stages[-1] != s["stage"]):
            stages.append(s["stage"])
    stage_start = next((s["elapsed_s"] for s in scored if stages and s.get("stage") == stages[-1]), nan)
    ok = lambda v: v == v and v > 0  # noqa: E731
    out = {
        "elapsed_s": elapsed_s, "elapsed_ratio": elapsed_s / p50 if ok(p50) else nan,
        "log_rss": math.log(rss) if ok(rss) else nan, "rss_ratio": rss / rss_p50 if ok(rss_p50) else nan,
        "rss_slope_ratio": slope / rss_p50 if ok(rss_p50) else nan, "cpu_util": cpu_util,
        "work_rate_ratio": work_rate / hist_rate if ok(hist_rate) else nan,
        "input_ratio": input_bytes / hist_input if input_bytes and ok(hist_input) else nan,
        "n_samples": float(len(scored)), "stage_rank": float(len(stages)) if stages else nan,
        "stage_elapsed_s": max(0.0, elapsed_s - stage_start) if stage_start == stage_start else nan,
    }
    newest_first = scored[::-1]
    for j in range(features.SCORED_SAMPLES):
        s = newest_first[j] if j < len(newest_first) else None
        prev = newest_first[j + 1] if j + 1 < len(newest_first) else None
        out[f"live{j}_elapsed_frac"] = s["elapsed_s"] / p50 if s and ok(p50) else nan
        out[f"live{j}_rss_ratio"] = s["rss_bytes"] / rss_p50 if s and s.get("rss_bytes") and ok(rss_p50) else nan
        cpu = nan
        if s and prev and s.get("cpu_s") is not None and prev.get("cpu_s") is not None:
            dt = s["elapsed_s"] - prev["elapsed_s"]
            cpu = (s["cpu_s"] - prev["cpu_s"]) / dt if dt > 0 else nan
        out[f"live{j}_cpu_util"] = cpu
    return out


def test_vectorised_live_features_agree_with_the_plain_oracle():
    """One ``live_matrix`` call over 400 attempts of every shape (no samples to many, missing
    values, repeated instants, stages that come back, no history) equals the oracle per attempt."""
    import random

    import numpy as np

    rng = random.Random(7)
    maybe = lambda value, p=0.15: None if rng.random() < p else value  # noqa: E731
    attempts, hists, elapsed = [], [], []
    for _ in range(400):
        t, cpu, work, samples = 0.0, 0.0, 0.0, []
        for _ in range(rng.choice([0, 1, 2, 3, 6, 7, 12, 13, 30])):
            t += rng.choice([0.0, 0.5, 1.0, 5.0])  # 0: two samples at one instant
            cpu += rng.random()
            work += rng.random() * 3
            rss = maybe(rng.choice([0, 1 + int(rng.random() * 1e9)]))
            samples.append({"elapsed_s": t, "cpu_s": maybe(cpu), "rss_bytes": rss, "work_units": maybe(work),
                            "input_bytes": maybe(rng.choice([0, 500, 2000]), 0.5),
                            "stage": maybe(rng.choice(["load", "work", "write"]), 0.3)})
        attempts.append(samples)
        hists.append({name: rng.choice([math.nan, 0.0, 10.0 + rng.random() * 1e8, 10.0 + rng.random() * 1e8])
                      for name in features.USUAL_NAMES})
        elapsed.append(t + rng.random() * 3)
    usual = np.array([features.usual_of(h) for h in hists])
    got = features.live_matrix(features.SampleBlock.of(attempts), elapsed, usual)
    for i in range(len(attempts)):
        expected = reference_live(attempts[i], elapsed[i], hists[i])
        row = dict(zip(features.LIVE_INPUT_NAMES, got[i].tolist()))
        assert row == pytest.approx(expected, nan_ok=True, rel=1e-12), i


def test_feature_row_holds_the_model_input_names():
    history = [attempt("a", T0, T0 + 30, input_bytes=10, work_units=3.0, peak_rss_bytes=MB)]
    row = feature_row(history, T0 + 100, [sample("r", 1.0, MB, 0.1, 1.0, 10),
                                          sample("r", 2.0, 2 * MB, 0.3, 2.0, 10)], 2.0)
    assert tuple(row)[:len(FEATURE_NAMES)] == FEATURE_NAMES
    assert set(row) == set(MODEL_INPUT_NAMES)
    assert all(type(v) is float for v in row.values())


def test_trace_sweep_and_live_path_build_the_same_row():
    """history_rows (training on traces) and feature_row (scoring) agree attempt by attempt."""
    attempts = []
    for i in range(40):
        pipeline = f"u{i % 3}:p{i % 5}"
        start = T0 + i * 37.0
        attempts.append({"pipeline": pipeline, "group": pipeline.split(":")[0], "started_at": start,
                         "ended_at": start + 20 + (i * 13) % 90, "duration_s": 20 + (i * 13) % 90,
                         "outcome": ("failure", "success", "canceled", "success")[i % 4], "requested_s": 80.0,
                         "x_class": float(i % 2)})
    swept = history_rows(attempts)
    for i in (5, 17, 39):
        a = attempts[i]
        running = [b for b in attempts if b["started_at"] <= a["started_at"] <= b["ended_at"]]
        live = feature_row([b for b in attempts if b["ended_at"] < a["started_at"]], a["started_at"], [], 0.0,
                           attempt=a, inflight=running)
        assert same(swept[i], live), i


# ---- training rows ----------------------------------------------------------------------------
def test_training_rows_labels_moments_and_remaining_time():
    ok = attempt("ok", T0, T0 + 19, "success")
    failed = attempt("bad", T0 + 100, T0 + 130, "failure")
    running = attempt("running", T0 + 200, T0 + 201, "started")
    samples = {("bad", "crunch"): [sample("bad", float(t), MB * (1 + t), 0.1 * t) for t in range(1, 17)]}

    t = training_rows([ok, failed, running], samples, points_per_attempt=8)
    rows, remaining = t.rows, t.remaining_s

    # "ok": one row at its start; "bad": its start plus every 2nd of its 16 samples; "running" skipped
    assert t.failed == [0.0] + [1.0] * 9
    assert t.started_at == [T0] + [T0 + 100] * 9
    assert t.ended_at == [T0 + 19] + [T0 + 130] * 9
    # overran: more than 1.5 x the median success (19 s) -> the 30 s failure overran; no history for "ok"
    assert math.isnan(t.overran[0]) and t.overran[1:] == [1.0] * 9
    # the sample count is capped at what the sensor fetches (SCORED_SAMPLES = 12)
    assert [r["n_samples"] for r in rows] == [0.0, 0.0, 1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 12.0, 12.0]
    assert [r["elapsed_s"] for r in rows] == [0.0, 0.0, 1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0]
    assert remaining == [19.0, 30.0, 29.0, 27.0, 25.0, 23.0, 21.0, 19.0, 17.0, 15.0]
    # the failed attempt's row sees the earlier success, not itself
    assert rows[1]["hist_n"] == 1.0 and rows[1]["last_failed"] == 0.0
    assert rows[0]["hist_n"] == 0.0


def test_training_row_equals_the_row_the_sensor_scores(sqlite_url):
    """At each sampled moment, training_rows builds the row forecast_tick would have scored then.

    Replays the sensor's own code (``forecast_service.model_inputs`` over a real store: cached
    history features, the store's sample block, ``live_matrix``) one sample at a time, then
    compares with the rows the trainer builds once the attempt has ended. The attempt has more
    samples than the sensor fetches, so a count of all samples would differ.
    """
    from predcheck_dagster import forecast_service

    store = MetricsStore(sqlite_url)
    past = [attempt(f"p{i}", T0 + i * 100, T0 + i * 100 + 40 + i, "failure" if i % 3 == 0 else "success",
                    peak_rss_bytes=(100 + i) * MB, work_units=40.0, input_bytes=1000 + i) for i in range(8)]
    past += [attempt(f"l{i}", T0 + 500 + i * 50, T0 + 520 + i * 50, "failure" if i == 2 else "success",
                     step_key="load") for i in range(4)]
    live_start = T0 + 1000
    # ended while the live attempt ran: the sensor's store holds it, neither row may use it
    overlapping = attempt("ov", live_start - 10, live_start + 5, "failure", peak_rss_bytes=999 * MB)
    for row in [*past, overlapping]:
        store.record_step_run({k: v for k, v in row.items() if k not in ("pipeline", "group")})
    run = SimpleNamespace(run_id="live", job_name="etl")

    def sensor_row(elapsed_s: float) -> dict[str, float]:
        forecast_service._HISTORY_CACHE.clear()
        inputs = forecast_service.model_inputs(store, [(run, "crunch", live_start)], [], live_start + elapsed_s)
        return dict(zip(MODEL_INPUT_NAMES, inputs.x[0].tolist()))

    live_samples = [sample("live", 1.0 + t, (100 + 7 * t) * MB, 0.8 * t, work=1.5 * t, input_bytes=2000,
                           stage="load" if t < 10 else "work") for t in range(30)]
    assert len(live_samples) > 2 * features.SCORED_SAMPLES
    scored = {0: sensor_row(0.0)}
    for n_seen, s in enumerate(live_samples, start=1):
        store.add_samples([s])
        scored[n_seen] = sensor_row(s["elapsed_s"])
    store.record_step_run({k: v for k, v in attempt("live", live_start, live_start + 31, "failure",
                                                    peak_rss_bytes=300 * MB).items()
                           if k not in ("pipeline", "group")})

    t = training_rows(store.step_runs(), store.all_samples())

    n_seen_at = {0.0: 0, **{s["elapsed_s"]: n for n, s in enumerate(live_samples, start=1)}}
    live_rows = [(row, label) for row, label, start in zip(t.rows, t.failed, t.started_at, strict=True)
                 if start == live_start]
    moments = [n_seen_at[row["elapsed_s"]] for row, _ in live_rows]
    assert moments == [0, 1, 5, 9, 13, 17, 21, 25, 29]
    for (row, label), n_seen in zip(live_rows, moments, strict=True):
        expected = {k: v for k, v in scored[n_seen].items() if not k.startswith("_")}
        diff = {k: (row[k], expected.get(k)) for k in row if not same({k: row[k]}, {k: expected.get(k, -1.0)})}
        assert same(row, expected), f"moment {n_seen}: {diff}"
        assert label == 1.0
        assert row["hist_n"] == 8.0  # the overlapping attempt is in neither row
        assert row["group_n"] == 12.0


def test_scored_sample_cap_matches_what_the_sensor_fetches():
    default = inspect.signature(MetricsStore.recent_samples).parameters["per_step"].default
    assert features.SCORED_SAMPLES == default
    many = [sample("r", float(t), MB, 0.1 * t) for t in range(40)]
    assert feature_row([], T0, many, 40.0)["n_samples"] == float(features.SCORED_SAMPLES)
    assert feature_row([], T0, many[-features.SCORED_SAMPLES:], 40.0) == pytest.approx(
        feature_row([], T0, many, 40.0), nan_ok=True)


def test_bottleneck_stages_are_the_longest_first():
    assert bottleneck_stages({"load": 1.0, "transform": 9.0, "write": 3.0}) == ["transform", "write"]
    assert bottleneck_stages({"load": 1.0}, top=3) == ["load"]
    assert bottleneck_stages({}) == []


def test_named_stages_win_over_the_compute_stage_that_contains_them():
    durations = {"dagster/load_inputs": 2.0, "dagster/compute": 10.0, "transform": 6.0, "write": 1.0}
    assert bottleneck_stages(durations) == ["transform", "dagster/load_inputs"]
    assert bottleneck_stages({"dagster/load_inputs": 2.0, "dagster/compute": 10.0}) == ["dagster/compute",
                                                                                        "dagster/load_inputs"]


def test_history_through_a_dataframe_gives_the_rows_of_the_store(sqlite_url):
    """The training asset passes step_history as a DataFrame: unknown values must stay unknown
    (None), not become NaN that would join the medians, or training and scoring would differ."""
    import pandas as pd

    from predcheck_dagster.forecaster import history_frame, training_set

    store = MetricsStore(sqlite_url)
    for i in range(12):
        failed = i % 3 == 0
        store.record_step_run({k: v for k, v in attempt(
            f"r{i}", T0 + i * 100, T0 + i * 100 + 40, "failure" if failed else "success",
            input_bytes=None if failed else 1000 + i, peak_rss_bytes=None if failed else (100 + i) * MB).items()
            if k not in ("pipeline", "group")})
    samples = {(f"r{i}", "crunch"): [sample(f"r{i}", float(t), 50 * MB, 0.1 * t, input_bytes=1500) for t in range(4)]
               for i in range(12)}
    frame = history_frame(store)
    assert isinstance(frame, pd.DataFrame) and frame["input_bytes"].isna().sum() == 4
    via_frame = training_set(frame, samples).everything.frame
    rows = training_rows(store.step_runs(), samples).rows
    direct = pd.DataFrame.from_records(rows).reindex(columns=via_frame.columns)
    assert direct["input_ratio"].notna().any()
    pd.testing.assert_frame_equal(via_frame, direct)
