"""Labelling step attempts: the deadline rule and the error fingerprint (pure)."""

from __future__ import annotations

import traceback

import pytest

from predcheck_dagster.outcome import (
    deadline_from_tags,
    error_fingerprint,
    fingerprint_error_info,
    fingerprint_exception,
    fingerprint_frames,
    frames_of_stack,
    label_outcome,
    normalise_message,
)


# ---- the deadline rule ------------------------------------------------------------------------
def test_the_op_tag_wins_over_the_run_tag():
    assert deadline_from_tags({"predcheck/deadline_s": "30"}, {"predcheck/deadline_s": "600"}) == 30.0
    assert deadline_from_tags({}, {"predcheck/deadline_s": "600"}) == 600.0
    assert deadline_from_tags(None, None) is None


@pytest.mark.parametrize("value", ["", "soon", "0", "-5", "nan", "inf"])
def test_an_unusable_deadline_tag_is_no_deadline(value):
    assert deadline_from_tags({"predcheck/deadline_s": value}, None) is None
    assert deadline_from_tags({"predcheck/deadline_s": value}, {"predcheck/deadline_s": "10"}) == 10.0


@pytest.mark.parametrize("outcome", ["success", "failure", "crashed"])
def test_an_attempt_at_or_past_its_deadline_is_a_timeout(outcome):
    assert label_outcome(outcome, 10.0, 10.0) == "timeout"
    assert label_outcome(outcome, 12.5, 10.0) == "timeout"
    assert label_outcome(outcome, 9.99, 10.0) == outcome
    assert label_outcome(outcome, 12.5, None) == outcome


# ---- fingerprints -----------------------------------------------------------------------------
def _raise_value_error(user_id: int) -> None:
    raise ValueError(f"user {user_id} not found in /data/run-{user_id}/users.parquet at 0x7f3a2b1c9d40")


def _raise_key_error() -> None:
    {}["missing"]


def _caught(fn, *args) -> BaseException:
    try:
        fn(*args)
    except Exception as e:  # noqa: BLE001 - the exception under test
        return e
    raise AssertionError("did not raise")


def test_the_same_bug_has_the_same_fingerprint_whatever_the_data():
    first, second = _caught(_raise_value_error, 17), _caught(_raise_value_error, 90210)
    assert str(first) != str(second)
    assert fingerprint_exception(first) == fingerprint_exception(second)
    assert len(fingerprint_exception(first)) == 40


def test_different_bugs_have_different_fingerprints():
    value_error, key_error = _caught(_raise_value_error, 1), _caught(_raise_key_error)
    other_message = ValueError("completely different")
    assert len({fingerprint_exception(value_error), fingerprint_exception(key_error),
                fingerprint_exception(other_message)}) == 3
    frames = [("/x/etl.py", "load")]
    assert error_fingerprint("ValueError", "m", frames) != error_fingerprint("ValueError", "m", [("/x/etl.py", "save")])
    assert error_fingerprint("ValueError", "m", frames) != error_fingerprint("TypeError", "m", frames)


def test_messages_lose_paths_hex_ids_and_numbers():
    text = ("run 8f14e45f-ceea-467f-a0e6-9c2b9b2c3e4a failed at 0x7ffd1234 reading /tmp/pytest-12/data.csv "
            "and relative/dir/file.json after 3.5 s, 42 rows, id deadbeefcafe1234")
    assert normalise_message(text) == ("run <hex> failed at <hex> reading <path> and <path> after <n> s, "
                                       "<n> rows, id <hex>")


def test_moving_lines_or_the_install_path_keeps_the_fingerprint():
    here = [("/home/a/project/etl.py", "main"), ("/home/a/project/etl.py", "load")]
    there = [("/srv/app/etl.py", "main"), ("/srv/app/etl.py", "load")]
    assert error_fingerprint("OSError", "disk full", here) == error_fingerprint("OSError", "disk full", there)


def test_dagster_frames_do_not_count_and_only_the_innermost_frames_do():
    frames = [("/venv/site-packages/dagster/_core/execution/plan/execute_step.py", "core"),
              ("/venv/site-packages/dagster_shared/utils.py", "wrap"),
              *[(f"/app/m{i}.py", f"f{i}") for i in range(8)]]
    assert fingerprint_frames(frames) == [f"m{i}.py:f{i}" for i in range(3, 8)]


def test_the_event_log_and_the_live_exception_give_the_same_fingerprint():
    """Dagster serializes an error as '[module.]Class: message' with a formatted stack: the
    reconciler's fingerprint of it equals the hook's fingerprint of the live exception."""

    class LocalError(Exception):
        pass

    def raise_local():
        raise LocalError("batch 7 of 12 failed")

    exc = _caught(raise_local)
    message = "".join(traceback.format_exception_only(type(exc), exc))
    stack = traceback.format_tb(exc.__traceback__)
    assert message.startswith("tests.unit.test_outcome.") or message.startswith("test_outcome.")
    assert fingerprint_error_info("LocalError", message, stack) == fingerprint_exception(exc)
    assert frames_of_stack(stack)[-1][1] == "raise_local"
