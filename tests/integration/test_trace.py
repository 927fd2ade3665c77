"""The staging trace: locks, rewrites and durations observed while the gate applies on staging.

Static lint is switched off (``lint=False``) where a test needs the migration to
run although a static rule would stop it first: those tests show the trace
blocking on its own evidence, even when static rules let a migration through.
Budgets are set far from the measured values; no test asserts a duration.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from bot import config
from bot.runs.store.sqlite import SqliteStore
from bot.workflow import validate
from bot.workflow.report import Check, Report, Status
from tests.fix_pg import Databases

SEED = (
    "CREATE TABLE items (id bigserial PRIMARY KEY, name varchar(50), qty int, note text);\n"
    "INSERT INTO items (name, qty, note) SELECT 'item ' || g, g, 'n' || g FROM generate_series(1, 2000) g;\n"
    "CREATE INDEX items_qty_idx ON items (qty);\n"
    "CREATE INDEX items_name_idx ON items (name);\n"
    "CREATE TABLE empty_things (id bigserial PRIMARY KEY, qty int);\n"
)


def settings(**gate) -> config.Settings:
    s = config.load(None)
    return replace(s, gate=replace(s.gate, **gate)) if gate else s


def run(s: config.Settings | None = None) -> Report:
    s = s or settings()
    return validate.run(s, SqliteStore(s.state.path))


def named(report: Report, name: str) -> list[Check]:
    return [c for c in report.checks if c.name == name]


def trace_blockers(report: Report) -> list[Check]:
    return [c for c in report.checks if c.name.startswith("trace.") and c.status.fails_gate]


@pytest.mark.parametrize("new_type", ["text", "varchar(100)"])
def test_type_change_that_postgres_does_not_rewrite_is_not_a_blocker(bot_env: Databases, make_migrations,
                                                                      new_type: str) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_widen_name.sql": f"ALTER TABLE items ALTER COLUMN name TYPE {new_type};"})
    report = run()
    assert trace_blockers(report) == [], report.lines()
    (check,) = named(report, "trace.type-change")
    assert check.status is Status.WARNING and check.details["rewrite"] is False
    assert check.details["table"] == "items" and check.details["column"] == "name"
    assert "did not rewrite items" in check.message and "unchanged" in check.message
    assert named(report, "trace.rewrite") == []
    assert report.exit_code == 0  # a warning never fails the gate


@pytest.mark.parametrize(("sql", "fix"), [
    ("ALTER TABLE items ALTER COLUMN qty TYPE bigint;",
     "ALTER TABLE items ADD COLUMN qty_new bigint;"),
    ("ALTER TABLE items ADD COLUMN token uuid DEFAULT gen_random_uuid();",
     "ALTER TABLE items ALTER COLUMN token SET DEFAULT gen_random_uuid();"),
    ("-- migrate:no-transaction\nALTER TABLE items ALTER COLUMN qty TYPE bigint;",
     "ALTER TABLE items ADD COLUMN qty_new bigint;"),
], ids=["int-to-bigint", "volatile-default", "int-to-bigint-autocommit"])
def test_real_rewrite_of_a_non_empty_table_is_a_blocker(bot_env: Databases, make_migrations, sql: str,
                                                        fix: str) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_change.sql": sql})
    report = run(settings(lint=False))  # static rules off: the trace blocks on what it saw
    assert report.exit_code == 1
    (check,) = named(report, "trace.rewrite")
    assert check.status is Status.BLOCKER and check.migration == "0001_change"
    d = check.details
    assert d["category"] == "unsafe-migration" and d["table"] == "items" and d["table_rewritten"] is True
    assert d["lock_mode"] == "AccessExclusiveLock" and d["rows"] == 2000
    assert d["relfilenode_before"] != d["relfilenode_after"]
    assert "rewrote items" in check.message and "2000 rows" in check.message and "AccessExclusiveLock" in check.message
    assert fix in d["fix"]


def test_int_to_bigint_rebuilds_the_column_index_too(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_bigint.sql": "ALTER TABLE items ALTER COLUMN qty TYPE bigint;"})
    report = run(settings(lint=False))
    (check,) = named(report, "trace.rewrite")
    assert "items_qty_idx" in check.details["indexes_rebuilt"]


@pytest.mark.parametrize(("sql", "table", "fix"), [
    ("ALTER TABLE items SET UNLOGGED;", "items", "pg_repack"),
    ("REFRESH MATERIALIZED VIEW item_totals;", "item_totals", "REFRESH MATERIALIZED VIEW CONCURRENTLY item_totals;"),
], ids=["set-unlogged", "refresh-matview"])
def test_copying_statements_are_rewrites_the_trace_sees(bot_env: Databases, make_migrations, sql: str, table: str,
                                                        fix: str) -> None:
    """What the static rules alter-table-rewrite and refresh-matview-non-concurrent suspect, the trace measures."""
    bot_env.both(SEED + "CREATE MATERIALIZED VIEW item_totals AS SELECT id, qty FROM items;\n")
    make_migrations({"0001_copy.sql": sql})
    report = run(settings(lint=False))
    assert report.exit_code == 1, report.lines()
    (check,) = named(report, "trace.rewrite")
    d = check.details
    assert check.status is Status.BLOCKER and d["table"] == table and d["rows"] == 2000
    assert d["lock_mode"] == "AccessExclusiveLock" and d["relfilenode_before"] != d["relfilenode_after"]
    assert fix in d["fix"]


def test_rewrite_of_an_empty_table_is_not_a_blocker(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_bigint.sql": "ALTER TABLE empty_things ALTER COLUMN qty TYPE bigint;"})
    report = run(settings(lint=False))
    assert trace_blockers(report) == [], report.lines()
    (summary,) = named(report, "trace.0001_bigint")
    assert summary.status is Status.PASSED and "empty empty_things" in summary.message


def test_constant_default_is_not_a_rewrite(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_flag.sql": "ALTER TABLE items ADD COLUMN flag boolean DEFAULT false;"})
    report = run()
    assert report.exit_code == 0, report.lines()
    assert named(report, "trace.rewrite") == []


@pytest.mark.parametrize(("sql", "line"), [
    ("ALTER TABLE items ADD COLUMN x int;\nSELECT pg_sleep(1.5);\n", 1),
    ("BEGIN;\nALTER TABLE items ADD COLUMN x int;\nSELECT pg_sleep(1.5);\nCOMMIT;\n", 2),
], ids=["transactional-file", "own-begin-commit"])
def test_lock_held_over_budget_is_a_blocker(bot_env: Databases, make_migrations, sql: str, line: int) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_slow.sql": sql})
    report = run(settings(lock_budget_s=0.2))
    assert report.exit_code == 1
    (check,) = named(report, "trace.lock-held")
    d = check.details
    assert check.status is Status.BLOCKER and d["category"] == "unsafe-migration"
    assert d["table"] == "items" and d["lock_mode"] == "AccessExclusiveLock" and d["line"] == line
    assert d["seconds"] > d["budget_s"] == 0.2
    assert "AccessExclusiveLock on items held" in check.message and "blocks reads and writes" in check.message
    assert d["rows"] == 2000


@pytest.mark.parametrize(("budget", "name"), [
    ("transaction_budget_s", "trace.transaction-time"),
    ("migration_budget_s", "trace.migration-time"),
])
def test_long_transaction_or_migration_is_a_blocker(bot_env: Databases, make_migrations, budget: str,
                                                    name: str) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_slow.sql": "CREATE TABLE audit (id int);\nSELECT pg_sleep(1.5);\n"})
    report = run(settings(**{budget: 0.2}))
    (check,) = named(report, name)
    assert check.status is Status.BLOCKER and check.details["budget_s"] == 0.2
    assert check.details["line"] == 2  # the slowest statement is named


def test_a_fast_statement_of_a_no_transaction_file_shows_the_locks_it_took(bot_env: Databases,
                                                                            make_migrations) -> None:
    """Read from its own backend inside its one-statement transaction, not sampled: a 1 ms ALTER cannot slip by."""
    bot_env.both(SEED)
    make_migrations({"0001_fk.sql": "-- migrate:no-transaction\n"
                                    "ALTER TABLE empty_things ADD CONSTRAINT empty_things_qty_fk FOREIGN KEY (qty) "
                                    "REFERENCES items (id) NOT VALID;\n"
                                    "ALTER TABLE items ADD COLUMN x int;\n"})
    report = run(settings(lint=False))
    assert report.exit_code == 0, report.lines()
    (summary,) = named(report, "trace.0001_fk")
    assert "empty_things ShareRowExclusiveLock (line 2)" in summary.message, summary.message
    assert "items ShareRowExclusiveLock (line 2)" in summary.message
    assert "items AccessExclusiveLock (line 3)" in summary.message
    assert bot_env.sql("staging", "SELECT count(*) FROM pg_constraint WHERE conname = 'empty_things_qty_fk'") == [(1,)]


def test_lock_table_in_a_no_transaction_file_fails_on_staging_as_it_would_on_prod(bot_env: Databases,
                                                                                  make_migrations) -> None:
    """The one-statement transaction is for reading locks only: what needs a block still fails without one."""
    bot_env.both(SEED)
    make_migrations({"0001_lock.sql": "-- migrate:no-transaction\nLOCK TABLE items IN SHARE MODE;\n"})
    report = run(settings(lint=False))
    assert report.exit_code == 1
    (failed,) = [c for c in report.checks if c.name == "migration.0001_lock"]
    assert failed.status is Status.FAILED and "LOCK TABLE can only be used in transaction blocks" in failed.message


def test_fast_migration_passes_with_one_compact_summary(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_add_x.sql": "ALTER TABLE items ADD COLUMN x int;"})
    report = run(settings(lock_budget_s=30.0, transaction_budget_s=30.0, migration_budget_s=30.0))
    assert report.exit_code == 0, report.lines()
    (summary,) = named(report, "trace.0001_add_x")
    assert summary.status is Status.PASSED
    assert "items AccessExclusiveLock (line 1)" in summary.message and "rewrites: none" in summary.message
    assert summary.details["locks"][0] == {"table": "items", "mode": "AccessExclusiveLock", "line": 1,
                                           "held_s": summary.details["locks"][0]["held_s"]}


def test_concurrent_index_is_traced_valid_and_passes(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_note_idx.sql": "CREATE INDEX CONCURRENTLY items_note_idx ON items (note);"})
    report = run()
    assert report.exit_code == 0, report.lines()
    (check,) = named(report, "trace.concurrent-index")
    assert check.status is Status.PASSED and check.details["valid"] is True
    assert check.details["index"] == "items_note_idx" and check.details["table"] == "items"
    assert "valid and ready" in check.message
    assert trace_blockers(report) == []


def test_trace_runs_by_default_and_tables_created_by_the_migration_are_not_traced(
        bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_new.sql": "CREATE TABLE fresh (id int);\nALTER TABLE fresh ALTER COLUMN id TYPE bigint;"})
    report = run()
    assert report.exit_code == 0, report.lines()
    (summary,) = named(report, "trace.0001_new")
    assert summary.details["locks"] == [] and "rewrites: none" in summary.message
