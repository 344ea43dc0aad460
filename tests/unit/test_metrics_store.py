"""The metrics store on SQLite (a temporary file) and PostgreSQL (127.0.0.1:5432/test)."""

from __future__ import annotations

import json
import os
import re
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from predcheck_dagster import metrics_store as metrics_store_module
from predcheck_dagster.errors import MetricsStoreUnavailableError
from predcheck_dagster.metrics_store import SCHEMA_VERSION, MetricsStore

from .store_urls import UNREACHABLE_STORE_URL

T0 = 1_700_000_000.0


def step_run(run_id: str, step_key: str = "crunch", attempt: int = 1, ended: float = T0 + 10,
             outcome: str = "success", job: str = "etl", **extra) -> dict:
    return {"run_id": run_id, "root_run_id": run_id, "job": job, "step_key": step_key, "attempt": attempt,
            "started_at": ended - 10, "ended_at": ended, "duration_s": 10.0, "outcome": outcome, **extra}


def samples_of(run_id: str, step_key: str, n: int) -> list[dict]:
    return [{"run_id": run_id, "step_key": step_key, "ts": T0 + i, "elapsed_s": float(i), "cpu_s": 0.1 * i,
             "rss_bytes": 1000 + i} for i in range(n)]


def claim_race(store: MetricsStore, parent_run_id: str, threads: int = 8) -> list[bool]:
    barrier = threading.Barrier(threads)
    results: list[bool] = []
    errors: list[BaseException] = []

    def claim() -> None:
        barrier.wait()
        try:
            results.append(store.claim_resume(parent_run_id, "root", "etl"))
        except BaseException as e:  # reported by the assertion below
            errors.append(e)

    workers = [threading.Thread(target=claim) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=30)
    assert errors == []
    return results


# ---- schema -----------------------------------------------------------------------------------
def test_migrate_is_idempotent(metrics, sqlite_url, monkeypatch):
    assert metrics.migrate() == SCHEMA_VERSION == 3
    # forget that this process migrated, as a second step process would
    monkeypatch.setattr(metrics_store_module, "_MIGRATED", set())
    assert MetricsStore(sqlite_url).migrate() == 3
    assert metrics.schema_version() == 3
    with metrics.engine.connect() as conn:
        versions = [v for (v,) in conn.execute(sa.text("SELECT version FROM predcheck_schema ORDER BY id"))]
        assert versions == [v for v, _ in metrics_store_module.MIGRATIONS]  # each applied once
        tables = set(sa.inspect(conn).get_table_names())
    assert {"step_runs", "step_samples", "predictions", "checkpoint_requests", "checkpoints", "resumes"} <= tables


