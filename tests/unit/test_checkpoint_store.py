"""CheckpointStore on a real local directory and on fsspec ``memory://`` (DESIGN.md §5 layout)."""

from __future__ import annotations

import json
import multiprocessing
import re

import numpy as np
import pandas as pd
import pytest

from predcheck_dagster.checkpoint_store import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    CheckpointStore,
    Manifest,
    Prediction,
    validate_component,
)
from predcheck_dagster.errors import (
    CheckpointCorruptError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    InvalidPathComponentError,
    UnsafeSerializationError,
)

JOB, ROOT_RUN, STEP = "etl", "4f0c2b7e-root", "crunch"
STREAM = f"{JOB}/{ROOT_RUN}/{STEP}"

PREDICTION = Prediction(
    failure_probability=0.83, predicted_remaining_s=42.5, bottleneck_stages=["transform", "load"],
    resource_projection={"peak_rss_bytes": 2_000_000_000, "cpu_s": 12.5, "time_to_limit_s": None},
    model_uri="models:/predcheck-forecaster@champion", model_version="7",
)


def write(store: CheckpointStore, obj, *, step_key: str = STEP, job: str = JOB, kind: str = "periodic",
          code_version: str | None = None, prediction: Prediction | None = None, run_id: str = ROOT_RUN):
    stream = store.step_stream(job, ROOT_RUN, step_key)
    return store.write(obj, stream=stream, job=job, run_id=run_id, root_run_id=ROOT_RUN, step_key=step_key,
                       kind=kind, code_version=code_version, prediction=prediction)


def files_under(store: CheckpointStore) -> set[str]:
    """Every file below the store's root, relative to it."""
    prefix = store.root + "/"
    return {p[len(prefix):] if p.startswith(prefix) else p for p in store.fs.find(store.root)}


def entry_names(store: CheckpointStore, stream: str = STREAM) -> list[str]:
    """The ``ckpt-*`` folders (or prefixes) of ``stream``, as listed by the filesystem."""
    return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in store.fs.ls(f"{store.root}/{stream}", detail=False))


def ckpt(seq: int, stream: str = STREAM) -> str:
    return f"{stream}/ckpt-{seq:06d}"


# ---- round trips ------------------------------------------------------------------------------
def test_json_round_trip_and_exact_layout(store):
    state = {"i": 7, "acc": 123456789, "items": [1.5, "two", None, True], "nested": {"a": [], "b": {}}}
    manifest = write(store, state, code_version="v1")

    assert manifest.checkpoint_id == ckpt(1)
    assert files_under(store) == {f"{ckpt(1)}/payload.json", f"{ckpt(1)}/{MANIFEST_NAME}"}
    got_manifest, got = store.read(manifest.checkpoint_id)
    assert got == state
    assert got_manifest == manifest
    assert (manifest.seq, manifest.kind, manifest.serializer, manifest.payload_name) == \
        (1, "periodic", "json", "payload.json")
    assert (manifest.job, manifest.step_key, manifest.root_run_id, manifest.code_version) == \
        (JOB, STEP, ROOT_RUN, "v1")
    assert manifest.nbytes == len(store.fs.cat_file(f"{store.root}/{ckpt(1)}/payload.json"))
    assert manifest.write_s >= 0.0


def test_numpy_round_trip(store):
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    manifest = write(store, array)

    _, got = store.read(manifest.checkpoint_id)
    assert manifest.serializer == "numpy"
    assert files_under(store) == {f"{ckpt(1)}/payload.npy", f"{ckpt(1)}/{MANIFEST_NAME}"}
    assert got.dtype == array.dtype
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize("array", [
    np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    np.arange(20)[::3],  # not contiguous
    np.array(5.5),  # 0-d
    np.arange(6, dtype=">i4"),  # big-endian
    np.array(["2024-01-01", "2025-02-03"], dtype="datetime64[D]"),
    np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8", (2,))]),
    np.zeros((0, 3)),
    np.array(["héllo", "x"]),
], ids=["fortran", "strided", "0-d", "big-endian", "datetime64", "structured", "empty", "unicode"])
def test_numpy_layouts_round_trip(store, array):
    manifest = write(store, array)

    _, got = store.read(manifest.checkpoint_id)
    assert (got.dtype, got.shape) == (array.dtype, array.shape)
    np.testing.assert_array_equal(got, array)
    assert manifest.nbytes == len(store.fs.cat_file(f"{store.root}/{ckpt(1)}/payload.npy"))


