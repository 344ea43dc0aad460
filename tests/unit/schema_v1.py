"""The metrics store's schema as version 1 shipped it (frozen copy of commit 2256082's tables): the
migration tests build a version-1 database from it, fill it, and migrate it."""

import sqlalchemy as sa

metadata = sa.MetaData()

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

