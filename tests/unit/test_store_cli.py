"""``predcheck store``: compact with progress, flush the spool, migrate; durations are validated."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from predcheck_dagster import store_maintenance
from predcheck_dagster.cli import Duration, main
from predcheck_dagster.metrics_store import MetricsStore

from .test_metrics_store import DAY, NOW, seed_for_compaction, step_run


@pytest.mark.parametrize("text, seconds", [("7d", 604800.0), ("60s", 60.0), ("1.5h", 5400.0), ("30m", 1800.0),
                                           ("2w", 1209600.0), ("90", 90.0), ("0", 0.0)])
def test_durations(text, seconds):
    assert Duration().convert(text, None, None) == seconds


def test_compact_command(metrics, sqlite_url, monkeypatch):
    seed_for_compaction(metrics)
    monkeypatch.setattr("time.time", lambda: NOW)
    result = CliRunner().invoke(main, ["store", "compact", "--older-than", "7d", "--keep-every", "1m",
                                       "--store-url", sqlite_url, "--batch-steps", "1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("compaction: deleted 588 sample(s) of 2/2 finished step(s) in 2 batch(es)")
    assert f"compacting {sqlite_url}: samples of steps ended more than 604800 s ago, one per 60 s kept" in result.stderr
    assert "2/2 steps compacted" in result.stderr  # progress, as a line when stderr is not a terminal
    assert len(metrics.samples("old", "crunch")) == 6

    bad = CliRunner().invoke(main, ["store", "compact", "--older-than", "a week", "--store-url", sqlite_url])
    assert bad.exit_code == 2
    assert "'a week' is not a duration: use e.g. 7d, 12h, 30m, 90s or a number of seconds" in bad.output


def test_flush_and_migrate_commands(tmp_path, sqlite_url, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    spool = MetricsStore(sqlite_url, spool_dir=str(tmp_path / "spool")).spool
    spool.append("step_run", [step_run("spooled-run")])
    flushed = CliRunner().invoke(main, ["store", "flush", "--store-url", sqlite_url, "--spool-dir",
                                        str(tmp_path / "spool")])
    assert flushed.exit_code == 0, flushed.output
    assert flushed.output.splitlines() == [
        f"1 spool file(s) in {spool.directory}",
        "spool: flushed 1 file(s) (1 step run(s), 0 sample(s)); 0 file(s) left"]
    assert [r["run_id"] for r in MetricsStore(sqlite_url).step_runs()] == ["spooled-run"]

    migrated = CliRunner().invoke(main, ["store", "migrate", "--store-url", sqlite_url])
    assert migrated.output == f"{sqlite_url}: schema version 3\n"


def test_automatic_compaction_runs_hourly_and_continues_an_unfinished_run(metrics, monkeypatch):
    seed_for_compaction(metrics)
    monkeypatch.setattr("time.time", lambda: NOW)
    assert store_maintenance.compact_if_due(metrics, None, 60.0, now=0.0) is None  # off by default

    monkeypatch.setattr(store_maintenance, "COMPACTION_TICK_BUDGET_S", 0.0)
    line = store_maintenance.compact_if_due(metrics, 7 * DAY, 60.0, now=0.0)
    assert line.endswith("time budget reached, the next run continues")
    monkeypatch.setattr(store_maintenance, "COMPACTION_TICK_BUDGET_S", 20.0)
    line = store_maintenance.compact_if_due(metrics, 7 * DAY, 60.0, now=1.0)  # not finished: the next tick goes on
    assert line.startswith("compaction: deleted 588 sample(s)")
    assert store_maintenance.compact_if_due(metrics, 7 * DAY, 60.0, now=3599.0) is None  # within the hour
    assert store_maintenance.compact_if_due(metrics, 7 * DAY, 60.0, now=3602.0).startswith(
        "compaction: deleted 0 sample(s)")
    store_maintenance._LAST_COMPACTION.clear()


def test_flush_spool_line_only_when_something_waits(tmp_path, sqlite_url):
    store = MetricsStore(sqlite_url, spool_dir=str(tmp_path / "spool"))
    assert store_maintenance.flush_spool(store) is None
    store.spool.append("samples", [{"run_id": "r", "step_key": "s", "ts": 1.0, "elapsed_s": 0.0}])
    assert store_maintenance.flush_spool(store) == (
        "spool: flushed 1 file(s) (0 step run(s), 1 sample(s)); 0 file(s) left")
    assert [s["ts"] for s in store.samples("r", "s")] == [1.0]