def test_first_use_from_racing_threads_finds_every_table(tmp_path):
    """The sampler thread and the step's thread both touch a fresh store first: neither may see a
    half-migrated schema (before the fix, most rounds raised "no such table")."""
    failures = []
    for round_ in range(10):
        url = f"sqlite:///{tmp_path}/race-{round_}.db"
        store = MetricsStore(url)
        barrier = threading.Barrier(4)

        def first_use(store=store, barrier=barrier):
            barrier.wait()
            try:
                store.samples("r", "s")
                store.pending_request("r", "s")
                store.checkpoints()
            except MetricsStoreUnavailableError as e:
                failures.append(e)

        workers = [threading.Thread(target=first_use) for _ in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(timeout=30)
        metrics_store_module._ENGINES.pop(url).dispose()
        metrics_store_module._MIGRATED.discard(url)
    assert failures == []


def test_constructing_a_store_does_no_io(tmp_path):
    MetricsStore(f"sqlite:///{tmp_path}/sub/never.db")
    assert not (tmp_path / "sub").exists()


# ---- step attempts ----------------------------------------------------------------------------
def test_record_step_run_refuses_duplicates(metrics):
    assert metrics.record_step_run(step_run("r1", stage_durations={"load": 1.5}, peak_rss_bytes=5_000_000_000))
    assert not metrics.record_step_run(step_run("r1", outcome="failure"))
    assert metrics.record_step_run(step_run("r1", attempt=2, ended=T0 + 20, outcome="failure"))
    rows = metrics.step_runs(job="etl", step_key="crunch")
    assert [(r["attempt"], r["outcome"]) for r in rows] == [(1, "success"), (2, "failure")]
    assert rows[0]["stage_durations"] == '{"load": 1.5}'
    assert rows[0]["peak_rss_bytes"] == 5_000_000_000
    assert metrics.has_step_run("r1", "crunch")
    assert not metrics.has_step_run("r1", "other")


def test_step_runs_are_oldest_first_and_limited_to_the_newest(metrics):
    for i in (3, 1, 4, 0, 2):
        metrics.record_step_run(step_run(f"r{i}", ended=T0 + i))
    assert [r["run_id"] for r in metrics.step_runs()] == ["r0", "r1", "r2", "r3", "r4"]
    assert [r["run_id"] for r in metrics.step_runs(limit=2)] == ["r3", "r4"]
    assert [r["run_id"] for r in metrics.step_runs(ended_before=T0 + 2)] == ["r0", "r1"]
    assert metrics.step_runs(job="other") == []


# ---- samples ----------------------------------------------------------------------------------
def test_recent_samples_returns_the_newest_k_per_step_oldest_first(metrics):
    metrics.add_samples(samples_of("r1", "a", 20) + samples_of("r1", "b", 5) + samples_of("r2", "a", 3))
    metrics.add_samples([])

    got = metrics.recent_samples([("r1", "a"), ("r2", "a"), ("r3", "a")], per_step=4)

    assert set(got) == {("r1", "a"), ("r2", "a"), ("r3", "a")}
    assert [s["elapsed_s"] for s in got[("r1", "a")]] == [16.0, 17.0, 18.0, 19.0]
    assert [s["elapsed_s"] for s in got[("r2", "a")]] == [0.0, 1.0, 2.0]
    assert got[("r3", "a")] == []
    assert metrics.recent_samples([]) == {}
    assert len(metrics.recent_samples([("r1", "a")])[("r1", "a")]) == 12
    assert [s["elapsed_s"] for s in metrics.samples("r1", "b")] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert {k: len(v) for k, v in metrics.all_samples().items()} == {("r1", "a"): 20, ("r1", "b"): 5,
                                                                      ("r2", "a"): 3}


# ---- predictions and checkpoint requests ------------------------------------------------------
def test_predictions_store_features_as_json(metrics):
    metrics.add_predictions([{"ts": T0, "run_id": "r1", "step_key": "a", "job": "etl", "served_by": "model",
                              "failure_probability": 0.7, "decision": "checkpoint", "features": {"x": 1.0}}])
    metrics.add_predictions([])
    (row,) = metrics.predictions(run_id="r1")
    assert (row["failure_probability"], row["decision"], row["features"]) == (0.7, "checkpoint", '{"x": 1.0}')
    assert metrics.predictions(run_id="r2") == []


def test_latest_prediction_per_step(metrics):
    row = {"run_id": "r1", "job": "etl", "served_by": "model", "decision": "none", "features": {"x": 1.0}}
    metrics.add_predictions([{**row, "ts": T0 + t, "step_key": step, "failure_probability": p}
                             for t, step, p in [(2, "a", 0.2), (1, "a", 0.1), (3, "b", 0.3)]])
    latest = metrics.latest_predictions([("r1", "a"), ("r1", "b"), ("r1", "none"), ("r2", "a")])
    assert {key: r["failure_probability"] for key, r in latest.items()} == {("r1", "a"): 0.2, ("r1", "b"): 0.3}
    assert "features" not in latest[("r1", "a")]


def test_only_one_checkpoint_request_is_pending_at_a_time(metrics):
    prediction = {"failure_probability": 0.9, "predicted_remaining_s": 30.0}
    assert metrics.pending_request("r1", "a") is None
    assert metrics.request_checkpoint("r1", "a", prediction)
    assert not metrics.request_checkpoint("r1", "a", {"failure_probability": 0.99})
    assert metrics.request_checkpoint("r1", "b", None)  # another step is independent

    pending = metrics.pending_request("r1", "a")
    assert pending["prediction"] == prediction
    assert pending["honored_at"] is None
    metrics.honor_request(pending["id"], "etl/r1/a/ckpt-000001")

    assert metrics.pending_request("r1", "a") is None
    (honored,) = [r for r in metrics.checkpoint_requests(run_id="r1") if r["step_key"] == "a"]
    assert honored["checkpoint_id"] == "etl/r1/a/ckpt-000001"
    assert honored["honored_at"] is not None
    assert metrics.request_checkpoint("r1", "a", None)
    assert metrics.pending_request("r1", "a")["prediction"] is None


# ---- checkpoints ------------------------------------------------------------------------------
def test_mean_checkpoint_cost_default_and_measured(metrics):
    assert metrics.mean_checkpoint_cost("etl", "a", default=0.05) == 0.05
    for seq, write_s in enumerate((0.1, 0.2, 0.6), start=1):
        metrics.record_checkpoint({"checkpoint_id": f"etl/r1/a/ckpt-{seq:06d}", "run_id": "r1",
                                   "root_run_id": "r1", "job": "etl", "step_key": "a", "seq": seq,
                                   "kind": "periodic", "created_at": T0 + seq, "nbytes": 10, "write_s": write_s,
                                   "prediction": {"failure_probability": 0.5}})
    assert metrics.mean_checkpoint_cost("etl", "a", default=0.05) == pytest.approx(0.3)
    assert metrics.mean_checkpoint_cost("etl", "b", default=7.0) == 7.0
    assert [c["seq"] for c in metrics.checkpoints(root_run_id="r1")] == [1, 2, 3]
    assert metrics.checkpoints(run_id="r1")[0]["prediction"] == '{"failure_probability": 0.5}'


# ---- resumes ----------------------------------------------------------------------------------
def test_claim_resume_is_true_exactly_once(metrics):
    assert metrics.claim_resume("parent-1", "root", "etl")
    assert not metrics.claim_resume("parent-1", "root", "etl")
    assert metrics.claim_resume("parent-2", "root", "etl")
    metrics.finish_resume("parent-1", "launched", new_run_id="child-1", plan={"parent_run_id": "parent-1"})
    rows = {r["parent_run_id"]: r for r in metrics.resumes(root_run_id="root")}
    assert (rows["parent-1"]["status"], rows["parent-1"]["new_run_id"]) == ("launched", "child-1")
    assert rows["parent-2"]["status"] == "claimed"


def test_claim_resume_from_racing_threads(metrics):
    metrics.migrate()
    results = claim_race(metrics, "parent-race")
    assert sorted(results) == [False] * 7 + [True]


# ---- unreachable store ------------------------------------------------------------------------
def test_an_unreachable_store_names_the_url_and_the_fix():
    store = MetricsStore(UNREACHABLE_STORE_URL)
    message = (rf"^metrics store {re.escape(repr(UNREACHABLE_STORE_URL))} is unreachable or not writable "
               r"\(OperationalError: .+\)\. Check that the database is running and the URL "
               r"\(predcheck resource `store_url`\) is right\.$")
    with pytest.raises(MetricsStoreUnavailableError, match=message):
        store.schema_version()
    with pytest.raises(ConnectionError, match=message):
        store.record_step_run(step_run("r1"))


def test_an_unreachable_store_does_not_show_its_password():
    store = MetricsStore("postgresql+psycopg2://nobody:s3cret-pw@127.0.0.1:1/none")
    with pytest.raises(MetricsStoreUnavailableError,
                       match=r"^metrics store 'postgresql\+psycopg2://nobody:\*\*\*@127\.0\.0\.1:1/none'") as info:
        store.pending_request("r", "s")
    assert "s3cret-pw" not in str(info.value)


# ---- PostgreSQL -------------------------------------------------------------------------------
@pytest.mark.postgres
def test_postgres_store(pg_url):
    store = MetricsStore(pg_url)
    run, job = f"run-{uuid.uuid4().hex}", f"job_{uuid.uuid4().hex[:12]}"
    try:
        assert store.migrate() == SCHEMA_VERSION
        assert store.schema_version() == SCHEMA_VERSION

        assert store.record_step_run(step_run(run, job=job, peak_rss_bytes=6_000_000_000))
        assert not store.record_step_run(step_run(run, job=job))
        assert [r["peak_rss_bytes"] for r in store.step_runs(job=job)] == [6_000_000_000]

        store.add_samples(samples_of(run, "crunch", 15) + samples_of(run, "other", 2))
        got = store.recent_samples([(run, "crunch")], per_step=3)
        assert list(got) == [(run, "crunch")]
        assert [s["elapsed_s"] for s in got[(run, "crunch")]] == [12.0, 13.0, 14.0]

        awkward = [{"run_id": run, "step_key": "copy", "ts": T0 + i, "elapsed_s": float(i), "cpu_s": None,
                    "rss_bytes": 7_000_000_000, "read_bytes": None, "write_bytes": 0, "stage": stage,
                    "work_units": None, "input_bytes": None}
                   for i, stage in enumerate([None, "", 'a,"quoted" stage', "line\nbreak", "\\N"])]
        store.add_samples(awkward)  # PostgreSQL: one COPY; NULLs, empty strings and CSV specials survive
        back = store.samples(run, "copy")
        assert [(s["stage"], s["cpu_s"], s["rss_bytes"], s["write_bytes"]) for s in back] == [
            (a["stage"], None, 7_000_000_000, 0) for a in awkward]

        assert store.request_checkpoint(run, "crunch", {"failure_probability": 0.9})
        assert not store.request_checkpoint(run, "crunch", None)
        store.honor_request(store.pending_request(run, "crunch")["id"], f"{job}/{run}/crunch/ckpt-000001")
        assert store.pending_request(run, "crunch") is None

        assert store.mean_checkpoint_cost(job, "crunch", default=0.25) == 0.25
        store.record_checkpoint({"checkpoint_id": f"{job}/{run}/crunch/ckpt-000001", "run_id": run,
                                 "root_run_id": run, "job": job, "step_key": "crunch", "seq": 1,
                                 "kind": "preemptive", "created_at": T0, "nbytes": 3, "write_s": 0.125})
        assert store.mean_checkpoint_cost(job, "crunch", default=0.25) == pytest.approx(0.125)

        assert sorted(claim_race(store, f"parent-{run}")) == [False] * 7 + [True]
    finally:
        with store.engine.begin() as conn:
            for table, column in (("step_runs", "run_id"), ("step_samples", "run_id"),
                                  ("checkpoint_requests", "run_id"), ("checkpoints", "run_id")):
                conn.execute(sa.text(f"DELETE FROM {table} WHERE {column} = :run"), {"run": run})
            conn.execute(sa.text("DELETE FROM resumes WHERE parent_run_id = :p"), {"p": f"parent-{run}"})


# ---- schema version 2: the profiler's columns -------------------------------------------------
def _create_version_1(url: str) -> None:
    """A database as schema version 1 left it: step_runs without the version 2 columns."""
    v2 = {name for name, _ in metrics_store_module.STEP_RUNS_V2_COLUMNS}
    old = sa.MetaData()
    for table in metrics_store_module.metadata.sorted_tables:
        columns = [sa.Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable,
                             autoincrement=c.autoincrement)
                   for c in table.columns if not (table.name == "step_runs" and c.name in v2)]
        sa.Table(table.name, old, *columns)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        old.create_all(conn)
        conn.execute(sa.text("INSERT INTO predcheck_schema (version, migrated_at) VALUES (1, 0)"))
        conn.execute(sa.text("INSERT INTO step_runs (run_id, root_run_id, job, step_key, attempt, started_at, "
                             "ended_at, duration_s, outcome, cpu_s) VALUES ('old', 'old', 'etl', 'crunch', 1, 0, 10, "
                             "10, 'success', 2.5)"))
    engine.dispose()


