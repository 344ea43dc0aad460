"""Shared fixtures: real Dagster instances on a temporary DAGSTER_HOME, SQLite or PostgreSQL."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("PREDCHECK_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")

if str(ROOT) not in sys.path:  # the code location's folders load from the repo root, as under dagster dev
    sys.path.insert(0, str(ROOT))


@dataclass
class Backend:
    name: str
    dagster_yaml: str
    store_url: str


def _create_database() -> str:
    """A fresh PostgreSQL database for this test session; returns its SQLAlchemy URL."""
    import sqlalchemy as sa

    name = f"predcheck_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _drop_database(url: str) -> None:
    import sqlalchemy as sa

    from predcheck_dagster.metrics_store import _ENGINES

    for engine in _ENGINES.values():
        engine.dispose()
    name = url.rsplit("/", 1)[1]
    engine = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    url = _create_database()
    yield url
    _drop_database(url)


@pytest.fixture
def fresh_pg_url() -> Iterator[str]:
    """An empty PostgreSQL database of its own, dropped after the test."""
    url = _create_database()
    yield url
    _drop_database(url)


def _sqlite_backend(home: Path) -> Backend:
    return Backend("sqlite", "telemetry:\n  enabled: false\n", f"sqlite:///{home}/predcheck/metrics.db")


def _postgres_backend(url: str) -> Backend:
    yaml = (
        "telemetry:\n  enabled: false\n"
        "storage:\n  postgres:\n"
        f"    postgres_url: {url}\n"
    )
    return Backend("postgres", yaml, url)


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, dagster_home: Path) -> Backend:
    """The Dagster instance *and* the metrics store on SQLite, then on PostgreSQL."""
    chosen = _sqlite_backend(dagster_home) if request.param == "sqlite" else _postgres_backend(
        request.getfixturevalue("pg_url"))
    (dagster_home / "dagster.yaml").write_text(chosen.dagster_yaml)
    return chosen


@pytest.fixture
def instance(dagster_home: Path):
    from dagster import DagsterInstance

    with DagsterInstance.get() as inst:
        yield inst


@pytest.fixture(scope="session")
def location():
    """The shipped code location (definitions.py), loaded as dagster dev loads it."""
    from predcheck_dagster.demo.driver import load_location

    return load_location(str(ROOT / "workspace.yaml"))
