"""A validation is recorded with the gate settings it ran under, in both state stores and end to end."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from bot import config
from bot.runs.store import StateStore, postgres_schema
from bot.runs.store.postgres import PostgresStore
from bot.runs.store.sqlite import SqliteStore
from bot.workflow import gatesettings, validate
from tests.fix_pg import Clusters, Databases
from tests.unit.test_state_store import opened, state_database

SEED = "CREATE TABLE users (id bigserial PRIMARY KEY, email text);"


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    yield from opened(request.param, request, tmp_path)


def test_the_passing_validation_returns_the_settings_it_was_recorded_with(store: StateStore) -> None:
    settings = gatesettings.record(replace(config.Gate(), lint=False, lock_budget_s=10.0))
    store.record_validation(fingerprint="f1", passed=True, report_json="{}", migrations=["0001_a"],
                            gate_settings=settings)
    assert store.passing_validation("f1")["gate_settings"] == settings


def test_a_validation_recorded_without_settings_has_none(store: StateStore) -> None:
    store.record_validation(fingerprint="f1", passed=True, report_json="{}", migrations=["0001_a"])
    assert store.passing_validation("f1")["gate_settings"] is None


def test_a_state_file_from_before_the_column_gains_it(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE validations (id INTEGER PRIMARY KEY, fingerprint TEXT, passed INTEGER, env TEXT, "
                     "run_id TEXT, [commit] TEXT, migrations TEXT, report TEXT, created_at TEXT)")
        conn.execute("INSERT INTO validations (fingerprint, passed, env, run_id, [commit], migrations, report, "
                     "created_at) VALUES ('f0', 1, 'staging', '', '', '[]', '{}', '2026-01-01T00:00:00+00:00')")
    store = SqliteStore(path)
    assert store.passing_validation("f0")["gate_settings"] is None
    store.record_validation(fingerprint="f1", passed=True, report_json="{}", migrations=[],
                            gate_settings={"v": 1, "lint": True})
    assert store.passing_validation("f1")["gate_settings"] == {"v": 1, "lint": True}


def test_a_state_database_of_the_previous_schema_gains_only_the_new_column(pg_clusters: Clusters,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with state_database(pg_clusters) as url:
        first = postgres_schema.STEPS[:1]
        with monkeypatch.context() as older:  # the bot before this change: only step 1
            older.setattr(postgres_schema, "STEPS", first)
            older.setattr(postgres_schema, "LATEST", 1)
            PostgresStore(url).close()
        with psycopg.connect(url) as conn:  # a validation it recorded
            conn.execute(f"INSERT INTO {postgres_schema.SCHEMA}.validations (fingerprint, passed, env, migrations, "
                         "report, created_at) VALUES ('f0', true, 'staging', '[]', '{}', now())")
        store = PostgresStore(url)
        try:
            assert store.passing_validation("f0")["gate_settings"] is None
            with psycopg.connect(url) as conn:
                assert conn.execute(f"SELECT max(version) FROM {postgres_schema.VERSIONS}").fetchone() == (2,)
        finally:
            store.close()


def test_a_validation_records_the_gate_settings_it_ran_under(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_orders.sql": "CREATE TABLE orders (id bigserial PRIMARY KEY);"})
    settings = config.load(None)
    loose = replace(settings, gate=replace(settings.gate, lint=False, perf_queries=0))
    report = validate.run(loose, SqliteStore(settings.state.path))
    assert report.exit_code == 0, report.lines()
    found = SqliteStore(settings.state.path).passing_validation(report.fingerprint)
    assert found["gate_settings"] == gatesettings.record(loose.gate)
    assert gatesettings.refusal(found["gate_settings"], settings.gate) == (
        "the validation ran with lint off and perf_queries 0 (the regression gate off), but this deploy's config has "
        "lint on and perf_queries 20: validate again under this config")