def _migrates_version_1(url: str) -> None:
    _create_version_1(url)
    store = MetricsStore(url)
    assert store.migrate() == SCHEMA_VERSION == 3
    assert store.schema_version() == 3
    with store.engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("step_runs")}
    assert {name for name, _ in metrics_store_module.STEP_RUNS_V2_COLUMNS} <= columns
    profile = {"dagster/compute": {"wall_s": 9.5, "cpu_user_s": 2.0}}
    assert store.record_step_run(step_run("new", cpu_user_s=2.0, cpu_system_s=0.5, error_fingerprint="ab" * 20,
                                          executor="multiprocess", deadline_s=60.0, stage_profile=profile,
                                          netns_recv_bytes=10, netns_sent_bytes=20, samples_dropped=3,
                                          profiler_errors=0))
    old, new = store.step_runs(job="etl")
    assert (old["run_id"], old["cpu_s"], old["cpu_user_s"], old["samples_dropped"]) == ("old", 2.5, None, None)
    assert (new["cpu_user_s"], new["cpu_system_s"], new["executor"], new["samples_dropped"]) == (
        2.0, 0.5, "multiprocess", 3)
    assert json.loads(new["stage_profile"]) == profile


def test_a_version_1_database_gains_the_profiler_columns(sqlite_url):
    _migrates_version_1(sqlite_url)


