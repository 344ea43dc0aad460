"""The metrics store: step attempts, live samples, predictions, checkpoints and resumes in SQL.

SQLite by default (``$DAGSTER_HOME/predcheck/metrics.db``), PostgreSQL by URL (or the Dagster
instance's own dagster-postgres database: see ``PredcheckResource.metrics_store``). SQLAlchemy Core
only (no ORM): imports in ~0.15 s, so the step side can use it.

Guarantees:
    - The schema is versioned; ``migrate()`` applies every migration not yet recorded, in order, and
      is idempotent (safe when several step processes start at once).
    - Every failure to reach the database is raised as MetricsStoreUnavailableError naming the URL
      (password redacted) and the fix; callers on the step side turn it into a logged warning.
    - After such a failure, calls fail fast for ``STORE_RETRY_S`` (no connect timeout per call).
    - ``write_samples`` and ``write_step_run`` (the step side's writers) never lose a record to an
      unreachable store: it goes to the local spool (``spool.py``) and is flushed later. Step
      attempts have the natural key (run_id, step_key, attempt), samples (run_id, step_key, ts);
      writes through them are idempotent, so a flush may be repeated or interrupted safely.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.url import make_url

from predcheck_dagster.errors import MetricsStoreUnavailableError
from predcheck_dagster.spool import DrainReport, Spool

LOG = logging.getLogger("predcheck.metrics_store")
SCHEMA_VERSION = 3
MIGRATION_ATTEMPTS = 5
MIGRATION_LOCK_KEY = 0x70726564  # "pred": the PostgreSQL advisory lock held while migrating
COMPACTION_LOCK_KEY = 0x70726563  # "prec": held while compacting, so two compactions never interleave
OUTCOMES = ("success", "failure", "crashed", "timeout")
STORE_RETRY_S = 5.0  # after a failure to reach the store, calls fail fast (and records spool) this long
FLUSH_CHECK_S = 10.0  # after a successful write, look for spool files at most this often per process
STEP_FLUSH_BUDGET_S = 5.0  # at the end of a step, flush this process's own spool for at most this long

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
# The sensor's history query (newest k attempts of a job/step) walks this index backwards.
sa.Index("ix_step_runs_job_step_end_id", step_runs.c.job, step_runs.c.step_key, step_runs.c.ended_at,
         step_runs.c.id)

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
    sa.Column("dropped_samples", sa.Integer),  # samples the profiler had dropped so far (buffer full)
)
# The natural key of a sample (one sampler per step attempt takes them at distinct instants; the
# attempts of a step in one run follow each other), and the index of the sensor's latest-k query.
sa.Index("uq_step_samples_run_step_ts", step_samples.c.run_id, step_samples.c.step_key, step_samples.c.ts,
         unique=True)

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
sa.Index("ix_checkpoints_job_step_id", checkpoints.c.job, checkpoints.c.step_key, checkpoints.c.id)
sa.Index("ix_checkpoints_run_step_created", checkpoints.c.run_id, checkpoints.c.step_key, checkpoints.c.created_at)

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
    """Bulk insert through PostgreSQL's COPY (an order of magnitude above row inserts).

    The driver's errors are raised as SQLAlchemy's (IntegrityError, OperationalError), like those of
    any statement, and a connection the server dropped is invalidated, not returned to the pool.
    """
    import io

    columns = [c.name for c in table.columns if c.name != "id"]
    buffer = io.StringIO("\n".join(",".join(_csv_field(row.get(c)) for c in columns) for row in rows) + "\n")
    statement = f"COPY {table.name} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)"
    with _driver_errors(conn, statement):
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            cursor.copy_expert(statement, buffer)
        finally:
            if not cursor.closed:
                cursor.close()


def _insert_ignoring_duplicates(conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING: rows whose natural key is already stored are skipped."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        raise NotImplementedError(conn.dialect.name)
    # One set of keys for every row (spooled rows may come from an older version with fewer fields),
    # and only the table's columns (or a newer version's extra fields).
    present = {k for row in rows for k in row} & ({c.name for c in table.columns} - {"id"})
    conn.execute(insert(table).on_conflict_do_nothing(), [{k: row.get(k) for k in present} for row in rows])


def _migrate_to_1(conn: Connection) -> None:
    metadata.create_all(conn, checkfirst=True)


def _migrate_to_2(conn: Connection) -> None:
    """step_runs gains the profiler's columns (a database created at version 1 lacks them)."""
    present = {c["name"] for c in sa.inspect(conn).get_columns("step_runs")}
    for name, type_ in STEP_RUNS_V2_COLUMNS:
        if name not in present:
            ddl = sa.schema.CreateColumn(sa.Column(name, type_)).compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE step_runs ADD COLUMN {ddl}"))


