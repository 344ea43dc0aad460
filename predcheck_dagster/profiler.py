"""The step profiler: samples the step's process while it runs, times named stages.

What is measured, per process, from what the OS gives (psutil over /proc on Linux):
    - CPU seconds: user + system time of the step process (``cpu_times``), children excluded.
    - RSS: resident set size at each sample; peak RSS is the kernel's high-water mark
      (``getrusage(RUSAGE_SELF).ru_maxrss``), which also covers spikes between samples.
    - Disk I/O: ``read_bytes``/``write_bytes`` from /proc/<pid>/io (bytes that hit the block layer).
    - Network: Linux keeps no per-process network counters; the column stays NULL rather than
      holding an invented number.

Guarantees:
    - The sampler is a daemon thread; every error inside it is caught and counted. It never raises
      into the step, and a full buffer drops (and counts) samples instead of blocking.
    - ``stop()`` returns a summary even if no sample was ever taken.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psutil

LOG = logging.getLogger("predcheck.profiler")
MAX_BUFFERED_SAMPLES = 1000


def peak_rss_bytes() -> int:
    """The kernel's high-water mark of this process's RSS, bytes (Linux reports KiB)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class StepProfiler:
    """Samples one step attempt's process every ``interval_s`` and writes via ``sink``.

    Args:
        run_id, step_key: which step attempt the samples belong to.
        sink: called from the sampler thread with a batch of sample dicts (e.g. the metrics store's
            ``add_samples``); exceptions from it are counted and the batch is kept for the next try
            while the buffer has room.
        interval_s: seconds between samples.
    """

    def __init__(self, run_id: str, step_key: str, sink: Callable[[Sequence[dict[str, Any]]], None] | None,
                 interval_s: float = 5.0) -> None:
        self.run_id = run_id
        self.step_key = step_key
        self.interval_s = interval_s
        self.started_at = time.time()
        self._t0 = time.perf_counter()
        self._sink = sink
        self._proc = psutil.Process(os.getpid())
        self._cpu0 = self._cpu_s()
        self._io0 = self._io()
        self._buffer: deque[dict[str, Any]] = deque()
        self._rss_sum = 0
        self._rss_n = 0
        self.dropped_samples = 0
        self.sink_errors = 0
        self.self_cpu_s = 0.0  # CPU the sampler thread itself used (its own cost, measured)
        self.stage_durations: dict[str, float] = {}
        self.current_stage: str | None = None
        self.work_units: float | None = None
        self.input_bytes: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self) -> StepProfiler:
        if self._thread is None and self.interval_s > 0:
            self._thread = threading.Thread(target=self._loop, name=f"predcheck-sampler-{self.step_key}",
                                            daemon=True)
            self._thread.start()
        return self

    def stop(self) -> dict[str, Any]:
        """Stop sampling, flush what is buffered, and return the attempt's summary figures."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        with contextlib.suppress(Exception):
            self._sample()
            self._flush()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        io_now = self._io()
        return {
            "started_at": self.started_at,
            "duration_s": time.perf_counter() - self._t0,
            "cpu_s": self._cpu_s() - self._cpu0,
            "peak_rss_bytes": peak_rss_bytes(),
            "mean_rss_bytes": int(self._rss_sum / self._rss_n) if self._rss_n else None,
            "read_bytes": (io_now[0] - self._io0[0]) if io_now and self._io0 else None,
            "write_bytes": (io_now[1] - self._io0[1]) if io_now and self._io0 else None,
            "stage_durations": dict(self.stage_durations),
            "work_units": self.work_units,
            "host": socket.gethostname(),
            "dropped_samples": self.dropped_samples,
        }

    # ---- stages -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time a named stage; nested stages are attributed to the innermost one while they run."""
        previous, self.current_stage = self.current_stage, name
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stage_durations[name] = self.stage_durations.get(name, 0.0) + time.perf_counter() - t0
            self.current_stage = previous

    # ---- sampling -----------------------------------------------------------------------------
    def _cpu_s(self) -> float:
        try:
            t = self._proc.cpu_times()
            return t.user + t.system
        except psutil.Error:
            return 0.0

    def _io(self) -> tuple[int, int] | None:
        try:
            io = self._proc.io_counters()
            return io.read_bytes, io.write_bytes
        except (psutil.Error, AttributeError, NotImplementedError):
            return None

    def _sample(self) -> None:
        try:
            rss = self._proc.memory_info().rss
        except psutil.Error:
            return
        io_now = self._io()
        self._rss_sum += rss
        self._rss_n += 1
        if len(self._buffer) >= MAX_BUFFERED_SAMPLES:
            self._buffer.popleft()
            self.dropped_samples += 1
        self._buffer.append({
            "run_id": self.run_id, "step_key": self.step_key, "ts": time.time(),
            "elapsed_s": time.perf_counter() - self._t0, "cpu_s": self._cpu_s() - self._cpu0,
            "rss_bytes": rss,
            "read_bytes": (io_now[0] - self._io0[0]) if io_now and self._io0 else None,
            "write_bytes": (io_now[1] - self._io0[1]) if io_now and self._io0 else None,
            "stage": self.current_stage, "work_units": self.work_units, "input_bytes": self.input_bytes,
            "dropped_samples": self.dropped_samples,
        })

    def _flush(self) -> None:
        if self._sink is None or not self._buffer:
            return
        batch = list(self._buffer)
        try:
            self._sink(batch)
        except Exception as e:  # noqa: BLE001 - the profiler must never fail the step
            self.sink_errors += 1
            if self.sink_errors == 1:
                LOG.warning("predcheck: could not store samples of %r (%s); keeping them buffered",
                            self.step_key, e)
            return
        for _ in batch:
            self._buffer.popleft()

    def _loop(self) -> None:
        while True:
            started = time.thread_time()
            try:
                self._sample()
                self._flush()
            except Exception as e:  # noqa: BLE001 - the profiler must never fail the step
                self.sink_errors += 1
                LOG.debug("predcheck sampler error: %s", e)
            self.self_cpu_s += time.thread_time() - started
            if self._stop.wait(self.interval_s):
                return