@pytest.mark.postgres
def test_a_version_1_postgres_database_gains_the_profiler_columns(fresh_pg_url):
    try:
        _migrates_version_1(fresh_pg_url)
    finally:
        engine = metrics_store_module._ENGINES.pop(fresh_pg_url, None)
        if engine is not None:
            engine.dispose()
        metrics_store_module._MIGRATED.discard(fresh_pg_url)
# ---- the sensor's queries: newest k per key, from the index --------------------------------------
def test_latest_per_key_queries_on_each_backend(empty_store_url):
    store = MetricsStore(empty_store_url)
    keys = [(f"run-{i:03d}", "crunch") for i in range(450)]  # more than one SQLite chunk
    store.add_samples([row for run, step in keys for row in samples_of(run, step, 5)]
                      + samples_of("run-000", "other", 30))
    got = store.recent_samples([*keys, ("run-000", "other"), ("absent", "crunch")], per_step=3)
    assert len(got) == 452
    assert all([s["elapsed_s"] for s in got[k]] == [2.0, 3.0, 4.0] for k in keys)
    assert [s["elapsed_s"] for s in got[("run-000", "other")]] == [27.0, 28.0, 29.0]
    assert got[("absent", "crunch")] == []

    # the same samples as arrays (what the sensor scores from), row i = key i, newest right-aligned
    asked = [keys[0], ("absent", "crunch"), ("run-000", "other"), keys[0]]
    block = store.recent_sample_block(asked, per_step=3, fields=("elapsed_s", "cpu_s", "rss_bytes", "work_units"))
    assert block.counts.tolist() == [3, 0, 3, 3]
    assert [block.samples(i) for i in range(4)] == [
        [{k: s[k] for k in ("elapsed_s", "cpu_s", "rss_bytes", "work_units", "stage")} for s in got[key]]
        for key in asked]
    assert np.isnan(block.column("work_units")).all()  # NULL in the store
    stages = [dict(s, stage=("load" if s["elapsed_s"] < 28 else None)) for s in samples_of("staged", "a", 30)]
    store.add_samples(stages)
    staged = store.recent_sample_block([("staged", "a")], per_step=4)
    assert [s["stage"] for s in staged.samples(0)] == ["load", "load", None, None]
    assert staged.stage_codes[0].tolist() == [1, 1, 0, 0] and staged.stage_names == ["load"]
    with pytest.raises(ValueError, match="no column"):
        store.recent_sample_block(keys[:1], fields=("elapsed_s", "nonsense"))
    assert store.recent_sample_block([]).values.shape == (0, 12, 5)

    for i, ended in enumerate([T0 + 5, T0 + 1, T0 + 5, T0 + 3]):  # a tie on ended_at: id breaks it
        store.record_step_run(step_run(f"h{i}", ended=ended))
    store.record_step_run(step_run("other-step", step_key="load", ended=T0 + 9))
    histories = store.step_histories([("etl", "crunch"), ("etl", "load"), ("etl", "none")], per_step=3)
    assert [r["run_id"] for r in histories[("etl", "crunch")]] == ["h3", "h0", "h2"]  # oldest first
    assert [r["run_id"] for r in histories[("etl", "load")]] == ["other-step"]
    assert histories[("etl", "none")] == []


