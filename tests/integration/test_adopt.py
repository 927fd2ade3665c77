"""Adopting prod's history from Prisma, golang-migrate, Flyway and dbmate (`migrate-bot baseline`).

Each tool's history table is created on the real prod cluster with that
tool's own DDL and realistic rows, beside a migrations folder in that tool's
layout, and the schema those migrations made is really there.
"""

from __future__ import annotations

import hashlib
import zlib
from datetime import datetime, timezone

import pytest

from bot import config
from bot.migrations import adopt
from bot.migrations.source import discover
from bot.runs.store.sqlite import SqliteStore
from bot.workflow import baseline, validate
from bot.workflow.report import Report, Status
from tests.fix_pg import Databases

USERS = "CREATE TABLE users (id bigserial PRIMARY KEY, email text);\n"
ORDERS = "CREATE TABLE orders (id bigserial PRIMARY KEY, user_id bigint);\n"
NOTES = "ALTER TABLE orders ADD COLUMN note text;\n"
HISTORY = "SELECT version, name, checksum, applied_at, duration_ms, run_id, applied_by FROM migrate_bot.schema_migrations ORDER BY version"

PRISMA_DDL = """
CREATE TABLE "_prisma_migrations" (
    "id"                    VARCHAR(36) PRIMARY KEY NOT NULL,
    "checksum"              VARCHAR(64) NOT NULL,
    "finished_at"           TIMESTAMPTZ,
    "migration_name"        VARCHAR(255) NOT NULL,
    "logs"                  TEXT,
    "rolled_back_at"        TIMESTAMPTZ,
    "started_at"            TIMESTAMPTZ NOT NULL DEFAULT now(),
    "applied_steps_count"   INTEGER NOT NULL DEFAULT 0
);
"""
GOLANG_DDL = "CREATE TABLE IF NOT EXISTS schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL);"
DBMATE_DDL = "CREATE TABLE IF NOT EXISTS schema_migrations (version varchar(128) PRIMARY KEY);"
FLYWAY_DDL = """
CREATE TABLE "public"."flyway_schema_history" (
    "installed_rank" INT NOT NULL,
    "version" VARCHAR(50),
    "description" VARCHAR(200) NOT NULL,
    "type" VARCHAR(20) NOT NULL,
    "script" VARCHAR(1000) NOT NULL,
    "checksum" INT,
    "installed_by" VARCHAR(100) NOT NULL,
    "installed_on" TIMESTAMP NOT NULL DEFAULT now(),
    "execution_time" INTEGER NOT NULL,
    "success" BOOLEAN NOT NULL
);
ALTER TABLE "public"."flyway_schema_history" ADD CONSTRAINT "flyway_schema_history_pk" PRIMARY KEY ("installed_rank");
CREATE INDEX "flyway_schema_history_s_idx" ON "public"."flyway_schema_history" ("success");
"""


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def flyway_crc(text: str) -> int:
    """Flyway's checksum, written the other way round: one CRC32 over the lines without their line breaks."""
    crc = zlib.crc32("".join(text.splitlines()).encode())
    return crc - 2**32 if crc >= 2**31 else crc


def run_baseline(yes: bool = False, **options) -> Report:
    return baseline.run(config.load(None), baseline.BaselineOptions(yes=yes, **options))


def lines(report: Report) -> dict[str, str]:
    return {c.name: f"{c.status.value} {c.message}" for c in report.checks}


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


# --- Prisma ------------------------------------------------------------------------------------------


PRISMA_FILES = {"20240101120000_init/migration.sql": USERS, "20240102120000_orders/migration.sql": ORDERS,
                "20240103120000_notes/migration.sql": NOTES}


def prisma_prod(db: Databases, checksums: dict[str, str] | None = None) -> None:
    """Prod as `prisma migrate deploy` left it: init and orders applied (orders after one failed, rolled-back try)."""
    checksums = checksums or {}
    db.both(USERS + ORDERS)
    db.sql("prod", PRISMA_DDL)
    rows = [
        ("a1", "20240101120000_init", None, "2024-01-01 12:00:05", "2024-01-01 12:00:04"),
        ("b0", "20240102120000_orders", "2024-01-02 12:00:09", None, "2024-01-02 12:00:08"),  # failed, then resolved
        ("b1", "20240102120000_orders", None, "2024-01-02 12:30:01", "2024-01-02 12:30:00"),
    ]
    for id_, name, rolled_back, finished, started in rows:
        folder = f"{name}/migration.sql"
        db.sql("prod", 'INSERT INTO "_prisma_migrations" (id, checksum, finished_at, migration_name, logs, rolled_back_at,'
                       " started_at, applied_steps_count) VALUES (%s, %s, %s, %s, NULL, %s, %s, %s)",
               (id_, checksums.get(name, sha256(PRISMA_FILES[folder])), finished and at(finished), name,
                rolled_back and at(rolled_back), at(started), 1))


