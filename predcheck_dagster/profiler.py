"""The step profiler: what a step attempt's process used, per attempt and per stage, and live samples.

What is measured (Linux; figures the kernel keeps per process, read from this process itself):
    - CPU: user and system seconds of the whole step process, all its threads, from
      ``getrusage(RUSAGE_SELF)`` (children excluded). The profiler's own threads are included;
      their cost is ``self_cpu_s`` (a few ms per minute).
    - RSS: the resident set size (``VmRSS`` of /proc/self/status) at every stage boundary and live
      sample. The mean is time-weighted over those observations. The peak is the kernel's
      high-water mark (``VmHWM``), which also covers spikes between observations. With
      ``reset_peak`` it is reset at each stage boundary (``/proc/self/clear_refs``, Linux >= 4.0),
      so each stage gets its own exact peak and the attempt's peak is the largest of them;
      without, the attempt's peak is the process's lifetime peak and stages get none.
    - Disk: ``read_bytes``/``write_bytes`` of /proc/self/io, bytes this process caused to be read
      from or written to the block layer (page-cache hits are not reads; ``write_bytes`` is
      counted when pages are dirtied).
    - Network: Linux keeps no per-process network counters (/proc/<pid>/net/dev is the *network
      namespace's*). The attempt records the namespace's non-loopback interface counters as
      ``netns_recv_bytes``/``netns_sent_bytes``: equal to the step's traffic only when the step
      owns its namespace (one step per container or pod); on a shared host they include every
      process in it. Nothing is recorded per stage.

Stages: ``dagster/load_inputs``, ``dagster/compute`` and ``dagster/handle_outputs`` are driven by
the step's own Dagster events (``step_events.py``); named stages (``stage(name)``) nest inside
them. A stretch of time counts towards the automatic stage in force and every open named stage.

Guarantees:
    - Nothing here raises into the step: every internal error is caught and counted
      (``profiler_errors``).
    - Live samples go through a bounded buffer to a writer thread: a sink that raises keeps them
      buffered for the next try, a sink that blocks never delays sampling or the step, and a
      full buffer drops the oldest sample. Every sample not stored when the attempt ends is
      counted in ``samples_dropped``.
    - ``stop()`` returns within about ``flush_timeout_s`` and returns a summary even if no
      sample was ever taken.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

LOG = logging.getLogger("predcheck.profiler")
MAX_BUFFERED_SAMPLES = 1000
FLUSH_TIMEOUT_S = 1.0
LOAD_INPUTS, COMPUTE, HANDLE_OUTPUTS = "dagster/load_inputs", "dagster/compute", "dagster/handle_outputs"
HOST = socket.gethostname()


class ProcReader:
    """This process's counters from /proc, through descriptors opened once per process and read
    with ``pread`` (about 20 µs for a full snapshot, against 70 µs through psutil)."""

    def __init__(self) -> None:
        self._pid: int | None = None
        self._fds: dict[str, int | None] = {}
        self._lock = threading.Lock()

    def _fd(self, name: str, flags: int = os.O_RDONLY) -> int | None:
        pid = os.getpid()
        if pid != self._pid:  # a forked child must not read its parent's files
            with self._lock:
                if pid != self._pid:
                    self._fds, self._pid = {}, pid
        if name not in self._fds:
            try:
                self._fds[name] = os.open(f"/proc/{pid}/{name}", flags)
            except OSError:
                self._fds[name] = None
        return self._fds[name]

    def _read(self, name: str, size: int = 4096) -> bytes | None:
        fd = self._fd(name)
        if fd is None:
            return None
        try:
            return os.pread(fd, size, 0)
        except OSError:
            return None

    def io(self) -> tuple[int, int] | None:
        """(read_bytes, write_bytes) of /proc/self/io, or None where it is not readable."""
        data = self._read("io", 512)
        if not data:
            return None
        fields = dict(line.split(b":", 1) for line in data.splitlines() if b":" in line)
        try:
            return int(fields[b"read_bytes"]), int(fields[b"write_bytes"])
        except (KeyError, ValueError):
            return None

    def memory(self) -> tuple[int | None, int | None]:
        """(VmRSS, VmHWM) in bytes from /proc/self/status."""
        data = self._read("status", 8192)
        rss = hwm = None
        for line in (data or b"").splitlines():
            if line.startswith(b"VmHWM:"):
                hwm = int(line.split()[1]) * 1024
            elif line.startswith(b"VmRSS:"):
                rss = int(line.split()[1]) * 1024
                break  # VmRSS follows VmHWM
        return rss, hwm

    def reset_peak(self) -> bool:
        """Reset this process's peak-RSS mark to its current RSS; False where the kernel refuses."""
        fd = self._fd("clear_refs", os.O_WRONLY)
        if fd is None:
            return False
        try:
            os.write(fd, b"5")
        except OSError:
            return False
        return True

    def netns(self) -> tuple[int, int] | None:
        """(received, sent) bytes summed over the network namespace's non-loopback interfaces."""
        data = self._read("net/dev", 65536)
        if not data:
            return None
        recv = sent = 0
        for line in data.splitlines()[2:]:
            name, _, counters = line.partition(b":")
            values = counters.split()
            if name.strip() == b"lo" or len(values) < 9:
                continue
            recv += int(values[0])
            sent += int(values[8])
        return recv, sent