def test_the_sensor_sample_query_walks_the_natural_key_index(empty_store_url):
    """One backward index walk per step, never a scan and sort of the steps' whole histories."""
    store = MetricsStore(empty_store_url)
    store.add_samples(samples_of("r1", "a", 50) + samples_of("r2", "a", 50))
    if store.engine.dialect.name == "postgresql":
        with store.engine.begin() as conn:  # the tables are tiny: make the planner show the indexed plan
            conn.execute(sa.text("ALTER DATABASE " + empty_store_url.rsplit("/", 1)[1] + " SET enable_seqscan = off"))
        store.engine.dispose()
    plan = store.explain_recent_samples([("r1", "a"), ("r2", "a")], per_step=12)
    if store.engine.dialect.name == "postgresql":
        assert "Function Scan on wanted" in plan
        assert "Limit" in plan
        assert "Index Scan Backward using uq_step_samples_run_step_ts on step_samples" in plan
        assert "Sort" not in plan
    else:
        assert plan.count("SEARCH step_samples USING INDEX uq_step_samples_run_step_ts (run_id=? AND step_key=?)") == 2
        assert "TEMP B-TREE" not in plan


# ---- migrations ---------------------------------------------------------------------------------
V3_INDEXES = {"step_samples": {"uq_step_samples_run_step_ts"},
              "step_runs": {"ix_step_runs_job_step_end_id"},
              "checkpoints": {"ix_checkpoints_job_step_id", "ix_checkpoints_run_step_created"}}
V1_ONLY_INDEXES = {"ix_step_samples_run_step_ts", "ix_step_runs_job_step_end", "ix_checkpoints_job_step"}


def index_names(conn, table: str) -> set[str]:
    return {ix["name"] for ix in sa.inspect(conn).get_indexes(table)}


def test_migrating_an_empty_database(empty_store_url):
    store = MetricsStore(empty_store_url)
    assert store.migrate() == SCHEMA_VERSION
    with store.engine.connect() as conn:
        assert [v for (v,) in conn.execute(sa.text("SELECT version FROM predcheck_schema ORDER BY id"))] == [1, 2, 3]
        for table, names in V3_INDEXES.items():
            assert names <= index_names(conn, table)
            assert not (index_names(conn, table) & V1_ONLY_INDEXES)
        assert "dropped_samples" in {c["name"] for c in sa.inspect(conn).get_columns("step_samples")}
        unique = {ix["name"]: ix["unique"] for ix in sa.inspect(conn).get_indexes("step_samples")}
        assert unique["uq_step_samples_run_step_ts"]


def build_v1_database(url: str) -> None:
    """A database as version 1 left it: its DDL, a row in every table, a sample stored twice."""
    from . import schema_v1

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        schema_v1.metadata.create_all(conn)
        conn.execute(schema_v1.schema_info.insert().values(version=1, migrated_at=T0))
        conn.execute(schema_v1.step_runs.insert(), [step_run("v1-run", stage_durations='{"load": 2.0}',
                                                             peak_rss_bytes=5_000_000_000)])
        samples = samples_of("v1-run", "crunch", 4)
        conn.execute(schema_v1.step_samples.insert(), samples + [samples[1]])  # v1 had no key: a copy
        conn.execute(schema_v1.predictions.insert().values(
            ts=T0, run_id="v1-run", step_key="crunch", job="etl", served_by="model", failure_probability=0.4,
            decision="none", features='{"x": 1.0}'))
        conn.execute(schema_v1.checkpoint_requests.insert().values(run_id="v1-run", step_key="crunch",
                                                                  requested_at=T0))
        conn.execute(schema_v1.checkpoints.insert().values(
            checkpoint_id="etl/v1-run/crunch/ckpt-000001", run_id="v1-run", root_run_id="v1-run", job="etl",
            step_key="crunch", seq=1, kind="periodic", created_at=T0, nbytes=10, write_s=0.2))
        conn.execute(schema_v1.resumes.insert().values(parent_run_id="v1-parent", root_run_id="v1-run", job="etl",
                                                       claimed_at=T0, status="launched"))
    engine.dispose()