def test_a_prisma_history_is_adopted_with_its_finish_times(bot_env: Databases, make_migrations) -> None:
    make_migrations(PRISMA_FILES)
    prisma_prod(bot_env)
    report = run_baseline(yes=True)
    assert report.exit_code == 0, report.lines()
    assert bot_env.sql("prod", HISTORY) == [
        ("20240101120000", "init", sha256(USERS), at("2024-01-01 12:00:05"), 0, None, "baseline from prisma"),
        ("20240102120000", "orders", sha256(ORDERS), at("2024-01-02 12:30:01"), 0, None, "baseline from prisma"),
    ]
    found = lines(report)
    assert found["baseline.source"] == 'PASSED prod\'s prisma history (public._prisma_migrations): 2 applied'
    assert found["baseline.20240102120000_orders"] == "PASSED applied by prisma at 2024-01-02 12:30 UTC — recorded"
    assert found["baseline.pending"] == ("PASSED 1 not applied on prod, left pending for the gate and the deploy: "
                                         "20240103120000_notes")
    assert found["baseline"] == ('PASSED recorded 2 migration(s) in migrate_bot.schema_migrations on prod '
                                 '(applied_by "baseline from prisma", duration 0, no run id)')


def test_the_dry_run_lists_what_it_would_record_and_writes_nothing(bot_env: Databases, make_migrations) -> None:
    make_migrations(PRISMA_FILES)
    prisma_prod(bot_env)
    report = run_baseline()
    assert report.exit_code == 0, report.lines()
    found = lines(report)
    assert found["baseline.20240101120000_init"] == "PASSED applied by prisma at 2024-01-01 12:00 UTC — would be recorded"
    assert found["baseline"] == ("PASSED dry run — 2 migration(s) would be recorded in migrate_bot.schema_migrations on "
                                 "prod; nothing was written. Record them: migrate-bot baseline --yes")
    assert bot_env.sql("prod", "SELECT to_regclass('migrate_bot.schema_migrations')") == [(None,)]


def test_a_prisma_file_changed_since_it_was_applied_is_reported_and_adopted(bot_env: Databases,
                                                                           make_migrations) -> None:
    make_migrations(PRISMA_FILES)
    prisma_prod(bot_env, checksums={"20240102120000_orders": sha256("CREATE TABLE orders (id bigserial);\n")})
    report = run_baseline(yes=True)
    assert report.exit_code == 0, report.lines()
    changed = next(c for c in report.checks if c.name == "baseline-changed.20240102120000_orders")
    assert changed.status is Status.WARNING
    assert changed.message.startswith(
        "migrations/20240102120000_orders/migration.sql changed since prisma applied it (prisma's checksum "
        f"{sha256('CREATE TABLE orders (id bigserial);' + chr(10))[:12]}, the file's now {sha256(ORDERS)[:12]})")
    assert [r[0] for r in bot_env.sql("prod", HISTORY)] == ["20240101120000", "20240102120000"]


def test_a_crlf_copy_of_the_file_prisma_applied_is_not_a_change(bot_env: Databases, make_migrations) -> None:
    make_migrations(PRISMA_FILES)
    prisma_prod(bot_env, checksums={"20240101120000_init": sha256(USERS.replace("\n", "\r\n"))})
    assert "baseline-changed.20240101120000_init" not in lines(run_baseline())


def test_an_unfinished_prisma_migration_is_said_not_adopted(bot_env: Databases, make_migrations) -> None:
    make_migrations(PRISMA_FILES)
    prisma_prod(bot_env)
    bot_env.sql("prod", 'INSERT INTO "_prisma_migrations" (id, checksum, migration_name, started_at) '
                        "VALUES ('c1', %s, '20240103120000_notes', '2024-01-03 12:00:00+00')", (sha256(NOTES),))
    report = run_baseline(yes=True)
    assert report.exit_code == 1
    failed = next(c for c in report.checks if c.name == "baseline.20240103120000_notes")
    assert failed.status is Status.FAILED and "npx prisma migrate resolve --applied 20240103120000_notes" in failed.message
    assert [r[0] for r in bot_env.sql("prod", HISTORY)] == ["20240101120000", "20240102120000"]