# Indexes of version 3, and the version-1 indexes they replace.
V3_INDEXES = {"step_samples": ("uq_step_samples_run_step_ts",), "step_runs": ("ix_step_runs_job_step_end_id",),
              "checkpoints": ("ix_checkpoints_job_step_id", "ix_checkpoints_run_step_created")}
V3_SUPERSEDED = {"step_samples": ("ix_step_samples_run_step_ts",), "step_runs": ("ix_step_runs_job_step_end",),
                 "checkpoints": ("ix_checkpoints_job_step",)}


def _migrate_to_3(conn: Connection) -> None:
    """Version 3: samples get a natural key (so spool flushes are idempotent) and the drop count;
    the sensor's queries get indexes they can walk (latest k per key). Touches no column of
    version 2 (new step_runs columns), so the two apply in either order."""
    inspector = sa.inspect(conn)
    if "dropped_samples" not in {c["name"] for c in inspector.get_columns("step_samples")}:
        conn.execute(sa.text("ALTER TABLE step_samples ADD COLUMN dropped_samples INTEGER"))
    for table_name, index_names in V3_INDEXES.items():
        table = metadata.tables[table_name]
        existing = {ix["name"] for ix in inspector.get_indexes(table_name)}
        if table_name == "step_samples" and "uq_step_samples_run_step_ts" not in existing:
            if conn.dialect.name == "postgresql":  # no insert between the clean-up and the unique index
                conn.execute(sa.text("LOCK TABLE step_samples IN SHARE ROW EXCLUSIVE MODE"))
            # Version 1 had no key: keep the first copy of any sample stored twice.
            conn.execute(sa.text(
                "DELETE FROM step_samples WHERE id IN (SELECT id FROM (SELECT id, row_number() OVER "
                "(PARTITION BY run_id, step_key, ts ORDER BY id) AS rn FROM step_samples) AS d WHERE rn > 1)"))
        for index in table.indexes:
            if index.name in index_names and index.name not in existing:
                index.create(conn)
        for old in V3_SUPERSEDED.get(table_name, ()):
            if old in existing:
                conn.execute(sa.text(f"DROP INDEX IF EXISTS {old}"))


MIGRATIONS: Sequence[tuple[int, Callable[[Connection], None]]] = (
    (1, _migrate_to_1), (2, _migrate_to_2), (3, _migrate_to_3))

_ENGINES: dict[str, Engine] = {}
_MIGRATED: set[str] = set()
_LOCK = threading.Lock()
_MIGRATE_LOCK = threading.Lock()  # the sampler thread and the step's own thread migrate on first use
_DOWN: dict[str, tuple[float, str]] = {}  # url -> (fail fast until (monotonic), the last error's message)
_LAST_FLUSH_CHECK: dict[str, float] = {}
_FLUSHING: set[str] = set()  # spool directories a background flush of this process is draining
_SPOOL_WARNED: set[str] = set()
_SPOOLS: dict[str, Spool] = {}


def spool_for(directory: str) -> Spool:
    """The one Spool object of ``directory`` in this process (it holds the process's open file)."""
    with _LOCK:
        spool = _SPOOLS.get(directory)
        if spool is None:
            spool = _SPOOLS[directory] = Spool(directory)
        return spool


@dataclass
class CompactReport:
    """What ``MetricsStore.compact`` did."""

    cutoff: float
    groups: int = 0  # (run_id, step_key) streams visited
    total_groups: int = 0
    deleted: int = 0
    batches: int = 0
    finished: bool = True
    duration_s: float = 0.0

    def message(self) -> str:
        return (f"compaction: deleted {self.deleted} sample(s) of {self.groups}/{self.total_groups} finished "
                f"step(s) in {self.batches} batch(es), {self.duration_s:.1f} s"
                + ("" if self.finished else "; time budget reached, the next run continues"))