def test_migrating_a_version_1_database_keeps_its_data(empty_store_url):
    build_v1_database(empty_store_url)
    store = MetricsStore(empty_store_url)

    assert store.migrate() == SCHEMA_VERSION
    assert store.schema_version() == 3
    with store.engine.connect() as conn:
        assert [v for (v,) in conn.execute(sa.text("SELECT version FROM predcheck_schema ORDER BY id"))] == [1, 2, 3]
        for table, names in V3_INDEXES.items():
            assert names <= index_names(conn, table)
            assert not (index_names(conn, table) & V1_ONLY_INDEXES)
        assert {name for name, _ in metrics_store_module.STEP_RUNS_V2_COLUMNS} <= {
            c["name"] for c in sa.inspect(conn).get_columns("step_runs")}
    [run] = store.step_runs(job="etl")
    assert (run["run_id"], run["stage_durations"], run["peak_rss_bytes"]) == ("v1-run", '{"load": 2.0}',
                                                                               5_000_000_000)
    samples = store.samples("v1-run", "crunch")
    assert [(s["id"], s["elapsed_s"], s["dropped_samples"]) for s in samples] == [
        (1, 0.0, None), (2, 1.0, None), (3, 2.0, None), (4, 3.0, None)]  # the later copy (id 5) is gone
    assert [p["features"] for p in store.predictions("v1-run")] == ['{"x": 1.0}']
    assert store.pending_request("v1-run", "crunch")["requested_at"] == T0
    assert [c["checkpoint_id"] for c in store.checkpoints(run_id="v1-run")] == ["etl/v1-run/crunch/ckpt-000001"]
    assert store.mean_checkpoint_cost("etl", "crunch", default=0.0) == pytest.approx(0.2)
    assert [r["status"] for r in store.resumes(root_run_id="v1-run")] == ["launched"]
    # the new key holds: writing the same sample again stores nothing
    store.add_samples(samples_of("v1-run", "crunch", 6))
    assert [s["elapsed_s"] for s in store.samples("v1-run", "crunch")] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_migration_merged_later_with_a_lower_number_still_runs(sqlite_url, monkeypatch):
    """Branches number their migrations independently (store: 3, profiler: 2): a database already
    at 3 (main before the merge) must still get 2 once both are merged."""
    merged = list(metrics_store_module.MIGRATIONS)
    assert [v for v, _ in merged] == [1, 2, 3]
    monkeypatch.setattr(metrics_store_module, "MIGRATIONS", [m for m in merged if m[0] != 2])
    store = MetricsStore(sqlite_url)
    store.migrate()
    ran = []

    def migrate_to_2(conn):
        ran.append(2)
        metrics_store_module._migrate_to_2(conn)

    monkeypatch.setattr(metrics_store_module, "MIGRATIONS", [(v, migrate_to_2 if v == 2 else f) for v, f in merged])
    metrics_store_module._MIGRATED.discard(sqlite_url)
    store.migrate()
    metrics_store_module._MIGRATED.discard(sqlite_url)
    store.migrate()
    assert ran == [2]
    with store.engine.connect() as conn:
        assert [v for (v,) in conn.execute(sa.text("SELECT version FROM predcheck_schema ORDER BY id"))] == [1, 3, 2]
        columns = {c["name"] for c in sa.inspect(conn).get_columns("step_runs")}
    assert {name for name, _ in metrics_store_module.STEP_RUNS_V2_COLUMNS} <= columns


# ---- the spool: records survive an unreachable store, and are written once --------------------------
def blocked_sqlite_url(tmp_path) -> tuple[str, object]:
    """A SQLite URL whose directory is a file: unreachable until ``unblock()``."""
    blocker = tmp_path / "db"
    blocker.write_text("not a directory")

    def unblock() -> None:
        blocker.unlink()
        metrics_store_module._DOWN.clear()  # as if STORE_RETRY_S had passed

    return f"sqlite:///{tmp_path}/db/metrics.db", unblock


def spooled_rows(store: MetricsStore) -> list[tuple[str, int]]:
    import json

    return [(line["kind"], len(line["rows"])) for path in store.spool.files()
            for line in map(json.loads, open(path).read().splitlines())]


def test_an_unreachable_store_spools_and_a_flush_writes_every_record_once(tmp_path):
    url, unblock = blocked_sqlite_url(tmp_path)
    store = MetricsStore(url, spool_dir=str(tmp_path / "spool"))

    assert store.write_samples(samples_of("r1", "crunch", 3)) == "spooled"
    assert store.write_samples(samples_of("r1", "crunch", 5)[3:]) == "spooled"
    assert store.write_step_run(step_run("r1", stage_durations={"load": 1.0})) == "spooled"
    assert spooled_rows(store) == [("samples", 3), ("samples", 2), ("step_run", 1)]
    assert (tmp_path / "spool" / os.path.basename(store.spool.directory) / "STORE").read_text() == url + "\n"
    with pytest.raises(MetricsStoreUnavailableError):
        MetricsStore(url).write_samples(samples_of("r1", "crunch", 1))  # no spool: the caller is told

    unblock()
    report = store.flush_spool()
    assert (report.files, report.samples, report.step_runs, report.left_files) == (1, 5, 1, 0)
    assert [s["elapsed_s"] for s in store.samples("r1", "crunch")] == [0.0, 1.0, 2.0, 3.0, 4.0]
    [run] = store.step_runs(run_id="r1")
    assert run["stage_durations"] == '{"load": 1.0}'
    assert store.flush_spool().files == 0

    # the same records spooled again (a flush that died before deleting its file) change nothing
    store.spool.append("samples", samples_of("r1", "crunch", 5))
    store.spool.append("step_run", [dict(run, stage_durations='{"load": 1.0}')])
    assert store.flush_spool().samples == 5
    assert len(store.samples("r1", "crunch")) == 5 and len(store.step_runs(run_id="r1")) == 1
    assert store.write_step_run(step_run("r1")) == "duplicate"


