"""The local spool: append-only files per process, drained under file locks, never blocking an append."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from predcheck_dagster.spool import REJECTED_PREFIX, Spool

REPO = Path(__file__).resolve().parents[2]


def sample(i: int, run: str = "r1") -> dict:
    return {"run_id": run, "step_key": "crunch", "ts": 1e9 + i, "elapsed_s": float(i)}


class Collector:
    """A consume() that records what it was given, and can fail on a chosen call."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls: list[tuple[str, list[dict]]] = []
        self.fail_on_call = fail_on_call

    def __call__(self, kind: str, rows: list[dict]) -> None:
        if self.fail_on_call is not None and len(self.calls) + 1 == self.fail_on_call:
            self.fail_on_call = None
            raise ConnectionError("store went away mid-flush")
        self.calls.append((kind, rows))

    def rows(self, kind: str) -> list[dict]:
        return [row for k, rows in self.calls if k == kind for row in rows]


def test_appended_batches_are_drained_in_order_and_the_file_removed(tmp_path):
    spool = Spool(str(tmp_path / "spool"))
    assert spool.files() == [] and not spool.pending()  # nothing created before the first append
    path = spool.append("samples", [sample(0), sample(1)])
    spool.append("step_run", [{"run_id": "r1", "step_key": "crunch", "attempt": 1}])
    assert spool.append("samples", [sample(2)]) == path  # one file per process
    assert [json.loads(line)["kind"] for line in Path(path).read_text().splitlines()] == [
        "samples", "step_run", "samples"]

    got = Collector()
    report = spool.drain(got)

    assert [r["ts"] for r in got.rows("samples")] == [1e9, 1e9 + 1, 1e9 + 2]
    assert got.rows("step_run") == [{"run_id": "r1", "step_key": "crunch", "attempt": 1}]
    assert got.calls[0][0] == "step_run"  # step records first: they are few and matter most
    assert (report.files, report.samples, report.step_runs, report.left_files) == (1, 3, 1, 0)
    assert spool.files() == []
    assert report.message() == "spool: flushed 1 file(s) (1 step run(s), 3 sample(s)); 0 file(s) left"


def test_an_interrupted_drain_keeps_the_file_and_the_next_drain_resends_everything(tmp_path):
    spool = Spool(str(tmp_path))
    spool.append("samples", [sample(i) for i in range(10)])

    failing = Collector(fail_on_call=2)
    report = spool.drain(failing, chunk_rows=4)
    assert [r["ts"] for r in failing.rows("samples")] == [1e9 + i for i in range(4)]  # first chunk went through
    assert report.files == 0 and report.left_files == 1
    assert report.errors == ["ConnectionError: store went away mid-flush"]
    assert "stopped: ConnectionError: store went away mid-flush" in report.message()

    again = Collector()
    assert spool.drain(again, chunk_rows=4).files == 1
    assert [r["ts"] for r in again.rows("samples")] == [1e9 + i for i in range(10)]  # at least once: the store dedups
    assert spool.files() == []


def test_a_torn_line_is_set_aside_and_the_rest_is_drained(tmp_path):
    spool = Spool(str(tmp_path))
    path = spool.append("samples", [sample(0)])
    with open(path, "ab") as f:
        f.write(b'{"kind": "samples", "rows": [{"run_id": "r1", "st')  # a writer killed mid-line
    report = Collector()
    result = spool.drain(report)
    assert [r["ts"] for r in report.rows("samples")] == [1e9]
    assert result.rejected_lines == 1
    assert "1 unreadable line(s) moved to rejected-*" in result.message()
    rejected = tmp_path / (REJECTED_PREFIX + os.path.basename(path))
    assert rejected.read_bytes().startswith(b'{"kind": "samples", "rows": [{"run_id": "r1", "st')
    assert spool.files() == []  # a rejected file is not drained again


def test_an_append_never_waits_for_a_flusher_holding_the_file(tmp_path):
    spool = Spool(str(tmp_path))
    first = spool.append("samples", [sample(0)])
    flusher = os.open(first, os.O_RDONLY)
    fcntl.flock(flusher, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a flusher is reading that file right now
    got = Collector()
    try:
        t0 = time.perf_counter()
        second = spool.append("samples", [sample(1)])
        assert time.perf_counter() - t0 < 0.5
        assert second != first
        report = spool.drain(got)
        assert (report.files, report.busy_files) == (1, 1)  # the held file is left for the next flush
        assert [r["ts"] for r in got.rows("samples")] == [1e9 + 1]
    finally:
        os.close(flusher)
    spool.drain(got)
    assert [r["ts"] for r in got.rows("samples")] == [1e9 + 1, 1e9]


def test_after_its_file_was_drained_the_owner_writes_a_new_one(tmp_path):
    spool = Spool(str(tmp_path))
    first = spool.append("samples", [sample(0)])
    spool.drain(Collector())
    second = spool.append("samples", [sample(1)])
    assert second != first and os.path.exists(second) and not os.path.exists(first)
    got = Collector()
    spool.drain(got)
    assert [r["ts"] for r in got.rows("samples")] == [1e9 + 1]


def test_own_files_and_the_time_budget(tmp_path):
    spool = Spool(str(tmp_path))
    mine = spool.append("samples", [sample(0)])
    other = tmp_path / "otherhost-1-deadbeef.jsonl"
    other.write_text(json.dumps({"kind": "samples", "rows": [sample(1, run="r2")]}) + "\n")
    assert spool.own_files() == [mine]
    assert set(spool.files()) == {mine, str(other)}

    only_mine = Collector()
    assert spool.drain(only_mine, own_only=True).files == 1
    assert {r["run_id"] for r in only_mine.rows("samples")} == {"r1"}

    for i in range(3):
        (tmp_path / f"otherhost-{i + 2}-cafe.jsonl").write_text(
            json.dumps({"kind": "samples", "rows": [sample(i)]}) + "\n")

    def slow(kind, rows):
        time.sleep(0.05)

    report = spool.drain(slow, budget_s=0.01)
    assert report.files == 1 and report.left_files == 3  # a started file is finished, then the budget stops it


def test_unknown_kinds_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"^unknown spool record kind 'metrics': expected one of \('samples', "
                                         r"'step_run'\)$"):
        Spool(str(tmp_path)).append("metrics", [])


WRITER = """
import sys, types
pkg = types.ModuleType("predcheck_dagster")  # the spool alone, without the package's dagster imports
pkg.__path__ = [sys.argv[4]]
sys.modules["predcheck_dagster"] = pkg
from predcheck_dagster.spool import Spool
spool = Spool(sys.argv[1])
for i in range(int(sys.argv[3])):
    spool.append("samples", [{"writer": sys.argv[2], "i": i}])
"""


def test_concurrent_writers_and_flushers_lose_nothing(tmp_path):
    """Three processes append while this one keeps draining: every row arrives, none twice."""
    directory, per_writer = str(tmp_path), 200
    package = str(REPO / "predcheck_dagster")
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, directory, str(w), str(per_writer), package])
               for w in range(3)]
    spool = Spool(directory)
    got = Collector()
    while any(w.poll() is None for w in writers):
        spool.drain(got)
        time.sleep(0.005)
    assert all(w.wait(timeout=60) == 0 for w in writers)
    spool.drain(got)

    seen = [(r["writer"], r["i"]) for r in got.rows("samples")]
    assert len(seen) == len(set(seen)) == 3 * per_writer
    assert spool.files() == []
