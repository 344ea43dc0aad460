"""The demo loop, end to end, on a real Dagster instance.

1. Seed history: run the demo pipelines with real, injected failures (SIGKILL, MemoryError,
   a degraded HTTP service).
2. Train the forecaster (the ``train_forecaster`` asset job) and register it as ``champion``.
3. Close the loop: launch risky runs while the forecast sensor ticks; it flags them and requests
   a checkpoint; the steps checkpoint, then die; the resume logic re-executes them from failure,
   from their checkpoints, with the plan; they adapt and finish.

``predcheck demo --headless`` runs all three here and ticks the sensors itself; ``predcheck demo``
(``make demo``) runs 1 and 2, then hands over to ``dagster dev``, whose daemon ticks the sensors.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml
from dagster import DagsterInstance, build_sensor_context, execute_job
from dagster._core.definitions.reconstruct import ReconstructableRepository

from predcheck_dagster.demo.pipelines import spot_preemption_point
from predcheck_dagster.demo.service import FlakyService, serve_in_thread
from predcheck_dagster.resume_service import AUTO_RESUME_TAG

UNIT_S = 0.05
TICK_S = 0.5


@dataclass
class DemoSummary:
    runs: int = 0
    failures: int = 0
    checkpoints_written: int = 0
    preemptive_checkpoints: int = 0
    flagged_runs: int = 0
    resumes: int = 0
    resumed_successes: int = 0
    units_saved: float = 0.0
    model_version: str | None = None
    problems: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def loop_closed(self) -> bool:
        return not self.problems

    def render(self) -> str:
        lines = [
            "predcheck demo summary",
            f"  runs                  {self.runs}",
            f"  failed runs           {self.failures}",
            f"  checkpoints written   {self.checkpoints_written} ({self.preemptive_checkpoints} preemptive)",
            f"  runs flagged risky    {self.flagged_runs}",
            f"  resumes               {self.resumes} ({self.resumed_successes} succeeded)",
            f"  units of work saved   {self.units_saved:g}",
            f"  champion model        v{self.model_version}",
            "  timings               " + ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items()),
            "  loop closed           " + ("yes" if self.loop_closed else "NO: " + "; ".join(self.problems)),
        ]
        return "\n".join(lines)


def load_location(workspace_yaml: str) -> tuple[ReconstructableRepository, Any]:
    """The code location named by ``workspace.yaml`` (its python_file and working_directory)."""
    import importlib.util
    import sys

    with open(workspace_yaml) as f:
        entry = yaml.safe_load(f)["load_from"][0]["python_file"]
    base = os.path.dirname(os.path.abspath(workspace_yaml))
    working_dir = os.path.abspath(os.path.join(base, entry.get("working_directory", ".")))
    python_file = os.path.abspath(os.path.join(base, entry["relative_path"]))
    if working_dir not in sys.path:
        sys.path.insert(0, working_dir)
    spec = importlib.util.spec_from_file_location("predcheck_location", python_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recon = ReconstructableRepository.for_file(python_file, "defs", working_directory=working_dir)
    return recon, module


def seed_plan(quick: bool, api_url: str) -> list[tuple[str, dict[str, Any], str | None]]:
    """(job, run config, forced service state) for the history runs; deterministic."""
    # Sizes in an order with no pattern of outcomes (a crash after a crash, a success after a
    # success), so the forecaster cannot learn "they alternate" instead of "big inputs die".
    crunch_units = [20, 60, 70, 30, 40, 80, 25, 90, 100, 35, 45, 65] if not quick else [
        20, 80, 90, 30, 25, 100, 70, 35]
    batch_sizes = [2, 4, 12, 6, 3, 10, 8] if not quick else [2, 12, 4]
    api_states = ["healthy", "degraded", "healthy", "degraded", "healthy", "healthy"] if not quick else [
        "healthy", "degraded"]
    plan: list[tuple[str, dict[str, Any], str | None]] = []
    for i, units in enumerate(crunch_units):
        fraction = spot_preemption_point(units, f"seed-{i}")
        plan.append(("preemptible_job", {"ops": {
            "prepare_input": {"config": {"seed": i, "units": units}},
            "preemptible_crunch": {"config": {"unit_s": UNIT_S, "spot_preemption": False,
                                              "preempt_at_fraction": fraction}}}}, None))
    for batch in batch_sizes:
        plan.append(("memory_job", {"ops": {"memory_hungry_transform": {"config": {"batch_size": batch}}}}, None))
    for state in api_states:
        plan.append(("api_job", {"ops": {"call_flaky_api": {"config": {"base_url": api_url, "requests": 10}}}},
                     state))
    return plan


def _run(recon: ReconstructableRepository, instance: DagsterInstance, job: str, run_config: dict[str, Any],
         tags: dict[str, str] | None = None) -> Any:
    return execute_job(recon.get_reconstructable_job(job), instance=instance, run_config=run_config, tags=tags)


def seed_history(recon: ReconstructableRepository, module: Any, instance: DagsterInstance, service: FlakyService,
                 api_url: str, quick: bool, say: Callable[[str], None]) -> tuple[int, int]:
    from predcheck_dagster.reconcile import reconcile_run

    store = module.predcheck.metrics_store()
    plan = seed_plan(quick, api_url)
    failures = 0
    for i, (job, run_config, state) in enumerate(plan, 1):
        service.forced = state
        result = _run(recon, instance, job, run_config, tags={"predcheck/demo": "seed", AUTO_RESUME_TAG: "false"})
        failures += not result.success
        reconcile_run(instance, store, instance.get_run_by_id(result.run_id))  # as the resume sensor would
        say(f"  [{i:>2}/{len(plan)}] {job:<16} {'ok' if result.success else 'FAILED (injected)'}")
    service.forced = None
    return len(plan), failures


def train(recon: ReconstructableRepository, instance: DagsterInstance) -> str | None:
    """Run ``train_forecaster`` in one process (one import of great-expectations, torch and MLflow
    for its seven steps); the version ``champion_model`` registered, or None."""
    result = _run(recon, instance, "train_forecaster", {"execution": {"config": {"in_process": {}}}})
    if not result.success:
        return None
    for event in result.all_events:
        if event.is_step_materialization:
            value = event.step_materialization_data.materialization.metadata.get("model_version")
            if value is not None:
                return str(value.value)
    return None


def _watch(instance: DagsterInstance, sensor_def: Any, predcheck: Any, run_thread: threading.Thread) -> None:
    """Tick the forecast sensor (the real sensor definition) while the run's thread is alive."""
    while run_thread.is_alive():
        with build_sensor_context(instance=instance, resources={"predcheck": predcheck}) as context:
            sensor_def(context)
        time.sleep(TICK_S)