def test_spooled_rows_of_other_versions_are_flushed(tmp_path, sqlite_url):
    """A spool written by an older version (no dropped_samples) or a newer one (a field this
    version's table lacks) mixes with this version's rows in one flush."""
    store = MetricsStore(sqlite_url, spool_dir=str(tmp_path / "spool"))
    old, new = samples_of("r1", "a", 2), samples_of("r1", "a", 4)[2:]
    for s in new:
        s.update(dropped_samples=3, cpu_user_s=0.5)
    store.spool.append("samples", old + new)
    assert store.flush_spool().samples == 4
    assert [(s["elapsed_s"], s["dropped_samples"]) for s in store.samples("r1", "a")] == [
        (0.0, None), (1.0, None), (2.0, 3), (3.0, 3)]


def test_a_flush_interrupted_between_chunks_is_repeated_without_duplicates(tmp_path, monkeypatch):
    url, unblock = blocked_sqlite_url(tmp_path)
    store = MetricsStore(url, spool_dir=str(tmp_path / "spool"))
    for start in range(0, 12_000, 1000):
        store.write_samples([{**s, "ts": T0 + start + i} for i, s in enumerate(samples_of("r1", "a", 1000))])
    unblock()

    real, calls = metrics_store_module._insert_ignoring_duplicates, []

    def dies_on_the_second_chunk(conn, table, rows):
        calls.append(len(rows))
        if len(calls) == 2:
            raise sa.exc.OperationalError("INSERT", None, Exception("server closed the connection unexpectedly"))
        real(conn, table, rows)

    monkeypatch.setattr(metrics_store_module, "_insert_ignoring_duplicates", dies_on_the_second_chunk)
    report = store.flush_spool()
    assert report.files == 0 and report.samples == 5000 and report.left_files == 1
    assert "server closed the connection unexpectedly" in report.errors[0]
    metrics_store_module._DOWN.clear()
    assert len(store.samples("r1", "a")) == 5000
    assert store.flush_spool().samples == 12_000
    assert len(store.samples("r1", "a")) == 12_000
    assert store.spool.files() == []


def test_after_a_failure_calls_fail_fast_for_a_while(monkeypatch):
    store = MetricsStore(UNREACHABLE_STORE_URL)
    with pytest.raises(MetricsStoreUnavailableError) as first:
        store.pending_request("r", "s")

    def must_not_connect(self):
        raise AssertionError("connected again inside the fail-fast window")

    monkeypatch.setattr(MetricsStore, "migrate", must_not_connect)
    with pytest.raises(MetricsStoreUnavailableError) as second:
        store.record_step_run(step_run("r1"))
    assert str(second.value) == str(first.value)
    monkeypatch.setattr(metrics_store_module, "STORE_RETRY_S", 0.0)
    metrics_store_module._DOWN.clear()
    with pytest.raises(AssertionError, match="connected again"):
        store.pending_request("r", "s")  # the window is over: the next call tries the store again


def test_the_next_successful_write_flushes_other_processes_spools_in_the_background(tmp_path, sqlite_url):
    store = MetricsStore(sqlite_url, spool_dir=str(tmp_path / "spool"))
    left_behind = Path(store.spool.directory)
    left_behind.mkdir(parents=True)
    (left_behind / "otherhost-4242-0a0a0a0a.jsonl").write_text(  # a process that exited while the store was down
        json.dumps({"kind": "step_run", "rows": [step_run("r-exited")]}) + "\n"
        + json.dumps({"kind": "samples", "rows": samples_of("r-exited", "crunch", 4)}) + "\n")

    assert store.write_samples(samples_of("r-live", "crunch", 1)) == "stored"

    deadline = time.monotonic() + 10
    while store.spool.files() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert store.spool.files() == []
    assert len(store.samples("r-exited", "crunch")) == 4
    assert [r["run_id"] for r in store.step_runs(run_id="r-exited")] == ["r-exited"]


@pytest.mark.postgres
def test_postgres_copy_of_a_batch_stored_before_skips_what_is_there(pg_url):
    store, run = MetricsStore(pg_url), f"run-{uuid.uuid4().hex}"
    store.add_samples(samples_of(run, "a", 3))
    store.add_samples(samples_of(run, "a", 6))  # a retried batch overlapping the stored one: COPY refuses, rows go
    assert [s["elapsed_s"] for s in store.samples(run, "a")] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]


# ---- retention: compaction --------------------------------------------------------------------------
NOW = T0 + 30 * 24 * 3600
DAY = 24 * 3600.0
OLD = (NOW - 10 * DAY) // 60 * 60  # a multiple of 60: the minute windows start at OLD, OLD + 60, ...


