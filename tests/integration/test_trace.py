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
from bot.migrations import sqlfile
from bot.runs.store.sqlite import SqliteStore
from bot.workflow import validate
from bot.workflow.lintgate import overrule
from bot.workflow.report import Check, Report, Status
from bot.workflow.scans import TableSize, prod_tables, read_counters
from bot.workflow.trace import StagingTrace
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


def run(s: config.Settings | None = None, **options) -> Report:
    s = s or settings()
    return validate.run(s, SqliteStore(s.state.path), validate.GateOptions(**options))


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


# -- scan evidence: what a statement read and wrote, from the tables' own counters --------------------------


def test_pending_counters_see_the_open_transaction_and_the_sum_survives_a_flush(bot_env: Databases) -> None:
    """What the trace relies on, checked on the server under test (PG15+: pending + flushed counters)."""
    bot_env.both(SEED)
    with bot_env.connect("staging", autocommit=False) as conn:
        oid = conn.execute("SELECT 'items'::regclass::oid").fetchone()[0]
        before = read_counters(conn, {oid})[oid]
        conn.execute("SELECT count(*) FROM items WHERE note = 'none'")  # one sequential scan, inside the transaction
        inside = read_counters(conn, {oid})[oid]
        conn.commit()
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.commit()  # idle: the pending counters are flushed to shared memory now
        after_flush = read_counters(conn, {oid})[oid]
    assert inside.minus(before).seq_scan == 1 and inside.minus(before).seq_read == 2000
    assert after_flush.minus(inside).seq_read == 0  # moved from pending to shared, neither lost nor counted twice