SQLITE_KEYS_PER_QUERY = 200  # SQLite allows 500 terms in one compound SELECT


def _latest_per_key_sql(table: sa.Table, key_columns: tuple[sa.Column, sa.Column],
                        newest_first: tuple[Any, ...], columns: Sequence[str] | None = None
                        ) -> tuple[str, list[str]]:
    """PostgreSQL: the statement returning the newest ``%(per_key)s`` rows of each key, and its columns.

    The keys travel as two arrays; ``unnest ... WITH ORDINALITY`` numbers them and is joined LATERAL
    to ``ORDER BY ... DESC LIMIT k``, so an index on (key columns, order columns) is walked backwards
    for k entries per key, however long each key's history is. Rows carry the key's number instead
    of the key's two strings (the caller has them): less to send and to parse.
    """
    from sqlalchemy.dialects import postgresql

    dialect = postgresql.dialect()
    first, second = key_columns
    others = [c.name for c in table.columns if c.name not in (first.name, second.name)
              and (columns is None or c.name in columns)]
    order = ", ".join(str(e.compile(dialect=dialect)) for e in newest_first)
    sql = (f"SELECT wanted.n, {', '.join('latest.' + c for c in others)} "
           f"FROM unnest(%(key_a)s::text[], %(key_b)s::text[]) WITH ORDINALITY AS wanted(a, b, n) "
           f"CROSS JOIN LATERAL (SELECT {', '.join(others)} FROM {table.name} "
           f"WHERE {first.name} = wanted.a AND {second.name} = wanted.b "
           f"ORDER BY {order} LIMIT %(per_key)s) AS latest")
    return sql, others


def _latest_per_key_statements(table: sa.Table, key_columns: tuple[sa.Column, sa.Column],
                               keys: Sequence[tuple[str, str]], newest_first: tuple[Any, ...], per_key: int,
                               columns: Sequence[str] | None = None) -> list[sa.Select]:
    """SQLite (no LATERAL): the ``ORDER BY ... DESC LIMIT k`` subquery per key, ``UNION ALL``-ed,
    ``SQLITE_KEYS_PER_QUERY`` keys per statement; each is one backward walk of the index."""
    first, second = key_columns
    selected = [c for c in table.columns if columns is None or c in key_columns or c.name in columns]
    statements = []
    for i in range(0, len(keys), SQLITE_KEYS_PER_QUERY):
        parts = [sa.select(sa.select(*selected).where(first == a, second == b).order_by(*newest_first)
                           .limit(per_key).subquery())
                 for a, b in keys[i:i + SQLITE_KEYS_PER_QUERY]]
        statements.append(sa.union_all(*parts) if len(parts) > 1 else parts[0])
    return statements


@contextlib.contextmanager
def _driver_errors(conn: Connection, statement: str) -> Iterator[None]:
    """Raise the driver's errors of a raw cursor as SQLAlchemy's, as for any statement; a connection
    the server dropped is invalidated, not returned to the pool."""
    dbapi = conn.dialect.loaded_dbapi
    try:
        yield
    except dbapi.IntegrityError as e:
        raise sa.exc.IntegrityError(statement, None, e) from e
    except (dbapi.OperationalError, dbapi.InterfaceError) as e:
        conn.invalidate(e)
        raise sa.exc.OperationalError(statement, None, e) from e


def _json_columns(row: Mapping[str, Any]) -> dict[str, Any]:
    """A ``step_runs`` row with its dict columns as JSON text, as the readers expect."""
    values = dict(row)
    for column in ("stage_durations", "stage_profile"):
        if isinstance(values.get(column), dict):
            values[column] = json.dumps(values[column])
    return values


