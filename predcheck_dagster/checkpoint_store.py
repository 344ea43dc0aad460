"""Checkpoint layout, manifests and atomic storage over fsspec (pure: no dagster).

Layout (schema version 1, a tested contract)::

    {root}/{job}/{root_run_id}/{step_key}/ckpt-{seq:06d}/payload.{ext}
    {root}/{job}/{root_run_id}/{step_key}/ckpt-{seq:06d}/manifest.json     (written last)
    {root}/{job}/{run_id}/{step_key}/outputs/{output_name}/ckpt-{seq:06d}/...   (IO manager outputs)

A *stream* is one directory of ``ckpt-*`` entries. A checkpoint id is its path relative to the
root, e.g. ``etl/4f0c.../crunch/ckpt-000003``.

Guarantees:
    - A new checkpoint never overwrites an earlier one: each write takes a new sequence number.
    - The manifest is written last, through a temporary name and a move, so a reader never sees a
      manifest whose payload is not complete (nor a half-written manifest); readers trust only a
      manifest whose payload matches its sha256 and size.
    - A crash during a write leaves the previous good checkpoint readable.
    - Retention deletes only checkpoints older than the newest ``retention`` good ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import fsspec

from predcheck_dagster.errors import (
    CheckpointCorruptError,
    CheckpointMismatchError,
    CheckpointNotFoundError,
    InvalidPathComponentError,
    UnsafeSerializationError,
)

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
CKPT_PREFIX = "ckpt-"
KINDS = ("periodic", "preemptive", "output")
_COMPONENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-\[\]=]{0,254}$")
_CKPT_NAME = re.compile(r"^ckpt-(\d{6})$")


def validate_component(kind: str, value: str) -> str:
    """Return ``value`` if it is a safe single path component, else raise.

    Run ids, job names and step keys come from run config and tags; none may contain a separator
    or be ``..`` (no traversal out of the checkpoint root).
    """
    if not isinstance(value, str) or not _COMPONENT.match(value) or ".." in value:
        raise InvalidPathComponentError(
            f"{kind} {value!r} is not a safe path component: use letters, digits and _.-[]= only "
            "(no '/', no '..')."
        )
    return value


@dataclass(frozen=True)
class Prediction:
    """What the forecaster said about a step when a checkpoint was taken or a resume planned."""

    failure_probability: float
    predicted_remaining_s: float | None
    bottleneck_stages: list[str] = field(default_factory=list)
    resource_projection: dict[str, float | None] = field(default_factory=dict)
    model_uri: str | None = None
    model_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Prediction | None:
        if not data:
            return None
        return cls(
            failure_probability=float(data["failure_probability"]),
            predicted_remaining_s=(None if data.get("predicted_remaining_s") is None
                                   else float(data["predicted_remaining_s"])),
            bottleneck_stages=list(data.get("bottleneck_stages") or []),
            resource_projection=dict(data.get("resource_projection") or {}),
            model_uri=data.get("model_uri"),
            model_version=data.get("model_version"),
        )


@dataclass(frozen=True)
class Manifest:
    """The committed description of one checkpoint (DESIGN.md §5)."""

    checkpoint_id: str
    run_id: str
    root_run_id: str
    job: str
    step_key: str
    seq: int
    kind: str
    created_at: float
    code_version: str | None
    serializer: str
    payload_name: str
    nbytes: int
    sha256: str
    write_s: float
    prediction: Prediction | None = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> bytes:
        data = asdict(self)
        data["prediction"] = self.prediction.to_dict() if self.prediction else None
        return json.dumps(data, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> Manifest:
        try:
            data = json.loads(raw)
            data["prediction"] = Prediction.from_dict(data.get("prediction"))
            if data.get("schema_version") != SCHEMA_VERSION:
                raise ValueError(f"schema_version {data.get('schema_version')!r}")
            return cls(**data)
        except (ValueError, TypeError, KeyError) as e:
            raise CheckpointCorruptError(
                f"checkpoint manifest {where!r} is unreadable ({e}); it is ignored: delete it with "
                "`predcheck checkpoints gc` or restore from an earlier checkpoint."
            ) from e


class Serializer(Protocol):
    """Turns an object into bytes and back. ``name`` goes into the manifest."""

    name: str
    extension: str

    def can_dump(self, obj: Any) -> bool: ...
    def dumps(self, obj: Any) -> bytes: ...
    def loads(self, data: bytes) -> Any: ...


class BytesSerializer:
    """Raw bytes, stored as they are (a step that serializes its own state)."""

    name, extension = "bytes", "bin"

    def can_dump(self, obj: Any) -> bool:
        return isinstance(obj, (bytes, bytearray, memoryview))

    def dumps(self, obj: Any) -> bytes:
        return obj if isinstance(obj, bytes) else bytes(obj)

    def loads(self, data: bytes) -> Any:
        return data


class JsonSerializer:
    name, extension = "json", "json"

    def can_dump(self, obj: Any) -> bool:
        try:
            json.dumps(obj, allow_nan=True)
        except (TypeError, ValueError):
            return False
        return True

    def dumps(self, obj: Any) -> bytes:
        return json.dumps(obj, allow_nan=True).encode()

    def loads(self, data: bytes) -> Any:
        return json.loads(data)


class NumpySerializer:
    name, extension = "numpy", "npy"

    def can_dump(self, obj: Any) -> bool:
        np = _module("numpy")
        return np is not None and isinstance(obj, np.ndarray) and obj.dtype != object

    def dumps(self, obj: Any) -> bytes:
        """The ``.npy`` file: its header, then the array's bytes in C order, in one copy.

        ``np.save`` into a ``BytesIO`` copies the data two or three times (chunk by chunk through
        ``tobytes``, then into a growing buffer); joining the header with a view of the array's
        memory copies it once. Headers that need ``.npy`` format 2.0 or 3.0 take ``np.save``.
        """
        import numpy as np

        array = obj if obj.flags.c_contiguous else np.array(obj, order="C")
        header = io.BytesIO()
        try:
            np.lib.format.write_array_header_1_0(header, np.lib.format.header_data_from_array_1_0(array))
        except ValueError:
            buf = io.BytesIO()
            np.save(buf, array, allow_pickle=False)
            return buf.getvalue()
        return b"".join((header.getvalue(), array.reshape(-1).view(np.uint8)))

    def loads(self, data: bytes) -> Any:
        import numpy as np

        return np.load(io.BytesIO(data), allow_pickle=False)


class ParquetSerializer:
    name, extension = "parquet", "parquet"

    def can_dump(self, obj: Any) -> bool:
        pd = _module("pandas")
        return pd is not None and isinstance(obj, pd.DataFrame)

    def dumps(self, obj: Any) -> bytes:
        buf = io.BytesIO()
        obj.to_parquet(buf)
        return buf.getvalue()

    def loads(self, data: bytes) -> Any:
        import pandas as pd

        return pd.read_parquet(io.BytesIO(data))


class PickleSerializer:
    name, extension = "pickle", "pkl"

    def can_dump(self, obj: Any) -> bool:
        return True

    def dumps(self, obj: Any) -> bytes:
        import pickle

        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        import pickle

        return pickle.loads(data)  # noqa: S301 - only reached when the user opted into pickle


SAFE_SERIALIZERS: tuple[Serializer, ...] = (BytesSerializer(), NumpySerializer(), ParquetSerializer(),
                                             JsonSerializer())
_BY_NAME: dict[str, Serializer] = {s.name: s for s in (*SAFE_SERIALIZERS, PickleSerializer())}


def _module(name: str) -> Any:
    """The module if it is already imported (an object of its type cannot exist otherwise)."""
    import sys

    return sys.modules.get(name)


def choose_serializer(obj: Any, allow_pickle: bool) -> Serializer:
    """The first safe serializer that can store ``obj``; pickle only when ``allow_pickle``."""
    for serializer in SAFE_SERIALIZERS:
        if serializer.can_dump(obj):
            return serializer
    if allow_pickle:
        return _BY_NAME["pickle"]
    raise UnsafeSerializationError(
        f"cannot store an object of type {type(obj).__name__!r} with a safe serializer (JSON, "
        "numpy, parquet): convert it, or set allow_pickle=True on the predcheck resource / "
        "CheckpointIOManager if you trust everyone who can write the checkpoint storage."
    )


class CheckpointStore:
    """Writes and reads checkpoints under one fsspec root URL.

    Args:
        root_url: any fsspec URL (``/abs/path``, ``file://``, ``memory://``, ``s3://bucket/x``).
        retention: how many good checkpoints to keep per stream (the newest ones).
        allow_pickle: permit pickle for objects no safe serializer handles.
        storage_options: passed to fsspec (credentials, endpoint_url, ...).

    Constructing a store does no I/O.
    """

    def __init__(self, root_url: str, retention: int = 3, allow_pickle: bool = False,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        if retention < 1:
            raise ValueError(f"retention must be >= 1, got {retention!r}")
        self.root_url = root_url
        self.fs, root = fsspec.core.url_to_fs(root_url, **dict(storage_options or {}))
        self.root = root.rstrip("/")
        self.retention = retention
        self.allow_pickle = allow_pickle

    # ---- layout -------------------------------------------------------------------------------
    def step_stream(self, job: str, root_run_id: str, step_key: str) -> str:
        """Checkpoint id prefix of a step's in-step checkpoints within a run group."""
        return "/".join((validate_component("job", job), validate_component("root_run_id", root_run_id),
                         validate_component("step_key", step_key)))

    def output_stream(self, job: str, run_id: str, step_key: str, output_name: str) -> str:
        return "/".join((self.step_stream(job, run_id, step_key), "outputs",
                         validate_component("output_name", output_name)))

    def asset_stream(self, asset_path: list[str], partition_key: str | None) -> str:
        parts = ["assets", *(validate_component("asset key", p) for p in asset_path)]
        if partition_key is not None:
            parts.append(validate_component("partition_key", partition_key))
        return "/".join(parts)

    def _abs(self, rel: str) -> str:
        return f"{self.root}/{rel}" if self.root else rel

    def url_of(self, checkpoint_id: str) -> str:
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        path = self._abs(checkpoint_id)
        return path if protocol in ("file", "local") else f"{protocol}://{path.lstrip('/')}"

    # ---- writing ------------------------------------------------------------------------------
    def write(self, obj: Any, *, stream: str, job: str, run_id: str, root_run_id: str,
              step_key: str, kind: str, code_version: str | None = None,
              prediction: Prediction | None = None) -> Manifest:
        """Commit ``obj`` as the next checkpoint of ``stream``; returns its manifest.

        Guarantees:
            - The payload's sha256 and size are in the manifest; readers verify both.
            - The manifest appears last and whole (temporary name, then one move): that move is the
              commit. A crash before it leaves an entry without a manifest, which is never read.
            - Earlier checkpoints are untouched until this one is committed; retention then deletes
              only what falls outside the newest ``retention`` good ones.

        Cost: the sha256 runs on a second thread from the moment the payload exists, so the listing,
        the directory, the payload write and reading the manifests retention needs all overlap
        it; after the commit only retention's deletions remain. No call asks for a file's size
        (on ``memory://`` that copies the whole buffer).
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        serializer = choose_serializer(obj, self.allow_pickle)
        started = time.perf_counter()
        data = serializer.dumps(obj)
        digest = _Sha256(data)
        earlier = self._entries(stream)
        seq = (earlier[-1] + 1) if earlier else 1
        checkpoint_id = f"{stream}/{CKPT_PREFIX}{seq:06d}"
        payload_name = f"payload.{serializer.extension}"
        self.fs.makedirs(self._abs(checkpoint_id), exist_ok=True)
        # The payload goes straight to its name: until the manifest exists it is never read, and a
        # torn payload fails its sha256. Only the manifest needs an atomic appearance.
        self.fs.pipe_file(self._abs(f"{checkpoint_id}/{payload_name}"), data)
        doomed = self._beyond_retention(stream, earlier)
        sha256 = digest.hexdigest()
        manifest = Manifest(
            checkpoint_id=checkpoint_id, run_id=run_id, root_run_id=root_run_id, job=job,
            step_key=step_key, seq=seq, kind=kind, created_at=time.time(), code_version=code_version,
            serializer=serializer.name, payload_name=payload_name, nbytes=len(data),
            sha256=sha256, write_s=time.perf_counter() - started, prediction=prediction,
        )
        self._write_atomic(f"{checkpoint_id}/{MANIFEST_NAME}", manifest.to_json())
        for doomed_id, doomed_manifest in doomed:  # only now: the new checkpoint is committed
            self._delete_entry(doomed_id, doomed_manifest)
        return manifest

    def _write_atomic(self, rel: str, data: bytes) -> None:
        target = self._abs(rel)
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:12]}"
        self.fs.pipe_file(tmp, data)
        self.fs.mv(tmp, target)

    def _entries(self, stream: str) -> list[int]:
        path = self._abs(stream)
        self.fs.invalidate_cache(path)  # object stores cache listings; another process may have written
        try:
            names = self.fs.ls(path, detail=False)
        except FileNotFoundError:
            return []
        seqs = []
        for name in names:
            match = _CKPT_NAME.match(name.rstrip("/").rsplit("/", 1)[-1])
            if match:
                seqs.append(int(match.group(1)))
        return sorted(seqs)

    def _beyond_retention(self, stream: str, earlier: list[int]) -> list[tuple[str, Manifest | None]]:
        """What retention deletes once the checkpoint being written is committed (with the
        manifest of each entry, None for a torn one).

        The new checkpoint will be the newest good one, so this is ``collect_garbage(stream,
        retention)`` on the listing taken before the write: walking down from the newest earlier
        entry, the ``retention - 1`` newest good ones are kept; every entry below them, and every
        torn one among them, goes. Entries that appear after the listing are never touched.
        """
        doomed = []
        good = 1
        for seq in reversed(earlier):
            checkpoint_id = f"{stream}/{CKPT_PREFIX}{seq:06d}"
            manifest = self._manifest_or_none(checkpoint_id)
            if good < self.retention and manifest is not None:
                good += 1
            else:
                doomed.append((checkpoint_id, manifest))
        return doomed

    def _manifest_or_none(self, checkpoint_id: str) -> Manifest | None:
        try:
            return self.read_manifest(checkpoint_id)
        except (CheckpointNotFoundError, CheckpointCorruptError):
            return None

    def collect_garbage(self, stream: str, keep: int, verify: bool = False) -> int:
        """Delete all but the newest ``keep`` good checkpoints of ``stream``, and torn entries older
        than the newest good one (an entry newer than it may be a write in progress). Returns the
        number of entries deleted.

        ``verify`` also reads every payload and treats one failing its sha256 as torn (what
        ``predcheck checkpoints gc`` does); retention after a write trusts the manifests it wrote.
        """
        manifests = {m.seq: m for m in self.list(stream)}
        committed = list(manifests)
        good = [seq for seq in committed if not verify or self._verifies(f"{stream}/{CKPT_PREFIX}{seq:06d}")]
        corrupt = set(committed) - set(good)
        if not good:
            return 0
        keep_from = good[-keep] if len(good) >= keep else good[0]
        doomed = [seq for seq in self._entries(stream)
                  if seq < keep_from or seq in corrupt or (seq not in good and seq < good[-1])]
        for seq in doomed:
            self._delete_entry(f"{stream}/{CKPT_PREFIX}{seq:06d}", manifests.get(seq))
        return len(doomed)

    def _delete_entry(self, checkpoint_id: str, manifest: Manifest | None) -> None:
        """Delete one ``ckpt-*`` entry: the manifest first (the entry is then uncommitted, never
        half-readable), then the payload, then the folder where folders exist.

        A committed entry's files are known from its manifest; only a torn one is listed. Files
        are removed one by one with ``rm_file``: ``rm`` and ``isdir`` ask for each file's info,
        and on ``memory://`` that copies the whole buffer.
        """
        entry = self._abs(checkpoint_id)
        if manifest is not None:
            files = [f"{entry}/{MANIFEST_NAME}", f"{entry}/{manifest.payload_name}"]
        else:
            try:
                files = self.fs.ls(entry, detail=False)
            except FileNotFoundError:
                return
        for path in files:
            try:
                self.fs.rm_file(path)
            except FileNotFoundError:
                pass
        try:
            self.fs.rmdir(entry)
        except FileNotFoundError:
            pass  # object stores have no folders
        except OSError:  # something else was left in it (a stray temporary file): remove it all
            self.fs.rm(entry, recursive=True)

    def _verifies(self, checkpoint_id: str) -> bool:
        try:
            self.read(checkpoint_id)
        except (CheckpointCorruptError, CheckpointNotFoundError):
            return False
        except UnsafeSerializationError:
            return True  # intact, only not loadable without the pickle opt-in
        return True

    # ---- reading ------------------------------------------------------------------------------
    def read_manifest(self, checkpoint_id: str) -> Manifest:
        """The committed manifest of ``checkpoint_id``; raises if missing or unreadable."""
        _validate_checkpoint_id(checkpoint_id)
        try:
            raw = self.fs.cat_file(self._abs(f"{checkpoint_id}/{MANIFEST_NAME}"))
        except FileNotFoundError as e:
            raise CheckpointNotFoundError(
                f"checkpoint {checkpoint_id!r} has no committed manifest under {self.root_url!r}: "
                "it was never completed or was deleted; list what exists with "
                "`predcheck checkpoints list`."
            ) from e
        manifest = Manifest.from_json(raw, checkpoint_id)
        if manifest.checkpoint_id != checkpoint_id:
            raise CheckpointCorruptError(
                f"checkpoint manifest {checkpoint_id!r} names {manifest.checkpoint_id!r}: it was "
                "copied or tampered with; delete it or resume from another checkpoint."
            )
        return manifest

    def read(self, checkpoint_id: str) -> tuple[Manifest, Any]:
        """Manifest and object of ``checkpoint_id``, after verifying the payload's sha256."""
        manifest = self.read_manifest(checkpoint_id)
        try:
            data = self.fs.cat_file(self._abs(f"{checkpoint_id}/{manifest.payload_name}"))
        except FileNotFoundError as e:
            raise CheckpointCorruptError(
                f"checkpoint {checkpoint_id!r} has a manifest but no payload: delete it with "
                "`predcheck checkpoints gc`; the previous checkpoint is used where one exists."
            ) from e
        if hashlib.sha256(data).hexdigest() != manifest.sha256 or len(data) != manifest.nbytes:
            raise CheckpointCorruptError(
                f"checkpoint {checkpoint_id!r} payload fails its sha256 check (tampered or torn): it "
                "is refused; the previous checkpoint is used where one exists."
            )
        serializer = _BY_NAME.get(manifest.serializer)
        if serializer is None:
            raise CheckpointCorruptError(
                f"checkpoint {checkpoint_id!r} names unknown serializer {manifest.serializer!r}."
            )
        if serializer.name == "pickle" and not self.allow_pickle:
            raise UnsafeSerializationError(
                f"checkpoint {checkpoint_id!r} is a pickle; loading it runs code from the storage. "
                "Set allow_pickle=True only if you trust everyone who can write that storage."
            )
        return manifest, serializer.loads(data)

    def list(self, stream: str) -> list[Manifest]:
        """Good (committed, readable manifest) checkpoints of ``stream``, oldest first."""
        manifests = (self._manifest_or_none(f"{stream}/{CKPT_PREFIX}{seq:06d}") for seq in self._entries(stream))
        return [m for m in manifests if m is not None]

    def latest(self, stream: str) -> tuple[Manifest, Any] | None:
        """Newest checkpoint of ``stream`` that verifies; falls back past corrupt ones.

        Returns None when the stream has no checkpoint; raises CheckpointCorruptError when it has
        some but none verifies.
        """
        failures: list[CheckpointCorruptError] = []
        for seq in reversed(self._entries(stream)):
            checkpoint_id = f"{stream}/{CKPT_PREFIX}{seq:06d}"
            try:
                return self.read(checkpoint_id)
            except CheckpointNotFoundError:
                continue  # an incomplete write: never committed
            except CheckpointCorruptError as e:
                failures.append(e)
        if failures:
            raise CheckpointCorruptError(
                f"no checkpoint of {stream!r} verifies ({len(failures)} refused; newest: "
                f"{failures[0]}). Restart the step from scratch or restore the storage."
            )
        return None

    def read_for_resume(self, checkpoint_id: str, *, job: str, step_key: str,
                        code_version: str | None) -> tuple[Manifest, Any]:
        """Read a checkpoint named by a resume plan, refusing one of another job/step/code version."""
        manifest, obj = self.read(checkpoint_id)
        if manifest.job != job or manifest.step_key != step_key:
            raise CheckpointMismatchError(
                f"checkpoint {checkpoint_id!r} belongs to job {manifest.job!r} step "
                f"{manifest.step_key!r}, not to job {job!r} step {step_key!r}: fix the resume plan's "
                "checkpoint_id or drop it to start the step from scratch."
            )
        if code_version and manifest.code_version and manifest.code_version != code_version:
            raise CheckpointMismatchError(
                f"checkpoint {checkpoint_id!r} was written by code version {manifest.code_version!r}, "
                f"this step runs {code_version!r}: its state may not fit; re-run from scratch or "
                "deploy the matching code version."
            )
        return manifest, obj

    def streams(self) -> list[str]:
        """Every stream under the root (directories holding ``ckpt-*`` entries)."""
        found = set()
        self.fs.invalidate_cache(self.root)
        try:
            paths = self.fs.find(self.root, withdirs=False)
        except FileNotFoundError:
            return []
        prefix = f"{self.root}/" if self.root else ""
        for path in paths:
            rel = path[len(prefix):] if path.startswith(prefix) else path.lstrip("/")
            parts = rel.split("/")
            for i, part in enumerate(parts):
                if _CKPT_NAME.match(part):
                    found.add("/".join(parts[:i]))
                    break
        return sorted(found)



class _Sha256:
    """sha256 of a payload; from 1 MiB on, computed on a worker thread so that the caller's listing
    and payload write overlap it (hashlib releases the GIL on buffers this large)."""

    THREADED_FROM_BYTES = 1 << 20

    def __init__(self, data: bytes) -> None:
        self._hash = hashlib.sha256()
        self._done: Future[None] | None = None
        if len(data) >= self.THREADED_FROM_BYTES:
            self._done = _hash_worker().submit(self._hash.update, data)
        else:
            self._hash.update(data)

    def hexdigest(self) -> str:
        if self._done is not None:
            self._done.result()
        return self._hash.hexdigest()


_hash_workers: ThreadPoolExecutor | None = None
_hash_workers_lock = threading.Lock()


def _hash_worker() -> ThreadPoolExecutor:
    """This process's hashing threads, started on first use and kept.

    Submitting to a waiting thread costs tens of microseconds and never blocks the caller; starting a
    thread per write waits for it to be scheduled, which took up to milliseconds on this loaded
    2-core machine. A forked child starts its own (its parent's threads do not exist in it).
    """
    global _hash_workers
    with _hash_workers_lock:
        if _hash_workers is None:
            _hash_workers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="predcheck-sha256")
        return _hash_workers


def _forget_hash_workers() -> None:
    global _hash_workers, _hash_workers_lock
    _hash_workers, _hash_workers_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_hash_workers)


def _validate_checkpoint_id(checkpoint_id: str) -> None:
    parts = checkpoint_id.split("/") if isinstance(checkpoint_id, str) else [checkpoint_id]
    if len(parts) < 4 or not _CKPT_NAME.match(parts[-1]):
        raise InvalidPathComponentError(
            f"checkpoint id {checkpoint_id!r} is malformed: expected "
            "'{job}/{root_run_id}/{step_key}/ckpt-NNNNNN' as listed by `predcheck checkpoints list`."
        )
    for part in parts:
        validate_component("checkpoint id component", part)