def seed_for_compaction(store: MetricsStore) -> None:
    """Four steps with a sample a second for 5 minutes: ended 10 days ago (twice: a retry), ended 1 hour
    ago, still running (no record), and ended 10 days ago in another run."""
    def stream(run: str, step: str, start: float) -> list[dict]:
        return [{"run_id": run, "step_key": step, "ts": start + i, "elapsed_s": float(i), "rss_bytes": i}
                for i in range(300)]

    old, recent = OLD, NOW - 3600
    store.record_step_run(step_run("old", ended=old - 250, outcome="failure"))
    store.record_step_run(step_run("old", attempt=2, ended=old + 300))
    store.record_step_run(step_run("old-2", step_key="load", ended=old + 300))
    store.record_step_run(step_run("recent", ended=recent + 300))
    store.add_samples(stream("old", "crunch", old) + stream("old-2", "load", old) + stream("recent", "crunch", recent)
                      + stream("running", "crunch", NOW - 300))


def test_compaction_keeps_one_sample_per_window_of_finished_steps(empty_store_url):
    store = MetricsStore(empty_store_url)
    seed_for_compaction(store)
    progress = []

    report = store.compact(older_than_s=7 * DAY, keep_every_s=60, now=NOW, batch_steps=1,
                           progress=lambda done, total: progress.append((done, total)))

    expected = [OLD + w * 60 for w in range(5)] + [OLD + 299]  # first of each minute, and the last sample
    for run, step in (("old", "crunch"), ("old-2", "load")):
        assert [s["ts"] for s in store.samples(run, step)] == expected
    assert len(store.samples("recent", "crunch")) == 300  # ended 1 h ago: younger than 7 days
    assert len(store.samples("running", "crunch")) == 300  # in flight: never touched
    assert (report.deleted, report.groups, report.total_groups, report.batches, report.finished) == (
        2 * 294, 2, 2, 2, True)
    assert progress == [(1, 2), (2, 2)]
    assert report.message().startswith("compaction: deleted 588 sample(s) of 2/2 finished step(s) in 2 batch(es)")

    again = store.compact(older_than_s=7 * DAY, keep_every_s=60, now=NOW)
    assert again.deleted == 0  # idempotent

    everything = store.compact(older_than_s=0, keep_every_s=0, now=NOW)  # retention only: delete them all
    assert everything.deleted == 12 + 300
    assert set(store.all_samples()) == {("running", "crunch")}


def test_compaction_stops_at_its_time_budget(empty_store_url):
    store = MetricsStore(empty_store_url)
    seed_for_compaction(store)
    report = store.compact(older_than_s=7 * DAY, keep_every_s=60, now=NOW, budget_s=0.0)
    assert (report.finished, report.deleted, report.batches) == (False, 0, 0)
    assert report.message().endswith("time budget reached, the next run continues")
    assert store.compact(older_than_s=7 * DAY, keep_every_s=60, now=NOW).deleted == 588


# ---- the Dagster instance's PostgreSQL as the default store -----------------------------------------
def test_the_instance_postgres_url_is_used_with_the_psycopg2_driver():
    from types import SimpleNamespace

    from predcheck_dagster.resource import PredcheckResource, instance_store_url

    def instance(run_url=None, event_url=None):
        return SimpleNamespace(run_storage=SimpleNamespace(postgres_url=run_url) if run_url else object(),
                               event_log_storage=SimpleNamespace(postgres_url=event_url) if event_url else object())

    assert instance_store_url(instance("postgresql://u:p%40ss@db:5432/dagster?sslmode=require")) == \
        "postgresql+psycopg2://u:p%40ss@db:5432/dagster?sslmode=require"
    assert instance_store_url(instance(event_url="postgresql+psycopg2://u@db/events")) == \
        "postgresql+psycopg2://u@db/events"
    assert instance_store_url(instance()) is None  # SQLite storage: no postgres_url

    pg = instance("postgresql+psycopg2://u@db:5432/dagster")
    assert PredcheckResource().metrics_store(pg).url == "postgresql+psycopg2://u@db:5432/dagster"
    assert PredcheckResource(store_url="sqlite:////x/m.db").metrics_store(pg).url == "sqlite:////x/m.db"
    assert PredcheckResource().metrics_store(instance()).url.endswith("/predcheck/metrics.db")
    assert PredcheckResource().metrics_store().url.endswith("/predcheck/metrics.db")


def test_recent_samples_of_chosen_columns(empty_store_url):
    store = MetricsStore(empty_store_url)
    store.add_samples(samples_of("r1", "a", 5))
    got = store.recent_samples([("r1", "a")], per_step=2, columns=("elapsed_s", "rss_bytes"))
    assert got[("r1", "a")] == [{"run_id": "r1", "step_key": "a", "elapsed_s": 3.0, "rss_bytes": 1003},
                                {"run_id": "r1", "step_key": "a", "elapsed_s": 4.0, "rss_bytes": 1004}]
