"""Upkeep of the metrics store done by the sensors' ticks: flush spooled records, compact old samples.

Both run in the sensors' process (the daemon's code server), time-boxed so a tick stays short;
what is left is done by the next tick. Nothing here imports dagster.
"""

from __future__ import annotations

import time

from predcheck_dagster.metrics_store import MetricsStore

TICK_FLUSH_BUDGET_S = 20.0  # a tick starts no new spool file after this long
COMPACTION_PERIOD_S = 3600.0  # automatic compaction runs at most this often per process and store
COMPACTION_TICK_BUDGET_S = 20.0
_LAST_COMPACTION: dict[str, float] = {}


def flush_spool(store: MetricsStore) -> str | None:
    """Write records spooled on this host into the store; a line for the tick, or None if none."""
    spool = store.spool
    if spool is None or not spool.pending():
        return None
    return store.flush_spool(budget_s=TICK_FLUSH_BUDGET_S).message()


def compact_if_due(store: MetricsStore, older_than_s: float | None, keep_every_s: float,
                   now: float | None = None) -> str | None:
    """Run ``store.compact`` when automatic compaction is on and an hour has passed since the last run
    in this process; a line for the tick, or None."""
    if older_than_s is None:
        return None
    now = time.monotonic() if now is None else now
    last = _LAST_COMPACTION.get(store.url)
    if last is not None and now - last < COMPACTION_PERIOD_S:
        return None
    report = store.compact(older_than_s=older_than_s, keep_every_s=keep_every_s,
                           budget_s=COMPACTION_TICK_BUDGET_S)
    # An unfinished run (budget reached) is continued by the next tick; a finished one waits an hour.
    if report.finished:
        _LAST_COMPACTION[store.url] = now
    return report.message()
