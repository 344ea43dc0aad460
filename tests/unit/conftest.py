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


@pytest.fixture(autouse=True)
def _stores_start_reachable() -> Iterator[None]:
    """Each test starts with no store remembered as down (the fail-fast window is per process)."""
    metrics_store_module._DOWN.clear()
    metrics_store_module._LAST_FLUSH_CHECK.clear()
    yield
    metrics_store_module._DOWN.clear()


def forget_store(url: str) -> None:
    """Dispose of this process's engine of ``url`` and forget that it was migrated."""
    engine = metrics_store_module._ENGINES.pop(url, None)
    if engine is not None:
        engine.dispose()
    metrics_store_module._MIGRATED.discard(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_store_url(request, tmp_path) -> Iterator[str]:
    """An empty database on each backend: a SQLite file, or a PostgreSQL database of this test only."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/empty.db"
        yield url
        forget_store(url)
        return
    from tests.conftest import _create_database, _drop_database

    url = _create_database()
    yield url
    forget_store(url)
    _drop_database(url)