def test_dataframe_round_trip_as_parquet(store):
    frame = pd.DataFrame({"id": [1, 2, 3], "name": ["a", "b", None], "x": [0.5, float("nan"), 2.25]})
    manifest = write(store, frame)

    _, got = store.read(manifest.checkpoint_id)
    assert manifest.serializer == "parquet"
    assert files_under(store) == {f"{ckpt(1)}/payload.parquet", f"{ckpt(1)}/{MANIFEST_NAME}"}
    pd.testing.assert_frame_equal(got, frame)


def test_prediction_is_stored_in_the_manifest(store):
    manifest = write(store, {"i": 1}, kind="preemptive", prediction=PREDICTION)

    raw = json.loads(store.fs.cat_file(f"{store.root}/{ckpt(1)}/{MANIFEST_NAME}"))
    assert raw["prediction"] == PREDICTION.to_dict()
    assert raw["kind"] == "preemptive"
    assert raw["schema_version"] == SCHEMA_VERSION
    assert store.read_manifest(manifest.checkpoint_id).prediction == PREDICTION


def test_manifest_json_round_trip_with_and_without_prediction():
    manifest = Manifest(
        checkpoint_id=ckpt(3), run_id="run-2", root_run_id=ROOT_RUN, job=JOB, step_key=STEP, seq=3,
        kind="preemptive", created_at=1_700_000_000.25, code_version="abc", serializer="json",
        payload_name="payload.json", nbytes=12, sha256="0" * 64, write_s=0.004, prediction=PREDICTION,
    )
    assert Manifest.from_json(manifest.to_json(), "x") == manifest
    bare = Manifest(**{**manifest.__dict__, "prediction": None, "code_version": None})
    assert Manifest.from_json(bare.to_json(), "x") == bare
    assert json.loads(manifest.to_json())["prediction"]["bottleneck_stages"] == ["transform", "load"]


def test_prediction_from_dict_of_nothing_is_none():
    assert Prediction.from_dict(None) is None
    assert Prediction.from_dict({}) is None
    assert Prediction.from_dict(PREDICTION.to_dict()) == PREDICTION


def test_manifest_of_another_schema_version_is_refused():
    data = json.loads(Manifest(
        checkpoint_id=ckpt(1), run_id="r", root_run_id=ROOT_RUN, job=JOB, step_key=STEP, seq=1, kind="periodic",
        created_at=0.0, code_version=None, serializer="json", payload_name="payload.json", nbytes=1,
        sha256="0", write_s=0.0).to_json())
    data["schema_version"] = 99
    with pytest.raises(CheckpointCorruptError,
                       match=r"checkpoint manifest 'where' is unreadable \(schema_version 99\)"):
        Manifest.from_json(json.dumps(data).encode(), "where")


# ---- sequence numbers and retention -----------------------------------------------------------
def test_sequence_numbers_increase_and_never_overwrite(tmp_path):
    store = CheckpointStore(str(tmp_path), retention=10)
    manifests = [write(store, {"i": i}) for i in range(4)]

    assert [m.seq for m in manifests] == [1, 2, 3, 4]
    assert [m.checkpoint_id for m in manifests] == [ckpt(i) for i in range(1, 5)]
    for i, m in enumerate(manifests):
        assert store.read(m.checkpoint_id)[1] == {"i": i}
    assert files_under(store) == {f"{ckpt(s)}/{name}" for s in range(1, 5) for name in ("payload.json", MANIFEST_NAME)}


def test_retention_keeps_the_newest_n(store_url):
    store = CheckpointStore(store_url, retention=2)
    for i in range(5):
        write(store, {"i": i})

    assert [m.seq for m in store.list(STREAM)] == [4, 5]
    assert files_under(store) == {f"{ckpt(s)}/{name}" for s in (4, 5) for name in ("payload.json", MANIFEST_NAME)}
    assert entry_names(store) == ["ckpt-000004", "ckpt-000005"]  # the folders went too
    manifest, state = store.latest(STREAM)
    assert (manifest.seq, state) == (5, {"i": 4})
    assert write(store, {"i": 5}).seq == 6


