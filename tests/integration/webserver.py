"""Start real Dagster processes for a test (``dagster-webserver`` on a free port) and stop them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parents[2]


# launchRun through GraphQL, as the UI's Launchpad does; the answer names the run or the error
LAUNCH = """
mutation Launch($executionParams: ExecutionParams!) {
  launchRun(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(url: str, query: str, variables: dict | None = None, timeout_s: float = 60) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return json.loads(resp.read())


@contextmanager
def running_webserver(dagster_home: Path, log_path: Path, timeout_s: float = 90,
                      workspace: Path = ROOT / "workspace.yaml", env: dict[str, str] | None = None) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(bin_dir / "dagster-webserver"), "-w", str(workspace), "-h", "127.0.0.1",
             "-p", str(port)], cwd=ROOT, env={**os.environ, **(env or {}), "DAGSTER_HOME": str(dagster_home)},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"dagster-webserver did not start; see {log_path}") from None
                time.sleep(0.5)
        yield url
    finally:
        stop_process_group(proc)


@contextmanager
def running_mlflow_server(directory: Path, timeout_s: float = 120) -> Iterator[str]:
    """A real ``mlflow server`` on a free port: SQLite backend and served artifacts (clients upload
    and download them over HTTP, ``mlflow-artifacts:/``) under ``directory``; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = directory / "mlflow-server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{directory}/mlflow.db",
             "--artifacts-destination", str(directory / "artifacts")],
            cwd=directory, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"mlflow server did not start; see {log_path}:\n"
                                       f"{log_path.read_text()[-3000:]}") from None
                time.sleep(0.5)
        yield url
    finally:
        stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen, timeout_s: float = 30) -> None:
    """SIGTERM a process started with ``start_new_session=True`` and its children; SIGKILL if needed."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def wait_for_run(instance, run_id: str, timeout_s: float = 300.0):
    """Poll until ``run_id`` finishes; returns the run."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            return run
        time.sleep(0.5)
    raise TimeoutError(f"run {run_id!r} did not finish within {timeout_s:.0f} s")


T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout_s: float, what: str, logs: Sequence[Path] = ()) -> T:
    """Poll ``predicate`` until it returns something truthy (returned); on timeout fail with the
    tails of ``logs``."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    tails = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs if p.exists())
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tails}")
