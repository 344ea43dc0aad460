"""The ``predcheck`` command line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC

import click

from predcheck_dagster.errors import PredcheckError

EXIT_LOOP_OPEN = 1
EXIT_USAGE = 2
PROGRESS_LINE_S = 5.0


def _ensure_home(home: str | None) -> str:
    """Set ``DAGSTER_HOME`` (default ``./.dagster_home``) and give it a dagster.yaml if it has none."""
    home = os.path.abspath(home or os.environ.get("DAGSTER_HOME") or ".dagster_home")
    os.makedirs(home, exist_ok=True)
    os.environ["DAGSTER_HOME"] = home
    config = os.path.join(home, "dagster.yaml")
    if not os.path.exists(config):
        with open(config, "w") as f:
            f.write("telemetry:\n  enabled: false\n")
    return home


@click.group(help="predcheck: predictive checkpointing for Dagster.")
@click.version_option(package_name="predcheck-dagster")
def main() -> None:
    pass


@main.command(help="Seed history, train the forecaster and close the loop (see README).")
@click.option("--headless", is_flag=True, help="No UI: run the whole loop here and print a summary; exit 0 "
              "only if the loop closed.")
@click.option("--quick", is_flag=True, help="A smaller history (for tests).")
@click.option("--home", type=click.Path(file_okay=False), help="DAGSTER_HOME (default ./.dagster_home).")
@click.option("--workspace", default="workspace.yaml", show_default=True, type=click.Path(dir_okay=False),
              help="workspace.yaml of the code location.")
@click.option("--port", default=3000, show_default=True, help="Dagster webserver port.")
@click.option("--mlflow-port", default=5000, show_default=True, help="MLflow UI port.")
@click.option("--fresh", is_flag=True, help="Delete DAGSTER_HOME first.")
def demo(headless: bool, quick: bool, home: str | None, workspace: str, port: int, mlflow_port: int,
         fresh: bool) -> None:
    from predcheck_dagster.demo.driver import run_demo

    if not os.path.exists(workspace):
        raise click.UsageError(f"workspace file {workspace!r} not found: run from the project folder or "
                               "pass --workspace PATH.")
    if fresh and home and os.path.isdir(home):
        shutil.rmtree(home)
    home = _ensure_home(home)
    os.environ.setdefault("PREDCHECK_WEBSERVER_URL", f"http://127.0.0.1:{port}")
    click.echo(f"DAGSTER_HOME={home}")
    summary = run_demo(workspace, quick=quick, close=headless, say=click.echo)
    if headless:
        click.echo(summary.render())
        sys.exit(0 if summary.loop_closed else EXIT_LOOP_OPEN)
    if summary.model_version is None:
        click.echo(summary.render())
        sys.exit(EXIT_LOOP_OPEN)
    _serve_uis(home, workspace, port, mlflow_port)


def _serve_uis(home: str, workspace: str, port: int, mlflow_port: int) -> None:
    """Start the MLflow UI and the flaky demo service, then ``dagster dev`` in the foreground."""
    from predcheck_dagster.resource import default_artifact_root, default_tracking_uri

    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "DAGSTER_HOME": home}
    children = [
        subprocess.Popen([os.path.join(bin_dir, "mlflow"), "ui", "--backend-store-uri", default_tracking_uri(),
                          "--default-artifact-root", default_artifact_root(), "--host", "127.0.0.1",
                          "--port", str(mlflow_port)], env=env),
        subprocess.Popen([sys.executable, "-m", "predcheck_dagster.demo.service", "--port", "8765"], env=env),
    ]
    click.echo(f"\nDagster UI : http://127.0.0.1:{port}   (sensors predcheck_forecast_sensor, "
               "predcheck_resume_sensor are running)")
    click.echo(f"MLflow UI  : http://127.0.0.1:{mlflow_port}   (model predcheck-forecaster@champion)")
    click.echo("Launch preemptible_job with units: 120 from the Launchpad and watch it get flagged, "
               "checkpointed, killed and resumed. Ctrl-C stops everything.\n")
    dagster = subprocess.Popen([os.path.join(bin_dir, "dagster"), "dev", "-w", workspace, "-h", "127.0.0.1",
                                "-p", str(port)], env=env)
    try:
        dagster.wait()
    except KeyboardInterrupt:
        dagster.send_signal(signal.SIGINT)
        dagster.wait(timeout=30)
    finally:
        for child in children:
            child.terminate()
        deadline = time.time() + 10
        for child in children:
            child.wait(timeout=max(0.1, deadline - time.time()))


_STORE_URL_HELP = ("Metrics store URL. Default: the DAGSTER_HOME instance's PostgreSQL when its storage is "
                   "dagster-postgres, else the embedded SQLite.")


class _StderrLog:
    """The logger interface training reports to (per family, per epoch or boosting round), on stderr:
    long work shows its progress, and stdout keeps only the JSON decision."""

    @staticmethod
    def info(message: str) -> None:
        click.echo(message, err=True)

    warning = info


@main.command(help="Train the forecaster on the metrics store and register it in MLflow; progress on stderr, "
              "the decision as JSON on stdout.")
@click.option("--store-url", envvar="PREDCHECK_STORE_URL", help=_STORE_URL_HELP)
@click.option("--tracking-uri", envvar="PREDCHECK_TRACKING_URI", help="MLflow tracking URI (default: embedded).")
@click.option("--model-code", default="mlflow_models/forecaster.py", show_default=True,
              type=click.Path(exists=True, dir_okay=False), help="Models-from-code file of the pyfunc.")
def train(store_url: str | None, tracking_uri: str | None, model_code: str) -> None:
    from predcheck_dagster.forecaster import train_and_register
    from predcheck_dagster.resource import DEFAULT_MODEL_NAME, default_artifact_root, default_tracking_uri

    _ensure_home(None)
    try:
        result = train_and_register(_store_for_cli(store_url),
                                    tracking_uri or default_tracking_uri(), default_artifact_root(),
                                    DEFAULT_MODEL_NAME, os.path.abspath(model_code), log=_StderrLog())
    except PredcheckError as e:
        raise click.ClickException(str(e)) from e
    click.echo(json.dumps({"model_version": result.model_version, "promoted": result.promoted,
                           "reason": result.reason, "metrics": result.metrics}, indent=1))


@main.command("import-history", help="Backfill the metrics store from the Dagster instance's event log "
              "(step starts, successes, failures, retries), so a forecaster can train on day one.")
@click.option("--store-url", envvar="PREDCHECK_STORE_URL", help=_STORE_URL_HELP)
@click.option("--since", type=click.DateTime(), help="Only runs created after this time (UTC).")
def import_history_command(store_url: str | None, since) -> None:
    from dagster import DagsterInstance, RunsFilter

    from predcheck_dagster.history_import import FINISHED, import_history

    if not os.environ.get("DAGSTER_HOME"):
        raise click.UsageError("DAGSTER_HOME is not set: point it at the instance whose history to import.")
    since = since.replace(tzinfo=UTC) if since else None
    with DagsterInstance.get() as instance:
        store = _store_for_cli(store_url, instance=instance)
        total = instance.get_runs_count(RunsFilter(statuses=FINISHED, created_after=since))
        try:
            with click.progressbar(length=total, label="importing runs", file=sys.stderr) as bar:
                report = import_history(instance, store, since, progress=bar.update)
        except PredcheckError as e:
            raise click.ClickException(str(e)) from e
    click.echo(f"imported {report.attempts} step attempt(s) from {report.runs} run(s); "
               f"{report.skipped} already recorded")


@main.command("trace-eval", help="Train on a real trace before a split, score after it, next to the baselines.")
@click.option("--format", "fmt", required=True, type=click.Choice(["google2011", "swf", "flowbench"]),
              help="Trace format: Google 2011 job_events CSV parts, an SWF log, FlowBench zips.")
@click.option("--input", "inputs", required=True, multiple=True, type=click.Path(),
              help="A trace file or a directory of them (repeatable).")
@click.option("--split-at", required=True, help="A fraction of attempts by start (0.75) or a trace time "
              "(1468800 seconds, 17d, 36h): train on what ended before it, score what started after it.")
@click.option("--label", type=click.Choice(["fail", "overrun"]), default="fail", show_default=True,
              help="What to predict.")
@click.option("--output", required=True, type=click.Path(dir_okay=False),
              help="Results JSON; PR and calibration plots are written beside it.")
@click.option("--model", "families", multiple=True, type=click.Choice(["xgboost", "lstm"]),
              help="Model families to train (default: both).")
@click.option("--skip-bad", is_flag=True, help="Skip (and count) malformed lines instead of stopping at the first.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
def trace_eval_command(fmt: str, inputs: tuple[str, ...], split_at: str, label: str, output: str,
                       families: tuple[str, ...], skip_bad: bool, no_progress: bool) -> None:
    from predcheck_dagster.models import FAMILIES
    from predcheck_dagster.trace_eval import Split, evaluate, table, write_outputs
    from predcheck_dagster.traces import read_trace

    try:
        split = Split.parse(split_at)
        t0 = time.perf_counter()
        frame, report = read_trace(fmt, list(inputs), skip_bad=skip_bad, progress=not no_progress)
        read_s = time.perf_counter() - t0
        click.echo(f"read {report.summary()} in {read_s:.1f}s", err=True)
        result = evaluate(frame, label, split, families or FAMILIES, log=lambda m: click.echo(m, err=True),
                          progress=not no_progress)
        result["timings"]["read_s"] = read_s
        written = write_outputs(result, output, {
            "format": fmt, "inputs": [os.path.abspath(p) for p in inputs], "split_at": split_at,
            "read_report": {"files": report.files, "lines": report.lines, "attempts": report.attempts,
                            "bad_lines_skipped": report.bad_lines_skipped, "dropped": report.dropped}})
    except (PredcheckError, FileNotFoundError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(table(result))
    click.echo("wrote " + ", ".join(written))


@main.group(help="List, show and garbage-collect checkpoints.")
def checkpoints() -> None:
    pass


def _checkpoint_store(root: str | None):
    from predcheck_dagster.checkpoint_store import CheckpointStore
    from predcheck_dagster.resource import default_checkpoint_root

    _ensure_home(None)
    return CheckpointStore(root or default_checkpoint_root())


@checkpoints.command("list", help="Every stream and its good checkpoints.")
@click.option("--root", envvar="PREDCHECK_CHECKPOINT_ROOT", help="Checkpoint root URL (default: embedded).")
def checkpoints_list(root: str | None) -> None:
    store = _checkpoint_store(root)
    streams = store.streams()
    if not streams:
        click.echo(f"no checkpoints under {store.root_url!r} (steps write them with ck.checkpoint or "
                   "ck.maybe_checkpoint; pass --root for another root)", err=True)
    for stream in streams:
        for m in store.list(stream):
            p = m.prediction
            click.echo(f"{m.checkpoint_id}  {m.kind:<10} {m.nbytes:>9} B  {m.serializer:<7} "
                       f"p_fail={p.failure_probability:.2f}" if p else
                       f"{m.checkpoint_id}  {m.kind:<10} {m.nbytes:>9} B  {m.serializer:<7}")


@checkpoints.command("show", help="The manifest of one checkpoint, verified.")
@click.argument("checkpoint_id")
@click.option("--root", envvar="PREDCHECK_CHECKPOINT_ROOT", help="Checkpoint root URL (default: embedded).")
def checkpoints_show(checkpoint_id: str, root: str | None) -> None:
    store = _checkpoint_store(root)
    try:
        manifest, _ = store.read(checkpoint_id)
    except PredcheckError as e:
        raise click.ClickException(str(e)) from e
    click.echo(manifest.to_json().decode())


@checkpoints.command("gc", help="Delete torn checkpoints and all but the newest N good ones per stream.")
@click.option("--keep", default=3, show_default=True, help="Good checkpoints kept per stream.")
@click.option("--root", envvar="PREDCHECK_CHECKPOINT_ROOT", help="Checkpoint root URL (default: embedded).")
def checkpoints_gc(keep: int, root: str | None) -> None:
    store = _checkpoint_store(root)
    removed = 0
    for stream in store.streams():
        removed += store.collect_garbage(stream, keep, verify=True)
    click.echo(f"removed {removed} checkpoint(s)")


class Duration(click.ParamType):
    """A duration: a number of seconds, or a number with a unit s, m, h, d, w (``7d``, ``90s``, ``1.5h``)."""

    name = "duration"
    UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}

    def convert(self, value, param, ctx) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        text = str(value).strip().lower()
        unit = self.UNITS.get(text[-1:]) if text else None
        number = text[:-1] if unit else text
        try:
            seconds = float(number) * (unit or 1.0)
        except ValueError:
            self.fail(f"{value!r} is not a duration: use e.g. 7d, 12h, 30m, 90s or a number of seconds", param, ctx)
        if seconds < 0:
            self.fail(f"{value!r} is negative", param, ctx)
        return seconds


def _store_for_cli(store_url: str | None, spool_dir: str | None = None, instance=None):  # noqa: ANN001
    """``--store-url``; else the Dagster instance's dagster-postgres database (``instance``, or the one
    at DAGSTER_HOME); else the embedded SQLite."""
    from predcheck_dagster.metrics_store import MetricsStore
    from predcheck_dagster.resource import default_spool_dir, default_store_url, instance_store_url

    url = store_url
    if url is None and instance is not None:
        url = instance_store_url(instance)
    elif url is None and os.environ.get("DAGSTER_HOME") and os.path.exists(
            os.path.join(os.environ["DAGSTER_HOME"], "dagster.yaml")):
        from dagster import DagsterInstance

        with DagsterInstance.get() as home_instance:
            url = instance_store_url(home_instance)
    return MetricsStore(url or default_store_url(), spool_dir=spool_dir or default_spool_dir())


@main.group(help="Maintain the metrics store: migrate, flush the local spool, compact old samples.")
def store() -> None:
    pass


@store.command("migrate", help="Bring the metrics store's schema to this version's (run it before a deploy "
               "that changes the schema: a large step_samples table makes migration 3 take a while).")
@click.option("--store-url", envvar="PREDCHECK_STORE_URL", help=_STORE_URL_HELP)
def store_migrate(store_url: str | None) -> None:
    from predcheck_dagster.metrics_store import redact_url

    metrics = _store_for_cli(store_url)
    try:
        version = metrics.migrate()
    except PredcheckError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"{redact_url(metrics.url)}: schema version {version}")


@store.command("flush", help="Write the step records spooled on this host (while the store was unreachable) "
               "into the store. The sensors do this on every tick; this is for hosts without them.")
@click.option("--store-url", envvar="PREDCHECK_STORE_URL", help=_STORE_URL_HELP)
@click.option("--spool-dir", help="The spool directory (default: $DAGSTER_HOME/predcheck/spool).")
def store_flush(store_url: str | None, spool_dir: str | None) -> None:
    metrics = _store_for_cli(store_url, spool_dir)
    files = len(metrics.spool.files())
    click.echo(f"{files} spool file(s) in {metrics.spool.directory}")
    report = metrics.flush_spool()
    click.echo(report.message())
    if report.errors:
        sys.exit(1)


@store.command("compact", help="Downsample the samples of finished steps: keep one per --keep-every per step, "
               "for steps whose attempts all ended more than --older-than ago. Idempotent; safe while "
               "steps run (in-flight steps are not touched).")
@click.option("--older-than", "older_than", type=Duration(), default="7d", show_default=True,
              help="Only steps that ended longer ago than this.")
@click.option("--keep-every", "keep_every", type=Duration(), default="60s", show_default=True,
              help="Keep one sample per this period of each step (0: delete those samples).")
@click.option("--batch-steps", default=200, show_default=True, help="Steps per transaction.")
@click.option("--store-url", envvar="PREDCHECK_STORE_URL", help=_STORE_URL_HELP)
def store_compact(older_than: float, keep_every: float, batch_steps: int, store_url: str | None) -> None:
    from predcheck_dagster.metrics_store import redact_url

    metrics = _store_for_cli(store_url)
    click.echo(f"compacting {redact_url(metrics.url)}: samples of steps ended more than {older_than:.0f} s ago, "
               + (f"one per {keep_every:g} s kept" if keep_every else "all deleted"), err=True)
    state = {"done": 0, "shown_at": time.monotonic()}
    interactive = sys.stderr.isatty()
    with click.progressbar(length=1, label="steps", file=sys.stderr) as bar:
        def progress(done: int, total: int) -> None:
            bar.length = max(total, 1)
            bar.update(done - state["done"])
            state["done"] = done
            if not interactive and (time.monotonic() - state["shown_at"] >= PROGRESS_LINE_S or done == total):
                click.echo(f"  {done}/{total} steps compacted", err=True)  # a line for logs (no bar off a TTY)
                state["shown_at"] = time.monotonic()

        try:
            report = metrics.compact(older_than_s=older_than, keep_every_s=keep_every or None,
                                     batch_steps=batch_steps, progress=progress)
        except PredcheckError as e:
            raise click.ClickException(str(e)) from e
    click.echo(report.message())


@main.command(help="The in-flight steps of the instance at DAGSTER_HOME, with the forecast sensor's latest "
              "verdict: failure probability, risk, predicted remaining time, last checkpoint. Read only.")
@click.option("--store-url", envvar="PREDCHECK_STORE_URL", help=_STORE_URL_HELP)
@click.option("--risk-threshold", type=click.FloatRange(0.0, 1.0), default=0.5, show_default=True,
              help="Failure probability from which a step is shown as high risk (use your resource's "
              "risk_threshold).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line and step instead of the table.")
def status(store_url: str | None, risk_threshold: float, as_json: bool) -> None:
    from dagster import DagsterInstance

    from predcheck_dagster.status import in_flight_status, render_table

    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise click.UsageError("DAGSTER_HOME is not set: point it at the instance to look at (the one "
                               "`dagster dev` or your deployment uses).")
    if not os.path.isdir(home):
        raise click.UsageError(f"DAGSTER_HOME {home!r} is not a directory: point it at an existing Dagster instance.")
    try:
        with DagsterInstance.get() as instance:
            metrics = _store_for_cli(store_url, instance=instance)
            metrics.schema_version()  # a wrong --store-url is an error, not an empty table
            rows = in_flight_status(instance, metrics)
    except PredcheckError as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        for row in rows:
            click.echo(json.dumps(row.to_dict(risk_threshold)))
    elif not rows:
        click.echo(f"no step in flight in the instance at {home}")
    else:
        click.echo(render_table(rows, risk_threshold))
