"""Discovering and ordering migrations in every supported layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.errors import MigrationSourceError
from bot.migrations.source import build, detect_format, discover, set_fingerprint
from tests.fix_pg import write_migrations


@pytest.mark.parametrize(
    ("files", "layout", "versions"),
    [
        ({"0002_b.sql": "SELECT 2;", "0001_a.sql": "SELECT 1;", "0010_c.sql": "SELECT 3;", "README.md": "x"},
         "plain", ["0001", "0002", "0010"]),
        ({"20240102000000_b.sql": "SELECT 2;", "20240101000000_a.sql": "SELECT 1;"},
         "plain", ["20240101000000", "20240102000000"]),
        ({"20240101_init/migration.sql": "SELECT 1;", "20240202_users/migration.sql": "SELECT 2;",
          "migration_lock.toml": "provider = 'postgresql'"}, "prisma", ["20240101", "20240202"]),
        ({"V1__init.sql": "SELECT 1;", "V1.2__more.sql": "SELECT 2;", "V1_10__last.sql": "SELECT 3;", "V2__x.sql": "SELECT 4;"},
         "flyway", ["1", "1.2", "1.10", "2"]),
        ({"000001_init.up.sql": "SELECT 1;", "000001_init.down.sql": "DROP x;", "000002_users.up.sql": "SELECT 2;"},
         "golang-migrate", ["000001", "000002"]),
        ({"20240101000000_init.sql": "-- migrate:up\nSELECT 1;\n-- migrate:down\nDROP TABLE x;\n"},
         "dbmate", ["20240101000000"]),
    ],
)
def test_layouts_are_detected_and_ordered(tmp_path: Path, files: dict, layout: str, versions: list) -> None:
    root = write_migrations(tmp_path / "m", files)
    assert detect_format(root) == layout
    assert [m.version for m in discover(root)] == versions


def test_dbmate_down_section_is_never_run(tmp_path: Path) -> None:
    root = write_migrations(tmp_path / "m", {"1_a.sql": "-- migrate:up\nCREATE TABLE a (id int);\n-- migrate:down\nDROP TABLE a;\n"})
    (migration,) = discover(root)
    assert [s.sql for s in migration.statements] == ["CREATE TABLE a (id int)"]


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MigrationSourceError) as err:
        discover(tmp_path / "nope")
    assert str(err.value) == (f"The migrations directory {tmp_path / 'nope'} does not exist. "
                              "Pass --migrations DIR or set migrations.dir in the config.")


def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    root = write_migrations(tmp_path / "m", {"0001_a.sql": "SELECT 1;", "1_b.sql": "SELECT 2;"})
    with pytest.raises(MigrationSourceError, match="share version"):
        discover(root)


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE INDEX CONCURRENTLY i ON t (a)",
        "DROP INDEX CONCURRENTLY i",
        "REINDEX INDEX CONCURRENTLY i",
        "ALTER TABLE p DETACH PARTITION c CONCURRENTLY",
        "VACUUM t",
    ],
)
def test_statements_refused_in_a_transaction_switch_to_autocommit(statement: str) -> None:
    m = build("1", "x", "1_x.sql", f"{statement};")
    assert m.no_transaction and m.statements[0].no_transaction


def test_plain_ddl_stays_transactional() -> None:
    m = build("1", "x", "1_x.sql", "CREATE TABLE t (id int); ANALYZE t;")
    assert not m.no_transaction


def test_directives() -> None:
    m = build("1", "x", "1_x.sql", "-- migrate:no-transaction\n-- migrate:cleanup\nALTER TABLE t DROP COLUMN c;")
    assert m.no_transaction and m.cleanup


def test_own_transaction_is_kept() -> None:
    m = build("1", "x", "1_x.sql", "BEGIN;\nCREATE TABLE t (id int);\nCOMMIT;")
    assert m.own_transaction and not m.no_transaction


def test_statements_split_by_the_parser_not_by_semicolons() -> None:
    text = "-- café ☕\nINSERT INTO t VALUES ('a;b');\nCREATE FUNCTION f() RETURNS int AS $$ SELECT 1; $$ LANGUAGE sql;\n"
    statements = build("1", "x", "1_x.sql", text).statements
    assert [s.line for s in statements] == [2, 3]
    assert statements[0].sql == "INSERT INTO t VALUES ('a;b')"


def test_parse_error_is_kept_with_its_line() -> None:
    m = build("1", "x", "1_x.sql", "SELECT 1;\n\nALTER TABLE t ADD COLUMN;")
    assert m.parse_error and m.parse_error_line == 3


def test_fingerprint_covers_versions_and_checksums() -> None:
    a, b = build("1", "a", "1_a.sql", "SELECT 1;"), build("2", "b", "2_b.sql", "SELECT 2;")
    b2 = build("2", "b", "2_b.sql", "SELECT 22;")
    assert set_fingerprint([a, b]) != set_fingerprint([a, b2])
    assert set_fingerprint([a, b]) != set_fingerprint([b, a])
    assert set_fingerprint([a, b]) == set_fingerprint([a, b])


# -- a folder that yields no migration is an error, never a green gate over nothing --------------------------

TRIED = ("every layout (prisma: <timestamp>_<name>/migration.sql; flyway: V<version>__<description>.sql; "
         "golang-migrate: <version>_<name>.up.sql; dbmate: <version>_<name>.sql with a `-- migrate:up` section; "
         "plain: <version>_<name>.sql)")


def test_empty_directory_is_an_error(tmp_path: Path) -> None:
    root = write_migrations(tmp_path / "m", {"README.md": "x"})
    with pytest.raises(MigrationSourceError) as err:
        discover(root)
    assert str(err.value) == (f"No migrations found in {root}: it has no .sql files and no Prisma migration folders "
                              f"(tried {TRIED}). Check that --migrations (migrations.dir) names the folder that "
                              "holds the migration files.")


def test_parent_of_the_migrations_folder_names_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "prisma"
    write_migrations(root, {"schema.prisma": "x", "migrations/20240101_init/migration.sql": "SELECT 1;",
                            "migrations/20240202_users/migration.sql": "SELECT 2;"})
    with pytest.raises(MigrationSourceError) as err:
        discover(root)
    assert str(err.value) == (f"No migrations found in {root} itself, but its folder migrations holds 2 prisma "
                              f"migration(s). Pass --migrations {root / 'migrations'} (or set migrations.dir / "
                              "migrations.path to it).")


def test_sql_files_of_no_layout_are_named(tmp_path: Path) -> None:
    root = write_migrations(tmp_path / "m", {"init.sql": "SELECT 1;", "seed.sql": "SELECT 2;"})
    with pytest.raises(MigrationSourceError) as err:
        discover(root)
    assert str(err.value) == (f"No migrations found in {root}: its .sql files (init.sql, seed.sql) match none of "
                              f"{TRIED}. Pass the folder that holds the migration files (--migrations DIR), rename "
                              "them to a layout, or set migrations.format.")


def test_unrecognised_sql_beside_migrations_is_an_error(tmp_path: Path) -> None:
    root = write_migrations(tmp_path / "m", {"000001_a.up.sql": "SELECT 1;", "000001_a.down.sql": "SELECT 0;",
                                             "seed.sql": "SELECT 2;"})
    with pytest.raises(MigrationSourceError) as err:
        discover(root)
    assert str(err.value) == (f"{root} holds golang-migrate migrations (<version>_<name>.up.sql), but 1 .sql file(s) "
                              "there are not: seed.sql. Move them out of the migrations folder, rename them to the "
                              "layout, or set migrations.format if golang-migrate was guessed wrong.")


def test_forced_layout_that_matches_nothing_says_which_layout(tmp_path: Path) -> None:
    root = write_migrations(tmp_path / "m", {"0001_a.sql": "SELECT 1;"})
    with pytest.raises(MigrationSourceError) as err:
        discover(root, "flyway")
    assert "match none of the flyway layout (V<version>__<description>.sql, set by migrations.format)" in str(err.value)


@pytest.mark.parametrize(("files", "labels"), [
    ({"000001_a.up.sql": "SELECT 1;", "000001_a.down.sql": "DROP TABLE a;"}, ["000001_a"]),
    ({"V1__a.sql": "SELECT 1;", "U1__a.sql": "SELECT 0;", "R__views.sql": "SELECT 2;", "afterMigrate.sql": "x"},
     ["1_a"]),
    ({"20240101_a/migration.sql": "SELECT 1;", "20240101_a/down.sql": "x", "migration_lock.toml": "x"},
     ["20240101_a"]),
    ({"0001_a.sql": "SELECT 1;", "0001_a.down.sql": "SELECT 0;"}, ["0001_a"]),
], ids=["golang-migrate-down", "flyway-undo-repeatable-callbacks", "prisma-down", "plain-down"])
def test_layout_files_that_are_not_forward_migrations_are_skipped(tmp_path: Path, files: dict, labels: list) -> None:
    assert [m.label for m in discover(write_migrations(tmp_path / "m", files))] == labels


# -- the statement model -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "mode", "groups"), [
    ("ALTER TABLE t ADD COLUMN a int;\nALTER TABLE t ADD COLUMN b int;", "transaction", [0, 0]),
    ("-- migrate:no-transaction\nALTER TABLE t ADD COLUMN a int;\nSELECT 1;", "autocommit", [None, None]),
    ("CREATE INDEX CONCURRENTLY i ON t (a);\nSELECT 1;", "autocommit", [None, None]),
    ("BEGIN;\nSELECT 1;\nCOMMIT;\nSELECT 2;\nBEGIN;\nSELECT 3;\nCOMMIT;", "own", [1, 1, 1, None, 3, 3, 3]),
    ("-- migrate:up transaction:false\nSELECT 1;", "autocommit", [None]),
], ids=["transactional", "no-transaction", "concurrently", "own-blocks", "dbmate-transaction-false"])
def test_each_statement_knows_its_transaction(text: str, mode: str, groups: list) -> None:
    m = build("1", "x", "1_x.sql", text)
    assert (m.parsed.mode, [s.tx_group for s in m.statements]) == (mode, groups)


def test_statements_carry_their_parse_tree_and_comments() -> None:
    (stmt,) = build("1", "x", "1_x.sql", "-- migrate:allow drop-table gone\nDROP TABLE a; -- bye\n").statements
    assert stmt.kind == "DropStmt" and type(stmt.node).__name__ == "DropStmt"
    assert stmt.comments == ((1, "-- migrate:allow drop-table gone"), (2, "-- bye"))


def test_directives_inside_strings_are_not_directives() -> None:
    m = build("1", "x", "1_x.sql", "CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$\n-- migrate:no-transaction\n"
                                   "SELECT 'x'\n$$;")
    assert not m.no_transaction
