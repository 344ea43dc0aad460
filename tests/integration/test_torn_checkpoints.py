"""A process SIGKILLed at random points, including in the middle of writing a checkpoint, never
leaves a torn checkpoint that a reader loads: the newest one that loads is always complete."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import predcheck_dagster as pc

pytestmark = pytest.mark.slow

WRITER = """
import sys
import numpy as np
import predcheck_dagster as pc

store = pc.CheckpointStore(sys.argv[1], retention=3)
stream = store.step_stream("job", "root", "step")
seq = 0
while True:
    seq += 1
    print(seq, flush=True)
    state = np.full(4_000_000, seq, dtype=np.int64)  # 32 MB: the kill often lands mid-write
    store.write(state, stream=stream, job="job", run_id="root", root_run_id="root", step_key="step",
                kind="periodic")
"""


def test_random_sigkills_never_leave_a_loadable_torn_checkpoint(tmp_path: Path) -> None:
    rng = random.Random(11)
    store = pc.CheckpointStore(str(tmp_path), retention=3)
    stream = store.step_stream("job", "root", "step")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    torn_seen = 0
    for _ in range(8):
        proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # it has started its first write
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        committed = {m.seq for m in store.list(stream)}
        entries = set(store._entries(stream))  # noqa: SLF001 - the test looks at what is on disk
        torn_seen += len(entries - committed)
        found = store.latest(stream)
        if found is not None:
            manifest, state = found
            assert manifest.seq in committed
            assert state.shape == (4_000_000,) and (state == state[0]).all()
            assert int(state[0]) >= 1
        # a kill while the manifest was written leaves its temporary file: that entry is not committed
        for leftover in tmp_path.rglob("*.tmp-*"):
            if not (leftover.parent / "manifest.json").exists():
                assert int(leftover.parent.name.split("-")[-1]) not in committed, leftover
    assert torn_seen >= 1, "no kill landed during a write: the test did not exercise a torn checkpoint"
    assert store.latest(stream) is not None
