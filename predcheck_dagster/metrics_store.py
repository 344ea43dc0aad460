"""The metrics store: step attempts, live samples, predictions, checkpoints and resumes in SQL.

SQLite by default (``$DAGSTER_HOME/predcheck/metrics.db``), PostgreSQL by URL. SQLAlchemy Core
only (no ORM): imports in ~0.15 s, so the step side can use it.

Guarantees:
    - The schema is versioned; ``migrate()`` applies pending migrations in order and is idempotent
      (safe when several step processes start at once).
    - Every failure to reach the database is raised as MetricsStoreUnavailableError naming the URL
      (password redacted) and the fix; callers on the step side turn it into a logged warning.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.url import make_url

from predcheck_dagster.errors import MetricsStoreUnavailableError

SCHEMA_VERSION = 2
MIGRATION_ATTEMPTS = 5
MIGRATION_LOCK_KEY = 0x70726564  # "pred": the PostgreSQL advisory lock held while migrating
OUTCOMES = ("success", "failure", "crashed", "timeout")

metadata = sa.MetaData()

# step_runs columns added by schema version 2 (the event profiler, issue #3); docs/profiler.md says
# what each one measures.
STEP_RUNS_V2_COLUMNS: tuple[tuple[str, Any], ...] = (
    ("cpu_user_s", sa.Float),
    ("cpu_system_s", sa.Float),
    ("error_fingerprint", sa.String(40)),  # sha1 hex, predcheck_dagster.outcome.error_fingerprint
    ("executor", sa.String(255)),  # multiprocess | in_process | the executor definition's name
    ("deadline_s", sa.Float),  # the deadline that applied (op tag, else run tag), if any
    ("stage_profile", sa.Text),  # JSON {stage: {wall_s, cpu_user_s, cpu_system_s, read_bytes, ...}}
    ("netns_recv_bytes", sa.BigInteger),  # the network namespace's counters, not the process's
    ("netns_sent_bytes", sa.BigInteger),
    ("samples_dropped", sa.Integer),  # live samples taken but not stored
    ("profiler_errors", sa.Integer),  # errors inside the profiler (caught; the step was unaffected)
)

schema_info = sa.Table(
    "predcheck_schema", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("migrated_at", sa.Float, nullable=False),
)

step_runs = sa.Table(
    "step_runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("root_run_id", sa.String(64), nullable=False),
    sa.Column("job", sa.String(255), nullable=False),
    sa.Column("step_key", sa.String(255), nullable=False),
    sa.Column("partition_key", sa.String(255)),
    sa.Column("attempt", sa.Integer, nullable=False, default=1),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("ended_at", sa.Float, nullable=False),
    sa.Column("duration_s", sa.Float, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("error_class", sa.String(255)),
    sa.Column("error_message", sa.Text),
    sa.Column("stage_durations", sa.Text),  # JSON {stage: seconds}
    sa.Column("cpu_s", sa.Float),
    sa.Column("peak_rss_bytes", sa.BigInteger),
    sa.Column("mean_rss_bytes", sa.BigInteger),
    sa.Column("read_bytes", sa.BigInteger),
    sa.Column("write_bytes", sa.BigInteger),
    sa.Column("net_bytes", sa.BigInteger),
    sa.Column("input_bytes", sa.BigInteger),
    sa.Column("output_bytes", sa.BigInteger),
    sa.Column("work_units", sa.Float),
    sa.Column("code_version", sa.String(255)),
    sa.Column("host", sa.String(255)),
    sa.Column("measured_by", sa.String(32)),  # profiler | process | event_log
    *(sa.Column(name, type_) for name, type_ in STEP_RUNS_V2_COLUMNS),
    sa.UniqueConstraint("run_id", "step_key", "attempt", name="uq_step_runs_attempt"),
)
sa.Index("ix_step_runs_job_step_end", step_runs.c.job, step_runs.c.step_key, step_runs.c.ended_at)

step_samples = sa.Table(
    "step_samples", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("step_key", sa.String(255), nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("elapsed_s", sa.Float, nullable=False),
    sa.Column("cpu_s", sa.Float),
    sa.Column("rss_bytes", sa.BigInteger),
    sa.Column("read_bytes", sa.BigInteger),
    sa.Column("write_bytes", sa.BigInteger),
    sa.Column("stage", sa.String(255)),
    sa.Column("work_units", sa.Float),
    sa.Column("input_bytes", sa.BigInteger),
)
sa.Index("ix_step_samples_run_step_ts", step_samples.c.run_id, step_samples.c.step_key, step_samples.c.ts)

predictions = sa.Table(
    "predictions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("step_key", sa.String(255), nullable=False),
    sa.Column("job", sa.String(255), nullable=False),
    sa.Column("served_by", sa.String(32), nullable=False),  # model | heuristic
    sa.Column("model_uri", sa.String(512)),
    sa.Column("model_version", sa.String(64)),
    sa.Column("failure_probability", sa.Float, nullable=False),
    sa.Column("predicted_remaining_s", sa.Float),
    sa.Column("elapsed_s", sa.Float),
    sa.Column("decision", sa.String(32), nullable=False),  # checkpoint | none
    sa.Column("reason", sa.Text),
    sa.Column("features", sa.Text),  # JSON
)
sa.Index("ix_predictions_run_step_ts", predictions.c.run_id, predictions.c.step_key, predictions.c.ts)

checkpoint_requests = sa.Table(
    "checkpoint_requests", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("step_key", sa.String(255), nullable=False),
    sa.Column("requested_at", sa.Float, nullable=False),
    sa.Column("prediction", sa.Text),  # JSON Prediction
    sa.Column("honored_at", sa.Float),
    sa.Column("checkpoint_id", sa.String(1024)),
)
sa.Index("ix_checkpoint_requests_run_step", checkpoint_requests.c.run_id, checkpoint_requests.c.step_key)

checkpoints = sa.Table(
    "checkpoints", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("checkpoint_id", sa.String(1024), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("root_run_id", sa.String(64), nullable=False),
    sa.Column("job", sa.String(255), nullable=False),
    sa.Column("step_key", sa.String(255), nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("nbytes", sa.BigInteger, nullable=False),
    sa.Column("write_s", sa.Float, nullable=False),
    sa.Column("work_units", sa.Float),
    sa.Column("prediction", sa.Text),
)
sa.Index("ix_checkpoints_job_step", checkpoints.c.job, checkpoints.c.step_key)

resumes = sa.Table(
    "resumes", metadata,
    sa.Column("parent_run_id", sa.String(64), primary_key=True),  # the exactly-once claim
    sa.Column("root_run_id", sa.String(64), nullable=False),
    sa.Column("job", sa.String(255), nullable=False),
    sa.Column("claimed_at", sa.Float, nullable=False),
    sa.Column("new_run_id", sa.String(64)),
    sa.Column("status", sa.String(16), nullable=False),  # claimed | launched | failed
    sa.Column("detail", sa.Text),
    sa.Column("plan", sa.Text),
)


def _csv_field(value: Any) -> str:
    """One CSV field for COPY: None is the unquoted empty field (NULL), strings are always quoted
    (so an empty string stays one), numbers as Python writes them."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace('"', '""') + '"'