PROC = ProcReader()


@dataclass(slots=True)
class Snapshot:
    """The process's counters at one moment (``wall`` is ``time.time()``)."""

    wall: float
    cpu_user_s: float
    cpu_system_s: float
    io: tuple[int, int] | None
    rss_bytes: int | None
    hwm_bytes: int | None


def take_snapshot(wall: float | None = None) -> Snapshot:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss, hwm = PROC.memory()
    if hwm is None:  # /proc/self/status unreadable: the same high-water mark, from getrusage (KiB)
        hwm = usage.ru_maxrss * 1024
    return Snapshot(time.time() if wall is None else wall, usage.ru_utime, usage.ru_stime, PROC.io(), rss, hwm)


@dataclass
class StageFigures:
    """What the process used while a stage was in force (sums over its stretches of time)."""

    wall_s: float = 0.0
    cpu_user_s: float = 0.0
    cpu_system_s: float = 0.0
    read_bytes: int | None = 0
    write_bytes: int | None = 0
    peak_rss_bytes: int | None = None

    def add(self, wall_s: float, user: float, system: float, io: tuple[int, int] | None,
            peak: int | None) -> None:
        self.wall_s += wall_s
        self.cpu_user_s += user
        self.cpu_system_s += system
        if io is None:
            self.read_bytes = self.write_bytes = None
        elif self.read_bytes is not None and self.write_bytes is not None:
            self.read_bytes += io[0]
            self.write_bytes += io[1]
        if peak is not None:
            self.peak_rss_bytes = max(self.peak_rss_bytes or 0, peak)

    def to_dict(self) -> dict[str, Any]:
        return {"wall_s": round(self.wall_s, 6), "cpu_user_s": round(self.cpu_user_s, 6),
                "cpu_system_s": round(self.cpu_system_s, 6), "read_bytes": self.read_bytes,
                "write_bytes": self.write_bytes, "peak_rss_bytes": self.peak_rss_bytes}


