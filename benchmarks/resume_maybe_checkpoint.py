"""Cost of ``Checkpointer.maybe_checkpoint`` when nothing is due, against a checkpointer that asks
the metrics store for a request on every call (what a step without predcheck's polling would do).

    .venv/bin/python benchmarks/resume_maybe_checkpoint.py
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from _results import save  # noqa: E402

from predcheck_dagster.checkpoint_store import CheckpointStore  # noqa: E402
from predcheck_dagster.checkpointer import Checkpointer, CheckpointSettings, StepIdentity  # noqa: E402
from predcheck_dagster.metrics_store import MetricsStore  # noqa: E402
from predcheck_dagster.profiler import StepProfiler  # noqa: E402

CALLS = 200_000
BATCHES = 25
TARGET_US = 5.0


def per_call_us(fn, calls: int) -> float:
    samples = []
    for _ in range(BATCHES):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - t) / calls * 1e6)
    return statistics.median(samples)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        metrics = MetricsStore(f"sqlite:///{tmp}/m.db")
        metrics.migrate()
        identity = StepIdentity(job="bench", run_id="run", root_run_id="run", step_key="step")
        profiler = StepProfiler("run", "step", sink=None, interval_s=0)
        ck = Checkpointer(identity, CheckpointStore(tmp), metrics, profiler,
                          settings=CheckpointSettings(poll_interval_s=3600, fixed_interval_s=3600))
        ck._next_poll = ck._next_due = time.monotonic() + 3600  # noqa: SLF001 - nothing due during the run
        state = {"i": 1}
        ours = per_call_us(lambda: ck.maybe_checkpoint(state), CALLS)
        naive = per_call_us(lambda: metrics.pending_request("run", "step"), 500)
    ratio = ours / naive
    print(f"maybe_checkpoint (nothing due): {ours:.3f} µs median; polling the store each call: {naive:.1f} µs; "
          f"ratio {ratio:.4f}")
    save("resume_maybe_checkpoint", "benchmarks/resume_maybe_checkpoint.py", [{
        "metric": "maybe_checkpoint when nothing is due (median per call)", "ours": round(ours, 3),
        "baseline": round(naive, 1), "unit": "µs", "ratio": round(ratio, 5), "target": f"<= {TARGET_US} µs",
        "met": ours <= TARGET_US}], {"calls_per_batch": CALLS, "batches": BATCHES})


if __name__ == "__main__":
    main()