def test_retention_does_not_count_torn_or_unreadable_entries(store_url):
    store = CheckpointStore(store_url, retention=2)
    for i in range(3):
        write(store, {"i": i})
    store.fs.pipe_file(f"{store.root}/{ckpt(3)}/{MANIFEST_NAME}", b'{"truncated')  # unreadable
    torn = f"{store.root}/{ckpt(4)}"  # a payload whose manifest never landed
    store.fs.makedirs(torn, exist_ok=True)
    store.fs.pipe_file(f"{torn}/payload.json", b'{"i": 3}')

    assert write(store, {"i": 5}).seq == 5
    # the newest good one before the write (2) is kept; 3 and 4 are below the new one and never good
    assert entry_names(store) == ["ckpt-000002", "ckpt-000005"]
    assert [(m.seq, store.read(m.checkpoint_id)[1]) for m in store.list(STREAM)] == [(2, {"i": 1}), (5, {"i": 5})]


def test_a_write_that_fails_before_its_commit_deletes_nothing(store_url):
    store = CheckpointStore(store_url, retention=1)
    write(store, {"i": 1})
    unwritable = Prediction(failure_probability=0.5, predicted_remaining_s=None,
                            resource_projection={"cpu_s": {1.5}})  # a set: the manifest cannot be written

    with pytest.raises(TypeError, match="set is not JSON serializable"):
        write(store, {"i": 2}, prediction=unwritable)
    # the payload of 2 landed, its manifest did not: 1 is still the good checkpoint, not retired
    assert files_under(store) == {f"{ckpt(1)}/payload.json", f"{ckpt(1)}/{MANIFEST_NAME}", f"{ckpt(2)}/payload.json"}
    assert store.latest(STREAM)[1] == {"i": 1}
    assert write(store, {"i": 3}).seq == 3
    assert files_under(store) == {f"{ckpt(3)}/payload.json", f"{ckpt(3)}/{MANIFEST_NAME}"}


def test_retention_must_keep_at_least_one():
    with pytest.raises(ValueError, match=r"^retention must be >= 1, got 0$"):
        CheckpointStore("memory://predcheck-unit-never-used", retention=0)


def test_unknown_kind_is_refused(store):
    with pytest.raises(ValueError, match=r"kind must be one of \('periodic', 'preemptive', 'output'\), got 'daily'"):
        write(store, {"i": 1}, kind="daily")
    assert store.list(STREAM) == []


def test_streams_are_kept_apart(store):
    write(store, {"step": "a"}, step_key="a")
    write(store, {"step": "b"}, step_key="b")
    write(store, {"step": "b2"}, step_key="b")

    assert store.streams() == [f"{JOB}/{ROOT_RUN}/a", f"{JOB}/{ROOT_RUN}/b"]
    assert store.latest(f"{JOB}/{ROOT_RUN}/a")[1] == {"step": "a"}
    assert store.latest(f"{JOB}/{ROOT_RUN}/b")[1] == {"step": "b2"}
    assert store.collect_garbage(f"{JOB}/{ROOT_RUN}/b", keep=1) == 1
    assert [m.seq for m in store.list(f"{JOB}/{ROOT_RUN}/b")] == [2]
    assert store.latest(f"{JOB}/{ROOT_RUN}/a")[1] == {"step": "a"}  # the other stream is untouched


def test_streams_of_an_empty_root(store):
    assert store.streams() == []
    assert store.list(STREAM) == []
    assert store.latest(STREAM) is None


# ---- integrity --------------------------------------------------------------------------------
def test_latest_falls_back_past_a_tampered_payload(store):
    write(store, {"i": 1})
    write(store, {"i": 2})
    path = f"{store.root}/{ckpt(2)}/payload.json"
    store.fs.pipe_file(path, store.fs.cat_file(path).replace(b"2", b"9"))

    with pytest.raises(CheckpointCorruptError, match=r"checkpoint '.*/ckpt-000002' payload fails its sha256 check"):
        store.read(ckpt(2))
    manifest, state = store.latest(STREAM)
    assert (manifest.seq, state) == (1, {"i": 1})