def _copy_rows(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """Bulk insert through PostgreSQL's COPY (an order of magnitude above row inserts)."""
    import io

    columns = [c.name for c in table.columns if c.name != "id"]
    buffer = io.StringIO("\n".join(",".join(_csv_field(row.get(c)) for c in columns) for row in rows) + "\n")
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.copy_expert(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", buffer)
    finally:
        cursor.close()


def _migrate_to_1(conn: Connection) -> None:
    metadata.create_all(conn, checkfirst=True)


def _migrate_to_2(conn: Connection) -> None:
    """step_runs gains the profiler's columns (a database created at version 1 lacks them)."""
    present = {c["name"] for c in sa.inspect(conn).get_columns("step_runs")}
    for name, type_ in STEP_RUNS_V2_COLUMNS:
        if name not in present:
            ddl = sa.schema.CreateColumn(sa.Column(name, type_)).compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE step_runs ADD COLUMN {ddl}"))


MIGRATIONS: Sequence[tuple[int, Callable[[Connection], None]]] = ((1, _migrate_to_1), (2, _migrate_to_2))

_ENGINES: dict[str, Engine] = {}
_MIGRATED: set[str] = set()
_LOCK = threading.Lock()
_MIGRATE_LOCK = threading.Lock()  # the sampler thread and the step's own thread migrate on first use


def redact_url(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL is shown as given, minus nothing secret
        return url.split("@")[-1]


def _engine_for(url: str) -> Engine:
    with _LOCK:
        engine = _ENGINES.get(url)
        if engine is None:
            if url.startswith("sqlite"):
                engine = sa.create_engine(url, connect_args={"timeout": 30})

                @sa.event.listens_for(engine, "connect")
                def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
                    cur = dbapi_conn.cursor()
                    cur.execute("PRAGMA journal_mode=WAL")
                    cur.execute("PRAGMA synchronous=NORMAL")
                    cur.close()
            else:
                engine = sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=4,
                                          connect_args={"connect_timeout": 5})
            _ENGINES[url] = engine
        return engine


class MetricsStore:
    """Typed access to the predcheck tables. Constructing one does no I/O.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:////abs/metrics.db`` or
            ``postgresql+psycopg2://user@127.0.0.1:5432/db``.
    """

    def __init__(self, url: str) -> None:
        self.url = url

    # ---- plumbing -----------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        return _engine_for(self.url)

    def _unavailable(self, e: Exception) -> MetricsStoreUnavailableError:
        return MetricsStoreUnavailableError(
            f"metrics store {redact_url(self.url)!r} is unreachable or not writable "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). Check that the "
            "database is running and the URL (predcheck resource `store_url`) is right."
        )

    def _run(self, fn: Callable[[Connection], Any], write: bool = True) -> Any:
        self.migrate()
        try:
            with (self.engine.begin() if write else self.engine.connect()) as conn:
                return fn(conn)
        except sa.exc.IntegrityError:
            raise
        except (sa.exc.OperationalError, sa.exc.InterfaceError, OSError) as e:
            raise self._unavailable(e) from e

    def migrate(self) -> int:
        """Bring the schema to SCHEMA_VERSION; returns the version now in force."""
        if self.url in _MIGRATED:
            return SCHEMA_VERSION
        with _MIGRATE_LOCK:
            return self._migrate_locked()

    def _migrate_locked(self) -> int:
        if self.url in _MIGRATED:
            return SCHEMA_VERSION
        if self.url.startswith("sqlite:///"):
            import os

            path = self.url[len("sqlite:///"):]
            if path and path != ":memory:":
                os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        last_error: Exception | None = None
        for attempt in range(MIGRATION_ATTEMPTS):
            try:
                with self.engine.begin() as conn:
                    if self.engine.dialect.name == "postgresql":  # serialise migrations across processes
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
                    self._apply_migrations(conn)
                break
            except (sa.exc.IntegrityError, sa.exc.OperationalError, sa.exc.ProgrammingError,
                    sa.exc.InterfaceError, OSError) as e:
                # Either the database is unreachable, or another process (SQLite has no advisory
                # lock) created the same tables first: probe, and retry only in the second case.
                try:
                    with self.engine.connect():
                        pass
                except (sa.exc.OperationalError, sa.exc.InterfaceError, OSError) as probe_error:
                    raise self._unavailable(probe_error) from probe_error
                last_error = e
                time.sleep(0.05 * (attempt + 1))
        else:
            raise self._unavailable(last_error or RuntimeError("migration did not complete"))
        _MIGRATED.add(self.url)
        return SCHEMA_VERSION

    @staticmethod
    def _apply_migrations(conn: Connection) -> None:
        schema_info.create(conn, checkfirst=True)
        current = conn.execute(sa.select(sa.func.max(schema_info.c.version))).scalar() or 0
        for version, step in MIGRATIONS:
            if version > current:
                step(conn)
                conn.execute(schema_info.insert().values(version=version, migrated_at=time.time()))
                current = version

    def schema_version(self) -> int:
        return self._run(lambda c: c.execute(sa.select(sa.func.max(schema_info.c.version))).scalar() or 0,
                         write=False)

    # ---- step attempts ------------------------------------------------------------------------
    def record_step_run(self, row: Mapping[str, Any]) -> bool:
        """Insert one step attempt; returns False if that attempt was already recorded."""
        values = dict(row)
        for column in ("stage_durations", "stage_profile"):  # JSON text, as the readers expect
            if isinstance(values.get(column), dict):
                values[column] = json.dumps(values[column])
        try:
            self._run(lambda c: c.execute(step_runs.insert().values(**values)))
        except sa.exc.IntegrityError:
            return False
        return True

    def attempts_recorded(self, run_id: str, step_key: str) -> int:
        """How many attempts of ``step_key`` in ``run_id`` are recorded."""
        q = sa.select(sa.func.count()).where(step_runs.c.run_id == run_id, step_runs.c.step_key == step_key)
        return int(self._run(lambda c: c.execute(q).scalar(), write=False) or 0)

    def has_step_run(self, run_id: str, step_key: str) -> bool:
        return self.attempts_recorded(run_id, step_key) > 0

    def step_runs(self, job: str | None = None, step_key: str | None = None, run_id: str | None = None,
                  ended_before: float | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Step attempts, oldest first (the newest ``limit`` when given)."""
        q = sa.select(step_runs)
        if run_id is not None:
            q = q.where(step_runs.c.run_id == run_id)
        if job is not None:
            q = q.where(step_runs.c.job == job)
        if step_key is not None:
            q = q.where(step_runs.c.step_key == step_key)
        if ended_before is not None:
            q = q.where(step_runs.c.ended_at < ended_before)
        q = q.order_by(step_runs.c.ended_at.desc(), step_runs.c.id.desc())
        if limit is not None:
            q = q.limit(limit)
        rows = self._run(lambda c: [dict(r._mapping) for r in c.execute(q)], write=False)
        return rows[::-1]

    def step_histories(self, keys: Iterable[tuple[str, str]], per_step: int
                       ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """The newest ``per_step`` attempts of each (job, step_key), oldest first, in one query."""
        keys = list(keys)
        if not keys:
            return {}
        ranked = (
            sa.select(step_runs, sa.func.row_number().over(
                partition_by=(step_runs.c.job, step_runs.c.step_key),
                order_by=(step_runs.c.ended_at.desc(), step_runs.c.id.desc())).label("rn"))
            .where(step_runs.c.job.in_({k[0] for k in keys}), step_runs.c.step_key.in_({k[1] for k in keys}))
            .subquery()
        )
        q = sa.select(ranked).where(ranked.c.rn <= per_step).order_by(ranked.c.ended_at, ranked.c.id)
        grouped: dict[tuple[str, str], list[dict[str, Any]]] = {k: [] for k in keys}
        for row in self._run(lambda c: [dict(r._mapping) for r in c.execute(q)], write=False):
            key = (row["job"], row["step_key"])
            if key in grouped:
                row.pop("rn")
                grouped[key].append(row)
        return grouped

    # ---- samples ------------------------------------------------------------------------------
    def add_samples(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert live samples in one statement (PostgreSQL: one ``COPY``)."""
        if not rows:
            return
        if self.engine.dialect.name == "postgresql":
            self._run(lambda c: _copy_rows(c, step_samples, rows))
        else:
            self._run(lambda c: c.execute(step_samples.insert(), [dict(r) for r in rows]))

    def samples(self, run_id: str, step_key: str) -> list[dict[str, Any]]:
        q = (sa.select(step_samples).where(step_samples.c.run_id == run_id,
                                           step_samples.c.step_key == step_key)
             .order_by(step_samples.c.ts))
        return self._run(lambda c: [dict(r._mapping) for r in c.execute(q)], write=False)

    def all_samples(self) -> dict[tuple[str, str], list[dict[str, Any]]]:
        q = sa.select(step_samples).order_by(step_samples.c.run_id, step_samples.c.step_key, step_samples.c.ts)
        grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for row in self._run(lambda c: [dict(r._mapping) for r in c.execute(q)], write=False):
            grouped.setdefault((row["run_id"], row["step_key"]), []).append(row)
        return grouped

    def recent_samples(self, keys: Iterable[tuple[str, str]], per_step: int = 12
                       ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """The newest ``per_step`` samples of each (run_id, step_key), oldest first."""
        keys = list(keys)
        if not keys:
            return {}
        ranked = (
            sa.select(step_samples, sa.func.row_number().over(
                partition_by=(step_samples.c.run_id, step_samples.c.step_key),
                order_by=step_samples.c.ts.desc()).label("rn"))
            .where(step_samples.c.run_id.in_({k[0] for k in keys}))
            .subquery()
        )
        q = sa.select(ranked).where(ranked.c.rn <= per_step).order_by(ranked.c.ts)
        wanted = set(keys)
        grouped: dict[tuple[str, str], list[dict[str, Any]]] = {k: [] for k in keys}
        for row in self._run(lambda c: [dict(r._mapping) for r in c.execute(q)], write=False):
            key = (row["run_id"], row["step_key"])
            if key in wanted:
                grouped[key].append(row)
        return grouped

    # ---- predictions and checkpoint requests --------------------------------------------------
    def add_predictions(self, rows: Sequence[Mapping[str, Any]]) -> None:
        rows = [{**r, "features": json.dumps(r["features"]) if isinstance(r.get("features"), dict)
                 else r.get("features")} for r in rows]
        if rows:
            self._run(lambda c: c.execute(predictions.insert(), rows))

    def predictions(self, run_id: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(predictions).order_by(predictions.c.ts)
        if run_id is not None:
            q = q.where(predictions.c.run_id == run_id)
        return self._run(lambda c: [dict(r._mapping) for r in c.execute(q)], write=False)

    def request_checkpoint(self, run_id: str, step_key: str, prediction: Mapping[str, Any] | None) -> bool:
        """Ask a running step for a checkpoint; False if one is already pending."""
        def _do(conn: Connection) -> bool:
            pending = conn.execute(sa.select(checkpoint_requests.c.id).where(
                checkpoint_requests.c.run_id == run_id, checkpoint_requests.c.step_key == step_key,
                checkpoint_requests.c.honored_at.is_(None))).first()
            if pending:
                return False
            conn.execute(checkpoint_requests.insert().values(
                run_id=run_id, step_key=step_key, requested_at=time.time(),
                prediction=json.dumps(dict(prediction)) if prediction else None))
            return True
        return self._run(_do)

    def pending_request(self, run_id: str, step_key: str) -> dict[str, Any] | None:
        q = (sa.select(checkpoint_requests).where(
            checkpoint_requests.c.run_id == run_id, checkpoint_requests.c.step_key == step_key,
            checkpoint_requests.c.honored_at.is_(None)).order_by(checkpoint_requests.c.id).limit(1))
        row = self._run(lambda c: c.execute(q).first(), write=False)
        if row is None:
            return None
        out = dict(row._mapping)
        out["prediction"] = json.loads(out["prediction"]) if out["prediction"] else None
        return out

    def honor_request(self, request_id: int, checkpoint_id: str) -> None:
        self._run(lambda c: c.execute(checkpoint_requests.update().where(checkpoint_requests.c.id == request_id)
                                      .values(honored_at=time.time(), checkpoint_id=checkpoint_id)))

    def checkpoint_requests(self, run_id: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(checkpoint_requests).order_by(checkpoint_requests.c.id)
        if run_id is not None:
            q = q.where(checkpoint_requests.c.run_id == run_id)
        return self._run(lambda c: [dict(r._mapping) for r in c.execute(q)], write=False)

    # ---- checkpoints --------------------------------------------------------------------------
    def record_checkpoint(self, row: Mapping[str, Any]) -> None:
        values = dict(row)
        if isinstance(values.get("prediction"), dict):
            values["prediction"] = json.dumps(values["prediction"])
        self._run(lambda c: c.execute(checkpoints.insert().values(**values)))

    def checkpoints(self, run_id: str | None = None, root_run_id: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(checkpoints).order_by(checkpoints.c.id)
        if run_id is not None:
            q = q.where(checkpoints.c.run_id == run_id)
        if root_run_id is not None:
            q = q.where(checkpoints.c.root_run_id == root_run_id)
        return self._run(lambda c: [dict(r._mapping) for r in c.execute(q)], write=False)

    def last_checkpoint_times(self, run_ids: Iterable[str]) -> dict[tuple[str, str], float]:
        """Per (run_id, step_key) of these runs: when its last checkpoint was written, in one query."""
        run_ids = list(set(run_ids))
        if not run_ids:
            return {}
        q = (sa.select(checkpoints.c.run_id, checkpoints.c.step_key,
                       sa.func.max(checkpoints.c.created_at).label("last_at"))
             .where(checkpoints.c.run_id.in_(run_ids))
             .group_by(checkpoints.c.run_id, checkpoints.c.step_key))
        rows = self._run(lambda c: list(c.execute(q)), write=False)
        return {(r.run_id, r.step_key): r.last_at for r in rows}

    def mean_checkpoint_cost(self, job: str, step_key: str, default: float) -> float:
        """Mean measured write time (C) of this step's recent checkpoints, seconds."""
        recent = (sa.select(checkpoints.c.write_s)
                  .where(checkpoints.c.job == job, checkpoints.c.step_key == step_key)
                  .order_by(checkpoints.c.id.desc()).limit(20).subquery())
        value = self._run(lambda c: c.execute(sa.select(sa.func.avg(recent.c.write_s))).scalar(), write=False)
        return float(value) if value is not None else default

    # ---- resumes ------------------------------------------------------------------------------
    def claim_resume(self, parent_run_id: str, root_run_id: str, job: str) -> bool:
        """Claim the right to re-execute ``parent_run_id``; True for exactly one caller, ever."""
        try:
            self._run(lambda c: c.execute(resumes.insert().values(
                parent_run_id=parent_run_id, root_run_id=root_run_id, job=job,
                claimed_at=time.time(), status="claimed")))
        except sa.exc.IntegrityError:
            return False
        return True

    def release_resume(self, parent_run_id: str) -> None:
        """Give up a claim whose launch could not be attempted, so a later tick tries again."""
        self._run(lambda c: c.execute(resumes.delete().where(resumes.c.parent_run_id == parent_run_id)))

    def finish_resume(self, parent_run_id: str, status: str, new_run_id: str | None = None,
                      detail: str | None = None, plan: Mapping[str, Any] | None = None) -> None:
        self._run(lambda c: c.execute(resumes.update().where(resumes.c.parent_run_id == parent_run_id).values(
            status=status, new_run_id=new_run_id, detail=detail,
            plan=json.dumps(dict(plan)) if plan else None)))

    def resumes(self, root_run_id: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(resumes).order_by(resumes.c.claimed_at)
        if root_run_id is not None:
            q = q.where(resumes.c.root_run_id == root_run_id)
        return self._run(lambda c: [dict(r._mapping) for r in c.execute(q)], write=False)
