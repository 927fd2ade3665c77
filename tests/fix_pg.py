"""pytest plugin: a real "prod" and a real "staging" PostgreSQL cluster per session.

Both are started by ``bot.devcluster`` (the same code `make demo` uses) on
127.0.0.1 with pg_stat_statements preloaded and scram passwords. Each test
gets fresh databases cloned from a template that already has the runbook's
extensions, so tests are isolated and cheap.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from bot import devcluster

PROD_PASSWORD = "prod-Pa55w0rd-7f3kq9"
STAGING_PASSWORD = "stg-Pa55w0rd-x81qz4"
EXTENSIONS = ("pg_trgm", "citext", "uuid-ossp")
TEMPLATE = "tmpl_migrate_bot"
_counter = itertools.count(1)


@dataclass
class Clusters:
    prod: devcluster.LocalCluster
    staging: devcluster.LocalCluster


@dataclass
class Databases:
    """A fresh prod database and a fresh staging database for one test."""

    name: str
    clusters: Clusters

    @property
    def prod_url(self) -> str:
        return self.clusters.prod.url(self.name)

    @property
    def staging_url(self) -> str:
        return self.clusters.staging.url(self.name)

    def url(self, env: str) -> str:
        return self.prod_url if env == "prod" else self.staging_url

    def connect(self, env: str, autocommit: bool = True) -> psycopg.Connection:
        return psycopg.connect(self.url(env), autocommit=autocommit)

    def sql(self, env: str, text: str, params: tuple | None = None) -> list[tuple]:
        with self.connect(env) as conn:
            cur = conn.execute(text, params)
            return cur.fetchall() if cur.description else []

    def both(self, text: str) -> None:
        self.sql("prod", text)
        self.sql("staging", text)


def pytest_report_header(config: pytest.Config) -> list[str]:
    try:
        return [f"postgresql: server binaries in {devcluster.bindir()} (prod + staging clusters started per session)"]
    except Exception as exc:  # noqa: BLE001 - a header must never break collection
        return [f"postgresql: not found ({exc})"]


def _admin(cluster: devcluster.LocalCluster, statement: str) -> None:
    with psycopg.connect(cluster.url("postgres"), autocommit=True) as conn:
        conn.execute(statement)


def _make_template(cluster: devcluster.LocalCluster) -> None:
    _admin(cluster, f"CREATE DATABASE {TEMPLATE}")
    with psycopg.connect(cluster.url(TEMPLATE), autocommit=True) as conn:
        for ext in EXTENSIONS:
            conn.execute(f'CREATE EXTENSION IF NOT EXISTS "{ext}"')
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")


@pytest.fixture(scope="session")
def pg_clusters() -> Iterator[Clusters]:
    base = Path(tempfile.mkdtemp(prefix="mb-test-pg-"))
    started: list[devcluster.LocalCluster] = []
    try:
        prod = devcluster.create_cluster(base, "prod", PROD_PASSWORD)
        started.append(prod)
        staging = devcluster.create_cluster(base, "staging", STAGING_PASSWORD)
        started.append(staging)
        for cluster in started:
            _make_template(cluster)
        yield Clusters(prod=prod, staging=staging)
    finally:
        devcluster.remove(base, started)


@pytest.fixture
def dbs(pg_clusters: Clusters) -> Iterator[Databases]:
    name = f"t{os.getpid()}_{next(_counter)}"
    for cluster in (pg_clusters.prod, pg_clusters.staging):
        _admin(cluster, f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    yield Databases(name=name, clusters=pg_clusters)
    for cluster in (pg_clusters.prod, pg_clusters.staging):
        _admin(cluster, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A clean working directory with no stray config or state."""
    monkeypatch.chdir(tmp_path)
    for var in ("MIGRATE_BOT_CONFIG", "MIGRATE_BOT_STATE", "STAGING_VALIDATION_PASSED", "SLACK_API_URL"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


@pytest.fixture
def bot_env(dbs: Databases, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Databases:
    """The environment the runbook's step 1 sets: database URLs from the 'secret store'."""
    monkeypatch.setenv("PROD_DATABASE_URL", dbs.prod_url)
    monkeypatch.setenv("STAGING_DATABASE_URL", dbs.staging_url)
    monkeypatch.setenv("MIGRATE_BOT_STATE", str(workdir / "state.db"))
    return dbs


def write_migrations(root: Path, files: dict[str, str]) -> Path:
    """Write a migrations directory: {"0001_users.sql": "CREATE TABLE …", "x/migration.sql": …}."""
    root.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


@pytest.fixture
def make_migrations(workdir: Path):
    def make(files: dict[str, str], folder: str = "migrations") -> Path:
        return write_migrations(workdir / folder, files)

    return make