class StepProfiler:
    """Measures one step attempt of this process; see the module docstring for what and how.

    Args:
        run_id, step_key: which step attempt.
        sink: called from a writer thread with a batch of sample dicts (the metrics store's
            ``add_samples``); None keeps no samples.
        interval_s: seconds between live samples; 0 takes none.
        reset_peak: reset the kernel's peak-RSS mark at stage boundaries (per-stage peaks).
        flush_timeout_s: how long ``stop()`` waits for buffered samples to be stored.
    """

    def __init__(self, run_id: str, step_key: str, sink: Callable[[Sequence[dict[str, Any]]], None] | None,
                 interval_s: float = 5.0, reset_peak: bool = True, flush_timeout_s: float = FLUSH_TIMEOUT_S
                 ) -> None:
        self.run_id = run_id
        self.step_key = step_key
        self.interval_s = interval_s
        self.reset_peak = reset_peak
        self.flush_timeout_s = flush_timeout_s
        self.started_at: float = time.time()
        self.ended_at: float | None = None
        self.work_units: float | None = None
        self.input_bytes: int | None = None
        self.samples_taken = 0
        self.samples_stored = 0
        self.dropped_samples = 0
        self.sink_errors = 0
        self.internal_errors = 0
        self.self_cpu_s = 0.0  # CPU time of the profiler's own threads (measured with thread_time)
        self.stages: dict[str, StageFigures] = {}
        self._open: list[str] = []  # named stages, innermost last
        self._auto: str | None = COMPUTE
        self._loading = True  # until compute shows itself, time up to an input event is loading
        self._inputs_checked = False  # Dagster type-checks inputs (STEP_INPUT) once all are loaded
        self._sink = sink
        self._lock = threading.Lock()  # the ledger: step thread (stages, events) and sampler
        self._first: Snapshot | None = None
        self._last: Snapshot | None = None
        self._peaks_reset = False
        self._peak_seen: int | None = None  # the largest stretch peak, when peaks are reset
        self._rss_area = 0.0  # ∫ rss dt over the observations, for the time-weighted mean
        self._rss_span = 0.0
        self._rss_last: tuple[float, int] | None = None
        self._netns0: tuple[int, int] | None = None
        self._netns1: tuple[int, int] | None = None
        self._buffer: deque[dict[str, Any]] = deque()  # samples waiting for the sink, oldest first
        self._in_flight = 0  # samples handed to the sink that it has not confirmed yet
        self._buffer_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._flushed = threading.Event()
        self._closing = False
        self._abandoned = False
        self._sampler: threading.Thread | None = None
        self._writer: threading.Thread | None = None
        self._summary: dict[str, Any] | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    def start(self, at: float | None = None) -> StepProfiler:
        """Begin the attempt at ``at`` (an event's timestamp; default now) and start sampling."""
        if self._first is not None:
            return self
        self.started_at = time.time() if at is None else at
        try:
            self._begin(at)
            if self.interval_s > 0:
                # Both threads start now, before the op runs: a thread started later would reserve
                # its stack under whatever limits the op sets (an RLIMIT_AS memory cap, say) and
                # take that room from the op.
                if self._sink is not None:
                    self._writer = threading.Thread(target=self._write_loop, daemon=True,
                                                    name=f"predcheck-writer-{self.step_key}")
                    self._writer.start()
                self._sampler = threading.Thread(target=self._sample_loop, name=f"predcheck-sampler-{self.step_key}",
                                                 daemon=True)
                self._sampler.start()
        except Exception as e:  # noqa: BLE001 - the profiler must never fail the step
            self._error("start", e)
        return self

    def _begin(self, at: float | None) -> None:
        with self._lock:
            if self._first is not None:
                return
            if self.reset_peak:
                self._peaks_reset = PROC.reset_peak()
            snap = take_snapshot(at)
            self.started_at = snap.wall
            self._first = self._last = snap
            self._observe_rss(snap.wall, snap.rss_bytes)
            self._netns0 = PROC.netns()

    def end(self, at: float | None = None) -> None:
        """The attempt ended at ``at`` (its STEP_SUCCESS/STEP_FAILURE event): close the ledger and
        stop sampling. Quick; does not wait for the sink. Idempotent."""
        if self.ended_at is not None:
            return
        try:
            # an attempt that ends before its inputs were type-checked failed while loading them
            self._boundary(at, LOAD_INPUTS if self._loading and not self._inputs_checked else None)
            self._auto = None
            self.ended_at = self._last.wall if self._last else time.time()
            self._netns1 = PROC.netns()
        except Exception as e:  # noqa: BLE001
            self._error("end", e)
            self.ended_at = time.time() if at is None else at
        self._stop.set()
        if self._sampler is not None and self._sampler is not threading.current_thread():
            self._sampler.join(timeout=1.0)

    def stop(self) -> dict[str, Any]:
        """End the attempt if not yet ended, store buffered samples (waiting at most
        ``flush_timeout_s``), and return the attempt's summary figures."""
        if self._summary is not None:
            return self._summary
        self.end()
        try:
            self._final_flush()
        except Exception as e:  # noqa: BLE001
            self._error("flush", e)
        try:
            self._summary = self.summary()
        except Exception as e:  # noqa: BLE001 - the step ends with what could be measured
            self._error("summary", e)
            self._summary = self._empty_summary()
        return self._summary

    # ---- stages -------------------------------------------------------------------------------
    @property
    def current_stage(self) -> str | None:
        """The innermost named stage, else the automatic stage in force."""
        return self._open[-1] if self._open else self._auto

    @property
    def stage_durations(self) -> dict[str, float]:
        """Wall seconds per stage (automatic and named)."""
        return {name: figures.wall_s for name, figures in self.stages.items()}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """A named stage: wall time, CPU, disk I/O and peak RSS while it runs. Nested stages
        count towards every stage that encloses them."""
        self._safe_boundary()
        self._open.append(name)
        try:
            yield
        finally:
            self._safe_boundary()
            if self._open and self._open[-1] == name:
                self._open.pop()
            elif name in self._open:
                self._open.remove(name)

    def inputs_loaded(self, at: float | None = None, type_checked: bool = False) -> None:
        """An input was loaded (LOADED_INPUT) or type-checked (STEP_INPUT, after all are loaded):
        the time since the previous boundary was input loading. After the last such event the
        op's compute runs."""
        if self._loading:
            self._safe_boundary(at, LOAD_INPUTS)
            self._inputs_checked = self._inputs_checked or type_checked

    def output_started(self, at: float | None = None) -> None:
        """The op produced an output (STEP_OUTPUT): its IO manager handles it from now."""
        self._safe_boundary(at)
        self._auto = HANDLE_OUTPUTS

    def output_handled(self, at: float | None = None) -> None:
        """The IO manager stored the output (HANDLED_OUTPUT): back to compute."""
        self._safe_boundary(at)
        self._auto = COMPUTE

    def computing(self, at: float | None = None) -> None:
        """The op's code is running (its first checkpointer call, an event only compute emits)."""
        if self._loading:
            self._safe_boundary(at)

    def _safe_boundary(self, at: float | None = None, attribute_to: str | None = None) -> None:
        try:
            self._boundary(at, attribute_to)
        except Exception as e:  # noqa: BLE001 - the profiler must never fail the step
            self._error("stage boundary", e)

    def _boundary(self, at: float | None, attribute_to: str | None = None) -> None:
        """Charge the stretch since the last boundary to the stages in force (or ``attribute_to``
        instead of the automatic one)."""
        if self.ended_at is not None:
            return
        if self._first is None:
            self._begin(None)
        with self._lock:
            snap = take_snapshot(at)
            last = self._last
            assert last is not None
            wall = max(0.0, snap.wall - last.wall)
            io = (max(0, snap.io[0] - last.io[0]), max(0, snap.io[1] - last.io[1])) \
                if snap.io is not None and last.io is not None else None
            peak = snap.hwm_bytes if self._peaks_reset else None
            auto = attribute_to or self._auto
            for name in dict.fromkeys([*([auto] if auto else []), *self._open]):
                figures = self.stages.get(name)
                if figures is None:
                    figures = self.stages[name] = StageFigures()
                figures.add(wall, snap.cpu_user_s - last.cpu_user_s, snap.cpu_system_s - last.cpu_system_s, io, peak)
            if self._peaks_reset and snap.hwm_bytes is not None:
                self._peak_seen = max(self._peak_seen or 0, snap.hwm_bytes)
                PROC.reset_peak()
            self._observe_rss(snap.wall, snap.rss_bytes)
            self._last = snap
            self._loading = self._loading and attribute_to == LOAD_INPUTS

    def _observe_rss(self, wall: float, rss: int | None) -> None:
        if rss is None:
            return
        if self._rss_last is not None and wall > self._rss_last[0]:
            dt = wall - self._rss_last[0]
            self._rss_area += dt * (rss + self._rss_last[1]) / 2
            self._rss_span += dt
        if self._rss_last is None or wall >= self._rss_last[0]:
            self._rss_last = (wall, rss)

    # ---- summary ------------------------------------------------------------------------------
    def _empty_summary(self) -> dict[str, Any]:
        """The figures when the process's counters could not be read: times only, no invented numbers."""
        ended = self.ended_at if self.ended_at is not None else time.time()
        return {
            "started_at": self.started_at, "ended_at": ended, "duration_s": max(0.0, ended - self.started_at),
            "cpu_s": None, "cpu_user_s": None, "cpu_system_s": None, "peak_rss_bytes": None, "mean_rss_bytes": None,
            "read_bytes": None, "write_bytes": None, "netns_recv_bytes": None, "netns_sent_bytes": None,
            "stage_durations": self.stage_durations,
            "stage_profile": {name: figures.to_dict() for name, figures in self.stages.items()},
            "work_units": self.work_units, "host": HOST, "dropped_samples": self.dropped_samples,
            "profiler_errors": self.internal_errors + self.sink_errors,
        }

    def summary(self) -> dict[str, Any]:
        first, last = self._first, self._last
        ended = self.ended_at if self.ended_at is not None else time.time()
        if first is None or last is None:
            return self._empty_summary()
        peak = self._peak_seen if self._peaks_reset else None
        if peak is None:
            peak = last.hwm_bytes
        mean = (self._rss_area / self._rss_span) if self._rss_span > 0 else (
            self._rss_last[1] if self._rss_last else None)
        io = (last.io[0] - first.io[0], last.io[1] - first.io[1]) if first.io and last.io else (None, None)
        net = (self._netns1[0] - self._netns0[0], self._netns1[1] - self._netns0[1]) \
            if self._netns0 and self._netns1 else (None, None)
        user, system = last.cpu_user_s - first.cpu_user_s, last.cpu_system_s - first.cpu_system_s
        return {
            "started_at": self.started_at, "ended_at": ended, "duration_s": max(0.0, ended - self.started_at),
            "cpu_s": user + system, "cpu_user_s": user, "cpu_system_s": system,
            "peak_rss_bytes": peak, "mean_rss_bytes": int(mean) if mean is not None else None,
            "read_bytes": io[0], "write_bytes": io[1], "netns_recv_bytes": net[0], "netns_sent_bytes": net[1],
            "stage_durations": self.stage_durations,
            "stage_profile": {name: figures.to_dict() for name, figures in self.stages.items()},
            "work_units": self.work_units, "host": HOST, "dropped_samples": self.dropped_samples,
            "profiler_errors": self.internal_errors + self.sink_errors,
        }

    # ---- live samples -------------------------------------------------------------------------
    def _sample_loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            started = time.thread_time()
            try:
                self._take_sample()
            except Exception as e:  # noqa: BLE001 - the profiler must never fail the step
                self._error("sample", e)
            self.self_cpu_s += time.thread_time() - started

    def _take_sample(self) -> None:
        first = self._first
        if first is None:
            return
        snap = take_snapshot()
        with self._lock:
            self._observe_rss(snap.wall, snap.rss_bytes)
        self.samples_taken += 1
        if self._sink is None:
            return
        io = (snap.io[0] - first.io[0], snap.io[1] - first.io[1]) if snap.io and first.io else (None, None)
        sample = {
            "run_id": self.run_id, "step_key": self.step_key, "ts": snap.wall,
            "elapsed_s": snap.wall - self.started_at,
            "cpu_s": (snap.cpu_user_s - first.cpu_user_s) + (snap.cpu_system_s - first.cpu_system_s),
            "rss_bytes": snap.rss_bytes, "read_bytes": io[0], "write_bytes": io[1],
            "stage": self.current_stage, "work_units": self.work_units, "input_bytes": self.input_bytes,
            "dropped_samples": self.dropped_samples,  # dropped so far (buffer full, or the store refused them)
        }
        with self._buffer_lock:
            self._buffer.append(sample)
            self._trim()
        self._wake.set()

    def _trim(self) -> None:
        """Keep at most ``MAX_BUFFERED_SAMPLES`` waiting samples; count the oldest ones dropped."""
        while len(self._buffer) > MAX_BUFFERED_SAMPLES:
            self._buffer.popleft()
            self.dropped_samples += 1

    def _write_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._abandoned:
                return
            started = time.thread_time()
            stored = self._write_batch()
            while stored and self._closing and self._buffer:  # samples taken during the last write
                stored = self._write_batch()
            self.self_cpu_s += time.thread_time() - started
            if self._closing:  # one last try on close; what is still unstored then counts as dropped
                self._flushed.set()
                return

    def _write_batch(self) -> bool:
        """Hand what is buffered to the sink; True if it took it. While the sink runs, the batch is
        out of the buffer (``_in_flight``); if the sink fails it goes back, oldest first."""
        with self._buffer_lock:
            batch, self._buffer = list(self._buffer), deque()
            self._in_flight = len(batch)
        if not batch:
            return True
        try:
            assert self._sink is not None
            self._sink(batch)
        except Exception as e:  # noqa: BLE001 - kept buffered for the next try; counted
            self.sink_errors += 1
            if self.sink_errors == 1:
                LOG.warning("predcheck: could not store samples of %r (%s: %s); keeping them buffered",
                            self.step_key, type(e).__name__, e)
            with self._buffer_lock:
                self._in_flight = 0
                if not self._abandoned:
                    self._buffer.extendleft(reversed(batch))
                    self._trim()
            return False
        with self._buffer_lock:
            self._in_flight = 0
            if not self._abandoned:  # else they were counted as dropped before the sink returned
                self.samples_stored += len(batch)
        return True

    def release(self) -> None:
        """End the attempt without waiting for anything (an attempt no hook will record): the
        writer stores what it holds, if it can, and exits."""
        self.end()
        self._closing = True
        self._wake.set()

    def _final_flush(self) -> None:
        if self._writer is not None:
            self._closing = True  # the writer stores what is buffered once more, then exits
            self._wake.set()
            if not self._flushed.wait(self.flush_timeout_s):
                LOG.warning("predcheck: the metrics store did not take the samples of %r within %.1f s; "
                            "counting them as dropped", self.step_key, self.flush_timeout_s)
        with self._buffer_lock:
            self.dropped_samples += len(self._buffer) + self._in_flight
            self._buffer.clear()
            self._in_flight = 0
            self._abandoned = True
        self._wake.set()  # a writer waiting for work exits

    def _error(self, where: str, e: Exception) -> None:
        self.internal_errors += 1
        if self.internal_errors == 1:
            LOG.warning("predcheck: profiler error in %s of %r (%s: %s); the step is not affected",
                        where, self.step_key, type(e).__name__, e)
