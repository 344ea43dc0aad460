"""Training both forecaster families on the whole shared Google 2011 history, against 10 min on 2 cores.

Reads all job_events parts in ../shared/data, builds every job's features at its start (the same
sweep as training on a metrics store), and trains XGBoost and the LSTM on all of it, label
``fail`` (each family holds out its newest 20 % for early stopping and calibration). Reports the
wall time of each phase and the peak memory.

    .venv/bin/python benchmarks/forecast_training.py [--data ../shared/data]
"""

import argparse
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 600.0


def main() -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, os.path.dirname(__file__))
    from _results import save

    from predcheck_dagster.models import TrainingData, fit_family
    from predcheck_dagster.trace_eval import attempts_of, build_rows, labels_of
    from predcheck_dagster.traces import read_trace

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    args = parser.parse_args()
    phases = {}
    t0 = time.perf_counter()
    frame, report = read_trace("google2011", [os.path.join(args.data, "google2011", "job_events")], progress=False)
    phases["read_s"] = time.perf_counter() - t0
    t = time.perf_counter()
    attempts = attempts_of(frame)
    rows = build_rows(attempts)
    labels = labels_of("fail", attempts, rows)
    phases["features_s"] = time.perf_counter() - t
    data = TrainingData(rows, {"failure": labels}, frame["started_at"].to_numpy(float),
                        frame["ended_at"].to_numpy(float))
    for family in ("xgboost", "lstm"):
        t = time.perf_counter()
        fit_family(family, data, progress=print)
        phases[f"train_{family}_s"] = time.perf_counter() - t
    total = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = os.getloadavg()[0]
    print(f"{report.attempts} jobs: " + ", ".join(f"{k} {v:.0f}s" for k, v in phases.items())
          + f"; total {total:.0f}s; peak RSS {peak_mb:.0f} MB; load average {load:.1f}")
    save("forecast_training", "benchmarks/forecast_training.py", [{
        "metric": f"train XGBoost + LSTM on the whole shared Google history ({report.attempts:,} jobs; "
                  f"features {phases['features_s']:.0f} s, XGBoost {phases['train_xgboost_s']:.0f} s, "
                  f"LSTM {phases['train_lstm_s']:.0f} s; peak {peak_mb / 1024:.1f} GB)",
        "ours": round(total, 1), "baseline": BUDGET_S, "unit": "s", "ratio": round(total / BUDGET_S, 3),
        "target": f"<= {BUDGET_S:.0f} s on 2 cores", "met": total <= BUDGET_S}],
         {"phases_s": phases, "peak_rss_mb": peak_mb, "jobs": report.attempts, "load_average": load})


if __name__ == "__main__":
    main()
