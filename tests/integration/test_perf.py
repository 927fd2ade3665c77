"""The regression gate: prod's hot queries re-planned on staging before and after the migrations."""

from __future__ import annotations

from dataclasses import replace

from bot import config
from bot.runs.store.sqlite import SqliteStore
from bot.workflow import triage, validate
from bot.workflow.report import Status
from tests.fix_pg import Databases

SEED = """
CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint, total numeric);
INSERT INTO orders (user_id, total) SELECT g % 5000, g FROM generate_series(1, 50000) g;
CREATE INDEX orders_user_id_idx ON orders (user_id);
ANALYZE orders;
"""


def hot_query_on_prod(dbs: Databases) -> None:
    """The application's hot path, as prod's pg_stat_statements sees it."""
    with dbs.connect("prod") as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
        for user_id in range(50):
            conn.execute("SELECT id, total FROM orders WHERE user_id = %s", (user_id,))


def gate(**changes) -> validate.Report:
    s = config.load(None)
    s = replace(s, gate=replace(s.gate, lint=False, **changes))
    return validate.run(s, SqliteStore(s.state.path))


def test_dropping_a_hot_index_fails_the_gate(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    hot_query_on_prod(bot_env)
    make_migrations({"0001_drop_idx.sql": "-- migrate:cleanup\nDROP INDEX CONCURRENTLY orders_user_id_idx;"})
    report = gate()
    failed = [c for c in report.checks if c.name.startswith("perf.") and c.status is Status.FAILED]
    assert len(failed) == 1, report.lines()
    assert "WHERE user_id = $1" in failed[0].message and "limit 20%" in failed[0].message
    finding = next(f for f in triage.triage(report.checks) if failed[0].name in f.checks)
    assert finding.category == "perf-regression" and "Add the missing index" in finding.fix


def test_a_harmless_migration_keeps_plans(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    hot_query_on_prod(bot_env)
    make_migrations({"0001_note.sql": "ALTER TABLE orders ADD COLUMN note text;"})
    report = gate()
    check = next(c for c in report.checks if c.name == "perf-regression")
    assert check.status is Status.PASSED and check.message.startswith("1 hot prod queries planned on staging")


def test_a_query_that_no_longer_plans_fails(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    hot_query_on_prod(bot_env)
    make_migrations({"0001_drop_total.sql": "-- migrate:cleanup\nALTER TABLE orders DROP COLUMN total;"})
    report = gate()
    assert any(c.name.startswith("perf.") and "no longer plans" in c.message for c in report.checks)


def test_without_pg_stat_statements_the_gate_says_so(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    bot_env.sql("prod", "DROP EXTENSION pg_stat_statements")
    make_migrations({"0001_note.sql": "ALTER TABLE orders ADD COLUMN note text;"})
    report = gate()
    check = next(c for c in report.checks if c.name == "perf-regression")
    assert check.status is Status.WARNING and report.exit_code == 0
