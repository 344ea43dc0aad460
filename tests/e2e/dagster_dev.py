"""``dagster dev`` (webserver, daemon, code server) for a test: started on a free port with its own
DAGSTER_HOME, driven through GraphQL, stopped with its whole process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psutil

from tests.integration.webserver import free_port, graphql

ROOT = Path(__file__).resolve().parents[2]
LOCATION = "predcheck_demo"
REPOSITORY = "__repository__"
T = TypeVar("T")

LOCATION_STATUS = """
query { workspaceOrError { ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


@contextmanager
def running_dagster_dev(dagster_home: Path, log_path: Path, env: dict[str, str],
                        timeout_s: float = 120) -> Iterator[str]:
    """``dagster dev -w workspace.yaml`` on a free port; yields the base URL once the code location loaded.

    Guarantees: on exit the process group of ``dagster dev`` (webserver, daemon, code server, run and
    step workers) is gone: SIGTERM, then SIGKILL after 30 s; a process that left the group but runs
    with this DAGSTER_HOME is killed by its PID.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    env = {**env, "DAGSTER_HOME": str(dagster_home), "PREDCHECK_WEBSERVER_URL": url}
    with open(log_path, "w") as log:
        # A shell started in the background ignores SIGINT/SIGTERM for its children; `env` restores them
        # (DESIGN.md §6), and the new session makes the whole tree one process group.
        proc = subprocess.Popen(
            ["env", "--default-signal=INT,TERM", str(bin_dir / "dagster"), "dev", "-w", str(ROOT / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: _location_loaded(url, proc, log_path), timeout_s, f"dagster dev on {url} (see {log_path})")
        yield url
    finally:
        stop_group(proc, dagster_home)


def _location_loaded(url: str, proc: subprocess.Popen, log_path: Path) -> bool:
    if proc.poll() is not None:
        raise RuntimeError(f"dagster dev exited with code {proc.returncode}; see {log_path}")
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2):
            pass
        entries = graphql(url, LOCATION_STATUS)["data"]["workspaceOrError"]["locationEntries"]
    except OSError:
        return False
    entry = next((e for e in entries if e["name"] == LOCATION), None)
    if entry is None or entry["loadStatus"] != "LOADED":
        return False
    if entry["locationOrLoadError"]["__typename"] == "PythonError":
        raise RuntimeError(f"code location {LOCATION!r} failed to load: {entry['locationOrLoadError']['message']}")
    return True


def stop_group(proc: subprocess.Popen, dagster_home: Path, timeout_s: float = 30) -> None:
    """SIGTERM the process group of ``proc``, SIGKILL it if it lingers, then kill stragglers by PID."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with _suppress_lookup():
        os.killpg(proc.pid, signal.SIGKILL)  # a child that outlived the dagster dev process itself
    # SIGKILL is delivered at once, but a process takes a moment to go (longer on a loaded machine),
    # and one forked just before the group's kill is outside it: kill by PID until none is left
    deadline = time.monotonic() + timeout_s
    while (left := processes_of(dagster_home)) and time.monotonic() < deadline:
        for p in left:
            with _suppress_lookup():
                p.kill()
        time.sleep(0.1)


@contextmanager
def _suppress_lookup() -> Iterator[None]:
    try:
        yield
    except (ProcessLookupError, psutil.NoSuchProcess):
        pass


def processes_of(dagster_home: Path) -> list[psutil.Process]:
    """Live processes with this DAGSTER_HOME in their environment (ours: the home is a fresh temp dir)."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.status() != psutil.STATUS_ZOMBIE and p.environ().get("DAGSTER_HOME") == str(dagster_home):
                found.append(p)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found


def wait_for(probe: Callable[[], T], timeout_s: float, what: str, every_s: float = 0.5) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` and its last value."""
    deadline = time.monotonic() + timeout_s
    value: Any = None
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}; last seen: {value!r}")


# ---- GraphQL -------------------------------------------------------------------------------------
SENSORS = """
query Sensors($repo: RepositorySelector!) { sensorsOrError(repositorySelector: $repo) {
  __typename ... on Sensors { results { name sensorState { status } } } ... on PythonError { message } } }"""

SET_NUX_SEEN = "mutation { setNuxSeen }"

LAUNCH_RUN = """
mutation Launch($executionParams: ExecutionParams!) { launchRun(executionParams: $executionParams) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""

RUN = """
query Run($id: ID!) { runOrError(runId: $id) { __typename ... on Run {
  runId status parentRunId rootRunId tags { key value } } } }"""

RUN_EVENTS = """
query Events($id: ID!) { logsForRun(runId: $id) { __typename ... on EventConnection { events {
  __typename ... on MessageEvent { message stepKey eventType }
  ... on DisplayableEvent { metadataEntries { label
    ... on TextMetadataEntry { text } ... on IntMetadataEntry { intValue } ... on JsonMetadataEntry { jsonString }
    ... on FloatMetadataEntry { floatValue } } } } } } }"""


def repo_selector() -> dict[str, str]:
    return {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}


def sensor_statuses(url: str) -> dict[str, str]:
    result = graphql(url, SENSORS, {"repo": repo_selector()})["data"]["sensorsOrError"]
    assert result["__typename"] == "Sensors", result
    return {s["name"]: s["sensorState"]["status"] for s in result["results"]}


def launch_run(url: str, job: str, run_config: dict[str, Any], tags: dict[str, str] | None = None) -> str:
    params = {"selector": {**repo_selector(), "pipelineName": job}, "runConfigData": run_config,
              "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}}
    result = graphql(url, LAUNCH_RUN, {"executionParams": params})["data"]["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", result
    return result["run"]["runId"]


def run_info(url: str, run_id: str) -> dict[str, Any]:
    run = graphql(url, RUN, {"id": run_id})["data"]["runOrError"]
    assert run["__typename"] == "Run", run
    run["tags"] = {t["key"]: t["value"] for t in run["tags"]}
    return run


def run_events(url: str, run_id: str) -> list[dict[str, Any]]:
    result = graphql(url, RUN_EVENTS, {"id": run_id})["data"]["logsForRun"]
    assert result["__typename"] == "EventConnection", result
    return result["events"]


def metadata(event: dict[str, Any]) -> dict[str, Any]:
    """An event's metadata entries as label -> value (text, int, float or JSON string)."""
    out = {}
    for entry in event.get("metadataEntries") or []:
        values = [entry.get(k) for k in ("text", "intValue", "floatValue", "jsonString") if entry.get(k) is not None]
        out[entry["label"]] = values[0] if values else None
    return out
