"""Data pre-checks: row-level evidence before statements that fail on existing data.

Each scenario seeds real rows that make a statement fail, runs the gate, and
reads the ``precheck.<kind>`` check: the count, up to five primary keys, the
fix with the real names. The statement still runs afterwards, so the
applier's own failure (with its SQLSTATE) is in the report too. Static lint is
switched off (``lint=False``) where a static rule would stop the migration
before it runs.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bot import config
from bot.runs.store.sqlite import SqliteStore
from bot.workflow import validate
from bot.workflow.precheck import DataPrechecks
from bot.workflow.report import Check, Report, Status
from bot.workflow.trace import StagingTrace
from tests.fix_pg import Databases

SEED = (
    "CREATE TABLE users (id bigserial PRIMARY KEY, email text, secret text);\n"
    "INSERT INTO users (email, secret) SELECT 'u' || g || '@example.com', 'top-secret-' || g"
    " FROM generate_series(1, 100) g;\n"
    "CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint, total numeric, memo text);\n"
    "INSERT INTO orders (user_id, total, memo) SELECT 1 + g % 100, g, 'private-memo-' || g"
    " FROM generate_series(1, 50) g;\n"
)
NEGATIVE_TOTALS = "UPDATE orders SET total = -1 WHERE id IN (7, 14, 21);"
ORPHANS = "UPDATE orders SET user_id = 99999 WHERE id IN (5, 10);"
NULL_EMAILS = "UPDATE users SET email = NULL WHERE id IN (10, 20, 30);"
DUPLICATES = ("UPDATE users SET email = 'dup-a@example.com' WHERE id IN (3, 4);"
              "UPDATE users SET email = 'dup-b@example.com' WHERE id IN (8, 9, 12);")

CHECK_ADD = "ALTER TABLE orders ADD CONSTRAINT orders_total_positive CHECK (total > 0) NOT VALID;"
CHECK_VALIDATE = "ALTER TABLE orders VALIDATE CONSTRAINT orders_total_positive;"
FK_ADD = "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;"
FK_VALIDATE = "ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;"
UNIQUE_CIC = "CREATE UNIQUE INDEX CONCURRENTLY users_email_key ON users (email);"
UNIQUE_CONSTRAINT = "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);"
SET_NOT_NULL = "ALTER TABLE users ALTER COLUMN email SET NOT NULL;"


def settings(**gate) -> config.Settings:
    s = config.load(None)
    return replace(s, gate=replace(s.gate, **gate)) if gate else s


def run(s: config.Settings | None = None, **options) -> Report:
    s = s or settings()
    return validate.run(s, SqliteStore(s.state.path), validate.GateOptions(**options))


def one(report: Report, name: str, status: Status) -> Check:
    (check,) = [c for c in report.checks if c.name == name and c.status is status]
    return check


def ids(check: Check) -> list[int]:
    return [e["id"] for e in check.details["examples"]]


def failing(report: Report) -> list[str]:
    return [c.name for c in report.failures]


@pytest.mark.parametrize(("bad_rows", "add", "validate_", "kind", "category", "count", "keys", "sqlstate"), [
    (NEGATIVE_TOTALS, CHECK_ADD, CHECK_VALIDATE, "check-violation", "check-violation", 3, [7, 14, 21], "23514"),
    (ORPHANS, FK_ADD, FK_VALIDATE, "fk-orphans", "invalid-fk", 2, [5, 10], "23503"),
], ids=["check", "fk"])
def test_validate_over_violating_rows_reports_count_and_keys(bot_env: Databases, make_migrations, bad_rows: str,
                                                             add: str, validate_: str, kind: str, category: str,
                                                             count: int, keys: list[int], sqlstate: str) -> None:
    bot_env.both(SEED + bad_rows)
    make_migrations({"0001_add.sql": add, "0002_validate.sql": validate_})
    report = run()
    check = one(report, f"precheck.{kind}", Status.FAILED)
    assert check.migration == "0002_validate"
    assert check.details["category"] == category and check.details["table"] == "orders"
    assert check.details["count"] == count and ids(check) == keys
    assert check.details["statement"] == validate_.rstrip(";") and check.details["line"] == 1
    applied = next(c for c in report.checks if c.name == "migration.0002_validate")
    assert applied.status is Status.FAILED and applied.details["sqlstate"] == sqlstate


def test_fk_orphans_fix_names_the_real_tables_and_columns(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED + ORPHANS)
    make_migrations({"0001_add.sql": FK_ADD, "0002_validate.sql": FK_VALIDATE})
    check = one(run(), "precheck.fk-orphans", Status.FAILED)
    assert ("UPDATE orders AS c SET user_id = NULL WHERE c.user_id IS NOT NULL AND NOT EXISTS "
            "(SELECT 1 FROM users p WHERE p.id = c.user_id);") in check.details["fix"]
    assert "ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;" in check.details["fix"]


def test_not_valid_fk_over_orphans_warns_that_validate_will_fail(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED + ORPHANS)
    make_migrations({"0001_add.sql": FK_ADD})
    report = run()
    check = one(report, "precheck.fk-orphans", Status.WARNING)
    assert check.details["count"] == 2 and "VALIDATE CONSTRAINT will fail" in check.message
    assert next(c for c in report.checks if c.name == "migration.0001_add").status is Status.PASSED


@pytest.mark.parametrize("sql", [UNIQUE_CIC, UNIQUE_CONSTRAINT], ids=["unique-index-concurrently", "add-unique"])
def test_unique_over_duplicates_reports_groups_and_row_keys(bot_env: Databases, make_migrations, sql: str) -> None:
    bot_env.both(SEED + DUPLICATES)
    make_migrations({"0001_unique_email.sql": sql})
    report = run(settings(lint=False))
    check = one(report, "precheck.duplicates", Status.FAILED)
    assert check.details["category"] == "invalid-index" and check.details["table"] == "users"
    assert check.details["count"] == 2  # duplicated groups, not rows
    assert ids(check) == [3, 4, 8, 9, 12]
    assert "SELECT email, count(*) FROM users WHERE email IS NOT NULL GROUP BY email HAVING count(*) > 1;" \
        in check.details["fix"]
    applied = next(c for c in report.checks if c.name == "migration.0001_unique_email")
    assert applied.details["sqlstate"] == "23505"


def test_unique_index_over_duplicates_leaves_nothing_invalid(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED + DUPLICATES)
    make_migrations({"0001_unique_email.sql": UNIQUE_CIC})
    report = run()
    assert report.exit_code == 1
    assert one(report, "indexes-valid.staging", Status.PASSED)
    assert bot_env.sql("staging", "SELECT count(*) FROM pg_index WHERE NOT indisvalid") == [(0,)]


def test_set_not_null_over_nulls_gives_the_backfill(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED + NULL_EMAILS)
    make_migrations({"0001_email_required.sql": SET_NOT_NULL})
    report = run(settings(lint=False))
    check = one(report, "precheck.not-null", Status.FAILED)
    assert check.details["category"] == "not-null"
    assert check.details["table"] == "users" and check.details["column"] == "email"
    assert check.details["count"] == 3 and ids(check) == [10, 20, 30]
    assert "UPDATE users SET email = <value> WHERE email IS NULL;" in check.details["fix"]
    applied = next(c for c in report.checks if c.name == "migration.0001_email_required")
    assert applied.details["sqlstate"] == "23502"


@pytest.mark.parametrize(("bad_rows", "files"), [
    (NULL_EMAILS, {"0001_m.sql": SET_NOT_NULL}),
    (DUPLICATES, {"0001_m.sql": UNIQUE_CIC}),
    (ORPHANS, {"0001_m.sql": FK_ADD, "0002_v.sql": FK_VALIDATE}),
    (NEGATIVE_TOTALS, {"0001_m.sql": CHECK_ADD, "0002_v.sql": CHECK_VALIDATE}),
], ids=["not-null", "duplicates", "fk-orphans", "check-violation"])
def test_example_keys_never_contain_other_column_values(bot_env: Databases, make_migrations, bad_rows: str,
                                                        files: dict[str, str]) -> None:
    bot_env.both(SEED + bad_rows)
    make_migrations(files)
    report = run(settings(lint=False))
    assert any(c.name.startswith("precheck.") and c.details.get("examples") for c in report.checks)
    raw = json.dumps(report.to_dict(), default=str)  # before redaction: nothing to hide in the first place
    for value in ("top-secret", "private-memo", "@example.com", "99999"):
        assert value not in raw


@pytest.mark.parametrize(("files", "kind", "blocked_by"), [
    ({"0001_m.sql": SET_NOT_NULL}, "not-null", ["trace.scan"]),
    ({"0001_m.sql": UNIQUE_CIC}, "duplicates", []),
    ({"0001_m.sql": FK_ADD, "0002_v.sql": FK_VALIDATE}, "fk-orphans", []),
    ({"0001_m.sql": "ALTER TABLE orders ADD CONSTRAINT orders_total_positive CHECK (total > 0);"}, "check-violation",
     ["trace.scan"]),
], ids=["not-null", "duplicates", "fk-orphans", "check-violation"])
def test_clean_data_passes_the_precheck(bot_env: Databases, make_migrations, files: dict[str, str],
                                        kind: str, blocked_by: list[str]) -> None:
    bot_env.both(SEED)
    make_migrations(files)
    report = run(settings(lint=False))
    checks = [c for c in report.checks if c.name == f"precheck.{kind}"]
    assert checks and all(c.status is Status.PASSED and c.details["count"] == 0 for c in checks)
    # clean data: nothing fails; a full scan under ACCESS EXCLUSIVE still blocks (the trace's scan evidence)
    assert failing(report) == blocked_by, report.lines()


def test_precheck_sees_the_migrations_own_backfill(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED + NULL_EMAILS)
    make_migrations({"0001_backfill_then_require.sql":
                     "UPDATE users SET email = 'filled-' || id WHERE email IS NULL;\n" + SET_NOT_NULL})
    report = run(settings(lint=False))
    assert one(report, "precheck.not-null", Status.PASSED).details["line"] == 2
    assert failing(report) == ["trace.scan"], report.lines()  # SET NOT NULL without a validated CHECK scans


def test_precheck_inside_a_files_own_transaction_never_commits_it_early(bot_env: Databases,
                                                                       make_migrations) -> None:
    bot_env.both(SEED + NULL_EMAILS)
    make_migrations({"0001_own_tx.sql": "BEGIN;\nUPDATE users SET email = 'filled-' || id WHERE email IS NULL;\n"
                     + SET_NOT_NULL + "\nALTER TABLE no_such_table ADD COLUMN x int;\nCOMMIT;\n"})
    report = run(settings(lint=False))
    assert one(report, "precheck.not-null", Status.PASSED).details["line"] == 3
    assert report.exit_code == 1
    assert bot_env.sql("staging", "SELECT count(*) FROM users WHERE email IS NULL") == [(3,)]


def test_count_is_capped(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED + NULL_EMAILS)
    make_migrations({"0001_email_required.sql": SET_NOT_NULL})
    s = settings(lint=False)
    report = run(s, hooks=StagingTrace(s.gate, DataPrechecks(cap=2)))
    check = one(report, "precheck.not-null", Status.FAILED)
    assert check.details["count"] == "more than 2" and "more than 2 row(s) of users" in check.message


def test_slow_precheck_gives_up_without_harming_the_migration(bot_env: Databases, make_migrations) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_slow_check.sql": "ALTER TABLE orders ADD CONSTRAINT orders_slow_check "
                                            "CHECK (total > 0 AND pg_sleep(0.02) IS NOT NULL);"})
    s = settings(lint=False)
    report = run(s, hooks=StagingTrace(s.gate, DataPrechecks(timeout_s=0.1)))
    check = one(report, "precheck.check-violation", Status.WARNING)
    assert "could not count" in check.message
    assert next(c for c in report.checks if c.name == "migration.0001_slow_check").status is Status.PASSED


def test_table_without_primary_key_uses_ctid_as_the_example_key(bot_env: Databases, make_migrations) -> None:
    bot_env.both("CREATE TABLE events (kind text, payload text);"
                 "INSERT INTO events VALUES ('a', 'private-memo-1'), (NULL, 'private-memo-2');")
    make_migrations({"0001_kind_required.sql": "ALTER TABLE events ALTER COLUMN kind SET NOT NULL;"})
    report = run(settings(lint=False))
    check = one(report, "precheck.not-null", Status.FAILED)
    assert check.details["examples"] == [{"ctid": "(0,2)"}]
    assert "private-memo" not in json.dumps(report.to_dict(), default=str)


@pytest.mark.parametrize("header", ["", "-- migrate:no-transaction\n"], ids=["transactional", "autocommit"])
def test_lock_timeout_retry_reports_each_precheck_once(bot_env: Databases, make_migrations, header: str) -> None:
    bot_env.both(SEED)
    make_migrations({"0001_email_required.sql": header + SET_NOT_NULL})
    holder = bot_env.connect("staging", autocommit=False)
    holder.execute("SELECT count(*) FROM users")  # ACCESS SHARE until commit: the ALTER must wait and retry
    retries = []

    def on_event(kind: str, data: dict) -> None:
        if kind == "lock_retry":
            retries.append(data)
            holder.commit()

    try:
        report = run(settings(lint=False, lock_timeout_s=0.3, lock_retries=3), on_event=on_event)
    finally:
        holder.close()
    assert retries and failing(report) == ["trace.scan"], report.lines()  # applied; its scan still blocks
    assert [c.status for c in report.checks if c.name == "precheck.not-null"] == [Status.PASSED]
    assert len([c for c in report.checks if c.name == "trace.0001_email_required"]) == 1


@pytest.mark.parametrize("files", [
    {"0001_m.sql": "ALTER TABLE orders ADD COLUMN coupon_id bigint,\n"
                   "  ADD CONSTRAINT orders_coupon_fk FOREIGN KEY (coupon_id) REFERENCES users (id) NOT VALID;"},
    {"0001_m.sql": "ALTER TABLE orders ADD COLUMN discount numeric,\n"
                   "  ADD CONSTRAINT orders_discount_ok CHECK (discount >= 0) NOT VALID;"},
    {"0001_m.sql": "ALTER TABLE orders ADD COLUMN coupon_id bigint;",
     "0002_m.sql": "ALTER TABLE orders ADD CONSTRAINT orders_coupon_fk FOREIGN KEY (coupon_id) REFERENCES users (id) "
                   "NOT VALID;\nCREATE UNIQUE INDEX CONCURRENTLY orders_coupon_key ON orders (coupon_id);"},
    {"0001_m.sql": "CREATE TABLE coupons (id bigint PRIMARY KEY, user_id bigint, code text);",
     "0002_m.sql": "ALTER TABLE coupons ADD CONSTRAINT coupons_user_fk FOREIGN KEY (user_id) REFERENCES users (id);\n"
                   "ALTER TABLE coupons ALTER COLUMN code SET NOT NULL;"},
], ids=["fk-same-alter", "check-same-alter", "column-from-an-earlier-migration", "table-from-an-earlier-migration"])
def test_columns_and_tables_the_set_creates_are_never_counted(bot_env: Databases, make_migrations,
                                                               files: dict[str, str]) -> None:
    """Nothing to count (NULL in every row; an empty table) — and a column the same ALTER adds does not exist yet."""
    bot_env.both(SEED)
    make_migrations(files)
    report = run(settings(lint=False))
    assert [c.line() for c in report.checks if c.name.startswith("precheck.")] == []
    assert report.exit_code == 0, report.lines()