# --- golang-migrate ----------------------------------------------------------------------------------


GOLANG_FILES = {"0001_users.up.sql": USERS, "0001_users.down.sql": "DROP TABLE users;\n",
                "0002_orders.up.sql": ORDERS, "0002_orders.down.sql": "DROP TABLE orders;\n",
                "0003_notes.up.sql": NOTES, "0003_notes.down.sql": "ALTER TABLE orders DROP COLUMN note;\n"}


def test_a_golang_migrate_version_adopts_everything_at_or_below_it(bot_env: Databases, make_migrations) -> None:
    make_migrations(GOLANG_FILES)
    bot_env.both(USERS + ORDERS)
    bot_env.sql("prod", GOLANG_DDL + "INSERT INTO schema_migrations (version, dirty) VALUES (2, false);")
    report = run_baseline(yes=True)
    assert report.exit_code == 0, report.lines()
    rows = bot_env.sql("prod", HISTORY)
    assert [(r[0], r[1], r[2], r[4], r[5], r[6]) for r in rows] == [
        ("0001", "users", sha256(USERS), 0, None, "baseline from golang-migrate"),
        ("0002", "orders", sha256(ORDERS), 0, None, "baseline from golang-migrate")]
    found = lines(report)
    assert found["baseline.source"] == "PASSED prod's golang-migrate history (public.schema_migrations): version 2, clean"
    assert found["baseline.0001_users"] == "PASSED at or below golang-migrate's version 2 — recorded"


def test_a_dirty_golang_migrate_version_is_a_sentence_not_adopted(bot_env: Databases, make_migrations) -> None:
    make_migrations(GOLANG_FILES)
    bot_env.both(USERS + ORDERS)
    bot_env.sql("prod", GOLANG_DDL + "INSERT INTO schema_migrations (version, dirty) VALUES (2, true);")
    report = run_baseline(yes=True)
    assert report.exit_code == 1
    found = lines(report)
    assert found["baseline.0001_users"] == "PASSED below golang-migrate's dirty version 2 — recorded"
    assert found["baseline.0002_orders"].startswith(
        "FAILED golang-migrate marks version 2 dirty: it failed partway, so what of it is on prod is unknown. "
        "Not recorded (it stays pending).")
    assert "force 2` (finished) or `force <the version before it>` (undone)" in found["baseline.0002_orders"]
    assert [r[0] for r in bot_env.sql("prod", HISTORY)] == ["0001"]


# --- Flyway ------------------------------------------------------------------------------------------


FLYWAY_FILES = {"V1__users.sql": USERS, "V1_1__orders.sql": ORDERS, "V2__notes.sql": NOTES,
                "R__report_view.sql": "CREATE OR REPLACE VIEW order_count AS SELECT count(*) FROM orders;\n"}


def flyway_prod(db: Databases, rows: list[tuple]) -> None:
    db.both(USERS + ORDERS)
    db.sql("prod", FLYWAY_DDL)
    for row in rows:
        db.sql("prod", 'INSERT INTO "public"."flyway_schema_history" (installed_rank, version, description, type, '
                       "script, checksum, installed_by, installed_on, execution_time, success) "
                       "VALUES (%s, %s, %s, %s, %s, %s, 'app', %s, 12, %s)", row)


