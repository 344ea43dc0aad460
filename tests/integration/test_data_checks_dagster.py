"""Blocking great-expectations checks on a real Dagster instance: bad history never reaches training.

step_history -> forecaster_candidates -> champion_model, with the four history checks on
step_history, materialised by ``dagster.materialize`` on a temporary DAGSTER_HOME (SQLite). The
history goes through the default filesystem IO manager into the checks, as in a deployment.
"""

import numpy as np
import pandas as pd
import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    Config,
    DagsterEventType,
    MaterializeResult,
    asset,
    materialize,
)

from predcheck_dagster.data_checks import CHECK_NAMES, build_step_history_checks
from predcheck_dagster.errors import ConfigError

HISTORY = AssetKey("step_history")
DOWNSTREAM = ("forecaster_candidates", "champion_model")


def make_history(case: str) -> pd.DataFrame:
    now = pd.Timestamp.now(tz="UTC").timestamp()
    n = 16
    started = now - 86_400 + 300.0 * np.arange(n)
    df = pd.DataFrame({
        "run_id": [f"run-{i:02d}" for i in range(n)], "root_run_id": [f"run-{i:02d}" for i in range(n)],
        "job": "etl", "step_key": "transform", "attempt": 1, "started_at": started, "ended_at": started + 12.0,
        "duration_s": 12.0, "outcome": ["failure" if i % 4 == 0 else "success" for i in range(n)],
        "cpu_s": 3.0, "peak_rss_bytes": 300_000_000,
    })
    if case == "negative_duration":
        df.loc[[2, 9], "duration_s"] = -4.0
    elif case == "null_outcome":
        df.loc[3, "outcome"] = None
    elif case == "only_successes":
        df["outcome"] = "success"
    else:
        assert case == "good", case
    return df


class HistoryCase(Config):
    case: str = "good"


@asset(name="step_history")
def step_history(config: HistoryCase) -> pd.DataFrame:
    return make_history(config.case)


@asset
def forecaster_candidates(step_history: pd.DataFrame) -> int:
    return len(step_history)


@asset
def champion_model(forecaster_candidates: int) -> int:
    return forecaster_candidates


def run(instance, case: str, checks=None):
    checks = build_step_history_checks(HISTORY) if checks is None else checks
    return materialize([step_history, *checks, forecaster_candidates, champion_model], instance=instance,
                       raise_on_error=False, run_config={"ops": {"step_history": {"config": {"case": case}}}})


def evaluations(result) -> dict:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def materialized(result) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def test_good_history_passes_every_check_and_training_runs(instance):
    result = run(instance, "good")
    assert result.success
    found = evaluations(result)
    assert sorted(found) == sorted(CHECK_NAMES)
    assert all(e.passed and e.severity == AssetCheckSeverity.ERROR for e in found.values())
    assert materialized(result) == {"step_history", *DOWNSTREAM}
    assert result.output_for_node("champion_model") == 16
    label = found["history_label_rate"].metadata
    assert label["rows"].value == 16
    rate = label["observed"].data["failure rate (failure|crashed|timeout) in [0.01, 0.9]"]
    assert rate == {"success": True, "observed_value": 0.25}  # 4 of 16 attempts failed, as GX measured


@pytest.mark.parametrize(
    ("case", "failing_check", "expectation_key", "failing_rows"),
    [
        ("negative_duration", "history_ranges", "duration_s >= 0", 2),
        ("null_outcome", "history_not_null", "outcome not null", 1),
        ("only_successes", "history_label_rate", "both outcomes present (failed and succeeded attempts)", 0),
    ],
)
def test_bad_history_fails_its_check_and_blocks_training(instance, case, failing_check, expectation_key,
                                                        failing_rows):
    result = run(instance, case)
    assert not result.success
    found = evaluations(result)
    assert sorted(found) == sorted(CHECK_NAMES)  # every check still reports
    assert [name for name, e in found.items() if not e.passed] == [failing_check]
    failed = found[failing_check]
    assert failed.severity == AssetCheckSeverity.ERROR
    observed = failed.metadata["observed"].data
    assert observed[expectation_key]["success"] is False
    assert failed.metadata["failing_rows"].value == failing_rows
    assert expectation_key in failed.metadata["expectation"].text
    if failing_rows:
        examples = failed.metadata["examples"].data
        assert len(examples) == failing_rows and all(e["run_id"].startswith("run-") for e in examples)

    # the history itself was written; nothing downstream of it ran, in this run or in the instance
    assert materialized(result) == {"step_history"}
    for key in DOWNSTREAM:
        assert instance.get_latest_materialization_event(AssetKey(key)) is None
    started = {e.step_key for e in result.all_events if e.event_type == DagsterEventType.STEP_START}
    assert started.isdisjoint(DOWNSTREAM)
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert f"Dependencies for step forecaster_candidates failed: ['step_history_{failing_check}']. Not executing." \
        in logs  # the blocking check's step is an upstream of the downstream asset's step
    [failure] = [e for e in result.all_events if e.event_type == DagsterEventType.STEP_FAILURE]
    assert failure.step_failure_data.error.cls_name == "DagsterAssetCheckFailedError"
    assert f"1 blocking asset check failed with ERROR severity:\nstep_history: {failing_check}" in \
        failure.step_failure_data.error.message


