"""Features of a step attempt: history before it started, live samples, and train/serve parity."""

from __future__ import annotations

import inspect
import math

import pytest

from predcheck_dagster import features
from predcheck_dagster.features import (
    FEATURE_NAMES,
    HISTORY_WINDOW,
    bottleneck_stages,
    feature_row,
    history_features,
    live_features,
    training_rows,
)
from predcheck_dagster.metrics_store import MetricsStore

MB = 1024 * 1024
T0 = 1_700_000_000.0


def attempt(run_id: str, started: float, ended: float, outcome: str = "success", **extra) -> dict:
    return {"run_id": run_id, "root_run_id": run_id, "job": "etl", "step_key": "crunch", "attempt": 1,
            "started_at": started, "ended_at": ended, "duration_s": ended - started, "outcome": outcome,
            **extra}


def sample(run_id: str, elapsed: float, rss: float, cpu: float, work: float | None = None,
           input_bytes: int | None = None) -> dict:
    return {"run_id": run_id, "step_key": "crunch", "ts": T0 + 10_000 + elapsed, "elapsed_s": elapsed,
            "cpu_s": cpu, "rss_bytes": int(rss), "read_bytes": 0, "write_bytes": 0, "stage": "work",
            "work_units": work, "input_bytes": input_bytes}


def by_end(attempts):
    return sorted(attempts, key=lambda a: a["ended_at"])


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
    full = feature_row(by_end([early_failure, late_failure, simultaneous]), started, [], 0.0)
    assert same(full, feature_row([early_failure], started, [], 0.0))
    # scored after it ended, the late failure does count
    assert feature_row(by_end([early_failure, late_failure]), T0 + 500, [], 0.0)["hist_n"] == 2.0


def test_smoothed_failure_rate_starts_at_the_prior():
    assert history_features([], T0)["hist_fail_rate"] == pytest.approx(0.25)
    assert history_features([], T0)["hist_n"] == 0.0
    assert math.isnan(history_features([], T0)["last_failed"])
    history = [attempt(f"r{i}", T0 + i * 100, T0 + i * 100 + 50, outcome)
               for i, outcome in enumerate(["success", "failure", "success", "success", "timeout", "success"])]
    hist = history_features(history, T0 + 10_000)
    assert hist["hist_n"] == 6.0
    assert hist["hist_fail_rate"] == pytest.approx((2 + 1) / (6 + 4))
    assert hist["last_failed"] == 0.0
    assert hist["consecutive_failures"] == 0.0


def test_consecutive_failures_count_every_failed_outcome_from_the_end():
    outcomes = ["failure", "success", "failure", "crashed", "timeout"]
    history = [attempt(f"r{i}", T0 + i * 100, T0 + i * 100 + 50, o) for i, o in enumerate(outcomes)]
    hist = history_features(history, T0 + 1000)
    assert hist["consecutive_failures"] == 3.0
    assert hist["last_failed"] == 1.0
    assert hist["log_since_last_failure_s"] == pytest.approx(math.log1p(T0 + 1000 - (T0 + 450)))


def test_history_window_keeps_the_most_recent_attempts():
    history = [attempt(f"old{i}", T0 + i, T0 + i + 0.5, "failure") for i in range(10)]
    history += [attempt(f"new{i}", T0 + 100 + i, T0 + 100 + i + 0.5) for i in range(HISTORY_WINDOW)]
    hist = history_features(history, T0 + 1000)
    assert hist["hist_n"] == float(HISTORY_WINDOW)
    assert hist["hist_fail_rate"] == pytest.approx(1 / (HISTORY_WINDOW + 4))
    assert math.isnan(hist["log_since_last_failure_s"])


def test_duration_and_rss_quantiles_come_from_successful_attempts():
    history = [attempt(f"r{i}", T0 + i * 100, T0 + i * 100 + d, "success", peak_rss_bytes=rss)
               for i, (d, rss) in enumerate([(10, 100 * MB), (20, 300 * MB), (30, 200 * MB), (40, 400 * MB)])]
    history.append(attempt("oom", T0 + 900, T0 + 999, "failure", peak_rss_bytes=4000 * MB))
    hist = history_features(history, T0 + 2000)
    assert hist["hist_duration_p50"] == pytest.approx(25.0)
    assert hist["hist_duration_p90"] == pytest.approx(37.0)
    assert hist["hist_peak_rss_p50"] == pytest.approx(250 * MB)


# ---- live -------------------------------------------------------------------------------------
def test_live_features_from_samples():
    hist = {"hist_duration_p50": 100.0, "hist_peak_rss_p50": 200 * MB, "_hist_work_rate": 4.0,
            "_hist_input_bytes": 1000.0}
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