def _write_label(directory: str, label: str) -> None:
    """Name the store a spool directory belongs to (the URL without its password), for people."""
    try:
        path = os.path.join(directory, "STORE")
        if not os.path.exists(path):
            with open(path, "w") as f:
                f.write(label + "\n")
    except OSError:
        pass


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
        spool_dir: where ``write_samples``/``write_step_run`` spool records while the store is
            unreachable (a subdirectory per store is used); None: no spool, they raise instead.
    """

    def __init__(self, url: str, spool_dir: str | None = None) -> None:
        self.url = url
        self.spool_dir = spool_dir

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
        down = _DOWN.get(self.url)
        if down is not None and time.monotonic() < down[0]:
            raise MetricsStoreUnavailableError(down[1])  # seen down a moment ago: do not wait again
        try:
            self.migrate()
            with (self.engine.begin() if write else self.engine.connect()) as conn:
                result = fn(conn)
        except sa.exc.IntegrityError:
            raise
        except MetricsStoreUnavailableError as e:
            _DOWN[self.url] = (time.monotonic() + STORE_RETRY_S, str(e))
            raise
        except (sa.exc.OperationalError, sa.exc.InterfaceError, OSError) as e:
            error = self._unavailable(e)
            _DOWN[self.url] = (time.monotonic() + STORE_RETRY_S, str(error))
            raise error from e
        _DOWN.pop(self.url, None)
        return result

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
        """Apply every migration whose version is not recorded yet (not only those above the
        highest: a branch's migration merged later, with a lower number, still runs)."""
        schema_info.create(conn, checkfirst=True)
        applied = {v for (v,) in conn.execute(sa.select(schema_info.c.version))}
        for version, step in MIGRATIONS:
            if version not in applied:
                step(conn)
                conn.execute(schema_info.insert().values(version=version, migrated_at=time.time()))

    def schema_version(self) -> int:
        return self._run(lambda c: c.execute(sa.select(sa.func.max(schema_info.c.version))).scalar() or 0,
                         write=False)

    # ---- step attempts ------------------------------------------------------------------------
    def record_step_run(self, row: Mapping[str, Any]) -> bool:
        """Insert one step attempt; returns False if that attempt was already recorded."""
        values = _json_columns(row)
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

    def job_histories(self, jobs: Iterable[str], per_job: int, since: float) -> list[dict[str, Any]]:
        """Attempts of ``jobs``: the newest ``per_job`` of each, and every one that ended after ``since``."""
        jobs = sorted(set(jobs))
        if not jobs:
            return []
        ranked = (
            sa.select(step_runs, sa.func.row_number().over(
                partition_by=step_runs.c.job,
                order_by=(step_runs.c.ended_at.desc(), step_runs.c.id.desc())).label("rn"))
            .where(step_runs.c.job.in_(jobs))
            .subquery()
        )
        q = (sa.select(ranked).where(sa.or_(ranked.c.rn <= per_job, ranked.c.ended_at >= since))
             .order_by(ranked.c.ended_at, ranked.c.id))
        rows = self._run(lambda c: [dict(r._mapping) for r in c.execute(q)], write=False)
        for row in rows:
            row.pop("rn")
        return rows

    def failures_since(self, since: float) -> list[dict[str, Any]]:
        """Failed attempts (any job) that ended at or after ``since``, oldest first."""
        q = (sa.select(step_runs).where(step_runs.c.ended_at >= since,
                                        step_runs.c.outcome.in_(("failure", "crashed", "timeout")))
             .order_by(step_runs.c.ended_at, step_runs.c.id))
        return self._run(lambda c: [dict(r._mapping) for r in c.execute(q)], write=False)

    def count_finished_attempts(self) -> int:
        """How many step attempts have an outcome (the retrain sensor's measure of new history)."""
        q = sa.select(sa.func.count()).select_from(step_runs).where(step_runs.c.outcome.in_(OUTCOMES))
        return int(self._run(lambda c: c.execute(q).scalar_one(), write=False))

    def step_histories(self, keys: Iterable[tuple[str, str]], per_step: int
                       ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """The newest ``per_step`` attempts of each (job, step_key), oldest first, in one query
        that reads ``per_step`` index entries per key (see ``_latest_per_key``)."""
        return self._latest_per_key(step_runs, (step_runs.c.job, step_runs.c.step_key), keys,
                                    (step_runs.c.ended_at.desc(), step_runs.c.id.desc()), per_step)

    def _latest_per_key(self, table: sa.Table, key_columns: tuple[sa.Column, sa.Column],
                        keys: Iterable[tuple[str, str]], newest_first: tuple[Any, ...], per_key: int,
                        columns: Sequence[str] | None = None) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """The newest ``per_key`` rows of each key, oldest first, each a dict of the key columns and
        ``columns`` (default: every column).

        PostgreSQL: one statement (``_latest_per_key_sql``) on a raw cursor: the sensor asks for
        12,000 rows per tick, and SQLAlchemy's row objects would cost more than the query.
        SQLite: ``_latest_per_key_statements``.
        """
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        first, second = key_columns
        grouped: dict[tuple[str, str], list[dict[str, Any]]] = {k: [] for k in keys}
        if self.engine.dialect.name == "postgresql":
            sql, selected = _latest_per_key_sql(table, key_columns, newest_first, columns)
            names = (first.name, second.name, *selected)
            params = {"key_a": [k[0] for k in keys], "key_b": [k[1] for k in keys], "per_key": per_key}

            def fetch(conn: Connection) -> list[tuple[Any, ...]]:
                with _driver_errors(conn, sql):
                    cursor = conn.connection.dbapi_connection.cursor()
                    try:
                        cursor.execute(sql, params)
                        return cursor.fetchall()
                    finally:
                        cursor.close()

            for row in self._run(fetch, write=False):
                key = keys[row[0] - 1]
                grouped[key].append(dict(zip(names, (*key, *row[1:]))))
        else:
            statements = _latest_per_key_statements(table, key_columns, keys, newest_first, per_key, columns)
            rows = self._run(lambda c: [dict(r._mapping) for s in statements for r in c.execute(s)], write=False)
            for row in rows:
                grouped[(row[first.name], row[second.name])].append(row)
        for group in grouped.values():
            group.reverse()  # each key's rows arrive newest first
        return grouped

    def recent_sample_block(self, keys: Sequence[tuple[str, str]], per_step: int = 12,
                            fields: Sequence[str] | None = None) -> Any:
        """``recent_samples`` as arrays (a ``features.SampleBlock``, row ``i`` = ``keys[i]``): what
        the forecast sensor scores from. No dict per sample: the tick reads 12,000 of them.

        ``fields``: the numeric sample fields to hold (default ``features.SAMPLE_BLOCK_FIELDS``);
        the stage is always there. PostgreSQL: the one LATERAL statement of ``recent_samples``;
        SQLite: one prepared ``ORDER BY ts DESC LIMIT k`` per key on the raw connection.
        """
        import numpy as np

        from predcheck_dagster.features import SAMPLE_BLOCK_FIELDS, SampleBlock

        fields = tuple(fields or SAMPLE_BLOCK_FIELDS)
        unknown = set(fields) - {c.name for c in step_samples.columns}
        if unknown:
            raise ValueError(f"step_samples has no column(s) {sorted(unknown)}")
        unique = list(dict.fromkeys(keys))
        if not unique:
            return SampleBlock.empty(len(keys), per_step, fields)
        if self.engine.dialect.name == "postgresql":
            sql, selected = _latest_per_key_sql(step_samples, (step_samples.c.run_id, step_samples.c.step_key),
                                                (step_samples.c.ts.desc(),), ("ts", "stage", *fields))
            params = {"key_a": [k[0] for k in unique], "key_b": [k[1] for k in unique], "per_key": per_step}
            position = {name: i + 1 for i, name in enumerate(selected)}
        else:
            sql = (f"SELECT ts, stage, {', '.join(fields)} FROM {step_samples.name} "
                   f"WHERE run_id = ? AND step_key = ? ORDER BY ts DESC LIMIT ?")
            position = {name: i + 1 for i, name in enumerate(("ts", "stage", *fields))}

        def fetch(conn: Connection) -> list[tuple[Any, ...]]:
            with _driver_errors(conn, sql):
                cursor = conn.connection.dbapi_connection.cursor()
                try:
                    if self.engine.dialect.name == "postgresql":
                        cursor.execute(sql, params)
                        return cursor.fetchall()
                    return [(n, *row) for n, (a, b) in enumerate(unique, start=1)
                            for row in cursor.execute(sql, (a, b, per_step)).fetchall()]
                finally:
                    cursor.close()

        rows = self._run(fetch, write=False)
        block = SampleBlock.empty(len(unique), per_step, fields)
        if rows:
            table = np.array(rows, dtype=object)
            key = table[:, 0].astype(np.int64) - 1
            ts = table[:, position["ts"]].astype(np.float64)
            order = np.lexsort((-ts, key))  # each key's rows newest first, whatever order they came in
            key = key[order]
            rank = np.arange(len(key)) - np.searchsorted(key, key, side="left")  # 0 = the newest
            column = per_step - 1 - rank
            block.values[key, column] = table[order][:, [position[f] for f in fields]].astype(np.float64)
            codes: dict[str, int] = {}
            block.stage_codes[key, column] = [codes.setdefault(stage, len(codes) + 1) if stage else 0
                                              for stage in table[order, position["stage"]]]
            block.stage_names = list(codes)
            block.counts[:] = np.bincount(key, minlength=len(unique))
        if len(unique) == len(keys):
            return block
        position = {k: i for i, k in enumerate(unique)}
        rows_of = [position[k] for k in keys]  # a key asked for twice: its row twice
        return SampleBlock(block.values[rows_of], block.stage_codes[rows_of], block.counts[rows_of],
                           block.stage_names, fields)

    def explain_recent_samples(self, keys: Sequence[tuple[str, str]], per_step: int = 12,
                               analyze: bool = False) -> str:
        """The database's plan of the forecast sensor's sample query for ``keys`` (PostgreSQL
        ``EXPLAIN [ANALYZE]``, SQLite ``EXPLAIN QUERY PLAN`` of the first chunk), for diagnosis."""
        key_columns = (step_samples.c.run_id, step_samples.c.step_key)
        newest_first = (step_samples.c.ts.desc(),)
        keys = list(keys)
        if self.engine.dialect.name == "postgresql":
            sql, _ = _latest_per_key_sql(step_samples, key_columns, newest_first)
            prefix = "EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN "
            params: Any = {"key_a": [k[0] for k in keys], "key_b": [k[1] for k in keys], "per_key": per_step}
        else:
            statement = _latest_per_key_statements(step_samples, key_columns, keys, newest_first, per_step)[0]
            compiled = statement.compile(dialect=self.engine.dialect, compile_kwargs={"render_postcompile": True})
            sql, prefix = str(compiled), "EXPLAIN QUERY PLAN "
            params = tuple(compiled.params[name] for name in compiled.positiontup or ())
        rows = self._run(lambda c: list(c.exec_driver_sql(prefix + sql, params)), write=False)
        return "\n".join(str(r[-1]) for r in rows)

    # ---- samples ------------------------------------------------------------------------------
    def add_samples(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert live samples in one statement (PostgreSQL: one ``COPY``); samples already stored
        (same run_id, step_key, ts) are skipped, so a batch may be written twice."""
        if not rows:
            return
        if self.engine.dialect.name == "postgresql":
            try:
                self._run(lambda c: _copy_rows(c, step_samples, rows))
            except sa.exc.IntegrityError:  # part of the batch is in already (a retried write): row by row
                self._run(lambda c: _insert_ignoring_duplicates(c, step_samples, rows))
        else:
            self._run(lambda c: _insert_ignoring_duplicates(c, step_samples, rows))

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

    def recent_samples(self, keys: Iterable[tuple[str, str]], per_step: int = 12,
                       columns: Sequence[str] | None = None) -> dict[tuple[str, str], list[dict[str, Any]]]:
        """The newest ``per_step`` samples of each (run_id, step_key), oldest first: the forecast
        sensor's query, one backward walk of ``uq_step_samples_run_step_ts`` per step.

        ``columns``: only these fields (and run_id, step_key) in each sample; default all.
        """
        return self._latest_per_key(step_samples, (step_samples.c.run_id, step_samples.c.step_key), keys,
                                    (step_samples.c.ts.desc(),), per_step, columns)

    # ---- the step side's writers: store, or spool when the store is unreachable ---------------
    @property
    def spool(self) -> Spool | None:
        """This store's spool (``{spool_dir}/{hash of the URL without password}``), if configured."""
        if self.spool_dir is None:
            return None
        digest = hashlib.sha256(redact_url(self.url).encode()).hexdigest()[:16]
        return spool_for(os.path.join(self.spool_dir, digest))

    def write_samples(self, rows: Sequence[Mapping[str, Any]]) -> str:
        """Store samples, or spool them if the store is unreachable: returns "stored" or "spooled".

        Raises:
            MetricsStoreUnavailableError: unreachable and no spool configured.
            OSError: unreachable and the spool cannot be written either (the caller keeps the rows).
        """
        if not rows:
            return "stored"
        try:
            self.add_samples(rows)
        except MetricsStoreUnavailableError as e:
            return self._spool("samples", [dict(r) for r in rows], e)
        self._after_success()
        return "stored"

    def write_step_run(self, row: Mapping[str, Any]) -> str:
        """Store one step attempt, or spool it: returns "stored", "duplicate" or "spooled".

        On success, this process's own spooled records are flushed before returning (at most
        ``STEP_FLUSH_BUDGET_S``): a step process may exit right after its hook.
        """
        values = _json_columns(row)  # the spool keeps the same text
        try:
            stored = self.record_step_run(values)
        except MetricsStoreUnavailableError as e:
            return self._spool("step_run", [values], e)
        spool = self.spool
        if spool is not None and spool.own_files():
            self.flush_spool(budget_s=STEP_FLUSH_BUDGET_S, own_only=True)
        self._after_success()
        return "stored" if stored else "duplicate"

    def _spool(self, kind: str, rows: list[dict[str, Any]], error: MetricsStoreUnavailableError) -> str:
        spool = self.spool
        if spool is None:
            raise error
        path = spool.append(kind, rows)
        if spool.directory not in _SPOOL_WARNED:
            _SPOOL_WARNED.add(spool.directory)
            LOG.warning("predcheck: %s Meanwhile step records are spooled to %r and written when it answers "
                        "again (by the next successful write, the sensors, or `predcheck store flush`).",
                        error, os.path.dirname(path))
            _write_label(spool.directory, redact_url(self.url))
        return "spooled"

    def _after_success(self) -> None:
        """Now and then (``FLUSH_CHECK_S``), look for spooled records of any process and flush them
        in a background thread: the caller (a sampler, a hook) is never held up by it."""
        spool = self.spool
        if spool is None:
            return
        _SPOOL_WARNED.discard(spool.directory)
        now = time.monotonic()
        if now - _LAST_FLUSH_CHECK.get(spool.directory, -FLUSH_CHECK_S) < FLUSH_CHECK_S:
            return
        _LAST_FLUSH_CHECK[spool.directory] = now
        with _LOCK:
            if spool.directory in _FLUSHING or not spool.pending():
                return
            _FLUSHING.add(spool.directory)

        def flush() -> None:
            try:
                self.flush_spool()
            except Exception as e:  # noqa: BLE001 - a background flush must not die loudly; files stay
                LOG.debug("predcheck: background spool flush failed: %s", e)
            finally:
                _FLUSHING.discard(spool.directory)

        threading.Thread(target=flush, name="predcheck-spool-flush", daemon=True).start()

    def flush_spool(self, budget_s: float | None = None, own_only: bool = False) -> DrainReport:
        """Write every spooled record into the store and delete the drained spool files.

        Idempotent: a record already stored is skipped (natural keys), so an interrupted flush is
        simply repeated. Stops, leaving the files, if the store fails.
        """
        spool = self.spool
        if spool is None:
            return DrainReport()

        def consume(kind: str, rows: list[dict[str, Any]]) -> None:
            table = step_samples if kind == "samples" else step_runs
            self._run(lambda c: _insert_ignoring_duplicates(c, table, rows))

        report = spool.drain(consume, budget_s=budget_s, own_only=own_only)
        if report.files:
            LOG.info("predcheck: %s", report.message())
        return report

    # ---- retention ----------------------------------------------------------------------------
    def compact(self, older_than_s: float, keep_every_s: float | None = 60.0, batch_steps: int = 200,
                now: float | None = None, budget_s: float | None = None,
                progress: Callable[[int, int], None] | None = None) -> CompactReport:
        """Downsample the samples of finished steps: keep one per ``keep_every_s`` of each step.

        A step (run_id, step_key) is finished when every recorded attempt ended more than
        ``older_than_s`` ago; samples taken after that cutoff are never touched. Per step, the first
        sample of each ``keep_every_s`` window of ``ts`` and the step's last sample are kept, the rest
        deleted (``keep_every_s`` None or 0: all are deleted). Steps are processed ``batch_steps`` at
        a time, one transaction per batch, in key order.

        Guarantees:
            - Idempotent: compacting again with the same arguments deletes nothing more.
            - Samples of in-flight steps (no attempt recorded, or one ended after the cutoff) stay.
            - ``budget_s``: no new batch starts after that many seconds (``finished`` is then False);
              what was deleted stays deleted, and the next call continues from the start.
            - On PostgreSQL, an advisory lock makes a second concurrent compaction wait.

        ``progress(steps_done, steps_total)`` is called after each batch.
        """
        started = time.perf_counter()
        cutoff = (now if now is not None else time.time()) - older_than_s
        report = CompactReport(cutoff=cutoff)
        finished = (sa.select(step_runs.c.run_id, step_runs.c.step_key)
                    .group_by(step_runs.c.run_id, step_runs.c.step_key)
                    .having(sa.func.max(step_runs.c.ended_at) < cutoff))
        steps = finished.subquery()
        has_samples = sa.exists().where(step_samples.c.run_id == steps.c.run_id,
                                        step_samples.c.step_key == steps.c.step_key, step_samples.c.ts < cutoff)
        report.total_groups = int(self._run(lambda c: c.execute(
            sa.select(sa.func.count()).select_from(steps).where(has_samples)).scalar(), write=False) or 0)
        after: tuple[str, str] | None = None
        while True:
            if budget_s is not None and time.perf_counter() - started > budget_s:
                report.finished = False
                break
            page_q = sa.select(steps.c.run_id, steps.c.step_key).where(has_samples)
            if after is not None:
                page_q = page_q.where(sa.tuple_(steps.c.run_id, steps.c.step_key) > sa.tuple_(*after))
            page_q = page_q.order_by(steps.c.run_id, steps.c.step_key).limit(batch_steps)
            page = [(r.run_id, r.step_key) for r in self._run(lambda c, q=page_q: list(c.execute(q)), write=False)]
            if not page:
                break
            report.deleted += self._run(lambda c, page=page: self._compact_batch(c, page, cutoff, keep_every_s))
            report.groups += len(page)
            report.batches += 1
            after = page[-1]
            if progress is not None:
                progress(report.groups, report.total_groups)
        report.duration_s = time.perf_counter() - started
        return report

    @staticmethod
    def _compact_batch(conn: Connection, page: list[tuple[str, str]], cutoff: float,
                       keep_every_s: float | None) -> int:
        if conn.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": COMPACTION_LOCK_KEY})
        s = step_samples.c
        in_page = sa.and_(s.run_id.in_({run for run, _ in page}),
                          sa.tuple_(s.run_id, s.step_key).in_(page), s.ts < cutoff)
        if not keep_every_s:
            return conn.execute(step_samples.delete().where(in_page)).rowcount
        window = (sa.func.floor(s.ts / keep_every_s) if conn.dialect.name == "postgresql"
                  else sa.cast(s.ts / keep_every_s, sa.BigInteger))  # SQLite: a cast truncates (ts > 0)
        ranked = sa.select(
            s.id,
            sa.func.row_number().over(partition_by=(s.run_id, s.step_key, window), order_by=(s.ts, s.id))
            .label("nth_in_window"),
            sa.func.row_number().over(partition_by=(s.run_id, s.step_key), order_by=(s.ts.desc(), s.id.desc()))
            .label("nth_from_last"),
        ).where(in_page).subquery()
        doomed = sa.select(ranked.c.id).where(ranked.c.nth_in_window > 1, ranked.c.nth_from_last > 1)
        return conn.execute(step_samples.delete().where(s.id.in_(doomed))).rowcount

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

    def latest_predictions(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
        """The newest prediction of each (run_id, step_key) that has one (without its features), one
        backward walk of ``ix_predictions_run_step_ts`` per key."""
        columns = [c.name for c in predictions.columns if c.name != "features"]
        latest = self._latest_per_key(predictions, (predictions.c.run_id, predictions.c.step_key), keys,
                                      (predictions.c.ts.desc(), predictions.c.id.desc()), 1, columns)
        return {key: rows[-1] for key, rows in latest.items() if rows}

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

    def checkpoint_request_counts(self, run_ids: Iterable[str]) -> dict[tuple[str, str], int]:
        """Per (run_id, step_key) of these runs: how many checkpoint requests were made, in one query."""
        run_ids = list(set(run_ids))
        if not run_ids:
            return {}
        c = checkpoint_requests.c
        q = (sa.select(c.run_id, c.step_key, sa.func.count().label("n")).where(c.run_id.in_(run_ids))
             .group_by(c.run_id, c.step_key))
        return {(r.run_id, r.step_key): int(r.n) for r in self._run(lambda conn: list(conn.execute(q)), write=False)}

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
