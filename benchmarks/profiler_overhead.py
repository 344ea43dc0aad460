"""Step overhead of predcheck's profiling: a 30-op chain under the multiprocess executor, plain
against instrumented (``pc.instrument``: hooks, the event listener, the profiler and its sampler,
one ``step_runs`` row per step), in the same run of this script, interleaved (plain/instrumented,
then instrumented/plain, ...), medians over the repetitions.

- Wall-time ratio: execute_job of each run, timed with a monotonic clock, instrumented / plain
  (target <= 1.03).
- Added latency per step (target <= 20 ms): STEP_START -> STEP_SUCCESS of the same step in the
  paired plain and instrumented runs, instrumented minus plain, median over steps and pairs.
  Reported beside it: the same with the hooks (to the step's last event) and with the whole step
  process (STEP_WORKER_STARTING -> the step's last event: spawn, imports, resource init).

Other engineers share this machine's 2 cores: the load average before and after is recorded.

    .venv/bin/python benchmarks/profiler_overhead.py [repetitions, default 3]
"""

import compileall
import os
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
OPS = int(os.environ.get("PREDCHECK_BENCH_OPS", "30"))  # 30; fewer only to try the script out
WALL_TARGET = 1.03
LATENCY_TARGET_MS = 20.0


def _step_spans(instance, run_id: str) -> dict[str, dict[str, float]]:
    """Per step: body (STEP_START->STEP_SUCCESS), with hooks (->last event), process (worker->last)."""
    from dagster import DagsterEventType

    marks: dict[str, dict[str, float]] = defaultdict(dict)
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or event.step_key is None:
            continue
        step = marks[event.step_key]
        kind = event.event_type
        if kind == DagsterEventType.STEP_WORKER_STARTING:
            step["worker"] = entry.timestamp
        elif kind == DagsterEventType.STEP_WORKER_STARTED:
            step["spawned"] = entry.timestamp
        elif kind == DagsterEventType.STEP_START:
            step["start"] = entry.timestamp
        elif kind == DagsterEventType.STEP_SUCCESS:
            step["success"] = entry.timestamp
        step["last"] = max(step.get("last", 0.0), entry.timestamp)
    return {key: {"body": m["success"] - m["start"], "with_hooks": m["last"] - m["start"],
                  "process": m["last"] - m["worker"],
                  # where the process's time goes: spawn + interpreter + Dagster, then loading the
                  # code location, planning and initialising resources, then hooks after the step
                  "spawn": m["spawned"] - m["worker"], "load": m["start"] - m["spawned"],
                  "hooks": m["last"] - m["success"]} for key, m in marks.items()}


def _children_cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(instance, module: str) -> tuple[float, dict[str, dict[str, float]], float]:
    from dagster import execute_job
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    # as dagster dev does: each step process loads the code location's Definitions, then the job
    job = ReconstructableRepository.for_module(module, "defs", working_directory=str(HERE)).get_reconstructable_job(
        "chain")
    cpu = _children_cpu_s()
    started = time.perf_counter()  # monotonic: this machine's wall clock is stepped now and then
    with execute_job(job, instance=instance) as result:
        assert result.success, f"{module} failed"
        assert result.output_for_node(f"step_{OPS - 1:02d}") == OPS - 1
        run_id = result.run_id
    wall = time.perf_counter() - started
    cpu = _children_cpu_s() - cpu  # the step processes' own CPU (they are this process's children)
    return wall, _step_spans(instance, run_id), cpu / OPS


