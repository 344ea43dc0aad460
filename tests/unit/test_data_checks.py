"""Great-expectations checks on the step history: each failing case shows up as GX reported it."""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from predcheck_dagster import data_checks
from predcheck_dagster.data_checks import CHECK_NAMES, HistoryCheck, validate_step_history
from predcheck_dagster.errors import ConfigError

NOW = 1_780_000_000.0  # a fixed "now" (2026-05-28), so the not-in-the-future bound is deterministic


def history(n: int = 20, failure_every: int = 4) -> pd.DataFrame:
    """A clean step history shaped like ``step_runs``: one failure every ``failure_every`` attempts."""
    started = NOW - 10_000 + 60.0 * np.arange(n)
    duration = 5.0 + np.arange(n) % 7
    return pd.DataFrame({
        "run_id": [f"run-{i:02d}" for i in range(n)],
        "root_run_id": [f"run-{i:02d}" for i in range(n)],
        "job": "etl",
        "step_key": "transform",
        "attempt": 1,
        "started_at": started,
        "ended_at": started + duration,
        "duration_s": duration,
        "outcome": ["crashed" if i % failure_every == 0 else "success" for i in range(n)],
        "cpu_s": 2.5,
        "peak_rss_bytes": 200_000_000,
        "input_bytes": 1_000_000,
    })


def checks(df: pd.DataFrame, **kwargs) -> dict[str, HistoryCheck]:
    return {c.name: c for c in validate_step_history(df, now=NOW, **kwargs)}


def only_failing(result: dict[str, HistoryCheck]) -> list[str]:
    return [name for name, c in result.items() if not c.passed]


def test_a_clean_history_passes_every_check_and_reports_what_gx_observed():
    result = validate_step_history(history(), now=NOW)
    assert [c.name for c in result] == list(CHECK_NAMES)
    assert all(c.passed for c in result), [c.observed for c in result if not c.passed]
    by_name = {c.name: c for c in result}
    label = by_name["history_label_rate"].observed
    assert label["at least 8 rows"]["observed_value"] == 20
    assert label["failure rate (failure|crashed|timeout) in [0.01, 0.9]"]["observed_value"] == pytest.approx(5 / 20)
    assert by_name["history_ranges"].expectation == (
        "duration_s >= 0; cpu_s >= 0; peak_rss_bytes >= 0; input_bytes >= 0; attempt >= 1; "
        "outcome in {success, failure, crashed, timeout}")
    assert by_name["history_not_null"].observed["run_id not null"] == {
        "success": True, "unexpected_count": 0, "unexpected_percent": 0.0, "partial_unexpected_list": []}
    assert all(c.failing_rows == 0 and c.examples == [] for c in result)


def test_a_null_outcome_fails_not_null_with_the_row_identified():
    df = history()
    df.loc[5, "outcome"] = None
    result = checks(df)
    assert only_failing(result) == ["history_not_null"]  # the label rate counts known outcomes only
    failed = result["history_not_null"]
    assert failed.observed["outcome not null"]["success"] is False
    assert failed.observed["outcome not null"]["unexpected_count"] == 1
    assert failed.failing_rows == 1
    assert failed.examples == [{"expectation": "outcome not null", "outcome": None, "run_id": "run-05",
                                "step_key": "transform", "attempt": 1}]


def test_negative_durations_fail_ranges_with_the_values_and_rows():
    df = history()
    df.loc[[3, 7], "duration_s"] = [-1.0, -30.0]
    failed = checks(df)["history_ranges"]
    assert not failed.passed
    observed = failed.observed["duration_s >= 0"]
    assert observed["success"] is False and observed["unexpected_count"] == 2
    assert sorted(observed["partial_unexpected_list"]) == [-30.0, -1.0]
    assert failed.failing_rows == 2
    assert {e["run_id"]: e["duration_s"] for e in failed.examples} == {"run-03": -1.0, "run-07": -30.0}


def test_negative_resource_counters_fail_ranges_and_absent_ones_are_skipped():
    df = history()
    df.loc[2, "peak_rss_bytes"] = -5
    failed = checks(df)["history_ranges"]
    assert not failed.passed and failed.observed["peak_rss_bytes >= 0"]["unexpected_count"] == 1
    trimmed = history().drop(columns=["cpu_s", "peak_rss_bytes", "input_bytes"])
    ranges = checks(trimmed)["history_ranges"]
    assert ranges.passed
    assert ranges.expectation == "duration_s >= 0; attempt >= 1; outcome in {success, failure, crashed, timeout}"


def test_an_unknown_outcome_fails_ranges():
    df = history()
    df.loc[4, "outcome"] = "cancelled"
    result = checks(df)
    assert only_failing(result) == ["history_ranges"]
    observed = result["history_ranges"].observed["outcome in {success, failure, crashed, timeout}"]
    assert observed["partial_unexpected_list"] == ["cancelled"]


def test_an_attempt_that_ends_before_it_starts_fails_timestamp_order():
    df = history()
    df.loc[6, "ended_at"] = df.loc[6, "started_at"] - 10
    failed = checks(df)["history_timestamp_order"]
    assert not failed.passed
    assert failed.observed["ended_at >= started_at"]["unexpected_count"] == 1
    assert failed.observed["started_at in [2000-01-01, now + 300 s]"]["success"] is True
    (example,) = failed.examples
    assert example["run_id"] == "run-06" and example["ended_at"] == example["started_at"] - 10