def test_feature_row_has_exactly_the_feature_names_in_order():
    history = [attempt("a", T0, T0 + 30, input_bytes=10, work_units=3.0, peak_rss_bytes=MB)]
    row = feature_row(history, T0 + 100, [sample("r", 1.0, MB, 0.1, 1.0, 10),
                                          sample("r", 2.0, 2 * MB, 0.3, 2.0, 10)], 2.0)
    assert tuple(row) == FEATURE_NAMES
    assert all(type(v) is float for v in row.values())
    assert not any(k.startswith("_") for k in row)


# ---- training rows ----------------------------------------------------------------------------
def test_training_rows_labels_moments_and_remaining_time():
    ok = attempt("ok", T0, T0 + 20, "success")
    failed = attempt("bad", T0 + 100, T0 + 130, "failure")
    running = attempt("running", T0 + 200, T0 + 201, "started")
    samples = {("bad", "crunch"): [sample("bad", float(t), MB * (1 + t), 0.1 * t) for t in range(1, 17)]}

    rows, labels, times, remaining = training_rows([ok, failed, running], samples, points_per_attempt=8)

    # "ok": one row at its start; "bad": its start plus every 2nd of its 16 samples; "running" skipped
    assert labels == [0] + [1] * 9
    assert times == [T0] + [T0 + 100] * 9
    # the sample count is capped at what the sensor fetches (SCORED_SAMPLES = 12)
    assert [r["n_samples"] for r in rows] == [0.0, 0.0, 1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 12.0, 12.0]
    assert [r["elapsed_s"] for r in rows] == [0.0, 0.0, 1.0, 3.0, 5.0, 7.0, 9.0, 11.0, 13.0, 15.0]
    assert remaining == [20.0, 30.0, 29.0, 27.0, 25.0, 23.0, 21.0, 19.0, 17.0, 15.0]
    # the failed attempt's row sees the earlier success, not itself
    assert rows[1]["hist_n"] == 1.0 and rows[1]["last_failed"] == 0.0
    assert rows[0]["hist_n"] == 0.0


def test_training_row_equals_the_row_the_sensor_scores(sqlite_url):
    """At each sampled moment, training_rows builds the row forecast_tick would have scored then.

    The sensor (forecast_service.forecast_tick) calls
    ``feature_row(store.step_runs(job, step, limit=HISTORY_WINDOW * 5), stats.start_time,
    store.recent_samples(keys)[key], now - stats.start_time)``: replay that through a real store,
    one sample at a time, then compare with the rows the trainer builds once the attempt has ended.
    The attempt has more samples than the sensor fetches, so a count of all samples would differ.
    """
    store = MetricsStore(sqlite_url)
    past = [attempt(f"p{i}", T0 + i * 100, T0 + i * 100 + 40 + i, "failure" if i % 3 == 0 else "success",
                    peak_rss_bytes=(100 + i) * MB, work_units=40.0, input_bytes=1000 + i) for i in range(8)]
    live_start = T0 + 1000
    # ended while the live attempt ran: the sensor's store holds it, neither row may use it
    overlapping = attempt("ov", live_start - 10, live_start + 5, "failure", peak_rss_bytes=999 * MB)
    for row in [*past, overlapping]:
        assert store.record_step_run(row)

    def sensor_row(elapsed_s: float) -> dict[str, float]:
        history = store.step_runs(job="etl", step_key="crunch", limit=HISTORY_WINDOW * 5)
        recent = store.recent_samples([("live", "crunch")])
        now = live_start + elapsed_s
        return feature_row(history, live_start, recent.get(("live", "crunch"), []), now - live_start)

    live_samples = [sample("live", 1.0 + t, (100 + 7 * t) * MB, 0.8 * t, work=1.5 * t, input_bytes=2000)
                    for t in range(30)]
    assert len(live_samples) > 2 * features.SCORED_SAMPLES
    scored = {0: sensor_row(0.0)}
    for n_seen, s in enumerate(live_samples, start=1):
        store.add_samples([s])
        scored[n_seen] = sensor_row(s["elapsed_s"])
    store.record_step_run(attempt("live", live_start, live_start + 31, "failure", peak_rss_bytes=300 * MB))

    rows, labels, times, _ = training_rows(store.step_runs(), store.all_samples())

    n_seen_at = {0.0: 0, **{s["elapsed_s"]: n for n, s in enumerate(live_samples, start=1)}}
    live_rows = [(row, label) for row, label, t in zip(rows, labels, times, strict=True) if t == live_start]
    moments = [n_seen_at[row["elapsed_s"]] for row, _ in live_rows]
    assert moments == [0, 1, 5, 9, 13, 17, 21, 25, 29]
    for (row, label), n_seen in zip(live_rows, moments, strict=True):
        assert same(row, scored[n_seen]), f"moment {n_seen}: {row} != {scored[n_seen]}"
        assert label == 1
        assert row["hist_n"] == 8.0  # the overlapping attempt is in neither row


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
