"""Metrics store write throughput for live samples, batched (what the sampler does), against one
insert per sample, on SQLite and on PostgreSQL (a database created for the run and dropped).

    .venv/bin/python benchmarks/profiler_store_throughput.py
"""

import os
import sys
import tempfile
import time
import uuid

SAMPLES = 60_000
BATCH = 500
SINGLE = 1_500
TARGET = 20_000
PG_ADMIN = os.environ.get("PREDCHECK_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")


def _samples(n: int, run: str) -> list[dict]:
    return [{"run_id": run, "step_key": f"step_{i % 50}", "ts": 1e9 + i, "elapsed_s": float(i), "cpu_s": i * 0.5,
             "rss_bytes": 100 << 20, "read_bytes": i, "write_bytes": i, "stage": "compute", "work_units": float(i),
             "input_bytes": 1 << 20} for i in range(n)]


def _rates(url: str) -> tuple[float, float]:
    from predcheck_dagster.metrics_store import MetricsStore

    store = MetricsStore(url)
    store.migrate()
    rows = _samples(SAMPLES, uuid.uuid4().hex)
    t = time.perf_counter()
    for i in range(0, SAMPLES, BATCH):
        store.add_samples(rows[i:i + BATCH])
    batched = SAMPLES / (time.perf_counter() - t)
    single_rows = _samples(SINGLE, uuid.uuid4().hex)
    t = time.perf_counter()
    for row in single_rows:
        store.add_samples([row])
    single = SINGLE / (time.perf_counter() - t)
    return batched, single


def main() -> None:
    sys.path.insert(0, os.path.dirname(__file__))
    import sqlalchemy as sa
    from _results import save

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["SQLite"] = _rates(f"sqlite:///{tmp}/m.db")
    name = f"predcheck_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        results["PostgreSQL"] = _rates(PG_ADMIN.rsplit("/", 1)[0] + f"/{name}")
    finally:
        from predcheck_dagster.metrics_store import _ENGINES

        for engine in _ENGINES.values():
            engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    rows = []
    for backend, (batched, single) in results.items():
        print(f"{backend:<10} batched {batched:10.0f} samples/s   one insert per sample {single:8.0f} samples/s")
        rows.append({"metric": f"sample writes, {backend}, batches of {BATCH}", "ours": round(batched),
                     "baseline": round(single), "unit": "samples/s", "ratio": round(batched / single, 1),
                     "target": f">= {TARGET} samples/s", "met": batched >= TARGET})
    save("profiler_store_throughput", "benchmarks/profiler_store_throughput.py", rows,
         {"samples": SAMPLES, "batch": BATCH, "single_inserts": SINGLE})


if __name__ == "__main__":
    main()