def test_a_flyway_history_is_adopted_and_a_changed_file_reported(bot_env: Databases, make_migrations) -> None:
    make_migrations(FLYWAY_FILES)
    flyway_prod(bot_env, [
        (1, "1", "users", "SQL", "V1__users.sql", flyway_crc(USERS), "2024-01-01 10:00:00", True),
        (2, "1.1", "orders", "SQL", "V1_1__orders.sql", flyway_crc("CREATE TABLE orders (id bigint);\n"),
         "2024-01-02 10:00:00", True),
        (3, None, "report view", "SQL", "R__report_view.sql", 12345, "2024-01-02 10:00:01", True),
    ])
    report = run_baseline(yes=True)
    assert report.exit_code == 0, report.lines()
    rows = bot_env.sql("prod", HISTORY)
    assert [(r[0], r[1], r[2], r[6]) for r in rows] == [("1", "users", sha256(USERS), "baseline from flyway"),
                                                        ("1.1", "orders", sha256(ORDERS), "baseline from flyway")]
    found = lines(report)
    assert found["baseline.source"] == "PASSED prod's flyway history (public.flyway_schema_history): 2 applied"
    assert "baseline-changed.1_users" not in found
    assert found["baseline-changed.1.1_orders"].startswith(
        f"WARNING migrations/V1_1__orders.sql changed since flyway applied it (flyway's checksum "
        f"{flyway_crc('CREATE TABLE orders (id bigint);' + chr(10))}, the file's now {flyway_crc(ORDERS)})")
    assert found["baseline.pending"].endswith("2_notes")


def test_a_flyway_baseline_row_covers_what_is_below_it(bot_env: Databases, make_migrations) -> None:
    make_migrations(FLYWAY_FILES)
    flyway_prod(bot_env, [
        (1, "1", "<< Flyway Baseline >>", "BASELINE", "<< Flyway Baseline >>", None, "2024-01-01 09:00:00", True),
        (2, "1.1", "orders", "SQL", "V1_1__orders.sql", flyway_crc(ORDERS), "2024-01-02 10:00:00", True),
        (3, "2", "notes", "SQL", "V2__notes.sql", flyway_crc(NOTES), "2024-01-03 10:00:00", False),
    ])
    report = run_baseline()
    found = lines(report)
    assert found["baseline.1_users"] == "PASSED at or below Flyway's baseline version 1 — would be recorded"
    assert found["baseline.1.1_orders"] == "PASSED applied by flyway at 2024-01-02 10:00 UTC — would be recorded"
    assert found["baseline.2_notes"].startswith("FAILED Flyway recorded version 2 (V2__notes.sql) as failed")
    assert report.exit_code == 1


# --- dbmate ------------------------------------------------------------------------------------------


def dbmate(up: str, down: str) -> str:
    return f"-- migrate:up\n{up}\n-- migrate:down\n{down}\n"


DBMATE_FILES = {"20240101000000_users.sql": dbmate(USERS, "DROP TABLE users;"),
                "20240102000000_orders.sql": dbmate(ORDERS, "DROP TABLE orders;"),
                "20240103000000_notes.sql": dbmate(NOTES, "ALTER TABLE orders DROP COLUMN note;")}


def test_a_dbmate_history_is_adopted(bot_env: Databases, make_migrations) -> None:
    root = make_migrations(DBMATE_FILES)
    bot_env.both(USERS + ORDERS)
    bot_env.sql("prod", DBMATE_DDL + "INSERT INTO schema_migrations (version) VALUES ('20240101000000'), "
                                     "('20240102000000');")
    report = run_baseline(yes=True)
    assert report.exit_code == 0, report.lines()
    up = {m.version: m.checksum for m in discover(root)}
    rows = bot_env.sql("prod", HISTORY)
    assert [(r[0], r[1], r[2], r[6]) for r in rows] == [
        ("20240101000000", "users", up["20240101000000"], "baseline from dbmate"),
        ("20240102000000", "orders", up["20240102000000"], "baseline from dbmate")]
    assert lines(report)["baseline.source"] == "PASSED prod's dbmate history (public.schema_migrations): 2 applied"


# --- plain folders, --baseline, and what is refused --------------------------------------------------


PLAIN_FILES = {"0001_users.sql": USERS, "0002_orders.sql": ORDERS, "0003_notes.sql": NOTES}


def test_baseline_version_records_a_plain_history_up_to_it(bot_env: Databases, make_migrations) -> None:
    make_migrations(PLAIN_FILES)
    bot_env.both(USERS + ORDERS)
    report = run_baseline(yes=True, baseline="0002")
    assert report.exit_code == 0, report.lines()
    assert [(r[0], r[6]) for r in bot_env.sql("prod", HISTORY)] == [("0001", "baseline from --baseline"),
                                                                      ("0002", "baseline from --baseline")]


def test_baseline_version_must_be_a_migration_here(bot_env: Databases, make_migrations) -> None:
    make_migrations(PLAIN_FILES)
    report = run_baseline(baseline="0009")
    assert report.exit_code == 2
    assert report.error == ("--baseline 0009: no migration here has that version (the versions run from 0001 to "
                            "0003). Pass the version of the last migration prod already has.")