@pytest.mark.parametrize(("started_at", "why"), [(900_000_000.0, "1998"), (NOW + 3600, "an hour ahead")])
def test_timestamps_before_2000_or_in_the_future_fail_timestamp_order(started_at, why):
    df = history()
    df.loc[0, ["started_at", "ended_at"]] = [started_at, started_at + 5]
    failed = checks(df)["history_timestamp_order"]
    assert not failed.passed, why
    assert failed.observed["started_at in [2000-01-01, now + 300 s]"]["partial_unexpected_list"] == [started_at]
    assert failed.observed["ended_at >= started_at"]["success"] is True


def test_datetime_columns_are_checked_as_epoch_seconds():
    df = history()
    df["started_at"] = pd.to_datetime(df["started_at"], unit="s")
    df["ended_at"] = pd.to_datetime(df["ended_at"], unit="s", utc=True)
    assert checks(df)["history_timestamp_order"].passed
    df.loc[1, "ended_at"] = df.loc[1, "ended_at"] - pd.Timedelta(hours=1)
    assert checks(df)["history_timestamp_order"].observed["ended_at >= started_at"]["unexpected_count"] == 1


def test_only_successes_fail_the_label_rate():
    df = history()
    df["outcome"] = "success"
    result = checks(df)
    assert only_failing(result) == ["history_label_rate"]
    observed = result["history_label_rate"].observed
    assert observed["both outcomes present (failed and succeeded attempts)"]["partial_missing_list"] == [1.0]
    rate = observed["failure rate (failure|crashed|timeout) in [0.01, 0.9]"]
    assert rate == {"success": False, "observed_value": 0.0}


def test_a_failure_rate_above_the_bound_fails_the_label_rate():
    df = history(failure_every=1)
    df.loc[0, "outcome"] = "success"  # both classes, 19 of 20 failed
    failed = checks(df, max_failure_rate=0.5)["history_label_rate"]
    assert not failed.passed
    rate = failed.observed["failure rate (failure|crashed|timeout) in [0.01, 0.5]"]
    assert rate == {"success": False, "observed_value": pytest.approx(0.95)}
    assert failed.observed["both outcomes present (failed and succeeded attempts)"]["success"] is True


def test_too_few_rows_fail_the_label_rate():
    failed = checks(history(n=4, failure_every=2))["history_label_rate"]
    assert not failed.passed
    assert failed.observed["at least 8 rows"] == {"success": False, "observed_value": 4}
    assert checks(history(n=4, failure_every=2), min_rows=4)["history_label_rate"].passed


def test_missing_required_columns_fail_through_gx_column_exists():
    result = checks(history().drop(columns=["run_id", "outcome"]))
    assert only_failing(result) == ["history_not_null", "history_ranges", "history_label_rate"]
    assert result["history_not_null"].observed["column run_id exists"] == {"success": False}
    assert result["history_not_null"].observed["column outcome exists"] == {"success": False}
    assert result["history_ranges"].observed["column outcome exists"] == {"success": False}
    assert result["history_label_rate"].observed["column outcome exists"] == {"success": False}  # shared in GX
    assert result["history_timestamp_order"].passed


def test_an_empty_history_fails_only_the_label_rate():
    result = checks(history().iloc[0:0])
    assert only_failing(result) == ["history_label_rate"]


def test_observed_values_are_plain_json_even_for_nan_and_numpy_values():
    df = history()
    df.loc[3, "duration_s"] = np.nan
    df.loc[4, "run_id"] = None
    df.loc[5, "cpu_s"] = -np.inf
    for check in validate_step_history(df, now=NOW):
        json.dumps(check.observed, allow_nan=False)
        json.dumps(check.examples, allow_nan=False)


def test_only_runs_the_named_checks_in_canonical_order():
    result = validate_step_history(history(), now=NOW, only=["history_label_rate", "history_not_null"])
    assert [c.name for c in result] == ["history_not_null", "history_label_rate"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"only": ["history_typo"]}, r"unknown step-history checks \['history_typo'\]: choose from"),
        ({"min_failure_rate": 0.5, "max_failure_rate": 0.1}, r"min_failure_rate=0\.5, max_failure_rate=0\.1"),
        ({"min_rows": 0}, r"min_rows must be at least 1, got 0"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        validate_step_history(history(), **kwargs)


def test_the_gx_context_is_built_once_and_is_quiet(capfd, caplog, monkeypatch):
    monkeypatch.setattr(data_checks, "_GX_BATCH_DEFINITION", None)  # build a fresh one in this test
    with caplog.at_level(logging.INFO):
        validate_step_history(history(), now=NOW)
        first = data_checks._batch_definition()
        validate_step_history(history(), now=NOW)
    assert data_checks._batch_definition() is first
    captured = capfd.readouterr()
    assert "Calculating Metrics" not in captured.err + captured.out  # GX's tqdm progress bars
    assert [r.getMessage() for r in caplog.records if r.name.startswith("great_expectations")] == []
