"""Scale-out: steps on two real celery workers, everything else on PostgreSQL.

The Dagster instance and predcheck's metrics store share one fresh PostgreSQL database; MLflow's
backend (the registry the forecast sensor loads ``@champion`` from) has another. Steps run on two
``dagster-celery worker start`` processes, each with a node-local DAGSTER_HOME, consuming a
RabbitMQ queue of this test's own; checkpoints go to a directory both reach (``file://`` through
fsspec), as they would to NFS or S3.

A champion is trained on the step's (seeded) history of preemptions. A run is launched through the
webserver; the project's forecast sensor scores its in-flight step with the champion and asks it
for a checkpoint, which the step writes on its worker. Then the node is reclaimed: the test
SIGKILLs the step's process on that worker, then the worker itself. The project's resume sensor
re-executes the run from failure through the webserver, and the step restores the preemptive
checkpoint on the other worker and finishes the work.

The services must be up (they are in CI): an unreachable broker or database fails the test with
the reason.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy as sa
import yaml
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, build_sensor_context
from dagster._core.execution.stats import StepEventStatus

import predcheck_dagster as pc
from predcheck_dagster.demo.pipelines import crunch_unit
from predcheck_dagster.forecaster import train_and_register

from ..conftest import PG_ADMIN_URL, _create_database, _drop_database
from .webserver import LAUNCH, graphql, running_webserver, wait_for_run, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
BROKER_URL = os.environ.get("PREDCHECK_TEST_BROKER", "pyamqp://guest:guest@127.0.0.1:5672//")
JOB = "preemptible_celery_job"
STEP = "preemptible_crunch"
SEED, UNITS, UNIT_S = 5, 160, 0.05
MB = 1024 * 1024
WORKER_NAMES = ("node-a", "node-b")

def require_broker(url: str) -> None:
    from kombu import Connection

    try:
        with Connection(url, connect_timeout=5) as conn:
            conn.ensure_connection(max_retries=1)
    except Exception as e:  # noqa: BLE001 - any failure here means the same thing
        pytest.fail(f"RabbitMQ broker {url!r} is unreachable ({type(e).__name__}: {e}); start RabbitMQ on "
                    "127.0.0.1:5672 (guest/guest) or set PREDCHECK_TEST_BROKER", pytrace=False)


def require_postgres() -> None:
    try:
        engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 5})
        with engine.connect():
            pass
        engine.dispose()
    except sa.exc.OperationalError as e:
        pytest.fail(f"PostgreSQL {PG_ADMIN_URL!r} is unreachable ({e.orig}); start it on 127.0.0.1:5432 "
                    "(trust auth, database test) or set PREDCHECK_TEST_PG", pytrace=False)


def delete_queue(url: str, queue: str) -> None:
    """Remove this test's queue from the broker (its messages with it)."""
    from kombu import Connection

    with Connection(url, connect_timeout=5) as conn:
        conn.default_channel.queue_delete(queue)


@dataclass
class Worker:
    """A ``dagster-celery worker start`` process, its celery main process and pool child."""

    name: str
    nodename: str
    proc: subprocess.Popen
    log: Path

    def tree(self) -> set[int]:
        try:
            return {self.proc.pid, *(c.pid for c in psutil.Process(self.proc.pid).children(recursive=True))}
        except psutil.NoSuchProcess:
            return set()


def start_worker(name: str, token: str, home: Path, celery_yaml: Path, queue: str, log: Path) -> Worker:
    bin_dir = Path(sys.executable).parent
    # the CLI runs `celery` from PATH
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(ROOT),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(bin_dir / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app",
               "-y", str(celery_yaml), "-q", queue, "-n", f"{name}-{token}", "-l", "INFO",
               "--", "--concurrency=1", "--without-gossip", "--without-mingle"]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return Worker(name, f"{name}-{token}@{socket.gethostname()}", proc, log)