def main() -> None:
    repetitions = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    sys.path.insert(0, str(HERE))
    from _results import save, temp_dagster_home
    from dagster import DagsterInstance

    # an installed package ships its bytecode; here (PYTHONDONTWRITEBYTECODE may be set) compile it
    # once, or every step process would compile predcheck from source and the plain side would not
    compileall.compile_dir(str(ROOT / "predcheck_dagster"), quiet=1)
    compileall.compile_dir(str(HERE), quiet=1, maxlevels=0)
    temp_dagster_home()
    os.environ["PREDCHECK_BENCH_OPS"] = str(OPS)
    # step processes (spawned) import the helper modules and this checkout's predcheck_dagster
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])
    load_before = os.getloadavg()
    walls: dict[str, list[float]] = {"plain": [], "instrumented": []}
    spans: dict[str, list[dict[str, dict[str, float]]]] = {"plain": [], "instrumented": []}
    cpu_per_process: dict[str, list[float]] = {"plain": [], "instrumented": []}
    modules = {"plain": "_overhead_plain", "instrumented": "_overhead_instrumented"}
    with DagsterInstance.get() as instance:
        for rep in range(repetitions):
            order = ("plain", "instrumented") if rep % 2 == 0 else ("instrumented", "plain")
            for side in order:
                wall, steps, cpu_per_step = _run(instance, modules[side])
                walls[side].append(wall)
                spans[side].append(steps)
                cpu_per_process[side].append(cpu_per_step)
                print(f"  step processes: {cpu_per_step * 1000:.0f} ms CPU each", flush=True)
                print(f"rep {rep + 1}/{repetitions} {side:12s} wall {wall:6.2f} s, load {os.getloadavg()[0]:.2f}",
                      flush=True)
        store = __import__("predcheck_dagster").PredcheckResource().metrics_store()
        recorded = len(store.step_runs(job="chain"))
    load_after = os.getloadavg()
    assert recorded == OPS * repetitions, f"{recorded} step_runs rows, expected {OPS * repetitions}"

    added: dict[str, list[float]] = {"body": [], "with_hooks": [], "process": [], "spawn": [], "load": [],
                                     "hooks": []}
    for plain, ours in zip(spans["plain"], spans["instrumented"]):
        for step, theirs in plain.items():
            for span in added:
                added[span].append(ours[step][span] - theirs[span])
    median = {span: statistics.median(values) * 1000 for span, values in added.items()}
    plain_wall, ours_wall = statistics.median(walls["plain"]), statistics.median(walls["instrumented"])
    ratio = ours_wall / plain_wall
    plain_body = statistics.median(s["body"] for run in spans["plain"] for s in run.values()) * 1000
    print(f"wall: plain {plain_wall:.2f} s, instrumented {ours_wall:.2f} s, ratio {ratio:.3f}")
    print(f"added per step (median): body {median['body']:+.1f} ms (plain body {plain_body:.0f} ms), "
          f"with hooks {median['with_hooks']:+.1f} ms, whole step process {median['process']:+.1f} ms")
    print(f"  of which: spawn {median['spawn']:+.1f} ms, code location + plan + resources {median['load']:+.1f} ms, "
          f"hooks {median['hooks']:+.1f} ms")
    cpu_plain = statistics.median(cpu_per_process["plain"]) * 1000
    cpu_ours = statistics.median(cpu_per_process["instrumented"]) * 1000
    print(f"CPU per step process (user+system, load-independent): plain {cpu_plain:.0f} ms, "
          f"instrumented {cpu_ours:.0f} ms ({cpu_ours - cpu_plain:+.0f} ms)")
    print(f"load average 1/5/15 min: before {load_before}, after {load_after}")
    spread = f"plain runs {min(walls['plain']):.0f}-{max(walls['plain']):.0f} s"  # the noise floor
    load = f"{spread}; load avg {load_before[0]:.1f} -> {load_after[0]:.1f} on {os.cpu_count()} cores, shared"
    save("profiler_overhead", "benchmarks/profiler_overhead.py", [
        {"metric": f"wall time, {OPS}-op chain, multiprocess, median of {repetitions} interleaved runs ({load})",
         "ours": round(ours_wall, 2), "baseline": round(plain_wall, 2), "unit": "s", "ratio": round(ratio, 3),
         "target": f"<= {WALL_TARGET}", "met": ratio <= WALL_TARGET},
        {"metric": f"added latency per step, STEP_START->STEP_SUCCESS, median (with hooks "
                   f"{median['with_hooks']:+.1f} ms; whole step process {median['process']:+.1f} ms)",
         "ours": round(plain_body + median["body"], 1), "baseline": round(plain_body, 1), "unit": "ms",
         "ratio": round(median["body"], 1), "target": f"<= {LATENCY_TARGET_MS:.0f} ms added",
         "met": median["body"] <= LATENCY_TARGET_MS},
    ], {"repetitions": repetitions, "walls": walls, "added_ms_median": median,
        "cpu_ms_per_step_process": {"plain": round(cpu_plain, 1), "instrumented": round(cpu_ours, 1)},
        "load_before": load_before,
        "load_after": load_after, "note": "the ratio column of the latency row is the added ms"})


if __name__ == "__main__":
    main()
