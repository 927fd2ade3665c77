"""pg_stat_statements snapshots and digests against real PostgreSQL.

The shared prod cluster (tests/fix_pg.py) has pg_stat_statements preloaded;
each test works in its own fresh database, so the snapshot (which reads only
the connection's database) sees only what the test ran. Resets are called by
the TESTS, standing in for another tool: the bot never resets anything.
Deallocation and a server without the library preloaded need server settings,
so those tests start a small dedicated cluster of their own.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Iterator

import psycopg
import pytest

from bot import devcluster
from bot.runs.store import Sample
from bot.runs.store.sqlite import SqliteStore
from bot.workflow import digest, digestrender, statements
from bot.workflow.statements import Snapshot, StatementsUnavailable
from tests.fix_pg import Databases

SEED = """
CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL DEFAULT 0, note text);
INSERT INTO items (id) SELECT g FROM generate_series(1, 500) g;
"""
POINT = "SELECT id, n FROM items WHERE id = $1"
BUMP = "UPDATE items SET n = n + $1 WHERE id = $2"


def workload(conn: psycopg.Connection, reads: int, writes: int = 0) -> None:
    for i in range(reads):
        conn.execute("SELECT id, n FROM items WHERE id = %s", (1 + i % 500,)).fetchall()
    for i in range(writes):
        conn.execute("UPDATE items SET n = n + %s WHERE id = %s", (7, 1 + i))


def by_text(snapshot_or_rows, text: str):
    items = snapshot_or_rows.entries if isinstance(snapshot_or_rows, Snapshot) else snapshot_or_rows
    found = [e for e in items if e.query == text]
    assert len(found) == 1, [e.query for e in items]
    return found[0]


def own_userid(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT oid FROM pg_roles WHERE rolname = current_user").fetchone()[0])


@pytest.fixture
def prod(dbs: Databases) -> Iterator[psycopg.Connection]:
    dbs.sql("prod", SEED)
    with dbs.connect("prod") as conn:
        yield conn


def test_a_digest_counts_what_ran_between_two_snapshots(prod: psycopg.Connection) -> None:
    first = statements.take(prod, "prod")
    workload(prod, reads=30, writes=7)
    second = statements.take(prod, "prod")
    d = digest.compute(first, second)
    assert d.period.basis == "delta" and d.period.start == first.taken_at and d.period.end == second.taken_at
    point, bump = by_text(d.top, POINT), by_text(d.top, BUMP)
    assert (point.calls, point.rows, bump.calls, bump.rows) == (30, 30, 7, 7)
    assert point.new and bump.new  # neither had run when the first snapshot was taken
    assert point.mean_ms > 0 and point.hit_ratio is not None and 0 < point.share < 1


def test_a_snapshot_reads_only_top_level_statements_of_its_own_database(prod: psycopg.Connection,
                                                                       dbs: Databases) -> None:
    prod.execute("CREATE FUNCTION bump_all() RETURNS void LANGUAGE sql AS 'UPDATE items SET n = n + 1'")
    prod.execute("SELECT bump_all()")
    with psycopg.connect(dbs.clusters.prod.url("postgres"), autocommit=True) as other:
        other.execute("SELECT count(*) FROM pg_class WHERE relname = 'from_another_database'")
    snapshot = statements.take(prod, "prod")
    texts = [e.query for e in snapshot.entries]
    assert "SELECT bump_all()" in texts and "UPDATE items SET n = n + $1" not in texts  # nested: track = all
    assert not any("pg_class" in t for t in texts)  # ran in the postgres database, not this one
    assert {e.dbid for e in snapshot.entries} == {snapshot.dbid}
    assert not any(t.startswith(statements.OWN) or "pg_stat_statements" in t for t in texts)


def test_the_server_is_identified_by_its_system_identifier(prod: psycopg.Connection) -> None:
    system_id = prod.execute("SELECT system_identifier::text FROM pg_control_system()").fetchone()[0]
    snapshot = statements.take(prod, "prod")
    assert (snapshot.server_id, snapshot.server_version // 10000) == (system_id, 15)
    assert snapshot.stats_reset is not None and snapshot.dealloc is not None and snapshot.max_entries == 5000


def test_literals_kept_by_pg_stat_statements_never_reach_a_snapshot(prod: psycopg.Connection) -> None:
    prod.execute("SET application_name = 'Zq-secret-app'")
    prod.execute("COMMENT ON TABLE items IS 'Zq secret comment 987654'")
    prod.execute("SELECT 'Zq-literal', 987654321 FROM items WHERE note = 'Zq-x' /* Zq-comment */").fetchall()
    snapshot = statements.take(prod, "prod")
    stored = json.dumps(statements.to_dict(snapshot, compress=False))
    assert "Zq" not in stored and "987654" not in stored
    assert "SET application_name = $1" in [e.query for e in snapshot.entries]


def test_a_full_reset_by_another_tool_restarts_the_period(prod: psycopg.Connection) -> None:
    workload(prod, reads=40)
    first = statements.take(prod, "prod")
    prod.execute("SELECT pg_stat_statements_reset()")  # what PgHero or pg_profile do on every sample
    workload(prod, reads=5)
    second = statements.take(prod, "prod")
    d = digest.compute(first, second)
    assert (d.period.basis, d.period.stats_reset) == ("reset", True)
    assert first.taken_at < d.period.reset_at < second.taken_at
    assert by_text(d.top, POINT).calls == 5
    assert "pg_stat_statements was reset at" in digestrender.text(d)


def test_a_single_entry_reset_counts_that_entry_from_its_restart(prod: psycopg.Connection) -> None:
    workload(prod, reads=20, writes=10)
    first = statements.take(prod, "prod")
    point = by_text(first, POINT)
    prod.execute("SELECT pg_stat_statements_reset(%s, %s, %s)", (point.userid, point.dbid, point.queryid))
    workload(prod, reads=3, writes=4)
    second = statements.take(prod, "prod")
    d = digest.compute(first, second)
    assert d.period.basis == "delta" and d.restarted == 1
    restarted, bumped = by_text(d.top, POINT), by_text(d.top, BUMP)
    assert (restarted.calls, restarted.restarted, bumped.calls, bumped.restarted) == (3, True, 4, False)


def test_a_snapshot_survives_the_state_store(prod: psycopg.Connection, tmp_path: Path) -> None:
    workload(prod, reads=3, writes=2)
    snapshot = statements.take(prod, "prod")
    store = SqliteStore(tmp_path / "state.db")
    store.add_sample(Sample("pgss", "prod", snapshot.taken_at.isoformat(), statements.to_dict(snapshot)))
    [sample] = store.samples("pgss", "prod")
    assert statements.from_dict(sample.data) == snapshot


def test_entries_of_other_roles_are_hidden_and_counted(prod: psycopg.Connection, dbs: Databases) -> None:
    role, password = f"{dbs.name}_watcher", "watch-Pa55-1x"
    prod.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        workload(prod, reads=2)
        url = dbs.clusters.prod.url(dbs.name, user=role, password=password)
        with psycopg.connect(url, autocommit=True) as watcher:
            snapshot = statements.take(watcher, "prod")
    finally:
        prod.execute(f"DROP ROLE {role}")
    assert snapshot.hidden >= 2 and all(e.userid != own_userid(prod) for e in snapshot.entries)


def test_a_role_that_may_not_read_the_view_is_told_what_to_grant(prod: psycopg.Connection, dbs: Databases) -> None:
    role, password = f"{dbs.name}_nobody", "nobody-Pa55-2y"
    prod.execute("REVOKE SELECT ON pg_stat_statements FROM PUBLIC")  # in this test's database only
    prod.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        url = dbs.clusters.prod.url(dbs.name, user=role, password=password)
        with psycopg.connect(url, autocommit=True) as conn, pytest.raises(StatementsUnavailable) as caught:
            statements.take(conn, "prod")
    finally:
        prod.execute(f"DROP ROLE {role}")
    assert caught.value.reason == "no-privilege" and str(caught.value) == (
        f"The bot's database role may not read pg_stat_statements in prod's database {dbs.name}. Grant that role "
        "SELECT on pg_stat_statements (and pg_read_all_stats, to see every role's statements).")


def test_without_the_extension_it_says_how_to_install_it(prod: psycopg.Connection, dbs: Databases) -> None:
    prod.execute("DROP EXTENSION pg_stat_statements")
    with pytest.raises(StatementsUnavailable) as caught:
        statements.take(prod, "prod")
    assert caught.value.reason == "not-installed" and caught.value.exit_code == 2
    assert str(caught.value) == (
        f"pg_stat_statements is not installed in prod's database {dbs.name}, so there is nothing to digest. "
        "Run `CREATE EXTENSION pg_stat_statements;` there (the server also needs "
        "shared_preload_libraries = 'pg_stat_statements' and a restart).")


def test_a_non_autocommit_connection_is_left_without_an_open_transaction(dbs: Databases) -> None:
    with dbs.connect("prod", autocommit=False) as conn:
        statements.take(conn, "prod")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


# -- dedicated clusters: server settings the shared ones cannot have ----------------------------------------

@pytest.fixture
def own_cluster() -> Iterator[callable]:
    """Start a small cluster with other server settings (appended to postgresql.conf + restart); always removed."""
    base = Path(tempfile.mkdtemp(prefix="mb-test-pgss-"))
    started: list[devcluster.LocalCluster] = []

    def start(**settings: str) -> devcluster.LocalCluster:
        cluster = devcluster.create_cluster(base, f"pgss{len(started)}", "pgss-Pa55w0rd-3k")
        started.append(cluster)
        cluster.stop()
        with open(cluster.datadir / "postgresql.conf", "a", encoding="utf-8") as conf:  # the last line wins
            conf.write("".join(f"{name.replace('__', '.')} = '{value}'\n" for name, value in settings.items()))
        cluster.start()
        return cluster

    try:
        yield start
    finally:
        devcluster.remove(base, started)


@pytest.mark.slow
def test_installed_but_not_preloaded_says_how_to_load_it(own_cluster) -> None:
    cluster = own_cluster(shared_preload_libraries="")
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        with pytest.raises(StatementsUnavailable) as caught:
            statements.take(conn, "prod")
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is still usable
    assert caught.value.reason == "not-preloaded"
    assert str(caught.value) == (
        "pg_stat_statements is installed in prod's database postgres but the server has not loaded it, so it "
        "records nothing. Add shared_preload_libraries = 'pg_stat_statements' to postgresql.conf (or the "
        "provider's parameter group) and restart the server.")


@pytest.mark.slow
def test_deallocation_says_to_raise_the_max(own_cluster) -> None:
    cluster = own_cluster(pg_stat_statements__max="100")
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
        first = statements.take(conn, "prod")
        for width in range(1, 151):  # 150 distinct statements: SELECT $1, SELECT $1, $2, …
            conn.execute("SELECT " + ", ".join(["1"] * width)).fetchall()
        second = statements.take(conn, "prod")
    assert second.max_entries == 100 and second.dealloc > first.dealloc
    d = digest.compute(first, second)
    assert d.dealloc is not None and d.dealloc.max_entries == 100 and not d.dealloc.since_reset
    assert d.dealloc.deallocations == second.dealloc - first.dealloc
    assert d.dealloc.statements_seen > 100 and d.dealloc.suggested_max > d.dealloc.statements_seen
    note = next(n for n in digestrender.notes(d) if "evicted" in n)
    assert f"Raise pg_stat_statements.max above the {d.dealloc.statements_seen:,} statements seen" in note