def test_baseline_version_is_refused_when_a_tool_kept_the_history(bot_env: Databases, make_migrations) -> None:
    make_migrations(GOLANG_FILES)
    bot_env.sql("prod", GOLANG_DDL + "INSERT INTO schema_migrations (version, dirty) VALUES (2, false);")
    report = run_baseline(baseline="0002")
    assert report.exit_code == 2 and report.error.startswith(
        "prod has golang-migrate's own history (public.schema_migrations: version 2, clean), so --baseline is not "
        "needed: `migrate-bot baseline` reads it.")


def test_no_history_to_adopt_says_how_to_record_one(bot_env: Databases, make_migrations) -> None:
    make_migrations(PLAIN_FILES)
    report = run_baseline()
    assert report.exit_code == 1
    assert lines(report)["baseline"].endswith("record them up to the last one it has: "
                                              "migrate-bot baseline --baseline VERSION --yes")


def test_a_second_baseline_records_nothing_new(bot_env: Databases, make_migrations) -> None:
    make_migrations(GOLANG_FILES)
    bot_env.sql("prod", GOLANG_DDL + "INSERT INTO schema_migrations (version, dirty) VALUES (2, false);")
    assert run_baseline(yes=True).exit_code == 0
    again = run_baseline(yes=True)
    assert lines(again)["baseline"] == ("PASSED nothing to record: every migration prod's history has applied is "
                                        "already in migrate_bot.schema_migrations")
    assert len(bot_env.sql("prod", HISTORY)) == 2


# --- validate and deploy see an unadopted history ----------------------------------------------------


def test_validate_says_to_adopt_a_tool_history_in_one_blocker(bot_env: Databases, make_migrations) -> None:
    make_migrations(PRISMA_FILES)
    prisma_prod(bot_env)
    settings = config.load(None)
    report = validate.run(settings, SqliteStore(settings.state.path))
    assert report.exit_code == 1
    (blocker,) = report.failures
    assert blocker.line() == (
        "BLOCKER history-adopt: prod has no migrate_bot.schema_migrations, but prisma's own history "
        "(public._prisma_migrations: 2 applied) says 2 of these 3 migrations are applied there; until it is adopted "
        "all 3 count as pending on prod, and those 2 would run again. Adopt it first: `migrate-bot baseline` shows "
        "what it records, `migrate-bot baseline --yes` records it "
        "[category=unadopted-history table=public._prisma_migrations]")
    assert bot_env.sql("staging", "SELECT to_regclass('migrate_bot.schema_migrations')") == [(None,)]
    assert report.fingerprint is None  # nothing recorded: no validation of a set that was never computed


def test_after_the_baseline_only_the_new_migration_is_pending(bot_env: Databases, make_migrations) -> None:
    make_migrations(PRISMA_FILES)
    prisma_prod(bot_env)
    assert run_baseline(yes=True).exit_code == 0
    settings = config.load(None)
    report = validate.run(settings, SqliteStore(settings.state.path))
    assert report.exit_code == 0, report.lines()
    assert report.facts["pending"] == ["20240103120000_notes"]


def test_a_tool_history_that_names_none_of_these_migrations_does_not_block(bot_env: Databases,
                                                                          make_migrations) -> None:
    make_migrations(PLAIN_FILES)
    bot_env.sql("prod", DBMATE_DDL + "INSERT INTO schema_migrations (version) VALUES ('20150101000000');")
    migrations = discover("migrations")
    with bot_env.connect("prod") as conn:
        assert adopt.unadopted_check(conn, migrations, {}) is None


@pytest.mark.parametrize("ddl, tool", [(GOLANG_DDL, "golang-migrate"), (DBMATE_DDL, "dbmate")])
def test_schema_migrations_is_told_apart_by_its_columns(bot_env: Databases, ddl: str, tool: str) -> None:
    value = "3" if tool == "golang-migrate" else "'3'"
    extra = ", false" if tool == "golang-migrate" else ""
    bot_env.sql("prod", ddl + f"INSERT INTO schema_migrations VALUES ({value}{extra});")
    with bot_env.connect("prod") as conn:
        (found,) = adopt.find(conn)
    assert found.tool == tool and found.table == "public.schema_migrations"