def close_loop(recon: ReconstructableRepository, module: Any, instance: DagsterInstance,
               say: Callable[[str], None], summary: DemoSummary) -> None:
    from predcheck_dagster.forecaster import warm_model
    from predcheck_dagster.resource import default_tracking_uri
    from predcheck_dagster.resume_service import ExecuteJobLauncher, resume_tick

    predcheck = module.predcheck
    risky = [
        ("preemptible_job", {"ops": {"prepare_input": {"config": {"seed": 42, "units": 120}}, "preemptible_crunch": {
            "config": {"unit_s": UNIT_S, "spot_preemption": False, "preempt_at_fraction": 0.8}}}}),
        ("memory_job", {"ops": {"memory_hungry_transform": {"config": {"batch_size": 12}}}}),
    ]
    launcher = ExecuteJobLauncher(recon)
    warm_model(predcheck.tracking_uri or default_tracking_uri(), predcheck.model_uri)
    for job, run_config in risky:
        results: list[Any] = []
        thread = threading.Thread(target=lambda j=job, c=run_config, out=results: out.append(
            _run(recon, instance, j, c)))
        thread.start()
        _watch(instance, module.forecast_sensor, predcheck, thread)
        thread.join()
        result = results[0]
        run_id = result.run_id
        run = instance.get_run_by_id(run_id)
        summary.runs += 1
        summary.failures += int(not result.success)
        flagged = run.tags.get("predcheck/risk") == "high"
        summary.flagged_runs += int(flagged)
        say(f"  {job}: run {run_id[:8]} {'succeeded' if result.success else 'failed'}; risk tag "
            f"{run.tags.get('predcheck/risk', 'none')} (p_fail {run.tags.get('predcheck/failure_probability', '-')})")
        if result.success:
            summary.problems.append(f"{job} run {run_id[:8]} was expected to fail and did not")
            continue
        report = resume_tick(instance, predcheck, launcher)
        new_run_id = report.launched.get(run_id)
        if new_run_id is None:
            summary.problems.append(f"{job} run {run_id[:8]} was not resumed: {report.message()}")
            continue
        summary.resumes += 1
        summary.runs += 1
        new_run = instance.get_run_by_id(new_run_id)
        ok = new_run.status.value == "SUCCESS"
        summary.resumed_successes += int(ok)
        say(f"  resumed as {new_run_id[:8]} from {new_run.tags.get('predcheck/resumed_from')}: "
            f"{'SUCCESS' if ok else new_run.status.value}")
        if not ok:
            summary.problems.append(f"resumed run {new_run_id[:8]} did not succeed")
        if job == "preemptible_job" and not flagged:
            summary.problems.append(f"the forecaster did not flag {job} run {run_id[:8]} before it died")
    store = predcheck.metrics_store()
    checkpoints = store.checkpoints()
    summary.checkpoints_written = len(checkpoints)
    summary.preemptive_checkpoints = sum(c["kind"] == "preemptive" for c in checkpoints)
    if summary.preemptive_checkpoints == 0:
        summary.problems.append("no preemptive checkpoint was requested and committed")
    summary.units_saved = _units_saved(instance, store)


