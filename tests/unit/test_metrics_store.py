"""The metrics store on SQLite (a temporary file) and PostgreSQL (127.0.0.1:5432/test)."""

from __future__ import annotations

import json
import re
import threading
import uuid

import pytest
import sqlalchemy as sa

from predcheck_dagster import metrics_store as metrics_store_module
from predcheck_dagster.errors import MetricsStoreUnavailableError
from predcheck_dagster.metrics_store import SCHEMA_VERSION, MetricsStore

from .store_urls import POSTGRES_URL, UNREACHABLE_STORE_URL

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
    assert metrics.migrate() == SCHEMA_VERSION == 2
    # forget that this process migrated, as a second step process would
    monkeypatch.setattr(metrics_store_module, "_MIGRATED", set())
    assert MetricsStore(sqlite_url).migrate() == 2
    assert metrics.schema_version() == 2
    with metrics.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM predcheck_schema")).scalar() == 2  # one row per version
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
def test_postgres_store():
    store = MetricsStore(POSTGRES_URL)
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
    assert store.migrate() == SCHEMA_VERSION == 2
    assert store.schema_version() == 2
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