def test_the_same_failure_does_not_block_when_the_checks_are_not_blocking(instance):
    """The contrast that makes the test above meaningful: only ``blocking=True`` stops training."""
    result = run(instance, "negative_duration", checks=build_step_history_checks(HISTORY, blocking=False))
    assert result.success
    assert not evaluations(result)["history_ranges"].passed
    assert materialized(result) == {"step_history", *DOWNSTREAM}


def test_a_history_loader_checks_an_asset_without_a_loadable_value(instance):
    """An asset that writes the history elsewhere (e.g. the metrics store): the check loads it itself."""

    @asset(name="step_history")
    def history_in_store(config: HistoryCase) -> MaterializeResult:
        return MaterializeResult(metadata={"case": config.case})

    @asset(deps=[HISTORY])
    def forecaster_candidates() -> int:
        return 1

    def from_store(context) -> pd.DataFrame:
        [event] = context.instance.fetch_materializations(HISTORY, limit=1).records
        return make_history(event.asset_materialization.metadata["case"].value)

    checks = build_step_history_checks(HISTORY, history_loader=from_store)
    for case, blocked in (("good", False), ("only_successes", True)):
        result = materialize([history_in_store, *checks, forecaster_candidates], instance=instance,
                             raise_on_error=False, run_config={"ops": {"step_history": {"config": {"case": case}}}})
        assert result.success is not blocked
        assert evaluations(result)["history_label_rate"].passed is not blocked
        assert ("forecaster_candidates" in materialized(result)) is not blocked


def test_a_value_that_is_not_a_dataframe_fails_the_check_step_and_blocks(instance):
    @asset(name="step_history")
    def history_as_rows() -> list:
        return [{"run_id": "r"}]

    result = materialize([history_as_rows, *build_step_history_checks(HISTORY), forecaster_candidates],
                         instance=instance, raise_on_error=False)
    assert not result.success
    assert "forecaster_candidates" not in materialized(result)
    messages = [e.step_failure_data.error.cause.message for e in result.all_events
                if e.event_type == DagsterEventType.STEP_FAILURE]
    assert len(messages) == len(CHECK_NAMES)
    assert all("step history asset 'step_history' gave a list, not a pandas DataFrame" in m for m in messages)


def test_a_later_run_that_does_not_rematerialise_the_history_is_not_blocked(instance):
    """Blocking is per run: the checks gate the steps of the run that also materialises the history."""
    assets = [step_history, *build_step_history_checks(HISTORY), forecaster_candidates, champion_model]
    bad = materialize(assets, instance=instance, raise_on_error=False,
                      run_config={"ops": {"step_history": {"config": {"case": "negative_duration"}}}})
    assert not bad.success and materialized(bad) == {"step_history"}
    later = materialize(assets, instance=instance, selection=[forecaster_candidates])
    assert later.success and materialized(later) == {"forecaster_candidates"}  # it read the bad history


def test_checks_target_any_key_or_the_asset_itself():
    prefixed = AssetKey(["predcheck", "history"])
    for target, key in ((prefixed, prefixed), (["predcheck", "history"], prefixed), (step_history, HISTORY)):
        checks = build_step_history_checks(target)
        assert [c.check_key for c in checks] == [AssetCheckKey(key, name) for name in CHECK_NAMES]
        assert all(c.check_specs_by_output_name["result"].blocking for c in checks)
        assert all(set(c.keys_by_input_name.values()) == {key} for c in checks)  # the value is the check's input


def test_inconsistent_bounds_are_refused_when_the_checks_are_defined():
    with pytest.raises(ConfigError, match=r"min_failure_rate=0\.6, max_failure_rate=0\.2"):
        build_step_history_checks(HISTORY, min_failure_rate=0.6, max_failure_rate=0.2)