def test_set_not_null_on_a_small_table_is_a_scan_blocker_however_fast(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_qty_required.sql": "ALTER TABLE items ALTER COLUMN qty SET NOT NULL;"})
    report = run(settings(lint=False))  # static rules off: the trace blocks on what it measured
    assert [c.name for c in report.failures] == ["trace.scan"], report.lines()
    (check,) = named(report, "trace.scan")
    d = check.details
    assert d["table"] == "items" and d["rows"] == 2000 and d["lock_mode"] == "AccessExclusiveLock"
    assert d["tables"][0]["seq_tup_read"] >= 2000 and d["line"] == 1 and d["category"] == "unsafe-migration"
    assert "read every row of items (2000 rows" in check.message and "no staging timing makes it safe" in check.message
    for step in ("ADD CONSTRAINT items_qty_not_null CHECK (qty IS NOT NULL) NOT VALID;",
                 "VALIDATE CONSTRAINT items_qty_not_null;", "ALTER TABLE items ALTER COLUMN qty SET NOT NULL;"):
        assert step in d["fix"]


def test_set_not_null_after_a_validated_check_reads_nothing(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({
        "0001_check.sql": "ALTER TABLE items ADD CONSTRAINT items_qty_nn CHECK (qty IS NOT NULL) NOT VALID;",
        "0002_validate.sql": "ALTER TABLE items VALIDATE CONSTRAINT items_qty_nn;",
        "0003_required.sql": "ALTER TABLE items ALTER COLUMN qty SET NOT NULL;\n"
                             "ALTER TABLE items DROP CONSTRAINT items_qty_nn;",
    })
    report = run()
    assert report.exit_code == 0, report.lines()
    (summary,) = named(report, "trace.0002_validate")
    assert "items (2000 rows) read at line 1 under ShareUpdateExclusiveLock" in summary.message  # seen, not blocking


@pytest.mark.parametrize(("sql", "wrote"), [
    ("-- migrate:no-transaction\nALTER TABLE items ALTER COLUMN qty SET NOT NULL;", False),
    ("ALTER TABLE items ADD CONSTRAINT items_qty_positive CHECK (qty > 0);", False),
    ("ALTER TABLE items ADD COLUMN currency text;\nUPDATE items SET currency = 'EUR' WHERE currency IS NULL;", True),
    ("LOCK TABLE items IN ACCESS EXCLUSIVE MODE;\nUPDATE items SET qty = 0 WHERE note IS NULL;", False),
], ids=["autocommit-set-not-null", "validated-check", "backfill-under-the-add-column-lock", "scan-under-lock-table"])
def test_full_scans_and_writes_under_a_blocking_lock_are_blockers(bot_env: Databases, make_migrations, sql: str,
                                                                  wrote: bool) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_m.sql": sql})
    report = run(settings(lint=False))
    (check,) = named(report, "trace.scan")
    assert check.status is Status.BLOCKER and check.details["rows"] == 2000
    assert ("wrote every row" in check.message) is wrote, check.message


def test_inline_references_on_a_new_column_read_no_row(bot_env: Databases, make_migrations) -> None:
    """PostgreSQL marks the FK valid without a scan: the new column is NULL in every row (corpus c069)."""
    bot_env.both(SEED + "CREATE TABLE owners (id bigint PRIMARY KEY);\n")
    make_migrations({"0001_owner.sql": "ALTER TABLE items ADD COLUMN owner_id bigint REFERENCES owners (id);\n"
                                       "CREATE INDEX CONCURRENTLY items_owner_idx ON items (owner_id);"})
    report = run()
    assert report.exit_code == 0, report.lines()
    assert named(report, "trace.scan") == []


def test_a_separate_fk_on_a_new_column_still_reads_every_row(bot_env: Databases, make_migrations) -> None:
    """Measured: the FK finds nothing to reject, but validating it reads the whole table under the lock."""
    bot_env.both(SEED + "CREATE TABLE owners (id bigint PRIMARY KEY);\n")
    make_migrations({"0001_owner.sql": "ALTER TABLE items ADD COLUMN owner_id bigint;\n"
                                       "ALTER TABLE items ADD CONSTRAINT items_owner_fk FOREIGN KEY (owner_id) "
                                       "REFERENCES owners (id);"})
    report = run(settings(lint=False))
    (check,) = named(report, "trace.scan")
    assert check.details["line"] == 2 and check.details["lock_mode"] == "AccessExclusiveLock"
    assert [c.name for c in report.checks if c.name.startswith("precheck.")] == []  # a new column: nothing to count


def test_scan_duration_is_scaled_to_prods_rows(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_qty_required.sql": "ALTER TABLE items ALTER COLUMN qty SET NOT NULL;"})
    s = settings(lint=False)
    report = run(s, hooks=StagingTrace(s.gate, prod_sizes={"items": TableSize(rows=2_000_000, bytes=1)}))
    (check,) = named(report, "trace.scan")
    assert "prod has ~2000000 rows there" in check.message
    assert check.details["prod_rows"] == 2_000_000
    assert check.details["prod_seconds_estimate"] == pytest.approx(check.details["seconds"] * 1000, abs=0.06)


def test_tables_created_earlier_in_the_set_are_not_scan_blockers(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_copy.sql": "CREATE TABLE item_copy AS SELECT * FROM items;",
                     "0002_idx.sql": "ALTER TABLE item_copy ALTER COLUMN qty SET NOT NULL;"})
    report = run(settings(lint=False))
    assert named(report, "trace.scan") == [], report.lines()  # not on prod: nobody waits for its lock


# -- the trace's measurements overrule static guesses ------------------------------------------------


def test_static_blocker_on_a_table_measured_empty_and_absent_on_prod_is_downgraded(bot_env: Databases,
                                                                                     make_migrations) -> None:
    """The lint cannot see a table created by dynamic SQL; the trace measured it empty, prod has none."""
    bot_env.both(SEED)
    make_migrations({"0001_dynamic.sql": "DO $$ BEGIN EXECUTE 'CREATE TABLE dyn (id int, v int)'; END $$;\n"
                                         "CREATE INDEX dyn_v_idx ON dyn (v);"})
    report = run(settings())  # the gate itself overrules the lint with the trace's measurements
    (after,) = named(report, "lint.create-index-non-concurrent")
    assert after.status is Status.WARNING and after.details["overruled_by"] == "trace"
    assert "dyn had no rows on staging when this ran and does not exist on prod" in after.message
    assert not any(c.status.fails_gate for c in report.checks if c.name.startswith("lint."))


def test_static_blocker_on_a_table_prod_has_is_kept(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_idx.sql": "CREATE INDEX empty_things_qty_idx ON empty_things (qty);"})
    s = settings()
    trace = StagingTrace(s.gate)
    report = run(s, hooks=trace)
    with bot_env.connect("prod") as prod:
        checks = overrule(report.checks, trace.evidence, prod_tables(prod, {"empty_things"}))
    (kept,) = [c for c in checks if c.name == "lint.create-index-non-concurrent"]
    assert kept.status is Status.BLOCKER  # empty, but prod has the table: its lock still queues behind traffic


def test_nothing_re_parses_the_sql(bot_env: Databases, make_migrations, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each file is parsed once when it is read; lint, pre-checks, trace and apply use the statement model."""
    bot_env.both(SEED)
    make_migrations({f"{i:04d}_m.sql": f"ALTER TABLE items ADD COLUMN c{i} int;\n"
                                       f"ALTER TABLE items ADD CONSTRAINT items_c{i}_chk CHECK (c{i} > 0) NOT VALID;\n"
                     for i in range(1, 7)})
    calls = []
    real = sqlfile.parse_sql
    monkeypatch.setattr(sqlfile, "parse_sql", lambda text: calls.append(text) or real(text))
    report = run()
    assert report.exit_code == 0, report.lines()
    assert len(calls) == 6 + 1  # six files, plus staging's schema of the touched tables (once)


def test_an_allowed_statement_keeps_its_measured_scan_as_a_warning(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_qty.sql": "-- migrate:allow set-not-null-without-check items stays at 2000 rows\n"
                                     "ALTER TABLE items ALTER COLUMN qty SET NOT NULL;"})
    report = run()
    assert report.exit_code == 0, report.lines()
    (check,) = named(report, "trace.scan")
    assert check.status is Status.WARNING and check.details["allowed_reason"] == "items stays at 2000 rows"


def test_refreshing_a_matview_concurrently_is_not_a_scan_blocker(bot_env: Databases, make_migrations) -> None:
    """CONCURRENTLY takes EXCLUSIVE on the view: it blocks no reader, and nobody writes a materialized view."""
    bot_env.both(SEED + "CREATE MATERIALIZED VIEW item_totals AS SELECT id, qty FROM items;\n"
                        "CREATE UNIQUE INDEX item_totals_id ON item_totals (id);\n")
    make_migrations({"0001_refresh.sql": "REFRESH MATERIALIZED VIEW CONCURRENTLY item_totals;"})
    report = run()
    assert report.exit_code == 0, report.lines()


def test_an_index_dropped_and_built_again_is_not_mistaken_for_a_rewrite(bot_env: Databases, make_migrations) -> None:
    """Statements that never rewrite are not compared file by file; the files are read again before one that can."""
    bot_env.both(SEED)
    make_migrations({"0001_reindex_by_hand.sql": "DROP INDEX items_qty_idx;\nCREATE INDEX items_qty_idx ON items (qty);\n"
                                                 "ALTER TABLE items ADD COLUMN y int;\n"
                                                 "ALTER TABLE items ALTER COLUMN qty TYPE bigint;"})
    report = run(settings(lint=False))
    (check,) = named(report, "trace.rewrite")  # the type change, line 4, and only that
    assert check.details["line"] == 4 and "items_qty_idx" in check.details["indexes_rebuilt"]