def test_latest_falls_back_past_a_truncated_manifest(store):
    write(store, {"i": 1})
    write(store, {"i": 2})
    path = f"{store.root}/{ckpt(2)}/{MANIFEST_NAME}"
    raw = store.fs.cat_file(path)
    store.fs.pipe_file(path, raw[: len(raw) // 2])

    with pytest.raises(CheckpointCorruptError, match=r"checkpoint manifest '.*/ckpt-000002' is unreadable"):
        store.read_manifest(ckpt(2))
    assert [m.seq for m in store.list(STREAM)] == [1]
    assert store.latest(STREAM)[1] == {"i": 1}


def test_latest_refuses_when_no_checkpoint_verifies(store):
    write(store, {"i": 1})
    store.fs.pipe_file(f"{store.root}/{ckpt(1)}/payload.json", b'{"i": 666}')

    with pytest.raises(CheckpointCorruptError, match=r"no checkpoint of '.+' verifies \(1 refused; newest: "):
        store.latest(STREAM)


def test_a_manifest_naming_another_checkpoint_is_refused(store):
    write(store, {"i": 1})
    write(store, {"i": 2})
    store.fs.pipe_file(f"{store.root}/{ckpt(2)}/{MANIFEST_NAME}",
                       store.fs.cat_file(f"{store.root}/{ckpt(1)}/{MANIFEST_NAME}"))
    with pytest.raises(CheckpointCorruptError, match=r"manifest '.*/ckpt-000002' names '.*/ckpt-000001'"):
        store.read(ckpt(2))


def test_a_manifest_without_payload_is_refused(store):
    write(store, {"i": 1})
    write(store, {"i": 2})
    store.fs.rm(f"{store.root}/{ckpt(2)}/payload.json")

    with pytest.raises(CheckpointCorruptError, match=r"'.*/ckpt-000002' has a manifest but no payload"):
        store.read(ckpt(2))
    assert store.latest(STREAM)[1] == {"i": 1}


def test_a_payload_without_manifest_is_never_loaded(store):
    write(store, {"i": 1})
    write(store, {"i": 2})
    # a torn write: the payload of checkpoint 3 landed, its manifest never did
    torn = f"{store.root}/{ckpt(3)}"
    store.fs.makedirs(torn, exist_ok=True)
    store.fs.pipe_file(f"{torn}/payload.json", b'{"i": 3}')

    assert store.latest(STREAM)[1] == {"i": 2}
    assert [m.seq for m in store.list(STREAM)] == [1, 2]
    with pytest.raises(CheckpointNotFoundError, match=r"checkpoint '.*/ckpt-000003' has no committed manifest"):
        store.read(ckpt(3))
    # a torn entry newer than the newest good one may be a write in progress: it is left alone
    assert store.collect_garbage(STREAM, keep=5) == 0
    # the next write takes a fresh number and then removes the torn entry below it
    assert write(store, {"i": 4}).seq == 4
    assert files_under(store) == {f"{ckpt(s)}/{name}" for s in (1, 2, 4) for name in ("payload.json", MANIFEST_NAME)}
    assert store.latest(STREAM)[1] == {"i": 4}


def test_a_missing_checkpoint_is_a_file_not_found_error(store):
    with pytest.raises(FileNotFoundError, match=r"checkpoint 'etl/r/s/ckpt-000009' has no committed manifest under"):
        store.read("etl/r/s/ckpt-000009")


def test_collect_garbage(store_url):
    store = CheckpointStore(store_url, retention=10)
    for i in range(5):
        write(store, {"i": i})
    torn = f"{store.root}/{ckpt(2)}/{MANIFEST_NAME}"
    store.fs.rm(torn)

    assert store.collect_garbage(STREAM, keep=2) == 3
    assert [m.seq for m in store.list(STREAM)] == [4, 5]
    assert store.collect_garbage(STREAM, keep=2) == 0
    assert store.collect_garbage("etl/none/none", keep=1) == 0


# ---- resume checks ----------------------------------------------------------------------------
def test_read_for_resume_accepts_the_matching_step(store):
    manifest = write(store, {"i": 1}, code_version="v1")
    assert store.read_for_resume(manifest.checkpoint_id, job=JOB, step_key=STEP, code_version="v1")[1] == {"i": 1}
    assert store.read_for_resume(manifest.checkpoint_id, job=JOB, step_key=STEP, code_version=None)[1] == {"i": 1}


def test_read_for_resume_refuses_another_step(store):
    manifest = write(store, {"i": 1})
    with pytest.raises(CheckpointMismatchError,
                       match=rf"checkpoint '{manifest.checkpoint_id}' belongs to job 'etl' step 'crunch', "
                             r"not to job 'etl' step 'load': fix the resume plan's checkpoint_id"):
        store.read_for_resume(manifest.checkpoint_id, job=JOB, step_key="load", code_version=None)


def test_read_for_resume_refuses_another_job(store):
    manifest = write(store, {"i": 1})
    with pytest.raises(CheckpointMismatchError, match=r"belongs to job 'etl' step 'crunch', not to job 'report' step"):
        store.read_for_resume(manifest.checkpoint_id, job="report", step_key=STEP, code_version=None)


def test_read_for_resume_refuses_another_code_version(store):
    manifest = write(store, {"i": 1}, code_version="v1")
    with pytest.raises(CheckpointMismatchError,
                       match=r"was written by code version 'v1', this step runs 'v2': .*deploy the matching"):
        store.read_for_resume(manifest.checkpoint_id, job=JOB, step_key=STEP, code_version="v2")


# ---- path safety ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["..", "a/b", "", "../etc", "a/../b", ".hidden", "a\\b", "a b", "/abs"])
def test_path_traversal_is_refused(store, bad):
    with pytest.raises(InvalidPathComponentError, match=rf"^step_key {re.escape(repr(bad))} is not a safe path"):
        store.step_stream(JOB, ROOT_RUN, bad)
    with pytest.raises(InvalidPathComponentError, match=rf"^job {re.escape(repr(bad))} is not a safe path"):
        store.step_stream(bad, ROOT_RUN, STEP)
    with pytest.raises(InvalidPathComponentError, match=r"is not a safe path component"):
        store.output_stream(JOB, ROOT_RUN, STEP, bad)


def test_path_traversal_in_a_checkpoint_id_is_refused(store):
    with pytest.raises(InvalidPathComponentError, match=r"^checkpoint id component '\.\.' is not a safe"):
        store.read("etl/../../ckpt-000001")
    with pytest.raises(InvalidPathComponentError, match=r"^checkpoint id 'etl/r/s' is malformed"):
        store.read("etl/r/s")
    with pytest.raises(InvalidPathComponentError, match=r"^checkpoint id component '' is not a safe path component"):
        store.read("/etc/passwd/x/ckpt-000001")


def test_invalid_path_component_is_a_value_error():
    with pytest.raises(ValueError, match="no '/', no '..'"):
        validate_component("run_id", "x/y")
    assert validate_component("step_key", "crunch[2].part=a-b") == "crunch[2].part=a-b"


def test_stream_names(store):
    assert store.step_stream(JOB, ROOT_RUN, STEP) == STREAM
    assert store.output_stream(JOB, "run9", STEP, "result") == f"{JOB}/run9/{STEP}/outputs/result"
    assert store.asset_stream(["warehouse", "orders"], "2024-01-01") == "assets/warehouse/orders/2024-01-01"
    assert store.asset_stream(["orders"], None) == "assets/orders"


# ---- serialization safety -------------------------------------------------------------------
def test_pickle_is_refused_without_opt_in(store):
    with pytest.raises(UnsafeSerializationError, match=r"cannot store an object of type 'set' with a safe "
                                                       r"serializer .*set allow_pickle=True"):
        write(store, {1, 2, 3})
    assert store.streams() == []


def test_pickle_is_allowed_with_opt_in_and_refused_on_read_without(store_url):
    permissive = CheckpointStore(store_url, allow_pickle=True)
    manifest = write(permissive, {1, 2, 3})
    assert (manifest.serializer, manifest.payload_name) == ("pickle", "payload.pkl")
    assert permissive.read(manifest.checkpoint_id)[1] == {1, 2, 3}
    # JSON-able objects still go to JSON even when pickle is allowed
    assert write(permissive, {"i": 1}).serializer == "json"

    strict = CheckpointStore(store_url)
    with pytest.raises(UnsafeSerializationError, match=rf"checkpoint '{manifest.checkpoint_id}' is a pickle; "
                                                       r"loading it runs code from the storage"):
        strict.read(manifest.checkpoint_id)


def test_object_arrays_are_not_stored_as_numpy(store):
    with pytest.raises(UnsafeSerializationError, match=r"type 'ndarray'"):
        write(store, np.array([{"a": 1}, None], dtype=object))


def test_constructing_a_store_does_no_io(tmp_path):
    root = tmp_path / "not-yet"
    CheckpointStore(str(root))
    assert not root.exists()


def _write_in_child(root: str) -> None:
    store = CheckpointStore(root, retention=3)
    write(store, b"c" * (2 << 20))


def test_a_forked_child_hashes_large_payloads(tmp_path):
    store = CheckpointStore(str(tmp_path), retention=3)
    write(store, b"p" * (2 << 20))  # 2 MiB: hashed on this process's worker thread, which a fork does not copy

    child = multiprocessing.get_context("fork").Process(target=_write_in_child, args=(str(tmp_path),))
    child.start()
    child.join(timeout=30)
    finished = child.exitcode is not None
    if not finished:
        child.kill()
    assert finished and child.exitcode == 0
    assert [store.read(m.checkpoint_id)[1][:1] for m in store.list(STREAM)] == [b"p", b"c"]
