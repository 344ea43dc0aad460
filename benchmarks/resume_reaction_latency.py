"""Reaction latency: from the forecast sensor's decision to the committed checkpoint.

Run A: the sensor flags a running step every tick (a history of failures makes it risky) and asks
for a checkpoint; latency = committed - requested, per request. Run B, the alternative without
request delivery: the same ticks, nothing asked; latency = the time from each tick to the step's
next periodic checkpoint. Same step, same adaptive interval, same poll interval (the default 1 s).

    .venv/bin/python benchmarks/resume_reaction_latency.py
"""

import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNITS, UNIT_S = 500, 0.05
TICK_S = 1.37  # not a multiple of the 1 s poll interval, so requests land at every phase of it


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"n": len(values), "p50": round(statistics.median(ordered), 3), "p90": round(pick(0.9), 3),
            "max": round(ordered[-1], 3), "min": round(ordered[0], 3)}


def _run(recon, instance, predcheck, store_url: str, flag: bool) -> tuple[str, list[float]]:
    from dagster import execute_job

    from predcheck_dagster.forecast_service import forecast_tick

    config = {"ops": {"prepare_input": {"config": {"units": UNITS}},
                      "preemptible_crunch": {"config": {"unit_s": UNIT_S, "spot_preemption": False}}},
              "resources": {"predcheck": {"config": {"store_url": store_url, "sample_interval_s": 0.5}}}}
    results: list = []
    thread = threading.Thread(target=lambda: results.append(execute_job(
        recon.get_reconstructable_job("preemptible_job"), instance=instance, run_config=config)))
    thread.start()
    ticks = []
    scorer = predcheck if flag else predcheck.model_copy(update={"risk_threshold": 1.1})
    while thread.is_alive():
        report = forecast_tick(instance, scorer)
        if report.scored:
            ticks.append(time.time())
        time.sleep(TICK_S)
    thread.join()
    return results[0].run_id, ticks


def main() -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, os.path.dirname(__file__))
    from _results import save, temp_dagster_home
    from dagster import DagsterInstance

    import predcheck_dagster as pc
    from predcheck_dagster.demo.driver import load_location

    home = temp_dagster_home()
    store_url = f"sqlite:///{home}/metrics.db"
    predcheck = pc.PredcheckResource(store_url=store_url, tracking_uri=f"sqlite:///{home}/mlflow.db")
    store = predcheck.metrics_store()
    now = time.time() - 3600
    for i in range(12):  # a step that failed 9 times in 12: the heuristic flags it (p = 10/16)
        store.record_step_run({"run_id": f"h{i}", "root_run_id": f"h{i}", "job": "preemptible_job",
                               "step_key": "preemptible_crunch", "attempt": 1, "started_at": now + i,
                               "ended_at": now + i + 0.5, "duration_s": 0.5,
                               "outcome": "crashed" if i < 9 else "success"})
    recon, _ = load_location(str(ROOT / "workspace.yaml"))
    with DagsterInstance.get() as instance:
        run_a, _ = _run(recon, instance, predcheck, store_url, flag=True)
        delivered = [r["honored_at"] - r["requested_at"] for r in store.checkpoint_requests(run_a) if r["honored_at"]]
        run_b, ticks = _run(recon, instance, predcheck, store_url, flag=False)
        created = sorted(c["created_at"] for c in store.checkpoints(run_id=run_b))
        periodic = [next(c for c in created if c >= t) - t for t in ticks if any(c >= t for c in created)]
    a, b = _percentiles(delivered), _percentiles(periodic)
    print(f"with delivery   : {a}")
    print(f"without delivery: {b}")
    ratio = a["p50"] / b["p50"]
    save("resume_reaction_latency", "benchmarks/resume_reaction_latency.py", [{
        "metric": f"decision to committed checkpoint, p50 (p90 {a['p90']} vs {b['p90']} s; n {a['n']}/{b['n']})",
        "ours": a["p50"], "baseline": b["p50"], "unit": "s", "ratio": round(ratio, 3),
        "target": "reported", "met": True}], {"with_delivery": a, "next_periodic_checkpoint": b,
                                              "poll_interval_s": 1.0, "tick_s": TICK_S})


if __name__ == "__main__":
    main()
