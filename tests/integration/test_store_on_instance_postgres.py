"""Without a store_url, predcheck keeps its tables in the Dagster instance's own PostgreSQL database
when the instance's storage is dagster-postgres (here configured with ``postgres_db``, as
dagster.yaml usually is)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from dagster import DagsterInstance, execute_job, reconstructable

import predcheck_dagster as pc
from predcheck_dagster.cli import main

from ..conftest import _create_database, _drop_database
from . import store_jobs

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def instance_database():
    url = _create_database()
    yield url
    _drop_database(url)


def test_predcheck_uses_the_instance_postgres_database_when_no_store_url_is_set(
        instance_database, dagster_home, tmp_path, monkeypatch):
    name = instance_database.rsplit("/", 1)[1]
    (dagster_home / "dagster.yaml").write_text(
        "telemetry:\n  enabled: false\n"
        "storage:\n  postgres:\n    postgres_db:\n"
        "      username: postgres\n      hostname: 127.0.0.1\n      port: 5432\n"
        f"      db_name: {name}\n"
        "      scheme: postgresql+psycopg2\n")  # dagster-postgres under SQLAlchemy 2.1 needs the driver named
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the step processes import this worktree's library
    busy = {"config": {"seconds": 1.0}}
    run_config = {"ops": {"busy_a": busy, "busy_b": busy},
                  "resources": {"predcheck": {"config": {"sample_interval_s": 0.1, "webserver_url": None}}}}

    with DagsterInstance.get() as instance:
        result = execute_job(reconstructable(store_jobs.busy_parallel_job), instance=instance, run_config=run_config)
        assert result.success
        store = pc.PredcheckResource().metrics_store(instance)
        assert store.url == instance_database  # postgresql+psycopg2://postgres@127.0.0.1:5432/<name>
        runs = store.step_runs(run_id=result.run_id)  # written by the step processes' hooks
        assert sorted((r["step_key"], r["measured_by"]) for r in runs) == [("busy_a", "profiler"),
                                                                         ("busy_b", "profiler")]
        assert all(len(store.samples(result.run_id, key)) >= 3 for key in ("busy_a", "busy_b"))

    assert not (dagster_home / "predcheck" / "metrics.db").exists()  # no embedded SQLite on the side
    engine = sa.create_engine(instance_database)
    with engine.connect() as conn:
        tables = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    assert {"runs", "event_logs"} <= tables  # Dagster's tables ...
    assert {"step_runs", "step_samples", "predcheck_schema"} <= tables  # ... and predcheck's, side by side

    migrated = CliRunner().invoke(main, ["store", "migrate"], env={"DAGSTER_HOME": str(dagster_home)})
    assert migrated.exit_code == 0, migrated.output
    assert migrated.output == f"{instance_database}: schema version 3\n"
