"""The PostgreSQL state store: the whole state-store contract, then what only a shared database has to prove.

The contract tests are imported from ``tests/unit/test_state_store.py`` (every
test there that takes ``store``) and run here with ``store`` parametrized as
"postgres": a fresh database on the session's prod cluster per test. Below
them: the store's own schema migrations (concurrent starts, a newer
database), its error sentences, and replicas — separate stores, separate
connections — racing for the same run, message or event.
"""

from __future__ import annotations

import inspect
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg
import pytest

from bot.config import Settings, State as StateSettings, parse_settings
from bot.errors import ConfigError, ConnectionFailed
from bot.runs.model import State
from bot.runs.store import JobRecord, Lease, open_state
from bot.runs.store import postgres, postgres_schema
from bot.runs.store.postgres import PostgresStore
from bot.runs.store.postgres_schema import Step
from tests.fix_pg import PROD_PASSWORD, Clusters
from tests.unit import test_state_store as contract
from tests.unit.test_state_store import a_run, claim, opened, state_database

CONTRACT = {name: test for name, test in vars(contract).items()
            if name.startswith("test_") and callable(test) and "store" in inspect.signature(test).parameters}
globals().update(CONTRACT)  # collected here as this module's tests, with this module's ``store`` fixture


@pytest.fixture(params=["postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PostgresStore]:
    """The contract's ``store``, PostgreSQL only (the unit file runs the sqlite store)."""
    yield from opened(request.param, request, tmp_path)


@pytest.fixture
def state_url(pg_clusters: Clusters) -> Iterator[str]:
    """An empty database for the state store; no store opened on it yet."""
    with state_database(pg_clusters) as url:
        yield url


def race(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(0..n-1)`` on ``n`` threads released at once; their results (or the exceptions they raised)."""
    start = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        start.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # noqa: BLE001 - the test asserts on it
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(f"SELECT version FROM {postgres_schema.VERSIONS} ORDER BY version")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_contract_is_imported() -> None:
    assert len(CONTRACT) > 60 and "test_concurrent_claims_for_one_environment_have_exactly_one_winner" in CONTRACT


# --- the store's own schema ----------------------------------------------------------------------------


def test_a_new_database_is_brought_to_the_latest_schema(state_url: str) -> None:
    PostgresStore(state_url).close()
    assert versions(state_url) == [step.version for step in postgres_schema.STEPS]


def test_opening_an_up_to_date_database_applies_nothing(state_url: str) -> None:
    PostgresStore(state_url).close()
    assert migrate(state_url) == []


def migrate(url: str) -> list[int]:
    """One process starting: its own connection, the store's schema step."""
    with psycopg.connect(url, autocommit=True) as conn:
        return postgres_schema.migrate(conn, "here")


def test_concurrent_first_starts_apply_each_step_once(state_url: str) -> None:
    applied = race(6, lambda _: migrate(state_url))
    every = [step.version for step in postgres_schema.STEPS]
    assert sorted(v for one in applied for v in one) == every  # each step by exactly one start (any one)
    assert versions(state_url) == every


def test_concurrent_store_starts_all_open(state_url: str) -> None:
    stores = race(4, lambda _: PostgresStore(state_url))
    try:
        assert [type(s).__name__ for s in stores] == ["PostgresStore"] * 4
    finally:
        for opened_store in stores:
            if isinstance(opened_store, PostgresStore):
                opened_store.close()


def test_a_database_of_an_older_bot_gains_only_the_new_step(state_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    PostgresStore(state_url).close()
    new = postgres_schema.LATEST + 1
    step = Step(new, "a column for tests", f"ALTER TABLE {postgres_schema.SCHEMA}.runs ADD COLUMN later text")
    monkeypatch.setattr(postgres_schema, "STEPS", (*postgres_schema.STEPS, step))
    monkeypatch.setattr(postgres_schema, "LATEST", new)
    applied = race(3, lambda _: migrate(state_url))
    every = [s.version for s in postgres_schema.STEPS]
    assert (sorted(applied, key=len), versions(state_url)) == ([[], [], [new]], every)


def test_a_database_from_a_newer_bot_is_refused_with_a_sentence(state_url: str) -> None:
    PostgresStore(state_url).close()
    with psycopg.connect(state_url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {postgres_schema.VERSIONS} (version, what) VALUES (99, 'from the future')")
    with pytest.raises(ConfigError) as refused:
        PostgresStore(state_url)
    where = state_url.rsplit("@", 1)[1]
    assert str(refused.value) == (
        f"The state database ({where}) was set up by a newer migrate-bot (state schema version 99; this one knows "
        f"up to {postgres_schema.LATEST}): upgrade migrate-bot. Every replica sharing state.url must run that "
        "version or newer.")


# --- sentences, never a traceback or the password ------------------------------------------------------


@pytest.fixture
def limited_url(pg_clusters: Clusters, state_url: str) -> Iterator[str]:
    """``state_url`` as a user who may connect but not create anything in that database."""
    admin = pg_clusters.prod.url("postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE ROLE state_limited LOGIN PASSWORD 'Limited-Pw-5521'")
    try:
        yield pg_clusters.prod.url(state_url.rsplit("/", 1)[1], user="state_limited", password="Limited-Pw-5521")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {state_url.rsplit('/', 1)[1]} WITH (FORCE)")
            conn.execute("DROP ROLE state_limited")


def test_a_user_who_may_not_create_the_schema_is_told_what_to_grant(limited_url: str) -> None:
    with pytest.raises(ConfigError) as refused:
        PostgresStore(limited_url)
    assert str(refused.value) == (
        f"The state database user may not create the schema migrate_bot_state in {limited_url.rsplit('@', 1)[1]}. "
        "Grant it CREATE on that database, or create the schema migrate_bot_state owned by that user.")


def test_an_unreachable_state_database_is_a_sentence_naming_state_url() -> None:
    port = free_port()
    with pytest.raises(ConnectionFailed) as failed:
        PostgresStore(f"postgresql://bot:Unreachable-Pw-41@127.0.0.1:{port}/state")
    assert str(failed.value) == (
        f"Could not connect to the state database (127.0.0.1:{port}/state, state.url): nothing is listening there. "
        "Check that the server is up and the host and port are right.")


def test_a_refused_password_is_a_sentence_without_the_password(pg_clusters: Clusters, state_url: str) -> None:
    wrong = state_url.replace(PROD_PASSWORD, "Wrong-Pa55word-88")
    with pytest.raises(ConnectionFailed) as failed:
        PostgresStore(wrong)
    assert "Wrong-Pa55word-88" not in str(failed.value)
    assert str(failed.value).startswith("Could not connect to the state database (")
    assert "state.url): the password was rejected." in str(failed.value)


def test_a_state_database_gone_while_the_bot_runs_is_a_sentence(pg_clusters: Clusters,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "POOL_TIMEOUT_S", 1.0)
    with state_database(pg_clusters) as url:
        store = PostgresStore(url)
    try:
        with pytest.raises(ConnectionFailed) as failed:
            store.get_run("r-00000001")
        assert str(failed.value) == (
            f"The state database ({url.rsplit('@', 1)[1]}, state.url) gave no connection within 1 s: it is down, "
            "unreachable or out of connection slots. Check that the server is up and reachable from the bot.")
    finally:
        store.close()


def test_open_state_opens_the_database_behind_the_state_url_reference(state_url: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DATABASE_URL", state_url)
    found = open_state(Settings(state=StateSettings(url="env:STATE_DATABASE_URL")))
    try:
        assert isinstance(found, PostgresStore) and found.get_run("r-missing") is None
    finally:
        found.close()


def test_an_unreachable_state_url_from_the_config_is_a_sentence(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    monkeypatch.setenv("STATE_DATABASE_URL", f"postgres://bot:Secret-Pw-Of-The-Bot@127.0.0.1:{port}/state")
    settings = parse_settings('[state]\nurl = "env:STATE_DATABASE_URL"\n')
    with pytest.raises(ConnectionFailed) as failed:
        open_state(settings)
    assert "state.url" in str(failed.value) and "Secret-Pw-Of-The-Bot" not in str(failed.value)


# --- replicas: separate stores racing ---------------------------------------------------------------------


@pytest.fixture
def replicas(state_url: str) -> Iterator[list[PostgresStore]]:
    """Eight stores on one database, as eight replicas would have."""
    stores = [PostgresStore(state_url, pool_size=2) for _ in range(8)]
    yield stores
    for opened_store in stores:
        opened_store.close()


def test_eight_replicas_claiming_eight_runs_of_one_environment_have_exactly_one_winner(
        replicas: list[PostgresStore]) -> None:
    runs = [replicas[0].insert_run(a_run()) for _ in replicas]
    leases: list[Lease | None] = race(len(runs), lambda n: claim(replicas[n], runs[n], f"host/{n}/t"))
    winners = [run.id for run, lease in zip(runs, leases) if isinstance(lease, Lease) and lease.run_id == run.id]
    states = sorted(replicas[0].get_run(run.id).state for run in runs)
    assert (len(winners), states) == (1, [State.REQUESTED] * 7 + [State.RUNNING])


def test_eight_replicas_claiming_one_run_have_exactly_one_winner(replicas: list[PostgresStore]) -> None:
    run = replicas[0].insert_run(a_run())
    leases = race(len(replicas), lambda n: claim(replicas[n], run, f"host/{n}/t"))
    stored = replicas[0].get_run(run.id)
    assert (set(leases), stored.state) == ({replicas[0].lease("env:staging")}, State.RUNNING)
    assert leases[0].owner == stored.owner


def test_a_claims_alive_check_may_read_the_store_inside_the_claim(state_url: str) -> None:
    store = PostgresStore(state_url, pool_size=2)  # fewer connections than claimants: the check shares the claim's
    try:
        runs = [store.insert_run(a_run()) for _ in range(6)]
        leases = race(len(runs), lambda n: claim(store, runs[n], f"host/{n}/t",
                                                 alive=lambda owner: store.process(owner) is None))
        assert sum(isinstance(lease, Lease) and lease.run_id == run.id for run, lease in zip(runs, leases)) == 1
    finally:
        store.close()


def test_replicas_enqueueing_one_key_at_once_queue_it_once(replicas: list[PostgresStore]) -> None:
    ids = race(len(replicas), lambda n: replicas[n].enqueue("update", {"run": "r-00000001"}, key="update:r-00000001"))
    assert (len(set(ids)), len(replicas[0].deliveries())) == (1, 1)


def test_replicas_claiming_one_delivery_have_one_sender(replicas: list[PostgresStore]) -> None:
    delivery = replicas[0].enqueue("reply", {"text": "x"})
    claimed = race(len(replicas), lambda n: replicas[n].claim_delivery(delivery, f"host/{n}/t", 30))
    assert claimed.count(True) == 1


def test_replicas_receiving_one_event_at_once_handle_it_once(replicas: list[PostgresStore]) -> None:
    firsts = race(len(replicas), lambda n: replicas[n].first_time("Ev-shared"))
    assert firsts.count(True) == 1


def test_replicas_see_each_others_writes(replicas: list[PostgresStore]) -> None:
    run = replicas[0].insert_run(a_run(thread_ts="111.1"))
    assert replicas[5].run_by_message("C1", "111.1") == run


# --- what PostgreSQL stores differently, and must not show -----------------------------------------------


def test_timestamps_come_back_as_utc_iso_strings_whatever_the_sessions_zone(state_url: str) -> None:
    with psycopg.connect(state_url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {state_url.rsplit('/', 1)[1]} SET TimeZone = 'America/New_York'")
    store = PostgresStore(state_url)
    try:
        run = store.insert_run(a_run(scheduled_for="2026-01-05T03:00:00+00:00"))
        stored = store.get_run(run.id)
        assert (stored.scheduled_for, stored.created_at) == ("2026-01-05T03:00:00+00:00", run.created_at)
    finally:
        store.close()


def test_names_sort_bytewise_as_in_the_sqlite_store_whatever_the_databases_collation(pg_clusters: Clusters) -> None:
    with state_database(pg_clusters, "TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US'") as url:
        store = PostgresStore(url)
        try:
            for name in ("b", "B", "a", "_x"):
                store.acquire_lease(name, "o", 30.0)
                store.put_job(JobRecord(name, 1.0, b""))
            assert [lease.name for lease in store.leases()] == [job.id for job in store.jobs()] == ["B", "_x", "a", "b"]
        finally:
            store.close()


