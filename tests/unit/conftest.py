"""Fixtures of the unit suite: real stores on a temporary directory, ``memory://`` and SQLite."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from predcheck_dagster import metrics_store as metrics_store_module
from predcheck_dagster.checkpoint_store import CheckpointStore
from predcheck_dagster.metrics_store import MetricsStore


def make_store_url(backend: str, tmp_path) -> str:
    """A fresh checkpoint root: a temporary directory, or a unique ``memory://`` root."""
    if backend == "local":
        return str(tmp_path / "checkpoints")
    return f"memory://predcheck-unit-{uuid.uuid4().hex}"


@pytest.fixture(params=["local", "memory"])
def store_url(request, tmp_path) -> Iterator[str]:
    """A checkpoint root URL on each backend; a ``memory://`` root is removed afterwards."""
    url = make_store_url(request.param, tmp_path)
    yield url
    if request.param == "memory":
        store = CheckpointStore(url)
        if store.fs.exists(store.root):
            store.fs.rm(store.root, recursive=True)


@pytest.fixture
def store(store_url) -> CheckpointStore:
    return CheckpointStore(store_url, retention=3)


@pytest.fixture
def sqlite_url(tmp_path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path}/m.db"
    yield url
    engine = metrics_store_module._ENGINES.pop(url, None)
    if engine is not None:
        engine.dispose()
    metrics_store_module._MIGRATED.discard(url)


@pytest.fixture
def metrics(sqlite_url) -> MetricsStore:
    return MetricsStore(sqlite_url)