def kill_worker(worker: Worker) -> None:
    """SIGKILL the worker's whole process group: the node is gone."""
    try:
        os.killpg(worker.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    worker.proc.wait(timeout=30)


def expected_acc(seed: int, units: int) -> int:
    acc = seed
    for i in range(units):
        acc = crunch_unit(acc, seed * 1_000_003 + i)
    return acc


def step_events(instance: DagsterInstance, run_id: str, step_key: str) -> list:
    return [r.event_log_entry for r in instance.get_records_for_run(run_id, limit=10_000).records
            if r.event_log_entry.step_key == step_key]


def celery_worker_of(instance: DagsterInstance, run_id: str, step_key: str) -> tuple[str, int]:
    """The celery worker (its nodename, from dagster-celery's engine event) and the pid of the
    process that ran the step (from STEP_START)."""
    entries = step_events(instance, run_id, step_key)
    nodenames = [e.dagster_event.engine_event_data.metadata["Celery worker"].value for e in entries
                 if e.dagster_event and e.dagster_event.event_type == DagsterEventType.ENGINE_EVENT
                 and "Celery worker" in (e.dagster_event.engine_event_data.metadata or {})]
    pids = [e.dagster_event.pid for e in entries
            if e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_START]
    assert len(nodenames) == 1 and len(pids) == 1, (nodenames, pids)
    return nodenames[0], pids[0]


def run_errors(instance: DagsterInstance, run_id: str) -> str:
    """Every error the run's events carry (the executor's, the run's failure)."""
    errors = []
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        data = event.event_specific_data if event else None
        error = getattr(data, "error", None)
        if error is not None:
            errors.append(error.to_string())
    return "\n".join(errors)


def output_metadata(instance: DagsterInstance, run_id: str, step_key: str) -> dict[str, Any]:
    for entry in step_events(instance, run_id, step_key):
        if entry.dagster_event and entry.dagster_event.event_type == DagsterEventType.STEP_OUTPUT:
            return {k: v.value for k, v in entry.dagster_event.step_output_data.metadata.items()}
    raise AssertionError(f"no output of {step_key} in run {run_id}")


@pytest.fixture
def databases() -> Iterator[tuple[str, str]]:
    """Fresh databases: the Dagster instance's (predcheck's tables go there too) and MLflow's."""
    require_broker(BROKER_URL)
    require_postgres()
    dagster_db = _create_database()
    mlflow_db = _create_database()
    yield dagster_db, mlflow_db
    for url in (dagster_db, mlflow_db):
        _drop_database(url)


def seed_preemption_history(store: pc.MetricsStore, n: int = 60, seed: int = 0) -> None:
    """Past attempts of the step on spot nodes: most were preempted (crashed) partway."""
    rng = random.Random(seed)
    t = time.time() - 86_400
    for i in range(n):
        crashed = rng.random() < 0.95
        duration = rng.uniform(4, 8) * (rng.uniform(0.6, 0.9) if crashed else 1.0)
        run_id = f"history-{i}"
        store.add_samples([{"run_id": run_id, "step_key": STEP, "ts": t + k * 0.5, "elapsed_s": k * 0.5,
                            "cpu_s": k * 0.1, "rss_bytes": (90 + k) * MB, "work_units": k * 10.0,
                            "stage": "crunch"} for k in range(int(duration / 0.5))])
        store.record_step_run({
            "run_id": run_id, "root_run_id": run_id, "job": JOB, "step_key": STEP, "attempt": 1,
            "started_at": t, "ended_at": t + duration, "duration_s": duration,
            "outcome": "crashed" if crashed else "success",
            "error_class": "WorkerLostError" if crashed else None, "peak_rss_bytes": 120 * MB,
            "work_units": duration * 20, "measured_by": "event_log" if crashed else "profiler"})
        t += duration + 60


def test_step_killed_on_one_celery_worker_resumes_on_the_other(databases, tmp_path, monkeypatch) -> None:
    dagster_db, mlflow_db = databases
    token = uuid.uuid4().hex[:8]
    queue = f"predcheck-test-{token}"
    shared = tmp_path / "shared"  # the storage every node reaches (NFS, S3... in production)
    checkpoint_root = f"file://{shared}/checkpoints"
    mlflow_artifacts = f"file://{shared}/mlflow-artifacts"

    name = dagster_db.rsplit("/", 1)[1]
    dagster_yaml = yaml.safe_dump({
        "telemetry": {"enabled": False},
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"},
        "storage": {"postgres": {"postgres_db": {"username": "postgres", "hostname": "127.0.0.1", "port": 5432,
                                                 "db_name": name, "scheme": "postgresql+psycopg2"}}},
    })
    # results in this test's own database (dropped at the end); rpc:// would leave a reply queue per run
    # worker on the broker (they expire after a day)
    backend = "db+" + dagster_db
    executor_config = {"broker": BROKER_URL, "backend": backend, "config_source": {"task_default_queue": queue}}
    homes = {}
    for home_name in ("control", *WORKER_NAMES):  # the webserver's host, and each worker's node-local home
        home = tmp_path / home_name
        home.mkdir()
        (home / "dagster.yaml").write_text(dagster_yaml)
        homes[home_name] = home
    celery_yaml = tmp_path / "celery.yaml"
    celery_yaml.write_text(yaml.safe_dump({"execution": {"config": executor_config}}))
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(yaml.safe_dump({"load_from": [{"python_file": {
        "relative_path": str(ROOT / "tests/integration/celery_location.py"), "working_directory": str(ROOT),
        "location_name": "predcheck_celery"}}]}))
    monkeypatch.setenv("DAGSTER_HOME", str(homes["control"]))
    DagsterInstance.get().dispose()  # create Dagster's schema now, not in a race of the two workers
    # no periodic checkpoints in this run: the only checkpoint is the one the forecast asks for
    predcheck_config = {"checkpoint_root": checkpoint_root, "tracking_uri": mlflow_db, "checkpoint_interval_s": 600.0,
                        "poll_interval_s": 0.2, "sample_interval_s": 0.2}
    run_config = {
        "execution": {"config": executor_config},
        "ops": {"prepare_input": {"config": {"seed": SEED, "units": UNITS}},
                STEP: {"config": {"unit_s": UNIT_S, "spot_preemption": False}}},
        "resources": {"predcheck": {"config": predcheck_config},
                      "predcheck_io_manager": {"config": {"root_url": checkpoint_root}}},
    }

    workers = [start_worker(n, token, homes[n], celery_yaml, queue, tmp_path / f"worker-{n}.log")
               for n in WORKER_NAMES]
    logs = [w.log for w in workers] + [tmp_path / "webserver.log"]
    try:
        # while the workers boot: a champion forecaster trained on this step's history, in MLflow on PostgreSQL
        with DagsterInstance.get() as instance:
            store = pc.PredcheckResource(**predcheck_config).metrics_store(instance)
            assert store.url == dagster_db  # predcheck's tables live in the instance's own database
            seed_preemption_history(store)
            trained = train_and_register(store, mlflow_db, mlflow_artifacts, "predcheck-forecaster",
                                         str(ROOT / "mlflow_models" / "forecaster.py"), families=("xgboost",))
            assert (trained.model_version, trained.promoted) == ("1", True), trained.reason

        from celery import Celery

        control = Celery("predcheck-test", broker=BROKER_URL)

        def both_answer() -> bool:
            exited = [w.name for w in workers if w.proc.poll() is not None]
            if exited:
                raise AssertionError(f"celery worker(s) {exited} exited at start:\n"
                                     + "\n".join(w.log.read_text()[-3000:] for w in workers))
            return len(control.control.ping([w.nodename for w in workers], timeout=1.0)) == 2

        wait_until(both_answer, 90, "both celery workers to answer a ping", logs)
        sensors = {s.name: s for s in location_sensors()}
        with running_webserver(homes["control"], tmp_path / "webserver.log", workspace=workspace,
                               env={"PYTHONPATH": str(ROOT)}) as url, DagsterInstance.get() as instance:
            predcheck = pc.PredcheckResource(**predcheck_config, webserver_url=url)
            launched = graphql(url, LAUNCH, {"executionParams": {
                "selector": {"repositoryLocationName": "predcheck_celery", "repositoryName": "__repository__",
                             "pipelineName": JOB},
                "runConfigData": run_config}})["data"]["launchRun"]
            assert launched["__typename"] == "LaunchRunSuccess", launched
            parent_id = launched["run"]["runId"]

            # the forecast sensor scores the in-flight step with the champion and asks it for a checkpoint
            def step_running() -> bool:
                run = instance.get_run_by_id(parent_id)
                assert not run.is_finished, f"run {parent_id} ended ({run.status}) before {STEP} was scored"
                return any(s.step_key == STEP and s.status == StepEventStatus.IN_PROGRESS
                           for s in instance.get_run_step_stats(parent_id))

            wait_until(step_running, 90, f"{STEP} to start on a worker", logs)
            ticks: list[str] = []

            def preemptive_checkpoint() -> dict | None:
                if not store.predictions(run_id=parent_id) or not any("checkpoint (p×work > C)" in t for t in ticks):
                    with build_sensor_context(instance=instance, resources={"predcheck": predcheck}) as context:
                        ticks.append(sensors["predcheck_forecast_sensor"](context).skip_message)
                done = [c for c in store.checkpoints(run_id=parent_id) if c["step_key"] == STEP]
                return done[-1] if done else None

            checkpoint = wait_until(preemptive_checkpoint, 30, "a preemptive checkpoint", logs)
            assert checkpoint["kind"] == "preemptive", (checkpoint, ticks)
            assert all(" ms with model v1; " in t for t in ticks), ticks  # the champion served, not the heuristic

            # the node is reclaimed: SIGKILL the step's process, on whichever worker runs it
            killed_on, killed_pid = celery_worker_of(instance, parent_id, STEP)
            victim = next(w for w in workers if w.nodename == killed_on)
            survivor = next(w for w in workers if w is not victim)
            assert killed_pid in victim.tree(), (killed_pid, victim.tree())
            os.kill(killed_pid, signal.SIGKILL)
            parent = wait_for_run(instance, parent_id, timeout_s=120)
            assert parent.status == DagsterRunStatus.FAILURE
            errors = run_errors(instance, parent_id)
            assert f"[{STEP}]: billiard.exceptions.WorkerLostError: Worker exited prematurely: signal 9 (SIGKILL)" \
                in errors, errors  # celery's account of the killed step process
            kill_worker(victim)  # ... and its worker with it

            with build_sensor_context(instance=instance, resources={"predcheck": predcheck}) as context:
                tick = sensors["predcheck_resume_sensor"](context).skip_message
            assert "resumed 1 run(s); reconciled 1 crashed step(s)" in tick, tick
            child_id = instance.get_run_by_id(parent_id).tags["predcheck/resumed_by"]
            child = wait_for_run(instance, child_id, timeout_s=120)
            assert child.status == DagsterRunStatus.SUCCESS, "\n".join(
                e.user_message for e in instance.all_logs(child_id))[-3000:]

            resumed_on, resumed_pid = celery_worker_of(instance, child_id, STEP)
            assert resumed_on == survivor.nodename
            assert resumed_pid in survivor.tree()

            # resumed from the preemptive checkpoint, with the champion's prediction, not from zero
            assert child.tags["predcheck/resumed_from"] == checkpoint["checkpoint_id"]
            assert child.parent_run_id == parent_id and child.root_run_id == parent_id
            # p >= 0.5: the plan raises the priority, for the run queue and for the celery tasks
            assert (child.tags["dagster/priority"], child.tags["dagster-celery/run_priority"]) == ("1", "1")
            metadata = output_metadata(instance, child_id, STEP)
            assert metadata["restored_from"] == checkpoint["checkpoint_id"]
            assert metadata["restored_at_unit"] == checkpoint["work_units"] > 0
            assert metadata["units_executed"] == UNITS - metadata["restored_at_unit"]
            assert output_metadata(instance, child_id, "publish")["acc"] == expected_acc(SEED, UNITS)
            manifest = predcheck.checkpoint_store().read_manifest(checkpoint["checkpoint_id"])
            assert manifest.prediction.model_version == "1"
            assert manifest.prediction.failure_probability >= predcheck.risk_threshold

            # the metrics rows are in PostgreSQL
            attempts = {(r["run_id"], r["step_key"]): r for r in store.step_runs(job=JOB)}
            crashed = attempts[(parent_id, STEP)]
            # no STEP_FAILURE under celery (the step stays in progress): the reconciler says the run ended
            assert (crashed["outcome"], crashed["measured_by"], crashed["error_class"]) == (
                "crashed", "event_log", "RunEnded")
            resumed = attempts[(child_id, STEP)]
            assert (resumed["outcome"], resumed["executor"], resumed["host"]) == (
                "success", "celery", socket.gethostname())
            assert (child_id, "prepare_input") not in attempts  # from failure: upstream is not redone
            assert store.samples(parent_id, STEP) and store.samples(child_id, STEP)
            served = {(p["served_by"], p["model_version"]) for p in store.predictions(run_id=parent_id)}
            assert served == {("model", "1")}
    finally:
        for worker in workers:
            kill_worker(worker)
        delete_queue(BROKER_URL, queue)


def location_sensors() -> list:
    import importlib.util

    spec = importlib.util.spec_from_file_location("celery_location", ROOT / "tests/integration/celery_location.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.defs.sensors)