def _units_saved(instance: DagsterInstance, store: Any) -> float:
    """Units of work that resumed runs did not redo: the work units of the checkpoints they restored."""
    saved = 0.0
    by_id = {c["checkpoint_id"]: c for c in store.checkpoints()}
    for resume in store.resumes():
        if resume["status"] != "launched" or not resume["new_run_id"]:
            continue
        run = instance.get_run_by_id(resume["new_run_id"])
        for checkpoint_id in (run.tags.get("predcheck/resumed_from") or "").split(","):
            saved += (by_id.get(checkpoint_id) or {}).get("work_units") or 0.0
    return saved


def run_demo(workspace_yaml: str, quick: bool = False, close: bool = True,
             say: Callable[[str], None] = print) -> DemoSummary:
    """Seed, train and (when ``close``) close the loop on the instance at ``$DAGSTER_HOME``."""
    summary = DemoSummary()
    recon, module = load_location(workspace_yaml)
    instance = DagsterInstance.get()
    service = FlakyService(fail_rate=0.6, slow_s=0.2)
    server, api_url = serve_in_thread(service)
    try:
        t0 = time.time()
        say("seeding history: demo pipelines with injected failures")
        runs, failures = seed_history(recon, module, instance, service, api_url, quick, say)
        summary.runs, summary.failures = runs, failures
        summary.seconds["seed"] = time.time() - t0
        t0 = time.time()
        say("training the forecaster (asset job train_forecaster) and registering it in MLflow")
        summary.model_version = train(recon, instance)
        summary.seconds["train"] = time.time() - t0
        if summary.model_version is None:
            summary.problems.append("training failed: see the train_forecaster run's logs")
            return summary
        if close:
            t0 = time.time()
            say("closing the loop: risky runs under the forecast sensor, then resumes")
            close_loop(recon, module, instance, say, summary)
            summary.seconds["loop"] = time.time() - t0
    finally:
        server.shutdown()
    return summary
