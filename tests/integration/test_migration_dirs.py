"""Wrong migration folders through the real command line: exit 2 with a sentence, never a green gate.

Issue 10: an empty folder, one holding only unrecognised files, or the parent
of the migrations folder used to give `PASS (2 passed) exit 0`; and `lint DIR`
linted golang-migrate's `.down.sql` files as if they were forward migrations.
"""

from __future__ import annotations

from pathlib import Path

from tests.fix_pg import Databases, write_migrations
from tests.integration.test_cli import assert_clean_failure, cli


def test_validate_of_an_empty_folder_could_not_run(bot_env: Databases, workdir: Path) -> None:
    (workdir / "migrations").mkdir()
    result = cli("validate", "--migrations", "migrations")
    assert_clean_failure(result, 2, "No migrations found in migrations: it has no .sql files and no Prisma migration "
                                    "folders (tried every layout")
    assert "PASS" not in result.stdout


def test_validate_of_the_parent_folder_names_the_migrations_folder(bot_env: Databases, workdir: Path) -> None:
    write_migrations(workdir / "prisma", {"schema.prisma": "x", "migrations/20240101_init/migration.sql": "SELECT 1;"})
    result = cli("validate", "--migrations", "prisma")
    assert_clean_failure(result, 2, "No migrations found in prisma itself, but its folder migrations holds 1 prisma "
                                    "migration(s). Pass --migrations prisma/migrations")


def test_validate_of_unrecognised_files_names_them(bot_env: Databases, workdir: Path) -> None:
    write_migrations(workdir / "db", {"schema.sql": "CREATE TABLE a (id int);"})
    result = cli("validate", "--migrations", "db")
    assert_clean_failure(result, 2, "No migrations found in db: its .sql files (schema.sql) match none of every layout")


def test_lint_of_an_empty_folder_could_not_run(workdir: Path) -> None:
    (workdir / "migrations").mkdir()
    assert_clean_failure(cli("lint", "migrations", cwd=workdir), 2, "No migrations found in migrations")


def test_lint_dir_skips_golang_migrate_down_files(workdir: Path) -> None:
    write_migrations(workdir / "migrations", {
        "000001_users.up.sql": "CREATE TABLE users (id bigint PRIMARY KEY, email text);",
        "000001_users.down.sql": "DROP TABLE users;",
        "000002_email_idx.up.sql": "CREATE INDEX CONCURRENTLY users_email_idx ON users (email);",
        "000002_email_idx.down.sql": "DROP INDEX users_email_idx;",
    })
    result = cli("lint", "migrations", cwd=workdir)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "down.sql" not in result.stdout and result.stdout.strip().endswith("0 finding(s), 0 blocker(s)")


def test_validate_of_prisma_files_without_a_final_semicolon(bot_env: Databases, workdir: Path) -> None:
    """Issue 10: the gate's lint joined the files with a newline and crashed on the second one (exit 2)."""
    write_migrations(workdir / "prisma" / "migrations", {
        "20240101000000_init/migration.sql": '-- CreateTable\nCREATE TABLE "Team" (\n    "id" TEXT NOT NULL,\n'
                                             '    CONSTRAINT "Team_pkey" PRIMARY KEY ("id")\n)',
        "20240102000000_member/migration.sql": '-- CreateTable\nCREATE TABLE "Member" ("id" TEXT NOT NULL, '
                                               '"teamId" TEXT NOT NULL);\n\n-- CreateIndex\n'
                                               'CREATE INDEX "Member_teamId_idx" ON "Member"("teamId")',
        "20240103000000_role/migration.sql": '-- AlterTable\nALTER TABLE "Member" ADD COLUMN "role" TEXT;\n',
    })
    result = cli("validate", "--migrations", "prisma/migrations")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RESULT validate: PASS" in result.stdout
