"""The local spool: step records kept on disk while the metrics store is unreachable.

One append-only JSON-lines file per process (``{host}-{pid}-{random}.jsonl``) in a directory per
metrics store. Each ``append`` writes one line, ``{"kind": "samples" | "step_run", "rows": [...]}``,
and fsyncs it: a batch handed over by the sampler or the hooks is on disk before ``append``
returns. Any process (a later step, the sensors, ``predcheck store flush``) drains the files into
the store once it answers again.

Concurrency, with ``flock`` (processes of one host; the spool directory must be local):
    - The owner takes the file's lock without waiting for each append. If the lock is held (a
      flusher is reading the file) or the file was unlinked (a flusher drained it), the owner opens
      a new file: an append never waits for a flush.
    - A flusher takes the lock without waiting (a busy file is left for the next flush), reads every
      line, hands the rows to the store, and unlinks the file while still holding the lock. Lines
      written later go to the owner's next file.

Guarantees:
    - A file is unlinked only after all its rows were accepted by the store. A flush interrupted
      at any point leaves the file in place; the next flush writes its rows again, and the store's
      natural keys turn the repeats into no-ops (no duplicate rows).
    - A line that does not parse (a process killed in the middle of a write) is moved to
      ``rejected-*.jsonl`` next to the spool files, counted, and never blocks the rest.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

SUFFIX = ".jsonl"
REJECTED_PREFIX = "rejected-"
KINDS = ("samples", "step_run")


@dataclass
class DrainReport:
    """What one drain of the spool did."""

    files: int = 0
    step_runs: int = 0
    samples: int = 0
    rejected_lines: int = 0
    busy_files: int = 0
    left_files: int = 0
    errors: list[str] = field(default_factory=list)

    def message(self) -> str:
        text = (f"spool: flushed {self.files} file(s) ({self.step_runs} step run(s), {self.samples} sample(s))"
                f"; {self.left_files} file(s) left")
        if self.rejected_lines:
            text += f"; {self.rejected_lines} unreadable line(s) moved to {REJECTED_PREFIX}*"
        if self.errors:
            text += f"; stopped: {self.errors[0]}"
        return text


class Spool:
    """The spool directory of one metrics store. Constructing one does no I/O.

    Args:
        directory: where the files live; created on the first append.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._fd_pid: int | None = None
        self._path: str | None = None

    # ---- the owner's side ---------------------------------------------------------------------
    def append(self, kind: str, rows: Sequence[dict[str, Any]]) -> str:
        """Write one batch as one line and fsync it; returns the file it went to.

        Raises:
            OSError: the directory is not writable (disk full, read-only): the caller keeps the rows.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown spool record kind {kind!r}: expected one of {KINDS}")
        line = (json.dumps({"kind": kind, "rows": list(rows)}, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            fd = self._locked_fd()
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
            assert self._path is not None
            return self._path

    def _locked_fd(self) -> int:
        """This process's current file, locked; a new file when a flusher holds or drained the old one."""
        if self._fd is not None and self._fd_pid == os.getpid():
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._close()
            else:
                if os.fstat(self._fd).st_nlink > 0:
                    return self._fd
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                self._close()
        elif self._fd is not None:  # inherited across fork: the parent keeps its file, the child opens its own
            self._close()
        os.makedirs(self.directory, exist_ok=True)
        name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        path = os.path.join(self.directory, name)
        # Created under another name, locked, then renamed: a flusher never sees it unlocked (it
        # would drain the empty file and unlink it under the owner's first write).
        fd = os.open(path + ".new", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(path + ".new", path)
        self._fd, self._fd_pid, self._path = fd, os.getpid(), path
        return fd

    def _close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass
        self._fd = None

    # ---- any process: what is pending, and draining it ----------------------------------------
    def files(self) -> list[str]:
        """Spool files waiting to be flushed, oldest first."""
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        spooled = []
        for entry in entries:
            if entry.name.endswith(SUFFIX) and not entry.name.startswith(REJECTED_PREFIX):
                try:
                    spooled.append((entry.stat().st_mtime, entry.name, entry.path))
                except FileNotFoundError:  # drained by another process meanwhile
                    continue
        return [path for _, _, path in sorted(spooled)]

    def own_prefix(self) -> str:
        return f"{socket.gethostname()}-{os.getpid()}-"

    def own_files(self) -> list[str]:
        """Files this process wrote (it may exit soon: they are flushed before it does, if possible)."""
        prefix = self.own_prefix()
        return [p for p in self.files() if os.path.basename(p).startswith(prefix)]

    def pending(self) -> bool:
        """True if any file waits (one directory scan, no file is opened)."""
        return bool(self.files())

    def drain(self, consume: Callable[[str, list[dict[str, Any]]], None], budget_s: float | None = None,
              chunk_rows: int = 5000, own_only: bool = False) -> DrainReport:
        """Hand every spooled row to ``consume(kind, rows)``, file by file, and delete drained files.

        ``consume`` must be idempotent (the store inserts with its natural keys); an exception from
        it stops the drain and leaves the current file and the rest in place.
        ``budget_s``: start no new file after this many seconds (a file in progress is finished).
        ``own_only``: only the files of this process.
        """
        report = DrainReport()
        started = time.monotonic()
        paths = self.own_files() if own_only else self.files()
        for i, path in enumerate(paths):
            if budget_s is not None and time.monotonic() - started > budget_s:
                report.left_files += len(paths) - i
                break
            try:
                outcome = self._drain_file(path, consume, chunk_rows, report)
            except Exception as e:  # noqa: BLE001 - the store failed: keep this file and the rest
                report.errors.append(f"{type(e).__name__}: {e}")
                report.left_files += len(paths) - i
                break
            if outcome == "busy":
                report.busy_files += 1
                report.left_files += 1
        return report

    def _drain_file(self, path: str, consume: Callable[[str, list[dict[str, Any]]], None], chunk_rows: int,
                    report: DrainReport) -> str:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return "gone"  # another flusher finished it
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return "busy"
            if os.fstat(fd).st_nlink == 0:
                return "gone"
            with os.fdopen(os.dup(fd), "rb") as f:
                data = f.read()
            batches, rejected = _parse(data)
            for kind, rows in _chunks(batches, chunk_rows):
                consume(kind, rows)
                if kind == "samples":
                    report.samples += len(rows)
                else:
                    report.step_runs += len(rows)
            if rejected:
                self._reject(path, rejected)
                report.rejected_lines += len(rejected)
            os.unlink(path)
            report.files += 1
            return "drained"
        finally:
            os.close(fd)  # releases the lock

    def _reject(self, path: str, lines: list[bytes]) -> None:
        target = os.path.join(self.directory, REJECTED_PREFIX + os.path.basename(path))
        with open(target, "ab") as f:
            f.write(b"".join(line if line.endswith(b"\n") else line + b"\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())


def _parse(data: bytes) -> tuple[list[tuple[str, list[dict[str, Any]]]], list[bytes]]:
    batches: list[tuple[str, list[dict[str, Any]]]] = []
    rejected: list[bytes] = []
    for line in data.splitlines(keepends=True):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            kind, rows = record["kind"], record["rows"]
            if kind not in KINDS or not isinstance(rows, list):
                raise ValueError(kind)
        except (ValueError, KeyError, TypeError):
            rejected.append(line)
            continue
        batches.append((kind, rows))
    return batches, rejected


def _chunks(batches: list[tuple[str, list[dict[str, Any]]]], chunk_rows: int
            ) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Rows grouped by kind into chunks of at most ``chunk_rows`` (step runs first: they are few)."""
    for kind in ("step_run", "samples"):
        rows = [row for k, batch in batches if k == kind for row in batch]
        for i in range(0, len(rows), chunk_rows):
            yield kind, rows[i:i + chunk_rows]
